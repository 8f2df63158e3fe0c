//! `GET /metrics` (Prometheus text) and the process-wide recorder behind
//! it. What is counted where it happens (Raft's commit, apply and fsync
//! latencies, API requests, DNS queries, reconciles, placements) is
//! recorded by those modules through the `metrics` facade; this module adds
//! at scrape time what the replicated state and Raft's metrics already
//! hold (term, leadership, instances and nodes by state, rollouts,
//! certificate expiry) and renders all of it. It never writes.
//!
//! Latencies are histograms (seconds, buckets from 0.5 ms to 10 s) so
//! Prometheus can aggregate quantiles across managers.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;

use super::error::Refusals;
use crate::replica::Replica;
use crate::state::{InstanceState, NodeState, State as Model};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder (once).
pub fn install_recorder() {
    PROMETHEUS.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once per process")
    });
}

const INSTANCE_STATES: &[InstanceState] = &[
    InstanceState::Pending,
    InstanceState::Pulling,
    InstanceState::PullFailed,
    InstanceState::Starting,
    InstanceState::Running,
    InstanceState::Unhealthy,
    InstanceState::Exited,
    InstanceState::CrashLoop,
    InstanceState::Stopped,
    InstanceState::Waiting,
];

const NODE_STATES: &[NodeState] = &[
    NodeState::Provisioning,
    NodeState::Ready,
    NodeState::Down,
    NodeState::Draining,
    NodeState::Retired,
];

fn label<T: serde::Serialize + std::fmt::Debug>(value: T) -> String {
    serde_json::to_value(&value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{value:?}").to_lowercase())
}

/// What the supervision gauges show, computed from one state.
#[derive(Debug, Default, PartialEq)]
pub struct SupervisionGauges {
    pub instances_by_state: BTreeMap<String, u64>,
    pub nodes_by_state: BTreeMap<String, u64>,
    pub services: u64,
    /// Instances not yet of their service's current template.
    pub outdated_instances: u64,
    /// Services with outdated instances: rollouts under way (or paused).
    pub rollouts: u64,
    /// Restarts of the instances that exist now, summed.
    pub restarts: u64,
}

impl SupervisionGauges {
    pub fn of(state: &Model) -> SupervisionGauges {
        let mut gauges = SupervisionGauges {
            instances_by_state: INSTANCE_STATES.iter().map(|s| (label(*s), 0)).collect(),
            nodes_by_state: NODE_STATES.iter().map(|s| (label(*s), 0)).collect(),
            services: state.services.len() as u64,
            ..SupervisionGauges::default()
        };
        for instance in state.instances.values() {
            *gauges
                .instances_by_state
                .entry(label(instance.state))
                .or_default() += 1;
            gauges.restarts += u64::from(instance.restarts);
        }
        for node in state.nodes.values() {
            *gauges.nodes_by_state.entry(label(node.state)).or_default() += 1;
        }
        for service in state.services.values() {
            let template = state.template_of(service);
            let outdated = state
                .service_instances(&service.namespace, &service.name)
                .iter()
                .filter(|i| i.template != template)
                .count() as u64;
            gauges.outdated_instances += outdated;
            gauges.rollouts += u64::from(outdated > 0);
        }
        gauges
    }

    fn publish(&self) {
        for (state, count) in &self.instances_by_state {
            metrics::gauge!("raftvisor_instances", "state" => state.clone()).set(*count as f64);
        }
        for (state, count) in &self.nodes_by_state {
            metrics::gauge!("raftvisor_nodes", "state" => state.clone()).set(*count as f64);
        }
        metrics::gauge!("raftvisor_services").set(self.services as f64);
        metrics::gauge!("raftvisor_instances_outdated").set(self.outdated_instances as f64);
        metrics::gauge!("raftvisor_rollouts_in_progress").set(self.rollouts as f64);
        metrics::gauge!("raftvisor_instance_restarts").set(self.restarts as f64);
    }
}

/// Counts every API request by route template (never the concrete path:
/// keys and names would make the series unbounded), method and status, and
/// records its latency.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    metrics::histogram!(
        "raftvisor_api_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "raftvisor_api_requests_total",
        "route" => route,
        "method" => method,
        "code" => code
    )
    .increment(1);
    response
}

#[utoipa::path(
    get, path = "/metrics", tag = "prometheus",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String), Refusals)
)]
pub async fn metrics(State(replica): State<Arc<Replica>>) -> Response {
    let m = replica.metrics();
    metrics::gauge!("raftvisor_raft_term").set(m.current_term as f64);
    metrics::gauge!("raftvisor_raft_is_leader").set(if m.state == ServerState::Leader {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("raftvisor_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("raftvisor_raft_applied_index").set(replica.sm.applied_index() as f64);
    metrics::gauge!("raftvisor_raft_voters").set(replica.voters().len() as f64);
    let (kv_keys, gauges) = replica.sm.read(|s| (s.kv.len(), SupervisionGauges::of(s)));
    metrics::gauge!("raftvisor_kv_keys").set(kv_keys as f64);
    gauges.publish();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (id, expires) in replica.peers.cert_expiries.all() {
        metrics::gauge!("raftvisor_certificate_expiry_seconds", "member" => id.to_string())
            .set((expires - now) as f64);
    }
    match PROMETHEUS.get() {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervision_gauges_count_every_state() {
        let state = crate::api::catalog::tests::two_services();
        let gauges = SupervisionGauges::of(&state);
        assert_eq!(gauges.instances_by_state["running"], 1);
        assert_eq!(gauges.instances_by_state["starting"], 1);
        assert_eq!(
            gauges.instances_by_state["crash_loop"], 0,
            "every state is shown, zero too"
        );
        assert_eq!(gauges.nodes_by_state["ready"], 2);
        assert_eq!(gauges.services, 2);
    }
}
