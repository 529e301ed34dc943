// The console's shared helpers: the session, REST calls carrying the CSRF token, building
// elements (never from HTML strings), errors in words, confirmations and formatting.

let session = null;

/** The signed-in caller ({sub, role, tenant_id, csrf}); to the sign-in page without one. */
export async function loadSession() {
  const r = await fetch('/console/session', { credentials: 'same-origin' });
  if (r.status === 401) {
    location.href = '/console/signin';
    throw new Error('not signed in');
  }
  session = await r.json();
  return session;
}

export function currentSession() {
  return session;
}

/** Whether the caller's role may change things (viewers only read). */
export function canMutate() {
  return session && session.role !== 'viewer';
}

export function isTenantAdmin() {
  return session && (session.role === 'tenant_admin' || session.role === 'platform_admin');
}

const WORDS = {
  forbidden: 'Your role does not allow this.',
  csrf_failed: 'Your session could not be verified. Sign in again.',
  unauthorized: 'Your session has ended. Sign in again.',
  tenant_not_found: 'Your tenant no longer exists.',
  not_found: 'That no longer exists (or belongs to another tenant).',
  unavailable: 'Herald cannot reach one of its backends right now. Try again in a moment.',
  internal: 'Something went wrong inside Herald. Try again; if it persists, tell your operator.',
  illegal_transition: 'The campaign cannot do that in its current state.',
  campaign_changed: 'Someone else changed this campaign at the same moment. Reload and try again.',
  idempotency_in_progress: 'The same request is still running. Wait a moment.',
  too_many_streams: 'Too many live views are open for your tenant. Close some tabs.',
  payload_too_large: 'That is too large to send.',
};

/** A failed API call, with the server's code and a message for people. */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The sentence shown for an API error body. */
export function words(status, error) {
  const code = error && error.code;
  if (code && WORDS[code]) {
    return error.message && code !== 'internal' && code !== 'unavailable'
      ? `${WORDS[code]} (${error.message})`
      : WORDS[code];
  }
  if (error && error.message) {
    const m = error.message;
    return m.charAt(0).toUpperCase() + m.slice(1) + (m.endsWith('.') ? '' : '.');
  }
  return `The request failed (HTTP ${status}).`;
}

/**
 * Calls the REST API. `body` is sent as JSON unless it is a string or a Blob; changes carry
 * the session's CSRF token, and an `idempotencyKey` when given.
 */
export async function api(method, path, body, options = {}) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = session.csrf;
  if (options.idempotencyKey) headers['Idempotency-Key'] = options.idempotencyKey;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Blob)) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  if (r.status === 401) {
    location.href = '/console/signin';
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!r.ok) {
    const error = data && data.error;
    throw new ApiFailure(r.status, error && error.code, words(r.status, error));
  }
  return data;
}

/** Builds an element: `attrs` keys starting with `on` add listeners; children are nodes or text. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const SVG = 'http://www.w3.org/2000/svg';

/** Replaces the page content. */
export function render(...children) {
  const main = document.getElementById('main');
  main.replaceChildren(...children.flat());
  return main;
}

/** Shows an error (an ApiFailure's words, or any error's message) at the top of the page. */
export function showError(e) {
  const alert = document.getElementById('alert');
  alert.textContent = e instanceof Error ? e.message : String(e);
  alert.hidden = false;
}

export function clearError() {
  const alert = document.getElementById('alert');
  alert.hidden = true;
  alert.textContent = '';
}

/** Runs an action, showing its failure in words; true when it succeeded. */
export async function attempt(action) {
  clearError();
  try {
    await action();
    return true;
  } catch (e) {
    showError(e);
    return false;
  }
}

/** Asks before a change: a modal dialog; resolves true when confirmed. */
export function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-q' },
      h('p', { id: 'confirm-q' }, question),
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'confirm-no', onclick: () => { dialog.close(); resolve(false); } }, 'Keep as is'),
        h('button', { type: 'button', id: 'confirm-yes', class: 'danger', onclick: () => { dialog.close(); resolve(true); } }, confirmLabel)));
    dialog.addEventListener('close', () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector('#confirm-no').focus();
  });
}

/** A key for one intended change: a double click sends it once. */
export function idempotencyKey() {
  return crypto.randomUUID();
}

export function number(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return 'unknown';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '–';
}

/** A table with a caption, header cells and rows of cells (nodes or text). */
export function table(caption, headers, rows, attrs = {}) {
  return h('table', attrs,
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => (r instanceof Node ? r : h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', {}, hint) : null);
}
