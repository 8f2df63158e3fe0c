//! The client API (HTTP/JSON, prefix `/v1`) every replica serves on
//! `api_addr`: routing, body limits, JSON errors for unknown routes and the
//! reading of bodies left unread ([`drain`]).
//! Handlers read from the local state machine (after a read-index barrier
//! unless `?stale`) and write through [`Replica::write`], which forwards to
//! the leader. Handlers never touch Raft storage directly. Every route but
//! `GET /v1/health`, `GET /v1/openapi.json` and the dashboard's assets
//! (`/ui`) is behind [`crate::auth::middleware`] (token and role).

pub mod backups;
pub mod blocking;
pub mod catalog;
pub mod cluster;
#[cfg(feature = "failpoints")]
pub mod debug;
pub mod drain;
pub mod error;
pub mod extract;
pub mod images;
pub mod kv;
pub mod metrics;
pub mod nodes;
pub mod openapi;
pub mod pipelines;
pub mod prometheus_sd;
pub mod registries;
pub mod releases;
pub mod services;
pub mod sessions;
pub mod templates;
pub mod tokens;
pub mod topologies;
pub mod ui;
pub mod volumes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::replica::Replica;
use error::ApiError;

/// The `/v1` router for `replica`.
pub fn router(replica: Arc<Replica>) -> Router {
    let max_body = replica.config.api.max_body_bytes;
    let router = Router::new();
    #[cfg(feature = "failpoints")]
    let router = router
        .route("/v1/debug/failpoints", get(debug::list))
        .route(
            "/v1/debug/failpoints/{name}",
            axum::routing::put(debug::set).delete(debug::remove),
        );
    router
        .route("/v1/health", get(cluster::health))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/backup", get(cluster::backup))
        .route(
            "/v1/cluster/plan",
            get(cluster::plan).put(cluster::put_plan),
        )
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route("/v1/events", get(cluster::events))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/services", get(services::list))
        .route(
            "/v1/services/{namespace}/{name}",
            get(services::get)
                .put(services::put)
                .delete(services::delete),
        )
        .route(
            "/v1/services/{namespace}/{name}/scale",
            post(services::scale),
        )
        .route(
            "/v1/services/{namespace}/{name}/history",
            get(services::history),
        )
        .route(
            "/v1/services/{namespace}/{name}/rollback",
            post(services::rollback),
        )
        .route(
            "/v1/services/{namespace}/{name}/promote",
            post(services::promote),
        )
        .route(
            "/v1/services/{namespace}/{name}/abort",
            post(services::abort),
        )
        .route(
            "/v1/services/{namespace}/{name}/instances",
            get(services::instances),
        )
        .route(
            "/v1/services/{namespace}/{name}/report",
            get(services::report),
        )
        .route(
            "/v1/services/{namespace}/{name}/start",
            post(services::start),
        )
        .route("/v1/services/{namespace}/{name}/stop", post(services::stop))
        .route(
            "/v1/services/{namespace}/{name}/restart",
            post(services::restart),
        )
        .route("/v1/nodes", get(nodes::list))
        .route(
            "/v1/nodes/{name}",
            get(nodes::get).put(nodes::put).delete(nodes::delete),
        )
        .route("/v1/nodes/{name}/drain", post(nodes::drain))
        .route(
            "/v1/images",
            get(images::list)
                .post(images::import)
                .layer(DefaultBodyLimit::max(
                    crate::replica::archives::MAX_ARCHIVE_BYTES as usize,
                )),
        )
        .route(
            "/v1/images/build",
            post(images::build).layer(DefaultBodyLimit::max(
                crate::replica::archives::MAX_ARCHIVE_BYTES as usize,
            )),
        )
        .route("/v1/images/{*name}", axum::routing::delete(images::remove))
        .route(
            "/v1/services/{namespace}/{name}/backups",
            get(backups::list).post(backups::start),
        )
        .route(
            "/v1/services/{namespace}/{name}/restore",
            post(backups::restore),
        )
        .route(
            "/v1/backups/{id}",
            get(backups::get).delete(backups::remove),
        )
        .route("/v1/restores/{id}", get(backups::get_restore))
        .route("/v1/releases", get(releases::list))
        .route(
            "/v1/releases/{name}",
            get(releases::get)
                .put(releases::create)
                .delete(releases::remove),
        )
        .route("/v1/releases/{name}/switch", post(releases::switch))
        .route("/v1/releases/{name}/approve", post(pipelines::approve))
        .route("/v1/pipelines", get(pipelines::list))
        .route(
            "/v1/pipelines/{name}",
            get(pipelines::get)
                .put(pipelines::put)
                .delete(pipelines::remove),
        )
        .route(
            "/v1/pipelines/{name}/runs",
            post(pipelines::start_run).layer(DefaultBodyLimit::max(
                crate::replica::archives::MAX_ARCHIVE_BYTES as usize,
            )),
        )
        .route("/v1/pipelines/{name}/runs/{run}", get(pipelines::run))
        .route(
            "/v1/namespaces/{namespace}/topology",
            get(topologies::export),
        )
        .route("/v1/namespaces/{namespace}/clone", post(topologies::clone))
        .route("/v1/topologies", get(topologies::list))
        .route(
            "/v1/topologies/{name}",
            get(topologies::get)
                .put(topologies::save)
                .delete(topologies::remove),
        )
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/templates/{name}",
            get(templates::get)
                .put(templates::put)
                .delete(templates::remove),
        )
        .route("/v1/volumes", get(volumes::list))
        .route("/v1/volumes/{name}", axum::routing::delete(volumes::remove))
        .route("/v1/registries", get(registries::list))
        .route(
            "/v1/registries/{host}",
            axum::routing::put(registries::login).delete(registries::logout),
        )
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/health/service/{name}", get(catalog::health_service))
        .route("/v1/agent/self", get(catalog::agent_self))
        .route("/v1/prometheus/targets", get(prometheus_sd::targets))
        .route("/v1/status/leader", get(catalog::status_leader))
        .route("/v1/status/peers", get(catalog::status_peers))
        .route("/v1/session/create", axum::routing::put(sessions::create))
        .route(
            "/v1/session/destroy/{id}",
            axum::routing::put(sessions::destroy),
        )
        .route(
            "/v1/session/renew/{id}",
            axum::routing::put(sessions::renew),
        )
        .route("/v1/session/info/{id}", get(sessions::info))
        .route("/v1/session/node/{node}", get(sessions::of_node))
        .route("/v1/session/list", get(sessions::list))
        .route("/v1/txn", axum::routing::put(sessions::txn))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/self", get(tokens::own))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/v1/kv", get(kv::get_root).delete(kv::delete_root))
        .route("/v1/kv/", get(kv::get_root).delete(kv::delete_root))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .merge(ui::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(metrics::track_requests))
        // Last, so it runs first and covers every route and the fallbacks.
        .layer(axum::middleware::from_fn_with_state(
            replica.clone(),
            crate::auth::middleware::require_token,
        ))
        // Outermost: a body left unread by any layer or route is read here.
        .layer(axum::middleware::from_fn(drain::drain_unread_body))
        .with_state(replica)
}
