//! librdkafka settings shared by the CLI's client commands.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// A client context that keeps librdkafka's own chatter out of the
/// terminal. librdkafka retries unreachable brokers in a loop and reports
/// every attempt; the commands turn failures into one readable line
/// themselves (e.g. "cannot reach a broker at ..."), so librdkafka's logs
/// and error events only go to `RUNNEL_LOG=debug`.
pub struct CliContext;

impl ClientContext for CliContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for CliContext {}

/// Applies `-X key=value` librdkafka properties given on the command line.
pub fn apply_properties(
    config: &mut rdkafka::config::ClientConfig,
    properties: &[String],
) -> anyhow::Result<()> {
    for p in properties {
        match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                config.set(k.trim(), v);
            }
            _ => anyhow::bail!("-X '{p}' is not KEY=VALUE"),
        }
    }
    Ok(())
}
