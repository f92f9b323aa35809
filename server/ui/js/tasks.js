// The task list: every task with its kind, version, labels, metrics; filtered and paged by the API.

import { tasksApi } from './api.js';
import { h, replace, fmtBytes, fmtDate, fmtMetrics } from './dom.js';
import { KINDS } from './render.js';
import { uploadBox } from './upload.js';

const PAGE = 50;

export async function tasksView(main) {
  const prefix = h('input', { type: 'search', placeholder: 'name starts with…', 'aria-label': 'filter by name', id: 'filter-name' });
  const kind = h('select', { 'aria-label': 'filter by kind', id: 'filter-kind' },
    h('option', { value: '' }, 'every kind'), KINDS.map((k) => h('option', { value: k }, k)));
  const body = h('tbody');
  const status = h('span', { class: 'muted', id: 'tasks-status' });
  const previous = h('button', { type: 'button', class: 'ghost', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', class: 'ghost', disabled: true }, 'Next →');
  const cursors = [''];

  async function load() {
    const after = cursors[cursors.length - 1];
    const page = await tasksApi.page({ limit: PAGE, after, prefix: prefix.value.trim(), kind: kind.value });
    replace(body, page.tasks.map(row));
    if (!page.tasks.length) body.append(h('tr', {}, h('td', { colspan: '8', class: 'muted', text: 'No task matches.' })));
    const first = (cursors.length - 1) * PAGE;
    status.textContent = page.total ? `${first + 1}–${first + page.tasks.length} of ${page.total}` : '0 tasks';
    previous.disabled = cursors.length === 1;
    next.disabled = !page.next;
    next.onclick = () => { cursors.push(page.next); load(); };
  }
  previous.addEventListener('click', () => { cursors.pop(); load(); });
  let typing;
  prefix.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { cursors.length = 1; load(); }, 200);
  });
  kind.addEventListener('change', () => { cursors.length = 1; load(); });

  replace(main,
    h('div', { class: 'title-row' }, h('h1', { text: 'Tasks' }), h('span', { class: 'spacer' }), prefix, kind),
    h('table', { class: 'grid', id: 'tasks-table' },
      h('thead', {}, h('tr', {}, ['task', 'kind', 'version', 'labels', 'inputs', 'metrics', 'size', 'created'].map((c) => h('th', { text: c })))),
      body),
    h('div', { class: 'row pager' }, previous, status, next),
    uploadBox({ onUploaded: (reply) => { location.hash = `#/tasks/${reply.task}`; } }));
  await load();
}

function row(t) {
  const labels = t.labels.length > 4 ? `${t.labels.slice(0, 4).join(', ')} +${t.labels.length - 4}` : t.labels.join(', ');
  return h('tr', { dataset: { task: t.task } },
    h('td', {}, h('a', { href: `#/tasks/${encodeURIComponent(t.task)}`, text: t.task })),
    h('td', {}, h('span', { class: `kind kind-${t.kind}`, text: t.kind })),
    h('td', { text: `v${t.active_version}` }),
    h('td', { text: labels || '-', title: t.labels.join(', ') }),
    h('td', { text: t.inputs === 'text_pair' ? 'text pairs' : 'text' }),
    h('td', { text: fmtMetrics(t.metrics) }),
    h('td', { text: fmtBytes(t.size_bytes) }),
    h('td', { text: fmtDate(t.created_at) }));
}
