#!/usr/bin/env python3
"""Client-compatibility checks for a running Runnel broker.

Drives the broker with two real Kafka client libraries, kafka-python (pure
Python protocol implementation) and confluent-kafka (librdkafka), and checks
the *contents* of everything that comes back: keys, values, headers,
timestamps, per-partition order, offsets, configs. A third, library-free
check fetches the raw record batches (Fetch v4 over a plain socket) to make
sure each batch really is stored in the compression codec the client asked
for and that its CRC is valid: librdkafka silently falls back to no
compression when it believes the broker cannot take a codec, which would
otherwise go unnoticed.

kafka-python is also run as a client of the message format v0/v1 era
(api_version (0, 10, 1) and (0, 9): Produce v2/v1 with magic 1/0 message
sets, Fetch v3/v1), which the broker converts to and from v2 batches.

Consumers read with manual assignment (assign + seek/OFFSET_BEGINNING), and
with consumer groups (subscribe, commit, resume from committed offsets, two
members splitting a topic, the group admin calls). Producers are checked with
and without idempotence (producer id, epoch and sequences on the wire).

Usage:
    compat_test.py --bootstrap HOST:PORT [--suite kafka-python|confluent|all]
                   [--records N] [--results FILE]
    compat_test.py --bootstrap HOST:PORT inspect --topic T --codec C --count N
        (check the stored batches of T; used by run.sh for kcat's topics)
    compat_test.py --bootstrap HOST:PORT create-topic --topic T --partitions N
        (used by run.sh for the kcat consumer group topic)

Each check prints PASS/FAIL/SKIP with its reason; the last line is
"compat-python: N passed, N failed, N skipped". Exit status is 1 if any
check failed.
"""

import argparse
import json
import os
import random
import socket
import struct
import sys
import time
import traceback
import uuid

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}

RUN_ID = uuid.uuid4().hex[:8]


class CheckFailed(Exception):
    pass


class Skip(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed("%s: expected %r, got %r" % (what, expected, actual))


# --------------------------------------------------------------------------
# Tiny check runner: every check runs, failures are collected, not fatal.
# --------------------------------------------------------------------------

class Runner:
    def __init__(self):
        self.results = []  # dicts: name, status, detail, seconds, known_gap

    def run(self, name, fn, *args, requires=(), known_gap=None, **kwargs):
        """Runs fn; returns its value, or None if it failed/skipped.

        requires: values that must not be None (results of earlier checks);
        when one is None the check is skipped as its prerequisite failed.
        known_gap: a reason string for a documented, not-yet-implemented
        feature; a failure is then reported as KNOWN-GAP and does not fail
        the run, a pass is reported so the gap can be removed from the list.
        """
        if any(r is None for r in requires):
            self._record(name, "SKIP", "prerequisite check failed", 0.0)
            return None
        start = time.monotonic()
        try:
            value = fn(*args, **kwargs)
        except Skip as e:
            self._record(name, "SKIP", str(e), time.monotonic() - start)
            return None
        except CheckFailed as e:
            status = "KNOWN-GAP" if known_gap else "FAIL"
            detail = str(e) + ((" [known gap: %s]" % known_gap) if known_gap else "")
            self._record(name, status, detail, time.monotonic() - start)
            return None
        except Exception as e:  # noqa: BLE001 - any client exception is a failure
            status = "KNOWN-GAP" if known_gap else "FAIL"
            tb = traceback.format_exc(limit=4)
            detail = "%s: %s%s\n%s" % (
                type(e).__name__, e,
                (" [known gap: %s]" % known_gap) if known_gap else "", tb)
            self._record(name, status, detail, time.monotonic() - start)
            return None
        detail = ""
        if known_gap:
            detail = "known gap now works; remove it from the known-gap list: %s" % known_gap
        self._record(name, "PASS", detail, time.monotonic() - start)
        return value if value is not None else True

    def _record(self, name, status, detail, seconds):
        self.results.append(dict(name=name, status=status, detail=detail, seconds=round(seconds, 3)))
        line = "%-9s %s (%.2fs)" % (status, name, seconds)
        if detail:
            first, *rest = detail.rstrip().split("\n")
            line += "\n          " + first
            if status == "FAIL" and rest:
                line += "\n" + "\n".join("          " + r for r in rest)
        print(line, flush=True)

    def counts(self):
        c = {"PASS": 0, "FAIL": 0, "SKIP": 0, "KNOWN-GAP": 0}
        for r in self.results:
            c[r["status"]] += 1
        return c


# --------------------------------------------------------------------------
# Raw Fetch: look at the stored record batches without any client library.
# --------------------------------------------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise CheckFailed("raw fetch: broker closed the connection")
        buf += chunk
    return bytes(buf)


def raw_fetch_batches(bootstrap, topic, partition, timeout=10.0):
    """Fetches every batch of one partition with Fetch v4 (the broker's
    lowest Fetch version, record format v2) and parses the batch headers.
    Returns (high_watermark, [batch dict])."""
    host, port = bootstrap.rsplit(":", 1)
    batches = []
    offset = 0
    corr = 0
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        while True:
            if time.monotonic() > deadline:
                raise CheckFailed("raw fetch of %s[%d] timed out at offset %d" % (topic, partition, offset))
            corr += 1
            body = struct.pack(">iiiib", -1, 100, 1, 16 << 20, 0)  # replica, max_wait, min_bytes, max_bytes, isolation
            body += struct.pack(">i", 1) + _kstr(topic)
            body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 8 << 20)
            header = struct.pack(">hhi", 1, 4, corr) + _kstr("runnel-compat-raw")
            msg = header + body
            sock.sendall(struct.pack(">i", len(msg)) + msg)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            resp = _recv_exact(sock, size)
            pos = 0
            (rcorr,) = struct.unpack_from(">i", resp, pos); pos += 4
            expect_eq(rcorr, corr, "raw fetch correlation id")
            pos += 4  # throttle_time_ms
            (ntopics,) = struct.unpack_from(">i", resp, pos); pos += 4
            expect_eq(ntopics, 1, "raw fetch: topics in response")
            (tlen,) = struct.unpack_from(">h", resp, pos); pos += 2 + tlen
            (nparts,) = struct.unpack_from(">i", resp, pos); pos += 4
            expect_eq(nparts, 1, "raw fetch: partitions in response")
            pidx, err, hw, _lso = struct.unpack_from(">ihqq", resp, pos); pos += 22
            expect_eq(pidx, partition, "raw fetch partition index")
            expect(err == 0, "raw fetch of %s[%d] offset %d: error code %d" % (topic, partition, offset, err))
            (naborted,) = struct.unpack_from(">i", resp, pos); pos += 4
            if naborted > 0:
                pos += 16 * naborted
            (rlen,) = struct.unpack_from(">i", resp, pos); pos += 4
            records = resp[pos:pos + rlen] if rlen > 0 else b""
            got_full = False
            rp = 0
            while rp + 61 <= len(records):
                base_offset, batch_len = struct.unpack_from(">qi", records, rp)
                end = rp + 12 + batch_len
                if end > len(records):
                    break  # partial batch at the end of the response
                magic = records[rp + 16]
                (crc,) = struct.unpack_from(">I", records, rp + 17)
                (attributes,) = struct.unpack_from(">h", records, rp + 21)
                (last_delta,) = struct.unpack_from(">i", records, rp + 23)
                producer_id, producer_epoch, base_sequence, count = struct.unpack_from(">qhii", records, rp + 43)
                batches.append(dict(
                    base_offset=base_offset, last_offset=base_offset + last_delta,
                    magic=magic, codec=attributes & 0x7, count=count,
                    producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
                    crc_ok=(crc == crc32c(records[rp + 21:end])), records=records[rp + 61:end]))
                offset = base_offset + last_delta + 1
                got_full = True
                rp = end
            if offset >= hw:
                return hw, batches
            if not got_full:
                raise CheckFailed("raw fetch of %s[%d] at offset %d returned no complete batch (hw %d)"
                                  % (topic, partition, offset, hw))


def _compressed_size(codec, data):
    """Size of data compressed with codec, or None if no library for it."""
    try:
        if codec == "gzip":
            import gzip
            return len(gzip.compress(data, 6))
        if codec == "snappy":
            import snappy
            return len(snappy.compress(data))
        if codec == "lz4":
            import lz4.frame
            return len(lz4.frame.compress(data, block_linked=False))
        if codec == "zstd":
            import zstandard
            return len(zstandard.ZstdCompressor().compress(data))
    except ImportError:
        return None
    return None


