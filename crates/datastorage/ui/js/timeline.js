// timeline.js — one correlation id's chain: SVG timeline, ordered list, verify/checkpoint/hold badges, hold actions.

import { api, withQuery, ApiError } from './api.js';
import { h, s, $, clear, outcomePill, outcomeColor, idText, timeText, viewLink, parseTs, fmtLocal, fmtDuration, tickStep } from './dom.js';
import { navigate, toQuery } from './urlstate.js';
import { reportError, setStatus } from './status.js';
import { verifyChain, placeHold, releaseHold } from './actions.js';

const PAGE = 1000;
const CAP = 10_000;
/** Rows the list adds at a time: the first at once, the next as the list is scrolled to its end. */
const LIST_CHUNK = 250;
/** Above this many events the chart draws a density strip instead of a glyph and links per event. */
const DENSE = 1000;

const view = {
  cid: '', signal: null, events: [], byId: new Map(), total: 0, capped: false, verify: null,
  listed: 0, more: null, tampered: new Set(),
};

/** A tick's offset from the start, in the unit its step calls for: +250ms, +1.5s, +2min, +1h30min, +2d. */
export function tickLabel(offset, step) {
  const n = (x) => String(Number(x.toFixed(3)));
  if (step < 1e3) return `+${n(offset)}ms`;
  if (step < 60e3) return offset < 60e3 ? `+${n(offset / 1e3)}s` : `+${Math.floor(offset / 60e3)}min${n((offset % 60e3) / 1e3)}s`.replace(/min0s$/, 'min');
  if (step < 3600e3) return offset < 3600e3 ? `+${n(offset / 60e3)}min` : `+${Math.floor(offset / 3600e3)}h${n((offset % 3600e3) / 60e3)}min`.replace(/h0min$/, 'h');
  if (step < 86400e3) return offset < 86400e3 ? `+${n(offset / 3600e3)}h` : `+${Math.floor(offset / 86400e3)}d${n((offset % 86400e3) / 3600e3)}h`.replace(/d0h$/, 'd');
  return `+${n(offset / 86400e3)}d`;
}

export function initTimeline() {
  $('#verify-chain').addEventListener('click', () => runVerify());
  $('#hold-form').addEventListener('submit', (e) => { e.preventDefault(); holdAction('place'); });
  $('#hold-release').addEventListener('click', () => holdAction('release'));
  const open = (e) => {
    if (e.type === 'keydown' && e.key !== 'Enter') return;
    if (e.target.closest('a')) return;
    const el = e.target.closest('[data-event-id]');
    if (el) navigate({ view: 'event', event_id: el.dataset.eventId });
  };
  for (const el of [$('#timeline-list tbody'), $('#timeline-chart')]) {
    el.addEventListener('click', open);
    el.addEventListener('keydown', open);
  }
  let pending = 0;
  window.addEventListener('resize', () => {
    clearTimeout(pending);
    pending = setTimeout(() => { if (!$('#view-timeline').hidden && view.events.length) renderChart(); }, 150);
  });
}

export async function showTimeline(state, signal) {
  view.cid = state.correlation_id || '';
  view.signal = signal;
  view.events = [];
  view.byId = new Map();
  view.verify = null;
  view.tampered = new Set();
  $('#timeline-cid').textContent = view.cid;
  $('#timeline-cid').title = view.cid;
  $('#hold-status').textContent = '';
  $('#hold-status').className = 'muted';
  clear($('#timeline-chart'));
  clear($('#timeline-list tbody'));
  clear($('#verify-message'));
  setBadge($('#verify-badge'), 'pending', 'verifying…');
  setBadge($('#checkpoint-badge'), 'pending', 'checkpoint…');
  setBadge($('#timeline-hold'), 'pending', '');
  if (!view.cid) {
    setStatus('the timeline needs a correlation_id in the URL', 'error');
    return;
  }
  await Promise.all([loadEvents(), runVerify()]);
}

function setBadge(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
  el.removeAttribute('title');
}

