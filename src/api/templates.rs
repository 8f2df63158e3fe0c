//! `/v1/templates`: the templates of clustered third-party services the
//! cluster keeps (`template ls | show | add | rm`), each as the TOML text
//! it was added with, checked by the state machine when it is added.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::Params;
use crate::replica::Replica;
use crate::state::{Command, Outcome};
use crate::wire::TemplateEntry;

/// Every template, by name.
#[utoipa::path(
    get, path = "/v1/templates", tag = "templates",
    params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The templates", body = Vec<TemplateEntry>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<TemplateEntry>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.templates
            .templates
            .values()
            .map(TemplateEntry::of)
            .collect()
    })))
}

/// One template.
#[utoipa::path(
    get, path = "/v1/templates/{name}", tag = "templates", params(
        ("name" = String, Path, description = "The template's name"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The template", body = TemplateEntry), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<TemplateEntry>> {
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| s.templates.templates.get(&name).map(TemplateEntry::of))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("template {name} does not exist")))
}

/// Adds or replaces a template: the body is its TOML text, whose `name`
/// must be the path's.
#[utoipa::path(
    put, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "The template's name")),
    request_body(content = String, content_type = "text/plain", description = "The template's TOML text"),
    responses((status = 200, description = "Kept", body = TemplateEntry), Refusals)
)]
pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("a template is UTF-8 TOML text"))?;
    let applied = replica
        .write_and_apply(Command::PutTemplate {
            name: name.clone(),
            text: text.to_string(),
        })
        .await?;
    match applied.outcome {
        Outcome::Done => replica
            .sm
            .read(|s| s.templates.templates.get(&name).map(TemplateEntry::of))
            .map(|entry| Json(entry).into_response())
            .ok_or_else(|| ApiError::not_found(format!("template {name} is gone"))),
        other => outcome_response(&format!("template {name}"), other),
    }
}

/// Removes a template (clusters made from it keep running).
#[utoipa::path(
    delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "The template's name")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::RemoveTemplate { name: name.clone() })
        .await?;
    outcome_response(&format!("template {name}"), applied.outcome)
}
