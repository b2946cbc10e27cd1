#!/usr/bin/env node
// kafkajs and @kafkajs/confluent-schema-registry (the usual Node.js clients)
// against Runnel's broker and schema registry: register and evolve a schema,
// be refused an incompatible change (409), produce Avro to a topic with
// broker-side validation, see a non-Avro record refused (INVALID_RECORD),
// consume and decode.
//
// Usage: node schema_registry_test.js BOOTSTRAP REGISTRY_URL
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const [bootstrap, url] = process.argv.slice(2);
const run = Math.random().toString(16).slice(2, 10);
const topic = `compat-js-${run}`;
const subject = `${topic}-value`;

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

(async () => {
  const registry = new SchemaRegistry({ host: url });
  const v1 = { type: 'record', name: 'User', namespace: 'compat.js', fields: [{ name: 'name', type: 'string' }] };
  const v2 = { ...v1, fields: [...v1.fields, { name: 'age', type: 'int', default: 0 }] };
  const bad = { ...v1, fields: [{ name: 'name', type: 'int' }] };
  const { id: id1 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(v1) }, { subject });
  const { id: id2 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(v2) }, { subject });
  expect(id1 !== id2, `v1 and v2 got the same id ${id1}`);
  expect((await registry.getLatestSchemaId(subject)) === id2, 'latest is not v2');
  let refused = null;
  try {
    await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(bad) }, { subject });
  } catch (e) {
    refused = e;
  }
  expect(refused && refused.status === 409, `incompatible schema: ${refused}`);

  const kafka = new Kafka({ clientId: 'runnel-compat', brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, configEntries: [{ name: 'confluent.value.schema.validation', value: 'true' }] }],
  });
  await admin.disconnect();
  const producer = kafka.producer({ retry: { retries: 0 } });
  await producer.connect();
  const users = [{ name: 'ann', age: 3 }, { name: 'bo', age: 0 }];
  for (const u of users) {
    await producer.send({ topic, messages: [{ value: await registry.encode(id2, u) }] });
  }
  let junk = null;
  try {
    await producer.send({ topic, messages: [{ value: Buffer.from('not avro') }] });
  } catch (e) {
    junk = e;
  }
  expect(junk && String(junk.type || junk.message).includes('INVALID_RECORD'), `non-Avro record: ${junk}`);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `compat-js-${run}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${seen.length} of ${users.length}`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(await registry.decode(message.value));
        if (seen.length === users.length) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  expect(JSON.stringify(seen) === JSON.stringify(users), `decoded ${JSON.stringify(seen)}`);
  console.log(`registered ids ${id1} and ${id2}, 409 on an incompatible change, produced and decoded ${seen.length} records, non-Avro refused`);
  process.exit(0);
})().catch((e) => {
  console.error(`FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