async function loadEvents() {
  const events = [];
  let cursor = null;
  let total = 0;
  $('#timeline-note').textContent = 'loading events…';
  try {
    do {
      const params = { correlation_id: view.cid, limit: PAGE, cursor };
      const res = await api(withQuery('/api/v1/audit/events', params), { signal: view.signal });
      events.push(...res.data);
      total = res.pagination.total;
      cursor = res.pagination.has_more ? res.pagination.next_cursor : null;
    } while (cursor && events.length < CAP);
  } catch (err) {
    reportError(err, 'timeline');
    $('#timeline-note').textContent = 'events could not be loaded';
    return;
  }
  view.capped = events.length >= CAP && (cursor !== null || total > events.length);
  view.events = events.slice(0, CAP).sort((a, b) => (a.chain_sequence ?? 0) - (b.chain_sequence ?? 0));
  view.byId = new Map(view.events.map((ev) => [ev.event_id, ev]));
  view.total = total;
  $('#timeline-note').textContent = view.capped
    ? `showing ${view.events.length} of ${total} events (capped at ${CAP})`
    : `${view.events.length} event${view.events.length === 1 ? '' : 's'}`;
  const held = view.events.some((ev) => ev.legal_hold);
  setBadge($('#timeline-hold'), held ? 'held' : 'not-held', held ? 'on legal hold' : 'not held');
  renderList();
  renderChart();
  renderVerify();
}

async function runVerify() {
  const badge = $('#verify-badge');
  setBadge(badge, 'pending', 'verifying…');
  try {
    view.verify = await verifyChain(view.cid, view.signal);
  } catch (err) {
    const text = reportError(err, 'verify');
    if (!text) return;
    const forbidden = err instanceof ApiError && err.status === 403;
    setBadge(badge, 'error', forbidden ? 'verification not permitted' : 'verification failed');
    badge.title = text;
    setBadge($('#checkpoint-badge'), 'unknown', 'checkpoint: unknown');
    return;
  }
  renderVerify();
}

/** The verdict, also from servers that do not send `verdict`. */
function verdictOf(v) {
  if (v.verdict) return v.verdict;
  if (v.total_events === 0) return 'empty';
  return v.is_valid ? 'intact' : 'tampered';
}

function renderVerify() {
  const v = view.verify;
  if (!v) return;
  const badge = $('#verify-badge');
  const verdict = verdictOf(v);
  const tampered = v.tampered_events || [];
  const seqOf = (t) => view.byId.get(t.event_id)?.chain_sequence ?? t.chain_sequence;
  let text;
  if (verdict === 'intact') text = `chain intact · ${v.total_events} events`;
  else if (verdict === 'tampered') {
    const seqs = tampered.map(seqOf).filter(Number.isFinite);
    text = seqs.length ? `tampered at sequence ${Math.min(...seqs)}` : `tampered (${tampered.length || 'rows missing'})`;
  } else if (verdict === 'unverifiable') {
    text = `unverifiable · ${v.unverifiable_events} of ${v.total_events} events signed with a key not configured`;
  } else if (verdict === 'empty') text = 'no events in the chain';
  else text = verdict;
  // Retention: the chain starts after purged events.
  const first = view.events[0]?.chain_sequence;
  let start = null;
  if (!view.capped && Number.isFinite(first) && first > 1) start = first;
  else if (v.purged_events > 0) start = v.purged_events + 1;
  if (start !== null) text += ` · starts at ${start} after retention`;
  setBadge(badge, verdict, text);
  if (start !== null) badge.dataset.retention = String(start);
  else delete badge.dataset.retention;
  badge.title = `${v.message} (verified ${v.verified_events} of ${v.total_events} at ${v.verification_time})`;

  const msg = clear($('#verify-message'));
  msg.append(h('p', {}, v.message));
  if (tampered.length) {
    msg.append(h('ul.tampered-list', {}, tampered.map((t) => h('li', {},
      `sequence ${seqOf(t) ?? '?'} `, idText(t.event_id || '(missing row)'), ` — ${t.message || 'hash mismatch'} `,
      h('span.mono.trunc', { title: `expected ${t.expected_hash}\nstored ${t.actual_hash}` }, `expected ${t.expected_hash}`),
    ))));
  }
  view.tampered = new Set(tampered.map((t) => t.event_id).filter(Boolean));
  for (const el of document.querySelectorAll('#view-timeline .tampered')) el.classList.remove('tampered');
  for (const t of tampered) {
    if (!t.event_id) continue;
    for (const el of document.querySelectorAll(`#view-timeline [data-event-id="${CSS.escape(t.event_id)}"]`)) {
      el.classList.add('tampered');
    }
  }

  const cp = v.checkpoint;
  const cpBadge = $('#checkpoint-badge');
  if (!cp) setBadge(cpBadge, 'none', 'not yet in a checkpoint');
  else if (cp.consistent) setBadge(cpBadge, 'consistent', `checkpoint #${cp.checkpoint_id} consistent`);
  else setBadge(cpBadge, 'inconsistent', `checkpoint #${cp.checkpoint_id}: ${cp.message}`);
  if (cp) cpBadge.title = `${cp.message}\nwritten ${cp.created_at}; head sequence ${cp.sequence}, hash ${cp.hash}`;
}

