//! Quorums of real controllers in one process, on loopback ports.

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::records::{MetadataRecord, TopicCreated};
use super::*;

/// Longest wait for anything a quorum does in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn fast_settings() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        ..RaftSettings::default()
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::TopicCreated(TopicCreated {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        configs: Default::default(),
    })
}

/// Polls `check` until it holds, failing the test after `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Quorum {
    dirs: Vec<tempfile::TempDir>,
    voters: Vec<Voter>,
    nodes: Vec<Option<Controller>>,
    settings: Vec<RaftSettings>,
}

impl Quorum {
    fn new(size: usize) -> Self {
        let voters: Vec<Voter> = (1..=size as u64)
            .map(|id| Voter {
                id,
                addr: free_addr(),
            })
            .collect();
        Quorum {
            dirs: (0..size).map(|_| tempfile::tempdir().unwrap()).collect(),
            voters,
            nodes: (0..size).map(|_| None).collect(),
            settings: vec![fast_settings(); size],
        }
    }

    fn config(&self, i: usize) -> ControllerConfig {
        let mut config = ControllerConfig::new(
            self.voters[i].id,
            self.voters.clone(),
            self.voters[i].addr.clone(),
            self.dirs[i].path(),
        );
        config.raft = self.settings[i].clone();
        config.propose_timeout = Duration::from_secs(5);
        config
    }

    async fn start(&mut self, i: usize) {
        let controller = Controller::start(self.config(i)).await.unwrap();
        self.nodes[i] = Some(controller);
    }

