//! Configs and admin answers as Kafka gives them: broker configs changed at
//! runtime (applied at once, kept across a restart, with their sources),
//! Kafka 4.0's group configs, Kafka's error codes for bad admin requests,
//! and authorized operations when a client asks for them. Raw requests for
//! the exact fields, rdkafka's admin client for what a real tool sees.

use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use runnel_core::client::Client;

use crate::harness::{create_topic, TestBroker};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const GROUP: i8 = 32;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;

const INVALID_TOPIC: i16 = 17;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC: i16 = 3;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// DescribeConfigs v4 of one resource (with synonyms): (error, entries).
async fn describe(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    keys: Option<&[&str]>,
) -> (i16, Vec<DescribeConfigsResourceResult>) {
    let mut r = DescribeConfigsResource::default();
    r.resource_type = resource_type;
    r.resource_name = s(name);
    r.configuration_keys = keys.map(|k| k.iter().map(|k| s(k)).collect());
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![r];
    request.include_synonyms = true;
    let response = client.send_version(&request, 4).await.unwrap();
    let result = response.results.into_iter().next().unwrap();
    (result.error_code, result.configs)
}

/// (value, source, read only) of one key.
async fn config(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    key: &str,
) -> (Option<String>, i8, bool) {
    let (code, entries) = describe(client, resource_type, name, Some(&[key])).await;
    assert_eq!(code, 0, "describe {name}/{key}");
    let e = entries
        .iter()
        .find(|e| e.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} is described"));
    (
        e.value.as_ref().map(|v| v.to_string()),
        e.config_source,
        e.read_only,
    )
}

/// (name, value, source) synonyms of one key.
async fn synonyms(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    key: &str,
) -> Vec<(String, String, i8)> {
    let (_, entries) = describe(client, resource_type, name, Some(&[key])).await;
    entries[0]
        .synonyms
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                s.source,
            )
        })
        .collect()
}

