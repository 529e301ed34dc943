// Campaign pages: the live list, a campaign's live page (progress, counts, chart, rate, and
// pause / resume / cancel with a confirmation), and the form that creates and sends one.
// Live figures come from the API's Server-Sent Events; nothing here reloads the page.

import { api, attempt, canMutate, currentSession, confirmAction, duration, field, h, idempotencyKey, number, render, table, when } from './lib.js';
import { addSample, lineChart } from './chart.js';

const FINISHED = ['completed', 'cancelled'];

function rateText(p) {
  return p ? `${Number(p.rate_per_s).toFixed(1)}/s` : '–';
}

function etaText(p) {
  if (!p) return '–';
  if (FINISHED.includes(p.status)) return 'done';
  return p.eta_s === null ? 'unknown' : duration(p.eta_s);
}

function badge(status, id) {
  return h('span', { class: `badge ${status}`, id }, status.replaceAll('_', ' '));
}

/** The campaign list, its counters, rate and ETA updated live from the tenant's event stream. */
export async function list() {
  const { items } = await api('GET', '/v1/campaigns');
  items.sort((a, b) => b.id - a.id);
  const cells = new Map();
  const rows = items.map((c) => {
    const row = {
      status: h('td', {}, badge(c.status, `status-${c.id}`)),
      sent: h('td', { class: 'num', id: `sent-${c.id}` }, '–'),
      delivered: h('td', { class: 'num' }, '–'),
      failed: h('td', { class: 'num' }, '–'),
      total: h('td', { class: 'num' }, '–'),
      rate: h('td', { class: 'num' }, '–'),
      eta: h('td', {}, '–'),
    };
    cells.set(c.id, row);
    return h('tr', { id: `campaign-${c.id}` },
      h('td', {}, h('a', { href: `/console/campaigns/${c.id}` }, c.name)),
      row.status, row.total, row.sent, row.delivered, row.failed, row.rate, row.eta,
      h('td', {}, when(c.created_ms)));
  });
  render(
    h('div', { class: 'title' }, h('h1', {}, 'Campaigns'),
      canMutate() ? h('a', { class: 'button', href: '/console/campaigns/new', id: 'new-campaign' }, 'New campaign') : null),
    items.length
      ? table('Campaigns, newest first; figures update live', ['Name', 'Status', 'Total', 'Sent', 'Delivered', 'Failed', 'Rate', 'Time left', 'Created'], rows, { id: 'campaigns' })
      : h('p', {}, 'No campaigns yet.'));
  if (!items.length) return;
  const events = new EventSource('/v1/campaigns/events');
  events.addEventListener('progress', (e) => {
    const p = JSON.parse(e.data);
    const row = cells.get(p.id);
    if (!row) return;
    row.status.replaceChildren(badge(p.status, `status-${p.id}`));
    row.total.textContent = number(p.total);
    row.sent.textContent = number(p.sent + p.delivered + p.read);
    row.delivered.textContent = number(p.delivered + p.read);
    row.failed.textContent = number(p.failed + p.dead_lettered);
    row.rate.textContent = rateText(p);
    row.eta.textContent = etaText(p);
  });
  window.addEventListener('pagehide', () => events.close());
}

const SERIES = [
  ['sent', 'Sent', (p) => p.sent + p.delivered + p.read],
  ['delivered', 'Delivered', (p) => p.delivered + p.read],
  ['read', 'Read', (p) => p.read],
  ['failed', 'Failed', (p) => p.failed + p.dead_lettered],
];

