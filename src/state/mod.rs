//! The replicated model and its pure, deterministic `apply`.
//!
//! [`State`] holds everything raftvisor replicates: the service registry,
//! instances, the node inventory, the managers, the Consul-shaped KV store
//! and a bounded event log. [`State::apply`] is the only way it changes; it
//! does no I/O, reads no clock and no randomness (time comes stamped in the
//! [`Request`]), so every replica that applies the same log ends in the same
//! state. Retried writes are recognised by their [`RequestId`] and answered
//! with the outcome they had the first time.

mod address;
pub mod command;
pub mod history;
pub mod hooks;
pub mod image;
pub mod image_catalog;
pub mod kv_txn;
pub mod limits;
pub mod manager_template;
pub mod migrate;
pub mod pipelines;
mod quotas;
pub mod releases;
pub mod rollouts;
pub mod sessions;
pub mod supervision;
pub mod templates;
pub mod tokens;
pub mod topology;
pub mod touched;
pub mod types;
pub mod validate;
pub mod version;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

pub use command::{Applied, Batch, BatchResponse, Command, Outcome, Request, RequestId};
pub use image::StateImage;
pub use manager_template::ManagerTemplate;
pub use types::*;

/// How many events the replicated event log keeps.
pub const EVENT_LOG_CAPACITY: usize = 1000;
/// How many recent request ids are remembered for duplicate detection.
pub const DEDUP_CAPACITY: usize = 65_536;

/// Remembers the outcome of recent writes by request id, in a FIFO window.
#[derive(Debug, Clone, Default)]
struct Dedup {
    order: VecDeque<RequestId>,
    seen: HashMap<RequestId, Applied>,
}

impl Dedup {
    fn get(&self, id: &RequestId) -> Option<&Applied> {
        self.seen.get(id)
    }

    fn remember(&mut self, id: RequestId, applied: Applied) {
        if self.seen.insert(id, applied).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

/// The whole replicated model.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub cluster_id: Option<String>,
    /// The id the cluster's containers are labelled and named with, when it
    /// is not `cluster_id`: a cluster restored from a backup under a new id
    /// goes on owning what the backed-up cluster started. See [`State::owner`].
    pub owner_id: Option<String>,
    /// The peer protocol every replica may rely on, as the leader recorded
    /// it (0: never recorded, read as
    /// [`INITIAL_CLUSTER_VERSION`](crate::state::version::INITIAL_CLUSTER_VERSION));
    /// see [`State::cluster_version`].
    cluster_version: u32,
    /// Keyed by `(namespace, name)`.
    pub services: BTreeMap<(String, String), Service>,
    pub instances: BTreeMap<String, Instance>,
    pub nodes: BTreeMap<String, Node>,
    pub managers: BTreeMap<u64, Manager>,
    pub kv: BTreeMap<String, KvEntry>,
    /// Raft index of the last KV change of any kind.
    pub kv_index: u64,
    /// Raft index of the last KV deletion (Consul's tombstone index).
    pub kv_delete_index: u64,
    pub events: VecDeque<Event>,
    /// Raft index of the last applied entry (including blank and membership entries).
    pub applied_index: u64,
    /// API tokens by public id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Whether the bootstrap admin token was ever applied (it may since
    /// have been revoked); makes the bootstrap once per cluster.
    pub tokens_bootstrapped: bool,
    /// The limits of limited tokens, by token id (tokens absent here reach
    /// the whole cluster).
    pub token_limits: BTreeMap<String, TokenLimits>,
    /// Where the managers run and how to start more, when bootstrap
    /// recorded it; always validated.
    pub manager_template: Option<ManagerTemplate>,
    /// Bytes of all KV values together (derived, for the `max_kv_bytes` quota).
    pub kv_bytes: u64,
    /// Raft ids that were members once and were removed (and not added
    /// again): the peer port refuses their certificates.
    pub departed_managers: BTreeSet<u64>,
    /// Image pins, registry logins and the images kept by the cluster.
    pub images: image_catalog::ImageCatalog,
    /// Raft index of the last change to a service, an instance, a node or
    /// the managers (derived, not in snapshots: a restored state starts at
    /// its applied index): the index Consul's catalog and health reads
    /// report and block on.
    pub catalog_index: u64,
    /// Consul sessions and the locks they hold on KV keys.
    pub sessions: sessions::SessionBook,
    /// The slots' volumes and which nodes hold them.
    pub volumes: volumes::VolumeBook,
    /// Backups and the verdicts of test hooks.
    pub hooks: hooks::HookBook,
    /// Templates of clustered third-party services.
    pub templates: templates::TemplateBook,
    /// The services' spec histories.
    pub history: history::HistoryBook,
    /// Blue-green releases.
    pub releases: releases::ReleaseBook,
    /// Named topologies and their versions.
    pub topologies: topology::TopologyBook,
    /// Pipelines and their runs.
    pub pipelines: pipelines::PipelineBook,
    /// Who asked for the command being applied ([`Command::As`]); only
    /// set while it is applied, so its events name them.
    actor: Option<Actor>,
    dedup: Dedup,
}

impl State {
    /// The archives the managers keep: the images kept by the cluster and
    /// the artifacts of backups (a running backup's are not named yet, and
    /// are protected by the sweep's grace period).
    pub fn kept_archives(&self) -> BTreeSet<String> {
        self.images
            .stored
            .values()
            .map(|image| image.archive.clone())
            .chain(self.hooks.archives().map(str::to_string))
            .chain(self.pipelines.archives().map(str::to_string))
            .collect()
    }

    /// The id the cluster's containers carry in `raftvisor.cluster` and in
    /// their names: the cluster id, or the id a restore kept for them.
    pub fn owner(&self) -> Option<&String> {
        self.owner_id.as_ref().or(self.cluster_id.as_ref())
    }

    /// The peer protocol every replica of the cluster may rely on (see
    /// [`crate::state::version`]): what the cluster may write.
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
            .max(crate::state::version::INITIAL_CLUSTER_VERSION)
    }

