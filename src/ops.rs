//! The operations HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive) and `/readyz` (accepting players: not draining).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::telemetry::{self, Stats, BYTES_BUCKETS, SECONDS_BUCKETS};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are drained into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_millis(250);

/// Installs the process-wide Prometheus recorder once; later calls reuse it. Returns
/// `None` if another recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            telemetry::describe();
            telemetry::register_event_series();
            // Histogram samples accumulate, one by one, until drained into their buckets:
            // drain them often, scraped or not. Every input datagram records a few
            // samples, so the memory held is samples per second × this interval (at 5 s
            // it was 11 KiB per player at 30 inputs per second; heaptrack, 2026-12-07).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("zh-metrics-upkeep".into()).spawn(move || loop {
                std::thread::sleep(METRICS_UPKEEP);
                upkeep.run_upkeep();
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started; histogram memory grows until scraped");
            }
            Some(handle)
        })
        .clone()
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("binding the metrics listener {addr}: {source}")]
pub struct OpsError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds the endpoint and serves it for the life of the process. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    draining: watch::Receiver<bool>,
) -> Result<SocketAddr, OpsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| OpsError { addr, source })?;
    let handle = prometheus();
    if handle.is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will only show zonehost counters it owns");
    }
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (stats, draining, handle) = (stats.clone(), draining.clone(), handle.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let reply = respond(&req, &stats, *draining.borrow(), handle.as_ref());
                    async move { Ok::<_, Infallible>(reply) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok(local)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn respond(
    req: &Request<Incoming>,
    stats: &Stats,
    draining: bool,
    handle: Option<&PrometheusHandle>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            stats.publish(draining);
            let body = handle.map(PrometheusHandle::render).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            if let Ok(v) = "text/plain; version=0.0.4".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
