//! Prometheus's generic HTTP service discovery (`GET
//! /v1/prometheus/targets`): one target group per published TCP port of
//! every passing instance (running, on a live node), or with `?managers`
//! the managers' API addresses, so Prometheus scrapes workloads and the
//! control plane without a static list. Filters: `?namespace=`,
//! `?service=`, `?port=` (a port name). Read-only; computed from the
//! local state after the usual read barrier.
//!
//! Labels of a workload target: `namespace`, `service`, `port`, `node`,
//! `instance` (the raftvisor instance id, replacing Prometheus's default
//! `host:port`), and `__meta_raftvisor_{version,slot,zone,region}` for
//! relabelling. A manager target: `raft_id`, `instance` (its API address),
//! `job_hint="raftvisor"`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::catalog::{passing, Catalog};
use super::error::{ApiError, ApiResult, Refusals};
use super::extract::Params;
use crate::auth::scope::Scope;
use crate::replica::Replica;
use crate::state::{Protocol, State as Model};

/// One group of Prometheus's HTTP SD answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Which targets a request asks for.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub port: Option<String>,
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The workload targets of `state` that `filter` keeps, by instance and port.
pub fn workload_targets(state: &Model, filter: &Filter) -> Vec<TargetGroup> {
    let keep = |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
    let mut groups = Vec::new();
    for (service, instance, node) in Catalog::new(state).registrations() {
        if !passing(instance, node)
            || !keep(&filter.namespace, &service.namespace)
            || !keep(&filter.service, &service.name)
        {
            continue;
        }
        let address = instance
            .address
            .clone()
            .unwrap_or_else(|| node.published_address());
        for port in instance
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp && keep(&filter.port, &p.name))
        {
            let mut labels: BTreeMap<String, String> = [
                ("namespace", service.namespace.clone()),
                ("service", service.name.clone()),
                ("port", port.name.clone()),
                ("node", node.name.clone()),
                ("instance", instance.id.clone()),
                (
                    "__meta_raftvisor_version",
                    instance.spec_version.to_string(),
                ),
                ("__meta_raftvisor_slot", instance.slot.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(zone) = &node.spec.zone {
                labels.insert("__meta_raftvisor_zone".into(), zone.clone());
            }
            if let Some(region) = &node.spec.region {
                labels.insert("__meta_raftvisor_region".into(), region.clone());
            }
            groups.push(TargetGroup {
                targets: vec![host_port(&address, port.host_port)],
                labels,
            });
        }
    }
    groups
}

/// The managers' API addresses, one group each.
pub fn manager_targets(state: &Model) -> Vec<TargetGroup> {
    state
        .managers
        .values()
        .map(|m| TargetGroup {
            targets: vec![m.api_addr.clone()],
            labels: [
                ("raft_id".to_string(), m.raft_id.to_string()),
                ("instance".to_string(), m.api_addr.clone()),
                ("job_hint".to_string(), "raftvisor".to_string()),
            ]
            .into(),
        })
        .collect()
}

#[utoipa::path(
    get, path = "/v1/prometheus/targets", tag = "prometheus",
    params(
        ("namespace" = Option<String>, Query, description = "Only this namespace"),
        ("service" = Option<String>, Query, description = "Only this service"),
        ("port" = Option<String>, Query, description = "Only this port name"),
        ("managers" = Option<bool>, Query, description = "The managers' API instead of the workloads"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "Prometheus HTTP SD target groups", body = Vec<TargetGroup>), Refusals)
)]
pub async fn targets(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    params: Params,
) -> ApiResult<Json<Vec<TargetGroup>>> {
    params.read_barrier(&replica).await?;
    if params.has("managers") {
        if scope.limits().is_some() {
            return Err(ApiError::out_of_reach(&scope, "the managers' targets"));
        }
        return Ok(Json(replica.sm.read(manager_targets)));
    }
    let filter = Filter {
        namespace: params.get("namespace").map(str::to_string),
        service: params.get("service").map(str::to_string),
        port: params.get("port").map(str::to_string),
    };
    let mut groups = replica.sm.read(|state| workload_targets(state, &filter));
    groups.retain(|group| {
        group
            .labels
            .get("namespace")
            .is_some_and(|namespace| scope.allows_namespace(namespace))
    });
    Ok(Json(groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::catalog::tests::two_services;

    #[test]
    fn every_tcp_port_of_every_passing_instance_is_a_target() {
        let state = two_services();
        let groups = workload_targets(&state, &Filter::default());
        let targets: Vec<&str> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        // Slot 1 is still starting: not a target yet.
        assert_eq!(targets, ["10.0.0.3:31000", "10.0.0.3:32000"]);
        let labels = &groups[0].labels;
        assert_eq!(labels["namespace"], "demo");
        assert_eq!(labels["service"], "echo");
        assert_eq!(labels["port"], "http");
        assert_eq!(labels["node"], "n1");
        assert_eq!(labels["instance"], "demo.echo.0");
        assert_eq!(labels["__meta_raftvisor_zone"], "z1");
    }

    #[test]
    fn filters_narrow_by_namespace_service_and_port() {
        let state = two_services();
        let only_http = Filter {
            port: Some("http".into()),
            ..Filter::default()
        };
        assert_eq!(workload_targets(&state, &only_http).len(), 1);
        let other_namespace = Filter {
            namespace: Some("prod".into()),
            ..Filter::default()
        };
        assert!(workload_targets(&state, &other_namespace).is_empty());
    }
}
