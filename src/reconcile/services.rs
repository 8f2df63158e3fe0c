//! The service controller: reconciles one service (`namespace/name`) at a
//! time on the [`super::controller`] runtime. A reconcile reads the
//! service, its instances and the inventory from the local state, its
//! containers from what the engines were observed to run
//! ([`super::observed`], kept current by [`super::watcher`]: no engine is
//! listed here), plans ([`super::plan`]) and executes the plan: Raft writes
//! (placement intents, observed status) go first; engine calls follow. A
//! service that no longer exists has its containers removed. It is woken
//! by commits touching the service or its instances, by engine events and
//! probe verdicts of its containers, by its own crash-backoff and retry
//! deadlines (a requeue, never a timer task), by the puller when an image
//! it asked for arrived or failed, and by the resync.
//!
//! Images: a version's tag is resolved to a digest once (the version's
//! pin, written through Raft) before any container of that version is
//! created; until then nothing counts as outdated, so a registry that is
//! down delays a rollout but never stops the running version. A slot is
//! placed on a node only once the puller says the image is there (a
//! rolling update therefore fetches before it replaces: a pull never
//! lengthens an outage); a container is created only then too (an
//! instance whose image went missing shows `pulling`, one whose fetch
//! failed `pull_failed`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::autoscale::CapacityWanted;
use super::backoff::{self, CRASH_LOOP_AFTER};
use super::controller::{Action as Next, Limits, OnStop, Reason, Reconciler};
use super::engines::Engines;
use super::health::HealthBook;
use super::hook_run::{run_hook, HookCall};
use super::labels;
use super::observed::{Observed, ServiceKey};
use super::placement::Loads;
use super::plan::{batches, plan, Action, PlanInput, RestartReason};
use super::pulls::{Pulls, Readiness};
use super::settling::RunningClocks;
use super::SupervisorSettings;
use crate::dates::parse_rfc3339_ms;
use crate::replica::{now_ms, Replica};
use crate::runtime::{
    ContainerInfo, ContainerSpec, ContainerState, NamedVolume, PortBinding, RuntimeError,
};
use crate::secrets::{SecretsError, SecretsKey};
use crate::state::image_catalog::Reference;
use crate::state::rollouts::Standing;
use crate::state::volumes::VolumeMade;
use crate::state::{
    Command, ExitInfo, HookKind, HookRun, Instance, InstanceState, InstanceStatus, Node, NodeState,
    Outcome, PublishedPort, Resources, Service, ServiceKind, State,
};

/// Reconciles of different services running at once.
const CONCURRENCY: usize = 256;

/// Containers one service's reconcile creates or restarts at once.
const ENGINE_ACTIONS_AT_ONCE: usize = 8;

/// How soon a service with a slot no node could take looks again.
const UNPLACED_RETRY: Duration = Duration::from_secs(2);

/// Crash history of one instance generation, kept in the leader's memory.
#[derive(Debug, Clone, Default)]
struct CrashTrack {
    consecutive: u32,
    /// Not before this instant may it be started again.
    not_before: Option<Instant>,
    /// The `finished_at` of the death already counted.
    counted_death: String,
}

/// How long the loads of a [`PlacementBook`] serve before they are
/// computed again from the state.
const LOAD_REFRESH: Duration = Duration::from_millis(500);

/// The inventory and what every node carries, as placement sees them.
/// Computing the loads walks every instance, so they are computed from the
/// state at most every [`LOAD_REFRESH`] (and whenever the inventory
/// changed); in between, each placement this controller decides is added
/// at once, so reconciles placing at the same time see each other's
/// choices rather than all taking the same least loaded nodes. The
/// inventory is copied only when a node changed, not per placement.
#[derive(Debug, Default)]
struct PlacementBook {
    /// When `loads` were computed.
    computed: Option<Instant>,
    /// The inventory `nodes` was copied at (see [`inventory_mark`]).
    mark: (usize, u64),
    nodes: Arc<BTreeMap<String, Node>>,
    /// Complete for `nodes`.
    loads: Loads,
}

impl PlacementBook {
    /// Brings the book up to the state: a changed inventory is copied
    /// again, stale loads are computed again.
    fn refresh(&mut self, replica: &Replica) {
        replica.sm.read(|s| {
            let mark = inventory_mark(&s.nodes);
            let moved = mark != self.mark || self.computed.is_none();
            if moved {
                self.nodes = Arc::new(s.nodes.clone());
                self.mark = mark;
            }
            if moved || self.computed.is_none_or(|at| at.elapsed() >= LOAD_REFRESH) {
                self.loads = Loads::for_nodes(&self.nodes, placed(s));
                self.computed = Some(Instant::now());
            }
        })
    }
}

/// Changes whenever the inventory does: every node change stamps the node
/// with the change's Raft index, and a removal changes the count.
fn inventory_mark(nodes: &BTreeMap<String, Node>) -> (usize, u64) {
    let latest = nodes.values().map(|n| n.version).max().unwrap_or(0);
    (nodes.len(), latest)
}

/// Where every instance is placed, with the resources it reserves.
fn placed(state: &State) -> impl Iterator<Item = (&str, &Resources)> {
    state.services.values().flat_map(move |service| {
        state
            .service_instances(&service.namespace, &service.name)
            .into_iter()
            .filter_map(move |i| Some((i.node.as_deref()?, &service.spec.resources)))
    })
}

/// Why a reconcile of a service failed: a Raft write its next steps
/// depend on did not go through (engine failures are recorded on the
/// instance and retried on their own schedule instead).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the placement of slot {slot} was not written")]
    PlacementNotWritten { slot: u32 },
    #[error("the removal of instance {id} was not written")]
    RemovalNotWritten { id: String },
}

/// A failure to create that must not be retried in a hot loop.
#[derive(Debug, Clone)]
struct CreateFailure {
    errors: u32,
    retry_at: Instant,
}

