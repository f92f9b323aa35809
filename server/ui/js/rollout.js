// A task's rollout: canary and shadow versions, the guard, promote and end, live figures.

import { tasksApi } from './api.js';
import { h, replace, fmtNumber } from './dom.js';
import { flash, session, showError } from './session.js';

export function rolloutPanel(task, onChange) {
  const state = h('div', { id: 'rollout-state' });
  const figures = h('tbody');
  const others = (task.versions || []).filter((v) => !v.active).map((v) => v.version);
  const pick = (id) => h('select', { id, 'aria-label': id },
    h('option', { value: '' }, 'none'), others.map((v) => h('option', { value: String(v) }, `v${v}`)));
  const canaryVersion = pick('canary-version');
  const canaryPercent = h('input', { id: 'canary-percent', type: 'number', min: '0.1', max: '100', step: '0.1', value: '10', 'aria-label': 'canary percent' });
  const shadowVersion = pick('shadow-version');
  const shadowPercent = h('input', { id: 'shadow-percent', type: 'number', min: '0.1', max: '100', step: '0.1', value: '100', 'aria-label': 'shadow percent' });
  const guardMetric = h('select', { id: 'guard-metric', 'aria-label': 'guard metric' },
    h('option', { value: '' }, 'no guard'), h('option', { value: 'accuracy' }, 'accuracy'), h('option', { value: 'agreement' }, 'agreement'));
  const guardRows = h('input', { id: 'guard-rows', type: 'number', min: '1', value: '200', 'aria-label': 'guard minimum rows' });
  const guardDrop = h('input', { id: 'guard-drop', type: 'number', min: '0', max: '100', step: '0.1', value: '2', 'aria-label': 'guard maximum drop' });

  async function act(what, call) {
    try {
      await call();
      flash(what);
      await refresh();
      onChange();
    } catch (err) {
      showError(err, what);
    }
  }
  function body() {
    const out = {};
    if (canaryVersion.value) out.canary = { version: Number(canaryVersion.value), percent: Number(canaryPercent.value) };
    if (shadowVersion.value) out.shadow = { version: Number(shadowVersion.value), percent: Number(shadowPercent.value) };
    if (guardMetric.value) out.guard = { metric: guardMetric.value, min_rows: Number(guardRows.value), max_drop: Number(guardDrop.value) };
    return out;
  }
  let filled = false;
  function fill(r) {  // the controls start from the running rollout, once
    if (filled) return;
    filled = true;
    if (r.canary) { canaryVersion.value = String(r.canary.version); canaryPercent.value = String(r.canary.percent); }
    if (r.shadow) { shadowVersion.value = String(r.shadow.version); shadowPercent.value = String(r.shadow.percent); }
    if (r.guard) { guardMetric.value = r.guard.metric; guardRows.value = String(r.guard.min_rows); guardDrop.value = String(r.guard.max_drop); }
  }
  async function refresh() {
    const r = await tasksApi.rollout(task.task);
    fill(r);
    const running = Boolean(r.canary || r.shadow);
    for (const id of ['rollout-promote', 'rollout-end']) {
      const button = panel.querySelector(`#${id}`);
      if (button) button.disabled = !running;
    }
    const parts = [`v${r.active} active`];
    if (r.canary) parts.push(`canary v${r.canary.version} takes ${r.canary.percent}%`);
    if (r.shadow) parts.push(`shadow v${r.shadow.version} mirrors ${r.shadow.percent}%`);
    if (r.guard) parts.push(`guard: ${r.guard.metric} may drop ${r.guard.max_drop} after ${r.guard.min_rows} rows`);
    replace(state, h('p', { class: 'rollout-line', text: parts.join(' · ') }),
      r.ended ? h('p', { class: 'muted', text: `last rollout ended: ${typeof r.ended === 'string' ? r.ended : JSON.stringify(r.ended)}` }) : null);
    state.dataset.canary = r.canary ? String(r.canary.version) : '';
    state.dataset.shadow = r.shadow ? String(r.shadow.version) : '';
    replace(figures, Object.entries(r.figures || {}).map(([v, f]) => h('tr', { dataset: { version: v } },
      h('td', { text: `v${v}` }), h('td', { text: String(f.served) }), h('td', { text: String(f.shadow_rows) }),
      h('td', { text: fmtNumber(f.agreement) }), h('td', { text: String(f.evaluated) }),
      h('td', { text: f.value === null ? '-' : `${f.metric} ${fmtNumber(f.value)}` }))));
  }

  const admin = session.may.admin;
  const panel = h('section', { class: 'card rollout' },
    h('h3', { text: 'Rollout' }),
    state,
    h('table', { class: 'grid compact' },
      h('thead', {}, h('tr', {}, ['version', 'served', 'shadow rows', 'agreement %', 'evaluated', 'evaluation'].map((c) => h('th', { text: c })))),
      figures),
    admin ? h('div', { class: 'rollout-controls' },
      h('div', { class: 'row' }, h('span', { class: 'field-name', text: 'Canary' }), canaryVersion, canaryPercent, '% of requests'),
      h('div', { class: 'row' }, h('span', { class: 'field-name', text: 'Shadow' }), shadowVersion, shadowPercent, '% mirrored'),
      h('div', { class: 'row' }, h('span', { class: 'field-name', text: 'Guard' }), guardMetric, 'after', guardRows, 'rows, end if it drops >', guardDrop, 'points'),
      h('div', { class: 'row' },
        h('button', { type: 'button', id: 'rollout-start', onclick: () => act('rollout started', () => tasksApi.setRollout(task.task, body())) }, 'Start rollout'),
        h('button', { type: 'button', id: 'rollout-promote', onclick: () => act('promoted', () => tasksApi.promote(task.task)) }, 'Promote'),
        h('button', { type: 'button', id: 'rollout-end', class: 'ghost', onclick: () => act('rollout ended', () => tasksApi.endRollout(task.task)) }, 'End rollout')),
      others.length ? null : h('p', { class: 'muted', text: 'Upload a candidate version to roll it out.' }))
      : h('p', { class: 'muted', text: 'Rollouts need the admin token.' }));
  return { panel, refresh };
}
