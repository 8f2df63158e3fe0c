//! `/v1/nodes`: the machine inventory — register (PUT), read, list, drain,
//! remove. Liveness is judged by the leader later; this is desired state.
//! A node's `docker_tls` may name files under the managers'
//! `[supervisor] docker_tls_dir` only ([`docker_tls_in_dir`]).

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use super::services::if_match;
use crate::replica::Replica;
use crate::state::{validate, Command, DockerTls, Node, NodeSpec, Outcome};
use crate::wire::DrainBody;

fn check_name(name: &str) -> ApiResult<()> {
    validate::dns_label("node name", name).map_err(ApiError::bad_request)
}

fn node_outcome(name: &str, outcome: Outcome) -> ApiResult<Response> {
    outcome_response(&format!("node {name}"), outcome)
}

#[utoipa::path(
    get, path = "/v1/nodes", tag = "nodes", params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Nodes", body = Vec<Node>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<Node>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(
        replica.sm.read(|s| s.nodes.values().cloned().collect()),
    ))
}

#[utoipa::path(
    get, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "Node name"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The node", body = Node), Refusals)
)]
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

#[utoipa::path(
    put, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "Node name"), ("If-Match" = Option<String>, Header, description = "Only if the current version is this")),
    request_body = NodeSpec,
    responses((status = 200, description = "The node as registered", body = Node), Refusals)
)]
pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(mut spec): JsonBody<NodeSpec>,
) -> ApiResult<Response> {
    check_name(&name)?;
    replica
        .config
        .limits
        .check_node_spec(&spec)
        .map_err(ApiError::limit)?;
    validate::node_spec(&spec).map_err(ApiError::bad_request)?;
    if let Some(tls) = &spec.docker_tls {
        let dir = replica.config.supervisor.docker_tls_dir.as_deref();
        spec.docker_tls =
            Some(docker_tls_in_dir(dir, tls).map_err(|e| ApiError::bad_request(e.to_string()))?);
    }
    let applied = replica
        .write(Command::PutNode {
            name: name.clone(),
            spec,
            expected_version: if_match(&headers)?,
        })
        .await?;
    node_outcome(&name, applied.outcome)
}

/// Why a node's `docker_tls` is refused (a 400's reason).
#[derive(Debug, thiserror::Error)]
pub enum DockerTlsError {
    #[error(
        "docker_tls needs [supervisor] docker_tls_dir in the managers' config: \
         TLS files are accepted only under that directory"
    )]
    NoDir,
    #[error("docker_tls_dir {} cannot be used on this manager: {source}", dir.display())]
    DirUnusable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "docker_tls.{field} {given:?} must name a file under docker_tls_dir {}: {why}",
        dir.display()
    )]
    File {
        field: &'static str,
        given: String,
        dir: PathBuf,
        why: FileRule,
    },
}

/// The rule a `docker_tls` file breaks.
#[derive(Debug, thiserror::Error)]
pub enum FileRule {
    #[error("`..` is not allowed")]
    ParentDir,
    #[error("this path is outside it")]
    Outside,
    /// The path does not resolve (missing, unreadable).
    #[error("{0}")]
    Unresolved(#[source] std::io::Error),
    #[error("a symbolic link leads outside it")]
    LinkOutside,
    #[error("not a file")]
    NotAFile,
}

/// `tls` with each file resolved inside `dir` (the `docker_tls_dir` of
/// this manager's config): a relative name is taken inside it, an absolute
/// path must lie under it, `..` is refused, and the file it names —
/// symbolic links followed — must exist inside it. The files hold the
/// managers' client key, and the leader reads and presents them to the
/// node's engine: a path anywhere else would let whoever registers a node
/// make the managers read any file. Without a directory, refused.
pub fn docker_tls_in_dir(
    dir: Option<&FsPath>,
    tls: &DockerTls,
) -> Result<DockerTls, DockerTlsError> {
    let Some(dir) = dir else {
        return Err(DockerTlsError::NoDir);
    };
    let real_dir = dir
        .canonicalize()
        .map_err(|source| DockerTlsError::DirUnusable {
            dir: dir.to_path_buf(),
            source,
        })?;
    let resolve = |field: &'static str, given: &str| -> Result<String, DockerTlsError> {
        let refused = |why| DockerTlsError::File {
            field,
            given: given.to_string(),
            dir: dir.to_path_buf(),
            why,
        };
        let path = FsPath::new(given);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(refused(FileRule::ParentDir));
        }
        let full: PathBuf = if path.is_absolute() {
            if !(path.starts_with(dir) || path.starts_with(&real_dir)) {
                return Err(refused(FileRule::Outside));
            }
            path.to_path_buf()
        } else {
            // `./a` is stored as `<dir>/a`.
            path.components()
                .filter(|c| *c != Component::CurDir)
                .fold(real_dir.clone(), |full, c| full.join(c))
        };
        let real = full
            .canonicalize()
            .map_err(|e| refused(FileRule::Unresolved(e)))?;
        if !real.starts_with(&real_dir) {
            return Err(refused(FileRule::LinkOutside));
        }
        if !real.is_file() {
            return Err(refused(FileRule::NotAFile));
        }
        Ok(full.display().to_string())
    };
    Ok(DockerTls {
        ca_cert: resolve("ca_cert", &tls.ca_cert)?,
        cert: resolve("cert", &tls.cert)?,
        key: resolve("key", &tls.key)?,
    })
}

