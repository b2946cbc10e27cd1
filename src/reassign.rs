//! `runnel topic reassign`: move partitions' replicas to other brokers,
//! cancel a move, or show the moves in progress, over the Kafka protocol
//! (AlterPartitionReassignments and ListPartitionReassignments, KIP-455),
//! so it works against Runnel or Kafka alike.
//!
//! One partition from the command line (`<topic> --partition P --replicas
//! 2,3,1`, or `--cancel`), or many from a JSON plan in the format of
//! Kafka's `kafka-reassign-partitions.sh`:
//!
//! ```json
//! {"version": 1, "partitions": [
//!   {"topic": "orders", "partition": 0, "replicas": [2, 3, 1]},
//!   {"topic": "orders", "partition": 1, "replicas": null}
//! ]}
//! ```
//!
//! (`null` replicas cancel that partition's move; `log_dirs`, if given,
//! may only say `"any"`: a broker has one data directory.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_core::client::Client;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ConnectArgs;

/// Largest plan file read (a plan of every partition of a large cluster
/// fits; the broker's request limit is what bounds it in the end).
const MAX_PLAN_BYTES: u64 = 8 << 20;

/// How long a request may take before the command gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `--wait` asks whether the moves are done.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What `runnel topic reassign` was asked to do.
#[derive(Debug)]
pub struct ReassignArgs {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub replicas: Option<Vec<i32>>,
    pub cancel: bool,
    pub plan: Option<PathBuf>,
    pub status: bool,
    pub wait: bool,
    pub timeout_ms: u64,
    pub format: crate::output::Format,
    pub connect: ConnectArgs,
}

/// One partition's move: `replicas: None` cancels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    #[serde(default)]
    version: Option<i64>,
    partitions: Vec<PlanEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    topic: String,
    partition: i32,
    /// Missing is an error; `null` cancels.
    #[serde(default, deserialize_with = "present")]
    replicas: Option<Option<Vec<i32>>>,
    #[serde(default)]
    log_dirs: Option<Vec<String>>,
}

/// A field that is present (even as `null`) deserializes to `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads a plan in `kafka-reassign-partitions.sh`'s JSON format.
pub fn parse_plan(text: &str) -> Result<Vec<Move>> {
    let plan: Plan = serde_json::from_str(text).context("the plan is not valid")?;
    if let Some(v) = plan.version {
        if v != 1 {
            bail!("plan version {v} is not supported (only 1)");
        }
    }
    if plan.partitions.is_empty() {
        bail!("the plan lists no partitions");
    }
    let mut seen = BTreeSet::new();
    let mut moves = Vec::with_capacity(plan.partitions.len());
    for e in plan.partitions {
        let at = format!("{}-{}", e.topic, e.partition);
        if !seen.insert((e.topic.clone(), e.partition)) {
            bail!("the plan lists {at} twice");
        }
        let Some(replicas) = e.replicas else {
            bail!("{at} has no \"replicas\" (a list of broker ids, or null to cancel its move)");
        };
        if let Some(dirs) = &e.log_dirs {
            if dirs.iter().any(|d| d != "any") {
                bail!("{at}: log_dirs can only be \"any\" (a broker has one data directory)");
            }
        }
        moves.push(Move {
            topic: e.topic,
            partition: e.partition,
            replicas,
        });
    }
    Ok(moves)
}

