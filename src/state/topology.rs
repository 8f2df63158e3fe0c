//! Topologies: the deployment of a whole namespace as one document — every
//! service's spec in deploy order, images pinned to what they resolved to,
//! secret values left out — and the versions of named topologies the
//! cluster keeps. Pure: it builds a topology from the state and checks one;
//! it never deploys (the CLI applies a topology service by service, a
//! clone is one state command).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Actor, ServiceKind, ServiceSpec, State};
use crate::secrets::REDACTED;

/// Versions kept per named topology, newest last.
pub const VERSIONS_KEPT: usize = 20;
/// Most services in one topology.
pub const MAX_SERVICES: usize = 500;
/// The refusal of a clone into a namespace that has services (409).
pub const NAMESPACE_NOT_EMPTY: &str = "namespace_not_empty";

/// One service of a topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopologyService {
    pub name: String,
    #[serde(with = "super::migrate::versioned")]
    pub spec: ServiceSpec,
}

/// A namespace's deployment, services in deploy order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Topology {
    /// The namespace it was exported from, if it was.
    #[serde(default)]
    pub source: Option<String>,
    /// The Raft index of the state it was exported from.
    #[serde(default)]
    pub exported_index: Option<u64>,
    #[serde(default)]
    pub services: Vec<TopologyService>,
}

impl Topology {
    /// Checks the names and specs of a topology (secret values aside: a
    /// stored topology keeps none).
    pub fn check(&self) -> Result<(), String> {
        if self.services.len() > MAX_SERVICES {
            return Err(format!(
                "a topology holds at most {MAX_SERVICES} services, this one {}",
                self.services.len()
            ));
        }
        let mut names = BTreeSet::new();
        for service in &self.services {
            super::validate::dns_label("service name", &service.name).map_err(|e| e.to_string())?;
            if !names.insert(service.name.as_str()) {
                return Err(format!("service {} appears twice", service.name));
            }
            super::validate::service_spec(&service.spec)
                .map_err(|e| format!("service {}: {e}", service.name))?;
        }
        Ok(())
    }

    /// The secret variables each service needs a value for, `service.NAME`.
    pub fn secret_names(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(|s| {
                s.spec
                    .secret_env
                    .names()
                    .map(move |n| format!("{}.{n}", s.name))
            })
            .collect()
    }

    /// The same topology without secret values (each shown as `<redacted>`).
    pub fn without_secret_values(mut self) -> Topology {
        for service in &mut self.services {
            for value in service.spec.secret_env.0.values_mut() {
                *value = REDACTED.to_string();
            }
        }
        self
    }
}

/// Why a namespace cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("namespace {0} has no services")]
    NoServices(String),
    #[error("{service} is not a service of namespace {namespace}")]
    NotAService { service: String, namespace: String },
}

/// What an export or a clone does with each service of a namespace.
pub struct Export<'a> {
    pub namespace: &'a str,
    /// Services not duplicated: the copy is an external service whose
    /// hostname is the original's DNS name.
    pub shared: &'a BTreeSet<String>,
    /// The cluster's DNS domain.
    pub domain: &'a str,
}

impl Export<'_> {
    /// The namespace's services in deploy order (the order they were first
    /// created), images pinned, shared ones as references. Secret values
    /// stay as the state holds them (sealed): the caller removes them
    /// unless the copy stays in the cluster.
    pub fn from_state(&self, state: &State) -> Result<Topology, ExportError> {
        let mut services: Vec<_> = state
            .services
            .values()
            .filter(|s| s.namespace == self.namespace)
            .collect();
        if services.is_empty() {
            return Err(ExportError::NoServices(self.namespace.to_string()));
        }
        let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        if let Some(missing) = self.shared.iter().find(|n| !names.contains(n.as_str())) {
            return Err(ExportError::NotAService {
                service: missing.clone(),
                namespace: self.namespace.to_string(),
            });
        }
        services.sort_by_key(|s| (s.create_index, s.name.clone()));
        let services = services
            .into_iter()
            .map(|service| {
                let spec = if self.shared.contains(&service.name) {
                    shared_reference(&service.name, self.namespace, self.domain)
                } else {
                    let mut spec = service.spec.clone();
                    if spec.kind == ServiceKind::Container {
                        if let Some(pin) =
                            state
                                .images
                                .pin(self.namespace, &service.name, service.version)
                        {
                            spec.image = pin.to_string();
                        }
                    }
                    spec
                };
                TopologyService {
                    name: service.name.clone(),
                    spec,
                }
            })
            .collect();
        Ok(Topology {
            source: Some(self.namespace.to_string()),
            exported_index: Some(state.applied_index),
            services,
        })
    }
}

/// The spec of a shared service's stand-in: its DNS name as a CNAME.
fn shared_reference(name: &str, namespace: &str, domain: &str) -> ServiceSpec {
    serde_json::from_value(serde_json::json!({
        "kind": "external",
        "hostname": format!("{name}.{namespace}.svc.{domain}"),
    }))
    .expect("an external service's spec")
}

/// One kept version of a named topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyVersion {
    /// The Raft index of the write.
    pub version: u64,
    pub topology: Topology,
    pub at_ms: u64,
    pub actor: Option<Actor>,
}

/// Named topologies and their versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyBook {
    /// Oldest first, at most [`VERSIONS_KEPT`] per name.
    pub topologies: BTreeMap<String, Vec<TopologyVersion>>,
}

impl super::migrate::FirstVersion for TopologyBook {
    const VERSION_MARKER: &'static [u8] = b"ST01";
}

impl TopologyBook {
    /// Keeps `topology` as the newest version of `name`, without secret
    /// values.
    pub(super) fn save(&mut self, name: &str, topology: Topology, version: TopologyVersionMeta) {
        let versions = self.topologies.entry(name.to_string()).or_default();
        versions.push(TopologyVersion {
            version: version.index,
            topology: topology.without_secret_values(),
            at_ms: version.at_ms,
            actor: version.actor,
        });
        if versions.len() > VERSIONS_KEPT {
            let extra = versions.len() - VERSIONS_KEPT;
            versions.drain(..extra);
        }
    }

    /// Version `version` of `name` (the newest if none).
    pub fn get(&self, name: &str, version: Option<u64>) -> Option<&TopologyVersion> {
        let versions = self.topologies.get(name)?;
        match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|t| t.version == v),
        }
    }
}

/// When and by whom a topology version was written.
pub struct TopologyVersionMeta {
    pub index: u64,
    pub at_ms: u64,
    pub actor: Option<Actor>,
}
