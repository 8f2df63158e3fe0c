//! `/v1/tokens` (admin only): create a token (the answer is the only time
//! its secret is shown), list tokens (ids, names, roles — never secrets or
//! hashes) and revoke one. The secret is generated on the replica that
//! takes the request; only its hash goes through Raft.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use crate::auth::Token;
use crate::replica::Replica;
use crate::state::{validate, Command, Outcome};
use crate::wire::{CreateToken, CreatedToken, TokenInfo};

pub async fn create(
    State(replica): State<Arc<Replica>>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<Response> {
    validate::token_name(&body.name).map_err(ApiError::bad_request)?;
    // A new id colliding with an existing one (48 random bits) is refused by
    // the state machine; a second draw settles it.
    for _ in 0..3 {
        let token = Token::generate();
        let command = Command::PutToken {
            id: token.id().to_string(),
            name: body.name.clone(),
            role: body.role,
            hash: token.hash(),
        };
        match replica.write(command).await?.outcome {
            Outcome::Token(record) => {
                let created = CreatedToken {
                    token: token.reveal().to_string(),
                    info: TokenInfo::from(&*record),
                };
                return Ok((StatusCode::CREATED, Json(created)).into_response());
            }
            Outcome::Rejected(reason) if reason.contains("already in use") => continue,
            Outcome::Rejected(reason) => return Err(ApiError::bad_request(reason)),
            other => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("unexpected outcome {other:?}"),
                ))
            }
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "could not draw an unused token id",
    ))
}

pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.tokens.values().map(TokenInfo::from).collect()
    })))
}

pub async fn revoke(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    validate::token_id(&id).map_err(ApiError::bad_request)?;
    match replica
        .write(Command::RevokeToken { id: id.clone() })
        .await?
        .outcome
    {
        Outcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::NotFound => Err(ApiError::not_found(format!("token {id} does not exist"))),
        Outcome::Rejected(reason) => Err(ApiError::new(StatusCode::CONFLICT, "rejected", reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}
