//! The JSON shapes of the `/v1` API that are not model types: requests and
//! answers of the cluster, service, node, KV and token endpoints and the
//! one error body. The API serves them, and the client, the CLI and the
//! failure harness (`jepsen/`) read them, so both sides share one
//! definition. Plain serde types over [`crate::state`]: this module never
//! imports a web framework, a replica or an engine.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::state::{
    Event, ExitInfo, Instance, Role, RunState, ServiceSpec, TokenLimits, TokenRecord,
};

/// Every error answer: `{"error": "...", "code": "..."}`, and the current
/// version on a 412 `version_mismatch`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// `GET /v1/health`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `removed` (taken out of the cluster) or `failed`.
    pub status: String,
    pub id: u64,
    /// Why a replica is not `ok` (e.g. removed from the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One member as `GET /v1/cluster` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, utoipa::ToSchema)]
pub struct MemberStatus {
    pub id: u64,
    pub api_addr: String,
    pub peer_addr: String,
    pub voter: bool,
    /// Milliseconds since this replica last exchanged a Raft message with
    /// the member (known on the leader).
    pub last_contact_ms: Option<u64>,
    /// When the member's certificate expires (RFC 3339): this replica's
    /// own, or the one the member last presented to it; `null` while none
    /// was seen (or without TLS).
    #[serde(default)]
    pub certificate_expires: Option<String>,
    /// The peer protocol the member speaks: this replica's own, or the one
    /// the member announced to it within the last 5 s (known on the leader
    /// for every member that answers); `null` otherwise.
    #[serde(default)]
    pub protocol: Option<u32>,
}

/// `GET /v1/cluster`.
#[derive(Serialize, Deserialize, Debug, Clone, utoipa::ToSchema)]
pub struct ClusterStatus {
    pub this_id: u64,
    pub cluster_id: Option<String>,
    /// The peer protocol every replica may rely on: the leader raises it
    /// once every member speaks a newer one, and it never goes down.
    #[serde(default = "initial_cluster_version")]
    pub cluster_version: u32,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub state: String,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Log entries this replica holds but has not applied yet: how far its
    /// `?stale` reads and DNS answers may trail its log.
    pub apply_lag: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberStatus>,
    pub data_dir: String,
    /// When the leader's supervision last made progress (every reconcile
    /// loop completed a round since), RFC 3339 on this replica's clock;
    /// `null` while unknown (no leader, supervisor off, nothing heard from
    /// this leader yet). A new leader counts from its election.
    #[serde(default)]
    pub leader_last_progress: Option<String>,
    /// How many milliseconds ago that was.
    #[serde(default)]
    pub leader_progress_ms_ago: Option<u64>,
    /// This replica's `[supervisor] stall_after_ms`; `null` when its
    /// watchdog is off.
    #[serde(default)]
    pub stall_after_ms: Option<u64>,
    /// On the leader: milliseconds since a quorum of every voting
    /// configuration last accepted it (its lease is younger than
    /// `lease_ms`); `null` on followers and before any quorum answered.
    #[serde(default)]
    pub quorum_contact_ms: Option<u64>,
    /// How long quorum contact is trusted: the leader acts on engines only
    /// while `quorum_contact_ms` is below it, and pauses its supervisor
    /// beyond it.
    #[serde(default)]
    pub lease_ms: u64,
}

impl ClusterStatus {
    /// The ids of the voting members, as the replica lists them.
    pub fn voter_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    }
}

/// What a replica that does not report a cluster version (0.1.0) is at.
fn initial_cluster_version() -> u32 {
    crate::state::version::INITIAL_CLUSTER_VERSION
}

/// `POST /v1/cluster/members` body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub id: u64,
    pub api_addr: String,
    pub peer_addr: String,
    /// `false`: join as a learner only (promote later by adding it again
    /// with `true`). Default `true`.
    #[serde(default = "default_voter")]
    pub voter: bool,
}

fn default_voter() -> bool {
    true
}

/// Answer of a membership change: the log index it committed at.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
pub struct MembershipChanged {
    pub index: u64,
}

/// `POST /v1/services/{ns}/{name}/scale` body.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    pub replicas: u32,
}

