// Fan-out: one text through several tasks in one request, the answers side by side.

import { tasksApi } from './api.js';
import { h, replace } from './dom.js';
import { renderPrediction } from './render.js';
import { session, showError } from './session.js';

export async function fanoutView(main) {
  const byName = {};
  const chosen = new Set();
  const choices = h('div', { class: 'choices' });
  const more = h('p', { class: 'muted' });
  const filter = h('input', { type: 'search', id: 'fanout-filter', placeholder: 'tasks starting with…', 'aria-label': 'filter tasks' });

  async function loadChoices(first) {
    const page = await tasksApi.page({ limit: 200, prefix: filter.value.trim() });
    for (const t of page.tasks) byName[t.task] = t;
    if (first) page.tasks.filter((t) => t.inputs !== 'text_pair').slice(0, 4).forEach((t) => chosen.add(t.task));
    replace(choices, page.tasks.map((t) => h('label', { class: 'check task-choice' },
      h('input', {
        type: 'checkbox', value: t.task, checked: chosen.has(t.task),
        onchange: (e) => (e.target.checked ? chosen.add(t.task) : chosen.delete(t.task)),
      }), ` ${t.task} `, h('span', { class: `kind kind-${t.kind}`, text: t.kind }))));
    more.textContent = page.next ? `The first ${page.tasks.length} of ${page.total} tasks: filter by name to find others.` : '';
  }
  let typing;
  filter.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => loadChoices(false).catch(showError), 200); });
  const text = h('textarea', { id: 'fanout-text', rows: '2', 'aria-label': 'text' });
  text.value = 'I loved this movie, the acting was wonderful.';
  const pair = h('textarea', { id: 'fanout-pair', rows: '2', placeholder: 'second text (only for pair tasks)', 'aria-label': 'text pair' });
  const out = h('div', { class: 'fanout-results', id: 'fanout-output' });

  async function run(event) {
    event.preventDefault();
    const tasks = [...chosen].sort();
    if (!tasks.length) return showError(new Error('choose at least one task'));
    const input = pair.value.trim() ? [text.value, pair.value] : text.value;
    try {
      const reply = await tasksApi.fanout(tasks, [input]);
      replace(out, tasks.map((name) => {
        const result = reply.results[name];
        return h('div', { class: 'card result', dataset: { task: name } },
          h('h3', {}, name, ' ', h('span', { class: 'muted', text: `v${result.version}` })),
          renderPrediction(byName[name], result.predictions[0], text.value));
      }));
    } catch (err) {
      showError(err, 'fan-out');
    }
  }
  replace(main,
    h('h1', { text: 'Fan-out' }),
    h('p', { class: 'muted', text: 'One input through every chosen task in one request (POST /predict): the rows share one forward.' }),
    h('form', { class: 'card', onsubmit: run },
      h('div', { class: 'row' }, filter, h('span', { class: 'muted', text: 'chosen tasks stay chosen while you filter' })),
      choices, more,
      text, pair,
      h('div', { class: 'row' }, h('button', { type: 'submit', id: 'fanout-run', disabled: !session.may.predict }, 'Predict'))),
    out);
  await loadChoices(true);
}
