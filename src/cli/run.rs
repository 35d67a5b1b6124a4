//! `run`, `serve` and `work`: the long-running commands, which differ only in what they start.

use std::net::SocketAddr;

use clap::Args;

use crate::{
    app::{self, Components},
    config::{defaults, BrokerArgs, ReceiverArgs, SpoolArgs, WorkerArgs},
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
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    receiver: ReceiverArgs,
    #[command(flatten)]
    spool: SpoolArgs,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "RELAY_LISTEN", default_value = defaults::LISTEN)]
    listen: SocketAddr,
}

impl RunArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let receiver = self.receiver.settings()?;
        let components = Components {
            broker: self.broker.settings()?,
            listen: receiver.listen,
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
            listen: receiver.listen,
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
            listen: self.listen,
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
