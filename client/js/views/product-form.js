// Add a product, or edit one. An edit names the version it started from: when someone
// else changed the product meanwhile, nothing is overwritten, and the current values
// are shown.

import { gql, gqlUpload, PRODUCT_FIELDS } from '../api.js';
import { h, mount, field, clearFieldErrors } from '../dom.js';
import { formatRupiah, t } from '../i18n.js';
import { showError } from './auth.js';
import { pictureButton } from './products.js';

const CATEGORIES = ['makanan', 'minuman'];

function categoryField(current) {
  const known = CATEGORIES.includes(current);
  const options = (known || !current ? CATEGORIES : [...CATEGORIES, current])
    .map((value) => [value, CATEGORIES.includes(value) ? t(`category.${value}`) : value]);
  return h('fieldset', { class: 'field', 'aria-describedby': 'field-category-error' },
    h('legend', {}, t('field.category')),
    options.map(([value, label]) => h('label', { class: 'radio' },
      h('input', { type: 'radio', name: 'category', value, checked: value === (current || 'makanan') }), ' ', label)),
    h('p', { class: 'field-error', id: 'field-category-error', 'aria-live': 'polite' }));
}

function fill(form, product) {
  form.name.value = product.name;
  form.description.value = product.description;
  form.price.value = product.price;
  form.quantity.value = product.quantity;
  const radio = [...form.querySelectorAll('input[name=category]')].find((r) => r.value === product.category);
  if (radio) radio.checked = true;
}

function readForm(form) {
  const number = (name) => {
    const raw = form[name].value.trim();
    return /^\d+$/.test(raw) ? Number(raw) : null;
  };
  return {
    name: form.name.value.trim(),
    description: form.description.value,
    price: number('price'),
    quantity: number('quantity'),
    category: form.querySelector('input[name=category]:checked')?.value ?? '',
  };
}

function checkNumbers(form, input) {
  if (input.price === null) return { field: 'price', message: t('error.field.price') };
  if (input.quantity === null) return { field: 'quantity', message: t('error.field.quantity') };
  return null;
}

/** A product's value as the form shows it. */
function shown(key, value) {
  if (key === 'price' && typeof value === 'number') return formatRupiah(value);
  if (key === 'category' && CATEGORIES.includes(value)) return t(`category.${value}`);
  return value;
}

