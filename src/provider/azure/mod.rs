//! The `azure` provider: Azure VMs made and driven through Azure Resource
//! Manager with `azure_mgmt_compute` (requests, api-version, models) and
//! `azure_identity` (a client-secret credential). A VM is created with an
//! inline NIC on the configured subnet and a cloud-init document that
//! installs Docker and serves its API with TLS; start, restart, deallocate
//! and delete are ARM's long-running operations, polled here
//! (`Azure-AsyncOperation`, else `Location`) at a configured interval under
//! an overall timeout — the SDK's own poller has none. Power state comes
//! from the VM's instance view.
//!
//! Credentials come from the configuration (tenant, client id, a file with
//! the client secret) or the usual `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET` and `AZURE_AUTHORITY_HOST` variables. They are
//! never logged: every `Debug` here redacts them, and the binary caps
//! azure_core's transport logging ([`SDK_TRANSPORT_LOG_CAP`]), which would
//! print bearer tokens at debug level.

pub mod body;
pub mod lro;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::auth::TokenCredential;
use azure_core::headers::{HeaderName, AUTHORIZATION};
use azure_core::{HttpClient, Method, Url};
use azure_identity::ClientSecretCredential;
use azure_mgmt_compute::package_2024_07_01 as compute;
use serde::{Deserialize, Serialize};

use super::{one_line, Machine, MachineProvider, MachineRequest, MachineStatus, ProviderError};
use crate::state::{Capacity, DockerTls, NodeSpec};
use body::EngineTls;
use lro::{Next, OperationState};

const KIND: &str = "azure";
const PUBLIC_RESOURCE_MANAGER: &str = "https://management.azure.com";
const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
/// A log directive capping azure_core's transport logging: at debug it
/// prints each ARM request with its bearer token (`main` always adds it).
pub const SDK_TRANSPORT_LOG_CAP: &str = "azure_core::policies::transport=info";
/// api-version of the Network resource provider (reading the NIC's address).
pub const NETWORK_API_VERSION: &str = "2024-01-01";

/// Configuration of the azure provider (see `cluster-config/azure.example.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    /// Default availability zone ("1", "2", "3"); a request may name another.
    #[serde(default)]
    pub zone: Option<String>,
    pub vm_size: String,
    pub image: ImageReference,
    /// Resource id of the subnet the VMs' NICs join.
    pub subnet_id: String,
    pub admin_username: String,
    /// The admin's SSH public key (`ssh-ed25519 AAAA…`); password login is off.
    pub ssh_public_key: String,
    #[serde(default = "default_os_disk_size_gb")]
    pub os_disk_size_gb: u32,
    #[serde(default = "default_os_disk_type")]
    pub os_disk_type: String,
    /// Tags on every VM.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Region recorded on the nodes (defaults to `location`).
    #[serde(default)]
    pub region: Option<String>,
    /// Labels and capacity of the nodes this provider makes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub capacity: Capacity,
    #[serde(default)]
    pub credentials: AzureCredentialsConfig,
    pub docker: AzureDockerConfig,
    #[serde(default)]
    pub endpoints: AzureEndpoints,
    #[serde(default)]
    pub timeouts: AzureTimeouts,
}

fn default_os_disk_size_gb() -> u32 {
    64
}

fn default_os_disk_type() -> String {
    "StandardSSD_LRS".into()
}

/// A marketplace image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageReference {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    #[serde(default = "latest")]
    pub version: String,
}

fn latest() -> String {
    "latest".into()
}

/// Where the service principal's credentials come from. Anything left out
/// is taken from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentialsConfig {
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// A file holding the client secret (only its path is configured).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
}

/// How the VMs' Docker engines serve their API, and how managers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureDockerConfig {
    #[serde(default = "default_docker_port")]
    pub port: u16,
    /// PEM files on this manager, copied onto each VM by cloud-init: the CA
    /// clients must be signed by, and the engine's certificate and key. The
    /// certificate must name the endpoint host (see `hostname_suffix`).
    pub server_ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The managers' client certificate for the engines (the node's `docker_tls`).
    pub client: DockerTls,
    /// When set, the engine endpoint is `https://<vm name><suffix>:port`
    /// (e.g. `.internal.cloudapp.net`, or a private DNS zone); otherwise
    /// the VM's private IP address.
    #[serde(default)]
    pub hostname_suffix: Option<String>,
}

