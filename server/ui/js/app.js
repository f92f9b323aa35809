// The console's shell: hash routes to views, the token prompt, the caller's grants.

import { refreshSession, showError, clearError, wireTokenDialog, openTokenDialog, session } from './session.js';
import { tasksView } from './tasks.js';
import { taskView } from './task.js';
import { fanoutView } from './fanout.js';
import { trafficView } from './traffic.js';
import { replace, h } from './dom.js';

let stopView = null;

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, '')) || 'tasks';
  const [section, ...rest] = hash.split('/');
  if (section === 'tasks' && rest.length) return { nav: 'tasks', view: taskView, arg: rest.join('/') };
  if (section === 'fanout') return { nav: 'fanout', view: fanoutView };
  if (section === 'traffic') return { nav: 'traffic', view: trafficView };
  return { nav: 'tasks', view: tasksView };
}

async function render() {
  if (stopView) stopView();
  stopView = null;
  clearError();
  const { nav, view, arg } = route();
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('current', link.dataset.nav === nav);
  }
  const main = document.getElementById('view');
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  document.body.dataset.view = 'loading';
  try {
    stopView = (await view(main, arg)) || null;
    document.body.dataset.view = 'ready';
    performance.mark('bitpatch:view-ready');
  } catch (err) {
    replace(main, h('p', { class: 'muted' }, 'This view could not load.'));
    document.body.dataset.view = 'failed';
    showError(err);
  }
}

async function start() {
  wireTokenDialog(async () => {
    await refreshSession().catch(showError);
    render();
  });
  try {
    await refreshSession();
  } catch (err) {
    showError(err, 'token');
  }
  if (!session.may.read && session.tokensSet.admin !== undefined && (session.tokensSet.admin || session.tokensSet.predict)) {
    openTokenDialog();
  }
  window.addEventListener('hashchange', render);
  render();
}

start();
