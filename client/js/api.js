// GraphQL over fetch, with errors turned into something a person can read.

/** A failure, with the server's stable code and, for bad input, the field. */
export class ApiError extends Error {
  constructor(message, { code = 'INTERNAL', field = null, current = null, retryAfter = null } = {}) {
    super(message);
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
    return new ApiError(`Too many requests; please wait ${retryAfter ?? 'a few'} seconds and try again.`,
      { code: 'TOO_MANY_REQUESTS', retryAfter });
  }
  if (response.status === 503 || response.status === 502 || response.status === 504) {
    return new ApiError('The service is busy or restarting. Please try again in a moment.',
      { code: 'UNAVAILABLE', retryAfter });
  }
  if (response.status === 413) {
    return new ApiError(body?.errors?.[0]?.message ?? 'That is too large to upload.', { code: 'PAYLOAD_TOO_LARGE', field: 'image' });
  }
  return new ApiError(`The server answered ${response.status}. Please try again.`, { code: 'INTERNAL' });
}

function friendly(error) {
  const ext = error.extensions ?? {};
  const code = ext.code ?? 'INTERNAL';
  if (code === 'INTERNAL') {
    return new ApiError(ext.retryable
      ? 'The service is busy or restarting. Please try again in a moment.'
      : 'Something went wrong on our side. Please try again.', { code });
  }
  const field = typeof ext.field === 'string' ? ext.field.split('.').pop() : null;
  // "input.name: must be …" reads better without the path.
  const message = String(error.message ?? '').replace(/^[\w.]+: /, '');
  return new ApiError(message || code, {
    code,
    field,
    current: ext.current ?? null,
    retryAfter: ext.retryAfter ?? null,
  });
}

async function send(init) {
  let response;
  try {
    response = await fetch('/graphql', { credentials: 'same-origin', ...init });
  } catch {
    throw new ApiError('Cannot reach the server. Check your connection and try again.', { code: 'OFFLINE' });
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

/** Runs a query or mutation. */
export function gql(query, variables = {}) {
  return send({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
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