/// The service controller of one term.
pub struct Services {
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    observed: Arc<Mutex<Observed>>,
    health: Arc<Mutex<HealthBook>>,
    capacity: CapacityWanted,
    pulls: Pulls,
    crashes: Mutex<HashMap<(String, u64), CrashTrack>>,
    create_failures: Mutex<HashMap<(String, u64), CreateFailure>>,
    reported_unplaceable: Mutex<HashMap<(ServiceKey, u32), String>>,
    /// The earliest deadline (crash backoff, create retry) each running
    /// reconcile met: what it asks to be requeued at.
    deadlines: Mutex<HashMap<ServiceKey, Instant>>,
    /// An async lock: a reconcile waiting for it yields its thread, which
    /// Raft's own tasks share.
    book: tokio::sync::Mutex<PlacementBook>,
    /// Each service's template fingerprint, for the version of its spec
    /// and the image pin it was computed from.
    fingerprints: Mutex<HashMap<ServiceKey, KnownTemplate>>,
    /// Service versions whose image names itself (an image only on the
    /// engines, or a digest): resolved without a pin in the state.
    self_named: Mutex<HashMap<ServiceKey, u64>>,
    /// How long each instance has been running, for `min_healthy_ms`.
    running: Mutex<HashMap<ServiceKey, RunningClocks>>,
}

/// A template fingerprint with the spec version and pin it is of.
type KnownTemplate = (u64, String, Arc<str>);

/// What one reconcile of a service acts with.
#[derive(Clone, Copy)]
struct Round<'a> {
    cluster: &'a str,
    service: &'a Service,
    nodes: &'a BTreeMap<String, Node>,
    instances: &'a [Instance],
    /// The template of the service's current version ("" while resolving).
    template: &'a str,
    image: &'a ImageChoice,
}

/// Which image a reconcile's containers are created from.
enum ImageChoice {
    /// The version's pin.
    Resolved(String),
    /// Being resolved: what the resolving look said so far.
    Unresolved(Readiness),
}

