// What the product views share: loading, picture changes, stock buttons, flags.

import { gql, gqlUpload, PRODUCT_FIELDS } from '../api.js';
import { h } from '../dom.js';
import { formatNumber, formatRupiah, t } from '../i18n.js';

/** The stock flag of a product: out of stock, low, or nothing. */
export function stockFlag(product) {
  if (product.quantity === 0) return h('span', { class: 'flag out' }, t('stock.out'));
  if (product.isLowStock) return h('span', { class: 'flag low' }, t('stock.low'));
  return null;
}

export function quantityCell(product) {
  return h('span', { class: 'quantity' },
    h('span', { class: 'quantity-value', dataset: { quantity: '' } }, formatNumber(product.quantity)),
    ' ', stockFlag(product));
}

export function priceText(product) {
  return formatRupiah(product.price);
}

export function thumbnail(product, size = 56) {
  return product.thumbnailUrl
    ? h('img', { src: product.thumbnailUrl, alt: t('picture.alt', { name: product.name }), width: size, height: size, class: 'thumb' })
    : h('span', { class: 'thumb placeholder', role: 'img', 'aria-label': t('picture.none', { name: product.name }) }, t('picture.noPhoto'));
}

/**
 * A picture that can be replaced by clicking it: opens a file chooser and uploads the
 * chosen file. `onChanged(product)` gets the product with its new picture.
 */
export function pictureButton(product, onChanged, onError) {
  const input = h('input', { type: 'file', accept: 'image/jpeg,image/png,image/webp,image/gif', class: 'visually-hidden', tabindex: '-1', 'aria-hidden': 'true' });
  // The name says what the button shows first: a voice-control user says what they see
  // ("No photo"), and a picture shows no text of its own.
  const label = product.thumbnailUrl
    ? t('picture.change', { name: product.name })
    : t('picture.addToNone', { noPhoto: t('picture.noPhoto'), name: product.name });
  const button = h('button', { type: 'button', class: 'picture-button', 'aria-label': label },
    thumbnail(product));
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', async () => {
    const file = input.files?.[0];
    if (!file) return;
    button.disabled = true;
    try {
      const data = await gqlUpload(
        `mutation($id: ID!, $img: Upload) { setProductImage(productId: $id, image: $img) { ${PRODUCT_FIELDS} } }`,
        { id: product.id }, 'img', file);
      onChanged(data.setProductImage);
    } catch (error) {
      onError(error);
    } finally {
      button.disabled = false;
      input.value = '';
    }
  });
  return h('span', { class: 'picture' }, button, input);
}

/** The "modify stock" control: an amount, a blue + and a red −. */
export function stockControl(product, onChanged, onError) {
  const amountId = `amount-${product.id}`;
  const amount = h('input', { id: amountId, type: 'number', min: 1, step: 1, value: 1, class: 'amount', inputmode: 'numeric' });
  const change = async (sign, button) => {
    const n = Number.parseInt(amount.value, 10);
    if (!Number.isInteger(n) || n < 1) {
      onError(new Error(t('stock.amountInvalid')));
      amount.focus();
      return;
    }
    button.disabled = true;
    try {
      const data = await gql(
        `mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { ${PRODUCT_FIELDS} } } }`,
        { i: { productId: product.id, delta: sign * n, reason: sign > 0 ? 'RESTOCK' : 'SALE', idempotencyKey: crypto.randomUUID() } });
      onChanged(data.adjustStock.product);
    } catch (error) {
      onError(error.code === 'INSUFFICIENT_STOCK'
        ? new Error(t('stock.notEnough', { available: formatNumber(error.available ?? 0), name: product.name, requested: formatNumber(n) }))
        : error);
    } finally {
      button.disabled = false;
    }
  };
  const plus = h('button', { type: 'button', class: 'stock plus', 'aria-label': t('stock.addLabel', { name: product.name }) }, '+');
  const minus = h('button', { type: 'button', class: 'stock minus', 'aria-label': t('stock.removeLabel', { name: product.name }) }, '−');
  plus.addEventListener('click', () => change(1, plus));
  minus.addEventListener('click', () => change(-1, minus));
  return h('div', { class: 'stock-control' },
    h('label', { for: amountId, class: 'visually-hidden' }, t('stock.amountLabel', { name: product.name })),
    minus, amount, plus);
}

/**
 * Live stock and product changes: `onStock(event)` and `onProduct(event)`, and
 * `onResync()` after a lost connection came back.
 */
export function subscribeChanges(app, { ownerId, onStock, onProduct, onResync }) {
  if (!app.live) return;
  if (onResync) app.resync.push(onResync);
  const vars = ownerId ? { ownerId } : {};
  const args = ownerId ? '($ownerId: ID, $afterId: ID) { stockChanged(ownerId: $ownerId, afterId: $afterId)' : '($afterId: ID) { stockChanged(afterId: $afterId)';
  const stop1 = app.live.subscribe(
    `subscription${args} { id productId quantity product { ${PRODUCT_FIELDS} } } }`,
    vars, (data) => onStock(data.stockChanged), (data) => data.stockChanged?.id);
  const pargs = ownerId ? '($ownerId: ID, $afterId: ID) { productChanged(ownerId: $ownerId, afterId: $afterId)' : '($afterId: ID) { productChanged(afterId: $afterId)';
  const stop2 = app.live.subscribe(
    `subscription${pargs} { id kind productId } }`,
    vars, (data) => onProduct(data.productChanged), (data) => data.productChanged?.id);
  app.onLeave(() => { stop1(); stop2(); });
}
