//! Consul's blocking reads, shared by every Consul-shaped endpoint (KV,
//! catalog, health, sessions): `?index=N` holds the answer until the
//! endpoint's index passes N or `?wait=` (default 5 minutes, at most 10)
//! runs out, after which the current answer is sent as usual. It only
//! waits on the local state machine: it never writes and never blocks a
//! write.

use std::time::Duration;

pub use crate::dates::parse_duration;

use super::error::ApiError;
use super::extract::Params;
use crate::replica::Replica;
use crate::state::State as Model;

/// Longest blocking read, as in Consul.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// A blocking read's `?wait=`, at most [`MAX_WAIT`].
pub fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    parse_duration(text)
        .map(|wait| wait.min(MAX_WAIT))
        .map_err(|reason| ApiError::bad_request(format!("wait={reason}")))
}

/// What a request asked to block for.
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    min_index: Option<u64>,
    wait: Duration,
}

impl Blocking {
    /// Reads `?index=` and `?wait=`; malformed values are a 400.
    pub fn from_params(params: &Params) -> Result<Blocking, ApiError> {
        Ok(Blocking {
            min_index: params.number("index")?.filter(|i| *i > 0),
            wait: match params.get("wait") {
                Some(text) => parse_wait(text)?,
                None => DEFAULT_WAIT,
            },
        })
    }

    /// Returns once `index_of` the local state exceeds the asked index, or
    /// when the wait runs out; at once when no index was asked.
    pub async fn wait(&self, replica: &Replica, index_of: impl Fn(&Model) -> u64) {
        let Some(min_index) = self.min_index else {
            return;
        };
        let mut applied = replica.sm.watch_applied();
        let _ = tokio::time::timeout(self.wait, async {
            loop {
                if replica.sm.read(&index_of) > min_index {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// Sets the headers Consul clients read on every blocking-capable answer.
pub fn consul_headers(response: &mut axum::response::Response, index: u64) {
    use axum::http::HeaderValue;
    let headers = response.headers_mut();
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_like_consul() {
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_wait("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_wait("99h").unwrap(), MAX_WAIT);
        assert_eq!(parse_wait("9.5s").unwrap(), Duration::from_millis(9500));
        assert_eq!(parse_duration("0.001s").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("15.0s").unwrap(), Duration::from_secs(15));
        assert!(parse_wait("soon").is_err());
        assert!(parse_wait("1.2.3s").is_err());
        assert!(parse_wait("-1s").is_err());
        assert!(parse_wait("5x").is_err());
    }
}