    /// Copies the state into its snapshot image.
    pub fn to_image(&self) -> StateImage {
        StateImage {
            cluster_id: self.cluster_id.clone(),
            owner_id: self.owner_id.clone(),
            cluster_version: self.cluster_version(),
            services: self.services.values().cloned().collect(),
            instances: self.instances.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            managers: self.managers.values().cloned().collect(),
            kv: self
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            kv_index: self.kv_index,
            kv_delete_index: self.kv_delete_index,
            events: self.events.iter().cloned().collect(),
            applied_index: self.applied_index,
            dedup: self
                .dedup
                .order
                .iter()
                .filter_map(|id| self.dedup.seen.get(id).map(|a| (*id, a.clone())))
                .collect(),
            tokens: self.tokens.values().cloned().collect(),
            tokens_bootstrapped: self.tokens_bootstrapped,
            token_limits: self
                .token_limits
                .iter()
                .map(|(id, limits)| (id.clone(), limits.clone()))
                .collect(),
            manager_template: self.manager_template.clone().map(migrate::Versioned),
            departed_managers: self.departed_managers.iter().copied().collect(),
            images: migrate::Versioned(self.images.clone()),
            sessions: migrate::Versioned(self.sessions.clone()),
            volumes: migrate::Versioned(self.volumes.clone()),
            hooks: migrate::Versioned(self.hooks.clone()),
            templates: migrate::Versioned(self.templates.clone()),
            history: migrate::Versioned(self.history.clone()),
            releases: migrate::Versioned(self.releases.clone()),
            topologies: migrate::Versioned(self.topologies.clone()),
            pipelines: migrate::Versioned(self.pipelines.clone()),
        }
    }

    /// Rebuilds the state from a snapshot image.
    pub fn from_image(image: StateImage) -> State {
        let mut dedup = Dedup::default();
        for (id, applied) in image.dedup {
            dedup.remember(id, applied);
        }
        let kv_bytes = image.kv.iter().map(|(_, e)| e.value.len() as u64).sum();
        State {
            cluster_id: image.cluster_id,
            owner_id: image.owner_id,
            cluster_version: image.cluster_version,
            services: image
                .services
                .into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect(),
            instances: image
                .instances
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect(),
            nodes: image
                .nodes
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            managers: image.managers.into_iter().map(|m| (m.raft_id, m)).collect(),
            kv: image.kv.into_iter().collect(),
            kv_index: image.kv_index,
            kv_delete_index: image.kv_delete_index,
            events: image.events.into_iter().collect(),
            applied_index: image.applied_index,
            tokens: image
                .tokens
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            tokens_bootstrapped: image.tokens_bootstrapped,
            token_limits: image.token_limits.into_iter().collect(),
            manager_template: image.manager_template.map(|template| template.0),
            kv_bytes,
            departed_managers: image.departed_managers.into_iter().collect(),
            images: image.images.0,
            catalog_index: image.applied_index,
            sessions: image.sessions.0,
            volumes: image.volumes.0,
            hooks: image.hooks.0,
            templates: image.templates.0,
            history: image.history.0,
            releases: image.releases.0,
            topologies: image.topologies.0,
            pipelines: image.pipelines.0,
            actor: None,
            dedup,
        }
    }

