// overview.js — the overview view: /stats as a stacked bar chart over time, a category × outcome table, the latest checkpoint.

import { api, withQuery, ApiError, describeError } from './api.js';
import { h, s, $, $$, clear, CATEGORIES, OUTCOMES, outcomeColor, categoryColor, parseTs, fmtLocal, tickStep } from './dom.js';
import { FILTER_KEYS, pick, navigate, toQuery } from './urlstate.js';
import { reportError } from './status.js';

const cache = { key: '', data: null, reuse: false };
let current = { state: {}, data: null };

export function initOverview() {
  const form = $('#overview-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const state = { ...current.state, view: 'overview' };
    for (const [k, v] of new FormData(form)) state[k] = String(v).trim();
    if (state.by === 'outcome') delete state.by;
    navigate(state);
  });
  for (const b of $$('#overview-form [data-since]')) {
    b.addEventListener('click', () => {
      form.elements.since.value = b.dataset.since;
      form.elements.until.value = '';
      form.requestSubmit();
    });
  }
  $('#stats-by').addEventListener('change', () => { cache.reuse = true; form.requestSubmit(); });
  const open = (e) => {
    if (e.type === 'keydown' && e.key !== 'Enter') return;
    const bar = e.target.closest('rect.stats-bar');
    if (bar) navigate(barSearch(bar));
  };
  $('#stats-chart-wrap').addEventListener('click', open);
  $('#stats-chart-wrap').addEventListener('keydown', open);
}

export async function showOverview(state, signal) {
  current = { state, data: null };
  const form = $('#overview-form');
  for (const el of form.elements) if (el.name) el.value = state[el.name] ?? '';
  $('#stats-by').value = state.by === 'category' ? 'category' : 'outcome';
  loadCheckpoint(signal);
  const params = { ...pick(state, FILTER_KEYS), bucket: state.bucket };
  const url = withQuery('/api/v1/audit/stats', params);
  // Relative ranges move with the clock: reuse the last answer only when just the stacking changed.
  let data = cache.reuse && cache.key === url ? cache.data : null;
  cache.reuse = false;
  if (!data) {
    $('#stats-summary').textContent = 'loading…';
    try {
      data = await api(url, { signal });
    } catch (err) {
      if (reportError(err, 'overview')) $('#stats-summary').textContent = 'statistics could not be loaded';
      clear($('#stats-chart-wrap'));
      clear($('#stats-table'));
      return;
    }
    cache.key = url;
    cache.data = data;
  }
  current.data = data;
  $('#stats-summary').textContent = `${data.total} events from ${fmtLocal(data.since)} to ${fmtLocal(data.until)} · bucket ${data.bucket}`;
  drawChart(data, $('#stats-by').value);
  drawTable(data);
}

/** The search a bar stands for: its bucket's time range and its category or outcome. */
function barSearch(bar) {
  const { state, data } = current;
  const start = bar.dataset.start;
  const until = new Date(parseTs(start) + data.bucket_seconds * 1000).toISOString();
  const by = $('#stats-by').value;
  const st = { ...pick(state, FILTER_KEYS), view: 'search', since: start, until };
  if (by === 'category') st.event_category = bar.dataset.key;
  else st.event_outcome = bar.dataset.key;
  return st;
}

function orderedKeys(present, known) {
  return [...known.filter((k) => present.has(k)), ...[...present].filter((k) => !known.includes(k)).sort()];
}

