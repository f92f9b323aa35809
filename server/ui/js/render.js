// One renderer per task kind: a prediction as the person reading it wants to see it.

import { h } from './dom.js';

export const KINDS = ['classification', 'multi_label', 'regression', 'token_classification', 'embedding'];

function bar(label, score, { chosen = false, threshold = null } = {}) {
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  const track = h('span', { class: 'bar-track' }, fill);
  if (threshold !== null) {
    const mark = h('span', { class: 'bar-threshold', title: `threshold ${threshold}` });
    mark.style.left = `${threshold * 100}%`;
    track.append(mark);
  }
  return h('div', { class: `bar${chosen ? ' chosen' : ''}`, dataset: { label } },
    h('span', { class: 'bar-label', text: label }), track,
    h('span', { class: 'bar-score', text: score.toFixed(3) }));
}

function classification(p) {
  const ranked = Object.entries(p.scores || { [p.label]: p.score }).sort((a, b) => b[1] - a[1]);
  return h('div', { class: 'prediction', dataset: { kind: 'classification', label: p.label } },
    h('div', { class: 'headline' }, h('strong', { text: p.label }), ` ${p.score.toFixed(3)}`),
    ranked.map(([label, score]) => bar(label, score, { chosen: label === p.label })));
}

function multiLabel(p, task) {
  const names = task.labels.length ? task.labels : Object.keys(p.scores);
  const thresholds = task.thresholds || names.map(() => 0.5);
  const chosen = new Set(p.labels);
  return h('div', { class: 'prediction', dataset: { kind: 'multi_label', labels: p.labels.join(',') } },
    h('div', { class: 'headline' }, p.labels.length ? h('strong', { text: p.labels.join(', ') }) : h('em', { text: 'no label above its threshold' })),
    names.map((label, i) => bar(label, p.scores[label], { chosen: chosen.has(label), threshold: thresholds[i] })));
}

function regression(p) {
  return h('div', { class: 'prediction', dataset: { kind: 'regression', value: String(p.value) } },
    h('div', { class: 'big-value', text: p.value.toFixed(4) }));
}

function tokens(p, task, text) {
  const pieces = [];
  let at = 0;
  for (const t of p.tokens) {
    if (t.start > at) pieces.push(text.slice(at, t.start));
    const tagged = t.label !== 'O';
    pieces.push(h('mark', {
      class: tagged ? `entity tag-${tagClass(t.label)}` : 'plain',
      title: `${t.label} ${t.score.toFixed(3)}`,
      dataset: { label: t.label },
    }, text.slice(t.start, t.end), tagged ? h('sub', { text: t.label }) : null));
    at = Math.max(at, t.end);
  }
  if (at < text.length) pieces.push(text.slice(at));
  return h('div', { class: 'prediction', dataset: { kind: 'token_classification' } },
    h('p', { class: 'tagged-text' }, pieces));
}

function tagClass(label) {
  const base = label.replace(/^[BIES]-/, '');
  let hash = 0;
  for (const c of base) hash = (hash * 31 + c.charCodeAt(0)) % 6;
  return hash;
}

function embedding(p) {
  const v = p.embedding;
  return h('div', { class: 'prediction', dataset: { kind: 'embedding', dims: String(v.length) } },
    h('div', { class: 'muted', text: `${v.length} dimensions: [${v.slice(0, 4).map((x) => x.toFixed(3)).join(', ')}, …]` }));
}

export function renderPrediction(task, prediction, text) {
  switch (task.kind) {
    case 'classification': return classification(prediction);
    case 'multi_label': return multiLabel(prediction, task);
    case 'regression': return regression(prediction);
    case 'token_classification': return tokens(prediction, task, text);
    default: return embedding(prediction);
  }
}

export function cosine(a, b) {
  let dot = 0; let na = 0; let nb = 0;
  for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}

// Embeddings: the cosine similarity of every pair of texts, as a shaded matrix.
export function similarityMatrix(texts, predictions) {
  const vectors = predictions.map((p) => p.embedding);
  const short = (t) => (t.length > 28 ? `${t.slice(0, 27)}…` : t);
  const head = h('tr', {}, h('th'), texts.map((t, j) => h('th', { title: t, text: `${j + 1}` })));
  const rows = texts.map((t, i) => h('tr', {},
    h('th', { class: 'row-head', title: t, text: `${i + 1}. ${short(t)}` }),
    vectors.map((_, j) => {
      const s = cosine(vectors[i], vectors[j]);
      const cell = h('td', { class: 'sim', dataset: { i: String(i), j: String(j), value: s.toFixed(6) }, text: s.toFixed(3) });
      cell.style.setProperty('--sim', String(Math.max(0, s)));
      return cell;
    })));
  return h('table', { class: 'matrix', dataset: { kind: 'embedding' } }, h('thead', {}, head), h('tbody', {}, rows));
}
