// urlstate.js — the whole page state lives in the /ui/ query string: parse, serialize, navigate (pushState).

export const VIEWS = ['search', 'timeline', 'event', 'overview', 'holds'];

/** Filters of GET /api/v1/audit/events (and of stats; stream takes them without since/until). */
export const FILTER_KEYS = [
  'event_type', 'event_category', 'event_outcome', 'severity', 'correlation_id',
  'since', 'until', 'detail_key', 'detail_value', 'actor_id', 'resource_type',
  'resource_id', 'namespace', 'cluster_id',
];

/** The filters the stream accepts. */
export const STREAM_KEYS = FILTER_KEYS.filter((k) => k !== 'since' && k !== 'until');

/** The filters the export accepts (search name → export name): all of them, the time range under
 * upstream's names. */
export const EXPORT_KEYS = Object.fromEntries(
  FILTER_KEYS.map((k) => [k, { since: 'start_time', until: 'end_time' }[k] || k]),
);

export const DEFAULT_STATE = Object.freeze({ view: 'search', since: '24h' });

/** Parses a query string (`?view=…&…`) into a plain object of non-empty strings. */
export function parseState(search) {
  const params = new URLSearchParams(search);
  const state = {};
  for (const [k, v] of params) if (v !== '') state[k] = v;
  if (Object.keys(state).length === 0) return { ...DEFAULT_STATE };
  if (!VIEWS.includes(state.view)) state.view = 'search';
  return state;
}

/** Serializes a state into `?view=…&…` (view first, empty values dropped). */
export function toQuery(state) {
  const params = new URLSearchParams();
  params.set('view', state.view || 'search');
  for (const [k, v] of Object.entries(state)) {
    if (k !== 'view' && v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  return `?${params.toString()}`;
}

/** Picks the given keys of an object that have a non-empty value. */
export function pick(obj, keys) {
  const out = {};
  for (const k of keys) if (obj[k] !== undefined && obj[k] !== null && obj[k] !== '') out[k] = obj[k];
  return out;
}

let listener = () => {};

/** Registers the router called after every navigation. */
export function onNavigate(fn) { listener = fn; }

/** Goes to a state: pushes (or replaces) the history entry, then renders it. */
export function navigate(state, { replace = false } = {}) {
  const url = toQuery(state);
  if (url !== location.search || replace) {
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
  }
  listener(parseState(url));
}

/** Rewrites the URL without rendering (for state that is already on screen). */
export function replaceQuiet(state) {
  history.replaceState(null, '', toQuery(state));
}
