// The console's pages. Each takes (main, ctx) and draws from real API
// calls; a failed call shows the server's message where its data would be.

import { h, errorBox } from './dom.js';
import { get, post, put, del, enc } from './api.js';
import { lineChart, rates, formatBytes } from './charts.js';

const fmtNum = (v) => (v == null ? '–' : Number(v).toLocaleString('en-US'));
const fmtTime = (ms) => (ms == null || ms < 0 ? '–' : new Date(ms).toISOString().replace('T', ' ').replace('Z', ''));

function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'Nothing here yet.'))));
}

function stat(label, value, cls = '') {
  return h('div', { class: 'stat ' + cls }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label));
}

function badge(text, kind) {
  const k = kind || String(text).toLowerCase().replace(/[^a-z]+/g, '-');
  return h('span', { class: 'badge ' + k }, text);
}

// A form's status line: busy, success or the server's error.
function statusLine() {
  const el = h('div', { class: 'status', role: 'status' });
  return {
    el,
    busy(text = 'Working…') { el.className = 'status busy'; el.replaceChildren(text); },
    ok(text) { el.className = 'status ok'; el.replaceChildren(text); },
    fail(e) { el.className = 'status'; el.replaceChildren(errorBox(e)); },
    clear() { el.className = 'status'; el.replaceChildren(); },
  };
}

// Runs an async action from a button, keeping the button disabled meanwhile.
async function act(button, status, fn) {
  button.disabled = true;
  status.busy();
  try {
    const text = await fn();
    status.ok(text || 'Done.');
  } catch (e) {
    status.fail(e);
  } finally {
    button.disabled = false;
  }
}

function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', { class: 'muted' }, hint) : null);
}

// A modal asking to type `expected` before `onConfirm` runs.
function confirmDialog(title, text, expected, onConfirm) {
  const input = h('input', { type: 'text', id: 'confirm-input', autocomplete: 'off', placeholder: expected });
  const status = statusLine();
  const go = h('button', { class: 'danger', id: 'confirm-button', disabled: true }, 'Delete');
  const close = () => overlay.remove();
  input.addEventListener('input', () => { go.disabled = input.value !== expected; });
  go.addEventListener('click', () => act(go, status, async () => { await onConfirm(); close(); }));
  const overlay = h('div', { class: 'overlay' },
    h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true' },
      h('h2', {}, title), h('p', {}, text),
      field(`Type ${expected} to confirm`, input),
      h('div', { class: 'actions' }, h('button', { onclick: close }, 'Cancel'), go),
      status.el));
  document.body.append(overlay);
  input.focus();
}

