//! `demo`: the one-command tour. A mock PolyAI API, the relay on the embedded queue, and
//! signed webhooks, all on loopback; each enriched record is printed as it lands.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{self, Components},
    config::{
        ApiSettings, BrokerSettings, ConnectionLimits, ReceiverSettings, ServerSettings, Topology, WorkerSettings,
    },
    mock_api::{emit::Emitter, Conversation, EmitConfig, EmitScheme, MockApi, MockConfig},
    queue::embedded::CONVERSATIONS_FILE,
    shutdown,
};

/// The demo's signing secret: shared by the sender and the receiver, nowhere else.
const DEMO_SECRET: &str = "whsec_demo_only";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its embedded queue and output; emptied at start (it is the demo's own).
    #[arg(long, default_value = "./data/demo")]
    data_dir: PathBuf,
    /// Conversations to send webhooks about (handoffs send two events).
    #[arg(long, default_value_t = 5)]
    conversations: usize,
    /// Keep running after the tour, until Ctrl-C, so you can send your own events.
    #[arg(long)]
    keep_running: bool,
}

impl DemoArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let shutdown = shutdown::on_signal();
        prepare(&self.data_dir)?;
        let mock = MockApi::new(MockConfig::default())?;
        let chosen = pick(mock.conversations(), self.conversations);
        let mock_config = MockConfig::default();
        let mock_listener = TcpListener::bind("127.0.0.1:0").await?;
        let mock = mock.serve(mock_listener, shutdown.clone())?;
        println!("mock PolyAI API    {}", mock.base_url());

        let relay = app::start(components(&self.data_dir, &mock.base_url(), &mock_config)?, shutdown.clone()).await?;
        let webhook_url = format!("http://{}/polyai-events", relay.local_addr);
        println!("relay (embedded)   {webhook_url}");
        println!("records            {}\n", self.data_dir.join(CONVERSATIONS_FILE).display());

        let emitter = Emitter::new(EmitConfig {
            url: webhook_url.parse()?,
            rate: 4.0,
            count: None,
            secret: SecretString::from(DEMO_SECRET),
            scheme: EmitScheme::Timestamped,
        })?;
        let sending = tokio::spawn(emitter.run(Arc::from(chosen), shutdown.clone()));
        let printed = tokio::spawn(print_records(self.data_dir.join(CONVERSATIONS_FILE), shutdown.clone()));

        let summary = tokio::select! {
            summary = sending => summary?,
            _ = shutdown.cancelled() => return stop(relay, printed).await,
        };
        let landed = wait_for_records(&self.data_dir.join(CONVERSATIONS_FILE), summary.accepted, &shutdown).await;
        println!("\nsent {} signed webhooks, {} accepted with 204", summary.sent, summary.accepted);
        if landed {
            println!(
                "all {} enriched records landed in {}",
                summary.accepted,
                self.data_dir.join(CONVERSATIONS_FILE).display()
            );
        }
        if self.keep_running && landed {
            println!("\nstill running: try `polyai-relay send --url {webhook_url} --secret {DEMO_SECRET}`;");
            println!("metrics at http://{}/metrics. Ctrl-C to stop.", relay.admin_addr);
            shutdown.cancelled().await;
        }
        shutdown.cancel();
        stop(relay, printed).await
    }
}

async fn stop(relay: app::Running, printed: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    relay.stopped.await.context("relay panicked")??;
    printed.abort();
    Ok(())
}

/// The demo owns its directory: start from nothing, so the records shown are this run's.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Finished conversations with a mix of both event types: some handoffs, some not.
fn pick(conversations: &[Conversation], count: usize) -> Vec<Conversation> {
    let finished = || conversations.iter().filter(|c| !c.in_progress);
    let handoffs = finished().filter(|c| c.handoff).take(count.div_ceil(2));
    let others = finished().filter(|c| !c.handoff).take(count - count.div_ceil(2));
    handoffs.chain(others).cloned().collect()
}

fn components(data_dir: &Path, mock_url: &str, mock: &MockConfig) -> anyhow::Result<Components> {
    let listen = "127.0.0.1:0".parse()?;
    let api = ApiSettings::new(mock_url.parse()?, mock.api_key.clone(), &mock.account_id, &mock.project_id);
    Ok(Components {
        broker: BrokerSettings {
            amqp_url: None,
            data_dir: data_dir.to_owned(),
            topology: Topology { conversations_log: None, ..Topology::default() },
        },
        receiver: Some(ReceiverSettings { listen, ..ReceiverSettings::new(SecretString::from(DEMO_SECRET)) }),
        // Quick retries and probes: the tour is short.
        worker: Some(WorkerSettings {
            concurrency: 4,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            auth_probe_interval: Duration::from_secs(5),
            ..WorkerSettings::new(api)
        }),
        server: ServerSettings { admin_listen: listen, limits: ConnectionLimits::default() },
        spool: None,
    })
}

/// Prints each new line of the records file as one human-readable line.
async fn print_records(path: PathBuf, shutdown: CancellationToken) {
    let mut shown = 0;
    while !shutdown.is_cancelled() {
        let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')).skip(shown) {
            shown += 1;
            match serde_json::from_str::<Value>(line) {
                Ok(record) => println!("{}", describe(&record)),
                Err(_) => println!("(unreadable line {shown})"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `expected` records are in the file (or Ctrl-C); true when they all landed.
async fn wait_for_records(path: &Path, expected: usize, shutdown: &CancellationToken) -> bool {
    loop {
        let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
        if text.lines().count() >= expected {
            // Let the printer show the last one before the summary.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// One line about an enriched record: what happened on the call, in a glance.
pub fn describe(record: &Value) -> String {
    let conversation = &record["conversation"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let id = text(&conversation["id"]);
    let short_id: String = id.chars().take(12).collect();
    let channel = text(&conversation["channel"]);
    let seconds = conversation["total_duration"].as_u64().unwrap_or(0);
    let turns = conversation["num_turns"].as_u64().unwrap_or(0);
    match record["event_type"].as_str() {
        Some("handoff.created") => format!(
            "handoff    {short_id}…  {channel:<9} to {}: {}",
            text(&conversation["handoff_destination"]),
            text(&conversation["handoff_reason"]),
        ),
        _ => {
            let first_words = conversation["turns"]
                .as_array()
                .and_then(|turns| turns.iter().find_map(|t| t["user_input"].as_str().filter(|s| !s.is_empty())))
                .map(|s| format!("  \"{}\"", s.chars().take(48).collect::<String>()))
                .unwrap_or_default();
            let transcript = if record["transcript_visible"] == false { "  (transcript off)" } else { "" };
            format!("completed  {short_id}…  {channel:<9} {seconds:>4}s  {turns:>2} turns{first_words}{transcript}")
        }
    }
}
