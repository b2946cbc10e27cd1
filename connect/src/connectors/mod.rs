//! The built-in connectors.

use std::sync::Arc;

use crate::plugin::ConnectorPlugin;

pub mod datagen;
pub mod file;
pub mod http;
pub mod postgres;
pub mod topic;

/// Every built-in connector plugin.
pub fn builtin() -> Vec<Arc<dyn ConnectorPlugin>> {
    vec![
        Arc::new(file::FileSource),
        Arc::new(file::FileSink),
        Arc::new(http::HttpSource),
        Arc::new(http::HttpSink),
        Arc::new(datagen::Datagen),
        Arc::new(topic::TopicSink),
        Arc::new(postgres::PostgresSink),
        Arc::new(postgres::PostgresSource),
    ]
}

/// The plugin a `connector.class` names: its Runnel name, class name or
/// an alias (Kafka's class names), case-insensitively.
pub fn find<'a>(
    plugins: &'a [Arc<dyn ConnectorPlugin>],
    class: &str,
) -> Option<&'a Arc<dyn ConnectorPlugin>> {
    let class = class.trim();
    plugins.iter().find(|p| {
        p.name().eq_ignore_ascii_case(class)
            || p.class().eq_ignore_ascii_case(class)
            || p.aliases().iter().any(|a| a.eq_ignore_ascii_case(class))
    })
}
