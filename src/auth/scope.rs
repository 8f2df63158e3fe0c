//! What a request's token may reach beyond its role (pure): the whole
//! cluster, or — for a limited token — the namespaces and KV prefixes of
//! its [`TokenLimits`]. Decides which routes a limited token may use at all
//! (from method and path alone, before any handler runs) and answers the
//! questions handlers ask of names, keys and events. Never reads the state
//! or does I/O; the middleware and the handlers apply its answers.

use axum::http::Method;

use crate::state::{Event, TokenLimits};

/// The reach of the token a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A token without limits: its role decides alone.
    Cluster,
    /// A limited token.
    Limited(TokenLimits),
}

impl Scope {
    pub fn limits(&self) -> Option<&TokenLimits> {
        match self {
            Scope::Cluster => None,
            Scope::Limited(limits) => Some(limits),
        }
    }

    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.limits().is_none_or(|l| l.allows_namespace(namespace))
    }

    /// Whether `key` (or every key under the prefix `key`) may be read or
    /// written.
    pub fn allows_key(&self, key: &str) -> bool {
        self.limits().is_none_or(|l| l.allows_key(key))
    }

    /// Whether `event` may be shown: a limited token sees the events of
    /// services and instances in its namespaces, nothing of the cluster.
    pub fn allows_event(&self, event: &Event) -> bool {
        match self.limits() {
            None => true,
            Some(limits) => event_namespace(event).is_some_and(|ns| limits.allows_namespace(ns)),
        }
    }

    /// The refusal's words for a limited token reaching outside.
    pub fn describe(&self) -> String {
        match self.limits() {
            None => "this token reaches the whole cluster".into(),
            Some(limits) => format!(
                "this token is limited to namespaces [{}] and KV prefixes [{}]",
                limits.namespaces.join(", "),
                limits.kv_prefixes.join(", ")
            ),
        }
    }
}

/// The namespace an event belongs to: services' events (and their hooks',
/// backups' and restores') name `<namespace>/<service>`, instances' events the instance id
/// `<namespace>.<service>.<slot>` (or the service). Other events (nodes,
/// managers, images, tokens, sessions) belong to no namespace.
pub fn event_namespace(event: &Event) -> Option<&str> {
    // Hooks, backups and restores name their service as `<ns>/<service>`.
    let service_event = ["service.", "hook.", "backup.", "restore."]
        .iter()
        .any(|kind| event.kind.starts_with(kind));
    let instance_event = event.kind.starts_with("instance.");
    if !service_event && !instance_event {
        return None;
    }
    if let Some((namespace, _)) = event.subject.split_once('/') {
        return Some(namespace);
    }
    if instance_event {
        return event
            .subject
            .split_once('.')
            .map(|(namespace, _)| namespace);
    }
    None
}

