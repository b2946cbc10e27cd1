//! State-store engine benchmark: redb vs fjall, for a Kafka-Streams-like
//! "process records, commit every N" workload with window-store keys.
//!
//! Keys are 16 bytes: 8-byte key hash (BE) ++ 8-byte window start (BE), so the
//! windows of one key are adjacent in key order (window-store fetch = 1 range scan).
//! Values are 32 pseudo-random bytes (incompressible; conservative for fjall's LZ4).
//!
//! Usage:
//!   storebench bench <engine> [--n N] [--cache-mb MB] [--dir DIR]
//!   storebench crash <engine> [--n N] [--cache-mb MB] [--dir DIR]
//! engines: redb | redb-sync | fjall | fjall-sync | fjall-tx
//!   redb       commits each batch with Durability::None, one Durability::Immediate commit at phase end
//!   redb-sync  commits each batch with Durability::Immediate (fsync per commit; redb's default)
//!   redb-sync100  Durability::None, but every 100th commit (= every 100k records) Immediate
//!   fjall      plain Database + WriteBatch, default PersistMode (write(2) to the journal per commit,
//!              no fsync), persist(SyncData) at phase end
//!   fjall-sync WriteBatch committed with PersistMode::SyncData (fdatasync per commit)
//!   fjall-tx   SingleWriterTxDatabase (read-your-writes inside the batch), default persistence

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BATCH: usize = 1_000;
const BULK_BATCH: usize = 100_000;
const WINDOWS_PER_KEY: u64 = 10;
const WINDOW_MS: u64 = 60_000;
const BASE_TS: u64 = 1_760_000_000_000;

// ---------- data generation ----------

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0 ^ 0xDEAD_BEEF)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key_hash(entity: u64) -> u64 {
    splitmix(entity)
}

fn make_key(entity: u64, window: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&key_hash(entity).to_be_bytes());
    k[8..].copy_from_slice(&(BASE_TS + window * WINDOW_MS).to_be_bytes());
    k
}

fn make_value(seed: u64, counter: u64) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..8].copy_from_slice(&counter.to_be_bytes());
    for i in 0..3 {
        v[8 + i * 8..16 + i * 8].copy_from_slice(&splitmix(seed * 4 + i as u64).to_be_bytes());
    }
    v
}

/// Record i of the input stream. Arrival order is window-major (all keys of window 0,
/// then window 1, ...), i.e. random with respect to key order.
fn record(i: u64, n: u64) -> ([u8; 16], [u8; 32]) {
    let entities = n / WINDOWS_PER_KEY;
    let (w, e) = (i / entities, i % entities);
    (make_key(e, w), make_value(i, 0))
}

// ---------- engine abstraction ----------

trait Batch {
    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, k: &[u8], v: &[u8]);
}

trait Reader {
    fn get(&self, k: &[u8]) -> Option<usize>;
    /// Scans [lo, hi], reading up to `limit` entries (key and value); returns the count.
    fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize;
    fn count_all(&self) -> u64;
}

trait Store {
    /// Runs `f` inside one atomic batch/transaction and commits it. `sync` asks for an fsync'd commit.
    fn batch(&mut self, sync: bool, f: &mut dyn FnMut(&mut dyn Batch));
    /// Durability barrier (fsync) after non-synced commits.
    fn persist(&mut self);
    /// Runs `f` against one read snapshot/transaction.
    fn read(&self, f: &mut dyn FnMut(&dyn Reader));
    /// Bulk load of already-materialised records (restore from changelog).
    fn bulk(&mut self, recs: &[([u8; 16], [u8; 32])], sorted_ingest: bool);
    /// Diagnostics (LSM shape).
    fn info(&self) -> String {
        String::new()
    }
    /// Waits for background flushes/compactions to go idle.
    fn settle(&self) {}
    /// Called before a clean close (fjall: optionally flush the memtable, FJALL_FLUSH_ON_CLOSE=1).
    fn before_close(&self) {}
}

fn env_flag(k: &str) -> bool {
    std::env::var(k).map(|v| v == "1").unwrap_or(false)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Redb,
    Fjall,
    FjallTx,
}

