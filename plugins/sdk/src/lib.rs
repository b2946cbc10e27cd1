//! `runnel-plugin`: the guest SDK for Runnel WebAssembly plugins.
//!
//! A plugin is a plain Rust function over one record; a macro turns it into
//! a core WebAssembly module that implements plugin ABI version 1
//! (`plugins/ABI.md` in the Runnel repository: the exports `memory`,
//! `runnel_abi_version`, `runnel_kind`, `runnel_alloc`, `runnel_init` and
//! `runnel_process`). The same module runs as a pipeline transform, a
//! broker-side topic transform or a stream processor.
//!
//! ```no_run
//! use runnel_plugin::{export_filter, Config, Record};
//!
//! /// What the plugin needs from its configuration, parsed once.
//! struct Settings {
//!     needle: Vec<u8>,
//! }
//!
//! impl Settings {
//!     fn from_config(config: &Config) -> Result<Settings, String> {
//!         let needle = config.get_or("needle", "error");
//!         if needle.is_empty() {
//!             return Err("`needle` must not be empty".into());
//!         }
//!         Ok(Settings { needle: needle.as_bytes().to_vec() })
//!     }
//! }
//!
//! /// Keeps records whose value contains the needle.
//! fn contains_needle(settings: &Settings, record: &Record) -> bool {
//!     let needle = settings.needle.as_slice();
//!     record
//!         .value()
//!         .is_some_and(|v| v.windows(needle.len()).any(|w| w == needle))
//! }
//!
//! export_filter!(contains_needle, settings = Settings::from_config);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown` (see
//! `plugins/README.md`).
//!
//! # Kinds
//!
//! | macro | plugin function | output |
//! |---|---|---|
//! | [`export_filter!`] | `fn(&Record) -> bool` | the kept input indices: records are never copied back |
//! | [`export_map!`] | `fn(&Record) -> OwnedRecord` | one record per input record |
//! | [`export_filter_map!`] | `fn(&Record) -> Option<OwnedRecord>` | at most one per input record |
//! | [`export_flat_map!`] | `fn(&Record) -> impl IntoIterator<Item = OwnedRecord>` | any number per input record |
//! | [`export_aggregate!`] | `fn(&Record, &mut Option<Vec<u8>>) -> impl IntoIterator<Item = OwnedRecord>` | new state per key, emitted records |
//!
//! # Configuration
//!
//! Every macro takes one optional hook that runs once with the [`Config`]:
//! in `runnel_init` when the plugin is loaded, or before the first record if
//! the host passes no configuration (then it sees an empty one). An error
//! refuses the configuration (`runnel_init` returns non-zero; before a batch,
//! the batch fails):
//!
//! - `settings = build` with a `fn(&Config) -> Result<S, String>`: the
//!   plugin function then takes `&S` first (`fn(&S, &Record) -> bool` for a
//!   filter, and so on). This is the usual way: parse the configuration once
//!   into a typed struct, as in the example above.
//! - `init = check` with a `fn(&Config) -> Result<(), String>`, for a plugin
//!   that only validates, or keeps its own state.
//!
//! The raw configuration is also available anywhere through [`config()`].
//!
//! Input records are [`Record`] views borrowed from the batch the host
//! wrote into the plugin's memory (zero-copy); outputs are [`OwnedRecord`]s.
//! [`Record::with_value`] is the usual way to derive one.
//!
//! # Logging and failing
//!
//! [`error!`], [`warn!`], [`info!`], [`debug!`] and [`trace!`] send messages
//! to the host's log (tagged with the plugin's name); [`fail()`] and
//! [`fail!`] fail the whole batch with a message. A panic logs its message
//! at error level, then aborts, which traps: the host reports the trap and
//! starts a fresh instance for the next batch.
//!
//! # Modules
//!
//! - [`wire`]: the ABI's byte formats (`core` + `alloc` only).
//! - [`process`]: the pure per-kind core of `runnel_process`.
//! - [`testing`]: run plugin functions natively in unit tests.
//! - [`json`]: JSON helpers (feature `json`, on by default).
//! - [`avro`]: Confluent wire-format framing and Avro primitives (`core` +
//!   `alloc` only).
//!
//! This crate is the guest side only. The host engine is
//! `runnel-plugin-host` (wasmtime); the two share nothing but the ABI.

