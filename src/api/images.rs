//! `/v1/images`: the images the cluster keeps without a registry.
//! `POST /v1/images` takes an archive in the `docker save` format: this
//! replica stores it under its SHA-256, reads the image's id and names
//! from it, has a second manager keep a copy (so the loss of any one
//! manager loses no image), and only then records it through Raft — the
//! log carries the archive's hash, never its bytes. Loading it into the
//! engines that need it is the leader's puller's work, not the API's.
//! `GET` lists the kept images with the nodes and managers that hold them;
//! `DELETE /v1/images/{name}` forgets one (each manager then drops its
//! archive).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;

use super::error::{ApiError, ApiResult, Refusals};
use super::extract::Params;
use crate::replica::archives::MAX_ARCHIVE_BYTES;
use crate::replica::Replica;
use crate::state::image_catalog::{ImageSource, Reference, StoredImage};
use crate::state::{Command, Outcome};
use crate::wire::ImageEntry;

/// The kept images, then the images pulled from registries onto nodes.
#[utoipa::path(
    get, path = "/v1/images", tag = "images", params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Kept and pulled images", body = Vec<ImageEntry>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<ImageEntry>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        let mut entries: Vec<ImageEntry> = s
            .images
            .stored
            .values()
            .map(|image| ImageEntry {
                name: image.name.clone(),
                digest: image.id.clone(),
                size: Some(image.size),
                source: match image.source {
                    ImageSource::Import => "import".into(),
                    ImageSource::Build => "build".into(),
                },
                nodes: image.holders.iter().cloned().collect(),
                managers: image.keepers.iter().copied().collect(),
            })
            .collect();
        let mut pulled: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (node, references) in &s.images.brought {
            for reference in references {
                if reference.contains('@') {
                    pulled.entry(reference).or_default().push(node.clone());
                }
            }
        }
        entries.extend(pulled.into_iter().map(|(reference, nodes)| {
            ImageEntry {
                name: reference.to_string(),
                digest: reference
                    .split_once('@')
                    .map_or_else(String::new, |(_, digest)| digest.to_string()),
                size: None,
                source: "registry".into(),
                nodes,
                managers: Vec::new(),
            }
        }));
        entries
    })))
}

#[utoipa::path(
    post, path = "/v1/images", tag = "images",
    params(("name" = Option<String>, Query, description = "The name:tag to keep it as, when the archive names several")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A `docker save` archive (tar)"),
    responses((status = 201, description = "Kept", body = Vec<ImageEntry>), Refusals)
)]
pub async fn import(
    State(replica): State<Arc<Replica>>,
    params: Params,
    body: Body,
) -> ApiResult<Response> {
    let wanted = params.get("name").map(str::to_string);
    if let Some(name) = &wanted {
        Reference::parse(name).map_err(ApiError::bad_request)?;
    }
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let stored = replica
        .archives
        .store(stream, MAX_ARCHIVE_BYTES, None)
        .await
        .map_err(|e| match e {
            crate::replica::archives::ArchiveStoreError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            crate::replica::archives::ArchiveStoreError::Stream(_) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage",
                other.to_string(),
            ),
        })?;
    let path = stored.path.clone();
    let images = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        crate::image_archive::inspect(&mut file)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tags: Vec<&String> = images.iter().flat_map(|i| &i.repo_tags).collect();
    let (name, id) = match &wanted {
        Some(name) => images
            .iter()
            .find(|i| i.repo_tags.contains(name))
            .map(|i| (name.clone(), i.id.clone()))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the archive does not tag any image {name}; it has {tags:?}"
                ))
            })?,
        None => match (images.len(), images[0].repo_tags.first()) {
            (1, Some(name)) => (name.clone(), images[0].id.clone()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "say which image to keep with ?name= (the archive tags {tags:?})"
                )))
            }
        },
    };
    Reference::parse(&name).map_err(ApiError::bad_request)?;
    let mut keepers = BTreeSet::from([replica.id]);
    match replica.keep_archive_elsewhere(&stored).await {
        Ok(Some(peer)) => {
            keepers.insert(peer);
        }
        Ok(None) => {}
        Err(reason) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no second manager could keep the archive: {reason}"),
            ))
        }
    }
    let image = StoredImage {
        name: name.clone(),
        id,
        size: stored.size,
        source: ImageSource::Import,
        archive: stored.sha256,
        keepers,
        holders: BTreeSet::new(),
        created_ms: 0,
        version: 0,
    };
    let applied = replica.write(Command::PutStoredImage { image }).await?;
    match applied.outcome {
        Outcome::Done => {
            let image = replica.sm.read(|s| s.images.stored.get(&name).cloned());
            Ok((StatusCode::CREATED, Json(image)).into_response())
        }
        Outcome::Rejected(reason) => Err(ApiError::bad_request(reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

#[utoipa::path(
    delete, path = "/v1/images/{name}", tag = "images",
    params(("name" = String, Path, description = "name:tag of a kept image")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Reference::parse(&name).map_err(ApiError::bad_request)?;
    let users: Vec<String> = replica.sm.read(|s| {
        let Some(image) = s.images.stored.get(&name) else {
            return Vec::new();
        };
        s.services
            .values()
            .filter(|service| {
                service.spec.image == name
                    || s.images
                        .pins
                        .get(&(service.namespace.clone(), service.name.clone()))
                        .is_some_and(|pins| pins.iter().any(|p| p.reference == image.id))
            })
            .map(|service| format!("{}/{}", service.namespace, service.name))
            .collect()
    });
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "image_in_use",
            format!(
                "{name} is used by {} (now or as the version to roll back to); change or remove them first",
                users.join(", ")
            ),
        ));
    }
    match replica
        .write(Command::RemoveStoredImage { name: name.clone() })
        .await?
        .outcome
    {
        Outcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!(
            "the cluster keeps no image {name}"
        ))),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// The header a follower names the leader's API address in, when it