#[derive(Clone, Copy, Debug)]
struct Engine {
    kind: Kind,
    /// Commit with fsync every `sync_every`-th batch (1 = every commit; 0 = only at phase end).
    sync_every: u64,
}

impl Engine {
    fn sync_at(&self, batch_no: u64) -> bool {
        self.sync_every > 0 && (batch_no + 1) % self.sync_every == 0
    }
}

fn parse_engine(s: &str) -> Engine {
    match s {
        "redb" => Engine { kind: Kind::Redb, sync_every: 0 },
        "redb-sync" => Engine { kind: Kind::Redb, sync_every: 1 },
        "redb-sync100" => Engine { kind: Kind::Redb, sync_every: 100 },
        "fjall" => Engine { kind: Kind::Fjall, sync_every: 0 },
        "fjall-sync" => Engine { kind: Kind::Fjall, sync_every: 1 },
        "fjall-tx" => Engine { kind: Kind::FjallTx, sync_every: 0 },
        _ => panic!("unknown engine {s}"),
    }
}

fn open(kind: Kind, dir: &Path, cache: u64) -> Box<dyn Store> {
    match kind {
        Kind::Redb => Box::new(redb_impl::RedbStore::open(dir, cache)),
        Kind::Fjall => Box::new(fjall_impl::FjallStore::open(dir, cache)),
        Kind::FjallTx => Box::new(fjall_impl::FjallTxStore::open(dir, cache)),
    }
}

mod redb_impl {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("store");

    pub struct RedbStore {
        db: Database,
    }

    impl RedbStore {
        pub fn open(dir: &Path, cache: u64) -> Self {
            let db = Database::builder()
                .set_cache_size(cache as usize)
                .create(dir.join("store.redb"))
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap();
            txn.commit().unwrap();
            RedbStore { db }
        }
    }

    struct B<'a, 'b>(&'a mut redb::Table<'b, &'static [u8], &'static [u8]>);
    impl Batch for B<'_, '_> {
        fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
            self.0.get(k).unwrap().map(|g| g.value().to_vec())
        }
        fn put(&mut self, k: &[u8], v: &[u8]) {
            self.0.insert(k, v).unwrap();
        }
    }

    struct R(redb::ReadOnlyTable<&'static [u8], &'static [u8]>);
    impl Reader for R {
        fn get(&self, k: &[u8]) -> Option<usize> {
            self.0.get(k).unwrap().map(|g| g.value().len())
        }
        fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize {
            let mut n = 0;
            for e in self.0.range(lo..=hi).unwrap().take(limit) {
                let (k, v) = e.unwrap();
                std::hint::black_box((k.value().len(), v.value().len()));
                n += 1;
            }
            n
        }
        fn count_all(&self) -> u64 {
            self.0.len().unwrap()
        }
    }

    impl Store for RedbStore {
        fn batch(&mut self, sync: bool, f: &mut dyn FnMut(&mut dyn Batch)) {
            let mut txn = self.db.begin_write().unwrap();
            txn.set_durability(if sync { Durability::Immediate } else { Durability::None })
                .unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                f(&mut B(&mut t));
            }
            txn.commit().unwrap();
        }
        fn persist(&mut self) {
            // An empty Immediate commit makes every earlier non-durable commit durable.
            let txn = self.db.begin_write().unwrap();
            txn.commit().unwrap();
        }
        fn read(&self, f: &mut dyn FnMut(&dyn Reader)) {
            let txn = self.db.begin_read().unwrap();
            let t = txn.open_table(T).unwrap();
            f(&R(t));
        }
        fn bulk(&mut self, recs: &[([u8; 16], [u8; 32])], _sorted: bool) {
            // Same path for sorted / unsorted input: B-tree inserts in big non-durable txns.
            for chunk in recs.chunks(BULK_BATCH) {
                self.batch(false, &mut |b| {
                    for (k, v) in chunk {
                        b.put(k, v);
                    }
                });
            }
            self.persist();
        }
    }
}

