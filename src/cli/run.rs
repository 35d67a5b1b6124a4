//! `run`, `serve` and `work`: the long-running commands, which differ only in what they start.

use clap::Args;

use crate::{
    app::{self, Components},
    config::{BrokerArgs, ReceiverArgs, ServerArgs, SpoolArgs, WorkerArgs},
    shutdown,
};

#[derive(Debug, Args)]
pub struct RunArgs {
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
    worker: WorkerArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    server: ServerArgs,
}

impl RunArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let receiver = self.receiver.settings()?;
        let components = Components {
            broker: self.broker.settings()?,
            server: self.server.settings()?,
            receiver: Some(receiver),
            worker: Some(self.worker.settings()?),
            spool: self.spool.settings(),
        };
        run_until_signal(components).await
    }
}

impl ServeArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let receiver = self.receiver.settings()?;
        let components = Components {
            broker: self.broker.settings()?,
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
        let components = Components {
            broker: self.broker.settings()?,
            server: self.server.settings()?,
            receiver: None,
            worker: Some(self.worker.settings()?),
            spool: None,
        };
        run_until_signal(components).await
    }
}

async fn run_until_signal(components: Components) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let running = app::start(components, shutdown).await?;
    running.stopped.await?
}
