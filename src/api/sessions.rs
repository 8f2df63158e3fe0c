//! Consul's session API (`/v1/session/create|destroy|renew|info|node|list`)
//! and transactions (`/v1/txn`), so Consul clients can take locks (KV
//! `?acquire=` / `?release=`, in [`super::kv`]) and elect leaders — Patroni
//! uses raftvisor as its DCS this way. Every change is a Raft write (a
//! renewal too, so a renewal and the leader's expiry of the same session
//! are ordered); TTLs run out on the leader's clock
//! ([`crate::reconcile::session_ttl`]).
//!
//! Where Consul's clients depend on Consul's own error shapes, these
//! routes answer them to clients that speak Consul's dialect
//! ([`ConsulDialect`]) rather than raftvisor's JSON errors: an unknown
//! session on renewal is a 404 with text, an invalid TTL a 500 whose text
//! starts with `Invalid Session TTL`, as clients match on those. Other
//! clients get a 404 or 400 with a JSON reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use super::blocking::{consul_headers, parse_duration, Blocking};
use super::error::{ApiError, ApiResult, Refusals};
use super::extract::{ConsulDialect, Params};
use crate::auth::scope::Scope;
use crate::replica::Replica;
use crate::state::kv_txn::{Op, TxnOutcome, Verb, MAX_OPS};
use crate::state::sessions::{Behavior, Session, SessionRequest, DEFAULT_LOCK_DELAY_MS};
use crate::state::{Command, Outcome, State as Model};

/// A session as Consul shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SessionView {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub node: String,
    /// Nanoseconds, as Consul answers.
    pub lock_delay: u64,
    pub behavior: Behavior,
    #[serde(rename = "TTL")]
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Option<Vec<Value>>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<&Session> for SessionView {
    fn from(session: &Session) -> SessionView {
        SessionView {
            id: session.id.clone(),
            name: session.name.clone(),
            node: session.node.clone(),
            lock_delay: session.lock_delay_ms.saturating_mul(1_000_000),
            behavior: session.behavior,
            ttl: session
                .ttl_ms
                .map(|ms| {
                    if ms % 1000 == 0 {
                        format!("{}s", ms / 1000)
                    } else {
                        format!("{ms}ms")
                    }
                })
                .unwrap_or_default(),
            node_checks: session.checks.clone(),
            service_checks: None,
            create_index: session.create_index,
            modify_index: session.modify_index,
        }
    }
}

/// The index session reads report and block on.
fn sessions_index(model: &Model) -> u64 {
    model.sessions.index.max(1)
}

/// The body of a session create, Consul's keys in any case.
fn session_request(replica: &Replica, body: &[u8]) -> Result<SessionRequest, ApiError> {
    let fields: BTreeMap<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        BTreeMap::new()
    } else {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(ApiError::bad_request("a session is a JSON object"));
        };
        object
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    };
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name} must be a string, not {other}"
            ))),
        }
    };
    let duration_ms = |name: &str| -> Result<Option<u64>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => parse_duration(s)
                .map(|d| Some(d.as_millis() as u64))
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}"))),
            // Consul: small numbers are seconds, large ones nanoseconds.
            Some(Value::Number(n)) => {
                let n = n.as_u64().ok_or_else(|| {
                    ApiError::bad_request(format!("{name} must be a non-negative duration"))
                })?;
                Ok(Some(if n < 1000 { n * 1000 } else { n / 1_000_000 }))
            }
            Some(other) => Err(ApiError::bad_request(format!(
                "{name} must be a duration like \"15s\", not {other}"
            ))),
        }
    };
    let checks = |name: &str| -> Result<Option<Vec<String>>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, ApiError>>()
                .map(Some),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name} must be a list, not {other}"
            ))),
        }
    };
    let behavior = match text("behavior")?.as_deref() {
        None | Some("") | Some("release") => Behavior::Release,
        Some("delete") => Behavior::Delete,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "behavior {other:?} is neither \"release\" nor \"delete\""
            )))
        }
    };
    let mut all_checks = Vec::new();
    let named = [checks("checks")?, checks("nodechecks")?];
    if named.iter().all(Option::is_none) {
        // Consul's default: the session lives as long as its node does.
        all_checks.push("serfHealth".to_string());
    }
    all_checks.extend(named.into_iter().flatten().flatten());
    Ok(SessionRequest {
        id: uuid::Uuid::new_v4().to_string(),
        name: text("name")?.unwrap_or_default(),
        node: text("node")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("manager-{}", replica.id)),
        lock_delay_ms: duration_ms("lockdelay")?.unwrap_or(DEFAULT_LOCK_DELAY_MS),
        behavior,
        ttl_ms: duration_ms("ttl")?,
        checks: all_checks,
    })
}

