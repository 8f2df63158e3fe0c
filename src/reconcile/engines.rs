//! One runtime client per Docker endpoint, shared by every controller and
//! reused across reconciles (connection pools stay warm), optionally
//! behind a [`Gate`] that every mutating call (create, start, stop,
//! remove; pull, load, build and remove of images) must pass at the moment
//! it is made — the leader's lease. Reads (list, inspect, events, ping,
//! saving an image) are never gated.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;

use crate::runtime::docker::DockerRuntime;
use crate::runtime::{
    ByteStream, CommandOutput, CommandRequest, ContainerInfo, ContainerRuntime, ContainerSpec,
    ImageInfo, RegistryAuth, RuntimeError, RuntimeEvent,
};
use crate::state::Node;

/// Says whether engines may be changed right now, or why not.
pub type Gate = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Connects runtimes on demand; tests may install their own.
#[derive(Clone, Default)]
pub struct Engines {
    by_endpoint: Arc<Mutex<HashMap<String, Arc<dyn ContainerRuntime>>>>,
    gate: Option<Gate>,
}

impl Engines {
    /// These engines, with every mutating call first passing `gate`.
    pub fn gated(mut self, gate: Gate) -> Engines {
        self.gate = Some(gate);
        self
    }

    /// The runtime of `node`'s engine, behind the gate if there is one.
    pub fn for_node(&self, node: &Node) -> Result<Arc<dyn ContainerRuntime>, RuntimeError> {
        let runtime = self.connect(node)?;
        Ok(match &self.gate {
            Some(gate) => Arc::new(Gated {
                inner: runtime,
                gate: gate.clone(),
            }),
            None => runtime,
        })
    }

    fn connect(&self, node: &Node) -> Result<Arc<dyn ContainerRuntime>, RuntimeError> {
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

/// A runtime whose mutating calls pass a [`Gate`] first.
struct Gated {
    inner: Arc<dyn ContainerRuntime>,
    gate: Gate,
}

impl Gated {
    fn pass(&self, operation: &'static str) -> Result<(), RuntimeError> {
        (self.gate)().map_err(|reason| RuntimeError::NoLease { operation, reason })
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Gated {
    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.pass("create")?;
        self.inner.create(spec).await
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.pass("start")?;
        self.inner.start(id).await
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.pass("stop")?;
        self.inner.stop(id, grace).await
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.pass("remove")?;
        self.inner.remove(id).await
    }
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.inner.inspect(id).await
    }
    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list(labels).await
    }
    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, RuntimeError>>, RuntimeError> {
        self.inner.events(labels).await
    }
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.inner.inspect_image(reference).await
    }
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        self.pass("pull an image for")?;
        self.inner.pull(reference, auth, limit).await
    }
    async fn resolve(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        self.inner.resolve(reference, auth).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.pass("remove a volume for")?;
        self.inner.remove_volume(name).await
    }
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.pass("remove an image for")?;
        self.inner.remove_image(reference).await
    }
    async fn save_image(&self, reference: &str) -> Result<ByteStream, RuntimeError> {
        self.inner.save_image(reference).await
    }
    async fn load_image(&self, archive: ByteStream, limit: Duration) -> Result<(), RuntimeError> {
        self.pass("load an image for")?;
        self.inner.load_image(archive, limit).await
    }
    async fn exec(&self, id: &str, request: CommandRequest) -> Result<CommandOutput, RuntimeError> {
        self.pass("run a hook in")?;
        self.inner.exec(id, request).await
    }
    async fn run_once(
        &self,
        spec: &ContainerSpec,
        request: CommandRequest,
    ) -> Result<CommandOutput, RuntimeError> {
        self.pass("run a one-shot hook")?;
        self.inner.run_once(spec, request).await
    }
    async fn build_image(
        &self,
        context: ByteStream,
        tag: &str,
        log: tokio::sync::mpsc::UnboundedSender<String>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        self.pass("build an image for")?;
        self.inner.build_image(context, tag, log, limit).await
    }
}
