// The playground of one task: inputs in, the kind's rendering out, on any version.

import { tasksApi } from './api.js';
import { h, replace } from './dom.js';
import { renderPrediction, similarityMatrix } from './render.js';
import { session, showError } from './session.js';

const EXAMPLES = {
  embedding: 'A man is playing a guitar.\nSomeone plays an instrument.\nThe stock market fell today.',
  token_classification: 'Ada Lovelace worked with Charles Babbage in London.',
  pair: ['The company posted record profits this year.', 'This year the firm reported its highest earnings ever.'],
  text: 'What a wonderful, funny film.',
};

export function playground(task) {
  const pairs = task.inputs === 'text_pair';
  const many = task.kind === 'embedding';
  const text = h('textarea', { id: 'play-text', rows: many ? '4' : '2', 'aria-label': pairs ? 'text' : 'input' });
  text.value = pairs ? EXAMPLES.pair[0] : EXAMPLES[task.kind] || EXAMPLES.text;
  const pair = pairs ? h('textarea', { id: 'play-pair', rows: '2', 'aria-label': 'text pair' }) : null;
  if (pair) pair.value = EXAMPLES.pair[1];
  const version = h('select', { id: 'play-version', 'aria-label': 'version' },
    h('option', { value: '' }, `active (v${task.active_version})`),
    (task.versions || []).map((v) => h('option', { value: String(v.version) }, `v${v.version}${v.active ? ' (active)' : ''}`)));
  const out = h('div', { id: 'play-output', class: 'play-output' });
  const run = h('button', { type: 'submit', id: 'play-run', disabled: !session.may.predict }, 'Predict');

  async function predict(event) {
    event.preventDefault();
    const texts = many ? text.value.split('\n').map((t) => t.trim()).filter(Boolean) : [text.value];
    const inputs = pairs ? [[text.value, pair.value]] : texts;
    run.disabled = true;
    try {
      const reply = await tasksApi.predict(task.task, inputs, version.value ? Number(version.value) : undefined);
      out.dataset.version = String(reply.version);
      replace(out,
        h('div', { class: 'muted', text: `version ${reply.version}` }),
        many ? similarityMatrix(texts, reply.predictions) : renderPrediction(task, reply.predictions[0], text.value),
        h('details', {}, h('summary', { text: 'JSON' }), h('pre', { class: 'json', text: JSON.stringify(reply, null, 2) })));
    } catch (err) {
      showError(err, 'predict');
    } finally {
      run.disabled = !session.may.predict;
    }
  }
  const hint = many ? 'One text per line: the matrix shows the cosine similarity of every pair.'
    : pairs ? 'This task reads a pair of texts.' : 'One text.';
  return h('section', { class: 'card playground' },
    h('h3', { text: 'Playground' }),
    h('form', { onsubmit: predict },
      h('p', { class: 'muted', text: hint }),
      text, pair,
      h('div', { class: 'row' }, version, run)),
    out);
}
