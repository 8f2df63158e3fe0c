//! `/v1/pipelines`: pipelines from source to release, their runs, and the
//! webhook that starts a run with a source archive — with a token, or
//! signed GitHub-style (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the
//! body>` under the pipeline's key), so a git server's hook needs no API
//! token. The archive is kept on two managers before the run is written,
//! so a new leader can build it. `POST /v1/releases/{name}/approve` passes
//! a run's gate. The API only records; the leader's pipeline controller runs.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::auth::policy::SIGNATURE_HEADER;
use crate::replica::archives::MAX_ARCHIVE_BYTES;
use crate::replica::Replica;
use crate::state::pipelines::{secret_name, Run};
use crate::state::{Command, Outcome};
use crate::wire::{PipelineBody, PipelineView, ReleaseView, RunStarted};

/// The commit a run is for, when the caller says (or `?commit=`).
pub const COMMIT_HEADER: &str = "x-raftvisor-commit";

fn view(replica: &Replica, name: &str) -> ApiResult<PipelineView> {
    replica
        .sm
        .read(|s| s.pipelines.pipelines.get(name).map(PipelineView::of))
        .ok_or_else(|| ApiError::not_found(format!("pipeline {name} does not exist")))
}

/// Every pipeline with its latest runs.
#[utoipa::path(
    get, path = "/v1/pipelines", tag = "pipelines",
    params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The pipelines", body = Vec<PipelineView>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<PipelineView>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.pipelines
            .pipelines
            .values()
            .map(PipelineView::of)
            .collect()
    })))
}

/// One pipeline, its spec and its latest runs (stages, times, output tails).
#[utoipa::path(
    get, path = "/v1/pipelines/{name}", tag = "pipelines", params(
        ("name" = String, Path, description = "The pipeline's name"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The pipeline", body = PipelineView), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<PipelineView>> {
    params.read_barrier(&replica).await?;
    view(&replica, &name).map(Json)
}

/// One run of a pipeline.
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/runs/{run}", tag = "pipelines", params(
        ("name" = String, Path, description = "The pipeline's name"),
        ("run" = u64, Path, description = "The run's number"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The run", body = Run), Refusals)
)]
pub async fn run(
    State(replica): State<Arc<Replica>>,
    Path((name, number)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Run>> {
    let number: u64 = number
        .parse()
        .map_err(|_| ApiError::bad_request(format!("run {number:?} is not a run number")))?;
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| {
            s.pipelines
                .pipelines
                .get(&name)
                .and_then(|p| p.run(number).cloned())
        })
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pipeline {name} has no run {number}")))
}

/// Creates or replaces a pipeline (its runs are kept); its key, if given,
/// is sealed with the cluster's secrets key.
#[utoipa::path(
    put, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name (a DNS label)")),
    request_body = PipelineBody,
    responses((status = 200, description = "Saved", body = PipelineView), Refusals)
)]
pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> ApiResult<Response> {
    let secret = match body.secret {
        None => None,
        Some(clear) if clear.len() < 16 => {
            return Err(ApiError::bad_request(
                "a webhook key has at least 16 characters",
            ))
        }
        Some(clear) => {
            let Some(key) = &replica.secrets else {
                return Err(ApiError::bad_request(
                    "a webhook key needs a secrets key: set [secrets] key_file in every replica's config",
                ));
            };
            Some(key.seal(&secret_name(&name), &clear))
        }
    };
    let applied = replica
        .write_and_apply(Command::PutPipeline {
            name: name.clone(),
            spec: body.spec,
            secret,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => Ok(Json(view(&replica, &name)?).into_response()),
        other => outcome_response(&format!("pipeline {name}"), other),
    }
}

/// Removes a pipeline and its runs (what they deployed keeps running).
#[utoipa::path(
    delete, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::RemovePipeline { name: name.clone() })
        .await?;
    outcome_response(&format!("pipeline {name}"), applied.outcome)
}

