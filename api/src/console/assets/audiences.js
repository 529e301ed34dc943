// Audience pages: the list with a create form, and one audience with its CSV upload (drag and
// drop or a file picker, with upload progress) and the import report: imported, rejected,
// duplicates, and each rejected row with its line number and reason.

import { api, attempt, canMutate, currentSession, field, h, number, render, table, when, words } from './lib.js';

export async function list() {
  const { items } = await api('GET', '/v1/audiences');
  const name = h('input', { id: 'audience-name', required: true, maxlength: 200 });
  const create = h('form', {
    id: 'audience-form',
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        const a = await api('POST', '/v1/audiences', { name: name.value });
        location.href = `/console/audiences/${a.id}`;
      });
    },
  }, h('h2', {}, 'New audience'), field('Name', name), h('button', { type: 'submit', id: 'create-audience' }, 'Create'));
  render(
    h('h1', {}, 'Audiences'),
    items.length
      ? table('Audiences', ['Name', 'Recipients', 'Created'], items.map((a) => [
        h('a', { href: `/console/audiences/${a.id}` }, a.name), number(a.recipient_count), when(a.created_ms)]), { id: 'audiences' })
      : h('p', {}, 'No audiences yet.'),
    canMutate() ? create : null);
}

/** Uploads a CSV with progress; resolves to the import report. */
function upload(id, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1/audiences/${id}/import`);
    xhr.setRequestHeader('Content-Type', 'text/csv');
    xhr.setRequestHeader('X-CSRF-Token', currentSession().csrf);
    xhr.upload.addEventListener('progress', (e) => e.lengthComputable && onProgress(e.loaded, e.total));
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error(words(xhr.status, body && body.error)));
    });
    xhr.addEventListener('error', () => reject(new Error('The upload was interrupted. Check your connection and try again.')));
    xhr.send(file);
  });
}

function report(r) {
  return h('section', { id: 'import-report', 'aria-live': 'polite' },
    h('h2', {}, 'Import report'),
    h('dl', { class: 'counts' },
      h('dt', {}, 'Imported'), h('dd', { id: 'imported' }, number(r.imported)),
      h('dt', {}, 'Rejected'), h('dd', { id: 'rejected' }, number(r.rejected)),
      h('dt', {}, 'Duplicates'), h('dd', { id: 'duplicates' }, number(r.duplicates))),
    r.errors.length
      ? table('Rejected rows', ['Line', 'Reason'], r.errors.map((e) => [String(e.line), e.reason]), { id: 'rejected-rows' })
      : h('p', {}, 'No row was rejected.'));
}

export async function show(id) {
  const audience = await api('GET', `/v1/audiences/${id}`);
  const count = h('span', { id: 'recipient-count' }, number(audience.recipient_count));
  const progress = h('progress', { id: 'upload-progress', max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const status = h('p', { id: 'upload-status', 'aria-live': 'polite' });
  const result = h('div', {});
  const input = h('input', { type: 'file', id: 'csv-file', accept: '.csv,text/csv' });
  const send = async (file) => {
    if (!file) return;
    progress.hidden = false;
    status.textContent = `Uploading ${file.name}…`;
    await attempt(async () => {
      const r = await upload(id, file, (loaded, total) => {
        progress.max = total;
        progress.value = loaded;
        status.textContent = `Uploading ${file.name}: ${Math.round((100 * loaded) / total)}%`;
      });
      status.textContent = `${file.name} imported.`;
      result.replaceChildren(report(r));
      const fresh = await api('GET', `/v1/audiences/${id}`);
      count.textContent = number(fresh.recipient_count);
    });
    progress.hidden = true;
  };
  input.addEventListener('change', () => send(input.files[0]));
  const drop = h('div', { class: 'drop', id: 'drop-zone' },
    h('p', {}, 'Drop a CSV file here, or choose one. It needs an ', h('code', {}, 'address'), ' column; other columns become template variables.'),
    field('CSV file', input));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    send(e.dataTransfer.files[0]);
  });
  render(
    h('p', {}, h('a', { href: '/console/audiences' }, '← Audiences')),
    h('h1', {}, audience.name),
    h('p', {}, 'Recipients: ', count, ` · created ${when(audience.created_ms)}`),
    canMutate() ? [drop, progress, status, result] : null);
}
