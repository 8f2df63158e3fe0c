//! Which objects a command changed, as a pure function of the command and
//! its outcome: what the leader's controllers wake for. A command that
//! failed (not found, refused, a lost compare-and-set) changed nothing; a
//! KV write, a token or an event concerns no controller.

use super::command::{Command, Outcome};

/// An object a command changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Touched {
    /// Anything may have changed (the cluster's identity, a snapshot
    /// replaced the whole state): every controller looks again.
    Everything,
    /// The service `(namespace, name)`: its spec, run state or instances.
    Service { namespace: String, name: String },
    /// One instance (and so its service: the service's own spec did not
    /// change); the service when the command or outcome names it.
    Instance {
        id: String,
        service: Option<(String, String)>,
    },
    /// One node of the inventory.
    Node(String),
    /// The managers, their plan or the membership.
    Managers,
    /// The images kept by the cluster (imported or built), their holders,
    /// or the registry logins pulls use.
    Images,
    /// A volume was marked for removal.
    Volumes,
    /// A backup or restore was asked for.
    HookJob(String),
    /// A pipeline or one of its runs.
    Pipeline(String),
}

fn service(namespace: &str, name: &str) -> Touched {
    Touched::Service {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// Whether `outcome` says the command was applied.
fn applied(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Done
        | Outcome::Service(_)
        | Outcome::Node(_)
        | Outcome::Instance(_)
        | Outcome::Deleted
        | Outcome::Token(_)
        | Outcome::Session(_) => true,
        Outcome::Txn(outcome) => matches!(outcome, super::kv_txn::TxnOutcome::Committed(_)),
        Outcome::Kv(changed) => *changed,
        Outcome::NotFound
        | Outcome::VersionMismatch { .. }
        | Outcome::Rejected(_)
        | Outcome::Refused { .. } => false,
    }
}

/// The objects `command` changed, given the `outcome` it was applied with.
pub fn touched(command: &Command, outcome: &Outcome) -> Vec<Touched> {
    if !applied(outcome) {
        return Vec::new();
    }
    match command {
        Command::WithLimits { command, .. } | Command::As { command, .. } => {
            touched(command, outcome)
        }
        Command::InitCluster { .. } => vec![Touched::Everything],
        Command::PutService {
            namespace, name, ..
        }
        | Command::DeleteService {
            namespace, name, ..
        }
        | Command::ScaleService {
            namespace, name, ..
        }
        | Command::SetServiceRunState {
            namespace, name, ..
        }
        | Command::RestartService { namespace, name }
        | Command::RollbackService {
            namespace, name, ..
        }
        | Command::SettleRevision {
            namespace, name, ..
        }
        | Command::PromoteCanary { namespace, name } => vec![service(namespace, name)],
        Command::DeleteServiceAndVolumes {
            namespace, name, ..
        } => vec![service(namespace, name), Touched::Volumes],
        Command::RemoveVolume { .. } => vec![Touched::Volumes],
        // DNS answers from the state as applied; no controller acts on a release.
        Command::CreateRelease { .. }
        | Command::SwitchRelease { .. }
        | Command::RemoveRelease { .. }
        | Command::PutTopology { .. }
        | Command::RemoveTopology { .. } => Vec::new(),
        Command::PutPipeline { name, .. } => vec![Touched::Pipeline(name.clone())],
        Command::StartRun { pipeline, .. } | Command::RecordStage { pipeline, .. } => {
            vec![Touched::Pipeline(pipeline.clone())]
        }
        Command::RemovePipeline { .. }
        | Command::ApproveRelease { .. }
        | Command::SetClusterVersion { .. } => Vec::new(),
        // A clone makes many services: every controller looks again.
        Command::CloneNamespace { .. } => vec![Touched::Everything],
        Command::RecordVolume { .. } | Command::VolumeRemovedFrom { .. } => Vec::new(),
        // A one-shot start hook lets the instance's container be made.
        Command::StartHookRan { instance, .. } => vec![Touched::Instance {
            id: instance.clone(),
            service: None,
        }],
        // A verdict lets a held rollout go on (or says it failed).
        Command::RecordTestVerdict {
            namespace,
            service: name,
            ..
        } => vec![service(namespace, name)],
        Command::RequestBackup { id, .. } | Command::RequestRestore { id, .. } => {
            vec![Touched::HookJob(id.clone())]
        }
        // Their archives are kept from the start; the keepers' controller
        // looks again on its own period.
        Command::FinishBackup { .. }
        | Command::FinishRestore { .. }
        | Command::RemoveBackup { .. }
        | Command::SetBackupKeepers { .. } => Vec::new(),
        Command::PlaceInstance {
            namespace,
            service: name,
            ..
        }
        | Command::PlaceSlot {
            namespace,
            service: name,
            ..
        } => match outcome {
            Outcome::Instance(instance) => vec![Touched::Instance {
                id: instance.id.clone(),
                service: Some((namespace.clone(), name.clone())),
            }],
            _ => vec![service(namespace, name)],
        },
        Command::SetInstanceStatus { id, .. } => vec![Touched::Instance {
            id: id.clone(),
            service: match outcome {
                Outcome::Instance(instance) => {
                    Some((instance.namespace.clone(), instance.service.clone()))
                }
                _ => None,
            },
        }],
        Command::RemoveInstance { id, .. } => vec![Touched::Instance {
            id: id.clone(),
            service: None,
        }],
        Command::PutNode { name, .. }
        | Command::DeleteNode { name }
        | Command::SetNodeDraining { name, .. }
        | Command::SetNodeState { name, .. }
        | Command::RemoveNode { name, .. } => vec![Touched::Node(name.clone())],
        Command::PutManager { .. }
        | Command::RemoveManager { .. }
        | Command::PutManagerTemplateJson { .. }
        | Command::PutManagerTemplate { .. } => vec![Touched::Managers],
        Command::PinImage {
            namespace,
            service: name,
            ..
        } => vec![service(namespace, name)],
        Command::PutStoredImage { .. }
        | Command::SetImageHolders { .. }
        | Command::RemoveStoredImage { .. }
        | Command::SetImageKeepers { .. }
        | Command::PutRegistryLogin { .. }
        | Command::RemoveRegistryLogin { .. } => vec![Touched::Images],
        Command::ImageOnNode { .. } => Vec::new(),
        Command::PutTemplate { .. } | Command::RemoveTemplate { .. } => Vec::new(),
        Command::KvPut { .. }
        | Command::KvDelete { .. }
        | Command::KvAcquire { .. }
        | Command::KvRelease { .. }
        | Command::KvTxn { .. }
        | Command::CreateSession { .. }
        | Command::RenewSession { .. }
        | Command::DestroySession { .. }
        | Command::RecordEvent { .. }
        | Command::PutToken { .. }
        | Command::PutLimitedToken { .. }
        | Command::RevokeToken { .. }
        | Command::BootstrapToken { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::limits::Limits;

    fn put_service(name: &str) -> Command {
        Command::PutService {
            namespace: "ns".into(),
            name: name.into(),
            spec: serde_json::from_value(serde_json::json!({"image": "echo"})).unwrap(),
            expected_version: None,
        }
    }

    #[test]
    fn a_kv_write_touches_nothing() {
        let put = Command::KvPut {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
            cas: None,
        };
        assert!(touched(&put, &Outcome::Kv(true)).is_empty());
        let delete = Command::KvDelete {
            key: "k".into(),
            cas: None,
            recurse: true,
        };
        assert!(touched(&delete, &Outcome::Kv(true)).is_empty());
        let event = Command::RecordEvent {
            kind: "x".into(),
            subject: "y".into(),
            message: "z".into(),
        };
        assert!(touched(&event, &Outcome::Done).is_empty());
    }

    #[test]
    fn a_service_change_touches_that_service_only() {
        assert_eq!(
            touched(&put_service("web"), &Outcome::Done),
            vec![service("ns", "web")]
        );
        let limited = Command::WithLimits {
            limits: Limits::default(),
            command: Box::new(put_service("db")),
        };
        assert_eq!(touched(&limited, &Outcome::Done), vec![service("ns", "db")]);
        let scale = Command::ScaleService {
            namespace: "ns".into(),
            name: "web".into(),
            replicas: 3,
        };
        assert_eq!(
            touched(&scale, &Outcome::NotFound),
            Vec::new(),
            "a failed command changed nothing"
        );
    }

    #[test]
    fn nodes_instances_and_managers_name_themselves() {
        let down = Command::SetNodeState {
            name: "n1".into(),
            state: crate::state::NodeState::Down,
            reason: "gone".into(),
        };
        assert_eq!(
            touched(&down, &Outcome::Done),
            vec![Touched::Node("n1".into())]
        );
        let removed = Command::RemoveInstance {
            id: "ns.web.0".into(),
            generation: 2,
        };
        assert_eq!(
            touched(&removed, &Outcome::Deleted),
            vec![Touched::Instance {
                id: "ns.web.0".into(),
                service: None
            }]
        );
        let template = Command::PutManagerTemplateJson { json: "{}".into() };
        assert_eq!(touched(&template, &Outcome::Done), vec![Touched::Managers]);
        let init = Command::InitCluster {
            cluster_id: "c".into(),
        };
        assert_eq!(touched(&init, &Outcome::Done), vec![Touched::Everything]);
    }
}