mod fjall_impl {
    use super::*;
    use fjall::{
        Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase,
        SingleWriterTxKeyspace,
    };

    fn ks_opts() -> KeyspaceCreateOptions {
        let o = KeyspaceCreateOptions::default();
        match std::env::var("FJALL_MEMTABLE_MB") {
            Ok(mb) => o.max_memtable_size(mb.parse::<u64>().unwrap() << 20),
            Err(_) => o,
        }
    }

    fn info(db: &Database, ks: &Keyspace) -> String {
        format!(
            "[fjall: tables={} l0={} journals={} write_buffer={:.1}MiB]",
            ks.table_count(),
            ks.l0_table_count(),
            db.journal_count(),
            db.write_buffer_size() as f64 / 1048576.0
        )
    }

    fn settle(db: &Database) {
        let mut idle = 0;
        while idle < 5 {
            std::thread::sleep(Duration::from_millis(20));
            if db.outstanding_flushes() == 0 && db.active_compactions() == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
        }
    }

    fn before_close(ks: &Keyspace) {
        if env_flag("FJALL_FLUSH_ON_CLOSE") {
            // #[doc(hidden)] API: seal + flush the memtable so reopen has no journal to replay.
            ks.rotate_memtable_and_wait().unwrap();
        }
    }

    fn persist_mode(sync: bool) -> Option<PersistMode> {
        if sync {
            Some(PersistMode::SyncData)
        } else {
            // fjall's default for db.batch()/write_tx(): flush the journal to the OS (write(2))
            // at commit, no fsync. NB: `.durability(None)` would leave the last commit in a
            // user-space buffer, lost on SIGKILL (seen in the crash test).
            Some(PersistMode::Buffer)
        }
    }

