//! Size limits and quotas of the replicated model, so no request can grow
//! the state (and every replica's memory, log and snapshots) without bound.
//!
//! Sizes bound one record (an image name, an env value, a port list …);
//! quotas bound how many records exist (services, nodes, instances, KV
//! keys and bytes). Both come from the agent config (`[limits]`). The API
//! checks sizes before anything is written (400, or 413 for a KV value,
//! naming the limit); quotas depend on the state, so the state machine
//! checks them when it applies the write — deterministically, because the
//! leader puts the limits it enforces into the log entry
//! ([`super::Command::WithLimits`]) and every replica applies that entry
//! with the same numbers. Event messages are truncated, not refused.

use serde::{Deserialize, Serialize};

use super::types::{NodeSpec, ServiceKind, ServiceSpec};
use super::validate::Invalid;

/// Longest event message kept; longer ones are cut (at a character
/// boundary) and marked with `…`.
pub const MAX_EVENT_MESSAGE_BYTES: usize = 1024;
/// Longest event kind or subject kept.
pub const MAX_EVENT_FIELD_BYTES: usize = 256;
/// Ceiling of `max_kv_value_bytes` (Consul's limit, also the state
/// machine's check of entries written without limits).
pub const KV_VALUE_CEILING: u32 = super::validate::MAX_KV_VALUE_BYTES as u32;
/// Ceiling of `max_kv_key_bytes`.
pub const KV_KEY_CEILING: u32 = super::validate::MAX_KV_KEY_BYTES as u32;

/// The error code of a size limit.
pub const LIMIT_EXCEEDED: &str = "limit_exceeded";
/// The error code of a quota.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// Size limits and quotas (`[limits]` of the agent config). Every field
/// is named in the error of a request it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of a service's image name.
    pub max_image_bytes: u32,
    /// Arguments of a service's command.
    pub max_command_args: u32,
    /// Bytes of one command argument.
    pub max_arg_bytes: u32,
    /// Variables of `env` and `secret_env` together.
    pub max_env_vars: u32,
    /// Bytes of one environment variable name.
    pub max_env_name_bytes: u32,
    /// Bytes of one environment value (of a secret: its clear value).
    pub max_env_value_bytes: u32,
    /// Ports of a service.
    pub max_ports: u32,
    /// Labels of a node, or node labels a service's placement asks for.
    pub max_labels: u32,
    /// Bytes of one label key or value.
    pub max_label_bytes: u32,
    /// Addresses of an external service.
    pub max_addresses: u32,
    /// Bytes of a health check's path.
    pub max_health_path_bytes: u32,
    /// Bytes of other free-text fields: a node's provider, Docker
    /// endpoint, address and TLS file paths.
    pub max_field_bytes: u32,
    /// Bytes of a KV key (at most 1024).
    pub max_kv_key_bytes: u32,
    /// Bytes of a KV value (at most 512 KiB).
    pub max_kv_value_bytes: u32,
    /// Quota: services in the registry.
    pub max_services: u32,
    /// Quota: nodes in the inventory.
    pub max_nodes: u32,
    /// Quota: replicas of all container services together.
    pub max_instances: u32,
    /// Quota: KV keys.
    pub max_kv_keys: u32,
    /// Quota: bytes of all KV values together.
    pub max_kv_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_bytes: 512,
            max_command_args: 256,
            max_arg_bytes: 4096,
            max_env_vars: 256,
            max_env_name_bytes: 256,
            max_env_value_bytes: 32 * 1024,
            max_ports: 64,
            max_labels: 64,
            max_label_bytes: 256,
            max_addresses: 256,
            max_health_path_bytes: 1024,
            max_field_bytes: 1024,
            max_kv_key_bytes: KV_KEY_CEILING,
            max_kv_value_bytes: KV_VALUE_CEILING,
            max_services: 1000,
            max_nodes: 1000,
            max_instances: 10_000,
            max_kv_keys: 100_000,
            max_kv_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A request over a size limit or a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    /// The `[limits]` key that refused it, e.g. `max_image_bytes`.
    pub limit: &'static str,
    pub message: String,
}

