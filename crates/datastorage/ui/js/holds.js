// holds.js — the legal holds view: active holds (and released ones on request), each linking to its timeline.

import { h, $, idText, timeText, viewLink } from './dom.js';
import { navigate, toQuery } from './urlstate.js';
import { reportError } from './status.js';
import { listHolds } from './actions.js';

export function initHolds() {
  $('#show-released').addEventListener('change', (e) => {
    navigate({ view: 'holds', include_released: e.target.checked ? 'true' : '' });
  });
}

export async function showHolds(state, signal) {
  const released = state.include_released === 'true';
  $('#show-released').checked = released;
  const tbody = $('#holds-table tbody');
  tbody.replaceChildren(h('tr.empty', {}, h('td', { colspan: 9 }, 'loading…')));
  let res;
  try {
    res = await listHolds(released, signal);
  } catch (err) {
    if (reportError(err, 'legal holds')) tbody.replaceChildren(h('tr.empty', {}, h('td', { colspan: 9 }, 'holds could not be loaded')));
    return;
  }
  const rows = res.holds.map((hold) => {
    const active = !hold.released_at;
    return h('tr', { class: active ? 'hold-active' : 'hold-released', dataset: { holdId: hold.hold_id, correlationId: hold.correlation_id } },
      h('td', {}, viewLink(toQuery({ view: 'timeline', correlation_id: hold.correlation_id }), idText(hold.correlation_id))),
      h('td', {}, h('span', { class: `pill ${active ? 'hold-on' : 'outcome-other'}` }, active ? 'active' : 'released')),
      h('td', {}, h('span.trunc.wide', { title: hold.reason || null }, hold.reason ?? '')),
      h('td', {}, idText(hold.placed_by)),
      h('td', {}, timeText(hold.placed_at)),
      h('td.num', {}, hold.events_affected ?? ''),
      h('td', {}, idText(hold.released_by)),
      h('td', {}, hold.released_at ? timeText(hold.released_at) : ''),
      h('td', {}, h('span.trunc.wide', { title: hold.release_reason || null }, hold.release_reason ?? '')),
    );
  });
  if (!rows.length) rows.push(h('tr.empty', {}, h('td', { colspan: 9 }, released ? 'no legal holds were ever placed' : 'no active legal holds')));
  tbody.replaceChildren(...rows);
}
