//! A recording Docker-socket proxy per manager: each manager container
//! mounts its own Unix socket at `/var/run/docker.sock`, and the harness
//! forwards every byte to the real engine while reading the requests as
//! they pass. Every destructive call — `DELETE /containers/{id}`,
//! `POST /containers/{id}/stop|kill|restart` — is recorded with the
//! calling manager, when it was received (µs since the run started) and
//! what the target was just before the call (its name and raftvisor labels,
//! inspected through the real engine); container creations are recorded
//! too, so a destroyed container can be traced to the manager that made it.
//! The `leader-actions` checker judges this record against who led a
//! quorum at the time. The proxy never changes, delays (beyond the
//! inspection of a destructive call's target) or refuses a request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The real engine's socket.
pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// What a recorded call did to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Remove,
    Stop,
    Kill,
    Restart,
}

impl Action {
    /// Whether the call ends or replaces a running container.
    pub fn destructive(self) -> bool {
        !matches!(self, Action::Create)
    }
}

/// One recorded engine call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineCall {
    /// When the proxy received the request, µs since the run started.
    pub time_us: u64,
    pub manager: u64,
    pub action: Action,
    /// The id or name in the request's path (for a create: the name asked).
    pub target: String,
    /// The container's name as the engine knew it before the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `namespace/service#slot` from raftvisor's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The request line as sent (path and query).
    pub request: String,
}

/// What a request line asks of the engine, if it is a call the proxy
/// records: the action and the target (id or name).
pub fn classify(method: &str, path: &str) -> Option<(Action, String)> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    // Drop the API version prefix (`/v1.41`).
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("", |at| &rest[at..])
        }
        _ => path,
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["containers", "create"]) => {
            let name = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("name="))
                .unwrap_or("")
                .to_string();
            Some((Action::Create, name))
        }
        ("DELETE", ["containers", id]) => Some((Action::Remove, id.to_string())),
        ("POST", ["containers", id, verb]) => {
            let action = match *verb {
                "stop" => Action::Stop,
                "kill" => Action::Kill,
                "restart" => Action::Restart,
                _ => return None,
            };
            Some((action, id.to_string()))
        }
        _ => None,
    }
}

/// The record every proxy of a run appends to.
#[derive(Clone)]
pub struct EngineLog {
    started: Instant,
    calls: Arc<Mutex<Vec<EngineCall>>>,
}

impl EngineLog {
    /// A log whose times count from `started` (the history's clock).
    pub fn new(started: Instant) -> EngineLog {
        EngineLog {
            started,
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn push(&self, call: EngineCall) {
        self.calls.lock().expect("engine log").push(call);
    }

    /// Every call so far, in the order received.
    pub fn calls(&self) -> Vec<EngineCall> {
        let mut calls = self.calls.lock().expect("engine log").clone();
        calls.sort_by_key(|c| c.time_us);
        calls
    }
}

/// The proxy of one manager: listens at `socket` until dropped.
pub struct EngineProxy {
    pub socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl EngineProxy {
    /// Listens at `socket` (replacing a stale file) for manager `manager`.
    pub fn start(
        socket: &Path,
        manager: u64,
        log: EngineLog,
        docker: Docker,
    ) -> anyhow::Result<EngineProxy> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| anyhow::anyhow!("cannot listen at {}: {e}", socket.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
        }
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (log, docker) = (log.clone(), docker.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(client, manager, log, docker).await {
                        tracing::debug!(manager, error = %e, "engine proxy connection ended");
                    }
                });
            }
        });
        Ok(EngineProxy {
            socket: socket.to_path_buf(),
            task,
        })
    }
}

/// A request head as far as the proxy needs it.
struct Head {
    method: String,
    path: String,
    content_length: usize,
    /// Chunked body or a protocol upgrade: the rest of the connection is
    /// passed on unread.
    opaque: bool,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let method = request.next()?.to_string();
    let path = request.next()?.to_string();
    let mut content_length = 0;
    let mut opaque = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => content_length = value.parse().ok()?,
            "transfer-encoding" if value.to_ascii_lowercase().contains("chunked") => opaque = true,
            "upgrade" => opaque = true,
            _ => {}
        }
    }
    Some(Head {
        method,
        path,
        content_length,
        opaque,
    })
}

