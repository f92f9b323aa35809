// The server's API as the console uses it: the token from sessionStorage as a Bearer header,
// error bodies of every dialect turned into one ApiError.

const TOKEN_KEY = 'bitpatch.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (value) => (value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY)),
};

export async function api(path, { method = 'GET', json, body, headers = {}, raw = false, tokenValue } = {}) {
  const sent = { ...headers };
  const bearer = tokenValue === undefined ? token.get() : tokenValue;
  if (bearer) sent.Authorization = `Bearer ${bearer}`;
  if (json !== undefined) {
    sent['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  const reply = await fetch(path, { method, headers: sent, body });
  if (!reply.ok) throw await errorOf(reply);
  if (raw) return reply;
  const type = reply.headers.get('content-type') || '';
  return type.includes('json') ? reply.json() : reply.text();
}

async function errorOf(reply) {
  let code = 'http_error';
  let message = reply.statusText;
  try {
    const error = (await reply.json()).error;
    if (typeof error === 'string') message = error;
    else if (error) ({ code = code, message = message } = error);
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(reply.status, code, message);
}

export const tasksApi = {
  page: (params) => api(`/tasks?${new URLSearchParams(params)}`),
  get: (task) => api(`/tasks/${encodeURIComponent(task)}`),
  predict: (task, inputs, version) => api(`/tasks/${encodeURIComponent(task)}/predict`, {
    method: 'POST', json: version ? { inputs, version } : { inputs },
  }),
  fanout: (tasks, inputs) => api('/predict', { method: 'POST', json: { tasks, inputs } }),
  upload: (task, bytes, activate) => api(
    `/tasks/${encodeURIComponent(task)}/patch${activate ? '' : '?activate=false'}`,
    { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } },
  ),
  activate: (task, v) => api(`/tasks/${encodeURIComponent(task)}/versions/${v}/activate`, { method: 'POST' }),
  deleteVersion: (task, v) => api(`/tasks/${encodeURIComponent(task)}/versions/${v}`, { method: 'DELETE' }),
  download: (task, v) => api(`/tasks/${encodeURIComponent(task)}/versions/${v}/patch`, { raw: true }),
  rollout: (task) => api(`/tasks/${encodeURIComponent(task)}/rollout`),
  setRollout: (task, body) => api(`/tasks/${encodeURIComponent(task)}/rollout`, { method: 'PUT', json: body }),
  endRollout: (task) => api(`/tasks/${encodeURIComponent(task)}/rollout`, { method: 'DELETE' }),
  promote: (task) => api(`/tasks/${encodeURIComponent(task)}/rollout/promote`, { method: 'POST' }),
};

// The task name a patch file names for itself: safetensors is an 8-byte little-endian header
// length, then a JSON header whose __metadata__ holds bitpatch's fields.
export async function patchTaskName(file) {
  const head = await file.slice(0, 8).arrayBuffer();
  if (head.byteLength < 8) return '';
  const length = Number(new DataView(head).getBigUint64(0, true));
  if (length > 16 * 1024 * 1024 || length > file.size) return '';
  try {
    const header = JSON.parse(await file.slice(8, 8 + length).text());
    return (header.__metadata__ && header.__metadata__.task) || '';
  } catch {
    return '';
  }
}
