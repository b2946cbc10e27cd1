#!/usr/bin/env python3
"""Schema registry compatibility: confluent-kafka's own SchemaRegistryClient,
AvroSerializer and AvroDeserializer against Runnel's registry and broker.

Registers a schema, evolves it compatibly (a new field with a default), is
refused an incompatible change (HTTP 409), produces Avro through the broker
to a topic with broker-side validation on (and sees a non-Avro record
refused), consumes the records back and decodes them, also with the newer
reader schema, then deletes the subject (soft, then permanent).

Usage:
    schema_registry_test.py --bootstrap HOST:PORT --registry URL

Prints PASS/FAIL per check; exit status 1 if any failed.
"""

import argparse
import json
import sys
import time
import traceback
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, SerializingProducer, DeserializingConsumer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringDeserializer, StringSerializer

RUN = uuid.uuid4().hex[:8]
TOPIC = f"compat-sr-{RUN}"
SUBJECT = f"{TOPIC}-value"

V1 = json.dumps({"type": "record", "name": "User", "namespace": "compat",
                 "fields": [{"name": "name", "type": "string"}]})
V2 = json.dumps({"type": "record", "name": "User", "namespace": "compat",
                 "fields": [{"name": "name", "type": "string"},
                            {"name": "age", "type": "int", "default": 0}]})
BAD = json.dumps({"type": "record", "name": "User", "namespace": "compat",
                  "fields": [{"name": "name", "type": "int"},
                             {"name": "age", "type": "int", "default": 0}]})