/// IncrementalAlterConfigs of one resource: (error, message).
async fn alter(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    let mut r = IncrementalResource::default();
    r.resource_type = resource_type;
    r.resource_name = s(name);
    r.configs = ops
        .iter()
        .map(|(k, op, v)| {
            let mut c = AlterableConfig::default();
            c.name = s(k);
            c.config_operation = *op;
            c.value = v.map(s);
            c
        })
        .collect();
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![r];
    request.validate_only = validate_only;
    let response = client.send(&request).await.unwrap();
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// A resource of a legacy AlterConfigs: (type, name, [(key, value)]).
type LegacyResource<'a> = (i8, &'a str, &'a [(&'a str, Option<&'a str>)]);

/// AlterConfigs (legacy, replaces the resource's configs): error codes.
async fn legacy_alter(
    client: &mut Client,
    resources: &[LegacyResource<'_>],
    validate_only: bool,
) -> Vec<i16> {
    use kafka_protocol::messages::alter_configs_request::{
        AlterConfigsResource, AlterableConfig as LegacyConfig,
    };
    let mut request = AlterConfigsRequest::default();
    request.validate_only = validate_only;
    request.resources = resources
        .iter()
        .map(|(t, name, configs)| {
            let mut r = AlterConfigsResource::default();
            r.resource_type = *t;
            r.resource_name = s(name);
            r.configs = configs
                .iter()
                .map(|(k, v)| {
                    let mut c = LegacyConfig::default();
                    c.name = s(k);
                    c.value = v.map(s);
                    c
                })
                .collect();
            r
        })
        .collect();
    let response = client.send(&request).await.unwrap();
    response.responses.iter().map(|r| r.error_code).collect()
}

fn admin(broker: &TestBroker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .expect("admin client")
}

async fn produce(broker: &TestBroker, topic: &str, bytes: usize) -> Result<(), KafkaError> {
    let producer = broker.producer(&[("message.max.bytes", "100000")]);
    let value = vec![b'x'; bytes];
    producer
        .send(
            FutureRecord::<(), _>::to(topic).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

const DYNAMIC_BROKER: i8 = 2;
const DYNAMIC_DEFAULT: i8 = 3;
const STATIC_BROKER: i8 = 4;
const DEFAULT: i8 = 5;
const DYNAMIC_TOPIC: i8 = 1;
const GROUP_CONFIG: i8 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_change_at_runtime_apply_at_once_and_survive_a_restart() {
    let mut broker = TestBroker::start_with_config("log:\n  retention_ms: 3600000\n", &[]);
    create_topic(&broker, "follows", 1, &[]).await;
    create_topic(&broker, "own", 1, &[("retention.ms", "1000")]).await;
    let mut client = broker.client().await;

    // From the config file: STATIC_BROKER_CONFIG, with the default below.
    assert_eq!(
        config(&mut client, BROKER, "0", "log.retention.ms").await,
        (Some("3600000".into()), STATIC_BROKER, false)
    );
    assert_eq!(
        config(&mut client, BROKER, "0", "broker.id").await,
        (Some("0".into()), DEFAULT, true)
    );

    // The cluster default, then this broker's own value.
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "",
            &[("log.retention.ms", SET, Some("7200000"))],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        config(&mut client, BROKER, "0", "log.retention.ms").await,
        (Some("7200000".into()), DYNAMIC_DEFAULT, false)
    );
    let (code, entries) = describe(&mut client, BROKER, "", None).await;
    assert_eq!(code, 0);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["log.retention.ms"],
        "the cluster default lists what is set there"
    );
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "0",
            &[
                ("log.retention.ms", SET, Some("60000")),
                ("message.max.bytes", SET, Some("2000")),
            ],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        synonyms(&mut client, BROKER, "0", "log.retention.ms").await,
        vec![
            ("log.retention.ms".into(), "60000".into(), DYNAMIC_BROKER),
            ("log.retention.ms".into(), "7200000".into(), DYNAMIC_DEFAULT),
            ("log.retention.ms".into(), "3600000".into(), STATIC_BROKER),
            ("log.retention.ms".into(), "604800000".into(), DEFAULT),
        ]
    );
    // Topics without their own value follow at once.
    assert_eq!(
        config(&mut client, TOPIC, "follows", "retention.ms").await,
        (Some("60000".into()), DYNAMIC_BROKER, false)
    );
    assert_eq!(
        config(&mut client, TOPIC, "own", "retention.ms").await,
        (Some("1000".into()), DYNAMIC_TOPIC, false)
    );
    let e = produce(&broker, "follows", 5000).await.unwrap_err();
    assert_eq!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "message.max.bytes=2000 applies to the topic now: {e}"
    );

    // validate_only changes nothing; read-only, bad and unknown keys and
    // other brokers are refused with Kafka's codes.
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "0",
            &[("log.segment.bytes", SET, Some("2048"))],
            true
        )
        .await
        .0,
        0
    );
    assert_eq!(
        config(&mut client, BROKER, "0", "log.segment.bytes")
            .await
            .1,
        DEFAULT
    );
    let (code, message) = alter(
        &mut client,
        BROKER,
        "0",
        &[("broker.id", SET, Some("5"))],
        false,
    )
    .await;
    assert_eq!(
        (code, message.as_str()),
        (
            INVALID_REQUEST,
            "Cannot update these configs dynamically: Set(broker.id)"
        )
    );
    let (code, message) = alter(
        &mut client,
        BROKER,
        "0",
        &[("log.segment.bytes", SET, Some("10"))],
        false,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(message.contains("log.segment.bytes"), "{message}");
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "0",
            &[("num.io.threads", SET, Some("8"))],
            false
        )
        .await
        .0,
        INVALID_REQUEST
    );
    let (code, message) = alter(
        &mut client,
        BROKER,
        "7",
        &[("log.retention.ms", SET, Some("1"))],
        false,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST);
    assert!(message.contains("Unexpected broker id"), "{message}");
    assert_eq!(
        describe(&mut client, BROKER, "seven", None).await.0,
        INVALID_REQUEST
    );
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "0",
            &[("log.retention.ms", APPEND, Some("1"))],
            false
        )
        .await
        .0,
        INVALID_CONFIG,
        "APPEND needs a list config"
    );
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "0",
            &[("log.cleanup.policy", APPEND, Some("compact"))],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        config(&mut client, TOPIC, "follows", "cleanup.policy")
            .await
            .0,
        Some("delete,compact".into())
    );

    // Kept across a restart, and still applied.
    broker.restart();
    let mut client = broker.client().await;
    assert_eq!(
        config(&mut client, BROKER, "0", "log.retention.ms").await,
        (Some("60000".into()), DYNAMIC_BROKER, false)
    );
    assert!(produce(&broker, "follows", 5000).await.is_err());

    // rdkafka's admin client sees the same, and its AlterConfigs replaces
    // this broker's dynamic configs as a whole.
    let admin = admin(&broker);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(0)], &opts)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    let retention = resource.get("log.retention.ms").unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.is_read_only),
        (Some("60000"), false)
    );
    assert_eq!(retention.source, ConfigSource::DynamicBroker);
    let results = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Broker(0)).set("log.retention.ms", "120000")],
            &opts,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(
        config(&mut client, BROKER, "0", "log.retention.ms").await,
        (Some("120000".into()), DYNAMIC_BROKER, false)
    );
    assert_eq!(
        config(&mut client, BROKER, "0", "message.max.bytes").await,
        (Some("1048588".into()), DEFAULT, false),
        "the legacy API replaced this broker's set"
    );
    produce(&broker, "follows", 5000).await.unwrap();

    // DELETE clears the cluster default.
    assert_eq!(
        alter(
            &mut client,
            BROKER,
            "",
            &[("log.retention.ms", DELETE, None)],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(describe(&mut client, BROKER, "", None).await.1.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_configs_of_kafka_4_are_described_validated_and_kept() {
    let mut broker = TestBroker::start();
    let mut client = broker.client().await;
    let (code, entries) = describe(&mut client, GROUP, "payments", None).await;
    assert_eq!(code, 0);
    let described: Vec<(String, String, i8)> = entries
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                e.value.as_ref().unwrap().to_string(),
                e.config_source,
            )
        })
        .collect();
    assert_eq!(
        described,
        vec![
            (
                "consumer.heartbeat.interval.ms".into(),
                "5000".into(),
                DEFAULT
            ),
            (
                "consumer.session.timeout.ms".into(),
                "45000".into(),
                DEFAULT
            ),
        ]
    );
    assert_eq!(
        alter(
            &mut client,
            GROUP,
            "payments",
            &[("consumer.session.timeout.ms", SET, Some("50000"))],
            false
        )
        .await
        .0,
        0
    );
    let (code, message) = alter(
        &mut client,
        GROUP,
        "payments",
        &[("consumer.session.timeout.ms", SET, Some("1000"))],
        false,
    )
    .await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(
        message.contains("group.consumer.min.session.timeout.ms"),
        "{message}"
    );
    let (code, message) = alter(
        &mut client,
        GROUP,
        "payments",
        &[("consumer.nap.ms", SET, Some("1"))],
        false,
    )
    .await;
    assert_eq!(
        (code, message.as_str()),
        (INVALID_CONFIG, "Unknown group config name: consumer.nap.ms")
    );
    assert_eq!(
        alter(
            &mut client,
            GROUP,
            "payments",
            &[("share.session.timeout.ms", SET, Some("45000"))],
            false
        )
        .await
        .0,
        INVALID_CONFIG
    );
    assert_eq!(
        alter(
            &mut client,
            GROUP,
            "",
            &[("consumer.session.timeout.ms", SET, Some("50000"))],
            false
        )
        .await
        .0,
        INVALID_REQUEST
    );
    assert_eq!(
        describe(&mut client, GROUP, "", None).await.0,
        INVALID_REQUEST
    );

    // rdkafka's admin client (librdkafka maps its GROUP resource to 32).
    let admin = admin(&broker);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Group("fresh")], &opts)
        .await
        .unwrap();
    let fresh = described[0].as_ref().unwrap();
    let session = fresh.get("consumer.session.timeout.ms").unwrap();
    assert_eq!(session.value.as_deref(), Some("45000"));
    assert_eq!(session.source, ConfigSource::Default);
    let results = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Group("fresh"))
                .set("consumer.heartbeat.interval.ms", "6000")],
            &opts,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    // (rdkafka 0.39 reports AlterConfigs results without their error codes,
    // so refusals are checked with raw requests above.)

    broker.restart();
    let mut client = broker.client().await;
    assert_eq!(
        config(
            &mut client,
            GROUP,
            "fresh",
            "consumer.heartbeat.interval.ms"
        )
        .await,
        (Some("6000".into()), GROUP_CONFIG, false)
    );
    assert_eq!(
        config(
            &mut client,
            GROUP,
            "payments",
            "consumer.session.timeout.ms"
        )
        .await,
        (Some("50000".into()), GROUP_CONFIG, false)
    );
    assert_eq!(
        config(&mut client, GROUP, "other", "consumer.session.timeout.ms").await,
        (Some("45000".into()), DEFAULT, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_kafkas_error_codes() {
    let broker = TestBroker::start();
    create_topic(&broker, "t", 1, &[]).await;
    let mut client = broker.client().await;

    // DescribeConfigs.
    assert_eq!(
        describe(&mut client, 99, "x", None).await.0,
        INVALID_REQUEST
    );
    assert_eq!(
        describe(&mut client, TOPIC, "bad name", None).await.0,
        INVALID_TOPIC
    );
    assert_eq!(
        describe(&mut client, TOPIC, "nope", None).await.0,
        UNKNOWN_TOPIC
    );

    // AlterConfigs: null values, duplicate keys and resources, unknown
    // keys, topics and resource types; validate_only.
    assert_eq!(
        legacy_alter(
            &mut client,
            &[(TOPIC, "t", &[("retention.ms", None)])],
            false
        )
        .await,
        vec![INVALID_REQUEST]
    );
    assert_eq!(
        legacy_alter(
            &mut client,
            &[(
                TOPIC,
                "t",
                &[("retention.ms", Some("1")), ("retention.ms", Some("2"))]
            )],
            false
        )
        .await,
        vec![INVALID_REQUEST]
    );
    assert_eq!(
        legacy_alter(
            &mut client,
            &[
                (TOPIC, "t", &[("retention.ms", Some("1"))]),
                (TOPIC, "t", &[("retention.ms", Some("2"))])
            ],
            false
        )
        .await,
        vec![INVALID_REQUEST, INVALID_REQUEST]
    );
    assert_eq!(
        legacy_alter(
            &mut client,
            &[(TOPIC, "t", &[("retention.msec", Some("1"))])],
            false
        )
        .await,
        vec![INVALID_CONFIG]
    );
    assert_eq!(
        legacy_alter(
            &mut client,
            &[(TOPIC, "nope", &[("retention.ms", Some("1"))])],
            false
        )
        .await,
        vec![UNKNOWN_TOPIC]
    );
    assert_eq!(
        legacy_alter(&mut client, &[(99, "x", &[])], false).await,
        vec![INVALID_REQUEST]
    );
    assert_eq!(
        legacy_alter(
            &mut client,
            &[(TOPIC, "t", &[("retention.ms", Some("5"))])],
            true
        )
        .await,
        vec![0]
    );
    assert_eq!(
        config(&mut client, TOPIC, "t", "retention.ms").await.1,
        DEFAULT,
        "validate_only changed nothing"
    );

    // IncrementalAlterConfigs: DELETE of a key that is not set is fine;
    // APPEND splits on commas and needs a list; unknown operations.
    assert_eq!(
        alter(
            &mut client,
            TOPIC,
            "t",
            &[("retention.msec", DELETE, None)],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        alter(
            &mut client,
            TOPIC,
            "t",
            &[("cleanup.policy", APPEND, Some("compact,delete"))],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        config(&mut client, TOPIC, "t", "cleanup.policy").await.0,
        Some("delete,compact".into())
    );
    let (code, message) = alter(
        &mut client,
        TOPIC,
        "t",
        &[("retention.ms", APPEND, Some("1"))],
        false,
    )
    .await;
    assert_eq!(code, INVALID_CONFIG);
    assert_eq!(
        message,
        "Can't APPEND to key retention.ms because its type is not LIST."
    );
    assert_eq!(
        alter(
            &mut client,
            TOPIC,
            "t",
            &[("retention.ms", 7, Some("1"))],
            false
        )
        .await
        .0,
        INVALID_REQUEST
    );
    assert_eq!(
        alter(&mut client, 99, "x", &[], false).await.0,
        INVALID_REQUEST
    );

    // CreateTopics, DeleteTopics and CreatePartitions.
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(s("zero"));
    topic.num_partitions = 1;
    topic.replication_factor = 0;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic.clone()];
    topic.name = TopicName(s("none"));
    topic.num_partitions = 0;
    topic.replication_factor = 1;
    request.topics.push(topic);
    let codes: Vec<i16> = client
        .send(&request)
        .await
        .unwrap()
        .topics
        .iter()
        .map(|t| t.error_code)
        .collect();
    assert_eq!(codes, vec![INVALID_REPLICATION_FACTOR, INVALID_PARTITIONS]);

    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![TopicName(s("t")), TopicName(s("t"))];
    let response = client.send_version(&delete, 5).await.unwrap();
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![INVALID_REQUEST, INVALID_REQUEST]);
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(s("t")));
    let mut metadata = MetadataRequest::default();
    metadata.topics = Some(vec![t]);
    let mut both = DeleteTopicState::default();
    both.name = Some(TopicName(s("t")));
    both.topic_id = client.send_version(&metadata, 12).await.unwrap().topics[0].topic_id;
    let mut delete = DeleteTopicsRequest::default();
    delete.topics = vec![both];
    let response = client.send_version(&delete, 6).await.unwrap();
    assert_eq!(response.responses[0].error_code, INVALID_REQUEST);

    let mut grow = CreatePartitionsTopic::default();
    grow.name = TopicName(s("t"));
    grow.count = 3;
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![grow.clone(), grow];
    let codes: Vec<i16> = client
        .send(&request)
        .await
        .unwrap()
        .results
        .iter()
        .map(|r| r.error_code)
        .collect();
    assert_eq!(codes, vec![INVALID_REQUEST, INVALID_REQUEST]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_describe_cluster_and_describe_groups_report_every_operation_allowed_when_asked() {
    const TOPIC_OPS: i32 = 3576; // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
    const CLUSTER_OPS: i32 = 8096; // CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE
    const GROUP_OPS: i32 = 3400; // READ DELETE DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
    let broker = TestBroker::start();
    create_topic(&broker, "t", 2, &[]).await;
    let mut client = broker.client().await;
    let metadata = |include: bool| {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(s("t")));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        r.include_cluster_authorized_operations = include;
        r.include_topic_authorized_operations = include;
        r
    };
    let asked = client.send_version(&metadata(true), 8).await.unwrap();
    assert_eq!(
        (
            asked.topics[0].topic_authorized_operations,
            asked.cluster_authorized_operations
        ),
        (TOPIC_OPS, CLUSTER_OPS)
    );
    let not_asked = client.send_version(&metadata(false), 8).await.unwrap();
    assert_eq!(
        (
            not_asked.topics[0].topic_authorized_operations,
            not_asked.cluster_authorized_operations
        ),
        (i32::MIN, i32::MIN)
    );
    let mut v12 = metadata(false);
    v12.include_topic_authorized_operations = true;
    let asked = client.send_version(&v12, 12).await.unwrap();
    assert_eq!(asked.topics[0].topic_authorized_operations, TOPIC_OPS);

    let mut cluster = DescribeClusterRequest::default();
    cluster.endpoint_type = 1;
    cluster.include_cluster_authorized_operations = true;
    let described = client.send_version(&cluster, 1).await.unwrap();
    assert_eq!(
        (
            described.error_code,
            described.cluster_authorized_operations
        ),
        (0, CLUSTER_OPS)
    );
    cluster.include_cluster_authorized_operations = false;
    let described = client.send_version(&cluster, 1).await.unwrap();
    assert_eq!(described.cluster_authorized_operations, i32::MIN);

    // A group that exists (a simple commit made it).
    let producer = broker.producer(&[]);
    producer
        .send(
            FutureRecord::<(), _>::to("t").payload("x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut p =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut t =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t"));
    t.partitions = vec![p];
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = GroupId(s("readers"));
    commit.generation_id_or_member_epoch = -1;
    commit.topics = vec![t];
    client.send_version(&commit, 8).await.unwrap();
    let mut groups = DescribeGroupsRequest::default();
    groups.groups = vec![GroupId(s("readers"))];
    groups.include_authorized_operations = true;
    let described = client.send_version(&groups, 5).await.unwrap();
    assert_eq!(described.groups[0].authorized_operations, GROUP_OPS);
}
