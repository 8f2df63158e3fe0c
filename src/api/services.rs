//! `/v1/services`: the service registry's desired state — deploy (PUT with
//! `If-Match` compare-and-set on the version), read, list, scale, delete,
//! and the instances of a service.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;

use super::error::{outcome_response, ApiError, ApiResult, Refusals};
use super::extract::{JsonBody, Params};
use crate::auth::scope::Scope;
use crate::replica::Replica;
use crate::secrets;
use crate::state::history::Cause;
use crate::state::{
    validate, Command, Event, Instance, InstanceState, Outcome, RunState, Service, ServiceSpec,
};
use crate::wire::{Canary, Reverted, Revision, RollbackBody, ScaleBody, ServiceReport};

pub(super) fn check_names(namespace: &str, name: &str) -> ApiResult<()> {
    validate::dns_label("namespace", namespace)
        .and_then(|_| validate::dns_label("service name", name))
        .map_err(ApiError::bad_request)
}

/// Reads `If-Match: <version>` (quotes, as in an ETag, are allowed).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("If-Match {text:?} is not a version number")))
}

/// Seals the clear values of `spec.secret_env` before the spec enters the
/// log. A value given as `<redacted>` (a spec read back and deployed again)
/// keeps the service's current sealed text, so its containers do not roll.
/// A clear value is always sealed anew, under a fresh nonce, even when it
/// equals the current secret: keeping it only when equal would tell whoever
/// deploys a guess (by the template and rollout that follow) whether the
/// guess is right.
fn seal_secrets(
    replica: &Replica,
    namespace: &str,
    name: &str,
    spec: &mut ServiceSpec,
) -> ApiResult<()> {
    if spec.secret_env.is_empty() {
        return Ok(());
    }
    let Some(key) = &replica.secrets else {
        return Err(ApiError::bad_request(
            "secret_env needs a secrets key: set [secrets] key_file in every replica's config",
        ));
    };
    let key_of_service = (namespace.to_string(), name.to_string());
    let current = replica.sm.read(|s| {
        s.services
            .get(&key_of_service)
            .map(|svc| svc.spec.secret_env.clone())
    });
    for (variable, value) in spec.secret_env.0.iter_mut() {
        if value == secrets::REDACTED {
            *value = current
                .as_ref()
                .and_then(|env| env.0.get(variable))
                .cloned()
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "secret_env {variable:?} is {} but {namespace}/{name} has no such secret to keep",
                        secrets::REDACTED
                    ))
                })?;
        } else if secrets::is_sealed(value) {
            return Err(ApiError::bad_request(format!(
                "secret_env {variable:?} looks sealed; give the clear value"
            )));
        } else {
            *value = key.seal(variable, value);
        }
    }
    Ok(())
}

fn service_outcome(what: &str, outcome: Outcome) -> ApiResult<Response> {
    outcome_response(&format!("service {what}"), outcome)
}

#[utoipa::path(
    get, path = "/v1/services", tag = "services",
    params(("namespace" = Option<String>, Query, description = "Only this namespace"), ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier")),
    responses((status = 200, description = "Services", body = Vec<Service>), Refusals)
)]
pub async fn list(
    State(replica): State<Arc<Replica>>,
    scope: Scope,
    params: Params,
) -> ApiResult<Json<Vec<Service>>> {
    params.read_barrier(&replica).await?;
    let namespace = params.get("namespace").map(str::to_string);
    Ok(Json(replica.sm.read(|s| {
        s.services
            .values()
            .filter(|svc| namespace.as_ref().is_none_or(|ns| &svc.namespace == ns))
            .filter(|svc| scope.allows_namespace(&svc.namespace))
            .cloned()
            .collect()
    })))
}

#[utoipa::path(
    get, path = "/v1/services/{namespace}/{name}", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),    ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The service; `ETag` is its version", body = Service), Refusals)
)]
pub async fn get(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    params.read_barrier(&replica).await?;
    let key = (namespace.clone(), name.clone());
    match replica.sm.read(|s| s.services.get(&key).cloned()) {
        Some(service) => service_outcome(
            &format!("{namespace}/{name}"),
            Outcome::Service(Box::new(service)),
        ),
        None => Err(ApiError::not_found(format!(
            "service {namespace}/{name} does not exist"
        ))),
    }
}