impl LimitError {
    fn size(limit: &'static str, what: &str, actual: usize, max: impl std::fmt::Display) -> Self {
        LimitError {
            limit,
            message: format!("{what} is {actual}, over the limit {limit} = {max}"),
        }
    }

    /// The error code the API answers with.
    pub fn code(&self) -> &'static str {
        if self.is_quota() {
            QUOTA_EXCEEDED
        } else {
            LIMIT_EXCEEDED
        }
    }

    /// Whether the limit is a quota (a count of records).
    pub fn is_quota(&self) -> bool {
        matches!(
            self.limit,
            "max_services" | "max_nodes" | "max_instances" | "max_kv_keys" | "max_kv_bytes"
        )
    }

    /// A quota reached: `count` records exist and the request adds more.
    pub fn quota(limit: &'static str, what: &str, count: u64, max: u64) -> Self {
        LimitError {
            limit,
            message: format!("quota {limit} = {max} reached: {what} would be {count}"),
        }
    }
}

fn at_most(
    limit: &'static str,
    what: impl FnOnce() -> String,
    actual: usize,
    max: u32,
) -> Result<(), LimitError> {
    if actual > max as usize {
        Err(LimitError::size(limit, &what(), actual, max))
    } else {
        Ok(())
    }
}

impl Limits {
    /// Checks that every size limit is positive and under its ceiling.
    pub fn validate(&self) -> Result<(), Invalid> {
        let sizes = [
            ("max_image_bytes", self.max_image_bytes),
            ("max_command_args", self.max_command_args),
            ("max_arg_bytes", self.max_arg_bytes),
            ("max_env_vars", self.max_env_vars),
            ("max_env_name_bytes", self.max_env_name_bytes),
            ("max_env_value_bytes", self.max_env_value_bytes),
            ("max_ports", self.max_ports),
            ("max_labels", self.max_labels),
            ("max_label_bytes", self.max_label_bytes),
            ("max_addresses", self.max_addresses),
            ("max_health_path_bytes", self.max_health_path_bytes),
            ("max_field_bytes", self.max_field_bytes),
            ("max_kv_key_bytes", self.max_kv_key_bytes),
            ("max_kv_value_bytes", self.max_kv_value_bytes),
            ("max_services", self.max_services),
            ("max_nodes", self.max_nodes),
            ("max_instances", self.max_instances),
            ("max_kv_keys", self.max_kv_keys),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Invalid::new(format!("limits.{name} must be positive")));
        }
        if self.max_kv_bytes == 0 {
            return Err(Invalid::new("limits.max_kv_bytes must be positive"));
        }
        if self.max_kv_value_bytes > KV_VALUE_CEILING {
            return Err(Invalid::new(format!(
                "limits.max_kv_value_bytes must be at most {KV_VALUE_CEILING}"
            )));
        }
        if self.max_kv_key_bytes > KV_KEY_CEILING {
            return Err(Invalid::new(format!(
                "limits.max_kv_key_bytes must be at most {KV_KEY_CEILING}"
            )));
        }
        Ok(())
    }

    /// Checks the sizes of a service spec. `sealed`: secret values are
    /// sealed (in the log) rather than clear (in an API request), which
    /// makes them longer.
    pub fn check_service_spec(&self, spec: &ServiceSpec, sealed: bool) -> Result<(), LimitError> {
        at_most(
            "max_image_bytes",
            || "spec.image (bytes)".into(),
            spec.image.len(),
            self.max_image_bytes,
        )?;
        at_most(
            "max_command_args",
            || "spec.command (arguments)".into(),
            spec.command.len(),
            self.max_command_args,
        )?;
        for (i, arg) in spec.command.iter().enumerate() {
            at_most(
                "max_arg_bytes",
                || format!("spec.command[{i}] (bytes)"),
                arg.len(),
                self.max_arg_bytes,
            )?;
        }
        at_most(
            "max_env_vars",
            || "spec.env and spec.secret_env (variables)".into(),
            spec.env.len() + spec.secret_env.0.len(),
            self.max_env_vars,
        )?;
        // A sealed value carries a prefix, nonce and tag and is base64.
        let secret_max = if sealed {
            self.max_env_value_bytes
                .saturating_mul(2)
                .saturating_add(256)
        } else {
            self.max_env_value_bytes
        };
        for (name, value) in &spec.env {
            at_most(
                "max_env_name_bytes",
                || "an env name (bytes)".into(),
                name.len(),
                self.max_env_name_bytes,
            )?;
            at_most(
                "max_env_value_bytes",
                || format!("spec.env.{name} (bytes)"),
                value.len(),
                self.max_env_value_bytes,
            )?;
        }
        for (name, value) in &spec.secret_env.0 {
            at_most(
                "max_env_name_bytes",
                || "a secret_env name (bytes)".into(),
                name.len(),
                self.max_env_name_bytes,
            )?;
            at_most(
                "max_env_value_bytes",
                || format!("spec.secret_env.{name} (bytes)"),
                value.len(),
                secret_max,
            )?;
        }
        at_most(
            "max_ports",
            || "spec.ports (ports)".into(),
            spec.ports.len(),
            self.max_ports,
        )?;
        self.check_labels("spec.placement.node_labels", &spec.placement.node_labels)?;
        at_most(
            "max_addresses",
            || "spec.addresses (addresses)".into(),
            spec.addresses.len(),
            self.max_addresses,
        )?;
        for address in &spec.addresses {
            at_most(
                "max_field_bytes",
                || "an address (bytes)".into(),
                address.len(),
                self.max_field_bytes,
            )?;
        }
        if let Some(hostname) = &spec.hostname {
            at_most(
                "max_field_bytes",
                || "spec.hostname (bytes)".into(),
                hostname.len(),
                self.max_field_bytes,
            )?;
        }
        if let Some(health) = &spec.health {
            at_most(
                "max_health_path_bytes",
                || "spec.health.path (bytes)".into(),
                health.path.len(),
                self.max_health_path_bytes,
            )?;
        }
        Ok(())
    }

    /// Checks the sizes of a node spec.
    pub fn check_node_spec(&self, spec: &NodeSpec) -> Result<(), LimitError> {
        let mut fields = vec![
            ("provider", spec.provider.len()),
            ("docker_endpoint", spec.docker_endpoint.len()),
        ];
        if let Some(address) = &spec.address {
            fields.push(("address", address.len()));
        }
        if let Some(tls) = &spec.docker_tls {
            fields.push(("docker_tls.ca_cert", tls.ca_cert.len()));
            fields.push(("docker_tls.cert", tls.cert.len()));
            fields.push(("docker_tls.key", tls.key.len()));
        }
        for (field, len) in fields {
            at_most(
                "max_field_bytes",
                || format!("{field} (bytes)"),
                len,
                self.max_field_bytes,
            )?;
        }
        self.check_labels("labels", &spec.labels)
    }

    fn check_labels(
        &self,
        what: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), LimitError> {
        at_most(
            "max_labels",
            || format!("{what} (labels)"),
            labels.len(),
            self.max_labels,
        )?;
        for (key, value) in labels {
            at_most(
                "max_label_bytes",
                || format!("{what} key (bytes)"),
                key.len(),
                self.max_label_bytes,
            )?;
            at_most(
                "max_label_bytes",
                || format!("{what}.{key} (bytes)"),
                value.len(),
                self.max_label_bytes,
            )?;
        }
        Ok(())
    }

    /// Checks the sizes of a KV key and value.
    pub fn check_kv(&self, key: &str, value: &[u8]) -> Result<(), LimitError> {
        at_most(
            "max_kv_key_bytes",
            || "the key (bytes)".into(),
            key.len(),
            self.max_kv_key_bytes,
        )?;
        at_most(
            "max_kv_value_bytes",
            || "the value (bytes)".into(),
            value.len(),
            self.max_kv_value_bytes,
        )
    }
}

