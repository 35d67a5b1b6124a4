//! Failover drills on a 3-node cluster of private nodes, with a steady stream of signed
//! webhooks: nothing answered 204 may be lost, and the 503 window of each drill is measured and
//! printed. Behind `RELAY_DRILLS=1` (which `.ci/run` sets): three Erlang VMs and about 45 s here,
//! more than a plain `cargo test` on a laptop should start.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable, Connection, ConnectionProperties};
use polyai_relay::{config::EventTypes, queue::amqp::topology};
use tokio::sync::Notify;

use crate::{
    broker::TestBroker,
    fake_polyai::{FakePolyai, ACCOUNT, API_KEY, PROJECT},
    helpers::{http, post_event, SECRET},
    node::{free_port, Node, Site},
    process::RelayProcess,
    proxy::Proxy,
};

/// Webhooks answered 204 after a fault before the drill counts the relay as recovered.
const RECOVERED_AFTER: usize = 100;

/// Prints a drill's result and appends it to `drill-report.txt` in cargo's test temp dir, which
/// `.ci/run` prints at the end (a passing test's output is otherwise not shown).
fn report(line: String) {
    println!("{line}");
    use std::io::Write;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("drill-report.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// One answered webhook of the stream.
struct Answer {
    id: String,
    status: Option<u16>,
    sent: Instant,
    answered: Instant,
}

/// Signed webhooks posted without pause by a few senders, every answer recorded.
struct Stream {
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Woken after each answer is recorded.
    answered: Arc<Notify>,
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    fn start(url: String) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let senders = (0..4)
            .map(|sender| {
                let (answers, answered, stop, url) = (answers.clone(), answered.clone(), stop.clone(), url.clone());
                tokio::spawn(async move {
                    let http = http();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let (id, status) = post_event(&http, &url, format!("drill-{sender}-{i}")).await;
                        answers.lock().unwrap().push(Answer { id, status, sent, answered: Instant::now() });
                        answered.notify_waiters();
                        i += 1;
                        // A steady rate (about 200 a second in all), not a flood the machine cannot enrich.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Self { answers, answered, stop, senders }
    }

    fn accepted_since(&self, since: Instant) -> usize {
        self.answers.lock().unwrap().iter().filter(|a| a.sent >= since && a.status == Some(204)).count()
    }

    /// Waits until the relay has accepted [`RECOVERED_AFTER`] webhooks sent after `since`,
    /// counting again at each answer.
    async fn await_recovery(&self, since: Instant) {
        let recovered = async {
            loop {
                // Created before the count, so an answer recorded during it still wakes the wait.
                let next = self.answered.notified();
                if self.accepted_since(since) >= RECOVERED_AFTER {
                    return;
                }
                next.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), recovered).await.expect("the relay did not recover within 60 s");
    }

    /// From the first refused webhook sent after `since` to the answer of the last one, and how many.
    fn refused_window(&self, since: Instant) -> (Duration, usize) {
        let answers = self.answers.lock().unwrap();
        let refused: Vec<&Answer> = answers.iter().filter(|a| a.sent >= since && a.status != Some(204)).collect();
        match (refused.iter().map(|a| a.sent).min(), refused.iter().map(|a| a.answered).max()) {
            (Some(first), Some(last)) => (last - first, refused.len()),
            _ => (Duration::ZERO, 0),
        }
    }

    async fn stop(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for sender in self.senders {
            sender.await.unwrap();
        }
        let answers = self.answers.lock().unwrap();
        answers.iter().filter(|a| a.status == Some(204)).map(|a| a.id.clone()).collect()
    }
}

/// The `host:port` the relay's publisher is connected to now, from its log.
fn connected_to(relay: &RelayProcess) -> String {
    let logs = relay.logs();
    let line = logs.lines().rfind(|l| l.contains("broker connected")).expect("connected once");
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["broker"].as_str().unwrap().to_owned()
}

fn cluster(site: &Site) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let port = free_port();
            Node::prepare(site, &format!("n{i}"), port, &format!("listeners.tcp.default = 127.0.0.1:{port}"))
        })
        .collect();
    // Boot all three at once: a node's boot is mostly waiting.
    nodes.iter().for_each(Node::boot);
    nodes.iter().for_each(Node::await_startup);
    nodes[1].join(&nodes[0]);
    nodes[2].join(&nodes[0]);
    nodes
}

#[tokio::test]
async fn drills_on_a_three_node_cluster_lose_nothing_and_keep_the_503_window_short() {
    if std::env::var("RELAY_DRILLS").as_deref() != Ok("1") {
        eprintln!("skipped: set RELAY_DRILLS=1 to run the cluster drills");
        return;
    }
    let site = Site::new();
    let nodes = cluster(&site);
    let mut proxies = Vec::new();
    for node in &nodes {
        proxies.push(Proxy::start(format!("127.0.0.1:{}", node.port).parse().unwrap()).await);
    }
    // The test's own view of the broker (names, cleanup, reading records) goes to the third node.
    std::env::set_var("AMQP_URL", nodes[2].url("amqp", "127.0.0.1"));
    let broker = TestBroker::new(EventTypes::All).await;
    // Declared through the third node, the queues are led there, away from the relay's first address.
    let connection =
        Connection::connect(&nodes[2].url("amqp", "127.0.0.1"), ConnectionProperties::default()).await.unwrap();
    topology::declare(&connection, &broker.topology).await.unwrap();

    let polyai = FakePolyai::start().await;
    let urls: Vec<String> = proxies.iter().map(|p| p.amqp_url()).collect();
    let amqp_url = urls.join(",");
    let mut env: Vec<(&str, String)> = broker.topology_env();
    env.extend([
        ("AMQP_URL", amqp_url),
        ("POLYAI_WEBHOOK_SECRET", SECRET.into()),
        ("POLYAI_API_KEY", API_KEY.into()),
        ("POLYAI_BASE_URL", polyai.base_url.clone()),
        ("POLYAI_ACCOUNT_ID", ACCOUNT.into()),
        ("POLYAI_PROJECT_ID", PROJECT.into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;
    let stream = Stream::start(relay.url("/polyai-events"));
    stream.await_recovery(Instant::now() - Duration::from_secs(60)).await;
    let node_of = |address: &str| proxies.iter().position(|p| p.address.to_string() == address).expect("a proxy");

    let nodes = &nodes;
    // One drill: `act` on node `index` once the cluster can lose it, until the relay accepts
    // webhooks again, then `undo`. Reports the 503 window and how many were refused, and returns them.
    let drill = async |index: usize, what: &str, act: &dyn Fn(), undo: &dyn Fn()| {
        nodes[index].await_not_quorum_critical();
        let since = Instant::now();
        act();
        stream.await_recovery(since).await;
        let (window, refused) = stream.refused_window(since);
        report(format!("drill: {what}: {refused} refused, 503 window {window:?}"));
        undo();
        (window, refused)
    };
    // `rabbitmqctl COMMAND` on node `index`, to be run by a drill.
    let ctl = |index: usize, command: &'static str| {
        move || {
            nodes[index].ctl(&[command]);
        }
    };

    // 1. The node that leads the queues, not the relay's, stops: no 503 at all.
    assert_ne!(node_of(&connected_to(&relay)), 2, "the relay starts on its first address");
    let (_, refused) =
        drill(2, "queue leader (not the relay's node) stopped", &ctl(2, "stop_app"), &ctl(2, "start_app")).await;
    assert_eq!(refused, 0, "losing a node the relay is not connected to refuses nothing");

    // 2. The node the relay is connected to stops: it moves to the next address.
    let relays = node_of(&connected_to(&relay));
    let (stopped_window, _) =
        drill(relays, "the relay's node stopped", &ctl(relays, "stop_app"), &ctl(relays, "start_app")).await;

    // 3. The network to the relay's node is cut (its proxy drops every connection).
    let relays = node_of(&connected_to(&relay));
    let proxy = &proxies[relays];
    drill(relays, "network to the relay's node cut", &|| proxy.cut(), &|| proxy.restore()).await;

    // 4. The relay's node goes silent (its proxy holds every byte, connections left open): only
    // the missing heartbeats tell, two of the 10 s the relay asks for.
    let relays = node_of(&connected_to(&relay));
    let proxy = &proxies[relays];
    let (silent_window, _) = drill(relays, "the relay's node gone silent", &|| proxy.stall(), &|| proxy.resume()).await;

    // Nothing answered 204 is lost: every one comes out enriched.
    let accepted = stream.stop().await;
    // A new connection: the first one went down with the third node in the first drill.
    let connection =
        Connection::connect(&nodes[2].url("amqp", "127.0.0.1"), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = broker.conversations_queue().to_owned();
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut records =
        channel.basic_consume(queue.as_str().into(), "".into(), options, FieldTable::default()).await.unwrap();
    let mut enriched = HashSet::new();
    let all_enriched = async {
        while !accepted.is_subset(&enriched) {
            let record = records.next().await.expect("consuming").expect("a record");
            enriched.insert(record.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default());
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), all_enriched).await.is_err() {
        panic!("{} accepted but never enriched", accepted.difference(&enriched).count());
    }
    report(format!("drill: {} webhooks accepted, all enriched", accepted.len()));
    assert!(stopped_window < Duration::from_secs(1), "the relay's node stopped: 503 for {stopped_window:?}");
    // Two heartbeats, the last one's check up to half an interval late, then the next address.
    assert!(silent_window < Duration::from_secs(35), "the relay's node gone silent: 503 for {silent_window:?}");
    relay.terminate();
    relay.wait_for_exit(Duration::from_secs(10)).await;
}
