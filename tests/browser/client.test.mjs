// The browser client, end to end, in real headless Chromium (Debian's, driven by
// playwright-core), against the real stack: balancer, two replicas, SQLite.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

import { KEEPALIVE_MS, Partner, startStack } from './stack.mjs';

const SCREENSHOTS = resolve(import.meta.dirname, '../../docs/screenshots');
const STRINGS = Object.fromEntries(['en', 'id'].map((code) => [code,
  JSON.parse(readFileSync(resolve(import.meta.dirname, `../../client/i18n/${code}.json`), 'utf8'))]));
// The browser language each client language is picked from.
const LOCALES = { en: 'en-US', id: 'id-ID' };

/** The client's string `key` in `lang`, placeholders filled, as the client does. */
function tr(lang) {
  return (key, params = {}) => {
    const template = STRINGS[lang][key];
    assert.ok(template !== undefined, `no string ${key}`);
    return template.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  };
}
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PASSWORD = 'correct horse battery';
// Two small pictures to upload.
const PNG_A = png(32, 32, [230, 120, 20]);
const PNG_B = png(32, 32, [20, 120, 230]);

/** A valid PNG of one colour. */
function png(width, height, [r, g, b]) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const line = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: width }, () => [r, g, b]).flat())]);
  const pixels = deflateSync(Buffer.concat(Array.from({ length: height }, () => line)));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', header), chunk('IDAT', pixels), chunk('IEND', Buffer.alloc(0))]);
}

// axe-core, the accessibility engine, evaluated into each page it audits. The DevTools
// protocol evaluates it outside the page's Content-Security-Policy, which stays strict.
const AXE = readFileSync(resolve(import.meta.dirname, 'node_modules/axe-core/axe.min.js'), 'utf8');
// WCAG 2.1, levels A and AA.
const WCAG = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

/**
 * Runs axe-core's WCAG 2.1 A and AA rules on the page as it is now, and fails with
 * every violation: its rule, its impact, and the elements it found.
 */
async function audit(page, screen) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const violations = await page.evaluate(async (tags) => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      rule: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  }, WCAG);
  const size = page.viewportSize();
  assert.deepEqual(violations, [], `axe-core on ${screen} at ${size.width}px:\n${JSON.stringify(violations, null, 2)}`);
}

/** The GraphQL endpoint's requests, by GET (reads, with a query string) or POST. */
const GRAPHQL = (url) => url.pathname === '/graphql';

/** A GraphQL request's variables: from the body of a POST, the URL of a GET. */
function variablesOf(request) {
  if (request.method() === 'POST') return request.postDataJSON()?.variables ?? null;
  const raw = new URL(request.url()).searchParams.get('variables');
  return raw ? JSON.parse(raw) : null;
}

let stack;
let browser;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  stack = await startStack();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A fresh browser profile; fails the test on any script dialog or page error. */
async function newPage(viewport = { width: 1200, height: 800 }, locale = 'en-US') {
  const context = await browser.newContext({ viewport, baseURL: stack.base, locale });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) {
      page.problems.push(`console: ${message.text()}`);
    }
  });
  page.on('dialog', (dialog) => {
    page.problems.push(`script dialog: ${dialog.message()}`);
    dialog.dismiss();
  });
  return page;
}

async function logIn(page, username, password = PASSWORD) {
  await page.goto('/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Your products' }).waitFor();
}

/** A promise with its `resolve`, for holding a network answer until a test lets it go. */
function deferred() {
  let resolve;
  const promise = new Promise((ok) => { resolve = ok; });
  return { promise, resolve };
}

function row(page, name) {
  return page.locator('tr', { has: page.getByRole('rowheader', { name, exact: true }) });
}

async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
  // Every screen worth a picture is audited as it is pictured.
  await audit(page, name);
}

