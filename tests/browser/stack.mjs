// Starts the real stack for the browser tests: the balancer (debug build) in front of
// two replicas on a fresh SQLite file. The balancer binds port 0 for itself and its
// admin endpoint and says which ports it holds, so no other process can take one between
// a pick and its use.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');

/** The proxy's and the admin endpoint's addresses, from the balancer's listening line:
 * `ecanteen-balancer listening on http://A (admin http://B)`. */
function listening(child, log, deadline) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`the stack did not say where it listens: ${log()}`)), deadline - Date.now());
    let out = '';
    const onData = (chunk) => {
      out += chunk;
      const line = /ecanteen-balancer listening on http:\/\/(\S+) \(admin http:\/\/([^)\s]+)\)/.exec(out);
      if (line) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.resume();
        ok({ listen: line[1], admin: line[2] });
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', () => { clearTimeout(timer); fail(new Error(`the stack exited: ${log()}`)); });
  });
}

/** The replicas' WebSocket keep-alive, shortened so a test can outlast two periods. */
export const KEEPALIVE_MS = 2000;

export async function startStack() {
  const dir = mkdtempSync(join(tmpdir(), 'ecanteen-browser-'));
  const child = spawn(join(TARGET, 'debug', 'ecanteen-balancer'), [
    '--listen', '127.0.0.1:0',
    '--admin', '127.0.0.1:0',
    '--spawn', '2',
    '--api-bin', join(TARGET, 'debug', 'ecanteen-api'),
    '--database-url', `sqlite://${join(dir, 'ecanteen.db')}`,
  ], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn', ECANTEEN_WS_KEEPALIVE_MS: String(KEEPALIVE_MS) } });
  let log = '';
  child.stderr.on('data', (chunk) => { log = (log + chunk).slice(-20_000); });
  const deadline = Date.now() + 60_000;
  const { listen, admin } = await listening(child, () => log, deadline);
  const base = `http://${listen}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the stack exited: ${log}`);
    try {
      const status = await (await fetch(`http://${admin}/status`)).json();
      if (status.ready >= 2 && (await fetch(`${base}/readyz`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`the stack did not become ready: ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    base,
    async stop() {
      child.stdin.end();
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A partner for setting the scene over HTTP: GraphQL and REST with its own cookie. */
export class Partner {
  constructor(base, username, password = 'correct horse battery') {
    this.base = base;
    this.username = username;
    this.password = password;
    this.cookie = '';
  }

  async join() {
    await this.gql('mutation($i: RegisterInput!) { register(input: $i) { id } }', { i: { username: this.username, password: this.password } });
    const response = await fetch(`${this.base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id } }', variables: { u: this.username, p: this.password } }),
    });
    this.cookie = (response.headers.get('set-cookie') ?? '').split(';')[0];
    this.id = (await response.json()).data.login.id;
    return this;
  }

  async gql(query, variables = {}) {
    const response = await fetch(`${this.base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie: this.cookie },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  }

  async rest(method, path, body) {
    const response = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'content-type': 'application/json', cookie: this.cookie },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  async createProduct(name, quantity = 5, extra = {}) {
    const data = await this.gql('mutation($i: CreateProductInput!) { createProduct(input: $i) { id version } }',
      { i: { name, price: 9999, quantity, category: 'makanan', description: 'enak', ...extra } });
    return data.createProduct;
  }
}
