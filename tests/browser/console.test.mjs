// Browser tests of the Runnel web console: Debian's Chromium, headless,
// driven by playwright-core against a running `runnel serve` (started by
// tests/it/console.rs, which passes its addresses in the environment).
//
//   CONSOLE_URL     http://127.0.0.1:<admin port>
//   KAFKA_ADDR      the broker's Kafka listener
//   RUNNEL_BIN      the runnel binary (for `runnel consume --group`)
//   WORK_DIR        a scratch directory (the file connector's input)
//   OFF_CONSOLE_URL the console of a broker without registry and connect
//   PLUGIN_WASM     a transform module that fails on the value "poison"
//   SCREENSHOT_DIR  where each step's screenshot goes
//   CHROMIUM        the browser [default: /usr/bin/chromium]
//
// Each step is a user flow; the first that fails ends the run with exit
// code 1, its error and a screenshot.

import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
};
const url = env('CONSOLE_URL');
const kafka = env('KAFKA_ADDR');
const runnel = env('RUNNEL_BIN');
const work = env('WORK_DIR');
const shots = env('SCREENSHOT_DIR');
const executablePath = env('CHROMIUM', '/usr/bin/chromium');
const plugin = env('PLUGIN_WASM');
const offUrl = env('OFF_CONSOLE_URL');
mkdirSync(shots, { recursive: true });

const suffix = Date.now().toString(36);
const topic = `orders-${suffix}`;
const group = `billing-${suffix}`;
const subject = `${topic}-value`;
const fileTopic = `lines-${suffix}`;
const connector = `file-in-${suffix}`;

// A fresh profile for every run.
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'runnel-chromium-')), {
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1400, height: 1000 },
});
const page = browser.pages()[0] || await browser.newPage();
page.setDefaultTimeout(15000);
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));

