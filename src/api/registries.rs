//! `/v1/registries`: the registry logins the leader pulls images with.
//! A password is sealed here, on the replica that takes the request,
//! before it enters the log; no answer, event or log line shows it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::replica::Replica;
use crate::state::image_catalog::{login_secret_name, valid_registry_host};
use crate::state::{Command, Outcome};
use crate::wire::{RegistryInfo, RegistryLoginBody};

/// Longest username or password accepted.
const MAX_CREDENTIAL_BYTES: usize = 4096;

#[utoipa::path(
    get, path = "/v1/registries", tag = "images", params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Registry logins (never passwords)", body = Vec<RegistryInfo>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<RegistryInfo>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.images
            .logins
            .iter()
            .map(|(host, login)| RegistryInfo {
                host: host.clone(),
                username: login.username.clone(),
                version: login.version,
            })
            .collect()
    })))
}

#[utoipa::path(
    put, path = "/v1/registries/{host}", tag = "images",
    params(("host" = String, Path, description = "Registry host[:port]")), request_body = RegistryLoginBody,
    responses((status = 200, description = "Stored", body = RegistryInfo), Refusals)
)]
pub async fn login(
    State(replica): State<Arc<Replica>>,
    Path(host): Path<String>,
    JsonBody(body): JsonBody<RegistryLoginBody>,
) -> ApiResult<Response> {
    valid_registry_host(&host).map_err(ApiError::bad_request)?;
    for (what, value) in [("username", &body.username), ("password", &body.password)] {
        if value.is_empty() || value.len() > MAX_CREDENTIAL_BYTES {
            return Err(ApiError::bad_request(format!(
                "{what} must have 1 to {MAX_CREDENTIAL_BYTES} bytes"
            )));
        }
    }
    if body.username.chars().any(char::is_control) {
        return Err(ApiError::bad_request("username must be printable"));
    }
    let key = replica.secrets.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_secrets_key",
            "this cluster has no secrets key ([secrets] key_file): registry passwords cannot be sealed",
        )
    })?;
    let password = key.seal(&login_secret_name(&host), &body.password);
    let applied = replica
        .write(Command::PutRegistryLogin {
            host: host.clone(),
            username: body.username.clone(),
            password,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => Ok(Json(RegistryInfo {
            host,
            username: body.username,
            version: applied.index,
        })
        .into_response()),
        Outcome::Rejected(reason) => Err(ApiError::bad_request(reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

#[utoipa::path(
    delete, path = "/v1/registries/{host}", tag = "images",
    params(("host" = String, Path, description = "Registry host[:port]")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn logout(
    State(replica): State<Arc<Replica>>,
    Path(host): Path<String>,
) -> ApiResult<Response> {
    valid_registry_host(&host).map_err(ApiError::bad_request)?;
    match replica
        .write(Command::RemoveRegistryLogin { host: host.clone() })
        .await?
        .outcome
    {
        Outcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!(
            "no login is stored for registry {host}"
        ))),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}
