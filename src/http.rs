//! The flags of the REST APIs' HTTP servers (schema registry, connect
//! worker), shared by `runnel serve`, `runnel registry serve` and
//! `runnel connect`. Each flag is also an environment variable; for
//! `runnel serve` they override the config file's `http:` section.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use runnel_core::config::HttpConfig;

#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// A REST request's line and headers must arrive within this many
    /// milliseconds (an idle keep-alive connection is closed after as
    /// long) [default: 30000]
    #[arg(long, env = "RUNNEL_HTTP_HEADER_READ_TIMEOUT_MS")]
    pub http_header_read_timeout_ms: Option<u64>,
    /// A REST request's body must arrive within this many milliseconds
    /// after its headers; a client that reads nothing of its answer for as
    /// long is cut too [default: 30000]
    #[arg(long, env = "RUNNEL_HTTP_BODY_READ_TIMEOUT_MS")]
    pub http_body_read_timeout_ms: Option<u64>,
    /// Most connections one REST server holds open [default: 1024]
    #[arg(long, env = "RUNNEL_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Most connections one client address may hold open on one REST
    /// server [default: 256]
    #[arg(long, env = "RUNNEL_HTTP_MAX_CONNECTIONS_PER_IP")]
    pub http_max_connections_per_ip: Option<usize>,
}

impl HttpArgs {
    /// Sets the keys given as flags in `config`.
    pub fn apply(&self, config: &mut HttpConfig) {
        if let Some(v) = self.http_header_read_timeout_ms {
            config.header_read_timeout_ms = v;
        }
        if let Some(v) = self.http_body_read_timeout_ms {
            config.body_read_timeout_ms = v;
        }
        if let Some(v) = self.http_max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.http_max_connections_per_ip {
            config.max_connections_per_ip = v;
        }
    }

    /// The limits of a server started without a config file: the flags
    /// over the defaults.
    pub fn limits(&self) -> Result<runnel_http::Limits> {
        let mut config = HttpConfig::default();
        self.apply(&mut config);
        config.validate().context("invalid HTTP limits")?;
        Ok(limits(&config))
    }
}

/// The HTTP server limits of `config` (each API sets its own body limit).
pub fn limits(config: &HttpConfig) -> runnel_http::Limits {
    runnel_http::Limits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        ..runnel_http::Limits::default()
    }
}
