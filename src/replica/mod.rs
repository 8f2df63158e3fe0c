//! One running replica: opens the stores, starts openraft, and offers the
//! operations the API needs — writes (proposed locally on the leader, or
//! forwarded to it), linearizable-read barriers (read-index), membership
//! changes — each bounded by the configured request timeout.
//!
//! A write gets its [`RequestId`] here, on the replica that first accepts
//! it, so forwarding it again after a lost answer cannot apply it twice.

pub mod actor;
pub mod archives;
pub mod builds;
pub mod elector;
pub mod first_token;
mod log_limit;
pub mod messages;
pub mod peer_identity;
pub mod peer_protocol;
pub mod peer_server;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::config::AgentConfig;
use crate::raft::lease::{Lease, Sticky};
use crate::raft::log_store::LogStore;
use crate::raft::log_store::LogStoreOptions;
use crate::raft::network::{paths, PeerCallError, PeerNetwork};
use crate::raft::sm_store::StateMachineStore;
use crate::raft::{NodeId, PeerNode, Raft, RaftMetrics, TypeConfig};
use crate::reconcile::watchdog::Watchdog;
use crate::state::version;
use crate::state::{Applied, Command, Request, RequestId};
use messages::{LeaderError, LeaderReply, LeaderRequest};
use writer::Writer;

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the raft log: {0}")]
    Log(String),
    #[error("cannot open the state machine: {0}")]
    StateMachine(#[from] crate::raft::sm_store::SmStoreError),
    #[error("raft configuration rejected: {0}")]
    RaftConfig(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
}

/// Why an operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The cluster could not be reached or did not commit in time; a write
    /// may or may not have been applied.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Rejected(String),
    /// This replica was removed from the cluster: ask a member instead.
    #[error("{0}")]
    NotMember(String),
    /// The leader has more writes queued than it accepts: retry later.
    #[error("{0}")]
    Overloaded(String),
}

/// Every so often, the archives no kept image or backup names any more
/// (removed images and backups, a keeper replaced) are deleted from this
/// manager's store.
async fn sweep_archives(replica: Arc<Replica>) {
    let mut tick = tokio::time::interval(ARCHIVE_SWEEP_EVERY);
    loop {
        tick.tick().await;
        let keep = replica.sm.read(crate::state::State::kept_archives);
        let store = replica.archives.clone();
        let removed = tokio::task::spawn_blocking(move || store.sweep(&keep, ARCHIVE_SWEEP_GRACE))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "archives no image or backup uses were deleted");
        }
    }
}

/// How often a manager looks for archives to delete.
const ARCHIVE_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// An archive younger than this is never deleted (its import may not be
/// recorded yet).
const ARCHIVE_SWEEP_GRACE: Duration = Duration::from_secs(3600);

