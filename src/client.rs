//! The typed HTTP client of the `/v1` API, used by the CLI, the integration
//! tests and the benchmarks. It takes several replica addresses and moves to
//! the next when one cannot be reached (the replicas forward writes to the
//! leader themselves). Token and TLS settings are carried from the start so
//! callers need not change when security is turned on.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error_chain::root_cause;
use crate::state::image_catalog::StoredImage;
use crate::state::{Event, Instance, Node, NodeSpec, Service, ServiceSpec};
use crate::wire::{
    AddMember, ClusterStatus, ConsulEntry, CreateToken, CreatedToken, DrainBody, ErrorBody,
    ImageEntry, RegistryInfo, RegistryLoginBody, ScaleBody, ServiceReport, TokenInfo,
};

/// How to reach and authenticate to the cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` or full `http(s)://host:port` of one or more replicas.
    pub addrs: Vec<String>,
    pub token: Option<String>,
    /// PEM file of the CA that signed the API certificates.
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
}

impl ClientOptions {
    pub fn new(addrs: impl IntoIterator<Item = impl Into<String>>) -> ClientOptions {
        ClientOptions {
            addrs: addrs.into_iter().map(Into::into).collect(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no replica could be reached ({0})")]
    Connect(String),
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        current_version: Option<u64>,
    },
    #[error("unexpected answer from {addr}: {reason}")]
    Decode { addr: String, reason: String },
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One KV pair as Consul returns it, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPair {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Read consistency of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Linearizable,
    Stale,
}

/// Longest upload of an image archive or build context.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Vec<String>,
    token: Option<String>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client, ClientError> {
        if options.addrs.is_empty() {
            return Err(ClientError::Config(
                "no API address given (use --addr or RAFTVISOR_ADDR)".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(Duration::from_secs(2));
        if let Some(path) = &options.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Config(format!("cannot read CA {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Config(format!("CA {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let scheme = if options.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let bases = options
            .addrs
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.trim_end_matches('/').to_string()
                } else {
                    format!("{scheme}://{a}")
                }
            })
            .collect();
        Ok(Client {
            http,
            bases,
            token: options.token,
        })
    }

    /// Sends a request, trying each replica in turn while they cannot be reached.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body>,
        if_match: Option<u64>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let mut problems = Vec::new();
        for base in &self.bases {
            let mut request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .query(query);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(version) = if_match {
                request = request.header("if-match", version.to_string());
            }
            request = match &body {
                Some(Body::Json(value)) => request.json(value),
                Some(Body::Raw(bytes)) => request.body(bytes.clone()),
                None => request,
            };
            match request.send().await {
                Ok(response) => return Ok((base.clone(), response)),
                Err(e) if e.is_connect() => problems.push(format!("{base}: {}", root_cause(&e))),
                Err(e) => return Err(ClientError::Connect(format!("{base}: {}", root_cause(&e)))),
            }
        }
        Err(ClientError::Connect(problems.join("; ")))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body>,
        if_match: Option<u64>,
    ) -> Result<T, ClientError> {
        let (base, response) = self.send(method, path, query, body, if_match).await?;
        decode_json(&base, response).await
    }

    /// POSTs `body` to `path` and decodes the JSON answer.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<Body>,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, &[], body, None).await
    }

    /// DELETEs `path`: the answer's JSON, or `None` when it has none (204).
    async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        if_match: Option<u64>,
    ) -> Result<Option<T>, ClientError> {
        let (base, response) = self
            .send(Method::DELETE, path, query, None, if_match)
            .await?;
        decode_optional_json(&base, response).await
    }

    /// GETs any API path as JSON, e.g. to see exactly what the API shows.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, path, &[], None, None).await
    }

    /// A backup file of the cluster's state (`GET /v1/cluster/backup`), as
    /// the replica asked sent it.
    pub async fn cluster_backup(&self) -> Result<Vec<u8>, ClientError> {
        let (base, response) = self
            .send(Method::GET, "/v1/cluster/backup", &[], None, None)
            .await?;
        if !response.status().is_success() {
            return Err(api_error(&base, response).await);
        }
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Decode {
                addr: base,
                reason: e.to_string(),
            })
    }