def check_stored_batches(bootstrap, topic, partitions, codec, expected_counts):
    """All batches of the topic: magic 2, valid CRC, the expected codec,
    contiguous offsets from 0, record counts adding up.

    Clients (librdkafka, kafka-python, Java) send a batch uncompressed when
    compressing it would not make it smaller, e.g. a batch holding one
    incompressible record; such a plain batch is accepted only if
    compressing its records here does not shrink them by more than 5%.
    Every other batch must carry the requested codec."""
    want = CODEC_IDS[codec]
    summary = []
    for p in range(partitions):
        hw, batches = raw_fetch_batches(bootstrap, topic, p)
        expect_eq(hw, expected_counts[p], "%s[%d] high watermark" % (topic, p))
        next_offset = 0
        for b in batches:
            where = "%s[%d] batch at offset %d..%d" % (topic, p, b["base_offset"], b["last_offset"])
            expect_eq(b["magic"], 2, where + " magic")
            expect(b["crc_ok"], where + ": CRC32C mismatch")
            if b["codec"] != want:
                size = _compressed_size(codec, b["records"]) if b["codec"] == 0 else None
                useless = size is not None and size > 0.95 * len(b["records"])
                expect(useless, "%s: stored with codec %s, but the client was asked for %s and the batch "
                       "compresses from %d to %s bytes (the client fell back or the broker re-encoded)"
                       % (where, CODEC_NAMES.get(b["codec"], b["codec"]), codec, len(b["records"]), size))
            expect_eq(b["base_offset"], next_offset, where + " base offset (gap or overlap)")
            expect_eq(b["last_offset"] - b["base_offset"] + 1, b["count"], where + " record count vs offset delta")
            next_offset = b["last_offset"] + 1
        expect_eq(next_offset, hw, "%s[%d] offsets covered by batches" % (topic, p))
        summary.append(len(batches))
    return summary


def check_idempotent_batches(bootstrap, topic, partitions, expected_counts):
    """The batches of a topic written by one idempotent producer: every batch
    carries the same producer id (>= 0) and epoch, and per partition the base
    sequences run 0, count0, count0+count1, ... without gaps or repeats (a
    retried batch stored twice would show up here, as would a broker that
    drops the producer fields)."""
    pids = set()
    summary = []
    for p in range(partitions):
        hw, batches = raw_fetch_batches(bootstrap, topic, p)
        expect_eq(hw, expected_counts[p], "%s[%d] high watermark" % (topic, p))
        seq = 0
        for b in batches:
            where = "%s[%d] batch at offset %d..%d" % (topic, p, b["base_offset"], b["last_offset"])
            expect(b["producer_id"] >= 0, where + ": producer id %d (not idempotent)" % b["producer_id"])
            expect(b["producer_epoch"] >= 0, where + ": producer epoch %d" % b["producer_epoch"])
            pids.add((b["producer_id"], b["producer_epoch"]))
            expect_eq(b["base_sequence"], seq, where + " base sequence")
            seq += b["count"]
        expect_eq(seq, hw, "%s[%d] records covered by sequences" % (topic, p))
        summary.append(len(batches))
    expect_eq(len(pids), 1, "distinct (producer id, epoch) pairs in %s: %s" % (topic, sorted(pids)))
    return summary


# --------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------

def make_records(codec, n, base_ts):
    """Deterministic keyed records with headers and strictly increasing
    timestamps; a few edge cases mixed in (null value, null key, empty
    value, a large incompressible value, non-ASCII bytes)."""
    rnd = random.Random("%s-%d" % (codec, n))
    recs = []
    for i in range(n):
        key = ("key-%02d" % (i % 37)).encode()
        value = ("%s|%06d|" % (codec, i)).encode() + b"payload-" * (i % 20)
        if i % 250 == 7:
            value = None  # tombstone
        elif i % 250 == 11:
            value = b""
        elif i % 250 == 13:
            value = "héllo wörld ✓ %d" % i
            value = value.encode("utf-8") + bytes(range(256))
        elif i == n // 2:
            value = rnd.randbytes(200_000)  # large, incompressible
        if i % 333 == 5:
            key = None
        headers = [("idx", str(i).encode()), ("codec", codec.encode())]
        if i % 100 == 3:
            headers.append(("empty", b""))
        recs.append(dict(i=i, key=key, value=value, headers=headers, ts=base_ts + i))
    return recs


def expected_offsets_for_time(by_partition, partition, ts):
    """First offset in the partition whose timestamp is >= ts, or None."""
    for off, rec in sorted(by_partition[partition].items()):
        if rec["ts"] >= ts:
            return off
    return None


def verify_produce_assignment(delivered, n, partitions, start=None):
    """delivered: list of (rec, partition, offset) in send order. Checks
    offsets are start[p]..start[p]+k-1 (start: 0 unless given) per partition
    in send order, same key -> same partition. Returns {partition: {offset: rec}}."""
    start = start or {}
    expect_eq(len(delivered), n, "delivered record count")
    by_partition = {p: {} for p in range(partitions)}
    key_partition = {}
    for rec, p, off in delivered:
        expect(p in by_partition, "record %d delivered to unknown partition %r" % (rec["i"], p))
        expect(off not in by_partition[p], "offset %d in partition %d assigned twice" % (off, p))
        by_partition[p][off] = rec
        if rec["key"] is not None:
            prev = key_partition.setdefault(rec["key"], p)
            expect(prev == p, "key %r went to partitions %d and %d" % (rec["key"], prev, p))
    for p, recs in by_partition.items():
        offs = sorted(recs)
        first = start.get(p, 0)
        expect_eq(offs, list(range(first, first + len(offs))), "offsets of partition %d" % p)
        idxs = [recs[o]["i"] for o in offs]
        expect(idxs == sorted(idxs), "partition %d: offsets not in send order" % p)
    return by_partition


def verify_consumed(consumed, by_partition, check_headers=True, check_ts=True):
    """consumed: list of dicts partition, offset, key, value, headers, ts."""
    total = sum(len(v) for v in by_partition.values())
    seen = {}
    last = {}
    for m in consumed:
        p, off = m["partition"], m["offset"]
        expect(p in by_partition, "consumed a record from unexpected partition %r" % p)
        expect(off > last.get(p, -1), "partition %d: offset %d consumed after %d (order)" % (p, off, last.get(p, -1)))
        last[p] = off
        rec = by_partition[p].get(off)
        expect(rec is not None, "partition %d offset %d: consumed a record that was never produced" % (p, off))
        where = "partition %d offset %d (record %d)" % (p, off, rec["i"])
        expect_eq(m["key"], rec["key"], where + " key")
        if m["value"] != rec["value"]:
            raise CheckFailed("%s value: expected %r..., got %r..." % (
                where, None if rec["value"] is None else rec["value"][:60],
                None if m["value"] is None else m["value"][:60]))
        if check_headers:
            expect_eq(m["headers"], rec["headers"], where + " headers")
        if check_ts:
            expect_eq(m["ts"], rec["ts"], where + " timestamp")
        seen[(p, off)] = True
    expect_eq(len(seen), total, "number of distinct records consumed")


# --------------------------------------------------------------------------
# kafka-python
# --------------------------------------------------------------------------