fn read_plan(path: &Path) -> Result<Vec<Move>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_PLAN_BYTES {
        bail!(
            "{} is {size} bytes; a plan may have at most {MAX_PLAN_BYTES}",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_plan(&text).with_context(|| path.display().to_string())
}

/// The moves the command line asks for.
fn moves_from(args: &ReassignArgs) -> Result<Vec<Move>> {
    if let Some(plan) = &args.plan {
        return read_plan(plan);
    }
    let Some(topic) = args.topic.clone() else {
        bail!("name a topic (runnel topic reassign <topic> --partition P --replicas 2,3,1), or give --plan FILE or --status");
    };
    let Some(partition) = args.partition else {
        bail!("give --partition P for topic '{topic}'");
    };
    let replicas = match (&args.replicas, args.cancel) {
        (Some(r), false) => Some(r.clone()),
        (None, true) => None,
        _ => bail!(
            "give either --replicas 2,3,1 (the new replicas, preferred leader first) or --cancel"
        ),
    };
    Ok(vec![Move {
        topic,
        partition,
        replicas,
    }])
}

fn error_text(code: i16, message: Option<&StrBytes>) -> Option<String> {
    if code == 0 {
        return None;
    }
    let name = ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"));
    Some(match message {
        Some(m) if !m.is_empty() => format!("{m} ({name})"),
        _ => name,
    })
}

#[derive(Serialize)]
struct MoveResult {
    #[serde(flatten)]
    requested: Move,
    error: Option<String>,
}

#[derive(Serialize)]
struct Ongoing {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding_replicas: Vec<i32>,
    removing_replicas: Vec<i32>,
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    let mut client = Client::connect(&args.bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {}", args.bootstrap))?;
    client.set_timeout(REQUEST_TIMEOUT);
    Ok(client)
}

pub async fn run(args: ReassignArgs) -> Result<()> {
    if args.status {
        let mut client = connect(&args.connect).await?;
        let ongoing = list(&mut client, args.topic.as_deref()).await?;
        crate::output::emit(
            args.format,
            &serde_json::json!({ "reassignments": ongoing }),
            || render_ongoing(&ongoing),
        )?;
        return Ok(());
    }
    let moves = moves_from(&args)?;
    let mut client = connect(&args.connect).await?;
    let results = alter(&mut client, &moves).await?;
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    crate::output::emit(
        args.format,
        &serde_json::json!({ "partitions": results }),
        || {
            let mut out = String::new();
            for r in &results {
                let name = format!("{}-{}", r.requested.topic, r.requested.partition);
                out.push_str(&match (&r.error, &r.requested.replicas) {
                    (Some(e), _) => format!("{name}: not changed: {e}\n"),
                    (None, Some(replicas)) => {
                        format!("{name}: moving to replicas {}\n", join(replicas))
                    }
                    (None, None) => format!("{name}: move cancelled\n"),
                });
            }
            out
        },
    )?;
    if failed > 0 {
        bail!(
            "{failed} of {} partition(s) could not be changed",
            results.len()
        );
    }
    if args.wait {
        let started: Vec<&Move> = results
            .iter()
            .filter(|r| r.requested.replicas.is_some())
            .map(|r| &r.requested)
            .collect();
        wait_done(
            &mut client,
            &started,
            Duration::from_millis(args.timeout_ms),
        )
        .await?;
        if args.format == crate::output::Format::Text {
            println!("done: no move of these partitions is in progress");
        }
    }
    Ok(())
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn alter(client: &mut Client, moves: &[Move]) -> Result<Vec<MoveResult>> {
    let mut request = AlterPartitionReassignmentsRequest::default();
    request.timeout_ms = REQUEST_TIMEOUT.as_millis() as i32;
    for m in moves {
        let mut p = ReassignablePartition::default();
        p.partition_index = m.partition;
        p.replicas = m
            .replicas
            .as_ref()
            .map(|r| r.iter().copied().map(BrokerId).collect());
        let name = TopicName(StrBytes::from_string(m.topic.clone()));
        match request.topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = ReassignableTopic::default();
                t.name = name;
                t.partitions = vec![p];
                request.topics.push(t);
            }
        }
    }
    let response = client.send(&request).await?;
    if let Some(e) = error_text(response.error_code, response.error_message.as_ref()) {
        bail!("the reassignment was refused: {e}");
    }
    let mut results = Vec::with_capacity(moves.len());
    for m in moves {
        let answer = response
            .responses
            .iter()
            .filter(|t| *t.name.0 == *m.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == m.partition);
        let error = match answer {
            Some(p) => error_text(p.error_code, p.error_message.as_ref()),
            None => Some("the broker did not answer for this partition".into()),
        };
        results.push(MoveResult {
            requested: m.clone(),
            error,
        });
    }
    Ok(results)
}

async fn list(client: &mut Client, topic: Option<&str>) -> Result<Vec<Ongoing>> {
    // Every ongoing move (the request would have to name each partition
    // of a topic), narrowed to the topic here.
    let mut request = ListPartitionReassignmentsRequest::default();
    request.timeout_ms = REQUEST_TIMEOUT.as_millis() as i32;
    request.topics = None;
    let response: ListPartitionReassignmentsResponse = client.send(&request).await?;
    if let Some(e) = error_text(response.error_code, response.error_message.as_ref()) {
        bail!("cannot list reassignments: {e}");
    }
    let ids = |l: &[BrokerId]| l.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut ongoing: Vec<Ongoing> = response
        .topics
        .iter()
        .filter(|t| topic.is_none_or(|name| *t.name.0 == *name))
        .flat_map(|t| {
            t.partitions.iter().map(move |p| Ongoing {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding_replicas: ids(&p.adding_replicas),
                removing_replicas: ids(&p.removing_replicas),
            })
        })
        .collect();
    ongoing.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(ongoing)
}

fn render_ongoing(ongoing: &[Ongoing]) -> String {
    use std::fmt::Write as _;
    if ongoing.is_empty() {
        return "no reassignments in progress\n".into();
    }
    let mut out = String::new();
    let width = ongoing
        .iter()
        .map(|o| o.topic.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:<12}  {:<12}  removing",
        "topic", "partition", "replicas", "adding"
    );
    for o in ongoing {
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:<12}  {:<12}  {}",
            o.topic,
            o.partition,
            join(&o.replicas),
            join(&o.adding_replicas),
            join(&o.removing_replicas)
        );
    }
    out
}

