//! Request extractors that turn axum's rejections into [`ApiError`]s, and
//! the read-consistency choice every read endpoint shares.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::replica::Replica;

/// JSON body whose errors are API errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
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
