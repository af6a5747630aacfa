// Building the page safely: every text from the server goes in as a text node, never
// as HTML, so a product named `<img src=x onerror=alert(1)>` is shown, not run.

import { t } from './i18n.js';

/** Creates an element: h('button', {class: 'x', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A labelled form field with a place for its error message. */
export function field({ name, label, type = 'text', value = '', hint, required = false, ...rest }) {
  const id = `field-${name}`;
  const input = h(type === 'textarea' ? 'textarea' : 'input', {
    id,
    name,
    type: type === 'textarea' ? undefined : type,
    required,
    'aria-describedby': `${id}-error${hint ? ` ${id}-hint` : ''}`,
    ...rest,
  });
  if (type === 'textarea') input.textContent = value;
  else input.value = value;
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null,
    input,
    h('p', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite' }));
}

/** Shows `message` beside the field named `name` in `form` (false when no such field). */
export function showFieldError(form, name, message) {
  const input = form.elements.namedItem(name);
  const slot = form.querySelector(`#field-${name}-error`);
  if (!input || !slot) return false;
  slot.textContent = message;
  if (input.setAttribute) input.setAttribute('aria-invalid', 'true');
  return true;
}

export function clearFieldErrors(form) {
  for (const slot of form.querySelectorAll('.field-error')) slot.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/** Asks for confirmation in an accessible modal dialog. */
export function confirmDialog(text, okLabel = t('common.delete')) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
    dialog.returnValue = 'cancel';
    dialog.showModal();
  });
}
