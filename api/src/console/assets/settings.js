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

const SECRETS = {
  whatsapp: [['access_token', 'Access token'], ['app_secret', 'App secret'], ['verify_token', 'Webhook verify token']],
  sms: [['auth_token', 'Auth token']],
};

function providerForm(tenant, name, current) {
  const input = (id, value, attrs = {}) => h('input', { id: `${name}-${id}`, value: value ?? '', ...attrs });
  const plain = name === 'whatsapp'
    ? [['base_url', 'API base URL', current?.base_url ?? 'https://graph.facebook.com'], ['api_version', 'API version', current?.api_version ?? 'v21.0']]
    : [['base_url', 'API base URL', current?.base_url ?? ''], ['account_sid', 'Account SID', current?.account_sid ?? '']];
  const inputs = Object.fromEntries(plain.map(([k, , v]) => [k, input(k, v, { required: true })]));
  const secrets = Object.fromEntries(SECRETS[name].map(([k]) => [k, input(k, '', { type: 'password', required: true, autocomplete: 'off' })]));
  const sender = current?.senders?.[0];
  const senderId = input('sender', sender?.id, { required: true });
  const rate = input('rate', sender?.rate_limit_per_s, { type: 'number', min: 1 });
  return h('form', {
    id: `${name}-form`,
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        const body = Object.fromEntries(Object.entries({ ...inputs, ...secrets }).map(([k, el]) => [k, el.value]));
        const s = { rate_limit_per_s: rate.value ? Number(rate.value) : null };
        s[name === 'whatsapp' ? 'phone_number_id' : 'from'] = senderId.value;
        body.senders = [s];
        await api('PUT', `/v1/tenants/${tenant}/providers/${name}`, body);
        location.reload();
      });
    },
  },
  h('h3', {}, `Configure ${name === 'whatsapp' ? 'WhatsApp' : 'SMS'}`),
  plain.map(([k, label]) => field(label, inputs[k])),
  SECRETS[name].map(([k, label]) => field(label, secrets[k],
    current?.secrets_set?.includes(k) ? 'Set. Secrets are write-only: enter it again to save.' : 'Not set.')),
  field(name === 'whatsapp' ? 'Phone number id' : 'From number', senderId),
  field('Sender rate limit (messages per second)', rate),
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
    providerForm(tenant, 'whatsapp', byName.whatsapp),
    providerForm(tenant, 'sms', byName.sms),
    h('p', {}, 'Email and webhook providers are configured through the REST API (PUT /v1/tenants/{id}/providers/{name}).'));
}
