//! `/v1/volumes`: the slots' volumes the cluster made — listed with the
//! nodes that hold them and whether a slot uses them — and their removal
//! (`volume rm`), which only marks them: the volume controller removes
//! them from the engines. Never touches an engine itself.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{refused, ApiError, ApiResult, Refusals};
use super::extract::Params;
use crate::replica::Replica;
use crate::state::{Command, Outcome};
use crate::wire::VolumeEntry;

/// Every volume, by name; `?namespace=` keeps one namespace's.
#[utoipa::path(
    get, path = "/v1/volumes", tag = "volumes", params(
        ("namespace" = Option<String>, Query, description = "Only this namespace's volumes"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The slots' volumes", body = Vec<VolumeEntry>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<VolumeEntry>>> {
    params.read_barrier(&replica).await?;
    let namespace = params.get("namespace");
    Ok(Json(replica.sm.read(|s| {
        s.volumes
            .volumes
            .iter()
            .filter(|(_, r)| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|(name, r)| VolumeEntry {
                name: name.clone(),
                namespace: r.namespace.clone(),
                service: r.service.clone(),
                slot: r.slot,
                volume: r.volume.clone(),
                driver: r.driver.clone(),
                nodes: r.nodes.iter().cloned().collect(),
                created_ms: r.created_ms,
                state: if r.removing {
                    "removing"
                } else if r.in_use(&s.services) {
                    "in-use"
                } else {
                    "kept"
                }
                .to_string(),
            })
            .collect()
    })))
}

/// Removes a volume no slot uses, from every node that holds it (after
/// the answer: `GET /v1/volumes` shows it `removing` until it is gone).
#[utoipa::path(
    delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "The volume's name, as listed")),
    responses((status = 202, description = "To be removed from every node"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write(Command::RemoveVolume { name: name.clone() })
        .await?;
    match applied.outcome {
        Outcome::Done | Outcome::Deleted => Ok(StatusCode::ACCEPTED.into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!("volume {name} does not exist"))),
        Outcome::Refused { code, message } => Err(refused(&code, message)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}
