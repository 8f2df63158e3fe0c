//! `/v1/health`, `/v1/cluster` (status and membership changes),
//! and `/v1/events`: what an operator asks about the control plane
//! itself (its metrics are [`super::metrics`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::auth::scope::Scope;
use crate::raft::backup::{Backup, BackupHeader};
use crate::raft::PeerNode;
use crate::replica::{now_ms, Replica};
use crate::state::{Event, ManagerTemplate};
use crate::wire::{AddMember, ClusterStatus, Health, MemberStatus, MembershipChanged};

/// `GET /v1/health`: 200 while this replica serves (`ok`, or `removed`
/// for a replica taken out of the cluster), 503 `failed` once its Raft core
/// stopped on a storage error or a panic (the agent then exits, see
/// [`crate::raft::fatal::exit_code_of`]).
#[utoipa::path(
    get, path = "/v1/health", tag = "cluster", security(()),
    responses(
        (status = 200, description = "This replica serves (`ok`, or `removed` from the cluster)", body = Health),
        (status = 503, description = "This replica's Raft core stopped", body = Health),
    )
)]
pub async fn health(State(replica): State<Arc<Replica>>) -> Response {
    let fatal = replica.metrics().running_state.err();
    if let Some(fatal) = fatal.filter(|f| crate::raft::fatal::exit_code_of(f).is_some()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "failed".into(),
                id: replica.id,
                reason: Some(format!("raft stopped: {fatal}")),
            }),
        )
            .into_response();
    }
    Json(Health {
        status: if replica.removed().is_some() {
            "removed"
        } else {
            "ok"
        }
        .into(),
        id: replica.id,
        reason: replica.removed().map(str::to_string),
    })
    .into_response()
}

#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "This replica's view of the cluster", body = ClusterStatus), Refusals)
)]
pub async fn status(State(replica): State<Arc<Replica>>) -> Json<ClusterStatus> {
    let metrics = replica.metrics();
    let contacts = replica.peers.last_contact();
    let expiries = replica.peers.cert_expiries.all();
    let protocols = replica.peers.announced();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberStatus {
            id: *id,
            api_addr: node.api_addr.clone(),
            peer_addr: node.peer_addr.clone(),
            voter: voters.contains(id),
            last_contact_ms: if *id == replica.id {
                Some(0)
            } else {
                contacts.get(id).map(|d| d.as_millis() as u64)
            },
            certificate_expires: expiries
                .get(id)
                .map(|secs| crate::dates::rfc3339_secs(*secs)),
            protocol: if *id == replica.id {
                Some(crate::state::version::PROTOCOL)
            } else {
                protocols
                    .get(id)
                    .filter(|a| a.age <= crate::state::version::ANNOUNCEMENT_FRESH_FOR)
                    .map(|a| a.protocol)
            },
        })
        .collect();
    let progress = metrics.current_leader.and_then(|leader| {
        replica
            .watchdog
            .leader_progress(leader, metrics.current_term, std::time::Instant::now())
    });
    let progress_ms_ago = progress.map(|p| p.ago.as_millis() as u64);
    Json(ClusterStatus {
        leader_last_progress: progress_ms_ago
            .map(|ago| crate::dates::rfc3339_ms(now_ms().saturating_sub(ago))),
        leader_progress_ms_ago: progress_ms_ago,
        stall_after_ms: replica.watchdog.stall_after().map(|d| d.as_millis() as u64),
        quorum_contact_ms: replica
            .quorum_contact()
            .flatten()
            .map(|d| d.as_millis() as u64),
        lease_ms: replica.peers.lease().duration().as_millis() as u64,
        this_id: replica.id,
        cluster_id: replica.sm.read(|s| s.cluster_id.clone()),
        cluster_version: replica.sm.read(|s| s.cluster_version()),
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        state: format!("{:?}", metrics.state).to_lowercase(),
        last_log_index: metrics.last_log_index.unwrap_or(0),
        applied_index: replica.sm.applied_index(),
        apply_lag: metrics
            .last_log_index
            .unwrap_or(0)
            .saturating_sub(replica.sm.applied_index()),
        snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
        members,
        data_dir: replica.config.data_dir.display().to_string(),
    })
}

