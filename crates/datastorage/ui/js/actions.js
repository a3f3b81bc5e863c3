// actions.js — the API's write-ish actions: chain verification, legal hold place/release, signed export download.

import { api, apiRaw, withQuery } from './api.js';
import { EXPORT_KEYS } from './urlstate.js';
import { reportError, setStatus } from './status.js';

/** POST /verify-chain for one correlation id. */
export function verifyChain(correlationId, signal) {
  return api('/api/v1/audit/verify-chain', { method: 'POST', body: { correlation_id: correlationId }, signal });
}

/** POST /legal-hold. */
export function placeHold(correlationId, reason) {
  return api('/api/v1/audit/legal-hold', { method: 'POST', body: { correlation_id: correlationId, reason } });
}

/** DELETE /legal-hold/{correlation_id} with the release reason. */
export function releaseHold(correlationId, reason) {
  return api(`/api/v1/audit/legal-hold/${encodeURIComponent(correlationId)}`, {
    method: 'DELETE',
    body: { release_reason: reason },
  });
}

/** GET /legal-hold, optionally with released holds. */
export function listHolds(includeReleased, signal) {
  return api(withQuery('/api/v1/audit/legal-hold', { include_released: includeReleased ? 'true' : '' }), { signal });
}

/** The export query of a search state: since → start_time, until → end_time, plus id and category. */
export function exportQuery(state, format) {
  const params = { format };
  for (const [from, to] of Object.entries(EXPORT_KEYS)) if (state[from]) params[to] = state[from];
  return withQuery('/api/v1/audit/export', params);
}

/**
 * Downloads the signed export of a search through fetch (so the Authorization header goes along),
 * then hands the blob to a temporary <a download>.
 */
export async function exportEvents(state, format) {
  const name = `audit-export.${format}`;
  setStatus(`exporting ${format.toUpperCase()}…`);
  try {
    const res = await apiRaw(exportQuery(state, format), { accept: '*/*' });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    setStatus(`downloaded ${name} (${blob.size.toLocaleString()} bytes, signed)`, 'ok');
  } catch (err) {
    reportError(err, 'export');
  }
}
