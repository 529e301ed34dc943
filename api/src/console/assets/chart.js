// A line chart in SVG: cumulative counts over time, one line per series, with a legend and a
// text summary for screen readers. Drawn with DOM calls only (no HTML strings, no library).

import { SVG, duration, h, number } from './lib.js';

const W = 640;
const H = 220;
const PAD = 36;

function node(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** The most samples a chart keeps: beyond, every other older sample is dropped. */
export const MAX_SAMPLES = 1000;

/** Adds a sample, thinning the older ones so a long campaign's chart stays cheap to draw. */
export function addSample(samples, sample) {
  samples.push(sample);
  if (samples.length <= MAX_SAMPLES) return;
  const last = samples.pop();
  const kept = samples.filter((_, i) => i % 2 === 0);
  samples.splice(0, samples.length, ...kept, last);
}

/** Draws `samples` ([{t, values: [..]}]) into `container`, one line per entry of `series`. */
export function lineChart(container, samples, series) {
  const svg = node('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-summary', class: 'lines' });
  const t0 = samples[0].t;
  const t1 = Math.max(samples[samples.length - 1].t, t0 + 1000);
  const top = Math.max(1, ...samples.flatMap((s) => s.values));
  const x = (t) => PAD + ((t - t0) / (t1 - t0)) * (W - 2 * PAD);
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  svg.append(node('line', { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: 'axis' }));
  svg.append(node('line', { x1: PAD, y1: PAD, x2: PAD, y2: H - PAD, class: 'axis' }));
  const label = (text, attrs) => {
    const el = node('text', attrs);
    el.textContent = text;
    svg.append(el);
  };
  label(number(top), { x: PAD - 4, y: PAD + 4, 'text-anchor': 'end', class: 'tick' });
  label('0', { x: PAD - 4, y: H - PAD + 4, 'text-anchor': 'end', class: 'tick' });
  label(duration((t1 - t0) / 1000), { x: W - PAD, y: H - PAD + 16, 'text-anchor': 'end', class: 'tick' });
  series.forEach((s, i) => {
    const points = samples.map((p) => `${x(p.t).toFixed(1)},${y(p.values[i]).toFixed(1)}`).join(' ');
    svg.append(node('polyline', { points, class: `line ${s.key}` }));
  });
  const latest = samples[samples.length - 1].values;
  const summary = series.map((s, i) => `${s.name} ${number(latest[i])}`).join(', ');
  container.replaceChildren(
    svg,
    h('p', { id: 'chart-summary', class: 'legend' },
      series.map((s, i) => h('span', { class: `key ${s.key}` }, `${s.name}: ${number(latest[i])}`))),
    h('p', { class: 'sr-only' }, `Now: ${summary}.`));
}