#[utoipa::path(
    put, path = "/v1/services/{namespace}/{name}", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),    ("If-Match" = Option<String>, Header, description = "Only if the current version is this"),
    ),
    request_body = ServiceSpec,
    responses((status = 200, description = "The service as deployed", body = Service), Refusals)
)]
pub async fn put(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(mut spec): JsonBody<ServiceSpec>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    replica
        .config
        .limits
        .check_service_spec(&spec, false)
        .map_err(ApiError::limit)?;
    validate::service_spec(&spec)
        .and_then(|_| validate::health_rules(&spec))
        .and_then(|_| validate::image_rules(&spec))
        .map_err(ApiError::bad_request)?;
    seal_secrets(&replica, &namespace, &name, &mut spec)?;
    let expected_version = if_match(&headers)?;
    let what = format!("{namespace}/{name}");
    let applied = replica
        .write(Command::PutService {
            namespace,
            name,
            spec,
            expected_version,
        })
        .await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    delete, path = "/v1/services/{namespace}/{name}", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),    ("If-Match" = Option<String>, Header, description = "Only if the current version is this"),
        ("purge" = Option<bool>, Query, description = "Remove the service's volumes too (they are kept otherwise)"),
    ),
    responses((status = 204, description = "Deleted"), Refusals)
)]
pub async fn delete(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let what = format!("{namespace}/{name}");
    let expected_version = if_match(&headers)?;
    let purge = match params.get("purge") {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query parameter purge={other:?} is not true or false"
            )))
        }
    };
    let command = if purge {
        Command::DeleteServiceAndVolumes {
            namespace,
            name,
            expected_version,
        }
    } else {
        Command::DeleteService {
            namespace,
            name,
            expected_version,
        }
    };
    let applied = replica.write(command).await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    get, path = "/v1/services/{namespace}/{name}/history", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
        ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The versions of the service's spec, oldest first", body = Vec<Revision>), Refusals)
)]
pub async fn history(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Vec<Revision>>> {
    check_names(&namespace, &name)?;
    params.read_barrier(&replica).await?;
    replica.sm.read(|s| {
        if !s.services.contains_key(&(namespace.clone(), name.clone())) {
            return Err(ApiError::not_found(format!(
                "service {namespace}/{name} does not exist"
            )));
        }
        let revisions = s.history.revisions(&namespace, &name);
        let newest = revisions.last().map(|r| r.version);
        Ok(Json(
            revisions
                .iter()
                .map(|r| {
                    let (cause, from, to, reason) = match &r.cause {
                        Cause::Deploy => ("deploy", None, None, None),
                        Cause::Rollback { to } => ("rollback", None, Some(*to), None),
                        Cause::Revert { from, to, reason } => {
                            ("revert", Some(*from), Some(*to), Some(reason.clone()))
                        }
                    };
                    Revision {
                        version: r.version,
                        at_ms: r.at_ms,
                        cause: cause.to_string(),
                        from,
                        to,
                        reason,
                        image: r.spec.image.clone(),
                        pin: r.pin.clone(),
                        settled_ms: r.settled_ms,
                        actor: r.actor.as_ref().map(|a| a.token_name.clone()),
                        current: Some(r.version) == newest,
                        spec: r.spec.clone(),
                    }
                })
                .collect(),
        ))
    })
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/rollback", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ), request_body = RollbackBody,
    responses((status = 200, description = "The service at the earlier version's spec and image, as a new version", body = Service), Refusals)
)]
pub async fn rollback(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let what = format!("{namespace}/{name}");
    let applied = replica
        .write(Command::RollbackService {
            namespace,
            name,
            to: body.to,
            expected_version: body.expected_version,
            revert: None,
        })
        .await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/promote", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 200, description = "The canary deploy is promoted: the rest rolls out", body = Service), Refusals)
)]
pub async fn promote(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let what = format!("{namespace}/{name}");
    let applied = replica
        .write(Command::PromoteCanary { namespace, name })
        .await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/abort", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 200, description = "Back at the version before the canary deploy, as a new version", body = Service), Refusals)
)]
pub async fn abort(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let what = format!("{namespace}/{name}");
    let version = replica.sm.read(|s| {
        let service = s
            .services
            .get(&(namespace.clone(), name.clone()))
            .ok_or_else(|| ApiError::not_found(format!("service {what} does not exist")))?;
        if !s.history.canary_held(&namespace, &name) {
            return Err(super::error::refused(
                crate::state::history::NO_CANARY,
                format!("{what} has no canary waiting to be aborted"),
            ));
        }
        Ok(service.version)
    })?;
    let applied = replica
        .write(Command::RollbackService {
            namespace,
            name,
            to: None,
            expected_version: Some(version),
            revert: None,
        })
        .await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/scale", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ), request_body = ScaleBody,
    responses((status = 200, description = "The service, scaled", body = Service), Refusals)
)]
pub async fn scale(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<ScaleBody>,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    if body.replicas > validate::MAX_REPLICAS {
        return Err(ApiError::bad_request(format!(
            "replicas must be at most {}",
            validate::MAX_REPLICAS
        )));
    }
    let what = format!("{namespace}/{name}");
    let applied = replica
        .write(Command::ScaleService {
            namespace,
            name,
            replicas: body.replicas,
        })
        .await?;
    service_outcome(&what, applied.outcome)
}

