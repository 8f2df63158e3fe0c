//! Health probes run by the leader: HTTP (`GET path`, 2xx = healthy) or
//! TCP (connect) against each running instance's published port, every
//! `interval_ms` with `timeout_ms`. Results stay in the leader's memory; an
//! instance becomes healthy on its first passing probe and unhealthy after
//! `retries` consecutive failures, which the service controller turns into
//! a restart. Nothing is written through Raft from here.
//!
//! A probe reaches the instance's own address and port and nothing else:
//! the path must be absolute (`/…`, so `@host:port/` cannot move the
//! request elsewhere), redirects are not followed (a 3xx fails), and the
//! whole probe is bounded by `min(timeout_ms, interval_ms)`. Each probe
//! runs as its own task, so a slow instance delays no other probe.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::replica::Replica;
use crate::state::{HealthCheck, InstanceState, ProbeKind};

/// What the prober learned, keyed by `(instance id, container id)` so a
/// restarted container starts with a clean record.
#[derive(Debug, Default)]
pub struct HealthBook {
    passing: HashSet<(String, String)>,
    failing: HashSet<(String, String)>,
    failures: HashMap<(String, String), u32>,
    next_probe: HashMap<(String, String), Instant>,
}

impl HealthBook {
    /// Whether the container has passed a probe since it last failed.
    pub fn is_healthy(&self, instance: &str, container: &str) -> bool {
        self.passing
            .contains(&(instance.to_string(), container.to_string()))
    }

    /// Whether the container failed `retries` probes in a row.
    pub fn is_unhealthy(&self, instance: &str, container: &str) -> bool {
        self.failing
            .contains(&(instance.to_string(), container.to_string()))
    }

    /// Records a probe result; true when the verdict changed.
    fn record(&mut self, key: (String, String), ok: bool, retries: u32) -> bool {
        if ok {
            self.failures.remove(&key);
            let changed = self.failing.remove(&key) | !self.passing.contains(&key);
            self.passing.insert(key);
            changed
        } else {
            let failures = self.failures.entry(key.clone()).or_default();
            *failures += 1;
            if *failures >= retries.max(1) && !self.failing.contains(&key) {
                self.passing.remove(&key);
                self.failing.insert(key);
                true
            } else {
                false
            }
        }
    }

    /// Starts a fresh record for a container that is being restarted.
    pub fn reset(&mut self, instance: &str, container: &str) {
        let key = (instance.to_string(), container.to_string());
        self.passing.remove(&key);
        self.failing.remove(&key);
        self.failures.remove(&key);
        self.next_probe.remove(&key);
    }

    fn forget_except(&mut self, live: &HashSet<(String, String)>) {
        self.passing.retain(|k| live.contains(k));
        self.failing.retain(|k| live.contains(k));
        self.failures.retain(|k, _| live.contains(k));
        self.next_probe.retain(|k, _| live.contains(k));
    }
}

/// The URL of an HTTP probe of `path` on `address:port`, or why there is
/// none: the path must be absolute and the URL must point at exactly that
/// address and port (no user info, no other host).
pub fn probe_url(address: &str, port: u16, path: &str) -> Result<reqwest::Url, String> {
    crate::state::validate::health_path(path)?;
    let host = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    };
    let url = reqwest::Url::parse(&format!("http://{host}:{port}{path}"))
        .map_err(|e| format!("probe URL for path {path:?} is not valid: {e}"))?;
    let same_target = url.scheme() == "http"
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str() == Some(host.as_str())
        && url.port_or_known_default() == Some(port);
    if same_target {
        Ok(url)
    } else {
        Err(format!(
            "probe path {path:?} would leave the instance's address {host}:{port}"
        ))
    }
}

/// How long one probe of `check` may take: its timeout, never more than
/// its interval (and at least 1 ms).
pub fn probe_timeout(check: &HealthCheck) -> Duration {
    Duration::from_millis(check.timeout_ms.min(check.interval_ms).max(1))
}

/// The HTTP client of the probes: no redirects, no connection reuse
/// beyond a small pool.
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(2)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static HTTP client configuration")
}

