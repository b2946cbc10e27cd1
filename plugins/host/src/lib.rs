//! `runnel-plugin-host`: runs Runnel WASM plugins on wasmtime.
//!
//! A plugin is a core WebAssembly module speaking the batch ABI of
//! `plugins/ABI.md`. The host compiles each module once (cached on disk by
//! module hash), pre-links it against the two host functions
//! (`runnel_log`, `runnel_fail`), and keeps one live instance per plugin
//! that is reused across batches. Every batch runs under a linear-memory
//! cap, a deadline (epoch interruption) and an output-size cap; any trap,
//! timeout, out-of-memory or malformed output becomes a [`PluginError`]
//! naming the plugin, the kind of failure and the batch's first offset, and
//! the instance is replaced. Nothing a plugin does can take the process
//! down.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use runnel_plugin_host::*;
//! let host = PluginHost::new(HostConfig::default()).unwrap();
//! let wasm = std::fs::read("plugins/dist/redact-pii.wasm").unwrap();
//! let plugin = host.load("redact", &wasm, &BTreeMap::new()).unwrap();
//! let out = plugin.process(&[Record::value(0, r#"{"email":"a@b.c"}"#)]).unwrap();
//! ```
//!
//! What it is not: a scheduler or a runner of pipelines — callers (the
//! broker's topic transforms, `runnel plugin test`, the pipeline runner)
//! decide what to do with a failed batch.

pub mod abi;
mod reload;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc, ValType,
};

pub use reload::PluginHandle;

/// ABI versions this host runs.
pub const SUPPORTED_ABI_VERSIONS: &[i32] = &[1];
/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest log line taken from a plugin, and most lines per batch.
const MAX_LOG_BYTES: usize = 16 * 1024;
const MAX_LOG_LINES_PER_BATCH: u32 = 1000;

/// What a plugin does with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Filter = 1,
    Map = 2,
    FilterMap = 3,
    FlatMap = 4,
    Aggregate = 5,
}

