// What the console knows of its caller (the token's grants) and the banner that shows errors.

import { api, ApiError, token } from './api.js';
import { h, replace } from './dom.js';

export const session = { role: 'none', may: { read: false, predict: false, admin: false }, tokensSet: {} };

const ROLE_TEXT = {
  admin: 'admin: read, predict, upload, activate, roll out',
  predict: 'predict token: read-only and predict',
  none: 'no token: open routes only',
};

export async function refreshSession() {
  const who = await api('/whoami');
  session.role = who.role;
  session.may = who.may;
  session.tokensSet = who.tokens_set;
  const label = document.getElementById('whoami');
  label.textContent = who.tasks ? scopedText(who) : ROLE_TEXT[who.role];
  label.dataset.role = who.role;
  document.body.dataset.role = who.role;
  return who;
}

// A token of the tokens file: its name, what it may do, and on which tasks.
function scopedText(who) {
  const may = ['read', 'predict', 'admin'].filter((what) => who.may[what]).join(', ');
  return `token "${who.name}": ${may || 'nothing'} on ${who.tasks.join(', ')}`;
}

export function showError(err, context = '') {
  const banner = document.getElementById('banner');
  const message = err instanceof ApiError ? `${err.status} ${err.code}: ${err.detail}` : String(err.message || err);
  const authProblem = err instanceof ApiError && (err.status === 401 || err.status === 403);
  replace(
    banner,
    h('span', { class: 'banner-text', text: context ? `${context}: ${message}` : message }),
    authProblem ? h('button', { type: 'button', onclick: () => openTokenDialog() }, token.get() ? 'Change token' : 'Set a token') : null,
    h('button', { type: 'button', class: 'ghost', onclick: () => clearError() }, 'Dismiss'),
  );
  banner.hidden = false;
  banner.dataset.status = err instanceof ApiError ? String(err.status) : '';
}

export function clearError() {
  const banner = document.getElementById('banner');
  banner.hidden = true;
  banner.replaceChildren();
}

export function flash(text) {
  const note = h('div', { class: 'flash', role: 'status', text });
  document.body.append(note);
  setTimeout(() => note.remove(), 3500);
}

export function openTokenDialog() {
  const dialog = document.getElementById('token-dialog');
  document.getElementById('token-input').value = token.get();
  document.getElementById('token-error').hidden = true;
  dialog.showModal();
  document.getElementById('token-input').focus();
}

// Checks a token against /whoami before keeping it: a wrong one shows the server's 403.
export function wireTokenDialog(onChange) {
  const dialog = document.getElementById('token-dialog');
  const error = document.getElementById('token-error');
  document.getElementById('token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = document.getElementById('token-input').value.trim();
    try {
      await api('/whoami', { tokenValue: value });
    } catch (err) {
      error.textContent = err instanceof ApiError ? `${err.status} ${err.code}: ${err.detail}` : String(err);
      error.hidden = false;
      return;
    }
    token.set(value);
    dialog.close();
    clearError();
    onChange();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    token.set('');
    dialog.close();
    onChange();
  });
  document.getElementById('token-cancel').addEventListener('click', () => dialog.close());
  document.getElementById('token-button').addEventListener('click', openTokenDialog);
}