fn default_docker_port() -> u16 {
    2376
}

/// Endpoints of the cloud (public Azure unless told otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureEndpoints {
    /// Azure Resource Manager, e.g. `https://management.azure.com`.
    pub resource_manager: String,
    /// Microsoft Entra authority; `None`: `AZURE_AUTHORITY_HOST` or the public cloud's.
    #[serde(default)]
    pub authority_host: Option<String>,
}

impl Default for AzureEndpoints {
    fn default() -> Self {
        AzureEndpoints {
            resource_manager: PUBLIC_RESOURCE_MANAGER.into(),
            authority_host: None,
        }
    }
}

/// How long operations may take and how often they are polled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureTimeouts {
    pub poll_interval_ms: u64,
    /// Create (until the VM's operation succeeded).
    pub create_secs: u64,
    /// start, restart, deallocate, delete.
    pub operation_secs: u64,
    /// A single request (status, a poll).
    pub request_secs: u64,
}

impl Default for AzureTimeouts {
    fn default() -> Self {
        AzureTimeouts {
            poll_interval_ms: 5_000,
            create_secs: 900,
            operation_secs: 600,
            request_secs: 30,
        }
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(secret: impl Into<String>) -> Redacted {
        Redacted(secret.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The service principal the provider signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Redacted,
    pub authority_host: String,
}

impl Credentials {
    /// Resolves the configuration against the environment (`env`).
    pub fn resolve(
        config: &AzureConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Credentials, ProviderError> {
        let from = |given: &Option<String>, var: &str| -> Result<String, ProviderError> {
            given
                .clone()
                .or_else(|| env(var))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ProviderError::Credentials(format!(
                        "no {} in the configuration and {var} is not set",
                        var.trim_start_matches("AZURE_").to_lowercase()
                    ))
                })
        };
        let tenant_id = from(&config.credentials.tenant_id, "AZURE_TENANT_ID")?;
        let client_id = from(&config.credentials.client_id, "AZURE_CLIENT_ID")?;
        let client_secret = match &config.credentials.client_secret_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ProviderError::Credentials(format!(
                        "client secret file {}: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_string(),
            None => from(&None, "AZURE_CLIENT_SECRET")?,
        };
        if client_secret.is_empty() {
            return Err(ProviderError::Credentials(
                "the client secret is empty".into(),
            ));
        }
        let authority_host = config
            .endpoints
            .authority_host
            .clone()
            .or_else(|| env("AZURE_AUTHORITY_HOST"))
            .unwrap_or_else(|| PUBLIC_AUTHORITY.into());
        Ok(Credentials {
            tenant_id,
            client_id,
            client_secret: Redacted::new(client_secret),
            authority_host,
        })
    }
}

/// Azure VMs through Azure Resource Manager.
pub struct AzureProvider {
    config: AzureConfig,
    client: compute::Client,
    credential: Arc<dyn TokenCredential>,
    http: Arc<dyn HttpClient>,
    scope: String,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("subscription_id", &self.config.subscription_id)
            .field("resource_group", &self.config.resource_group)
            .field("resource_manager", &self.config.endpoints.resource_manager)
            .finish_non_exhaustive()
    }
}

impl AzureProvider {
    /// A provider signing in with credentials from `config` or the process's
    /// environment.
    pub fn from_config(config: &AzureConfig) -> Result<AzureProvider, ProviderError> {
        let credentials = Credentials::resolve(config, |name| std::env::var(name).ok())?;
        Self::new(config, &credentials, azure_core::new_http_client())
    }

    /// A provider using `http` for every request (tokens included).
    pub fn new(
        config: &AzureConfig,
        credentials: &Credentials,
        http: Arc<dyn HttpClient>,
    ) -> Result<AzureProvider, ProviderError> {
        let endpoint = Url::parse(&config.endpoints.resource_manager).map_err(|e| {
            ProviderError::Config(format!(
                "resource manager endpoint {:?}: {e}",
                config.endpoints.resource_manager
            ))
        })?;
        let authority = Url::parse(&credentials.authority_host).map_err(|e| {
            ProviderError::Config(format!(
                "authority host {:?}: {e}",
                credentials.authority_host
            ))
        })?;
        let scope = endpoint
            .join(azure_core::auth::DEFAULT_SCOPE_SUFFIX)
            .map_err(|e| ProviderError::Config(format!("resource manager scope: {e}")))?
            .to_string();
        let credential: Arc<dyn TokenCredential> = Arc::new(ClientSecretCredential::new(
            http.clone(),
            authority,
            credentials.tenant_id.clone(),
            credentials.client_id.clone(),
            credentials.client_secret.expose().to_string(),
        ));
        let client = compute::Client::builder(credential.clone())
            .endpoint(endpoint)
            .scopes(&[scope.as_str()])
            .transport(azure_core::TransportOptions::new(http.clone()))
            .build()
            .map_err(|e| ProviderError::Config(one_line(&e.to_string())))?;
        for (what, value) in [
            ("subscription_id", &config.subscription_id),
            ("resource_group", &config.resource_group),
            ("location", &config.location),
            ("vm_size", &config.vm_size),
            ("subnet_id", &config.subnet_id),
            ("admin_username", &config.admin_username),
            ("ssh_public_key", &config.ssh_public_key),
        ] {
            if value.trim().is_empty() {
                return Err(ProviderError::Config(format!("azure: {what} is empty")));
            }
        }
        Ok(AzureProvider {
            config: config.clone(),
            client,
            credential,
            http,
            scope,
        })
    }

    fn vms(&self) -> compute::virtual_machines::Client {
        self.client.virtual_machines_client()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.config.timeouts.poll_interval_ms.max(1))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeouts.request_secs.max(1))
    }

