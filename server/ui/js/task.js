// One task: what it is, its playground, its versions (download, activate, delete), uploads and
// its rollout.

import { tasksApi } from './api.js';
import { h, replace, fmtBytes, fmtDate, fmtMetrics } from './dom.js';
import { playground } from './playground.js';
import { rolloutPanel } from './rollout.js';
import { flash, session, showError } from './session.js';
import { uploadBox } from './upload.js';

const REFRESH_MS = 2000;

export async function taskView(main, name) {
  let timer = null;
  async function draw() {
    clearInterval(timer);
    const task = await tasksApi.get(name);
    const rollout = rolloutPanel(task, draw);
    replace(main,
      h('div', { class: 'title-row' },
        h('a', { href: '#/tasks', class: 'back', text: '← Tasks' }),
        h('h1', { text: task.task }),
        h('span', { class: `kind kind-${task.kind}`, text: task.kind }),
        h('span', { class: 'muted', id: 'active-version', text: `active v${task.active_version}` })),
      describe(task),
      h('div', { class: 'columns' },
        playground(task),
        h('div', {}, rollout.panel)),
      versionsTable(task, draw),
      uploadBox({ fixedTask: task.task, onUploaded: draw }));
    await rollout.refresh().catch((err) => showError(err, 'rollout'));
    timer = setInterval(() => rollout.refresh().catch(() => {}), REFRESH_MS);
  }
  await draw();
  return () => clearInterval(timer);
}

function describe(task) {
  const trainer = task.trainer || {};
  const recipe = ['method', 'epochs', 'learning_rate', 'train_examples', 'train_fraction', 'data', 'hardware']
    .filter((k) => trainer[k] !== undefined).map((k) => `${k} ${trainer[k]}`).join(' · ');
  const facts = [
    ['labels', task.labels.length ? task.labels.join(', ') : '-'],
    ['inputs', task.inputs === 'text_pair' ? 'pairs of texts' : 'text'],
    ['pooling', task.pooling],
    ['max length', `${task.max_length} tokens`],
    ['dev metrics', fmtMetrics(task.metrics)],
    ['trained', recipe || '-'],
    ['size', fmtBytes(task.size_bytes)],
    ['created', fmtDate(task.created_at)],
  ];
  if (task.thresholds) facts.splice(1, 0, ['thresholds', task.thresholds.map((t) => t.toFixed(2)).join(', ')]);
  return h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
}

function versionsTable(task, redraw) {
  const admin = session.may.admin;
  const rows = [...task.versions].reverse().map((v) => {
    const actions = h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'ghost', 'data-action': 'download', onclick: () => download(task.task, v.version) }, 'Download'));
    if (admin && !v.active) {
      actions.append(
        h('button', { type: 'button', 'data-action': 'activate', onclick: () => act(`v${v.version} active`, () => tasksApi.activate(task.task, v.version), redraw) }, 'Activate'),
        confirmButton('Delete', `Delete v${v.version}?`, () => act(`v${v.version} deleted`, () => tasksApi.deleteVersion(task.task, v.version), redraw)));
    }
    return h('tr', { dataset: { version: String(v.version), active: String(v.active) } },
      h('td', {}, `v${v.version} `, v.active ? h('span', { class: 'badge', text: 'active' }) : null),
      h('td', { text: fmtDate(v.created_at) }),
      h('td', { text: fmtMetrics(v.metrics) }),
      h('td', { class: 'mono', title: v.sha256, text: v.sha256.slice(0, 12) }),
      h('td', { text: fmtBytes(v.size_bytes) }),
      actions);
  });
  return h('section', { class: 'card' },
    h('h3', { text: 'Versions' }),
    h('table', { class: 'grid', id: 'versions-table' },
      h('thead', {}, h('tr', {}, ['version', 'created', 'metrics', 'sha256', 'size', ''].map((c) => h('th', { text: c })))),
      h('tbody', {}, rows)));
}

function confirmButton(label, question, action) {
  const button = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, label);
  button.addEventListener('click', () => {
    if (button.dataset.armed) return action();
    button.dataset.armed = '1';
    button.textContent = question;
    setTimeout(() => { delete button.dataset.armed; button.textContent = label; }, 4000);
  });
  return button;
}

async function act(done, call, redraw) {
  try {
    await call();
    flash(done);
    await redraw();
  } catch (err) {
    showError(err, done.split(' ')[0]);
  }
}

async function download(task, version) {
  try {
    const reply = await tasksApi.download(task, version);
    const url = URL.createObjectURL(await reply.blob());
    const link = h('a', { href: url, download: `${task}-v${version}.safetensors` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    showError(err, 'download');
  }
}