/// The replicas a spec runs (external services run none).
pub fn replicas_run(spec: &ServiceSpec) -> u64 {
    if spec.kind == ServiceKind::External {
        0
    } else {
        u64::from(spec.replicas)
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary, ending a
/// cut text with `…`.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(json).unwrap()
    }

    fn refused(result: Result<(), LimitError>) -> &'static str {
        let error = result.expect_err("refused");
        assert!(error.message.contains(error.limit), "{error:?}");
        error.limit
    }

    #[test]
    fn each_service_size_limit_names_itself() {
        let limits = Limits::default();
        let ok = spec(serde_json::json!({"image": "echo"}));
        assert!(limits.check_service_spec(&ok, false).is_ok());
        let cases = [
            (
                serde_json::json!({"image": "i".repeat(513)}),
                "max_image_bytes",
            ),
            (
                serde_json::json!({"image": "e", "command": vec!["a"; 257]}),
                "max_command_args",
            ),
            (
                serde_json::json!({"image": "e", "command": ["a".repeat(4097)]}),
                "max_arg_bytes",
            ),
            (
                serde_json::json!({"image": "e", "env": {"A": "v".repeat(32 * 1024 + 1)}}),
                "max_env_value_bytes",
            ),
            (
                serde_json::json!({"image": "e", "env": {"A".repeat(257): "v"}}),
                "max_env_name_bytes",
            ),
            (
                serde_json::json!({"image": "e", "env": (0..257).map(|i| (format!("V{i}"), "x".to_string())).collect::<std::collections::BTreeMap<_, _>>()}),
                "max_env_vars",
            ),
            (
                serde_json::json!({"image": "e", "ports": (0..65).map(|i| serde_json::json!({"name": format!("p{i}"), "container_port": 1000 + i})).collect::<Vec<_>>()}),
                "max_ports",
            ),
            (
                serde_json::json!({"image": "e", "placement": {"node_labels": {"k": "v".repeat(257)}}}),
                "max_label_bytes",
            ),
            (
                serde_json::json!({"image": "e", "ports": [{"name": "http", "container_port": 80}], "health": {"port": "http", "path": format!("/{}", "p".repeat(1024))}}),
                "max_health_path_bytes",
            ),
            (
                serde_json::json!({"kind": "external", "addresses": vec!["10.0.0.1"; 257]}),
                "max_addresses",
            ),
        ];
        for (json, limit) in cases {
            assert_eq!(
                refused(limits.check_service_spec(&spec(json), false)),
                limit
            );
        }
    }

    #[test]
    fn node_and_kv_size_limits_name_themselves() {
        let limits = Limits::default();
        let node: NodeSpec = serde_json::from_value(serde_json::json!({
            "docker_endpoint": format!("tcp://{}:2375", "h".repeat(1100))
        }))
        .unwrap();
        assert_eq!(refused(limits.check_node_spec(&node)), "max_field_bytes");
        let node: NodeSpec = serde_json::from_value(serde_json::json!({
            "docker_endpoint": "tcp://h:2375",
            "labels": (0..65).map(|i| (format!("k{i}"), "v".to_string())).collect::<std::collections::BTreeMap<_, _>>()
        }))
        .unwrap();
        assert_eq!(refused(limits.check_node_spec(&node)), "max_labels");
        assert_eq!(
            refused(limits.check_kv(&"k".repeat(1025), b"")),
            "max_kv_key_bytes"
        );
        assert_eq!(
            refused(limits.check_kv("k", &vec![0; 512 * 1024 + 1])),
            "max_kv_value_bytes"
        );
        assert!(limits.check_kv("k", &vec![0; 512 * 1024]).is_ok());
    }

    #[test]
    fn limits_must_be_positive_and_under_their_ceilings() {
        assert!(Limits::default().validate().is_ok());
        let zero = Limits {
            max_services: 0,
            ..Limits::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "limits.max_services must be positive"
        );
        let big = Limits {
            max_kv_value_bytes: KV_VALUE_CEILING + 1,
            ..Limits::default()
        };
        assert!(big.validate().unwrap_err().contains("max_kv_value_bytes"));
    }

    #[test]
    fn truncation_keeps_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
    }
}
