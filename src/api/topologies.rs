//! Topologies: a namespace's deployment exported as one document
//! (`GET /v1/namespaces/{ns}/topology`), cloned into another namespace in
//! one write (`POST /v1/namespaces/{ns}/clone`), and named topologies kept
//! with their versions (`/v1/topologies`). Secret values never leave
//! through here: an export shows them as `<redacted>`, a saved topology
//! keeps none; only a clone, which stays in the cluster, copies them sealed.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::replica::Replica;
use crate::state::topology::{Export, ExportError, Topology};
use crate::state::{Command, Outcome, Service};
use crate::wire::{CloneBody, TopologyEntry};

fn check_namespace(namespace: &str) -> ApiResult<()> {
    crate::state::validate::dns_label("namespace", namespace)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A namespace's services in deploy order, images pinned to what they
/// resolved to, secret values shown as `<redacted>`; `share` names
/// services exported as references to the originals.
#[utoipa::path(
    get, path = "/v1/namespaces/{namespace}/topology", tag = "topologies", params(
        ("namespace" = String, Path, description = "The namespace to export"),
        ("share" = Option<String>, Query, description = "Comma-separated services exported as references (not duplicated)"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The topology", body = Topology), Refusals)
)]
pub async fn export(
    State(replica): State<Arc<Replica>>,
    Path(namespace): Path<String>,
    params: Params,
) -> ApiResult<Json<Topology>> {
    check_namespace(&namespace)?;
    params.read_barrier(&replica).await?;
    let shared: BTreeSet<String> = params
        .get("share")
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let domain = replica.config.dns.zone();
    let export = Export {
        namespace: &namespace,
        shared: &shared,
        domain: &domain,
    };
    replica
        .sm
        .read(|s| export.from_state(s))
        .map(|t| Json(t.without_secret_values()))
        .map_err(|e| match e {
            ExportError::NoServices(_) => ApiError::not_found(e.to_string()),
            ExportError::NotAService { .. } => ApiError::bad_request(e.to_string()),
        })
}

/// Every service of the namespace as a new service of `to` (which must
/// have none), in one write; 409 `namespace_not_empty` otherwise.
#[utoipa::path(
    post, path = "/v1/namespaces/{namespace}/clone", tag = "topologies",
    params(("namespace" = String, Path, description = "The namespace to clone")),
    request_body = CloneBody,
    responses((status = 200, description = "The new namespace's services", body = Vec<Service>), Refusals)
)]
pub async fn clone(
    State(replica): State<Arc<Replica>>,
    Path(namespace): Path<String>,
    JsonBody(body): JsonBody<CloneBody>,
) -> ApiResult<Response> {
    check_namespace(&namespace)?;
    let to = body.to.clone();
    let applied = replica
        .write_and_apply(Command::CloneNamespace {
            from: namespace.clone(),
            to: body.to,
            shared: body.share,
            domain: replica.config.dns.zone(),
        })
        .await?;
    match applied.outcome {
        Outcome::Done => {
            let services: Vec<Service> = replica.sm.read(|s| {
                s.services
                    .values()
                    .filter(|svc| svc.namespace == to)
                    .cloned()
                    .collect()
            });
            Ok(Json(services).into_response())
        }
        other => outcome_response(&format!("namespace {namespace}"), other),
    }
}

/// Every named topology's newest version.
#[utoipa::path(
    get, path = "/v1/topologies", tag = "topologies",
    params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The newest version of each", body = Vec<TopologyEntry>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<TopologyEntry>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.topologies
            .topologies
            .iter()
            .filter_map(|(name, versions)| Some(TopologyEntry::of(name, versions.last()?, false)))
            .collect()
    })))
}

/// A named topology: its newest version, or `?version=V`; `?versions`
/// lists every kept version instead.
#[utoipa::path(
    get, path = "/v1/topologies/{name}", tag = "topologies", params(
        ("name" = String, Path, description = "The topology's name"),
        ("version" = Option<u64>, Query, description = "This version instead of the newest"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The version, with the topology", body = TopologyEntry), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    params.read_barrier(&replica).await?;
    if params.get("versions").is_some() {
        let versions: Option<Vec<TopologyEntry>> = replica.sm.read(|s| {
            let versions = s.topologies.topologies.get(&name)?;
            Some(
                versions
                    .iter()
                    .map(|v| TopologyEntry::of(&name, v, false))
                    .collect(),
            )
        });
        return versions
            .map(|v| Json(v).into_response())
            .ok_or_else(|| ApiError::not_found(format!("topology {name} does not exist")));
    }
    let version =
        match params.get("version") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("version {v:?} is not a whole number"))
            })?),
            None => None,
        };
    replica
        .sm
        .read(|s| {
            s.topologies
                .get(&name, version)
                .map(|v| TopologyEntry::of(&name, v, true))
        })
        .map(|entry| Json(entry).into_response())
        .ok_or_else(|| match version {
            Some(v) => ApiError::not_found(format!("topology {name} has no version {v}")),
            None => ApiError::not_found(format!("topology {name} does not exist")),
        })
}

/// Saves a topology as the newest version of `name` (secret values are
/// dropped).
#[utoipa::path(
    put, path = "/v1/topologies/{name}", tag = "topologies",
    params(("name" = String, Path, description = "The topology's name (a DNS label)")),
    request_body = Topology,
    responses((status = 200, description = "The version saved", body = TopologyEntry), Refusals)
)]
pub async fn save(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    JsonBody(topology): JsonBody<Topology>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::PutTopology {
            name: name.clone(),
            topology,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => replica
            .sm
            .read(|s| {
                s.topologies
                    .get(&name, None)
                    .map(|v| TopologyEntry::of(&name, v, false))
            })
            .map(|entry| Json(entry).into_response())
            .ok_or_else(|| ApiError::not_found(format!("topology {name} is gone"))),
        other => outcome_response(&format!("topology {name}"), other),
    }
}

/// Removes a named topology and every version of it.
#[utoipa::path(
    delete, path = "/v1/topologies/{name}", tag = "topologies",
    params(("name" = String, Path, description = "The topology's name")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::RemoveTopology { name: name.clone() })
        .await?;
    outcome_response(&format!("topology {name}"), applied.outcome)
}
