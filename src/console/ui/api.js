// Calls to the console's JSON API. Every write carries a JSON body and the
// X-Runnel-Console header the server requires; every failure becomes an
// ApiError with the server's message (and `off` when a service is not run).

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
    this.off = status === 503;
  }
}

const TIMEOUT_MS = 20000;

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-Runnel-Console'] = '1';
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch('/api' + path, init);
  } catch (e) {
    const why = e.name === 'TimeoutError' ? 'timed out' : 'could not reach the console server';
    throw new ApiError(0, `${method} ${path}: ${why}`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) {
    const message = (data && typeof data === 'object' && data.message) || (typeof data === 'string' && data) || response.statusText;
    throw new ApiError(response.status, String(message), data);
  }
  return data;
}

export const get = (path) => api(path);
export const post = (path, body) => api(path, { method: 'POST', body });
export const put = (path, body) => api(path, { method: 'PUT', body });
export const del = (path, body) => api(path, { method: 'DELETE', body });
export const enc = encodeURIComponent;
