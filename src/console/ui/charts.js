// Small SVG line charts for the throughput graphs (no library).

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

export function formatRate(v, unit) {
  if (unit === 'B') return formatBytes(v) + '/s';
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M/s';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k/s';
  return (Math.round(v * 10) / 10) + '/s';
}

export function formatBytes(v) {
  if (v == null || Number.isNaN(v)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 && v >= 10 ? Math.round(v) : v.toFixed(1)) + ' ' + units[i];
}

// series: [{name, points: [[t_ms, value], ...], cls}]
export function lineChart(title, series, unit) {
  const width = 520, height = 180, left = 64, right = 10, top = 24, bottom = 22;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': title });
  const all = series.flatMap((s) => s.points);
  // At least the last minute, up to the oldest sample kept.
  const t1 = Math.max(Date.now(), ...all.map((p) => p[0]));
  const t0 = Math.min(t1 - 60000, ...all.map((p) => p[0]));
  const vmax = Math.max(unit === 'B' ? 1024 : 10, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / vmax) * (height - top - bottom);
  const heading = svg('text', { x: left, y: 14, class: 'chart-title' });
  heading.textContent = title;
  root.append(heading);
  for (let i = 0; i <= 4; i++) {
    const v = (vmax / 4) * i;
    root.append(svg('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid' }));
    const label = svg('text', { x: left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' });
    label.textContent = formatRate(v, unit);
    root.append(label);
  }
  const span = svg('text', { x: width - right, y: height - 6, class: 'axis', 'text-anchor': 'end' });
  span.textContent = `last ${Math.round((t1 - t0) / 1000)} s`;
  const first = svg('text', { x: left, y: height - 6, class: 'axis' });
  first.textContent = new Date(t0).toISOString().slice(11, 19) + ' UTC';
  root.append(first);
  root.append(span);
  let legendX = left + 180;
  for (const s of series) {
    if (s.points.length > 1) {
      const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
      root.append(svg('path', { d, class: 'line ' + s.cls }));
    }
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    root.append(svg('rect', { x: legendX, y: 6, width: 10, height: 10, class: 'swatch ' + s.cls }));
    const legend = svg('text', { x: legendX + 14, y: 15, class: 'legend' });
    legend.textContent = `${s.name} ${formatRate(last, unit)}`;
    root.append(legend);
    legendX += 150;
  }
  if (all.length < 2) {
    const wait = svg('text', { x: width / 2, y: height / 2, class: 'axis', 'text-anchor': 'middle' });
    wait.textContent = 'collecting samples…';
    root.append(wait);
  }
  return root;
}

// Rates between successive cumulative samples [{at_ms, ...counters}].
export function rates(samples, key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.at_ms - a.at_ms) / 1000;
    if (dt <= 0) continue;
    out.push([b.at_ms, Math.max(0, (b[key] - a[key]) / dt)]);
  }
  return out;
}