    /// The managers' cluster file the cluster keeps (404 when none).
    pub async fn cluster_plan(
        &self,
    ) -> Result<crate::bootstrap::cluster_file::ClusterFile, ClientError> {
        self.call(Method::GET, "/v1/cluster/plan", &[], None, None)
            .await
    }

    pub async fn put_cluster_plan(
        &self,
        plan: &crate::bootstrap::cluster_file::ClusterFile,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Method::PUT, "/v1/cluster/plan", &[], json(plan)?, None)
            .await
    }

    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/health", &[], None, None).await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.call(Method::GET, "/v1/cluster", &[], None, None).await
    }

    /// Adds a member as a learner and, with `voter`, promotes it.
    pub async fn add_member(
        &self,
        id: u64,
        api_addr: &str,
        peer_addr: &str,
        voter: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let body = AddMember {
            id,
            api_addr: api_addr.into(),
            peer_addr: peer_addr.into(),
            voter,
        };
        self.post("/v1/cluster/members", json(&body)?).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/cluster/members/{id}");
        Ok(self.delete(&path, &[], None).await?.unwrap_or_default())
    }

    pub async fn events(&self, since: u64) -> Result<Vec<Event>, ClientError> {
        self.call(
            Method::GET,
            "/v1/events",
            &[("since", since.to_string())],
            None,
            None,
        )
        .await
    }

    // ---- KV ----

    /// Reads one key; `None` if it does not exist.
    pub async fn kv_get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KvPair>, ClientError> {
        let mut query = Vec::new();
        if consistency == Consistency::Stale {
            query.push(("stale", String::new()));
        }
        Ok(self.kv_read(key, &query).await?.into_iter().next())
    }

    /// Reads every key under `prefix`.
    pub async fn kv_list(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<KvPair>, ClientError> {
        let mut query = vec![("recurse", String::new())];
        if consistency == Consistency::Stale {
            query.push(("stale", String::new()));
        }
        self.kv_read(prefix, &query).await
    }

    async fn kv_read(
        &self,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<KvPair>, ClientError> {
        let (base, response) = self
            .send(Method::GET, &kv_path(key), query, None, None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let entries: Vec<ConsulEntry> = decode_json(&base, response).await?;
        entries
            .into_iter()
            .map(|e| {
                let value = match e.value {
                    Some(text) => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|err| ClientError::Decode {
                            addr: base.clone(),
                            reason: format!("bad base64 value: {err}"),
                        })?,
                    None => Vec::new(),
                };
                Ok(KvPair {
                    key: e.key.into_owned(),
                    value,
                    flags: e.flags,
                    create_index: e.create_index,
                    modify_index: e.modify_index,
                })
            })
            .collect()
    }

    /// Writes a key; with `cas`, only if its ModifyIndex is `cas` (0 = absent).
    /// Returns Consul's `true`/`false`.
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        flags: u64,
        cas: Option<u64>,
    ) -> Result<bool, ClientError> {
        let mut query = vec![];
        if flags != 0 {
            query.push(("flags", flags.to_string()));
        }
        if let Some(index) = cas {
            query.push(("cas", index.to_string()));
        }
        self.call(
            Method::PUT,
            &kv_path(key),
            &query,
            Some(Body::Raw(value.to_vec())),
            None,
        )
        .await
    }

    /// Deletes a key (or a prefix with `recurse`); with `cas`, only at that index.
    pub async fn kv_delete(
        &self,
        key: &str,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<bool, ClientError> {
        let mut query = vec![];
        if let Some(index) = cas {
            query.push(("cas", index.to_string()));
        }
        if recurse {
            query.push(("recurse", String::new()));
        }
        Ok(self
            .delete(&kv_path(key), &query, None)
            .await?
            .unwrap_or(false))
    }

    // ---- services ----

    pub async fn service_put(
        &self,
        namespace: &str,
        name: &str,
        spec: &ServiceSpec,
        if_match: Option<u64>,
    ) -> Result<Service, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/services/{namespace}/{name}"),
            &[],
            json(spec)?,
            if_match,
        )
        .await
    }

    pub async fn service_get(&self, namespace: &str, name: &str) -> Result<Service, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/services/{namespace}/{name}"),
            &[],
            None,
            None,
        )
        .await
    }

    pub async fn service_list(&self) -> Result<Vec<Service>, ClientError> {
        self.call(Method::GET, "/v1/services", &[], None, None)
            .await
    }

    pub async fn service_delete(
        &self,
        namespace: &str,
        name: &str,
        if_match: Option<u64>,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/services/{namespace}/{name}");
        self.delete::<serde_json::Value>(&path, &[], if_match)
            .await
            .map(drop)
    }

    /// Deletes the service and removes its volumes (`service rm --purge`).
    pub async fn service_purge(&self, namespace: &str, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/services/{namespace}/{name}");
        self.delete::<serde_json::Value>(&path, &[("purge", "true".to_string())], None)
            .await
            .map(drop)
    }

    pub async fn service_scale(
        &self,
        namespace: &str,
        name: &str,
        replicas: u32,
    ) -> Result<Service, ClientError> {
        self.post(
            &format!("/v1/services/{namespace}/{name}/scale"),
            json(&ScaleBody { replicas })?,
        )
        .await
    }

    /// The versions of a service's spec, oldest first.
    pub async fn service_history(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<crate::wire::Revision>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/services/{namespace}/{name}/history"),
            &[],
            None,
            None,
        )
        .await
    }

    /// Back to version `to` (the one before the newest if none).
    pub async fn service_rollback(
        &self,
        namespace: &str,
        name: &str,
        to: Option<u64>,
    ) -> Result<Service, ClientError> {
        self.post(
            &format!("/v1/services/{namespace}/{name}/rollback"),
            json(&crate::wire::RollbackBody {
                to,
                expected_version: None,
            })?,
        )
        .await
    }

    /// `start`, `stop`, `restart`, `promote` or `abort` a service.
    pub async fn service_action(
        &self,
        namespace: &str,
        name: &str,
        action: &str,
    ) -> Result<Service, ClientError> {
        self.post(&format!("/v1/services/{namespace}/{name}/{action}"), None)
            .await
    }

    pub async fn service_report(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ServiceReport, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/services/{namespace}/{name}/report"),
            &[],
            None,
            None,
        )
        .await
    }

    pub async fn service_instances(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Instance>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/services/{namespace}/{name}/instances"),
            &[],
            None,
            None,
        )
        .await
    }

    // ---- nodes ----

    pub async fn node_put(&self, name: &str, spec: &NodeSpec) -> Result<Node, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/nodes/{name}"),
            &[],
            json(spec)?,
            None,
        )
        .await
    }

    pub async fn node_get(&self, name: &str) -> Result<Node, ClientError> {
        self.call(Method::GET, &format!("/v1/nodes/{name}"), &[], None, None)
            .await
    }

    pub async fn node_list(&self) -> Result<Vec<Node>, ClientError> {
        self.call(Method::GET, "/v1/nodes", &[], None, None).await
    }

    /// Removes a node nothing is placed on; a node with instances is
    /// refused (409 `node_not_drained`). See [`Client::node_remove`].
    pub async fn node_delete(&self, name: &str) -> Result<(), ClientError> {
        self.node_remove(name, false).await.map(|_| ())
    }

    /// `DELETE /v1/nodes/{name}[?force=true]`: `None` when the node is
    /// gone; with `force` and instances placed on it, the node as retired
    /// (its instances move, its containers are removed, then the node).
    pub async fn node_remove(&self, name: &str, force: bool) -> Result<Option<Node>, ClientError> {
        let query: Vec<(&str, String)> = if force {
            vec![("force", "true".to_string())]
        } else {
            Vec::new()
        };
        self.delete(&format!("/v1/nodes/{name}"), &query, None)
            .await
    }

    // ---- tokens (admin) ----

    /// Creates a token; the answer holds its secret, shown only this once.
    pub async fn token_create(&self, body: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.post("/v1/tokens", json(body)?).await
    }

    /// The record of the token this client presents.
    pub async fn token_self(&self) -> Result<TokenInfo, ClientError> {
        self.call(Method::GET, "/v1/tokens/self", &[], None, None)
            .await
    }

    pub async fn token_list(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, "/v1/tokens", &[], None, None).await
    }

    pub async fn token_revoke(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tokens/{}", urlencode(id));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- images ----

    /// Sends the image archive at `path` (`docker save` format) for the
    /// cluster to keep, as `name` (default: the archive's one tag).
    pub async fn image_import(
        &self,
        path: &std::path::Path,
        name: Option<&str>,
    ) -> Result<StoredImage, ClientError> {
        let query: Vec<(&str, String)> =
            name.map(|n| ("name", n.to_string())).into_iter().collect();
        let mut problems = Vec::new();
        for base in &self.bases {
            let request = self
                .upload(&format!("{base}/v1/images"), path)
                .await?
                .query(&query);
            match request.send().await {
                Ok(response) => return decode_json(base, response).await,
                Err(e) if e.is_connect() => problems.push(format!("{base}: {}", root_cause(&e))),
                Err(e) => return Err(ClientError::Connect(format!("{base}: {}", root_cause(&e)))),
            }
        }
        Err(ClientError::Connect(problems.join("; ")))
    }

    /// Builds the context archive at `context` as `tag` on the cluster:
    /// every line of the build's output goes to `line` as it comes; the
    /// answer is the image the cluster then keeps. Asks the leader (a
    /// follower names it).
    pub async fn image_build(
        &self,
        context: &std::path::Path,
        tag: &str,
        mut line: impl FnMut(&str),
    ) -> Result<StoredImage, ClientError> {
        let mut bases: Vec<String> = self.bases.clone();
        // Only the leader builds. A follower answers 421 at once, without
        // reading the context, and closes: a context still being sent then
        // fails with a broken pipe before the 421 is read. So the context
        // goes to the leader first; the 421 remains for a leader that
        // changed meanwhile.
        if let Some(leader) = self.leader_base().await {
            bases.retain(|b| *b != leader);
            bases.insert(0, leader);
        }
        let mut problems = Vec::new();
        let mut index = 0;
        while index < bases.len() && index < 8 {
            let base = bases[index].clone();
            index += 1;
            let request = self
                .upload(&format!("{base}/v1/images/build"), context)
                .await?
                .query(&[("tag", tag)]);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    problems.push(format!("{base}: {}", root_cause(&e)));
                    continue;
                }
                Err(e) => return Err(ClientError::Connect(format!("{base}: {}", root_cause(&e)))),
            };
            if response.status() == StatusCode::MISDIRECTED_REQUEST {
                if let Some(leader) = response
                    .headers()
                    .get("x-raftvisor-leader")
                    .and_then(|v| v.to_str().ok())
                {
                    let scheme = base.split("://").next().unwrap_or("https");
                    bases.insert(index, format!("{scheme}://{leader}"));
                    continue;
                }
            }
            if !response.status().is_success() {
                return decode_json(&base, response).await;
            }
            return read_build_answer(&base, response, &mut line).await;
        }
        Err(ClientError::Connect(problems.join("; ")))
    }

    /// The API base of the leader, as the first replica that answers
    /// knows it; `None` without a leader or an answer.
    async fn leader_base(&self) -> Option<String> {
        let status = self.cluster_status().await.ok()?;
        let leader = status.leader_id?;
        let member = status.members.iter().find(|m| m.id == leader)?;
        let scheme = self.bases.first()?.split("://").next()?;
        Some(format!("{scheme}://{}", member.api_addr))
    }

    /// A POST of the tar at `path` to `url`, streamed, with the token.
    async fn upload(
        &self,
        url: &str,
        path: &std::path::Path,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut request = self
            .http
            .post(url)
            .timeout(TRANSFER_TIMEOUT)
            .header("content-type", "application/x-tar")
            .body(reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::new(file),
            ));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    pub async fn image_list(&self) -> Result<Vec<ImageEntry>, ClientError> {
        self.call(Method::GET, "/v1/images", &[], None, None).await
    }

    pub async fn image_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/images/{name}");
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- volumes ----

    /// The slots' volumes, all or one namespace's.
    pub async fn volume_list(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<crate::wire::VolumeEntry>, ClientError> {
        let query: Vec<(&str, String)> = namespace
            .map(|ns| ("namespace", ns.to_string()))
            .into_iter()
            .collect();
        self.call(Method::GET, "/v1/volumes", &query, None, None)
            .await
    }

    /// Asks for a volume no slot uses to be removed from every node.
    pub async fn volume_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/volumes/{name}");
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- backups ----

    /// Asks for a backup of a service (it runs after the answer).
    pub async fn backup_start(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<crate::wire::BackupEntry, ClientError> {
        self.post(&format!("/v1/services/{namespace}/{name}/backups"), None)
            .await
    }

    /// A service's backups, oldest first.
    pub async fn backup_list(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<crate::wire::BackupEntry>, ClientError> {
        let path = format!("/v1/services/{namespace}/{name}/backups");
        self.call(Method::GET, &path, &[], None, None).await
    }

    pub async fn backup(&self, id: &str) -> Result<crate::wire::BackupEntry, ClientError> {
        let path = format!("/v1/backups/{}", urlencode(id));
        self.call(Method::GET, &path, &[], None, None).await
    }

    /// Forgets a backup (its artifacts are then deleted).
    pub async fn backup_remove(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/backups/{}", urlencode(id));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    /// Asks for a restore of a service from backup `from`.
    pub async fn restore_start(
        &self,
        namespace: &str,
        name: &str,
        from: &str,
    ) -> Result<crate::wire::RestoreEntry, ClientError> {
        let body = crate::wire::RestoreBody {
            from: from.to_string(),
        };
        self.post(
            &format!("/v1/services/{namespace}/{name}/restore"),
            json(&body)?,
        )
        .await
    }

    pub async fn restore(&self, id: &str) -> Result<crate::wire::RestoreEntry, ClientError> {
        let path = format!("/v1/restores/{}", urlencode(id));
        self.call(Method::GET, &path, &[], None, None).await
    }

    // ---- templates ----

    pub async fn template_list(&self) -> Result<Vec<crate::wire::TemplateEntry>, ClientError> {
        self.call(Method::GET, "/v1/templates", &[], None, None)
            .await
    }

    pub async fn template(&self, name: &str) -> Result<crate::wire::TemplateEntry, ClientError> {
        let path = format!("/v1/templates/{}", urlencode(name));
        self.call(Method::GET, &path, &[], None, None).await
    }

    /// Adds (or replaces) the template `text` defines, named `name`.
    pub async fn template_put(
        &self,
        name: &str,
        text: &str,
    ) -> Result<crate::wire::TemplateEntry, ClientError> {
        let path = format!("/v1/templates/{}", urlencode(name));
        let body = Some(Body::Raw(text.as_bytes().to_vec()));
        self.call(Method::PUT, &path, &[], body, None).await
    }

    pub async fn template_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/templates/{}", urlencode(name));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- releases ----

    pub async fn release_list(&self) -> Result<Vec<crate::wire::ReleaseView>, ClientError> {
        self.call(Method::GET, "/v1/releases", &[], None, None)
            .await
    }

    pub async fn release(&self, name: &str) -> Result<crate::wire::ReleaseView, ClientError> {
        let path = format!("/v1/releases/{}", urlencode(name));
        self.call(Method::GET, &path, &[], None, None).await
    }

    pub async fn release_create(
        &self,
        name: &str,
        body: &crate::wire::ReleaseBody,
    ) -> Result<crate::wire::ReleaseView, ClientError> {
        let path = format!("/v1/releases/{}", urlencode(name));
        self.call(Method::PUT, &path, &[], json(body)?, None).await
    }

    pub async fn release_switch(
        &self,
        name: &str,
        body: &crate::wire::SwitchBody,
    ) -> Result<crate::wire::ReleaseView, ClientError> {
        self.post(
            &format!("/v1/releases/{}/switch", urlencode(name)),
            json(body)?,
        )
        .await
    }

    pub async fn release_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/releases/{}", urlencode(name));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- pipelines ----

    pub async fn pipeline_list(&self) -> Result<Vec<crate::wire::PipelineView>, ClientError> {
        self.call(Method::GET, "/v1/pipelines", &[], None, None)
            .await
    }

    pub async fn pipeline(&self, name: &str) -> Result<crate::wire::PipelineView, ClientError> {
        let path = format!("/v1/pipelines/{}", urlencode(name));
        self.call(Method::GET, &path, &[], None, None).await
    }

    pub async fn pipeline_put(
        &self,
        name: &str,
        body: &crate::wire::PipelineBody,
    ) -> Result<crate::wire::PipelineView, ClientError> {
        let path = format!("/v1/pipelines/{}", urlencode(name));
        self.call(Method::PUT, &path, &[], json(body)?, None).await
    }

    pub async fn pipeline_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/pipelines/{}", urlencode(name));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    /// Starts a run of `name` with `archive` (a tar) as its source.
    pub async fn pipeline_start_run(
        &self,
        name: &str,
        archive: Vec<u8>,
        commit: Option<&str>,
    ) -> Result<crate::wire::RunStarted, ClientError> {
        let path = format!("/v1/pipelines/{}/runs", urlencode(name));
        let query: Vec<(&str, String)> = commit
            .map(|c| vec![("commit", c.to_string())])
            .unwrap_or_default();
        self.call(Method::POST, &path, &query, Some(Body::Raw(archive)), None)
            .await
    }

    pub async fn pipeline_run(
        &self,
        name: &str,
        run: u64,
    ) -> Result<crate::state::pipelines::Run, ClientError> {
        let path = format!("/v1/pipelines/{}/runs/{run}", urlencode(name));
        self.call(Method::GET, &path, &[], None, None).await
    }

    /// `release approve`: the run waiting at the release's gate goes live.
    pub async fn release_approve(
        &self,
        name: &str,
    ) -> Result<crate::wire::ReleaseView, ClientError> {
        self.post(&format!("/v1/releases/{}/approve", urlencode(name)), None)
            .await
    }

    // ---- topologies ----

    /// Namespace `namespace` as a topology; `share` are exported as references.
    pub async fn namespace_export(
        &self,
        namespace: &str,
        share: &[String],
    ) -> Result<crate::state::topology::Topology, ClientError> {
        let path = format!("/v1/namespaces/{}/topology", urlencode(namespace));
        let query: Vec<(&str, String)> = if share.is_empty() {
            Vec::new()
        } else {
            vec![("share", share.join(","))]
        };
        self.call(Method::GET, &path, &query, None, None).await
    }

    /// Clones `namespace` into the empty namespace `body.to` in one write.
    pub async fn namespace_clone(
        &self,
        namespace: &str,
        body: &crate::wire::CloneBody,
    ) -> Result<Vec<Service>, ClientError> {
        self.post(
            &format!("/v1/namespaces/{}/clone", urlencode(namespace)),
            json(body)?,
        )
        .await
    }

    pub async fn topology_list(&self) -> Result<Vec<crate::wire::TopologyEntry>, ClientError> {
        self.call(Method::GET, "/v1/topologies", &[], None, None)
            .await
    }

    /// Every kept version of `name`, oldest first.
    pub async fn topology_versions(
        &self,
        name: &str,
    ) -> Result<Vec<crate::wire::TopologyEntry>, ClientError> {
        let path = format!("/v1/topologies/{}", urlencode(name));
        self.call(
            Method::GET,
            &path,
            &[("versions", String::new())],
            None,
            None,
        )
        .await
    }

    /// Version `version` of `name` (the newest if none), with the topology.
    pub async fn topology(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<crate::wire::TopologyEntry, ClientError> {
        let path = format!("/v1/topologies/{}", urlencode(name));
        let query: Vec<(&str, String)> = version
            .map(|v| vec![("version", v.to_string())])
            .unwrap_or_default();
        self.call(Method::GET, &path, &query, None, None).await
    }

    pub async fn topology_save(
        &self,
        name: &str,
        topology: &crate::state::topology::Topology,
    ) -> Result<crate::wire::TopologyEntry, ClientError> {
        let path = format!("/v1/topologies/{}", urlencode(name));
        self.call(Method::PUT, &path, &[], json(topology)?, None)
            .await
    }

    pub async fn topology_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/topologies/{}", urlencode(name));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    // ---- registries ----

    /// Stores the account the cluster pulls from `host` with.
    pub async fn registry_login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<RegistryInfo, ClientError> {
        let body = RegistryLoginBody {
            username: username.into(),
            password: password.into(),
        };
        let path = format!("/v1/registries/{}", urlencode(host));
        self.call(Method::PUT, &path, &[], json(&body)?, None).await
    }

    pub async fn registry_list(&self) -> Result<Vec<RegistryInfo>, ClientError> {
        self.call(Method::GET, "/v1/registries", &[], None, None)
            .await
    }

    pub async fn registry_logout(&self, host: &str) -> Result<(), ClientError> {
        let path = format!("/v1/registries/{}", urlencode(host));
        self.delete::<serde_json::Value>(&path, &[], None)
            .await
            .map(drop)
    }

    pub async fn node_drain(&self, name: &str, cancel: bool) -> Result<Node, ClientError> {
        self.post(
            &format!("/v1/nodes/{name}/drain"),
            json(&DrainBody { cancel })?,
        )
        .await
    }
}

/// Reads a build's answer: output lines, then one JSON line with the
/// image or the error.
async fn read_build_answer(
    base: &str,
    response: reqwest::Response,
    line: &mut impl FnMut(&str),
) -> Result<StoredImage, ClientError> {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut last = String::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ClientError::Connect(format!("{base}: {}", root_cause(&e))))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..=end);
            if !last.is_empty() {
                line(&last);
            }
            last = text;
        }
    }
    #[derive(Deserialize)]
    struct Last {
        image: Option<StoredImage>,
        error: Option<String>,
    }
    match serde_json::from_str::<Last>(&last) {
        Ok(Last {
            image: Some(image), ..
        }) => Ok(image),
        Ok(Last {
            error: Some(error), ..
        }) => Err(ClientError::Api {
            status: 422,
            code: "build_failed".into(),
            message: error,
            current_version: None,
        }),
        _ => Err(ClientError::Connect(format!(
            "{base}: the build's answer ended without a result (last line: {last:?})"
        ))),
    }
}

