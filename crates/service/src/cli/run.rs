//! `run`, `serve` and `work`: the long-running commands, which differ only in what they start.

use clap::Args;

use crate::{
    app::{self, Components},
    config::{
        broker_limit, check_ledger_kept, check_within_retention, BrokerArgs, BrokerSettings, ProjectsArgs,
        ProjectsFile, ReceiverArgs, ServerArgs, SpoolArgs, WorkerArgs,
    },
    shutdown,
};

/// The flags of a command that receives webhooks (`run`, `serve`): the spool belongs to the receiver.
#[derive(Debug, Args)]
struct ReceivingArgs {
    #[command(flatten)]
    receiver: ReceiverArgs,
    #[command(flatten)]
    spool: SpoolArgs,
}

/// The flags every long-running command ends with: the queue (or broker) and the admin listener.
#[derive(Debug, Args)]
struct QueueAndAdminArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    receiving: ReceivingArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    queue_and_admin: QueueAndAdminArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    receiving: ReceivingArgs,
    #[command(flatten)]
    queue_and_admin: QueueAndAdminArgs,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    projects: ProjectsArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    queue_and_admin: QueueAndAdminArgs,
}

/// A long-running command: what it starts, read from its flags.
pub trait Starts {
    fn components(&self) -> anyhow::Result<Components>;
}

impl Starts for RunArgs {
    fn components(&self) -> anyhow::Result<Components> {
        components(&self.projects, &self.queue_and_admin, Some(&self.receiving), Some(&self.worker))
    }
}

impl Starts for ServeArgs {
    fn components(&self) -> anyhow::Result<Components> {
        components(&self.projects, &self.queue_and_admin, Some(&self.receiving), None)
    }
}

impl Starts for WorkArgs {
    fn components(&self) -> anyhow::Result<Components> {
        components(&self.projects, &self.queue_and_admin, None, Some(&self.worker))
    }
}

/// What a long-running command would refuse at start-up, its settings read from the
/// environment exactly as it reads them: `check` reports it without starting anything.
pub fn check_from_env<T: Starts + clap::FromArgMatches + Args>() -> anyhow::Result<Components> {
    let matches = T::augment_args(clap::Command::new("polyai-relay")).try_get_matches_from(["polyai-relay"]);
    // clap's message ends with usage hints for a command line, which `check` was not given.
    let parsed = matches.and_then(|matches| T::from_arg_matches(&matches)).map_err(|error| {
        let text = error.to_string();
        anyhow::anyhow!("{}", text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned())
    })?;
    parsed.components()
}

/// Starts what `command` starts, and runs it until SIGTERM or Ctrl-C.
pub async fn until_signal(command: &impl Starts) -> anyhow::Result<()> {
    let components = command.components()?;
    let shutdown = shutdown::on_signal();
    let running = app::start(components, shutdown).await?;
    running.stopped.await?
}

/// The settings of what a command starts, checked in one order whichever the command (projects,
/// broker, receiver, server, worker), so that the first error is the same in each.
fn components(
    projects: &ProjectsArgs,
    QueueAndAdminArgs { broker: broker_args, server }: &QueueAndAdminArgs,
    receiving: Option<&ReceivingArgs>,
    worker: Option<&WorkerArgs>,
) -> anyhow::Result<Components> {
    let projects = projects.load()?;
    let broker = broker_args.settings()?;
    // What a project that names no `events` or `environments` forwards.
    let forwarding = broker_args.topology.forwarding()?;
    let receiver = match receiving {
        Some(r) => Some(r.receiver.settings(projects.as_ref(), &forwarding)?),
        None => None,
    };
    if let Some(receiver) = &receiver {
        broker_limit::check_body_fits(broker.amqp_url.as_ref(), receiver.max_body)?;
    }
    let worker = worker.map(|w| w.settings(projects.as_ref(), &forwarding)).transpose()?;
    if let Some(reconcile) = worker.as_ref().and_then(|w| w.reconcile.as_ref()) {
        check_within_retention("RELAY_RECONCILE_WINDOW", reconcile.window, broker.topology.log_retention)?;
        check_ledger_kept(broker.amqp_url.is_some(), broker.topology.conversations_log.as_deref())?;
    }
    Ok(Components {
        broker: bind_projects(broker, projects.as_ref()),
        server: server.settings()?,
        receiver,
        worker,
        spool: receiving.and_then(|r| r.spool.settings()),
    })
}

