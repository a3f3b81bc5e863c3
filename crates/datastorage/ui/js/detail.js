// detail.js — the event view: every field as a definition list, hold state, links, event_data as a JSON tree.

import { api } from './api.js';
import { h, $, clear, outcomePill, idText, viewLink, fmtLocal, fmtDuration } from './dom.js';
import { toQuery } from './urlstate.js';
import { reportError, setStatus } from './status.js';

/** Fields in display order, with their labels; any other field the server sends follows them. */
const FIELDS = [
  ['event_id', 'event id'], ['version', 'version'], ['event_timestamp', 'timestamp'], ['event_date', 'date'],
  ['event_category', 'category'], ['event_type', 'type'], ['event_action', 'action'], ['event_outcome', 'outcome'],
  ['severity', 'severity'], ['duration_ms', 'duration'], ['error_code', 'error code'], ['error_message', 'error message'],
  ['actor_type', 'actor type'], ['actor_id', 'actor id'], ['actor_ip', 'actor ip'],
  ['resource_type', 'resource type'], ['resource_id', 'resource id'], ['namespace', 'namespace'], ['cluster_id', 'cluster id'],
  ['correlation_id', 'correlation id'], ['parent_event_id', 'parent event'], ['parent_event_date', 'parent event date'],
  ['chain_sequence', 'chain sequence'], ['event_hash', 'event hash'], ['previous_event_hash', 'previous event hash'],
  ['hash_algorithm', 'hash algorithm'], ['hash_key_id', 'hash key id'], ['ingested_by', 'written by (principal)'],
  ['retention_days', 'retention (days)'], ['is_sensitive', 'sensitive'], ['legal_hold', 'legal hold'],
];
const MONO = new Set(['event_id', 'correlation_id', 'parent_event_id', 'event_hash', 'previous_event_hash', 'hash_key_id', 'actor_ip']);

let current = null;

export function initDetail() {
  $('#copy-json').addEventListener('click', copyJson);
}

export async function showDetail(state, signal) {
  current = null;
  const id = state.event_id || '';
  $('#event-title').textContent = id;
  clear($('#event-fields'));
  clear($('#event-data'));
  $('#hold-state').textContent = '';
  $('#event-parent-link').hidden = true;
  $('#event-timeline-link').hidden = true;
  if (!id) { setStatus('the event view needs an event_id in the URL', 'error'); return; }
  let ev;
  try {
    ev = await api(`/api/v1/audit/events/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    reportError(err, 'event');
    return;
  }
  current = ev;
  renderFields(ev);
  const held = !!ev.legal_hold;
  $('#hold-state').textContent = held ? 'on legal hold' : 'not held';
  $('#hold-state').dataset.state = held ? 'held' : 'not-held';
  const tl = $('#event-timeline-link');
  tl.href = toQuery({ view: 'timeline', correlation_id: ev.correlation_id });
  tl.hidden = false;
  if (ev.parent_event_id) {
    const pl = $('#event-parent-link');
    pl.href = toQuery({ view: 'event', event_id: ev.parent_event_id });
    pl.hidden = false;
  }
  $('#event-data').append(jsonTree(ev.event_data ?? {}, 0));
}

function renderFields(ev) {
  const dl = $('#event-fields');
  const known = new Set(FIELDS.map(([k]) => k));
  const rows = [...FIELDS, ...Object.keys(ev).filter((k) => !known.has(k) && k !== 'event_data').map((k) => [k, k])];
  for (const [key, label] of rows) {
    const v = ev[key];
    if (v === undefined || v === null) continue;
    dl.append(h('dt', { title: key }, label), h('dd', { dataset: { field: key }, class: MONO.has(key) ? 'mono' : null }, fieldValue(key, v)));
  }
}

function fieldValue(key, v) {
  switch (key) {
    case 'event_timestamp':
    case 'parent_event_date':
      return [h('span.mono', {}, String(v)), h('span.muted', {}, ` · ${fmtLocal(v)} local`)];
    case 'event_outcome': return outcomePill(v);
    case 'duration_ms': return `${v} ms (${fmtDuration(v)})`;
    case 'correlation_id': return viewLink(toQuery({ view: 'timeline', correlation_id: v }), String(v));
    case 'parent_event_id': return viewLink(toQuery({ view: 'event', event_id: v }), String(v));
    case 'previous_event_hash': return v === '' ? h('span.muted', {}, '(none: first event of the chain)') : h('span.hash', {}, v);
    case 'event_hash': return h('span.hash', {}, v);
    case 'legal_hold': return v ? 'on legal hold' : 'not held';
    default:
      if (typeof v === 'object') return idText(JSON.stringify(v));
      return String(v);
  }
}

/** Collapsible pretty JSON: <details> per object/array, open for the first two levels. */
export function jsonTree(value, depth, key) {
  const label = key === undefined ? [] : [h('span.json-key', {}, JSON.stringify(key)), ': '];
  if (value !== null && typeof value === 'object') {
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
    if (entries.length === 0) return h('div.json-row', {}, ...label, h('span.json-punct', {}, open + close));
    const summary = h('summary', {}, ...label, h('span.json-punct', {}, open),
      h('span.json-count', {}, ` ${entries.length} ${isArray ? 'item' : 'key'}${entries.length === 1 ? '' : 's'} `),
      h('span.json-punct.json-close-inline', {}, close));
    const body = h('div.json-children', {}, entries.map(([k, v]) => jsonTree(v, depth + 1, isArray ? undefined : k)));
    return h('details.json-node', { open: depth < 2 }, summary, body, h('div.json-punct', {}, close));
  }
  let cls = 'json-null';
  let text = 'null';
  if (typeof value === 'string') { cls = 'json-string'; text = JSON.stringify(value); }
  else if (typeof value === 'number') { cls = 'json-number'; text = String(value); }
  else if (typeof value === 'boolean') { cls = 'json-bool'; text = String(value); }
  return h('div.json-row', {}, ...label, h(`span.${cls}`, {}, text));
}

async function copyJson() {
  if (!current) return;
  const text = JSON.stringify(current.event_data ?? {}, null, 2);
  try {
    await navigator.clipboard.writeText(text);
    setStatus('event_data copied to the clipboard', 'ok');
  } catch {
    // The Clipboard API needs a secure context; fall back to a selected textarea.
    const ta = h('textarea.offscreen', { readonly: true });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    setStatus(ok ? 'event_data copied to the clipboard' : 'copy failed: select the JSON and copy it by hand', ok ? 'ok' : 'error');
  }
}
