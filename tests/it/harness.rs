//! Starts the real `runnel` binary on a free port in a temp dir, and gives
//! tests librdkafka clients and a raw protocol client pointed at it.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_core::client::Client;

use crate::fault_proxy::FaultProxy;

pub const BIN: &str = env!("CARGO_BIN_EXE_runnel");

/// A broker process owned by a test. Killed when dropped.
pub struct TestBroker {
    child: Option<Child>,
    pub port: u16,
    /// The schema registry's REST port.
    pub registry_port: u16,
    /// The connect worker's REST port.
    pub connect_port: u16,
    /// The admin listener (/metrics, the console); always on.
    pub admin_port: u16,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    args: Vec<String>,
    starts: usize,
    /// (soft, hard) RLIMIT_NOFILE the process starts with, if set.
    open_file_limit: Option<(u64, u64)>,
    /// Whether the schema registry and the connect worker run next to the
    /// broker (not for cluster nodes, which test the broker).
    services: bool,
}

/// A port free to listen on, from below the kernel's ephemeral range
/// (32768 and up on Linux): a port the kernel hands out with `bind(0)` can
/// be taken by any client's outgoing connection before the broker binds
/// it, and the tests open many. Ports go round a range from a random
/// start, each checked free when picked.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        rand::random::<u32>() % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl TestBroker {
    pub fn start() -> TestBroker {
        Self::start_with(&[])
    }

    /// Starts a broker with extra `runnel serve` arguments.
    pub fn start_with(args: &[&str]) -> TestBroker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut broker = TestBroker {
            child: None,
            port: free_port(),
            registry_port: free_port(),
            connect_port: free_port(),
            admin_port: free_port(),
            dir: tmp.path().join("data"),
            _tmp: tmp,
            args: args.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            open_file_limit: None,
            services: true,
        };
        broker.spawn();
        broker
    }

    /// A broker without the schema registry and the connect worker.
    pub fn start_alone(args: &[&str]) -> TestBroker {
        let mut broker = Self::unstarted(free_port(), args.iter().map(|s| s.to_string()).collect());
        broker.spawn();
        broker
    }

    /// A broker on `port` that `spawn` has not started yet.
    fn unstarted(port: u16, args: Vec<String>) -> TestBroker {
        let tmp = tempfile::tempdir().expect("temp dir");
        TestBroker {
            child: None,
            port,
            registry_port: free_port(),
            connect_port: free_port(),
            admin_port: free_port(),
            dir: tmp.path().join("data"),
            _tmp: tmp,
            args,
            starts: 0,
            open_file_limit: None,
            services: false,
        }
    }

    /// Starts a broker with a YAML config file (written into its temp dir)
    /// and extra arguments.
    pub fn start_with_config(yaml: &str, args: &[&str]) -> TestBroker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let config = tmp.path().join("runnel.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut all = vec!["--config".to_string(), config.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut broker = TestBroker {
            child: None,
            port: free_port(),
            registry_port: free_port(),
            connect_port: free_port(),
            admin_port: free_port(),
            dir: tmp.path().join("data"),
            _tmp: tmp,
            args: all,
            starts: 0,
            open_file_limit: None,
            services: true,
        };
        broker.spawn();
        broker
    }

    /// Starts a broker whose process begins with this open-file limit
    /// (soft, hard), as `ulimit -Sn soft -Hn hard` would set it.
    pub fn start_with_open_file_limit(soft: u64, hard: u64, args: &[&str]) -> TestBroker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut broker = TestBroker {
            child: None,
            port: free_port(),
            registry_port: free_port(),
            connect_port: free_port(),
            admin_port: free_port(),
            dir: tmp.path().join("data"),
            _tmp: tmp,
            args: args.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            open_file_limit: Some((soft, hard)),
            services: true,
        };
        broker.spawn();
        broker
    }

    /// The broker's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker runs").id()
    }

    /// How many files the broker process has open now (/proc/<pid>/fd).
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/<pid>/fd")
            .count()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Base URL of the connect worker's REST API.
    pub fn connect_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.connect_port)
    }

    /// Base URL of the broker's admin listener (/metrics, the console).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The broker's `/metrics` page (waits up to 30 s for the listener).
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.admin_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => return r.text().await.unwrap(),
                other if Instant::now() > deadline => panic!("GET {url}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Base URL of the schema registry's REST API.
    pub fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry_port)
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self._tmp.path().join(format!("broker-{n}.log"))
    }

    /// Everything the broker logged, over all its runs.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    fn spawn_only(&mut self) {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("broker log file");
        let mut command = Command::new(BIN);
        if let Some((soft, hard)) = self.open_file_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: between fork and exec the closure only calls
            // setrlimit, which is async-signal-safe, on a struct it owns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--kafka-addr")
            .arg(self.addr())
            .arg("--registry-addr")
            .arg(if self.services {
                format!("127.0.0.1:{}", self.registry_port)
            } else {
                "off".to_string()
            })
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--connect-addr")
            .arg(if self.services {
                format!("127.0.0.1:{}", self.connect_port)
            } else {
                "off".to_string()
            })
            .args(&self.args)
            .env("RUNNEL_LOG", "info,runnel_core=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start runnel serve");
        self.child = Some(child);
    }

    fn spawn(&mut self) {
        self.spawn_only();
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(self.addr()).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "broker exited with {status} during startup:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "broker did not start listening within 30 s:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process by pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "broker did not stop within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, but does nothing (no request is
    /// answered, no heartbeat or fetch is sent) until [`resume`](Self::resume).
    pub fn pause(&self) {
        // SAFETY: sending a signal to our own child process by pid.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        // SAFETY: sending a signal to our own child process by pid.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGCONT);
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs the `runnel` CLI pointed at this broker and its registry.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUNNEL_BOOTSTRAP", self.addr())
            .env("RUNNEL_REGISTRY_URL", self.registry_url())
            .env("RUNNEL_CONNECT_URL", self.connect_url())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run runnel");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().expect("wait for runnel")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr(), "runnel-tests")
            .await
            .expect("connect raw client")
    }

    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.addr())
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config.create().expect("create producer")
    }

    pub fn consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", "tests-manual-assignment")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("create consumer")
    }

    /// Reads `partitions` of `topic` from the beginning until `expected`
    /// records arrived (or `timeout` passed); returns what arrived.
    pub fn consume(
        &self,
        topic: &str,
        partitions: i32,
        expected: usize,
        timeout: Duration,
    ) -> Vec<OwnedMessage> {
        let consumer = self.consumer();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("add partition");
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(m.detach()),
                Some(Err(e)) => panic!("consume error: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
    }
}