/// `POST /v1/services/{ns}/{name}/rollback` body.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version to go back to (`service history`); the one before the
    /// newest if none.
    #[serde(default)]
    pub to: Option<u64>,
    /// Compare-and-set: the service's current version.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// One version of a service's spec (`GET /v1/services/{ns}/{name}/history`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revision {
    /// The service version it was written as.
    pub version: u64,
    pub at_ms: u64,
    /// `deploy`, `rollback` (a user went back to `to`) or `revert` (the
    /// rollout of `from` failed, for `reason`, and went back to `to`).
    pub cause: String,
    #[serde(default)]
    pub from: Option<u64>,
    #[serde(default)]
    pub to: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The spec's image reference.
    pub image: String,
    /// What it resolved to, once it did.
    #[serde(default)]
    pub pin: Option<String>,
    /// When its rollout finished, if it did.
    #[serde(default)]
    pub settled_ms: Option<u64>,
    /// The name of the token that wrote it, when a user did.
    #[serde(default)]
    pub actor: Option<String>,
    /// The version deployed now.
    pub current: bool,
    /// The spec (secret values shown as `<redacted>`).
    pub spec: ServiceSpec,
}

/// `GET /v1/services/{ns}/{name}/report`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceReport {
    pub service: String,
    pub version: u64,
    pub run_state: RunState,
    pub desired: u32,
    pub running: u32,
    pub unhealthy: u32,
    pub crash_looping: u32,
    pub pending: u32,
    /// Instances waiting for their image to be fetched onto their node.
    #[serde(default)]
    pub pulling: u32,
    /// Instances whose image could not be fetched (retried with backoff).
    #[serde(default)]
    pub pull_failed: u32,
    /// Instances whose slot waits for its node (its local volumes are there).
    #[serde(default)]
    pub waiting: u32,
    /// The image the current version runs: the tag's digest once resolved.
    #[serde(default)]
    pub image: Option<String>,
    pub restarts: u64,
    /// Instances still on an older template than the service's.
    pub outdated: u32,
    /// Why a rolling update is not progressing, if it is paused (or failed
    /// its test hook).
    pub rollout_paused: Option<String>,
    /// The current version's test hook: `none` (the spec has none),
    /// `pending`, `passed` or `failed`.
    #[serde(default = "no_test")]
    pub test: String,
    /// The newest version is a revert: the rollout of `from` failed and
    /// the service went back by itself.
    #[serde(default)]
    pub reverted: Option<Reverted>,
    /// A failure of the newest version's rollout makes the service go
    /// back by itself (`update.on_failure = "revert"` and an earlier
    /// version that rolled out): a failure is not where it ends.
    #[serde(default)]
    pub revert_armed: bool,
    /// The newest version is a canary deploy waiting for `service promote`
    /// (or `service abort`).
    #[serde(default)]
    pub canary: Option<Canary>,
    pub instances: Vec<Instance>,
    /// `[instance id, exit]` pairs.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub last_exits: Vec<(String, ExitInfo)>,
    pub recent_events: Vec<Event>,
}

/// A canary deploy waiting, in a service's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    /// Instances of the new version it runs before it is promoted.
    pub wanted: u32,
    /// Instances of the new version running now.
    pub running: u32,
}

/// An automatic revert, in a service's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reverted {
    /// The version whose rollout failed.
    pub from: u64,
    /// The version it went back to.
    pub to: u64,
    pub reason: String,
}

fn no_test() -> String {
    "none".to_string()
}

/// `POST /v1/nodes/{name}/drain` body (optional).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    #[serde(default)]
    pub cancel: bool,
}

/// One KV entry as Consul shows it (`GET /v1/kv/{key}`); `value` is the
/// base64 of the bytes, absent for an empty value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulEntry<'a> {
    #[serde(default)]
    pub lock_index: u64,
    #[schema(value_type = String)]
    pub key: Cow<'a, str>,
    pub flags: u64,
    pub value: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// The session holding the key's lock, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub session: Option<Cow<'a, str>>,
}

/// A token as `GET /v1/tokens` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_ms: u64,
    pub create_index: u64,
    /// The namespaces a limited token reaches; absent for a token that
    /// reaches the whole cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// The KV prefixes a limited token reaches; absent for a token that
    /// reaches the whole cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_prefixes: Option<Vec<String>>,
}

impl TokenInfo {
    pub fn new(record: &TokenRecord, limits: Option<&TokenLimits>) -> TokenInfo {
        TokenInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            role: record.role,
            created_ms: record.created_ms,
            create_index: record.create_index,
            namespaces: limits.map(|l| l.namespaces.clone()),
            kv_prefixes: limits.map(|l| l.kv_prefixes.clone()),
        }
    }
}