enum Body {
    Json(serde_json::Value),
    Raw(Vec<u8>),
}

/// `value` as a JSON request body.
fn json<T: Serialize + ?Sized>(value: &T) -> Result<Option<Body>, ClientError> {
    serde_json::to_value(value)
        .map(|v| Some(Body::Json(v)))
        .map_err(|e| ClientError::Config(e.to_string()))
}

fn kv_path(key: &str) -> String {
    let encoded: Vec<String> = key.split('/').map(urlencode).collect();
    format!("/v1/kv/{}", encoded.join("/"))
}

fn urlencode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn api_error(base: &str, response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api {
            status,
            code: body.code,
            message: body.error,
            current_version: body.current_version,
        },
        Err(_) => ClientError::Api {
            status,
            code: "http".into(),
            message: if text.is_empty() {
                format!("HTTP {status} from {base}")
            } else {
                text
            },
            current_version: None,
        },
    }
}

/// The JSON answer of a successful call; `None` when it has no body.
async fn decode_optional_json<T: DeserializeOwned>(
    base: &str,
    response: reqwest::Response,
) -> Result<Option<T>, ClientError> {
    if !response.status().is_success() {
        return Err(api_error(base, response).await);
    }
    let decode_error = |reason: String| ClientError::Decode {
        addr: base.to_string(),
        reason,
    };
    let bytes = response
        .bytes()
        .await
        .map_err(|e| decode_error(e.to_string()))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| decode_error(e.to_string()))
}

async fn decode_json<T: DeserializeOwned>(
    base: &str,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    decode_optional_json(base, response)
        .await?
        .ok_or_else(|| ClientError::Decode {
            addr: base.to_string(),
            reason: "empty answer".into(),
        })
}
