//! What the Rust examples share: start an application against the broker
//! named on the command line (default 127.0.0.1:9092) and run it until
//! its stream thread stops. A second argument, `host:port`, serves the
//! application's stores there (`curl host:port/stores/<store>/<key>`). Ctrl-C ends the process without a clean
//! close, so the next start restores its stores from their changelogs
//! (at-least-once: the last second's records may be counted again).

pub fn run(application_id: &str, topology: runnel_streams::Topology) {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let mut config = runnel_streams::StreamsConfig::new(application_id, &bootstrap);
    config.application_server = std::env::args().nth(2);
    let app = match runnel_streams::KafkaStreams::start(topology, config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{application_id}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("{application_id} running against {bootstrap}; Ctrl-C stops it");
    if let Some(addr) = app.query_addr() {
        eprintln!("its stores: curl http://{addr}/stores");
    }
    while app.is_running() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if let Err(e) = app.close() {
        eprintln!("{application_id} stopped: {e}");
        std::process::exit(1);
    }
}
