//! The server's own cost over the measurement window (`--server-metrics ADDR`): its
//! Prometheus endpoint is read when the ramp-up ends and when the run ends, and the
//! report gets the server's CPU (share of one core) and resident memory, per player.
//!
//! Only a plain `GET /metrics` over HTTP/1.1 to the given address (the server's
//! `metrics_listen`, normally 127.0.0.1): no TLS, no redirects, a bounded read.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Longest a scrape may take.
const SCRAPE_BOUND: Duration = Duration::from_secs(3);
/// Largest `/metrics` body read.
const MAX_BODY: usize = 4 << 20;

/// The values read from one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Scrape {
    /// `zonehost_process_cpu_seconds`.
    pub(crate) cpu_seconds: f64,
    /// `zonehost_process_resident_memory_bytes`.
    pub(crate) rss_bytes: f64,
    /// `zonehost_sessions_active`, summed over its series.
    pub(crate) players: f64,
}

/// The server's cost over the window, in the report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerCost {
    /// Where it was read.
    pub metrics: String,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// CPU over the window, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory at the end of the window, bytes.
    pub rss_bytes: u64,
    /// Players online at the end of the window.
    pub players: u64,
    /// `cpu_percent / players`: percent of a core per player.
    pub cpu_percent_per_player: f64,
    /// `rss_bytes / players / 1024`.
    pub rss_kib_per_player: f64,
}

/// Parses the Prometheus text format for the three values (a sample line is
/// `name{labels} value [timestamp]`; comments and other metrics are skipped).
pub(crate) fn parse(text: &str) -> Option<Scrape> {
    let mut s = Scrape::default();
    let (mut cpu, mut rss) = (false, false);
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let value = match line.rfind('}') {
            Some(close) => line[close + 1..].split_whitespace().next(),
            None => line[name_end..].split_whitespace().next(),
        };
        let Some(v) = value.and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match name {
            "zonehost_process_cpu_seconds" => (s.cpu_seconds, cpu) = (v, true),
            "zonehost_process_resident_memory_bytes" => (s.rss_bytes, rss) = (v, true),
            "zonehost_sessions_active" => s.players += v,
            _ => {}
        }
    }
    (cpu && rss).then_some(s)
}

/// `GET /metrics` from `addr`; `None` on any failure (the report then says so).
pub(crate) async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        conn.take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&body);
        let (head, rest) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| parse(rest))?
    };
    tokio::time::timeout(SCRAPE_BOUND, fetch).await.ok()?
}

/// The cost between two scrapes taken `window` apart.
pub(crate) fn cost(
    metrics: SocketAddr,
    start: Scrape,
    end: Scrape,
    window: Duration,
) -> ServerCost {
    let secs = window.as_secs_f64().max(1e-9);
    let cpu_percent = (end.cpu_seconds - start.cpu_seconds).max(0.0) / secs * 100.0;
    let players = end.players.max(0.0);
    let per = |v: f64| if players > 0.0 { v / players } else { 0.0 };
    ServerCost {
        metrics: metrics.to_string(),
        window_s: secs,
        cpu_percent,
        rss_bytes: end.rss_bytes as u64,
        players: players as u64,
        cpu_percent_per_player: per(cpu_percent),
        rss_kib_per_player: per(end.rss_bytes / 1024.0),
    }
}

/// Scrapes at `window_start` and at `window_end`; an error names the scrape that failed.
pub(crate) async fn measure(
    metrics: SocketAddr,
    window_start: Instant,
    window_end: Instant,
) -> Result<ServerCost, String> {
    tokio::time::sleep_until(window_start).await;
    let first = scrape(metrics)
        .await
        .ok_or_else(|| format!("no process metrics at http://{metrics}/metrics"))?;
    let taken = Instant::now();
    tokio::time::sleep_until(window_end).await;
    let last = scrape(metrics)
        .await
        .ok_or_else(|| format!("no process metrics at http://{metrics}/metrics at the end"))?;
    Ok(cost(metrics, first, last, taken.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP zonehost_process_cpu_seconds CPU\n\
        # TYPE zonehost_process_cpu_seconds gauge\n\
        zonehost_process_cpu_seconds 12.5\n\
        zonehost_process_resident_memory_bytes 104857600\n\
        zonehost_sessions_active{worker=\"0\"} 300\n\
        zonehost_sessions_active{worker=\"1\"} 200 1700000000\n\
        zonehost_sessions_active_total 7\n";

    #[test]
    fn reads_the_three_values_and_sums_sessions() {
        let s = parse(TEXT).expect("parsed");
        assert_eq!(s.cpu_seconds, 12.5);
        assert_eq!(s.rss_bytes, 104_857_600.0);
        assert_eq!(s.players, 500.0);
        assert_eq!(
            parse("zonehost_sessions_active 3\n"),
            None,
            "no process metrics"
        );
    }

    #[test]
    fn cost_per_player_over_the_window() {
        let start = Scrape {
            cpu_seconds: 10.0,
            rss_bytes: 1.0,
            players: 0.0,
        };
        let end = Scrape {
            cpu_seconds: 25.0,
            rss_bytes: 500.0 * 1024.0 * 64.0,
            players: 500.0,
        };
        let addr: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let c = cost(addr, start, end, Duration::from_secs(20));
        assert!((c.cpu_percent - 75.0).abs() < 1e-9);
        assert!((c.cpu_percent_per_player - 0.15).abs() < 1e-9);
        assert!((c.rss_kib_per_player - 64.0).abs() < 1e-9);
        assert_eq!(c.players, 500);
    }

    #[tokio::test]
    async fn scrapes_a_served_page() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let body = TEXT;
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let s = scrape(addr).await.expect("scraped");
        assert_eq!(s.players, 500.0);
    }
}
