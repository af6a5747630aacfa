// Log in and register.

import { gql } from '../api.js';
import { h, mount, field, showFieldError, clearFieldErrors } from '../dom.js';

const main = () => document.getElementById('main');

/** Shows an error beside its field, or at the top of the form. */
export function showError(form, error) {
  if (!(error.field && showFieldError(form, error.field, error.message))) {
    form.querySelector('.form-error').textContent = error.message;
  }
  const invalid = form.querySelector('[aria-invalid=true]');
  if (invalid) invalid.focus();
}

function submitting(form, busy) {
  for (const button of form.querySelectorAll('button')) button.disabled = busy;
  form.setAttribute('aria-busy', String(busy));
}

export function loginView(app) {
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, 'Log in'),
    h('p', { class: 'form-error', role: 'alert' }),
    field({ name: 'username', label: 'Username', autocomplete: 'username', required: true }),
    field({ name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, 'Log in'),
    h('p', {}, 'New here? ', h('a', { href: '#/register' }, 'Create a partner account')));
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
    h('h1', {}, 'Create a partner account'),
    h('p', { class: 'form-error', role: 'alert' }),
    field({ name: 'username', label: 'Username', autocomplete: 'username', required: true,
      hint: '3–32 characters: letters, digits, “_”, “.” or “-”.', minlength: 3, maxlength: 32 }),
    field({ name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', required: true,
      hint: 'At least 8 characters.', minlength: 8, maxlength: 128 }),
    field({ name: 'confirm', label: 'Repeat the password', type: 'password', autocomplete: 'new-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, 'Create account'),
    h('p', {}, 'Already have an account? ', h('a', { href: '#/login' }, 'Log in')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    form.querySelector('.form-error').textContent = '';
    const username = form.username.value.trim();
    const password = form.password.value;
    if (password.length < 8) {
      showError(form, { field: 'password', message: 'The password is too weak: use at least 8 characters.' });
      return;
    }
    if (password !== form.confirm.value) {
      showError(form, { field: 'confirm', message: 'The two passwords differ.' });
      return;
    }
    submitting(form, true);
    try {
      await gql('mutation($i: RegisterInput!) { register(input: $i) { id } }', { i: { username, password } });
      const data = await gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id username } }',
        { u: username, p: password });
      app.setMe(data.login);
      app.pendingMessage = `Welcome, ${data.login.username}!`;
      app.navigate('#/dashboard');
    } catch (error) {
      if (error.code === 'CONFLICT') {
        error.field = 'username';
        error.message = 'This username is already taken. Please choose another.';
      }
      showError(form, error);
    } finally {
      submitting(form, false);
    }
  });
  mount(main(), form);
}