/// refuses work only the leader does (a build).
pub const LEADER_HEADER: &str = "x-raftvisor-leader";

/// `POST /v1/images/build?tag=NAME:TAG`, the body a build context (a tar
/// with a Dockerfile at its root): built on a node the leader picks; the
/// answer streams the build's output line by line and ends with one JSON
/// line, `{"image": …}` or `{"error": "…"}`. Only the leader builds: another
/// replica answers 421 `not_leader` with the leader in [`LEADER_HEADER`].
#[utoipa::path(
    post, path = "/v1/images/build", tag = "images",
    params(("tag" = String, Query, description = "name:tag of the image to build")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A build context (tar) with a Dockerfile at its root"),
    responses((status = 200, description = "The build's output, line by line, ending in one JSON line", content_type = "text/plain", body = String), Refusals)
)]
pub async fn build(
    State(replica): State<Arc<Replica>>,
    params: Params,
    body: Body,
) -> ApiResult<Response> {
    let tag = params
        .get("tag")
        .ok_or_else(|| ApiError::bad_request("say what to call the image: ?tag=NAME:TAG"))?
        .to_string();
    Reference::parse(&tag).map_err(ApiError::bad_request)?;
    let leader = replica.leader();
    if leader.as_ref().map(|(id, _)| *id) != Some(replica.id) {
        let mut error = ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_leader",
            match &leader {
                Some((id, node)) => format!(
                    "builds run on the leader: manager {id} at {}",
                    node.api_addr
                ),
                None => "builds run on the leader, and there is none right now".to_string(),
            },
        )
        .into_response();
        if let Some(addr) =
            leader.and_then(|(_, node)| axum::http::HeaderValue::from_str(&node.api_addr).ok())
        {
            error.headers_mut().insert(LEADER_HEADER, addr);
        }
        return Ok(error);
    }
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let context = replica
        .archives
        .store(stream, MAX_ARCHIVE_BYTES, None)
        .await
        .map_err(|e| ApiError::bad_request(format!("the build context: {e}")))?;
    let (log, lines) = tokio::sync::mpsc::unbounded_channel();
    let (done, result) = tokio::sync::oneshot::channel();
    let request = crate::replica::builds::BuildRequest {
        context: context.path.clone(),
        tag,
        log,
        done,
    };
    if replica.builds.submit(request).is_err() {
        let _ = tokio::fs::remove_file(&context.path).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many builds are waiting; try again later",
        ));
    }
    let answer = futures::stream::unfold(
        (lines, Some(result), Some(context.path)),
        |(mut lines, result, context)| async move {
            if let Some(line) = lines.recv().await {
                return Some((
                    Ok::<_, std::io::Error>(format!("{line}\n")),
                    (lines, result, context),
                ));
            }
            let result = result?;
            if let Some(path) = &context {
                let _ = tokio::fs::remove_file(path).await;
            }
            let last = match result.await {
                Ok(Ok(image)) => serde_json::json!({ "image": image }),
                Ok(Err(reason)) => serde_json::json!({ "error": reason }),
                Err(_) => {
                    serde_json::json!({ "error": "the leader stopped before the build ended; build again" })
                }
            };
            Some((Ok(format!("{last}\n")), (lines, None, None)))
        },
    );
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(answer))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