    struct R<'a>(&'a Keyspace);
    impl Reader for R<'_> {
        fn get(&self, k: &[u8]) -> Option<usize> {
            self.0.get(k).unwrap().map(|v| v.len())
        }
        fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize {
            let mut n = 0;
            for g in self.0.range(lo..=hi).take(limit) {
                let (k, v) = g.into_inner().unwrap();
                std::hint::black_box((k.len(), v.len()));
                n += 1;
            }
            n
        }
        fn count_all(&self) -> u64 {
            self.0.len().unwrap() as u64
        }
    }

    fn ingest(ks: &Keyspace, recs: &[([u8; 16], [u8; 32])]) {
        let mut sorted: Vec<&([u8; 16], [u8; 32])> = recs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut ing = ks.start_ingestion().unwrap();
        for (k, v) in sorted {
            ing.write(k.as_slice(), v.as_slice()).unwrap();
        }
        ing.finish().unwrap();
    }

    // ---- plain Database + WriteBatch ----
    pub struct FjallStore {
        db: Database,
        ks: Keyspace,
    }

    impl FjallStore {
        pub fn open(dir: &Path, cache: u64) -> Self {
            let db = Database::builder(dir.join("fjall")).cache_size(cache).open().unwrap();
            let ks = db.keyspace("store", ks_opts).unwrap();
            FjallStore { db, ks }
        }
    }

    struct B<'a> {
        batch: fjall::OwnedWriteBatch,
        ks: &'a Keyspace,
    }
    impl Batch for B<'_> {
        // NOTE: a plain WriteBatch is not readable: this reads the committed state only.
        fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
            self.ks.get(k).unwrap().map(|v| v.to_vec())
        }
        fn put(&mut self, k: &[u8], v: &[u8]) {
            self.batch.insert(self.ks, k, v);
        }
    }

    impl Store for FjallStore {
        fn batch(&mut self, sync: bool, f: &mut dyn FnMut(&mut dyn Batch)) {
            let mut b = B { batch: self.db.batch().durability(persist_mode(sync)), ks: &self.ks };
            f(&mut b);
            b.batch.commit().unwrap();
        }
        fn persist(&mut self) {
            self.db.persist(PersistMode::SyncData).unwrap();
        }
        fn read(&self, f: &mut dyn FnMut(&dyn Reader)) {
            f(&R(&self.ks));
        }
        fn bulk(&mut self, recs: &[([u8; 16], [u8; 32])], sorted: bool) {
            if sorted {
                ingest(&self.ks, recs);
            } else {
                for chunk in recs.chunks(BULK_BATCH) {
                    self.batch(false, &mut |b| {
                        for (k, v) in chunk {
                            b.put(k, v);
                        }
                    });
                }
            }
            self.persist();
        }
        fn info(&self) -> String {
            info(&self.db, &self.ks)
        }
        fn settle(&self) {
            settle(&self.db)
        }
        fn before_close(&self) {
            before_close(&self.ks)
        }
    }

    // ---- SingleWriterTxDatabase (read-your-writes inside a batch) ----
    pub struct FjallTxStore {
        db: SingleWriterTxDatabase,
        ks: SingleWriterTxKeyspace,
    }

    impl FjallTxStore {
        pub fn open(dir: &Path, cache: u64) -> Self {
            let db = SingleWriterTxDatabase::builder(dir.join("fjall"))
                .cache_size(cache)
                .open()
                .unwrap();
            let ks = db.keyspace("store", ks_opts).unwrap();
            FjallTxStore { db, ks }
        }
    }

    struct TB<'a, 'b> {
        tx: fjall::SingleWriterWriteTx<'b>,
        ks: &'a SingleWriterTxKeyspace,
    }
    impl Batch for TB<'_, '_> {
        fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
            self.tx.get(self.ks, k).unwrap().map(|v| v.to_vec())
        }
        fn put(&mut self, k: &[u8], v: &[u8]) {
            self.tx.insert(self.ks, k, v);
        }
    }

    impl Store for FjallTxStore {
        fn batch(&mut self, sync: bool, f: &mut dyn FnMut(&mut dyn Batch)) {
            let mut b = TB { tx: self.db.write_tx().durability(persist_mode(sync)), ks: &self.ks };
            f(&mut b);
            b.tx.commit().unwrap();
        }
        fn persist(&mut self) {
            self.db.persist(PersistMode::SyncData).unwrap();
        }
        fn read(&self, f: &mut dyn FnMut(&dyn Reader)) {
            f(&R(self.ks.inner()));
        }
        fn bulk(&mut self, recs: &[([u8; 16], [u8; 32])], sorted: bool) {
            if sorted {
                ingest(self.ks.inner(), recs);
            } else {
                for chunk in recs.chunks(BULK_BATCH) {
                    self.batch(false, &mut |b| {
                        for (k, v) in chunk {
                            b.put(k, v);
                        }
                    });
                }
            }
            self.persist();
        }
        fn info(&self) -> String {
            info(self.db.inner(), self.ks.inner())
        }
        fn settle(&self) {
            settle(self.db.inner())
        }
        fn before_close(&self) {
            before_close(self.ks.inner())
        }
    }
}

// ---------- workload phases ----------

fn rate(n: u64, d: Duration) -> String {
    format!("{:>10.0}/s  ({:>7.3} s)", n as f64 / d.as_secs_f64(), d.as_secs_f64())
}

fn dir_size(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut alloc) = (0, 0);
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (a, b) = dir_size(&e.path());
            apparent += a;
            alloc += b;
        } else {
            apparent += m.len();
            alloc += m.blocks() * 512;
        }
    }
    (apparent, alloc)
}

/// Phase 1: write n distinct keys, BATCH records per commit.
fn phase_write(s: &mut dyn Store, e: Engine, n: u64) {
    let mut i = 0;
    while i < n {
        let end = (i + BATCH as u64).min(n);
        s.batch(e.sync_at(i / BATCH as u64), &mut |b| {
            for j in i..end {
                let (k, v) = record(j, n);
                b.put(&k, &v);
            }
        });
        i = end;
    }
    if e.sync_every != 1 {
        s.persist();
    }
}

