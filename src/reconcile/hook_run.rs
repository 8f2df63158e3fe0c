//! Runs one hook of a service for one slot, where its spec says: inside the
//! slot's running container (an exec), or in a one-shot container of the
//! service's image, env and the slot's volumes on the slot's node. Every
//! run is bounded by the hook's timeout and written as an event (`hook.<kind>`)
//! with its exit code, duration and the tail of its output. It decides
//! nothing about what a result means: its callers (the service controller
//! for start and stop, the hooks controller for backup, restore and test)
//! do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engines::Engines;
use super::services::container_spec;
use crate::replica::Replica;
use crate::runtime::{ByteStream, CommandOutput, CommandRequest, ContainerRuntime, StdoutTo};
use crate::state::{Command, HookKind, HookRun, Instance, Service};

/// How much of a hook's output its event carries.
const EVENT_TAIL_CHARS: usize = 300;

/// One hook to run for one slot.
pub struct HookCall<'a> {
    pub kind: HookKind,
    pub service: &'a Service,
    /// The slot's instance: its node (and its slot's volumes).
    pub instance: &'a Instance,
    /// The running container an `instance` hook runs in.
    pub container: Option<&'a str>,
    /// Fed to its stdin (a restore's artifact).
    pub stdin: Option<ByteStream>,
    /// Where its stdout goes (a backup's is sent to the artifact's store).
    pub stdout: StdoutTo,
    /// A bound tighter than the hook's own timeout (a stop hook runs
    /// within the stop grace period).
    pub within: Option<Duration>,
}

impl<'a> HookCall<'a> {
    /// A call for `instance`'s running container, if it has one.
    pub fn on_instance(
        kind: HookKind,
        service: &'a Service,
        instance: &'a Instance,
    ) -> HookCall<'a> {
        HookCall {
            kind,
            service,
            instance,
            container: instance
                .container_id
                .as_deref()
                .filter(|_| instance.state == crate::state::InstanceState::Running),
            stdin: None,
            stdout: StdoutTo::Tail,
            within: None,
        }
    }
}

/// Why a hook run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HookFailure {
    /// Its exit code when it ran and exited non-zero; `None` when it could
    /// not run or finish (no running container, an engine error, a timeout).
    pub exit_code: Option<i64>,
    pub reason: String,
}

impl HookFailure {
    fn could_not_run(reason: String) -> HookFailure {
        HookFailure {
            exit_code: None,
            reason,
        }
    }
}

/// How a hook run ended: `Ok` when it exited 0.
pub type HookResult = Result<CommandOutput, HookFailure>;

/// The engine of the instance's node.
fn engine_of(
    replica: &Replica,
    engines: &Engines,
    instance: &Instance,
) -> Result<Arc<dyn ContainerRuntime>, String> {
    let node_name = instance
        .node
        .clone()
        .ok_or_else(|| format!("{} is not placed on a node", instance.id))?;
    let node = replica
        .sm
        .read(|s| s.nodes.get(&node_name).cloned())
        .ok_or_else(|| format!("node {node_name} of {} is gone", instance.id))?;
    engines
        .for_node(&node)
        .map_err(|e| format!("node {node_name}: {e}"))
}

