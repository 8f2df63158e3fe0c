//! The axum layer in front of every API route: finds the token of a
//! request (`Authorization: Bearer …`, or Consul's `X-Consul-Token` so
//! Consul clients work), checks it against this replica's state and the
//! role [`super::policy`] asks for and, for a limited token, the routes
//! [`super::scope`] allows; answers 401 (missing, malformed, unknown or
//! revoked token) or 403 (role too weak, route out of the token's reach) in
//! the API's JSON error shape. The request carries the token's [`Scope`]
//! to its handler. Every refusal is logged with the remote address, method, path
//! and the token's public id — never the token, never the query string.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::policy::required_role;
use super::scope::{limited_route, Scope};
use super::token::{public_id, Token};
use crate::api::error::ApiError;
use crate::replica::actor::acting_as;
use crate::replica::Replica;
use crate::state::{Actor, Role};

/// Consul's token header.
pub const CONSUL_TOKEN_HEADER: &str = "x-consul-token";

/// Checks the request's token before the route runs.
pub async fn require_token(
    State(replica): State<Arc<Replica>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    // A git server's hook signs its call instead of holding a token; the
    // route verifies the signature against the pipeline's key.
    if crate::auth::policy::is_signed_webhook(
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        return next.run(request).await;
    }
    let presented = presented_token(request.headers());
    let verdict = check(&replica, presented.as_deref(), needed).and_then(|granted| {
        if let Scope::Limited(limits) = &granted.scope {
            limited_route(request.method(), request.uri().path(), limits)
                .map_err(Refusal::OutOfReach)?;
        }
        Ok(granted)
    });
    let refusal = match verdict {
        Ok(granted) => {
            request.extensions_mut().insert(granted.scope);
            request.extensions_mut().insert(granted.actor.clone());
            // The request's writes name this token in their events.
            return acting_as(granted.actor, next.run(request)).await;
        }
        Err(refusal) => refusal,
    };
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    tracing::warn!(
        remote = %remote,
        method = %request.method(),
        path = %request.uri().path(),
        token_id = presented.as_deref().and_then(public_id).unwrap_or("-"),
        reason = refusal.reason(),
        "API request refused"
    );
    // The body this refusal leaves unread is read by the outer
    // `api::drain` layer before the answer goes out.
    drop(request);
    refusal.into_response()
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    /// Unknown id, wrong secret, or revoked.
    Invalid,
    Forbidden {
        needed: Role,
        has: Role,
    },
    /// A limited token asked for something outside its namespaces.
    OutOfReach(String),
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "no token",
            Refusal::Malformed => "malformed token",
            Refusal::Invalid => "unknown, wrong or revoked token",
            Refusal::Forbidden { .. } => "role too weak",
            Refusal::OutOfReach(_) => "outside the token's namespaces",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let error = match self {
            Refusal::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs an API token (Authorization: Bearer <token> or X-Consul-Token)",
            ),
            Refusal::Malformed | Refusal::Invalid => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API token is not valid (unknown, revoked or malformed)",
            ),
            Refusal::Forbidden { needed, has } => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs a token with the {} role; this token has {}",
                    needed.as_str(),
                    has.as_str()
                ),
            ),
            Refusal::OutOfReach(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
        };
        let unauthorized = error.status == StatusCode::UNAUTHORIZED;
        let mut response = error.into_response();
        if unauthorized {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The token a request carries: the bearer token, else Consul's header.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let consul = headers
        .get(CONSUL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    bearer
        .or(consul)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// What a valid token of sufficient role grants a request.
struct Granted {
    actor: Actor,
    scope: Scope,
}

/// Checks `presented` against this replica's tokens: its role, who it is
/// and what it reaches.
fn check(replica: &Replica, presented: Option<&str>, needed: Role) -> Result<Granted, Refusal> {
    let presented = presented.ok_or(Refusal::Missing)?;
    let token = Token::parse(presented).map_err(|_| Refusal::Malformed)?;
    let stored = replica.sm.read(|s| {
        s.tokens.get(token.id()).map(|t| {
            (
                t.hash,
                t.role,
                t.name.clone(),
                s.token_limits.get(token.id()).cloned(),
            )
        })
    });
    let (role, name, limits) = match stored {
        Some((hash, role, name, limits)) if token.matches(&hash) => (role, name, limits),
        _ => return Err(Refusal::Invalid),
    };
    if role < needed {
        return Err(Refusal::Forbidden { needed, has: role });
    }
    Ok(Granted {
        actor: Actor {
            token_id: token.id().to_string(),
            token_name: name,
        },
        scope: limits.map_or(Scope::Cluster, Scope::Limited),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn finds_bearer_then_consul_token() {
        assert_eq!(presented_token(&headers(&[])), None);
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "bearer  abc ")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("x-consul-token", "xyz")])).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&headers(&[
                ("authorization", "Bearer abc"),
                ("x-consul-token", "xyz")
            ]))
            .as_deref(),
            Some("abc")
        );
        // Other schemes are not tokens.
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(presented_token(&headers(&[("x-consul-token", " ")])), None);
    }
}
