//! One runtime client per Docker endpoint, shared by every controller and
//! reused across reconciles (connection pools stay warm).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::runtime::docker::DockerRuntime;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::state::Node;

/// Connects runtimes on demand; tests may install their own.
#[derive(Clone, Default)]
pub struct Engines {
    by_endpoint: Arc<Mutex<HashMap<String, Arc<dyn ContainerRuntime>>>>,
}

impl Engines {
    /// The runtime of `node`'s engine.
    pub fn for_node(&self, node: &Node) -> Result<Arc<dyn ContainerRuntime>, RuntimeError> {
        let endpoint = &node.spec.docker_endpoint;
        // Changed TLS files make a new client; the old one may be refused.
        let key = match &node.spec.docker_tls {
            Some(tls) => format!("{endpoint}#{}#{}#{}", tls.ca_cert, tls.cert, tls.key),
            None => endpoint.clone(),
        };
        let mut map = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runtime) = map.get(&key) {
            return Ok(runtime.clone());
        }
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(match &node.spec.docker_tls {
            Some(tls) => DockerRuntime::connect_tls(endpoint, tls, Default::default())?,
            None => DockerRuntime::connect(endpoint)?,
        });
        map.insert(key, runtime.clone());
        Ok(runtime)
    }

    /// Uses `runtime` for `endpoint` (in-memory engines in tests and benchmarks).
    pub fn install(&self, endpoint: &str, runtime: Arc<dyn ContainerRuntime>) {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.to_string(), runtime);
    }
}

/// The address clients use to reach published ports of `node`.
pub fn node_address(node: &Node) -> String {
    if let Some(address) = &node.spec.address {
        return address.clone();
    }
    let endpoint = &node.spec.docker_endpoint;
    let rest = endpoint.split_once("://").map_or("", |(_, rest)| rest);
    if endpoint.starts_with("unix://") || rest.is_empty() {
        return "127.0.0.1".into();
    }
    let host_port = rest.split('/').next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(['[', ']']).to_string(),
        None => host_port.to_string(),
    }
}
