//! Machine providers behind one trait. A provider brings a machine (a Docker
//! host) into existence and answers for its power state: provision, start,
//! restart, deallocate, delete and status. What comes back from
//! [`MachineProvider::provision`] is the [`NodeSpec`] to register in the
//! replicated node inventory; registering it (a Raft write) is the caller's
//! job — a provider never touches the replicated state.
//!
//! [`static_hosts`] serves machines given by address and Docker endpoint
//! (provisioning checks that the engine answers); [`azure`] creates and
//! drives Azure VMs through Azure Resource Manager. Every call is bounded in
//! time: a provider that hangs must surface as a [`ProviderError::Timeout`],
//! not stall the caller.

pub mod azure;
pub mod static_hosts;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::NodeSpec;

/// What the caller asks a provider for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineRequest {
    /// The machine's (and the node's) name; also its id at the provider.
    pub name: String,
    /// Availability zone, when the provider places machines in zones.
    #[serde(default)]
    pub zone: Option<String>,
    /// Labels to give the node (merged over the provider's own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Tags for the machine at the provider (e.g. the cluster's name).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A machine a provider made (or found), with the node to register for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The provider's id of the machine (what `start`, `status`… take).
    pub id: String,
    pub node: NodeSpec,
}

/// Power state of a machine as its provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineStatus {
    Running,
    Stopped,
    Deallocated,
    Provisioning,
    /// The provider does not know the machine (deleted, never made).
    Missing,
    /// Anything else, with the provider's words for it.
    Unknown(String),
}

/// Why a provider call failed. Messages are one line and never carry a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{operation} is not supported by the {provider} provider: {reason}")]
    NotSupported {
        provider: &'static str,
        operation: &'static str,
        reason: String,
    },
    #[error("machine {0:?} is not known to the provider")]
    UnknownMachine(String),
    #[error("machine {machine:?} is unreachable: {reason}")]
    Unreachable { machine: String, reason: String },
    #[error("provider configuration: {0}")]
    Config(String),
    #[error("provider credentials: {0}")]
    Credentials(String),
    #[error("{operation} of {machine:?} was refused{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Api {
        operation: &'static str,
        machine: String,
        status: Option<u16>,
        message: String,
    },
    #[error("{operation} of {machine:?} failed: {message}")]
    OperationFailed {
        operation: &'static str,
        machine: String,
        message: String,
    },
    #[error("{operation} of {machine:?} did not finish within {timeout:?}")]
    Timeout {
        operation: &'static str,
        machine: String,
        timeout: Duration,
    },
}

/// A source of machines (VMs or given Docker hosts).
#[async_trait::async_trait]
pub trait MachineProvider: Send + Sync + 'static {
    /// The provider's kind as recorded in [`NodeSpec::provider`] ("static", "azure").
    fn kind(&self) -> &'static str;
    /// Makes the machine (or finds the given one), waits until it is up, and
    /// returns the node to register. Repeating it for an existing machine is
    /// not an error.
    async fn provision(&self, request: &MachineRequest) -> Result<Machine, ProviderError>;
    async fn start(&self, id: &str) -> Result<(), ProviderError>;
    async fn restart(&self, id: &str) -> Result<(), ProviderError>;
    /// Stops the machine and releases its compute (it keeps its disk).
    async fn deallocate(&self, id: &str) -> Result<(), ProviderError>;
    /// Deletes the machine with its disk and NIC. Missing is not an error.
    async fn delete(&self, id: &str) -> Result<(), ProviderError>;
    async fn status(&self, id: &str) -> Result<MachineStatus, ProviderError>;
}

/// One provider's configuration, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Static(static_hosts::StaticConfig),
    Azure(Box<azure::AzureConfig>),
}

impl ProviderConfig {
    /// Parses a provider configuration from TOML text.
    pub fn parse(text: &str) -> Result<ProviderConfig, ProviderError> {
        toml::from_str(text).map_err(|e| ProviderError::Config(one_line(&e.to_string())))
    }
}

/// The provider a configuration describes. Azure credentials are read here
/// (from their file or the environment), never logged.
pub fn from_config(config: &ProviderConfig) -> Result<Arc<dyn MachineProvider>, ProviderError> {
    Ok(match config {
        ProviderConfig::Static(config) => Arc::new(static_hosts::StaticProvider::new(config)?),
        ProviderConfig::Azure(config) => Arc::new(azure::AzureProvider::from_config(config)?),
    })
}

/// Collapses a multi-line message into one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        let err = ProviderError::Api {
            operation: "create",
            machine: "vm-1".into(),
            status: Some(409),
            message: one_line("conflict\n  with another\toperation"),
        };
        assert_eq!(
            err.to_string(),
            "create of \"vm-1\" was refused (HTTP 409): conflict with another operation"
        );
        let err = ProviderError::NotSupported {
            provider: "static",
            operation: "deallocate",
            reason: "its machines are given, not made".into(),
        };
        assert_eq!(
            err.to_string(),
            "deallocate is not supported by the static provider: its machines are given, not made"
        );
    }

    #[test]
    fn statuses_serialize_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&MachineStatus::Deallocated).unwrap(),
            "\"deallocated\""
        );
    }
}
