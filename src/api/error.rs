//! The one JSON error shape of the API (`{"error": "...", "code": "..."}`)
//! and the mapping from every failure to a fitting HTTP status, and their
//! description for the OpenAPI document ([`Refusals`]). Bad input is
//! always a 4xx; only a broken replica answers 5xx.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::replica::OpError;
use crate::wire::ErrorBody;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub current_version: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            current_version: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 403: `what` lies outside what a limited token reaches.
    pub fn out_of_reach(scope: &crate::auth::scope::Scope, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} is outside this token's reach; {}", scope.describe()),
        )
    }

    /// A write over a size limit (400 `limit_exceeded`) or a quota (409
    /// `quota_exceeded`); the message names the `[limits]` key.
    pub fn limit(error: crate::state::limits::LimitError) -> ApiError {
        refused(error.code(), error.message)
    }

    pub fn version_mismatch(what: &str, current: u64) -> ApiError {
        ApiError {
            status: StatusCode::PRECONDITION_FAILED,
            code: "version_mismatch",
            message: format!("{what} is at version {current}, not the one in If-Match"),
            current_version: Some(current),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.into(),
            current_version: self.current_version,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(error: OpError) -> ApiError {
        match error {
            OpError::Unavailable(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            OpError::Rejected(message) => ApiError::new(StatusCode::CONFLICT, "rejected", message),
            OpError::NotMember(message) => {
                ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_a_member", message)
            }
            OpError::Overloaded(message) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else {
            "invalid_json"
        };
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(
            if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_REQUEST
            },
            code,
            rejection.body_text(),
        )
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> ApiError {
        ApiError::bad_request(rejection.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The answer to [`crate::state::Outcome::Refused`]: its own code, with
/// 400 for a size limit and 409 for what depends on the state (a quota, a
/// node not drained).
pub fn refused(code: &str, message: String) -> ApiError {
    use crate::state::history::NO_CANARY;
    use crate::state::hooks::{BACKUP_UNUSABLE, JOB_RUNNING};
    use crate::state::limits::{LIMIT_EXCEEDED, QUOTA_EXCEEDED};
    use crate::state::supervision::NODE_NOT_DRAINED;
    use crate::state::volumes::VOLUME_IN_USE;
    match code {
        JOB_RUNNING => ApiError::new(StatusCode::CONFLICT, JOB_RUNNING, message),
        BACKUP_UNUSABLE => ApiError::new(StatusCode::CONFLICT, BACKUP_UNUSABLE, message),
        LIMIT_EXCEEDED => ApiError::new(StatusCode::BAD_REQUEST, LIMIT_EXCEEDED, message),
        QUOTA_EXCEEDED => ApiError::new(StatusCode::CONFLICT, QUOTA_EXCEEDED, message),
        NODE_NOT_DRAINED => ApiError::new(StatusCode::CONFLICT, NODE_NOT_DRAINED, message),
        VOLUME_IN_USE => ApiError::new(StatusCode::CONFLICT, VOLUME_IN_USE, message),
        NO_CANARY => ApiError::new(StatusCode::CONFLICT, NO_CANARY, message),
        _ => ApiError::new(StatusCode::CONFLICT, "rejected", message),
    }
}

/// Answers a write's outcome about `what` (e.g. "service demo/echo"):
/// the record itself, 204 for a deletion, or the fitting error.
pub fn outcome_response(
    what: &str,
    outcome: crate::state::Outcome,
) -> ApiResult<axum::response::Response> {
    use crate::state::Outcome;
    match outcome {
        Outcome::Service(service) => {
            let mut response = Json(&service).into_response();
            let etag = axum::http::HeaderValue::from_str(&format!("\"{}\"", service.version))
                .expect("digits are a valid header");
            response.headers_mut().insert("etag", etag);
            Ok(response)
        }
        Outcome::Node(node) => Ok(Json(node).into_response()),
        Outcome::Instance(instance) => Ok(Json(instance).into_response()),
        Outcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!("{what} does not exist"))),
        Outcome::VersionMismatch { current } => Err(ApiError::version_mismatch(what, current)),
        Outcome::Rejected(reason) => Err(ApiError::bad_request(reason)),
        Outcome::Refused { code, message } => Err(refused(&code, message)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// The error answers every authenticated route may give, each with the
/// API's JSON error body (`code` names the case).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// Malformed or invalid input; the reason names what is wrong.
    #[response(status = 400, description = "Invalid input")]
    Invalid(ErrorBody),
    #[response(
        status = 401,
        description = "No token, or an unknown, malformed or revoked one"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "The token's role is too weak, or the request lies outside its namespaces"
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such thing")]
    NotFound(ErrorBody),
    #[response(status = 405, description = "Method not allowed on this endpoint")]
    MethodNotAllowed(ErrorBody),
    #[response(
        status = 409,
        description = "Conflicts with the current state (in use, quota, rejected)"
    )]
    Conflict(ErrorBody),
    #[response(
        status = 412,
        description = "If-Match did not match the current version"
    )]
    VersionMismatch(ErrorBody),
    #[response(status = 413, description = "The body is over its limit")]
    TooLarge(ErrorBody),
    #[response(
        status = 421,
        description = "Only the leader does this, or this replica was removed"
    )]
    Misdirected(ErrorBody),
    #[response(status = 422, description = "JSON of the wrong shape")]
    Unprocessable(ErrorBody),
    #[response(status = 429, description = "Too many writes waiting; retry")]
    Overloaded(ErrorBody),
}

/// [`Refusals`] but a 404, for routes whose 404 is Consul's: an empty
/// answer that clients read as "no such key".
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ConsulRefusals {
    #[response(status = 400, description = "Invalid input")]
    Invalid(ErrorBody),
    #[response(
        status = 401,
        description = "No token, or an unknown, malformed or revoked one"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "The token's role is too weak, or the key lies outside its prefixes"
    )]
    Forbidden(ErrorBody),
    #[response(status = 405, description = "Method not allowed on this endpoint")]
    MethodNotAllowed(ErrorBody),
    #[response(status = 429, description = "Too many writes waiting; retry")]
    Overloaded(ErrorBody),
}
