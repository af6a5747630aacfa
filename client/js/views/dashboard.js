// The dashboard: a summary, "Add new product", and the partner's own products with
// the stock buttons. It follows changes made anywhere, live.

import { gql, newest, PRODUCT_FIELDS } from '../api.js';
import { h, mount, confirmDialog } from '../dom.js';
import { pictureButton, priceText, quantityCell, stockControl, subscribeChanges } from './products.js';

const PAGE = 100;

export async function dashboardView(app) {
  const main = document.getElementById('main');
  const summary = h('dl', { class: 'summary', 'aria-label': 'Summary' });
  // Explicit roles: the phone layout restyles the table, which would otherwise drop
  // its semantics for screen readers.
  const tbody = h('tbody', { role: 'rowgroup' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more products');
  const empty = h('p', { class: 'empty', hidden: true }, 'No products yet. Add your first one!');
  const table = h('table', { class: 'products', role: 'table' },
    h('caption', { class: 'visually-hidden' }, 'Your products'),
    h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' },
      h('th', { scope: 'col', role: 'columnheader' }, 'ID'), h('th', { scope: 'col', role: 'columnheader' }, 'Picture'), h('th', { scope: 'col', role: 'columnheader' }, 'Name'),
      h('th', { scope: 'col', role: 'columnheader' }, 'Price'), h('th', { scope: 'col', role: 'columnheader' }, 'Category'), h('th', { scope: 'col', role: 'columnheader' }, 'Quantity'),
      h('th', { scope: 'col', role: 'columnheader' }, 'Modify stock'), h('th', { scope: 'col', role: 'columnheader' }, 'Actions'))),
    tbody);
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Your products'),
      h('a', { href: '#/products/new', class: 'button primary' }, '+ Add new product')),
    summary,
    h('div', { class: 'table-wrap' }, table),
    empty, more);

  let cursor = null;
  const rows = new Map();
  // Summaries and pages are re-read after changes; a late answer must not undo a newer one.
  const latestSummary = newest();
  const latestPage = newest();
  const fail = (error) => app.notify(error.message);

  const row = (product) => {
    const tr = h('tr', { role: 'row', dataset: { productId: product.id }, class: product.quantity === 0 ? 'is-out' : product.isLowStock ? 'is-low' : '' },
      h('td', { role: 'cell', 'data-label': 'ID' }, product.id),
      h('td', { role: 'cell', 'data-label': 'Picture' }, pictureButton(product, replace, (e) => app.notify(e.message))),
      h('th', { scope: 'row', role: 'rowheader', 'data-label': 'Name', class: 'name' }, product.name),
      h('td', { role: 'cell', 'data-label': 'Price' }, priceText(product)),
      h('td', { role: 'cell', 'data-label': 'Category', class: 'category' }, product.category),
      h('td', { role: 'cell', 'data-label': 'Quantity' }, quantityCell(product)),
      h('td', { role: 'cell', 'data-label': 'Modify stock' }, stockControl(product, replaceQuantity, (e) => app.notify(e.message))),
      h('td', { role: 'cell', 'data-label': 'Actions' }, h('div', { class: 'actions' },
        h('a', { href: `#/products/${product.id}/edit`, class: 'button small', 'aria-label': `Edit ${product.name}` }, 'Edit'),
        h('a', { href: `#/products/${product.id}/history`, class: 'button small secondary', 'aria-label': `Stock history of ${product.name}` }, 'History'),
        h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${product.name}`, onclick: () => remove(product) }, 'Delete'))));
    rows.set(product.id, tr);
    return tr;
  };

  function replace(product) {
    const old = rows.get(product.id);
    if (old) old.replaceWith(row(product));
    loadSummary().catch(fail);
  }

  /** Updates a row's quantity in place, so the focus stays on the button pressed. */
  function replaceQuantity(product) {
    const tr = rows.get(product.id);
    if (!tr) return;
    tr.className = product.quantity === 0 ? 'is-out' : product.isLowStock ? 'is-low' : '';
    tr.querySelector('td[data-label=Quantity]').replaceChildren(quantityCell(product));
    loadSummary().catch(fail);
  }

  async function remove(product) {
    if (!(await confirmDialog(`Delete “${product.name}”? Its stock history is kept.`))) return;
    try {
      await gql('mutation($id: ID!) { deleteProduct(id: $id) { id } }', { id: product.id });
      rows.get(product.id)?.remove();
      rows.delete(product.id);
      app.notify(`Deleted “${product.name}”.`, 'info');
      loadSummary().catch(fail);
      empty.hidden = rows.size > 0;
    } catch (error) {
      app.notify(error.message);
    }
  }

  async function loadSummary() {
    const data = await latestSummary(gql(`query($o: ID!) {
      all: products(first: 1, filter: {ownerId: $o}) { totalCount }
      low: products(first: 1, filter: {ownerId: $o, lowStock: true, inStock: true}) { totalCount }
      out: products(first: 1, filter: {ownerId: $o, inStock: false}) { totalCount } }`, { o: app.me.id }));
    if (!data) return;
    mount(summary,
      h('div', {}, h('dt', {}, 'Products'), h('dd', { id: 'count-all' }, data.all.totalCount)),
      h('div', { class: 'low' }, h('dt', {}, 'Low stock'), h('dd', { id: 'count-low' }, data.low.totalCount)),
      h('div', { class: 'out' }, h('dt', {}, 'Out of stock'), h('dd', { id: 'count-out' }, data.out.totalCount)));
  }

  async function loadPage(reset) {
    const data = await latestPage(gql(`query($o: ID!, $n: Int!, $after: String) {
      products(first: $n, after: $after, filter: {ownerId: $o}, orderBy: {field: ID}) {
        pageInfo { hasNextPage endCursor } nodes { ${PRODUCT_FIELDS} } } }`,
    { o: app.me.id, n: PAGE, after: reset ? null : cursor }));
    if (!data) return;
    if (reset) {
      rows.clear();
      tbody.replaceChildren();
    }
    for (const product of data.products.nodes) tbody.appendChild(row(product));
    cursor = data.products.pageInfo.endCursor;
    more.hidden = !data.products.pageInfo.hasNextPage;
    empty.hidden = rows.size > 0;
  }
  more.addEventListener('click', () => loadPage(false).catch(fail));

  await Promise.all([loadSummary(), loadPage(true)]);

  let reload = null;
  const reloadSoon = () => {
    clearTimeout(reload);
    reload = setTimeout(() => Promise.all([loadSummary(), loadPage(true)]).catch(fail), 150);
  };
  app.onLeave(() => clearTimeout(reload));
  subscribeChanges(app, {
    ownerId: app.me.id,
    onStock: (event) => { if (event.product) replaceQuantity(event.product); },
    // A product added, edited or deleted elsewhere: reload the list.
    onProduct: () => reloadSoon(),
    onResync: () => reloadSoon(),
  });
}