async function holdAction(kind) {
  const out = $('#hold-status');
  const reason = $('#hold-reason').value.trim();
  out.className = 'muted';
  out.textContent = kind === 'place' ? 'placing hold…' : 'releasing hold…';
  try {
    if (kind === 'place') {
      const r = await placeHold(view.cid, reason);
      out.textContent = `hold placed by ${r.placed_by} at ${fmtLocal(r.placed_at)} on ${r.events_affected} events`;
    } else {
      const r = await releaseHold(view.cid, reason);
      out.textContent = `hold released by ${r.released_by} at ${fmtLocal(r.released_at)} (${r.events_released} events)`;
    }
    out.className = 'ok';
    await loadEvents();
  } catch (err) {
    const text = reportError(err, kind === 'place' ? 'legal hold' : 'release');
    if (!text) return;
    out.className = 'error';
    out.textContent = err instanceof ApiError && err.status === 409 ? `already on legal hold: ${text}` : text;
  }
}

function listRow(ev) {
  return h('tr', { tabindex: 0, class: view.tampered.has(ev.event_id) ? 'tampered' : null,
    dataset: { seq: ev.chain_sequence, eventId: ev.event_id } },
    h('td.num', {}, ev.chain_sequence ?? ''),
    h('td', {}, timeText(ev.event_timestamp)),
    h('td', {}, ev.event_type ?? ''),
    h('td', {}, ev.event_action ?? ''),
    h('td', {}, outcomePill(ev.event_outcome)),
    h('td', {}, idText(ev.actor_id)),
    h('td.num', {}, ev.duration_ms != null ? fmtDuration(ev.duration_ms) : ''),
    h('td', {}, viewLink(toQuery({ view: 'event', event_id: ev.event_id }), idText(ev.event_id))),
  );
}

/** The list in chain order, LIST_CHUNK rows at a time: a long chain's first rows show at once. */
function renderList() {
  view.more?.disconnect();
  view.listed = 0;
  $('#timeline-list tbody').replaceChildren();
  appendRows();
}

function appendRows() {
  const body = $('#timeline-list tbody');
  $('#timeline-more')?.remove();
  const next = view.events.slice(view.listed, view.listed + LIST_CHUNK);
  view.listed += next.length;
  body.append(...next.map(listRow));
  const rest = view.events.length - view.listed;
  if (rest <= 0) return;
  const button = h('button', { type: 'button', on: { click: appendRows } },
    `show ${Math.min(rest, LIST_CHUNK)} more (${rest} left)`);
  const more = h('tr#timeline-more', {}, h('td.muted', { colspan: 8 }, button));
  body.append(more);
  // Scrolling the list to its end adds the next rows too.
  view.more?.disconnect();
  view.more = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) appendRows();
  }, { root: body.closest('.table-wrap'), rootMargin: '300px' });
  view.more.observe(more);
}

