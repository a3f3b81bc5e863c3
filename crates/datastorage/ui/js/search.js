// search.js — the search view: filter form, results table (client-side sort, cursor paging), live tail, export.

import { api, withQuery } from './api.js';
import { h, $, $$, clear, outcomePill, idText, timeText, viewLink, parseTs } from './dom.js';
import { FILTER_KEYS, STREAM_KEYS, pick, navigate, toQuery } from './urlstate.js';
import { openStream } from './sse.js';
import { reportError, setStatus } from './status.js';
import { exportEvents } from './actions.js';

const PAGE = 50;

const view = {
  state: {},
  signal: null,
  events: [],
  ids: new Set(),
  total: 0,
  cursor: null,
  sort: null, // {key, dir: 1 | -1}
  live: null,
};

const form = () => $('#search-form');
const tbody = () => $('#results tbody');

/** Wires the form, table and buttons once. */
export function initSearch() {
  form().addEventListener('submit', (e) => {
    e.preventDefault();
    const state = { view: 'search' };
    for (const [k, v] of new FormData(form())) if (String(v).trim() !== '') state[k] = String(v).trim();
    navigate(state);
  });
  for (const b of $$('#search-form [data-since]')) {
    b.addEventListener('click', () => {
      form().elements.since.value = b.dataset.since;
      form().elements.until.value = '';
      form().requestSubmit();
    });
  }
  $('#results thead').addEventListener('click', (e) => {
    const th = e.target.closest('th[data-sort]');
    if (!th) return;
    const key = th.dataset.sort;
    view.sort = view.sort && view.sort.key === key ? { key, dir: -view.sort.dir } : { key, dir: 1 };
    renderRows();
  });
  tbody().addEventListener('click', (e) => {
    if (e.target.closest('a')) return;
    const tr = e.target.closest('tr[data-event-id]');
    if (tr) navigate({ view: 'event', event_id: tr.dataset.eventId });
  });
  tbody().addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-event-id]');
    if (tr && e.key === 'Enter' && !e.target.closest('a')) navigate({ view: 'event', event_id: tr.dataset.eventId });
  });
  $('#next-page').addEventListener('click', () => loadPage(true));
  $('#live-toggle').addEventListener('change', (e) => (e.target.checked ? startLive() : stopLive()));
  $('#export-ndjson').addEventListener('click', () => exportEvents(view.state, 'ndjson'));
  $('#export-csv').addEventListener('click', () => exportEvents(view.state, 'csv'));
}

/** Renders the view for a state (called on every navigation to it). */
export function showSearch(state, signal) {
  view.state = state;
  view.signal = signal;
  for (const el of form().elements) if (el.name) el.value = state[el.name] ?? '';
  view.events = [];
  view.ids = new Set();
  view.total = 0;
  view.cursor = null;
  clear(tbody());
  $('#result-count').textContent = 'loading…';
  $('#next-page').hidden = true;
  if ($('#live-toggle').checked) startLive();
  return loadPage(false);
}

/** Leaves the view: the live stream stops. */
export function hideSearch() {
  stopLive();
  $('#live-toggle').checked = false;
}

async function loadPage(append) {
  const params = { ...pick(view.state, FILTER_KEYS), limit: PAGE };
  if (append && view.cursor) params.cursor = view.cursor;
  const btn = $('#next-page');
  btn.disabled = true;
  try {
    const res = await api(withQuery('/api/v1/audit/events', params), { signal: view.signal });
    for (const ev of res.data) {
      if (view.ids.has(ev.event_id)) continue;
      view.ids.add(ev.event_id);
      view.events.push(ev);
    }
    view.total = Math.max(res.pagination.total, view.events.length);
    view.cursor = res.pagination.has_more ? res.pagination.next_cursor || null : null;
    btn.hidden = !view.cursor;
    renderRows();
  } catch (err) {
    if (reportError(err, 'search')) $('#result-count').textContent = 'search failed';
  } finally {
    btn.disabled = false;
  }
}

function sortValue(ev, key) {
  if (key === 'resource') return [ev.resource_type, ev.resource_id].filter(Boolean).join('/');
  if (key === 'event_timestamp') { const t = parseTs(ev.event_timestamp); return Number.isNaN(t) ? null : t; }
  return ev[key];
}

