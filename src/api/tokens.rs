//! `/v1/tokens` (admin only): create a token, limited to namespaces and KV
//! prefixes or not (the answer is the only time its secret is shown), list
//! tokens (ids, names, roles, limits — never secrets or hashes) and revoke
//! one; `GET /v1/tokens/self` (any role) shows the presented token's own
//! record. The secret is generated on the replica that
//! takes the request; only its hash goes through Raft.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;

use super::error::{ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::auth::Token;
use crate::replica::Replica;
use crate::state::{validate, Actor, Command, Outcome};
use crate::wire::{CreateToken, CreatedToken, TokenInfo};

#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, description = "The token, shown only this once", body = CreatedToken), Refusals)
)]
pub async fn create(
    State(replica): State<Arc<Replica>>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<Response> {
    validate::token_name(&body.name).map_err(ApiError::bad_request)?;
    let limits = body.limits();
    if let Some(limits) = &limits {
        validate::token_limits(body.role, limits).map_err(ApiError::bad_request)?;
    }
    // A new id colliding with an existing one (48 random bits) is refused by
    // the state machine; a second draw settles it.
    for _ in 0..3 {
        let token = Token::generate();
        let command = match &limits {
            None => Command::PutToken {
                id: token.id().to_string(),
                name: body.name.clone(),
                role: body.role,
                hash: token.hash(),
            },
            Some(limits) => Command::PutLimitedToken {
                id: token.id().to_string(),
                name: body.name.clone(),
                role: body.role,
                hash: token.hash(),
                limits: limits.clone(),
            },
        };
        match replica.write(command).await?.outcome {
            Outcome::Token(record) => {
                let created = CreatedToken {
                    token: token.reveal().to_string(),
                    info: TokenInfo::new(&record, limits.as_ref()),
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

#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens", params(("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Tokens (never secrets)", body = Vec<TokenInfo>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    params: Params,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    params.read_barrier(&replica).await?;
    Ok(Json(replica.sm.read(|s| {
        s.tokens
            .values()
            .map(|t| TokenInfo::new(t, s.token_limits.get(&t.id)))
            .collect()
    })))
}

/// `GET /v1/tokens/self`: the record of the token this request presents
/// (the auth layer has checked it), so a client — the dashboard — knows
/// its role and reach.
#[utoipa::path(
    get, path = "/v1/tokens/self", tag = "tokens",
    responses((status = 200, description = "The presented token's record", body = TokenInfo), Refusals)
)]
pub async fn own(
    State(replica): State<Arc<Replica>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<TokenInfo>> {
    replica
        .sm
        .read(|s| {
            s.tokens
                .get(&actor.token_id)
                .map(|t| TokenInfo::new(t, s.token_limits.get(&t.id)))
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API token is not valid (unknown, revoked or malformed)",
            )
        })
}

#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's public id")),
    responses((status = 204, description = "Revoked"), Refusals)
)]
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
