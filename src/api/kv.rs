//! Consul's KV HTTP API on `/v1/kv/{key}`, so Consul clients work
//! unchanged: JSON entries with a base64 `Value`, `?raw`, `?keys`
//! (with `?separator`), `?recurse`, `?cas`, `?flags`, `X-Consul-Index`
//! blocking reads (`?index=N&wait=30s`) and locks (`?acquire=<session>`,
//! `?release=<session>`; entries show `Session` and `LockIndex`; sessions
//! are [`super::sessions`]). Indexes are Raft log indexes.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;

use super::blocking::{consul_headers, Blocking};
use super::error::{ApiError, ApiResult, ConsulRefusals, Refusals};
use super::extract::{ConsulDialect, Params};
use crate::auth::scope::Scope;
use crate::replica::Replica;
use crate::state::{validate, Command, KvEntry, Outcome, State as Model};
use crate::wire::ConsulEntry;

/// What a KV read answers in JSON: the entries, or with `?keys` their
/// names (the description's type; answers are built from the state).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum KvRead {
    Entries(Vec<ConsulEntry<'static>>),
    Keys(Vec<String>),
}

/// `entry` at `key` as Consul shows it, with its lock when it has one.
fn consul_entry<'a>(model: &'a Model, key: &'a str, entry: &KvEntry) -> ConsulEntry<'a> {
    let lock = model.sessions.lock_of(key);
    ConsulEntry {
        lock_index: lock.map_or(0, |l| l.lock_index),
        key: Cow::Borrowed(key),
        flags: entry.flags,
        value: (!entry.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
        create_index: entry.create_index,
        modify_index: entry.modify_index,
        session: lock.and_then(|l| l.session.as_deref()).map(Cow::Borrowed),
    }
}

pub async fn get_root(
    state: State<Arc<Replica>>,
    scope: Scope,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    get(state, Path(String::new()), scope, params, headers).await
}

/// Refuses a write (or a single-key read) of `key` outside the token's
/// prefixes. Listings of a wider prefix are filtered instead.
fn reach(scope: &Scope, key: &str) -> ApiResult<()> {
    if scope.allows_key(key) {
        Ok(())
    } else {
        Err(ApiError::out_of_reach(scope, &format!("KV key {key:?}")))
    }
}

#[utoipa::path(
    get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key (or prefix)"),
        ("recurse" = Option<bool>, Query, description = "Every key under the prefix"),
        ("keys" = Option<bool>, Query, description = "Only the key names"),
        ("separator" = Option<String>, Query, description = "With `keys`: group names up to this"),
        ("raw" = Option<bool>, Query, description = "The bare value"),
        ("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses(
        (status = 200, description = "Entries (`?keys`: names; `?raw`: the value)",
            content((KvRead = "application/json"), (Vec<u8> = "application/octet-stream")),
            headers(("X-Consul-Index" = u64, description = "Raft index of the answer"))),
        (status = 404, description = "No such key (an empty answer, as Consul's)"),
        ConsulRefusals,
    )
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path(key): Path<String>,
    scope: Scope,
    params: Params,
    _headers: HeaderMap,
) -> ApiResult<Response> {
    let recurse = params.has("recurse") || params.has("keys");
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request(
            "a key is required unless ?recurse or ?keys is given",
        ));
    }
    if !recurse {
        reach(&scope, &key)?;
    }
    let blocking = Blocking::from_params(&params)?;
    params.read_barrier(&replica).await?;
    blocking
        .wait(&replica, |model| model.kv_read_index(&key, recurse))
        .await;
    let response = replica
        .sm
        .read(|model| render_read(model, &key, &params, recurse, &scope));
    Ok(response)
}