impl Services {
    pub fn new(
        replica: Arc<Replica>,
        engines: Engines,
        settings: SupervisorSettings,
        observed: Arc<Mutex<Observed>>,
        health: Arc<Mutex<HealthBook>>,
        capacity: CapacityWanted,
        pulls: Pulls,
    ) -> Services {
        Services {
            replica,
            engines,
            settings,
            observed,
            health,
            capacity,
            pulls,
            crashes: Mutex::new(HashMap::new()),
            create_failures: Mutex::new(HashMap::new()),
            reported_unplaceable: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            deadlines: Mutex::new(HashMap::new()),
            book: tokio::sync::Mutex::new(PlacementBook::default()),
            fingerprints: Mutex::new(HashMap::new()),
            self_named: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Services {
    type Key = ServiceKey;
    type Error = ServiceError;

    fn name(&self) -> &'static str {
        "services"
    }

    fn limits(&self) -> Limits {
        Limits {
            // Room for the engine calls of a plan, a graceful stop included.
            timeout: self.settings.round_budget + self.settings.stop_grace + Duration::from_secs(2),
            concurrency: CONCURRENCY,
            resync: Some(self.settings.resync),
            on_stop: OnStop::Abort,
        }
    }

    /// The services in the state and those whose containers still run.
    fn keys(&self) -> Vec<ServiceKey> {
        let mut keys: BTreeSet<ServiceKey> = self
            .replica
            .sm
            .read(|s| s.services.keys().cloned().collect());
        keys.extend(
            self.observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .services(),
        );
        keys.into_iter().collect()
    }

    async fn reconcile(&self, key: &ServiceKey, _: Reason) -> Result<Next, ServiceError> {
        let failed = self.reconcile_service(key).await;
        let deadline = self
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        match failed {
            Some(error) => Err(error),
            None => Ok(deadline.map_or(Next::AwaitChange, Next::at)),
        }
    }
}

/// Whether some slot of `service` has no instance on a ready node.
fn needs_placement(
    service: &Service,
    instances: &[Instance],
    nodes: &BTreeMap<String, Node>,
) -> bool {
    if service.spec.kind == ServiceKind::External {
        return false;
    }
    (0..service.spec.replicas).any(|slot| {
        instances
            .iter()
            .find(|i| i.slot == slot)
            .and_then(|i| i.node.as_deref())
            .and_then(|n| nodes.get(n))
            .is_none_or(|n| n.state != NodeState::Ready)
    })
}

/// Whether a rollout with surge slots may place one now: some instance
/// runs an older template.
fn surge_may_place(service: &Service, instances: &[Instance], template: &str) -> bool {
    service.spec.update.max_surge > 0
        && service.spec.kind == ServiceKind::Container
        && instances.iter().any(|i| i.template != template)
}

impl Services {
    /// The template fingerprint of `service`'s spec, computed once per
    /// version of it.
    fn fingerprint(&self, service: &Service, pin: &str) -> Arc<str> {
        let key = service_key(service);
        let mut known = self.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(&key) {
            Some((version, known_pin, fingerprint))
                if *version == service.version && known_pin == pin =>
            {
                fingerprint.clone()
            }
            _ => {
                let fingerprint: Arc<str> = crate::state::supervision::template_fingerprint_pinned(
                    &service.spec,
                    Some(pin),
                )
                .into();
                known.insert(key, (service.version, pin.to_string(), fingerprint.clone()));
                fingerprint
            }
        }
    }

    /// The image this reconcile creates containers from: the version's
    /// pin; or, resolving it now, what the state (a kept image), a look at
    /// `node`'s engine (an image only on engines names itself) or the
    /// registry (through the puller) says. Only a resolution that differs
    /// from the spec's own reference is written as the version's pin.
    async fn choose_image(
        &self,
        service: &Service,
        pin: Option<String>,
        node: Option<&Node>,
    ) -> ImageChoice {
        if let Some(pin) = pin {
            return ImageChoice::Resolved(pin);
        }
        let key = service_key(service);
        let self_named = self
            .self_named
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            == Some(&service.version);
        if self_named {
            return ImageChoice::Resolved(service.spec.image.clone());
        }
        // An image the cluster keeps resolves to its id from the state.
        let kept = self.replica.sm.read(|s| {
            s.images
                .stored
                .get(&service.spec.image)
                .map(|image| image.id.clone())
        });
        let resolved = match (kept, node) {
            (Some(id), _) => id,
            (None, None) => {
                return ImageChoice::Unresolved(Readiness::Failed {
                    reason: "no ready node to resolve the image on".into(),
                    retry_at: Instant::now() + UNPLACED_RETRY,
                })
            }
            (None, Some(node)) => match self.look_at_engine(service, node).await {
                Some(resolved) => resolved,
                None => match self.pulls.resolution(
                    &node.name,
                    &service.spec.image,
                    service.spec.pull,
                    &key,
                ) {
                    Readiness::Ready(info) => {
                        self.pulls
                            .forget_resolution(&node.name, &service.spec.image);
                        pin_for(&service.spec.image, &info.repo_digests)
                    }
                    other => return ImageChoice::Unresolved(other),
                },
            },
        };
        if resolved == service.spec.image {
            self.self_named
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, service.version);
            return ImageChoice::Resolved(resolved);
        }
        let written = self
            .write(Command::PinImage {
                namespace: service.namespace.clone(),
                service: service.name.clone(),
                version: service.version,
                reference: resolved.clone(),
            })
            .await;
        // The first pin of a version wins: read back what it is.
        let pin = self.replica.sm.read(|s| {
            s.images
                .pin(&service.namespace, &service.name, service.version)
                .map(str::to_string)
        });
        match pin {
            Some(pin) => {
                tracing::info!(image = %service.spec.image, %pin, version = service.version, "image resolved");
                ImageChoice::Resolved(pin)
            }
            None => {
                if !written {
                    tracing::debug!("the image pin was not written; resolving again later");
                }
                ImageChoice::Unresolved(Readiness::Pending)
            }
        }
    }

    /// The spec's own reference when `node`'s engine has an image that no
    /// registry gave it (built or loaded there), or any copy with `pull =
    /// "never"`: no registry is asked. `None`: the registry must say.
    async fn look_at_engine(&self, service: &Service, node: &Node) -> Option<String> {
        let reference = Reference::parse(&service.spec.image).ok()?;
        let engine = self.engines.for_node(node).ok()?;
        let info = engine.inspect_image(&service.spec.image).await.ok()??;
        if !super::pulls::names_itself(&reference, &info, service.spec.pull) {
            return None;
        }
        self.pulls
            .note_present(&node.name, &service.spec.image, info);
        Some(service.spec.image.clone())
    }

    /// Whether `reference` is on `node` now, asking its engine when the
    /// pull book does not know; when it is not, the puller is asked to
    /// fetch it (and wakes this service). A fetch that failed lets a new
    /// slot be placed, so the failure shows on its instance.
    async fn image_on(
        &self,
        service: &Service,
        node: &Node,
        reference: &str,
        replaces_in_place: bool,
    ) -> bool {
        if service.spec.pull != crate::state::PullPolicy::Always {
            if let Ok(engine) = self.engines.for_node(node) {
                if let Ok(Some(info)) = engine.inspect_image(reference).await {
                    self.pulls.note_present(&node.name, reference, info);
                    return true;
                }
            }
        }
        match self.pulls.want(
            &node.name,
            reference,
            service.spec.pull,
            &service_key(service),
        ) {
            Readiness::Ready(_) => true,
            // A running instance is never replaced by one that cannot start.
            Readiness::Failed { .. } => !replaces_in_place,
            Readiness::Pending => false,
        }
    }

    /// One reconcile of `key`; why it failed, if a write did not go through.
    async fn reconcile_service(&self, key: &ServiceKey) -> Option<ServiceError> {
        let containers = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .of_service(key);
        // Every node only when a slot needs placing; otherwise just the
        // nodes this service's instances and containers are on, so a
        // reconcile costs what the service has, not what the cluster has.
        let (
            cluster,
            service,
            instances,
            nodes,
            placing,
            pin,
            resolver,
            held_for_test,
            canary_held,
        ) = self.replica.sm.read(|s| {
            let service = s.services.get(key).cloned();
            let instances: Vec<Instance> = s
                .service_instances(&key.0, &key.1)
                .into_iter()
                .cloned()
                .collect();
            let placing = service.as_ref().is_some_and(|service| {
                needs_placement(service, &instances, &s.nodes)
                    || surge_may_place(service, &instances, &s.template_of(service))
            });
            let nodes = if placing {
                // The placement book has every node.
                BTreeMap::new()
            } else {
                let names: BTreeSet<&str> = instances
                    .iter()
                    .filter_map(|i| i.node.as_deref())
                    .chain(containers.iter().map(|(node, _)| node.as_str()))
                    .collect();
                names
                    .into_iter()
                    .filter_map(|name| s.nodes.get_key_value(name))
                    .map(|(name, node)| (name.clone(), node.clone()))
                    .collect::<BTreeMap<String, Node>>()
            };
            let pin = service.as_ref().and_then(|service| {
                s.images
                    .pin(&service.namespace, &service.name, service.version)
                    .map(str::to_string)
            });
            // Where to resolve an unpinned version: a ready node of its
            // instances, or else any ready node.
            let resolver = match (&service, &pin) {
                (Some(service), None) if service.spec.kind == ServiceKind::Container => instances
                    .iter()
                    .filter_map(|i| i.node.as_deref())
                    .chain(s.nodes.keys().map(String::as_str))
                    .filter_map(|n| s.nodes.get(n))
                    .find(|n| n.state == NodeState::Ready)
                    .cloned(),
                _ => None,
            };
            // A version with a test hook goes on replacing only once
            // its test passed.
            let held_for_test = service.as_ref().is_some_and(|service| {
                service.spec.hooks.test.is_some()
                    && !s
                        .hooks
                        .verdict(&service.namespace, &service.name, service.version)
                        .is_some_and(|verdict| verdict.passed)
            });
            let canary_held = s.history.canary_held(&key.0, &key.1);
            (
                s.owner().cloned(),
                service,
                instances,
                nodes,
                placing,
                pin,
                resolver,
                held_for_test,
                canary_held,
            )
        });
        // The plan asks only about the nodes its instances are on.
        let reachable: BTreeSet<String> = {
            let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            instances
                .iter()
                .filter_map(|i| i.node.as_deref())
                .filter(|node| observed.is_synced(node))
                .map(str::to_string)
                .collect()
        };
        let cluster = cluster?;
        let Some(service) = service else {
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            // Containers of a service that no longer exists.
            for (node, container) in containers {
                if let Some(node) = nodes.get(&node) {
                    self.remove_container(node, &container.id, "its service was removed")
                        .await;
                }
            }
            return None;
        };
        let (healthy, unhealthy) = {
            let book = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let mut healthy = BTreeSet::new();
            let mut unhealthy = BTreeSet::new();
            for (_, c) in &containers {
                if let Some((id, _)) = labels::owner(&c.labels) {
                    if book.is_healthy(&id, &c.id) {
                        healthy.insert(id.clone());
                    }
                    if book.is_unhealthy(&id, &c.id) {
                        unhealthy.insert(id);
                    }
                }
            }
            (healthy, unhealthy)
        };
        let image = if service.spec.kind == ServiceKind::Container {
            self.choose_image(&service, pin, resolver.as_ref()).await
        } else {
            ImageChoice::Resolved(service.spec.image.clone())
        };
        let template = match &image {
            ImageChoice::Resolved(pin) => Some(self.fingerprint(&service, pin)),
            ImageChoice::Unresolved(_) => None,
        };
        // Planned under the book's lock when placing: the next placing
        // reconcile sees these placements.
        let mut book = if placing {
            let mut book = self.book.lock().await;
            book.refresh(&self.replica);
            Some(book)
        } else {
            None
        };
        let nodes = match &book {
            Some(book) => book.nodes.clone(),
            None => Arc::new(nodes),
        };
        // New instances not yet running long enough still count as a
        // replacement in flight; looked at again when the first has.
        let settling = match template.as_deref() {
            Some(template) => {
                let min_healthy = Duration::from_millis(service.spec.update.min_healthy_ms);
                let (settling, next) = self
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_default()
                    .settling(&instances, template, min_healthy, Instant::now());
                if let Some(at) = next {
                    self.requeue_at(key, at);
                }
                settling
            }
            None => BTreeSet::new(),
        };
        let input = PlanInput {
            service: &service,
            template: template.as_deref(),
            instances: instances.iter().collect(),
            nodes: &nodes,
            observed: containers.iter().map(|(n, c)| (n.as_str(), &**c)).collect(),
            reachable: &reachable,
            healthy: &healthy,
            unhealthy: &unhealthy,
            held_for_test,
            settling: &settling,
            canary_held,
        };
        let actions = match book.as_mut() {
            Some(book) => plan(&input, &mut book.loads),
            None => plan(&input, &mut Loads::default()),
        };
        // Placements that wait for their image are not made: the book
        // takes them back, so they count against no node meanwhile.
        let actions: Vec<Action> = actions
            .into_iter()
            .filter(|action| {
                let held = self.held_for_image(&service, &instances, &image, action);
                if let (true, Some(book), Action::Place { node, .. }) =
                    (held, book.as_mut(), action)
                {
                    book.loads.take_back(node, &service.spec.resources);
                }
                !held
            })
            .collect();
        drop(book);
        if !actions.is_empty() {
            tracing::debug!(actions = actions.len(), "executing the plan");
        }
        let round = Round {
            cluster: &cluster,
            service: &service,
            nodes: &nodes,
            instances: &instances,
            template: template.as_deref().unwrap_or_default(),
            image: &image,
        };
        let mut failed = None;
        for batch in batches(actions) {
            // Containers of distinct slots are created (or restarted) at
            // once: an instance moved off a lost node waits for its own
            // start only, not for its siblings'.
            let results: Vec<Result<(), ServiceError>> = futures::stream::iter(batch)
                .map(|action| self.execute(&round, action))
                .buffer_unordered(ENGINE_ACTIONS_AT_ONCE)
                .collect()
                .await;
            for why in results.into_iter().filter_map(Result::err) {
                failed.get_or_insert(why);
            }
        }
        if failed.is_none() {
            self.follow_rollout(key, settling.is_empty()).await;
        }
        failed
    }

    /// Records that the newest version rolled out completely, or takes a
    /// failed one back when its spec says revert. Each is written once: a
    /// settled version is not settled again, and the revert is written
    /// against the failed version (a deploy after it wins).
    /// `settled`: no new instance is still within `min_healthy_ms`.
    async fn follow_rollout(&self, key: &ServiceKey, settled: bool) {
        let command = self.replica.sm.read(|s| {
            let service = s.services.get(key)?;
            if let Some((to, reason)) = s.revert_due(service) {
                return Some(Command::RollbackService {
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    to: Some(to),
                    expected_version: Some(service.version),
                    revert: Some(reason),
                });
            }
            match s.rollout_standing(service) {
                Standing::Finished { version } if settled => Some(Command::SettleRevision {
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    version,
                }),
                _ => None,
            }
        });
        if let Some(command) = command {
            if matches!(command, Command::RollbackService { .. }) {
                tracing::info!(service = %format!("{}/{}", key.0, key.1), "reverting a failed rollout");
            }
            self.write(command).await;
        }
    }

    /// Whether the placement `action` waits for its image: a slot is
    /// placed on a node only once the version's image is there (a node
    /// that joined receives the images of the instances about to be
    /// placed on it before they are), and a running instance is replaced
    /// in place only then (the old one serves while the image is fetched).
    /// A fetch that failed lets a new slot be placed, so the failure shows
    /// on its instance, but never takes a running instance down.
    fn held_for_image(
        &self,
        service: &Service,
        instances: &[Instance],
        image: &ImageChoice,
        action: &Action,
    ) -> bool {
        let Action::Place { slot, node } = action else {
            return false;
        };
        let replaces_in_place = instances
            .iter()
            .any(|i| i.slot == *slot && i.node.as_deref() == Some(node.as_str()));
        let readiness = match image {
            ImageChoice::Resolved(reference) => match self.pulls.known(node, reference) {
                // Not known yet: the placement looks at the engine itself.
                None => return false,
                // Asked again once its retry is due.
                Some(Readiness::Failed { .. }) if replaces_in_place => {
                    self.pulls
                        .want(node, reference, service.spec.pull, &service_key(service))
                }
                Some(readiness) => readiness,
            },
            ImageChoice::Unresolved(readiness) => readiness.clone(),
        };
        match readiness {
            Readiness::Ready(_) => false,
            Readiness::Pending => true,
            Readiness::Failed { retry_at, .. } => {
                if replaces_in_place {
                    self.requeue_at(&service_key(service), retry_at);
                }
                replaces_in_place
            }
        }
    }

    /// Records what was observed about `instance` (fenced by its generation).
    async fn write_status(&self, instance: &Instance, status: InstanceStatus) -> bool {
        self.write(Command::SetInstanceStatus {
            id: instance.id.clone(),
            generation: instance.generation,
            status,
        })
        .await
    }

    async fn write(&self, command: Command) -> bool {
        match self.replica.write_as_leader(command).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "supervisor write failed");
                false
            }
        }
    }

    async fn execute(&self, round: &Round<'_>, action: Action) -> Result<(), ServiceError> {
        let Round {
            cluster,
            service,
            nodes,
            instances,
            template,
            image,
        } = *round;
        match action {
            Action::Place { slot, node } => {
                if let (ImageChoice::Resolved(reference), Some(target)) = (image, nodes.get(&node))
                {
                    let unknown = self.pulls.known(&node, reference).is_none();
                    let replaces_in_place = instances
                        .iter()
                        .any(|i| i.slot == slot && i.node.as_deref() == Some(node.as_str()));
                    if unknown
                        && !self
                            .image_on(service, target, reference, replaces_in_place)
                            .await
                    {
                        // Placed once the image is there (the puller wakes it).
                        return Ok(());
                    }
                }
                self.reported_unplaceable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&((service.namespace.clone(), service.name.clone()), slot));
                let placed = self
                    .write(Command::PlaceSlot {
                        namespace: service.namespace.clone(),
                        service: service.name.clone(),
                        slot,
                        node,
                    })
                    .await;
                if !placed {
                    return Err(ServiceError::PlacementNotWritten { slot });
                }
                metrics::counter!("raftvisor_placements_total").increment(1);
            }
            Action::Unplaceable {
                slot,
                reason,
                needs_capacity,
            } => {
                if needs_capacity {
                    self.capacity.ask();
                }
                // Room freed by other services wakes nothing here: look
                // again soon rather than at the resync.
                self.requeue_at(&service_key(service), Instant::now() + UNPLACED_RETRY);
                let key = (service_key(service), slot);
                let already = self
                    .reported_unplaceable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    == Some(&reason);
                if !already {
                    tracing::warn!(slot, %reason, "cannot place");
                    let written = self
                        .write(Command::RecordEvent {
                            kind: "instance.unplaceable".into(),
                            subject: format!("{}/{}", service.namespace, service.name),
                            message: format!("slot {slot}: {reason}"),
                        })
                        .await;
                    if written {
                        self.reported_unplaceable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, reason);
                    }
                }
            }
            Action::Create { instance } => {
                self.create(cluster, service, nodes, template, image, instance)
                    .await
            }
            Action::Restart {
                instance,
                container,
                reason,
            } => {
                self.restart(service, nodes, instance, container, reason)
                    .await
            }
            Action::Report {
                instance,
                container,
                state,
            } => {
                let node = instance.node.as_deref().and_then(|n| nodes.get(n));
                let status = status_of(service, &instance, container.as_ref(), node, state);
                self.write_status(&instance, status).await;
            }
            Action::Stop { node, container_id } => {
                if let Some(node) = nodes.get(&node) {
                    if let Ok(engine) = self.engines.for_node(node) {
                        let grace = self
                            .stop_hook(service, instances, node, &container_id)
                            .await;
                        if let Err(e) = engine.stop(&container_id, grace).await {
                            tracing::warn!(error = %e, "stop failed");
                        }
                    }
                }
            }
            Action::Remove {
                node,
                container_id,
                why,
            } => {
                if let Some(node) = nodes.get(&node) {
                    self.stop_hook(service, instances, node, &container_id)
                        .await;
                    self.remove_container(node, &container_id, &why).await;
                }
            }
            Action::Forget { id, generation } => {
                if !self
                    .write(Command::RemoveInstance {
                        id: id.clone(),
                        generation,
                    })
                    .await
                {
                    return Err(ServiceError::RemovalNotWritten { id });
                }
            }
        }
        Ok(())
    }

    /// Runs the service's stop hook for the container about to be stopped
    /// or removed, within the stop grace period: inside it while it runs
    /// (`instance`), or beside it with the slot's volumes (`oneshot`). Its
    /// failure is an event, never a reason to keep the container. Answers
    /// the grace period left for the stop itself.
    async fn stop_hook(
        &self,
        service: &Service,
        instances: &[Instance],
        node: &Node,
        container_id: &str,
    ) -> Duration {
        let grace = self.settings.stop_grace;
        let Some(hook) = service.spec.hooks.stop.as_ref() else {
            return grace;
        };
        let Ok(engine) = self.engines.for_node(node) else {
            return grace;
        };
        let Ok(Some(container)) = engine.inspect(container_id).await else {
            return grace;
        };
        let Some((id, _)) = labels::owner(&container.labels) else {
            return grace;
        };
        let Some(mut instance) = instances.iter().find(|i| i.id == id).cloned() else {
            return grace;
        };
        // The slot as it is on this node, in this container.
        instance.node = Some(node.name.clone());
        instance.container_id = Some(container.id.clone());
        let running = container.state == ContainerState::Running;
        if hook.run == HookRun::Instance && !running {
            return grace;
        }
        let started = Instant::now();
        let call = HookCall {
            container: running.then_some(container.id.as_str()),
            within: Some(grace),
            ..HookCall::on_instance(HookKind::Stop, service, &instance)
        };
        if let Err(failure) = run_hook(&self.replica, &self.engines, call).await {
            tracing::info!(instance = %instance.id, reason = %failure, "stop hook failed");
        }
        grace.saturating_sub(started.elapsed())
    }

    async fn remove_container(&self, node: &Node, container_id: &str, why: &str) {
        let Ok(engine) = self.engines.for_node(node) else {
            return;
        };
        tracing::info!(node = %node.name, container = container_id, why, "removing container");
        let _ = engine.stop(container_id, Duration::from_secs(2)).await;
        if let Err(e) = engine.remove(container_id).await {
            tracing::warn!(error = %e, "remove failed");
        }
    }

    async fn create(
        &self,
        cluster: &str,
        service: &Service,
        nodes: &BTreeMap<String, Node>,
        template: &str,
        image: &ImageChoice,
        instance: Instance,
    ) {
        let failure_key = (instance.id.clone(), instance.generation);
        if let Some(failure) = self
            .create_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&failure_key)
        {
            if Instant::now() < failure.retry_at {
                self.requeue_at(&service_key(service), failure.retry_at);
                return;
            }
        }
        let Some(node) = instance.node.as_deref().and_then(|n| nodes.get(n)) else {
            return;
        };
        let Ok(engine) = self.engines.for_node(node) else {
            return;
        };
        let readiness = match image {
            ImageChoice::Resolved(reference) => self.pulls.want(
                &node.name,
                reference,
                service.spec.pull,
                &service_key(service),
            ),
            ImageChoice::Unresolved(readiness) => readiness.clone(),
        };
        let reference = match (image, readiness) {
            (ImageChoice::Resolved(reference), Readiness::Ready(_)) => reference,
            (_, Readiness::Failed { reason, retry_at }) => {
                self.requeue_at(&service_key(service), retry_at);
                self.show_pull(
                    service,
                    &instance,
                    node,
                    InstanceState::PullFailed,
                    Some(reason),
                )
                .await;
                return;
            }
            _ => {
                self.show_pull(service, &instance, node, InstanceState::Pulling, None)
                    .await;
                return;
            }
        };
        let spec = container_spec(
            cluster,
            service,
            &instance,
            reference,
            template,
            &self.settings.container_dns,
            self.replica.secrets.as_deref(),
        );
        let mut spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                self.create_failed(service, &instance, node, failure_key, e.to_string())
                    .await;
                return;
            }
        };
        spec.env
            .insert(NODE_ADDRESS_ENV.into(), node.published_address());
        if !self.record_volumes(service, &instance, node, &spec).await {
            return;
        }
        // A one-shot start hook runs before the container is made (the
        // hooks controller runs it; its record wakes this service).
        let waits_for_start_hook = service
            .spec
            .hooks
            .start
            .as_ref()
            .is_some_and(|hook| hook.run == HookRun::Oneshot)
            && !self
                .replica
                .sm
                .read(|s| s.hooks.started(&instance.id, instance.generation));
        if waits_for_start_hook {
            return;
        }
        let result = match engine.create(&spec).await {
            Ok(id) => engine.start(&id).await.map(|_| id),
            // The name is taken: adopted (recorded as observed, and the
            // service reconciled again) only if it is this very generation's container, left by an
            // interrupted create; never another cluster's, service's or
            // instance's container that happens to have the name.
            Err(RuntimeError::Conflict(name)) => match engine.inspect(&name).await {
                Ok(Some(found)) if labels::adoptable(&spec.labels, &found.labels) => {
                    let key = service_key(service);
                    self.observed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .updated(&node.name, found);
                    self.requeue_at(&key, Instant::now());
                    return;
                }
                Ok(Some(found)) => Err(RuntimeError::Invalid(format!(
                    "container name {name} is taken by container {} that is not this instance's \
                     (its raftvisor labels differ); it is left alone",
                    found.id
                ))),
                // Gone since: the next round creates it.
                Ok(None) => return,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                self.create_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&failure_key);
            }
            Err(e) if e.is_unreachable() => {
                tracing::debug!(error = %e, "engine unreachable during create")
            }
            // Removed since the puller saw it: fetched again.
            Err(RuntimeError::ImageNotFound(_)) => {
                self.pulls.forget(&node.name, reference);
                self.requeue_at(&service_key(service), Instant::now());
            }
            Err(e) => {
                self.create_failed(service, &instance, node, failure_key, e.to_string())
                    .await
            }
        }
    }

    /// Records the slot's volumes that `node` does not hold yet, before the
    /// container that makes them is created (so `volume ls` and `service
    /// rm --purge` know every volume the cluster made). False while one
    /// cannot be: a volume being removed is not made again until it is
    /// gone (retried soon), or the write failed.
    async fn record_volumes(
        &self,
        service: &Service,
        instance: &Instance,
        node: &Node,
        spec: &ContainerSpec,
    ) -> bool {
        let missing: Vec<VolumeMade> = self.replica.sm.read(|s| {
            service
                .spec
                .volumes
                .iter()
                .zip(&spec.named_volumes)
                .filter(|(_, made)| !s.volumes.holds(&made.name, &node.name))
                .map(|(volume, made)| VolumeMade {
                    name: made.name.clone(),
                    node: node.name.clone(),
                    namespace: service.namespace.clone(),
                    service: service.name.clone(),
                    slot: instance.slot,
                    volume: volume.name.clone(),
                    driver: volume.driver.clone(),
                })
                .collect()
        });
        for made in missing {
            match self
                .replica
                .write_as_leader(Command::RecordVolume { made })
                .await
            {
                Ok(applied) if applied.outcome == Outcome::Done => {}
                Ok(applied) => {
                    tracing::info!(instance = %instance.id, outcome = ?applied.outcome, "its volume cannot be made yet");
                    self.requeue_at(&service_key(service), Instant::now() + UNPLACED_RETRY);
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "supervisor write failed");
                    return false;
                }
            }
        }
        true
    }

    /// Shows on `instance` that its image is being fetched (`Pulling`) or
    /// could not be (`PullFailed`, with the registry's reason as its last
    /// exit); written only when that changes.
    async fn show_pull(
        &self,
        service: &Service,
        instance: &Instance,
        node: &Node,
        state: InstanceState,
        reason: Option<String>,
    ) {
        let last_exit = match reason {
            Some(reason) => {
                let reason = crate::state::limits::truncate(
                    reason,
                    crate::state::limits::MAX_EVENT_MESSAGE_BYTES,
                );
                if instance.state == state
                    && instance.last_exit.as_ref().map(|x| x.reason.as_str()) == Some(&reason)
                {
                    return;
                }
                Some(ExitInfo {
                    code: -1,
                    reason,
                    at_ms: now_ms(),
                })
            }
            None if instance.state == state => return,
            None => instance.last_exit.clone(),
        };
        let status = InstanceStatus {
            last_exit,
            ..status_of(service, instance, None, Some(node), state)
        };
        self.write_status(instance, status).await;
    }

    /// Records a failed create: retried with growing delays, and shown as
    /// the instance's last exit (crash loop) once per distinct reason.
    async fn create_failed(
        &self,
        service: &Service,
        instance: &Instance,
        node: &Node,
        failure_key: (String, u64),
        reason: String,
    ) {
        let reason =
            crate::state::limits::truncate(reason, crate::state::limits::MAX_EVENT_MESSAGE_BYTES);
        let errors = {
            let mut failures = self
                .create_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let entry = failures.entry(failure_key).or_insert(CreateFailure {
                errors: 0,
                retry_at: Instant::now(),
            });
            entry.errors += 1;
            entry.retry_at =
                Instant::now() + backoff::error_delay(entry.errors).max(Duration::from_secs(1));
            self.requeue_at(&service_key(service), entry.retry_at);
            entry.errors
        };
        tracing::warn!(error = %reason, errors, "cannot create container");
        if instance.last_exit.as_ref().map(|x| x.reason.as_str()) != Some(reason.as_str()) {
            let exit = ExitInfo {
                code: -1,
                reason,
                at_ms: now_ms(),
            };
            let status = InstanceStatus {
                last_exit: Some(exit),
                ..status_of(
                    service,
                    instance,
                    None,
                    Some(node),
                    InstanceState::CrashLoop,
                )
            };
            self.write_status(instance, status).await;
        }
    }

    async fn restart(
        &self,
        service: &Service,
        nodes: &BTreeMap<String, Node>,
        instance: Instance,
        container: ContainerInfo,
        reason: RestartReason,
    ) {
        let Some(node) = instance.node.as_deref().and_then(|n| nodes.get(n)) else {
            return;
        };
        let Ok(engine) = self.engines.for_node(node) else {
            return;
        };
        let key = (instance.id.clone(), instance.generation);
        // A start the engine refused is retried with backoff, not every round.
        let refused_until = self
            .create_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|f| f.retry_at);
        if let Some(retry_at) = refused_until.filter(|at| Instant::now() < *at) {
            self.requeue_at(&service_key(service), retry_at);
            return;
        }
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset(&instance.id, &container.id);
        let mut restarts = instance.restarts;
        let mut last_exit = instance.last_exit.clone();
        if reason == RestartReason::Crashed {
            let now = Instant::now();
            let (delay_until, consecutive, newly_counted) = {
                let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
                let track = crashes.entry(key.clone()).or_default();
                let newly = track.counted_death != container.finished_at;
                if newly {
                    let ran_for = match (
                        parse_rfc3339_ms(&container.started_at),
                        parse_rfc3339_ms(&container.finished_at),
                    ) {
                        (Some(start), Some(end)) => {
                            Duration::from_millis(end.saturating_sub(start))
                        }
                        _ => Duration::ZERO,
                    };
                    if backoff::resets_streak(&service.spec.restart, ran_for) {
                        track.consecutive = 0;
                    }
                    let delay = backoff::restart_delay(
                        &service.spec.restart,
                        track.consecutive,
                        rand::random::<f64>(),
                    );
                    track.not_before = Some(now + delay);
                    track.consecutive += 1;
                    track.counted_death = container.finished_at.clone();
                }
                (track.not_before.unwrap_or(now), track.consecutive, newly)
            };
            if newly_counted {
                restarts += 1;
                last_exit = Some(ExitInfo {
                    code: container.exit_code.unwrap_or(-1),
                    reason: if container.oom_killed {
                        "out of memory".into()
                    } else {
                        format!("exited with code {}", container.exit_code.unwrap_or(-1))
                    },
                    at_ms: parse_rfc3339_ms(&container.finished_at).unwrap_or_else(now_ms),
                });
            }
            if delay_until > now {
                let state = if consecutive >= CRASH_LOOP_AFTER {
                    InstanceState::CrashLoop
                } else {
                    InstanceState::Exited
                };
                if newly_counted || instance.state != state {
                    let status = InstanceStatus {
                        restarts,
                        last_exit,
                        ..status_of(service, &instance, Some(&container), Some(node), state)
                    };
                    self.write_status(&instance, status).await;
                }
                self.requeue_at(&service_key(service), delay_until);
                return;
            }
            if newly_counted {
                let status = InstanceStatus {
                    restarts,
                    last_exit,
                    ..status_of(
                        service,
                        &instance,
                        Some(&container),
                        Some(node),
                        InstanceState::Starting,
                    )
                };
                if !self.write_status(&instance, status).await {
                    return;
                }
            }
            tracing::info!(instance = %instance.id, restarts, "restarting crashed container");
            let result = engine.start(&container.id).await;
            self.note_start(service, &key, result);
            return;
        }
        // Failing health: recorded as unhealthy and counted as a restart.
        if reason == RestartReason::Unhealthy {
            // Unhealthy restarts back off like crashes: a container that never
            // becomes healthy must not be restarted in a tight loop.
            let now = Instant::now();
            {
                let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
                let track = crashes.entry(key.clone()).or_default();
                if let Some(not_before) = track.not_before.filter(|t| *t > now) {
                    drop(crashes);
                    self.requeue_at(&service_key(service), not_before);
                    return;
                }
                track.consecutive += 1;
                track.not_before = Some(
                    now + backoff::restart_delay(
                        &service.spec.restart,
                        track.consecutive,
                        rand::random::<f64>(),
                    ),
                );
            }
            restarts += 1;
            tracing::info!(instance = %instance.id, "restarting an unhealthy container");
            let status = InstanceStatus {
                restarts,
                last_exit: last_exit.clone(),
                ..status_of(
                    service,
                    &instance,
                    Some(&container),
                    Some(node),
                    InstanceState::Unhealthy,
                )
            };
            self.write_status(&instance, status).await;
        }
        // Requested restart (service restart, failing health) or a start of a
        // stopped or created container.
        if container.state == crate::runtime::ContainerState::Running {
            let _ = engine.stop(&container.id, self.settings.stop_grace).await;
        }
        let status = InstanceStatus {
            restarts,
            last_exit,
            restart_epoch: service.restart_epoch,
            ..status_of(
                service,
                &instance,
                Some(&container),
                Some(node),
                InstanceState::Starting,
            )
        };
        if self.write_status(&instance, status).await {
            let result = engine.start(&container.id).await;
            self.note_start(service, &key, result);
        }
    }

    /// Remembers a refused start so the next attempt waits (growing delays).
    fn note_start(&self, service: &Service, key: &(String, u64), result: Result<(), RuntimeError>) {
        let retry_at = {
            let mut failures = self
                .create_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    failures.remove(key);
                    return;
                }
                Err(e) => {
                    let entry = failures.entry(key.clone()).or_insert(CreateFailure {
                        errors: 0,
                        retry_at: Instant::now(),
                    });
                    entry.errors += 1;
                    entry.retry_at = Instant::now()
                        + backoff::error_delay(entry.errors).max(Duration::from_secs(1));
                    tracing::warn!(error = %e, errors = entry.errors, "start failed");
                    entry.retry_at
                }
            }
        };
        self.requeue_at(&service_key(service), retry_at);
    }

    /// Asks for the reconcile of `key` to run again by `at` (the earliest
    /// such deadline of a reconcile wins).
    fn requeue_at(&self, key: &ServiceKey, at: Instant) {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = deadlines.entry(key.clone()).or_insert(at);
        if at < *deadline {
            *deadline = at;
        }
    }
}

