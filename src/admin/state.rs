//! What the admin listener's routes share (the broker's metrics page and
//! the web console's API): the broker, its transforms, this server's HTTP
//! counters and where the process serves its other APIs.

use std::sync::Arc;

use runnel_core::broker::Broker;
use runnel_core::transforms::TransformManager;

/// What the admin routes share.
#[derive(Clone)]
pub struct AdminState {
    pub broker: Arc<Broker>,
    /// The broker-side transforms (their counters are on `/metrics`).
    pub transforms: Arc<TransformManager>,
    pub http: Arc<runnel_http::Metrics>,
    pub services: Services,
    /// The host names the console answers under besides loopback names and
    /// IP addresses (`--admin-allowed-hosts`).
    pub console_hosts: super::hosts::AllowedHosts,
}

/// Where this process serves its other APIs, for the routes that act as a
/// client of them (the console talks Kafka to the broker's own listener,
/// so its writes get the checks every Kafka client gets).
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// The broker's Kafka listener, reachable from this process.
    pub kafka: String,
    /// The schema registry's base URL (`http://host:port`), if it runs.
    pub registry_url: Option<String>,
    /// The connect worker's base URL, if it runs.
    pub connect_url: Option<String>,
}
