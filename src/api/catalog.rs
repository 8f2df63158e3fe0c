//! Consul's catalog and health read API (`/v1/catalog/*`, `/v1/health/*`,
//! `/v1/agent/self`, `/v1/status/*`) computed from the replicated state, so
//! tools and libraries written for Consul discover raftvisor's services.
//! Read-only: registering or deregistering through it is not offered (the
//! leader's supervision decides what runs).
//!
//! Mapping:
//! - a Consul *service* is a raftvisor service, named `<name>` in the
//!   `default` namespace and `<name>.<namespace>` elsewhere ([`consul_name`]);
//! - a Consul *service instance* is a placed instance (not pending, not
//!   stopped), its ID the instance id, its address the node's published
//!   address, its port the first declared port's published host port;
//!   tags `namespace=…`, `version=…` and `port=<name>` for every port; meta
//!   `namespace`, `service`, `version`, `slot`, `instance` and
//!   `port_<name>` = host port;
//! - a Consul *node* is a node of the inventory; its `serfHealth` check
//!   passes while the node is ready or draining;
//! - an instance's check passes while it runs (and its health check, if
//!   any, passes), warns while it starts or fetches its image, and is
//!   critical otherwise; `?passing` keeps entries whose checks all pass.
//!
//! Indexes: every answer carries the catalog index (the Raft index of the
//! last change to a service, instance, node or manager) in
//! `X-Consul-Index`, and `?index=&wait=` blocks on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::blocking::{consul_headers, Blocking};
use super::error::{ApiError, ApiResult, Refusals};
use super::extract::Params;
use crate::auth::scope::Scope;
use crate::replica::Replica;
use crate::state::{Instance, InstanceState, Node, NodeState, Service, State as Model};

/// The datacenter every answer names: a raftvisor cluster is one.
pub const DATACENTER: &str = "dc1";
/// The namespace whose services keep their bare name in Consul's view.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The Consul API version raftvisor answers like, for clients that check it.
const CONSUL_VERSION: &str = "1.15.0";

/// The Consul name of the raftvisor service `namespace/name`.
pub fn consul_name(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

/// The `(namespace, name)` a Consul service name stands for. Raftvisor's
/// names are DNS labels without dots, so the first dot separates them.
pub fn from_consul_name(consul: &str) -> (String, String) {
    match consul.split_once('.') {
        Some((name, namespace)) => (namespace.to_string(), name.to_string()),
        None => (DEFAULT_NAMESPACE.to_string(), consul.to_string()),
    }
}

/// Whether an instance is registered in Consul's sense: placed on a node
/// and meant to run there.
fn registered(instance: &Instance) -> bool {
    instance.node.is_some()
        && !matches!(
            instance.state,
            InstanceState::Pending | InstanceState::Stopped
        )
}

/// A registered instance with its service and node; `None` for one that
/// is not registered or whose service or node is gone.
fn registration<'a>(
    state: &'a Model,
    instance: &'a Instance,
) -> Option<(&'a Service, &'a Instance, &'a Node)> {
    if !registered(instance) {
        return None;
    }
    let service = state
        .services
        .get(&(instance.namespace.clone(), instance.service.clone()))?;
    let node = state.nodes.get(instance.node.as_deref()?)?;
    Some((service, instance, node))
}

/// A Consul check status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

/// Whether both the instance's and its node's checks pass: what
/// `?passing` keeps and what Prometheus discovery offers.
pub fn passing(instance: &Instance, node: &Node) -> bool {
    instance_status(instance) == CheckStatus::Passing && node_status(node) == CheckStatus::Passing
}

fn instance_status(instance: &Instance) -> CheckStatus {
    match instance.state {
        InstanceState::Running => CheckStatus::Passing,
        InstanceState::Starting | InstanceState::Pulling => CheckStatus::Warning,
        _ => CheckStatus::Critical,
    }
}

