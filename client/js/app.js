// The shell: who is logged in, the hash router, the navbar and the notice area.

import { gql, setUnauthenticatedHandler } from './api.js';
import { currentLanguage, preferredLanguage, t, useLanguage } from './i18n.js';
import { Live } from './live.js';
import { loginView, registerView } from './views/auth.js';
import { dashboardView } from './views/dashboard.js';
import { productFormView } from './views/product-form.js';
import { historyView } from './views/history.js';
import { catalogueView } from './views/catalogue.js';
import { salesView } from './views/sales.js';
import { passwordView } from './views/password.js';

const main = document.getElementById('main');
const notice = document.getElementById('notice');
const nav = document.getElementById('nav');
const profileButton = document.getElementById('profile-button');
const profileMenu = document.getElementById('profile-menu');

const app = {
  me: null,
  live: null,
  cleanup: [],
  /** What reloads the current view's data after the live connection was lost. */
  resync: [],
  pendingMessage: null,

  /** Shows a message at the top of the page (errors are announced to screen readers). */
  notify(message, kind = 'error') {
    notice.textContent = message;
    notice.className = `notice ${kind}`;
    notice.hidden = !message;
    if (kind !== 'error' && message) {
      clearTimeout(app.noticeTimer);
      app.noticeTimer = setTimeout(() => { notice.hidden = true; }, 4000);
    }
  },

  navigate(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },

  /** Runs `fn` when the current view goes away (subscriptions, timers). */
  onLeave(fn) {
    app.cleanup.push(fn);
  },

  /** Opens the live connection again: the session got a new id (a password change). */
  restartLive() {
    if (app.live) {
      app.live.onStatus = () => {};
      app.live.close();
      app.live = null;
    }
    app.setMe(app.me);
  },

  setMe(me) {
    app.me = me;
    nav.hidden = !me;
    document.getElementById('profile-name').textContent = me ? me.username : '';
    if (me && !app.live) {
      app.live = new Live();
      app.live.onStatus = (status, { reconnected }) => {
        document.body.classList.toggle('offline', status === 'offline');
        document.getElementById('live-status').hidden = status !== 'live';
        // Back after a break: events missed without an `afterId` are caught up by
        // reloading what is on screen.
        if (reconnected) for (const fn of app.resync) fn();
        // The server closed the socket because the session ended (logged out
        // elsewhere, or expired): asking who we are reaches the unauthenticated
        // handler, which returns to the login page with a message.
        if (status === 'ended') gql('{ me { id } }').then((data) => { if (!data?.me) sessionEnded(); }, () => {});
      };
    }
    if (!me && app.live) {
      app.live.close();
      app.live = null;
    }
  },
};

function sessionEnded() {
  if (!app.me) return;
  app.setMe(null);
  app.pendingMessage = t('session.expired');
  app.navigate('#/login');
}

setUnauthenticatedHandler(sessionEnded);

const routes = [
  [/^#\/login$/, () => loginView(app), false],
  [/^#\/register$/, () => registerView(app), false],
  [/^#\/dashboard$/, () => dashboardView(app), true],
  [/^#\/products\/new$/, () => productFormView(app, null), true],
  [/^#\/products\/(\d+)\/edit$/, (m) => productFormView(app, m[1]), true],
  [/^#\/products\/(\d+)\/history$/, (m) => historyView(app, m[1]), true],
  [/^#\/catalogue$/, () => catalogueView(app), true],
  [/^#\/sales$/, () => salesView(app), true],
  [/^#\/password$/, () => passwordView(app), true],
];

async function render() {
  for (const fn of app.cleanup.splice(0)) fn();
  app.resync = [];
  closeMenu();
  const hash = location.hash || (app.me ? '#/dashboard' : '#/login');
  const route = routes.find(([pattern]) => pattern.test(hash));
  if (!route) {
    app.navigate(app.me ? '#/dashboard' : '#/login');
    return;
  }
  const [pattern, view, needsLogin] = route;
  if (needsLogin && !app.me) {
    app.navigate('#/login');
    return;
  }
  if (!needsLogin && app.me) {
    app.navigate('#/dashboard');
    return;
  }
  for (const link of nav.querySelectorAll('[data-nav]')) {
    if (hash.startsWith(`#/${link.dataset.nav}`)) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (app.pendingMessage) {
    app.notify(app.pendingMessage, 'info');
    app.pendingMessage = null;
  } else {
    notice.hidden = true;
  }
  try {
    await view(hash.match(pattern));
  } catch (error) {
    app.notify(error.message);
  }
  // Move focus to the new page's heading, for keyboard and screen-reader users.
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: false });
  }
}

function closeMenu() {
  profileMenu.hidden = true;
  profileButton.setAttribute('aria-expanded', 'false');
}

profileButton.addEventListener('click', () => {
  const open = profileMenu.hidden;
  profileMenu.hidden = !open;
  profileButton.setAttribute('aria-expanded', String(open));
  if (open) profileMenu.querySelector('[role^=menuitem]')?.focus();
});
profileMenu.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') {
    closeMenu();
    profileButton.focus();
  }
});
document.addEventListener('click', (event) => {
  if (!profileMenu.hidden && !event.target.closest('.profile')) closeMenu();
});

document.getElementById('logout-button').addEventListener('click', async () => {
  closeMenu();
  try {
    await gql('mutation { logout }');
  } catch (error) {
    app.notify(error.message);
    return;
  }
  app.setMe(null);
  app.pendingMessage = t('session.loggedOut');
  app.navigate('#/login');
});

window.addEventListener('hashchange', render);
window.addEventListener('offline', () => app.notify(t('network.offline')));
window.addEventListener('online', () => app.notify(t('network.online'), 'info'));

/** Marks the current language in the profile menu. */
function markLanguage() {
  for (const button of profileMenu.querySelectorAll('[data-language]')) {
    button.setAttribute('aria-checked', String(button.dataset.language === currentLanguage()));
  }
}

/** Switches the language, remembers it, and draws the page again in it. */
export async function switchLanguage(code) {
  closeMenu();
  try {
    await useLanguage(code, { remember: true });
  } catch (error) {
    app.notify(error.message);
    return;
  }
  markLanguage();
  await render();
}

for (const button of profileMenu.querySelectorAll('[data-language]')) {
  button.addEventListener('click', () => switchLanguage(button.dataset.language));
}
document.getElementById('password-link').addEventListener('click', closeMenu);
app.switchLanguage = switchLanguage;

async function start() {
  try {
    await useLanguage(preferredLanguage());
  } catch (error) {
    // Without strings the keys show; the service is still usable.
    app.notify(error.message);
  }
  markLanguage();
  try {
    const data = await gql('{ me { id username } }');
    app.setMe(data.me);
  } catch (error) {
    app.notify(error.message);
  }
  await render();
}

start();
