//! The peer server on `peer_addr`: receives openraft RPCs (append, vote,
//! snapshot chunks) and leader operations forwarded by other replicas.
//! Appends may carry the leader's supervision progress in a header, which
//! is handed to the replica's watchdog.
//! Bodies are [`crate::codec`]-encoded; it never serves client requests.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::time::Instant;

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};

use super::log_limit::LogLimit;
use super::messages::{LeaderError, LeaderReply, LeaderRequest};
use super::Replica;
use crate::codec;
use crate::raft::network::{paths, NOT_A_MEMBER, PROGRESS_HEADER};
use crate::raft::prevote::{self, PreVoteRequest};
use crate::raft::{NodeId, TypeConfig};

/// Largest peer message accepted (snapshot chunks are the biggest).
const MAX_PEER_BODY: usize = 64 * 1024 * 1024;

/// The peer router for `replica`.
pub fn router(replica: Arc<Replica>) -> Router {
    let router = Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::LEADER, post(leader))
        .route(paths::PREVOTE, post(prevote))
        .route(
            &format!("{}/{{sha256}}", paths::ARCHIVE),
            axum::routing::put(put_archive)
                .get(get_archive)
                .layer(DefaultBodyLimit::max(
                    super::archives::MAX_ARCHIVE_BYTES as usize,
                )),
        )
        // Inside the identity screen: a refused replica is not recorded.
        .layer(axum::middleware::from_fn_with_state(
            replica.clone(),
            super::peer_protocol::screen,
        ))
        // Inside the body limit, which it honours when it reads a message.
        .layer(axum::middleware::from_fn_with_state(
            replica.clone(),
            super::peer_identity::screen,
        ))
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY));
    #[cfg(feature = "failpoints")]
    let router = router.layer(axum::middleware::from_fn(drop_when_partitioned));
    router.with_state(replica)
}

/// Keeps the image archive a manager sends (see [`super::archives`]).
async fn put_archive(
    State(replica): State<Arc<Replica>>,
    axum::extract::Path(sha256): axum::extract::Path<String>,
    body: axum::body::Body,
) -> Response {
    use futures::TryStreamExt;
    if !crate::state::image_catalog::is_sha256_hex(&sha256) {
        return (StatusCode::BAD_REQUEST, "not a SHA-256").into_response();
    }
    if replica.archives.path(&sha256).is_some() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    match replica
        .archives
        .store(stream, super::archives::MAX_ARCHIVE_BYTES, Some(&sha256))
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}

/// Streams an image archive this manager keeps.
async fn get_archive(
    State(replica): State<Arc<Replica>>,
    axum::extract::Path(sha256): axum::extract::Path<String>,
) -> Response {
    let Some(path) = replica.archives.path(&sha256) else {
        return (StatusCode::NOT_FOUND, "no such archive").into_response();
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Fail points `peer-deaf` (nothing reaches this replica's peer server:
/// a one-way partition, since its own calls still go out) and
/// `peer-isolated` (also cuts its calls, see the peer client): requests
/// are held, then refused, as a dropped packet would time out.
#[cfg(feature = "failpoints")]
async fn drop_when_partitioned(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cut =
        fail::eval("peer-deaf", |_| ()).is_some() || fail::eval("peer-isolated", |_| ()).is_some();
    if cut {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        return (StatusCode::SERVICE_UNAVAILABLE, "fail point: partitioned").into_response();
    }
    next.run(request).await
}

/// Decodes the request, runs `handle` and encodes its answer.
async fn exchange<Req, Resp, F, Fut>(body: &[u8], handle: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    match decode(body) {
        Ok(request) => encode_reply(&handle(request).await),
        Err(refusal) => *refusal,
    }
}

fn decode<Req: DeserializeOwned>(body: &[u8]) -> Result<Req, Box<Response>> {
    codec::decode(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("undecodable peer message: {e}"),
            )
                .into_response(),
        )
    })
}

fn encode_reply<Resp: Serialize>(reply: &Resp) -> Response {
    match codec::encode(reply) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode reply: {e}"),
        )
            .into_response(),
    }
}