function kvLines(text) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw new Error(`"${line}" is not key=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

function tabs(ctx, base, names, current) {
  return h('div', { class: 'tabs', role: 'tablist' }, names.map(([id, label]) =>
    h('a', { href: `${base}?tab=${id}`, class: id === current ? 'active' : '', role: 'tab' }, label)));
}

// ---------------------------------------------------------------- overview

// Kept across visits so the graphs have history.
const trafficSamples = [];
const MAX_SAMPLES = 120;

async function overview(main, ctx) {
  main.append(h('h1', {}, 'Cluster overview'));
  const body = h('div', {});
  main.append(body);
  const draw = async () => {
    let c;
    try {
      c = await get('/cluster');
    } catch (e) {
      body.replaceChildren(errorBox(e));
      return;
    }
    trafficSamples.push(c.traffic);
    if (trafficSamples.length > MAX_SAMPLES) trafficSamples.shift();
    document.getElementById('node').textContent = `node ${c.node_id} · ${c.services.kafka}`;
    const disk = c.disk.total_bytes ? `${formatBytes(c.disk.free_bytes)} free of ${formatBytes(c.disk.total_bytes)}` : '–';
    body.replaceChildren(
      h('div', { class: 'stats' },
        stat('Brokers', c.brokers.length),
        stat('Controller', c.controller_id >= 0 ? `broker ${c.controller_id}` : 'none'),
        stat('Topics', fmtNum(c.topics)),
        stat('Partitions', fmtNum(c.partitions)),
        stat('Under-replicated', fmtNum(c.under_replicated_partitions), c.under_replicated_partitions ? 'warn' : ''),
        stat('Offline partitions', fmtNum(c.offline_partitions), c.offline_partitions ? 'warn' : ''),
        stat('Disk (this broker)', disk),
        stat('Schema registry', c.services.schema_registry ? 'on' : 'off'),
        stat('Connect', c.services.connect ? 'on' : 'off')),
      h('div', { class: 'charts', id: 'throughput' },
        lineChart('Bytes per second', [
          { name: 'in', cls: 's-in', points: rates(trafficSamples, 'bytes_in') },
          { name: 'out', cls: 's-out', points: rates(trafficSamples, 'bytes_out') }], 'B'),
        lineChart('Records per second', [
          { name: 'in', cls: 's-in', points: rates(trafficSamples, 'records_in') },
          { name: 'out', cls: 's-out', points: rates(trafficSamples, 'records_out') }], 'r')),
      h('p', { class: 'muted small' }, 'Rates from successive readings of the broker\u2019s partition counters every 3 s (partitions this broker leads).'),
      h('h2', {}, 'Brokers'),
      table(['ID', 'Address', 'Rack', 'Leader partitions', 'Role'], c.brokers.map((b) => h('tr', {},
        h('td', {}, b.id), h('td', {}, `${b.host}:${b.port}`), h('td', {}, b.rack || '–'),
        h('td', {}, fmtNum(b.leader_partitions)), h('td', {}, b.controller ? badge('controller', 'ok') : '')))),
      h('p', { class: 'muted small' }, `Cluster ${c.cluster_id || ''} · totals: ${formatBytes(c.traffic.bytes_in)} in, ${formatBytes(c.traffic.bytes_out)} out`));
  };
  await draw();
  ctx.every(3000, draw);
}

// ------------------------------------------------------------------ topics

async function topicsPage(main, ctx) {
  const showInternal = ctx.query.get('internal') === '1';
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Topics'),
    h('button', { class: 'primary', id: 'new-topic', onclick: () => form.classList.toggle('hidden') }, 'Create topic')));
  const form = createTopicForm();
  main.append(form);
  main.append(h('label', { class: 'inline' }, h('input', {
    type: 'checkbox', checked: showInternal,
    onchange: (e) => { location.hash = e.target.checked ? '#/topics?internal=1' : '#/topics'; },
  }), ' Show internal topics'));
  const filter = h('input', { type: 'search', placeholder: 'Filter by name', id: 'topic-filter' });
  main.append(filter);
  const body = h('div', {});
  main.append(body);
  const { topics } = await get('/topics');
  const draw = () => {
    const q = filter.value.toLowerCase();
    const rows = topics
      .filter((t) => (showInternal || !t.internal) && t.name.toLowerCase().includes(q))
      .map((t) => h('tr', {},
        h('td', {}, h('a', { href: `#/topics/${enc(t.name)}` }, t.name), t.internal ? badge('internal', 'muted') : ''),
        h('td', {}, t.partitions), h('td', {}, t.replication_factor),
        h('td', {}, t.under_replicated ? badge(`${t.under_replicated} under-replicated`, 'warn') : badge('ok', 'ok')),
        h('td', {}, t.size_bytes == null ? '–' : formatBytes(t.size_bytes)),
        h('td', {}, fmtNum(t.messages))));
    body.replaceChildren(table(['Name', 'Partitions', 'Replication', 'Replicas', 'Size', 'Messages'], rows, { id: 'topics-table' }));
  };
  filter.addEventListener('input', draw);
  draw();
}

function createTopicForm() {
  const name = h('input', { id: 'topic-name', required: true, placeholder: 'orders' });
  const partitions = h('input', { id: 'topic-partitions', type: 'number', min: 1, value: '1' });
  const rf = h('input', { id: 'topic-rf', type: 'number', min: 1, value: '1' });
  const configs = h('textarea', { id: 'topic-configs', rows: 3, placeholder: 'retention.ms=86400000\ncleanup.policy=compact' });
  const status = statusLine();
  const button = h('button', { class: 'primary', id: 'create-topic', type: 'submit' }, 'Create');
  const form = h('form', { class: 'card hidden', id: 'create-topic-form' },
    h('h2', {}, 'New topic'),
    h('div', { class: 'row' }, field('Name', name), field('Partitions', partitions), field('Replication factor', rf)),
    field('Configs (one key=value a line)', configs),
    h('div', { class: 'actions' }, button), status.el);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(button, status, async () => {
      const body = { name: name.value.trim(), partitions: Number(partitions.value), replication_factor: Number(rf.value), configs: kvLines(configs.value) };
      await post('/topics', body);
      location.hash = `#/topics/${enc(body.name)}`;
      return `Created ${body.name}.`;
    });
  });
  return form;
}

async function topicPage(main, ctx) {
  const name = ctx.params.name;
  const tab = ctx.query.get('tab') || 'messages';
  const base = `#/topics/${enc(name)}`;
  const del_ = h('button', { class: 'danger', id: 'delete-topic', onclick: () => confirmDialog(
    `Delete topic ${name}?`, 'Its partitions and every record in them are removed. This cannot be undone.', name,
    async () => { await del(`/topics/${enc(name)}`, { confirm: name }); location.hash = '#/topics'; }) }, 'Delete topic');
  main.append(h('div', { class: 'title-row' }, h('h1', {}, h('a', { href: '#/topics' }, 'Topics'), ' / ', name), del_));
  main.append(tabs(ctx, base, [['messages', 'Messages'], ['produce', 'Produce'], ['partitions', 'Partitions'], ['configs', 'Configs']], tab));
  const topic = await get(`/topics/${enc(name)}`);
  const body = h('div', {});
  main.append(body);
  if (tab === 'partitions') return partitionsTab(body, topic);
  if (tab === 'configs') return configsTab(body, topic);
  if (tab === 'produce') return produceTab(body, topic);
  return messagesTab(body, topic, ctx);
}