#[utoipa::path(
    get, path = "/v1/services/{namespace}/{name}/instances", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),    ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "The service's instances", body = Vec<Instance>), Refusals)
)]
pub async fn instances(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Vec<Instance>>> {
    check_names(&namespace, &name)?;
    params.read_barrier(&replica).await?;
    let key = (namespace.clone(), name.clone());
    replica.sm.read(|s| {
        if !s.services.contains_key(&key) {
            return Err(ApiError::not_found(format!(
                "service {namespace}/{name} does not exist"
            )));
        }
        Ok(Json(
            s.service_instances(&namespace, &name)
                .into_iter()
                .cloned()
                .collect(),
        ))
    })
}

/// The lifecycle operations of a service (the mF2C start/stop/restart).
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle {
    Start,
    /// Containers are stopped and kept for a later start.
    Stop,
    /// Every instance restarts once.
    Restart,
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/start", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 200, description = "Runs the service again after a stop", body = Service), Refusals)
)]
pub async fn start(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    lifecycle(replica, namespace, name, Lifecycle::Start).await
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/stop", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 200, description = "Stops every instance (containers are kept)", body = Service), Refusals)
)]
pub async fn stop(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    lifecycle(replica, namespace, name, Lifecycle::Stop).await
}

#[utoipa::path(
    post, path = "/v1/services/{namespace}/{name}/restart", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),
    ),
    responses((status = 200, description = "Restarts every instance once", body = Service), Refusals)
)]
pub async fn restart(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    lifecycle(replica, namespace, name, Lifecycle::Restart).await
}

/// `POST /v1/services/{ns}/{name}/start|stop|restart`.
async fn lifecycle(
    replica: Arc<Replica>,
    namespace: String,
    name: String,
    operation: Lifecycle,
) -> ApiResult<Response> {
    check_names(&namespace, &name)?;
    let what = format!("{namespace}/{name}");
    let command = match operation {
        Lifecycle::Start | Lifecycle::Stop => Command::SetServiceRunState {
            namespace,
            name,
            run_state: if matches!(operation, Lifecycle::Start) {
                RunState::Running
            } else {
                RunState::Stopped
            },
        },
        Lifecycle::Restart => Command::RestartService { namespace, name },
    };
    let applied = replica.write(command).await?;
    service_outcome(&what, applied.outcome)
}

/// Whether `event` is about the service `namespace/name` or one of its
/// instances (ids `<namespace>.<name>.<slot>`, or the ids of instances
/// placed before ids were unique, `<namespace>-<name>-<slot>`).
fn concerns_service(event: &Event, namespace: &str, name: &str) -> bool {
    let Some(rest) = event.subject.strip_prefix(namespace) else {
        return false;
    };
    let slot_after = |separator: char, rest: &str| {
        rest.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(separator))
            .is_some_and(|slot| !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit()))
    };
    match rest.chars().next() {
        Some('/') => &rest[1..] == name,
        Some(separator @ ('.' | '-')) => slot_after(separator, &rest[1..]),
        _ => false,
    }
}