/// Longest transfer of one image archive between managers.
pub const ARCHIVE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A running replica.
pub struct Replica {
    pub id: NodeId,
    pub config: AgentConfig,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub peers: PeerNetwork,
    /// The image archives this manager keeps.
    pub archives: archives::ArchiveStore,
    /// Image builds waiting for this replica's builder (while it leads).
    pub builds: builds::Builds,
    /// Seals and unseals services' secret env; `None` without a key file.
    pub secrets: Option<Arc<crate::secrets::SecretsKey>>,
    /// Set when the other members refuse this replica as a non-member:
    /// it was removed from the cluster and takes no part in Raft any more.
    removed: std::sync::OnceLock<String>,
    /// Supervision progress: this replica's while it leads, the leader's
    /// as heard while it follows.
    pub watchdog: Watchdog,
    writer: Writer,
    request_timeout: Duration,
    /// The replica's own tasks (elector, removal watch),
    /// ended by [`Replica::shutdown`].
    background: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Replica {
    /// Opens the stores under `config.data_dir` and starts Raft, talking to
    /// peers through `peers` (mutual TLS or plain, as the agent set it up).
    pub async fn start(
        config: AgentConfig,
        peers: PeerNetwork,
    ) -> Result<Arc<Replica>, StartError> {
        let secrets = match &config.secrets.key_file {
            Some(path) => Some(Arc::new(crate::secrets::SecretsKey::from_file(path)?)),
            None => None,
        };
        let raft_config = openraft::Config {
            cluster_name: "raftvisor".into(),
            heartbeat_interval: config.raft.heartbeat_ms,
            election_timeout_min: config.raft.election_min_ms,
            election_timeout_max: config.raft.election_max_ms,
            install_snapshot_timeout: 2_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                config.raft.snapshot_threshold,
            ),
            max_in_snapshot_log_to_keep: config.raft.keep_logs_after_snapshot,
            max_payload_entries: 64,
            // Elections start from the elector, after a pre-vote round.
            enable_elect: false,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StartError::RaftConfig(e.to_string()))?,
        );
        let log_dir = config.data_dir.join("log");
        let log_options = LogStoreOptions {
            segment_bytes: config.raft.log_segment_bytes,
        };
        let log_store = tokio::task::block_in_place(|| {
            LogStore::<TypeConfig>::open_with_options(&log_dir, log_options)
        })
        .map_err(|e| StartError::Log(e.to_string()))?;
        let sm = StateMachineStore::open(&config.data_dir.join("snapshots"))?;
        let watchdog = Watchdog::new(
            config.id,
            config
                .supervisor
                .enabled
                .then(|| Duration::from_millis(config.supervisor.stall_after_ms)),
        );
        let lease = Arc::new(Lease::new(
            Duration::from_millis(config.raft.election_max_ms),
            Instant::now(),
        ));
        let progress = watchdog.clone();
        let peers = peers
            .with_progress(Arc::new(move |term, now| progress.header_for(term, now)))
            .with_lease(lease);
        let raft = Raft::new(config.id, raft_config, peers.clone(), log_store, sm.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let writer = Writer::start(raft.clone());
        let config_data_dir = config.data_dir.clone();
        let replica = Arc::new(Replica {
            id: config.id,
            request_timeout: Duration::from_millis(config.api.request_timeout_ms),
            config,
            raft,
            sm,
            peers,
            secrets,
            archives: archives::ArchiveStore::new(&config_data_dir),
            builds: builds::Builds::default(),
            removed: std::sync::OnceLock::new(),
            watchdog,
            writer,
            background: Default::default(),
        });
        replica.initialize_if_first().await?;
        let background = [
            tokio::spawn(elector::run(replica.clone())),
            tokio::spawn(stop_when_removed(replica.clone())),
            tokio::spawn(sweep_archives(replica.clone())),
            tokio::spawn(count_leader_changes(replica.clone())),
        ];
        replica
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(background.iter().map(|task| task.abort_handle()));
        Ok(replica)
    }

    /// The lowest-id initial member forms the cluster when nothing is on
    /// disk yet; everyone else waits to be contacted.
    async fn initialize_if_first(&self) -> Result<(), StartError> {
        let Some(first) = self.config.members.iter().map(|m| m.id).min() else {
            return Ok(());
        };
        if first != self.id
            || self
                .raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        {
            return Ok(());
        }
        let members: BTreeMap<NodeId, PeerNode> = self
            .config
            .members
            .iter()
            .map(|m| (m.id, PeerNode::of_member(m)))
            .collect();
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialising a new cluster");
        if let Err(e) = self.raft.initialize(members).await {
            tracing::warn!(error = %e, "cluster initialisation refused");
        }
        Ok(())
    }

