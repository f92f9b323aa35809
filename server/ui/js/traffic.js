// Live traffic: the last minute's figures, 15 minutes of charts, the busiest tasks.

import { api } from './api.js';
import { h, replace, fmtNumber } from './dom.js';
import { lineChart, sparkline } from './charts.js';
import { showError } from './session.js';

const POLL_MS = 2000;

export async function trafficView(main) {
  const tiles = h('div', { class: 'tiles', id: 'traffic-tiles' });
  const charts = h('div', { class: 'charts', id: 'traffic-charts' });
  const busiest = h('tbody');
  replace(main,
    h('h1', { text: 'Traffic' }),
    h('p', { class: 'muted', text: 'This replica, live: the tiles cover the last minute, the charts 15 minutes in 5-second slots (GET /stats/traffic).' }),
    tiles, charts,
    h('section', { class: 'card' }, h('h3', { text: 'Busiest tasks (last minute)' }),
      h('table', { class: 'grid', id: 'busiest-table' },
        h('thead', {}, h('tr', {}, ['task', 'requests/s', 'p50 ms', 'p95 ms', 'errors', 'requests, 15 min'].map((c) => h('th', { text: c })))),
        busiest)));

  async function poll() {
    const t = await api('/stats/traffic');
    const s = t.summary;
    replace(tiles, [
      ['requests/s', fmtNumber(s.rps, 2)], ['p50 ms', fmtNumber(s.p50_ms)], ['p95 ms', fmtNumber(s.p95_ms)],
      ['errors', String(s.errors)], ['rows / forward', fmtNumber(s.rows_per_forward)],
      ['tasks / forward', fmtNumber(s.tasks_per_forward)], ['queue rows now', String(t.queue_rows)],
    ].map(([k, v]) => h('div', { class: 'tile', dataset: { figure: k } }, h('div', { class: 'tile-value', text: v }), h('div', { class: 'muted', text: k }))));
    const times = t.series.map((p) => p.t);
    const col = (key) => t.series.map((p) => p[key]);
    replace(charts,
      lineChart('Requests', times, [{ name: 'requests/s', values: col('rps'), cls: 's1' }, { name: 'errors / slot', values: col('errors'), cls: 's3' }]),
      lineChart('Latency', times, [{ name: 'p50', values: col('p50_ms'), cls: 's1' }, { name: 'p95', values: col('p95_ms'), cls: 's2' }], 'ms'),
      lineChart('Forwards', times, [{ name: 'rows / forward', values: col('rows_per_forward'), cls: 's1' }, { name: 'tasks / forward', values: col('tasks_per_forward'), cls: 's2' }]),
      lineChart('Queue', times, [{ name: 'deepest queue (rows)', values: col('queue_rows_max'), cls: 's2' }]));
    replace(busiest, t.tasks.length ? t.tasks.map((x) => h('tr', { dataset: { task: x.task } },
      h('td', {}, x.task.startsWith('_') ? x.task : h('a', { href: `#/tasks/${encodeURIComponent(x.task)}`, text: x.task })),
      h('td', { text: fmtNumber(x.rps, 2) }), h('td', { text: fmtNumber(x.p50_ms) }),
      h('td', { text: fmtNumber(x.p95_ms) }), h('td', { text: String(x.errors) }),
      h('td', {}, sparkline(x.requests_series || [])))) : h('tr', {}, h('td', { colspan: '6', class: 'muted', text: 'No requests in the last minute.' })));
  }
  await poll();
  const timer = setInterval(() => poll().catch((err) => showError(err, 'traffic')), POLL_MS);
  return () => clearInterval(timer);
}
