// Fan-out: one text through several tasks in one request, the answers side by side.

import { tasksApi } from './api.js';
import { h, replace } from './dom.js';
import { renderPrediction } from './render.js';
import { session, showError } from './session.js';

export async function fanoutView(main) {
  const page = await tasksApi.page({ limit: 200 });
  const byName = Object.fromEntries(page.tasks.map((t) => [t.task, t]));
  const boxes = page.tasks.map((t, i) => h('label', { class: 'check task-choice' },
    h('input', { type: 'checkbox', value: t.task, checked: i < 4 && t.inputs !== 'text_pair' }), ` ${t.task} `,
    h('span', { class: `kind kind-${t.kind}`, text: t.kind })));
  const text = h('textarea', { id: 'fanout-text', rows: '2', 'aria-label': 'text' });
  text.value = 'I loved this movie, the acting was wonderful.';
  const pair = h('textarea', { id: 'fanout-pair', rows: '2', placeholder: 'second text (only for pair tasks)', 'aria-label': 'text pair' });
  const out = h('div', { class: 'fanout-results', id: 'fanout-output' });

  async function run(event) {
    event.preventDefault();
    const tasks = boxes.map((b) => b.querySelector('input')).filter((c) => c.checked).map((c) => c.value);
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
      h('div', { class: 'choices' }, boxes),
      page.next ? h('p', { class: 'muted', text: `The first ${page.tasks.length} tasks of ${page.total}.` }) : null,
      text, pair,
      h('div', { class: 'row' }, h('button', { type: 'submit', id: 'fanout-run', disabled: !session.may.predict }, 'Predict'))),
    out);
}
