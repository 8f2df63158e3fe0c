//! Which role a request needs, from its method and path alone (pure):
//! `GET /v1/health`, the API's description (`/v1/openapi.json`) and the
//! dashboard's assets (`/ui`) need none;
//! `GET /v1/tokens/self` (a token's own record) needs `read`; tokens, cluster membership and
//! backups, registering,
//! changing or deleting nodes (a node's engine receives services' secrets,
//! and its `docker_tls` names files on the managers) and the debug
//! endpoints (fail points) need `admin`; other reads need `read`; other
//! writes — node drains included — need `operator`.
//! Paths are matched as sent, as the router matches them, so no encoded
//! form of a path can route to a handler under a weaker rule.

use axum::http::Method;

use crate::state::Role;

/// The role `method path` needs; `None` for the one public endpoint.
/// The webhook's signature header (GitHub's name).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Whether `request` is a webhook call that brings its own signature: the
/// token check lets it through, and the route verifies it against the
/// pipeline's key.
pub fn is_signed_webhook(method: &Method, path: &str, headers: &axum::http::HeaderMap) -> bool {
    method == Method::POST
        && headers.contains_key(SIGNATURE_HEADER)
        && path
            .strip_prefix("/v1/pipelines/")
            .and_then(|rest| rest.strip_suffix("/runs"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let read_only = method == Method::GET || method == Method::HEAD;
    let public = path == "/v1/health"
        || path == "/v1/openapi.json"
        || path == "/ui"
        || path.starts_with("/ui/");
    if public && read_only {
        return None;
    }
    if path == "/v1/tokens/self" && read_only {
        return Some(Role::Read);
    }
    if under(path, "/v1/tokens") || under(path, "/v1/debug") {
        return Some(Role::Admin);
    }
    // A backup holds every token record, sealed secret and KV value.
    if under(path, "/v1/cluster") && (!read_only || path == "/v1/cluster/backup") {
        return Some(Role::Admin);
    }
    if under(path, "/v1/nodes") && !read_only && !is_drain(method, path) {
        return Some(Role::Admin);
    }
    Some(if read_only {
        Role::Read
    } else {
        Role::Operator
    })
}

/// `POST /v1/nodes/{name}/drain` exactly: it moves work off a node and
/// never sends it anywhere an operator chose.
fn is_drain(method: &Method, path: &str) -> bool {
    method == Method::POST
        && path
            .strip_prefix("/v1/nodes/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(name, action)| !name.is_empty() && action == "drain")
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_route() {
        let cases = [
            (Method::GET, "/v1/health", None),
            (Method::POST, "/v1/health", Some(Role::Operator)),
            (Method::GET, "/v1/cluster", Some(Role::Read)),
            (Method::GET, "/v1/cluster/backup", Some(Role::Admin)),
            (Method::POST, "/v1/cluster/members", Some(Role::Admin)),
            (Method::DELETE, "/v1/cluster/members/3", Some(Role::Admin)),
            (Method::GET, "/v1/tokens", Some(Role::Admin)),
            (Method::GET, "/v1/tokens/self", Some(Role::Read)),
            (Method::DELETE, "/v1/tokens/self", Some(Role::Admin)),
            (Method::GET, "/ui", None),
            (Method::GET, "/v1/openapi.json", None),
            (Method::GET, "/ui/app.js", None),
            (Method::POST, "/ui/app.js", Some(Role::Operator)),
            (Method::GET, "/uix", Some(Role::Read)),
            (Method::POST, "/v1/tokens", Some(Role::Admin)),
            (Method::DELETE, "/v1/tokens/abc", Some(Role::Admin)),
            (Method::GET, "/v1/events", Some(Role::Read)),
            (Method::GET, "/v1/debug/failpoints", Some(Role::Admin)),
            (Method::PUT, "/v1/debug/failpoints/x", Some(Role::Admin)),
            (Method::GET, "/metrics", Some(Role::Read)),
            (Method::GET, "/v1/kv/a/b", Some(Role::Read)),
            (Method::PUT, "/v1/kv/a/b", Some(Role::Operator)),
            (Method::DELETE, "/v1/kv/a", Some(Role::Operator)),
            (Method::PUT, "/v1/services/demo/echo", Some(Role::Operator)),
            (Method::POST, "/v1/nodes/n1/drain", Some(Role::Operator)),
            (Method::GET, "/v1/nodes", Some(Role::Read)),
            (Method::GET, "/v1/nodes/n1", Some(Role::Read)),
            // Registering, changing and deleting nodes: admin only.
            (Method::PUT, "/v1/nodes/n1", Some(Role::Admin)),
            (Method::DELETE, "/v1/nodes/n1", Some(Role::Admin)),
            (Method::PUT, "/v1/nodes/drain", Some(Role::Admin)),
            (Method::POST, "/v1/nodes/drain", Some(Role::Admin)),
            (Method::PUT, "/v1/nodes/n1/drain", Some(Role::Admin)),
            (Method::POST, "/v1/nodes//drain", Some(Role::Admin)),
            (Method::POST, "/v1/nodes/n1/drain/x", Some(Role::Admin)),
            (Method::PATCH, "/v1/nodes/n1", Some(Role::Admin)),
            (Method::POST, "/v1/nodes", Some(Role::Admin)),
            (Method::GET, "/v1/nope", Some(Role::Read)),
            // Not under /v1/tokens: just a KV-like name, operator suffices.
            (Method::POST, "/v1/tokensx", Some(Role::Operator)),
            (Method::PUT, "/v1/kv/v1/tokens", Some(Role::Operator)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(required_role(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Read < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn only_a_post_of_a_run_with_a_signature_skips_the_token() {
        let mut signed = axum::http::HeaderMap::new();
        signed.insert(SIGNATURE_HEADER, "sha256=00".parse().unwrap());
        let post = Method::POST;
        assert!(is_signed_webhook(&post, "/v1/pipelines/web/runs", &signed));
        assert!(!is_signed_webhook(
            &post,
            "/v1/pipelines/web/runs",
            &axum::http::HeaderMap::new()
        ));
        assert!(!is_signed_webhook(
            &Method::GET,
            "/v1/pipelines/web/runs",
            &signed
        ));
        for path in [
            "/v1/pipelines/web",
            "/v1/pipelines//runs",
            "/v1/pipelines/a/b/runs",
            "/v1/kv/x/runs",
        ] {
            assert!(!is_signed_webhook(&post, path, &signed), "{path}");
        }
    }
}
