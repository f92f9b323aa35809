// Small SVG line charts over the last 15 minutes (no chart library: a few lines of SVG).

import { h, svg } from './dom.js';

const W = 460;
const H = 150;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };

// lines: [{name, values: [number|null per slot], cls}]; times: slot start (seconds) per value.
export function lineChart(title, times, lines, unit = '') {
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && v !== undefined);
  const highest = Math.max(0, ...all);
  const top = highest > 0 ? niceMax(highest) : 1;
  const span = Math.max(1, times.length - 1);
  const x = (i) => PAD.left + (i / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const grid = [0, 0.5, 1].map((f) => [
    svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f), class: 'grid-line' }),
    svg('text', { x: PAD.left - 6, y: y(top * f) + 4, class: 'axis', 'text-anchor': 'end', text: fmt(top * f) }),
  ]);
  const paths = lines.map((line) => {
    let d = '';
    const known = (v) => v !== null && v !== undefined;
    line.values.forEach((v, i) => {
      if (!known(v)) return;
      const joined = i > 0 && known(line.values[i - 1]);
      d += `${joined ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      if (!joined && !known(line.values[i + 1])) d += 'h0.01';  // a lone point shows as a dot
    });
    return svg('path', { d: d || 'M0,0', class: `series ${line.cls || ''}` });
  });
  const anchors = ['start', 'middle', 'end'];
  const ticks = times.length ? [0, Math.floor(span / 2), span].map((i, k) => svg('text', {
    x: x(i), y: H - 6, class: 'axis', 'text-anchor': anchors[k], text: clock(times[i] ?? times[times.length - 1]),
  })) : [];
  const legend = h('div', { class: 'legend' }, lines.map((l) => h('span', { class: `key ${l.cls || ''}`, text: l.name })));
  return h('figure', { class: 'chart', dataset: { chart: title } },
    h('figcaption', {}, title, unit ? h('span', { class: 'muted', text: ` (${unit})` }) : null),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title }, grid, paths, ticks),
    legend);
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2);
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// A tiny line of one series (e.g. a task's requests per slot), no axes.
export function sparkline(values, width = 140, height = 26) {
  const top = Math.max(1, ...values);
  const step = width / Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
  return svg('svg', { class: 'sparkline', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'requests per 5 s' },
    svg('polyline', { points: points.join(' '), class: 'series s1' }));
}