async fn serve(
    mut client: UnixStream,
    manager: u64,
    log: EngineLog,
    docker: Docker,
) -> std::io::Result<()> {
    let engine = UnixStream::connect(ENGINE_SOCKET).await?;
    let (mut engine_read, mut engine_write) = engine.into_split();
    let (mut client_read, mut client_write) = client.split();
    let answers = tokio::io::copy(&mut engine_read, &mut client_write);
    let requests = async {
        let mut buffer: Vec<u8> = Vec::with_capacity(8192);
        let mut chunk = vec![0u8; 16384];
        loop {
            // Read until a whole head is buffered.
            let end = loop {
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let n = client_read.read(&mut chunk).await?;
                if n == 0 {
                    engine_write.shutdown().await?;
                    return Ok::<(), std::io::Error>(());
                }
                buffer.extend_from_slice(&chunk[..n]);
            };
            let Some(head) = parse_head(&buffer[..end]) else {
                // Not HTTP as expected: pass everything on unread.
                engine_write.write_all(&buffer).await?;
                tokio::io::copy(&mut client_read, &mut engine_write).await?;
                return Ok(());
            };
            if let Some((action, target)) = classify(&head.method, &head.path) {
                record(&log, &docker, manager, action, target, &head.path).await;
            }
            engine_write.write_all(&buffer[..end]).await?;
            buffer.drain(..end);
            if head.opaque {
                engine_write.write_all(&buffer).await?;
                tokio::io::copy(&mut client_read, &mut engine_write).await?;
                return Ok(());
            }
            let mut remaining = head.content_length;
            let buffered = remaining.min(buffer.len());
            engine_write.write_all(&buffer[..buffered]).await?;
            buffer.drain(..buffered);
            remaining -= buffered;
            while remaining > 0 {
                let n = client_read.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                let take = n.min(remaining);
                engine_write.write_all(&chunk[..take]).await?;
                buffer.extend_from_slice(&chunk[take..n]);
                remaining -= take;
            }
        }
    };
    // The connection ends when the engine closes it, or when the client
    // has stopped sending and the engine has answered.
    tokio::pin!(answers);
    tokio::pin!(requests);
    tokio::select! {
        result = &mut answers => result.map(|_| ()),
        result = &mut requests => {
            result?;
            answers.await.map(|_| ())
        }
    }
}

async fn record(
    log: &EngineLog,
    docker: &Docker,
    manager: u64,
    action: Action,
    target: String,
    request: &str,
) {
    let time_us = log.now_us();
    let mut call = EngineCall {
        time_us,
        manager,
        action,
        target: target.clone(),
        name: None,
        slot: None,
        generation: None,
        request: request.to_string(),
    };
    if action.destructive() {
        // What the target was, before the call changes it.
        if let Ok(Ok(inspect)) = tokio::time::timeout(
            Duration::from_secs(1),
            docker.inspect_container(&target, None),
        )
        .await
        {
            call.name = inspect.name.map(|n| n.trim_start_matches('/').to_string());
            let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
            let label = |name: &str| labels.get(&format!("raftvisor.{name}")).cloned();
            if let (Some(ns), Some(service), Some(slot)) =
                (label("namespace"), label("service"), label("slot"))
            {
                call.slot = Some(format!("{ns}/{service}#{slot}"));
            }
            call.generation = label("generation").and_then(|g| g.parse().ok());
        }
    } else {
        call.name = Some(target);
    }
    log.push(call);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destructive_calls_are_recognised_with_or_without_a_version() {
        assert_eq!(
            classify("DELETE", "/v1.41/containers/abc?force=true&v=true"),
            Some((Action::Remove, "abc".into()))
        );
        assert_eq!(
            classify("POST", "/containers/rv-x-0-1/stop?t=10"),
            Some((Action::Stop, "rv-x-0-1".into()))
        );
        assert_eq!(
            classify("POST", "/v1.43/containers/abc/kill?signal=KILL"),
            Some((Action::Kill, "abc".into()))
        );
        assert_eq!(
            classify("POST", "/v1.43/containers/abc/restart"),
            Some((Action::Restart, "abc".into()))
        );
        assert_eq!(
            classify("POST", "/v1.41/containers/create?name=rv-c-jepsen-a-0-3"),
            Some((Action::Create, "rv-c-jepsen-a-0-3".into()))
        );
        assert_eq!(classify("POST", "/v1.41/containers/abc/start"), None);
        assert_eq!(classify("GET", "/v1.41/containers/json?all=true"), None);
        assert_eq!(classify("DELETE", "/v1.41/images/abc"), None);
    }

    #[test]
    fn request_heads_give_their_body_length_and_upgrades() {
        let head = parse_head(b"POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: d\r\nContent-Length: 42\r\n\r\n").unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.content_length, 42);
        assert!(!head.opaque);
        let head = parse_head(
            b"POST /v1.41/containers/x/attach HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        assert!(head.opaque);
    }
}