/// Brokers started as one cluster: every node a voter of the metadata
/// quorum (`--controller-quorum`) on loopback ports of its own.
pub struct TestCluster {
    pub nodes: Vec<TestBroker>,
    /// The proxies between the nodes, for a cluster started with
    /// [`TestCluster::start_linked`].
    links: Option<Links>,
    /// The voters, `id@addr,...` (a cluster started with
    /// [`TestCluster::start_with`]).
    quorum: String,
}

/// Every connection one node of a cluster makes to another, through a
/// [`FaultProxy`], so a test can cut a node off from its peers while the
/// test's own clients still reach it on its real port.
///
/// - Metadata quorum (Raft and broker heartbeats): one proxy per ordered
///   pair of nodes. Each node's `--controller-quorum` names the proxy to
///   each peer (and its own real address), so the link from `i` to `j` can
///   fail alone.
/// - Replication: a broker registers one Kafka address, which every other
///   broker's replica fetcher (and every client following Metadata) uses;
///   each node advertises a proxy in front of its real listener. A cut
///   proxy stops the peers fetching from the node; the node's own fetches
///   from its peers go through their proxies, which stay up (a node cut
///   off from the quorum keeps a stale image: it fetches only partitions
///   it still believes others lead, never the ones it believes it leads).
struct Links {
    /// `controller[i][j]`: node `i`'s link to node `j`'s controller
    /// (`None` for `i == j`).
    controller: Vec<Vec<Option<FaultProxy>>>,
    /// `kafka[j]`: the Kafka address node `j` advertises.
    kafka: Vec<FaultProxy>,
}

