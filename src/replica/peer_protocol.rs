//! Which peer protocol is calling the peer port (see
//! [`crate::state::version`]): an axum middleware, inside the identity
//! screen, that reads the protocol a request announces, records it for the
//! sending replica (the leader raises the cluster version from these), and
//! refuses (403, with the reason) a replica whose protocol is below the
//! cluster version — an older build that could not read what the cluster
//! now writes. Every answer announces this replica's own protocol. It never
//! decodes a message.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Replica;
use crate::raft::peer_certs::SENDER_HEADER;
use crate::raft::NodeId;
use crate::state::version::{self, PROTOCOL, PROTOCOL_HEADER};

/// The middleware (see the module text).
pub async fn screen(State(replica): State<Arc<Replica>>, request: Request, next: Next) -> Response {
    let header = request.headers().get(PROTOCOL_HEADER);
    let announced = match header.map(|v| v.to_str()) {
        None => version::parse(None),
        Some(Ok(text)) => version::parse(Some(text)),
        Some(Err(_)) => None,
    };
    let mut response = match announced {
        None => (
            StatusCode::BAD_REQUEST,
            format!("{PROTOCOL_HEADER} must be a peer protocol number (1 or more)"),
        )
            .into_response(),
        Some(protocol) => {
            let sender = request
                .headers()
                .get(SENDER_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<NodeId>().ok());
            if let Some(sender) = sender {
                replica.peers.heard_protocol(sender, protocol);
            }
            let cluster_version = replica.sm.read(|s| s.cluster_version());
            match version::refusal(protocol, cluster_version) {
                Some(why) => {
                    tracing::warn!(?sender, protocol, cluster_version, "peer refused: {why}");
                    (StatusCode::FORBIDDEN, why).into_response()
                }
                None => next.run(request).await,
            }
        }
    };
    response
        .headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL));
    response
}
