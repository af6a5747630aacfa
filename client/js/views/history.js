// A product's stock history, from the ledger: who, when, how much, why, and after.

import { gql } from '../api.js';
import { h, mount } from '../dom.js';
import { formatNumber, formatRupiah, formatTime, t } from '../i18n.js';

const COLUMNS = ['history.when', 'history.who', 'history.change', 'history.reason', 'history.after', 'history.unitPrice', 'history.note'];

/** The notes the service writes itself are shown in the reader's language. */
function noteText(note) {
  if (note === 'initial stock') return t('history.noteInitial');
  if (note === 'edited') return t('history.noteEdited');
  return note ?? '';
}

export async function historyView(app, id) {
  const main = document.getElementById('main');
  // Explicit roles: the phone layout restyles the table, which would otherwise drop
  // its semantics for screen readers.
  const tbody = h('tbody', { role: 'rowgroup' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, t('history.more'));
  let cursor = null;

  const product = (await gql('query($id: ID!) { product(id: $id) { id name quantity } }', { id })).product;
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, t('history.title', { name: product?.name ?? `#${id}` })),
      h('div', { class: 'actions' },
        h('a', { href: `/ecanteen/product/${encodeURIComponent(id)}/stock?format=csv`, class: 'button secondary', download: '' }, t('common.downloadCsv')),
        h('a', { href: '#/dashboard', class: 'button secondary' }, t('common.backToProducts')))),
    product ? h('p', {}, t('history.now', { quantity: formatNumber(product.quantity) })) : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'history', role: 'table' },
      h('caption', { class: 'visually-hidden' }, t('history.caption')),
      h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' },
        COLUMNS.map((key) => h('th', { scope: 'col', role: 'columnheader' }, t(key))))),
      tbody)),
    more);

  async function load() {
    const data = await gql(`query($id: ID!, $after: String) { stockMovements(productId: $id, first: 50, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id delta quantityAfter reason note unitPrice createdAt actor { username } } } }`, { id, after: cursor });
    for (const m of data.stockMovements.nodes) {
      tbody.appendChild(h('tr', { role: 'row' },
        h('td', { role: 'cell', 'data-label': t('history.when') }, h('time', { datetime: m.createdAt }, formatTime(m.createdAt))),
        h('td', { role: 'cell', 'data-label': t('history.who') }, m.actor.username),
        h('td', { role: 'cell', 'data-label': t('history.change'), class: m.delta > 0 ? 'up' : 'down' }, m.delta > 0 ? `+${formatNumber(m.delta)}` : `−${formatNumber(-m.delta)}`),
        h('td', { role: 'cell', 'data-label': t('history.reason') }, t(`reason.${m.reason}`)),
        h('td', { role: 'cell', 'data-label': t('history.after') }, formatNumber(m.quantityAfter)),
        h('td', { role: 'cell', 'data-label': t('history.unitPrice') }, m.unitPrice === null ? '' : formatRupiah(m.unitPrice)),
        h('td', { role: 'cell', 'data-label': t('history.note') }, noteText(m.note))));
    }
    cursor = data.stockMovements.pageInfo.endCursor;
    more.hidden = !data.stockMovements.pageInfo.hasNextPage;
    if (!tbody.children.length) tbody.appendChild(h('tr', { role: 'row' }, h('td', { colspan: COLUMNS.length }, t('history.empty'))));
  }
  more.addEventListener('click', () => load().catch((e) => app.notify(e.message)));
  await load();
}
