//! `/v1/releases`: blue-green releases (`release create | ls | show |
//! switch | rm`). A switch is one state write; every replica's DNS answers
//! the release's name from the environment it made live once it applies it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::replica::Replica;
use crate::state::releases::{Color, SwitchTarget};
use crate::state::{Command, Outcome};
use crate::wire::{ReleaseBody, ReleaseView, SwitchBody};

fn color(what: &str, value: &str) -> ApiResult<Color> {
    value
        .parse()
        .map_err(|reason: String| ApiError::bad_request(format!("{what}: {reason}")))
}

/// The view of release `name` as this replica's state shows it.
pub(super) fn view(replica: &Replica, name: &str) -> ApiResult<ReleaseView> {
    let domain = replica.config.dns.zone();
    replica
        .sm
        .read(|s| {
            s.releases
                .releases
                .get(name)
                .map(|r| ReleaseView::of(s, r, &domain))
        })
        .ok_or_else(|| ApiError::not_found(format!("release {name} does not exist")))
}

/// Every release.
#[utoipa::path(
    get, path = "/v1/releases", tag = "releases",
    params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The releases", body = Vec<ReleaseView>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<ReleaseView>>> {
    params.read_barrier(&replica).await?;
    let domain = replica.config.dns.zone();
    Ok(Json(replica.sm.read(|s| {
        s.releases
            .releases
            .values()
            .map(|r| ReleaseView::of(s, r, &domain))
            .collect()
    })))
}

/// One release: which environment is live, what runs in each, its switches.
#[utoipa::path(
    get, path = "/v1/releases/{name}", tag = "releases", params(
        ("name" = String, Path, description = "The release's name"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The release", body = ReleaseView), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<ReleaseView>> {
    params.read_barrier(&replica).await?;
    view(&replica, &name).map(Json)
}

/// Creates a release of two namespaces; the entry need not run yet.
#[utoipa::path(
    put, path = "/v1/releases/{name}", tag = "releases",
    params(("name" = String, Path, description = "The release's name (a DNS label)")),
    request_body = ReleaseBody,
    responses((status = 200, description = "Created", body = ReleaseView), Refusals)
)]
pub async fn create(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> ApiResult<Response> {
    let live = match body.live.as_deref() {
        Some(value) => color("live", value)?,
        None => Color::Blue,
    };
    let applied = replica
        .write_and_apply(Command::CreateRelease {
            name: name.clone(),
            entry: body.entry,
            blue: body.blue,
            green: body.green,
            live,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => Ok(Json(view(&replica, &name)?).into_response()),
        other => outcome_response(&format!("release {name}"), other),
    }
}

/// Makes another environment live: one write, answered by every replica's
/// DNS as soon as it applies it. 409 `not_ready` when the entry runs
/// nowhere there (unless `force`), `no_previous` for `back` on a release
/// never switched.
#[utoipa::path(
    post, path = "/v1/releases/{name}/switch", tag = "releases",
    params(("name" = String, Path, description = "The release's name")),
    request_body = SwitchBody,
    responses((status = 200, description = "The release after the switch", body = ReleaseView), Refusals)
)]
pub async fn switch(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SwitchBody>,
) -> ApiResult<Response> {
    let target = match (body.to.as_deref(), body.back) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "to and back name two targets; give one",
            ))
        }
        (Some(value), false) => SwitchTarget::To(color("to", value)?),
        (None, true) => SwitchTarget::Back,
        (None, false) => SwitchTarget::Idle,
    };
    let applied = replica
        .write_and_apply(Command::SwitchRelease {
            name: name.clone(),
            target,
            force: body.force,
            expected_version: body.expected_version,
        })
        .await?;
    match applied.outcome {
        Outcome::Done => Ok(Json(view(&replica, &name)?).into_response()),
        other => outcome_response(&format!("release {name}"), other),
    }
}

/// Forgets a release; both environments keep running.
#[utoipa::path(
    delete, path = "/v1/releases/{name}", tag = "releases",
    params(("name" = String, Path, description = "The release's name")),
    responses((status = 204, description = "Removed"), Refusals)
)]
pub async fn remove(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let applied = replica
        .write_and_apply(Command::RemoveRelease { name: name.clone() })
        .await?;
    outcome_response(&format!("release {name}"), applied.outcome)
}
