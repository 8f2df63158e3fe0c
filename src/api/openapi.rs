//! The OpenAPI 3.1 description of the API, generated at build time from
//! the handlers' `#[utoipa::path]` annotations and the request and answer
//! types themselves (so the description cannot drift from the code), and
//! served at `GET /v1/openapi.json` without a token. Describes; never
//! routes, authenticates or answers anything else.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use crate::wire::ErrorBody;

/// Bearer tokens (`Authorization: Bearer rvt_…`) and Consul's header.
struct TokenSecurity;

impl Modify for TokenSecurity {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rvt_<id>.<secret>")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "consul_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Consul-Token"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "raftvisor",
        description = "The raftvisor API: every replica serves it over HTTPS. Writes are forwarded to the leader; reads pass a read barrier unless `?stale`. The KV, session, transaction, catalog and health routes speak Consul's wire API.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&TokenSecurity),
    components(schemas(ErrorBody)),
    security(("token" = []), ("consul_token" = [])),
    paths(
        super::cluster::health,
        super::cluster::status,
        super::cluster::add_member,
        super::cluster::remove_member,
        super::cluster::events,
        super::cluster::plan,
        super::cluster::put_plan,
        super::cluster::backup,
        super::services::list,
        super::services::get,
        super::services::put,
        super::services::delete,
        super::services::scale,
        super::services::history,
        super::services::rollback,
        super::services::promote,
        super::services::abort,
        super::services::instances,
        super::services::report,
        super::services::start,
        super::services::stop,
        super::services::restart,
        super::nodes::list,
        super::nodes::get,
        super::nodes::put,
        super::nodes::delete,
        super::nodes::drain,
        super::images::list,
        super::images::import,
        super::images::remove,
        super::images::build,
        super::volumes::list,
        super::volumes::remove,
        super::backups::start,
        super::backups::list,
        super::backups::get,
        super::backups::remove,
        super::backups::restore,
        super::backups::get_restore,
        super::releases::list,
        super::releases::get,
        super::releases::create,
        super::releases::switch,
        super::releases::remove,
        super::pipelines::approve,
        super::pipelines::list,
        super::pipelines::get,
        super::pipelines::put,
        super::pipelines::remove,
        super::pipelines::start_run,
        super::pipelines::run,
        super::topologies::export,
        super::topologies::clone,
        super::topologies::list,
        super::topologies::get,
        super::topologies::save,
        super::topologies::remove,
        super::templates::list,
        super::templates::get,
        super::templates::put,
        super::templates::remove,
        super::registries::list,
        super::registries::login,
        super::registries::logout,
        super::tokens::create,
        super::tokens::list,
        super::tokens::own,
        super::tokens::revoke,
        super::kv::get,
        super::kv::put,
        super::kv::delete,
        super::sessions::create,
        super::sessions::destroy,
        super::sessions::renew,
        super::sessions::info,
        super::sessions::of_node,
        super::sessions::list,
        super::sessions::txn,
        super::catalog::services,
        super::catalog::service,
        super::catalog::nodes,
        super::catalog::health_service,
        super::catalog::agent_self,
        super::catalog::status_leader,
        super::catalog::status_peers,
        super::prometheus_sd::targets,
        super::metrics::metrics,
        document,
    ),
    tags(
        (name = "cluster", description = "Health, status, membership, events, the manager template"),
        (name = "services", description = "The service registry and its instances"),
        (name = "nodes", description = "The node inventory"),
        (name = "images", description = "Kept images and registry logins"),
        (name = "volumes", description = "The slots' volumes"),
        (name = "backups", description = "Backups and restores run by services' hooks"),
        (name = "releases", description = "Blue-green releases and their DNS cutover"),
        (name = "pipelines", description = "Pipelines from source to release, their runs and webhook"),
        (name = "topologies", description = "Namespace exports and clones, named topologies with versions"),
        (name = "templates", description = "Templates of clustered third-party services"),
        (name = "tokens", description = "API tokens (admin), and a token's own record"),
        (name = "kv", description = "Consul's KV API"),
        (name = "consul", description = "Consul's sessions, transactions, catalog and health"),
        (name = "prometheus", description = "Prometheus service discovery and metrics"),
    )
)]
pub struct ApiDoc;

/// The description, built once per call (a few hundred microseconds; the
/// route is for tools, not a hot path).
pub fn description() -> Document {
    ApiDoc::openapi()
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "cluster", security(()),
    responses((status = 200, description = "This document", body = Object))
)]
pub async fn document() -> Json<Document> {
    Json(description())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_and_names_every_route() {
        let json = serde_json::to_value(description()).unwrap();
        assert!(
            json["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            json["openapi"]
        );
        let paths = json["paths"].as_object().unwrap();
        for path in [
            "/v1/health",
            "/v1/services/{namespace}/{name}",
            "/v1/kv/{key}",
            "/v1/txn",
            "/v1/catalog/service/{name}",
            "/v1/prometheus/targets",
            "/v1/tokens/self",
            "/v1/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} is described");
        }
        // Types come from the code: the service spec's fields are there.
        let spec = &json["components"]["schemas"]["ServiceSpec"]["properties"];
        for field in ["image", "replicas", "ports", "health", "secret_env"] {
            assert!(spec.get(field).is_some(), "ServiceSpec.{field}: {spec}");
        }
        // The public routes need no token.
        assert_eq!(
            json["paths"]["/v1/health"]["get"]["security"],
            serde_json::json!([{}])
        );
    }
}