#[utoipa::path(
    post, path = "/v1/cluster/members", tag = "cluster", request_body = AddMember,
    responses((status = 200, description = "Committed at this log index", body = MembershipChanged), Refusals)
)]
pub async fn add_member(
    State(replica): State<Arc<Replica>>,
    JsonBody(body): JsonBody<AddMember>,
) -> ApiResult<Json<MembershipChanged>> {
    if body.id == 0 {
        return Err(ApiError::bad_request("id must be a positive integer"));
    }
    for addr in [&body.api_addr, &body.peer_addr] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad_request(format!(
                "{addr:?} is not an IP:port address"
            )));
        }
    }
    let node = PeerNode {
        peer_addr: body.peer_addr,
        api_addr: body.api_addr,
    };
    let index = replica.add_member(body.id, node, body.voter).await?;
    Ok(Json(MembershipChanged { index }))
}

#[utoipa::path(
    delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = String, Path, description = "Raft id of the member")),
    responses((status = 200, description = "Committed at this log index", body = MembershipChanged), Refusals)
)]
pub async fn remove_member(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
) -> ApiResult<Json<MembershipChanged>> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!("member id {id:?} is not a positive integer"))
    })?;
    let index = replica.remove_member(id).await?;
    Ok(Json(MembershipChanged { index }))
}

/// `GET /v1/cluster/backup` (admin): a backup file of the replicated state
/// at one applied index — services, nodes, instances, KV, tokens,
/// templates, everything Raft holds — with the cluster id and a SHA-256.
/// After a read barrier (unless `stale`), so it holds every write
/// acknowledged before the call. `raftvisor cluster restore` seeds a new
/// cluster from it.
#[utoipa::path(
    get, path = "/v1/cluster/backup", tag = "cluster",
    params(("stale" = Option<bool>, Query, description = "The state as this replica has it, without a read barrier")),
    responses(
        (status = 200, description = "The backup file", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("X-Raftvisor-Backup-Index" = u64, description = "The applied index the state is at"))),
        Refusals,
    )
)]
pub async fn backup(State(replica): State<Arc<Replica>>, params: Params) -> ApiResult<Response> {
    params.read_barrier(&replica).await?;
    let (image, at) = replica.sm.image_now();
    let header = BackupHeader {
        cluster_id: image.cluster_id.clone(),
        index: at.map_or(0, |l| l.index),
        term: at.map_or(0, |l| l.leader_id.term),
        taken_ms: now_ms(),
        taken_by: replica.id,
    };
    let index = header.index;
    let bytes = tokio::task::spawn_blocking(move || Backup { header, image }.encode())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [
            ("content-type", "application/octet-stream".to_string()),
            ("x-raftvisor-backup-index", index.to_string()),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/events", tag = "cluster",
    params(("since" = Option<u64>, Query, description = "Only events after this index"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Recent events, oldest first", body = Vec<Event>), Refusals)
)]
pub async fn events(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    params: Params,
) -> ApiResult<Json<Vec<Event>>> {
    params.read_barrier(&replica).await?;
    let since = params.number("since")?.unwrap_or(0);
    Ok(Json(replica.sm.read(|s| {
        s.events
            .iter()
            .filter(|e| e.index > since && scope.allows_event(e))
            .cloned()
            .collect()
    })))
}

/// Prometheus text: the process-wide recorder plus Raft gauges read now.
/// `GET /v1/cluster/plan`: the manager template (the cluster file
/// bootstrap recorded, kept current by manager replacement).
#[utoipa::path(
    get, path = "/v1/cluster/plan", tag = "cluster", params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The manager template", body = ManagerTemplate), Refusals)
)]
pub async fn plan(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<ManagerTemplate>> {
    params.read_barrier(&replica).await?;
    replica
        .sm
        .read(|s| s.manager_template.clone())
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "this cluster has no manager template (raftvisor bootstrap records one)",
            )
        })
}

/// `PUT /v1/cluster/plan` (admin): records the manager template.
#[utoipa::path(
    put, path = "/v1/cluster/plan", tag = "cluster", request_body = ManagerTemplate,
    responses((status = 200, description = "Recorded at this log index", body = MembershipChanged), Refusals)
)]
pub async fn put_plan(
    State(replica): State<Arc<Replica>>,
    JsonBody(template): JsonBody<ManagerTemplate>,
) -> ApiResult<Json<serde_json::Value>> {
    template.validate().map_err(ApiError::bad_request)?;
    let applied = replica
        .write(crate::state::Command::PutManagerTemplate { template })
        .await?;
    Ok(Json(serde_json::json!({"index": applied.index})))
}
