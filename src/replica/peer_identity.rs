//! Who is calling the peer port: binds every peer request to the Raft id
//! its client certificate names. The TLS handshake already proved a
//! manager certificate of the cluster CA (see [`crate::tls::verify`]);
//! this axum middleware then refuses (403, with the reason) a request
//!
//! * whose certificate names no Raft id (`raftvisor://raft-id/<id>`),
//! * whose sender header ([`SENDER_HEADER`], set by the peer client on
//!   every request) is missing or names another id,
//! * from an id the cluster removed from its membership (the replicated
//!   [`crate::state::State::departed_managers`]; the answer starts with
//!   [`NOT_A_MEMBER`] so the caller learns it was removed),
//! * whose Raft message claims another id: the candidate of a vote, the
//!   leader of an append or a snapshot chunk.
//!
//! So a manager certificate, stolen or kept by a removed replica, can
//! neither speak for another replica nor post commands to the leader.
//! It also records when each member's certificate expires (see
//! [`crate::raft::peer_certs::CertExpiries`]). Without TLS (`insecure = true`) there
//! are no identities to check and every request passes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openraft::Vote;
use serde::Deserialize;

use super::log_limit::LogLimit;
use super::Replica;
use crate::codec;
use crate::raft::network::{paths, NOT_A_MEMBER};
use crate::raft::peer_certs::SENDER_HEADER;
use crate::raft::NodeId;
use crate::tls::certs::raft_id_of;
use crate::tls::serve::PeerCertificates;

/// The first field of every Raft request this port receives.
#[derive(Deserialize)]
struct Claim {
    vote: Vote<NodeId>,
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, reason).into_response()
}

/// The middleware (see the module text).
pub async fn screen(State(replica): State<Arc<Replica>>, request: Request, next: Next) -> Response {
    if replica.config.tls.files().is_none() {
        return next.run(request).await;
    }
    let certs = request
        .extensions()
        .get::<PeerCertificates>()
        .cloned()
        .unwrap_or_default();
    let Some(leaf) = certs.leaf() else {
        return refuse(
            StatusCode::FORBIDDEN,
            "peer identity: no client certificate".into(),
        );
    };
    let id = match raft_id_of(leaf) {
        Ok(id) => id,
        Err(why) => {
            warn_refused(None, &why.to_string());
            return refuse(StatusCode::FORBIDDEN, format!("peer identity: {why}"));
        }
    };
    replica.peers.cert_expiries.record(id, leaf);
    let sender = request
        .headers()
        .get(SENDER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<NodeId>().ok());
    match sender {
        Some(sender) if sender == id => {}
        Some(sender) => {
            let why = format!("the certificate names Raft id {id}, the request claims {sender}");
            warn_refused(Some(id), &why);
            return refuse(StatusCode::FORBIDDEN, format!("peer identity: {why}"));
        }
        None => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("peer identity: no valid {SENDER_HEADER} header"),
            )
        }
    }
    if replica.sm.read(|s| s.departed_managers.contains(&id)) {
        warn_refused(Some(id), "a removed manager");
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{NOT_A_MEMBER}: node {id} was removed from this cluster"),
        );
    }
    let path = request.uri().path();
    if ![paths::VOTE, paths::APPEND, paths::SNAPSHOT].contains(&path) {
        return next.run(request).await;
    }
    // The body limit of the peer router applies here as in the handlers.
    let (parts, body) = request.into_parts();
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(bytes) => bytes,
        Err(rejection) => return rejection.into_response(),
    };
    // An undecodable message is the handler's to answer (400).
    if let Ok(claim) = codec::decode_prefix::<Claim>(&bytes) {
        let claimed = claim.vote.leader_id().voted_for();
        if claimed != Some(id) {
            let why = format!(
                "the certificate names Raft id {id}, the Raft message claims {}",
                claimed.map_or_else(|| "no id".to_string(), |c| c.to_string())
            );
            warn_refused(Some(id), &why);
            return refuse(StatusCode::FORBIDDEN, format!("peer identity: {why}"));
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Logs a refusal at most every 10 s (per certificate id).
fn warn_refused(id: Option<NodeId>, why: &str) {
    static LAST: LogLimit<Option<NodeId>> = LogLimit::new();
    if LAST.due(id, std::time::Instant::now()) {
        tracing::warn!(certificate_id = ?id, reason = why, "peer request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::TypeConfig;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};

    #[test]
    fn the_claimed_id_is_read_from_the_head_of_every_raft_request() {
        let vote = VoteRequest::<NodeId> {
            vote: Vote::new(7, 3),
            last_log_id: None,
        };
        let claim: Claim = codec::decode_prefix(&codec::encode(&vote).unwrap()).unwrap();
        assert_eq!(claim.vote.leader_id().voted_for(), Some(3));
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(9, 2),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let claim: Claim = codec::decode_prefix(&codec::encode(&append).unwrap()).unwrap();
        assert_eq!(claim.vote.leader_id().voted_for(), Some(2));
        assert_eq!(claim.vote.leader_id().term, 9);
    }
}
