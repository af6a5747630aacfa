// A small graphql-transport-ws client: one WebSocket, several subscriptions, and
// reconnection that resumes each subscription after the last event it saw.
//
// - Keep-alive: the server closes a socket that stays silent (3008 after
//   `--ws-keepalive-ms`, 30 s by default), so the client pings. The pong to its first
//   ping says how long the server waits (`{"keepAliveMs": …}`), and the client pings at
//   a third of that. A ping that gets no pong within that third means the connection
//   is gone without a close (a sleeping laptop, a dropped Wi-Fi): the socket is closed
//   and opened again.
// - Reconnection waits with exponential backoff (0.5 s doubling to 30 s) and full
//   jitter, so a replica's restart doesn't bring every dashboard back in one instant.
// - A permanent refusal is not retried forever: a socket closed because its
//   credential ended (4403) or because the request was wrong (4400) stays closed, and
//   a subscription refused for a reason that won't change (FORBIDDEN, bad input, no
//   such product) is dropped. Other errors are retried a few times with backoff.

const PROTOCOL = 'graphql-transport-ws';
/** Until the server says otherwise: a third of its default 30 s. */
const DEFAULT_PING_MS = 10_000;
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
/** Close codes after which reconnecting would only be refused again. */
const PERMANENT_CLOSE = new Set([4400, 4401, 4403]);
/** Error codes after which resubscribing would only be refused again. */
const PERMANENT_ERRORS = new Set(['FORBIDDEN', 'UNAUTHENTICATED', 'BAD_USER_INPUT', 'NOT_FOUND', 'GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED']);
/** How often one subscription is started again after errors before it is dropped. */
const MAX_RESTARTS = 5;

/** A wait of up to `ms`, uniformly at random ("full jitter"). */
export function jittered(ms, random = Math.random) {
  return Math.round(ms * random());
}

/** The next backoff after `ms`. */
export function nextBackoff(ms) {
  return Math.min(ms * 2, MAX_BACKOFF_MS);
}

export class Live {
  constructor(url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`) {
    this.url = url;
    this.subs = new Map();
    this.nextId = 1;
    this.socket = null;
    this.ready = false;
    this.closed = false;
    this.backoff = MIN_BACKOFF_MS;
    this.connectedBefore = false;
    this.pingEvery = DEFAULT_PING_MS;
    this.pingTimer = null;
    this.awaitingPong = false;
    /** `onStatus('live' | 'offline' | 'ended', {reconnected, code})`. */
    this.onStatus = () => {};
  }

  /**
   * Subscribes; `onEvent(data)` gets each event's data. Events carry an `id` at
   * `idPath(data)`, passed back as `afterId` on reconnection. `onError(errors)`, if
   * given, hears of a subscription dropped for good. Returns an unsubscribe.
   */
  subscribe(query, variables, onEvent, idPath, onError = () => {}) {
    const id = String(this.nextId++);
    const sub = { query, variables: { ...variables }, onEvent, idPath, onError, afterId: null, restarts: 0 };
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
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      this.stopPinging();
      if (PERMANENT_CLOSE.has(event.code)) {
        this.closed = true;
        this.onStatus('ended', { code: event.code });
        return;
      }
      this.onStatus('offline', { code: event.code });
      if (!this.closed && this.subs.size) {
        setTimeout(() => this.connect(), jittered(this.backoff));
        this.backoff = nextBackoff(this.backoff);
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
        this.backoff = MIN_BACKOFF_MS;
        for (const [id, sub] of this.subs) this.start(id, sub);
        const reconnected = this.connectedBefore;
        this.connectedBefore = true;
        this.onStatus('live', { reconnected });
        // The first ping at once: its pong says how often to ping.
        this.ping();
        break;
      }
      case 'ping':
        this.send({ type: 'pong' });
        break;
      case 'pong': {
        this.awaitingPong = false;
        const serverWaits = Number(message.payload?.keepAliveMs);
        if (serverWaits > 0) this.pingEvery = Math.max(300, Math.floor(serverWaits / 3));
        this.schedulePing();
        break;
      }
      case 'next': {
        const sub = this.subs.get(message.id);
        const data = message.payload?.data;
        if (!sub || !data) break;
        sub.restarts = 0;
        const seen = sub.idPath(data);
        if (seen) sub.afterId = seen;
        sub.onEvent(data);
        break;
      }
      case 'complete':
        // The server ended it (the subscriber fell behind): start again where it stopped.
        this.restartLater(message.id);
        break;
      case 'error': {
        const sub = this.subs.get(message.id);
        if (!sub) break;
        const errors = Array.isArray(message.payload) ? message.payload : [];
        const permanent = errors.some((e) => PERMANENT_ERRORS.has(e?.extensions?.code));
        if (permanent || sub.restarts >= MAX_RESTARTS) {
          this.subs.delete(message.id);
          sub.onError(errors);
        } else {
          this.restartLater(message.id);
        }
        break;
      }
      default:
        break;
    }
  }

  restartLater(id) {
    const sub = this.subs.get(id);
    if (!sub || !this.ready) return;
    sub.restarts += 1;
    const wait = MIN_BACKOFF_MS * 2 ** Math.min(sub.restarts, 6);
    setTimeout(() => this.ready && this.subs.get(id) === sub && this.start(id, sub), jittered(wait) + MIN_BACKOFF_MS);
  }

  start(id, sub) {
    const variables = sub.afterId ? { ...sub.variables, afterId: sub.afterId } : sub.variables;
    this.send({ id, type: 'subscribe', payload: { query: sub.query, variables } });
  }

  ping() {
    if (!this.ready) return;
    if (this.awaitingPong) {
      // The last ping went unanswered: the connection is gone without a close.
      this.socket?.close(4000, 'no pong');
      return;
    }
    this.awaitingPong = true;
    this.send({ type: 'ping' });
    this.schedulePing();
  }

  schedulePing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this.ping(), this.pingEvery);
  }

  stopPinging() {
    clearTimeout(this.pingTimer);
    this.pingTimer = null;
    this.awaitingPong = false;
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  close() {
    this.closed = true;
    this.subs.clear();
    this.stopPinging();
    this.socket?.close();
  }
}
