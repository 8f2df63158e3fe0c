//! `/v1/debug/failpoints` (admin only, and only in builds with the
//! `failpoints` feature): turn this replica's fail points on and off while
//! it runs, for failure tests. Nothing is forwarded or replicated: each
//! request acts on the replica that receives it. Fail points of the code:
//! `reconcile-stall` (the service loop's round hangs: `return` forever,
//! `return(MS)` for MS milliseconds); `log-append-io` (every Raft log
//! append fails as if out of file descriptors: the replica exits with
//! code 74); `peer-deaf` (no peer request reaches this replica while its
//! own still go out: a one-way partition), `peer-isolated` (no peer
//! traffic in either direction) and the Raft log's crash points
//! `log-crash-*` (the process kills itself at that step of the write path;
//! see the `raft::wal` module).

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::Json;

use super::error::{ApiError, ApiResult};

/// `GET /v1/debug/failpoints`: name → actions of every configured point.
pub async fn list() -> Json<BTreeMap<String, String>> {
    Json(fail::list().into_iter().collect())
}

/// `PUT /v1/debug/failpoints/{name}`: the body is the `fail` crate's
/// action text, e.g. `return(600000)` or `50%return`.
pub async fn set(Path(name): Path<String>, body: String) -> ApiResult<Json<bool>> {
    let actions = body.trim();
    if actions.is_empty() {
        return Err(ApiError::bad_request(
            "the body must name the fail point's actions, e.g. return(600000)",
        ));
    }
    fail::cfg(name.clone(), actions).map_err(|e| {
        ApiError::bad_request(format!("fail point {name}: actions {actions:?}: {e}"))
    })?;
    tracing::warn!(failpoint = %name, actions, "fail point configured");
    Ok(Json(true))
}

/// `DELETE /v1/debug/failpoints/{name}`.
pub async fn remove(Path(name): Path<String>) -> Json<bool> {
    fail::remove(&name);
    tracing::warn!(failpoint = %name, "fail point removed");
    Json(true)
}

/// A `FAILPOINTS` entry that cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailPointsEnvError {
    #[error("FAILPOINTS entry {item:?} is not name=actions")]
    Shape { item: String },
    /// The `fail` crate refused the actions (its reason is text).
    #[error("FAILPOINTS entry {item:?}: {reason}")]
    Actions { item: String, reason: String },
}

/// Configures fail points from `FAILPOINTS` (`name=actions;name=actions`)
/// at agent start.
pub fn configure_from_env() -> Result<(), FailPointsEnvError> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| FailPointsEnvError::Shape { item: item.into() })?;
        fail::cfg(name.trim(), actions.trim()).map_err(|reason| FailPointsEnvError::Actions {
            item: item.into(),
            reason,
        })?;
        tracing::warn!(
            failpoint = name.trim(),
            actions = actions.trim(),
            "fail point configured from FAILPOINTS"
        );
    }
    Ok(())
}
