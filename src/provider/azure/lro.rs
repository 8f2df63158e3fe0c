//! Pure parts of Azure Resource Manager's long-running operations: where to
//! poll after the first answer (`Azure-AsyncOperation`, else `Location`),
//! and what a poll answer says. The polling loop itself (interval, overall
//! timeout) lives in the provider; the SDK's own poller has no timeout.

use serde::Deserialize;

/// What to do after the first answer of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The operation is complete.
    Done,
    /// Poll this URL; its body carries `{"status": ...}`.
    AsyncOperation(String),
    /// Poll this URL; 202 means still running, 200/204 done.
    Location(String),
}

/// The first answer of an operation (already known to be a success status).
pub fn next_after(status: u16, async_operation: Option<&str>, location: Option<&str>) -> Next {
    let present = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    if let Some(url) = present(async_operation) {
        return Next::AsyncOperation(url);
    }
    match (status, present(location)) {
        (202, Some(url)) => Next::Location(url),
        _ => Next::Done,
    }
}

/// State of an operation as a poll reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    InProgress,
    Succeeded,
    /// Failed or canceled, with ARM's code and message.
    Failed(String),
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorBody {
    pub(crate) fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, Some(message)) => message.clone(),
            (None, None) => "no details".into(),
        }
    }
}

/// A poll answer that is not an operation status.
#[derive(Debug, thiserror::Error)]
#[error("unreadable operation status: {0}")]
pub struct UnreadableStatus(#[source] serde_json::Error);

/// Parses the body of an `Azure-AsyncOperation` poll.
pub fn async_operation_state(body: &[u8]) -> Result<OperationState, UnreadableStatus> {
    let body: StatusBody = serde_json::from_slice(body).map_err(UnreadableStatus)?;
    let details = || {
        body.error
            .as_ref()
            .map(ErrorBody::describe)
            .unwrap_or_else(|| "no details".into())
    };
    Ok(match body.status.as_str() {
        "Succeeded" => OperationState::Succeeded,
        "Failed" => OperationState::Failed(crate::provider::one_line(&details())),
        "Canceled" | "Cancelled" => OperationState::Failed(format!(
            "canceled: {}",
            crate::provider::one_line(&details())
        )),
        // "InProgress", "Running", "Accepted", ... : keep polling.
        _ => OperationState::InProgress,
    })
}

/// Reads ARM's error envelope `{"error": {"code", "message"}}` from a refused request.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    Some(crate::provider::one_line(&envelope.error.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_operation_header_wins() {
        assert_eq!(
            next_after(201, Some("https://arm/op/1"), Some("https://arm/loc")),
            Next::AsyncOperation("https://arm/op/1".into())
        );
        assert_eq!(
            next_after(202, None, Some("https://arm/loc")),
            Next::Location("https://arm/loc".into())
        );
        assert_eq!(next_after(200, None, None), Next::Done);
        assert_eq!(next_after(204, Some(" "), None), Next::Done);
    }

    #[test]
    fn poll_bodies() {
        assert_eq!(
            async_operation_state(br#"{"status":"InProgress"}"#).unwrap(),
            OperationState::InProgress
        );
        assert_eq!(
            async_operation_state(br#"{"status":"Succeeded","endTime":"x"}"#).unwrap(),
            OperationState::Succeeded
        );
        assert_eq!(
            async_operation_state(
                br#"{"status":"Failed","error":{"code":"AllocationFailed","message":"no\ncapacity"}}"#
            )
            .unwrap(),
            OperationState::Failed("AllocationFailed: no capacity".into())
        );
        assert!(matches!(
            async_operation_state(br#"{"status":"Canceled"}"#).unwrap(),
            OperationState::Failed(m) if m.starts_with("canceled")
        ));
        let error = async_operation_state(b"<html>").unwrap_err().to_string();
        assert!(
            error.starts_with("unreadable operation status: "),
            "{error}"
        );
    }

    #[test]
    fn error_envelope() {
        assert_eq!(
            error_message(br#"{"error":{"code":"NotFound","message":"VM gone"}}"#).as_deref(),
            Some("NotFound: VM gone")
        );
        assert_eq!(error_message(b"nope"), None);
    }
}