function partitionsTab(body, topic) {
  body.append(table(['Partition', 'Leader', 'Replicas', 'ISR', 'Log start', 'Log end', 'Messages'],
    topic.partitions.map((p) => h('tr', {},
      h('td', {}, p.partition), h('td', {}, p.leader >= 0 ? p.leader : badge('offline', 'warn')),
      h('td', {}, p.replicas.join(', ')),
      h('td', {}, p.isr.join(', '), p.isr.length < p.replicas.length ? badge('under-replicated', 'warn') : ''),
      h('td', {}, fmtNum(p.log_start_offset)), h('td', {}, fmtNum(p.log_end_offset)),
      h('td', {}, p.log_end_offset == null ? '–' : fmtNum(p.log_end_offset - p.log_start_offset)))),
    { id: 'partitions-table' }));
}

function configsTab(body, topic) {
  const inputs = [];
  const status = statusLine();
  const rows = topic.configs.map((c) => {
    const input = h('input', { value: c.sensitive ? '' : c.value ?? '', disabled: c.read_only, 'data-name': c.name, class: 'config-value' });
    inputs.push([c, input]);
    const reset = c.source === 'topic' && !c.read_only
      ? h('button', { class: 'small', onclick: (e) => act(e.target, status, async () => {
        await post(`/topics/${enc(topic.name)}/configs`, { delete: [c.name] });
        location.reload();
      }) }, 'Reset to default') : '';
    return h('tr', {}, h('td', { title: c.documentation || '' }, h('code', {}, c.name)), h('td', {}, input),
      h('td', {}, c.source === 'topic' ? badge('topic override', 'ok') : h('span', { class: 'muted' }, c.source)), h('td', {}, reset));
  });
  const save = h('button', { class: 'primary', id: 'save-configs' }, 'Save changes');
  save.addEventListener('click', () => act(save, status, async () => {
    const set = {};
    for (const [c, input] of inputs) {
      if (!c.read_only && !c.sensitive && input.value !== (c.value ?? '')) set[c.name] = input.value;
    }
    if (!Object.keys(set).length) return 'Nothing changed.';
    await post(`/topics/${enc(topic.name)}/configs`, { set });
    for (const [c, input] of inputs) if (c.name in set) { c.value = input.value; }
    return `Updated ${Object.keys(set).join(', ')}.`;
  }));
  body.append(h('div', { class: 'actions' }, save), status.el, table(['Config', 'Value', 'Source', ''], rows, { id: 'configs-table' }));
}

function produceTab(body, topic) {
  const partition = h('select', { id: 'produce-partition' }, h('option', { value: '' }, 'any (partitioner)'),
    topic.partitions.map((p) => h('option', { value: p.partition }, `partition ${p.partition}`)));
  const key = h('input', { id: 'produce-key', placeholder: 'key (optional)' });
  const value = h('textarea', { id: 'produce-value', rows: 8, placeholder: '{"hello": "world"}' });
  const headers = h('textarea', { id: 'produce-headers', rows: 2, placeholder: 'source=console' });
  const status = statusLine();
  const button = h('button', { class: 'primary', id: 'produce-button' }, 'Produce');
  button.addEventListener('click', () => act(button, status, async () => {
    const hs = Object.entries(kvLines(headers.value)).map(([k, v]) => ({ key: k, value: v }));
    const r = await post(`/topics/${enc(topic.name)}/messages`, {
      partition: partition.value === '' ? null : Number(partition.value),
      key: key.value === '' ? null : key.value,
      value: value.value,
      headers: hs,
    });
    return `Produced to partition ${r.partition} at offset ${r.offset}.`;
  }));
  body.append(h('div', { class: 'card' }, h('div', { class: 'row' }, field('Partition', partition), field('Key', key)),
    field('Value', value), field('Headers (one key=value a line)', headers), h('div', { class: 'actions' }, button), status.el));
}

function payloadCell(p) {
  if (p == null) return h('span', { class: 'muted' }, 'null');
  const label = p.encoding === 'avro' ? `avro · schema ${p.schema_id}` : p.encoding;
  return h('div', { class: 'payload' },
    h('div', {}, badge(label, 'enc'), h('span', { class: 'muted small' }, ` ${formatBytes(p.size)}`), p.truncated ? badge('cut', 'warn') : '',
      p.decode_error ? h('span', { class: 'muted small' }, ` (${p.decode_error})`) : ''),
    h('pre', {}, p.text));
}