    fn engine_tls(&self) -> Result<EngineTls, ProviderError> {
        let docker = &self.config.docker;
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| {
                ProviderError::Config(format!("docker TLS file {}: {e}", path.display()))
            })
        };
        Ok(EngineTls {
            ca_cert: read(&docker.server_ca_cert)?,
            server_cert: read(&docker.server_cert)?,
            server_key: read(&docker.server_key)?,
        })
    }

    /// Runs `operation` (its first request, then its polls) under `limit`.
    async fn run_operation<F>(
        &self,
        operation: &'static str,
        machine: &str,
        limit: Duration,
        first: F,
    ) -> Result<(), ProviderError>
    where
        F: std::future::Future<Output = azure_core::Result<azure_core::Response>> + Send,
    {
        tracing::info!(machine, operation, "azure operation");
        let work = async {
            let response = first.await.map_err(|e| api_error(operation, machine, &e))?;
            let headers = response.headers();
            let next = lro::next_after(
                u16::from(response.status()),
                headers.get_optional_str(&HeaderName::from_static("azure-asyncoperation")),
                headers.get_optional_str(&HeaderName::from_static("location")),
            );
            self.wait(operation, machine, next).await
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Timeout {
                operation,
                machine: machine.to_string(),
                timeout: limit,
            }),
        }
    }

    /// Polls a long-running operation until it ends.
    async fn wait(
        &self,
        operation: &'static str,
        machine: &str,
        next: Next,
    ) -> Result<(), ProviderError> {
        let (url, async_operation) = match next {
            Next::Done => return Ok(()),
            Next::AsyncOperation(url) => (url, true),
            Next::Location(url) => (url, false),
        };
        let url = Url::parse(&url).map_err(|e| ProviderError::Api {
            operation,
            machine: machine.to_string(),
            status: None,
            message: format!("unusable operation URL: {e}"),
        })?;
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(self.poll_interval()).await;
            polls += 1;
            let (status, body) = self.get(operation, machine, &url).await?;
            let state = if async_operation {
                if !(200..300).contains(&status) {
                    return Err(refused(operation, machine, status, &body));
                }
                lro::async_operation_state(&body).map_err(|e| ProviderError::Api {
                    operation,
                    machine: machine.to_string(),
                    status: Some(status),
                    message: e.to_string(),
                })?
            } else {
                match status {
                    202 => OperationState::InProgress,
                    200..=299 => OperationState::Succeeded,
                    _ => return Err(refused(operation, machine, status, &body)),
                }
            };
            tracing::debug!(machine, operation, polls, ?state, "azure operation polled");
            match state {
                OperationState::InProgress => continue,
                OperationState::Succeeded => return Ok(()),
                OperationState::Failed(message) => {
                    return Err(ProviderError::OperationFailed {
                        operation,
                        machine: machine.to_string(),
                        message,
                    })
                }
            }
        }
    }

    /// An authenticated GET of an ARM URL: `(status, body)`.
    async fn get(
        &self,
        operation: &'static str,
        machine: &str,
        url: &Url,
    ) -> Result<(u16, Vec<u8>), ProviderError> {
        let work = async {
            let token = self
                .credential
                .get_token(&[self.scope.as_str()])
                .await
                .map_err(|e| ProviderError::Credentials(one_line(&e.to_string())))?;
            let mut request = azure_core::Request::new(url.clone(), Method::Get);
            request.insert_header(AUTHORIZATION, format!("Bearer {}", token.token.secret()));
            let response = self
                .http
                .execute_request(&request)
                .await
                .map_err(|e| api_error(operation, machine, &e))?;
            let status = u16::from(response.status());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| api_error(operation, machine, &e))?;
            Ok((status, body.to_vec()))
        };
        tokio::time::timeout(self.request_timeout(), work)
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Timeout {
                    operation,
                    machine: machine.to_string(),
                    timeout: self.request_timeout(),
                })
            })
    }

    /// The private IP address of the VM's primary NIC.
    async fn private_address(&self, name: &str) -> Result<String, ProviderError> {
        let vm = tokio::time::timeout(
            self.request_timeout(),
            self.vms()
                .get(
                    &self.config.resource_group,
                    name,
                    &self.config.subscription_id,
                )
                .into_future(),
        )
        .await
        .map_err(|_| ProviderError::Timeout {
            operation: "get",
            machine: name.to_string(),
            timeout: self.request_timeout(),
        })?
        .map_err(|e| api_error("get", name, &e))?;
        let nics = vm
            .properties
            .and_then(|p| p.network_profile)
            .map(|n| n.network_interfaces)
            .unwrap_or_default();
        let nic = nics
            .iter()
            .find(|n| n.properties.as_ref().and_then(|p| p.primary) == Some(true))
            .or(nics.first())
            .and_then(|n| n.sub_resource.id.clone())
            .ok_or_else(|| ProviderError::Api {
                operation: "get",
                machine: name.to_string(),
                status: None,
                message: "the VM has no network interface".into(),
            })?;
        let mut url = Url::parse(&self.config.endpoints.resource_manager)
            .map_err(|e| ProviderError::Config(e.to_string()))?;
        url.set_path(&nic);
        url.query_pairs_mut()
            .append_pair("api-version", NETWORK_API_VERSION);
        let (status, body) = self.get("get network interface", name, &url).await?;
        if !(200..300).contains(&status) {
            return Err(refused("get network interface", name, status, &body));
        }
        nic_private_address(&body).ok_or_else(|| ProviderError::Api {
            operation: "get network interface",
            machine: name.to_string(),
            status: Some(status),
            message: "no private IP address on the NIC".into(),
        })
    }

    fn node_spec(&self, request: &MachineRequest, address: String) -> NodeSpec {
        let docker = &self.config.docker;
        let host = match &docker.hostname_suffix {
            Some(suffix) => format!("{}{suffix}", request.name),
            None => address.clone(),
        };
        let mut labels = self.config.labels.clone();
        labels.extend(request.labels.clone());
        NodeSpec {
            provider: KIND.into(),
            docker_endpoint: format!("https://{host}:{}", docker.port),
            address: Some(address),
            region: Some(
                self.config
                    .region
                    .clone()
                    .unwrap_or_else(|| self.config.location.clone()),
            ),
            zone: request.zone.clone().or_else(|| self.config.zone.clone()),
            labels,
            capacity: self.config.capacity.clone(),
            docker_tls: Some(docker.client.clone()),
        }
    }
}

