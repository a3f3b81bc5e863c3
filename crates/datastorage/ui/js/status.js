// status.js — the #status message line, error reporting by HTTP status, and showing/hiding the login panel.

import { ApiError, describeError, isAbort, clearToken } from './api.js';

const statusEl = () => document.getElementById('status');

/** Shows a message; kind is '' (info), 'error' or 'ok'. */
export function setStatus(text, kind = '') {
  const el = statusEl();
  el.textContent = text;
  el.className = kind;
}

export function clearStatus() { setStatus(''); }

/** Shows the login panel instead of the app, with the reason in #auth-error. */
export function showLogin(message = '') {
  document.getElementById('auth-error').textContent = message;
  document.getElementById('login-panel').hidden = false;
  document.getElementById('app').hidden = true;
  const token = document.getElementById('token');
  token.value = '';
  token.focus();
}

export function hideLogin() {
  document.getElementById('login-panel').hidden = true;
  document.getElementById('app').hidden = false;
  document.getElementById('auth-error').textContent = '';
}

/**
 * Reports a failed call: 401 opens the login panel, everything else goes to #status as an error.
 * Returns the readable message (for a local status line too), or '' when the error was an abort.
 */
export function reportError(err, context = '') {
  if (isAbort(err)) return '';
  if (err instanceof ApiError && err.status === 401) {
    const detail = err.problem.detail ? `: ${err.problem.detail}` : '';
    clearToken(); // the stored token, if any, was refused
    showLogin(`a token is required${detail}`);
    return 'a token is required';
  }
  const text = err instanceof ApiError && err.status === 403
    ? (err.problem.detail || 'forbidden: the token lacks the scope for this')
    : describeError(err);
  setStatus(context ? `${context}: ${text}` : text, 'error');
  return text;
}
