//! Logging to the host, failing a batch, and the panic hook.
//!
//! On `wasm32` these call the ABI's two imports, `env.runnel_log` and
//! `env.runnel_fail`; a plugin that never logs or fails imports neither.
//! Built natively (for a plugin's unit tests) logging goes to stderr and
//! [`fail`] panics, so plugin logic can be tested with `cargo test`.
//!
//! ```
//! use runnel_plugin::{debug, info};
//!
//! info!("configured for field {}", "email");
//! debug!("this is only formatted when debug is enabled");
//! ```

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Log levels, with the numbers `runnel_log` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something is suspicious.
    Warn = 2,
    /// Progress worth knowing.
    Info = 3,
    /// Detail for debugging a plugin.
    Debug = 4,
    /// Very detailed detail.
    Trace = 5,
}

impl Level {
    /// The level's name in capitals (`"ERROR"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Messages above this level are not formatted nor sent to the host.
/// Every level is sent by default: the host filters by its own log level.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Trace as u8);

/// Stops formatting and sending messages above `level`; a plugin logging
/// per record can call it from its init hook to save the calls.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether messages at `level` are sent.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Sends `message` to the host's log at `level` (ignoring the maximum
/// level).
pub fn log_str(level: Level, message: &str) {
    imports::log(level, message);
}

#[doc(hidden)]
pub fn __log(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log_str(level, message),
        None => log_str(level, &alloc::fmt::format(args)),
    }
}

/// Logs at a [`Level`], formatting like `format!`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::__log(level, ::core::format_args!($($arg)+));
        }
    }};
}

/// Logs at [`Level::Error`](crate::log::Level::Error).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}

/// Logs at [`Level::Warn`](crate::log::Level::Warn).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs at [`Level::Info`](crate::log::Level::Info).
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs at [`Level::Debug`](crate::log::Level::Debug).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs at [`Level::Trace`](crate::log::Level::Trace).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}

/// Fails the whole batch with `message` (through `env.runnel_fail`); the
/// host reports it as a plugin failure naming the batch's first offset.
/// Does not return. Natively, panics with the message.
pub fn fail(message: &str) -> ! {
    imports::fail(message)
}

/// [`fail`] with a message formatted like `format!`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)+) => {
        $crate::log::fail(&::std::format!($($arg)+))
    };
}

/// Installs a panic hook that sends the panic message and location to the
/// host at [`Level::Error`]. The panic then aborts, which traps, and the host
/// reports the trap. Called by the generated exports before any plugin code.
pub fn install_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(std::boxed::Box::new(|info| {
            log_str(Level::Error, &panic_message(info));
        }));
    });
}

/// One line: `panic: <message> (at <file>:<line>:<column>)`.
fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> std::string::String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| {
            payload
                .downcast_ref::<std::string::String>()
                .map(|s| s.as_str())
        })
        .unwrap_or("(a non-string payload)");
    match info.location() {
        Some(at) => std::format!("panic: {message} (at {at})"),
        None => std::format!("panic: {message}"),
    }
}

#[cfg(target_arch = "wasm32")]
mod imports {
    use super::Level;

    #[link(wasm_import_module = "env")]
    extern "C" {
        #[link_name = "runnel_log"]
        fn runnel_log(level: i32, ptr: *const u8, len: usize);
        #[link_name = "runnel_fail"]
        fn runnel_fail(ptr: *const u8, len: usize);
    }

    pub(super) fn log(level: Level, message: &str) {
        // SAFETY: the host only reads `len` bytes at `ptr`, which are the
        // borrowed message.
        unsafe { runnel_log(level as i32, message.as_ptr(), message.len()) }
    }

    pub(super) fn fail(message: &str) -> ! {
        // SAFETY: as for `runnel_log`; the host traps and never returns.
        unsafe { runnel_fail(message.as_ptr(), message.len()) };
        // A host that returned anyway still gets a trap.
        core::arch::wasm32::unreachable()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imports {
    use super::Level;

    pub(super) fn log(level: Level, message: &str) {
        std::eprintln!("[plugin {}] {message}", level.as_str());
    }

    pub(super) fn fail(message: &str) -> ! {
        panic!("runnel_fail: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_above_the_maximum_are_disabled() {
        assert!(enabled(Level::Trace));
        set_max_level(Level::Info);
        assert!(enabled(Level::Error));
        assert!(enabled(Level::Info));
        assert!(!enabled(Level::Debug));
        set_max_level(Level::Trace);
        assert_eq!(Level::Warn.as_str(), "WARN");
    }

    #[test]
    fn panic_messages_fit_on_one_line() {
        let previous = std::panic::take_hook();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::string::String::new()));
        let sink = seen.clone();
        // Other tests may panic meanwhile, on their own threads.
        let this_thread = std::thread::current().id();
        std::panic::set_hook(std::boxed::Box::new(move |info| {
            if std::thread::current().id() == this_thread {
                *sink.lock().unwrap() = panic_message(info);
            }
        }));
        let _ = std::panic::catch_unwind(|| panic!("bad record {}", 7));
        std::panic::set_hook(previous);
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.starts_with("panic: bad record 7 (at ") && seen.contains("log.rs"),
            "{seen}"
        );
    }

    #[test]
    #[should_panic(expected = "runnel_fail: bad record 7")]
    fn fail_panics_natively() {
        crate::fail!("bad record {}", 7);
    }
}