/// The cluster id written into every node's `meta.properties` before a
/// linked cluster's first start (as `kafka-storage format -t` would): the
/// nodes name their peers by different (proxy) addresses, so they would
/// otherwise derive different ids from their voter lists.
const LINKED_CLUSTER_ID: &str = "linked-test-cluster-01";

impl TestCluster {
    pub fn start(n: usize) -> TestCluster {
        Self::start_with(n, &[])
    }

    /// Starts `n` nodes (ids 1..=n) with extra `runnel serve` arguments.
    pub fn start_with(n: usize, args: &[&str]) -> TestCluster {
        let controller_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let quorum = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<TestBroker> = (0..n)
            .map(|i| {
                let mut all = vec![
                    "--node-id".to_string(),
                    (i + 1).to_string(),
                    "--controller-quorum".to_string(),
                    quorum.clone(),
                ];
                all.extend(args.iter().map(|s| s.to_string()));
                TestBroker::unstarted(free_port(), all)
            })
            .collect();
        // A node waits for a quorum before it serves: start them all, then
        // wait for each.
        for node in &mut nodes {
            node.spawn_only();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        let cluster = TestCluster {
            nodes,
            links: None,
            quorum,
        };
        cluster.wait_until_every_node_lists_all();
        cluster
    }

    /// Starts one more node, a broker that follows the quorum without
    /// voting (`--process-roles broker`), with id `nodes.len() + 1`; waits
    /// until every node lists it.
    pub fn add_broker_only(&mut self, args: &[&str]) {
        let id = self.nodes.len() + 1;
        let mut all = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--controller-quorum".to_string(),
            self.quorum.clone(),
            "--process-roles".to_string(),
            "broker".to_string(),
            "--controller-addr".to_string(),
            format!("127.0.0.1:{}", free_port()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut node = TestBroker::unstarted(free_port(), all);
        node.spawn_only();
        node.wait_ready();
        self.nodes.push(node);
        self.wait_until_every_node_lists_all();
    }

    /// Waits until every node lists all the cluster's brokers as live (a
    /// node serves before the others registered; what it decides meanwhile,
    /// e.g. a topic's replication factor, sees fewer brokers).
    fn wait_until_every_node_lists_all(&self) {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr()).collect();
        let n = addrs.len();
        // Its own runtime on its own thread: callers are inside one.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                for addr in &addrs {
                    loop {
                        let mut request = kafka_protocol::messages::MetadataRequest::default();
                        request.topics = Some(Vec::new());
                        let listed = match Client::connect(addr, "runnel-tests").await {
                            Ok(mut c) => c.send(&request).await.map_or(0, |r| r.brokers.len()),
                            Err(_) => 0,
                        };
                        if listed == n {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "{addr} lists {listed} of {n} brokers"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .join()
        .expect("the cluster came up");
    }

    /// Starts `n` nodes (ids 1..=n) whose every link to each other runs
    /// through a [`FaultProxy`] (see [`Links`]), with extra `runnel serve`
    /// arguments. [`isolate`](Self::isolate) cuts one node off.
    pub fn start_linked(n: usize, args: &[&str]) -> TestCluster {
        let controller_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let kafka_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let kafka: Vec<FaultProxy> = kafka_ports
            .iter()
            .map(|&port| FaultProxy::start(loopback(port)))
            .collect();
        let controller: Vec<Vec<Option<FaultProxy>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (i != j).then(|| FaultProxy::start(loopback(controller_ports[j]))))
                    .collect()
            })
            .collect();
        let mut nodes: Vec<TestBroker> = (0..n)
            .map(|i| {
                let quorum = (0..n)
                    .map(|j| match &controller[i][j] {
                        Some(proxy) => format!("{}@{}", j + 1, proxy.addr()),
                        None => format!("{}@127.0.0.1:{}", j + 1, controller_ports[j]),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                let mut all = vec![
                    "--node-id".to_string(),
                    (i + 1).to_string(),
                    "--controller-quorum".to_string(),
                    quorum,
                    "--controller-addr".to_string(),
                    format!("127.0.0.1:{}", controller_ports[i]),
                    "--advertised-kafka-addr".to_string(),
                    kafka[i].addr(),
                ];
                all.extend(args.iter().map(|s| s.to_string()));
                let node = TestBroker::unstarted(kafka_ports[i], all);
                std::fs::create_dir_all(&node.dir).expect("create the data dir");
                std::fs::write(
                    node.dir.join("meta.properties"),
                    format!(
                        "version=1\ncluster.id={LINKED_CLUSTER_ID}\nnode.id={}\n",
                        i + 1
                    ),
                )
                .expect("write meta.properties");
                node
            })
            .collect();
        for node in &mut nodes {
            node.spawn_only();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        TestCluster {
            nodes,
            links: Some(Links { controller, kafka }),
            quorum: String::new(),
        }
    }

    fn links(&self) -> &Links {
        self.links
            .as_ref()
            .expect("a cluster started with TestCluster::start_linked")
    }

    /// Every proxy that carries a connection from or to node `index`
    /// (0-based), apart from its own fetches from its peers.
    fn links_of(&self, index: usize) -> Vec<&FaultProxy> {
        let links = self.links();
        let mut proxies = vec![&links.kafka[index]];
        for other in 0..self.nodes.len() {
            proxies.extend(links.controller[index][other].as_ref());
            proxies.extend(links.controller[other][index].as_ref());
        }
        proxies
    }

    /// Cuts node `index` (0-based) off from its peers like a network
    /// partition: nothing crosses its links to and from the other
    /// controllers, nor reaches it from the other brokers' fetchers (bytes
    /// sent meanwhile are held, as TCP would, until [`heal`](Self::heal)).
    /// The test's clients still reach it on its real port.
    pub fn isolate(&self, index: usize) {
        for proxy in self.links_of(index) {
            proxy.partition();
        }
    }

    /// Resets every connection the other brokers' replica fetchers hold to
    /// node `index` (0-based) and refuses new ones, until
    /// [`heal`](Self::heal): nothing more it appends reaches them, not
    /// even an answer already on its way.
    pub fn cut_replication_from(&self, index: usize) {
        self.links().kafka[index].cut();
    }

    /// Reconnects node `index` after [`isolate`](Self::isolate) or
    /// [`cut_replication_from`](Self::cut_replication_from).
    pub fn heal(&self, index: usize) {
        for proxy in self.links_of(index) {
            proxy.heal();
        }
    }

    /// Every node's Kafka address, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Creates a topic through the raw client, panicking on error.
pub async fn create_topic(
    broker: &TestBroker,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = broker.client().await;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.into()));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(k.to_string());
        c.value = Some(StrBytes::from_string(v.to_string()));
        topic.configs.push(c);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    let response = client.send(&request).await.expect("CreateTopics");
    let result = &response.topics[0];
    assert_eq!(
        result.error_code, 0,
        "create topic {name}: {:?}",
        result.error_message
    );
}

/// Creates a topic with `replicas` replicas per partition through the raw
/// client, panicking on error.
pub async fn create_replicated_topic(
    broker: &TestBroker,
    name: &str,
    partitions: i32,
    replicas: i16,
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = broker.client().await;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.into()));
    topic.num_partitions = partitions;
    topic.replication_factor = replicas;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(k.to_string());
        c.value = Some(StrBytes::from_string(v.to_string()));
        topic.configs.push(c);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let response = client.send(&request).await.expect("CreateTopics");
    let result = &response.topics[0];
    assert_eq!(
        result.error_code, 0,
        "create topic {name}: {:?}",
        result.error_message
    );
}