/// Whether a limited token may use `method path` at all; `Err` says why
/// not. Routes that list (services, events, the Consul catalog, Prometheus
/// targets) are allowed and filtered by their handlers, KV and
/// transactions check every key in their handlers; cluster-wide routes —
/// nodes, managers, images, registries, tokens, metrics, session lists —
/// are refused. Paths are matched as sent: a namespace in an encoded form
/// is no DNS label, so it matches no limit and is refused.
pub fn limited_route(method: &Method, path: &str, limits: &TokenLimits) -> Result<(), String> {
    let read_only = method == Method::GET || method == Method::HEAD;
    let open = [
        "/v1/services",
        "/v1/events",
        "/v1/txn",
        "/v1/catalog/services",
        "/v1/prometheus/targets",
        "/v1/agent/self",
        "/v1/status/leader",
        "/v1/status/peers",
        "/v1/session/create",
        "/v1/kv",
    ];
    if open.contains(&path) {
        return Ok(());
    }
    if read_only && path == "/v1/tokens/self" {
        return Ok(());
    }
    let open_prefixes = [
        "/v1/kv/",
        "/v1/catalog/service/",
        "/v1/health/service/",
        "/v1/session/destroy/",
        "/v1/session/renew/",
        "/v1/session/info/",
    ];
    if open_prefixes.iter().any(|p| path.starts_with(p)) {
        return Ok(());
    }
    if let Some(rest) = path.strip_prefix("/v1/services/") {
        let namespace = rest.split('/').next().unwrap_or_default();
        return if limits.allows_namespace(namespace) {
            Ok(())
        } else {
            Err(format!(
                "namespace {namespace:?} is outside this token's namespaces"
            ))
        };
    }
    Err(format!("{path} reaches beyond this token's namespaces"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team() -> TokenLimits {
        TokenLimits {
            namespaces: vec!["a".into(), "b".into()],
            kv_prefixes: vec!["a/".into()],
        }
    }

    #[test]
    fn limited_routes() {
        let allowed = [
            (Method::GET, "/v1/services"),
            (Method::GET, "/v1/services/a/web"),
            (Method::PUT, "/v1/services/b/web"),
            (Method::POST, "/v1/services/a/web/scale"),
            (Method::POST, "/v1/services/a/web/backups"),
            (Method::POST, "/v1/services/b/web/restore"),
            (Method::GET, "/v1/events"),
            (Method::GET, "/v1/kv/a/x"),
            (Method::GET, "/v1/kv"),
            (Method::PUT, "/v1/txn"),
            (Method::GET, "/v1/catalog/services"),
            (Method::GET, "/v1/catalog/service/web.a"),
            (Method::GET, "/v1/health/service/web.a"),
            (Method::GET, "/v1/prometheus/targets"),
            (Method::PUT, "/v1/session/create"),
            (Method::PUT, "/v1/session/renew/123"),
            (Method::GET, "/v1/agent/self"),
            (Method::GET, "/v1/tokens/self"),
        ];
        for (method, path) in allowed {
            assert_eq!(
                limited_route(&method, path, &team()),
                Ok(()),
                "{method} {path}"
            );
        }
        let refused = [
            (Method::GET, "/v1/services/c/web"),
            (Method::DELETE, "/v1/services/ab/web"),
            (Method::PUT, "/v1/services/%61/web"),
            (Method::GET, "/v1/services//web"),
            (Method::GET, "/v1/nodes"),
            (Method::POST, "/v1/nodes/n1/drain"),
            (Method::GET, "/v1/cluster"),
            (Method::GET, "/v1/images"),
            (Method::GET, "/v1/volumes"),
            (Method::DELETE, "/v1/volumes/rv-c-a.web.0-data"),
            (Method::GET, "/v1/backups/a.web.1"),
            (Method::DELETE, "/v1/backups/a.web.1"),
            (Method::GET, "/v1/restores/a.web.1.restore"),
            (Method::GET, "/v1/templates"),
            (Method::PUT, "/v1/templates/etcd"),
            (Method::POST, "/v1/services/c/web/backups"),
            (Method::GET, "/v1/registries"),
            (Method::GET, "/metrics"),
            (Method::GET, "/v1/catalog/nodes"),
            (Method::GET, "/v1/session/list"),
            (Method::GET, "/v1/session/node/n1"),
            (Method::DELETE, "/v1/tokens/self"),
            (Method::GET, "/v1/tokens"),
            (Method::GET, "/v1/kvx"),
            (Method::GET, "/v1/eventsx"),
        ];
        for (method, path) in refused {
            assert!(
                limited_route(&method, path, &team()).is_err(),
                "{method} {path}"
            );
        }
    }

    fn event(kind: &str, subject: &str) -> Event {
        Event {
            index: 1,
            time_ms: 1,
            kind: kind.into(),
            subject: subject.into(),
            message: String::new(),
            actor: None,
        }
    }

    #[test]
    fn events_belong_to_the_namespace_of_their_service() {
        let scope = Scope::Limited(team());
        for (kind, subject, shown) in [
            ("service.created", "a/web", true),
            ("service.scaled", "c/web", false),
            ("instance.placed", "b.web.0", true),
            ("instance.state", "c.web.0", false),
            ("instance.unplaceable", "a/web", true),
            // Legacy instance ids (`ns-svc-slot`) are ambiguous: hidden.
            ("instance.state", "a-web-0", false),
            ("node.state", "a", false),
            ("token.created", "a", false),
            ("manager", "a/web", false),
        ] {
            assert_eq!(
                scope.allows_event(&event(kind, subject)),
                shown,
                "{kind} {subject}"
            );
            assert!(Scope::Cluster.allows_event(&event(kind, subject)));
        }
    }

    #[test]
    fn the_cluster_scope_allows_everything() {
        assert!(Scope::Cluster.allows_namespace("x") && Scope::Cluster.allows_key(""));
        let scope = Scope::Limited(team());
        assert!(scope.allows_key("a/x") && !scope.allows_key("b/x"));
        assert!(scope.describe().contains("[a, b]"));
    }
}