function messagesTab(body, topic, ctx) {
  const partition = h('select', { id: 'browse-partition' }, h('option', { value: '' }, 'all partitions'),
    topic.partitions.map((p) => h('option', { value: p.partition }, `partition ${p.partition}`)));
  const mode = h('select', { id: 'browse-mode' }, h('option', { value: 'newest' }, 'newest'),
    h('option', { value: 'offset' }, 'from offset'), h('option', { value: 'timestamp' }, 'from timestamp'));
  const offset = h('input', { id: 'browse-offset', type: 'number', min: 0, value: '0' });
  const time = h('input', { id: 'browse-time', type: 'datetime-local', step: 1 });
  const limit = h('input', { id: 'browse-limit', type: 'number', min: 1, max: 500, value: '50' });
  const search = h('input', { id: 'browse-search', type: 'search', placeholder: 'text in key or value' });
  const status = statusLine();
  const load = h('button', { class: 'primary', id: 'browse-load' }, 'Load');
  const results = h('div', { id: 'messages' });
  const sync = () => {
    offset.parentElement.classList.toggle('hidden', mode.value !== 'offset');
    time.parentElement.classList.toggle('hidden', mode.value !== 'timestamp');
  };
  mode.addEventListener('change', sync);
  const run = () => act(load, status, async () => {
    const q = new URLSearchParams({ mode: mode.value, limit: limit.value || '50' });
    if (partition.value !== '') q.set('partition', partition.value);
    if (mode.value === 'offset') q.set('offset', offset.value || '0');
    if (mode.value === 'timestamp') {
      const ms = Date.parse(time.value + 'Z');
      if (Number.isNaN(ms)) throw new Error('pick a time (UTC)');
      q.set('timestamp', String(ms));
    }
    if (search.value.trim()) q.set('search', search.value.trim());
    const r = await get(`/topics/${enc(topic.name)}/messages?${q}`);
    results.replaceChildren(table(['Partition', 'Offset', 'Timestamp (UTC)', 'Key', 'Value', 'Headers'],
      r.messages.map((m) => h('tr', { class: 'message' },
        h('td', {}, m.partition), h('td', {}, m.offset), h('td', { class: 'nowrap' }, fmtTime(m.timestamp)),
        h('td', {}, payloadCell(m.key)), h('td', { class: 'value' }, payloadCell(m.value)),
        h('td', {}, m.headers.map((x) => h('div', { class: 'small' }, h('code', {}, x.key), '=', x.value ?? 'null'))))),
      { id: 'messages-table' }));
    const ends = r.partitions.map((p) => `p${p.partition}: ${p.log_start_offset}–${p.high_watermark}`).join(' · ');
    return `${r.messages.length} message(s) (at most ${r.limit}). Offsets ${ends}`;
  });
  load.addEventListener('click', run);
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') run(); });
  body.append(h('div', { class: 'card controls' },
    h('div', { class: 'row' }, field('Partition', partition), field('Start', mode), field('Offset', offset), field('Time (UTC)', time),
      field('Max messages', limit), field('Search', search)),
    h('div', { class: 'actions' }, load), status.el), results);
  sync();
  run();
}

// ------------------------------------------------------------------ groups

async function groupsPage(main) {
  main.append(h('h1', {}, 'Consumer groups'));
  const { groups } = await get('/groups');
  main.append(table(['Group', 'State', 'Members', 'Lag', 'Protocol'], groups.map((g) => h('tr', {},
    h('td', {}, h('a', { href: `#/groups/${enc(g.group_id)}` }, g.group_id)), h('td', {}, badge(g.state)),
    h('td', {}, g.members), h('td', {}, fmtNum(g.lag)), h('td', {}, g.protocol_type || '–'))), { id: 'groups-table' }));
}

async function groupPage(main, ctx) {
  const id = ctx.params.id;
  main.append(h('h1', {}, h('a', { href: '#/groups' }, 'Consumer groups'), ' / ', id));
  const body = h('div', {});
  main.append(body);
  // `flash`: the outcome of the reset that caused this redraw.
  const draw = async (flash) => {
    const g = await get(`/groups/${enc(id)}`);
    body.replaceChildren(
      h('div', { class: 'stats' }, stat('State', badge(g.state)), stat('Members', g.members.length), stat('Total lag', fmtNum(g.lag), g.lag ? 'warn' : ''),
        stat('Assignor', g.protocol || '–')),
      h('h2', {}, 'Members'),
      table(['Member ID', 'Client ID', 'Host', 'Assigned partitions'], g.members.map((m) => h('tr', {},
        h('td', {}, h('code', {}, m.member_id)), h('td', {}, m.client_id), h('td', {}, m.host),
        h('td', {}, m.assignments.map((a) => `${a.topic}-${a.partition}`).join(', ') || '–')))),
      h('h2', {}, 'Offsets and lag'),
      table(['Topic', 'Partition', 'Committed', 'Log start', 'Log end', 'Lag'], g.offsets.map((o) => h('tr', {},
        h('td', {}, h('a', { href: `#/topics/${enc(o.topic)}` }, o.topic)), h('td', {}, o.partition), h('td', {}, fmtNum(o.committed)),
        h('td', {}, fmtNum(o.log_start_offset)), h('td', {}, fmtNum(o.log_end_offset)), h('td', { class: 'lag' }, fmtNum(o.lag)))), { id: 'offsets-table' }),
      resetForm(g, draw, flash));
  };
  await draw();
}