/// Waits until none of `moves` is listed as in progress.
async fn wait_done(client: &mut Client, moves: &[&Move], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let wanted: BTreeSet<(&str, i32)> = moves
        .iter()
        .map(|m| (m.topic.as_str(), m.partition))
        .collect();
    loop {
        let ongoing = list(client, None).await?;
        let left: Vec<String> = ongoing
            .iter()
            .filter(|o| wanted.contains(&(o.topic.as_str(), o.partition)))
            .map(|o| format!("{}-{}", o.topic, o.partition))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "still moving after {timeout:?}: {} (see runnel topic reassign --status)",
                left.join(", ")
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_in_kafkas_format_gives_moves_and_null_cancels() {
        let moves = parse_plan(
            r#"{"version":1,"partitions":[
                {"topic":"a","partition":0,"replicas":[2,3,1],"log_dirs":["any","any","any"]},
                {"topic":"a","partition":1,"replicas":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            moves,
            vec![
                Move {
                    topic: "a".into(),
                    partition: 0,
                    replicas: Some(vec![2, 3, 1])
                },
                Move {
                    topic: "a".into(),
                    partition: 1,
                    replicas: None
                },
            ]
        );
    }

    #[test]
    fn a_bad_plan_is_refused_with_the_reason() {
        for (plan, reason) in [
            (
                r#"{"partitions":[{"topic":"a","partition":0}]}"#,
                "no \"replicas\"",
            ),
            (
                r#"{"partitions":[{"topic":"a","partition":0,"replicas":[1]},{"topic":"a","partition":0,"replicas":[2]}]}"#,
                "twice",
            ),
            (r#"{"version":2,"partitions":[]}"#, "version 2"),
            (r#"{"partitions":[]}"#, "no partitions"),
            (
                r#"{"partitions":[{"topic":"a","partition":0,"replicas":[1],"log_dirs":["/x"]}]}"#,
                "log_dirs",
            ),
            (
                r#"{"partitions":[{"topic":"a","partition":0,"replicas":[1],"extra":1}]}"#,
                "not valid",
            ),
        ] {
            let e = format!("{:#}", parse_plan(plan).unwrap_err());
            assert!(e.contains(reason), "{plan}: {e}");
        }
    }

    #[test]
    fn ongoing_moves_render_as_a_table() {
        let table = render_ongoing(&[Ongoing {
            topic: "orders".into(),
            partition: 3,
            replicas: vec![2, 1],
            adding_replicas: vec![2],
            removing_replicas: vec![1],
        }]);
        assert!(
            table.contains("orders          3  2,1           2             1"),
            "{table}"
        );
        assert_eq!(render_ongoing(&[]), "no reassignments in progress\n");
    }
}
