//! The connection flood of bench/flood.sh, against a relay on loopback:
//!
//! `bench_flood <port> <relay_pid> <secret> <sockets> <seconds> <mode> [head_bytes]`: the flood
//! `bench_flood <port> <relay_pid> <secret> 0 <seconds> webhooks`: the deliveries through it
//!
//! The flood holds `sockets` connections to the webhook port for `seconds`, each reopened as
//! soon as the relay closes it. The deliveries, from a process of their own as PolyAI's would
//! be (not starved by the flood's), are one signed webhook every 200 ms on a fresh connection,
//! from a quarter of the time in. Modes, what each flood socket does:
//!
//! - `silent`: connects and sends nothing;
//! - `trickle`: sends a request head one byte a second (slowloris);
//! - `idle`: sends one complete request (answered 405), then holds the keep-alive connection;
//! - `oversized`: sends a 256 KiB head that never ends, reads the answer (431), reconnects;
//! - `full-head`: sends `head_bytes` of a head at once (just under the relay's header cap: the
//!   most one connection can make it buffer), then one more byte a second.
//!
//! Each prints one JSON line: the flood, the most sockets connected at once, how many were
//! opened, and the relay's RSS from /proc (before the flood, its peak, at the end); the
//! deliveries, their statuses and latencies. Loopback only; at most 20,000 sockets for 300 s.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Silent,
    Trickle,
    Idle,
    Oversized,
    FullHead(usize),
}

impl Mode {
    fn parse(name: &str, head_bytes: usize) -> anyhow::Result<Self> {
        Ok(match name {
            "silent" => Self::Silent,
            "trickle" => Self::Trickle,
            "idle" => Self::Idle,
            "oversized" => Self::Oversized,
            "full-head" => Self::FullHead(head_bytes),
            other => anyhow::bail!("unknown mode {other}: silent, trickle, idle, oversized or full-head"),
        })
    }

    /// What a flood socket sends as soon as it is connected.
    fn opening(self) -> Vec<u8> {
        let head = b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-slow: ".to_vec();
        let filled = |bytes: usize| {
            let mut head = head.clone();
            head.resize(bytes.max(head.len()), b'a');
            head
        };
        match self {
            Self::Silent | Self::Trickle => Vec::new(),
            Self::Idle => b"GET /polyai-events HTTP/1.1\r\nhost: relay\r\n\r\n".to_vec(),
            Self::Oversized => filled(256 << 10),
            Self::FullHead(bytes) => filled(bytes),
        }
    }

    /// Whether a flood socket sends one more head byte every second while it is held.
    fn trickles(self) -> bool {
        matches!(self, Self::Trickle | Self::FullHead(_))
    }
}

#[derive(Default)]
struct Flood {
    open: AtomicI64,
    max_open: AtomicI64,
    opened: AtomicU64,
    connect_failures: AtomicU64,
}

fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_default()
}

async fn hold(port: u16, mode: Mode, deadline: Instant, flood: Arc<Flood>) {
    let opening = mode.opening();
    let trickle_head = b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-slow: ";
    while Instant::now() < deadline {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(("127.0.0.1", port))).await
        else {
            flood.connect_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let open = flood.open.fetch_add(1, Ordering::Relaxed) + 1;
        flood.max_open.fetch_max(open, Ordering::Relaxed);
        flood.opened.fetch_add(1, Ordering::Relaxed);
        // The relay may answer and close before all of it is written (431): the read below sees that.
        let _ = stream.write_all(&opening).await;
        let mut sent = opening.len();
        let mut buffer = [0u8; 512];
        while Instant::now() < deadline {
            if mode.trickles() {
                let byte = if opening.is_empty() { trickle_head.get(sent).copied().unwrap_or(b'a') } else { b'a' };
                sent += 1;
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
            }
            // The relay closing the socket ends the read; an answer (405 to `idle`) is read and
            // the socket held; otherwise go round once a second.
            let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                break;
            }
        }
        flood.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a webhook got: its status, or why it got none.
type Outcome = Result<u16, String>;

/// The innermost cause of a failed request (reset, refused, timed out...).
fn cause(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else {
        source.to_string()
    }
}

/// Posts one signed webhook every 200 ms until `deadline`, each on a fresh connection as a
/// delivery from PolyAI may be; what each got and its latency in ms.
async fn webhooks(port: u16, secret: &str, deadline: Instant) -> anyhow::Result<Vec<(Outcome, f64)>> {
    let secret = SecretString::from(secret);
    let http =
        polyai_relay::http_client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build()?;
    let url = format!("http://127.0.0.1:{port}/polyai-events");
    let mut sent = Vec::new();
    let mut number = 0;
    while Instant::now() + Duration::from_secs(1) < deadline {
        let body = serde_json::json!({"type": "conversation.completed",
            "data": {"conversation_id": format!("CAflood{number}"), "environment": "live"}})
        .to_string();
        let request = signed_post(&http, &url, &secret, SendScheme::Timestamped, &format!("flood-{number}"), body);
        sent.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = request.send().await.map(|r| r.status().as_u16()).map_err(|e| cause(&e));
            (outcome, started.elapsed().as_secs_f64() * 1000.0)
        }));
        number += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut results = Vec::new();
    for webhook in sent {
        results.push(webhook.await?);
    }
    Ok(results)
}