function resetForm(g, redraw, flash) {
  const topics = [...new Set(g.offsets.map((o) => o.topic))];
  const topic = h('select', { id: 'reset-topic' }, h('option', { value: '' }, 'every committed partition'), topics.map((t) => h('option', { value: t }, t)));
  const to = h('select', { id: 'reset-to' }, ['earliest', 'latest', 'offset', 'timestamp'].map((x) => h('option', { value: x }, x)));
  const offset = h('input', { id: 'reset-offset', type: 'number', min: 0, value: '0' });
  const time = h('input', { id: 'reset-time', type: 'datetime-local', step: 1 });
  const status = statusLine();
  const empty = g.members.length === 0;
  const button = h('button', { class: 'primary', id: 'reset-button', disabled: !empty }, 'Reset offsets');
  button.addEventListener('click', () => act(button, status, async () => {
    const body = { to: to.value };
    if (topic.value) body.topic = topic.value;
    if (to.value === 'offset') body.offset = Number(offset.value);
    if (to.value === 'timestamp') {
      body.timestamp = Date.parse(time.value + 'Z');
      if (Number.isNaN(body.timestamp)) throw new Error('pick a time (UTC)');
    }
    const r = await post(`/groups/${enc(g.group_id)}/reset-offsets`, body);
    const text = `Moved ${r.offsets.length} partition(s): ` + r.offsets.map((o) => `${o.topic}-${o.partition} to ${o.offset}`).join(', ');
    await redraw(text);
    return text;
  }));
  if (flash) status.ok(flash);
  const card = h('div', { class: 'card' }, h('h2', {}, 'Reset offsets'),
    empty ? '' : h('p', { class: 'muted' }, 'Only an empty group can be reset: stop its consumers first.'),
    h('div', { class: 'row' }, field('Topic', topic), field('To', to), field('Offset', offset), field('Time (UTC)', time)),
    h('div', { class: 'actions' }, button), status.el);
  const sync = () => {
    offset.parentElement.classList.toggle('hidden', to.value !== 'offset');
    time.parentElement.classList.toggle('hidden', to.value !== 'timestamp');
  };
  to.addEventListener('change', sync);
  sync();
  return card;
}

// ----------------------------------------------------------------- schemas

const SCHEMA_TYPES = ['AVRO', 'JSON', 'PROTOBUF'];
const LEVELS = ['BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE', 'NONE'];

function prettySchema(s) {
  try { return JSON.stringify(JSON.parse(s), null, 2); } catch { return s; }
}

async function schemasPage(main) {
  main.append(h('h1', {}, 'Schema registry'));
  const [subjects, config] = await Promise.all([get('/registry/subjects'), get('/registry/config')]);
  const level = h('select', { id: 'global-compat' }, LEVELS.map((l) => h('option', { value: l, selected: l === config.compatibilityLevel }, l)));
  const status = statusLine();
  const save = h('button', {}, 'Save');
  save.addEventListener('click', () => act(save, status, async () => {
    await put('/registry/config', { compatibility: level.value });
    return `Global compatibility is ${level.value}.`;
  }));
  main.append(h('div', { class: 'card' }, h('div', { class: 'row' }, field('Global compatibility', level), h('div', { class: 'actions' }, save)), status.el));
  // The latest version of every subject in one call.
  const latest = new Map();
  for (const x of await get('/registry/schemas?latestOnly=true')) latest.set(x.subject, x);
  const rows = subjects.map((s) => {
    const x = latest.get(s) || {};
    return h('tr', {}, h('td', {}, h('a', { href: `#/schemas/${enc(s)}` }, s)),
      h('td', {}, x.version == null ? '–' : `v${x.version}`), h('td', {}, x.id ?? '–'), h('td', {}, x.schemaType || 'AVRO'));
  });
  main.append(h('h2', {}, 'Subjects'), table(['Subject', 'Latest version', 'Schema ID', 'Type'], rows, { id: 'subjects-table' }));
  main.append(registerForm(null));
}

