//! `spawn_app()`: the real relay (router, publisher, worker) on port 0, against real RabbitMQ
//! and a fake PolyAI.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use polyai_relay::{
    app::{self, Components},
    config::{
        ApiSettings, AudioSettings, BaseUrl, ConnectionLimits, ConversationApi, EventTypes, PlatformSettings,
        ReceiverProject, ReceiverSettings, ServerSettings, SpoolSettings, WorkerSettings,
    },
    queue,
    receiver::Readiness,
    signature::{sign, SecretSlot, SignatureScheme},
    spool,
    telemetry::Metrics,
    worker::{Settle, Step, Worker},
};
use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, DeadLetter, Record, TestQueue},
    broker::MESSAGE_WAIT,
    fake_polyai::{FakePolyai, ACCOUNT, ACCOUNT_B, API_KEY, API_KEY_B, PROJECT, PROJECT_B},
};

/// The relay's names of the fake's two projects, when a test runs the worker with both
/// ([`Options::two_projects`]): the first is the fake's `PROJECT`, the second its `PROJECT_B`.
pub const FIRST_PROJECT: &str = "acme-uk";
pub const SECOND_PROJECT: &str = "acme-us";

pub const SECRET: &str = "whsec_test_current_6c1e";
pub const PREVIOUS_SECRET: &str = "whsec_test_previous_93ab";

/// An HTTP client for a test to call the relay, the mock or the fake API with: built as the
/// relay builds its own, with the TLS provider installed.
pub fn http() -> reqwest::Client {
    polyai_relay::http_client::builder().build().expect("an HTTP client builds")
}

/// What a test changes from the defaults.
#[derive(Clone)]
pub struct Options {
    pub backend: Backend,
    pub receiver: bool,
    pub worker: bool,
    /// The worker is not started: the test drives it step by step with [`TestApp::process_next`]
    /// and [`TestApp::drain_worker`].
    pub drive_worker: bool,
    pub scheme: SignatureScheme,
    pub event_types: EventTypes,
    pub environments: Option<Vec<String>>,
    pub max_body: usize,
    pub ack_deadline: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub max_attempts: u32,
    pub api_concurrency: usize,
    pub api_rate: Option<f64>,
    pub api_timeout: Duration,
    pub auth_probe_interval: Duration,
    /// Overrides the broker URL (to point at nothing, or through a proxy).
    pub amqp_url: Option<String>,
    /// Points the worker at another API than the fake (the mock API, say).
    pub api_url: Option<String>,
    /// Which path fetches a conversation; `agents` uses `api_url` as the platform host too.
    pub conversation_api: ConversationApi,
    /// Recording downloads of the worker.
    pub audio: Option<AudioSettings>,
    /// Whether `spawn_app_with` waits for `/readyz` (not when the broker is meant to be unreachable).
    pub wait_ready: bool,
    /// The receiver's spool (`RELAY_SPOOL_DIR`, `RELAY_SPOOL_MAX`).
    pub spool: Option<SpoolSettings>,
    /// Connection limits of both listeners.
    pub limits: ConnectionLimits,
    /// Bytes of one API answer at most.
    pub api_max_response: usize,
    /// `RELAY_BROKER_MAX_MESSAGE` on RabbitMQ; `None`: the default.
    pub broker_max_message: Option<usize>,
    /// The receiver's projects (design §12); `None`: one project on `/polyai-events`, verified
    /// with [`SECRET`] and [`PREVIOUS_SECRET`].
    pub receiver_projects: Option<Vec<ReceiverProject>>,
    /// The worker serves the fake's two projects, as [`FIRST_PROJECT`] and [`SECOND_PROJECT`].
    pub two_projects: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Amqp,
            receiver: true,
            worker: true,
            drive_worker: false,
            scheme: SignatureScheme::Auto,
            event_types: EventTypes::Only(vec!["conversation.completed".into(), "handoff.created".into()]),
            environments: None,
            max_body: 1 << 20,
            ack_deadline: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_attempts: 8,
            api_concurrency: 4,
            api_rate: None,
            api_timeout: Duration::from_secs(5),
            auth_probe_interval: Duration::from_millis(200),
            amqp_url: None,
            api_url: None,
            conversation_api: ConversationApi::V3,
            audio: None,
            wait_ready: true,
            spool: None,
            limits: ConnectionLimits::default(),
            api_max_response: 16 << 20,
            broker_max_message: None,
            receiver_projects: None,
            two_projects: false,
        }
    }
}