/** One campaign, live: progress bar, counts per status, chart, rate against its limits, actions. */
export async function show(id) {
  const campaign = await api('GET', `/v1/campaigns/${id}`);
  const samples = [];
  const bar = h('progress', { id: 'progress', max: 1, value: 0, 'aria-labelledby': 'progress-label' });
  const label = h('span', { id: 'progress-label' }, 'Waiting for figures…');
  const status = h('span', { id: 'status' }, badge(campaign.status));
  const counts = h('dl', { class: 'counts', id: 'counts' });
  const rate = h('p', { id: 'rate' });
  const chart = h('div', { class: 'chart', id: 'chart' });
  const actions = h('div', { class: 'actions', id: 'actions' });
  const senders = h('div', { id: 'senders' });
  const limits = [];
  if (campaign.rate_limit_per_s) limits.push(`campaign limit ${campaign.rate_limit_per_s}/s`);
  let last = null;

  const act = (name, question, confirmLabel) =>
    h('button', {
      type: 'button',
      id: `${name}-campaign`,
      class: name === 'cancel' ? 'danger' : '',
      onclick: async () => {
        if (!(await confirmAction(question, confirmLabel))) return;
        await attempt(async () => {
          const c = await api('POST', `/v1/campaigns/${id}/${name}`, undefined, { idempotencyKey: idempotencyKey() });
          draw({ ...(last || {}), status: c.status });
        });
      },
    }, confirmLabel);

  let drawn = null;
  function drawActions(state) {
    // Rebuilt only when the state changes: live updates must not pull a button from under
    // a click (or take keyboard focus away).
    if (state === drawn) return;
    drawn = state;
    if (!canMutate()) return actions.replaceChildren();
    const buttons = [];
    if (state === 'draft') buttons.push(act('send', 'Send this campaign to its whole audience now?', 'Send now'));
    if (state === 'running' || state === 'waiting_for_quota') buttons.push(act('pause', 'Pause sending? Nobody is skipped: resuming continues where it stopped.', 'Pause'));
    if (state === 'paused') buttons.push(act('resume', 'Resume sending where it stopped?', 'Resume'));
    if (!FINISHED.includes(state) && state !== 'draft') {
      buttons.push(act('cancel', 'Cancel this campaign? Messages not yet sent will not be sent. This cannot be undone.', 'Cancel campaign'));
    }
    actions.replaceChildren(...buttons);
  }

  function draw(p) {
    status.replaceChildren(badge(p.status));
    drawActions(p.status);
    if (p.total === undefined) return;
    last = p;
    const terminal = p.delivered + p.read + p.failed + p.suppressed + p.cancelled + p.dead_lettered;
    bar.max = Math.max(p.total, 1);
    bar.value = Math.min(terminal, bar.max);
    label.textContent = `${number(terminal)} of ${number(p.total)} finished`;
    counts.replaceChildren(...[
      ['Pending', p.pending], ['Sent (awaiting receipt)', p.sent], ['Delivered', p.delivered], ['Read', p.read],
      ['Failed', p.failed], ['Dead-lettered', p.dead_lettered], ['Suppressed', p.suppressed], ['Cancelled', p.cancelled],
    ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-count': k.split(' ')[0].toLowerCase() }, number(v))]));
    rate.textContent = `Current rate ${rateText(p)}` + (limits.length ? ` (${limits.join(', ')})` : '') +
      ` · time left ${etaText(p)}` + (p.resume_at_ms ? ` · waiting for the messaging-tier budget until ${when(p.resume_at_ms)}` : '');
    addSample(samples, { t: Date.now(), values: SERIES.map(([, , f]) => f(p)) });
    lineChart(chart, samples, SERIES.map(([key, name]) => ({ key, name })));
  }

  render(
    h('p', {}, h('a', { href: '/console/campaigns' }, '← Campaigns')),
    h('div', { class: 'title' }, h('h1', {}, campaign.name), status),
    h('p', {}, `Template ${campaign.template_id} · audience ${campaign.audience_id} · created ${when(campaign.created_ms)}` +
      (campaign.triggered_ms ? ` · started ${when(campaign.triggered_ms)}` : '')),
    h('div', { class: 'progress' }, bar, label),
    rate, actions, counts,
    h('h2', {}, 'Senders'), senders,
    h('h2', {}, 'Over time'), chart);
  drawActions(campaign.status);
  const tenantId = currentSession().tenant_id;
  const tenant = tenantId ? await api('GET', `/v1/tenants/${tenantId}`).catch(() => null) : null;
  if (tenant && tenant.rate_limit_per_s) limits.push(`tenant limit ${tenant.rate_limit_per_s}/s`);
  const perSecond = (r) => (r === null ? 'unpaced' : `${Number(r).toFixed(1)}/s`);
  const drawSenders = async () => {
    const { items } = await api('GET', '/v1/senders');
    senders.replaceChildren(items.length
      ? table('Each sender: configured rate, and current rate after the provider\'s pace signals',
        ['Provider', 'Sender', 'Configured', 'Current', 'Pace signals', 'State'],
        items.map((x) => [x.provider, x.sender, perSecond(x.configured_rate_per_s),
          x.paced_here ? perSecond(x.current_rate_per_s) : 'paced by the workers',
          x.paced_here ? number(x.pace_signals) : '–', x.stopped ? 'stopped by the provider' : 'sending']))
      : h('p', {}, 'No sender configured or active yet.'));
  };
  const senderTimer = setInterval(() => drawSenders().catch(() => {}), 2000);
  await drawSenders().catch(() => {});
  // The chart starts with the campaign's stored timeline (one point per 5 s window in which
  // its counters moved), so a reload or a late visit still shows the whole run.
  let after = null;
  for (let page = 0; page < 50; page += 1) {
    const query = new URLSearchParams({ limit: '1000' });
    if (after !== null) query.set('after_ms', String(after));
    const timeline = await api('GET', `/v1/campaigns/${id}/timeline?${query}`);
    for (const point of timeline.points) {
      addSample(samples, { t: Math.min(point.at_ms + 5000, Date.now()), values: SERIES.map(([, , f]) => f(point)) });
    }
    after = timeline.next_after_ms;
    if (after === null) break;
  }
  draw(await api('GET', `/v1/campaigns/${id}/progress`));
  const events = new EventSource(`/v1/campaigns/${id}/events`);
  events.addEventListener('progress', (e) => {
    const p = JSON.parse(e.data);
    draw(p);
    if (FINISHED.includes(p.status)) events.close();
  });
  window.addEventListener('pagehide', () => {
    events.close();
    clearInterval(senderTimer);
  });
}

/** Creates a campaign from a template and an audience, then sends it now or schedules it. */
export async function create() {
  const [templates, audiences] = await Promise.all([api('GET', '/v1/templates'), api('GET', '/v1/audiences')]);
  const name = h('input', { id: 'campaign-name', required: true, maxlength: 200 });
  const template = h('select', { id: 'campaign-template', required: true },
    templates.items.map((t) => h('option', { value: t.id }, `${t.name} (${t.channel})`)));
  const audience = h('select', { id: 'campaign-audience', required: true },
    audiences.items.map((a) => h('option', { value: a.id }, `${a.name} (${number(a.recipient_count)} recipients)`)));
  const rate = h('input', { id: 'campaign-rate', type: 'number', min: 1, step: 1 });
  const at = h('input', { id: 'campaign-at', type: 'datetime-local' });
  // One key per intended campaign: a double click, or a retry after a lost response, creates
  // and sends it once.
  const keys = { create: idempotencyKey(), send: idempotencyKey() };
  const submit = h('button', { type: 'submit', id: 'create-campaign' }, 'Create and send');
  const form = h('form', {
    id: 'campaign-form',
    onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      const ok = await attempt(async () => {
        const body = { name: name.value, template_id: Number(template.value), audience_id: Number(audience.value) };
        if (rate.value) body.rate_limit_per_s = Number(rate.value);
        if (at.value) body.scheduled_at = new Date(at.value).getTime();
        const c = await api('POST', '/v1/campaigns', body, { idempotencyKey: keys.create });
        await api('POST', `/v1/campaigns/${c.id}/send`, undefined, { idempotencyKey: keys.send });
        location.href = `/console/campaigns/${c.id}`;
      });
      if (!ok) submit.disabled = false;
    },
  },
  field('Name', name),
  field('Template', template),
  field('Audience', audience),
  field('Rate limit (messages per second, optional)', rate),
  field('Send at (optional; empty sends now)', at),
  submit);
  at.addEventListener('input', () => { submit.textContent = at.value ? 'Create and schedule' : 'Create and send'; });
  render(h('p', {}, h('a', { href: '/console/campaigns' }, '← Campaigns')), h('h1', {}, 'New campaign'),
    templates.items.length && audiences.items.length ? form
      : h('p', {}, 'Create a template and an audience first.'));
}