function registerForm(subjectName, latestType) {
  const subject = h('input', { id: 'schema-subject', value: subjectName || '', placeholder: 'orders-value', disabled: !!subjectName });
  const type = h('select', { id: 'schema-type' }, SCHEMA_TYPES.map((t) => h('option', { value: t, selected: t === (latestType || 'AVRO') }, t)));
  const schema = h('textarea', { id: 'schema-text', rows: 10, placeholder: '{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}' });
  const status = statusLine();
  const check = h('button', { id: 'schema-check' }, 'Check compatibility');
  const register = h('button', { class: 'primary', id: 'schema-register' }, 'Register');
  const body = () => {
    const b = { schema: schema.value };
    if (type.value !== 'AVRO') b.schemaType = type.value;
    return b;
  };
  check.addEventListener('click', () => act(check, status, async () => {
    const r = await post(`/registry/compatibility/subjects/${enc(subject.value.trim())}/versions/latest?verbose=true`, body());
    if (r.is_compatible) return 'Compatible with the latest version.';
    throw new Error('Incompatible: ' + ((r.messages || []).join('; ') || 'see the registry\u2019s rules'));
  }));
  register.addEventListener('click', () => act(register, status, async () => {
    const s = subject.value.trim();
    if (!s) throw new Error('name the subject');
    const r = await post(`/registry/subjects/${enc(s)}/versions`, body());
    if (!subjectName) location.hash = `#/schemas/${enc(s)}`;
    else setTimeout(() => location.reload(), 600);
    return `Registered under id ${r.id}.`;
  }));
  return h('div', { class: 'card', id: 'register-form' }, h('h2', {}, subjectName ? 'New version' : 'Register a schema'),
    h('div', { class: 'row' }, field('Subject', subject), field('Type', type)), field('Schema', schema),
    h('div', { class: 'actions' }, check, register), status.el);
}

// Line diff by longest common subsequence (schemas are small).
function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; } else if (L[i + 1][j] >= L[i][j + 1]) out.push(['-', x[i++]]); else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

async function subjectPage(main, ctx) {
  const subject = ctx.params.subject;
  main.append(h('h1', {}, h('a', { href: '#/schemas' }, 'Schema registry'), ' / ', subject));
  const versions = await get(`/registry/subjects/${enc(subject)}/versions`);
  const latest = await get(`/registry/subjects/${enc(subject)}/versions/latest`);
  const config = await get(`/registry/config/${enc(subject)}?defaultToGlobal=true`);
  const level = h('select', { id: 'subject-compat' }, LEVELS.map((l) => h('option', { value: l, selected: l === config.compatibilityLevel }, l)));
  const cstatus = statusLine();
  const save = h('button', {}, 'Save');
  save.addEventListener('click', () => act(save, cstatus, async () => {
    await put(`/registry/config/${enc(subject)}`, { compatibility: level.value });
    return `Compatibility of ${subject} is ${level.value}.`;
  }));
  main.append(h('div', { class: 'stats' }, stat('Versions', versions.length), stat('Latest', `v${latest.version} · id ${latest.id}`), stat('Type', latest.schemaType || 'AVRO')),
    h('div', { class: 'card' }, h('div', { class: 'row' }, field('Compatibility', level), h('div', { class: 'actions' }, save)), cstatus.el));
  const pick = (id, sel) => h('select', { id }, versions.map((v) => h('option', { value: v, selected: v === sel }, `v${v}`)));
  const left = pick('diff-left', versions.length > 1 ? versions[versions.length - 2] : versions[0]);
  const right = pick('diff-right', versions[versions.length - 1]);
  const view = h('div', { id: 'schema-view' });
  const show = async () => {
    try {
      const [a, b] = await Promise.all([left.value, right.value].map((v) => get(`/registry/subjects/${enc(subject)}/versions/${v}`)));
      if (a.version === b.version) {
        view.replaceChildren(h('p', { class: 'muted small' }, `v${a.version} · id ${a.id}`), h('pre', { class: 'schema' }, prettySchema(a.schema)));
      } else {
        const lines = diffLines(prettySchema(a.schema), prettySchema(b.schema));
        view.replaceChildren(h('p', { class: 'muted small' }, `v${a.version} (id ${a.id}) → v${b.version} (id ${b.id})`),
          h('pre', { class: 'diff' }, lines.map(([op, text]) => h('div', { class: op === '+' ? 'add' : op === '-' ? 'del' : '' }, `${op} ${text}`))));
      }
    } catch (e) {
      view.replaceChildren(errorBox(e));
    }
  };
  left.addEventListener('change', show);
  right.addEventListener('change', show);
  main.append(h('h2', {}, 'Versions'), h('div', { class: 'row' }, field('From', left), field('To', right)), view);
  await show();
  main.append(registerForm(subject, latest.schemaType));
}

// -------------------------------------------------------------- connectors

async function connectorsPage(main) {
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Connectors'),
    h('button', { class: 'primary', id: 'new-connector', onclick: () => form.classList.toggle('hidden') }, 'Create connector')));
  const plugins = await get('/connect/connector-plugins');
  const form = createConnectorForm(plugins);
  main.append(form);
  const list = await get('/connect/connectors?expand=status&expand=info');
  const rows = Object.entries(list).sort(([a], [b]) => a.localeCompare(b)).map(([name, c]) => {
    const st = c.status || {};
    const tasks = st.tasks || [];
    const failed = tasks.filter((t) => t.state === 'FAILED').length;
    return h('tr', {}, h('td', {}, h('a', { href: `#/connectors/${enc(name)}` }, name)),
      h('td', {}, (c.info && c.info.type) || st.type || '–'),
      h('td', { class: 'small' }, (c.info && c.info.config && c.info.config['connector.class']) || '–'),
      h('td', {}, badge((st.connector && st.connector.state) || 'UNKNOWN')),
      h('td', {}, `${tasks.length} task(s)`, failed ? badge(`${failed} failed`, 'warn') : ''));
  });
  main.append(table(['Name', 'Type', 'Class', 'State', 'Tasks'], rows, { id: 'connectors-table' }));
  main.append(h('h2', {}, 'Installed plugins'), table(['Class', 'Type', 'Version'], plugins.map((p) => h('tr', {},
    h('td', {}, h('code', {}, p.class)), h('td', {}, p.type), h('td', {}, p.version || '–')))));
}