#![warn(missing_docs)]

extern crate alloc;

pub mod avro;
mod config;
#[cfg(feature = "json")]
pub mod json;
pub mod log;
pub mod process;
mod rt;
pub mod testing;
pub mod wire;

pub use crate::config::{config, Config, ConfigError, MAX_CONFIG_BYTES};
pub use crate::log::{fail, Level};
pub use crate::wire::{Headers, OwnedRecord, Record, WireError, NO_TIMESTAMP};

#[doc(hidden)]
pub mod __rt {
    pub use crate::rt::{alloc, build_settings, init, process, settings, InitHook};
}

/// The ABI version this SDK implements (`runnel_abi_version`).
pub const ABI_VERSION: i32 = 1;

/// A plugin's kind (`runnel_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Kind {
    /// Keeps or drops records.
    Filter = 1,
    /// Turns each record into one record.
    Map = 2,
    /// Turns each record into at most one record.
    FilterMap = 3,
    /// Turns each record into any number of records.
    FlatMap = 4,
    /// Updates per-key state and emits records.
    Aggregate = 5,
}

/// Exports the ABI functions of a plugin of kind `$kind`, whose
/// `runnel_process` calls `$body(input, out)`. Used by the `export_*!`
/// macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($kind:expr, [$($init:expr)?], $body:expr) => {
        // An anonymous constant keeps the exported functions out of the
        // plugin crate's namespace; `no_mangle` still exports them.
        const _: () = {
            #[no_mangle]
            pub extern "C" fn runnel_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[no_mangle]
            pub extern "C" fn runnel_kind() -> i32 {
                $kind as i32
            }

            #[no_mangle]
            pub extern "C" fn runnel_alloc(len: i32) -> i32 {
                $crate::__rt::alloc(len)
            }

            #[no_mangle]
            pub extern "C" fn runnel_init(ptr: i32, len: i32) -> i32 {
                $crate::__rt::init(ptr, len, $crate::__init_hook!($($init)?))
            }

            #[no_mangle]
            pub extern "C" fn runnel_process(ptr: i32, len: i32) -> i64 {
                $crate::__rt::process(ptr, len, $crate::__init_hook!($($init)?), $body)
            }
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_hook {
    ($build:expr) => {
        |config: &$crate::Config| $crate::__rt::build_settings(config, $build)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __init_hook {
    () => {
        ::core::option::Option::None
    };
    ($init:expr) => {
        ::core::option::Option::Some($init)
    };
}

/// Exports a filter: `fn(&Record) -> bool`, `true` keeps the record.
///
/// ```no_run
/// fn keep_even_offsets(record: &runnel_plugin::Record) -> bool {
///     record.offset() % 2 == 0
/// }
/// runnel_plugin::export_filter!(keep_even_offsets);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($keep:expr, settings = $build:expr $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Filter,
            [$crate::__settings_hook!($build)],
            |input, out| {
                let settings = $crate::__rt::settings();
                $crate::process::filter(input, out, |record| ($keep)(settings, record))
            }
        );
    };
    ($keep:expr $(, init = $init:expr)? $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Filter,
            [$($init)?],
            |input, out| $crate::process::filter(input, out, $keep)
        );
    };
}

/// Exports a map: `fn(&Record) -> OwnedRecord`, one output record per input
/// record.
///
/// ```no_run
/// use runnel_plugin::{OwnedRecord, Record};
///
/// fn shout(record: &Record) -> OwnedRecord {
///     let value = record.value().unwrap_or_default().to_ascii_uppercase();
///     record.with_value(value)
/// }
/// runnel_plugin::export_map!(shout);
/// ```
#[macro_export]
macro_rules! export_map {
    ($f:expr, settings = $build:expr $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Map,
            [$crate::__settings_hook!($build)],
            |input, out| {
                let settings = $crate::__rt::settings();
                $crate::process::map(input, out, |record| ($f)(settings, record))
            }
        );
    };
    ($f:expr $(, init = $init:expr)? $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Map,
            [$($init)?],
            |input, out| $crate::process::map(input, out, $f)
        );
    };
}