    async fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i).await;
        }
    }

    async fn stop(&mut self, i: usize) {
        self.nodes[i].take().expect("running").shutdown().await;
    }

    fn node(&self, i: usize) -> &Controller {
        self.nodes[i].as_ref().expect("running")
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Controller)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Waits until every running node agrees on one running leader; returns
    /// its position.
    async fn leader(&self) -> usize {
        let mut found = None;
        wait_until("the running nodes agree on a leader", WAIT, || {
            let leaders: BTreeSet<Option<NodeId>> =
                self.running().map(|(_, n)| n.leader()).collect();
            found = match leaders.into_iter().collect::<Vec<_>>()[..] {
                [Some(id)] => self
                    .running()
                    .find(|(_, n)| n.node_id() == id && n.is_leader())
                    .map(|(i, _)| i),
                _ => None,
            };
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap()
    }

    /// Waits until every running node has applied up to `index`.
    async fn all_applied(&self, index: u64) {
        wait_until(&format!("every node applied {index}"), WAIT, || {
            std::future::ready(self.running().all(|(_, n)| n.image().offset() >= index))
        })
        .await;
    }
}

async fn shutdown_all(mut quorum: Quorum) {
    for i in 0..quorum.nodes.len() {
        if quorum.nodes[i].is_some() {
            quorum.stop(i).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_one_commits_and_keeps_its_image_across_a_restart() {
    let mut quorum = Quorum::new(1);
    quorum.start(0).await;
    let outcome = quorum
        .node(0)
        .propose(vec![topic("a"), topic("b")])
        .await
        .unwrap();
    assert!(outcome.all_applied(), "{outcome:?}");
    let image = quorum.node(0).image();
    assert!(image.offset() >= outcome.log_index);
    assert!(image.topic_by_name("a").is_some() && image.topic_by_name("b").is_some());

    quorum.stop(0).await;
    quorum.start(0).await;
    // Re-applied from disk before start returned, with no peer to ask.
    let restarted = quorum.node(0).image();
    assert_eq!(restarted.topics().count(), 2);
    assert_eq!(restarted.offset(), image.offset());
    let outcome = quorum.node(0).propose(vec![topic("c")]).await.unwrap();
    assert!(outcome.all_applied());
    // A duplicate name is ignored, deterministically, and said so.
    let outcome = quorum.node(0).propose(vec![topic("c")]).await.unwrap();
    assert!(matches!(
        outcome.first_ignored(),
        Some((0, records::Ignored::TopicNameExists { .. }))
    ));
    shutdown_all(quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_commit_everywhere_survive_a_leader_loss_and_a_restarted_voter_catches_up() {
    let mut quorum = Quorum::new(3);
    quorum.start_all().await;
    let leader = quorum.leader().await;

    // Proposals commit on all three, whichever node they are made on (a
    // follower forwards to the leader).
    let follower = (leader + 1) % 3;
    let outcome = quorum
        .node(follower)
        .propose(vec![topic("t0")])
        .await
        .unwrap();
    assert!(outcome.all_applied());
    assert!(
        quorum.node(follower).image().topic_by_name("t0").is_some(),
        "propose returns after the proposing node applied it"
    );
    let outcome = quorum
        .node(leader)
        .propose(vec![topic("t1")])
        .await
        .unwrap();
    quorum.all_applied(outcome.log_index).await;
    for (_, node) in quorum.running() {
        assert!(node.image().topic_by_name("t1").is_some());
    }

    // The leader goes away: another is elected within a few seconds.
    let old_leader_id = quorum.node(leader).node_id();
    let stopped_at = Instant::now();
    quorum.stop(leader).await;
    let new_leader = quorum.leader().await;
    let failover = stopped_at.elapsed();
    assert_ne!(quorum.node(new_leader).node_id(), old_leader_id);
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // Proposals continue, from either survivor.
    for (i, name) in [(0, "t2"), (1, "t3"), (2, "t4")] {
        let node = quorum.running().nth(i % 2).unwrap().1;
        let outcome = node.propose(vec![topic(name)]).await.unwrap();
        assert!(outcome.all_applied(), "{name}: {outcome:?}");
    }

    // The old leader restarts: it has what it had from its own disk at
    // once, and catches up on the rest from the leader.
    quorum.start(leader).await;
    let restarted = quorum.node(leader).image();
    assert!(restarted.topic_by_name("t1").is_some(), "from disk");
    let last = quorum.node(new_leader).image().offset();
    quorum.all_applied(last).await;
    let images: Vec<_> = quorum.running().map(|(_, n)| n.image()).collect();
    assert!(images.iter().all(|i| **i == *images[0]), "all images agree");
    assert_eq!(images[0].topics().count(), 5);
    shutdown_all(quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_missed_purged_entries_catches_up_from_the_leaders_snapshot() {
    let mut quorum = Quorum::new(3);
    for s in &mut quorum.settings {
        s.snapshot_after_entries = 10;
        s.entries_kept_after_snapshot = 0;
    }
    quorum.start_all().await;
    let leader = quorum.leader().await;
    quorum
        .node(leader)
        .propose(vec![topic("first")])
        .await
        .unwrap();
    quorum
        .all_applied(quorum.node(leader).image().offset())
        .await;

    let lagging = (leader + 1) % 3;
    // The lagging voter (restarted below) never builds a snapshot itself,
    // so a snapshot it has can only have come from the leader.
    quorum.settings[lagging].snapshot_after_entries = 1_000_000;
    quorum.stop(lagging).await;
    for i in 0..30 {
        quorum
            .node(leader)
            .propose(vec![topic(&format!("while-down-{i}"))])
            .await
            .unwrap();
    }
    // The leader snapshotted and purged what the lagging voter lacks.
    let mut metrics = quorum.node(leader).metrics();
    let purged = tokio::time::timeout(
        WAIT,
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index > 20)),
    )
    .await
    .expect("the leader purges its log")
    .unwrap()
    .purged;

    quorum.start(lagging).await;
    let target = quorum.node(leader).image().offset();
    quorum.all_applied(target).await;
    let snapshot = quorum.node(lagging).metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| Some(s.index) >= purged.map(|p| p.index)),
        "installed the leader's snapshot: {snapshot:?}, leader purged {purged:?}"
    );
    assert_eq!(
        *quorum.node(lagging).image(),
        *quorum.node(leader).image(),
        "same image after the snapshot and the entries after it"
    );
    // It keeps following.
    let outcome = quorum
        .node(lagging)
        .propose(vec![topic("after")])
        .await
        .unwrap();
    quorum.all_applied(outcome.log_index).await;

    // And restarts from its installed snapshot plus log.
    quorum.stop(lagging).await;
    quorum.start(lagging).await;
    assert!(quorum
        .node(lagging)
        .image()
        .topic_by_name("after")
        .is_some());
    shutdown_all(quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit() {
    // One voter of three, alone from the start: no leader, no commit.
    let mut quorum = Quorum::new(3);
    quorum.start(0).await;
    let started = Instant::now();
    let err = quorum
        .node(0)
        .propose(vec![topic("alone")])
        .await
        .unwrap_err();
    assert!(matches!(err, ControllerError::Timeout(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the timeout"
    );
    assert_eq!(quorum.node(0).leader(), None);
    assert!(quorum.node(0).image().topic_by_name("alone").is_none());

    // With a majority it commits; then losing the majority stops commits
    // again, on whichever node is left (even the old leader).
    quorum.start(1).await;
    quorum.start(2).await;
    let leader = quorum.leader().await;
    quorum
        .node(leader)
        .propose(vec![topic("majority")])
        .await
        .unwrap();
    let survivor = leader;
    for i in 0..3 {
        if i != survivor {
            quorum.stop(i).await;
        }
    }
    let err = quorum
        .node(survivor)
        .propose(vec![topic("minority")])
        .await
        .unwrap_err();
    assert!(matches!(err, ControllerError::Timeout(_)), "{err}");
    assert!(quorum
        .node(survivor)
        .image()
        .topic_by_name("minority")
        .is_none());
    shutdown_all(quorum).await;
}

#[tokio::test]
async fn a_node_outside_the_voters_or_a_bad_voter_list_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let voters = parse_voters("1@127.0.0.1:9093").unwrap();
    let config = ControllerConfig::new(2, voters, free_addr(), dir.path());
    let err = Controller::start(config).await.err().unwrap();
    assert!(err.to_string().contains("not among the voters"), "{err}");
    for bad in ["", "1", "x@h:1", "1@h", "1@h:99999", "1@h:1,1@h:2"] {
        assert!(parse_voters(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(
        parse_voters(" 1@a:1 , 2@[::1]:2 ").unwrap(),
        vec![
            Voter {
                id: 1,
                addr: "a:1".into()
            },
            Voter {
                id: 2,
                addr: "[::1]:2".into()
            }
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_oversized_proposal_is_refused_before_raft() {
    let mut quorum = Quorum::new(1);
    quorum.start(0).await;
    let err = quorum.node(0).propose(vec![]).await.unwrap_err();
    assert!(matches!(err, ControllerError::InvalidProposal(_)), "{err}");
    let huge = vec![topic(&"x".repeat(200)); 30_000];
    let err = quorum.node(0).propose(huge).await.unwrap_err();
    assert!(err.to_string().contains("entry limit"), "{err}");
    shutdown_all(quorum).await;
}

/// Set in the child process of the SIGKILL test: `dir|addr|round`.
const KILL_CHILD_ENV: &str = "RUNNEL_TEST_CONTROLLER_KILL_CHILD";
const KILL_TEST: &str = "controller::tests::acknowledged_proposals_survive_sigkill_at_any_moment";

/// The child: a quorum of one that proposes topics (snapshotting and
/// purging every few entries) and prints each acknowledged one, until it
/// is killed (or a minute passes).
fn run_kill_child(spec: &str) {
    let mut parts = spec.split('|');
    let (dir, addr, round) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let voters = vec![Voter {
            id: 1,
            addr: addr.to_string(),
        }];
        let mut config = ControllerConfig::new(1, voters, addr, dir);
        config.raft.snapshot_after_entries = 7;
        config.raft.entries_kept_after_snapshot = 2;
        let controller = Controller::start(config).await.unwrap();
        let started = Instant::now();
        for i in 0.. {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            let name = format!("r{round}-{i}");
            let outcome = controller.propose(vec![topic(&name)]).await.unwrap();
            assert!(outcome.all_applied());
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "acked {name}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// Every proposal acknowledged before a SIGKILL is there after a restart,
/// whatever the process was doing when killed (appending, fsyncing,
/// writing a snapshot, purging), round after round on the same directory.
#[test]
fn acknowledged_proposals_survive_sigkill_at_any_moment() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    if let Ok(spec) = std::env::var(KILL_CHILD_ENV) {
        run_kill_child(&spec);
        return;
    }
    let seed: u64 = rand::random();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..4u64 {
        // Kill after a varying number of acknowledgements.
        let kill_after = 3 + (seed.rotate_left(round as u32 * 8) % 25) as usize;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", KILL_TEST, "--nocapture", "--test-threads", "1"])
            .env(
                KILL_CHILD_ENV,
                format!("{}|{}|{round}", dir.path().display(), free_addr()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(name) = line.strip_prefix("acked ") {
                    if tx.send(name.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let started = Instant::now();
        let mut this_round = 0;
        while this_round < kill_after {
            let left = WAIT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(name) => {
                    acked.push(name);
                    this_round += 1;
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("seed {seed}, round {round}: child stopped acknowledging: {e}");
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Acknowledged between our decision and the kill: they count too.
        acked.extend(rx.try_iter());

        runtime.block_on(async {
            let voters = vec![Voter {
                id: 1,
                addr: free_addr(),
            }];
            let addr = voters[0].addr.clone();
            let controller = Controller::start(ControllerConfig::new(1, voters, addr, dir.path()))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, round {round}: reopen failed: {e}"));
            let mut image = controller.subscribe();
            let all_there = tokio::time::timeout(
                WAIT,
                image.wait_for(|image| acked.iter().all(|n| image.topic_by_name(n).is_some())),
            )
            .await;
            if all_there.is_err() {
                let image = controller.image();
                let missing: Vec<_> = acked
                    .iter()
                    .filter(|n| image.topic_by_name(n).is_none())
                    .collect();
                panic!("seed {seed}, round {round}: acknowledged but lost: {missing:?}");
            }
            controller.shutdown().await;
        });
    }
    assert!(acked.len() >= 4 * 3);
}