    /// Records that an entry without application data (blank or membership)
    /// was applied at `index`.
    pub fn apply_empty(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Records a membership entry applied at `index`: the ids of
    /// `previous` missing from `current` have departed; ids of `current`
    /// are members (again).
    pub fn apply_membership(
        &mut self,
        index: u64,
        previous: &BTreeSet<u64>,
        current: &BTreeSet<u64>,
    ) {
        self.applied_index = index;
        self.departed_managers
            .extend(previous.difference(current).copied());
        self.departed_managers.retain(|id| !current.contains(id));
    }

    /// Applies every request of a batch committed at `index`.
    pub fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResponse {
        let results = batch
            .requests
            .iter()
            .map(|request| self.apply(index, request))
            .collect();
        self.applied_index = index;
        BatchResponse { results }
    }

    /// Applies one request committed at `index`. A request id seen before
    /// answers its first outcome and changes nothing.
    pub fn apply(&mut self, index: u64, request: &Request) -> Applied {
        if let Some(previous) = self.dedup.get(&request.id) {
            return previous.clone();
        }
        let outcome = self.apply_command(index, request.time_ms, &request.command);
        let applied = Applied { index, outcome };
        self.dedup.remember(request.id, applied.clone());
        self.applied_index = index;
        applied
    }

    pub(super) fn apply_command(&mut self, index: u64, time_ms: u64, command: &Command) -> Outcome {
        match command {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                    self.event(
                        index,
                        time_ms,
                        "cluster",
                        "cluster",
                        format!("cluster {cluster_id} initialised"),
                    );
                }
                Outcome::Done
            }
            Command::PutService {
                namespace,
                name,
                spec,
                expected_version,
            } => self.put_service(
                index,
                time_ms,
                (namespace, name),
                spec,
                *expected_version,
                history::Cause::Deploy,
            ),
            Command::DeleteService {
                namespace,
                name,
                expected_version,
            } => self.delete_service(index, time_ms, namespace, name, *expected_version),
            Command::ScaleService {
                namespace,
                name,
                replicas,
            } => {
                if *replicas > validate::MAX_REPLICAS {
                    return Outcome::Rejected(format!(
                        "replicas must be at most {}",
                        validate::MAX_REPLICAS
                    ));
                }
                let key = (namespace.clone(), name.clone());
                let Some(service) = self.services.get_mut(&key) else {
                    return Outcome::NotFound;
                };
                let from = service.spec.replicas;
                let previous = service.version;
                service.spec.replicas = *replicas;
                service.version = index;
                let service = service.clone();
                // Scaling runs more of the same image, never a newer one.
                self.images.carry_pin(&key, previous, index);
                self.event(
                    index,
                    time_ms,
                    "service.scaled",
                    &format!("{namespace}/{name}"),
                    format!("replicas {from} -> {replicas}"),
                );
                Outcome::Service(Box::new(service))
            }
            Command::PutNode {
                name,
                spec,
                expected_version,
            } => self.put_node(index, time_ms, name, spec, *expected_version),
            Command::DeleteNode { name } => {
                if self.nodes.remove(name).is_none() {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "node.removed",
                    name,
                    "node removed from the inventory".into(),
                );
                Outcome::Deleted
            }
            Command::SetNodeDraining { name, draining } => {
                let Some(node) = self.nodes.get_mut(name) else {
                    return Outcome::NotFound;
                };
                if node.state == NodeState::Retired {
                    return Outcome::Rejected(format!(
                        "node {name} is retired; it is being removed"
                    ));
                }
                node.state = if *draining {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                node.version = index;
                let node = node.clone();
                let what = if *draining {
                    "draining"
                } else {
                    "ready (drain cancelled)"
                };
                self.event(
                    index,
                    time_ms,
                    "node.drain",
                    name,
                    format!("node is {what}"),
                );
                Outcome::Node(Box::new(node))
            }
            Command::PutManager {
                raft_id,
                peer_addr,
                api_addr,
            } => {
                let node = self.managers.get(raft_id).and_then(|m| m.node.clone());
                self.managers.insert(
                    *raft_id,
                    Manager {
                        raft_id: *raft_id,
                        peer_addr: peer_addr.clone(),
                        api_addr: api_addr.clone(),
                        node,
                    },
                );
                self.event(
                    index,
                    time_ms,
                    "manager.added",
                    &raft_id.to_string(),
                    format!("manager {raft_id} at api {api_addr}, peer {peer_addr}"),
                );
                Outcome::Done
            }
            Command::RemoveManager { raft_id } => {
                if self.managers.remove(raft_id).is_none() {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "manager.removed",
                    &raft_id.to_string(),
                    format!("manager {raft_id} removed"),
                );
                Outcome::Deleted
            }
            Command::KvPut {
                key,
                value,
                flags,
                cas,
            } => self.kv_put(index, key, value, *flags, *cas),
            Command::KvDelete { key, cas, recurse } => self.kv_delete(index, key, *cas, *recurse),
            Command::SetServiceRunState {
                namespace,
                name,
                run_state,
            } => self.set_run_state(index, time_ms, namespace, name, *run_state),
            Command::RestartService { namespace, name } => {
                self.restart_service(index, time_ms, namespace, name)
            }
            Command::PlaceInstance {
                namespace,
                service,
                slot,
                node,
            } => self.place_instance(index, time_ms, namespace, service, *slot, node, false),
            Command::SetInstanceStatus {
                id,
                generation,
                status,
            } => self.set_instance_status(index, time_ms, id, *generation, status),
            Command::RemoveInstance { id, generation } => {
                let outcome = self.remove_instance(index, time_ms, id, *generation);
                if outcome == Outcome::Deleted {
                    self.hooks.instance_removed(id);
                }
                outcome
            }
            Command::SetNodeState {
                name,
                state,
                reason,
            } => self.set_node_state(index, time_ms, name, *state, reason),
            Command::RecordEvent {
                kind,
                subject,
                message,
            } => {
                self.event(index, time_ms, kind, subject, message.clone());
                Outcome::Done
            }
            Command::PutToken {
                id,
                name,
                role,
                hash,
            } => self.put_token(index, time_ms, id, name, *role, hash),
            Command::PutLimitedToken {
                id,
                name,
                role,
                hash,
                limits,
            } => self.put_limited_token(index, time_ms, id, name, *role, hash, limits),
            Command::RevokeToken { id } => self.revoke_token(index, time_ms, id),
            Command::BootstrapToken { id, hash } => self.bootstrap_token(index, time_ms, id, hash),
            Command::PutManagerTemplateJson { json } => match ManagerTemplate::from_json(json) {
                Ok(template) => self.put_manager_template(template),
                Err(reason) => Outcome::Rejected(reason.to_string()),
            },
            Command::PutManagerTemplate { template } => match template.validate() {
                Ok(()) => self.put_manager_template(template.clone()),
                Err(reason) => Outcome::Rejected(reason.into()),
            },
            Command::PlaceSlot {
                namespace,
                service,
                slot,
                node,
            } => self.place_instance(index, time_ms, namespace, service, *slot, node, true),
            Command::WithLimits { limits, command } => {
                self.apply_limited(index, time_ms, limits, command)
            }
            Command::RemoveNode { name, force } => self.remove_node(index, time_ms, name, *force),
            Command::PinImage {
                namespace,
                service,
                version,
                reference,
            } => {
                let outcome = self.apply_pin_image(namespace, service, *version, reference);
                if outcome == Outcome::Done {
                    self.history.pin_newest(namespace, service, reference);
                }
                outcome
            }
            Command::PutRegistryLogin {
                host,
                username,
                password,
            } => self.apply_put_registry_login(index, time_ms, host, username, password),
            Command::RemoveRegistryLogin { host } => {
                self.apply_remove_registry_login(index, time_ms, host)
            }
            Command::PutStoredImage { image } => {
                self.apply_put_stored_image(index, time_ms, image.clone())
            }
            Command::SetImageHolders { name, id, holders } => {
                self.apply_set_image_holders(name, id, holders, index)
            }
            Command::RemoveStoredImage { name } => {
                self.apply_remove_stored_image(index, time_ms, name)
            }
            Command::SetImageKeepers { name, id, keepers } => {
                self.apply_set_image_keepers(name, id, keepers, index)
            }
            Command::ImageOnNode {
                node,
                reference,
                present,
            } => self.apply_image_on_node(node, reference, *present),
            Command::CreateSession { request } => match self.sessions.create(index, request) {
                Ok(()) => {
                    self.sessions.index = index;
                    Outcome::Done
                }
                Err(reason) => Outcome::Rejected(reason),
            },
            Command::RenewSession { id } => {
                if self.sessions.renew(id) {
                    let session = self.sessions.sessions[id].clone();
                    Outcome::Session(Box::new(session))
                } else {
                    Outcome::NotFound
                }
            }
            Command::DestroySession {
                id,
                if_renewals,
                reason,
            } => self.destroy_session(index, time_ms, id, *if_renewals, reason),
            Command::KvAcquire {
                key,
                value,
                flags,
                session,
            } => self.kv_acquire(index, time_ms, key, value, *flags, session),
            Command::KvRelease {
                key,
                value,
                flags,
                session,
            } => {
                if let Err(reason) = validate::kv_key(key).and(validate::kv_value(value)) {
                    return Outcome::Rejected(reason.into());
                }
                if !self.sessions.holds(key, session) {
                    return Outcome::Kv(false);
                }
                self.kv_store(index, key, value, *flags);
                self.sessions.release(key);
                Outcome::Kv(true)
            }
            Command::KvTxn { ops } => Outcome::Txn(self.apply_txn(index, time_ms, ops)),
            Command::DeleteServiceAndVolumes {
                namespace,
                name,
                expected_version,
            } => {
                let outcome =
                    self.delete_service(index, time_ms, namespace, name, *expected_version);
                if outcome == Outcome::Deleted {
                    self.volumes.purge_service(namespace, name);
                }
                outcome
            }
            Command::RecordVolume { made } => self.volumes.record(made, time_ms),
            Command::RemoveVolume { name } => {
                let services = &self.services;
                let outcome = self.volumes.remove(name, |record| record.in_use(services));
                if matches!(outcome, Outcome::Done | Outcome::Deleted) {
                    self.event(
                        index,
                        time_ms,
                        "volume.removing",
                        name,
                        format!("volume {name} is to be removed from every node"),
                    );
                }
                outcome
            }
            Command::VolumeRemovedFrom { name, node } => {
                let outcome = self.volumes.removed_from(name, node);
                if outcome == Outcome::Deleted {
                    self.event(
                        index,
                        time_ms,
                        "volume.removed",
                        name,
                        format!("volume {name} removed (last from node {node})"),
                    );
                }
                outcome
            }
            Command::StartHookRan {
                instance,
                generation,
            } => {
                if !self.instances.contains_key(instance) {
                    return Outcome::NotFound;
                }
                self.hooks.start_hook_ran(instance, *generation);
                Outcome::Done
            }
            Command::RequestBackup {
                id,
                namespace,
                service,
            } => {
                let Some(target) = self.services.get(&(namespace.clone(), service.clone())) else {
                    return Outcome::NotFound;
                };
                if target.spec.hooks.backup.is_none() {
                    return Outcome::Rejected(format!(
                        "{namespace}/{service} has no backup hook (hooks.backup in its spec)"
                    ));
                }
                let outcome = self.hooks.request_backup(hooks::BackupRecord {
                    id: id.clone(),
                    namespace: namespace.clone(),
                    service: service.clone(),
                    version: target.version,
                    created_ms: time_ms,
                    state: hooks::JobState::Running,
                    finished_ms: 0,
                    slots: Vec::new(),
                    keepers: Default::default(),
                });
                if outcome == Outcome::Done {
                    self.event(
                        index,
                        time_ms,
                        "backup.started",
                        &format!("{namespace}/{service}"),
                        format!("backup {id} started"),
                    );
                }
                outcome
            }
            Command::FinishBackup { id, result } => {
                let outcome = self.hooks.finish_backup(id, result, time_ms);
                if let (Outcome::Done, Some(backup)) = (&outcome, self.hooks.backups.get(id)) {
                    let subject = format!("{}/{}", backup.namespace, backup.service);
                    let (kind, message) = match result {
                        Ok((slots, _)) => (
                            "backup.done",
                            format!(
                                "backup {id} done: {} slot(s), {} bytes",
                                slots.len(),
                                slots.iter().map(|s| s.bytes).sum::<u64>()
                            ),
                        ),
                        Err(reason) => ("backup.failed", format!("backup {id} failed: {reason}")),
                    };
                    self.event(index, time_ms, kind, &subject, message);
                }
                outcome
            }
            Command::RemoveBackup { id } => {
                let outcome = self.hooks.remove_backup(id);
                if outcome == Outcome::Deleted {
                    self.event(
                        index,
                        time_ms,
                        "backup.removed",
                        id,
                        format!("backup {id} removed"),
                    );
                }
                outcome
            }
            Command::SetBackupKeepers { id, keepers } => self.hooks.set_backup_keepers(id, keepers),
            Command::RequestRestore {
                id,
                namespace,
                service,
                backup,
            } => {
                let Some(target) = self.services.get(&(namespace.clone(), service.clone())) else {
                    return Outcome::NotFound;
                };
                if target.spec.hooks.restore.is_none() {
                    return Outcome::Rejected(format!(
                        "{namespace}/{service} has no restore hook (hooks.restore in its spec)"
                    ));
                }
                let outcome = self.hooks.request_restore(hooks::RestoreRecord {
                    id: id.clone(),
                    namespace: namespace.clone(),
                    service: service.clone(),
                    backup: backup.clone(),
                    created_ms: time_ms,
                    state: hooks::JobState::Running,
                    finished_ms: 0,
                });
                if outcome == Outcome::Done {
                    self.event(
                        index,
                        time_ms,
                        "restore.started",
                        &format!("{namespace}/{service}"),
                        format!("restore {id} from backup {backup} started"),
                    );
                }
                outcome
            }
            Command::FinishRestore { id, result } => {
                let outcome = self.hooks.finish_restore(id, result, time_ms);
                if let (Outcome::Done, Some(restore)) = (&outcome, self.hooks.restores.get(id)) {
                    let subject = format!("{}/{}", restore.namespace, restore.service);
                    let (kind, message) = match result {
                        Ok(()) => (
                            "restore.done",
                            format!("restore {id} from backup {} done", restore.backup),
                        ),
                        Err(reason) => ("restore.failed", format!("restore {id} failed: {reason}")),
                    };
                    self.event(index, time_ms, kind, &subject, message);
                }
                outcome
            }
            Command::RecordTestVerdict {
                namespace,
                service,
                verdict,
            } => {
                if !self
                    .services
                    .contains_key(&(namespace.clone(), service.clone()))
                {
                    return Outcome::NotFound;
                }
                self.hooks.record_verdict(namespace, service, verdict);
                Outcome::Done
            }
            Command::PutTemplate { name, text } => match self.templates.put(name, text, time_ms) {
                Ok(template) => {
                    self.event(
                        index,
                        time_ms,
                        "template.added",
                        name,
                        format!("template {name} (image {}) added", template.image),
                    );
                    Outcome::Done
                }
                Err(reason) => Outcome::Rejected(reason.to_string()),
            },
            Command::RemoveTemplate { name } => {
                if !self.templates.remove(name) {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "template.removed",
                    name,
                    format!("template {name} removed"),
                );
                Outcome::Deleted
            }
            Command::RollbackService {
                namespace,
                name,
                to,
                expected_version,
                revert,
            } => self.rollback_service(
                index,
                time_ms,
                (namespace, name),
                *to,
                *expected_version,
                revert.as_deref(),
            ),
            Command::SettleRevision {
                namespace,
                name,
                version,
            } => {
                if self.history.settle(namespace, name, *version, time_ms) {
                    self.event(
                        index,
                        time_ms,
                        "service.rolled_out",
                        &format!("{namespace}/{name}"),
                        format!("version {version} runs in every slot"),
                    );
                }
                Outcome::Done
            }
            Command::PromoteCanary { namespace, name } => {
                match self.history.promote(namespace, name, time_ms) {
                    Ok(version) => {
                        self.event(
                            index,
                            time_ms,
                            "service.promoted",
                            &format!("{namespace}/{name}"),
                            format!(
                                "version {version}: the canaries are promoted, the rest rolls out"
                            ),
                        );
                        match self.services.get(&(namespace.clone(), name.clone())) {
                            Some(service) => Outcome::Service(Box::new(service.clone())),
                            None => Outcome::NotFound,
                        }
                    }
                    Err(_)
                        if !self
                            .services
                            .contains_key(&(namespace.clone(), name.clone())) =>
                    {
                        Outcome::NotFound
                    }
                    Err(reason) => Outcome::Refused {
                        code: history::NO_CANARY.into(),
                        message: reason,
                    },
                }
            }
            Command::CreateRelease {
                name,
                entry,
                blue,
                green,
                live,
            } => self.create_release(index, time_ms, name, entry, (blue, green), *live),
            Command::SwitchRelease {
                name,
                target,
                force,
                expected_version,
            } => self.switch_release(index, time_ms, name, *target, *force, *expected_version),
            Command::RemoveRelease { name } => {
                if self.releases.releases.remove(name).is_none() {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "release.removed",
                    name,
                    format!("release {name} removed; both environments keep running"),
                );
                Outcome::Deleted
            }
            Command::PutTopology { name, topology } => {
                if let Err(reason) = validate::dns_label("topology name", name)
                    .map_err(|e| e.to_string())
                    .and_then(|()| topology.check())
                {
                    return Outcome::Rejected(reason);
                }
                let meta = topology::TopologyVersionMeta {
                    index,
                    at_ms: time_ms,
                    actor: self.actor.clone(),
                };
                self.topologies.save(name, topology.clone(), meta);
                self.event(
                    index,
                    time_ms,
                    "topology.saved",
                    name,
                    format!(
                        "topology {name} version {index}: {} services",
                        topology.services.len()
                    ),
                );
                Outcome::Done
            }
            Command::RemoveTopology { name } => {
                if self.topologies.topologies.remove(name).is_none() {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "topology.removed",
                    name,
                    format!("topology {name} and its versions removed"),
                );
                Outcome::Deleted
            }
            Command::CloneNamespace {
                from,
                to,
                shared,
                domain,
            } => self.clone_namespace(index, time_ms, (from, to), shared, domain),
            Command::PutPipeline { name, spec, secret } => {
                if let Err(reason) = validate::dns_label("pipeline name", name)
                    .map_err(|e| e.to_string())
                    .and_then(|()| spec.check())
                {
                    return Outcome::Rejected(reason);
                }
                let existing = self.pipelines.pipelines.remove(name);
                let (runs, next_run, created_ms, kept_secret) = match existing {
                    Some(p) => (p.runs, p.next_run, p.created_ms, p.secret),
                    None => (Vec::new(), 1, time_ms, None),
                };
                let pipeline = pipelines::Pipeline {
                    name: name.clone(),
                    spec: spec.clone(),
                    secret: secret.clone().or(kept_secret),
                    version: index,
                    created_ms,
                    next_run,
                    runs,
                };
                self.event(
                    index,
                    time_ms,
                    "pipeline.saved",
                    name,
                    format!(
                        "pipeline {name}: image {}, service {} in {}",
                        spec.image,
                        spec.service,
                        match (&spec.release, &spec.namespace) {
                            (Some(release), _) => format!("release {release}'s idle environment"),
                            (_, Some(namespace)) => format!("namespace {namespace}"),
                            _ => "nowhere".into(),
                        }
                    ),
                );
                self.pipelines.pipelines.insert(name.clone(), pipeline);
                Outcome::Done
            }
            Command::RemovePipeline { name } => {
                if self.pipelines.pipelines.remove(name).is_none() {
                    return Outcome::NotFound;
                }
                self.event(
                    index,
                    time_ms,
                    "pipeline.removed",
                    name,
                    format!("pipeline {name} and its runs removed"),
                );
                Outcome::Deleted
            }
            Command::StartRun {
                pipeline,
                source,
                keepers,
                commit,
            } => {
                if !self.pipelines.pipelines.contains_key(pipeline) {
                    return Outcome::NotFound;
                }
                let actor = self.actor.clone();
                let new = pipelines::NewRun {
                    index,
                    source: source.clone(),
                    keepers: keepers.clone(),
                    commit: commit.clone(),
                    at_ms: time_ms,
                    actor,
                };
                match self.pipelines.start_run(pipeline, new) {
                    Ok(number) => {
                        self.event(
                            index,
                            time_ms,
                            "pipeline.run",
                            pipeline,
                            format!(
                                "run {number} of {pipeline} started{}",
                                commit
                                    .as_deref()
                                    .map(|c| format!(" for commit {c}"))
                                    .unwrap_or_default()
                            ),
                        );
                        Outcome::Done
                    }
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
            Command::RecordStage {
                pipeline,
                run,
                stage,
                attempt,
                step,
            } => {
                let subject = format!("{pipeline}/{run}");
                let message = match step {
                    pipelines::StageStep::Started { .. } => None,
                    pipelines::StageStep::Passed { .. } => {
                        Some(format!("run {run} of {pipeline}: {} passed", stage.name()))
                    }
                    pipelines::StageStep::Failed { log_tail } => Some(format!(
                        "run {run} of {pipeline}: {} failed: {}",
                        stage.name(),
                        log_tail.lines().last().unwrap_or("")
                    )),
                };
                match self
                    .pipelines
                    .record(pipeline, *run, *stage, *attempt, step.clone(), time_ms)
                {
                    Ok(()) => {
                        if let Some(message) = message {
                            self.event(index, time_ms, "pipeline.stage", &subject, message);
                        }
                        Outcome::Done
                    }
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
            Command::ApproveRelease { release } => self.approve_release(index, time_ms, release),
            Command::SetClusterVersion { version } => {
                let was = self.cluster_version();
                if *version > was {
                    self.cluster_version = *version;
                    self.event(
                        index,
                        time_ms,
                        "cluster",
                        "cluster",
                        format!("cluster version raised from {was} to {version}: every member speaks it"),
                    );
                }
                Outcome::Done
            }
            Command::As { actor, command } => {
                let outer = self.actor.replace(actor.clone());
                let outcome = self.apply_command(index, time_ms, command);
                self.actor = outer;
                outcome
            }
        }
    }

    fn kv_acquire(
        &mut self,
        index: u64,
        time_ms: u64,
        key: &str,
        value: &[u8],
        flags: u64,
        session: &str,
    ) -> Outcome {
        if let Err(reason) = validate::kv_key(key).and(validate::kv_value(value)) {
            return Outcome::Rejected(reason.into());
        }
        match self.sessions.may_acquire(time_ms, key, session) {
            Err(reason) => Outcome::Rejected(reason),
            Ok(false) => Outcome::Kv(false),
            Ok(true) => {
                self.kv_store(index, key, value, flags);
                self.sessions.acquire(key, session);
                Outcome::Kv(true)
            }
        }
    }

    fn destroy_session(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        if_renewals: Option<u64>,
        reason: &str,
    ) -> Outcome {
        let Some(freed) = self.sessions.invalidate(time_ms, id, if_renewals) else {
            return Outcome::NotFound;
        };
        self.sessions.index = index;
        for key in &freed {
            match key.behavior {
                sessions::Behavior::Release => {
                    if let Some(entry) = self.kv.get_mut(&key.key) {
                        entry.modify_index = index;
                        self.kv_index = index;
                    }
                }
                sessions::Behavior::Delete => self.kv_remove(index, &key.key),
            }
        }
        if !freed.is_empty() {
            self.event(
                index,
                time_ms,
                "session",
                id,
                format!(
                    "session invalidated ({reason}); {} key(s) freed",
                    freed.len()
                ),
            );
        }
        Outcome::Done
    }

    /// Writes `value` at `key` (no checks): the one place a KV value is stored.
    fn kv_store(&mut self, index: u64, key: &str, value: &[u8], flags: u64) {
        let existing = self.kv.get(key);
        let create_index = existing.map_or(index, |e| e.create_index);
        let replaced = existing.map_or(0, |e| e.value.len() as u64);
        self.kv_bytes = self.kv_bytes.saturating_sub(replaced) + value.len() as u64;
        self.kv.insert(
            key.to_string(),
            KvEntry {
                value: value.to_vec(),
                flags,
                create_index,
                modify_index: index,
            },
        );
        self.kv_index = index;
    }

    /// Removes `key` and its lock (no checks): the one place a key goes.
    fn kv_remove(&mut self, index: u64, key: &str) {
        if let Some(gone) = self.kv.remove(key) {
            self.kv_bytes = self.kv_bytes.saturating_sub(gone.value.len() as u64);
            self.kv_index = index;
            self.kv_delete_index = index;
        }
        self.sessions.forget_key(key);
    }

    /// Records a validated manager template.
    fn put_manager_template(&mut self, template: ManagerTemplate) -> Outcome {
        self.manager_template = Some(template);
        Outcome::Done
    }

    /// What every written service must be: named by DNS labels, a valid
    /// spec, its secrets sealed.
    fn check_service(
        namespace: &str,
        name: &str,
        spec: &ServiceSpec,
    ) -> Result<(), validate::Invalid> {
        validate::dns_label("namespace", namespace)
            .and(validate::dns_label("service name", name))
            .and(validate::service_spec(spec))
            .and(validate::secrets_sealed(spec))
    }

    fn put_service(
        &mut self,
        index: u64,
        time_ms: u64,
        (namespace, name): (&str, &str),
        spec: &ServiceSpec,
        expected_version: Option<u64>,
        cause: history::Cause,
    ) -> Outcome {
        if let Err(reason) = Self::check_service(namespace, name, spec) {
            return Outcome::Rejected(reason.into());
        }
        let key = (namespace.to_string(), name.to_string());
        let current = self.services.get(&key);
        let current_version = current.map_or(0, |s| s.version);
        if let Some(expected) = expected_version {
            if expected != current_version {
                return Outcome::VersionMismatch {
                    current: current_version,
                };
            }
        }
        let service = Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            spec: spec.clone(),
            run_state: current.map_or(RunState::Running, |s| s.run_state),
            version: index,
            create_index: current.map_or(index, |s| s.create_index),
            restart_epoch: current.map_or(0, |s| s.restart_epoch),
        };
        let kind = if current.is_some() {
            "service.updated"
        } else {
            "service.created"
        };
        self.services.insert(key, service.clone());
        let revision = history::Revision {
            version: index,
            spec: spec.clone(),
            pin: None,
            at_ms: time_ms,
            cause: cause.clone(),
            actor: self.actor.clone(),
            settled_ms: None,
            promoted_ms: None,
        };
        self.history
            .record(namespace, name, revision, spec.update.history);
        if cause == history::Cause::Deploy {
            self.event(
                index,
                time_ms,
                kind,
                &format!("{namespace}/{name}"),
                format!("image {} x{}", spec.image, spec.replicas),
            );
        }
        Outcome::Service(Box::new(service))
    }

    /// Every service of `from` as a new service of `to`, in deploy order,
    /// in this one write: specs with their sealed secrets, images pinned,
    /// the `shared` ones as references to the originals. Volumes start
    /// empty (declarations only); `to` must have no services.
    fn clone_namespace(
        &mut self,
        index: u64,
        time_ms: u64,
        (from, to): (&str, &str),
        shared: &[String],
        domain: &str,
    ) -> Outcome {
        if let Err(invalid) = validate::dns_label("namespace", to) {
            return Outcome::Rejected(invalid.to_string());
        }
        if from == to {
            return Outcome::Rejected(format!("cannot clone namespace {from} onto itself"));
        }
        if self.services.keys().any(|(ns, _)| ns == to) {
            return Outcome::Refused {
                code: topology::NAMESPACE_NOT_EMPTY.into(),
                message: format!("namespace {to} has services; clone into an empty namespace"),
            };
        }
        let shared: BTreeSet<String> = shared.iter().cloned().collect();
        let export = topology::Export {
            namespace: from,
            shared: &shared,
            domain,
        };
        let copy = match export.from_state(self) {
            Ok(copy) => copy,
            Err(reason) => return Outcome::Rejected(reason.to_string()),
        };
        // All or nothing: every spec is checked before any is written, so
        // a refusal leaves none made (the writes below cannot fail: `to`
        // has no services).
        for service in &copy.services {
            if let Err(reason) = Self::check_service(to, &service.name, &service.spec) {
                return Outcome::Rejected(format!("service {}: {reason}", service.name));
            }
        }
        for service in &copy.services {
            self.put_service(
                index,
                time_ms,
                (to, &service.name),
                &service.spec,
                Some(0),
                history::Cause::Deploy,
            );
        }
        self.event(
            index,
            time_ms,
            "namespace.cloned",
            to,
            format!(
                "namespace {to} cloned from {from}: {} services ({} shared)",
                copy.services.len(),
                shared.len()
            ),
        );
        Outcome::Done
    }

    fn create_release(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
        entry: &str,
        (blue, green): (&str, &str),
        live: releases::Color,
    ) -> Outcome {
        for (what, value) in [
            ("release name", name),
            ("entry", entry),
            ("blue namespace", blue),
            ("green namespace", green),
        ] {
            if let Err(invalid) = validate::dns_label(what, value) {
                return Outcome::Rejected(invalid.to_string());
            }
        }
        let release = releases::Release {
            name: name.to_string(),
            entry: entry.to_string(),
            blue: blue.to_string(),
            green: green.to_string(),
            live,
            version: index,
            created_ms: time_ms,
            switches: Vec::new(),
        };
        if let Err(reason) = self.releases.check_new(&release) {
            return Outcome::Rejected(reason);
        }
        self.event(
            index,
            time_ms,
            "release.created",
            name,
            format!(
                "release {name}: entry {entry}, blue {blue}, green {green}, {} live",
                live.as_str()
            ),
        );
        self.releases.releases.insert(name.to_string(), release);
        Outcome::Done
    }

    /// `release approve`: the newest run waiting at `release`'s gate is
    /// approved and the release switches to the environment it deployed
    /// to, in this one write.
    fn approve_release(&mut self, index: u64, time_ms: u64, release: &str) -> Outcome {
        let Some(current) = self.releases.releases.get(release) else {
            return Outcome::NotFound;
        };
        let Some((pipeline, run, target)) = self.pipelines.waiting_for(release) else {
            return Outcome::Refused {
                code: pipelines::NOTHING_TO_APPROVE.into(),
                message: format!("no pipeline run waits for approval of release {release}"),
            };
        };
        let (pipeline, target) = (pipeline.to_string(), target.to_string());
        let Some(color) = current.color_of(&target) else {
            return Outcome::Rejected(format!(
                "run {run} of {pipeline} deployed to {target}, which is not an environment of release {release}"
            ));
        };
        match self.switch_release(
            index,
            time_ms,
            release,
            releases::SwitchTarget::To(color),
            false,
            None,
        ) {
            Outcome::Done => {}
            refused => return refused,
        }
        let actor = self.actor.clone();
        self.pipelines
            .approved(&pipeline, run, time_ms, actor.as_ref());
        self.event(
            index,
            time_ms,
            "pipeline.approved",
            &format!("{pipeline}/{run}"),
            format!("run {run} of {pipeline} approved: release {release} answers from {target}"),
        );
        Outcome::Done
    }

    fn switch_release(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
        target: releases::SwitchTarget,
        force: bool,
        expected_version: Option<u64>,
    ) -> Outcome {
        let Some(release) = self.releases.releases.get(name) else {
            return Outcome::NotFound;
        };
        if let Some(expected) = expected_version {
            if expected != release.version {
                return Outcome::VersionMismatch {
                    current: release.version,
                };
            }
        }
        // The entry answers there: an external service with somewhere to
        // point, or a running instance with an address.
        let ready = |color: releases::Color| {
            let namespace = release.namespace(color);
            match self
                .services
                .get(&(namespace.to_string(), release.entry.clone()))
            {
                None => false,
                Some(entry) if entry.spec.kind == ServiceKind::External => {
                    !entry.spec.addresses.is_empty() || entry.spec.hostname.is_some()
                }
                Some(_) => self
                    .service_instances(namespace, &release.entry)
                    .iter()
                    .any(|i| i.state == InstanceState::Running && i.address.is_some()),
            }
        };
        let to = match releases::ReleaseBook::switch_to(release, target, force, ready) {
            Ok(to) => to,
            Err(refusal) => {
                return Outcome::Refused {
                    code: refusal.code.into(),
                    message: refusal.message,
                }
            }
        };
        let from_namespace = release.live_namespace().to_string();
        let back = target == releases::SwitchTarget::Back;
        let actor = self.actor.clone();
        if self.releases.switch(name, to, back, index, time_ms, actor) {
            let release = &self.releases.releases[name];
            self.event(
                index,
                time_ms,
                "release.switched",
                name,
                format!(
                    "release {name}: {} now answers from {} ({}), was {from_namespace}",
                    release.entry,
                    release.live_namespace(),
                    to.as_str()
                ),
            );
        }
        Outcome::Done
    }

    /// A service back at an earlier version: its spec (current replicas)
    /// and the image it resolved to, so what runs is exactly what ran.
    fn rollback_service(
        &mut self,
        index: u64,
        time_ms: u64,
        (namespace, name): (&str, &str),
        to: Option<u64>,
        expected_version: Option<u64>,
        revert: Option<&str>,
    ) -> Outcome {
        let key = (namespace.to_string(), name.to_string());
        let Some(current) = self.services.get(&key) else {
            return Outcome::NotFound;
        };
        let from = current.version;
        let replicas = current.spec.replicas;
        let target = match self.history.rollback_target(namespace, name, to) {
            Ok(target) => target.clone(),
            Err(reason) => return Outcome::Rejected(reason),
        };
        let mut spec = target.spec.clone();
        spec.replicas = replicas;
        let cause = match revert {
            Some(reason) => history::Cause::Revert {
                from,
                to: target.version,
                reason: reason.to_string(),
            },
            None => history::Cause::Rollback { to: target.version },
        };
        let outcome = self.put_service(
            index,
            time_ms,
            (namespace, name),
            &spec,
            expected_version,
            cause,
        );
        if !matches!(outcome, Outcome::Service(_)) {
            return outcome;
        }
        if let Some(pin) = &target.pin {
            self.apply_pin_image(namespace, name, index, pin);
            self.history.pin_newest(namespace, name, pin);
        }
        let (kind, message) = match revert {
            Some(reason) => (
                "service.reverted",
                format!(
                    "the rollout of version {from} failed ({reason}): back to version {} as version {index}",
                    target.version
                ),
            ),
            None => (
                "service.rolled_back",
                format!("back to version {} as version {index}", target.version),
            ),
        };
        self.event(
            index,
            time_ms,
            kind,
            &format!("{namespace}/{name}"),
            message,
        );
        outcome
    }

    fn delete_service(
        &mut self,
        index: u64,
        time_ms: u64,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Outcome {
        let key = (namespace.to_string(), name.to_string());
        let Some(current) = self.services.get(&key) else {
            return Outcome::NotFound;
        };
        if let Some(expected) = expected_version {
            if expected != current.version {
                return Outcome::VersionMismatch {
                    current: current.version,
                };
            }
        }
        self.services.remove(&key);
        self.images.pins.remove(&key);
        self.hooks.service_deleted(namespace, name);
        self.history.service_deleted(namespace, name);
        let gone: Vec<String> = self
            .service_instances(namespace, name)
            .into_iter()
            .map(|i| i.id.clone())
            .collect();
        for id in gone {
            self.instances.remove(&id);
            self.hooks.instance_removed(&id);
        }
        self.event(
            index,
            time_ms,
            "service.deleted",
            &format!("{namespace}/{name}"),
            "service removed".into(),
        );
        Outcome::Deleted
    }

    fn put_node(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
        spec: &NodeSpec,
        expected_version: Option<u64>,
    ) -> Outcome {
        if let Err(reason) = validate::dns_label("node name", name).and(validate::node_spec(spec)) {
            return Outcome::Rejected(reason.into());
        }
        let current = self.nodes.get(name);
        let current_version = current.map_or(0, |n| n.version);
        if let Some(expected) = expected_version {
            if expected != current_version {
                return Outcome::VersionMismatch {
                    current: current_version,
                };
            }
        }
        let node = Node {
            name: name.to_string(),
            spec: spec.clone(),
            state: current.map_or(NodeState::Ready, |n| n.state),
            version: index,
            create_index: current.map_or(index, |n| n.create_index),
        };
        let kind = if current.is_some() {
            "node.updated"
        } else {
            "node.added"
        };
        self.nodes.insert(name.to_string(), node.clone());
        self.event(
            index,
            time_ms,
            kind,
            name,
            format!("docker endpoint {}", spec.docker_endpoint),
        );
        Outcome::Node(Box::new(node))
    }

    fn kv_put(
        &mut self,
        index: u64,
        key: &str,
        value: &[u8],
        flags: u64,
        cas: Option<u64>,
    ) -> Outcome {
        if let Err(reason) = validate::kv_key(key).and(validate::kv_value(value)) {
            return Outcome::Rejected(reason.into());
        }
        let existing = self.kv.get(key);
        if let Some(expected) = cas {
            let current = existing.map_or(0, |e| e.modify_index);
            if expected != current {
                return Outcome::Kv(false);
            }
        }
        self.kv_store(index, key, value, flags);
        Outcome::Kv(true)
    }

    fn kv_delete(&mut self, index: u64, key: &str, cas: Option<u64>, recurse: bool) -> Outcome {
        if recurse {
            let doomed: Vec<String> = self.kv_prefix(key).map(|(k, _)| k.clone()).collect();
            for k in doomed {
                self.kv_remove(index, &k);
            }
            return Outcome::Kv(true);
        }
        if let Some(expected) = cas {
            // Consul: a CAS delete of a missing key with index 0 succeeds.
            let current = self.kv.get(key).map_or(0, |e| e.modify_index);
            if expected != current {
                return Outcome::Kv(false);
            }
        }
        self.kv_remove(index, key);
        Outcome::Kv(true)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn kv_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + 'a {
        self.kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The index a KV read of `key` (or of the prefix, with `recurse`)
    /// reports in `X-Consul-Index`, as Consul does: an existing key's own
    /// `ModifyIndex` (clients such as Patroni block on it and compare it
    /// with what they passed, so a deletion elsewhere must not move it);
    /// for a prefix the newest change among its entries or the newest
    /// deletion; for a missing key the newest change or deletion of any
    /// key. Never 0.
    pub fn kv_read_index(&self, key: &str, recurse: bool) -> u64 {
        if recurse {
            let newest = self.kv_prefix(key).map(|(_, e)| e.modify_index).max();
            return newest.unwrap_or(0).max(self.kv_delete_index).max(1);
        }
        match self.kv.get(key) {
            Some(entry) => entry.modify_index.max(1),
            None => self.kv_index.max(self.kv_delete_index).max(1),
        }
    }

    /// Records that the entry at `index` changed what the catalog shows
    /// (the caller knows from [`touched::touched`]).
    pub fn note_catalog_change(&mut self, index: u64, changed: &[touched::Touched]) {
        use touched::Touched;
        let shows = changed.iter().any(|t| {
            matches!(
                t,
                Touched::Everything
                    | Touched::Service { .. }
                    | Touched::Instance { .. }
                    | Touched::Node(_)
                    | Touched::Managers
            )
        });
        if shows {
            self.catalog_index = self.catalog_index.max(index);
        }
    }

    /// Instances of one service, by slot.
    pub fn service_instances(&self, namespace: &str, name: &str) -> Vec<&Instance> {
        // Instance ids start with "<namespace>.<service>." (or, placed by
        // an older leader, "<namespace>-<service>-"), so range scans over
        // those prefixes find them without walking every instance (DNS
        // asks this on every query); the filter drops services whose
        // legacy ids merely share the prefix.
        let mut found: Vec<&Instance> = [
            format!("{namespace}.{name}."),
            format!("{namespace}-{name}-"),
        ]
        .iter()
        .flat_map(|prefix| {
            self.instances
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(move |(id, _)| id.starts_with(prefix.as_str()))
                .map(|(_, i)| i)
        })
        .filter(|i| i.namespace == namespace && i.service == name)
        .collect();
        found.sort_by_key(|i| (i.slot, i.generation));
        found
    }

    pub(crate) fn event(
        &mut self,
        index: u64,
        time_ms: u64,
        kind: &str,
        subject: &str,
        message: String,
    ) {
        // Bounded like the log itself: a message (an engine's error text,
        // say) is cut, never refused.
        self.events.push_back(Event {
            index,
            time_ms,
            kind: limits::truncate(kind.to_string(), limits::MAX_EVENT_FIELD_BYTES),
            subject: limits::truncate(subject.to_string(), limits::MAX_EVENT_FIELD_BYTES),
            message: limits::truncate(message, limits::MAX_EVENT_MESSAGE_BYTES),
            actor: self.actor.clone(),
        });
        while self.events.len() > EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
