//! raftvisor-echo: the tiny HTTP server of raftvisor's test and demo image
//! (`raftvisor-echo:local`). It listens on `0.0.0.0:$PORT` (default 8080):
//!
//! - `GET /health` → 200 `ok`, or 503 `unhealthy` once told so;
//! - `POST /unhealthy`, `POST /healthy` → toggle that answer;
//! - `POST /exit?code=N` → the process exits with code N (default 0);
//! - `GET /metrics` → Prometheus text: `echo_requests_total` (requests
//!   answered by the echo route) and `echo_healthy`, so a Prometheus that
//!   discovers the instances has something real to scrape;
//! - any other request → JSON `{hostname, path, method, instance, starts}`
//!   where `instance` is `$RAFTVISOR_INSTANCE` (null when unset) and
//!   `starts` counts the starts recorded in `$ECHO_STATE_DIR/starts` (null
//!   without a state directory): with a volume there, it shows what a
//!   container found of the ones before it.
//!
//! Knobs: `ECHO_CRASH_AFTER_MS=N` exits after N ms with `$ECHO_EXIT_CODE`
//! (default 1), a crash-looping workload; `ECHO_UNHEALTHY=1` starts
//! unhealthy. SIGTERM or SIGINT shut it down gracefully with code 0 (at most
//! one second of draining).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

/// Time an exit request leaves for its answer to be written.
const EXIT_FLUSH: Duration = Duration::from_millis(50);
/// Longest graceful drain after SIGTERM.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

struct Echo {
    healthy: AtomicBool,
    requests: AtomicU64,
    hostname: String,
    instance: Option<String>,
    starts: Option<u64>,
}

/// Counts this start in `dir/starts` and answers the new count; `None`
/// (and a line on stderr) when the directory cannot be written.
fn record_start(dir: &str) -> Option<u64> {
    let path = std::path::Path::new(dir).join("starts");
    let before: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let now = before + 1;
    match std::fs::write(&path, format!("{now}\n")) {
        Ok(()) => Some(now),
        Err(e) => {
            eprintln!(
                "raftvisor-echo: cannot record the start in {}: {e}",
                path.display()
            );
            None
        }
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).ok().as_deref().map(str::trim),
        Some("1" | "true" | "yes")
    )
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

async fn health(State(echo): State<Arc<Echo>>) -> impl IntoResponse {
    if echo.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    }
}

async fn set_healthy(State(echo): State<Arc<Echo>>) -> &'static str {
    echo.healthy.store(true, Ordering::SeqCst);
    "healthy\n"
}

async fn set_unhealthy(State(echo): State<Arc<Echo>>) -> &'static str {
    echo.healthy.store(false, Ordering::SeqCst);
    "unhealthy\n"
}

async fn exit(Query(query): Query<HashMap<String, String>>) -> impl IntoResponse {
    let code = match query.get("code").map(|c| c.trim().parse::<i32>()) {
        None => 0,
        Some(Ok(code)) => code,
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "code must be an integer\n".to_string(),
            )
        }
    };
    eprintln!("raftvisor-echo: exiting with code {code} on request");
    tokio::spawn(async move {
        tokio::time::sleep(EXIT_FLUSH).await;
        std::process::exit(code);
    });
    (StatusCode::OK, format!("exiting with code {code}\n"))
}

async fn metrics(State(echo): State<Arc<Echo>>) -> impl IntoResponse {
    let requests = echo.requests.load(Ordering::Relaxed);
    let healthy = u8::from(echo.healthy.load(Ordering::SeqCst));
    (
        [("content-type", "text/plain; version=0.0.4")],
        format!(
            "# HELP echo_requests_total Requests answered by the echo route.\n\
             # TYPE echo_requests_total counter\n\
             echo_requests_total {requests}\n\
             # HELP echo_healthy Whether /health answers 200.\n\
             # TYPE echo_healthy gauge\n\
             echo_healthy {healthy}\n"
        ),
    )
}

async fn echo(State(echo): State<Arc<Echo>>, method: Method, uri: Uri) -> impl IntoResponse {
    echo.requests.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "hostname": echo.hostname,
        "path": uri.path(),
        "method": method.as_str(),
        "instance": echo.instance,
        "starts": echo.starts,
    }))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("raftvisor-echo: cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("raftvisor-echo: shutting down");
    // Bound the drain: keep-alive clients must not hold the exit up.
    tokio::spawn(async {
        tokio::time::sleep(DRAIN_LIMIT).await;
        std::process::exit(0);
    });
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = env_number("PORT").unwrap_or(8080);
    let state = Arc::new(Echo {
        healthy: AtomicBool::new(!env_flag("ECHO_UNHEALTHY")),
        requests: AtomicU64::new(0),
        hostname: hostname(),
        instance: std::env::var("RAFTVISOR_INSTANCE").ok(),
        starts: std::env::var("ECHO_STATE_DIR")
            .ok()
            .and_then(|dir| record_start(&dir)),
    });
    if let Some(after) = env_number::<u64>("ECHO_CRASH_AFTER_MS") {
        let code: i32 = env_number("ECHO_EXIT_CODE").unwrap_or(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            eprintln!("raftvisor-echo: crashing with code {code} after {after} ms");
            std::process::exit(code);
        });
    }

    let app = Router::new()
        .route("/health", get(health))
        .route("/healthy", post(set_healthy))
        .route("/unhealthy", post(set_unhealthy))
        .route("/exit", post(exit))
        .route("/metrics", get(metrics))
        .fallback(echo)
        .with_state(state);

    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("raftvisor-echo: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    println!("raftvisor-echo: listening on {addr}");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("raftvisor-echo: {e}");
        std::process::exit(1);
    }
}
