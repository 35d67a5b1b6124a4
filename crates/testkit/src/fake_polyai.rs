//! A fake of PolyAI's Conversations API v3 on port 0, scripted per test. It knows two projects,
//! each under its own account with its own key: a request with another key is refused.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const API_KEY: &str = "test-api-key-5f1d0c9e";
pub const ACCOUNT: &str = "ws-test";
pub const PROJECT: &str = "PROJECT-TEST";
/// The second project the fake knows, under an account of its own.
pub const API_KEY_B: &str = "test-api-key-b-2a7c41d8";
pub const ACCOUNT_B: &str = "ws-test-b";
pub const PROJECT_B: &str = "PROJECT-TEST-B";

/// The key each known project takes; any other project's paths take [`API_KEY`].
fn key_for(account: &str, project: &str) -> &'static str {
    match (account, project) {
        (ACCOUNT_B, PROJECT_B) => API_KEY_B,
        _ => API_KEY,
    }
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with the fixture conversation, its id set to the one asked for.
    Conversation,
    /// 200 with this JSON.
    Json(Value),
    /// This status with an error body in the current envelope.
    Status(u16),
    /// 429 with this `Retry-After` value.
    RateLimited(&'static str),
    /// Waits this long, then answers with the fixture conversation.
    Slow(Duration),
    /// 200 with this body as HTML: a proxy's page where the API should have answered.
    Html(&'static str),
    /// This status with a plain-text body listing the request's headers, as a gateway's
    /// debugging page might.
    EchoHeaders(u16),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The query string, as sent.
    pub query: String,
    pub api_key: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Script {
    /// Replies to by-id requests, in order; when empty, `fallback`.
    queue: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    /// Replies to list requests, in order; when empty, `probe`.
    list_queue: Mutex<VecDeque<Reply>>,
    /// Reply to list requests (the worker's key probe).
    probe: Mutex<Option<Reply>>,
    /// Added to every list answer (to make two readers list at the same time).
    list_delay: Mutex<Duration>,
    /// Projects whose key is revoked: every request on their paths is refused.
    revoked: Mutex<HashSet<String>>,
    /// By-id replies for one project (by project id), before any other script.
    project_fallback: Mutex<HashMap<String, Reply>>,
    /// Replies to one conversation's requests, in order, before any other script.
    conversation_queue: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Replies to recording requests, in order; when empty, 404 (the fake keeps no recordings).
    recording_queue: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    arrived: Notify,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
pub struct FakePolyai {
    pub base_url: String,
    script: Arc<Script>,
}

impl FakePolyai {
    pub async fn start() -> Self {
        let script = Arc::new(Script::default());
        let app = Router::new()
            .route("/v3/{account}/{project}/conversations", get(list))
            .route("/v3/{account}/{project}/conversations/{id}", get(by_id))
            .route("/v3/{account}/{project}/conversations/{id}/audio", get(recording))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, script }
    }

    /// Answers the next by-id requests with `replies`, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.queue.lock().unwrap().extend(replies);
    }

    /// Answers by-id requests with `reply` once the script has run out.
    pub fn always(&self, reply: Reply) {
        *self.script.fallback.lock().unwrap() = Some(reply);
    }

    /// Answers every by-id request of project `project_id` with `reply`.
    pub fn always_for_project(&self, project_id: &str, reply: Reply) {
        self.script.project_fallback.lock().unwrap().insert(project_id.to_owned(), reply);
    }

    /// Answers the next requests for `conversation_id` with `replies`, in order.
    pub fn script_conversation(&self, conversation_id: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut queues = self.script.conversation_queue.lock().unwrap();
        queues.entry(conversation_id.to_owned()).or_default().extend(replies);
    }

    /// Refuses project `project_id`'s key (401) on its by-id and list paths, probes included.
    pub fn revoke(&self, project_id: &str) {
        self.script.revoked.lock().unwrap().insert(project_id.to_owned());
    }

    /// Accepts project `project_id`'s key again.
    pub fn restore(&self, project_id: &str) {
        self.script.revoked.lock().unwrap().remove(project_id);
    }

    /// Answers the next list requests with `replies`, in order (pages of a backfill).
    pub fn script_list(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.list_queue.lock().unwrap().extend(replies);
    }

    /// Holds every list answer back by `delay`.
    pub fn delay_lists(&self, delay: Duration) {
        *self.script.list_delay.lock().unwrap() = delay;
    }

    /// List requests so far.
    pub fn list_requests(&self) -> Vec<Seen> {
        self.requests().into_iter().filter(|s| s.path.ends_with("/conversations")).collect()
    }

    /// Answers list requests (the key probe) with `reply`.
    pub fn probe_answers(&self, reply: Reply) {
        *self.script.probe.lock().unwrap() = Some(reply);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    pub fn by_id_requests(&self) -> Vec<Seen> {
        let by_id = |s: &Seen| !s.path.ends_with("/conversations") && !s.path.ends_with("/audio");
        self.requests().into_iter().filter(by_id).collect()
    }

    /// Answers the next recording requests with `replies`, in order.
    pub fn script_recordings(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.recording_queue.lock().unwrap().extend(replies);
    }

    /// Recording requests so far.
    pub fn recording_requests(&self) -> Vec<Seen> {
        self.requests().into_iter().filter(|s| s.path.ends_with("/audio")).collect()
    }

    /// By-id requests on one project's paths.
    pub fn by_id_requests_of(&self, project_id: &str) -> Vec<Seen> {
        let prefix = format!("/{project_id}/conversations/");
        self.by_id_requests().into_iter().filter(|s| s.path.contains(&prefix)).collect()
    }

    /// List requests (key probes among them) on one project's paths.
    pub fn list_requests_of(&self, project_id: &str) -> Vec<Seen> {
        let suffix = format!("/{project_id}/conversations");
        self.list_requests().into_iter().filter(|s| s.path.ends_with(&suffix)).collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.script.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for_requests(&self, n: usize) {
        self.wait_until(Duration::from_secs(30), || self.requests().len() >= n)
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} API requests arrived: {:?}", self.requests()));
    }

    /// Waits until at least `n` list requests arrived (key probes and reconciliation passes).
    pub async fn wait_for_list_requests(&self, n: usize, limit: Duration) {
        self.wait_until(limit, || self.list_requests().len() >= n)
            .await
            .unwrap_or_else(|_| panic!("only {} list requests", self.list_requests().len()));
    }

    /// Looks at `reached` each time a request arrives, until it holds or `limit` has passed.
    async fn wait_until(&self, limit: Duration, reached: impl Fn() -> bool) -> Result<(), tokio::time::error::Elapsed> {
        let wait = async {
            loop {
                let notified = self.script.arrived.notified();
                if reached() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await
    }
}

fn record(script: &Script, path: String, query: Option<String>, headers: &HeaderMap) {
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    script.seen.lock().unwrap().push(Seen { path, query: query.unwrap_or_default(), api_key, at: Instant::now() });
    script.arrived.notify_waiters();
}

async fn list(
    State(script): State<Arc<Script>>,
    Path((account, project)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    record(&script, format!("/v3/{account}/{project}/conversations"), query, &headers);
    if refused(&script, &account, &project, &headers, false) {
        return error(401, "AUTH_USER_UNAUTHORISED");
    }
    let delay = *script.list_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let scripted = script.list_queue.lock().unwrap().pop_front();
    let reply = scripted.or_else(|| script.probe.lock().unwrap().clone());
    match reply {
        Some(reply) => answer(reply, "CAprobe", &headers).await,
        None => Json(json!({"conversations": [], "cursor": null})).into_response(),
    }
}

async fn by_id(
    State(script): State<Arc<Script>>,
    Path((account, project, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&script, format!("/v3/{account}/{project}/conversations/{id}"), None, &headers);
    if refused(&script, &account, &project, &headers, true) {
        return error(401, "AUTH_USER_UNAUTHORISED");
    }
    let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    script.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let for_conversation = script.conversation_queue.lock().unwrap().get_mut(&id).and_then(VecDeque::pop_front);
    let for_project = || script.project_fallback.lock().unwrap().get(&project).cloned();
    let scripted = || script.queue.lock().unwrap().pop_front();
    let reply = for_conversation
        .or_else(for_project)
        .or_else(scripted)
        .or_else(|| script.fallback.lock().unwrap().clone())
        .unwrap_or(Reply::Conversation);
    let response = answer(reply, &id, &headers).await;
    script.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// A conversation's recording: as scripted, or, since the fake keeps none, as PolyAI answers
/// for a call without one.
async fn recording(
    State(script): State<Arc<Script>>,
    Path((account, project, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&script, format!("/v3/{account}/{project}/conversations/{id}/audio"), None, &headers);
    if refused(&script, &account, &project, &headers, true) {
        return error(401, "AUTH_USER_UNAUTHORISED");
    }
    let scripted = script.recording_queue.lock().unwrap().pop_front();
    match scripted {
        Some(reply) => answer(reply, &id, &headers).await,
        None => error(404, "CONVERSATIONS_RECORDING_NOT_FOUND"),
    }
}

/// Whether the key is refused: the project's key is revoked, or the request carries another key
/// than the project's. Lists of a project the fake does not know take any key (`check` tests
/// point other ids at it).
fn refused(script: &Script, account: &str, project: &str, headers: &HeaderMap, by_id: bool) -> bool {
    if script.revoked.lock().unwrap().contains(project) {
        return true;
    }
    let known = key_for(account, project) != API_KEY || (account, project) == (ACCOUNT, PROJECT);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    (by_id || known) && key != Some(key_for(account, project))
}

pub fn conversation(id: &str) -> Value {
    let mut value: Value = serde_json::from_str(include_str!("../../../tests/fixtures/conversation-v3.json")).unwrap();
    value["id"] = json!(id);
    value
}

async fn answer(reply: Reply, id: &str, headers: &HeaderMap) -> Response {
    match reply {
        Reply::Conversation => Json(conversation(id)).into_response(),
        Reply::Json(value) => Json(value).into_response(),
        Reply::Status(code) => error(code, "CONVERSATIONS_NOT_FOUND"),
        Reply::RateLimited(after) => {
            let mut response = error(429, "RATE_LIMITED");
            response.headers_mut().insert("retry-after", after.parse().unwrap());
            response
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Json(conversation(id)).into_response()
        }
        Reply::Html(body) => axum::response::Html(body).into_response(),
        Reply::EchoHeaders(code) => {
            let echoed: Vec<String> =
                headers.iter().map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?"))).collect();
            (StatusCode::from_u16(code).unwrap(), echoed.join("\n")).into_response()
        }
    }
}

fn error(code: u16, error_code: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    let body = json!({
        "success": false, "error": status.canonical_reason(), "error_id": "550e8400-e29b-41d4-a716-446655440000",
        "error_code": error_code, "error_message": status.canonical_reason(), "data": null
    });
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert("x-polyai-correlation-id", "550e8400-e29b-41d4-a716-446655440000".parse().unwrap());
    response
}