impl Kind {
    fn from_code(code: i32) -> Option<Kind> {
        Some(match code {
            1 => Kind::Filter,
            2 => Kind::Map,
            3 => Kind::FilterMap,
            4 => Kind::FlatMap,
            5 => Kind::Aggregate,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Map => "map",
            Kind::FilterMap => "filter-map",
            Kind::FlatMap => "flat-map",
            Kind::Aggregate => "aggregate",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One record going into or coming out of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Input: the record's offset. Output: the offset of the input record
    /// it came from.
    pub offset: i64,
    /// Milliseconds since the epoch, -1 if none.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Output only: index of the input record this one came from.
    pub source_index: u32,
}

impl Record {
    /// A record with just a value, for tests and tools.
    pub fn value(offset: i64, value: impl Into<Bytes>) -> Record {
        Record {
            offset,
            timestamp: -1,
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// How a plugin or a batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The module or its configuration was refused.
    Refused,
    /// The plugin trapped (a panic, `unreachable`, out-of-bounds access ...).
    Trap,
    /// The batch ran past its deadline.
    Timeout,
    /// The plugin tried to grow its memory beyond the cap.
    OutOfMemory,
    /// The output broke the ABI's rules.
    InvalidOutput,
    /// The plugin failed the batch itself (`runnel_fail`).
    Failed,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Refused => "refused",
            FailureKind::Trap => "trapped",
            FailureKind::Timeout => "timed out",
            FailureKind::OutOfMemory => "ran out of memory",
            FailureKind::InvalidOutput => "returned an invalid output",
            FailureKind::Failed => "failed the batch",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub plugin: String,
    pub kind: FailureKind,
    /// Offset of the first record of the failed batch.
    pub first_offset: Option<i64>,
    pub message: String,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin '{}' {}", self.plugin, self.kind)?;
        if let Some(o) = self.first_offset {
            write!(f, " on the batch starting at offset {o}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {}

/// Limits and caching for every plugin of a host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled modules are cached (none: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// Largest linear memory of one plugin instance.
    pub memory_limit_bytes: usize,
    /// Longest time one batch may run.
    pub batch_deadline: Duration,
    /// Largest output of one batch (or 8x the input, if larger).
    pub max_output_bytes: usize,
    /// Most live instances across all plugins (pooling allocator slots).
    pub max_instances: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            memory_limit_bytes: 64 << 20,
            batch_deadline: Duration::from_secs(1),
            max_output_bytes: 64 << 20,
            max_instances: 128,
        }
    }
}

/// What `inspect` finds in a module.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    pub abi_version: i32,
    pub kind: Kind,
    pub has_init: bool,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub sha256: String,
}

/// Per-store state: the plugin's name for logs, its memory cap, and what
/// happened during the current call.
struct HostState {
    plugin: Arc<str>,
    memory_limit: usize,
    memory_exceeded: bool,
    failed: Option<String>,
    last_error_log: Option<String>,
    logs_this_batch: u32,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "linear memory limit of {} bytes exceeded",
                self.memory_limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The error a `runnel_fail` call raises inside the store.
#[derive(Debug)]
struct PluginFail(String);

impl fmt::Display for PluginFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginFail {}

fn read_guest_str(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<String> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let data = memory.data(&*caller);
    let start = usize::try_from(ptr).ok()?;
    let len = usize::try_from(len).ok()?.min(MAX_LOG_BYTES);
    let bytes = data.get(start..start.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Increments the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    config: HostConfig,
    _ticker: EpochTicker,
}

impl PluginHost {
    pub fn new(config: HostConfig) -> anyhow::Result<PluginHost> {
        let mut wasm_config = Config::new();
        wasm_config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size(config.memory_limit_bytes.max(1 << 16));
        wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm_config)?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("runnel-plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })?;

        let mut linker = Linker::new(&engine);
        linker.func_wrap(
            "env",
            "runnel_log",
            |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                if caller.data().logs_this_batch >= MAX_LOG_LINES_PER_BATCH {
                    return;
                }
                caller.data_mut().logs_this_batch += 1;
                let message = read_guest_str(&mut caller, ptr, len)
                    .unwrap_or_else(|| "<unreadable log message>".into());
                let plugin = caller.data().plugin.clone();
                match level {
                    1 => {
                        tracing::error!(plugin = %plugin, "{message}");
                        caller.data_mut().last_error_log = Some(message);
                    }
                    2 => tracing::warn!(plugin = %plugin, "{message}"),
                    3 => tracing::info!(plugin = %plugin, "{message}"),
                    4 => tracing::debug!(plugin = %plugin, "{message}"),
                    _ => tracing::trace!(plugin = %plugin, "{message}"),
                }
            },
        )?;
        linker.func_wrap(
            "env",
            "runnel_fail",
            |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let message = read_guest_str(&mut caller, ptr, len)
                    .unwrap_or_else(|| "<unreadable message>".into());
                caller.data_mut().failed = Some(message.clone());
                Err(wasmtime::Error::new(PluginFail(message)))
            },
        )?;
        Ok(PluginHost {
            engine,
            linker,
            config,
            _ticker: EpochTicker { stop },
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    fn refused(name: &str, message: impl Into<String>) -> PluginError {
        PluginError {
            plugin: name.to_string(),
            kind: FailureKind::Refused,
            first_offset: None,
            message: message.into(),
        }
    }

    /// Compiles a module (or loads it from the cache).
    fn compile(&self, name: &str, wasm: &[u8]) -> Result<(Module, String), PluginError> {
        let digest = sha256_hex(wasm);
        let cached = self.config.cache_dir.as_ref().map(|dir| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
        });
        if let Some(path) = &cached {
            // Read into memory rather than `deserialize_file`: that maps
            // the file, and anything rewriting it in place while the module
            // runs would crash the process (SIGBUS).
            if let Ok(bytes) = std::fs::read(path) {
                // SAFETY: the bytes come from `Module::serialize` of an
                // engine with the same compatibility hash (it is in the file
                // name), in a directory only the host writes to; wasmtime
                // still checks the header and refuses foreign or truncated
                // artifacts.
                match unsafe { Module::deserialize(&self.engine, &bytes) } {
                    Ok(m) => return Ok((m, digest)),
                    Err(e) => {
                        tracing::warn!(plugin = name, error = %e, "ignoring unusable compiled-module cache entry")
                    }
                }
            }
        }
        let module = Module::new(&self.engine, wasm)
            .map_err(|e| Self::refused(name, format!("not a valid WebAssembly module: {e:#}")))?;
        if let Some(path) = &cached {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(path.parent().expect("cache files live in the cache dir"))?;
                let bytes = module.serialize().map_err(std::io::Error::other)?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            };
            if let Err(e) = write() {
                tracing::warn!(plugin = name, error = %e, "could not cache the compiled module");
            }
        }
        Ok((module, digest))
    }

    /// Checks imports and exports against the ABI.
    fn validate(name: &str, module: &Module) -> Result<bool, PluginError> {
        for import in module.imports() {
            let known =
                import.module() == "env" && matches!(import.name(), "runnel_log" | "runnel_fail");
            if !known {
                return Err(Self::refused(
                    name,
                    format!(
                        "imports `{}.{}`, which Runnel does not provide (plugins may import only env.runnel_log and env.runnel_fail)",
                        import.module(),
                        import.name()
                    ),
                ));
            }
        }
        let func = |export: &str,
                    params: &[ValType],
                    results: &[ValType],
                    required: bool|
         -> Result<bool, PluginError> {
            match module.get_export(export) {
                None if required => Err(Self::refused(
                    name,
                    format!("does not export `{export}`, which ABI v1 requires"),
                )),
                None => Ok(false),
                Some(ExternType::Func(ft)) => {
                    let same = ft.params().len() == params.len()
                        && ft.results().len() == results.len()
                        && ft.params().zip(params).all(|(a, b)| ValType::eq(&a, b))
                        && ft.results().zip(results).all(|(a, b)| ValType::eq(&a, b));
                    if same {
                        Ok(true)
                    } else {
                        Err(Self::refused(name, format!("exports `{export}` with signature {ft}, expected {params:?} -> {results:?}")))
                    }
                }
                Some(_) => Err(Self::refused(
                    name,
                    format!("exports `{export}`, but not as a function"),
                )),
            }
        };
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(Self::refused(
                name,
                "does not export its linear memory as `memory`",
            ));
        }
        func("runnel_abi_version", &[], &[ValType::I32], true)?;
        func("runnel_kind", &[], &[ValType::I32], true)?;
        func("runnel_alloc", &[ValType::I32], &[ValType::I32], true)?;
        func(
            "runnel_process",
            &[ValType::I32, ValType::I32],
            &[ValType::I64],
            true,
        )?;
        func(
            "runnel_init",
            &[ValType::I32, ValType::I32],
            &[ValType::I32],
            false,
        )
    }

    /// Compiles, validates and instantiates a plugin, and passes it its
    /// configuration.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        config: &BTreeMap<String, String>,
    ) -> Result<Plugin, PluginError> {
        let (module, sha256) = self.compile(name, wasm)?;
        let has_init = Self::validate(name, &module)?;
        if !config.is_empty() && !has_init {
            return Err(Self::refused(
                name,
                "was given configuration but does not export `runnel_init`",
            ));
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Self::refused(name, format!("cannot link: {e:#}")))?;
        let config_json =
            serde_json::to_vec(config).map_err(|e| Self::refused(name, e.to_string()))?;
        let mut plugin = Plugin {
            name: name.into(),
            kind: Kind::Filter,
            abi_version: 0,
            sha256,
            pre,
            engine: self.engine.clone(),
            config_json,
            has_init,
            memory_limit: self.config.memory_limit_bytes,
            deadline_ticks: (self.config.batch_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1)
                as u64,
            max_output_bytes: self.config.max_output_bytes,
            live: Mutex::new(None),
        };
        // Instantiate now so a bad plugin is refused at load time.
        let live = plugin.instantiate()?;
        plugin.kind = live.kind;
        plugin.abi_version = live.abi_version;
        *plugin.live.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(live);
        tracing::info!(plugin = name, kind = %plugin.kind, sha256 = %plugin.sha256, "plugin loaded");
        Ok(plugin)
    }

    /// Describes a module without configuring it (`runnel_init` is not
    /// called).
    pub fn inspect(&self, wasm: &[u8]) -> Result<ModuleInfo, PluginError> {
        let (module, sha256) = self.compile("inspect", wasm)?;
        let has_init = Self::validate("inspect", &module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Self::refused("inspect", format!("cannot link: {e:#}")))?;
        let probe = Plugin {
            name: "inspect".into(),
            kind: Kind::Filter,
            abi_version: 0,
            sha256: sha256.clone(),
            pre,
            engine: self.engine.clone(),
            config_json: Vec::new(),
            has_init: false,
            memory_limit: self.config.memory_limit_bytes,
            deadline_ticks: (self.config.batch_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1)
                as u64,
            max_output_bytes: self.config.max_output_bytes,
            live: Mutex::new(None),
        };
        let live = probe.instantiate()?;
        Ok(ModuleInfo {
            abi_version: live.abi_version,
            kind: live.kind,
            has_init,
            exports: module.exports().map(|e| e.name().to_string()).collect(),
            imports: module
                .imports()
                .map(|i| format!("{}.{}", i.module(), i.name()))
                .collect(),
            sha256,
        })
    }
}

/// The SHA-256 of a module's bytes in lowercase hex: the identity the host
/// reports for a loaded plugin.
pub fn sha256_hex(wasm: &[u8]) -> String {
    hex(&Sha256::digest(wasm))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A live instance and its exports.
struct Live {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i64>,
    kind: Kind,
    abi_version: i32,
}

/// A loaded plugin. Batches are processed one at a time per plugin; the
/// instance is reused until something fails.
pub struct Plugin {
    name: Arc<str>,
    kind: Kind,
    abi_version: i32,
    sha256: String,
    pre: InstancePre<HostState>,
    engine: Engine,
    config_json: Vec<u8>,
    has_init: bool,
    memory_limit: usize,
    deadline_ticks: u64,
    max_output_bytes: usize,
    live: Mutex<Option<Live>>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    fn error(
        &self,
        kind: FailureKind,
        first_offset: Option<i64>,
        message: impl Into<String>,
    ) -> PluginError {
        PluginError {
            plugin: self.name.to_string(),
            kind,
            first_offset,
            message: message.into(),
        }
    }

    /// Turns a wasmtime error into a failure of the right kind.
    fn classify(
        &self,
        e: wasmtime::Error,
        state: &HostState,
        first_offset: Option<i64>,
    ) -> PluginError {
        if state.memory_exceeded {
            return self.error(
                FailureKind::OutOfMemory,
                first_offset,
                format!("memory limit of {} bytes reached", state.memory_limit),
            );
        }
        if let Some(fail) = e.downcast_ref::<PluginFail>() {
            return self.error(FailureKind::Failed, first_offset, fail.0.clone());
        }
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return self.error(
                FailureKind::Timeout,
                first_offset,
                "the batch ran past its deadline",
            );
        }
        let mut message = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{e:#}"),
        };
        if let Some(log) = &state.last_error_log {
            message = format!("{log} ({message})");
        }
        self.error(FailureKind::Trap, first_offset, message)
    }

    fn instantiate(&self) -> Result<Live, PluginError> {
        let state = HostState {
            plugin: self.name.clone(),
            memory_limit: self.memory_limit,
            memory_exceeded: false,
            failed: None,
            last_error_log: None,
            logs_this_batch: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        let refused = |store: &Store<HostState>, e: wasmtime::Error| {
            let mut err = self.classify(e, store.data(), None);
            err.message = format!("while starting: {}", err.message);
            err
        };
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| refused(&store, e))?;
        let typed = |store: &mut Store<HostState>, name: &str| {
            instance
                .get_typed_func::<(), i32>(&mut *store, name)
                .map_err(|e| refused(store, e))
        };
        let version_fn = typed(&mut store, "runnel_abi_version")?;
        let abi_version = version_fn
            .call(&mut store, ())
            .map_err(|e| refused(&store, e))?;
        if !SUPPORTED_ABI_VERSIONS.contains(&abi_version) {
            return Err(self.error(
                FailureKind::Refused,
                None,
                format!("speaks ABI version {abi_version}; this host runs versions {SUPPORTED_ABI_VERSIONS:?}"),
            ));
        }
        let kind_fn = typed(&mut store, "runnel_kind")?;
        let code = kind_fn
            .call(&mut store, ())
            .map_err(|e| refused(&store, e))?;
        let kind = Kind::from_code(code).ok_or_else(|| {
            self.error(
                FailureKind::Refused,
                None,
                format!("declares unknown kind {code}"),
            )
        })?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| self.error(FailureKind::Refused, None, "has no memory export"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "runnel_alloc")
            .map_err(|e| refused(&store, e))?;
        let process = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "runnel_process")
            .map_err(|e| refused(&store, e))?;
        let mut live = Live {
            store,
            memory,
            alloc,
            process,
            kind,
            abi_version,
        };
        if self.has_init {
            let init = instance
                .get_typed_func::<(i32, i32), i32>(&mut live.store, "runnel_init")
                .map_err(|e| refused(&live.store, e))?;
            let config = self.config_json.clone();
            let ptr = self.write_input(
                &mut live,
                config.len(),
                |buf| buf.copy_from_slice(&config),
                None,
            )?;
            let code = init
                .call(&mut live.store, (ptr, config.len() as i32))
                .map_err(|e| refused(&live.store, e))?;
            if code != 0 {
                let why = live.store.data().last_error_log.clone().unwrap_or_default();
                return Err(self.error(
                    FailureKind::Refused,
                    None,
                    format!(
                        "runnel_init refused the configuration (code {code}){}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    ),
                ));
            }
        }
        Ok(live)
    }

    /// Asks the guest for a buffer and fills it.
    fn write_input(
        &self,
        live: &mut Live,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        first_offset: Option<i64>,
    ) -> Result<i32, PluginError> {
        if len > self.memory_limit || len > i32::MAX as usize {
            return Err(self.error(
                FailureKind::OutOfMemory,
                first_offset,
                format!("a {len}-byte batch does not fit the memory limit"),
            ));
        }
        let ptr = live
            .alloc
            .call(&mut live.store, len as i32)
            .map_err(|e| self.classify(e, live.store.data(), first_offset))?;
        if ptr == 0 && len > 0 {
            return Err(self.error(
                FailureKind::OutOfMemory,
                first_offset,
                format!("runnel_alloc could not provide {len} bytes"),
            ));
        }
        let start = ptr as u32 as usize;
        let data = live.memory.data_mut(&mut live.store);
        let region = data
            .get_mut(start..start.saturating_add(len))
            .ok_or_else(|| {
                self.error(
                    FailureKind::InvalidOutput,
                    first_offset,
                    format!("runnel_alloc returned {start}, outside memory"),
                )
            })?;
        fill(region);
        Ok(ptr)
    }

    /// Runs one batch and hands the output region to `read`.
    fn call<T>(
        &self,
        input_len: usize,
        fill: impl FnOnce(&mut [u8]),
        first_offset: Option<i64>,
        read: impl FnOnce(&[u8]) -> Result<T, abi::FormatError>,
    ) -> Result<T, PluginError> {
        let mut slot = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = match slot.take() {
            Some(live) => live,
            None => self.instantiate()?,
        };
        live.store.set_epoch_deadline(self.deadline_ticks);
        {
            let s = live.store.data_mut();
            s.failed = None;
            s.last_error_log = None;
            s.logs_this_batch = 0;
        }
        // On any error below, `live` is dropped: the next batch gets a
        // fresh instance.
        let ptr = self.write_input(&mut live, input_len, fill, first_offset)?;
        let packed = live
            .process
            .call(&mut live.store, (ptr, input_len as i32))
            .map_err(|e| self.classify(e, live.store.data(), first_offset))?;
        let (out_ptr, out_len) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xffff_ffff) as usize,
        );
        let cap = self.max_output_bytes.max(input_len.saturating_mul(8));
        if out_len > cap {
            return Err(self.error(
                FailureKind::InvalidOutput,
                first_offset,
                format!("output of {out_len} bytes exceeds the cap of {cap}"),
            ));
        }
        let data = live.memory.data(&live.store);
        let region = data
            .get(out_ptr..out_ptr.saturating_add(out_len))
            .ok_or_else(|| {
                self.error(
                    FailureKind::InvalidOutput,
                    first_offset,
                    format!("output region {out_ptr}+{out_len} is outside memory"),
                )
            })?;
        let result =
            read(region).map_err(|e| self.error(FailureKind::InvalidOutput, first_offset, e.0))?;
        *slot = Some(live);
        Ok(result)
    }

    /// Runs a filter, map, filter-map or flat-map plugin on a batch.
    pub fn process(&self, input: &[Record]) -> Result<Vec<Record>, PluginError> {
        let first = input.first().map(|r| r.offset);
        if self.kind == Kind::Aggregate {
            return Err(self.error(
                FailureKind::Refused,
                first,
                "is an aggregate plugin; call aggregate() with state",
            ));
        }
        let len = abi::batch_len(input);
        let kind = self.kind;
        self.call(
            len,
            |buf| abi::encode_batch(input, &mut abi::Writer::new(buf)),
            first,
            |out| {
                let mut r = abi::Reader::new(out);
                let records = if kind == Kind::Filter {
                    abi::decode_filter(&mut r, input.len())?
                        .into_iter()
                        .map(|i| Record {
                            source_index: i,
                            ..input[i as usize].clone()
                        })
                        .collect()
                } else {
                    let records = abi::decode_batch(&mut r, input)?;
                    abi::check_order(&records, input.len(), kind)?;
                    records
                };
                if !r.is_done() {
                    return Err(abi::FormatError(format!(
                        "{} bytes left after the output",
                        out.len() - r.position()
                    )));
                }
                Ok(records)
            },
        )
    }

    /// Runs an aggregate plugin: `state` holds each key's state and is
    /// updated with the plugin's answer. Returns the emitted records.
    pub fn aggregate(
        &self,
        input: &[Record],
        state: &mut HashMap<Option<Bytes>, Bytes>,
    ) -> Result<Vec<Record>, PluginError> {
        let first = input.first().map(|r| r.offset);
        if self.kind != Kind::Aggregate {
            return Err(self.error(
                FailureKind::Refused,
                first,
                format!("is a {} plugin, not an aggregate", self.kind),
            ));
        }
        let mut keys: Vec<Option<Bytes>> = Vec::new();
        for r in input {
            if !keys.contains(&r.key) {
                keys.push(r.key.clone());
            }
        }
        let states: Vec<(Option<Bytes>, Option<Bytes>)> = keys
            .iter()
            .map(|k| (k.clone(), state.get(k).cloned()))
            .collect();
        let len = abi::batch_len(input) + abi::states_len(&states);
        let (new_states, emitted) = self.call(
            len,
            |buf| {
                let mut w = abi::Writer::new(buf);
                abi::encode_batch(input, &mut w);
                abi::encode_states(&states, &mut w);
            },
            first,
            |out| {
                let mut r = abi::Reader::new(out);
                let new_states = abi::decode_states(&mut r)?;
                if let Some((k, _)) = new_states.iter().find(|(k, _)| !keys.contains(k)) {
                    return Err(abi::FormatError(format!(
                        "returns state for key {k:?}, which is not in the batch"
                    )));
                }
                let emitted = abi::decode_batch(&mut r, input)?;
                abi::check_order(&emitted, input.len(), Kind::Aggregate)?;
                if !r.is_done() {
                    return Err(abi::FormatError("bytes left after the output".into()));
                }
                Ok((new_states, emitted))
            },
        )?;
        for (key, value) in new_states {
            match value {
                Some(v) => {
                    state.insert(key, v);
                }
                None => {
                    state.remove(&key);
                }
            }
        }
        Ok(emitted)
    }
}

#[cfg(test)]
mod tests;
