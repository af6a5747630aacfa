// The sales page: today, this week or a chosen range of the canteen's days; revenue per
// day as a bar chart (SVG, with the same numbers in a table for screen readers and for
// reading off), the totals, the best-selling products, and a CSV download. A sale made
// anywhere updates it live.

import { gql, newest } from '../api.js';
import { h, mount } from '../dom.js';
import { formatDay, formatNumber, formatRupiah, t } from '../i18n.js';
import { subscribeChanges } from './products.js';

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element (h() makes HTML ones). */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A date `days` after `day` (YYYY-MM-DD), as YYYY-MM-DD. */
function addDays(day, days) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}

/** Monday of the week of `day`. */
function weekStart(day) {
  const [y, m, d] = day.split('-').map(Number);
  const weekday = (new Date(Date.UTC(y, m - 1, d)).getUTCDay() + 6) % 7;
  return addDays(day, -weekday);
}

const REPORT = `query($from: NaiveDate!, $to: NaiveDate!) {
  salesReport(from: $from, to: $to, groupBy: DAY, top: 5) {
    from to timeZone
    groups { day figures { ...F } }
    totals { ...F }
    topProducts { productId productName productDeleted figures { unitsSold revenue } } } }
  fragment F on SalesFigures { unitsSold revenue unpricedUnitsSold unitsRestocked unitsWasted corrections }`;

/** The revenue per day, as bars; the numbers themselves are in the table beside it. */
function chart(groups) {
  const width = 640;
  const height = 220;
  const left = 8;
  const bottom = 28;
  const top = 16;
  const max = Math.max(1, ...groups.map((g) => g.figures.revenue));
  const slot = (width - left * 2) / groups.length;
  const bar = Math.max(2, Math.min(48, slot * 0.7));
  // Label every day when they fit, else every few.
  const every = Math.ceil(groups.length / Math.floor((width - left * 2) / 56));
  const title = svg('title', { id: 'sales-chart-title' }, t('sales.chartTitle'));
  const desc = svg('desc', { id: 'sales-chart-desc' }, t('sales.chartDesc'));
  const bars = groups.map((g, i) => {
    const x = left + i * slot + (slot - bar) / 2;
    const barHeight = ((height - top - bottom) * g.figures.revenue) / max;
    const y = height - bottom - barHeight;
    return svg('g', { class: 'bar' },
      svg('rect', { x: x.toFixed(1), y: y.toFixed(1), width: bar.toFixed(1), height: Math.max(0, barHeight).toFixed(1) },
        svg('title', {}, `${formatDay(g.day)}: ${formatRupiah(g.figures.revenue)}`)),
      i % every === 0
        ? svg('text', { x: (x + bar / 2).toFixed(1), y: height - 10, 'text-anchor': 'middle', class: 'axis' }, formatDay(g.day, { day: 'numeric', month: 'short' }))
        : null);
  });
  return svg('svg', {
    class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-labelledby': 'sales-chart-title', 'aria-describedby': 'sales-chart-desc sales-table-caption',
  }, title, desc,
  svg('line', { x1: left, x2: width - left, y1: height - bottom, y2: height - bottom, class: 'baseline' }),
  ...bars);
}

function figuresTable(groups, totals) {
  const head = ['sales.day', 'sales.unitsSold', 'sales.revenue', 'sales.restocked', 'sales.wasted', 'sales.corrections'];
  const cells = (f) => [formatNumber(f.unitsSold), formatRupiah(f.revenue), formatNumber(f.unitsRestocked), formatNumber(f.unitsWasted), formatNumber(f.corrections)];
  return h('div', { class: 'table-wrap' }, h('table', { class: 'sales-table', role: 'table' },
    h('caption', { id: 'sales-table-caption' }, t('sales.tableCaption')),
    h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' }, head.map((key) => h('th', { scope: 'col', role: 'columnheader' }, t(key))))),
    h('tbody', { role: 'rowgroup' }, groups.map((g) => h('tr', { role: 'row' },
      h('th', { scope: 'row', role: 'rowheader', 'data-label': t('sales.day') }, h('time', { datetime: g.day }, formatDay(g.day))),
      cells(g.figures).map((text, i) => h('td', { role: 'cell', 'data-label': t(head[i + 1]) }, text))))),
    h('tfoot', { role: 'rowgroup' }, h('tr', { role: 'row' },
      h('th', { scope: 'row', role: 'rowheader', 'data-label': t('sales.day') }, t('sales.total')),
      cells(totals).map((text, i) => h('td', { role: 'cell', 'data-label': t(head[i + 1]) }, text))))));
}

