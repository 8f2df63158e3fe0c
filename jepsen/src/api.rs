//! The harness' HTTP client of one raftvisor replica's `/v1` API: exactly
//! one request to the replica named, never a retry or a move to another
//! replica (that would hide what the replica answered). Failures are
//! classified the way a history needs them: [`CallError::Definite`] when
//! the request certainly had no effect (it never connected, or the replica
//! refused it), [`CallError::Indeterminate`] when it may have (a timeout, a
//! lost answer, a 5xx after the write was sent on).
//!
//! The answers are read as raftvisor's own types ([`raftvisor::wire`] and
//! the model types of [`raftvisor::state`]), never as copies of them here:
//! a shape the API changes is a shape the harness reads.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use raftvisor::state::Instance;
use raftvisor::wire::{ClusterStatus, ConsulEntry, Health};
use reqwest::{Method, StatusCode};

/// Why a call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request had no effect.
    #[error("{0}")]
    Definite(String),
    /// The request may or may not have had (or may still have) its effect.
    #[error("{0}")]
    Indeterminate(String),
}

impl CallError {
    pub fn is_definite(&self) -> bool {
        matches!(self, CallError::Definite(_))
    }
}

/// The voting members of a `GET /v1/cluster` view.
pub fn voters(view: &ClusterStatus) -> Vec<u64> {
    view.voter_ids()
}

/// A KV register as read: its value and Consul `ModifyIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    pub value: u64,
    pub modify_index: u64,
}

/// Talks to replicas with the cluster's CA and a token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    pub fn new(ca_pem: &Path, token: &str) -> anyhow::Result<Api> {
        let pem = std::fs::read(ca_pem)
            .map_err(|e| anyhow::anyhow!("cannot read the CA {}: {e}", ca_pem.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .connect_timeout(Duration::from_millis(500))
            // Fresh connections keep one replica's trouble from showing up
            // on another's requests through a shared, half-dead socket.
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Api {
            http,
            token: token.to_string(),
        })
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), CallError> {
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| classify(&url, e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| classify(&url, e))?;
        Ok((status, bytes.to_vec()))
    }

    /// Reads a register (linearizable). `None`: the key does not exist.
    pub async fn kv_get(
        &self,
        base: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Versioned>, CallError> {
        let (status, body) = self
            .call(Method::GET, format!("{base}/v1/kv/{key}"), None, timeout)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let entries: Vec<ConsulEntry<'static>> = serde_json::from_slice(&body)
                    .map_err(|e| CallError::Definite(format!("GET {key}: bad JSON: {e}")))?;
                let entry = entries
                    .into_iter()
                    .next()
                    .ok_or_else(|| CallError::Definite(format!("GET {key}: empty answer")))?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(entry.value.unwrap_or_default())
                    .map_err(|e| CallError::Definite(format!("GET {key}: bad base64: {e}")))?;
                let text = String::from_utf8_lossy(&raw);
                let value = text.trim().parse().map_err(|_| {
                    CallError::Definite(format!("GET {key}: value {text:?} is not a number"))
                })?;
                Ok(Some(Versioned {
                    value,
                    modify_index: entry.modify_index,
                }))
            }
            // A read has no effect whatever went wrong.
            other => Err(CallError::Definite(describe(other, &body))),
        }
    }

    /// Writes `value`; with `cas`, only if the key's ModifyIndex is `cas`
    /// (0: only if absent). `Ok(false)`: the compare failed.
    pub async fn kv_put(
        &self,
        base: &str,
        key: &str,
        value: &str,
        cas: Option<u64>,
        timeout: Duration,
    ) -> Result<bool, CallError> {
        let mut url = format!("{base}/v1/kv/{key}");
        if let Some(index) = cas {
            url.push_str(&format!("?cas={index}"));
        }
        let (status, body) = self
            .call(Method::PUT, url, Some(value.as_bytes().to_vec()), timeout)
            .await?;
        if status.is_success() {
            return match body.as_slice() {
                b"true" | b"true\n" => Ok(true),
                b"false" | b"false\n" => Ok(false),
                other => Err(CallError::Indeterminate(format!(
                    "PUT {key}: unexpected answer {:?}",
                    String::from_utf8_lossy(other)
                ))),
            };
        }
        Err(write_error(status, &body))
    }

    /// A listing under `prefix`: `query` is Consul's `keys` (the names)
    /// or `recurse` (the entries), with `&stale` for a local read; an
    /// empty prefix (404) is an empty list.
    pub async fn kv_list<T: serde::de::DeserializeOwned>(
        &self,
        base: &str,
        prefix: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<Vec<T>, CallError> {
        let (status, body) = self
            .call(
                Method::GET,
                format!("{base}/v1/kv/{prefix}?{query}"),
                None,
                timeout,
            )
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            StatusCode::OK => serde_json::from_slice(&body)
                .map_err(|e| CallError::Definite(format!("GET {prefix}?{query}: bad JSON: {e}"))),
            other => Err(CallError::Definite(describe(other, &body))),
        }
    }

    /// This replica's view of the cluster (answered locally, no quorum).
    pub async fn cluster(&self, base: &str, timeout: Duration) -> Result<ClusterStatus, CallError> {
        self.get_json(base, "/v1/cluster", timeout).await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let (status, body) = self
            .call(Method::GET, format!("{base}{path}"), None, timeout)
            .await?;
        if !status.is_success() {
            return Err(CallError::Definite(describe(status, &body)));
        }
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Definite(format!("GET {path}: bad JSON: {e}")))
    }

    /// A write of JSON (`PUT`, `POST`, `DELETE`) to the API.
    pub async fn send_json(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON serialises"));
        let (status, body) = self
            .call(method, format!("{base}{path}"), bytes, timeout)
            .await?;
        if !status.is_success() {
            return Err(write_error(status, &body));
        }
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Indeterminate(format!("{path}: bad JSON: {e}")))
    }

    /// The instances of `namespace/name` (linearizable).
    pub async fn instances(
        &self,
        base: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<Instance>, CallError> {
        self.get_json(
            base,
            &format!("/v1/services/{namespace}/{name}/instances"),
            timeout,
        )
        .await
    }

    /// `GET /v1/health`: whether the replica answers at all.
    pub async fn health(&self, base: &str, timeout: Duration) -> Result<Health, CallError> {
        self.get_json(base, "/v1/health", timeout).await
    }
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    format!("HTTP {}: {reason}", status.as_u16())
}

