//! The service controller: level-triggered reconcile of every service
//! against what the engines run. Wakes on commits, engine events, crash
//! backoff deadlines and a resync timer; each round observes every usable
//! node once, plans each service ([`super::plan`]) and executes the plans,
//! at most one at a time per service, each in a tracing span. Raft writes
//! (placement intents, observed status) go first; engine calls follow.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::{self, CRASH_LOOP_AFTER};
use super::engines::Engines;
use super::health::{self, HealthBook};
use super::labels;
use super::placement::NodeLoad;
use super::plan::{plan, Action, PlanInput, RestartReason};
use super::watchdog::ProgressReporter;
use super::SupervisorSettings;
use crate::dates::parse_rfc3339_ms;
use crate::replica::{now_ms, Replica};
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, PortBinding, RuntimeError};
use crate::secrets::{SecretsError, SecretsKey};
use crate::state::{
    Command, ExitInfo, Instance, InstanceState, InstanceStatus, Node, NodeState, PublishedPort,
    Service,
};

type ServiceKey = (String, String);

/// Crash history of one instance generation, kept in the leader's memory.
#[derive(Debug, Clone, Default)]
struct CrashTrack {
    consecutive: u32,
    /// Not before this instant may it be started again.
    not_before: Option<Instant>,
    /// The `finished_at` of the death already counted.
    counted_death: String,
}

/// A failure to create that must not be retried in a hot loop.
#[derive(Debug, Clone)]
struct CreateFailure {
    errors: u32,
    retry_at: Instant,
}

struct Controller {
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    wake: Arc<Notify>,
    in_flight: Mutex<HashSet<ServiceKey>>,
    crashes: Mutex<HashMap<(String, u64), CrashTrack>>,
    create_failures: Mutex<HashMap<(String, u64), CreateFailure>>,
    reported_unplaceable: Mutex<HashMap<(ServiceKey, u32), String>>,
    autoscaler: Arc<super::autoscale::Autoscaler>,
    watched_nodes: Mutex<HashSet<String>>,
    health: Arc<Mutex<HealthBook>>,
}

/// Runs the service controller until `token` is cancelled.
pub async fn run(
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    progress: ProgressReporter,
    token: CancellationToken,
) {
    let autoscaler = Arc::new(super::autoscale::Autoscaler::from_config(
        &replica.config.autoscale,
    ));
    let controller = Arc::new(Controller {
        replica,
        engines,
        settings,
        wake: Arc::new(Notify::new()),
        in_flight: Mutex::new(HashSet::new()),
        crashes: Mutex::new(HashMap::new()),
        create_failures: Mutex::new(HashMap::new()),
        reported_unplaceable: Mutex::new(HashMap::new()),
        autoscaler,
        watched_nodes: Mutex::new(HashSet::new()),
        health: Arc::new(Mutex::new(HealthBook::default())),
    });
    tokio::spawn(health::run(
        controller.replica.clone(),
        controller.health.clone(),
        controller.wake.clone(),
        token.clone(),
    ));
    let mut applied = controller.replica.sm.watch_applied();
    let mut consecutive_errors = 0u32;
    loop {
        let round_started = Instant::now();
        match controller.round(&token).await {
            Ok(()) => consecutive_errors = 0,
            Err(e) => {
                consecutive_errors += 1;
                tracing::warn!(error = %e, consecutive_errors, "reconcile round failed");
            }
        }
        // A round that ended, even in an error left to backoff, is progress.
        progress.progress();
        let pause = if consecutive_errors > 0 {
            backoff::error_delay(consecutive_errors)
        } else {
            // Coalesce bursts of commits into one round.
            Duration::from_millis(10).saturating_sub(round_started.elapsed())
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = controller.wake.notified() => {}
            _ = applied.changed() => {}
            _ = tokio::time::sleep(controller.settings.resync) => {}
        }
    }
}

/// Fail point `reconcile-stall`: with `return` (forever) or `return(MS)`
/// the round hangs like an engine call that never answers — it ignores
/// cancellation too. Compiles to nothing without the `failpoints` feature.
async fn stall_failpoint() {
    match stall_requested() {
        Some(Some(pause)) => {
            tracing::warn!(?pause, "fail point reconcile-stall: the round stalls");
            tokio::time::sleep(pause).await;
        }
        Some(None) => {
            tracing::warn!("fail point reconcile-stall: the round stalls for good");
            std::future::pending::<()>().await;
        }
        None => {}
    }
}

/// `Some(pause)` (`None`: forever) when the fail point is on.
fn stall_requested() -> Option<Option<Duration>> {
    fail::fail_point!("reconcile-stall", |arg: Option<String>| {
        Some(
            arg.and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
        )
    });
    None
}