def kafka_python_old_versions_suite(r, bootstrap):
    """kafka-python pinned to old broker versions sends the request versions
    Kafka 4.0 removed (KIP-896): CreateTopics v0/v1, DeleteTopics v0,
    DescribeConfigs v0, ListOffsets v0, OffsetCommit v0/v1, OffsetFetch v0.
    Records are produced at the current versions (Produce v0-2 carries the
    old message formats, which the broker does not store)."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.structs import OffsetAndMetadata

    topic = "compat-kp-old-%s" % RUN_ID
    common = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000)

    def admin_at(version):
        name = "compat-kp-old-admin-%s-%s" % ("-".join(map(str, version)), RUN_ID)
        admin = KafkaAdminClient(api_version=version, **common)
        try:
            created = admin.create_topics([NewTopic(name, 2, 1, topic_configs={"retention.ms": "3600000"})])
            expect_eq([t["error_code"] for t in created["topics"]], [0], "create_topics error codes")
            if version >= (0, 11):
                described = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"])])
                text = str(described)
                expect("3600000" in text, "describe_configs shows the topic's retention.ms: %s" % text)
            deleted = admin.delete_topics([name])
            expect("'error_code': 0" in str(deleted), "delete_topics: %s" % deleted)
        finally:
            admin.close()

    def offsets_at(version):
        group = "compat-kp-old-%s-%s" % ("-".join(map(str, version)), RUN_ID)
        c = KafkaConsumer(group_id=group, enable_auto_commit=False, api_version=version, **common)
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            c.seek_to_end(tp)
            expect_eq(c.position(tp), 5, "latest offset (ListOffsets)")
            c.seek_to_beginning(tp)
            expect_eq(c.position(tp), 0, "earliest offset (ListOffsets)")
            c.commit({tp: OffsetAndMetadata(3, "old", -1)})
            expect_eq(c.committed(tp), 3, "committed offset (OffsetCommit, OffsetFetch)")
        finally:
            c.close()

    p = KafkaProducer(**common)
    for i in range(5):
        p.send(topic, b"old-%d" % i, partition=0).get(timeout=30)
    p.close()
    for version in [(0, 11), (0, 10, 1)]:
        r.run("kafka-python api_version=%s: create/describe/delete topics" % (version,), admin_at, version)
    for version in [(0, 10, 0), (0, 9), (0, 8, 2), (0, 8, 1)]:
        r.run("kafka-python api_version=%s: list, commit and fetch offsets" % (version,), offsets_at, version)


def kafka_python_suite(r, bootstrap, n):
    import kafka
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka import codec as kcodec

    print("--- kafka-python %s" % kafka.__version__, flush=True)
    parts = 3
    topics = {c: "compat-kp-%s-%s" % (c, RUN_ID) for c in CODECS}
    idem_topic = "compat-kp-idempotent-%s" % RUN_ID
    group_topic = "compat-kp-group-%s" % RUN_ID
    txn_topic = "compat-kp-txn-%s" % RUN_ID
    all_topics = list(topics.values()) + [idem_topic, group_topic, txn_topic]
    common = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    modern = {}  # codec -> (topic, records by partition), for the old-format checks

    def kp_msg(m):
        return dict(partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                    headers=[(k, v) for k, v in m.headers], ts=m.timestamp)

    def kp_send(p, topic, recs):
        """Sends recs, flushes; returns [(rec, partition, offset)] in send order."""
        futures = [(rec, p.send(topic, key=rec["key"], value=rec["value"], headers=rec["headers"],
                                timestamp_ms=rec["ts"])) for rec in recs]
        p.flush(timeout=30)
        delivered = []
        for rec, f in futures:
            md = f.get(timeout=30)
            expect_eq(md.topic, topic, "record %d metadata topic" % rec["i"])
            delivered.append((rec, md.partition, md.offset))
        return delivered

    def kp_poll(c, want, timeout=30):
        """Polls until want records arrived (or timeout); then one more
        short poll must return nothing."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=500).values():
                got.extend(kp_msg(m) for m in msgs)
        expect(len(got) >= want, "consumed %d of %d records within %ds" % (len(got), want, timeout))
        extra = c.poll(timeout_ms=300)
        expect(not any(extra.values()), "consumer returned records past the end: %r" % extra)
        return got

    def kp_read_back(topic, by_part, client_id):
        """assign + seek_to_beginning, reads every partition to its end and
        compares with by_part."""
        n_all = sum(len(v) for v in by_part.values())
        c = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                          client_id=client_id, fetch_max_wait_ms=100, **common)
        try:
            tps = [TopicPartition(topic, p) for p in range(parts)]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            for tp in tps:
                expect_eq(c.position(tp, timeout_ms=10000), 0, "position after seek_to_beginning %s" % (tp,))
            got = kp_poll(c, n_all)
        finally:
            c.close()
        verify_consumed(got, by_part)
        return True

    def create_topics():
        admin = KafkaAdminClient(client_id="compat-kp-admin", **common)
        try:
            resp = admin.create_topics([NewTopic(t, parts, 1) for t in all_topics], timeout_ms=10000)
            errs = _kp_topic_errors(resp)
            expect(not errs, "create_topics errors: %r" % errs)
            names = set(admin.list_topics())
            missing = set(all_topics) - names
            expect(not missing, "list_topics misses created topics %s" % sorted(missing))
            described = admin.describe_topics(all_topics)
            expect_eq(len(described), len(all_topics), "describe_topics result count")
            for d in described:
                name = d.get("topic") or d.get("name")
                expect_eq(d.get("error_code", 0), 0, "describe_topics %s error" % name)
                ps = sorted(x["partition"] if "partition" in x else x["partition_index"] for x in d["partitions"])
                expect_eq(ps, list(range(parts)), "describe_topics %s partitions" % name)
                for x in d["partitions"]:
                    expect_eq(x.get("leader", x.get("leader_id")), 0, "%s partition leader" % name)
        finally:
            admin.close()
        # A consumer's metadata view agrees.
        c = KafkaConsumer(group_id=None, **common)
        try:
            for t in all_topics:
                expect_eq(c.partitions_for_topic(t), set(range(parts)), "partitions_for_topic(%s)" % t)
        finally:
            c.close()
        return True

    created = r.run("kafka-python: KafkaAdminClient.create_topics/list_topics/describe_topics (%d topics x 3 partitions)"
                    % len(all_topics),
                    create_topics)

    def kp_transactions():
        # kafka-python >= 2.1 has transactional producers.
        if not hasattr(KafkaProducer, "init_transactions"):
            raise Skip("this kafka-python has no transactions")
        p = KafkaProducer(transactional_id="compat-kp-txn-%s" % RUN_ID, linger_ms=5, **common)
        try:
            p.init_transactions()
            for prefix, count, commit in (("c", 6, True), ("a", 4, False), ("d", 2, True)):
                p.begin_transaction()
                for i in range(count):
                    p.send(txn_topic, key=b"k%d" % i, value=("%s%02d" % (prefix, i)).encode())
                if commit:
                    p.commit_transaction()
                else:
                    p.flush(timeout=30)
                    p.abort_transaction()
        finally:
            p.close(timeout=10)
        values = {}
        for isolation, want in (("read_committed", 8), ("read_uncommitted", 12)):
            c = KafkaConsumer(group_id=None, enable_auto_commit=False, isolation_level=isolation,
                              fetch_max_wait_ms=100, **common)
            try:
                tps = [TopicPartition(txn_topic, q) for q in range(parts)]
                c.assign(tps)
                c.seek_to_beginning(*tps)
                values[isolation] = sorted(m["value"].decode() for m in kp_poll(c, want))
            finally:
                c.close()
        expect_eq(values["read_committed"], ["c%02d" % i for i in range(6)] + ["d%02d" % i for i in range(2)],
                  "read_committed values")
        expect_eq(len(values["read_uncommitted"]), 12, "read_uncommitted sees the aborted records too")
        return True

    r.run("kafka-python: KafkaProducer(transactional_id) commits 6, aborts 4, commits 2; "
          "isolation_level=read_committed sees 8", kp_transactions, requires=(created,))

    base_ts = int(time.time() * 1000) - 3_600_000  # an hour ago, 1 ms apart

    def idempotent_produce():
        # kafka-python >= 2.1 defaults to enable_idempotence=True (InitProducerId,
        # producer id/epoch/sequence in every batch).
        recs = make_records("kp-idempotent", n, base_ts)
        p = KafkaProducer(client_id="compat-kp-default", linger_ms=5, **common)
        try:
            expect(p.config["enable_idempotence"] is True,
                   "this kafka-python does not enable idempotence by default (%r)" % p.config["enable_idempotence"])
            delivered = kp_send(p, idem_topic, recs)
        finally:
            p.close(timeout=10)
        return verify_produce_assignment(delivered, n, parts)

    idem = r.run("kafka-python: default KafkaProducer (idempotent) produces %d keyed records" % n,
                 idempotent_produce, requires=(created,))
    r.run("kafka-python: idempotent producer's records read back exactly once",
          lambda: kp_read_back(idem_topic, idem, "compat-kp-idempotent-consumer"), requires=(idem,))
    r.run("wire: kafka-python idempotent batches carry one producer id/epoch, sequences contiguous",
          lambda: check_idempotent_batches(bootstrap, idem_topic, parts, {p: len(v) for p, v in idem.items()}),
          requires=(idem,))

    for codec in CODECS:
        topic = topics[codec]
        ctype = None if codec == "none" else codec
        have = {"none": True, "gzip": kcodec.has_gzip(), "snappy": kcodec.has_snappy(),
                "lz4": kcodec.has_lz4(), "zstd": kcodec.has_zstd()}[codec]
        recs = make_records(codec, n, base_ts)

        def produce():
            if not have:
                raise Skip("kafka-python has no %s library installed (see requirements.txt)" % codec)
            p = KafkaProducer(client_id="compat-kp-%s" % codec, acks="all", compression_type=ctype,
                              enable_idempotence=False, linger_ms=5, max_request_size=1048576, **common)
            try:
                delivered = kp_send(p, topic, recs)
            finally:
                p.close(timeout=10)
            return verify_produce_assignment(delivered, n, parts)

        by_part = r.run("kafka-python: produce %d keyed records with headers, acks=all, compression=%s"
                        % (n, codec), produce, requires=(created,))
        if codec in ("none", "zstd"):
            modern[codec] = (topic, by_part)

        r.run("kafka-python: KafkaConsumer assign+seek_to_beginning reads back all records (%s)" % codec,
              lambda by_part=by_part, topic=topic: kp_read_back(topic, by_part, "compat-kp-consumer"),
              requires=(by_part,))

        def list_offsets(by_part=by_part):
            c = KafkaConsumer(group_id=None, enable_auto_commit=False, client_id="compat-kp-offsets", **common)
            try:
                tps = [TopicPartition(topic, p) for p in range(parts)]
                begin = c.beginning_offsets(tps, timeout_ms=10000)
                end = c.end_offsets(tps, timeout_ms=10000)
                for tp in tps:
                    expect_eq(begin[tp], 0, "beginning_offsets %s" % (tp,))
                    expect_eq(end[tp], len(by_part[tp.partition]), "end_offsets %s" % (tp,))
                # offsets_for_times: first, a middle and a past-the-end timestamp.
                for probe in (base_ts - 1000, base_ts + n // 2, base_ts + n // 3 + 1, base_ts + n + 1000):
                    res = c.offsets_for_times({tp: probe for tp in tps}, timeout_ms=10000)
                    for tp in tps:
                        want = expected_offsets_for_time(by_part, tp.partition, probe)
                        got = res.get(tp)
                        if want is None:
                            expect(got is None, "offsets_for_times %s ts=%d: expected None, got %r" % (tp, probe, got))
                        else:
                            expect(got is not None, "offsets_for_times %s ts=%d: expected offset %d, got None"
                                   % (tp, probe, want))
                            expect_eq(got.offset, want, "offsets_for_times %s ts=%d offset" % (tp, probe))
                            expect_eq(got.timestamp, by_part[tp.partition][want]["ts"],
                                      "offsets_for_times %s ts=%d timestamp" % (tp, probe))
            finally:
                c.close()
            return True

        r.run("kafka-python: beginning_offsets/end_offsets/offsets_for_times (%s)" % codec,
              list_offsets, requires=(by_part,))

        r.run("wire: kafka-python %s batches stored as %s, CRC ok, offsets contiguous" % (codec, codec),
              lambda by_part=by_part: check_stored_batches(
                  bootstrap, topic, parts, codec, {p: len(v) for p, v in by_part.items()}),
              requires=(by_part,))


    # -------------------------------------------------- consumer groups
    group = "compat-kp-group-%s" % RUN_ID
    tps = [TopicPartition(group_topic, p) for p in range(parts)]
    n_more = 50
    group_state = {}

    def kp_group_consumer(client_id):
        # heartbeat_interval_ms small so rebalances are noticed quickly; the
        # broker's group_min_session_timeout_ms (run.sh config) allows 6 s.
        return KafkaConsumer(group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=500, fetch_max_wait_ms=100,
                             client_id=client_id, **common)

    def kp_admin_call(admin, names, *args):
        """kafka-python 3.x renamed the group admin calls (list_groups,
        describe_groups, list_group_offsets); 2.x has *_consumer_group*."""
        for name in names:
            fn = getattr(admin, name, None)
            if fn is not None:
                return fn(*args)
        raise CheckFailed("KafkaAdminClient has none of %s" % (names,))

    def group_produce():
        recs = make_records("kp-group", n, base_ts)
        p = KafkaProducer(client_id="compat-kp-group-producer", acks="all", enable_idempotence=False,
                          linger_ms=5, **common)
        try:
            delivered = kp_send(p, group_topic, recs)
        finally:
            p.close(timeout=10)
        return verify_produce_assignment(delivered, n, parts)

    gdata = r.run("kafka-python: produce %d records for the consumer group checks" % n,
                  group_produce, requires=(created,))

    def group_consume_commit():
        c = kp_group_consumer("compat-kp-group-1")
        try:
            c.subscribe([group_topic])
            got = kp_poll(c, n)
            expect_eq(c.assignment(), set(tps), "assignment of the group's only member")
            verify_consumed(got, gdata)
            for tp in tps:
                expect_eq(c.position(tp), len(gdata[tp.partition]), "position of %s after consuming" % (tp,))
            c.commit()
            for tp in tps:
                expect_eq(c.committed(tp), len(gdata[tp.partition]), "committed(%s) after commit()" % (tp,))
        finally:
            c.close(autocommit=False)
        return True

    consumed = r.run("kafka-python: KafkaConsumer(group_id) subscribe reads 3 partitions exactly once, commit()",
                     group_consume_commit, requires=(gdata,))

    def group_offsets():
        ends = {p: len(v) for p, v in gdata.items()}
        c = KafkaConsumer(group_id=None, client_id="compat-kp-group-offsets", **common)
        try:
            end = c.end_offsets(tps, timeout_ms=10000)
            expect_eq({tp.partition: o for tp, o in end.items()}, ends, "end offsets")
        finally:
            c.close()
        admin = KafkaAdminClient(client_id="compat-kp-group-admin", **common)
        try:
            res = kp_admin_call(admin, ("list_consumer_group_offsets", "list_group_offsets"), group)
        finally:
            admin.close()
        if group in res:  # 3.x: {group: {tp: OffsetAndMetadata}}
            res = res[group]
        got = {tp.partition: om.offset for tp, om in res.items() if tp.topic == group_topic}
        expect_eq(got, ends, "committed offsets listed by KafkaAdminClient (= end offsets)")
        expect_eq(len(res), parts, "partitions with committed offsets")
        return True

    r.run("kafka-python: KafkaAdminClient lists the committed offsets = end offsets", group_offsets,
          requires=(consumed,))

    def group_resume():
        start = {p: len(v) for p, v in gdata.items()}
        recs = make_records("kp-group-more", n_more, base_ts + n + 1000)
        p = KafkaProducer(client_id="compat-kp-group-producer", acks="all", enable_idempotence=False,
                          linger_ms=5, **common)
        try:
            delivered = kp_send(p, group_topic, recs)
        finally:
            p.close(timeout=10)
        more = verify_produce_assignment(delivered, n_more, parts, start=start)
        c = kp_group_consumer("compat-kp-group-2")
        group_state["consumer"] = c  # left open for the describe/list check
        c.subscribe([group_topic])
        got = kp_poll(c, n_more)
        old = [(m["partition"], m["offset"]) for m in got if m["offset"] < start[m["partition"]]]
        expect(not old, "the new member re-read %d records below the committed offsets, e.g. %s"
               % (len(old), old[:5]))
        verify_consumed(got, more)
        for tp in tps:
            expect_eq(c.committed(tp), start[tp.partition], "committed(%s) seen by the new member" % (tp,))
        return True

    resumed = r.run("kafka-python: a new consumer in the group reads only the %d records produced after the commit"
                    % n_more, group_resume, requires=(consumed,))

    def group_describe_list():
        admin = KafkaAdminClient(client_id="compat-kp-group-admin", **common)
        try:
            desc = kp_admin_call(admin, ("describe_consumer_groups", "describe_groups"), [group])
            listing = kp_admin_call(admin, ("list_consumer_groups", "list_groups"))
        finally:
            admin.close()
        # 3.x: describe -> {group_id: dict}, list -> [dict]
        expect(isinstance(desc, dict) and group in desc, "describe_groups result has no %s: %r" % (group, desc))
        d = desc[group]
        expect_eq(d.get("error"), None, "describe_groups error")
        expect_eq(d.get("group_state"), "Stable", "group state")
        expect_eq(d.get("protocol_type"), "consumer", "protocol type")
        expect(d.get("protocol_data") in ("range", "roundrobin", "sticky", "cooperative-sticky"),
               "assignor (protocol_data) %r" % d.get("protocol_data"))
        members = d.get("members") or []
        expect_eq(len(members), 1, "members")
        m = members[0]
        expect_eq(m.get("client_id"), "compat-kp-group-2", "member client_id")
        expect(m.get("member_id", "").startswith("compat-kp-group-2-"), "member_id %r" % m.get("member_id"))
        meta = m.get("member_metadata")
        expect(isinstance(meta, dict) and meta.get("topics") == [group_topic],
               "member subscription metadata %r" % (meta,))
        asg = m.get("member_assignment")
        expect(isinstance(asg, dict), "member assignment not decoded: %r" % (asg,))
        assigned = sorted((a["topic"], p) for a in asg.get("assigned_partitions", []) for p in a["partitions"])
        expect_eq(assigned, [(group_topic, p) for p in range(parts)], "member assignment")
        entries = [g for g in listing if g.get("group_id") == group]
        expect_eq(len(entries), 1, "list_groups entries for %s (listing %r)" % (group, listing))
        expect_eq(entries[0].get("protocol_type"), "consumer", "list_groups protocol type")
        if "group_state" in entries[0]:
            expect_eq(entries[0]["group_state"], "Stable", "list_groups state")
        return True

    try:
        r.run("kafka-python: describe_groups/list_groups show the group (Stable, 1 member, its assignment)",
              group_describe_list, requires=(resumed,))
    finally:
        c = group_state.pop("consumer", None)
        if c is not None:
            c.close(autocommit=False)

    print("--- kafka-python with old api_version (message format v0/v1)", flush=True)
    kafka_python_old_formats_suite(r, bootstrap, min(n, 500), modern)


# kafka-python as a client of the message format v0/v1 era: api_version
# (0, 10, 1) produces magic 1 (Produce v2) and fetches with Fetch v3;
# (0, 9) produces magic 0 (Produce v1) and fetches with Fetch v1.
OLD_CLIENTS = [((0, 10, 1), 1), ((0, 9), 0)]
OLD_CODECS = ["none", "gzip", "snappy", "lz4"]


def kafka_python_old_formats_suite(r, bootstrap, n, modern_topics=None):
    """Old kafka-python clients produce and consume; their records are stored
    as v2 batches, and they read back what modern producers wrote."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka import codec as kcodec

    common = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    have = {"none": True, "gzip": kcodec.has_gzip(), "snappy": kcodec.has_snappy(), "lz4": kcodec.has_lz4()}

    def old_read(topic, api_version, want, client_id):
        tp = TopicPartition(topic, 0)
        c = KafkaConsumer(group_id=None, enable_auto_commit=False, api_version=api_version,
                          client_id=client_id, fetch_max_wait_ms=100, **common)
        try:
            c.assign([tp])
            c.seek(tp, 0)
            got = []
            deadline = time.monotonic() + 30
            while len(got) < want and time.monotonic() < deadline:
                for msgs in c.poll(timeout_ms=500).values():
                    got.extend(msgs)
            expect(len(got) >= want, "consumed %d of %d records within 30s" % (len(got), want))
            expect(not any(c.poll(timeout_ms=300).values()), "records past the end")
            return got
        finally:
            c.close()

    for api_version, magic in OLD_CLIENTS:
        label = ".".join(map(str, api_version))
        for codec in OLD_CODECS:
            topic = "compat-kp-old-%s-%s-%s" % (label, codec, RUN_ID)
            base_ts = int(time.time() * 1000) - 60_000

            def produce(api_version=api_version, codec=codec, topic=topic, magic=magic, base_ts=base_ts):
                if not have[codec]:
                    raise Skip("kafka-python has no %s library installed" % codec)
                if magic == 0 and codec == "lz4":
                    try:
                        import xxhash  # noqa: F401 - kafka-python needs it for magic 0's lz4 framing
                    except ImportError:
                        raise Skip("magic 0 lz4 needs the xxhash module (see requirements.txt)")
                p = KafkaProducer(api_version=api_version, acks="all", linger_ms=5,
                                  compression_type=None if codec == "none" else codec,
                                  client_id="compat-kp-old-%s" % label, **common)
                try:
                    futures = []
                    for i in range(n):
                        key = None if i % 97 == 5 else ("key-%03d" % (i % 50)).encode()
                        value = None if i % 89 == 7 else ("%s|%s|%06d|" % (label, codec, i)).encode() * (1 + i % 5)
                        ts = base_ts + i if magic == 1 else None
                        futures.append((i, key, value, ts, p.send(topic, key=key, value=value, partition=0,
                                                                  timestamp_ms=ts)))
                    p.flush(timeout=30)
                    sent = {}
                    for i, key, value, ts, f in futures:
                        md = f.get(timeout=30)
                        expect_eq(md.offset, i, "offset of record %d" % i)
                        sent[i] = (key, value, ts)
                    return sent
                finally:
                    p.close(timeout=10)

            sent = r.run("kafka-python api_version=%s (magic %d): produce %d records, compression=%s"
                         % (label, magic, n, codec), produce)

            def consume(sent=sent, topic=topic, api_version=api_version, magic=magic):
                got = old_read(topic, api_version, n, "compat-kp-old-consumer-%s" % label)
                for m in got:
                    key, value, ts = sent[m.offset]
                    where = "offset %d" % m.offset
                    expect_eq(m.key, key, where + " key")
                    expect_eq(m.value, value, where + " value")
                    if magic == 1:
                        expect_eq(m.timestamp, ts, where + " timestamp")
                    else:
                        expect(m.timestamp in (None, -1), where + ": magic 0 has no timestamp, got %r" % m.timestamp)
                expect_eq(sorted(m.offset for m in got), list(range(n)), "offsets read back")
                return True

            r.run("kafka-python api_version=%s: reads back its records (%s)" % (label, codec),
                  consume, requires=(sent,))
            r.run("wire: kafka-python api_version=%s %s records stored as v2 batches in %s" % (label, codec, codec),
                  lambda topic=topic: check_stored_batches(bootstrap, topic, 1, codec, {0: n}),
                  requires=(sent,))

    # Old consumers read what a modern producer wrote (headers are left
    # out; message format v0 carries no timestamps).
    for api_version, magic in OLD_CLIENTS:
        label = ".".join(map(str, api_version))
        for codec, (topic, by_part) in sorted((modern_topics or {}).items()):
            def old_reads_new(api_version=api_version, magic=magic, topic=topic, by_part=by_part):
                for p, recs in sorted(by_part.items()):
                    tp = TopicPartition(topic, p)
                    c = KafkaConsumer(group_id=None, enable_auto_commit=False, api_version=api_version,
                                      fetch_max_wait_ms=100, client_id="compat-kp-old-reader", **common)
                    try:
                        c.assign([tp])
                        c.seek(tp, 0)
                        got = []
                        deadline = time.monotonic() + 30
                        while len(got) < len(recs) and time.monotonic() < deadline:
                            for msgs in c.poll(timeout_ms=500).values():
                                got.extend(msgs)
                    finally:
                        c.close()
                    expect_eq(sorted(m.offset for m in got), sorted(recs), "offsets of %s[%d]" % (topic, p))
                    for m in got:
                        rec = recs[m.offset]
                        where = "%s[%d] offset %d" % (topic, p, m.offset)
                        expect_eq(m.key, rec["key"], where + " key")
                        expect(m.value == rec["value"], where + " value differs")
                        if magic == 1:
                            expect_eq(m.timestamp, rec["ts"], where + " timestamp")
                return True

            r.run("kafka-python api_version=%s reads the %s records a modern producer wrote" % (label, codec),
                  old_reads_new, requires=(by_part,))


def _kp_topic_errors(resp):
    """Errors out of a kafka-python create_topics result, whatever its shape
    (a CreateTopicsResponse object in 2.x, a dict in 3.x)."""
    errs = []
    if isinstance(resp, dict):
        for t in resp.get("topics", []):
            if t.get("error_code", 0) != 0:
                errs.append((t.get("name"), t.get("error_code"), t.get("error_message")))
        return errs
    for t in getattr(resp, "topic_errors", []) or getattr(resp, "topics", []):
        if t[1] != 0:  # (name, error_code, ...)
            errs.append(tuple(t))
    return errs


# --------------------------------------------------------------------------
# confluent-kafka
# --------------------------------------------------------------------------

def confluent_suite(r, bootstrap, n):
    import confluent_kafka as ck
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic)

    print("--- confluent-kafka %s (librdkafka %s)" % (ck.__version__, ck.libversion()[0]), flush=True)
    parts = 3
    topics = {c: "compat-ck-%s-%s" % (c, RUN_ID) for c in CODECS}
    admin_topic = "compat-ck-admin-%s" % RUN_ID
    idem_topic = "compat-ck-idempotent-%s" % RUN_ID
    group_topic = "compat-ck-group-%s" % RUN_ID
    split_topic = "compat-ck-split-%s" % RUN_ID
    split_parts = 4
    txn_topic = "compat-ck-txn-%s" % RUN_ID
    txn_in = "compat-ck-txn-in-%s" % RUN_ID
    txn_out = "compat-ck-txn-out-%s" % RUN_ID
    txn_fence = "compat-ck-txn-fence-%s" % RUN_ID
    # topic -> partitions, for every topic created up front
    topic_parts = dict({t: parts for t in topics.values()}, **{
        admin_topic: parts, idem_topic: parts, group_topic: parts, split_topic: split_parts,
        txn_topic: parts, txn_in: 1, txn_out: 1, txn_fence: 1})
    base = {"bootstrap.servers": bootstrap}
    # log_level 4: no NOTICE lines such as "partition count changed".
    admin = AdminClient(dict(base, **{"client.id": "compat-ck-admin", "log_level": 4}))

    def wait_futures(futs, what):
        out = {}
        for k, f in futs.items():
            try:
                out[k] = f.result(timeout=15)
            except KafkaException as e:
                raise CheckFailed("%s %s: %s" % (what, k, e.args[0]))
        return out

    def ck_msg(m):
        ts_type, ts = m.timestamp()
        expect_eq(ts_type, ck.TIMESTAMP_CREATE_TIME, "timestamp type")
        return dict(partition=m.partition(), offset=m.offset(), key=m.key(), value=m.value(),
                    headers=m.headers() or [], ts=ts)

    def ck_produce(topic, recs, config):
        """Produces recs with a new Producer(config); returns
        [(rec, partition, offset)] in send order."""
        delivered = []
        errors = []

        def on_delivery(err, msg, rec):
            if err is not None:
                errors.append((rec["i"], err))
            else:
                delivered.append((rec, msg.partition(), msg.offset()))

        p = Producer(dict(base, **config))
        for rec in recs:
            while True:
                try:
                    p.produce(topic, key=rec["key"], value=rec["value"], headers=rec["headers"],
                              timestamp=rec["ts"], on_delivery=lambda e, m, rec=rec: on_delivery(e, m, rec))
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(30)
        expect_eq(left, 0, "messages still queued after flush(30)")
        expect(not errors, "delivery errors: %s" % errors[:5])
        delivered.sort(key=lambda d: d[0]["i"])
        return delivered

    def ck_poll_to_eof(c, want, nparts, timeout=30):
        """Polls c (enable.partition.eof) until want records arrived and
        nparts partitions are at EOF. Returns the records."""
        got = []
        eof = set()
        deadline = time.monotonic() + timeout
        while (len(got) < want or len(eof) < nparts) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise CheckFailed("consumer error: %s" % m.error())
            eof.discard(m.partition())
            got.append(ck_msg(m))
        expect(len(got) >= want, "consumed %d of %d records within %ds" % (len(got), want, timeout))
        expect_eq(len(eof), nparts, "partitions that reached EOF")
        return got

    def ck_read_back(topic, by_part, nparts):
        c = Consumer(dict(base, **{"group.id": "compat-unused-%s" % RUN_ID, "enable.auto.commit": False,
                                   "enable.auto.offset.store": False, "client.id": "compat-ck-consumer",
                                   "fetch.wait.max.ms": 100, "enable.partition.eof": True}))
        try:
            c.assign([TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(nparts)])
            got = ck_poll_to_eof(c, sum(len(v) for v in by_part.values()), nparts)
        finally:
            c.close()
        verify_consumed(got, by_part)
        return True

    def create_topics():
        new = [NewTopic(t, num_partitions=np, replication_factor=1) for t, np in topic_parts.items()
               if t != admin_topic]
        new.append(NewTopic(admin_topic, num_partitions=parts, replication_factor=1,
                            config={"retention.ms": "3600000", "cleanup.policy": "delete"}))
        wait_futures(admin.create_topics(new, operation_timeout=10, request_timeout=15), "create_topics")
        md = admin.list_topics(timeout=10)
        expect_eq(md.orig_broker_id, 0, "metadata answered by broker id")
        expect_eq(sorted(md.brokers), [0], "broker ids in metadata")
        host, port = bootstrap.rsplit(":", 1)
        b = md.brokers[0]
        expect_eq((b.host, b.port), (host, int(port)), "advertised broker address")
        expect_eq(md.controller_id, 0, "controller id")
        for t, np in topic_parts.items():
            expect(t in md.topics, "list_topics does not show %s" % t)
            tm = md.topics[t]
            expect(tm.error is None, "topic %s metadata error %s" % (t, tm.error))
            expect_eq(sorted(tm.partitions), list(range(np)), "%s partitions" % t)
            for p in tm.partitions.values():
                expect(p.error is None, "%s[%d] error %s" % (t, p.id, p.error))
                expect_eq((p.leader, list(p.replicas), list(p.isrs)), (0, [0], [0]),
                          "%s[%d] leader/replicas/isrs" % (t, p.id))
        return True

    created = r.run("confluent-kafka: AdminClient.create_topics + list_topics (%d topics x 3-4 partitions)"
                    % len(topic_parts), create_topics)

    def create_duplicate():
        futs = admin.create_topics([NewTopic(admin_topic, num_partitions=1, replication_factor=1)],
                                   request_timeout=15)
        try:
            futs[admin_topic].result(timeout=15)
        except KafkaException as e:
            expect_eq(e.args[0].code(), KafkaError.TOPIC_ALREADY_EXISTS, "error for an existing topic")
            return True
        raise CheckFailed("creating an existing topic succeeded")

    r.run("confluent-kafka: create_topics on an existing topic -> TOPIC_ALREADY_EXISTS",
          create_duplicate, requires=(created,))

    def describe_configs():
        res = ConfigResource(ConfigResource.Type.TOPIC, admin_topic)
        cfg = wait_futures(admin.describe_configs([res], request_timeout=15), "describe_configs")[res]
        expect("retention.ms" in cfg, "describe_configs has no retention.ms (keys: %s)" % sorted(cfg)[:20])
        expect_eq(cfg["retention.ms"].value, "3600000", "retention.ms set at creation")
        expect_eq(cfg["cleanup.policy"].value, "delete", "cleanup.policy")
        expect(not cfg["retention.ms"].is_default, "retention.ms reported as default although set")
        expect("segment.bytes" in cfg, "describe_configs has no segment.bytes default")
        expect(cfg["segment.bytes"].value.isdigit(), "segment.bytes not a number: %r" % cfg["segment.bytes"].value)
        return True

    r.run("confluent-kafka: describe_configs(topic) returns the creation configs and defaults",
          describe_configs, requires=(created,))

    def alter_configs():
        res = ConfigResource(ConfigResource.Type.TOPIC, admin_topic, incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
        wait_futures(admin.incremental_alter_configs([res], request_timeout=15), "incremental_alter_configs")
        cfg = wait_futures(admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, admin_topic)],
                                                  request_timeout=15), "describe_configs")
        cfg = list(cfg.values())[0]
        expect_eq(cfg["retention.ms"].value, "7200000", "retention.ms after incremental_alter_configs")
        return True

    r.run("confluent-kafka: incremental_alter_configs(SET retention.ms) is visible in describe_configs",
          alter_configs, requires=(created,))

    def describe_cluster():
        desc = admin.describe_cluster(request_timeout=15).result(timeout=15)
        expect(desc.cluster_id, "empty cluster id")
        expect_eq([nd.id for nd in desc.nodes], [0], "cluster node ids")
        expect_eq(desc.controller.id if desc.controller else None, 0, "controller")
        return True

    r.run("confluent-kafka: describe_cluster", describe_cluster)

    def create_partitions():
        wait_futures(admin.create_partitions([NewPartitions(admin_topic, 5)], request_timeout=15),
                     "create_partitions")
        md = admin.list_topics(topic=admin_topic, timeout=10)
        expect_eq(sorted(md.topics[admin_topic].partitions), list(range(5)), "partitions after create_partitions")
        return True

    r.run("confluent-kafka: create_partitions 3 -> 5", create_partitions, requires=(created,))

    base_ts = int(time.time() * 1000) - 1_800_000
    per_codec = {}
    for codec in CODECS:
        topic = topics[codec]
        recs = make_records(codec, n, base_ts)

        def produce():
            delivered = ck_produce(topic, recs, {"client.id": "compat-ck-%s" % codec, "compression.type": codec,
                                                 "acks": "all", "linger.ms": 5, "enable.idempotence": False})
            return verify_produce_assignment(delivered, n, parts)

        by_part = r.run("confluent-kafka: produce %d keyed records with headers, acks=all, compression=%s"
                        % (n, codec), produce, requires=(created,))
        per_codec[codec] = by_part

        r.run("confluent-kafka: Consumer assign(OFFSET_BEGINNING) reads back all records (%s)" % codec,
              lambda by_part=by_part, topic=topic: ck_read_back(topic, by_part, parts), requires=(by_part,))

        def offsets(by_part=by_part):
            c = Consumer(dict(base, **{"group.id": "compat-unused-%s" % RUN_ID, "enable.auto.commit": False}))
            try:
                for p in range(parts):
                    wm = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                    expect_eq(wm, (0, len(by_part[p])), "get_watermark_offsets %s[%d]" % (topic, p))
                for probe in (base_ts - 1000, base_ts + n // 2, base_ts + n // 3 + 1, base_ts + n + 1000):
                    res = c.offsets_for_times([TopicPartition(topic, p, probe) for p in range(parts)], timeout=10)
                    for tp in res:
                        expect(tp.error is None, "offsets_for_times %s[%d]: %s" % (topic, tp.partition, tp.error))
                        want = expected_offsets_for_time(by_part, tp.partition, probe)
                        # librdkafka reports "no such record" as OFFSET_END (-1).
                        expect_eq(tp.offset, -1 if want is None else want,
                                  "offsets_for_times %s[%d] ts=%d" % (topic, tp.partition, probe))
            finally:
                c.close()
            return True

        r.run("confluent-kafka: get_watermark_offsets/offsets_for_times (%s)" % codec,
              offsets, requires=(by_part,))

        r.run("wire: confluent-kafka %s batches stored as %s, CRC ok, offsets contiguous" % (codec, codec),
              lambda by_part=by_part: check_stored_batches(
                  bootstrap, topic, parts, codec, {p: len(v) for p, v in by_part.items()}),
              requires=(by_part,))

    # -------------------------------------------------- idempotent producer
    def idempotent_produce():
        recs = make_records("ck-idempotent", n, base_ts)
        delivered = ck_produce(idem_topic, recs, {"client.id": "compat-ck-idempotent", "enable.idempotence": True,
                                                  "linger.ms": 5})
        return verify_produce_assignment(delivered, n, parts)

    idem = r.run("confluent-kafka: Producer(enable.idempotence=true) produces %d keyed records" % n,
                 idempotent_produce, requires=(created,))
    r.run("confluent-kafka: idempotent producer's records read back exactly once",
          lambda: ck_read_back(idem_topic, idem, parts), requires=(idem,))
    r.run("wire: confluent-kafka idempotent batches carry one producer id/epoch, sequences contiguous",
          lambda: check_idempotent_batches(bootstrap, idem_topic, parts, {p: len(v) for p, v in idem.items()}),
          requires=(idem,))

    # -------------------------------------------------- consumer groups
    group = "compat-ck-group-%s" % RUN_ID
    split_group = "compat-ck-split-%s" % RUN_ID
    n_more = 50
    group_conf = {"auto.offset.reset": "earliest", "enable.auto.commit": False, "enable.partition.eof": True,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 300, "fetch.wait.max.ms": 100}

    def group_consumer(group_id, client_id):
        return Consumer(dict(base, **group_conf, **{"group.id": group_id, "client.id": client_id}))

    def committed_map(tps):
        return {tp.partition: tp.offset for tp in tps}

    def group_produce():
        recs = make_records("ck-group", n, base_ts)
        delivered = ck_produce(group_topic, recs, {"client.id": "compat-ck-group-producer", "linger.ms": 5,
                                                   "enable.idempotence": False})
        return verify_produce_assignment(delivered, n, parts)

    gdata = r.run("confluent-kafka: produce %d records for the consumer group checks" % n,
                  group_produce, requires=(created,))

    def group_consume_commit():
        ends = {p: len(v) for p, v in gdata.items()}
        c = group_consumer(group, "compat-ck-group-1")
        try:
            c.subscribe([group_topic])
            got = ck_poll_to_eof(c, n, parts)
            expect_eq(sorted((tp.topic, tp.partition) for tp in c.assignment()),
                      [(group_topic, p) for p in range(parts)], "assignment of the group's only member")
            extra = c.poll(0.3)
            expect(extra is None or (extra.error() and extra.error().code() == KafkaError._PARTITION_EOF),
                   "a record past the end: %r" % (extra and (extra.partition(), extra.offset())))
            verify_consumed(got, gdata)
            res = c.commit(asynchronous=False)
            expect(all(tp.error is None for tp in res), "commit errors: %s" % [tp for tp in res if tp.error])
            expect_eq(committed_map(res), ends, "offsets returned by commit()")
            tps = [TopicPartition(group_topic, p) for p in range(parts)]
            expect_eq(committed_map(c.committed(tps, timeout=10)), ends, "committed() after commit")
        finally:
            c.close()
        return True

    consumed = r.run("confluent-kafka: Consumer(group.id) subscribe reads 3 partitions exactly once, "
                     "commit(asynchronous=False)", group_consume_commit, requires=(gdata,))

    def group_resume():
        start = {p: len(v) for p, v in gdata.items()}
        recs = make_records("ck-group-more", n_more, base_ts + n + 1000)
        delivered = ck_produce(group_topic, recs, {"client.id": "compat-ck-group-producer", "linger.ms": 5,
                                                   "enable.idempotence": False})
        more = verify_produce_assignment(delivered, n_more, parts, start=start)
        c = group_consumer(group, "compat-ck-group-2")
        try:
            c.subscribe([group_topic])
            got = ck_poll_to_eof(c, n_more, parts)
            old = [(m["partition"], m["offset"]) for m in got if m["offset"] < start[m["partition"]]]
            expect(not old, "the new member re-read %d records below the committed offsets, e.g. %s"
                   % (len(old), old[:5]))
            verify_consumed(got, more)
            tps = [TopicPartition(group_topic, p) for p in range(parts)]
            expect_eq(committed_map(c.committed(tps, timeout=10)), start, "committed() seen by the new member")
            c.commit(asynchronous=False)
        finally:
            c.close()
        return {p: start[p] + len(more[p]) for p in range(parts)}

    new_ends = r.run("confluent-kafka: a second consumer in the group resumes from the committed offsets "
                     "(reads only the %d new records), commits" % n_more, group_resume, requires=(consumed,))

    def group_offsets():
        res = wait_futures(admin.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(group)],
                                                             request_timeout=15), "list_consumer_group_offsets")
        res = res[group]
        expect_eq(res.group_id, group, "group id in the result")
        got = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == group_topic}
        expect(all(tp.error is None for tp in res.topic_partitions), "errors: %s" % res.topic_partitions)
        expect_eq(got, new_ends, "list_consumer_group_offsets (= end offsets)")
        expect_eq(len(res.topic_partitions), parts, "partitions with committed offsets")
        c = Consumer(dict(base, **{"group.id": "compat-unused-%s" % RUN_ID}))
        try:
            for p in range(parts):
                _, hw = c.get_watermark_offsets(TopicPartition(group_topic, p), timeout=10, cached=False)
                expect_eq(got[p], hw, "committed offset vs high watermark of partition %d" % p)
        finally:
            c.close()
        return True

    r.run("confluent-kafka: AdminClient.list_consumer_group_offsets = end offsets", group_offsets,
          requires=(new_ends,))

    # Two members split a 4-partition topic. The topic is empty while they
    # join; records are produced once both have their partitions, so each
    # member reads exactly its own partitions from the start.
    split_state = {}

    def split_join():
        a = group_consumer(split_group, "compat-ck-split-a")
        b = group_consumer(split_group, "compat-ck-split-b")
        split_state.update(a=a, b=b)
        a.subscribe([split_topic])
        deadline = time.monotonic() + 20
        while not a.assignment() and time.monotonic() < deadline:
            a.poll(0.1)
        expect_eq(len(a.assignment()), split_parts, "partitions of the first member before the second joins")
        b.subscribe([split_topic])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            a.poll(0.1)
            b.poll(0.1)
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            if pa and pb and len(pa) + len(pb) >= split_parts:
                break
        pa = {tp.partition for tp in a.assignment()}
        pb = {tp.partition for tp in b.assignment()}
        expect(pa and pb, "after 20 s: assignments %s and %s (a member has none)" % (sorted(pa), sorted(pb)))
        expect(not pa & pb, "both members own partitions %s (a: %s, b: %s)" % (sorted(pa & pb), sorted(pa), sorted(pb)))
        expect_eq(sorted(pa | pb), list(range(split_parts)), "union of both assignments")
        expect_eq(sorted([len(pa), len(pb)]), [2, 2], "partitions per member")
        split_state.update(pa=pa, pb=pb)

        recs = make_records("ck-split", 200, base_ts)
        delivered = ck_produce(split_topic, recs, {"client.id": "compat-ck-split-producer", "linger.ms": 5})
        data = verify_produce_assignment(delivered, len(recs), split_parts)
        expect(all(data[p] for p in range(split_parts)), "a partition got no records: %s"
               % {p: len(v) for p, v in data.items()})
        want = {"a": sum(len(data[p]) for p in pa), "b": sum(len(data[p]) for p in pb)}
        got = {"a": [], "b": []}
        eof = {"a": set(), "b": set()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                len(got[k]) < want[k] or len(eof[k]) < 2 for k in ("a", "b")):
            for k, c in (("a", a), ("b", b)):
                m = c.poll(0.05)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof[k].add(m.partition())
                        continue
                    raise CheckFailed("consumer %s error: %s" % (k, m.error()))
                eof[k].discard(m.partition())
                got[k].append(ck_msg(m))
        for k, own in (("a", pa), ("b", pb)):
            foreign = sorted({m["partition"] for m in got[k]} - own)
            expect(not foreign, "member %s got records of partitions %s it does not own" % (k, foreign))
            expect_eq(len(got[k]), want[k], "records consumed by member %s" % k)
        verify_consumed(got["a"] + got["b"], data)
        return True

    def split_describe():
        pa, pb = split_state["pa"], split_state["pb"]
        listing = admin.list_consumer_groups(request_timeout=15).result(timeout=15)
        expect(not listing.errors, "list_consumer_groups errors: %s" % listing.errors)
        entries = {g.group_id: g for g in listing.valid}
        expect(split_group in entries, "list_consumer_groups does not show %s (shows %s)"
               % (split_group, sorted(entries)))
        expect_eq(entries[split_group].state, ck.ConsumerGroupState.STABLE, "listed state")
        expect(not entries[split_group].is_simple_consumer_group, "listed as a simple consumer group")
        d = wait_futures(admin.describe_consumer_groups([split_group], request_timeout=15),
                         "describe_consumer_groups")[split_group]
        expect_eq(d.group_id, split_group, "described group id")
        expect_eq(d.state, ck.ConsumerGroupState.STABLE, "described state")
        expect(not d.is_simple_consumer_group, "described as a simple consumer group")
        expect(d.partition_assignor in ("range", "roundrobin"), "assignor %r" % d.partition_assignor)
        expect_eq(d.coordinator.id if d.coordinator else None, 0, "coordinator")
        members = {m.client_id: m for m in d.members}
        expect_eq(sorted(members), ["compat-ck-split-a", "compat-ck-split-b"], "member client ids")
        for cid, own, c in (("compat-ck-split-a", pa, split_state["a"]),
                            ("compat-ck-split-b", pb, split_state["b"])):
            m = members[cid]
            expect_eq(m.member_id, c.memberid(), "%s member id" % cid)
            asg = sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
            expect_eq(asg, [(split_topic, p) for p in sorted(own)], "%s assignment as described" % cid)
        # A group with members cannot be deleted.
        try:
            admin.delete_consumer_groups([split_group], request_timeout=15)[split_group].result(timeout=15)
        except KafkaException as e:
            expect_eq(e.args[0].code(), KafkaError.NON_EMPTY_GROUP, "error deleting a group with members")
        else:
            raise CheckFailed("delete_consumer_groups deleted a group with 2 members")
        return True

    try:
        joined = r.run("confluent-kafka: two consumers in one group split a 4-partition topic (2+2, disjoint) "
                       "and each reads only its partitions", split_join, requires=(created,))
        r.run("confluent-kafka: list_consumer_groups/describe_consumer_groups show the group (Stable, 2 members "
              "with their assignments); deleting it -> NON_EMPTY_GROUP", split_describe, requires=(joined,))
    finally:
        for k in ("a", "b"):
            c = split_state.pop(k, None)
            if c is not None:
                c.close()

    def delete_group():
        d = wait_futures(admin.describe_consumer_groups([split_group], request_timeout=15),
                         "describe_consumer_groups")[split_group]
        expect_eq(d.state, ck.ConsumerGroupState.EMPTY, "state after both members closed")
        expect_eq(len(d.members), 0, "members after both members closed")
        wait_futures(admin.delete_consumer_groups([split_group], request_timeout=15), "delete_consumer_groups")
        listing = admin.list_consumer_groups(request_timeout=15).result(timeout=15)
        expect(split_group not in {g.group_id for g in listing.valid}, "%s still listed after delete" % split_group)
        d = wait_futures(admin.describe_consumer_groups([split_group], request_timeout=15),
                         "describe_consumer_groups")[split_group]
        expect_eq(d.state, ck.ConsumerGroupState.DEAD, "state of the deleted group")
        res = wait_futures(admin.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(split_group)],
                                                             request_timeout=15), "list_consumer_group_offsets")
        expect_eq([tp for tp in res[split_group].topic_partitions if tp.offset >= 0], [],
                  "committed offsets of the deleted group")
        return True

    r.run("confluent-kafka: delete_consumer_groups deletes the empty group (DEAD, not listed)",
          delete_group, requires=(joined,))

    # -------------------------------------------------- transactions
    def ck_values(topic, nparts, isolation, want):
        c = Consumer(dict(base, **{"group.id": "compat-unused-%s" % RUN_ID, "enable.auto.commit": False,
                                   "isolation.level": isolation, "fetch.wait.max.ms": 100,
                                   "enable.partition.eof": True}))
        try:
            c.assign([TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(nparts)])
            got = ck_poll_to_eof(c, want, nparts)
        finally:
            c.close()
        return sorted(m["value"].decode() for m in got)

    def txn_producer(tid, **extra):
        p = Producer(dict(base, **dict({"transactional.id": tid, "linger.ms": 5}, **extra)))
        p.init_transactions(30)
        return p

    def transactions():
        p = txn_producer("compat-ck-txn-%s" % RUN_ID)
        for prefix, count, commit in (("c", 10, True), ("a", 5, False), ("d", 3, True)):
            p.begin_transaction()
            for i in range(count):
                p.produce(txn_topic, key=b"k%d" % i, value=("%s%02d" % (prefix, i)).encode())
            if commit:
                p.commit_transaction(30)
            else:
                p.flush(30)
                p.abort_transaction(30)
        committed = ck_values(txn_topic, parts, "read_committed", 13)
        expect_eq(committed, ["c%02d" % i for i in range(10)] + ["d%02d" % i for i in range(3)],
                  "read_committed values")
        everything = ck_values(txn_topic, parts, "read_uncommitted", 18)
        expect_eq(len(everything), 18, "read_uncommitted sees the aborted records too")
        return True

    txn = r.run("confluent-kafka: transactional producer commits 10, aborts 5, commits 3; "
                "read_committed sees 13, read_uncommitted 18", transactions, requires=(created,))

    def txn_offsets():
        ck_produce(txn_in, make_records("ck-txn-in", 20, base_ts), {"client.id": "compat-ck-txn-in"})
        group_id = "compat-ck-eos-%s" % RUN_ID
        c = Consumer(dict(base, **{"group.id": group_id, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                                   "fetch.wait.max.ms": 100}))
        p = txn_producer("compat-ck-eos-%s" % RUN_ID)
        try:
            c.assign([TopicPartition(txn_in, 0, ck.OFFSET_BEGINNING)])
            for commit, count in ((True, 12), (False, 8)):
                p.begin_transaction()
                seen = 0
                deadline = time.monotonic() + 20
                while seen < count and time.monotonic() < deadline:
                    m = c.poll(0.2)
                    if m is None or m.error():
                        continue
                    p.produce(txn_out, value=b"eos-%d" % m.offset())
                    seen += 1
                expect_eq(seen, count, "records consumed for the transaction")
                p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
                if commit:
                    p.commit_transaction(30)
                else:
                    p.abort_transaction(30)
            got = c.committed([TopicPartition(txn_in, 0)], timeout=10)
            expect_eq(got[0].offset, 12, "committed offset: the committed transaction's, not the aborted one's")
        finally:
            c.close()
        expect_eq(ck_values(txn_out, 1, "read_committed", 12), sorted("eos-%d" % i for i in range(12)),
                  "the committed transaction's outputs")
        return True

    r.run("confluent-kafka: send_offsets_to_transaction commits the group's offsets with the transaction "
          "and not with an aborted one", txn_offsets, requires=(txn,))

    def txn_fencing():
        tid = "compat-ck-fence-%s" % RUN_ID
        old = txn_producer(tid)
        old.begin_transaction()
        old.produce(txn_fence, value=b"fenced")
        old.flush(30)
        new = txn_producer(tid)
        new.begin_transaction()
        new.produce(txn_fence, value=b"fencer")
        new.commit_transaction(30)
        try:
            old.commit_transaction(30)
        except KafkaException as e:
            err = e.args[0]
            expect(err.fatal() or err.code() == KafkaError._FENCED, "not fatal/fenced: %s" % err)
        else:
            raise CheckFailed("the fenced producer committed")
        expect_eq(ck_values(txn_fence, 1, "read_committed", 1), ["fencer"],
                  "read_committed: the new instance's record, not the fenced one's")
        return True

    r.run("confluent-kafka: a second producer with the same transactional.id fences the first "
          "(its commit fails, its open transaction is aborted)", txn_fencing, requires=(txn,))

    def delete_records():
        if not hasattr(admin, "delete_records"):
            raise Skip("this confluent-kafka has no AdminClient.delete_records")
        by_part = per_codec["none"]
        topic = topics["none"]
        cut = len(by_part[0]) // 2
        expect(cut > 0, "partition 0 of %s is empty" % topic)
        futs = admin.delete_records([TopicPartition(topic, 0, cut)], request_timeout=15)
        res = list(wait_futures(futs, "delete_records").values())[0]
        expect_eq(getattr(res, "low_watermark", None), cut, "delete_records low watermark")
        c = Consumer(dict(base, **{"group.id": "compat-unused-%s" % RUN_ID, "enable.auto.commit": False}))
        try:
            wm = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
            expect_eq(wm, (cut, len(by_part[0])), "watermarks after delete_records")
            c.assign([TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
            deadline = time.monotonic() + 15
            m = None
            while time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    break
            expect(m is not None and not m.error(), "no record consumed after delete_records")
            expect_eq(m.offset(), cut, "first offset consumed from OFFSET_BEGINNING after delete_records")
            expect_eq(m.value(), by_part[0][cut]["value"], "value at the new log start")
        finally:
            c.close()
        return True

    r.run("confluent-kafka: delete_records moves the log start (watermarks, consumer from beginning)",
          delete_records, requires=(per_codec.get("none"),))

    def delete_topics():
        wait_futures(admin.delete_topics([admin_topic], operation_timeout=10, request_timeout=15), "delete_topics")
        deadline = time.monotonic() + 10
        while True:
            # All-topics metadata: asking for the topic by name would auto-create it again.
            md = admin.list_topics(timeout=10)
            if admin_topic not in md.topics:
                break
            expect(time.monotonic() < deadline, "%s still listed 10s after delete_topics" % admin_topic)
            time.sleep(0.2)
        for t in topics.values():
            expect(t in md.topics, "deleting %s also removed %s" % (admin_topic, t))
        futs = admin.delete_topics(["compat-never-existed-%s" % RUN_ID], request_timeout=15)
        try:
            list(futs.values())[0].result(timeout=15)
        except KafkaException as e:
            expect_eq(e.args[0].code(), KafkaError.UNKNOWN_TOPIC_OR_PART, "error deleting an unknown topic")
        else:
            raise CheckFailed("deleting an unknown topic succeeded")
        return True

    r.run("confluent-kafka: delete_topics removes the topic; unknown topic -> UNKNOWN_TOPIC_OR_PART",
          delete_topics, requires=(created,))


# --------------------------------------------------------------------------

def wait_for_broker(bootstrap, timeout=20):
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("broker at %s does not accept connections" % bootstrap)
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("COMPAT_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--suite", choices=["all", "kafka-python", "confluent"], default="all")
    ap.add_argument("--records", type=int, default=1000, help="records per codec and library (default 1000)")
    ap.add_argument("--results", help="write the results as JSON to this file")
    sub = ap.add_subparsers(dest="cmd")
    ins = sub.add_parser("inspect", help="check the stored batches of one topic")
    ins.add_argument("--topic", required=True)
    ins.add_argument("--partitions", type=int, default=1)
    ins.add_argument("--codec", required=True, choices=CODECS)
    ins.add_argument("--count", type=int, required=True, help="records expected (in total, over partitions)")
    ct = sub.add_parser("create-topic", help="create a topic (used by run.sh: kcat cannot create topics)")
    ct.add_argument("--topic", required=True)
    ct.add_argument("--partitions", type=int, required=True)
    args = ap.parse_args()

    wait_for_broker(args.bootstrap)

    if args.cmd == "create-topic":
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
        fut = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)[args.topic]
        try:
            fut.result(timeout=15)
        except Exception as e:  # noqa: BLE001
            print("create_topics %s: %s" % (args.topic, e))
            return 1
        md = admin.list_topics(timeout=10)
        got = sorted(md.topics[args.topic].partitions) if args.topic in md.topics else None
        if got != list(range(args.partitions)):
            print("%s: partitions after create_topics: %s" % (args.topic, got))
            return 1
        print("created %s with %d partitions" % (args.topic, args.partitions))
        return 0

    if args.cmd == "inspect":
        try:
            counts = {}
            total = 0
            for p in range(args.partitions):
                hw, _ = raw_fetch_batches(args.bootstrap, args.topic, p)
                counts[p] = hw
                total += hw
            expect_eq(total, args.count, "records in %s" % args.topic)
            nb = check_stored_batches(args.bootstrap, args.topic, args.partitions, args.codec, counts)
            print("%s: %d records in %s batch(es), all %s, CRCs ok" % (args.topic, total, nb, args.codec))
            return 0
        except CheckFailed as e:
            print("inspect %s: %s" % (args.topic, e))
            return 1

    r = Runner()
    start = time.monotonic()
    if args.suite in ("all", "kafka-python"):
        kafka_python_suite(r, args.bootstrap, args.records)
        kafka_python_old_versions_suite(r, args.bootstrap)
    if args.suite in ("all", "confluent"):
        confluent_suite(r, args.bootstrap, args.records)
    c = r.counts()
    if args.results:
        with open(args.results, "w") as f:
            json.dump(dict(results=r.results, counts=c, seconds=round(time.monotonic() - start, 1)), f, indent=1)
    failed = [x for x in r.results if x["status"] == "FAIL"]
    gaps = [x for x in r.results if x["status"] == "KNOWN-GAP"]
    if failed:
        print("\nFailed checks:")
        for x in failed:
            print("  - %s: %s" % (x["name"], x["detail"].split("\n")[0]))
    if gaps:
        print("\nKnown gaps (not counted as failures):")
        for x in gaps:
            print("  - %s" % x["name"])
    print("python checks took %.1fs; %d known gap(s)" % (time.monotonic() - start, c["KNOWN-GAP"]))
    print("compat-python: %d passed, %d failed, %d skipped" % (c["PASS"], c["FAIL"], c["SKIP"]))
    return 1 if c["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