function createConnectorForm(plugins) {
  const name = h('input', { id: 'connector-name', placeholder: 'my-connector' });
  const plugin = h('select', { id: 'connector-class' }, plugins.map((p) => h('option', { value: p.class }, `${p.class} (${p.type})`)));
  const config = h('textarea', { id: 'connector-config', rows: 8 });
  const fill = () => {
    const p = plugins.find((x) => x.class === plugin.value);
    const c = { 'connector.class': plugin.value, 'tasks.max': '1' };
    if (p && p.type === 'sink') c.topics = ''; else c.topic = '';
    config.value = JSON.stringify(c, null, 2);
  };
  plugin.addEventListener('change', fill);
  fill();
  const status = statusLine();
  const button = h('button', { class: 'primary', id: 'create-connector', type: 'submit' }, 'Create');
  const form = h('form', { class: 'card hidden', id: 'create-connector-form' }, h('h2', {}, 'New connector'),
    h('div', { class: 'row' }, field('Name', name), field('Plugin', plugin)), field('Config (JSON)', config),
    h('div', { class: 'actions' }, button), status.el);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(button, status, async () => {
      let c;
      try { c = JSON.parse(config.value); } catch (err) { throw new Error('the config is not JSON: ' + err.message); }
      const r = await post('/connect/connectors', { name: name.value.trim(), config: c });
      location.hash = `#/connectors/${enc(r.name)}`;
      return `Created ${r.name}.`;
    });
  });
  return form;
}

async function connectorPage(main, ctx) {
  const name = ctx.params.name;
  const base = `/connect/connectors/${enc(name)}`;
  main.append(h('h1', {}, h('a', { href: '#/connectors' }, 'Connectors'), ' / ', name));
  const status = statusLine();
  const body = h('div', {});
  const action = (label, id, fn, cls = '') => {
    const b = h('button', { id, class: cls });
    b.textContent = label;
    b.addEventListener('click', () => act(b, status, async () => { const t = await fn(); await draw(); return t; }));
    return b;
  };
  main.append(h('div', { class: 'actions' },
    action('Pause', 'connector-pause', async () => { await put(`${base}/pause`); return 'Paused.'; }),
    action('Resume', 'connector-resume', async () => { await put(`${base}/resume`); return 'Resumed.'; }),
    action('Restart', 'connector-restart', async () => { await post(`${base}/restart?includeTasks=true`); return 'Restarted.'; }),
    h('button', { class: 'danger', id: 'connector-delete', onclick: () => confirmDialog(`Delete connector ${name}?`,
      'The connector and its tasks stop and its config is removed.', name, async () => { await del(base); location.hash = '#/connectors'; }) }, 'Delete')),
  status.el, body);
  const draw = async () => {
    const [st, info] = await Promise.all([get(`${base}/status`), get(base)]);
    body.replaceChildren(
      h('div', { class: 'stats' }, stat('State', badge(st.connector.state)), stat('Worker', st.connector.worker_id || '–'), stat('Type', st.type || info.type || '–'), stat('Tasks', (st.tasks || []).length)),
      st.connector.trace ? h('pre', { class: 'trace' }, st.connector.trace) : '',
      h('h2', {}, 'Tasks'),
      table(['Task', 'State', 'Worker', 'Error', ''], (st.tasks || []).map((t) => h('tr', {},
        h('td', {}, t.id), h('td', {}, badge(t.state)), h('td', {}, t.worker_id || '–'),
        h('td', {}, t.trace ? h('pre', { class: 'trace' }, t.trace) : '–'),
        h('td', {}, action('Restart task', `task-restart-${t.id}`, async () => { await post(`${base}/tasks/${t.id}/restart`); return `Task ${t.id} restarted.`; }, 'small')))), { id: 'tasks-table' }),
      h('h2', {}, 'Config'), h('pre', { id: 'connector-config-view' }, JSON.stringify(info.config, null, 2)));
  };
  await draw();
  ctx.every(5000, () => draw().catch((e) => body.replaceChildren(errorBox(e))));
}

// -------------------------------------------------- transforms & pipelines

const transformSamples = new Map();