describe('the browser client', () => {
  for (const lang of ['en', 'id']) test(`register, add with a picture, stock + and −, edit, change picture, history, delete, log out (${lang})`, async () => {
    const t = tr(lang);
    const user = lang === 'en' ? 'saif' : 'saif_id';
    // Screenshots of the English journey, and the dashboard in Indonesian: the README
    // shows those.
    const snap = (page, name) => {
      if (lang === 'en') return shot(page, name);
      return name === 'dashboard' ? shot(page, 'dashboard-id') : null;
    };
    // The browser's language picks the client's.
    const page = await newPage(undefined, LOCALES[lang]);
    const response = await page.goto('/');
    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(response.headers()['x-content-type-options'], 'nosniff');
    await page.getByRole('heading', { name: t('login.title') }).waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.lang), lang);
    await snap(page, 'login');
    await audit(page, `login (${lang})`);

    // Register, with the field rules enforced beside their fields.
    await page.getByRole('link', { name: t('login.toRegister') }).click();
    await page.getByLabel(t('field.username')).fill(user);
    await page.getByLabel(t('field.password'), { exact: true }).fill('short');
    await page.getByLabel(t('field.confirm')).fill('short');
    await page.getByRole('button', { name: t('register.submit') }).click();
    await page.locator('#field-password-error', { hasText: t('password.tooWeak') }).waitFor();
    await page.getByLabel(t('field.username')).fill('no spaces allowed');
    await page.getByLabel(t('field.password'), { exact: true }).fill(PASSWORD);
    await page.getByLabel(t('field.confirm')).fill(PASSWORD);
    await page.getByRole('button', { name: t('register.submit') }).click();
    await page.locator('#field-username-error', { hasText: t('error.field.username') }).waitFor();
    await audit(page, `register, with a field error (${lang})`);
    await page.getByLabel(t('field.username')).fill(user);
    await page.getByRole('button', { name: t('register.submit') }).click();
    await page.getByRole('heading', { name: t('dashboard.title') }).waitFor();
    await page.getByText(t('register.welcome', { name: user })).waitFor();

    // Add a product with a picture, and its preview.
    await page.getByRole('link', { name: t('dashboard.add') }).click();
    await page.getByRole('heading', { name: t('form.addTitle') }).waitFor();
    await page.getByRole('button', { name: t('form.add') }).click();
    await page.locator('#field-price-error', { hasText: t('error.field.price') }).waitFor();
    await page.getByLabel(t('field.name'), { exact: true }).fill('Es Teh Manis');
    await page.getByLabel(t('field.description')).fill('Dingin dan segar');
    await page.getByLabel(t('field.price')).fill('5000');
    await page.getByLabel(t('field.quantity'), { exact: true }).fill('5');
    await page.getByLabel(t('category.minuman')).check();
    await page.getByLabel(t('field.picture'), { exact: true }).setInputFiles({ name: 'teh.png', mimeType: 'image/png', buffer: PNG_A });
    await page.getByAltText(t('picture.preview')).waitFor();
    await snap(page, 'add-product');
    await audit(page, `add product (${lang})`);
    await page.getByRole('button', { name: t('form.add') }).click();
    await page.getByText(t('form.added', { name: 'Es Teh Manis' })).waitFor();
    const teh = row(page, 'Es Teh Manis');
    await teh.waitFor();
    // Prices read "Rp 5.000" in both languages.
    assert.match(await teh.textContent(), /Rp 5\.000/);
    assert.match(await teh.textContent(), /minuman/);
    // The products as CSV, from the dashboard's link.
    const exportHref = await page.getByRole('link', { name: t('dashboard.export') }).getAttribute('href');
    const exported = await page.evaluate(async (url) => (await fetch(url)).text(), exportHref);
    assert.match(exported.split('\r\n')[1], /^\d+,Es Teh Manis,Dingin dan segar,minuman,5000,5,,/);
    const firstPicture = await teh.getByRole('img').getAttribute('src');
    assert.match(firstPicture, /^\/images\/[0-9a-f]{64}\/thumb\.jpg$/);

    // + and −, and the flags.
    const amount = t('stock.amountLabel', { name: 'Es Teh Manis' });
    const plus = t('stock.addLabel', { name: 'Es Teh Manis' });
    const minus = t('stock.removeLabel', { name: 'Es Teh Manis' });
    await teh.getByLabel(amount).fill('3');
    await teh.getByRole('button', { name: plus }).click();
    await teh.locator('.quantity-value', { hasText: '8' }).waitFor();
    await teh.getByLabel(amount).fill('8');
    await teh.getByRole('button', { name: minus }).click();
    await teh.locator('.quantity-value', { hasText: '0' }).waitFor();
    await teh.getByText(t('stock.out')).waitFor();
    await page.locator('#count-out', { hasText: '1' }).waitFor();
    await teh.getByLabel(amount).fill('1');
    await teh.getByRole('button', { name: minus }).click();
    await page.getByRole('alert').filter({ hasText: t('stock.notEnough', { available: 0, name: 'Es Teh Manis', requested: 1 }) }).waitFor();
    await teh.getByLabel(amount).fill('2');
    await teh.getByRole('button', { name: plus }).click();
    await teh.locator('.quantity-value', { hasText: '2' }).waitFor();
    await snap(page, 'dashboard');
    await audit(page, `dashboard (${lang})`);

    // Edit.
    await teh.getByRole('link', { name: t('dashboard.editLabel', { name: 'Es Teh Manis' }) }).click();
    await page.getByRole('heading', { name: t('form.editTitle', { name: 'Es Teh Manis' }) }).waitFor();
    assert.equal(await page.getByLabel(t('field.price')).inputValue(), '5000');
    await audit(page, `edit product (${lang})`);
    await page.getByLabel(t('field.price')).fill('6000');
    await page.getByRole('button', { name: t('form.save') }).click();
    await page.getByText(t('form.saved', { name: 'Es Teh Manis' })).waitFor();
    assert.match(await row(page, 'Es Teh Manis').textContent(), /Rp 6\.000/);

    // Change the picture by clicking it.
    const chooser = page.waitForEvent('filechooser');
    await row(page, 'Es Teh Manis').getByRole('button', { name: t('picture.change', { name: 'Es Teh Manis' }) }).click();
    await (await chooser).setFiles({ name: 'teh2.png', mimeType: 'image/png', buffer: PNG_B });
    await page.waitForFunction(([old, alt]) => {
      const img = [...document.querySelectorAll('tr img')].find((i) => i.alt === alt);
      return img && img.getAttribute('src') !== old;
    }, [firstPicture, t('picture.alt', { name: 'Es Teh Manis' })]);

    // Stock history, from the ledger, with the price of each change.
    await row(page, 'Es Teh Manis').getByRole('link', { name: t('dashboard.historyLabel', { name: 'Es Teh Manis' }) }).click();
    await page.getByRole('heading', { name: t('history.title', { name: 'Es Teh Manis' }) }).waitFor();
    // The rows arrive after the heading: wait for the fourth.
    await page.locator('table.history tbody tr').nth(3).waitFor();
    const changes = await page.locator('table.history tbody tr').allTextContents();
    assert.equal(changes.length, 4, changes.join('\n'));
    const restock = t('reason.RESTOCK');
    assert.match(changes[0], new RegExp(`${user}.*\\+2.*${restock}.*2.*Rp 5\\.000`, 's'));
    assert.match(changes[1], new RegExp(`−8.*${t('reason.SALE')}.*0.*Rp 5\\.000`, 's'));
    assert.match(changes[3], new RegExp(`\\+5.*${restock}.*5.*Rp 5\\.000.*${t('history.noteInitial')}`, 's'));
    await snap(page, 'history');
    await audit(page, `stock history (${lang})`);

    // Delete, with a confirmation.
    await page.getByRole('link', { name: t('common.backToProducts') }).click();
    const remove = t('dashboard.deleteLabel', { name: 'Es Teh Manis' });
    await row(page, 'Es Teh Manis').getByRole('button', { name: remove }).click();
    await page.getByRole('dialog').waitFor();
    await audit(page, `delete dialog (${lang})`);
    await page.getByRole('dialog').getByRole('button', { name: t('common.cancel') }).click();
    await row(page, 'Es Teh Manis').waitFor();
    await row(page, 'Es Teh Manis').getByRole('button', { name: remove }).click();
    await page.getByRole('dialog').getByRole('button', { name: t('common.delete') }).click();
    await page.getByText(t('dashboard.deleted', { name: 'Es Teh Manis' })).waitFor();
    assert.equal(await row(page, 'Es Teh Manis').count(), 0);
    await page.getByText(t('dashboard.empty')).waitFor();

    // Log out from the profile menu.
    await page.getByRole('button', { name: user }).click();
    await page.getByRole('menuitem', { name: t('menu.logout') }).click();
    await page.getByRole('heading', { name: t('login.title') }).waitFor();
    await page.getByText(t('session.loggedOut')).waitFor();
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('a taken username is named beside its field', async () => {
    await new Partner(stack.base, 'taken').join();
    const page = await newPage();
    await page.goto('/#/register');
    await page.getByLabel('Username').fill('Taken');
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByLabel('Repeat the password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.locator('#field-username-error', { hasText: 'already taken' }).waitFor();
    await page.context().close();
  });

  test("two partners: one changes stock, the other's catalogue shows it live", async () => {
    const seller = await new Partner(stack.base, 'penjual').join();
    const product = await seller.createProduct('Bakso Urat', 10);
    const sellerPage = await newPage();
    const buyerPage = await newPage();
    await new Partner(stack.base, 'pembeli').join();
    await logIn(sellerPage, 'penjual');
    await logIn(buyerPage, 'pembeli');
    await buyerPage.getByRole('link', { name: 'Catalogue' }).click();
    const card = buyerPage.locator('li.product-card', { hasText: 'Bakso Urat' });
    await card.locator('.quantity-value', { hasText: '10' }).waitFor();
    // Both pages show that live updates are on before anything changes.
    await buyerPage.locator('#live-status').waitFor();
    await sellerPage.locator('#live-status').waitFor();
    await shot(buyerPage, 'catalogue');

    // Through the other browser's + button…
    const sellerRow = row(sellerPage, 'Bakso Urat');
    await sellerRow.getByLabel('Amount of Bakso Urat to add or remove').fill('4');
    await sellerRow.getByRole('button', { name: 'Remove stock of Bakso Urat' }).click();
    await card.locator('.quantity-value', { hasText: /^6$/ }).waitFor({ timeout: 5000 });
    // …and through the REST routes, on whichever replica the balancer picks.
    const r = await seller.rest('POST', `/ecanteen/product/${product.id}/stock`, { delta: '-6' });
    assert.equal(r.status, 200);
    await card.locator('.quantity-value', { hasText: /^0$/ }).waitFor({ timeout: 5000 });
    await card.getByText('Out of stock').waitFor();
    // The seller's own dashboard followed the REST change too.
    await sellerRow.locator('.quantity-value', { hasText: /^0$/ }).waitFor({ timeout: 5000 });

    // Search and category filter.
    await seller.createProduct('Es Jeruk', 3, { category: 'minuman' });
    await buyerPage.getByLabel('Search by name').fill('jeruk');
    await buyerPage.getByRole('button', { name: 'Search' }).click();
    await buyerPage.getByText('Showing 1–1 of 1 products').waitFor();
    await buyerPage.getByLabel('Search by name').fill('');
    await buyerPage.getByLabel('Category').selectOption('makanan');
    await buyerPage.locator('li.product-card', { hasText: 'Bakso Urat' }).waitFor();
    assert.equal(await buyerPage.locator('li.product-card', { hasText: 'Es Jeruk' }).count(), 0);
    assert.deepEqual([...sellerPage.problems, ...buyerPage.problems], []);
    await sellerPage.context().close();
    await buyerPage.context().close();
  });

  test('an open dashboard keeps its WebSocket past two keep-alive periods, and stays live', async () => {
    const seller = await new Partner(stack.base, 'awet').join();
    const product = await seller.createProduct('Teh Awet', 5);
    const page = await newPage();
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(socket));
    await logIn(page, 'awet');
    await page.locator('#live-status').waitFor();
    // The socket that is live now. (One torn down by pingora#946 before its ack, which
    // the client reopens at once, is not this test's concern: README, "The balancer".)
    const live = sockets.length;
    const socket = sockets[live - 1];
    // The server closes a socket silent for KEEPALIVE_MS (3008); the client's pings
    // keep this one open.
    await page.waitForTimeout(2 * KEEPALIVE_MS + 1500);
    assert.equal(sockets.length, live, 'the live WebSocket was never reopened');
    assert.equal(socket.isClosed(), false);
    const r = await seller.rest('POST', `/ecanteen/product/${product.id}/stock`, { delta: '2' });
    assert.equal(r.status, 200);
    await row(page, 'Teh Awet').locator('.quantity-value', { hasText: /^7$/ }).waitFor({ timeout: 5000 });
    assert.equal(sockets.length, live);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('the catalogue pages through many products', async () => {
    const seller = await new Partner(stack.base, 'grosir').join();
    for (let i = 1; i <= 14; i += 1) await seller.createProduct(`Kue ${String(i).padStart(2, '0')}`, 1);
    await seller.createProduct('Teh Tarik', 1);
    const page = await newPage();
    await logIn(page, 'grosir');
    // The catalogue's first read (no filter) is held back until the search has been
    // answered, as a slow network can do: its late answer must not replace the newer one.
    // (The catalogue's reads are the only ones with a filter variable, `f`.)
    const unfiltered = (request) => {
      const variables = variablesOf(request);
      return Boolean(variables && 'f' in variables) && Object.keys(variables.f ?? {}).length === 0;
    };
    const held = deferred();
    await page.route(GRAPHQL, async (route) => {
      if (unfiltered(route.request())) await held.promise;
      await route.continue();
    });
    await page.getByRole('link', { name: 'Catalogue' }).click();
    await page.getByLabel('Search by name').fill('kue');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByText('Showing 1–12 of 14 products').waitFor();
    const late = page.waitForResponse((response) => unfiltered(response.request()));
    held.resolve();
    await late;
    await page.waitForTimeout(300);
    assert.equal(await page.locator('.page-status').textContent(), 'Showing 1–12 of 14 products');
    await page.unroute(GRAPHQL);
    await page.getByRole('button', { name: 'Next →' }).click();
    await page.getByText('Showing 13–14 of 14 products').waitFor();
    await page.getByRole('button', { name: '← Previous' }).click();
    await page.getByText('Showing 1–12 of 14 products').waitFor();
    await page.context().close();
  });

  test('reads are persisted queries by GET, and the catalogue loaded again is a 304', async () => {
    const seller = await new Partner(stack.base, 'cache_stall').join();
    await seller.createProduct('Es Jeruk', 3);
    const page = await newPage();
    await logIn(page, 'cache_stall');
    // What crossed the network, as Chromium saw it: Playwright reports a revalidated
    // answer by the cached copy's status (200), the DevTools protocol by the wire's.
    const wire = new Map();
    const entry = (id) => wire.get(id) ?? wire.set(id, { order: wire.size }).get(id);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.requestWillBeSent', ({ requestId, request }) => {
      Object.assign(entry(requestId), { method: request.method, url: new URL(request.url), body: request.postData });
    });
    cdp.on('Network.requestWillBeSentExtraInfo', ({ requestId, headers }) => {
      const tag = Object.entries(headers).find(([name]) => name.toLowerCase() === 'if-none-match');
      entry(requestId).tag = tag?.[1] ?? null;
    });
    cdp.on('Network.responseReceivedExtraInfo', ({ requestId, statusCode }) => {
      entry(requestId).status = statusCode;
    });
    // The catalogue's reads are the only ones with a filter variable, `f`.
    const isCatalogue = (read) => {
      if (!read.url || !GRAPHQL(read.url)) return false;
      const raw = read.method === 'POST' ? JSON.parse(read.body ?? '{}').variables : JSON.parse(read.url.searchParams.get('variables') ?? 'null');
      return Boolean(raw && 'f' in raw);
    };
    const loads = [];
    for (let i = 0; i < 3; i += 1) {
      const before = new Set(wire.keys());
      await page.getByRole('link', { name: 'Catalogue' }).click();
      await page.locator('.page-status', { hasText: /^Showing/ }).waitFor();
      await page.waitForTimeout(300);
      loads.push([...wire].filter(([id, read]) => !before.has(id) && isCatalogue(read))
        .map(([, read]) => read).sort((a, b) => a.order - b.order));
      await page.getByRole('link', { name: 'Dashboard' }).click();
      await page.getByRole('heading', { name: 'Your products' }).waitFor();
    }
    await cdp.detach();
    const seen = JSON.stringify(loads.map((load) => load.map(({ method, status, tag }) => [method, status, tag ?? null])));
    // Every read by GET carries the hash and not the text.
    for (const read of loads.flat().filter((r) => r.method === 'GET')) {
      assert.equal(read.url.searchParams.get('query'), null, read.url.href);
      assert.match(read.url.searchParams.get('extensions'), /"sha256Hash":"[0-9a-f]{64}"/);
    }
    // The first load is the hash alone by GET, answered from the replicas' store when an
    // earlier client taught them the query; else not found, and then the text goes
    // once, by POST, and the next load is the hash alone.
    const first = loads[0].map((r) => [r.method, r.status]);
    if (first.length === 2) {
      assert.deepEqual(first, [['GET', 200], ['POST', 200]], seen);
      assert.deepEqual(loads[1].map((r) => [r.method, r.status]), [['GET', 200]], seen);
    } else {
      assert.deepEqual(first, [['GET', 200]], seen);
    }
    // The last: the browser asked with its cached copy's tag, and the answer was 304
    // (nothing but headers crossed the network).
    assert.deepEqual(loads[2].map((r) => [r.method, r.status]), [['GET', 304]], seen);
    assert.ok(loads[2][0].tag, seen);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  for (const viewport of [{ width: 360, height: 740 }, { width: 1200, height: 800 }]) test(`every screen passes axe-core's WCAG 2.1 A and AA rules at ${viewport.width} px`, async () => {
    const user = `axe_${viewport.width}`;
    const owner = await new Partner(stack.base, user).join();
    const { id } = await owner.createProduct('Nasi Uduk', 2, { lowStockThreshold: 3 });
    await owner.gql('mutation($id: ID!) { adjustStock(input: {productId: $id, delta: -1}) { replayed } }', { id });
    const page = await newPage(viewport);
    await page.goto('/');
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    await audit(page, 'login');
    await page.getByLabel('Username').fill(user);
    await page.getByLabel('Password', { exact: true }).fill('wrong password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').waitFor();
    await audit(page, 'login, refused');
    await page.getByRole('link', { name: 'Create a partner account' }).click();
    await page.getByRole('heading', { name: 'Create a partner account' }).waitFor();
    await page.getByLabel('Username').fill('no spaces allowed');
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByLabel('Repeat the password').fill('short');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.locator('#field-password-error').waitFor();
    await audit(page, 'register, with field errors');

    await logIn(page, user);
    await row(page, 'Nasi Uduk').getByText('Low stock').waitFor();
    await audit(page, 'dashboard');
    await page.getByRole('button', { name: user }).click();
    await page.getByRole('menuitem', { name: 'Log out' }).waitFor();
    await audit(page, 'dashboard, profile menu open');
    await page.keyboard.press('Escape');
    await row(page, 'Nasi Uduk').getByRole('button', { name: 'Delete Nasi Uduk' }).click();
    await page.getByRole('dialog').waitFor();
    await audit(page, 'dashboard, delete dialog');
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();

    await page.getByRole('link', { name: '+ Add new product' }).click();
    await page.getByRole('heading', { name: 'Add new product' }).waitFor();
    await page.getByRole('button', { name: 'Add product' }).click();
    await page.locator('#field-price-error').waitFor();
    await page.getByLabel('Picture', { exact: true }).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: PNG_A });
    await page.getByAltText('Preview of the chosen picture').waitFor();
    await audit(page, 'add product, with field errors and a preview');

    await page.goto(`/#/products/${id}/edit`);
    await page.getByRole('heading', { name: 'Edit “Nasi Uduk”' }).waitFor();
    await audit(page, 'edit product');
    await page.goto(`/#/products/${id}/history`);
    await page.locator('table.history tbody tr').nth(1).waitFor();
    await audit(page, 'stock history');
    await page.getByRole('link', { name: 'Catalogue' }).click();
    await page.locator('.page-status', { hasText: /^Showing/ }).waitFor();
    await audit(page, 'catalogue');
    await page.getByRole('link', { name: 'Sales' }).click();
    await page.getByRole('heading', { name: 'Sales' }).waitFor();
    await page.locator('table').first().waitFor();
    await audit(page, 'sales');
    await page.goto('/#/password');
    await page.getByRole('heading', { name: 'Change your password' }).waitFor();
    await audit(page, 'change password');
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('the dashboard summary never goes back to an older count', async () => {
    const owner = await new Partner(stack.base, 'kedai').join();
    await owner.createProduct('Roti Bakar', 1);
    const page = await newPage();
    await logIn(page, 'kedai');
    const roti = row(page, 'Roti Bakar');
    await page.locator('#count-out', { hasText: '0' }).waitFor();
    // Each stock change re-reads the summary twice: after the page's own mutation, and
    // on the live event. The answers to the two reads after "−" (out of stock: 1) are
    // held back until the two reads after "+" (out of stock: 0) have been answered.
    // (The summary is the one read whose only variable is the owner, `o`.)
    const summary = (request) => {
      const variables = variablesOf(request);
      return Boolean(variables) && Object.keys(variables).join() === 'o';
    };
    const held = [];
    const afterPlus = new Set();
    const gate = deferred();
    const minusRead = deferred();
    const plusRead = deferred();
    let plusFinished = 0;
    page.on('requestfinished', (request) => {
      if (afterPlus.has(request) && (plusFinished += 1) === 2) plusRead.resolve();
    });
    await page.route(GRAPHQL, async (route) => {
      if (!summary(route.request())) return route.continue();
      if (held.length < 2) {
        held.push(route.request());
        const response = await route.fetch();
        if (held.length === 2) minusRead.resolve();
        await gate.promise;
        return route.fulfill({ response });
      }
      afterPlus.add(route.request());
      return route.continue();
    });
    await roti.getByRole('button', { name: 'Remove stock of Roti Bakar' }).click();
    await roti.locator('.quantity-value', { hasText: /^0$/ }).waitFor();
    await minusRead.promise;
    await roti.getByRole('button', { name: 'Add stock of Roti Bakar' }).click();
    await roti.locator('.quantity-value', { hasText: /^1$/ }).waitFor();
    await plusRead.promise;
    await page.locator('#count-out', { hasText: '0' }).waitFor();
    // Now the older answers arrive, after the newer ones.
    gate.resolve();
    await Promise.all(held.map(async (request) => (await request.response())?.finished()));
    await page.waitForTimeout(300);
    assert.equal(await page.locator('#count-out').textContent(), '0');
    await page.unroute(GRAPHQL);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('a product name with HTML in it renders as text', async () => {
    const evil = '<img src=x onerror=alert(1)>';
    const mallory = await new Partner(stack.base, 'mallory').join();
    await mallory.createProduct(evil, 1);
    const page = await newPage();
    await logIn(page, 'mallory');
    await row(page, evil).waitFor();
    await page.getByRole('link', { name: 'Catalogue' }).click();
    await page.getByLabel('Search by name').fill('onerror');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.locator('li.product-card h2', { hasText: evil }).waitFor();
    assert.equal(await page.locator('img[src="x"]').count(), 0);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('an edit that crossed another change is refused, and the current values are shown', async () => {
    const owner = await new Partner(stack.base, 'kasir').join();
    const product = await owner.createProduct('Nasi Kuning', 5);
    const page = await newPage();
    await logIn(page, 'kasir');
    await row(page, 'Nasi Kuning').getByRole('link', { name: 'Edit Nasi Kuning' }).click();
    await page.getByRole('heading', { name: 'Edit “Nasi Kuning”' }).waitFor();
    // Meanwhile, another cashier changes the price.
    await owner.gql('mutation($id: ID!) { updateProduct(id: $id, input: {price: 15000}) { id } }', { id: product.id });
    await page.getByLabel('Name').fill('Nasi Kuning Spesial');
    await page.getByRole('button', { name: 'Save changes' }).click();
    const conflict = page.locator('.conflict');
    await conflict.getByText('Someone else changed this product').waitFor();
    await conflict.getByText(/price: now “Rp 15\.000” \(was “Rp 9\.999”\)/).waitFor();
    await conflict.getByText(/Your unsaved changes: name “Nasi Kuning Spesial”/).waitFor();
    assert.equal(await page.getByLabel('Price (Rp)').inputValue(), '15000');
    assert.equal(await page.getByLabel('Name').inputValue(), 'Nasi Kuning');
    await shot(page, 'edit-conflict');
    const stored = await owner.gql('query($id: ID!) { product(id: $id) { name price } }', { id: product.id });
    assert.deepEqual(stored.product, { name: 'Nasi Kuning', price: 15000 });
    // Saved again on the current values, it goes through.
    await page.getByLabel('Name').fill('Nasi Kuning Spesial');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.getByText('Saved “Nasi Kuning Spesial”.').waitFor();
    await page.context().close();
  });

  test('an expired session goes back to login, and server trouble reads as a message', async () => {
    const owner = await new Partner(stack.base, 'warung').join();
    await owner.createProduct('Tahu Isi', 5);
    const page = await newPage();
    await logIn(page, 'warung');
    // The service is overloaded: a readable message, not silence.
    await page.route(GRAPHQL, (route) => route.fulfill({ status: 503, headers: { 'retry-after': '1' }, body: '' }));
    await row(page, 'Tahu Isi').getByRole('button', { name: 'Add stock of Tahu Isi' }).click();
    await page.getByRole('alert').filter({ hasText: 'busy or restarting' }).waitFor();
    await page.unroute(GRAPHQL);
    await page.route(GRAPHQL, (route) => route.fulfill({ status: 429, headers: { 'retry-after': '7' }, body: '' }));
    await row(page, 'Tahu Isi').getByRole('button', { name: 'Add stock of Tahu Isi' }).click();
    await page.getByRole('alert').filter({ hasText: 'wait 7 seconds' }).waitFor();
    await page.unroute(GRAPHQL);
    await page.route(GRAPHQL, (route) => route.abort('internetdisconnected'));
    await row(page, 'Tahu Isi').getByRole('button', { name: 'Add stock of Tahu Isi' }).click();
    await page.getByRole('alert').filter({ hasText: 'Cannot reach the server' }).waitFor();
    await page.unroute(GRAPHQL);
    // The session ends (here: its cookie is gone); the next action goes to login.
    await page.context().clearCookies();
    await row(page, 'Tahu Isi').getByRole('button', { name: 'Add stock of Tahu Isi' }).click();
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    await page.getByText('Your session has expired. Please log in again.').waitFor();
    await page.context().close();
  });

  test('the layout holds at 360 px wide', async () => {
    const owner = await new Partner(stack.base, 'kantin').join();
    await owner.createProduct('Mie Goreng Jawa Spesial Pedas', 2, { lowStockThreshold: 3 });
    const page = await newPage({ width: 360, height: 740 });
    await logIn(page, 'kantin');
    const product = row(page, 'Mie Goreng Jawa Spesial Pedas');
    await product.getByText('Low stock').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
    // The buttons stay big enough to hit with a thumb.
    const plus = await product.getByRole('button', { name: 'Add stock of Mie Goreng Jawa Spesial Pedas' }).boundingBox();
    assert.ok(plus.width >= 44 && plus.height >= 44, JSON.stringify(plus));
    await product.getByRole('button', { name: 'Add stock of Mie Goreng Jawa Spesial Pedas' }).click();
    await product.locator('.quantity-value', { hasText: /^3$/ }).waitFor();
    await shot(page, 'dashboard-360px');
    await audit(page, 'dashboard');
    // The profile menu works by keyboard.
    await page.getByRole('button', { name: 'kantin' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('menuitem', { name: 'Log out' }).waitFor();
    await page.keyboard.press('Escape');
    assert.equal(await page.getByRole('menuitem', { name: 'Log out' }).isVisible(), false);
    await page.context().close();
  });
  test('the sales page: totals, the chart with its table, best sellers, CSV, and live updates', async () => {
    const owner = await new Partner(stack.base, 'laris').join();
    const nasi = await owner.createProduct('Nasi Uduk', 20);
    const teh = await owner.createProduct('Teh Hangat', 20);
    for (const [product, delta] of [[nasi, -3], [teh, -1]]) {
      const r = await owner.rest('POST', `/ecanteen/product/${product.id}/stock`, { delta: String(delta) });
      assert.equal(r.status, 200);
    }
    const page = await newPage();
    await logIn(page, 'laris');
    await page.getByRole('link', { name: 'Sales' }).click();
    await page.getByRole('heading', { name: 'Sales', exact: true }).waitFor();
    // Both products cost Rp 9.999 (the test partner's default): 4 sold today.
    await page.locator('#sales-units', { hasText: /^4$/ }).waitFor();
    assert.equal(await page.locator('#sales-revenue').textContent(), 'Rp 39.996');
    // The chart is an image with a name, and the table holds its numbers.
    const chart = page.getByRole('img', { name: 'Revenue per day' });
    await chart.waitFor();
    assert.equal(await chart.locator('rect').count(), 1);
    const table = page.getByRole('table', { name: 'Sales and stock per day' });
    assert.match(await table.locator('tbody').textContent(), /4.*Rp 39\.996/s);
    const best = await page.locator('.top-products li').allTextContents();
    assert.equal(best.length, 2);
    assert.match(best[0], /Nasi Uduk.*3.*Rp 29\.997/s);
    // The CSV is the same report, and parses as CSV.
    const href = await page.getByRole('link', { name: 'Download CSV' }).getAttribute('href');
    const csv = await page.evaluate(async (url) => (await fetch(url)).text(), href);
    const lines = csv.trim().split('\r\n');
    assert.equal(lines[0], 'day,units_sold,revenue,unpriced_units_sold,units_restocked,units_wasted,corrections');
    assert.match(lines[1], /^\d{4}-\d{2}-\d{2},4,39996,0,40,0,0$/);
    await shot(page, 'sales');
    // A sale made elsewhere shows up without a reload.
    const r = await owner.rest('POST', `/ecanteen/product/${teh.id}/stock`, { delta: '-2' });
    assert.equal(r.status, 200);
    await page.locator('#sales-units', { hasText: /^6$/ }).waitFor({ timeout: 5000 });
    // This week, and a chosen range.
    await page.getByLabel('This week').check();
    await page.locator('#sales-units', { hasText: /^6$/ }).waitFor();
    await page.getByLabel('Choose dates').check();
    await page.getByLabel('From', { exact: true }).fill('2026-01-01');
    await page.getByLabel('To', { exact: true }).fill('2026-01-07');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.locator('#sales-units', { hasText: /^0$/ }).waitFor();
    assert.equal(await page.getByRole('img', { name: 'Revenue per day' }).locator('rect').count(), 7);
    await page.getByText('No sales in this period.').waitFor();
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('the language is switched in the profile menu and remembered', async () => {
    await new Partner(stack.base, 'bahasa').join();
    const page = await newPage();
    await logIn(page, 'bahasa');
    const id = tr('id');
    await page.getByRole('button', { name: 'bahasa' }).click();
    await page.getByRole('menuitemradio', { name: 'Bahasa Indonesia' }).click();
    await page.getByRole('heading', { name: id('dashboard.title') }).waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'id');
    await page.getByRole('link', { name: id('nav.sales') }).waitFor();
    // Remembered: a reload (the browser still says English) stays in Indonesian.
    await page.reload();
    await page.getByRole('heading', { name: id('dashboard.title') }).waitFor();
    await page.getByRole('button', { name: 'bahasa' }).click();
    assert.equal(await page.getByRole('menuitemradio', { name: 'Bahasa Indonesia' }).getAttribute('aria-checked'), 'true');
    await page.getByRole('menuitemradio', { name: 'English' }).click();
    await page.getByRole('heading', { name: 'Your products' }).waitFor();
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('a password change from the profile menu logs the other browser out', async () => {
    const owner = await new Partner(stack.base, 'sandi').join();
    await owner.createProduct('Kopi Susu', 3);
    const phone = await newPage();
    const laptop = await newPage();
    await logIn(phone, 'sandi');
    await logIn(laptop, 'sandi');
    await phone.getByRole('button', { name: 'sandi' }).click();
    await phone.getByRole('menuitem', { name: 'Change password' }).click();
    await phone.getByRole('heading', { name: 'Change your password' }).waitFor();
    await phone.getByLabel('Current password').fill('not my password');
    await phone.getByLabel('New password', { exact: true }).fill('a brand new password');
    await phone.getByLabel('Repeat the password').fill('a brand new password');
    await phone.getByRole('button', { name: 'Change password' }).click();
    await phone.locator('#field-currentPassword-error', { hasText: 'not your current password' }).waitFor();
    await phone.getByLabel('Current password').fill(PASSWORD);
    await phone.getByRole('button', { name: 'Change password' }).click();
    await phone.getByText('Your password is changed.').waitFor();
    await phone.getByRole('heading', { name: 'Your products' }).waitFor();
    // The laptop's session is gone: its next request goes back to login.
    await row(laptop, 'Kopi Susu').getByRole('button', { name: 'Add stock of Kopi Susu' }).click();
    await laptop.getByRole('heading', { name: 'Log in' }).waitFor();
    // The phone stays logged in, and live.
    await phone.locator('#live-status').waitFor();
    await phone.getByRole('link', { name: 'Catalogue' }).click();
    await phone.getByRole('heading', { name: 'Catalogue' }).waitFor();
    await logIn(laptop, 'sandi', 'a brand new password');
    assert.deepEqual([...phone.problems, ...laptop.problems], []);
    await phone.context().close();
    await laptop.context().close();
  });
});
