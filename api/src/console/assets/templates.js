// Template pages: the list, and the editor with a live preview rendered by the server for a
// sample recipient; the server's compile errors show as you type.

import { api, attempt, canMutate, field, h, idempotencyKey, render, table } from './lib.js';

export async function list() {
  const { items } = await api('GET', '/v1/templates');
  render(
    h('div', { class: 'title' }, h('h1', {}, 'Templates'),
      canMutate() ? h('a', { class: 'button', href: '/console/templates/new', id: 'new-template' }, 'New template') : null),
    items.length
      ? table('Templates', ['Name', 'Channel'], items.map((t) => [h('a', { href: `/console/templates/${t.id}` }, t.name), t.channel]), { id: 'templates' })
      : h('p', {}, 'No templates yet.'));
}

/** `key=value` lines to an object (blank lines ignored). */
function attributes(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

export async function edit(id) {
  const existing = id ? await api('GET', `/v1/templates/${id}`) : null;
  const mutable = canMutate();
  const name = h('input', { id: 'template-name', required: true, maxlength: 200, value: existing?.name ?? '' });
  const channel = h('select', { id: 'template-channel' },
    ['sms', 'email', 'whatsapp'].map((c) => h('option', { value: c, selected: existing?.channel === c }, c)));
  const body = h('textarea', { id: 'template-body', rows: 6 });
  body.value = existing?.body ?? '';
  const subject = h('input', { id: 'template-subject', value: existing?.subject ?? '' });
  const html = h('textarea', { id: 'template-html', rows: 6 });
  html.value = existing?.html ?? '';
  const waName = h('input', { id: 'template-wa-name', value: existing?.whatsapp?.template_name ?? '' });
  const waLanguage = h('input', { id: 'template-wa-language', value: existing?.whatsapp?.language ?? 'en_US' });
  const waParams = h('textarea', { id: 'template-wa-params', rows: 4 });
  const bodyComponent = existing?.whatsapp?.components?.find((c) => c.type === 'body');
  waParams.value = bodyComponent ? bodyComponent.parameters.map((p) => p.text).join('\n') : '';
  const address = h('input', { id: 'sample-address', value: '+14155550123' });
  const sample = h('textarea', { id: 'sample-attributes', rows: 3 });
  sample.value = 'name=Ada';
  const preview = h('div', { id: 'preview', class: 'preview', 'aria-live': 'polite' });
  const problem = h('p', { id: 'template-error', class: 'error', role: 'status' });

  // Built on each switch: one input (the text body) belongs to two channels' groups.
  const groups = {
    sms: () => [field('Text', body)],
    email: () => [field('Subject', subject), field('Text', body), field('HTML (optional)', html)],
    whatsapp: () => [field('Approved template name', waName), field('Language', waLanguage),
      field('Body parameters (one per line)', waParams, 'Each may use {{ variable }}.')],
  };
  const fields = h('div', {});
  const showFields = () => fields.replaceChildren(...groups[channel.value]());

  function template() {
    const t = { name: name.value.trim() || 'preview', channel: channel.value };
    if (channel.value === 'sms') t.body = body.value;
    if (channel.value === 'email') {
      t.subject = subject.value;
      t.body = body.value;
      if (html.value) t.html = html.value;
    }
    if (channel.value === 'whatsapp') {
      const parameters = waParams.value.split('\n').filter((l) => l.trim()).map((text) => ({ type: 'text', text }));
      t.whatsapp = { template_name: waName.value, language: waLanguage.value, components: parameters.length ? [{ type: 'body', parameters }] : [] };
    }
    return t;
  }

  let pending = null;
  let asked = 0;
  async function refresh() {
    const mine = ++asked;
    try {
      const p = await api('POST', '/v1/templates/preview', { template: template(), address: address.value, attributes: attributes(sample.value) });
      if (mine !== asked) return;
      problem.textContent = '';
      const parts = [];
      if (p.subject !== null) parts.push(h('p', {}, h('strong', {}, 'Subject: '), p.subject));
      if (p.text !== null) parts.push(h('pre', { id: 'preview-text' }, p.text));
      if (p.html !== null) parts.push(h('p', {}, h('strong', {}, 'HTML: ')), h('pre', {}, p.html));
      if (p.whatsapp) parts.push(h('p', {}, `${p.whatsapp.template_name} (${p.whatsapp.language})`),
        ...p.whatsapp.components.map((c) => h('pre', { id: 'preview-text' }, c.parameters.map((x) => x.text).join('\n'))));
      preview.replaceChildren(...parts);
    } catch (e) {
      if (mine !== asked) return;
      problem.textContent = e.message;
      preview.replaceChildren(h('p', { class: 'muted' }, 'No preview until the template compiles.'));
    }
  }
  const soon = () => {
    clearTimeout(pending);
    pending = setTimeout(refresh, 250);
  };

  const key = idempotencyKey();
  const save = h('button', { type: 'submit', id: 'save-template' }, existing ? 'Save' : 'Create');
  const form = h('form', {
    id: 'template-form',
    oninput: soon,
    onchange: soon,
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        const t = template();
        t.name = name.value;
        const saved = existing
          ? await api('PUT', `/v1/templates/${existing.id}`, t)
          : await api('POST', '/v1/templates', t, { idempotencyKey: key });
        location.href = `/console/templates/${saved.id}`;
      });
    },
  }, field('Name', name), field('Channel', channel), fields,
  h('fieldset', {}, h('legend', {}, 'Sample recipient for the preview'), field('Address', address),
    field('Variables (name=value, one per line)', sample)),
  problem, mutable ? save : null);
  channel.addEventListener('change', showFields);
  if (existing) channel.disabled = true;
  showFields();
  render(h('p', {}, h('a', { href: '/console/templates' }, '← Templates')),
    h('h1', {}, existing ? existing.name : 'New template'),
    h('div', { class: 'split' }, form, h('section', {}, h('h2', {}, 'Preview'), preview)));
  if (mutable) await refresh();
}
