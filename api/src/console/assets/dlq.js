// The dead-letter page: letters with their reasons and codes, filtered by campaign and code,
// and redrive of the selected letters or all of a campaign's (showing which are held until
// the provider allows them).

import { api, attempt, canMutate, confirmAction, field, h, idempotencyKey, render, table, when } from './lib.js';

export async function list() {
  const params = new URLSearchParams(location.search);
  const campaign = params.get('campaign') || '';
  const code = params.get('code') || '';
  const query = new URLSearchParams({ limit: '1000' });
  if (campaign) query.set('campaign_id', campaign);
  if (code) query.set('code', code);
  const page = await api('GET', `/v1/dlq?${query}`);
  const letters = page.items;
  const boxes = new Map();
  const result = h('p', { id: 'redrive-result', 'aria-live': 'polite' });
  const rows = letters.map((l) => {
    const box = h('input', { type: 'checkbox', 'aria-label': `Select ${l.address}`, class: 'pick' });
    boxes.set(l.message_id, box);
    return h('tr', { 'data-message': l.message_id },
      h('td', {}, canMutate() ? box : ''),
      h('td', {}, h('a', { href: `/console/campaigns/${l.campaign_id}` }, String(l.campaign_id))),
      h('td', {}, l.address),
      h('td', {}, l.code || '–'),
      h('td', {}, l.reason),
      h('td', { class: 'num' }, String(l.attempts)),
      h('td', {}, when(l.at_ms)),
      h('td', {}, l.not_before_ms ? `held until ${when(l.not_before_ms)}` : 'now'));
  });
  const redrive = async (body, question) => {
    if (!(await confirmAction(question, 'Redrive'))) return;
    await attempt(async () => {
      const r = await api('POST', '/v1/dlq/redrive', body, { idempotencyKey: idempotencyKey() });
      result.textContent = `Redriven: ${r.redriven}. Held until later (the provider asked to wait): ${r.held_until_later}.`;
      for (const [id, box] of boxes) if (box.checked) box.closest('tr').classList.add('redriven');
    });
  };
  const campaignInput = h('input', { id: 'filter-campaign', name: 'campaign', inputmode: 'numeric', value: campaign });
  const codeInput = h('input', { id: 'filter-code', name: 'code', value: code });
  render(
    h('h1', {}, 'Dead letters'),
    h('form', { method: 'get', action: '/console/dlq', class: 'filters' },
      field('Campaign', campaignInput), field('Code', codeInput), h('button', { type: 'submit', id: 'filter' }, 'Filter')),
    letters.length
      ? table(`${letters.length} letter(s)${page.next_cursor ? ' (the first ones; narrow the filter to see the rest)' : ''}`,
        ['', 'Campaign', 'Address', 'Code', 'Reason', 'Attempts', 'When', 'Redrivable'], rows, { id: 'letters' })
      : h('p', { id: 'no-letters' }, 'No dead letters.'),
    canMutate() && letters.length ? h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        id: 'redrive-selected',
        onclick: () => {
          const ids = [...boxes].filter(([, b]) => b.checked).map(([id]) => id);
          if (!ids.length) return result.replaceChildren('Select at least one letter.');
          return redrive({ message_ids: ids }, `Send ${ids.length} selected letter(s) again?`);
        },
      }, 'Redrive selected'),
      campaign ? h('button', {
        type: 'button',
        id: 'redrive-all',
        onclick: () => redrive({ campaign_id: Number(campaign) }, `Send every dead letter of campaign ${campaign} again?`),
      }, 'Redrive all of this campaign') : null) : null,
    result);
}
