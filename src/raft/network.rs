//! The peer network client: openraft's `RaftNetwork` over HTTP on each
//! replica's `peer_addr`, plus the leader-operation call that followers use
//! to forward writes, read-index requests and membership changes.
//!
//! One pooled HTTP/1.1 client (keep-alive, TCP_NODELAY) is shared by every
//! peer connection. With TLS it presents this replica's manager
//! certificate and trusts only manager servers of the cluster CA (see
//! [`crate::tls`]); peer addresses stay plain `host:port` and the scheme
//! follows the local setting. Bodies are encoded by [`crate::codec`]. A peer that
//! refuses connections is reported `Unreachable`, which makes openraft back
//! off with [`PeerConnection::backoff`]'s growing delays instead of spinning.
//! The time of the last successful exchange with every peer is recorded,
//! because openraft 0.9's metrics do not expose per-follower ack times.
//! A leader's append-entries requests (heartbeats included) carry a
//! [`PROGRESS_HEADER`] whose value comes from the [`ProgressHook`] the
//! replica installs: consensus carries it without knowing what it says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lease::Lease;
use super::peer_certs::{CertExpiries, SENDER_HEADER};
use super::{NodeId, PeerNode, TypeConfig};
use crate::codec;
use crate::error_chain::error_chain;
use crate::state::version::{self, PROTOCOL, PROTOCOL_HEADER};

/// Paths of the peer endpoints, shared with the server side.
pub mod paths {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const LEADER: &str = "/raft/leader";
    pub const PREVOTE: &str = "/raft/prevote";
    /// `/raft/archive/{sha256}`: PUT stores an image archive, GET reads one.
    pub const ARCHIVE: &str = "/raft/archive";
}

/// Why a peer call failed at the transport level.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("peer {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("peer {addr} answered badly: {reason}")]
    BadReply { addr: String, reason: String },
    /// The peer does not count this replica among the cluster's members.
    #[error("peer {addr} refuses this replica: {reason}")]
    NotMember { addr: String, reason: String },
    /// The peer's body limit is below the request's size.
    #[error("peer {addr} refused the request as too large (HTTP 413)")]
    TooLarge { addr: String },
}

/// How long an idle pooled peer connection is kept; the peer server keeps
/// idle connections longer (see `crate::agent::PEER_IDLE_TIMEOUT`).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Start of the peer server's answer to a replica outside the membership.
pub const NOT_A_MEMBER: &str = "not a member";

/// Header of append-entries requests carrying the leader's supervision
/// progress, an opaque value to this module.
pub const PROGRESS_HEADER: &str = "x-raftvisor-leader-progress";

/// The [`PROGRESS_HEADER`] value for an append-entries request of a term
/// (the first argument) sent at an instant, or `None` to send none. The
/// replica installs it (see [`PeerNetwork::with_progress`]).
pub type ProgressHook = Arc<dyn Fn(u64, Instant) -> Option<String> + Send + Sync>;

/// The peer client (mutual TLS with `tls`, the agent's peer client
/// configuration, or plain HTTP) and its URL scheme.
fn client_of(tls: Option<&Arc<rustls::ClientConfig>>) -> (reqwest::Client, &'static str) {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(300))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(64)
        // The server's certificate, for its expiry (see CertExpiries).
        .tls_info(true);
    let scheme = match tls {
        Some(config) => {
            // Preconfigured: only the cluster CA as root, the client
            // certificate and the manager-role check on the server.
            // No session resumption: a resumed session carries on with the
            // certificates of the session it resumes, and after a rotation
            // every new peer connection must present and see the current
            // ones. Peer connections are pooled and long-lived, so a full
            // handshake each costs little.
            let mut config = (**config).clone();
            config.resumption = rustls::client::Resumption::disabled();
            builder = builder
                .tls_built_in_root_certs(false)
                .use_preconfigured_tls(config);
            "https"
        }
        None => "http",
    };
    let http = builder
        .build()
        .expect("the HTTP client configuration is static and valid");
    (http, scheme)
}