    /// Shuts Raft down and ends the replica's own tasks, so that nothing
    /// but its holders keeps it alive. Idempotent.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::debug!(error = %e, "raft shutdown");
        }
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// The latest Raft metrics of this replica.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader as this replica knows it.
    pub fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, node))
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The other members (voters and learners) with their peer addresses.
    pub fn other_members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.metrics();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| (*id, node.peer_addr.clone()))
            .collect()
    }

    /// Has one other member keep the archive `stored` as well: its id, or
    /// `None` when this replica is the only member. Tries every member.
    pub async fn keep_archive_elsewhere(
        &self,
        stored: &archives::Stored,
    ) -> Result<Option<NodeId>, String> {
        let others: Vec<NodeId> = self.other_members().into_iter().map(|(id, _)| id).collect();
        self.keep_archive_on(stored, &others).await
    }

    /// Has one of `candidates` (members other than this replica) keep the
    /// archive `stored`: its id, or `None` when there is no candidate.
    pub async fn keep_archive_on(
        &self,
        stored: &archives::Stored,
        candidates: &[NodeId],
    ) -> Result<Option<NodeId>, String> {
        let others: Vec<(NodeId, String)> = self
            .other_members()
            .into_iter()
            .filter(|(id, _)| candidates.contains(id))
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let mut reasons = Vec::new();
        for (id, addr) in others {
            match self
                .peers
                .push_archive(
                    &addr,
                    &stored.sha256,
                    &stored.path,
                    ARCHIVE_TRANSFER_TIMEOUT,
                )
                .await
            {
                Ok(()) => return Ok(Some(id)),
                Err(e) => reasons.push(format!("manager {id}: {e}")),
            }
        }
        Err(reasons.join("; "))
    }

    /// The local path of the archive `sha256`, fetched first from one of
    /// `keepers` when this manager does not keep it.
    pub async fn archive_from(
        &self,
        sha256: &str,
        keepers: &std::collections::BTreeSet<NodeId>,
    ) -> Result<std::path::PathBuf, String> {
        if let Some(path) = self.archives.path(sha256) {
            return Ok(path);
        }
        let members: std::collections::HashMap<NodeId, String> =
            self.other_members().into_iter().collect();
        let mut reasons = Vec::new();
        for keeper in keepers {
            let Some(addr) = members.get(keeper) else {
                reasons.push(format!("manager {keeper} is not a member"));
                continue;
            };
            let fetched = async {
                let stream = self
                    .peers
                    .fetch_archive(addr, sha256, ARCHIVE_TRANSFER_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                self.archives
                    .store(stream, archives::MAX_ARCHIVE_BYTES, Some(sha256))
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match fetched {
                Ok(stored) => return Ok(stored.path),
                Err(e) => reasons.push(format!("manager {keeper}: {e}")),
            }
        }
        Err(format!(
            "no manager that keeps archive {sha256} could send it ({})",
            reasons.join("; ")
        ))
    }

    /// Applies `command` through Raft from any replica.
    pub async fn write(&self, command: Command) -> Result<Applied, OpError> {
        let request = Request {
            id: RequestId::random(),
            time_ms: now_ms(),
            command: actor::attributed(command),
        };
        match self
            .to_leader(LeaderRequest::Write(Box::new(request)))
            .await?
        {
            LeaderReply::Applied(applied) => Ok(applied),
            other => Err(OpError::Unavailable(format!(
                "unexpected leader reply {other:?}"
            ))),
        }
    }

    /// [`Replica::write`], then waits until this replica has applied the
    /// write too, so a read of the local state after it sees what it did
    /// (a follower's copy trails the leader's commit).
    pub async fn write_and_apply(&self, command: Command) -> Result<Applied, OpError> {
        let applied = self.write(command).await?;
        if !self
            .sm
            .wait_applied(applied.index, self.request_timeout)
            .await
        {
            return Err(OpError::Unavailable(format!(
                "this replica has not applied index {} in time",
                applied.index
            )));
        }
        Ok(applied)
    }

    /// Applies `command` only if this replica is the leader now: the
    /// supervisor's writes must never be forwarded by a deposed leader.
    pub async fn write_as_leader(&self, command: Command) -> Result<Applied, OpError> {
        let request = Request {
            id: RequestId::random(),
            time_ms: now_ms(),
            command,
        };
        let reply = tokio::time::timeout(
            self.request_timeout,
            self.handle_leader_request(LeaderRequest::Write(Box::new(request))),
        )
        .await
        .map_err(|_| OpError::Unavailable("no quorum answered in time".into()))?;
        match reply {
            Ok(LeaderReply::Applied(applied)) => Ok(applied),
            Ok(other) => Err(OpError::Unavailable(format!(
                "unexpected leader reply {other:?}"
            ))),
            Err(LeaderError::Rejected(reason)) => Err(OpError::Rejected(reason)),
            Err(e) => Err(OpError::Unavailable(e.to_string())),
        }
    }

    /// Returns once this replica's state machine reflects every write
    /// committed before the call (read-index through the leader).
    pub async fn read_barrier(&self) -> Result<(), OpError> {
        // A known bug on purpose, for the failure harness to catch: answer
        // "linearizable" reads from this replica's state as it is.
        fail::fail_point!("read-index-local", |_| Ok(()));
        let deadline = Instant::now() + self.request_timeout;
        let index = match self.to_leader(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex(index) => index,
            other => {
                return Err(OpError::Unavailable(format!(
                    "unexpected leader reply {other:?}"
                )))
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if self.sm.wait_applied(index, remaining).await {
            Ok(())
        } else {
            Err(OpError::Unavailable(format!(
                "this replica did not apply up to the read index {index} within {:?}",
                self.request_timeout
            )))
        }
    }

    /// Adds a replica as a learner and, with `voter`, promotes it to voter
    /// once it has caught up. Adding a learner again with `voter` promotes it.
    pub async fn add_member(
        &self,
        id: NodeId,
        node: PeerNode,
        voter: bool,
    ) -> Result<u64, OpError> {
        match self
            .to_leader(LeaderRequest::AddMember { id, node, voter })
            .await?
        {
            LeaderReply::MembershipChanged { index } => Ok(index),
            other => Err(OpError::Unavailable(format!(
                "unexpected leader reply {other:?}"
            ))),
        }
    }

    /// Removes a replica from the voters and learners.
    pub async fn remove_member(&self, id: NodeId) -> Result<u64, OpError> {
        match self.to_leader(LeaderRequest::RemoveMember { id }).await? {
            LeaderReply::MembershipChanged { index } => Ok(index),
            other => Err(OpError::Unavailable(format!(
                "unexpected leader reply {other:?}"
            ))),
        }
    }

    /// Sends `request` to the leader (itself, or over the peer port),
    /// following leader changes until the request timeout.
    async fn to_leader(&self, request: LeaderRequest) -> Result<LeaderReply, OpError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut last_problem = String::from("no leader is known");
        loop {
            // A removed replica will never learn a leader again: say so at
            // once rather than after the whole request timeout.
            if let Some(reason) = self.removed() {
                return Err(OpError::NotMember(format!(
                    "this replica was removed from the cluster ({reason}): send requests to a member"
                )));
            }
            // Removed while it was up (a leader that removed itself, a
            // follower that saw its removal): its own membership says so.
            if self.outside_membership(self.id) {
                return Err(OpError::NotMember(format!(
                    "replica {} is not in the cluster's membership as it knows it: send requests to a member",
                    self.id
                )));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(OpError::Unavailable(format!(
                    "the cluster did not answer within {:?}: {last_problem} (a write may or may not have been applied)",
                    self.request_timeout
                )));
            }
            let Some((leader, node)) = self.leader() else {
                self.wait_for_metrics_change(remaining.min(Duration::from_millis(50)))
                    .await;
                continue;
            };
            let result = if leader == self.id {
                tokio::time::timeout(remaining, self.handle_leader_request(request.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LeaderError::Unavailable(
                            "no quorum answered in time".into(),
                        ))
                    })
            } else {
                match self
                    .peers
                    .call::<_, Result<LeaderReply, LeaderError>>(
                        &node.peer_addr,
                        paths::LEADER,
                        &request,
                        remaining,
                    )
                    .await
                {
                    Ok(reply) => reply,
                    Err(PeerCallError::Timeout { .. }) => Err(LeaderError::Unavailable(format!(
                        "leader {leader} did not answer in time"
                    ))),
                    Err(e) => {
                        last_problem = e.to_string();
                        tokio::time::sleep(remaining.min(Duration::from_millis(20))).await;
                        continue;
                    }
                }
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(LeaderError::Rejected(reason)) => return Err(OpError::Rejected(reason)),
                Err(LeaderError::Overloaded(reason)) => return Err(OpError::Overloaded(reason)),
                Err(LeaderError::NotLeader { leader: hint }) => {
                    last_problem = format!("leader moved (now {hint:?})");
                    self.wait_for_metrics_change(remaining.min(Duration::from_millis(20)))
                        .await;
                }
                Err(LeaderError::Unavailable(reason)) => last_problem = reason,
            }
        }
    }

    async fn wait_for_metrics_change(&self, at_most: Duration) {
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(at_most, metrics.changed()).await;
    }

    /// Performs a leader operation here; fails with `NotLeader` elsewhere.
    pub async fn handle_leader_request(
        &self,
        request: LeaderRequest,
    ) -> Result<LeaderReply, LeaderError> {
        match request {
            LeaderRequest::Write(request) => {
                let request = self.under_limits(*request);
                self.writer.write(request).await.map(LeaderReply::Applied)
            }
            LeaderRequest::ReadIndex => {
                let (read_log_id, _applied) = self
                    .raft
                    .get_read_log_id()
                    .await
                    .map_err(map_check_leader_error)?;
                Ok(LeaderReply::ReadIndex(read_log_id.map_or(0, |l| l.index)))
            }
            LeaderRequest::AddMember { id, node, voter } => {
                self.add_member_here(id, node, voter).await
            }
            LeaderRequest::RemoveMember { id } => self.remove_member_here(id).await,
        }
    }

    /// Puts a write that can grow the state under this leader's limits
    /// ([`Command::WithLimits`]), so every replica checks the same quotas;
    /// limits a forwarding replica put there are replaced.
    fn under_limits(&self, mut request: Request) -> Request {
        let (actor, command) = match request.command {
            Command::As { actor, command } => (Some(actor), *command),
            command => (None, command),
        };
        let command = match command {
            Command::WithLimits { command, .. } => *command,
            command => command,
        };
        let limited = match command {
            Command::PutService { .. }
            | Command::ScaleService { .. }
            | Command::PutNode { .. }
            | Command::KvPut { .. }
            | Command::KvAcquire { .. }
            | Command::KvRelease { .. }
            | Command::KvTxn { .. } => Command::WithLimits {
                limits: self.config.limits.clone(),
                command: Box::new(command),
            },
            command => command,
        };
        request.command = match actor {
            Some(actor) => Command::As {
                actor,
                command: Box::new(limited),
            },
            None => limited,
        };
        request
    }

    async fn add_member_here(
        &self,
        id: NodeId,
        node: PeerNode,
        voter: bool,
    ) -> Result<LeaderReply, LeaderError> {
        self.ensure_leader()?;
        let voters = self.voters();
        if voters.contains(&id) {
            return Err(LeaderError::Rejected(format!(
                "replica {id} is already a voting member"
            )));
        }
        // Blocks until the learner has caught up with the leader's log.
        let mut response = self
            .raft
            .add_learner(id, node.clone(), true)
            .await
            .map_err(writer::map_raft_write_error)?;
        if voter {
            let mut new_voters = voters;
            new_voters.insert(id);
            response = self
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false)
                .await
                .map_err(writer::map_raft_write_error)?;
        }
        let request = Request {
            id: RequestId::random(),
            time_ms: now_ms(),
            command: Command::PutManager {
                raft_id: id,
                peer_addr: node.peer_addr,
                api_addr: node.api_addr,
            },
        };
        self.writer.write(request).await?;
        Ok(LeaderReply::MembershipChanged {
            index: response.log_id.index,
        })
    }

    async fn remove_member_here(&self, id: NodeId) -> Result<LeaderReply, LeaderError> {
        self.ensure_leader()?;
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters = self.voters();
        let is_learner = membership.learner_ids().any(|l| l == id);
        if !voters.contains(&id) && !is_learner {
            return Err(LeaderError::Rejected(format!(
                "replica {id} is not a member"
            )));
        }
        if voters.contains(&id) && voters.len() == 1 {
            return Err(LeaderError::Rejected(
                "cannot remove the last voting member".into(),
            ));
        }
        let change = if voters.contains(&id) {
            let mut remaining = voters;
            remaining.remove(&id);
            ChangeMembers::ReplaceAllVoters(remaining)
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let response = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(writer::map_raft_write_error)?;
        let request = Request {
            id: RequestId::random(),
            time_ms: now_ms(),
            command: Command::RemoveManager { raft_id: id },
        };
        // Best effort: a leader that just removed itself can no longer write.
        if let Err(e) = self.writer.write(request).await {
            tracing::warn!(error = %e, member = id, "member removed but its manager record was not");
        }
        Ok(LeaderReply::MembershipChanged {
            index: response.log_id.index,
        })
    }

    fn ensure_leader(&self) -> Result<(), LeaderError> {
        let metrics = self.metrics();
        if metrics.state == ServerState::Leader {
            Ok(())
        } else {
            Err(LeaderError::NotLeader {
                leader: metrics.current_leader,
            })
        }
    }

    /// Whether node `id` is outside this replica's membership. A replica
    /// that knows no membership yet (waiting to be added) leaves nobody out.
    pub fn outside_membership(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.nodes().next().is_some() && membership.get_node(&id).is_none()
    }

    /// While this replica leads: how long ago a quorum of every voting
    /// configuration last accepted it (`None` inside when none has in
    /// this term yet). `None` when it does not lead.
    pub fn quorum_contact(&self) -> Option<Option<Duration>> {
        let now = Instant::now();
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return None;
        }
        let configs = metrics.membership_config.membership().get_joint_config();
        Some(
            self.peers
                .lease()
                .quorum_acked_at(self.id, metrics.current_term, configs, now)
                .map(|at| now.saturating_duration_since(at)),
        )
    }

    /// Whether this replica leads with quorum contact younger than the
    /// lease: no other leader can exist now, so it may act on engines.
    pub fn holds_lease(&self) -> bool {
        matches!(self.quorum_contact(), Some(Some(age)) if age < self.peers.lease().duration())
    }

    /// Why a vote or pre-vote must be refused now without looking at the
    /// candidate (leader stickiness), if it must.
    pub fn vote_stickiness(&self) -> Option<Sticky> {
        self.peers
            .lease()
            .refuses_vote(self.quorum_contact(), Instant::now())
    }

    /// Current voting members.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }
}

