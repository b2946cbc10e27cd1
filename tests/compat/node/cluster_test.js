#!/usr/bin/env node
// Leader failover in a 3-node Runnel cluster, seen by kafkajs: a topic with
// one partition on 3 replicas (min.insync.replicas=2), an idempotent acks=all
// producer writing sequence-numbered records while the partition's leader is
// SIGKILLed, the node restarted and back in sync, then a consumer group reads
// the partition from the beginning: every acknowledged record exactly once,
// in order.
//
// Usage: node cluster_test.js BOOTSTRAP(host:port,...) NODE_CMD [RECORDS]
// NODE_CMD is run as `NODE_CMD kill ID` and `NODE_CMD start ID` (run.sh
// writes it).
const { execFileSync } = require('child_process');
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, nodeCmd, recordsArg] = process.argv.slice(2);
const records = Number(recordsArg || 1000);
const run = Math.random().toString(16).slice(2, 10);
const topic = `compat-cluster-kafkajs-${run}`;

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

function node(action, id) {
  const [cmd, ...args] = nodeCmd.split(' ');
  execFileSync(cmd, [...args, action, String(id)], { stdio: 'inherit', timeout: 60000 });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${last})`);
}

(async () => {
  const kafka = new Kafka({
    clientId: 'runnel-compat-cluster',
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    retry: { retries: 10 },
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: 1, replicationFactor: 3, configEntries: [{ name: 'min.insync.replicas', value: '2' }] }],
    waitForLeaders: true,
  });
  const state = async () => {
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    const p = md.topics[0].partitions[0];
    return { leader: p.leader, replicas: [...p.replicas].sort(), isr: [...p.isr].sort() };
  };
  const whole = async () => {
    const s = await state();
    return s.leader > 0 && s.replicas.length === 3 && s.isr.join() === s.replicas.join() ? s : null;
  };
  const { leader } = await waitFor('3 replicas in sync', whole, 30000);
  console.log(`[cluster] kafkajs: topic ${topic}, leader ${leader}`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, retry: { retries: 10 } });
  await producer.connect();
  const acked = [];
  const chunk = 20;
  let killed = null;
  for (let i = 0; i < records; i += chunk) {
    const values = [];
    for (let j = i; j < Math.min(i + chunk, records); j++) values.push(`kafkajs-${j}`);
    const sending = producer.send({ topic, acks: -1, messages: values.map((value) => ({ partition: 0, value })) });
    if (killed === null && i >= records / 2) {
      // This send is in flight: the leader dies under it.
      killed = leader;
      node('kill', killed);
      console.log(`[cluster] kafkajs: killed leader ${killed} with ${acked.length} records acknowledged`);
    }
    await sending;
    acked.push(...values);
  }
  await producer.disconnect();
  const now = await waitFor('a new leader', async () => {
    const s = await state();
    return s.leader > 0 && s.leader !== killed ? s : null;
  }, 30000);
  console.log(`[cluster] kafkajs: ${acked.length} records acknowledged; leader now ${now.leader}`);

  node('start', killed);
  await waitFor(`node ${killed} back in sync`, whole, 60000);
  await admin.disconnect();

  const consumer = kafka.consumer({ groupId: `compat-cluster-js-${run}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const read = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${read.length} of ${acked.length} records in 60 s`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        read.push(message.value.toString());
        if (read.length >= acked.length) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  // Anything stored twice would arrive within a moment.
  await sleep(500);
  await consumer.disconnect();
  const seen = new Set(read);
  expect(seen.size === read.length, `${read.length - seen.size} records stored twice`);
  const lost = acked.filter((v) => !seen.has(v));
  expect(lost.length === 0, `${lost.length} acknowledged records lost, e.g. ${lost.slice(0, 5)}`);
  expect(read.length === acked.length, `${read.length - acked.length} records nobody acknowledged`);
  const seqs = read.map((v) => Number(v.split('-').pop()));
  expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'records out of order in the partition');
  console.log(`[cluster] kafkajs: read back ${read.length} records, every acknowledged one exactly once`);
  process.exit(0);
})().catch((e) => {
  console.error(`FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