fn scratch_dir(base: &Path, tag: &str) -> PathBuf {
    let d = base.join(format!("storebench-{}-{}", tag, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bench(e: Engine, name: &str, n: u64, cache: u64, base: &Path) {
    let entities = n / WINDOWS_PER_KEY;
    let dir = scratch_dir(base, name);
    println!("== {name}  n={n} cache={}MiB dir={}", cache >> 20, dir.display());
    let mut s = open(e.kind, &dir, cache);

    // 1. write
    let t = Instant::now();
    phase_write(&mut *s, e, n);
    println!("1 write (batch {BATCH}/commit)       {}", rate(n, t.elapsed()));

    // 2. read-modify-write of random existing keys
    let mut rng = Rng(1);
    let t = Instant::now();
    let mut done = 0u64;
    let mut misses = 0u64;
    while done < n {
        s.batch(e.sync_at(done / BATCH as u64), &mut |b| {
            for _ in 0..BATCH {
                let k = make_key(rng.below(entities), rng.below(WINDOWS_PER_KEY));
                let old = b.get(&k);
                let c = match &old {
                    Some(v) => u64::from_be_bytes(v[..8].try_into().unwrap()) + 1,
                    None => {
                        misses += 1;
                        1
                    }
                };
                let mut nv = [0u8; 32];
                nv[..8].copy_from_slice(&c.to_be_bytes());
                if let Some(v) = &old {
                    nv[8..].copy_from_slice(&v[8..]);
                }
                b.put(&k, &nv);
            }
        });
        done += BATCH as u64;
    }
    if e.sync_every != 1 {
        s.persist();
    }
    println!("2 rmw update (batch {BATCH}/commit)  {}  misses={misses} {}", rate(n, t.elapsed()), s.info());
    if env_flag("SETTLE") {
        let t = Instant::now();
        s.settle();
        println!("  settle (bg flush/compaction idle) {:>7.3} s {}", t.elapsed().as_secs_f64(), s.info());
    }

    // 3. point gets (one read snapshot per 1000 gets)
    let mut rng = Rng(2);
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..(n / BATCH as u64) {
        s.read(&mut |r| {
            for _ in 0..BATCH {
                let k = make_key(rng.below(entities), rng.below(WINDOWS_PER_KEY));
                if r.get(&k).is_some() {
                    hits += 1;
                }
            }
        });
    }
    assert_eq!(hits, n, "point-get misses");
    println!("3 point get                     {}", rate(n, t.elapsed()));

    // 4. range scans: all 10 windows of a random key (window-store fetch)
    let scans = n / 10;
    let mut rng = Rng(3);
    let t = Instant::now();
    let mut rows = 0u64;
    for _ in 0..(scans / BATCH as u64) {
        s.read(&mut |r| {
            for _ in 0..BATCH {
                let h = key_hash(rng.below(entities)).to_be_bytes();
                let mut lo = [0u8; 16];
                let mut hi = [0xFFu8; 16];
                lo[..8].copy_from_slice(&h);
                hi[..8].copy_from_slice(&h);
                rows += r.scan(&lo, &hi, 10) as u64;
            }
        });
    }
    assert_eq!(rows, scans * 10, "scan row count");
    let d = t.elapsed();
    println!("4 range scan x10                {}  ({:.0} rows/s)", rate(scans, d), rows as f64 / d.as_secs_f64());

    // 6. clean close + reopen, disk size
    let t = Instant::now();
    s.before_close();
    drop(s);
    let close = t.elapsed();
    let (apparent, alloc) = dir_size(&dir);
    let t = Instant::now();
    let s = open(e.kind, &dir, cache);
    let mut found = 0;
    s.read(&mut |r| found = r.get(&make_key(0, 0)).map(|_| 1).unwrap_or(0));
    let reopen = t.elapsed();
    assert_eq!(found, 1);
    let mut count = 0;
    s.read(&mut |r| count = r.count_all());
    assert_eq!(count, n);
    println!(
        "6 reopen (clean)                {:>8.1} ms   (close {:.0} ms)  disk: {:.1} MiB apparent, {:.1} MiB allocated",
        reopen.as_secs_f64() * 1e3,
        close.as_secs_f64() * 1e3,
        apparent as f64 / 1048576.0,
        alloc as f64 / 1048576.0
    );
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();

    // 5. bulk load (restore-from-changelog), fresh store; input materialised beforehand
    let recs: Vec<_> = (0..n).map(|i| record(i, n)).collect();
    for sorted in [false, true] {
        std::fs::create_dir_all(&dir).unwrap();
        if sorted && e.kind == Kind::Redb {
            let mut sr = recs.clone();
            let t = Instant::now();
            sr.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut s = open(e.kind, &dir, cache);
            s.bulk(&sr, true);
            let d = t.elapsed();
            drop(s);
            let (a, _) = dir_size(&dir);
            println!("5 bulk load (sort+insert)       {}  disk {:.1} MiB", rate(n, d), a as f64 / 1048576.0);
            std::fs::remove_dir_all(&dir).unwrap();
            continue;
        }
        let mut s = open(e.kind, &dir, cache);
        let t = Instant::now();
        s.bulk(&recs, sorted);
        let d = t.elapsed();
        let mut count = 0;
        s.read(&mut |r| count = r.count_all());
        assert_eq!(count, n);
        drop(s);
        let (a, _) = dir_size(&dir);
        let label = if sorted { "5 bulk load (sort+ingest)      " } else { "5 bulk load (unsorted, 100k tx)" };
        println!("{label} {}  disk {:.1} MiB", rate(n, d), a as f64 / 1048576.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Crash test: a child process runs phase 1 and reports after its last commit returned
/// (no final persist() for non-sync engines); the parent SIGKILLs it, reopens, counts keys.
fn crash(e: Engine, name: &str, n: u64, cache: u64, base: &Path) {
    let dir = scratch_dir(base, &format!("crash-{name}"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash-child", name, &n.to_string(), &cache.to_string(), dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let t = Instant::now();
    let s = open(e.kind, &dir, cache);
    let d = t.elapsed();
    let mut count = 0;
    s.read(&mut |r| count = r.count_all());
    println!(
        "== {name} crash: child said {:?}; after SIGKILL reopen {:.1} ms, {} of {} keys present",
        line.trim(),
        d.as_secs_f64() * 1e3,
        count,
        n
    );
    drop(s);
    if !env_flag("KEEP_DIR") {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Diagnostics: time a plain open of an existing store directory.
fn open_only(e: Engine, cache: u64, dir: &Path) {
    let t = Instant::now();
    let s = open(e.kind, dir, cache);
    println!("open {:.1} ms {}", t.elapsed().as_secs_f64() * 1e3, s.info());
    let t = Instant::now();
    s.before_close();
    drop(s);
    println!("close {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}

fn crash_child(e: Engine, n: u64, cache: u64, dir: &Path) {
    let mut s = open(e.kind, dir, cache);
    let mut i = 0;
    while i < n {
        let end = (i + BATCH as u64).min(n);
        s.batch(e.sync_at(i / BATCH as u64), &mut |b| {
            for j in i..end {
                let (k, v) = record(j, n);
                b.put(&k, &v);
            }
        });
        i = end;
    }
    println!("committed {n}");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str, d: &str| -> String {
        args.iter().position(|a| a == f).map(|i| args[i + 1].clone()).unwrap_or(d.to_string())
    };
    let n: u64 = flag("--n", "1000000").parse().unwrap();
    let cache: u64 = flag("--cache-mb", "64").parse::<u64>().unwrap() << 20;
    let base = PathBuf::from(flag("--dir", "/tmp"));
    match args.get(1).map(String::as_str) {
        Some("bench") => bench(parse_engine(&args[2]), &args[2], n, cache, &base),
        Some("crash") => crash(parse_engine(&args[2]), &args[2], n, cache, &base),
        Some("open") => open_only(parse_engine(&args[2]), cache, Path::new(&args[3])),
        Some("crash-child") => crash_child(
            parse_engine(&args[2]),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
            Path::new(&args[5]),
        ),
        _ => eprintln!("usage: storebench bench|crash <redb|redb-sync|fjall|fjall-sync|fjall-tx> [--n N] [--cache-mb MB] [--dir DIR]"),
    }
}
