// Tenant settings: suppressed addresses, and the tenant's providers (tenant admins; secrets
// are write-only and shown only as "set").

import { api, attempt, canMutate, confirmAction, currentSession, field, h, isTenantAdmin, render, table } from './lib.js';

export async function suppressions() {
  const page = await api('GET', '/v1/suppressions?limit=1000');
  const address = h('input', { id: 'suppress-address', required: true, maxlength: 320 });
  const rows = page.items.map((a) => [a, canMutate() ? h('button', {
    type: 'button',
    class: 'danger',
    onclick: async () => {
      if (!(await confirmAction(`Allow messages to ${a} again?`, 'Remove'))) return;
      if (await attempt(() => api('DELETE', `/v1/suppressions/${encodeURIComponent(a)}`))) location.reload();
    },
  }, 'Remove') : '']);
  render(
    h('h1', {}, 'Suppressions'),
    h('p', {}, 'Suppressed addresses receive nothing from any campaign of this tenant.'),
    canMutate() ? h('form', {
      id: 'suppress-form',
      onsubmit: (e) => {
        e.preventDefault();
        attempt(async () => {
          await api('POST', '/v1/suppressions', { address: address.value });
          location.reload();
        });
      },
    }, field('Address', address), h('button', { type: 'submit', id: 'suppress' }, 'Suppress')) : null,
    page.items.length ? table('Suppressed addresses', ['Address', ''], rows, { id: 'suppressions' }) : h('p', {}, 'No suppressed address.'));
}

// Each provider's form: its plain fields ([key, label, input attributes, default]), its
// secrets ([key, label, required]) and its sender field (null: the webhook has one sender).
const PROVIDERS = {
  whatsapp: {
    title: 'WhatsApp Cloud API',
    fields: [
      ['base_url', 'API base URL', { required: true }, 'https://graph.facebook.com'],
      ['api_version', 'API version', { required: true }, 'v21.0'],
      ['daily_unique_limit', 'Messaging tier: unique users per 24 h (empty: unlimited)', { type: 'number', min: 1 }],
    ],
    secrets: [['access_token', 'Access token', true], ['app_secret', 'App secret', true], ['verify_token', 'Webhook verify token', true]],
    sender: ['phone_number_id', 'Phone number id'],
  },
  sms: {
    title: 'SMS',
    fields: [
      ['base_url', 'API base URL', { required: true }],
      ['account_sid', 'Account SID', { required: true }],
      ['status_callback_url', 'Herald\'s public URL for status callbacks (optional)', {}],
    ],
    secrets: [['auth_token', 'Auth token', true]],
    sender: ['from', 'From number'],
  },
  email: {
    title: 'Email (SMTP)',
    fields: [
      ['host', 'SMTP host', { required: true }],
      ['port', 'Port (empty: the TLS mode\'s default)', { type: 'number', min: 1, max: 65535 }],
      ['tls', 'Transport security', { options: ['starttls', 'tls', 'none'] }, 'starttls'],
      ['username', 'Username (optional)', {}],
      ['list_unsubscribe', 'List-Unsubscribe target (mailto: or https://)', { required: true }],
    ],
    secrets: [['password', 'Password', false]],
    sender: ['from', 'From address'],
  },
  webhook: {
    title: 'Webhook',
    fields: [['url', 'URL', { required: true }]],
    secrets: [['signing_secret', 'Signing secret', true]],
    sender: null,
  },
};

function providerForm(tenant, name, current) {
  const spec = PROVIDERS[name];
  const id = (k) => `${name}-${k.replaceAll('_', '-')}`;
  const control = (k, attrs, value) => {
    if (attrs.options) {
      return h('select', { id: id(k) }, attrs.options.map((o) => h('option', { value: o, selected: o === value }, o)));
    }
    return h('input', { id: id(k), value: value ?? '', ...attrs });
  };
  const inputs = Object.fromEntries(spec.fields.map(([k, , attrs, fallback]) => [k, control(k, attrs, current?.[k] ?? fallback)]));
  const secrets = Object.fromEntries(spec.secrets.map(([k, , required]) =>
    [k, h('input', { id: id(k), type: 'password', required, autocomplete: 'off' })]));
  const sender = current?.senders?.[0];
  const senderId = spec.sender ? h('input', { id: id('sender'), required: true, value: sender?.id ?? '' }) : null;
  const rate = h('input', { id: id('rate'), type: 'number', min: 1, max: 100000, value: sender?.rate_limit_per_s ?? '' });
  const number = (el) => (el.type === 'number' ? Number(el.value) : el.value);
  return h('form', {
    id: `${name}-form`,
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        // Empty optional fields are left out; the server checks the rest and names what is wrong.
        const body = Object.fromEntries(Object.entries({ ...inputs, ...secrets })
          .filter(([, el]) => el.value !== '').map(([k, el]) => [k, number(el)]));
        const limit = rate.value ? Number(rate.value) : null;
        if (spec.sender) body.senders = [{ [spec.sender[0]]: senderId.value, rate_limit_per_s: limit }];
        else if (limit) body.rate_limit_per_s = limit;
        await api('PUT', `/v1/tenants/${tenant}/providers/${name}`, body);
        location.reload();
      });
    },
  },
  h('h3', {}, `Configure ${spec.title}`),
  spec.fields.map(([k, label]) => field(label, inputs[k])),
  spec.secrets.map(([k, label]) => field(label, secrets[k],
    current?.secrets_set?.includes(k) ? 'Set. Secrets are write-only: saving replaces the whole configuration, so enter it again.' : 'Not set.')),
  spec.sender ? field(spec.sender[1], senderId) : null,
  field('Sender rate limit (messages per second, empty: none)', rate),
  h('button', { type: 'submit', id: `save-${name}` }, 'Save'));
}

export async function providers() {
  const tenant = currentSession().tenant_id;
  if (!isTenantAdmin() || !tenant) {
    render(h('h1', {}, 'Providers'), h('p', {}, 'Only tenant admins see and change provider settings.'));
    return;
  }
  const { items } = await api('GET', `/v1/tenants/${tenant}/providers`);
  const byName = Object.fromEntries(items.map((p) => [p.name, p]));
  render(
    h('h1', {}, 'Providers'),
    items.length
      ? table('Configured providers', ['Provider', 'Senders (rate per second)', 'Secrets'], items.map((p) => [
        p.name,
        p.senders.map((s) => `${s.id} (${s.rate_limit_per_s ?? 'no limit'}/s, burst ${s.burst})`).join(', '),
        p.secrets_set.map((s) => `${s}: set`).join(', ') || 'none']), { id: 'providers' })
      : h('p', {}, 'No provider configured: campaigns use the simulator where the server runs one.'),
    Object.keys(PROVIDERS).map((name) => providerForm(tenant, name, byName[name])));
}