/// The webhooks' summary: how many, what they got, latencies of the 204s.
fn summary(results: &[(Outcome, f64)]) -> serde_json::Value {
    let mut latencies: Vec<f64> = results.iter().filter(|(s, _)| *s == Ok(204)).map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let mut statuses = BTreeMap::new();
    for (outcome, _) in results {
        let key = match outcome {
            Ok(status) => status.to_string(),
            Err(cause) => cause.clone(),
        };
        *statuses.entry(key).or_insert(0u64) += 1;
    }
    serde_json::json!({
        "webhooks": results.len(), "answered_204": latencies.len(), "statuses": statuses,
        "latency_ms": {"p50": pick(0.5).map(|v| v.round()), "p99": pick(0.99).map(|v| v.round()),
                       "max": latencies.last().map(|v| v.round())},
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some([port, pid, secret, sockets, seconds, mode]), rest) =
        (args.get(..6).and_then(|a| <&[String; 6]>::try_from(a).ok()), args.get(6..).unwrap_or_default())
    else {
        anyhow::bail!(
            "usage: bench_flood <port> <relay_pid> <secret> <sockets> <seconds> <mode|webhooks> [head_bytes]"
        );
    };
    let (port, pid): (u16, u32) = (port.parse()?, pid.parse()?);
    let (sockets, seconds): (usize, u64) = (sockets.parse()?, seconds.parse()?);
    anyhow::ensure!(sockets <= 20_000 && seconds <= 300, "bounded: at most 20,000 sockets for 300 s");
    let head_bytes = rest.first().map(|b| b.parse()).transpose()?.unwrap_or(15 << 10);
    let deadline = Instant::now() + Duration::from_secs(seconds);

    if mode == "webhooks" {
        // Once the flood has built up.
        tokio::time::sleep(Duration::from_secs(seconds.min(20) / 4)).await;
        println!("{}", summary(&webhooks(port, secret, deadline).await?));
        return Ok(());
    }

    let mode_name = mode;
    let mode = Mode::parse(mode, head_bytes)?;
    let rss_start = memory_kb(pid, "VmRSS:");
    let flood = Arc::new(Flood::default());
    let attackers: Vec<_> = (0..sockets).map(|_| tokio::spawn(hold(port, mode, deadline, flood.clone()))).collect();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        peak_rss = peak_rss.max(memory_kb(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_end = memory_kb(pid, "VmRSS:");
    for attacker in attackers {
        attacker.await?;
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": mode_name, "sockets": sockets, "seconds": seconds, "head_bytes": head_bytes,
            "max_open": flood.max_open.load(Ordering::Relaxed), "opened": flood.opened.load(Ordering::Relaxed),
            "connect_failures": flood.connect_failures.load(Ordering::Relaxed),
            "rss_start_kb": rss_start, "rss_peak_kb": peak_rss.max(memory_kb(pid, "VmHWM:")), "rss_end_kb": rss_end,
        })
    );
    Ok(())
}