let n = 0;
async function step(name, fn) {
  n += 1;
  const file = join(shots, `${String(n).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-')}.png`);
  const started = Date.now();
  try {
    await fn();
    if (consoleErrors.length) throw new Error(`script errors on the page: ${consoleErrors.join('; ')}`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.error(`FAIL ${name}: ${e.stack || e}`);
    console.error(`screenshot: ${file}`);
    await browser.close();
    process.exit(1);
  }
}

const expectText = async (selector, text) => {
  await page.locator(selector).filter({ hasText: text }).first().waitFor();
};

await step('overview shows brokers and throughput graphs', async () => {
  await page.goto(url + '/');
  await page.locator('#throughput svg').first().waitFor();
  await expectText('table', 'controller');
  await expectText('.stat', 'Schema registry');
});

await step('create a topic', async () => {
  await page.goto(url + '/#/topics');
  await page.click('#new-topic');
  await page.fill('#topic-name', topic);
  await page.fill('#topic-partitions', '2');
  await page.fill('#topic-configs', 'retention.ms=86400000');
  await page.click('#create-topic');
  await page.waitForURL(`**/#/topics/${topic}`);
  await page.locator('h1', { hasText: topic }).waitFor();
});

await step('a bad topic name is refused with the broker\'s message', async () => {
  await page.goto(url + '/#/topics');
  await page.click('#new-topic');
  await page.fill('#topic-name', 'bad name!');
  await page.click('#create-topic');
  await page.locator('#create-topic-form .notice.error').waitFor();
});

await step('topic configs show the override', async () => {
  await page.goto(url + `/#/topics/${topic}?tab=configs`);
  const input = page.locator('input.config-value[data-name="retention.ms"]');
  await input.waitFor();
  if ((await input.inputValue()) !== '86400000') throw new Error('retention.ms is not 86400000');
  await input.fill('3600000');
  await page.click('#save-configs');
  await expectText('.status.ok', 'retention.ms');
});

await step('produce from the console', async () => {
  await page.goto(url + `/#/topics/${topic}?tab=produce`);
  await page.selectOption('#produce-partition', '0');
  await page.fill('#produce-key', 'order-1');
  await page.fill('#produce-value', '{"id": 1, "item": "widget", "qty": 3}');
  await page.fill('#produce-headers', 'source=console');
  await page.click('#produce-button');
  await expectText('.status.ok', 'partition 0 at offset 0');
  await page.fill('#produce-key', 'order-2');
  await page.fill('#produce-value', '{"id": 2, "item": "gadget", "qty": 1}');
  await page.click('#produce-button');
  await expectText('.status.ok', 'partition 0 at offset 1');
});

await step('browse the messages, JSON pretty-printed, with headers', async () => {
  await page.goto(url + `/#/topics/${topic}?tab=messages`);
  await expectText('#messages-table tr.message', 'order-1');
  await expectText('#messages-table tr.message', '"item": "widget"');
  await expectText('#messages-table tr.message', 'source');
  await page.fill('#browse-search', 'gadget');
  await page.click('#browse-load');
  await expectText('.status.ok', '1 message(s)');
  await expectText('#messages-table', 'order-2');
});

await step('partitions show leaders and offsets', async () => {
  await page.goto(url + `/#/topics/${topic}?tab=partitions`);
  await page.locator('#partitions-table tbody tr').nth(1).waitFor();
  const first = await page.locator('#partitions-table tbody tr').first().innerText();
  if (!/^0\s+(\d+)\s+\1\s+\1\s+0\s+2\s+2/.test(first.trim())) throw new Error(`partition 0 row: ${first}`);
});

await step('a group made by runnel consume shows its lag', async () => {
  execFileSync(runnel, ['consume', topic, '--group', group, '-B', '-n', '1', '--bootstrap', kafka], { timeout: 30000, stdio: 'pipe' });
  await page.goto(url + '/#/groups');
  await expectText('#groups-table', group);
  await page.goto(url + `/#/groups/${group}`);
  await expectText('#offsets-table tr', topic);
  const lag = await page.locator('#offsets-table td.lag').first().innerText();
  if (lag !== '1') throw new Error(`lag is ${lag}, not 1`);
});

await step('reset the empty group to earliest', async () => {
  await page.selectOption('#reset-to', 'earliest');
  await page.click('#reset-button');
  await expectText('.status.ok', 'Moved');
  await expectText('#offsets-table td.lag', '2');
});

const v1 = JSON.stringify({ type: 'record', name: 'Order', fields: [{ name: 'id', type: 'long' }] });
const v2 = JSON.stringify({ type: 'record', name: 'Order', fields: [{ name: 'id', type: 'long' }, { name: 'note', type: 'string', default: '' }] });
const bad = JSON.stringify({ type: 'record', name: 'Order', fields: [{ name: 'id', type: 'string' }] });

await step('register a schema', async () => {
  await page.goto(url + '/#/schemas');
  await page.fill('#schema-subject', subject);
  await page.fill('#schema-text', v1);
  await page.click('#schema-register');
  await page.waitForURL(`**/#/schemas/${subject}`);
  await expectText('.stat', 'v1');
  await page.goto(url + '/#/schemas');
  await expectText('#subjects-table tr', subject);
  await page.goto(url + `/#/schemas/${subject}`);
  await expectText('.stat', 'v1');
});

await step('check compatibility and register a second version, then diff', async () => {
  await page.fill('#schema-text', bad);
  await page.click('#schema-check');
  await page.locator('#register-form .notice.error', { hasText: 'Incompatible' }).waitFor();
  await page.fill('#schema-text', v2);
  await page.click('#schema-check');
  await expectText('#register-form .status.ok', 'Compatible');
  await page.click('#schema-register');
  await expectText('#register-form .status.ok', 'Registered');
  await page.waitForTimeout(800);
  await expectText('.stat', 'v2');
  await expectText('#schema-view pre.diff div.add', 'note');
});

await step('create a file source connector', async () => {
  const input = join(work, `lines-${suffix}.txt`);
  writeFileSync(input, 'first line\nsecond line\n');
  await page.goto(url + '/#/topics');
  await page.click('#new-topic');
  await page.fill('#topic-name', fileTopic);
  await page.click('#create-topic');
  await page.waitForURL(`**/#/topics/${fileTopic}`);
  await page.goto(url + '/#/connectors');
  await page.click('#new-connector');
  await page.fill('#connector-name', connector);
  await page.selectOption('#connector-class', 'org.apache.kafka.connect.file.FileStreamSourceConnector');
  await page.fill('#connector-config', JSON.stringify({
    'connector.class': 'org.apache.kafka.connect.file.FileStreamSourceConnector',
    'tasks.max': '1', file: input, topic: fileTopic,
  }, null, 2));
  await page.click('#create-connector');
  await page.waitForURL(`**/#/connectors/${connector}`);
  await expectText('#tasks-table', 'RUNNING');
});

await step('pause and resume the connector', async () => {
  await page.click('#connector-pause');
  await expectText('.stat', 'PAUSED');
  await page.click('#connector-resume');
  await expectText('.stat', 'RUNNING');
});

await step('the connector\'s records are in the message browser', async () => {
  await page.goto(url + `/#/topics/${fileTopic}?tab=messages`);
  for (let i = 0; i < 20; i++) {
    const text = await page.locator('#messages').innerText();
    if (text.includes('second line')) return;
    await page.waitForTimeout(500);
    await page.click('#browse-load');
  }
  throw new Error('the file\'s lines never reached the topic');
});

await step('a deployed transform shows its state and its dead letters', async () => {
  const input = `tin-${suffix}`;
  execFileSync(runnel, ['topic', 'create', input, '--bootstrap', kafka], { timeout: 30000, stdio: 'pipe' });
  execFileSync(runnel, ['transform', 'deploy', plugin, '--name', `guard-${suffix}`, '--input-topic', input,
    '--output-topic', `tout-${suffix}`, '--on-error', `dead-letter:${input}-dlq`, '--bootstrap', kafka], { timeout: 30000, stdio: 'pipe' });
  await page.goto(url + '/#/transforms');
  await expectText('main', connector);
  await expectText('#transforms-table tr', 'running');
  await page.goto(url + `/#/topics/${input}?tab=produce`);
  await page.fill('#produce-value', 'poison');
  await page.click('#produce-button');
  await expectText('.status.ok', 'offset 0');
  await page.goto(url + '/#/transforms');
  // The page refreshes itself every 5 s.
  await page.locator('#transforms-table tr', { hasText: '(1 records)' }).waitFor({ timeout: 30000 });
  await expectText('#transforms-table tr', `DLQ ${input}-dlq`);
});

await step('a pipeline run as its own process shows with its process and connector', async () => {
  const source = `pin-${suffix}`;
  execFileSync(runnel, ['topic', 'create', source, '--bootstrap', kafka], { timeout: 30000, stdio: 'pipe' });
  const file = join(work, `relay-${suffix}.yaml`);
  writeFileSync(file, `name: relay-${suffix}\nsource:\n  topic: ${source}\ntransforms:\n  - filter: has(value.user)\nsink:\n  topic: pout-${suffix}\n`);
  const run = spawn(runnel, ['pipeline', 'run', file, '--bootstrap', kafka], { stdio: 'ignore' });
  try {
    await page.goto(url + '/#/transforms');
    // The page refreshes itself every 5 s.
    await page.locator('#pipelines-table tr', { hasText: `relay-${suffix}` }).filter({ hasText: 'RUNNING' })
      .waitFor({ timeout: 60000 });
  } finally {
    run.kill('SIGKILL');
  }
});

await step('delete the topic with confirmation', async () => {
  await page.goto(url + `/#/topics/${fileTopic}`);
  await page.click('#delete-topic');
  await page.fill('#confirm-input', fileTopic);
  await page.click('#confirm-button');
  await page.waitForURL('**/#/topics');
  await page.locator('#topics-table').waitFor();
  const names = await page.locator('#topics-table').innerText();
  if (names.includes(fileTopic)) throw new Error('the topic is still listed');
});

await step('a console without the registry and connect says they are off', async () => {
  await page.goto(offUrl + '/#/schemas');
  await expectText('.notice.off', 'schema registry is off');
  await page.goto(offUrl + '/#/connectors');
  await expectText('.notice.off', 'connect worker is off');
  await page.goto(offUrl + '/#/');
  await expectText('.stat', 'off');
});

await browser.close();
console.log(`all ${n} steps passed; screenshots in ${shots}`);
