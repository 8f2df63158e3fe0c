//! Backups and restores of a service (`service backup | backups |
//! restore`, `backup show | rm`): a request records what is asked for; the
//! leader's hooks controller runs the service's backup or restore hook in
//! every slot and records how it ended, which these routes read back.
//! Never touches an engine or an artifact itself.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use super::services::check_names;
use crate::auth::scope::Scope;
use crate::replica::{now_ms, Replica};
use crate::state::{Command, Outcome};
use crate::wire::{BackupEntry, RestoreBody, RestoreEntry};

/// A new job id: the service and the time, so ids sort by service and age.
fn job_id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}.{}", now_ms())
}

/// Asks for a backup: the backup hook runs in every slot, each slot's
/// stdout is kept (after the answer: follow `GET /v1/backups/{id}`).
#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/backups", tag = "backups", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 202, description = "The backup, running", body = BackupEntry), Refusals)
)]
pub async fn start(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let id = job_id(&namespace, &name);
    let applied = replica
        .write(Command::RequestBackup {
            id: id.clone(),
            namespace: namespace.clone(),
            service: name.clone(),
        })
        .await?;
    match applied.outcome {
        Outcome::Done => {
            let entry = replica
                .sm
                .read(|s| s.hooks.backups.get(&id).map(BackupEntry::from));
            match entry {
                Some(entry) => Ok((StatusCode::ACCEPTED, Json(entry)).into_response()),
                None => Err(ApiError::not_found(format!("backup {id} is gone"))),
            }
        }
        Outcome::Rejected(reason) => Err(ApiError::new(StatusCode::CONFLICT, "no_hook", reason)),
        other => outcome_response(&format!("service {namespace}/{name}"), other),
    }
}

/// The backups of one service, oldest first.
#[utoipa::path(
    get, path = "/v1/services/{namespace}/{name}/backups", tag = "backups", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "Its backups", body = Vec<BackupEntry>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Vec<BackupEntry>>> {
    check_names(&namespace, &name)?;
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.hooks
            .backups_of(&namespace, &name)
            .map(BackupEntry::from)
            .collect()
    })))
}

/// One backup.
#[utoipa::path(
    get, path = "/v1/backups/{id}", tag = "backups", params(
        ("id" = String, Path, description = "The backup's id"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The backup", body = BackupEntry), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<BackupEntry>> {
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| s.hooks.backups.get(&id).map(BackupEntry::from))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("backup {id} does not exist")))
}

/// Forgets a backup; each manager then deletes its artifacts.
#[utoipa::path(
    delete, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "The backup's id")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write(Command::RemoveBackup { id: id.clone() })
        .await?;
    outcome_response(&format!("backup {id}"), applied.outcome)
}

/// Asks for a restore: each slot's artifact of the backup is fed to the
/// restore hook of the same slot (after the answer: follow `GET
/// /v1/restores/{id}`).
#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/restore", tag = "backups", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ), request_body = RestoreBody,
    responses((status = 202, description = "The restore, running", body = RestoreEntry), Refusals)
)]
pub async fn restore(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    Path((namespace, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<RestoreBody>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    // A token limited to namespaces restores only their backups; another
    // namespace's backup is as unknown to it as one that does not exist.
    let reachable = replica.sm.read(|s| {
        s.hooks
            .backups
            .get(&body.from)
            .is_none_or(|backup| scope.allows_namespace(&backup.namespace))
    });
    if !reachable {
        return Err(ApiError::not_found(format!(
            "backup {} does not exist",
            body.from
        )));
    }
    let id = format!("{}.restore", job_id(&namespace, &name));
    let applied = replica
        .write(Command::RequestRestore {
            id: id.clone(),
            namespace: namespace.clone(),
            service: name.clone(),
            backup: body.from.clone(),
        })
        .await?;
    match applied.outcome {
        Outcome::Done => {
            let entry = replica
                .sm
                .read(|s| s.hooks.restores.get(&id).map(RestoreEntry::from));
            match entry {
                Some(entry) => Ok((StatusCode::ACCEPTED, Json(entry)).into_response()),
                None => Err(ApiError::not_found(format!("restore {id} is gone"))),
            }
        }
        Outcome::NotFound => Err(ApiError::not_found(format!(
            "service {namespace}/{name} or backup {} does not exist",
            body.from
        ))),
        Outcome::Rejected(reason) => Err(ApiError::new(StatusCode::CONFLICT, "no_hook", reason)),
        other => outcome_response(&format!("service {namespace}/{name}"), other),
    }
}

/// One restore.
#[utoipa::path(
    get, path = "/v1/restores/{id}", tag = "backups", params(
        ("id" = String, Path, description = "The restore's id"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The restore", body = RestoreEntry), Refusals)
)]
pub async fn get_restore(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<RestoreEntry>> {
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| s.hooks.restores.get(&id).map(RestoreEntry::from))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("restore {id} does not exist")))
}