#[utoipa::path(
    get, path = "/v1/services/{namespace}/{name}/report", tag = "services", params(
        ("namespace" = String, Path, description = "Namespace (a DNS label)", example = "demo"),
        ("name" = String, Path, description = "Service name (a DNS label)", example = "echo"),    ("stale" = Option<bool>, Query, description = "Answer from this replica's copy without a read barrier"),
    ),
    responses((status = 200, description = "Progress and health of the service", body = ServiceReport), Refusals)
)]
pub async fn report(
    State(replica): State<Arc<Replica>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<ServiceReport>> {
    check_names(&namespace, &name)?;
    params.read_barrier(&replica).await?;
    let key = (namespace.clone(), name.clone());
    replica.sm.read(|s| {
        let Some(service) = s.services.get(&key) else {
            return Err(ApiError::not_found(format!(
                "service {namespace}/{name} does not exist"
            )));
        };
        let instances: Vec<Instance> = s
            .service_instances(&namespace, &name)
            .into_iter()
            .cloned()
            .collect();
        let count =
            |state: InstanceState| instances.iter().filter(|i| i.state == state).count() as u32;
        let pin = s
            .images
            .pin(&namespace, &name, service.version)
            .map(str::to_string);
        // The image's own events (pulls) concern the service too.
        let image_subjects = [Some(service.spec.image.as_str()), pin.as_deref()];
        let recent_events: Vec<Event> = s
            .events
            .iter()
            .rev()
            .filter(|e| {
                concerns_service(e, &namespace, &name)
                    || image_subjects.contains(&Some(e.subject.as_str()))
            })
            .take(20)
            .cloned()
            .collect();
        let template = s.template_of(service);
        let outdated = instances.iter().filter(|i| i.template != template).count() as u32;
        let failing_new = instances.iter().find(|i| {
            i.template == template && matches!(i.state, InstanceState::CrashLoop | InstanceState::Unhealthy | InstanceState::Exited)
        });
        let verdict = s.hooks.verdict(&namespace, &name, service.version);
        let test = match (&service.spec.hooks.test, verdict) {
            (None, _) => "none",
            (Some(_), None) => "pending",
            (Some(_), Some(v)) if v.passed => "passed",
            (Some(_), Some(_)) => "failed",
        }
        .to_string();
        let rollout_paused = match (failing_new, verdict) {
            (_, Some(v)) if !v.passed => Some(format!(
                "rollout failed: the test hook of version {} {} on {}; {outdated} instance(s) keep the previous version",
                v.version, v.summary, v.instance
            )),
            (Some(i), _) if outdated > 0 => Some(format!(
                "rollout paused: new instance {} is {}{}; {outdated} instance(s) keep the previous version",
                i.id,
                crate::state::supervision::state_name(i.state),
                i.last_exit.as_ref().map(|e| format!(" ({})", e.reason)).unwrap_or_default()
            )),
            _ => None,
        };
        let reverted = s
            .history
            .newest(&namespace, &name)
            .and_then(|newest| match &newest.cause {
                Cause::Revert { from, to, reason } => Some(Reverted {
                    from: *from,
                    to: *to,
                    reason: reason.clone(),
                }),
                _ => None,
            });
        let revert_armed = service.spec.update.on_failure == crate::state::OnFailure::Revert
            && reverted.is_none()
            && s.history.revert_target(&namespace, &name).is_some();
        let canary = s.history.canary_held(&namespace, &name).then(|| Canary {
            wanted: service.spec.update.canary,
            running: instances
                .iter()
                .filter(|i| i.template == template && i.state == InstanceState::Running)
                .count() as u32,
        });
        Ok(Json(ServiceReport {
            outdated,
            rollout_paused,
            test,
            reverted,
            revert_armed,
            canary,
            service: format!("{namespace}/{name}"),
            version: service.version,
            run_state: service.run_state,
            desired: if service.run_state == RunState::Running && service.spec.kind == crate::state::ServiceKind::Container {
                service.spec.replicas
            } else {
                0
            },
            running: count(InstanceState::Running),
            unhealthy: count(InstanceState::Unhealthy),
            crash_looping: count(InstanceState::CrashLoop),
            pending: count(InstanceState::Pending) + count(InstanceState::Starting),
            pulling: count(InstanceState::Pulling),
            pull_failed: count(InstanceState::PullFailed),
            waiting: count(InstanceState::Waiting),
            image: pin,
            restarts: instances.iter().map(|i| u64::from(i.restarts)).sum(),
            last_exits: instances
                .iter()
                .filter_map(|i| i.last_exit.clone().map(|x| (i.id.clone(), x)))
                .collect(),
            instances,
            recent_events,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: &str) -> Event {
        Event {
            index: 1,
            time_ms: 1,
            kind: "instance.state".into(),
            subject: subject.into(),
            message: String::new(),
            actor: None,
        }
    }

    #[test]
    fn a_report_gathers_the_events_of_the_service_and_its_instances() {
        for (subject, concerns) in [
            ("demo/echo", true),
            ("demo.echo.0", true),
            ("demo.echo.12", true),
            ("demo-echo-3", true),
            ("demo/echo2", false),
            ("demo.echo2.0", false),
            ("demo.echo.", false),
            ("demo.echo.x", false),
            ("other.echo.0", false),
        ] {
            assert_eq!(
                concerns_service(&event(subject), "demo", "echo"),
                concerns,
                "{subject}"
            );
        }
    }
}