/// Probes one endpoint, within [`probe_timeout`].
pub async fn probe(http: &reqwest::Client, check: &HealthCheck, address: &str, port: u16) -> bool {
    let timeout = probe_timeout(check);
    let attempt = async {
        match check.kind {
            ProbeKind::Tcp => tokio::net::TcpStream::connect((address, port))
                .await
                .is_ok(),
            ProbeKind::Http => {
                let url = match probe_url(address, port, &check.path) {
                    Ok(url) => url,
                    Err(reason) => {
                        tracing::debug!(%reason, "health probe refused");
                        return false;
                    }
                };
                match http.get(url).send().await {
                    // 2xx only: a redirect is neither followed nor trusted.
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

type ProbeKey = (String, String);

/// One due probe: the record it updates, the check, address and port.
pub type Target = (ProbeKey, HealthCheck, String, u16);

/// Starts probes, each as its own task, and records their verdicts.
#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
    book: Arc<Mutex<HealthBook>>,
    wake: Arc<Notify>,
    in_flight: Arc<Mutex<HashSet<ProbeKey>>>,
    token: CancellationToken,
}

impl Prober {
    pub fn new(book: Arc<Mutex<HealthBook>>, wake: Arc<Notify>, token: CancellationToken) -> Self {
        Prober {
            http: probe_client(),
            book,
            wake,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            token,
        }
    }

    /// Starts a probe of every target that is due at `now` and not still
    /// being probed, and returns at once: verdicts are recorded by the
    /// probes' own tasks, which wake the controller when one changes.
    pub fn dispatch(&self, targets: Vec<Target>, now: Instant) {
        let live: HashSet<ProbeKey> = targets.iter().map(|(k, ..)| k.clone()).collect();
        let due: Vec<Target> = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            book.forget_except(&live);
            let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .into_iter()
                .filter(|(key, check, ..)| {
                    if in_flight.contains(key) {
                        return false;
                    }
                    let next = book.next_probe.entry(key.clone()).or_insert(now);
                    if *next <= now {
                        *next = now + Duration::from_millis(check.interval_ms);
                        true
                    } else {
                        false
                    }
                })
                .collect()
        };
        for (key, check, address, port) in due {
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            let this = self.clone();
            tokio::spawn(async move {
                let ok = tokio::select! {
                    _ = this.token.cancelled() => None,
                    ok = probe(&this.http, &check, &address, port) => Some(ok),
                };
                this.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let Some(ok) = ok else { return };
                let changed = this.book.lock().unwrap_or_else(|e| e.into_inner()).record(
                    key.clone(),
                    ok,
                    check.retries,
                );
                if changed {
                    tracing::info!(instance = %key.0, healthy = ok, "health verdict changed");
                    this.wake.notify_one();
                }
            });
        }
    }
}

/// Probes every running instance with a health check until cancelled;
/// wakes `wake` whenever a verdict changes.
pub async fn run(
    replica: Arc<Replica>,
    book: Arc<Mutex<HealthBook>>,
    wake: Arc<Notify>,
    token: CancellationToken,
) {
    let prober = Prober::new(book, wake, token.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let targets: Vec<Target> = replica.sm.read(|s| {
            s.instances
                .values()
                .filter(|i| {
                    matches!(
                        i.state,
                        InstanceState::Running | InstanceState::Starting | InstanceState::Unhealthy
                    )
                })
                .filter_map(|i| {
                    let service = s.services.get(&(i.namespace.clone(), i.service.clone()))?;
                    let check = service.spec.health.clone()?;
                    let port = i.ports.iter().find(|p| p.name == check.port)?.host_port;
                    Some((
                        (i.id.clone(), i.container_id.clone()?),
                        check,
                        i.address.clone()?,
                        port,
                    ))
                })
                .collect()
        });
        prober.dispatch(targets, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_on_first_pass_unhealthy_after_retries() {
        let mut book = HealthBook::default();
        let key = ("i".to_string(), "c".to_string());
        assert!(!book.is_healthy("i", "c"));
        assert!(book.record(key.clone(), true, 3));
        assert!(book.is_healthy("i", "c"));
        assert!(!book.record(key.clone(), false, 3));
        assert!(!book.record(key.clone(), false, 3));
        assert!(
            book.is_healthy("i", "c"),
            "still healthy before the third failure"
        );
        assert!(book.record(key.clone(), false, 3));
        assert!(book.is_unhealthy("i", "c") && !book.is_healthy("i", "c"));
        assert!(book.record(key, true, 3));
        assert!(!book.is_unhealthy("i", "c"));
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listener on 127.0.0.1 that counts connections and answers each
    /// with `response` (none: holds the connection without answering).
    async fn server(response: Option<String>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    match response {
                        Some(text) => {
                            let _ = stream.write_all(text.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        (port, accepted)
    }

    fn ok_response() -> Option<String> {
        Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into())
    }

    fn check(path: &str, timeout_ms: u64, interval_ms: u64) -> HealthCheck {
        HealthCheck {
            kind: ProbeKind::Http,
            port: "http".into(),
            path: path.into(),
            interval_ms,
            timeout_ms,
            retries: 1,
        }
    }

    #[tokio::test]
    async fn a_probe_path_with_an_at_sign_never_reaches_another_listener() {
        let (elsewhere, reached) = server(ok_response()).await;
        let (instance, _) = server(ok_response()).await;
        let http = probe_client();
        for path in [
            format!("@127.0.0.1:{elsewhere}/"),
            format!("@127.0.0.1:{elsewhere}/health"),
            format!("http://127.0.0.1:{elsewhere}/"),
        ] {
            let healthy = probe(&http, &check(&path, 500, 1000), "127.0.0.1", instance).await;
            assert!(!healthy, "{path} is refused");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(reached.load(Ordering::SeqCst), 0, "no connection elsewhere");
        assert!(probe_url("127.0.0.1", 80, "/health").is_ok());
        assert!(probe_url("127.0.0.1", 80, "@10.0.0.1:80/").is_err());
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_fails_the_probe() {
        let (target, reached) = server(ok_response()).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let (instance, _) = server(Some(redirect)).await;
        let healthy = probe(
            &probe_client(),
            &check("/health", 500, 1000),
            "127.0.0.1",
            instance,
        )
        .await;
        assert!(!healthy, "a 3xx is a failed probe");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
    }

    #[tokio::test]
    async fn a_probe_timeout_is_bounded_by_the_interval() {
        let (hanging, _) = server(None).await;
        assert_eq!(
            probe_timeout(&check("/", 600_000, 200)),
            Duration::from_millis(200)
        );
        let started = Instant::now();
        let healthy = probe(
            &probe_client(),
            &check("/", 600_000, 200),
            "127.0.0.1",
            hanging,
        )
        .await;
        assert!(!healthy);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn one_hanging_probe_does_not_delay_another_services_probe() {
        let (hanging, _) = server(None).await;
        let (fast, _) = server(ok_response()).await;
        let book = Arc::new(Mutex::new(HealthBook::default()));
        let wake = Arc::new(Notify::new());
        let token = CancellationToken::new();
        let prober = Prober::new(book.clone(), wake, token.clone());
        let slow_key = ("slow.svc.0".to_string(), "c-slow".to_string());
        let fast_key = ("fast.svc.0".to_string(), "c-fast".to_string());
        let targets = vec![
            (
                slow_key.clone(),
                check("/", 60_000, 60_000),
                "127.0.0.1".to_string(),
                hanging,
            ),
            (
                fast_key.clone(),
                check("/", 500, 500),
                "127.0.0.1".to_string(),
                fast,
            ),
        ];
        let started = Instant::now();
        prober.dispatch(targets.clone(), Instant::now());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "dispatch does not wait for probes"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while !book.lock().unwrap().is_healthy("fast.svc.0", "c-fast") {
            assert!(
                Instant::now() < deadline,
                "the fast service was not probed while the slow one hung"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The hanging probe is still running and is not started twice.
        assert!(prober.in_flight.lock().unwrap().contains(&slow_key));
        tokio::time::sleep(Duration::from_millis(600)).await;
        prober.dispatch(targets, Instant::now());
        assert_eq!(
            prober
                .in_flight
                .lock()
                .unwrap()
                .iter()
                .filter(|k| **k == slow_key)
                .count(),
            1
        );
        token.cancel();
    }
}