/// `DELETE /v1/nodes/{name}[?force=true]`: 204 when removed; 409
/// `node_not_drained` while instances are placed on it (or it is down);
/// with `force`, 202 and the node, now `retired`: its instances move, its
/// containers are removed, then the node itself.
#[utoipa::path(
    delete, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "Node name"), ("force" = Option<bool>, Query, description = "Retire a node that still has instances")),
    responses((status = 204, description = "Removed"), (status = 202, description = "Retired: its instances move", body = Node), Refusals)
)]
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

/// `POST /v1/nodes/{name}/drain`, optional body `{"cancel": true}`.
#[utoipa::path(
    post, path = "/v1/nodes/{name}/drain", tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    request_body(content = Option<DrainBody>, description = "Optional; `{\"cancel\": true}` ends a drain"),
    responses((status = 200, description = "The node", body = Node), Refusals)
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca_cert: &str, cert: &str, key: &str) -> DockerTls {
        DockerTls {
            ca_cert: ca_cert.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    #[test]
    fn docker_tls_files_only_under_the_configured_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("docker-tls");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for name in ["ca.pem", "cert.pem", "key.pem", "sub/key.pem"] {
            std::fs::write(dir.join(name), "pem").unwrap();
        }
        std::fs::write(root.path().join("outside.pem"), "pem").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.pem"), dir.join("escape.pem"))
            .unwrap();
        std::os::unix::fs::symlink(dir.join("key.pem"), dir.join("inside-link.pem")).unwrap();
        let real = dir.canonicalize().unwrap();

        // Relative names resolve inside the directory; absolute paths
        // under it stay as given; links that stay inside are fine.
        let ok =
            docker_tls_in_dir(Some(&dir), &tls("ca.pem", "./cert.pem", "sub/key.pem")).unwrap();
        assert_eq!(ok.ca_cert, real.join("ca.pem").display().to_string());
        assert_eq!(ok.cert, real.join("cert.pem").display().to_string());
        assert_eq!(ok.key, real.join("sub/key.pem").display().to_string());
        let absolute = dir.join("key.pem").display().to_string();
        let ok =
            docker_tls_in_dir(Some(&dir), &tls("ca.pem", "inside-link.pem", &absolute)).unwrap();
        assert_eq!(ok.key, absolute);

        let refused = |tls: DockerTls, why: &str| {
            let error = docker_tls_in_dir(Some(&dir), &tls).unwrap_err().to_string();
            assert!(
                error.contains("docker_tls_dir") && error.contains(why),
                "{error}"
            );
        };
        refused(tls("../outside.pem", "cert.pem", "key.pem"), "`..`");
        refused(tls("ca.pem", "sub/../../outside.pem", "key.pem"), "`..`");
        let outside = root.path().join("outside.pem").display().to_string();
        refused(tls("ca.pem", "cert.pem", &outside), "outside it");
        refused(tls("ca.pem", "cert.pem", "/etc/passwd"), "outside it");
        refused(tls("ca.pem", "escape.pem", "key.pem"), "symbolic link");
        refused(tls("ca.pem", "cert.pem", "missing.pem"), "No such file");
        refused(tls("ca.pem", "cert.pem", "sub"), "not a file");
        // A sibling directory whose name merely starts like the dir's.
        let sibling = root.path().join("docker-tls-other");
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(sibling.join("key.pem"), "pem").unwrap();
        refused(
            tls(
                "ca.pem",
                "cert.pem",
                &sibling.join("key.pem").display().to_string(),
            ),
            "outside it",
        );

        // No directory configured: docker_tls is refused outright.
        let error = docker_tls_in_dir(None, &tls("ca.pem", "cert.pem", "key.pem"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "docker_tls needs [supervisor] docker_tls_dir in the managers' config: \
             TLS files are accepted only under that directory"
        );
    }
}