fn node_status(node: &Node) -> CheckStatus {
    match node.state {
        NodeState::Ready | NodeState::Draining => CheckStatus::Passing,
        NodeState::Provisioning => CheckStatus::Warning,
        NodeState::Down | NodeState::Retired => CheckStatus::Critical,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    #[schema(value_type = String)]
    pub datacenter: &'static str,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One entry of `/v1/catalog/service/{name}`: node and service flattened.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    #[schema(value_type = String)]
    pub datacenter: &'static str,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_weights: Weights,
    pub service_enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One entry of `/v1/health/service/{name}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    pub node: CatalogNode,
    pub service: AgentService,
    pub checks: Vec<Check>,
}

/// The Consul view of one replicated state, pure.
pub struct Catalog<'a> {
    pub state: &'a Model,
}

impl<'a> Catalog<'a> {
    pub fn new(state: &'a Model) -> Catalog<'a> {
        Catalog { state }
    }

    /// The index answers report and block on.
    pub fn index(&self) -> u64 {
        self.state.catalog_index.max(1)
    }

    pub fn node(&self, node: &Node) -> CatalogNode {
        let address = node.published_address();
        let mut meta = BTreeMap::new();
        if let Some(region) = &node.spec.region {
            meta.insert("region".to_string(), region.clone());
        }
        if let Some(zone) = &node.spec.zone {
            meta.insert("zone".to_string(), zone.clone());
        }
        meta.insert(
            "state".to_string(),
            format!("{:?}", node.state).to_lowercase(),
        );
        for (key, value) in &node.spec.labels {
            meta.entry(key.clone()).or_insert_with(|| value.clone());
        }
        CatalogNode {
            id: node_id(&node.name),
            node: node.name.clone(),
            tagged_addresses: [
                ("lan".to_string(), address.clone()),
                ("wan".to_string(), address.clone()),
            ]
            .into(),
            address,
            datacenter: DATACENTER,
            meta,
            create_index: node.create_index,
            modify_index: node.version.max(node.create_index),
        }
    }

    /// Every node of the inventory, by name.
    pub fn nodes(&self) -> Vec<CatalogNode> {
        self.state.nodes.values().map(|n| self.node(n)).collect()
    }

    /// The registered instances of every container service, with their
    /// service and node.
    pub fn registrations(
        &self,
    ) -> impl Iterator<Item = (&'a Service, &'a Instance, &'a Node)> + 'a {
        let state = self.state;
        state
            .instances
            .values()
            .filter_map(move |i| registration(state, i))
    }

    fn tags(service: &Service, instance: &Instance) -> Vec<String> {
        let mut tags = vec![
            format!("namespace={}", service.namespace),
            format!("version={}", instance.spec_version),
        ];
        tags.extend(
            service
                .spec
                .ports
                .iter()
                .map(|p| format!("port={}", p.name)),
        );
        tags
    }

    fn agent_service(&self, service: &Service, instance: &Instance, node: &Node) -> AgentService {
        let mut meta: BTreeMap<String, String> = [
            ("namespace", service.namespace.clone()),
            ("service", service.name.clone()),
            ("version", instance.spec_version.to_string()),
            ("slot", instance.slot.to_string()),
            ("instance", instance.id.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for port in &instance.ports {
            meta.insert(format!("port_{}", port.name), port.host_port.to_string());
        }
        // The first declared port is Consul's one port.
        let port = service
            .spec
            .ports
            .first()
            .and_then(|declared| instance.ports.iter().find(|p| p.name == declared.name))
            .map_or(0, |p| p.host_port);
        AgentService {
            id: instance.id.clone(),
            service: consul_name(&service.namespace, &service.name),
            tags: Self::tags(service, instance),
            address: instance
                .address
                .clone()
                .unwrap_or_else(|| node.published_address()),
            meta,
            port,
            weights: Weights {
                passing: 1,
                warning: 1,
            },
            enable_tag_override: false,
            create_index: service.create_index,
            modify_index: service.version,
        }
    }

    /// Consul service names with the union of their instances' tags.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for service in self.state.services.values() {
            if service.spec.kind != crate::state::ServiceKind::Container {
                continue;
            }
            names
                .entry(consul_name(&service.namespace, &service.name))
                .or_default();
        }
        for (service, instance, _) in self.registrations() {
            names
                .entry(consul_name(&service.namespace, &service.name))
                .or_default()
                .extend(Self::tags(service, instance));
        }
        names
            .into_iter()
            .map(|(name, tags)| (name, tags.into_iter().collect()))
            .collect()
    }

    fn of_service(
        &self,
        consul: &str,
        tag: Option<&str>,
    ) -> impl Iterator<Item = (&'a Service, &'a Instance, &'a Node)> + 'a {
        let (namespace, name) = from_consul_name(consul);
        let tag = tag.map(str::to_string);
        let state = self.state;
        state
            .service_instances(&namespace, &name)
            .into_iter()
            .filter_map(move |i| registration(state, i))
            .filter(move |(service, instance, _)| {
                tag.as_ref()
                    .is_none_or(|tag| Self::tags(service, instance).contains(tag))
            })
    }

    /// `/v1/catalog/service/{name}`.
    pub fn service(&self, consul: &str, tag: Option<&str>) -> Vec<CatalogService> {
        self.of_service(consul, tag)
            .map(|(service, instance, node)| {
                let s = self.agent_service(service, instance, node);
                let node = self.node(node);
                CatalogService {
                    id: node.id,
                    node: node.node,
                    address: node.address,
                    datacenter: DATACENTER,
                    tagged_addresses: node.tagged_addresses,
                    node_meta: node.meta,
                    service_id: s.id,
                    service_name: s.service,
                    service_tags: s.tags,
                    service_address: s.address,
                    service_meta: s.meta,
                    service_port: s.port,
                    service_weights: s.weights,
                    service_enable_tag_override: false,
                    create_index: s.create_index,
                    modify_index: s.modify_index,
                }
            })
            .collect()
    }

    /// `/v1/health/service/{name}`; with `passing_only`, only entries whose
    /// checks all pass.
    pub fn health(&self, consul: &str, tag: Option<&str>, passing_only: bool) -> Vec<HealthEntry> {
        self.of_service(consul, tag)
            .map(|(service, instance, node)| {
                let service_entry = self.agent_service(service, instance, node);
                let node_entry = self.node(node);
                let node_check = Check {
                    node: node.name.clone(),
                    check_id: "serfHealth".into(),
                    name: "Serf Health Status".into(),
                    status: node_status(node),
                    notes: String::new(),
                    output: format!("node {} is {:?}", node.name, node.state).to_lowercase(),
                    service_id: String::new(),
                    service_name: String::new(),
                    service_tags: Vec::new(),
                    kind: String::new(),
                    create_index: node.create_index,
                    modify_index: node.version.max(node.create_index),
                };
                let mut output =
                    format!("instance {} is {}", instance.id, state_name(instance.state));
                if let Some(exit) = instance
                    .last_exit
                    .as_ref()
                    .filter(|_| instance.state != InstanceState::Running)
                {
                    output.push_str(&format!(" (last exit {}: {})", exit.code, exit.reason));
                }
                let instance_check = Check {
                    node: node.name.clone(),
                    check_id: format!("service:{}", instance.id),
                    name: format!("Service '{}' check", service_entry.service),
                    status: instance_status(instance),
                    notes: "raftvisor supervision".into(),
                    output,
                    service_id: service_entry.id.clone(),
                    service_name: service_entry.service.clone(),
                    service_tags: service_entry.tags.clone(),
                    kind: if service.spec.health.is_some() {
                        "http".into()
                    } else {
                        "docker".into()
                    },
                    create_index: service.create_index,
                    modify_index: self.index(),
                };
                HealthEntry {
                    node: node_entry,
                    service: service_entry,
                    checks: vec![node_check, instance_check],
                }
            })
            .filter(|entry| {
                !passing_only
                    || entry
                        .checks
                        .iter()
                        .all(|c| c.status == CheckStatus::Passing)
            })
            .collect()
    }
}

fn state_name(state: InstanceState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

/// A stable UUID-shaped node id derived from the name (Consul clients
/// expect one; raftvisor's nodes are named, not numbered).
fn node_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn reject_filters(params: &Params) -> ApiResult<()> {
    if params.has("filter") {
        return Err(ApiError::bad_request(
            "?filter= (Consul's filter expressions) is not supported by raftvisor; use ?tag= or ?passing",
        ));
    }
    Ok(())
}

/// Answers `render` of the state once the blocking query (if any) allows.
async fn blocking_read<T: Serialize>(
    replica: &Replica,
    params: &Params,
    render: impl Fn(&Catalog) -> T,
) -> ApiResult<Response> {
    reject_filters(params)?;
    let blocking = Blocking::from_params(params)?;
    params.read_barrier(replica).await?;
    blocking
        .wait(replica, |model| Catalog::new(model).index())
        .await;
    let (index, body) = replica.sm.read(|model| {
        let catalog = Catalog::new(model);
        (catalog.index(), render(&catalog))
    });
    let mut response = Json(body).into_response();
    consul_headers(&mut response, index);
    Ok(response)
}

/// Whether the Consul service `consul` lies in the token's namespaces (a
/// limited token sees the catalog of its namespaces only, as if nothing
/// else were registered).
fn visible(scope: &Scope, consul: &str) -> bool {
    scope.allows_namespace(&from_consul_name(consul).0)
}

#[utoipa::path(
    get, path = "/v1/catalog/services", tag = "consul", params(("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Consul service names and their tags", body = std::collections::BTreeMap<String, Vec<String>>), Refusals)
)]
pub async fn services(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    blocking_read(&replica, &params, |catalog| {
        let mut services = catalog.services();
        services.retain(|name, _| visible(&scope, name));
        services
    })
    .await
}

#[utoipa::path(
    get, path = "/v1/catalog/service/{name}", tag = "consul",
    params(("name" = String, Path, description = "`<name>` in namespace default, `<name>.<namespace>` elsewhere"), ("tag" = Option<String>, Query, description = "Only instances with this tag"), ("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "The service's registrations", body = Vec<CatalogService>), Refusals)
)]
pub async fn service(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    let tag = params.get("tag").map(str::to_string);
    let visible = visible(&scope, &name);
    blocking_read(&replica, &params, |catalog| {
        if visible {
            catalog.service(&name, tag.as_deref())
        } else {
            Vec::new()
        }
    })
    .await
}

#[utoipa::path(
    get, path = "/v1/catalog/nodes", tag = "consul", params(("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Nodes", body = Vec<CatalogNode>), Refusals)
)]
pub async fn nodes(State(replica): State<Arc<Replica>>, params: Params) -> ApiResult<Response> {
    blocking_read(&replica, &params, |catalog| catalog.nodes()).await
}

#[utoipa::path(
    get, path = "/v1/health/service/{name}", tag = "consul",
    params(("name" = String, Path, description = "`<name>` in namespace default, `<name>.<namespace>` elsewhere"), ("tag" = Option<String>, Query, description = "Only instances with this tag"), ("passing" = Option<bool>, Query, description = "Only instances whose checks pass"), ("index" = Option<u64>, Query, description = "Blocking query: wait until the index passes this"),
        ("wait" = Option<String>, Query, description = "Blocking query: at most this long (e.g. `30s`, at most 10m)"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Instances with their node and checks", body = Vec<HealthEntry>), Refusals)
)]
pub async fn health_service(
    State(replica): State<Arc<Replica>>,
    Path(name): Path<String>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    let visible = visible(&scope, &name);
    let tag = params.get("tag").map(str::to_string);
    let passing = params
        .get("passing")
        .is_some_and(|v| v != "false" && v != "0");
    blocking_read(&replica, &params, |catalog| {
        if visible {
            catalog.health(&name, tag.as_deref(), passing)
        } else {
            Vec::new()
        }
    })
    .await
}

/// `/v1/agent/self`, as far as clients read it: the datacenter, this
/// replica's name and address, that it is a server, the API version.
#[utoipa::path(
    get, path = "/v1/agent/self", tag = "consul",
    responses((status = 200, description = "This replica as a Consul agent", body = Object), Refusals)
)]
pub async fn agent_self(State(replica): State<Arc<Replica>>) -> Json<serde_json::Value> {
    let name = format!("manager-{}", replica.id);
    let api_addr = replica.config.api_addr;
    Json(serde_json::json!({
        "Config": {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": name,
            "NodeID": node_id(&name),
            "Server": true,
            "Version": CONSUL_VERSION,
            "Revision": concat!("raftvisor-", env!("CARGO_PKG_VERSION")),
        },
        "Member": {
            "Name": name,
            "Addr": api_addr.ip().to_string(),
            "Port": api_addr.port(),
            "Tags": { "role": "consul", "dc": DATACENTER, "raftvisor": env!("CARGO_PKG_VERSION") },
            "Status": 1,
        },
        "Meta": {},
    }))
}

/// `/v1/status/leader`: the leader's API address as a JSON string (empty
/// without a leader, as Consul answers).
#[utoipa::path(
    get, path = "/v1/status/leader", tag = "consul",
    responses((status = 200, description = "The leader's address (empty without one)", body = String), Refusals)
)]
pub async fn status_leader(State(replica): State<Arc<Replica>>) -> Json<String> {
    let metrics = replica.metrics();
    let leader = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.api_addr.clone())
    });
    Json(leader.unwrap_or_default())
}

/// `/v1/status/peers`: the voters' API addresses.
#[utoipa::path(
    get, path = "/v1/status/peers", tag = "consul",
    responses((status = 200, description = "The voters' addresses", body = Vec<String>), Refusals)
)]
pub async fn status_peers(State(replica): State<Arc<Replica>>) -> Json<Vec<String>> {
    let metrics = replica.metrics();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    Json(
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(_, n)| n.api_addr.clone())
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        assert_eq!(consul_name("default", "web"), "web");
        assert_eq!(consul_name("demo", "echo"), "echo.demo");
        assert_eq!(from_consul_name("web"), ("default".into(), "web".into()));
        assert_eq!(
            from_consul_name("echo.demo"),
            ("demo".into(), "echo".into())
        );
    }

    use crate::state::{
        Command, InstanceStatus, Outcome, Protocol, PublishedPort, Request, RequestId,
    };

    fn apply(state: &mut Model, index: u64, command: Command) -> Outcome {
        let request = Request {
            id: RequestId(index as u128),
            time_ms: 1_000,
            command,
        };
        let outcome = state.apply(index, &request).outcome;
        let touched = crate::state::touched::touched(&request.command, &outcome);
        state.note_catalog_change(index, &touched);
        outcome
    }

    /// `demo/echo` with two slots on n1 and n2: slot 0 running, slot 1
    /// starting; `default/web` with none placed.
    pub(crate) fn two_services() -> Model {
        let mut state = Model::default();
        let spec = |replicas: u32| {
            serde_json::from_value(serde_json::json!({
                "image": "raftvisor-echo:local",
                "replicas": replicas,
                "ports": [{"name": "http", "container_port": 8080}, {"name": "admin", "container_port": 9090}]
            }))
            .unwrap()
        };
        for (index, (namespace, name)) in [(1, ("demo", "echo")), (2, ("default", "web"))] {
            apply(
                &mut state,
                index,
                Command::PutService {
                    namespace: namespace.into(),
                    name: name.into(),
                    spec: spec(2),
                    expected_version: None,
                },
            );
        }
        for (index, node) in [(3, "n1"), (4, "n2")] {
            apply(
                &mut state,
                index,
                Command::PutNode {
                    name: node.into(),
                    spec: serde_json::from_value(serde_json::json!({
                        "docker_endpoint": "unix:///var/run/docker.sock",
                        "address": format!("10.0.0.{}", index),
                        "zone": "z1"
                    }))
                    .unwrap(),
                    expected_version: None,
                },
            );
        }
        for (slot, node, running) in [
            (0u32, "n1", InstanceState::Running),
            (1, "n2", InstanceState::Starting),
        ] {
            let index = 10 + u64::from(slot) * 2;
            let Outcome::Instance(placed) = apply(
                &mut state,
                index,
                Command::PlaceSlot {
                    namespace: "demo".into(),
                    service: "echo".into(),
                    slot,
                    node: node.into(),
                },
            ) else {
                panic!("placed")
            };
            apply(
                &mut state,
                index + 1,
                Command::SetInstanceStatus {
                    id: placed.id.clone(),
                    generation: placed.generation,
                    status: InstanceStatus {
                        state: running,
                        container_id: Some(format!("c{slot}")),
                        restarts: 0,
                        last_exit: None,
                        address: Some(format!("10.0.0.{}", 3 + slot)),
                        ports: vec![
                            PublishedPort {
                                name: "http".into(),
                                container_port: 8080,
                                host_port: 31000 + slot as u16,
                                protocol: Protocol::Tcp,
                            },
                            PublishedPort {
                                name: "admin".into(),
                                container_port: 9090,
                                host_port: 32000 + slot as u16,
                                protocol: Protocol::Tcp,
                            },
                        ],
                        spec_version: placed.spec_version,
                        restart_epoch: 0,
                    },
                },
            );
        }
        state
    }

    #[test]
    fn services_list_every_container_service_with_tags() {
        let state = two_services();
        let services = Catalog::new(&state).services();
        assert_eq!(services.keys().collect::<Vec<_>>(), ["echo.demo", "web"]);
        assert!(services["echo.demo"].contains(&"namespace=demo".to_string()));
        assert!(services["echo.demo"].contains(&"port=admin".to_string()));
        assert!(services["web"].is_empty());
    }

    #[test]
    fn a_service_lists_its_placed_instances_with_the_first_port() {
        let state = two_services();
        let entries = Catalog::new(&state).service("echo.demo", None);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].service_id, "demo.echo.0");
        assert_eq!(entries[0].node, "n1");
        assert_eq!(entries[0].service_address, "10.0.0.3");
        assert_eq!(entries[0].service_port, 31000);
        assert_eq!(entries[0].service_meta["port_admin"], "32000");
        assert_eq!(entries[0].node_meta["zone"], "z1");
        assert!(Catalog::new(&state)
            .service("echo.demo", Some("port=nope"))
            .is_empty());
        assert!(Catalog::new(&state).service("echo", None).is_empty());
    }

    #[test]
    fn passing_keeps_running_instances_on_live_nodes() {
        let mut state = two_services();
        let catalog = Catalog::new(&state);
        assert_eq!(catalog.health("echo.demo", None, false).len(), 2);
        let passing = catalog.health("echo.demo", None, true);
        assert_eq!(passing.len(), 1);
        assert_eq!(passing[0].service.id, "demo.echo.0");
        let before = catalog.index();
        apply(
            &mut state,
            30,
            Command::SetNodeState {
                name: "n1".into(),
                state: NodeState::Down,
                reason: "test".into(),
            },
        );
        let catalog = Catalog::new(&state);
        assert!(catalog.index() > before, "a node change moves the index");
        assert!(catalog.health("echo.demo", None, true).is_empty());
        let kv_index = catalog.index();
        apply(
            &mut state,
            31,
            Command::KvPut {
                key: "k".into(),
                value: b"v".to_vec(),
                flags: 0,
                cas: None,
            },
        );
        assert_eq!(
            Catalog::new(&state).index(),
            kv_index,
            "KV writes do not wake catalog reads"
        );
    }

    #[test]
    fn node_ids_are_uuid_shaped_and_stable() {
        let id = node_id("n1");
        assert_eq!(id.len(), 36);
        assert_eq!(id, node_id("n1"));
        assert_ne!(id, node_id("n2"));
    }
}
