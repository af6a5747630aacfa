// Log in and register.

import { gql } from '../api.js';
import { h, mount, field, showFieldError, clearFieldErrors } from '../dom.js';
import { currentLanguage, LANGUAGES, t } from '../i18n.js';

const main = () => document.getElementById('main');

/** Shows an error beside its field, or at the top of the form. */
export function showError(form, error) {
  if (!(error.field && showFieldError(form, error.field, error.message))) {
    form.querySelector('.form-error').textContent = error.message;
  }
  const invalid = form.querySelector('[aria-invalid=true]');
  if (invalid) invalid.focus();
}

/**
 * The language choice on the pages before login (the profile menu has it after): a
 * link to the other language, named in that language.
 */
function languageSwitch(app) {
  return h('p', { class: 'language-switch' },
    LANGUAGES.filter((l) => l.code !== currentLanguage()).map((l) =>
      h('button', { type: 'button', class: 'link', lang: l.code, onclick: () => app.switchLanguage(l.code) }, l.name)));
}

export function submitting(form, busy) {
  for (const button of form.querySelectorAll('button')) button.disabled = busy;
  form.setAttribute('aria-busy', String(busy));
}

export function loginView(app) {
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, t('login.title')),
    h('p', { class: 'form-error', role: 'alert' }),
    field({ name: 'username', label: t('field.username'), autocomplete: 'username', required: true }),
    field({ name: 'password', label: t('field.password'), type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, t('login.submit')),
    h('p', {}, t('login.newHere'), ' ', h('a', { href: '#/register' }, t('login.toRegister'))),
    languageSwitch(app));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    form.querySelector('.form-error').textContent = '';
    submitting(form, true);
    try {
      const data = await gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id username } }',
        { u: form.username.value.trim(), p: form.password.value });
      app.setMe(data.login);
      app.navigate('#/dashboard');
    } catch (error) {
      // Wrong credentials name no field: which one was wrong is not disclosed.
      showError(form, error);
    } finally {
      submitting(form, false);
    }
  });
  mount(main(), form);
}

export function registerView(app) {
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, t('register.title')),
    h('p', { class: 'form-error', role: 'alert' }),
    field({ name: 'username', label: t('field.username'), autocomplete: 'username', required: true,
      hint: t('register.usernameHint'), minlength: 3, maxlength: 32 }),
    field({ name: 'password', label: t('field.password'), type: 'password', autocomplete: 'new-password', required: true,
      hint: t('password.hint'), minlength: 8, maxlength: 128 }),
    field({ name: 'confirm', label: t('field.confirm'), type: 'password', autocomplete: 'new-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, t('register.submit')),
    h('p', {}, t('register.haveAccount'), ' ', h('a', { href: '#/login' }, t('login.submit'))),
    languageSwitch(app));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    form.querySelector('.form-error').textContent = '';
    const username = form.username.value.trim();
    const password = form.password.value;
    if (password.length < 8) {
      showError(form, { field: 'password', message: t('password.tooWeak') });
      return;
    }
    if (password !== form.confirm.value) {
      showError(form, { field: 'confirm', message: t('password.differ') });
      return;
    }
    submitting(form, true);
    try {
      await gql('mutation($i: RegisterInput!) { register(input: $i) { id } }', { i: { username, password } });
      const data = await gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id username } }',
        { u: username, p: password });
      app.setMe(data.login);
      app.pendingMessage = t('register.welcome', { name: data.login.username });
      app.navigate('#/dashboard');
    } catch (error) {
      if (error.code === 'CONFLICT') {
        error.field = 'username';
        error.message = t('register.taken');
      }
      showError(form, error);
    } finally {
      submitting(form, false);
    }
  });
  mount(main(), form);
}
