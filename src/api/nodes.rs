//! `/v1/nodes`: the machine inventory — register (PUT), read, list, drain,
//! remove. Liveness is judged by the leader later; this is desired state.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{outcome_response, ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use super::services::if_match;
use crate::replica::Replica;
use crate::state::{validate, Command, Node, NodeSpec, Outcome};

fn check_name(name: &str) -> ApiResult<()> {
    validate::dns_label("node name", name).map_err(ApiError::bad_request)
}

fn node_outcome(name: &str, outcome: Outcome) -> ApiResult<Response> {
    outcome_response(&format!("node {name}"), outcome)
}

pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<Node>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(
        replica.sm.read(|s| s.nodes.values().cloned().collect()),
    ))
}

pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Node>> {
    check_name(&name)?;
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| s.nodes.get(&name).cloned())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("node {name} does not exist")))
}

pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<NodeSpec>,
) -> ApiResult<Response> {
    check_name(&name)?;
    replica
        .config
        .limits
        .check_node_spec(&spec)
        .map_err(ApiError::limit)?;
    validate::node_spec(&spec).map_err(ApiError::bad_request)?;
    let applied = replica
        .write(Command::PutNode {
            name: name.clone(),
            spec,
            expected_version: if_match(&headers)?,
        })
        .await?;
    node_outcome(&name, applied.outcome)
}

/// `DELETE /v1/nodes/{name}[?force=true]`: 204 when removed; 409
/// `node_not_drained` while instances are placed on it (or it is down);
/// with `force`, 202 and the node, now `retired`: its instances move, its
/// containers are removed, then the node itself.
pub async fn delete(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    check_name(&name)?;
    let force = match params.get("force") {
        None | Some("false") | Some("0") => false,
        Some("" | "true" | "1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force={other:?} is not true or false"
            )))
        }
    };
    let applied = replica
        .write(Command::RemoveNode {
            name: name.clone(),
            force,
        })
        .await?;
    match applied.outcome {
        Outcome::Node(node) => Ok((StatusCode::ACCEPTED, Json(node)).into_response()),
        other => node_outcome(&name, other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    #[serde(default)]
    cancel: bool,
}

/// `POST /v1/nodes/{name}/drain`, optional body `{"cancel": true}`.
pub async fn drain(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    check_name(&name)?;
    let body = body?;
    let cancel = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        serde_json::from_slice::<DrainBody>(&body)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("invalid drain body: {e}"),
                )
            })?
            .cancel
    };
    let applied = replica
        .write(Command::SetNodeDraining {
            name: name.clone(),
            draining: !cancel,
        })
        .await?;
    node_outcome(&name, applied.outcome)
}