/// `POST /v1/tokens` body. `namespaces` and `kv_prefixes` make a limited
/// token; `kv_prefixes` defaults to `<namespace>/` for each namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub role: Role,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_prefixes: Option<Vec<String>>,
}

impl CreateToken {
    /// A token of `role` named `name` that reaches the whole cluster.
    pub fn new(role: Role, name: &str) -> CreateToken {
        CreateToken {
            role,
            name: name.into(),
            namespaces: None,
            kv_prefixes: None,
        }
    }

    /// The limits this body asks for (sorted, without duplicates), or
    /// `None` for a token that reaches the whole cluster.
    pub fn limits(&self) -> Option<TokenLimits> {
        if self.namespaces.is_none() && self.kv_prefixes.is_none() {
            return None;
        }
        let sorted = |list: Vec<String>| {
            let set: std::collections::BTreeSet<String> = list.into_iter().collect();
            set.into_iter().collect::<Vec<_>>()
        };
        let namespaces = sorted(self.namespaces.clone().unwrap_or_default());
        let kv_prefixes = match &self.kv_prefixes {
            Some(prefixes) => sorted(prefixes.clone()),
            None => sorted(namespaces.iter().map(|n| format!("{n}/")).collect()),
        };
        Some(TokenLimits {
            namespaces,
            kv_prefixes,
        })
    }
}

/// `POST /v1/tokens` answer: the token, once, and its public record.
#[derive(Serialize, Deserialize, Debug, Clone, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// One image as `GET /v1/images` lists it: one the cluster keeps
/// (imported or built), or one it pulled from a registry onto nodes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImageEntry {
    /// `name:tag` of a kept image; `repository@sha256:…` of a pulled one.
    pub name: String,
    /// The image id of a kept image, the registry digest of a pulled one.
    pub digest: String,
    /// Bytes of a kept image's archive (unknown for a pulled one).
    pub size: Option<u64>,
    /// `import`, `build` or `registry`.
    pub source: String,
    /// Nodes that hold it.
    pub nodes: Vec<String>,
    /// Managers that keep its archive (kept images only).
    pub managers: Vec<u64>,
}

/// One slot's volume as `GET /v1/volumes` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct VolumeEntry {
    /// The Docker volume's name, `rv-<cluster>-<ns>.<service>.<slot>-<volume>`.
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub slot: u32,
    /// The volume's name in the service's spec.
    pub volume: String,
    pub driver: String,
    /// Nodes whose engine holds it.
    pub nodes: Vec<String>,
    pub created_ms: u64,
    /// `in-use` (a slot of its service mounts it), `kept` (its service or
    /// slot is gone: `volume rm` removes it) or `removing`.
    pub state: String,
}

/// `PUT /v1/registries/{host}` body: the account raftvisor pulls with.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryLoginBody {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLoginBody")
            .field("username", &self.username)
            .field("password", &crate::secrets::REDACTED)
            .finish()
    }
}

/// A registry login as `GET /v1/registries` shows it: never the password.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct RegistryInfo {
    pub host: String,
    pub username: String,
    /// Raft index of the last change.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consul_entry_reads_back_what_the_api_writes() {
        let written = ConsulEntry {
            lock_index: 0,
            key: Cow::Borrowed("app/x"),
            flags: 7,
            value: Some("aGk=".into()),
            create_index: 3,
            modify_index: 5,
            session: Some(Cow::Borrowed("0b5e4f6a-1")),
        };
        let json = serde_json::to_value(&written).unwrap();
        assert_eq!(json["Key"], "app/x");
        assert_eq!(json["ModifyIndex"], 5);
        let read: ConsulEntry = serde_json::from_value(json).unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn an_error_body_has_no_version_unless_one_is_known() {
        let body = ErrorBody {
            error: "no".into(),
            code: "invalid".into(),
            current_version: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"no","code":"invalid"}"#
        );
    }
}

/// A backup as `GET /v1/backups/{id}` and a service's list show it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct BackupEntry {
    pub id: String,
    pub namespace: String,
    pub service: String,
    /// The version of the service's spec when it was asked for.
    pub version: u64,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    pub created_ms: u64,
    /// When it ended (0 while running).
    pub finished_ms: u64,
    /// Each slot's artifact: its SHA-256 and size.
    pub slots: Vec<crate::state::hooks::SlotBackup>,
    /// The bytes of every slot's artifact.
    pub bytes: u64,
    /// The managers (Raft ids) that keep its artifacts.
    pub keepers: Vec<u64>,
}

