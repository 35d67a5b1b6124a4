//! The real binary as a child process, with its logs captured.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::{watch, Notify},
};

use crate::poll::poll_until;

/// The `polyai-relay` binary cargo built for the running test: in the directory above the test
/// executable's `deps/` (`CARGO_BIN_EXE_polyai-relay` exists only when compiling the tests of the
/// binary's own package, not this library).
pub fn binary() -> &'static Path {
    static BINARY: LazyLock<PathBuf> = LazyLock::new(|| {
        let test = std::env::current_exe().expect("the test executable's path");
        let mut dir = test.parent().expect("the test executable's directory");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("the profile's directory");
        }
        let binary = dir.join(format!("polyai-relay{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "no relay binary at {} (tests of the root package build it)", binary.display());
        binary
    });
    &BINARY
}

/// A command with an environment cleared of the developer's own relay settings.
pub fn relay_command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

pub struct RelayProcess {
    pub child: Child,
    pub address: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_address: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Lines logged so far, sent as each one comes: waiting for a line needs no timer.
    logged: watch::Receiver<usize>,
    closed: Arc<Notify>,
}

impl RelayProcess {
    /// Starts `polyai-relay {args}` and waits for its "listening" log line.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(relay_command(args), env).await
    }

    /// Like [`Self::spawn`], for a command built otherwise (through a shell that sets limits, say).
    pub async fn spawn_command(mut command: Command, env: &[(&str, &str)]) -> Self {
        command
            .env("RELAY_LISTEN", "127.0.0.1:0")
            .env("RELAY_ADMIN_LISTEN", "127.0.0.1:0")
            .env("RELAY_LOG_FORMAT", "json");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Notify::new());
        let (line_logged, logged) = watch::channel(0);
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        let (sink, done) = (logs.clone(), closed.clone());
        tokio::spawn(async move {
            let mut address_tx = Some(address_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addresses) = listening_addresses(&line) {
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(addresses);
                    }
                }
                sink.lock().unwrap().push(line);
                line_logged.send_modify(|lines| *lines += 1);
            }
            done.notify_one();
        });
        let (address, admin_address) = tokio::time::timeout(Duration::from_secs(20), address_rx)
            .await
            .expect("the relay logs `listening` in time")
            .expect("the relay listens");
        Self { child, address, admin_address, logs, logged, closed }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_address, path)
    }

    /// Waits until `/readyz` answers 200: the broker is connected and the topology declared. Another
    /// process's readiness is only what its `/readyz` answers, so that is asked until then.
    pub async fn wait_ready(&self) {
        let http = crate::helpers::http();
        poll_until(Duration::from_secs(15), || async {
            match http.get(self.admin_url("/readyz")).send().await {
                Ok(answer) if answer.status() == 200 => Ok(()),
                _ => Err(format!("never ready:\n{}", self.logs())),
            }
        })
        .await
    }

    /// Waits until a line of the logs contains `text`, looking at each line as it comes; the logs
    /// so far. Fails after `limit`, or when the logs end without it.
    pub async fn wait_for_log(&self, text: &str, limit: Duration) -> String {
        let mut logged = self.logged.clone();
        let found = async {
            loop {
                // Marked seen before the look, so a line logged during it wakes the wait below.
                logged.borrow_and_update();
                let logs = self.logs();
                if logs.contains(text) {
                    return logs;
                }
                if logged.changed().await.is_err() {
                    panic!("the logs ended without `{text}`:\n{}", self.logs());
                }
            }
        };
        tokio::time::timeout(limit, found).await.unwrap_or_else(|_| panic!("no `{text}` in:\n{}", self.logs()))
    }

    /// Sends SIGTERM, as a container runtime would.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit (failing after `limit`) and for stderr to close; returns the exit code.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<i32> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running {limit:?} after the signal"))
            .expect("wait works");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.closed.notified()).await;
        status.code()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// The webhook and admin addresses of a "listening" line, in the JSON or the pretty format.
fn listening_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        if value["message"] != "listening" {
            return None;
        }
        let address = |field: &str| value[field].as_str().and_then(|a| a.parse().ok());
        // Commands without an admin listener (mock-api) log only their one address.
        let webhooks = address("local_addr")?;
        return Some((webhooks, address("admin_addr").unwrap_or(webhooks)));
    }
    let line = without_colours(line);
    if !line.contains(" listening ") {
        return None;
    }
    let address =
        |field: &str| line.split_whitespace().find_map(|word| word.strip_prefix(field)).and_then(|a| a.parse().ok());
    address("local_addr=").zip(address("admin_addr="))
}

/// A pretty log line without its ANSI colour codes (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// An environment as the process helpers take it.
pub fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Runs a command that should fail at start-up; returns its exit code and stderr.
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, _, stderr) = run_to_exit_with_stdout(args, env).await;
    (code, stderr)
}

/// Runs a command to its end; returns its exit code, stdout and stderr.
pub async fn run_to_exit_with_stdout(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = relay_command(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("exits in time")
        .expect("binary runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}