/// `sha256=<hex>` as bytes.
fn parse_signature(value: &str) -> Option<Vec<u8>> {
    let hex = value.trim().strip_prefix("sha256=")?;
    if hex.len() != 64 {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

/// Starts a run with the body as its source archive (a tar with a
/// Dockerfile at its root, e.g. `git archive` of a commit): 201 and the
/// run's number. With `X-Hub-Signature-256` no token is needed, and a
/// signature that does not match the body under the pipeline's key is 401.
#[utoipa::path(
    post, path = "/v1/pipelines/{name}/runs", tag = "pipelines", params(
        ("name" = String, Path, description = "The pipeline's name"),
        ("commit" = Option<String>, Query, description = "The commit the archive is of (also the X-Raftvisor-Commit header)"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "sha256=<hex HMAC-SHA256 of the body under the pipeline's key>"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The source archive (a tar)"),
    responses((status = 201, description = "The run started", body = RunStarted), Refusals)
)]
pub async fn start_run(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> ApiResult<Response> {
    let sealed_key = replica
        .sm
        .read(|s| s.pipelines.pipelines.get(&name).map(|p| p.secret.clone()))
        .ok_or_else(|| ApiError::not_found(format!("pipeline {name} does not exist")))?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    let mac = match signature {
        None => None,
        Some(value) => {
            let expected = parse_signature(value)
                .ok_or_else(|| unauthorized("X-Hub-Signature-256 is not sha256=<64 hex digits>"))?;
            let sealed = sealed_key
                .ok_or_else(|| unauthorized("this pipeline has no webhook key: use a token"))?;
            let key = replica
                .secrets
                .as_ref()
                .and_then(|k| k.unseal(&secret_name(&name), &sealed).ok())
                .ok_or_else(|| {
                    unauthorized("this replica cannot read the pipeline's webhook key")
                })?;
            let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .expect("HMAC takes a key of any length");
            Some((Arc::new(Mutex::new(mac)), expected))
        }
    };
    let hashing = mac.as_ref().map(|(mac, _)| mac.clone());
    let stream = body
        .into_data_stream()
        .map_err(|e| e.to_string())
        .map(move |chunk| {
            if let (Ok(bytes), Some(mac)) = (&chunk, &hashing) {
                mac.lock().expect("the HMAC's lock").update(bytes);
            }
            chunk
        });
    let stored = replica
        .archives
        .store(stream, MAX_ARCHIVE_BYTES, None)
        .await
        .map_err(|e| ApiError::bad_request(format!("the source archive: {e}")))?;
    if let Some((mac, expected)) = mac {
        let mac = Arc::try_unwrap(mac)
            .map_err(|_| ApiError::bad_request("the source archive is still being read"))?
            .into_inner()
            .expect("the HMAC's lock");
        // Constant time: a mismatch says nothing of how close it was.
        if mac.verify_slice(&expected).is_err() {
            tracing::warn!(pipeline = %name, "a webhook call with a bad signature was refused");
            return Err(unauthorized(
                "X-Hub-Signature-256 does not match the body under the pipeline's key",
            ));
        }
    }
    if stored.size == 0 {
        return Err(ApiError::bad_request("the source archive is empty"));
    }
    // Kept on a second manager before the run exists: a new leader builds it.
    let mut keepers = std::collections::BTreeSet::from([replica.id]);
    match replica.keep_archive_elsewhere(&stored).await {
        Ok(Some(other)) => {
            keepers.insert(other);
        }
        Ok(None) => {}
        Err(reason) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the source archive could not be kept on a second manager: {reason}"),
            ))
        }
    }
    let commit = params
        .get("commit")
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(COMMIT_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|c| !c.is_empty())
        .map(|c| c.chars().take(80).collect());
    let applied = replica
        .write_and_apply(Command::StartRun {
            pipeline: name.clone(),
            source: stored.sha256,
            keepers,
            commit,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => {
            let run = replica
                .sm
                .read(|s| {
                    s.pipelines
                        .pipelines
                        .get(&name)?
                        .runs
                        .iter()
                        .find(|r| r.index == applied.index)
                        .map(|r| r.number)
                })
                .ok_or_else(|| ApiError::not_found(format!("the new run of {name} is gone")))?;
            Ok((
                StatusCode::CREATED,
                Json(RunStarted {
                    pipeline: name,
                    run,
                }),
            )
                .into_response())
        }
        other => outcome_response(&format!("pipeline {name}"), other),
    }
}

/// Approves the run waiting at the release's gate: the release switches
/// to the environment it deployed to, in one write. 409
/// `nothing_to_approve` without a run waiting.
#[utoipa::path(
    post, path = "/v1/releases/{name}/approve", tag = "releases",
    params(("name" = String, Path, description = "The release's name")),
    responses((status = 200, description = "The release after the switch", body = ReleaseView), Refusals)
)]
pub async fn approve(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::ApproveRelease {
            release: name.clone(),
        })
        .await?;
    match applied.outcome {
        Outcome::Done => Ok(Json(super::releases::view(&replica, &name)?).into_response()),
        other => outcome_response(&format!("release {name}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_sha256_and_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_signature(&format!("sha256={hex}")),
            Some(vec![0xab; 32])
        );
        assert_eq!(parse_signature(&format!("sha1={hex}")), None);
        assert_eq!(parse_signature("sha256=abc"), None);
        assert_eq!(
            parse_signature(&format!("sha256={}", "zz".repeat(32))),
            None
        );
    }
}