/// One record batch as a partition's segment files hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
    /// The whole batch, header included.
    pub bytes: Vec<u8>,
}

/// The base offsets of the segment files of `topic`-`partition` on
/// `node`'s disk, in order.
pub fn segment_bases(node: &TestBroker, topic: &str, partition: i32) -> Vec<i64> {
    let dir = node.dir.join(format!("{topic}-{partition}"));
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".log")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    bases.sort();
    bases
}

/// Every whole record batch in the segment files of `topic`-`partition`
/// on `node`'s disk, in offset order (a batch still being written, or a
/// file removed while it is read, ends the list there).
pub fn stored_batches(node: &TestBroker, topic: &str, partition: i32) -> Vec<StoredBatch> {
    let dir = node.dir.join(format!("{topic}-{partition}"));
    let mut batches = Vec::new();
    for base in segment_bases(node, topic, partition) {
        let Ok(data) = std::fs::read(dir.join(format!("{base:020}.log"))) else {
            return batches;
        };
        let mut at = 0;
        // baseOffset (8) batchLength (4) partitionLeaderEpoch (4) magic (1)
        // crc (4) attributes (2) lastOffsetDelta (4) ...
        while at + 27 <= data.len() {
            let len = 12 + i32::from_be_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
            if len < 61 || at + len > data.len() {
                return batches;
            }
            let base_offset = i64::from_be_bytes(data[at..at + 8].try_into().unwrap());
            let delta = i32::from_be_bytes(data[at + 23..at + 27].try_into().unwrap());
            batches.push(StoredBatch {
                base_offset,
                last_offset: base_offset + delta as i64,
                leader_epoch: i32::from_be_bytes(data[at + 12..at + 16].try_into().unwrap()),
                bytes: data[at..at + len].to_vec(),
            });
            at += len;
        }
    }
    batches
}

