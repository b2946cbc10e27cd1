//! Hot reload: a plugin handle whose module can be swapped while batches
//! run. A batch holds the `Arc<Plugin>` it started with, so in-flight
//! records finish on the old module and the next batch uses the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::{Plugin, PluginError, PluginHost};

pub struct PluginHandle {
    name: String,
    config: BTreeMap<String, String>,
    current: RwLock<Arc<Plugin>>,
}

impl PluginHandle {
    pub fn new(
        host: &PluginHost,
        name: &str,
        wasm: &[u8],
        config: BTreeMap<String, String>,
    ) -> Result<Arc<PluginHandle>, PluginError> {
        let plugin = host.load(name, wasm, &config)?;
        Ok(Arc::new(PluginHandle {
            name: name.to_string(),
            config,
            current: RwLock::new(Arc::new(plugin)),
        }))
    }

    /// The module to use for the next batch.
    pub fn current(&self) -> Arc<Plugin> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads a new module and makes it current. On error the old module
    /// stays in place.
    pub fn replace(&self, host: &PluginHost, wasm: &[u8]) -> Result<(), PluginError> {
        let plugin = host.load(&self.name, wasm, &self.config)?;
        let old_hash = self.current().sha256().to_string();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(plugin);
        tracing::info!(plugin = %self.name, from = %old_hash, to = %self.current().sha256(), "plugin reloaded");
        Ok(())
    }

    /// Watches `path` and reloads whenever the file changes (checked every
    /// `interval`). Stops when the handle or the host is dropped.
    pub fn watch(self: &Arc<Self>, host: &Arc<PluginHost>, path: &Path, interval: Duration) {
        let (handle, host, path) = (
            Arc::downgrade(self),
            Arc::downgrade(host),
            path.to_path_buf(),
        );
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut last = stamp(&path);
        let spawned = std::thread::Builder::new().name("runnel-plugin-watch".into()).spawn(move || loop {
            std::thread::sleep(interval);
            let (Some(handle), Some(host)) = (handle.upgrade(), host.upgrade()) else { return };
            let now = stamp(&path);
            if now.is_some() && now != last {
                last = now;
                match std::fs::read(&path) {
                    Ok(wasm) => {
                        if let Err(e) = handle.replace(&host, &wasm) {
                            tracing::error!(plugin = %handle.name, error = %e, "new module refused; keeping the old one");
                        }
                    }
                    Err(e) => tracing::error!(plugin = %handle.name, error = %e, "cannot read the changed module"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the plugin file watcher");
        }
    }
}
