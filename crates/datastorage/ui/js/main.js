// main.js — entry point: wires every view, intercepts in-page links, routes URL state to views, handles login/logout.

import { setToken, clearToken } from './api.js';
import { $, $$, fillEnumSelects } from './dom.js';
import { parseState, onNavigate, navigate, toQuery } from './urlstate.js';
import { clearStatus, setStatus, hideLogin } from './status.js';
import { initSearch, showSearch, hideSearch } from './search.js';
import { initTimeline, showTimeline } from './timeline.js';
import { initDetail, showDetail } from './detail.js';
import { initOverview, showOverview } from './overview.js';
import { initHolds, showHolds } from './holds.js';

const VIEWS = {
  search: { show: showSearch, hide: hideSearch, nav: 'nav-search', title: 'search' },
  timeline: { show: showTimeline, nav: 'nav-search', title: 'timeline' },
  event: { show: showDetail, nav: 'nav-search', title: 'event' },
  overview: { show: showOverview, nav: 'nav-overview', title: 'overview' },
  holds: { show: showHolds, nav: 'nav-holds', title: 'legal holds' },
};

let active = null;
let controller = null;

/** Shows the view of a state; the previous view's requests are aborted. */
function route(state) {
  if (controller) controller.abort();
  controller = new AbortController();
  clearStatus();
  const next = VIEWS[state.view] ? state.view : 'search';
  if (active && active !== next) VIEWS[active].hide?.();
  active = next;
  for (const name of Object.keys(VIEWS)) $(`#view-${name}`).hidden = name !== next;
  for (const a of $$('.nav a')) a.removeAttribute('aria-current');
  $(`#${VIEWS[next].nav}`).setAttribute('aria-current', 'page');
  document.title = `${VIEWS[next].title} · DataStorage · audit explorer`;
  Promise.resolve(VIEWS[next].show(state, controller.signal)).catch((err) => {
    if (err && err.name !== 'AbortError') setStatus(`unexpected error: ${err.message || err}`, 'error');
  });
}

/** Same-page links (`?view=…`) navigate through history instead of reloading. */
function interceptLinks() {
  document.addEventListener('click', (e) => {
    const a = e.target.closest('a[href]');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const href = a.getAttribute('href');
    if (!href.startsWith('?') || a.target || a.hasAttribute('download')) return;
    e.preventDefault();
    navigate(parseState(href));
  });
}

function initAuth() {
  $('#login').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    setToken(token);
    $('#token').value = '';
    hideLogin();
    route(parseState(location.search));
  });
  $('#logout').addEventListener('click', () => {
    clearToken();
    hideLogin();
    route(parseState(location.search));
    setStatus('logged out: the token was removed from this tab');
  });
}

function start() {
  fillEnumSelects();
  initSearch();
  initTimeline();
  initDetail();
  initOverview();
  initHolds();
  initAuth();
  interceptLinks();
  onNavigate(route);
  window.addEventListener('popstate', () => route(parseState(location.search)));
  const state = parseState(location.search);
  if (toQuery(state) !== location.search) history.replaceState(null, '', toQuery(state));
  route(state);
}

start();
