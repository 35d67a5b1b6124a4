//! Publishing with publisher confirms on a supervised connection.
//!
//! Publishes share a few confirm-mode channels without any lock held across a publish; lapin
//! pipelines them and matches each confirm to its publish (each channel's publishes queued in the
//! order lapin numbered them: [`confirmed::SharedChannel`]). A supervisor task owns the connection:
//! it connects (retrying with backoff), declares the topology, and starts over when the
//! connection or any channel fails. Meanwhile publishes fail fast with `Unavailable`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{options::ConfirmSelectOptions, types::ShortString, Connection, Event};
use tokio::sync::{watch, Notify};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    confirmed,
    connect::Connector,
    convert, describe, misdelivered,
    refusals::{Refusals, ReopenPace},
    seen_through::SeenThrough,
    topology, upkeep,
};
use crate::{
    backoff::RECONNECT,
    config::{AmqpTarget, Topology},
    log_limit::LogLimit,
    queue::{retry_tier, Destination, Message, PublishError, Publisher},
    telemetry::{names, Metrics},
};

/// How long shutdown waits for dead letters made of misdelivered returns.
const RESCUES_DRAIN: Duration = Duration::from_secs(5);

/// Channels per connection: enough to spread confirms across the broker's channel processes.
const CHANNELS: usize = 4;

/// One connection to the broker and its confirm channels; replaced whole when either breaks.
struct Session {
    /// Kept to read whether it is still up and whether a resource alarm blocks it.
    connection: Connection,
    /// `host:port` of the node this session reached, for the logs.
    broker: String,
    /// Confirm-mode channels, [`CHANNELS`] of them, so one slow confirm does not hold every publish.
    channels: Vec<confirmed::SharedChannel>,
    /// Round-robin cursor over `channels`: publishes spread without a lock.
    next: AtomicUsize,
    /// The nacks of each channel, to tell one the broker keeps refusing.
    refusals: Refusals,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.channel.status().connected())
    }

    /// Healthy and not blocked by a resource alarm.
    fn ready(&self) -> bool {
        self.healthy() && !self.connection.status().blocked()
    }
}

/// What publishers and the supervisor that reconnects share.
struct Shared {
    /// The current session; `None` while the broker is unreachable. Publishes clone the `Arc`
    /// and release the lock at once, so a reconnect never waits behind a publish.
    session: RwLock<Option<Arc<Session>>>,
    /// Whether a session is up, for callers that wait for the first connection.
    connected: watch::Sender<bool>,
    /// Whether publishes can succeed: a healthy session the broker does not block.
    ready: watch::Sender<bool>,
    /// Why the last connection attempt failed; `None` once one succeeded.
    failure: watch::Sender<Option<String>>,
    /// Wakes the supervisor when a publish saw a dead channel.
    broken: Notify,
    /// Declared on every new session, so a broker that lost its definitions gets them back.
    topology: Topology,
    /// The broker's `max_message_size` (`RELAY_BROKER_MAX_MESSAGE`): a larger body is refused here.
    max_message: usize,
    /// Where the backlog gauge goes.
    metrics: Metrics,
    /// Messages whose return reached another publish, on their way to the dead letters
    /// (`misdelivered`): the connection is closed only once they are there, or after a while.
    rescues: TaskTracker,
    /// Sessions replaced for their refusals, closing once their publishes have their answers.
    retiring: TaskTracker,
}

/// [`Publisher`] for RabbitMQ.
#[derive(Clone)]
pub struct AmqpPublisher {
    shared: Arc<Shared>,
}

impl AmqpPublisher {
    /// Starts the supervisor; the publisher becomes ready once the broker answers.
    pub fn start(target: AmqpTarget, topology: Topology, metrics: Metrics, shutdown: CancellationToken) -> Self {
        let connector = Connector::new(&target, metrics.clone());
        upkeep::count_from_zero(&topology, &metrics);
        misdelivered::count_from_zero(&metrics);
        // At 0 from the start, so that the first replacement shows as an increase.
        metrics.record(|| metrics::counter!(names::PUBLISHER_REOPENED).increment(0));
        let shared = Arc::new(Shared {
            session: RwLock::new(None),
            connected: watch::Sender::new(false),
            failure: watch::Sender::new(None),
            ready: watch::Sender::new(false),
            broken: Notify::new(),
            topology,
            max_message: target.max_message,
            metrics,
            rescues: TaskTracker::new(),
            retiring: TaskTracker::new(),
        });
        tokio::spawn(supervise(connector, shared.clone(), shutdown));
        Self { shared }
    }