/// Latest offset (high watermark) of one partition.
pub async fn latest_offset(broker: &TestBroker, topic: &str, partition: i32) -> i64 {
    list_offset(broker, topic, partition, -1)
        .await
        .expect("ListOffsets")
}

/// ListOffsets for one partition: Ok(offset) or Err(error code).
pub async fn list_offset(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<i64, i16> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = broker.client().await;
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    p.current_leader_epoch = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = vec![t];
    let response = client.send(&request).await.expect("ListOffsets");
    let r = &response.topics[0].partitions[0];
    if r.error_code != 0 {
        Err(r.error_code)
    } else {
        Ok(r.offset)
    }
}

/// Value of a record as UTF-8 (tests write text).
pub fn text(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

pub fn key(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

/// Compression codec ids (attributes & 7) of the batches stored at the
/// start of a partition, read with a raw Fetch: what is really on disk.
pub async fn stored_codecs(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
) -> std::collections::BTreeSet<i16> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = broker.client().await;
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.into()));
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_bytes = 1 << 20;
    request.topics = vec![t];
    let response = client.send_version(&request, 12).await.expect("Fetch");
    let data = response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut codecs = std::collections::BTreeSet::new();
    let mut at = 0;
    while at + 61 <= data.len() {
        let len = 12 + i32::from_be_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        codecs.insert(i16::from_be_bytes([data[at + 21], data[at + 22]]) & 7);
        at += len;
    }
    codecs
}