/// Exports a filter-map: `fn(&Record) -> Option<OwnedRecord>`.
///
/// ```no_run
/// use runnel_plugin::{OwnedRecord, Record};
///
/// fn trimmed_non_empty(record: &Record) -> Option<OwnedRecord> {
///     let text = record.value_str()?.trim();
///     (!text.is_empty()).then(|| record.with_value(text))
/// }
/// runnel_plugin::export_filter_map!(trimmed_non_empty);
/// ```
#[macro_export]
macro_rules! export_filter_map {
    ($f:expr, settings = $build:expr $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::FilterMap,
            [$crate::__settings_hook!($build)],
            |input, out| {
                let settings = $crate::__rt::settings();
                $crate::process::filter_map(input, out, |record| ($f)(settings, record))
            }
        );
    };
    ($f:expr $(, init = $init:expr)? $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::FilterMap,
            [$($init)?],
            |input, out| $crate::process::filter_map(input, out, $f)
        );
    };
}

/// Exports a flat-map: `fn(&Record) -> I` where `I: IntoIterator<Item =
/// OwnedRecord>` (a `Vec`, an `Option`, an array...).
///
/// ```no_run
/// use runnel_plugin::{OwnedRecord, Record};
///
/// fn words(record: &Record) -> Vec<OwnedRecord> {
///     record
///         .value_str()
///         .unwrap_or_default()
///         .split_whitespace()
///         .map(|word| record.with_value(word))
///         .collect()
/// }
/// runnel_plugin::export_flat_map!(words);
/// ```
#[macro_export]
macro_rules! export_flat_map {
    ($f:expr, settings = $build:expr $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::FlatMap,
            [$crate::__settings_hook!($build)],
            |input, out| {
                let settings = $crate::__rt::settings();
                $crate::process::flat_map(input, out, |record| ($f)(settings, record))
            }
        );
    };
    ($f:expr $(, init = $init:expr)? $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::FlatMap,
            [$($init)?],
            |input, out| $crate::process::flat_map(input, out, $f)
        );
    };
}

/// Exports an aggregate: `fn(&Record, &mut Option<Vec<u8>>) -> I` where `I:
/// IntoIterator<Item = OwnedRecord>`.
///
/// The host keeps one state per key (persisted by the runner that uses the
/// plugin). The function sees the state of the record's key as left by the
/// previous record with that key (`None`: no state yet), updates it in place
/// (`None` deletes it), and returns the records to emit.
///
/// ```no_run
/// use runnel_plugin::{OwnedRecord, Record};
///
/// /// Emits the total of the values (decimal integers) seen per key.
/// fn sum(record: &Record, state: &mut Option<Vec<u8>>) -> Option<OwnedRecord> {
///     let n: i64 = record.value_str()?.trim().parse().ok()?;
///     let total = state
///         .as_deref()
///         .and_then(|s| s.try_into().ok())
///         .map_or(0, i64::from_le_bytes)
///         + n;
///     *state = Some(total.to_le_bytes().to_vec());
///     Some(record.with_value(total.to_string()))
/// }
/// runnel_plugin::export_aggregate!(sum);
/// ```
#[macro_export]
macro_rules! export_aggregate {
    ($f:expr, settings = $build:expr $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Aggregate,
            [$crate::__settings_hook!($build)],
            |input, out| {
                let settings = $crate::__rt::settings();
                $crate::process::aggregate(input, out, |record, state| ($f)(settings, record, state))
            }
        );
    };
    ($f:expr $(, init = $init:expr)? $(,)?) => {
        $crate::__export_plugin!(
            $crate::Kind::Aggregate,
            [$($init)?],
            |input, out| $crate::process::aggregate(input, out, $f)
        );
    };
}
