// api.js — fetch wrapper for /api/v1: Bearer token from sessionStorage, RFC 7807 problems as ApiError.

export const TOKEN_KEY = 'datastorage.token';

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}
export function setToken(token) { sessionStorage.setItem(TOKEN_KEY, token); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

/** Headers every API request carries (the Authorization header only when a token is stored). */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** A non-2xx answer: `status`, the problem body (title, detail, field_errors…) and Retry-After. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

/** Builds `path?query` from an object, skipping empty values. */
export function withQuery(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** Turns a failed Response into an ApiError (reading a problem+json body when there is one). */
export async function errorFrom(res) {
  let problem = {};
  try {
    const text = await res.text();
    if (text) {
      try { problem = JSON.parse(text); } catch { problem = { detail: text.slice(0, 300) }; }
    }
  } catch { /* body unreadable: keep the status only */ }
  if (typeof problem !== 'object' || problem === null) problem = {};
  if (!problem.title) problem.title = res.statusText || `HTTP ${res.status}`;
  const ra = res.headers.get('Retry-After');
  const retryAfter = ra !== null && /^\d+$/.test(ra.trim()) ? Number(ra) : null;
  return new ApiError(res.status, problem, retryAfter);
}

/** Fetches an API URL and returns the Response when 2xx; throws ApiError otherwise. */
export async function apiRaw(path, { method = 'GET', body, signal, accept = 'application/json' } = {}) {
  const headers = authHeaders({ Accept: accept });
  const init = { method, headers, signal, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await errorFrom(res);
  return res;
}

/** Fetches an API URL and parses the JSON answer. */
export async function api(path, options) {
  const res = await apiRaw(path, options);
  if (res.status === 204) return null;
  return res.json();
}

/** A readable one-paragraph description of any error an API call threw. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `request failed: ${err && err.message ? err.message : err}`;
  const p = err.problem;
  if (err.status === 503) {
    const wait = err.retryAfter !== null ? `, retry in ${err.retryAfter}s` : ', retry later';
    return `database busy${wait}${p.detail ? ` (${p.detail})` : ''}`;
  }
  if (err.status === 429) {
    const wait = err.retryAfter !== null ? ` retry in ${err.retryAfter}s` : '';
    return `${p.detail || p.title || 'too many requests'}.${wait}`;
  }
  let text = p.detail && p.detail !== p.title ? `${p.title}: ${p.detail}` : (p.title || `HTTP ${err.status}`);
  const fe = p.field_errors;
  if (fe && typeof fe === 'object' && Object.keys(fe).length) {
    text += ' — ' + Object.entries(fe).map(([field, msg]) => `${field}: ${msg}`).join('; ');
  }
  return text;
}

/** True for the error fetch throws when its AbortController fires. */
export function isAbort(err) {
  return !!err && (err.name === 'AbortError' || err === 'navigated');
}
