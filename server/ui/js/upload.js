// A drop zone for patch files: drag a .safetensors file in or choose one, then upload it.

import { patchTaskName, tasksApi } from './api.js';
import { h } from './dom.js';
import { flash, session, showError } from './session.js';

// fixedTask: the task page's own task; otherwise the name comes from the file (editable).
export function uploadBox({ fixedTask = null, onUploaded }) {
  let file = null;
  const name = h('input', { type: 'text', placeholder: 'task name (from the file)', 'aria-label': 'task name', pattern: '[a-z0-9_.\\-]{1,64}' });
  const candidate = h('input', { type: 'checkbox', id: 'upload-candidate' });
  const chooser = h('input', { type: 'file', accept: '.safetensors,application/octet-stream', class: 'file-input' });
  const chosen = h('span', { class: 'muted', text: 'no file chosen' });
  const send = h('button', { type: 'button', disabled: true, class: 'upload-send' }, 'Upload');
  const zone = h('div', { class: 'dropzone', tabindex: '0' },
    h('strong', { text: 'Drop a patch file here' }), ' or ', h('label', { class: 'linkish' }, 'choose one', chooser), h('br'), chosen);

  async function pick(f) {
    file = f;
    chosen.textContent = `${f.name} (${(f.size / 1024).toFixed(1)} KB)`;
    if (!fixedTask && !name.value) name.value = await patchTaskName(f);
    send.disabled = false;
  }
  chooser.addEventListener('change', () => chooser.files[0] && pick(chooser.files[0]));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    if (e.dataTransfer.files[0]) pick(e.dataTransfer.files[0]);
  });
  send.addEventListener('click', async () => {
    const task = fixedTask || name.value.trim();
    if (!task) return showError(new Error('name the task (lowercase a-z, 0-9, _ . -)'));
    send.disabled = true;
    try {
      const reply = await tasksApi.upload(task, await file.arrayBuffer(), !candidate.checked);
      const state = reply.active ? 'active' : 'a candidate';
      flash(reply.created ? `${task}: version ${reply.version} stored, ${state}` : `${task}: these bytes are version ${reply.version} already`);
      onUploaded(reply);
    } catch (err) {
      showError(err, `upload to ${task}`);
    } finally {
      send.disabled = false;
    }
  });
  return h('section', { class: 'card upload', hidden: !session.may.admin },
    h('h3', { text: fixedTask ? 'Upload a new version' : 'Upload a patch' }),
    zone,
    h('div', { class: 'row' },
      fixedTask ? null : name,
      h('label', { class: 'check' }, candidate, ' as a candidate (stored, not active: for a rollout)'),
      send));
}
