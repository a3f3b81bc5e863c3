// dom.js — DOM building with createElement/textContent only (API data is never parsed as HTML), formatting, scales and the palette.

export const CATEGORIES = [
  'gateway', 'notification', 'analysis', 'aiagent', 'signalprocessing', 'workflow',
  'workflowexecution', 'orchestration', 'approval', 'effectiveness', 'actiontype',
  'apifrontend', 'security', 'agentsession',
];
export const OUTCOMES = ['success', 'failure', 'pending'];

/** SVG fills; the same hues as the .outcome-* pills in style.css. */
export const OUTCOME_COLORS = { success: '#2e9d4f', failure: '#d43c3c', pending: '#d89a12' };
export const OTHER_COLOR = '#8a8f98';
const CATEGORY_PALETTE = [
  '#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1',
  '#ff9da7', '#9c755f', '#5b8fd9', '#8cd17d', '#d37295', '#499894', '#c2a500',
];
export function outcomeColor(o) { return OUTCOME_COLORS[o] || OTHER_COLOR; }
export function categoryColor(c) {
  const i = CATEGORIES.indexOf(c);
  return i === -1 ? OTHER_COLOR : CATEGORY_PALETTE[i];
}

/**
 * h('tag.class#id', {attr: value, dataset: {...}, on: {click: fn}}, ...children)
 * Attribute values and text children are set as plain strings, never parsed as HTML.
 */
export function h(spec, attrs = {}, ...children) {
  return build(document.createElement(parseSpec(spec).tag), spec, attrs, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';
/** Like h(), in the SVG namespace (presentation attributes such as fill/x/y are fine under the CSP). */
export function s(spec, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, parseSpec(spec).tag), spec, attrs, children);
}

function parseSpec(spec) {
  const m = /^([a-zA-Z0-9-]+)/.exec(spec);
  return { tag: m ? m[1] : 'div' };
}

function build(el, spec, attrs, children) {
  for (const part of spec.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'style') throw new Error('inline style attributes are blocked by the CSP');
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'class') for (const c of String(v).split(/\s+/).filter(Boolean)) el.classList.add(c);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) { el.replaceChildren(); return el; }
export function $(sel, root = document) { return root.querySelector(sel); }
export function $$(sel, root = document) { return Array.from(root.querySelectorAll(sel)); }

/** Fills every `select.category-select` / `select.outcome-select` with the enum values. */
export function fillEnumSelects() {
  for (const sel of $$('select.category-select')) for (const c of CATEGORIES) sel.append(h('option', { value: c }, c));
  for (const sel of $$('select.outcome-select')) for (const o of OUTCOMES) sel.append(h('option', { value: o }, o));
}

/** Milliseconds since the epoch of an RFC 3339 timestamp (µs are truncated), NaN when invalid. */
export function parseTs(ts) { return ts ? Date.parse(ts) : NaN; }

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local `YYYY-MM-DD HH:MM:SS.mmm`. */
export function fmtLocal(ts) {
  const t = typeof ts === 'number' ? ts : parseTs(ts);
  if (Number.isNaN(t)) return String(ts ?? '');
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A duration in ms as `850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`. */
export function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return '';
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60_000) return `${(ms / 1000).toFixed(a < 10_000 ? 2 : 1)} s`;
  const s = Math.round(a / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const m = Math.round(s / 60);
  if (m < 1440) return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ''}`;
  const hh = Math.round(m / 60);
  return `${Math.floor(hh / 24)} d${hh % 24 ? ` ${hh % 24} h` : ''}`;
}

/** A coloured outcome pill. */
export function outcomePill(outcome) {
  const known = OUTCOMES.includes(outcome);
  return h('span', { class: `pill outcome-${known ? outcome : 'other'}` }, outcome ?? '');
}

/** A monospace, ellipsis-truncated id with the full text in its title. */
export function idText(value, tag = 'span') {
  const text = value === undefined || value === null ? '' : String(value);
  return h(tag, { class: 'mono trunc', title: text || null }, text);
}

/** A link to another view of this page (intercepted by main.js; `href` is a real shareable URL). */
export function viewLink(href, ...children) {
  return h('a', { href }, ...children);
}

/** A local timestamp element whose title holds the full UTC string. */
export function timeText(ts) {
  return h('time', { datetime: ts || null, title: ts ? `${ts} (UTC)` : null }, fmtLocal(ts));
}

/** Nice tick steps of the time axis, in ms. */
const STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500,
  1e3, 2e3, 5e3, 10e3, 15e3, 30e3,
  60e3, 120e3, 300e3, 600e3, 900e3, 1800e3,
  3600e3, 7200e3, 10800e3, 21600e3, 43200e3,
  86400e3, 172800e3, 604800e3, 1209600e3, 2592000e3,
];

/** The smallest nice step that puts at most maxTicks ticks over span ms. */
export function tickStep(span, maxTicks) {
  return STEPS.find((st) => span / st <= maxTicks) ?? Math.ceil(span / maxTicks);
}