pub struct TestApp {
    /// The webhook listener.
    pub address: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_address: SocketAddr,
    pub http: reqwest::Client,
    pub queue: TestQueue,
    pub polyai: FakePolyai,
    shutdown: CancellationToken,
    stopped: Option<JoinHandle<anyhow::Result<()>>>,
    readiness: Readiness,
    /// The worker the test drives, and the queue it takes events from.
    driven: Option<(Arc<Worker>, Arc<queue::Backend>)>,
    /// The relay's own queue: to read what the receiver enqueued, or publish raw events to it.
    backend: Arc<queue::Backend>,
    /// The relay's recorder: what `/metrics` renders, and what it records can be waited on.
    metrics: Metrics,
    /// What the receiver's spool holds, when it has one.
    spool: Option<watch::Receiver<spool::Level>>,
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    // `TEST_LOG=1 cargo test` shows the relay's logs (RUST_LOG picks the level).
    if std::env::var_os("TEST_LOG").is_some() {
        polyai_relay::telemetry::init_logs(polyai_relay::config::LogFormat::Pretty);
    }
    let queue = TestQueue::new(options.backend, options.event_types.clone()).await;
    let polyai = FakePolyai::start().await;
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let receiver = options.receiver.then(|| {
        let mut settings = ReceiverSettings::new(SecretString::from(SECRET));
        let project = &mut settings.projects[0];
        project.signature.secrets.push((SecretSlot::Previous, SecretString::from(PREVIOUS_SECRET)));
        project.forwarding.event_types = options.event_types.clone();
        project.forwarding.environments = options.environments.clone();
        if let Some(projects) = &options.receiver_projects {
            settings.projects = projects.clone();
        }
        for project in &mut settings.projects {
            project.signature.scheme = options.scheme;
        }
        ReceiverSettings {
            listen,
            ack_deadline: options.ack_deadline,
            max_body: options.max_body,
            request_timeout: options.request_timeout,
            max_in_flight: options.max_in_flight,
            ..settings
        }
    });
    let worker = (options.worker || options.drive_worker).then(|| {
        let api_url: BaseUrl = options.api_url.as_deref().unwrap_or(&polyai.base_url).parse().unwrap();
        let api = ApiSettings {
            timeout: options.api_timeout,
            conversation_api: options.conversation_api,
            platform: Some(PlatformSettings {
                url: api_url.clone(),
                api_key: SecretString::from(API_KEY),
                timeout: options.api_timeout,
            }),
            max_response: options.api_max_response,
            ..ApiSettings::new(api_url, SecretString::from(API_KEY), ACCOUNT, PROJECT)
        };
        let projects = match options.two_projects {
            false => vec![api.clone()],
            true => two_projects(&api),
        };
        WorkerSettings {
            projects,
            concurrency: options.api_concurrency,
            rate: options.api_rate,
            max_attempts: options.max_attempts,
            // Short delays keep retry tests quick; the mechanism (delay queues) is the production one.
            retry_base_delay: Duration::from_millis(50),
            retry_max_delay: Duration::from_millis(200),
            auth_probe_interval: options.auth_probe_interval,
            audio: options.audio.clone(),
            ..WorkerSettings::new(api)
        }
    });
    let (worker, driven_settings) = if options.drive_worker { (None, worker) } else { (worker, None) };
    let mut broker = queue.settings(options.event_types.clone(), options.amqp_url.clone());
    if let (Some(limit), Some(target)) = (options.broker_max_message, broker.amqp_url.as_mut()) {
        target.max_message = limit;
    }
    let components = Components {
        broker,
        receiver,
        worker,
        server: ServerSettings { admin_listen: listen, limits: options.limits.clone() },
        spool: options.spool.clone(),
    };
    let shutdown = CancellationToken::new();
    // A recorder of its own: this app's /metrics shows only what this app did.
    let metrics = Metrics::isolated();
    let running = app::start_with(components, metrics.clone(), shutdown.clone()).await.expect("relay starts");
    queue.written_by(&running.backend);
    let driven = driven_settings.map(|settings| {
        let publisher = running.backend.publisher.clone();
        let worker = Worker::new(&settings, publisher, metrics.clone(), shutdown.clone()).expect("worker builds");
        (Arc::new(worker), running.backend.clone())
    });
    let app = TestApp {
        address: running.local_addr,
        admin_address: running.admin_addr,
        http: http(),
        queue,
        polyai,
        shutdown,
        stopped: Some(running.stopped),
        readiness: running.readiness,
        driven,
        backend: running.backend.clone(),
        metrics,
        spool: running.spool.as_ref().map(spool::Spool::level),
    };
    if options.wait_ready {
        app.wait_until_ready().await;
    }
    app
}