/** A nice step for a count axis: 1, 2, 5 × 10^k. */
function countStep(max, ticks) {
  const raw = Math.max(max / ticks, 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((st) => st >= raw);
}

function drawChart(data, by) {
  const wrap = clear($('#stats-chart-wrap'));
  const W = Math.max(640, (wrap.parentElement.clientWidth || 1000) - 2), H = 300;
  const ML = 52, MR = 12, MT = 44, MB = 40;
  const plotW = W - ML - MR, plotH = H - MT - MB;
  const bs = data.bucket_seconds * 1000;
  const field = by === 'category' ? 'event_category' : 'event_outcome';
  const color = by === 'category' ? categoryColor : outcomeColor;

  const stacks = new Map();
  const present = new Set();
  for (const b of data.buckets) {
    const t = parseTs(b.start);
    if (!stacks.has(b.start)) stacks.set(b.start, { start: b.start, t, total: 0, parts: new Map() });
    const st = stacks.get(b.start);
    const key = b[field] ?? 'unknown';
    present.add(key);
    st.parts.set(key, (st.parts.get(key) || 0) + b.count);
    st.total += b.count;
  }
  const keys = orderedKeys(present, by === 'category' ? CATEGORIES : OUTCOMES);
  const starts = [...stacks.values()].map((st) => st.t);
  const xs = Math.min(parseTs(data.since), ...starts);
  const xe = Math.max(parseTs(data.until), ...starts.map((t) => t + bs));
  const X = (t) => ML + ((t - xs) / Math.max(xe - xs, 1)) * plotW;
  const maxY = Math.max(1, ...[...stacks.values()].map((st) => st.total));
  const yStep = countStep(maxY, 5);
  const yMax = Math.ceil(maxY / yStep) * yStep;
  const Y = (v) => MT + plotH - (v / yMax) * plotH;

  const svg = s('svg#stats-chart', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `events per ${data.bucket} by ${by}` });

  const axis = s('g.axis');
  for (let v = 0; v <= yMax; v += yStep) {
    axis.append(s('line.grid', { x1: ML, x2: W - MR, y1: Y(v), y2: Y(v) }));
    axis.append(s('text', { x: ML - 6, y: Y(v) + 4, 'text-anchor': 'end' }, v.toLocaleString()));
  }
  axis.append(s('text.axis-caption', { x: 4, y: MT - 12 }, `events per ${data.bucket}`));
  axis.append(s('line', { x1: ML, x2: W - MR, y1: MT + plotH, y2: MT + plotH }));
  // Time ticks, aligned to local time; labels show the date when it changes.
  const step = Math.max(tickStep(xe - xs, Math.max(2, Math.floor(plotW / 110))), bs);
  const tz = new Date(xs).getTimezoneOffset() * 60e3;
  let lastDay = '';
  for (let t = Math.ceil((xs - tz) / step) * step + tz; t <= xe; t += step) {
    const d = fmtLocal(t);
    const day = d.slice(5, 10);
    const label = step >= 86400e3 ? day : day !== lastDay ? `${day} ${d.slice(11, 16)}` : d.slice(11, 16);
    lastDay = day;
    axis.append(s('line', { x1: X(t), x2: X(t), y1: MT + plotH, y2: MT + plotH + 5 }));
    axis.append(s('text', { x: X(t), y: MT + plotH + 18, 'text-anchor': 'middle' }, label));
  }
  svg.append(axis);

  const bars = s('g.stats-bars');
  for (const st of stacks.values()) {
    const x = X(st.t);
    const w = Math.max(1, X(st.t + bs) - x - (X(st.t + bs) - x > 4 ? 1 : 0));
    let acc = 0;
    for (const key of keys) {
      const count = st.parts.get(key);
      if (!count) continue;
      const y0 = Y(acc), y1 = Y(acc + count);
      acc += count;
      bars.append(s('rect.stats-bar', {
        x, y: y1, width: w, height: Math.max(y0 - y1, 0.5), fill: color(key), tabindex: 0, role: 'link',
        'data-start': st.start, 'data-key': key, 'data-count': count,
      }, s('title', {}, `${fmtLocal(st.t)} – ${fmtLocal(st.t + bs)}\n${key}: ${count} (bucket total ${st.total})\nclick to search`)));
    }
  }
  svg.append(bars);

  const legend = s('g.legend');
  let lx = ML;
  for (const key of keys) {
    legend.append(s('rect', { x: lx, y: 6, width: 10, height: 10, fill: color(key) }),
      s('text', { x: lx + 14, y: 15 }, key));
    lx += 24 + key.length * 7;
  }
  svg.append(legend);
  if (!data.buckets.length) svg.append(s('text.empty', { x: ML + plotW / 2, y: MT + plotH / 2, 'text-anchor': 'middle' }, 'no events in this range'));
  wrap.append(svg);
}

function drawTable(data) {
  const counts = new Map();
  const cats = new Set(), outs = new Set();
  for (const b of data.buckets) {
    cats.add(b.event_category);
    outs.add(b.event_outcome);
    const k = `${b.event_category}\u0000${b.event_outcome}`;
    counts.set(k, (counts.get(k) || 0) + b.count);
  }
  const rows = orderedKeys(cats, CATEGORIES);
  const cols = orderedKeys(outs, OUTCOMES);
  const get = (c, o) => counts.get(`${c}\u0000${o}`) || 0;
  const link = (n, filters) => n
    ? h('a', { href: toQuery({ view: 'search', since: data.since, until: data.until, ...filters }) }, n.toLocaleString())
    : h('span.muted', {}, '0');
  const table = clear($('#stats-table'));
  table.append(
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'category'), cols.map((o) => h('th.num', { scope: 'col' }, o)), h('th.num', { scope: 'col' }, 'total'))),
    h('tbody', {}, rows.map((c) => h('tr', { dataset: { category: c } },
      h('th', { scope: 'row' }, c),
      cols.map((o) => h('td.num', { dataset: { outcome: o } }, link(get(c, o), { event_category: c, event_outcome: o }))),
      h('td.num', {}, link(cols.reduce((a, o) => a + get(c, o), 0), { event_category: c }))))),
    h('tfoot', {}, h('tr', {}, h('th', { scope: 'row' }, 'total'),
      cols.map((o) => h('td.num', {}, link(rows.reduce((a, c) => a + get(c, o), 0), { event_outcome: o }))),
      h('td.num', {}, link(data.total, {})))),
  );
}

async function loadCheckpoint(signal) {
  const out = $('#latest-checkpoint');
  out.textContent = 'checkpoint: …';
  out.removeAttribute('title');
  try {
    const cp = await api('/api/v1/audit/checkpoints/latest', { signal });
    out.textContent = `latest checkpoint #${cp.checkpoint_id} · written ${fmtLocal(cp.created_at)} · ${cp.chains} chains · ` +
      `${cp.algorithm} key ${cp.key_id}`;
    out.title = `checkpoint hash ${cp.checkpoint_hash}\nprevious ${cp.previous_hash || '(first)'}\nsignature ${cp.signature}`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) out.textContent = 'no checkpoint yet';
    else if (err instanceof ApiError && err.status === 403) out.textContent = 'checkpoint: not permitted';
    else if (err instanceof ApiError && err.status === 401) reportError(err);
    else if (err.name !== 'AbortError') out.textContent = `checkpoint: ${describeError(err)}`;
  }
}