fn render_read(
    model: &Model,
    key: &str,
    params: &Params,
    recurse: bool,
    scope: &Scope,
) -> Response {
    let index = model.kv_read_index(key, recurse);
    let mut response = if params.has("keys") {
        let separator = params.get("separator").filter(|s| !s.is_empty());
        let mut names: Vec<String> = Vec::new();
        for (name, _) in model.kv_prefix(key).filter(|(k, _)| scope.allows_key(k)) {
            let shown = match separator {
                Some(sep) => match name[key.len()..].find(sep) {
                    Some(at) => name[..key.len() + at + sep.len()].to_string(),
                    None => name.clone(),
                },
                None => name.clone(),
            };
            if names.last() != Some(&shown) {
                names.push(shown);
            }
        }
        if names.is_empty() {
            StatusCode::NOT_FOUND.into_response()
        } else {
            Json(names).into_response()
        }
    } else if recurse {
        let entries: Vec<ConsulEntry> = model
            .kv_prefix(key)
            .filter(|(k, _)| scope.allows_key(k))
            .map(|(k, e)| consul_entry(model, k, e))
            .collect();
        if entries.is_empty() {
            StatusCode::NOT_FOUND.into_response()
        } else {
            Json(entries).into_response()
        }
    } else {
        match model.kv.get(key) {
            None => StatusCode::NOT_FOUND.into_response(),
            Some(entry) if params.has("raw") => (
                [("content-type", "application/octet-stream")],
                entry.value.clone(),
            )
                .into_response(),
            Some(entry) => Json(vec![consul_entry(model, key, entry)]).into_response(),
        }
    };
    consul_headers(&mut response, index);
    response
}

#[utoipa::path(
    put, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key"),
        ("cas" = Option<u64>, Query, description = "Only if the key's ModifyIndex is this (0: only if absent)"),
        ("flags" = Option<u64>, Query, description = "Opaque flags stored with the value"),
        ("acquire" = Option<String>, Query, description = "Take the key's lock for this session"),
        ("release" = Option<String>, Query, description = "Give the key's lock back"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value"),
    responses((status = 200, description = "Whether the write happened", body = bool), Refusals)
)]
pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path(key): Path<String>,
    scope: Scope,
    ConsulDialect(consul): ConsulDialect,
    params: Params,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    validate::kv_key(&key).map_err(ApiError::bad_request)?;
    reach(&scope, &key)?;
    replica.config.limits.check_kv(&key, &body).map_err(|e| {
        if e.limit == "max_kv_value_bytes" {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.message)
        } else {
            ApiError::limit(e)
        }
    })?;
    let value = body.to_vec();
    let flags = params.number("flags")?.unwrap_or(0);
    let session = |name: &str| -> ApiResult<Option<String>> {
        match params.get(name) {
            None => Ok(None),
            Some("") => Err(ApiError::bad_request(format!(
                "?{name}= needs a session id"
            ))),
            Some(id) => Ok(Some(id.to_string())),
        }
    };
    let command = match (session("acquire")?, session("release")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("?acquire and ?release are exclusive"))
        }
        (Some(session), None) => Command::KvAcquire {
            key,
            value,
            flags,
            session,
        },
        (None, Some(session)) => Command::KvRelease {
            key,
            value,
            flags,
            session,
        },
        (None, None) => Command::KvPut {
            key,
            value,
            flags,
            cas: params.number("cas")?,
        },
    };
    answer_bool(replica.write(command).await?.outcome, consul)
}

pub async fn delete_root(
    state: State<Arc<Replica>>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    delete(state, Path(String::new()), scope, params).await
}

#[utoipa::path(
    delete, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key (or prefix)"),
        ("recurse" = Option<bool>, Query, description = "Every key under the prefix"),
        ("cas" = Option<u64>, Query, description = "Only if the key's ModifyIndex is this"),
    ),
    responses((status = 200, description = "Whether the delete happened", body = bool), Refusals)
)]
pub async fn delete(
    State(replica): State<Arc<Replica>>,
    Path(key): Path<String>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    let recurse = params.has("recurse");
    if !recurse {
        validate::kv_key(&key).map_err(ApiError::bad_request)?;
    }
    // A recursive delete removes every key under `key`: all of them are
    // within reach exactly when `key` itself lies under a prefix.
    reach(&scope, &key)?;
    let command = Command::KvDelete {
        key,
        cas: params.number("cas")?,
        recurse,
    };
    answer_bool(replica.write(command).await?.outcome, false)
}

/// A KV write's answer; `consul`: the client speaks Consul's dialect.
fn answer_bool(outcome: Outcome, consul: bool) -> ApiResult<Response> {
    match outcome {
        Outcome::Kv(ok) => Ok(Json(ok).into_response()),
        // Consul's words and status, which clients (Patroni) match on to
        // create a new session.
        Outcome::Rejected(reason) if consul && reason.starts_with("invalid session") => {
            Ok((StatusCode::INTERNAL_SERVER_ERROR, reason).into_response())
        }
        Outcome::Rejected(reason) => Err(ApiError::bad_request(reason)),
        Outcome::Refused { code, message } => Err(super::error::refused(&code, message)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}