function renderChart() {
  const wrap = clear($('#timeline-chart'));
  if (!view.events.length) { wrap.append(h('p.muted', {}, 'no events for this correlation id')); return; }
  const W = Math.max(640, (wrap.parentElement.clientWidth || 1000) - 2);
  const ML = 16, MR = 24, TOP = 64, LH = 18;
  const items = view.events.map((ev) => {
    const t = parseTs(ev.event_timestamp);
    const dur = ev.duration_ms > 0 ? ev.duration_ms : 0;
    return { ev, t, end: t + dur, dur };
  }).filter((it) => Number.isFinite(it.t));
  const t0 = Math.min(...items.map((it) => it.t));
  const t1 = Math.max(...items.map((it) => it.end));
  const span = Math.max(t1 - t0, 1);
  const plotW = W - ML - MR;
  const X = (t) => ML + ((t - t0) / span) * plotW;

  if (items.length > DENSE) { renderDensity(wrap, items, { W, ML, MR, t0, span, plotW, X }); return; }

  // Lanes: one per event when few, otherwise greedy packing without labels.
  const perEvent = items.length <= 80;
  const laneEnds = [];
  for (const it of items) {
    const x0 = X(it.t), x1 = Math.max(X(it.end), x0 + 12);
    if (perEvent) { it.lane = laneEnds.length; laneEnds.push(x1); continue; }
    let lane = laneEnds.findIndex((e) => e + 2 < x0);
    if (lane === -1) { lane = laneEnds.length; laneEnds.push(x1); } else laneEnds[lane] = x1;
    it.lane = lane;
  }
  const H = TOP + laneEnds.length * LH + 12;
  const Y = (it) => TOP + it.lane * LH + LH / 2;

  const svg = s('svg#timeline-svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `timeline of ${items.length} events over ${fmtDuration(span)}` });
  svg.append(s('defs', {}, s('marker', { id: 'tl-arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7,
    markerHeight: 7, orient: 'auto-start-reverse' }, s('path.tl-arrowhead', { d: 'M0,0 L8,4 L0,8 z' }))));

  if (perEvent) {
    for (let i = 1; i < laneEnds.length; i += 2) {
      svg.append(s('rect.tl-lane-alt', { x: 0, y: TOP + i * LH, width: W, height: LH }));
    }
  }

  svg.append(axis({ W, ML, MR, t0, span, plotW, X }, H));
  drawGaps(svg, items, span, X, TOP - 6);

  // Parent → child links, for parents in this chain.
  const byId = new Map(items.map((it) => [it.ev.event_id, it]));
  const links = s('g.tl-links');
  for (const it of items) {
    const parent = it.ev.parent_event_id && byId.get(it.ev.parent_event_id);
    if (!parent || parent === it) continue;
    const px = X(parent.t), py = Y(parent), cx = X(it.t), cy = Y(it);
    const k = Math.max(24, Math.abs(cy - py) * 0.5);
    links.append(s('path.tl-link', {
      d: `M${px},${py} C${px - k},${py} ${cx - k},${cy} ${cx - 6},${cy}`,
      'marker-end': 'url(#tl-arrow)',
      'data-from': parent.ev.event_id, 'data-to': it.ev.event_id,
    }));
  }
  svg.append(links);

  for (const it of items) {
    const { ev } = it;
    const x = X(it.t), y = Y(it), color = outcomeColor(ev.event_outcome);
    const g = s('g.tl-event', { 'data-event-id': ev.event_id, 'data-seq': ev.chain_sequence, tabindex: 0, role: 'link',
      'aria-label': `sequence ${ev.chain_sequence}: ${ev.event_type}` });
    g.append(s('title', {}, [
      `#${ev.chain_sequence} ${ev.event_type}`,
      `${ev.event_action} · ${ev.event_outcome}`,
      `${fmtLocal(it.t)} (${ev.event_timestamp} UTC)`,
      it.dur ? `duration ${fmtDuration(it.dur)}` : null,
    ].filter(Boolean).join('\n')));
    if (it.dur) {
      g.append(s('rect.tl-dur', { x, y: y - 3, width: Math.max(X(it.end) - x, 1), height: 6, fill: color }));
    }
    g.append(s('circle.tl-dot', { cx: x, cy: y, r: 5, fill: color }));
    if (perEvent) {
      const right = x < ML + plotW * 0.7;
      g.append(s('text.tl-label', { x: right ? x + 8 : x - 8, y: y + 4,
        'text-anchor': right ? 'start' : 'end' }, `#${ev.chain_sequence} ${ev.event_type}`));
    }
    svg.append(g);
  }
  wrap.append(svg);
  if (view.verify) renderVerify(); // re-mark tampered glyphs
}

/** The time axis with relative ticks and the start time as caption, its grid lines down to H. */
function axis({ W, ML, MR, t0, span, plotW, X }, H) {
  const g = s('g.axis');
  const step = tickStep(span, Math.max(2, Math.floor(plotW / 90)));
  g.append(s('line', { x1: ML, x2: W - MR, y1: 24, y2: 24 }));
  g.append(s('text', { x: ML, y: 10, class: 'axis-caption' }, `start ${fmtLocal(t0)} · span ${fmtDuration(span)}`));
  for (let off = 0; off <= span + 1e-9; off += step) {
    const x = X(t0 + off);
    g.append(s('line', { x1: x, x2: x, y1: 24, y2: 29 }));
    g.append(s('line.grid', { x1: x, x2: x, y1: 29, y2: H }));
    g.append(s('text', { x, y: 40, 'text-anchor': off === 0 ? 'start' : 'middle' }, tickLabel(off, step)));
  }
  return g;
}

/** Gaps larger than 10% of the span: stretches of time in which no event runs (so they never overlap). */
function drawGaps(svg, items, span, X, y) {
  const byTime = [...items].sort((a, b) => a.t - b.t);
  let reach = byTime[0].end;
  for (const it of byTime.slice(1)) {
    const gap = it.t - reach;
    if (gap > span * 0.1) {
      const x0 = X(reach), x1 = X(it.t);
      svg.append(s('g.tl-gap', {},
        s('line', { x1: x0, x2: x1, y1: y, y2: y }),
        s('text', { x: (x0 + x1) / 2, y: y - 3, 'text-anchor': 'middle' }, `gap ${fmtDuration(gap)}`)));
    }
    reach = Math.max(reach, it.end);
  }
}

/**
 * A long chain as a density strip: events per 3-pixel column as a bar, coloured by the column's
 * worst outcome (failure, then pending, then success), with its counts as a tooltip. Thousands of
 * glyphs and links would not be legible, and would take seconds to lay out; the list below holds
 * every event.
 */
function renderDensity(wrap, items, frame) {
  const { W, ML, plotW, X } = frame;
  const TOP = 64, BAR = 60, COL = 3;
  const H = TOP + BAR + 16;
  const columns = new Map();
  for (const it of items) {
    const c = Math.min(Math.floor((X(it.t) - ML) / COL), Math.floor(plotW / COL));
    const col = columns.get(c) || { n: 0, failure: 0, pending: 0 };
    col.n += 1;
    if (it.ev.event_outcome === 'failure') col.failure += 1;
    else if (it.ev.event_outcome === 'pending') col.pending += 1;
    columns.set(c, col);
  }
  const most = Math.max(...[...columns.values()].map((c) => c.n));
  const svg = s('svg#timeline-svg.tl-dense', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `density of ${items.length} events over ${fmtDuration(frame.span)}` });
  svg.append(axis(frame, H));
  drawGaps(svg, items, frame.span, X, TOP - 6);
  for (const [c, col] of columns) {
    const height = Math.max(2, Math.sqrt(col.n / most) * BAR);
    const worst = col.failure ? 'failure' : col.pending ? 'pending' : 'success';
    svg.append(s('rect.tl-density', { x: ML + c * COL, y: TOP + BAR - height, width: COL - 1, height,
      fill: outcomeColor(worst) },
      s('title', {}, `${col.n} events (${col.failure} failed, ${col.pending} pending)`)));
  }
  wrap.append(svg);
  wrap.append(h('p.muted', {}, `${items.length} events: one bar per moment, its height the events in it, its colour the worst outcome; parent links are drawn for chains of up to ${DENSE} events. The list below holds every event.`));
}