/// openraft 0.9 has no pre-vote: a replica removed from the cluster (while
/// it was dead, or cut off) that comes back campaigns with ever higher
/// terms, and a vote request it sends would make a member adopt that term
/// and depose its leader. Vote requests from a node outside this replica's
/// membership are therefore refused before openraft sees them. A replica
/// that knows no membership yet (a new member waiting for its first
/// entries) accepts everyone.
///
/// Append and snapshot requests are never refused this way: a replica
/// whose membership is stale (restored from a snapshot older than the
/// leader's own joining) learns the current membership only from those
/// requests, so refusing them would cut it off for good. They cannot
/// disturb the cluster: a removed node never wins an election (the members
/// refuse its votes), so its appends carry an old term that openraft turns
/// down, and the answer's newer term sends it campaigning — into refusals.
fn refuse_non_member(replica: &Replica, sender: Option<NodeId>) -> Option<Response> {
    let sender = sender?;
    if !replica.outside_membership(sender) {
        return None;
    }
    non_member_warning(sender);
    Some(
        (
            StatusCode::FORBIDDEN,
            format!("{NOT_A_MEMBER}: node {sender} is not in this cluster's membership"),
        )
            .into_response(),
    )
}

/// Logs a refused non-member at most every 10 s per node.
fn non_member_warning(sender: NodeId) {
    static LAST: LogLimit<NodeId> = LogLimit::new();
    if LAST.due(sender, Instant::now()) {
        tracing::warn!(
            node = sender,
            "refused Raft messages from a node outside the membership (a removed replica?)"
        );
    }
}

async fn append(
    State(replica): State<Arc<Replica>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(progress) = headers.get(PROGRESS_HEADER).and_then(|v| v.to_str().ok()) {
        replica.watchdog.heard(progress, std::time::Instant::now());
    }
    exchange(&body, |request: AppendEntriesRequest<TypeConfig>| async {
        let from_leader = request.vote.is_committed();
        let reply = replica.raft.append_entries(request).await;
        if from_leader
            && matches!(
                reply,
                Ok(AppendEntriesResponse::Success
                    | AppendEntriesResponse::PartialSuccess(_)
                    | AppendEntriesResponse::Conflict)
            )
        {
            // This replica follows a live leader: it stays loyal a while.
            replica.peers.lease().heard_leader(Instant::now());
        }
        reply
    })
    .await
}

/// Vote requests, refused when their candidate is not a member, and
/// without adopting the candidate's term while this replica is loyal to a
/// live leader or leads one (leader stickiness, Raft thesis §4.2.3).
async fn vote(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    let request: VoteRequest<NodeId> = match decode(&body) {
        Ok(request) => request,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = refuse_non_member(&replica, request.vote.leader_id().voted_for()) {
        return refusal;
    }
    if let Some(sticky) = replica.vote_stickiness() {
        tracing::info!(
            candidate = ?request.vote.leader_id().voted_for(),
            term = request.vote.leader_id().get_term(),
            "vote refused: this replica {sticky}"
        );
        let metrics = replica.metrics();
        let last_log = replica.raft.data_metrics().borrow().last_log;
        let reply: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Ok(VoteResponse::new(metrics.vote, last_log, false));
        return encode_reply(&reply);
    }
    encode_reply(&replica.raft.vote(request).await)
}

/// Pre-vote requests (see [`crate::raft::prevote`]); nothing changes here.
async fn prevote(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    let request: PreVoteRequest = match decode(&body) {
        Ok(request) => request,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = refuse_non_member(&replica, Some(request.candidate)) {
        return refusal;
    }
    let term = replica.metrics().current_term;
    let last_log = replica.raft.data_metrics().borrow().last_log;
    encode_reply(&prevote::answer(
        &request,
        term,
        last_log,
        replica.vote_stickiness(),
    ))
}

async fn snapshot(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    exchange(&body, |request: InstallSnapshotRequest<TypeConfig>| {
        replica.raft.install_snapshot(request)
    })
    .await
}

async fn leader(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    exchange(&body, |request: LeaderRequest| async move {
        let timeout = replica.request_timeout();
        let reply: Result<LeaderReply, LeaderError> =
            tokio::time::timeout(timeout, replica.handle_leader_request(request))
                .await
                .unwrap_or_else(|_| {
                    Err(LeaderError::Unavailable(
                        "the leader could not reach a quorum in time".into(),
                    ))
                });
        reply
    })
    .await
}