fn service_key(service: &Service) -> ServiceKey {
    (service.namespace.clone(), service.name.clone())
}

/// The image a version runs: `repository@digest` when an engine's
/// `RepoDigests` name one for the spec's repository, else the spec's own
/// reference (already a digest, or an image no registry resolved).
pub fn pin_for(image: &str, repo_digests: &[String]) -> String {
    match Reference::parse(image) {
        Ok(reference) if reference.digest.is_none() => reference
            .digest_among(repo_digests)
            .map_or_else(|| image.to_string(), |digest| reference.pinned(digest)),
        _ => image.to_string(),
    }
}

/// The container env variable that holds the address its node publishes
/// (with a fixed host port, where others reach it).
pub const NODE_ADDRESS_ENV: &str = "RAFTVISOR_NODE_ADDRESS";

/// The engine-side description of an instance's container, created from
/// `image`, with the service's secret env unsealed by `secrets`.
pub fn container_spec(
    cluster: &str,
    service: &Service,
    instance: &Instance,
    image: &str,
    template: &str,
    dns: &[String],
    secrets: Option<&SecretsKey>,
) -> Result<ContainerSpec, SecretsError> {
    let mut env = service.spec.env.clone();
    for (name, sealed) in &service.spec.secret_env.0 {
        let key = secrets.ok_or_else(|| SecretsError::Unseal { name: name.clone() })?;
        env.insert(name.clone(), key.unseal(name, sealed)?);
    }
    env.insert("RAFTVISOR_INSTANCE".into(), instance.id.clone());
    env.insert(
        "RAFTVISOR_SERVICE".into(),
        format!("{}/{}", service.namespace, service.name),
    );
    let mut labelled = instance.clone();
    labelled.spec_version = service.version;
    Ok(ContainerSpec {
        name: labels::container_name(cluster, instance),
        image: image.to_string(),
        command: service.spec.command.clone(),
        env,
        labels: labels::container_labels(cluster, &labelled, template),
        ports: service
            .spec
            .ports
            .iter()
            .map(|p| PortBinding {
                container_port: p.container_port,
                protocol: p.protocol,
                host_port: p.host_port,
                host_ip: None,
            })
            .collect(),
        cpu_millis: service.spec.resources.cpu_millis,
        memory_mb: service.spec.resources.memory_mb,
        volumes: Vec::new(),
        named_volumes: service
            .spec
            .volumes
            .iter()
            .map(|volume| NamedVolume {
                name: labels::volume_name(
                    cluster,
                    &instance.namespace,
                    &instance.service,
                    instance.slot,
                    &volume.name,
                ),
                target: volume.mount.clone(),
                driver: volume.driver.clone(),
                options: volume.options.clone(),
                labels: labels::volume_labels(cluster, instance, &volume.name),
            })
            .collect(),
        dns: dns.to_vec(),
        network: None,
        restart_unless_stopped: false,
    })
}

/// The status of `instance` as `container` shows it; restart counters
/// and last exit are the instance's unless the caller overrides them.
fn status_of(
    service: &Service,
    instance: &Instance,
    container: Option<&ContainerInfo>,
    node: Option<&Node>,
    state: InstanceState,
) -> InstanceStatus {
    let ports = container
        .map(|c| {
            c.ports
                .iter()
                .map(|(container_port, protocol, host_port)| PublishedPort {
                    name: service
                        .spec
                        .ports
                        .iter()
                        .find(|p| p.container_port == *container_port && p.protocol == *protocol)
                        .map_or_else(|| container_port.to_string(), |p| p.name.clone()),
                    container_port: *container_port,
                    host_port: *host_port,
                    protocol: *protocol,
                })
                .collect()
        })
        .unwrap_or_default();
    InstanceStatus {
        state,
        container_id: container.map(|c| c.id.clone()),
        restarts: instance.restarts,
        last_exit: instance.last_exit.clone(),
        address: node.map(Node::published_address),
        ports,
        spec_version: container
            .and_then(|c| labels::spec_version(&c.labels))
            .unwrap_or(instance.spec_version),
        restart_epoch: instance.restart_epoch,
    }
}
