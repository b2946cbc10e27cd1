//! Clients that try to stall or flood the broker: requests that declare a
//! huge size and never finish, silence in the middle of a request, clients
//! that stop reading, too many connections or bytes from one address, and
//! floods of bad frames. Other clients must keep their latency, the
//! offenders must be cut and counted, and the log must stay short.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, MetadataRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{create_topic, TestBroker};

/// The loopback address the well-behaved clients use.
const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
/// Another loopback address (all of 127/8 reaches the broker on Linux), so
/// limits per client address can be seen apart from the good clients'.
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The broker's metrics page (on its admin listener), once it answers.
async fn metrics(broker: &TestBroker) -> String {
    let url = format!("{}/metrics", broker.admin_url());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => return r.text().await.unwrap(),
            other if Instant::now() > deadline => panic!("GET {url}: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One sample of the metrics page, by name and labels.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn closed(reason: &str) -> String {
    format!("runnel_broker_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Polls a sample until `done` holds for it; panics after `limit`.
async fn wait_for_sample(
    broker: &TestBroker,
    name: &str,
    limit: Duration,
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let value = sample(&metrics(broker).await, name);
        if done(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {value} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP connection to the broker from a given local address.
async fn connect_from(source: IpAddr, broker: &TestBroker) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket
        .connect(broker.addr().parse().unwrap())
        .await
        .unwrap()
}

/// Opens a connection that declares a Produce request of `declared` bytes
/// and sends only the first `sent` of them.
async fn start_request(
    broker: &TestBroker,
    source: IpAddr,
    declared: i32,
    sent: usize,
) -> TcpStream {
    let mut stream = connect_from(source, broker).await;
    let mut bytes = declared.to_be_bytes().to_vec();
    bytes.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    bytes.extend_from_slice(&9i16.to_be_bytes());
    bytes.resize(4 + sent, 0x5a);
    stream.write_all(&bytes).await.unwrap();
    stream
}

/// Waits until the broker closes `stream` (EOF or reset); `None` if it is
/// still open after `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An ApiVersions v0 request frame with a null client id.
fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let mut body = vec![0, 18, 0, 0];
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&[0xff, 0xff]);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends ApiVersions and reads the response's correlation id, within `limit`.
async fn api_versions(stream: &mut TcpStream, correlation_id: i32, limit: Duration) -> Option<i32> {
    stream
        .write_all(&api_versions_frame(correlation_id))
        .await
        .ok()?;
    let answer = async {
        let size = stream.read_i32().await.ok()?;
        let mut body = vec![0u8; size as usize];
        stream.read_exact(&mut body).await.ok()?;
        Some(i32::from_be_bytes(body[..4].try_into().unwrap()))
    };
    tokio::time::timeout(limit, answer).await.ok().flatten()
}

/// Produces `count` records one at a time and returns each one's time from
/// send to acknowledgement. Any acknowledgement slower than 10 s fails.
async fn produce_latencies(producer: &FutureProducer, topic: &str, count: usize) -> Vec<Duration> {
    let payload = vec![b'p'; 200];
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let key = i.to_string();
        let started = Instant::now();
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match tokio::time::timeout(
            Duration::from_secs(10),
            producer.send(record, Duration::from_secs(0)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("record {i}: {e}"),
            Err(_) => panic!("record {i} was not acknowledged within 10 s"),
        }
        latencies.push(started.elapsed());
    }
    latencies
}

fn max(latencies: &[Duration]) -> Duration {
    latencies.iter().copied().max().unwrap_or_default()
}

/// Lines the broker logged at WARN or ERROR that contain `text`.
fn warnings(broker: &TestBroker, text: &str) -> Vec<String> {
    broker
        .log()
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(text))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_requests_that_never_finish_neither_slow_other_clients_nor_stay_open() {
    let read_timeout = Duration::from_secs(10);
    let broker = TestBroker::start_with(&["--request-read-timeout-ms", "10000"]);
    create_topic(&broker, "steady", 1, &[]).await;
    let producer = broker.producer(&[("linger.ms", "0"), ("acks", "all")]);
    let before = produce_latencies(&producer, "steady", 50).await;

    // Eight connections each declare a 100 MB request and send 64 KiB of
    // it. Counting the declared sizes, that is more than the broker's
    // whole in-flight budget (512 MiB).
    let open_before = sample(&metrics(&broker).await, "runnel_broker_connections_open");
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(start_request(&broker, GOOD, 100_000_000, 64 * 1024).await);
    }
    wait_for_sample(
        &broker,
        "runnel_broker_connections_open",
        Duration::from_secs(5),
        |open| open >= open_before + 8.0,
    )
    .await;

    let during = produce_latencies(&producer, "steady", 50).await;
    let consume_started = Instant::now();
    let consumed = broker.consume("steady", 1, 100, Duration::from_secs(10));
    let consume_time = consume_started.elapsed();
    let mut metadata_client = broker.client().await;
    metadata_client
        .send(&MetadataRequest::default())
        .await
        .expect("metadata while the stalled connections are open");
    let held = sample(
        &metrics(&broker).await,
        "runnel_broker_inflight_request_bytes",
    );
    assert!(
        started.elapsed() < read_timeout,
        "the measurements must end before the read timeout ({:?})",
        started.elapsed()
    );
    eprintln!(
        "produce→ack max: {:?} alone, {:?} next to 8 stalled requests; consume of 100: {consume_time:?}; held {held} bytes",
        max(&before),
        max(&during)
    );
    assert!(
        max(&during) <= max(&before) * 5 + Duration::from_secs(1),
        "produce latency went from {:?} to {:?}",
        max(&before),
        max(&during)
    );
    assert_eq!(consumed.len(), 100, "consumed within 10 s");
    assert!(
        held <= 8.0 * 192.0 * 1024.0,
        "the stalled requests hold what they sent, not what they declared: {held} bytes"
    );

    // The read timeout cuts every stalled request, and only then.
    for stream in &mut stalled {
        let at = wait_closed(stream, read_timeout + Duration::from_secs(10))
            .await
            .expect("a stalled request is cut after the read timeout");
        let after = at.duration_since(started);
        assert!(
            after >= read_timeout - Duration::from_millis(500),
            "cut after {after:?}, before the read timeout"
        );
    }
    // Counted right after the close.
    wait_for_sample(
        &broker,
        &closed("request_read_timeout"),
        Duration::from_secs(5),
        |n| n == 8.0,
    )
    .await;
    wait_for_sample(
        &broker,
        "runnel_broker_inflight_request_bytes",
        Duration::from_secs(5),
        // Long-polling fetches of the embedded registry hold a few KiB.
        |held| held < 64.0 * 1024.0,
    )
    .await;
    let lines = warnings(&broker, "request_read_timeout");
    assert!(
        (1..=2).contains(&lines.len()),
        "eight cuts at once are logged once or twice:\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_in_the_middle_of_a_request_is_cut_after_the_idle_timeout() {
    let broker = TestBroker::start_with(&[
        "--connections-max-idle-ms",
        "1500",
        "--request-read-timeout-ms",
        "600000",
    ]);
    let started = Instant::now();
    let mut stream = start_request(&broker, GOOD, 1_000_000, 1000).await;
    wait_closed(&mut stream, Duration::from_secs(15))
        .await
        .expect("a silent half-sent request is cut after the idle timeout");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    wait_for_sample(
        &broker,
        &closed("request_read_timeout"),
        Duration::from_secs(5),
        |n| n == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_responses_is_cut_after_the_idle_timeout() {
    let broker = TestBroker::start_with(&["--connections-max-idle-ms", "2000"]);
    create_topic(&broker, "big", 1, &[]).await;
    let producer = broker.producer(&[("linger.ms", "20")]);
    let value = vec![b'b'; 16 * 1024];
    let sends = (0..512).map(|_| {
        producer.send(
            FutureRecord::<(), _>::to("big").payload(&value),
            Duration::from_secs(5),
        )
    });
    for delivery in futures::future::join_all(sends).await {
        assert!(delivery.is_ok(), "8 MB produced");
    }

    // Fetches of 8 MB each, and never a byte read back: the responses fill
    // the socket buffers and the broker's writer waits.
    let mut stream = connect_from(GOOD, &broker).await;
    for correlation_id in 1..=6 {
        let mut p = FetchPartition::default();
        p.partition_max_bytes = 16 << 20;
        p.current_leader_epoch = -1;
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("big"));
        t.partitions = vec![p];
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_bytes = 16 << 20;
        request.topics = vec![t];
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Fetch as i16;
        header.request_api_version = 12;
        header.correlation_id = correlation_id;
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, ApiKey::Fetch.request_header_version(12))
            .unwrap();
        request.encode(&mut frame, 12).unwrap();
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&frame).await.unwrap();
    }
    wait_for_sample(
        &broker,
        &closed("response_write_timeout"),
        Duration::from_secs(20),
        |n| n == 1.0,
    )
    .await;
    // Everyone else is still served.
    let mut client = broker.client().await;
    assert!(client.send(&MetadataRequest::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_exceed_its_connection_or_byte_budget() {
    // Requests of at most 1 MB, and 1 MiB in flight per client address.
    let broker = TestBroker::start_with_config(
        "max_request_bytes: 1048576\n\
         max_control_request_bytes: 1048576\n\
         max_inflight_request_bytes_per_ip: 1048576\n\
         max_connections_per_ip: 50\n\
         request_read_timeout_ms: 8000\n",
        &[],
    );
    create_topic(&broker, "steady", 1, &[]).await;
    let producer = broker.producer(&[("linger.ms", "0")]);
    produce_latencies(&producer, "steady", 1).await;

    // Fifty connections from one address are served; the next is closed.
    let mut open = Vec::new();
    for i in 0..50 {
        let mut stream = connect_from(OTHER, &broker).await;
        assert_eq!(
            api_versions(&mut stream, i, Duration::from_secs(5)).await,
            Some(i),
            "connection {i} is served"
        );
        open.push(stream);
    }
    let mut one_too_many = connect_from(OTHER, &broker).await;
    assert!(
        wait_closed(&mut one_too_many, Duration::from_secs(5))
            .await
            .is_some(),
        "the 51st connection from {OTHER} is closed"
    );
    let mut from_good = connect_from(GOOD, &broker).await;
    assert_eq!(
        api_versions(&mut from_good, 7, Duration::from_secs(5)).await,
        Some(7),
        "another address is not affected"
    );
    wait_for_sample(
        &broker,
        &closed("ip_connection_limit"),
        Duration::from_secs(5),
        |n| n == 1.0,
    )
    .await;
    drop(open);
    drop(one_too_many);
    wait_for_sample(
        &broker,
        "runnel_broker_connections_open",
        Duration::from_secs(5),
        |n| n < 40.0,
    )
    .await;

    // Three requests of 1 MB from one address, 600 KiB sent of each: the
    // broker reads at most the address's 1 MiB of them.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(start_request(&broker, OTHER, 1_000_000, 600 * 1024).await);
    }
    // (Long-polling fetches of the embedded registry add a few KiB.)
    let others = 32.0 * 1024.0;
    wait_for_sample(
        &broker,
        "runnel_broker_inflight_request_bytes",
        Duration::from_secs(5),
        |held| held >= 900.0 * 1024.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = sample(
        &metrics(&broker).await,
        "runnel_broker_inflight_request_bytes",
    );
    assert!(
        held <= 1024.0 * 1024.0 + others,
        "the address holds its whole budget and no more: {held} bytes of 1800 KiB sent"
    );
    // The address's next request waits for its budget...
    let mut waiting = connect_from(OTHER, &broker).await;
    assert_eq!(
        api_versions(&mut waiting, 1, Duration::from_secs(1)).await,
        None,
        "{OTHER} has no budget left"
    );
    // ...while another address produces as usual.
    let latency = max(&produce_latencies(&producer, "steady", 5).await);
    assert!(latency < Duration::from_secs(2), "produce took {latency:?}");

    // The read timeout cuts the stalled requests and gives the budget back.
    for stream in &mut stalled {
        assert!(wait_closed(stream, Duration::from_secs(20)).await.is_some());
    }
    wait_for_sample(
        &broker,
        &closed("request_read_timeout"),
        Duration::from_secs(5),
        |n| n == 3.0,
    )
    .await;
    let mut after = connect_from(OTHER, &broker).await;
    assert_eq!(
        api_versions(&mut after, 2, Duration::from_secs(5)).await,
        Some(2),
        "served again once the budget is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_frames_is_counted_in_full_and_logged_a_few_times() {
    let broker = TestBroker::start();
    let kinds: [Vec<u8>; 4] = [
        // 200 MiB declared: beyond max_request_bytes.
        (200i32 << 20).to_be_bytes().to_vec(),
        // A negative size.
        (-5i32).to_be_bytes().to_vec(),
        // An unknown API key.
        [
            8i32.to_be_bytes().as_slice(),
            &[0x03, 0xE7, 0, 0, 0, 0, 0, 1],
        ]
        .concat(),
        // Metadata v0 declaring two billion topics in a 10-byte body.
        [
            16i32.to_be_bytes().as_slice(),
            &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
            &0x7fff_fff0i32.to_be_bytes(),
            &[0, 1],
        ]
        .concat(),
    ];
    let started = Instant::now();
    for i in 0..500 {
        let mut stream = connect_from(GOOD, &broker).await;
        stream.write_all(&kinds[i % kinds.len()]).await.unwrap();
        assert!(
            wait_closed(&mut stream, Duration::from_secs(5))
                .await
                .is_some(),
            "bad frame {i} closes its connection"
        );
    }
    let elapsed = started.elapsed();

    wait_for_sample(
        &broker,
        "runnel_broker_frames_rejected_total",
        Duration::from_secs(5),
        |n| n == 500.0,
    )
    .await;
    let text = metrics(&broker).await;
    assert_eq!(sample(&text, &closed("frame_size")), 250.0);
    assert_eq!(sample(&text, &closed("unknown_api_key")), 125.0);
    assert_eq!(sample(&text, &closed("malformed_request")), 125.0);
    assert_eq!(sample(&text, "runnel_broker_frames_rejected_total"), 500.0);
    // At most one line per reason per 10 s.
    let lines = warnings(&broker, "closing connection");
    let bound = 3 * (1 + elapsed.as_secs() as usize / 10);
    assert!(
        !lines.is_empty() && lines.len() <= bound,
        "{} lines for 500 bad frames in {elapsed:?} (at most {bound}):\n{}",
        lines.len(),
        lines.join("\n")
    );
    // The broker still serves.
    let mut client = broker.client().await;
    assert!(client.send(&MetadataRequest::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_as_routine_without_a_warning() {
    let broker = TestBroker::start_alone(&["--connections-max-idle-ms", "1000"]);
    let _idle = connect_from(GOOD, &broker).await;
    wait_for_sample(&broker, &closed("idle"), Duration::from_secs(10), |n| {
        n >= 1.0
    })
    .await;
    let log = broker.log();
    assert!(log.contains("closing idle connection"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("idle")),
        "{log}"
    );
}
