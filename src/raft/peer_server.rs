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

use super::network::paths;
use crate::codec;
use crate::reconcile::watchdog::PROGRESS_HEADER;
use crate::replica::messages::{LeaderError, LeaderReply, LeaderRequest};
use crate::replica::Replica;

/// Largest peer message accepted (snapshot chunks are the biggest).
const MAX_PEER_BODY: usize = 64 * 1024 * 1024;

/// The peer router for `replica`.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::LEADER, post(leader))
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY))
        .with_state(replica)
}

/// Decodes the request, runs `handle` and encodes its answer.
async fn exchange<Req, Resp, F, Fut>(body: &[u8], handle: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let request = match codec::decode(body) {
        Ok(request) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("undecodable peer message: {e}"),
            )
                .into_response()
        }
    };
    match codec::encode(&handle(request).await) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode reply: {e}"),
        )
            .into_response(),
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
    exchange(&body, |request| async move {
        replica.raft.append_entries(request).await
    })
    .await
}

async fn vote(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    exchange(
        &body,
        |request| async move { replica.raft.vote(request).await },
    )
    .await
}

async fn snapshot(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    exchange(&body, |request| async move {
        replica.raft.install_snapshot(request).await
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