    /// Resolves once the broker is connected and the topology declared.
    pub async fn wait_connected(&self) {
        let mut connected = self.shared.connected.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: this cannot fail.
        let _ = connected.wait_for(|up| *up).await;
    }

    /// The outcome of the first connection attempt (or of the first to succeed): the reason
    /// when it failed, for commands that report instead of waiting for the broker.
    pub async fn first_connection(&self) -> Result<(), String> {
        let mut connected = self.shared.connected.subscribe();
        let mut failure = self.shared.failure.subscribe();
        tokio::select! {
            _ = connected.wait_for(|up| *up) => Ok(()),
            failed = failure.wait_for(Option::is_some) => Err(failed.ok().and_then(|f| f.clone()).unwrap_or_default()),
        }
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.shared.session.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn route(&self, to: Destination, message: &Message) -> (ShortString, ShortString, Option<Duration>) {
        let exchange = self.exchange_of(to).into();
        match to {
            Destination::Retry { delay } => {
                let (tier, delay) = retry_tier(delay);
                // The default exchange routes straight to the delay queue named by the key.
                (exchange, self.shared.topology.retry_queue(tier).into(), Some(delay))
            }
            // Straight to the log (`publish` refuses a withdrawal without one).
            Destination::Withdrawn => {
                (exchange, self.shared.topology.conversations_log.as_deref().unwrap_or_default().into(), None)
            }
            _ => (exchange, message.event_type.as_str().into(), None),
        }
    }

    fn exchange_of(&self, to: Destination) -> &str {
        let topology = &self.shared.topology;
        match to {
            Destination::Events => &topology.events_exchange,
            Destination::Conversations => &topology.conversations_exchange,
            Destination::Dead => &topology.dead_exchange,
            Destination::Retry { .. } | Destination::Withdrawn => "",
        }
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        // The broker answers a body over its limit by closing the channel: every publish in flight
        // on it fails, the session is rebuilt, and the webhooks arriving meanwhile get 503s. So such
        // a message is never sent. RabbitMQ measures the body alone, as here.
        let (size, limit) = (message.body.len(), self.shared.max_message);
        if size > limit {
            return Err(PublishError::TooLarge { size, limit });
        }
        if to == Destination::Withdrawn && !self.keeps_refused_copies() {
            return Err(PublishError::Unroutable("no conversations log (RELAY_CONVERSATIONS_LOG=off)".into()));
        }
        let session = self.current().ok_or(PublishError::Unavailable)?;
        // A blocked connection (resource alarm) would accept the publish and never confirm it.
        if session.connection.status().blocked() {
            return Err(PublishError::Unavailable);
        }
        let index = session.next.fetch_add(1, Ordering::Relaxed) % session.channels.len();
        let (exchange, routing_key, expiration) = self.route(to, &message);
        let (body, properties) = convert::into_amqp(message, expiration);
        let publisher = self.clone();
        let publish = async move {
            let sent = session.channels[index].send(exchange, routing_key, &body, properties).await?;
            // In lapin's frames now: not kept for the confirm, which can outlast the caller
            // (`SeenThrough`), for as long as a broker slow to confirm takes.
            drop(body);
            let answer = confirmed::confirmation(sent, |exchange| exchange == publisher.exchange_of(to)).await;
            session.refusals.note(index, to, &answer.result);
            if let Some(returned) = answer.misdelivered {
                let (rescues, meter) = (publisher.shared.rescues.clone(), publisher.shared.metrics.clone());
                let records = publisher.shared.topology.conversations_exchange.clone();
                misdelivered::dead_letter(&rescues, publisher, meter, *returned, &records);
            }
            answer.result
        };
        let result = SeenThrough::new(publish, to, self.shared.metrics.clone()).await;
        if let Err(PublishError::Failed(_)) = &result {
            // The channel or the connection failed: the supervisor looks at once.
            self.shared.broken.notify_one();
        }
        result
    }

    fn keeps_refused_copies(&self) -> bool {
        self.shared.topology.conversations_log.is_some()
    }

    fn is_ready(&self) -> bool {
        self.current().is_some_and(|s| s.ready())
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }
}

async fn open_session(connector: &Connector, topology: &Topology) -> Result<Session, String> {
    let (connection, broker) = connector.connect("publisher").await?;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        let channel = connection.create_channel().await.map_err(|e| describe(&e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| describe(&e))?;
        channels.push(confirmed::SharedChannel::new(channel));
    }
    topology::declare(&connection, topology)
        .await
        .map_err(|e| format!("declaring the topology failed: {}", describe(&e)))?;
    Ok(Session { connection, broker, channels, next: AtomicUsize::new(0), refusals: Refusals::new(CHANNELS) })
}

/// How long opening a session that replaces a refused one may take.
const REPLACE_LIMIT: Duration = Duration::from_secs(10);

/// How long a replaced session is kept open for the publishes still waiting on it.
const RETIRE_LIMIT: Duration = Duration::from_secs(60);

/// A new session in place of `refused`, whose channels the broker keeps refusing (see
/// [`super::refusals`]): opened before `refused` is let go, so publishes never find none. `None`
/// when it could not be opened; `refused` then stays, and is looked at again after as long.
async fn replace_refused(
    connector: &Connector,
    shared: &Shared,
    refused: &Session,
    refused_for: Duration,
) -> Option<Arc<Session>> {
    refused.refusals.forget();
    let opened = match tokio::time::timeout(REPLACE_LIMIT, open_session(connector, &shared.topology)).await {
        Ok(opened) => opened,
        Err(_) => Err(format!("no answer within {}s", REPLACE_LIMIT.as_secs())),
    };
    match opened {
        Ok(fresh) => {
            let fresh = Arc::new(fresh);
            *shared.session.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
            shared.metrics.record(|| metrics::counter!(names::PUBLISHER_REOPENED).increment(1));
            tracing::warn!(
                broker = %fresh.broker,
                refused_s = refused_for.as_secs(),
                "the broker refused every publish to a queue on a channel for a while; publishing on a new connection's channels, which a queue whose limit was lifted takes again (while it stays full, this comes further apart, up to every 5 minutes)"
            );
            Some(fresh)
        }
        Err(error) => {
            tracing::warn!(%error, "the broker keeps refusing publishes, and new channels could not be opened; the next look tries again");
            None
        }
    }
}

/// Closes a replaced session once the publishes still using it have their answers (each holds
/// the session until then), after [`RETIRE_LIMIT`], or at shutdown, in a task of `retiring`.
fn retire(retiring: &TaskTracker, session: Arc<Session>, shutdown: &CancellationToken) {
    let shutdown = shutdown.clone();
    retiring.spawn(async move {
        let deadline = tokio::time::Instant::now() + RETIRE_LIMIT;
        // Nothing tells when the last publish lets go: looked at now and then, for a minute at most.
        while Arc::strong_count(&session) > 1 && tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = session.connection.close(200, "replaced".into()).await;
    });
}

/// Tells the watchers of readiness, only when it changed.
fn set_ready(shared: &Shared, ready: bool) {
    shared.ready.send_if_modified(|current| std::mem::replace(current, ready) != ready);
}

/// A session lost sooner than this after it opened counts as a failure to connect.
const STABLE: Duration = Duration::from_secs(10);

/// How long to wait before opening a new session, the last having lived `lived`: at once after a
/// session that lasted, else as after `losses` failures to connect, `losses` counting the
/// sessions lost soon after they opened, in a row. A session the broker kills at once, each time
/// (a publish refused for want of the write permission closes its channel), is otherwise rebuilt,
/// its topology declared again, as fast as webhooks come.
fn wait_after_loss(lived: Duration, losses: &mut u32) -> Option<Duration> {
    if lived >= STABLE {
        *losses = 0;
        return None;
    }
    *losses = losses.saturating_add(1);
    Some(RECONNECT.delay(*losses))
}

/// Keeps one healthy session published in `shared`, forever or until shutdown.
async fn supervise(connector: Connector, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    // Sessions lost in a row soon after they opened: counted apart from failures to connect, so
    // that an outage's failed attempts do not make the first reconnect after it wait.
    let mut quick_losses = 0u32;
    // An outage retries every few seconds for as long as it lasts: say so once, then now and then.
    let unreachable = LogLimit::default();
    // Kept across sessions: a queue that stays full refuses every new one.
    let mut pace = ReopenPace::new();
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = open_session(&connector, &shared.topology) => opened,
        };
        match opened {
            Ok(session) => {
                failures = 0;
                let mut opened_at = tokio::time::Instant::now();
                shared.failure.send_replace(None);
                let mut session = Arc::new(session);
                let mut events = session.connection.events_listener();
                *shared.session.write().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                shared.connected.send_replace(true);
                set_ready(&shared, session.ready());
                tracing::info!(broker = %session.broker, "broker connected; publishing enabled");
                // lapin reports the connection's failure, the broker's blocks and a channel the
                // broker closed with an error as events (below). The channels' status is read now
                // and then as well, so readiness turns false for any close, before a publish has
                // to find out.
                let mut health = tokio::time::interval(Duration::from_millis(250));
                // A tick held up (by a replacement being opened) is not made up for in a burst.
                health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut upkeep = tokio::time::interval(upkeep::INTERVAL);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            // Publishes already sent keep their confirms: closing waits for nothing
                            // in flight because the receiver has drained before this fires. Dead
                            // letters made of misdelivered returns are waited for, for a while.
                            shared.rescues.close();
                            if tokio::time::timeout(RESCUES_DRAIN, shared.rescues.wait()).await.is_err() {
                                tracing::error!(left = shared.rescues.len(), "messages misdelivered by their return were not all dead-lettered before shutdown");
                            }
                            let _ = session.connection.close(200, "shutting down".into()).await;
                            // Replaced sessions close at once now: the receiver has drained.
                            shared.retiring.close();
                            let _ = tokio::time::timeout(RESCUES_DRAIN, shared.retiring.wait()).await;
                            return;
                        }
                        _ = shared.broken.notified() => if !session.healthy() { break },
                        _ = health.tick() => {
                            if !session.healthy() { break }
                            if session.refusals.refused_for(pace.after()) {
                                // Given up at shutdown, which the next turn of the loop sees.
                                let fresh = tokio::select! {
                                    _ = shutdown.cancelled() => None,
                                    fresh = replace_refused(&connector, &shared, &session, pace.after()) => fresh,
                                };
                                if let Some(fresh) = fresh {
                                    pace.replaced();
                                    retire(&shared.retiring, std::mem::replace(&mut session, fresh), &shutdown);
                                    events = session.connection.events_listener();
                                    opened_at = tokio::time::Instant::now();
                                }
                            }
                            set_ready(&shared, session.ready());
                        }
                        _ = upkeep.tick() => {
                            let look = upkeep::look(&session.connection, &shared.topology, &shared.metrics);
                            if tokio::time::timeout(upkeep::LIMIT, look).await.is_err() {
                                tracing::warn!(limit_secs = upkeep::LIMIT.as_secs(), "the broker did not answer a look at the queues in time");
                            }
                        }
                        event = events.next() => match event {
                            Some(Event::ConnectionBlocked(reason)) => {
                                set_ready(&shared, false);
                                tracing::warn!(%reason, "broker blocked publishing");
                            }
                            Some(Event::ConnectionUnblocked) => {
                                set_ready(&shared, session.ready());
                                tracing::info!("broker unblocked publishing");
                            }
                            // lapin reports a channel the broker closed as an error of the
                            // connection too. One of the session's own leaves it unhealthy; the
                            // upkeep's (a passive declare of a missing queue) leaves it as it was.
                            Some(Event::Error(error)) => if !session.healthy() {
                                tracing::warn!(error = %describe(&error), "broker connection failed");
                                break
                            },
                            Some(_) => {}
                            None => break,
                        },
                    }
                }
                *shared.session.write().unwrap_or_else(|p| p.into_inner()) = None;
                shared.connected.send_replace(false);
                set_ready(&shared, false);
                let _ = session.connection.close(200, "reconnecting".into()).await;
                tracing::warn!(broker = %session.broker, "broker connection lost; publishes answer 503 until it is back");
                if let Some(delay) = wait_after_loss(opened_at.elapsed(), &mut quick_losses) {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            Err(error) => {
                shared.failure.send_replace(Some(error.clone()));
                failures = failures.saturating_add(1);
                let delay = RECONNECT.delay(failures);
                if let Some(unsaid) = unreachable.admit("unreachable") {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, failures, unsaid, "cannot reach the broker");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lost_at_once_waits_longer_each_time_and_one_that_lasted_not_at_all() {
        let mut losses = 0;
        for lost in 1..=12u32 {
            let wait = wait_after_loss(Duration::from_millis(20), &mut losses).expect("a wait");
            assert_eq!(losses, lost);
            let ceiling = RECONNECT.ceiling(lost);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{wait:?} after {lost}");
        }
        assert_eq!(RECONNECT.ceiling(12), RECONNECT.ceiling(u32::MAX), "by then at the cap");
        assert_eq!(wait_after_loss(STABLE, &mut losses), None);
        assert_eq!(losses, 0, "a session that lasted starts the count over");
    }
}
