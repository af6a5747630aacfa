// The dashboard: a summary, "Add new product", and the partner's own products with
// the stock buttons. It follows changes made anywhere, live.

import { gql, newest, PRODUCT_FIELDS } from '../api.js';
import { h, mount, confirmDialog } from '../dom.js';
import { formatNumber, t } from '../i18n.js';
import { pictureButton, priceText, quantityCell, stockControl, subscribeChanges } from './products.js';

const PAGE = 100;

/** The table's columns: what each cell holds, and its heading's key. */
const COLUMNS = [
  ['id', 'column.id'], ['picture', 'column.picture'], ['name', 'column.name'], ['price', 'column.price'],
  ['category', 'column.category'], ['quantity', 'column.quantity'], ['stock', 'column.stock'], ['actions', 'column.actions'],
];

/** A cell, labelled with its column's heading for the phone layout. */
function cell(column, content) {
  const key = COLUMNS.find(([name]) => name === column)[1];
  return h('td', { role: 'cell', 'data-label': t(key), dataset: { column }, class: column === 'category' ? 'category' : undefined }, content);
}

export async function dashboardView(app) {
  const main = document.getElementById('main');
  const summary = h('dl', { class: 'summary', 'aria-label': t('dashboard.summary') });
  // Explicit roles: the phone layout restyles the table, which would otherwise drop
  // its semantics for screen readers.
  const tbody = h('tbody', { role: 'rowgroup' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, t('dashboard.more'));
  const empty = h('p', { class: 'empty', hidden: true }, t('dashboard.empty'));
  const table = h('table', { class: 'products', role: 'table' },
    h('caption', { class: 'visually-hidden' }, t('dashboard.title')),
    h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' },
      COLUMNS.map(([, key]) => h('th', { scope: 'col', role: 'columnheader' }, t(key))))),
    tbody);
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, t('dashboard.title')),
      h('div', { class: 'actions' },
        h('a', { href: '/ecanteen/export/products', class: 'button secondary', download: '' }, t('dashboard.export')),
        h('a', { href: '#/products/new', class: 'button primary' }, t('dashboard.add')))),
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
      cell('id', product.id),
      cell('picture', pictureButton(product, replace, (e) => app.notify(e.message))),
      h('th', { scope: 'row', role: 'rowheader', 'data-label': t('column.name'), dataset: { column: 'name' }, class: 'name' }, product.name),
      cell('price', priceText(product)),
      cell('category', product.category),
      cell('quantity', quantityCell(product)),
      cell('stock', stockControl(product, replaceQuantity, (e) => app.notify(e.message))),
      cell('actions', h('div', { class: 'actions' },
        h('a', { href: `#/products/${product.id}/edit`, class: 'button small', 'aria-label': t('dashboard.editLabel', { name: product.name }) }, t('common.edit')),
        h('a', { href: `#/products/${product.id}/history`, class: 'button small secondary', 'aria-label': t('dashboard.historyLabel', { name: product.name }) }, t('dashboard.history')),
        h('button', { type: 'button', class: 'small danger', 'aria-label': t('dashboard.deleteLabel', { name: product.name }), onclick: () => remove(product) }, t('common.delete')))));
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
    tr.querySelector('td[data-column=quantity]').replaceChildren(quantityCell(product));
    loadSummary().catch(fail);
  }

  async function remove(product) {
    if (!(await confirmDialog(t('dashboard.confirmDelete', { name: product.name })))) return;
    try {
      await gql('mutation($id: ID!) { deleteProduct(id: $id) { id } }', { id: product.id });
      rows.get(product.id)?.remove();
      rows.delete(product.id);
      app.notify(t('dashboard.deleted', { name: product.name }), 'info');
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
      h('div', {}, h('dt', {}, t('dashboard.count')), h('dd', { id: 'count-all' }, formatNumber(data.all.totalCount))),
      h('div', { class: 'low' }, h('dt', {}, t('stock.low')), h('dd', { id: 'count-low' }, formatNumber(data.low.totalCount))),
      h('div', { class: 'out' }, h('dt', {}, t('stock.out')), h('dd', { id: 'count-out' }, formatNumber(data.out.totalCount))));
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