/// Consul's answer to a TTL out of bounds, which clients match on.
fn invalid_ttl(reason: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response()
}

#[utoipa::path(
    put, path = "/v1/session/create", tag = "consul",
    request_body(content = Option<Object>, description = "Consul's session body: Name, Node, TTL, LockDelay, Behavior, Checks"),
    responses((status = 200, description = "The new session's id", body = Object), Refusals)
)]
pub async fn create(
    State(replica): State<Arc<Replica>>,
    ConsulDialect(consul): ConsulDialect,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let request = session_request(&replica, &body?)?;
    if let Err(reason) = request.check() {
        if consul && reason.starts_with("Invalid Session TTL") {
            return Ok(invalid_ttl(reason));
        }
        return Err(ApiError::bad_request(reason));
    }
    let id = request.id.clone();
    match replica
        .write(Command::CreateSession { request })
        .await?
        .outcome
    {
        Outcome::Done => Ok(Json(serde_json::json!({ "ID": id })).into_response()),
        Outcome::Rejected(reason) => Err(ApiError::bad_request(reason)),
        Outcome::Refused { code, message } => Err(super::error::refused(&code, message)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected outcome {outcome:?}"),
    )
}

#[utoipa::path(
    put, path = "/v1/session/destroy/{id}", tag = "consul",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "Destroyed (or already gone)", body = bool), Refusals)
)]
pub async fn destroy(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
) -> ApiResult<Json<bool>> {
    match replica
        .write(Command::DestroySession {
            id,
            if_renewals: None,
            reason: "destroyed".into(),
        })
        .await?
        .outcome
    {
        Outcome::Done | Outcome::NotFound => Ok(Json(true)),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(
    put, path = "/v1/session/renew/{id}", tag = "consul",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "The renewed session", body = Vec<SessionView>), Refusals)
)]
pub async fn renew(
    State(replica): State<Arc<Replica>>,
    ConsulDialect(consul): ConsulDialect,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match replica
        .write(Command::RenewSession { id: id.clone() })
        .await?
        .outcome
    {
        Outcome::Session(session) => {
            Ok(Json(vec![SessionView::from(session.as_ref())]).into_response())
        }
        Outcome::NotFound if consul => Ok((
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        )
            .into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!("Session id '{id}' not found"))),
        other => Err(unexpected(other)),
    }
}

/// Answers the sessions `select` keeps, after the usual barrier and block.
async fn read_sessions(
    replica: &Replica,
    params: &Params,
    select: impl Fn(&Session) -> bool,
) -> ApiResult<Response> {
    let blocking = Blocking::from_params(params)?;
    params.read_barrier(replica).await?;
    blocking.wait(replica, sessions_index).await;
    let (index, sessions) = replica.sm.read(|model| {
        (
            sessions_index(model),
            model
                .sessions
                .sessions
                .values()
                .filter(|s| select(s))
                .map(SessionView::from)
                .collect::<Vec<_>>(),
        )
    });
    let mut response = Json(sessions).into_response();
    consul_headers(&mut response, index);
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/session/info/{id}", tag = "consul",
    params(("id" = String, Path, description = "Session id"), ("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The session (empty when unknown)", body = Vec<SessionView>), Refusals)
)]
pub async fn info(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    read_sessions(&replica, &params, |s| s.id == id).await
}

#[utoipa::path(
    get, path = "/v1/session/node/{node}", tag = "consul",
    params(("node" = String, Path, description = "Node name"), ("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The node's sessions", body = Vec<SessionView>), Refusals)
)]
pub async fn of_node(
    State(replica): State<Arc<Replica>>,
    Path(node): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    read_sessions(&replica, &params, |s| s.node == node).await
}

#[utoipa::path(
    get, path = "/v1/session/list", tag = "consul",
    params(("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Every session", body = Vec<SessionView>), Refusals)
)]
pub async fn list(State(replica): State<Arc<Replica>>, params: Params) -> ApiResult<Response> {
    read_sessions(&replica, &params, |_| true).await
}

