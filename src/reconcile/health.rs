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
//! whole probe is bounded by `min(timeout_ms, interval_ms)`. Probing is a
//! controller on the [`super::controller`] runtime, one key per instance:
//! a slow instance delays no other probe, an instance is never probed twice
//! at once, and a changed verdict wakes the instance's service.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::controller::{Action, Limits, OnStop, Reason, Reconciler, Trigger};
use super::observed::ServiceKey;
use crate::replica::Replica;
use crate::state::{HealthCheck, InstanceState, ProbeKind, State};

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

    /// Keeps only the record of `instance`'s current `container` (none
    /// when it is not probed any more).
    fn keep_only(&mut self, instance: &str, container: Option<&str>) {
        let live = |k: &(String, String)| k.0 != instance || Some(k.1.as_str()) == container;
        self.passing.retain(live);
        self.failing.retain(live);
        self.failures.retain(|k, _| live(k));
        self.next_probe.retain(|k, _| live(k));
    }
}

/// Why an HTTP probe has no URL.
#[derive(Debug, thiserror::Error)]
pub enum ProbeUrlError {
    #[error(transparent)]
    Path(#[from] crate::state::validate::Invalid),
    #[error("probe URL for path {path:?} is not valid: {source}")]
    Url {
        path: String,
        source: <reqwest::Url as std::str::FromStr>::Err,
    },
    #[error("probe path {path:?} would leave the instance's address {host}:{port}")]
    Leaves {
        path: String,
        host: String,
        port: u16,
    },
}

/// The URL of an HTTP probe of `path` on `address:port`, or why there is
/// none: the path must be absolute and the URL must point at exactly that
/// address and port (no user info, no other host).
pub fn probe_url(address: &str, port: u16, path: &str) -> Result<reqwest::Url, ProbeUrlError> {
    crate::state::validate::health_path(path)?;
    let host = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    };
    let url = reqwest::Url::parse(&format!("http://{host}:{port}{path}")).map_err(|source| {
        ProbeUrlError::Url {
            path: path.to_string(),
            source,
        }
    })?;
    let same_target = url.scheme() == "http"
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str() == Some(host.as_str())
        && url.port_or_known_default() == Some(port);
    if same_target {
        Ok(url)
    } else {
        Err(ProbeUrlError::Leaves {
            path: path.to_string(),
            host,
            port,
        })
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

/// What probing one instance needs: its service, current container,
/// check, address and published port.
struct Target {
    service: ServiceKey,
    container: String,
    check: HealthCheck,
    address: String,
    port: u16,
}

/// The probe target of instance `id`, when it is running (or starting,
/// or unhealthy) with a health check and a published check port.
fn target_of(state: &State, id: &str) -> Option<Target> {
    let instance = state.instances.get(id)?;
    if !matches!(
        instance.state,
        InstanceState::Running | InstanceState::Starting | InstanceState::Unhealthy
    ) {
        return None;
    }
    let service = (instance.namespace.clone(), instance.service.clone());
    let check = state.services.get(&service)?.spec.health.clone()?;
    let port = instance
        .ports
        .iter()
        .find(|p| p.name == check.port)?
        .host_port;
    Some(Target {
        service,
        container: instance.container_id.clone()?,
        check,
        address: instance.address.clone()?,
        port,
    })
}

/// The health controller of one term: one key per instance.
pub struct Health {
    replica: Arc<Replica>,
    book: Arc<Mutex<HealthBook>>,
    http: reqwest::Client,
    services: Trigger<ServiceKey>,
    resync: Duration,
}

impl Health {
    pub fn new(
        replica: Arc<Replica>,
        book: Arc<Mutex<HealthBook>>,
        services: Trigger<ServiceKey>,
        resync: Duration,
    ) -> Health {
        Health {
            replica,
            book,
            http: probe_client(),
            services,
            resync,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, HealthBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Reconciler for Health {
    type Key = String;
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "health"
    }

    fn limits(&self) -> Limits {
        Limits {
            // A probe is bounded by its interval; intervals are minutes at most.
            timeout: Duration::from_secs(600),
            concurrency: 1_024,
            resync: Some(self.resync),
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.replica.sm.read(|s| {
            s.services
                .values()
                .filter(|svc| svc.spec.health.is_some())
                .flat_map(|svc| s.service_instances(&svc.namespace, &svc.name))
                .map(|i| i.id.clone())
                .collect()
        })
    }

    async fn reconcile(&self, id: &String, _: Reason) -> Result<Action, Infallible> {
        let Some(target) = self.replica.sm.read(|s| target_of(s, id)) else {
            self.book().keep_only(id, None);
            return Ok(Action::AwaitChange);
        };
        let key = (id.clone(), target.container.clone());
        let interval = Duration::from_millis(target.check.interval_ms.max(1));
        let now = Instant::now();
        {
            let mut book = self.book();
            book.keep_only(id, Some(&target.container));
            let next = book.next_probe.entry(key.clone()).or_insert(now);
            if *next > now {
                return Ok(Action::at(*next));
            }
            *next = now + interval;
        }
        let ok = probe(&self.http, &target.check, &target.address, target.port).await;
        let changed = self.book().record(key, ok, target.check.retries);
        if changed {
            tracing::info!(instance = %id, healthy = ok, "health verdict changed");
            self.services.wake(target.service, Reason::Probe);
        }
        Ok(Action::at(now + interval))
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
}