/// Shared HTTP client and per-peer contact times.
#[derive(Clone)]
pub struct PeerNetwork {
    /// Replaced by [`PeerNetwork::renew_connections`]: a new client is a
    /// new pool, so every peer connection is made again.
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    scheme: &'static str,
    last_contact: Arc<Mutex<HashMap<NodeId, Instant>>>,
    refused_as_non_member: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Source of the progress header on append-entries requests.
    progress: Option<ProgressHook>,
    /// This replica's Raft id, sent with every request (see
    /// `crate::replica::peer_identity`).
    sender: Option<NodeId>,
    /// Expiry of the certificates peers presented.
    pub cert_expiries: CertExpiries,
    /// The peer protocol each peer last announced, and when.
    protocols: Arc<Mutex<HashMap<NodeId, (u32, Instant)>>>,
    /// Where accepted appends are recorded for the leader's lease.
    lease: Arc<Lease>,
}

impl PeerNetwork {
    /// A peer network over mutual TLS with `tls` (the agent's peer client
    /// configuration), or plain HTTP when `None` (`insecure = true`).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> PeerNetwork {
        let (http, scheme) = client_of(tls.as_ref());
        PeerNetwork {
            http: Arc::new(std::sync::RwLock::new(http)),
            tls,
            scheme,
            last_contact: Arc::new(Mutex::new(HashMap::new())),
            refused_as_non_member: Arc::new(Mutex::new(HashMap::new())),
            progress: None,
            sender: None,
            cert_expiries: CertExpiries::default(),
            protocols: Arc::new(Mutex::new(HashMap::new())),
            lease: Arc::new(Lease::new(Duration::from_millis(150), Instant::now())),
        }
    }

    /// Drops every pooled peer connection: the next calls connect again,
    /// with this replica's certificate as it is now (after a rotation).
    pub fn renew_connections(&self) {
        let (http, _) = client_of(self.tls.as_ref());
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This network, naming `id` as the sender of every request.
    pub fn with_sender(mut self, id: NodeId) -> PeerNetwork {
        self.sender = Some(id);
        self
    }

    /// This network, recording accepted appends in `lease`.
    pub fn with_lease(mut self, lease: Arc<Lease>) -> PeerNetwork {
        self.lease = lease;
        self
    }

    /// The contact times this network records.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// The peers that refused this replica as a non-member within `window`
    /// and have not answered it normally since.
    pub fn refusing_peers(&self, window: Duration) -> Vec<NodeId> {
        let now = Instant::now();
        self.refused_as_non_member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) <= window)
            .map(|(id, _)| *id)
            .collect()
    }

    /// This network, announcing to followers what `progress` says.
    pub fn with_progress(mut self, progress: ProgressHook) -> PeerNetwork {
        self.progress = Some(progress);
        self
    }

    /// How long ago each peer last answered a Raft call.
    pub fn last_contact(&self) -> HashMap<NodeId, Duration> {
        let now = Instant::now();
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, at)| (*id, now.saturating_duration_since(*at)))
            .collect()
    }

    fn touch(&self, id: NodeId) {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
        self.refused_as_non_member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Peer `id` announced peer protocol `protocol` (in a request or an
    /// answer).
    pub fn heard_protocol(&self, id: NodeId, protocol: u32) {
        self.protocols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (protocol, Instant::now()));
    }

    /// The protocol each peer last announced and how long ago.
    pub fn announced(&self) -> HashMap<NodeId, version::Announced> {
        let now = Instant::now();
        self.protocols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, (protocol, at))| {
                (
                    *id,
                    version::Announced {
                        protocol: *protocol,
                        age: now.saturating_duration_since(*at),
                    },
                )
            })
            .collect()
    }

    /// Peer `id` refused this replica as a non-member.
    pub fn refused(&self, id: NodeId) {
        self.refused_as_non_member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
    }

    /// Sends the image archive at `path` to the manager at `addr`, which
    /// keeps it if its bytes hash to `sha256`.
    pub async fn push_archive(
        &self,
        addr: &str,
        sha256: &str,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<(), PeerCallError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| PeerCallError::BadReply {
                addr: addr.to_string(),
                reason: format!("cannot open the archive: {e}"),
            })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let url = format!("{}://{addr}{}/{sha256}", self.scheme, paths::ARCHIVE);
        let mut put = self
            .http()
            .put(url)
            .timeout(timeout)
            .header(PROTOCOL_HEADER, PROTOCOL.to_string())
            .body(body);
        if let Some(id) = self.sender {
            put = put.header(SENDER_HEADER, id.to_string());
        }
        let response = put.send().await.map_err(|e| classify(addr, timeout, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(PeerCallError::BadReply {
            addr: addr.to_string(),
            reason: format!("HTTP {status}: {}", &text[..text.len().min(200)]),
        })
    }

    /// The image archive `sha256` as the manager at `addr` streams it.
    pub async fn fetch_archive(
        &self,
        addr: &str,
        sha256: &str,
        timeout: Duration,
    ) -> Result<
        impl futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Unpin,
        PeerCallError,
    > {
        let url = format!("{}://{addr}{}/{sha256}", self.scheme, paths::ARCHIVE);
        let mut get = self
            .http()
            .get(url)
            .timeout(timeout)
            .header(PROTOCOL_HEADER, PROTOCOL.to_string());
        if let Some(id) = self.sender {
            get = get.header(SENDER_HEADER, id.to_string());
        }
        let response = get.send().await.map_err(|e| classify(addr, timeout, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PeerCallError::BadReply {
                addr: addr.to_string(),
                reason: format!("HTTP {status}"),
            });
        }
        Ok(response.bytes_stream())
    }

    /// POSTs a codec-encoded `request` to `addr` + `path` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        self.call_with_header(addr, path, request, timeout, None)
            .await
    }

    async fn call_with_header<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
        header: Option<(&'static str, String)>,
    ) -> Result<Resp, PeerCallError> {
        let body = codec::encode(request).map_err(|e| PeerCallError::BadReply {
            addr: addr.to_string(),
            reason: format!("cannot encode request: {e}"),
        })?;
        let (reply, _) = self.post(addr, path, body, timeout, header).await?;
        Ok(reply)
    }

    /// POSTs an already encoded `body` and decodes the reply; with the
    /// peer protocol the answer announced (`None`: not a protocol).
    async fn post<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        header: Option<(&'static str, String)>,
    ) -> Result<(Resp, Option<u32>), PeerCallError> {
        #[cfg(feature = "failpoints")]
        if fail::eval("peer-isolated", |_| ()).is_some() {
            // Cut off: nothing leaves. Waiting a little keeps the callers'
            // retries from spinning.
            tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
            return Err(PeerCallError::Unreachable {
                addr: addr.to_string(),
                reason: "fail point peer-isolated".into(),
            });
        }
        let url = format!("{}://{addr}{path}", self.scheme);
        let mut post = self
            .http()
            .post(url)
            .header("content-type", "application/octet-stream")
            .header(PROTOCOL_HEADER, PROTOCOL.to_string());
        if let Some((name, value)) = header {
            post = post.header(name, value);
        }
        if let Some(id) = self.sender {
            post = post.header(SENDER_HEADER, id.to_string());
        }
        let send = post.timeout(timeout).body(body).send();
        let response = send.await.map_err(|e| classify(addr, timeout, e))?;
        if let Some(der) = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
        {
            self.cert_expiries.saw(der);
        }
        let status = response.status();
        let announced = version::parse(
            response
                .headers()
                .get(PROTOCOL_HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify(addr, timeout, e))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            if status == reqwest::StatusCode::FORBIDDEN && text.starts_with(NOT_A_MEMBER) {
                return Err(PeerCallError::NotMember {
                    addr: addr.to_string(),
                    reason: text,
                });
            }
            if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                return Err(PeerCallError::TooLarge {
                    addr: addr.to_string(),
                });
            }
            return Err(PeerCallError::BadReply {
                addr: addr.to_string(),
                reason: format!("HTTP {status}: {text}"),
            });
        }
        let reply = codec::decode(&bytes).map_err(|e| PeerCallError::BadReply {
            addr: addr.to_string(),
            reason: format!("cannot decode reply: {e}"),
        })?;
        Ok((reply, announced))
    }
}