fn map_check_leader_error(
    error: RaftError<NodeId, CheckIsLeaderError<NodeId, PeerNode>>,
) -> LeaderError {
    match error {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
            LeaderError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)) => {
            LeaderError::Unavailable(format!("no quorum: {e}"))
        }
        RaftError::Fatal(f) => LeaderError::Unavailable(format!("raft stopped: {f}")),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Leader-only upkeep of the replicated model: give the cluster its
/// identity and its bootstrap admin token, and keep a manager record for
/// every member.
/// Why this replica stopped taking part in Raft, if it did.
impl Replica {
    pub fn removed(&self) -> Option<&str> {
        self.removed.get().map(String::as_str)
    }
}

/// A replica removed from the cluster while it was dead or cut off does
/// not know it: it would campaign forever. Members refuse its messages
/// (see [`peer_server`]); once a majority of the voters it knows
/// refuse it, it shuts its Raft down and says why, keeping its data.
async fn stop_when_removed(replica: Arc<Replica>) {
    const REFUSAL_WINDOW: Duration = Duration::from_secs(5);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let voters: Vec<NodeId> = {
            let metrics = replica.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.membership().voter_ids().collect()
        };
        let refusing = replica
            .peers
            .refusing_peers(REFUSAL_WINDOW)
            .into_iter()
            .filter(|id| voters.contains(id))
            .count();
        if voters.is_empty() || refusing * 2 <= voters.len() {
            continue;
        }
        let why = format!(
            "removed from the cluster: {refusing} of the {} voters this replica knows refuse it as a non-member; \
             it no longer takes part in Raft (its data is kept; to rejoin, start it with a new id and an empty data directory)",
            voters.len()
        );
        tracing::error!("{why}");
        let _ = replica.removed.set(why);
        if let Err(e) = replica.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown after removal failed");
        }
        return;
    }
}