/// `properties.ipConfigurations[primary].properties.privateIPAddress` of a NIC.
pub fn nic_private_address(body: &[u8]) -> Option<String> {
    let nic: serde_json::Value = serde_json::from_slice(body).ok()?;
    let configs = nic["properties"]["ipConfigurations"].as_array()?;
    let primary = configs
        .iter()
        .find(|c| c["properties"]["primary"] == serde_json::Value::Bool(true))
        .or(configs.first())?;
    primary["properties"]["privateIPAddress"]
        .as_str()
        .map(String::from)
}

/// The power state among an instance view's status codes.
pub fn power_state(codes: &[&str]) -> MachineStatus {
    let provisioning = codes
        .iter()
        .find_map(|c| c.strip_prefix("ProvisioningState/"));
    let power = codes.iter().find_map(|c| c.strip_prefix("PowerState/"));
    match (power, provisioning) {
        (Some("running"), _) => MachineStatus::Running,
        (Some("stopped"), _) => MachineStatus::Stopped,
        (Some("deallocated"), _) => MachineStatus::Deallocated,
        (Some("starting"), _) | (None, Some("creating")) | (None, Some("updating")) => {
            MachineStatus::Provisioning
        }
        (Some(other), _) => MachineStatus::Unknown(other.to_string()),
        (None, Some(state)) => MachineStatus::Unknown(format!("provisioning {state}")),
        (None, None) => MachineStatus::Unknown("no power state".into()),
    }
}