/// The fake's two projects under the relay's names, with `api`'s other settings.
fn two_projects(api: &ApiSettings) -> Vec<ApiSettings> {
    let name = |name| polyai_relay::config::ProjectName::parse("test", name).unwrap();
    let second = ApiSettings {
        project: name(SECOND_PROJECT),
        api_key: SecretString::from(API_KEY_B),
        account_id: ACCOUNT_B.to_owned(),
        project_id: PROJECT_B.to_owned(),
        platform: api.platform.clone().map(|p| PlatformSettings { api_key: SecretString::from(API_KEY_B), ..p }),
        ..api.clone()
    };
    vec![ApiSettings { project: name(FIRST_PROJECT), ..api.clone() }, second]
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Posts a `conversation.completed` about `CA{id}`, signed, with event id `id`; the status, or
/// `None` when the relay did not answer.
pub async fn post_event(http: &reqwest::Client, url: &str, id: String) -> (String, Option<u16>) {
    let status = post_body(http, url, &id, completed(&format!("CA{id}"))).await;
    (id, status)
}

/// Posts `body` as event `id`, signed with [`SECRET`]; the status, if the relay answered.
pub async fn post_body(http: &reqwest::Client, url: &str, id: &str, body: String) -> Option<u16> {
    let secret = SecretString::from(SECRET);
    let response = signed_post(http, url, &secret, SendScheme::Timestamped, id, body).send().await;
    response.ok().map(|r| r.status().as_u16())
}

pub fn completed(conversation_id: &str) -> String {
    json!({"type": "conversation.completed", "data": {"conversation_id": conversation_id, "environment": "live"}})
        .to_string()
}

/// A handoff's event: it comes while the call goes on.
pub fn handoff(conversation_id: &str) -> String {
    json!({"type": "handoff.created", "data": {"conversation_id": conversation_id, "handoff_reason": "asked for a person"}})
        .to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Posts `body` signed the way the Webhooks reference says: `{timestamp}.{body}`.
    pub async fn post_signed(&self, body: &str) -> reqwest::Response {
        let ts = now().to_string();
        let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
        self.post(body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature)]).await
    }

    pub async fn post(&self, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(self.url("/polyai-events")).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request reaches the relay")
    }

    /// Waits until `/readyz` answers 200 (the broker connected and the topology declared).
    pub async fn wait_until_ready(&self) {
        self.wait_for_readiness(200).await;
    }

    /// Waits for the relay's readiness to turn to what `/readyz` answers with `status`, then
    /// checks that `/readyz` says so.
    pub async fn wait_for_readiness(&self, status: u16) {
        let ready = status == 200;
        tokio::time::timeout(Duration::from_secs(15), self.readiness.wait_until(ready))
            .await
            .unwrap_or_else(|_| panic!("never {}", if ready { "ready" } else { "unready" }));
        assert_eq!(self.admin_get("/readyz").await.status(), status);
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request reaches the relay")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_address, path)
    }

    /// GET on the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.admin_url(path)).send().await.expect("request reaches the admin listener")
    }

    /// The value of a series on this app's own `/metrics` on the admin listener. `series` is `name`
    /// or `name{label="value",…}`: the sum over every series of that name whose labels include the
    /// given ones (so a label added later, such as `project`, does not change what a test asks
    /// for), 0 when none does. Panics when no metric of that name is rendered at all: a misspelled
    /// name, or one never recorded, would otherwise read as 0 and pass a test asking for 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin_get("/metrics").await.text().await.expect("metrics are text");
        series_value(&text, series)
            .unwrap_or_else(|| panic!("no metric of `{series}` is rendered (misspelled, or never recorded):\n{text}"))
    }

    /// Waits until `series` reads `value` in what this relay has recorded (what `/metrics`
    /// renders), looking again after each recording: for what the relay records just after
    /// something a test can see (a record is visible on the queue a moment before the worker's
    /// confirm arrives and is counted), or records with nothing else to show for it.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        let reached = self.metrics.wait_until(|text| series_value(text, series) == Some(value));
        if tokio::time::timeout(MESSAGE_WAIT, reached).await.is_err() {
            panic!("{series} did not reach {value}: {:?}", series_value(&self.metrics.render(), series));
        }
    }

    /// Waits until the counter `series` is at least `value` (others may add to it meanwhile).
    pub async fn wait_for_metric_at_least(&self, series: &str, value: f64) {
        let reached = self.metrics.wait_until(|text| series_value(text, series).is_some_and(|v| v >= value));
        if tokio::time::timeout(MESSAGE_WAIT, reached).await.is_err() {
            panic!("{series} did not reach {value}: {:?}", series_value(&self.metrics.render(), series));
        }
    }

    /// Waits until the receiver's spool holds `events`, as its drainer and `/readyz` are told.
    pub async fn wait_for_spool(&self, events: u64) {
        let mut level = self.spool.clone().expect("spawned with a spool");
        let reached = tokio::time::timeout(MESSAGE_WAIT, level.wait_for(|level| level.events == events)).await.is_ok();
        assert!(reached, "the spool holds {}, never {events}", level.borrow().events);
    }

    /// Posts events (`{prefix}0`, `{prefix}1`, …) until one goes straight to the broker rather than
    /// to the spool; returns their conversation ids. With a spool, `/readyz` is 200 before the
    /// broker is connected: each post waits for the publisher to be ready, and one may still be
    /// spooled if its confirm is slower than the ack deadline allows.
    pub async fn post_until_straight(&self, prefix: &str) -> Vec<String> {
        let mut ready = self.backend.publisher.readiness();
        let mut posted = Vec::new();
        let straight = async {
            loop {
                ready.wait_for(|ready| *ready).await.expect("the publisher lives as long as the relay");
                let id = format!("{prefix}{}", posted.len());
                let response = self.post_signed(&completed(&id)).await;
                assert_eq!(response.status(), 204, "{id}");
                posted.push(id);
                if response.headers().get("x-relay-outcome").is_none() {
                    return;
                }
            }
        };
        if tokio::time::timeout(MESSAGE_WAIT, straight).await.is_err() {
            panic!("never straight to the broker: {posted:?}");
        }
        posted
    }

    /// The next enriched record for downstream consumers.
    pub async fn next_record(&self) -> Record {
        self.queue.next_record().await
    }

    /// The next dead letter.
    pub async fn next_dead_letter(&self) -> DeadLetter {
        self.queue.next_dead_letter().await
    }

    /// Takes the next `n` events as the queue hands them to a consumer, waiting for each, and
    /// processes and settles each with the driven worker; what each step did. For events just
    /// published: a look at the queue ([`Self::drain_worker`]) right after a confirm may still
    /// come back empty on RabbitMQ, a consumer is handed each as soon as it is there.
    pub async fn process_next(&self, n: usize) -> Vec<Settle> {
        let (worker, backend) = self.driven.as_ref().expect("spawned with drive_worker");
        // One at a time: the queue hands out no event before the one before it is settled.
        let mut consumer = backend.source.open(1).await.expect("the queue takes a consumer");
        let mut settled = Vec::new();
        for _ in 0..n {
            let next = tokio::time::timeout(MESSAGE_WAIT, consumer.next()).await;
            let delivery = next.unwrap_or_else(|_| panic!("{} of {n} events came", settled.len())).expect("consuming");
            settled.push(worker.settle(delivery).await);
        }
        settled
    }

    /// Runs the driven worker's step until the queue has nothing ready; what each step did.
    pub async fn drain_worker(&self) -> Vec<Settle> {
        let (worker, backend) = self.driven.as_ref().expect("spawned with drive_worker");
        let mut settled = Vec::new();
        loop {
            match worker.process_one(backend.source.as_ref()).await.expect("the queue answers") {
                Step::Processed(settle) => settled.push(settle),
                Step::Empty => return settled,
            }
        }
    }

    /// Takes the next raw event waiting for the worker (a relay spawned without one), unsettled.
    pub async fn take_raw_event(&self) -> Option<queue::Delivery> {
        get_retrying(self.backend.source.as_ref()).await
    }

    /// Takes every raw event waiting for the worker (a relay spawned without one), acking each.
    pub async fn take_raw_events(&self) -> Vec<queue::Message> {
        let mut events = Vec::new();
        while let Some(delivery) = get_retrying(self.backend.source.as_ref()).await {
            delivery.acker.ack().await.expect("ack");
            events.push(delivery.message);
        }
        events
    }

    /// The relay's own publisher: raw events published with it reach the worker as the
    /// receiver's do, on either backend (the embedded queue belongs to the relay's process).
    pub fn publisher(&self) -> Arc<dyn queue::Publisher> {
        self.backend.publisher.clone()
    }

    /// Publishes a raw `conversation.completed` about `conversation_id` straight to the worker's
    /// queue, as the receiver would for a webhook on `project`'s path (`None`: without the
    /// header, as before projects), with `extra` headers as the worker itself writes them. A
    /// driven test takes it with [`Self::process_next`]: under load a look at the queue just
    /// after the confirm has come back empty.
    pub async fn publish_event(&self, project: Option<&str>, conversation_id: &str, extra: &[(&str, String)]) {
        let mut message = queue::Message {
            body: completed(conversation_id).into(),
            message_id: format!("evt-{conversation_id}"),
            event_type: "conversation.completed".into(),
            timestamp: SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs(),
            headers: Default::default(),
        };
        if let Some(project) = project {
            message.headers.insert(queue::headers::PROJECT.to_owned(), project.to_owned());
        }
        message.headers.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), value.clone())));
        self.publisher().publish(queue::Destination::Events, message).await.expect("the queue takes the event");
    }

    /// Starts the shutdown a signal would.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the relay has stopped after [`Self::begin_shutdown`].
    pub async fn stopped(&mut self) {
        if let Some(stopped) = self.stopped.take() {
            stopped.await.expect("no panic").expect("clean stop");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A string header of an AMQP delivery.
pub fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    headers.inner().get(name).and_then(|value| match value {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    })
}

/// The value of `series` in Prometheus `text` (see [`TestApp::metric`]), 0 when no series of its
/// metric has its labels; `None` when its metric is not rendered at all. Read as 0, a misspelled
/// name would pass every check that expects nothing counted.
fn series_value(text: &str, series: &str) -> Option<f64> {
    let (name, wanted) = split_series(series);
    let rendered = text.lines().any(|line| {
        let line = line.strip_prefix("# TYPE ").unwrap_or(line);
        line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{']))
    });
    rendered.then(|| {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (line_name, labels) = split_series(series);
                (line_name == name && wanted.iter().all(|label| labels.contains(label)))
                    .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    })
}

/// `name{a="x",b="y"}` → (`name`, [`a="x"`, `b="y"`]). Label values here never hold commas.
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect()),
        None => (series, Vec::new()),
    }
}

/// One step's `get`, tried again when the broker does not answer in time: the first `get`, and
/// the first after a failure, opens a connection, which a loaded machine can be slow to grant. A
/// failed `get` takes nothing from the queue, so trying again is what the worker itself does.
pub async fn get_retrying(source: &dyn queue::Source) -> Option<queue::Delivery> {
    let mut tries = 0;
    loop {
        match source.get().await {
            Ok(delivery) => return delivery,
            Err(error) if tries < 3 => {
                tries += 1;
                eprintln!("get failed ({error}); trying again");
            }
            Err(error) => panic!("the queue does not answer: {error}"),
        }
    }
}
