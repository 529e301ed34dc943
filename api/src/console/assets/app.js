// The console's entry point: loads the session, marks the current section and draws the page
// for the path. Each section's pages live in their own module.

import { loadSession, api, attempt, showError } from './lib.js';
import * as campaigns from './campaigns.js';
import * as audiences from './audiences.js';
import * as templates from './templates.js';
import * as dlq from './dlq.js';
import * as settings from './settings.js';

const ROUTES = [
  [/^\/console\/campaigns\/?$/, campaigns.list],
  [/^\/console\/campaigns\/new$/, campaigns.create],
  [/^\/console\/campaigns\/(\d+)$/, campaigns.show],
  [/^\/console\/audiences\/?$/, audiences.list],
  [/^\/console\/audiences\/(\d+)$/, audiences.show],
  [/^\/console\/templates\/?$/, templates.list],
  [/^\/console\/templates\/new$/, templates.edit],
  [/^\/console\/templates\/(\d+)$/, templates.edit],
  [/^\/console\/dlq\/?$/, dlq.list],
  [/^\/console\/suppressions\/?$/, settings.suppressions],
  [/^\/console\/providers\/?$/, settings.providers],
];

async function start() {
  const session = await loadSession();
  document.getElementById('who').textContent =
    `${session.sub} · ${session.role.replace('_', ' ')}` + (session.tenant_id ? ` · tenant ${session.tenant_id}` : '');
  document.body.dataset.role = session.role;
  document.getElementById('signout').addEventListener('click', () =>
    attempt(async () => {
      await api('POST', '/console/signout');
      location.href = '/console/signin';
    }));
  const path = location.pathname;
  for (const a of document.querySelectorAll('nav a')) {
    if (path.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page');
  }
  for (const [pattern, page] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      try {
        await page(...m.slice(1));
      } catch (e) {
        showError(e);
      }
      document.getElementById('main').focus({ preventScroll: true });
      return;
    }
  }
  showError('There is no such page in the console.');
}

start();
