#!/usr/bin/env python3
"""Leader failover in a 3-node Runnel cluster, seen by a real client.

With one client library (confluent-kafka or kafka-python) it creates a topic
with one partition on 3 replicas (min.insync.replicas=2), produces
sequence-numbered records with an idempotent acks=all producer, SIGKILLs the
partition's leader while records are in flight, keeps producing (the client
has to find the new leader), restarts the killed node, waits until it is in
sync again, reads the partition from the beginning and checks that every
acknowledged record is there exactly once and in order, and that nothing
was refused.

Usage:
    cluster_test.py --bootstrap HOST:PORT,... --node-cmd CMD --client confluent|kafka-python
                    [--records N]

CMD is run as `CMD kill ID` (SIGKILL node ID) and `CMD start ID` (start it
again on its data dir); run.sh writes it. Exit status 0 when every check
passed, 1 otherwise.
"""

import argparse
import subprocess
import sys
import time
import uuid
from collections import Counter

RUN_ID = uuid.uuid4().hex[:8]


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def log(message):
    print("[cluster] %s" % message, flush=True)


def wait_for(what, fn, timeout_s):
    """Polls fn() every 200 ms until it returns a true value; returns it."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # a node that is down answers with errors
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise CheckFailed("%s: not within %ss (last: %r)" % (what, timeout_s, last))


def led_by_another(state, killed):
    """A state() whose leader is a live node other than `killed`, or None."""
    def check():
        s = state()
        return s if s[0] is not None and s[0] > 0 and s[0] != killed else None
    return check


def node_cmd(cmd, action, node):
    subprocess.run(cmd.split() + [action, str(node)], check=True, timeout=60)


def check_read_back(acked, read):
    """Every acknowledged value exactly once, sequence numbers increasing."""
    counts = Counter(read)
    doubled = sorted(v for v, c in counts.items() if c > 1)
    expect(not doubled, "%d records stored twice, e.g. %s" % (len(doubled), doubled[:5]))
    missing = sorted(set(acked) - set(read), key=lambda v: int(v.rsplit("-", 1)[1]))
    expect(not missing, "%d acknowledged records lost, e.g. %s" % (len(missing), missing[:5]))
    seqs = [int(v.rsplit("-", 1)[1]) for v in read]
    expect(seqs == sorted(seqs), "records out of order in the partition")
    extra = sorted(set(read) - set(acked))
    expect(not extra, "records nobody acknowledged: %s" % extra[:5])


# --------------------------------------------------------------------------
# confluent-kafka (librdkafka)
# --------------------------------------------------------------------------

def run_confluent(args):
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "compat-cluster-confluent-%s" % RUN_ID
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    futures = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})],
                                  request_timeout=30)
    futures[topic].result(30)

    def state():
        p = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
        return p.leader, sorted(p.replicas), sorted(p.isrs)

    def whole():
        leader, replicas, isr = state()
        return (leader, isr) if leader > 0 and len(replicas) == 3 and isr == replicas else None

    leader, _ = wait_for("3 replicas in sync", whole, 30)
    log("confluent-kafka: topic %s, leader %d" % (topic, leader))

    acked, failed = [], []

    def delivered(err, msg):
        if err is None:
            acked.append(msg.value().decode())
        else:
            failed.append("%s: %s" % (msg.value().decode(), err))

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 90000,
        "linger.ms": 5,
    })
    half = args.records // 2
    killed = None
    for i in range(args.records):
        producer.produce(topic, value=("confluent-%d" % i).encode(), partition=0, on_delivery=delivered)
        producer.poll(0)
        if i == half // 2:
            producer.flush(30)
        if i == half:
            # Records are in flight: the leader dies under them.
            killed = leader
            node_cmd(args.node_cmd, "kill", killed)
            log("confluent-kafka: killed leader %d with %d records acknowledged" % (killed, len(acked)))
        if i % 50 == 0:
            time.sleep(0.01)
    left = producer.flush(120)
    expect(left == 0, "%d records still unacknowledged after 120 s" % left)
    expect(not failed, "%d records refused, e.g. %s" % (len(failed), failed[:3]))
    new_leader, _, _ = wait_for("a new leader", led_by_another(state, killed), 30)
    log("confluent-kafka: %d records acknowledged; leader now %d" % (len(acked), new_leader))

    node_cmd(args.node_cmd, "start", killed)
    wait_for("node %d back in sync" % killed, whole, 60)

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "compat-cluster-%s" % RUN_ID,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    read = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    break
                raise CheckFailed("consume: %s" % m.error())
            read.append(m.value().decode())
        else:
            raise CheckFailed("did not reach the end of the partition in 60 s")
    finally:
        consumer.close()
    check_read_back(acked, read)
    log("confluent-kafka: read back %d records, every acknowledged one exactly once" % len(read))


# --------------------------------------------------------------------------
# kafka-python
# --------------------------------------------------------------------------

def run_kafka_python(args):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = "compat-cluster-kafka-python-%s" % RUN_ID
    servers = args.bootstrap.split(",")
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="compat-cluster-admin")
    try:
        admin.create_topics([NewTopic(topic, 1, 3, topic_configs={"min.insync.replicas": "2"})],
                            timeout_ms=30000)

        def state():
            d = admin.describe_topics([topic])[0]
            p = d["partitions"][0]
            leader = p.get("leader", p.get("leader_id"))
            replicas = sorted(p.get("replicas", p.get("replica_nodes")) or [])
            isr = sorted(p.get("isr", p.get("isr_nodes")) or [])
            return leader, replicas, isr

        def whole():
            leader, replicas, isr = state()
            return (leader, isr) if leader is not None and leader > 0 and len(replicas) == 3 \
                and isr == replicas else None

        leader, _ = wait_for("3 replicas in sync", whole, 30)
        log("kafka-python: topic %s, leader %d" % (topic, leader))

        producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=10000,
            delivery_timeout_ms=90000,
        )
        acked, failed = [], []
        futures = []
        half = args.records // 2
        killed = None
        for i in range(args.records):
            value = "kafka-python-%d" % i
            f = producer.send(topic, value=value.encode(), partition=0)
            f.add_callback(lambda _md, v=value: acked.append(v))
            f.add_errback(lambda e, v=value: failed.append("%s: %r" % (v, e)))
            futures.append(f)
            if i == half // 2:
                producer.flush(30)
            if i == half:
                killed = leader
                node_cmd(args.node_cmd, "kill", killed)
                log("kafka-python: killed leader %d with %d records acknowledged" % (killed, len(acked)))
            if i % 50 == 0:
                time.sleep(0.01)
        producer.flush(120)
        producer.close(10)
        expect(all(f.is_done for f in futures), "records still unacknowledged after 120 s")
        expect(not failed, "%d records refused, e.g. %s" % (len(failed), failed[:3]))
        new_leader, _, _ = wait_for("a new leader", led_by_another(state, killed), 30)
        log("kafka-python: %d records acknowledged; leader now %d" % (len(acked), new_leader))

        node_cmd(args.node_cmd, "start", killed)
        wait_for("node %d back in sync" % killed, whole, 60)
    finally:
        admin.close()

    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    read = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + 60
        while consumer.position(tp) < end:
            expect(time.monotonic() < deadline, "did not reach offset %d in 60 s" % end)
            for records in consumer.poll(timeout_ms=500).values():
                read.extend(r.value.decode() for r in records)
    finally:
        consumer.close()
    check_read_back(acked, read)
    log("kafka-python: read back %d records, every acknowledged one exactly once" % len(read))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--node-cmd", required=True)
    ap.add_argument("--client", required=True, choices=["confluent", "kafka-python"])
    ap.add_argument("--records", type=int, default=2000)
    args = ap.parse_args()
    try:
        {"confluent": run_confluent, "kafka-python": run_kafka_python}[args.client](args)
    except CheckFailed as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
