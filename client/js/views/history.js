// A product's stock history, from the ledger: who, when, how much, why, and after.

import { gql } from '../api.js';
import { h, mount, formatTime } from '../dom.js';

const REASONS = {
  RESTOCK: 'Restock', SALE: 'Sale', WASTE: 'Waste', CORRECTION: 'Correction', COUNT: 'Count', OTHER: 'Other',
};

export async function historyView(app, id) {
  const main = document.getElementById('main');
  // Explicit roles: the phone layout restyles the table, which would otherwise drop
  // its semantics for screen readers.
  const tbody = h('tbody', { role: 'rowgroup' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show older changes');
  let cursor = null;

  const product = (await gql('query($id: ID!) { product(id: $id) { id name quantity } }', { id })).product;
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, `Stock history of “${product?.name ?? `product ${id}`}”`),
      h('a', { href: '#/dashboard', class: 'button secondary' }, 'Back to your products')),
    product ? h('p', {}, `In stock now: ${product.quantity}`) : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'history', role: 'table' },
      h('caption', { class: 'visually-hidden' }, 'Stock changes, newest first'),
      h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' },
        h('th', { scope: 'col', role: 'columnheader' }, 'When'), h('th', { scope: 'col', role: 'columnheader' }, 'Who'), h('th', { scope: 'col', role: 'columnheader' }, 'Change'),
        h('th', { scope: 'col', role: 'columnheader' }, 'Reason'), h('th', { scope: 'col', role: 'columnheader' }, 'Quantity after'), h('th', { scope: 'col', role: 'columnheader' }, 'Note'))),
      tbody)),
    more);

  async function load() {
    const data = await gql(`query($id: ID!, $after: String) { stockMovements(productId: $id, first: 50, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id delta quantityAfter reason note createdAt actor { username } } } }`, { id, after: cursor });
    for (const m of data.stockMovements.nodes) {
      tbody.appendChild(h('tr', { role: 'row' },
        h('td', { role: 'cell', 'data-label': 'When' }, h('time', { datetime: m.createdAt }, formatTime(m.createdAt))),
        h('td', { role: 'cell', 'data-label': 'Who' }, m.actor.username),
        h('td', { role: 'cell', 'data-label': 'Change', class: m.delta > 0 ? 'up' : 'down' }, m.delta > 0 ? `+${m.delta}` : `−${-m.delta}`),
        h('td', { role: 'cell', 'data-label': 'Reason' }, REASONS[m.reason] ?? m.reason),
        h('td', { role: 'cell', 'data-label': 'Quantity after' }, m.quantityAfter),
        h('td', { role: 'cell', 'data-label': 'Note' }, m.note ?? '')));
    }
    cursor = data.stockMovements.pageInfo.endCursor;
    more.hidden = !data.stockMovements.pageInfo.hasNextPage;
    if (!tbody.children.length) tbody.appendChild(h('tr', { role: 'row' }, h('td', { colspan: 6 }, 'No stock changes yet.')));
  }
  more.addEventListener('click', () => load().catch((e) => app.notify(e.message)));
  await load();
}