/// The worker's queue is bound to every type some project forwards (`RELAY_EVENTS` is the
/// default of a project that names no `events`).
fn bind_projects(mut broker: BrokerSettings, projects: Option<&ProjectsFile>) -> BrokerSettings {
    if let Some(file) = projects {
        broker.topology.event_types = file.event_types(&broker.topology.event_types);
    }
    broker
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    enum Command {
        // Boxed as in the real command line: `run` holds every other command's settings.
        Run(Box<RunArgs>),
        Serve(ServeArgs),
        Work(WorkArgs),
    }

    const SECRET: [&str; 2] = ["--webhook-secret", "whsec-test"];
    const SPOOL: [&str; 2] = ["--spool-dir", "/tmp/relay-spool-test"];
    const API: [&str; 8] =
        ["--api-key", "k", "--base-url", "http://127.0.0.1:9999", "--account-id", "ws-a", "--project-id", "P"];

    fn components(command: &str, flags: &[&[&str]]) -> anyhow::Result<Components> {
        let args = ["relay", command].into_iter().chain(flags.iter().flat_map(|f| f.iter().copied()));
        match Command::try_parse_from(args)? {
            Command::Run(args) => args.components(),
            Command::Serve(args) => args.components(),
            Command::Work(args) => args.components(),
        }
    }

    /// (receiver, spool, worker) started.
    fn started(components: &Components) -> (bool, bool, bool) {
        (components.receiver.is_some(), components.spool.is_some(), components.worker.is_some())
    }

    #[test]
    fn each_command_starts_its_own_parts() {
        assert_eq!(started(&components("run", &[&SECRET, &SPOOL, &API]).unwrap()), (true, true, true));
        assert_eq!(started(&components("serve", &[&SECRET, &SPOOL]).unwrap()), (true, true, false));
        assert_eq!(started(&components("serve", &[&SECRET]).unwrap()), (true, false, false));
        assert_eq!(started(&components("work", &[&API]).unwrap()), (false, false, true));
    }

    #[test]
    fn a_receiver_whose_largest_webhook_the_broker_would_refuse_does_not_start() {
        const AMQP: [&str; 2] = ["--amqp-url", "amqp://u:p@127.0.0.1:5672/%2f"];
        let limit = ["--broker-max-message", "64KiB"];
        let run: [&[&str]; 4] = [&SECRET, &API, &AMQP, &limit];
        let serve: [&[&str]; 3] = [&SECRET, &AMQP, &limit];
        for (command, flags) in [("run", &run[..]), ("serve", &serve[..])] {
            let error = components(command, flags).err().expect("refused").to_string();
            assert!(error.contains("RELAY_MAX_BODY") && error.contains("RELAY_BROKER_MAX_MESSAGE"), "{error}");
        }
        assert!(components("serve", &[&SECRET, &AMQP, &limit, &["--max-body", "64KiB"]]).is_ok());
        // The worker alone takes no webhook.
        assert!(components("work", &[&API, &AMQP, &limit]).is_ok());
    }

    /// `work` reads what the receiver forwards too: its reconciliation makes records only of what
    /// a project forwards. Leaving every project out turns reconciliation off (with a warning at
    /// start-up), not the worker.
    #[test]
    fn the_worker_reconciles_only_the_environment_and_types_forwarded() {
        const EVERY: [&str; 2] = ["--reconcile-every", "15m"];
        let left_out = |flags: &[&[&str]]| {
            let worker = components("work", flags).unwrap().worker.unwrap();
            let reconcile = worker.reconcile.unwrap();
            reconcile.left_out.into_iter().map(|left| format!("{}: {}", left.project, left.why)).collect::<Vec<_>>()
        };
        let handoffs = ["--events", "handoff.created"];
        let why = left_out(&[&API, &EVERY, &handoffs]);
        assert!(why.len() == 1 && why[0].starts_with("default: it forwards no conversation.completed"), "{why:?}");
        let sandbox = ["--environments", "sandbox"];
        let why = left_out(&[&API, &EVERY, &sandbox]);
        assert!(why.len() == 1 && why[0].contains("it forwards no `live` calls"), "{why:?}");
        assert_eq!(left_out(&[&API, &EVERY, &sandbox, &["--reconcile-env", "sandbox"]]), Vec::<String>::new());
        assert_eq!(left_out(&[&API, &EVERY]), Vec::<String>::new());
        // And the receiver drops what it does not forward.
        let receiver = components("serve", &[&SECRET, &sandbox]).unwrap().receiver.unwrap();
        assert_eq!(receiver.projects[0].forwarding.environments, Some(vec!["sandbox".to_owned()]));
    }

    #[test]
    fn the_receiver_is_checked_before_the_worker() {
        let error = |result: anyhow::Result<Components>| result.err().expect("refused").to_string();
        assert!(error(components("run", &[])).contains("POLYAI_WEBHOOK_SECRET"));
        assert!(error(components("run", &[&SECRET])).contains("POLYAI_API_KEY"));
        assert!(error(components("serve", &[])).contains("POLYAI_WEBHOOK_SECRET"));
        assert!(error(components("work", &[])).contains("POLYAI_API_KEY"));
    }
}