/// Runs `call`'s hook and records its event. `Err` says why it failed (a
/// non-zero exit, a timeout, no running container), in one line.
pub async fn run_hook(replica: &Replica, engines: &Engines, call: HookCall<'_>) -> HookResult {
    let HookCall {
        kind,
        service,
        instance,
        container,
        stdin,
        stdout,
        within,
    } = call;
    let Some(hook) = service.spec.hooks.get(kind) else {
        return Err(HookFailure::could_not_run(format!(
            "{}/{} has no {} hook",
            service.namespace,
            service.name,
            kind.name()
        )));
    };
    let own = Duration::from_secs(u64::from(hook.timeout_secs));
    let request = CommandRequest {
        command: hook.command.clone(),
        stdin,
        stdout,
        timeout: within.map_or(own, |within| within.min(own)),
    };
    let started = Instant::now();
    let ran = async {
        let engine = engine_of(replica, engines, instance)?;
        let output = match hook.run {
            HookRun::Instance => {
                let container = container.ok_or_else(|| {
                    format!(
                        "{} has no running container to run its {} hook in",
                        instance.id,
                        kind.name()
                    )
                })?;
                engine.exec(container, request).await
            }
            HookRun::Oneshot => {
                let spec = one_shot_spec(replica, service, instance, kind)?;
                engine.run_once(&spec, request).await
            }
        };
        output.map_err(|e| e.to_string())
    }
    .await;
    let took = started.elapsed();
    let result = match ran {
        Ok(output) if output.exit_code == 0 => Ok(output),
        Ok(output) => Err(HookFailure {
            exit_code: Some(output.exit_code),
            reason: format!(
                "exited {}{}",
                output.exit_code,
                tail_of(&output)
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            ),
        }),
        Err(reason) => Err(HookFailure::could_not_run(reason)),
    };
    let message = match &result {
        Ok(output) => format!(
            "{} hook of {} exited 0 in {:.1} s{}",
            kind.name(),
            instance.id,
            took.as_secs_f64(),
            tail_of(output)
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        ),
        Err(reason) => format!(
            "{} hook of {} failed after {:.1} s: {reason}",
            kind.name(),
            instance.id,
            took.as_secs_f64()
        ),
    };
    let event = Command::RecordEvent {
        kind: format!("hook.{}", kind.name()),
        subject: format!("{}/{}", service.namespace, service.name),
        message,
    };
    if let Err(e) = replica.write_as_leader(event).await {
        tracing::warn!(error = %e, "cannot record a hook's event");
    }
    result
}

/// The last line(s) of a run's output for its event: stderr, else stdout
/// (a backup's stdout is its artifact and was never kept).
fn tail_of(output: &CommandOutput) -> Option<String> {
    let source = if output.stderr_tail.is_empty() {
        &output.stdout_tail
    } else {
        &output.stderr_tail
    };
    let text = String::from_utf8_lossy(source);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let skip = text.chars().count().saturating_sub(EVENT_TAIL_CHARS);
    Some(
        text.chars()
            .skip(skip)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    )
}

/// The one-shot container of a hook: the slot's container as it would be
/// made (image, env, secrets, volumes), without ports or the labels that
/// would make it the slot's, under a name of its own.
fn one_shot_spec(
    replica: &Replica,
    service: &Service,
    instance: &Instance,
    kind: HookKind,
) -> Result<crate::runtime::ContainerSpec, String> {
    let (cluster, image, address) = replica.sm.read(|s| {
        let image = s
            .images
            .pin(&service.namespace, &service.name, service.version)
            .map_or_else(|| service.spec.image.clone(), str::to_string);
        let address = instance
            .node
            .as_ref()
            .and_then(|node| s.nodes.get(node))
            .map(|node| node.published_address());
        (s.owner().cloned().unwrap_or_default(), image, address)
    });
    let mut spec = container_spec(
        &cluster,
        service,
        instance,
        &image,
        "",
        &[],
        replica.secrets.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    if let Some(address) = address {
        spec.env
            .insert(super::services::NODE_ADDRESS_ENV.into(), address);
    }
    spec.name = format!("{}-hook-{}", spec.name, kind.name());
    spec.labels = [
        (super::labels::HOOK.to_string(), kind.name().to_string()),
        (super::labels::HOOK_OF.to_string(), instance.id.clone()),
    ]
    .into();
    spec.ports.clear();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_shows_the_end_of_stderr_else_of_stdout() {
        let output = CommandOutput {
            exit_code: 0,
            stdout_tail: b"all good".to_vec(),
            stderr_tail: Vec::new(),
        };
        assert_eq!(tail_of(&output).as_deref(), Some("all good"));
        let long = CommandOutput {
            exit_code: 1,
            stdout_tail: b"ignored".to_vec(),
            stderr_tail: format!("{}\nlast line", "x".repeat(1000)).into_bytes(),
        };
        let tail = tail_of(&long).unwrap();
        assert_eq!(tail.chars().count(), EVENT_TAIL_CHARS);
        assert!(tail.ends_with(" last line"), "{tail}");
        assert_eq!(tail_of(&CommandOutput::default()), None);
    }
}