impl From<&crate::state::hooks::BackupRecord> for BackupEntry {
    fn from(record: &crate::state::hooks::BackupRecord) -> BackupEntry {
        let (state, reason) = record.state.describe();
        BackupEntry {
            id: record.id.clone(),
            namespace: record.namespace.clone(),
            service: record.service.clone(),
            version: record.version,
            state: state.to_string(),
            reason: reason.map(str::to_string),
            created_ms: record.created_ms,
            finished_ms: record.finished_ms,
            slots: record.slots.clone(),
            bytes: record.slots.iter().map(|s| s.bytes).sum(),
            keepers: record.keepers.iter().copied().collect(),
        }
    }
}

/// A restore as `GET /v1/restores/{id}` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct RestoreEntry {
    pub id: String,
    pub namespace: String,
    pub service: String,
    /// The backup whose artifacts it feeds to the same slots.
    pub backup: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub reason: Option<String>,
    pub created_ms: u64,
    pub finished_ms: u64,
}

impl From<&crate::state::hooks::RestoreRecord> for RestoreEntry {
    fn from(record: &crate::state::hooks::RestoreRecord) -> RestoreEntry {
        let (state, reason) = record.state.describe();
        RestoreEntry {
            id: record.id.clone(),
            namespace: record.namespace.clone(),
            service: record.service.clone(),
            backup: record.backup.clone(),
            state: state.to_string(),
            reason: reason.map(str::to_string),
            created_ms: record.created_ms,
            finished_ms: record.finished_ms,
        }
    }
}

/// `POST /v1/services/{namespace}/{name}/restore` body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The id of a finished backup (of this service or another with the
    /// same slots): slot N's artifact goes to slot N's restore hook.
    pub from: String,
}

/// A template the cluster keeps (`GET /v1/templates`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct TemplateEntry {
    pub name: String,
    pub description: String,
    /// The members' image.
    pub image: String,
    pub added_ms: u64,
    /// The TOML text as it was added.
    pub text: String,
}

impl TemplateEntry {
    /// The entry of `record`, read through its parsed template.
    pub fn of(record: &crate::state::templates::TemplateRecord) -> TemplateEntry {
        let parsed = crate::state::templates::Template::parse(&record.text).ok();
        TemplateEntry {
            name: record.name.clone(),
            description: parsed
                .as_ref()
                .map(|t| t.description.clone())
                .unwrap_or_default(),
            image: parsed.map(|t| t.image).unwrap_or_default(),
            added_ms: record.added_ms,
            text: record.text.clone(),
        }
    }
}

/// `PUT /v1/releases/{name}` body: a blue-green release.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// The entry service's name, the same in both environments.
    pub entry: String,
    /// The blue environment's namespace.
    pub blue: String,
    /// The green environment's namespace.
    pub green: String,
    /// `blue` (default) or `green`: the environment live at first.
    #[serde(default)]
    pub live: Option<String>,
}

/// `POST /v1/releases/{name}/switch` body (all optional: by default the
/// idle environment goes live).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    /// `blue` or `green`: exactly this environment (nothing changes if it is live).
    #[serde(default)]
    pub to: Option<String>,
    /// Back to the environment live before the latest switch.
    #[serde(default)]
    pub back: bool,
    /// Switch even when the entry has no running instance there.
    #[serde(default)]
    pub force: bool,
    /// Compare-and-set: the release's current version.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// One environment of a release, as the state shows it now.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReleaseEnvironment {
    /// `blue` or `green`.
    pub color: String,
    pub namespace: String,
    /// Running instances of the entry service there.
    pub entry_running: u32,
    /// The entry service's spec version there, if it exists.
    #[serde(default)]
    pub entry_version: Option<u64>,
    /// The entry service's image there, if it exists.
    #[serde(default)]
    pub entry_image: Option<String>,
    /// Services in the namespace.
    pub services: u32,
}

/// One cutover of a release.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReleaseSwitch {
    /// The Raft index of the switch.
    pub index: u64,
    pub from: String,
    pub to: String,
    pub at_ms: u64,
    /// The name of the token that switched it.
    #[serde(default)]
    pub actor: Option<String>,
    pub back: bool,
}

/// `GET /v1/releases/{name}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReleaseView {
    pub name: String,
    pub entry: String,
    /// `blue` or `green`.
    pub live: String,
    /// The release's DNS name (answers as the live environment's entry).
    pub dns_name: String,
    /// The Raft index of its last change.
    pub version: u64,
    pub created_ms: u64,
    pub blue: ReleaseEnvironment,
    pub green: ReleaseEnvironment,
    /// The latest switches, oldest first.
    pub switches: Vec<ReleaseSwitch>,
}

