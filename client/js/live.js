// A small graphql-transport-ws client: one WebSocket, several subscriptions, and
// reconnection that resumes each subscription after the last event it saw.

const PROTOCOL = 'graphql-transport-ws';

export class Live {
  constructor(url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`) {
    this.url = url;
    this.subs = new Map();
    this.nextId = 1;
    this.socket = null;
    this.ready = false;
    this.closed = false;
    this.backoff = 500;
    this.connectedBefore = false;
    /** `onStatus('live' | 'offline', {reconnected})`. */
    this.onStatus = () => {};
  }

  /**
   * Subscribes; `onEvent(data)` gets each event's data. Events carry an `id` at
   * `idPath(data)`, passed back as `afterId` on reconnection. Returns an unsubscribe.
   */
  subscribe(query, variables, onEvent, idPath) {
    const id = String(this.nextId++);
    const sub = { query, variables: { ...variables }, onEvent, idPath, afterId: null };
    this.subs.set(id, sub);
    if (this.ready) this.start(id, sub);
    else this.connect();
    return () => {
      this.subs.delete(id);
      if (this.ready) this.send({ id, type: 'complete' });
    };
  }

  connect() {
    if (this.socket || this.closed) return;
    const socket = new WebSocket(this.url, PROTOCOL);
    this.socket = socket;
    socket.addEventListener('open', () => this.send({ type: 'connection_init', payload: {} }));
    socket.addEventListener('message', (event) => this.receive(event));
    socket.addEventListener('close', () => {
      this.socket = null;
      this.ready = false;
      this.onStatus('offline', {});
      if (!this.closed && this.subs.size) {
        setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10_000);
      }
    });
  }

  receive(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (message.type) {
      case 'connection_ack': {
        this.ready = true;
        this.backoff = 500;
        for (const [id, sub] of this.subs) this.start(id, sub);
        const reconnected = this.connectedBefore;
        this.connectedBefore = true;
        this.onStatus('live', { reconnected });
        break;
      }
      case 'ping':
        this.send({ type: 'pong' });
        break;
      case 'next': {
        const sub = this.subs.get(message.id);
        const data = message.payload?.data;
        if (!sub || !data) break;
        const seen = sub.idPath(data);
        if (seen) sub.afterId = seen;
        sub.onEvent(data);
        break;
      }
      case 'error':
      case 'complete':
        // The server ended it (e.g. the subscriber fell behind): start again where it stopped.
        if (this.subs.has(message.id) && this.ready) {
          setTimeout(() => this.ready && this.subs.has(message.id) && this.start(message.id, this.subs.get(message.id)), 1000);
        }
        break;
      default:
        break;
    }
  }

  start(id, sub) {
    const variables = sub.afterId ? { ...sub.variables, afterId: sub.afterId } : sub.variables;
    this.send({ id, type: 'subscribe', payload: { query: sub.query, variables } });
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  close() {
    this.closed = true;
    this.subs.clear();
    this.socket?.close();
  }
}
