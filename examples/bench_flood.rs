//! The connection flood of bench/flood.sh, against a relay on loopback:
//!
//! `bench_flood <port> <relay_pid> <secret> <sockets> <seconds> <silent|trickle>`
//!
//! Holds `sockets` connections to the webhook port for `seconds` (each reopened when the relay
//! closes it), silent or sending its head one byte a second, while one signed webhook a
//! 200 ms goes through on a fresh connection. Prints one JSON line: the webhooks' statuses and
//! latencies, the most flood sockets connected at once, and the relay's RSS from /proc.
//! Loopback only; at most 20,000 sockets for 300 s.

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use polyai_relay::sender::{signed_post, SendScheme};
use secrecy::SecretString;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Default)]
struct Flood {
    open: AtomicI64,
    max_open: AtomicI64,
    opened: AtomicU64,
    connect_failures: AtomicU64,
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_default()
}

async fn hold(port: u16, trickle: bool, deadline: Instant, flood: Arc<Flood>) {
    let head = b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-slow: ";
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
        let mut sent = 0;
        let mut buffer = [0u8; 512];
        while Instant::now() < deadline {
            if trickle {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                sent += 1;
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
            }
            // The relay closing the socket ends the read; otherwise go round once a second.
            let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                break;
            }
        }
        flood.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, pid, secret, sockets, seconds, mode] = args.as_slice() else {
        anyhow::bail!("usage: bench_flood <port> <relay_pid> <secret> <sockets> <seconds> <silent|trickle>");
    };
    let (port, pid): (u16, u32) = (port.parse()?, pid.parse()?);
    let (sockets, seconds): (usize, u64) = (sockets.parse()?, seconds.parse()?);
    anyhow::ensure!(sockets <= 20_000 && seconds <= 300, "bounded: at most 20,000 sockets for 300 s");
    let trickle = mode == "trickle";
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let flood = Arc::new(Flood::default());
    let attackers: Vec<_> = (0..sockets).map(|_| tokio::spawn(hold(port, trickle, deadline, flood.clone()))).collect();
    // Let the flood build before the first webhook.
    tokio::time::sleep(Duration::from_secs(seconds.min(20) / 4)).await;

    let secret = SecretString::from(secret.as_str());
    // A fresh connection per webhook, as each delivery from PolyAI may be.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build()?;
    let url = format!("http://127.0.0.1:{port}/polyai-events");
    let mut webhooks = Vec::new();
    let mut peak_rss = 0;
    let mut number = 0;
    while Instant::now() + Duration::from_secs(1) < deadline {
        let body = serde_json::json!({"type": "conversation.completed",
            "data": {"conversation_id": format!("CAflood{number}"), "environment": "live"}})
        .to_string();
        let request = signed_post(&http, &url, &secret, SendScheme::Timestamped, &format!("flood-{number}"), body);
        webhooks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, started.elapsed().as_secs_f64() * 1000.0)
        }));
        number += 1;
        peak_rss = peak_rss.max(rss_kb(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut results = Vec::new();
    for webhook in webhooks {
        results.push(webhook.await?);
    }
    for attacker in attackers {
        attacker.await?;
    }
    let mut latencies: Vec<f64> = results.iter().filter(|(s, _)| *s == 204).map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let mut statuses = std::collections::BTreeMap::new();
    for (status, _) in &results {
        *statuses.entry(status.to_string()).or_insert(0u64) += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": mode, "sockets": sockets, "seconds": seconds,
            "max_open": flood.max_open.load(Ordering::Relaxed), "opened": flood.opened.load(Ordering::Relaxed),
            "connect_failures": flood.connect_failures.load(Ordering::Relaxed),
            "webhooks": results.len(), "answered_204": latencies.len(), "statuses": statuses,
            "latency_ms": {"p50": pick(0.5).map(|v| v.round()), "p99": pick(0.99).map(|v| v.round()),
                           "max": latencies.last().map(|v| v.round())},
            "rss_peak_kb": peak_rss.max(rss_kb(pid, "VmHWM:")), "rss_end_kb": rss_kb(pid, "VmRSS:"),
        })
    );
    Ok(())
}