impl Controller {
    async fn round(self: &Arc<Self>, token: &CancellationToken) -> Result<(), String> {
        stall_failpoint().await;
        // Services busy before the state is read: one that finishes while
        // this round observes would otherwise be planned again from the
        // older copy and placed twice.
        let busy_at_start = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (cluster, services, instances, nodes) = self.replica.sm.read(|s| {
            (
                s.cluster_id.clone(),
                s.services.clone(),
                s.instances.clone(),
                s.nodes.clone(),
            )
        });
        let Some(cluster) = cluster else {
            return Ok(());
        };
        // Observe every node that may hold containers we act on.
        let usable: Vec<&Node> = nodes
            .values()
            .filter(|n| matches!(n.state, NodeState::Ready | NodeState::Draining))
            .collect();
        // Bounded: an engine slower than the round budget is unreachable
        // for this round rather than a stall of the whole supervisor.
        let budget = self.settings.round_budget;
        let listings = futures::future::join_all(usable.iter().map(|node| {
            let cluster = cluster.clone();
            async move {
                let result = match self.engines.for_node(node) {
                    Ok(engine) => tokio::time::timeout(
                        budget,
                        engine.list(&labels::node_selector(&cluster, &node.name)),
                    )
                    .await
                    .map_err(|_| format!("no container list within {budget:?}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|list| (engine, list)),
                    Err(e) => Err(e.to_string()),
                };
                (node.name.clone(), result)
            }
        }))
        .await;
        let mut reachable = BTreeSet::new();
        let mut observed: BTreeMap<ServiceKey, Vec<(String, ContainerInfo)>> = BTreeMap::new();
        let mut strays: Vec<(String, ContainerInfo)> = Vec::new();
        for (node, result) in listings {
            match result {
                Ok((engine, containers)) => {
                    self.watch_events(&node, engine, &cluster, token);
                    reachable.insert(node.clone());
                    for container in containers {
                        let ns = container
                            .labels
                            .get(labels::NAMESPACE)
                            .cloned()
                            .unwrap_or_default();
                        let svc = container
                            .labels
                            .get(labels::SERVICE)
                            .cloned()
                            .unwrap_or_default();
                        let key = (ns, svc);
                        if services.contains_key(&key) {
                            observed
                                .entry(key)
                                .or_default()
                                .push((node.clone(), container));
                        } else {
                            strays.push((node.clone(), container));
                        }
                    }
                }
                Err(e) => tracing::debug!(node, error = %e, "cannot list containers"),
            }
        }
        // Containers of services that no longer exist.
        for (node, container) in strays {
            let this = self.clone();
            let node = nodes.get(&node).cloned();
            tokio::spawn(async move {
                if let Some(node) = node {
                    this.remove_container(&node, &container.id, "its service was removed")
                        .await;
                }
            });
        }
        let mut load: BTreeMap<String, NodeLoad> = BTreeMap::new();
        let mut by_service: BTreeMap<ServiceKey, Vec<&Instance>> = BTreeMap::new();
        for instance in instances.values() {
            by_service
                .entry((instance.namespace.clone(), instance.service.clone()))
                .or_default()
                .push(instance);
            if let (Some(node), Some(service)) = (
                &instance.node,
                services.get(&(instance.namespace.clone(), instance.service.clone())),
            ) {
                let entry = load.entry(node.clone()).or_default();
                entry.instances += 1;
                entry.cpu_millis += u64::from(service.spec.resources.cpu_millis);
                entry.memory_mb += service.spec.resources.memory_mb;
            }
        }
        let (healthy, unhealthy) = {
            let book = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let mut healthy = BTreeSet::new();
            let mut unhealthy = BTreeSet::new();
            for containers in observed.values() {
                for (_, c) in containers {
                    if let Some((id, _)) = labels::owner(&c.labels) {
                        if book.is_healthy(&id, &c.id) {
                            healthy.insert(id.clone());
                        }
                        if book.is_unhealthy(&id, &c.id) {
                            unhealthy.insert(id);
                        }
                    }
                }
            }
            (healthy, unhealthy)
        };
        let nodes = Arc::new(nodes);
        for (key, service) in &services {
            if busy_at_start.contains(key)
                || self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(key)
            {
                continue;
            }
            let template = labels::template_fingerprint(&service.spec);
            let containers = observed.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let actions = plan(&PlanInput {
                service,
                template: &template,
                instances: by_service.get(key).cloned().unwrap_or_default(),
                nodes: &nodes,
                observed: containers.iter().map(|(n, c)| (n.as_str(), c)).collect(),
                reachable: &reachable,
                load: &load,
                healthy: &healthy,
                unhealthy: &unhealthy,
            });
            if actions.is_empty() {
                continue;
            }
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            let this = self.clone();
            let service = service.clone();
            let nodes = nodes.clone();
            let cluster = cluster.clone();
            let span = tracing::info_span!("reconcile", service = %format!("{}/{}", key.0, key.1), actions = actions.len());
            let key = key.clone();
            tokio::spawn(
                async move {
                    for action in actions {
                        this.execute(&cluster, &service, &nodes, &template, action)
                            .await;
                    }
                    this.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    this.wake.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// Keeps one engine event subscription per node; events wake the controller.
    fn watch_events(
        self: &Arc<Self>,
        node: &str,
        engine: Arc<dyn ContainerRuntime>,
        cluster: &str,
        token: &CancellationToken,
    ) {
        if !self
            .watched_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string())
        {
            return;
        }
        let this = self.clone();
        let selector = labels::node_selector(cluster, node);
        let token = token.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            if let Ok(mut events) = engine.events(&selector).await {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        event = events.next() => match event {
                            Some(Ok(event)) => {
                                if matches!(event.action.as_str(), "die" | "start" | "destroy" | "oom" | "stop" | "kill") {
                                    this.wake.notify_one();
                                }
                            }
                            _ => break,
                        }
                    }
                }
            }
            this.watched_nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node);
        });
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

    async fn execute(
        self: &Arc<Self>,
        cluster: &str,
        service: &Service,
        nodes: &BTreeMap<String, Node>,
        template: &str,
        action: Action,
    ) {
        match action {
            Action::Place { slot, node } => {
                self.reported_unplaceable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&((service.namespace.clone(), service.name.clone()), slot));
                self.write(Command::PlaceSlot {
                    namespace: service.namespace.clone(),
                    service: service.name.clone(),
                    slot,
                    node,
                })
                .await;
            }
            Action::Unplaceable {
                slot,
                reason,
                needs_capacity,
            } => {
                if needs_capacity {
                    self.autoscaler.more_capacity(&self.replica);
                }
                let key = ((service.namespace.clone(), service.name.clone()), slot);
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
                self.create(cluster, service, nodes, template, instance)
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
                        if let Err(e) = engine.stop(&container_id, self.settings.stop_grace).await {
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
                    self.remove_container(node, &container_id, &why).await;
                }
            }
            Action::Forget { id, generation } => {
                self.write(Command::RemoveInstance { id, generation }).await;
            }
        }
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
        self: &Arc<Self>,
        cluster: &str,
        service: &Service,
        nodes: &BTreeMap<String, Node>,
        template: &str,
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
                self.wake_at(failure.retry_at);
                return;
            }
        }
        let Some(node) = instance.node.as_deref().and_then(|n| nodes.get(n)) else {
            return;
        };
        let Ok(engine) = self.engines.for_node(node) else {
            return;
        };
        let spec = container_spec(
            cluster,
            service,
            &instance,
            template,
            &self.settings.container_dns,
            self.replica.secrets.as_deref(),
        );
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                self.create_failed(service, &instance, node, failure_key, e.to_string())
                    .await;
                return;
            }
        };
        let result = match engine.create(&spec).await {
            Ok(id) => engine.start(&id).await.map(|_| id),
            // The name is taken: adopted (by the next round's listing) only
            // if it is this very generation's container, left by an
            // interrupted create; never another cluster's, service's or
            // instance's container that happens to have the name.
            Err(RuntimeError::Conflict(name)) => match engine.inspect(&name).await {
                Ok(Some(found)) if labels::adoptable(&spec.labels, &found.labels) => {
                    self.wake.notify_one();
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
            Err(e) => {
                self.create_failed(service, &instance, node, failure_key, e.to_string())
                    .await
            }
        }
    }

    /// Records a failed create: retried with growing delays, and shown as
    /// the instance's last exit (crash loop) once per distinct reason.
    async fn create_failed(
        self: &Arc<Self>,
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
            self.wake_at(entry.retry_at);
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
        self: &Arc<Self>,
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
            self.wake_at(retry_at);
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
                self.wake_at(delay_until);
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
            self.note_start(&key, result);
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
                    self.wake_at(not_before);
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
            self.note_start(&key, result);
        }
    }

    /// Remembers a refused start so the next attempt waits (growing delays).
    fn note_start(self: &Arc<Self>, key: &(String, u64), result: Result<(), RuntimeError>) {
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
        self.wake_at(retry_at);
    }

    fn wake_at(self: &Arc<Self>, at: Instant) {
        let wake = self.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            wake.notify_one();
        });
    }
}

/// The engine-side description of an instance's container, with the
/// service's secret env unsealed by `secrets`.
pub fn container_spec(
    cluster: &str,
    service: &Service,
    instance: &Instance,
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
        image: service.spec.image.clone(),
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
                host_port: None,
                host_ip: None,
            })
            .collect(),
        cpu_millis: service.spec.resources.cpu_millis,
        memory_mb: service.spec.resources.memory_mb,
        volumes: Vec::new(),
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
            .and_then(|c| c.labels.get(labels::SPEC_VERSION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(instance.spec_version),
        restart_epoch: instance.restart_epoch,
    }
}
