//! Request extractors that turn axum's rejections into [`ApiError`]s, and
//! the read-consistency choice every read endpoint shares.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::scope::Scope;
use crate::replica::Replica;

/// JSON body whose errors are API errors. The content type is not
/// checked, so `curl -d` and clients that omit it work; malformed JSON is a
/// 400, JSON of the wrong shape a 422, a body over the limit a 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("malformed JSON: {inner}"),
                )
            } else {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_json",
                    format!("{}: {inner}", e.path()),
                )
            }
        })?;
        deserializer.end().map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}

/// The reach of the request's token, as the auth layer found it. Every
/// route behind that layer has one; a request without one (a route
/// outside the layer by mistake) is refused, never served with the
/// whole cluster's reach.
impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Scope>().cloned().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "this route is not behind the token check",
            )
        })
    }
}

/// Whether the request speaks Consul's dialect: it authenticated with
/// Consul's `X-Consul-Token` and no bearer token, as Consul clients do.
/// Such clients get Consul's own answers where they match on them (a 500
/// whose text names an invalid session or TTL, a 404 in text); every other
/// client gets raftvisor's answer, a 4xx with a JSON reason.
pub struct ConsulDialect(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for ConsulDialect {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        Ok(ConsulDialect(
            headers.contains_key(crate::auth::middleware::CONSUL_TOKEN_HEADER)
                && !headers.contains_key(axum::http::header::AUTHORIZATION),
        ))
    }
}

/// Query parameters as a map; flags without a value (`?stale`, `?raw`)
/// are present with an empty string, as Consul clients send them.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(map) =
            axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        Ok(Params(map))
    }
}

impl Params {
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional unsigned number parameter.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter {name}={text:?} is not an unsigned integer"
                ))
            }),
        }
    }

    /// Waits for the read consistency asked for: linearizable unless `stale`.
    pub async fn read_barrier(&self, replica: &Replica) -> Result<(), ApiError> {
        if self.has("stale") {
            Ok(())
        } else {
            replica.read_barrier().await.map_err(ApiError::from)
        }
    }
}