fn classify(addr: &str, timeout: Duration, error: reqwest::Error) -> PeerCallError {
    if error.is_timeout() {
        PeerCallError::Timeout {
            addr: addr.to_string(),
            timeout,
        }
    } else if error.is_connect() {
        // The TLS handshake happens while connecting: name its cause
        // (unknown CA, not a manager...) rather than just "connect error".
        PeerCallError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&error),
        }
    } else {
        PeerCallError::BadReply {
            addr: addr.to_string(),
            reason: error_chain(&error),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            network: self.clone(),
            inflight: None,
        }
    }
}

/// Largest append-entries body sent: a quarter of the peer server's limit
/// (64 MiB). Above it, openraft is told the payload is too large and sends
/// fewer entries; one entry always fits, as the writer caps batches far
/// below this (see [`crate::replica::writer`]).
pub const MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;

/// Appends up to this size are small: given a few heartbeat intervals
/// ([`small_append_timeout`]); larger ones get time for their bytes
/// ([`transfer_timeout`]). See [`PeerConnection::append_entries`].
const SMALL_APPEND_BYTES: usize = 64 * 1024;

/// How long a small append (a heartbeat, a few entries) may take once
/// openraft gave up waiting after `openraft_timeout` (one heartbeat
/// interval): eight of those, at least 250 ms. Long enough for a round
/// trip on a slow link to come back on the same connection, short enough
/// that a peer that went silent is asked afresh soon.
fn small_append_timeout(openraft_timeout: Duration) -> Duration {
    (openraft_timeout * 8).max(Duration::from_millis(250))
}

