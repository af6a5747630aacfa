// GraphQL over fetch, with errors turned into something a person can read.
//
// Reads go as automatic persisted queries (Apollo's APQ protocol) by GET: the URL
// carries the query's SHA-256 and its variables, not its text, so the browser's cache
// can hold the answer and revalidate it (the server answers 304 while it is unchanged).
// The first time a replica set has not seen a query, it answers
// PERSISTED_QUERY_NOT_FOUND and the client sends the text once, by POST. Mutations,
// and reads where the page has no Web Crypto (a page served over plain HTTP to another
// host), go by POST as before.

import { t } from './i18n.js';

/** A failure, with the server's stable code and, for bad input, the field. */
export class ApiError extends Error {
  constructor(message, { code = 'INTERNAL', field = null, current = null, retryAfter = null, available = null } = {}) {
    super(message);
    this.available = available;
    this.code = code;
    this.field = field;
    this.current = current;
    this.retryAfter = retryAfter;
  }
}

let onUnauthenticated = () => {};

/** Called when the server says the session is gone (expired or logged out). */
export function setUnauthenticatedHandler(handler) {
  onUnauthenticated = handler;
}

function transportError(response, body) {
  const retryAfter = Number(response.headers.get('retry-after')) || null;
  if (response.status === 429) {
    return new ApiError(tooMany(retryAfter), { code: 'TOO_MANY_REQUESTS', retryAfter });
  }
  if (response.status === 503 || response.status === 502 || response.status === 504) {
    return new ApiError(t('error.busy'), { code: 'UNAVAILABLE', retryAfter });
  }
  if (response.status === 413) {
    return new ApiError(t('error.field.image'), { code: 'PAYLOAD_TOO_LARGE', field: 'image' });
  }
  return new ApiError(t('error.status', { status: response.status }), { code: 'INTERNAL' });
}

function tooMany(retryAfter) {
  return retryAfter ? t('error.tooManyWait', { seconds: retryAfter }) : t('error.tooMany');
}

/**
 * A server error in the reader's language. The server's own messages are English and
 * name the rule; the client says the same by its code and field, in either language.
 */
function friendly(error) {
  const ext = error.extensions ?? {};
  const code = ext.code ?? 'INTERNAL';
  const field = typeof ext.field === 'string' ? ext.field.split('.').pop() : null;
  const options = {
    code,
    field,
    current: ext.current ?? null,
    retryAfter: ext.retryAfter ?? null,
    available: ext.available ?? null,
  };
  let message;
  switch (code) {
    case 'INTERNAL':
      message = ext.retryable ? t('error.busy') : t('error.internal');
      break;
    case 'BUSY':
      message = t('error.busy');
      break;
    case 'TOO_MANY_REQUESTS':
      message = tooMany(ext.retryAfter);
      break;
    case 'BAD_USER_INPUT': {
      const key = `error.field.${field}`;
      message = field && t(key) !== key ? t(key) : t('error.badInput');
      break;
    }
    case 'UNAUTHENTICATED':
    case 'FORBIDDEN':
    case 'NOT_FOUND':
    case 'CONFLICT':
      message = t(`error.${code}`);
      break;
    case 'INSUFFICIENT_STOCK':
      message = t('error.INSUFFICIENT_STOCK', { available: ext.available ?? '?' });
      break;
    default:
      message = t('error.internal');
  }
  return new ApiError(message, options);
}

async function send(init, url = '/graphql') {
  let response;
  try {
    response = await fetch(url, { credentials: 'same-origin', ...init });
  } catch {
    throw new ApiError(t('error.offline'), { code: 'OFFLINE' });
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body?.errors?.length) {
    const error = friendly(body.errors[0]);
    if (error.code === 'UNAUTHENTICATED') onUnauthenticated(error);
    throw error;
  }
  if (!response.ok || !body) throw transportError(response, body);
  return body.data;
}

function post(body) {
  return send({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

const hashes = new Map();

/** The SHA-256 of a query's text, in hex; null without Web Crypto. */
async function sha256(text) {
  if (!globalThis.crypto?.subtle) return null;
  if (!hashes.has(text)) {
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
    hashes.set(text, Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join(''));
  }
  return hashes.get(text);
}

/** Runs a query or mutation; queries as persisted queries, by GET. */
export async function gql(query, variables = {}) {
  const hash = /^\s*(query\b|\{)/.test(query) ? await sha256(query) : null;
  if (!hash) return post({ query, variables });
  const extensions = { persistedQuery: { version: 1, sha256Hash: hash } };
  const url = `/graphql?${new URLSearchParams({ variables: JSON.stringify(variables), extensions: JSON.stringify(extensions) })}`;
  try {
    return await send({ method: 'GET' }, url);
  } catch (error) {
    if (error.code !== 'PERSISTED_QUERY_NOT_FOUND') throw error;
  }
  return post({ query, variables, extensions });
}

/** Runs a mutation with one file, per the GraphQL multipart request spec. */
export function gqlUpload(query, variables, fileVariable, file) {
  const form = new FormData();
  form.append('operations', JSON.stringify({ query, variables: { ...variables, [fileVariable]: null } }));
  form.append('map', JSON.stringify({ 0: [`variables.${fileVariable}`] }));
  form.append('0', file, file.name);
  // The server refuses cookie-authenticated uploads without this header: a
  // cross-site form cannot set it.
  return send({ method: 'POST', headers: { 'x-requested-with': 'e-canteen' }, body: form });
}

export const PRODUCT_FIELDS = `id name description price quantity category lowStockThreshold
  isLowStock isOutOfStock imageUrl thumbnailUrl version updatedAt owner { id username }`;

/**
 * Orders reads that replace one another on screen (a new search, a reload after an
 * event). Pass each read's promise through the same `newest()`; it resolves to the answer
 * only if no later read was started meanwhile, and to `undefined` otherwise, so a slow
 * answer can never overwrite a newer one. A superseded read's failure is dropped too.
 */
export function newest() {
  let started = 0;
  return async (request) => {
    const ticket = ++started;
    try {
      const value = await request;
      return ticket === started ? value : undefined;
    } catch (error) {
      if (ticket === started) throw error;
      return undefined;
    }
  };
}