/// One operation of a `/v1/txn` body: `{"KV": {"Verb", "Key", "Value",
/// "Flags", "Index", "Session"}}`.
fn txn_op(position: usize, item: &Value) -> Result<Op, ApiError> {
    let bad = |what: String| ApiError::bad_request(format!("operation {position}: {what}"));
    let object = item
        .as_object()
        .ok_or_else(|| bad("an operation is an object".into()))?;
    let (kind, body) = object
        .iter()
        .next()
        .filter(|_| object.len() == 1)
        .ok_or_else(|| bad("an operation has exactly one of KV, Node, Service, Check".into()))?;
    if !kind.eq_ignore_ascii_case("kv") {
        return Err(bad(format!(
            "{kind} operations are not supported by raftvisor (only KV)"
        )));
    }
    let fields: BTreeMap<String, &Value> = body
        .as_object()
        .ok_or_else(|| bad("KV is an object".into()))?
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let number = |name: &str| fields.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
    let verb_text = text("verb").ok_or_else(|| bad("Verb is required".into()))?;
    let verb = Verb::parse(&verb_text).ok_or_else(|| bad(format!("unknown verb {verb_text:?}")))?;
    let value = match text("value") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| bad(format!("Value is not base64: {e}")))?,
        None => Vec::new(),
    };
    let session = text("session").filter(|s| !s.is_empty());
    if matches!(verb, Verb::Lock | Verb::Unlock | Verb::CheckSession) && session.is_none() {
        return Err(bad(format!("{verb_text} needs a Session")));
    }
    Ok(Op {
        verb,
        key: text("key").unwrap_or_default(),
        value,
        flags: number("flags"),
        index: number("index"),
        session,
    })
}

fn txn_entry_json(entry: &crate::state::kv_txn::TxnEntry) -> Value {
    let mut kv = serde_json::json!({
        "LockIndex": entry.lock.lock_index,
        "Key": entry.key,
        "Flags": entry.entry.flags,
        "Value": (entry.with_value && !entry.entry.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.entry.value)),
        "CreateIndex": entry.entry.create_index,
        "ModifyIndex": entry.entry.modify_index,
    });
    if let Some(session) = &entry.lock.session {
        kv["Session"] = Value::String(session.clone());
    }
    serde_json::json!({ "KV": kv })
}

/// `PUT /v1/txn`: all operations or none; 200 with `Results`, or 409 with
/// `Errors` naming the operation that failed.
#[utoipa::path(
    put, path = "/v1/txn", tag = "consul",
    request_body(content = Vec<Object>, description = "Consul's KV operations: `[{\"KV\": {\"Verb\", \"Key\", ...}}]`"),
    responses(
        (status = 200, description = "All operations applied: `Results`", body = Object),
        (status = 409, description = "None applied: `Errors` names the failed operation", body = Object),
        Refusals,
    )
)]
pub async fn txn(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let items: Vec<Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("a transaction is a JSON list of operations: {e}"))
    })?;
    if items.len() > MAX_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a transaction holds at most {MAX_OPS} operations, not {}",
                items.len()
            ),
        ));
    }
    let ops = items
        .iter()
        .enumerate()
        .map(|(i, item)| txn_op(i, item))
        .collect::<Result<Vec<Op>, ApiError>>()?;
    // Every verb reads or writes `key` (or, for the tree verbs, the keys
    // under the prefix `key`): one key out of reach refuses them all.
    if let Some((position, op)) = ops
        .iter()
        .enumerate()
        .find(|(_, op)| !scope.allows_key(&op.key))
    {
        return Err(ApiError::out_of_reach(
            &scope,
            &format!("operation {position}: KV key {:?}", op.key),
        ));
    }
    for op in ops
        .iter()
        .filter(|op| op.verb.writes() && !op.value.is_empty())
    {
        replica
            .config
            .limits
            .check_kv(&op.key, &op.value)
            .map_err(ApiError::limit)?;
    }
    let outcome = match replica.write(Command::KvTxn { ops }).await?.outcome {
        Outcome::Txn(outcome) => outcome,
        Outcome::Refused { code, message } => return Err(super::error::refused(&code, message)),
        other => return Err(unexpected(other)),
    };
    Ok(match outcome {
        TxnOutcome::Committed(entries) => Json(serde_json::json!({
            "Results": entries.iter().map(txn_entry_json).collect::<Vec<_>>(),
            "Errors": Value::Null,
        }))
        .into_response(),
        TxnOutcome::RolledBack(errors) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "Results": Value::Null,
                "Errors": errors
                    .iter()
                    .map(|e| serde_json::json!({"OpIndex": e.op_index, "What": e.what}))
                    .collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    })
}