/// A refused write (4xx) had no effect; anything else may have.
fn write_error(status: StatusCode, body: &[u8]) -> CallError {
    if status.is_client_error() {
        CallError::Definite(describe(status, body))
    } else {
        CallError::Indeterminate(describe(status, body))
    }
}

fn classify(url: &str, error: reqwest::Error) -> CallError {
    let text = format!("{url}: {}", error_chain(&error));
    if error.is_connect() {
        // Refused, unreachable or no TLS session: the request itself was
        // never sent.
        CallError::Definite(text)
    } else {
        CallError::Indeterminate(text)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_the_voting_members_of_a_cluster_answer() {
        // As `GET /v1/cluster` sends it: raftvisor's own serialisation.
        let member = |id: u64, voter: bool| raftvisor::wire::MemberStatus {
            id,
            api_addr: format!("10.0.0.{id}:7000"),
            peer_addr: format!("10.0.0.{id}:7100"),
            voter,
            last_contact_ms: Some(0),
            certificate_expires: None,
            protocol: Some(2),
        };
        let sent = serde_json::to_vec(&ClusterStatus {
            this_id: 1,
            cluster_id: Some("c".into()),
            cluster_version: 2,
            leader_id: Some(2),
            term: 3,
            state: "follower".into(),
            last_log_index: 9,
            applied_index: 8,
            apply_lag: 1,
            snapshot_index: 0,
            members: vec![member(1, true), member(2, true), member(4, false)],
            data_dir: "/data".into(),
            leader_last_progress: None,
            leader_progress_ms_ago: None,
            stall_after_ms: None,
            quorum_contact_ms: None,
            lease_ms: 500,
        })
        .unwrap();
        let view: ClusterStatus = serde_json::from_slice(&sent).unwrap();
        assert_eq!(voters(&view), [1, 2]);
        assert_eq!(view.applied_index, 8);
    }
}