/// Counts leader changes this replica observed, from Raft's metrics.
pub async fn count_leader_changes(replica: Arc<Replica>) {
    let mut watch = replica.raft.metrics();
    let mut leader = watch.borrow().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow().current_leader;
        if now != leader {
            if now.is_some() {
                metrics::counter!("raftvisor_raft_leader_changes_total").increment(1);
            }
            leader = now;
        }
    }
}

/// Leader-only housekeeping (run by [`crate::reconcile::housekeeping`]):
/// the cluster has its id and its first admin token, and every member of
/// the membership is recorded as a manager with its current addresses.
/// `pending_token` carries a proposed first token across attempts.
pub async fn ensure_identity_and_managers(
    replica: &Replica,
    pending_token: &mut Option<first_token::Pending>,
) -> Result<(), OpError> {
    // Only act on a state that includes everything committed so far.
    replica.read_barrier().await?;
    if replica.sm.read(|s| s.cluster_id.is_none()) {
        let cluster_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        replica.write(Command::InitCluster { cluster_id }).await?;
    }
    first_token::ensure_first_token(replica, pending_token).await?;
    let metrics = replica.metrics();
    let nodes: Vec<(NodeId, PeerNode)> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    for (id, node) in nodes {
        let known = replica.sm.read(|s| {
            s.managers
                .get(&id)
                .is_some_and(|m| m.peer_addr == node.peer_addr && m.api_addr == node.api_addr)
        });
        if !known {
            replica
                .write(Command::PutManager {
                    raft_id: id,
                    peer_addr: node.peer_addr,
                    api_addr: node.api_addr,
                })
                .await?;
        }
    }
    Ok(())
}

/// Leader-only (run by [`crate::reconcile::housekeeping`]): raises the
/// cluster version to the lowest peer protocol among this replica and
/// every other member, once each has announced one within
/// [`version::ANNOUNCEMENT_FRESH_FOR`] (see [`crate::state::version`]).
/// Returns whether the cluster version is this build's protocol: nothing
/// left to raise.
pub async fn ensure_cluster_version(replica: &Replica) -> Result<bool, OpError> {
    let current = replica.sm.read(|s| s.cluster_version());
    if current >= version::PROTOCOL {
        return Ok(true);
    }
    let announced = replica.peers.announced();
    let members: Vec<(NodeId, Option<version::Announced>)> = replica
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != replica.id)
        .map(|id| (id, announced.get(&id).copied()))
        .collect();
    let Some(to) = version::raise_to(current, version::PROTOCOL, &members) else {
        return Ok(false);
    };
    replica
        .write(Command::SetClusterVersion { version: to })
        .await?;
    tracing::info!(
        from = current,
        to,
        "cluster version raised: every member speaks it"
    );
    Ok(to >= version::PROTOCOL)
}