impl ReleaseView {
    /// What `state` shows of `release`; `domain` is the cluster's DNS domain.
    pub fn of(
        state: &crate::state::State,
        release: &crate::state::releases::Release,
        domain: &str,
    ) -> ReleaseView {
        use crate::state::releases::Color;
        let environment = |color: Color| {
            let namespace = release.namespace(color);
            let entry = state
                .services
                .get(&(namespace.to_string(), release.entry.clone()));
            ReleaseEnvironment {
                color: color.as_str().to_string(),
                namespace: namespace.to_string(),
                entry_running: state
                    .service_instances(namespace, &release.entry)
                    .iter()
                    .filter(|i| i.state == crate::state::InstanceState::Running)
                    .count() as u32,
                entry_version: entry.map(|s| s.version),
                entry_image: entry.map(|s| s.spec.image.clone()),
                services: state
                    .services
                    .keys()
                    .filter(|(ns, _)| ns == namespace)
                    .count() as u32,
            }
        };
        ReleaseView {
            name: release.name.clone(),
            entry: release.entry.clone(),
            live: release.live.as_str().to_string(),
            dns_name: format!("{}.release.{domain}", release.name),
            version: release.version,
            created_ms: release.created_ms,
            blue: environment(Color::Blue),
            green: environment(Color::Green),
            switches: release
                .switches
                .iter()
                .map(|s| ReleaseSwitch {
                    index: s.index,
                    from: s.from.as_str().to_string(),
                    to: s.to.as_str().to_string(),
                    at_ms: s.at_ms,
                    actor: s.actor.as_ref().map(|a| a.token_name.clone()),
                    back: s.back,
                })
                .collect(),
        }
    }
}

/// `POST /v1/namespaces/{ns}/clone` body.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    /// The new namespace (it must have no services).
    pub to: String,
    /// Services not duplicated: the new namespace gets an external
    /// service whose hostname is the original's DNS name.
    #[serde(default)]
    pub share: Vec<String>,
}

/// One kept version of a named topology (`GET /v1/topologies/{name}`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct TopologyEntry {
    pub name: String,
    /// The Raft index it was saved at.
    pub version: u64,
    pub at_ms: u64,
    /// The name of the token that saved it.
    #[serde(default)]
    pub actor: Option<String>,
    /// The namespace it was exported from, if it was.
    #[serde(default)]
    pub source: Option<String>,
    /// Its services, in deploy order.
    pub services: Vec<String>,
    /// The topology itself (secret values are never kept); left out of lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<crate::state::topology::Topology>,
}

impl TopologyEntry {
    pub fn of(
        name: &str,
        version: &crate::state::topology::TopologyVersion,
        with_topology: bool,
    ) -> TopologyEntry {
        TopologyEntry {
            name: name.to_string(),
            version: version.version,
            at_ms: version.at_ms,
            actor: version.actor.as_ref().map(|a| a.token_name.clone()),
            source: version.topology.source.clone(),
            services: version
                .topology
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            topology: with_topology.then(|| version.topology.clone()),
        }
    }
}

/// `PUT /v1/pipelines/{name}` body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    pub spec: crate::state::pipelines::PipelineSpec,
    /// The webhook's HMAC key (GitHub's `X-Hub-Signature-256`), in clear;
    /// sealed before it is stored. Left out: the current key is kept.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A pipeline and its latest runs (`GET /v1/pipelines/{name}`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct PipelineView {
    pub name: String,
    pub spec: crate::state::pipelines::PipelineSpec,
    /// Whether runs may be started by a signed webhook (a key is set).
    pub signed: bool,
    pub version: u64,
    pub created_ms: u64,
    /// Oldest first.
    pub runs: Vec<crate::state::pipelines::Run>,
}

impl PipelineView {
    pub fn of(pipeline: &crate::state::pipelines::Pipeline) -> PipelineView {
        PipelineView {
            name: pipeline.name.clone(),
            spec: pipeline.spec.clone(),
            signed: pipeline.secret.is_some(),
            version: pipeline.version,
            created_ms: pipeline.created_ms,
            runs: pipeline.runs.clone(),
        }
    }
}

/// `POST /v1/pipelines/{name}/runs` answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct RunStarted {
    pub pipeline: String,
    pub run: u64,
}