export async function productFormView(app, id) {
  const main = document.getElementById('main');
  const editing = id !== null;
  let product = null;
  if (editing) {
    const data = await gql(`query($id: ID!) { product(id: $id) { ${PRODUCT_FIELDS} } }`, { id });
    product = data.product;
    if (!product || product.owner.id !== app.me.id) {
      mount(main, h('h1', {}, t('form.notFound')),
        h('p', {}, t('form.maybeDeleted'), ' ', h('a', { href: '#/dashboard' }, t('common.backToProducts'))));
      return;
    }
  }

  const preview = h('img', { class: 'preview', alt: t('picture.preview'), hidden: true });
  const conflict = h('div', { class: 'conflict', role: 'alert', hidden: true });
  const form = h('form', { class: 'card', novalidate: true },
    h('h1', {}, editing ? t('form.editTitle', { name: product.name }) : t('form.addTitle')),
    h('p', { class: 'form-error', role: 'alert' }),
    conflict,
    field({ name: 'name', label: t('field.name'), required: true, maxlength: 100 }),
    field({ name: 'description', label: t('field.description'), type: 'textarea', maxlength: 1000, rows: 3 }),
    h('div', { class: 'row' },
      field({ name: 'price', label: t('field.price'), type: 'number', min: 0, step: 1, inputmode: 'numeric', required: true }),
      field({ name: 'quantity', label: editing ? t('field.quantityCorrection') : t('field.quantity'), type: 'number', min: 0, step: 1, inputmode: 'numeric', required: true, value: '0' })),
    categoryField(product?.category),
    editing
      ? h('div', { class: 'field' }, h('span', { class: 'label' }, t('form.pictureClick')),
        pictureButton(product, (updated) => { product.version = updated.version; app.notify(t('form.pictureChanged'), 'success'); mountPicture(updated); }, (e) => showError(form, e)))
      : h('div', { class: 'field' },
        h('label', { for: 'field-image' }, t('field.picture')),
        h('p', { class: 'hint', id: 'field-image-hint' }, t('form.pictureHint')),
        h('input', { id: 'field-image', name: 'image', type: 'file', accept: 'image/jpeg,image/png,image/webp,image/gif', 'aria-describedby': 'field-image-hint field-image-error' }),
        h('p', { class: 'field-error', id: 'field-image-error', 'aria-live': 'polite' }),
        preview),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, editing ? t('form.save') : t('form.add')),
      h('a', { href: '#/dashboard', class: 'button secondary' }, t('common.cancel'))));
  mount(main, form);
  if (product) fill(form, product);

  function mountPicture(updated) {
    const slot = form.querySelector('.picture');
    slot?.replaceWith(pictureButton(updated, (again) => { product.version = again.version; mountPicture(again); }, (e) => showError(form, e)));
  }

  let previewUrl = null;
  form.image?.addEventListener('change', () => {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    const file = form.image.files?.[0];
    previewUrl = file ? URL.createObjectURL(file) : null;
    preview.hidden = !file;
    if (file) preview.src = previewUrl;
  });
  app.onLeave(() => previewUrl && URL.revokeObjectURL(previewUrl));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    form.querySelector('.form-error').textContent = '';
    const input = readForm(form);
    const bad = checkNumbers(form, input);
    if (bad) {
      showError(form, bad);
      return;
    }
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      if (editing) {
        const patch = { ...input };
        // The quantity is sent only when changed: it is recorded as a correction.
        if (patch.quantity === product.quantity) delete patch.quantity;
        await gql(`mutation($id: ID!, $i: UpdateProductInput!, $v: Int) {
          updateProduct(id: $id, input: $i, expectedVersion: $v) { id } }`, { id, i: patch, v: product.version });
        app.pendingMessage = t('form.saved', { name: input.name });
      } else {
        const file = form.image.files?.[0];
        const query = `mutation($i: CreateProductInput!, $img: Upload) { createProduct(input: $i, image: $img) { id name } }`;
        const data = file ? await gqlUpload(query, { i: input }, 'img', file) : await gql(query, { i: input });
        app.pendingMessage = t('form.added', { name: data.createProduct.name });
      }
      app.navigate('#/dashboard');
    } catch (error) {
      if (error.code === 'CONFLICT' && editing) {
        await showConflict(input);
      } else {
        showError(form, error);
      }
    } finally {
      submit.disabled = false;
    }
  });

  /** Someone else changed the product: show its current values, keep nothing silently. */
  async function showConflict(mine) {
    const data = await gql(`query($id: ID!) { product(id: $id) { ${PRODUCT_FIELDS} } }`, { id });
    const current = data.product;
    if (!current) {
      mount(conflict, h('p', {}, t('form.deletedElsewhere')));
      conflict.hidden = false;
      return;
    }
    const keys = ['name', 'description', 'price', 'quantity', 'category'];
    const theirs = keys.filter((key) => String(current[key]) !== String(product[key]));
    const yours = keys.filter((key) => String(mine[key]) !== String(product[key]) && String(mine[key]) !== String(current[key]));
    mount(conflict,
      h('h2', {}, t('form.conflictTitle')),
      h('p', {}, t('form.conflictText')),
      theirs.length
        ? h('ul', { 'aria-label': t('form.changedElsewhere') }, theirs.map((key) =>
          h('li', {}, t('form.changedValue', { field: t(`conflict.${key}`), now: shown(key, current[key]), was: shown(key, product[key]) }))))
        : null,
      yours.length
        ? h('p', {}, t('form.unsaved'), ' ', yours.map((key) => `${t(`conflict.${key}`)} “${shown(key, mine[key])}”`).join(', '))
        : null);
    conflict.hidden = false;
    product = current;
    fill(form, current);
    conflict.focus?.();
  }
}