class Failed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise Failed(message)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    args = ap.parse_args()
    sr = SchemaRegistryClient({"url": args.registry, "timeout": 20, "max.retries": 1})
    state = {}
    results = []

    def check(name, fn):
        t0 = time.time()
        try:
            fn()
            results.append(True)
            print(f"PASS      {name} ({time.time() - t0:.2f}s)")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            results.append(False)
            print(f"FAIL      {name}: {e}")
            traceback.print_exc(limit=3, file=sys.stdout)

    def register_v1():
        sr.set_compatibility(SUBJECT, "BACKWARD")
        expect(sr.get_compatibility(SUBJECT) == "BACKWARD", "compatibility not BACKWARD")
        state["id1"] = sr.register_schema(SUBJECT, Schema(V1, "AVRO"))
        got = sr.get_schema(state["id1"])
        expect(json.loads(got.schema_str) == json.loads(V1), f"get_schema returned {got.schema_str}")
        expect(sr.lookup_schema(SUBJECT, Schema(V1, "AVRO")).version == 1, "lookup of v1 is not version 1")

    def evolve():
        expect(sr.test_compatibility(SUBJECT, Schema(V2, "AVRO")) is True, "v2 reported incompatible")
        state["id2"] = sr.register_schema(SUBJECT, Schema(V2, "AVRO"))
        expect(state["id2"] != state["id1"], "v2 got v1's id")
        latest = sr.get_latest_version(SUBJECT)
        expect((latest.version, latest.schema_id) == (2, state["id2"]), f"latest is {latest.version}/{latest.schema_id}")
        expect(sr.get_version(SUBJECT, 1).schema_id == state["id1"], "version 1 has another id")
        expect(sr.get_versions(SUBJECT) == [1, 2], f"versions {sr.get_versions(SUBJECT)}")
        expect(SUBJECT in sr.get_subjects(), "subject not listed")

    def incompatible():
        expect(sr.test_compatibility(SUBJECT, Schema(BAD, "AVRO")) is False, "BAD reported compatible")
        try:
            sr.register_schema(SUBJECT, Schema(BAD, "AVRO"))
        except SchemaRegistryError as e:
            expect(e.http_status_code == 409, f"status {e.http_status_code}")
            expect(e.error_code == 409, f"error code {e.error_code}")
            expect("incompatible" in e.error_message, e.error_message)
            return
        raise Failed("the incompatible schema was registered")

    def produce():
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        topic = NewTopic(TOPIC, num_partitions=1, replication_factor=1,
                         config={"confluent.value.schema.validation": "true"})
        for f in admin.create_topics([topic]).values():
            f.result(timeout=20)
        serializer = AvroSerializer(sr, V1, conf={"auto.register.schemas": False, "use.latest.version": False})
        delivered = []

        def on_delivery(err, msg):
            delivered.append(err)

        p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0})
        for name in ["ann", "bob"]:
            payload = serializer({"name": name}, SerializationContext(TOPIC, MessageField.VALUE))
            expect(payload[0] == 0 and int.from_bytes(payload[1:5], "big") == state["id1"], "not framed with v1's id")
            p.produce(TOPIC, value=payload, on_delivery=on_delivery)
        p.flush(20)
        expect(delivered == [None, None], f"deliveries: {delivered}")
        # The default subject strategy probes /associations (404 here) and
        # then uses <topic>-value; needs the broker's cluster id.
        sp = SerializingProducer({"bootstrap.servers": args.bootstrap, "linger.ms": 0,
                                  "key.serializer": StringSerializer("utf_8"),
                                  "value.serializer": AvroSerializer(sr, V2)})
        sp.produce(TOPIC, key="cy", value={"name": "cy", "age": 41}, on_delivery=on_delivery)
        sp.flush(20)
        expect(delivered == [None, None, None], f"deliveries: {delivered}")
        # Not Avro: refused by the broker.
        p.produce(TOPIC, value=b"plain text", on_delivery=on_delivery)
        p.flush(20)
        err = delivered[-1]
        expect(err is not None and err.code() == KafkaError.INVALID_RECORD, f"plain text produce: {err}")

    def consume():
        c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"compat-sr-{RUN}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([TOPIC])
        writer = AvroDeserializer(sr)
        reader = AvroDeserializer(sr, V2)
        seen = []
        deadline = time.time() + 30
        while len(seen) < 3 and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            ctx = SerializationContext(m.topic(), MessageField.VALUE, m.headers())
            seen.append((writer(m.value(), ctx), reader(m.value(), ctx)))
        c.close()
        expect(len(seen) == 3, f"consumed {len(seen)} of 3 records")
        expect([w for w, _ in seen] == [{"name": "ann"}, {"name": "bob"}, {"name": "cy", "age": 41}],
               f"writer-schema values: {seen}")
        # Read with v2: v1 data gets the default.
        expect([r for _, r in seen] == [{"name": "ann", "age": 0}, {"name": "bob", "age": 0}, {"name": "cy", "age": 41}],
               f"reader-schema values: {seen}")
        dc = DeserializingConsumer({"bootstrap.servers": args.bootstrap, "group.id": f"compat-sr2-{RUN}",
                                    "auto.offset.reset": "earliest",
                                    "key.deserializer": StringDeserializer("utf_8"),
                                    "value.deserializer": AvroDeserializer(sr)})
        dc.subscribe([TOPIC])
        values = []
        deadline = time.time() + 30
        while len(values) < 3 and time.time() < deadline:
            m = dc.poll(0.5)
            if m is not None and not m.error():
                values.append(m.value())
        dc.close()
        expect(values[2] == {"name": "cy", "age": 41}, f"DeserializingConsumer values: {values}")

    def delete():
        expect(sr.delete_subject(SUBJECT) == [1, 2], "soft delete")
        expect(SUBJECT not in sr.get_subjects(), "soft-deleted subject still listed")
        expect(sr.delete_subject(SUBJECT, permanent=True) == [1, 2], "permanent delete")
        try:
            sr.get_schema(state["id2"])
        except SchemaRegistryError as e:
            expect((e.http_status_code, e.error_code) == (404, 40403), f"{e.http_status_code} {e.error_code}")
            return
        raise Failed("a permanently deleted schema is still served")

    check("SchemaRegistryClient: register v1, read it back by id and by lookup", register_v1)
    check("SchemaRegistryClient: evolve compatibly (new field with a default) to v2", evolve)
    check("SchemaRegistryClient: an incompatible change is refused with 409", incompatible)
    check("AvroSerializer: produce Avro to a validated topic; non-Avro refused (INVALID_RECORD)", produce)
    check("AvroDeserializer: consume and decode, also with the v2 reader schema", consume)
    check("SchemaRegistryClient: soft then permanent subject delete", delete)
    failed = results.count(False)
    print(f"compat-schema-registry: {results.count(True)} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
