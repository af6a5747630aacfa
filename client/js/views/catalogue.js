// The catalogue of every partner's products: search, a category filter, paging, and
// live stock.

import { gql, newest, PRODUCT_FIELDS } from '../api.js';
import { h, mount } from '../dom.js';
import { formatNumber, t } from '../i18n.js';
import { priceText, quantityCell, subscribeChanges, thumbnail } from './products.js';

const PAGE = 12;

export async function catalogueView(app) {
  const main = document.getElementById('main');
  const search = h('input', { id: 'catalogue-search', type: 'search', name: 'search', autocomplete: 'off' });
  const category = h('select', { id: 'catalogue-category', name: 'category' },
    h('option', { value: '' }, t('catalogue.allCategories')),
    h('option', { value: 'makanan' }, t('category.makanan')),
    h('option', { value: 'minuman' }, t('category.minuman')));
  const list = h('ul', { class: 'catalogue', 'aria-live': 'polite' });
  const status = h('p', { class: 'page-status', role: 'status' });
  const prev = h('button', { type: 'button', class: 'secondary', disabled: true }, t('catalogue.previous'));
  const next = h('button', { type: 'button', class: 'secondary', disabled: true }, t('catalogue.next'));
  const filters = h('form', { class: 'filters', role: 'search' },
    h('div', { class: 'field' }, h('label', { for: 'catalogue-search' }, t('catalogue.search')), search),
    h('div', { class: 'field' }, h('label', { for: 'catalogue-category' }, t('field.category')), category),
    h('button', { type: 'submit', class: 'primary' }, t('catalogue.submit')));
  mount(main, h('h1', {}, t('catalogue.title')), filters, status, list, h('nav', { class: 'pager', 'aria-label': t('catalogue.pages') }, prev, next));

  // Cursors of the pages before the current one, for "Previous". Each read says which
  // trail it belongs to, and the trail changes only when that read's answer is shown.
  let stack = [];
  let current = null;
  let nextCursor = null;
  const cards = new Map();
  const latest = newest();

  const card = (p) => {
    const li = h('li', { class: 'product-card', dataset: { productId: p.id } },
      thumbnail(p, 96),
      h('div', { class: 'body' },
        h('h2', { class: 'name' }, p.name),
        h('p', { class: 'meta' }, t('catalogue.meta', { price: priceText(p), category: p.category, owner: p.owner.username })),
        p.description ? h('p', { class: 'description' }, p.description) : null,
        h('p', {}, t('catalogue.inStock'), ' ', quantityCell(p))));
    cards.set(p.id, li);
    return li;
  };

  async function load(after, trail) {
    const filter = {};
    if (search.value.trim()) filter.search = search.value.trim();
    if (category.value) filter.category = category.value;
    const data = await latest(gql(`query($n: Int!, $after: String, $f: ProductFilterInput) {
      products(first: $n, after: $after, filter: $f, orderBy: {field: ID}) {
        totalCount pageInfo { hasNextPage endCursor } nodes { ${PRODUCT_FIELDS} } } }`, { n: PAGE, after, f: filter }));
    if (!data) return;
    const page = data.products;
    stack = trail;
    current = after;
    nextCursor = page.pageInfo.endCursor;
    cards.clear();
    mount(list, page.nodes.map(card));
    const first = stack.length * PAGE + 1;
    status.textContent = page.totalCount === 0
      ? t('catalogue.none')
      : t('catalogue.showing', { first: formatNumber(first), last: formatNumber(first + page.nodes.length - 1), total: formatNumber(page.totalCount) });
    next.disabled = !page.pageInfo.hasNextPage;
    prev.disabled = stack.length === 0;
  }

  const fail = (error) => app.notify(error.message);
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    load(null, []).catch(fail);
  });
  category.addEventListener('change', () => load(null, []).catch(fail));
  next.addEventListener('click', () => load(nextCursor, [...stack, current]).catch(fail));
  prev.addEventListener('click', () => load(stack.at(-1) ?? null, stack.slice(0, -1)).catch(fail));

  await load(null, []);

  let reload = null;
  const reloadSoon = () => {
    clearTimeout(reload);
    reload = setTimeout(() => load(current, stack).catch(fail), 150);
  };
  app.onLeave(() => clearTimeout(reload));
  subscribeChanges(app, {
    onStock: (event) => {
      const li = cards.get(event.productId);
      const quantity = li?.querySelector('.quantity');
      if (quantity && event.product) quantity.replaceWith(quantityCell(event.product));
    },
    onProduct: () => reloadSoon(),
    onResync: () => reloadSoon(),
  });
}