export async function salesView(app) {
  const main = document.getElementById('main');
  const canteen = (await gql('{ canteen { timeZone today } }')).canteen;
  const ranges = {
    today: () => [canteen.today, canteen.today],
    week: () => [weekStart(canteen.today), canteen.today],
  };
  const choice = (value, key, checked = false) => h('label', { class: 'radio' },
    h('input', { type: 'radio', name: 'range', value, checked }), ' ', t(key));
  const from = h('input', { type: 'date', id: 'sales-from', name: 'from', value: canteen.today, max: canteen.today });
  const to = h('input', { type: 'date', id: 'sales-to', name: 'to', value: canteen.today, max: canteen.today });
  const custom = h('div', { class: 'row', hidden: true },
    h('div', { class: 'field' }, h('label', { for: 'sales-from' }, t('sales.from')), from),
    h('div', { class: 'field' }, h('label', { for: 'sales-to' }, t('sales.to')), to),
    h('button', { type: 'submit', class: 'primary' }, t('sales.show')));
  const picker = h('form', { class: 'filters sales-range' },
    h('fieldset', { class: 'field' }, h('legend', {}, t('sales.range')),
      choice('today', 'sales.today', true), choice('week', 'sales.week'), choice('range', 'sales.custom')),
    custom);
  const status = h('p', { class: 'page-status', role: 'status' });
  const download = h('a', { class: 'button secondary', download: '' }, t('common.downloadCsv'));
  const body = h('div', { class: 'sales' });
  mount(main,
    h('div', { class: 'page-head' }, h('h1', {}, t('sales.title')), download),
    h('p', { class: 'hint' }, t('sales.zone', { zone: canteen.timeZone })),
    picker, status, body);

  let range = ranges.today();
  const latest = newest();
  const fail = (error) => app.notify(error.message);

  async function load() {
    const [first, last] = range;
    const data = await latest(gql(REPORT, { from: first, to: last }));
    if (!data) return;
    const report = data.salesReport;
    const query = new URLSearchParams({ from: first, to: last, format: 'csv' });
    download.href = `/ecanteen/report?${query}`;
    status.textContent = first === last
      ? t('sales.showingDay', { day: formatDay(first, { dateStyle: 'full' }) })
      : t('sales.showingRange', { from: formatDay(first, { dateStyle: 'medium' }), to: formatDay(last, { dateStyle: 'medium' }) });
    const f = report.totals;
    const top = report.topProducts;
    mount(body,
      h('dl', { class: 'summary', 'aria-label': t('sales.summary') },
        h('div', {}, h('dt', {}, t('sales.revenue')), h('dd', { id: 'sales-revenue' }, formatRupiah(f.revenue))),
        h('div', {}, h('dt', {}, t('sales.unitsSold')), h('dd', { id: 'sales-units' }, formatNumber(f.unitsSold))),
        h('div', {}, h('dt', {}, t('sales.restocked')), h('dd', {}, formatNumber(f.unitsRestocked))),
        h('div', { class: 'low' }, h('dt', {}, t('sales.wasted')), h('dd', {}, formatNumber(f.unitsWasted)))),
      f.unpricedUnitsSold > 0 ? h('p', { class: 'hint' }, t('sales.unpriced', { units: formatNumber(f.unpricedUnitsSold) })) : null,
      h('h2', {}, t('sales.perDay')),
      chart(report.groups),
      figuresTable(report.groups, f),
      h('h2', {}, t('sales.top')),
      top.length
        ? h('ol', { class: 'top-products' }, top.map((p) => h('li', {},
          h('span', { class: 'name' }, p.productName), p.productDeleted ? ` (${t('sales.deleted')})` : '',
          ' — ', t('sales.topLine', { units: formatNumber(p.figures.unitsSold), revenue: formatRupiah(p.figures.revenue) }))))
        : h('p', { class: 'empty' }, t('sales.noSales')));
  }

  picker.addEventListener('change', (event) => {
    if (event.target.name !== 'range') return;
    custom.hidden = event.target.value !== 'range';
    if (event.target.value in ranges) {
      range = ranges[event.target.value]();
      load().catch(fail);
    }
  });
  picker.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!from.value || !to.value) return;
    range = from.value <= to.value ? [from.value, to.value] : [to.value, from.value];
    load().catch(fail);
  });

  await load();

  let reload = null;
  const reloadSoon = () => {
    clearTimeout(reload);
    reload = setTimeout(() => load().catch(fail), 300);
  };
  app.onLeave(() => clearTimeout(reload));
  subscribeChanges(app, {
    ownerId: app.me.id,
    onStock: () => reloadSoon(),
    onProduct: () => {},
    onResync: () => reloadSoon(),
  });
}