async function transformsPage(main, ctx) {
  main.append(h('h1', {}, 'Transforms & pipelines'),
    h('p', { class: 'muted' }, 'Broker-side WASM transforms deployed with runnel transform deploy, the pipelines started with runnel pipeline run (separate processes, seen through their groups and topics in the cluster) and the connectors of this process\u2019s connect worker.'));
  const body = h('div', {});
  const pipes = h('div', {});
  const connect = h('div', {});
  main.append(body, h('h2', {}, 'Pipelines'), pipes, h('h2', {}, 'Connectors'), connect);
  const draw = async () => {
    let r;
    try { r = await get('/transforms'); } catch (e) { body.replaceChildren(errorBox(e)); return; }
    const now = Date.now();
    const rows = r.transforms.map((t) => {
      const prev = transformSamples.get(t.name);
      // Records held grow with what is appended (by producers or the transform).
      const cur = { at: now, in: t.input ? t.input.messages : null, out: t.output ? t.output.messages : null };
      transformSamples.set(t.name, cur);
      const rate = (k) => (prev && prev[k] != null && cur[k] != null && cur.at > prev.at ? ((cur[k] - prev[k]) / ((cur.at - prev.at) / 1000)).toFixed(1) + '/s' : '…');
      return h('tr', {},
        h('td', {}, h('strong', {}, t.name), h('div', { class: 'muted small' }, (t.sha256 || '').slice(0, 12))),
        h('td', {}, h('a', { href: `#/topics/${enc(t.input_topic)}` }, t.input_topic), ' → ', h('a', { href: `#/topics/${enc(t.output_topic)}` }, t.output_topic)),
        h('td', {}, badge(t.state)),
        h('td', {}, fmtNum(t.lag)),
        h('td', {}, `in ${rate('in')} · out ${rate('out')}`),
        h('td', {}, t.on_error, t.dead_letter_topic ? h('div', {}, h('a', { href: `#/topics/${enc(t.dead_letter_topic)}?tab=messages` }, `DLQ ${t.dead_letter_topic}`),
          ` (${fmtNum(t.dead_letter ? t.dead_letter.messages : 0)} records)`) : ''),
        h('td', {}, t.error ? h('pre', { class: 'trace' }, t.error) : '–'),
        h('td', { class: 'small' }, fmtTime(t.deployed_at_ms)));
    });
    body.replaceChildren(table(['Transform', 'Input → output', 'State', 'Lag', 'Throughput', 'On error', 'Last error', 'Deployed'], rows, { id: 'transforms-table' }));
  };
  const drawPipelines = async () => {
    let r;
    try { r = await get('/pipelines'); } catch (e) { pipes.replaceChildren(errorBox(e)); return; }
    if (!r.pipelines.length) {
      pipes.replaceChildren(h('p', { class: 'muted', id: 'pipelines-empty' }, 'No pipeline has run against this cluster (runnel pipeline run FILE).'));
      return;
    }
    const unit = (label, u) => h('div', {}, badge(`${label}: ${u.state}`, String(u.state).toLowerCase()), u.trace ? h('pre', { class: 'trace' }, u.trace) : '');
    pipes.replaceChildren(table(['Pipeline', 'Kind', 'Group state', 'Processes', 'Connectors and tasks', 'Lag', 'Topics'], r.pipelines.map((p) => h('tr', { class: 'pipeline' },
      h('td', {}, h('strong', {}, p.name), h('div', { class: 'muted small' }, p.group_id)),
      h('td', {}, p.kind),
      h('td', {}, badge(p.state)),
      h('td', {}, p.instances.length ? p.instances.map((m) => h('div', { class: 'small' }, `${m.client_id} (${m.host})`)) : '0'),
      h('td', {}, p.kind === 'streams' ? '–' : p.connectors.map((c) => h('div', {}, unit(c.name, c), ...(c.tasks || []).map((t) => unit(`${c.name}/${t.id}`, t)))),
        p.status_error ? h('pre', { class: 'trace' }, p.status_error) : ''),
      h('td', {}, fmtNum(p.lag)),
      h('td', {}, p.topics.map((t) => h('div', { class: 'small' }, h('a', { href: `#/topics/${enc(t)}` }, t)))))), { id: 'pipelines-table' }));
  };
  const drawConnect = async () => {
    try {
      const list = await get('/connect/connectors?expand=status');
      connect.replaceChildren(table(['Connector', 'State', 'Tasks'], Object.entries(list).map(([n, c]) => h('tr', {},
        h('td', {}, h('a', { href: `#/connectors/${enc(n)}` }, n)), h('td', {}, badge(c.status.connector.state)),
        h('td', {}, (c.status.tasks || []).map((t) => badge(`${t.id}: ${t.state}`)))))));
    } catch (e) {
      connect.replaceChildren(errorBox(e));
    }
  };
  await Promise.all([draw(), drawPipelines(), drawConnect()]);
  ctx.every(5000, () => Promise.all([draw(), drawPipelines()]));
}

export const pages = {
  overview,
  topics: topicsPage,
  topic: topicPage,
  groups: groupsPage,
  group: groupPage,
  schemas: schemasPage,
  subject: subjectPage,
  connectors: connectorsPage,
  connector: connectorPage,
  transforms: transformsPage,
};