/// How long a large append of `bytes` may take: a second plus a second
/// per 8 MiB, so a slow link still completes what it started.
fn transfer_timeout(bytes: usize) -> Duration {
    Duration::from_secs(1) + Duration::from_secs_f64(bytes as f64 / (8.0 * 1024.0 * 1024.0))
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>>;

/// An append still on its way, which later calls for the same range join.
struct InflightAppend {
    vote: super::Vote,
    prev: Option<super::LogId>,
    last: Option<super::LogId>,
    sent: Instant,
    task: tokio::task::JoinHandle<AppendResult>,
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    network: PeerNetwork,
    inflight: Option<InflightAppend>,
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        // The replication stream is gone (a new term, a removed peer).
        if let Some(inflight) = self.inflight.take() {
            inflight.task.abort();
        }
    }
}

/// One Raft exchange with `target`: posts `body` and maps failures to
/// openraft's errors.
async fn raft_exchange<Resp, E>(
    network: PeerNetwork,
    target: NodeId,
    addr: String,
    path: &'static str,
    body: Vec<u8>,
    timeout: Duration,
    header: Option<(&'static str, String)>,
) -> Result<Resp, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let (reply, announced): (Result<Resp, RaftError<NodeId, E>>, _) = network
        .post(&addr, path, body, timeout, header)
        .await
        .map_err(|e| match e {
            PeerCallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerCallError::NotMember { .. } => {
                network.refused(target);
                RPCError::Unreachable(Unreachable::new(&e))
            }
            // Only appends are ever large; one entry at a time always fits.
            PeerCallError::TooLarge { .. } if path == paths::APPEND => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
    network.touch(target);
    if let Some(protocol) = announced {
        network.heard_protocol(target, protocol);
    }
    reply.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl PeerConnection {
    async fn raft_call<Req, Resp, E>(
        &self,
        path: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        raft_exchange(
            self.network.clone(),
            self.target,
            self.addr.clone(),
            path,
            body,
            option.hard_ttl(),
            None,
        )
        .await
    }

    /// Waits for `inflight` to answer, keeping it joinable should openraft
    /// give up on this call first, and answers for a request from the same
    /// point whose range ends at `wanted_last`: a success reaching that far
    /// is a success, one that stops short is partial.
    async fn finish(
        &mut self,
        inflight: InflightAppend,
        wanted_last: Option<super::LogId>,
    ) -> AppendResult {
        let pending = self.inflight.insert(inflight);
        let joined = (&mut pending.task).await;
        let inflight = self.inflight.take().expect("put there above");
        let reply = match joined {
            Ok(reply) => reply,
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        };
        let reply = reply.map(|response| match response {
            AppendEntriesResponse::Success if inflight.last < wanted_last => {
                AppendEntriesResponse::PartialSuccess(inflight.last)
            }
            other => other,
        });
        self.record_ack(&reply, inflight.vote.leader_id().get_term(), inflight.sent);
        reply
    }

    fn record_ack(&self, reply: &AppendResult, term: u64, sent: Instant) {
        if let Ok(
            AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict,
        ) = reply
        {
            // The peer accepted this leader's vote: it follows us as of `sent`.
            self.network.lease.acked(self.target, term, sent);
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    /// Every append (heartbeats included) runs as its own task, so
    /// openraft giving up after one heartbeat interval does not cancel the
    /// HTTP exchange: cancelling it mid-flight would close the connection,
    /// and the next call would pay a new connection and TLS handshake — on
    /// a link whose round trip nears the heartbeat interval, every call.
    /// The task has a timeout of its own: a few heartbeat intervals for a
    /// small append, time for its bytes for a large one (which could never
    /// finish within one interval). The calls openraft makes meanwhile for
    /// the same range join it instead of sending it again.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        // What a success acknowledges: the last entry sent, or for a
        // heartbeat the entry it starts after (openraft's `last` of the
        // range it sends).
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        if let Some(inflight) = self.inflight.take() {
            // Same leader, same starting point: the append on its way
            // answers this call too, whether it asks for more entries, the
            // same, or none (a heartbeat).
            if inflight.vote == rpc.vote && inflight.prev == rpc.prev_log_id {
                return self.finish(inflight, last).await;
            }
            inflight.task.abort();
        }
        let term = rpc.vote.leader_id().get_term();
        let body = codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if body.len() > MAX_APPEND_BYTES && rpc.entries.len() > 1 {
            let fitting = (rpc.entries.len() * MAX_APPEND_BYTES / body.len()).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting as u64),
            ));
        }
        let sent = Instant::now();
        let progress = self
            .network
            .progress
            .as_ref()
            .and_then(|hook| hook(term, sent).map(|value| (PROGRESS_HEADER, value)));
        let timeout = if body.len() <= SMALL_APPEND_BYTES {
            small_append_timeout(option.hard_ttl())
        } else {
            transfer_timeout(body.len())
        };
        let task = tokio::spawn(raft_exchange(
            self.network.clone(),
            self.target,
            self.addr.clone(),
            paths::APPEND,
            body,
            timeout,
            progress,
        ));
        let inflight = InflightAppend {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last,
            sent,
            task,
        };
        self.finish(inflight, last).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.raft_call(paths::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.raft_call(paths::VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        // Retry a dead peer soon (it may be restarting), then settle at 1 s.
        Backoff::new(
            (0..).map(|attempt: u32| Duration::from_millis((50u64 << attempt.min(5)).min(1000))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_outlive_openraft_by_a_few_heartbeats_or_by_their_bytes() {
        let ms = Duration::from_millis;
        assert_eq!(small_append_timeout(ms(30)), ms(250));
        assert_eq!(small_append_timeout(ms(50)), ms(400));
        assert_eq!(transfer_timeout(0), ms(1_000));
        assert_eq!(transfer_timeout(8 * 1024 * 1024), ms(2_000));
    }
}
