//! `run`, `serve` and `work`: the long-running commands, which differ only in what they start.

use clap::Args;

use crate::{
    app::{self, Components},
    config::{BrokerArgs, BrokerSettings, ProjectsArgs, ProjectsFile, ReceiverArgs, ServerArgs, SpoolArgs, WorkerArgs},
    shutdown,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    receiver: ReceiverArgs,
    #[command(flatten)]
    spool: SpoolArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    receiver: ReceiverArgs,
    #[command(flatten)]
    spool: SpoolArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    server: ServerArgs,
}

impl RunArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let projects = self.projects.load()?;
        let broker = self.broker.settings()?;
        let receiver = self.receiver.settings(projects.as_ref(), &broker.topology.event_types)?;
        let components = Components {
            broker: bind_projects(broker, projects.as_ref()),
            server: self.server.settings()?,
            receiver: Some(receiver),
            worker: Some(self.worker.settings(projects.as_ref())?),
            spool: self.spool.settings(),
        };
        run_until_signal(components).await
    }
}

impl ServeArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let projects = self.projects.load()?;
        let broker = self.broker.settings()?;
        let receiver = self.receiver.settings(projects.as_ref(), &broker.topology.event_types)?;
        let components = Components {
            broker: bind_projects(broker, projects.as_ref()),
            server: self.server.settings()?,
            receiver: Some(receiver),
            worker: None,
            spool: self.spool.settings(),
        };
        run_until_signal(components).await
    }
}

impl WorkArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let projects = self.projects.load()?;
        let components = Components {
            broker: bind_projects(self.broker.settings()?, projects.as_ref()),
            server: self.server.settings()?,
            receiver: None,
            worker: Some(self.worker.settings(projects.as_ref())?),
            spool: None,
        };
        run_until_signal(components).await
    }
}

/// The worker's queue is bound to every type some project forwards (`RELAY_EVENTS` is the
/// default of a project that names no `events`).
fn bind_projects(mut broker: BrokerSettings, projects: Option<&ProjectsFile>) -> BrokerSettings {
    if let Some(file) = projects {
        broker.topology.event_types = file.event_types(&broker.topology.event_types);
    }
    broker
}

async fn run_until_signal(components: Components) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let running = app::start(components, shutdown).await?;
    running.stopped.await?
}