const isEmpty = (v) => v === undefined || v === null || v === '';

/** Orders two events by a column; empty values go last whichever the direction. */
function compare(a, b, key, dir) {
  const x = sortValue(a, key);
  const y = sortValue(b, key);
  if (isEmpty(x) || isEmpty(y)) return isEmpty(x) === isEmpty(y) ? 0 : isEmpty(x) ? 1 : -1;
  const c = typeof x === 'number' && typeof y === 'number'
    ? x - y
    : String(x).localeCompare(String(y), undefined, { numeric: true });
  return c * dir;
}

function renderRows() {
  let rows = view.events;
  if (view.sort) {
    const { key, dir } = view.sort;
    rows = [...rows].sort((a, b) => compare(a, b, key, dir));
  }
  for (const th of $$('#results th[data-sort]')) {
    th.querySelector('.sort-arrow')?.remove();
    th.removeAttribute('aria-sort');
    if (view.sort && th.dataset.sort === view.sort.key) {
      th.setAttribute('aria-sort', view.sort.dir === 1 ? 'ascending' : 'descending');
      th.append(h('span.sort-arrow', { 'aria-hidden': 'true' }, view.sort.dir === 1 ? ' ▲' : ' ▼'));
    }
  }
  tbody().replaceChildren(...rows.map((ev) => rowFor(ev)));
  if (rows.length === 0) {
    tbody().append(h('tr.empty', {}, h('td', { colspan: 9 }, 'no events match these filters')));
  }
  updateCount();
}

function updateCount() {
  $('#result-count').textContent = `${view.events.length} of ${view.total}`;
}

function rowFor(ev, live = false) {
  const cell = (col, ...content) => h('td', { dataset: { col } }, ...content);
  const resource = [ev.resource_type, ev.resource_id].filter((x) => x != null && x !== '').join('/');
  const timeline = toQuery({ view: 'timeline', correlation_id: ev.correlation_id });
  return h('tr', { class: live ? 'live' : null, tabindex: 0, dataset: { eventId: ev.event_id } },
    cell('event_timestamp', timeText(ev.event_timestamp)),
    cell('event_category', ev.event_category ?? ''),
    cell('event_type', h('span.trunc', { title: ev.event_type || null }, ev.event_type ?? '')),
    cell('event_action', ev.event_action ?? ''),
    cell('event_outcome', outcomePill(ev.event_outcome)),
    cell('actor_id', idText(ev.actor_id)),
    cell('resource', h('span.trunc', { title: resource || null }, resource)),
    cell('correlation_id', viewLink(timeline, idText(ev.correlation_id))),
    h('td.num', { dataset: { col: 'chain_sequence' } }, ev.chain_sequence ?? ''),
  );
}

function startLive() {
  stopLive();
  const url = withQuery('/api/v1/audit/events/stream', pick(view.state, STREAM_KEYS));
  const stateEl = $('#live-state');
  view.live = openStream(url, {
    onState: (text) => { stateEl.textContent = text; },
    onMessage: (msg) => {
      if (msg.event === 'audit_event') {
        try { addLive(JSON.parse(msg.data)); } catch { /* a malformed message is skipped */ }
      } else if (msg.event === 'lagged') {
        let missed = '?';
        try { missed = JSON.parse(msg.data).missed; } catch { /* keep '?' */ }
        setStatus(`live: ${missed} events were skipped because this page fell behind; search again to see them`);
      }
    },
    onError: (err, fatal) => {
      reportError(err, 'live');
      if (fatal) { $('#live-toggle').checked = false; view.live = null; }
    },
  });
}

function stopLive() {
  if (view.live) view.live.stop();
  view.live = null;
  $('#live-state').textContent = '';
}

function addLive(ev) {
  if (!ev || !ev.event_id || view.ids.has(ev.event_id)) return;
  view.ids.add(ev.event_id);
  view.events.unshift(ev);
  view.total += 1;
  tbody().querySelector('tr.empty')?.remove();
  tbody().prepend(rowFor(ev, true));
  updateCount();
}
