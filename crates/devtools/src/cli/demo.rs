//! `demo`: the one-command tour. A mock PolyAI API serving two projects, the relay on the
//! embedded queue serving both (design §12), and signed webhooks into each project's path, all on
//! loopback; each enriched record is printed as it lands, with its project.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use tokio::{net::TcpListener, sync::watch};

use polyai_relay::{
    app::{self, Components},
    cli::stdout,
    config::{
        ApiSettings, BrokerSettings, ConnectionLimits, ProjectName, ReceiverProject, ReceiverSettings, ServerSettings,
        Topology, WorkerSettings,
    },
    queue::embedded::CONVERSATIONS_FILE,
    shutdown,
};

use super::demo_output::{self, Owners};
use crate::mock_api::{emit::Emitter, Conversation, EmitConfig, EmitScheme, MockApi, MockConfig, Tenant};

/// One project of the tour: a tenant of the mock and a project of the relay, under one name.
struct DemoProject {
    name: &'static str,
    account_id: &'static str,
    project_id: &'static str,
    /// The tenant's v3 key: the relay fetches this project's conversations with it, and only it.
    api_key: &'static str,
    /// The signing secret of this project's webhooks: the sender's and the receiver's, nowhere else.
    secret: &'static str,
}

impl DemoProject {
    /// Its webhook path: the default of a projects file.
    fn path(&self) -> String {
        format!("/polyai-events/{}", self.name)
    }
}