/// Path of an example plugin built by `plugins/build.sh` (run once per test
/// process if the module is missing).
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("plugins/dist").join(format!("{name}.wasm"));
    if !path.exists() {
        BUILD.call_once(|| {
            let status = Command::new(root.join("plugins/build.sh"))
                .status()
                .expect("run plugins/build.sh");
            assert!(status.success(), "plugins/build.sh failed");
        });
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The directory holding PostgreSQL's server programs (`initdb`, `pg_ctl`,
/// `postgres`): on PATH, or the newest `/usr/lib/postgresql/*/bin`. Fails
/// the test when there is none: the PostgreSQL tests must not pass by
/// skipping.
pub fn postgres_bin_dir() -> PathBuf {
    let has_all = |dir: &std::path::Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_all(d)) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    has_all(&bin).then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server programs (initdb, pg_ctl, postgres) are neither on PATH nor in \
             /usr/lib/postgresql/*/bin: install the `postgresql` package (.ci/run does)"
        ),
    }
}

/// A PostgreSQL server owned by a test: a fresh cluster (`initdb -A trust`)
/// in a temp dir, listening on 127.0.0.1 on a free port with its socket in
/// that dir, without fsync (a killed server keeps what it committed; a
/// machine crash would not). Stopped (`pg_ctl stop -m immediate`) when
/// dropped. PostgreSQL refuses to run as root, so as root the programs run
/// as the user `postgres` (`runuser`), which then owns the temp dir.
pub struct TestPostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    as_postgres: bool,
    _tmp: tempfile::TempDir,
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        let bin = postgres_bin_dir();
        let tmp = tempfile::tempdir().expect("temp dir");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            // SAFETY: a NUL-terminated name; the returned entry is read at
            // once, before any other getpw* call.
            let (uid, gid) = unsafe {
                let pw = libc::getpwnam(c"postgres".as_ptr());
                assert!(
                    !pw.is_null(),
                    "running as root, and there is no user `postgres` to run PostgreSQL as \
                     (the `postgresql` package creates it)"
                );
                ((*pw).pw_uid, (*pw).pw_gid)
            };
            std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid))
                .expect("give the temp dir to postgres");
        }
        let pg = TestPostgres {
            port: free_port(),
            bin,
            data: tmp.path().join("data"),
            log: tmp.path().join("postgres.log"),
            as_postgres,
            _tmp: tmp,
        };
        let data = pg.data.display().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self._tmp.path().display()
        );
        let data = self.data.display().to_string();
        let log = self.log.display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
    }

    /// Stops the server at once (`-m immediate`: connections are cut as
    /// in a crash).
    pub fn stop(&self) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn start_again(&self) {
        self.start_server();
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self._tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A client of the `postgres` database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() {
            eprintln!("---- postgres log ----\n{}", self.log());
        }
    }
}

/// A `runnel connect` worker process for a test's broker, with its REST
/// API on a free port; SIGKILLed when dropped. Its group and internal
/// topics (`test-worker-*`) are its own, so the broker's embedded worker
/// runs none of its connectors.
pub struct TestWorker {
    child: Option<Child>,
    pub port: u16,
    bootstrap: String,
    _tmp: tempfile::TempDir,
    starts: usize,
}

impl TestWorker {
    pub fn start(broker: &TestBroker) -> TestWorker {
        let mut worker = TestWorker {
            child: None,
            port: free_port(),
            bootstrap: broker.addr(),
            _tmp: tempfile::tempdir().expect("temp dir"),
            starts: 0,
        };
        worker.spawn();
        worker
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self._tmp.path().join(format!("worker-{n}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("worker log file");
        let child = Command::new(BIN)
            .args(["connect", "--bootstrap", &self.bootstrap])
            .args(["--connect-addr", &format!("127.0.0.1:{}", self.port)])
            .args(["--group-id", "test-worker"])
            .args(["--config-topic", "test-worker-configs"])
            .args(["--offset-topic", "test-worker-offsets"])
            .args(["--status-topic", "test-worker-status"])
            .env("RUNNEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start runnel connect");
        self.child = Some(child);
    }

    /// Base URL of the worker's REST API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: nothing is flushed or committed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the worker and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Everything the worker logged, over all its runs.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- worker log ----\n{}", self.log());
        }
    }
}

/// The value of the sample `series` (name and labels, as written on the
/// page) of a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A producer's identity in a batch built by [`record_batch`]:
/// (producer id, epoch, base sequence); `PLAIN` for none.
pub type BatchProducer = (i64, i16, i32);
pub const PLAIN: BatchProducer = (-1, -1, -1);

/// One uncompressed v2 batch of `values` (no keys) from `producer`,
/// transactional or not, as a raw Produce request carries it.
pub fn record_batch<V: AsRef<str>>(
    producer: BatchProducer,
    transactional: bool,
    values: &[V],
) -> bytes::Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let (producer_id, producer_epoch, base_sequence) = producer;
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if base_sequence < 0 {
                -1
            } else {
                base_sequence + i as i32
            },
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::from(v.as_ref().to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a record batch");
    buf.freeze()
}
