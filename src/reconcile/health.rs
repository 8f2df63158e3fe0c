//! Health probes run by the leader: HTTP (`GET path`, 2xx/3xx = healthy)
//! or TCP (connect) against each running instance's published port, every
//! `interval_ms` with `timeout_ms`. Results stay in the leader's memory; an
//! instance becomes healthy on its first passing probe and unhealthy after
//! `retries` consecutive failures, which the service controller turns into
//! a restart. Nothing is written through Raft from here.

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

/// Probes one endpoint.
pub async fn probe(http: &reqwest::Client, check: &HealthCheck, address: &str, port: u16) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms);
    match check.kind {
        ProbeKind::Tcp => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((address, port))).await,
            Ok(Ok(_))
        ),
        ProbeKind::Http => {
            let url = format!("http://{address}:{port}{}", check.path);
            match http.get(url).timeout(timeout).send().await {
                Ok(response) => {
                    response.status().is_success() || response.status().is_redirection()
                }
                Err(_) => false,
            }
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
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2)
        .build()
        .expect("static HTTP client configuration");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let targets: Vec<((String, String), HealthCheck, String, u16)> = replica.sm.read(|s| {
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
        let live: HashSet<(String, String)> = targets.iter().map(|(k, ..)| k.clone()).collect();
        let now = Instant::now();
        let due: Vec<_> = {
            let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
            book.forget_except(&live);
            targets
                .into_iter()
                .filter(|(key, check, ..)| {
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
        let results =
            futures::future::join_all(due.into_iter().map(|(key, check, address, port)| {
                let http = http.clone();
                async move {
                    let ok = probe(&http, &check, &address, port).await;
                    (key, ok, check.retries)
                }
            }))
            .await;
        let mut changed = false;
        {
            let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
            for (key, ok, retries) in results {
                if book.record(key.clone(), ok, retries) {
                    tracing::info!(instance = %key.0, healthy = ok, "health verdict changed");
                    changed = true;
                }
            }
        }
        if changed {
            wake.notify_one();
        }
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
}
