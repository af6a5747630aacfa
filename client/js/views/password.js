// Change the password. The server checks the current one (wrong guesses count as failed
// logins), ends the partner's other sessions everywhere, and keeps this one under a new
// id; the live connection is opened again with it.

import { gql } from '../api.js';
import { h, mount, field, clearFieldErrors } from '../dom.js';
import { t } from '../i18n.js';
import { showError, submitting } from './auth.js';

export function passwordView(app) {
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, t('password.title')),
    h('p', {}, t('password.intro')),
    h('p', { class: 'form-error', role: 'alert' }),
    field({ name: 'currentPassword', label: t('password.current'), type: 'password', autocomplete: 'current-password', required: true }),
    field({ name: 'newPassword', label: t('password.new'), type: 'password', autocomplete: 'new-password', required: true,
      hint: t('password.hint'), minlength: 8, maxlength: 128 }),
    field({ name: 'confirm', label: t('field.confirm'), type: 'password', autocomplete: 'new-password', required: true }),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, t('password.submit')),
      h('a', { href: '#/dashboard', class: 'button secondary' }, t('common.cancel'))));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    form.querySelector('.form-error').textContent = '';
    const current = form.currentPassword.value;
    const next = form.newPassword.value;
    if (!current) {
      showError(form, { field: 'currentPassword', message: t('error.field.currentPassword') });
      return;
    }
    if ([...next].length < 8) {
      showError(form, { field: 'newPassword', message: t('password.tooWeak') });
      return;
    }
    if (next !== form.confirm.value) {
      showError(form, { field: 'confirm', message: t('password.differ') });
      return;
    }
    submitting(form, true);
    try {
      await gql('mutation($c: String!, $n: String!) { changePassword(current: $c, new: $n) }', { c: current, n: next });
      // The session has a new id now: the live connection opened with the old one ended.
      app.restartLive();
      app.pendingMessage = t('password.changed');
      app.navigate('#/dashboard');
    } catch (error) {
      showError(form, error);
    } finally {
      submitting(form, false);
    }
  });
  mount(document.getElementById('main'), form);
}