/// Two projects in two accounts, as a company with a PolyAI agent per region has.
const PROJECTS: [DemoProject; 2] = [
    DemoProject {
        name: "acme-uk",
        account_id: "ws-acme-uk",
        project_id: "PROJECT-ACME-UK",
        api_key: "demo-acme-uk-key",
        secret: "whsec_demo_acme_uk_only",
    },
    DemoProject {
        name: "acme-us",
        account_id: "ws-acme-us",
        project_id: "PROJECT-ACME-US",
        api_key: "demo-acme-us-key",
        secret: "whsec_demo_acme_us_only",
    },
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its embedded queue and output; emptied at start (it is the demo's own).
    #[arg(long, default_value = "./data/demo")]
    data_dir: PathBuf,
    /// Conversations of each project to send webhooks about (handoffs send two events).
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
        let records_file = self.data_dir.join(CONVERSATIONS_FILE);
        let mock = MockApi::new(mock_config())?;
        let mut chosen = Vec::new();
        let mut owners = Owners::new();
        for project in &PROJECTS {
            let conversations = mock.conversations_of(project.name).context("the mock serves every demo project")?;
            let picked = pick(conversations, self.conversations);
            owners.extend(picked.iter().map(|c| (c.id.clone(), project.name.to_owned())));
            chosen.push(picked);
        }
        let mock = mock.serve(TcpListener::bind("127.0.0.1:0").await?, shutdown.clone())?;
        stdout::line(format_args!(
            "mock PolyAI API    {}  (accounts ws-acme-uk and ws-acme-us, a key each)",
            mock.base_url()
        ));

        let relay = app::start(components(&self.data_dir, &mock.base_url())?, shutdown.clone()).await?;
        let urls: Vec<String> = PROJECTS.iter().map(|p| format!("http://{}{}", relay.local_addr, p.path())).collect();
        for (project, url) in PROJECTS.iter().zip(&urls) {
            stdout::line(format_args!("relay {:<12} {url}", project.name));
        }
        stdout::line(format_args!("records            {}\n", records_file.display()));

        let mut sending = Vec::new();
        for ((project, url), conversations) in PROJECTS.iter().zip(&urls).zip(chosen) {
            let emitter = Emitter::new(EmitConfig {
                url: url.parse()?,
                rate: 4.0,
                count: None,
                secret: SecretString::from(project.secret),
                scheme: EmitScheme::Timestamped,
            })?;
            sending.push(tokio::spawn(emitter.run(Arc::from(conversations), shutdown.clone())));
        }
        let written = relay.backend.embedded.as_ref().context("the demo runs on the embedded queue")?.written();
        let (shown, landed) = watch::channel(0);
        let printer = demo_output::print(self.data_dir.clone(), written, owners.clone(), shown, shutdown.clone());
        let printed = tokio::spawn(printer);

        let (mut sent, mut accepted) = (0, 0);
        for emitter in sending {
            let summary = tokio::select! {
                summary = emitter => summary?,
                _ = shutdown.cancelled() => return stop(relay, printed).await,
            };
            (sent, accepted) = (sent + summary.sent, accepted + summary.accepted);
        }
        let landed = demo_output::wait_for(&self.data_dir, landed, accepted, &owners, &shutdown).await;
        stdout::line(format_args!("\nsent {sent} signed webhooks, {accepted} accepted with 204"));
        let Some(tally) = landed else { return stop(relay, printed).await };
        let records = tally.total() - tally.dead;
        if tally.dead == 0 {
            stdout::line(format_args!(
                "all {records} enriched records landed in {} ({})",
                records_file.display(),
                tally.by_project()
            ));
        } else {
            shutdown.cancel();
            stop(relay, printed).await?;
            anyhow::bail!(
                "{} of {accepted} events were dead-lettered (see `RELAY_DATA_DIR={} polyai-relay dead list`)",
                tally.dead,
                self.data_dir.display()
            );
        }
        if self.keep_running {
            stdout::line(format_args!("\nstill running: try"));
            for (project, url) in PROJECTS.iter().zip(&urls) {
                stdout::line(format_args!("  polyai-relay send --url {url} --secret {}", project.secret));
            }
            stdout::line(format_args!("metrics at http://{}/metrics. Ctrl-C to stop.", relay.admin_addr));
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

/// The mock with a tenant per demo project (beside its own `default` one, which stays idle).
fn mock_config() -> MockConfig {
    let tenants = PROJECTS.iter().map(|p| Tenant::new(p.name, p.account_id, p.project_id, p.api_key)).collect();
    MockConfig { tenants, ..MockConfig::default() }
}

/// The relay as a projects file with the demo's projects would make it: each path verified with
/// its project's secret, each project fetched with its own key and ids.
fn components(data_dir: &Path, mock_url: &str) -> anyhow::Result<Components> {
    let listen = "127.0.0.1:0".parse()?;
    let mut receiver_projects = Vec::new();
    let mut api_projects = Vec::new();
    for project in &PROJECTS {
        let name = ProjectName::parse("demo project", project.name)?;
        let secret = SecretString::from(project.secret);
        receiver_projects.push(ReceiverProject {
            name: name.clone(),
            path: project.path(),
            ..ReceiverSettings::new(secret).projects.remove(0)
        });
        let key = SecretString::from(project.api_key);
        let api = ApiSettings::new(mock_url.parse()?, key, project.account_id, project.project_id);
        api_projects.push(ApiSettings { project: name, ..api });
    }
    // The other settings are the defaults; `new` makes a project of its own, replaced here.
    let defaults = ReceiverSettings::new(SecretString::from(PROJECTS[0].secret));
    let receiver = ReceiverSettings { listen, projects: receiver_projects, ..defaults };
    let mut worker = WorkerSettings::new(api_projects[0].clone());
    worker.projects = api_projects;
    Ok(Components {
        broker: BrokerSettings {
            amqp_url: None,
            data_dir: data_dir.to_owned(),
            topology: Topology { conversations_log: None, ..Topology::default() },
        },
        receiver: Some(receiver),
        // Quick retries and probes: the tour is short.
        worker: Some(WorkerSettings {
            concurrency: 4,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            auth_probe_interval: Duration::from_secs(5),
            ..worker
        }),
        server: ServerSettings { admin_listen: listen, limits: ConnectionLimits::default() },
        spool: None,
    })
}