fn refused(operation: &'static str, machine: &str, status: u16, body: &[u8]) -> ProviderError {
    ProviderError::Api {
        operation,
        machine: machine.to_string(),
        status: Some(status),
        message: lro::error_message(body).unwrap_or_else(|| "no details".into()),
    }
}

/// Status code of an SDK error that carries an HTTP answer.
fn http_status(error: &azure_core::Error) -> Option<u16> {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

fn api_error(operation: &'static str, machine: &str, error: &azure_core::Error) -> ProviderError {
    let status = http_status(error);
    let message = match error.as_http_error() {
        Some(http) => match (http.error_code(), http.error_message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            (None, Some(message)) => message.to_string(),
            (None, None) => error.to_string(),
        },
        None => {
            if matches!(error.kind(), azure_core::error::ErrorKind::Credential) {
                return ProviderError::Credentials(one_line(&format!("{error:#}")));
            }
            format!("{error}")
        }
    };
    ProviderError::Api {
        operation,
        machine: machine.to_string(),
        status,
        message: one_line(&message),
    }
}

#[async_trait::async_trait]
impl MachineProvider for AzureProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self, request: &MachineRequest) -> Result<Machine, ProviderError> {
        let name = request.name.as_str();
        let cloud_init = body::cloud_init(&self.engine_tls()?, self.config.docker.port);
        let vm_body = body::vm_body(&self.config, request, &cloud_init);
        let vm: compute::models::VirtualMachine = serde_json::from_value(vm_body)
            .map_err(|e| ProviderError::Config(format!("VM body for {name:?}: {e}")))?;
        let send = self
            .vms()
            .create_or_update(
                &self.config.resource_group,
                name,
                vm,
                &self.config.subscription_id,
            )
            .send();
        let limit = Duration::from_secs(self.config.timeouts.create_secs.max(1));
        self.run_operation("create", name, limit, async {
            send.await.map(|r| r.into_raw_response())
        })
        .await?;
        let address = self.private_address(name).await?;
        let node = self.node_spec(request, address);
        tracing::info!(machine = name, endpoint = %node.docker_endpoint, "azure VM created");
        Ok(Machine {
            id: name.to_string(),
            node,
        })
    }

    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        let send = self
            .vms()
            .start(
                &self.config.resource_group,
                id,
                &self.config.subscription_id,
            )
            .send();
        let limit = Duration::from_secs(self.config.timeouts.operation_secs.max(1));
        self.run_operation("start", id, limit, async {
            send.await.map(|r| r.into_raw_response())
        })
        .await
    }

    async fn restart(&self, id: &str) -> Result<(), ProviderError> {
        let send = self
            .vms()
            .restart(
                &self.config.resource_group,
                id,
                &self.config.subscription_id,
            )
            .send();
        let limit = Duration::from_secs(self.config.timeouts.operation_secs.max(1));
        self.run_operation("restart", id, limit, async {
            send.await.map(|r| r.into_raw_response())
        })
        .await
    }

    async fn deallocate(&self, id: &str) -> Result<(), ProviderError> {
        let send = self
            .vms()
            .deallocate(
                &self.config.resource_group,
                id,
                &self.config.subscription_id,
            )
            .send();
        let limit = Duration::from_secs(self.config.timeouts.operation_secs.max(1));
        self.run_operation("deallocate", id, limit, async {
            send.await.map(|r| r.into_raw_response())
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let send = self
            .vms()
            .delete(
                &self.config.resource_group,
                id,
                &self.config.subscription_id,
            )
            .send();
        let limit = Duration::from_secs(self.config.timeouts.operation_secs.max(1));
        let result = self
            .run_operation("delete", id, limit, async {
                send.await.map(|r| r.into_raw_response())
            })
            .await;
        match result {
            Err(ProviderError::Api {
                status: Some(404), ..
            }) => Ok(()),
            other => other,
        }
    }

    async fn status(&self, id: &str) -> Result<MachineStatus, ProviderError> {
        let view = tokio::time::timeout(
            self.request_timeout(),
            self.vms()
                .instance_view(
                    &self.config.resource_group,
                    id,
                    &self.config.subscription_id,
                )
                .into_future(),
        )
        .await
        .map_err(|_| ProviderError::Timeout {
            operation: "status",
            machine: id.to_string(),
            timeout: self.request_timeout(),
        })?;
        match view {
            Ok(view) => {
                let codes: Vec<&str> = view
                    .statuses
                    .iter()
                    .filter_map(|s| s.code.as_deref())
                    .collect();
                Ok(power_state(&codes))
            }
            Err(e) if http_status(&e) == Some(404) => Ok(MachineStatus::Missing),
            Err(e) => Err(api_error("status", id, &e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config() -> AzureConfig {
        match crate::provider::ProviderConfig::parse(include_str!(
            "../../../cluster-config/azure.example.toml"
        ))
        .expect("the example configuration parses")
        {
            crate::provider::ProviderConfig::Azure(config) => *config,
            other => panic!("not azure: {other:?}"),
        }
    }

    #[test]
    fn example_config_is_complete() {
        let config = config();
        assert_eq!(config.location, "westeurope");
        assert_eq!(config.vm_size, "Standard_B2s");
        assert_eq!(config.docker.port, 2376);
        assert_eq!(config.endpoints.resource_manager, PUBLIC_RESOURCE_MANAGER);
        assert!(config.subnet_id.contains("/subnets/"));
    }

    #[test]
    fn credentials_from_env_and_config_never_shown() {
        let mut config = config();
        config.credentials = AzureCredentialsConfig::default();
        let env = |name: &str| match name {
            "AZURE_TENANT_ID" => Some("tenant".to_string()),
            "AZURE_CLIENT_ID" => Some("client".to_string()),
            "AZURE_CLIENT_SECRET" => Some("s3cr3t-value".to_string()),
            _ => None,
        };
        let credentials = Credentials::resolve(&config, env).unwrap();
        assert_eq!(credentials.tenant_id, "tenant");
        assert_eq!(credentials.authority_host, PUBLIC_AUTHORITY);
        assert!(!format!("{credentials:?}").contains("s3cr3t"));

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        config.credentials.client_secret_file = Some(secret);
        config.credentials.tenant_id = Some("t2".into());
        let credentials = Credentials::resolve(&config, env).unwrap();
        assert_eq!(credentials.tenant_id, "t2");
        assert_eq!(credentials.client_secret.expose(), "from-file");

        let err = Credentials::resolve(
            &AzureConfig {
                credentials: AzureCredentialsConfig::default(),
                ..config
            },
            |_| None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider credentials: no tenant_id in the configuration and AZURE_TENANT_ID is not set"
        );
    }

    #[test]
    fn sdk_transport_log_cap_is_a_directive() {
        let directive: tracing_subscriber::filter::Directive =
            SDK_TRANSPORT_LOG_CAP.parse().unwrap();
        assert_eq!(directive.to_string(), SDK_TRANSPORT_LOG_CAP);
    }

    #[test]
    fn power_states() {
        assert_eq!(
            power_state(&["ProvisioningState/succeeded", "PowerState/running"]),
            MachineStatus::Running
        );
        assert_eq!(
            power_state(&["ProvisioningState/succeeded", "PowerState/deallocated"]),
            MachineStatus::Deallocated
        );
        assert_eq!(power_state(&["PowerState/stopped"]), MachineStatus::Stopped);
        assert_eq!(
            power_state(&["ProvisioningState/creating"]),
            MachineStatus::Provisioning
        );
        assert_eq!(
            power_state(&["PowerState/deallocating"]),
            MachineStatus::Unknown("deallocating".into())
        );
    }

    #[test]
    fn nic_address() {
        let body = br#"{"properties":{"ipConfigurations":[
            {"properties":{"primary":false,"privateIPAddress":"10.0.0.9"}},
            {"properties":{"primary":true,"privateIPAddress":"10.0.0.4"}}]}}"#;
        assert_eq!(nic_private_address(body).as_deref(), Some("10.0.0.4"));
        assert_eq!(nic_private_address(b"{}"), None);
    }
}
