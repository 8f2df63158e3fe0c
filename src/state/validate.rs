//! Input validation shared by the API (to answer 4xx early) and the state
//! machine (which must never trust a log entry to be well-formed). Pure:
//! every check answers [`Invalid`], one line naming the field and the rule
//! it breaks, which the API sends as a 400's reason and the state machine
//! records as a rejection.

use std::collections::BTreeSet;

use super::types::{NodeSpec, ProbeKind, ServiceKind, ServiceSpec};

/// Longest `update.min_healthy_ms`.
pub const MAX_MIN_HEALTHY_MS: u64 = 3_600_000;
/// Largest KV value accepted, as in Consul.
pub const MAX_KV_VALUE_BYTES: usize = 512 * 1024;
/// Largest KV key accepted.
pub const MAX_KV_KEY_BYTES: usize = 1024;
/// Upper bound on a service's replicas.
pub const MAX_REPLICAS: u32 = 1000;

/// An input that is not valid. Its text is the whole message, shown as is
/// to whoever sent the input (a 400's reason, a CLI line, a rejected log
/// entry), so it must stay stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

impl Invalid {
    pub(crate) fn new(message: impl Into<String>) -> Invalid {
        Invalid(message.into())
    }

    /// The message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The message: what [`super::Outcome::Rejected`] and callers that carry
/// text (the cluster file's and the agent config's checks) keep.
impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.0
    }
}

/// Reads as its message, so callers match on the text (`contains`) as
/// they did when checks answered a `String`.
impl std::ops::Deref for Invalid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Checks that `value` is a DNS label (RFC 1123): 1–63 of `[a-z0-9-]`, not
/// starting or ending with `-`. `what` names the field in the error.
pub fn dns_label(what: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{what} {value:?} is not a DNS label (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')"
        )))
    }
}

/// Checks a KV key and value size.
pub fn kv_key(key: &str) -> Result<(), Invalid> {
    if key.is_empty() {
        return Err(Invalid::new("key must not be empty"));
    }
    if key.len() > MAX_KV_KEY_BYTES {
        return Err(Invalid(format!(
            "key is longer than {MAX_KV_KEY_BYTES} bytes"
        )));
    }
    if key.starts_with('/') {
        return Err(Invalid::new("key must not start with '/'"));
    }
    Ok(())
}

pub fn kv_value(value: &[u8]) -> Result<(), Invalid> {
    if value.len() > MAX_KV_VALUE_BYTES {
        return Err(Invalid(format!(
            "value is {} bytes; the limit is {MAX_KV_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a service spec for everything that does not depend on state.
pub fn service_spec(spec: &ServiceSpec) -> Result<(), Invalid> {
    if spec.kind == ServiceKind::External {
        if !spec.secret_env.is_empty() {
            return Err(Invalid::new(
                "an external service runs no container: secret_env is not allowed",
            ));
        }
        return external_spec(spec);
    }
    if !spec.addresses.is_empty() || spec.hostname.is_some() {
        return Err(Invalid::new(
            "spec.addresses and spec.hostname are for kind = \"external\" services",
        ));
    }
    if spec.image.trim().is_empty() {
        return Err(Invalid::new("spec.image must not be empty"));
    }
    if spec.replicas > MAX_REPLICAS {
        return Err(Invalid(format!(
            "spec.replicas must be at most {MAX_REPLICAS}"
        )));
    }
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for port in &spec.ports {
        dns_label("port name", &port.name)?;
        if port.container_port == 0 {
            return Err(Invalid(format!(
                "port {:?}: container_port must be 1-65535",
                port.name
            )));
        }
        if !names.insert(port.name.as_str()) {
            return Err(Invalid(format!("port name {:?} is used twice", port.name)));
        }
        if let Some(host_port) = port.host_port {
            if host_port == 0 {
                return Err(Invalid(format!(
                    "port {:?}: host_port must be 1-65535",
                    port.name
                )));
            }
            if !host_ports.insert((host_port, port.protocol.as_str())) {
                return Err(Invalid(format!(
                    "port {:?}: host_port {host_port} is published twice",
                    port.name
                )));
            }
        }
    }
    for key in spec.env.keys().chain(spec.secret_env.0.keys()) {
        if key.is_empty() || key.contains('=') {
            return Err(Invalid(format!(
                "env name {key:?} must be non-empty and contain no '='"
            )));
        }
    }
    if let Some(name) = spec.secret_env.names().find(|n| spec.env.contains_key(*n)) {
        return Err(Invalid(format!("{name:?} is in both env and secret_env")));
    }
    if let Some(health) = &spec.health {
        if !names.contains(health.port.as_str()) {
            return Err(Invalid(format!(
                "health.port {:?} names no port of this service",
                health.port
            )));
        }
        if health.interval_ms == 0 || health.timeout_ms == 0 {
            return Err(Invalid::new(
                "health.interval_ms and health.timeout_ms must be positive",
            ));
        }
    }
    if spec.restart.initial_backoff_ms > spec.restart.max_backoff_ms {
        return Err(Invalid::new(
            "restart.initial_backoff_ms must not exceed restart.max_backoff_ms",
        ));
    }
    if spec.update.max_parallel == 0 {
        return Err(Invalid::new("update.max_parallel must be at least 1"));
    }
    if spec.update.canary > 0 && spec.update.canary >= spec.replicas.max(1) {
        return Err(Invalid::new(
            "update.canary must be fewer than the replicas (the rest keep the previous version until promoted)",
        ));
    }
    if spec.update.max_surge > MAX_REPLICAS {
        return Err(Invalid::new(format!(
            "update.max_surge must be at most {MAX_REPLICAS}"
        )));
    }
    if spec.update.max_surge > 0 && (!spec.volumes.is_empty() || spec.holds_host_ports()) {
        return Err(Invalid::new(
            "update.max_surge needs a service without volumes or fixed host ports: those belong to one slot",
        ));
    }
    if spec.update.min_healthy_ms > MAX_MIN_HEALTHY_MS {
        return Err(Invalid::new(format!(
            "update.min_healthy_ms must be at most {MAX_MIN_HEALTHY_MS} (an hour)"
        )));
    }
    if !(1..=super::history::MAX_HISTORY).contains(&spec.update.history) {
        return Err(Invalid::new(format!(
            "update.history must be 1 to {}",
            super::history::MAX_HISTORY
        )));
    }
    if let Some(zone) = &spec.placement.zone {
        dns_label("placement.zone", zone)?;
    }
    if let Some(region) = &spec.placement.region {
        dns_label("placement.region", region)?;
    }
    volumes(spec)?;
    hooks(spec)
}

/// Longest a hook may run.
pub const MAX_HOOK_TIMEOUT_SECS: u32 = 3600;
/// At most this many words in a hook's command, each at most this long.
const MAX_HOOK_ARGS: usize = 64;
const MAX_HOOK_ARG_BYTES: usize = 4096;

/// Checks a service's hooks: a command to run, a timeout within reach, and
/// one-shot runs only where they have something to work on.
fn hooks(spec: &ServiceSpec) -> Result<(), Invalid> {
    for (kind, hook) in spec.hooks.all() {
        let what = format!("hooks.{}", kind.name());
        if hook.command.is_empty() || hook.command[0].is_empty() {
            return Err(Invalid(format!("{what}.command names no program")));
        }
        if hook.command.len() > MAX_HOOK_ARGS
            || hook
                .command
                .iter()
                .any(|arg| arg.len() > MAX_HOOK_ARG_BYTES)
        {
            return Err(Invalid(format!(
                "{what}.command has at most {MAX_HOOK_ARGS} words of at most {MAX_HOOK_ARG_BYTES} bytes"
            )));
        }
        if hook.command.iter().any(|arg| arg.contains('\0')) {
            return Err(Invalid(format!("{what}.command holds a NUL byte")));
        }
        if hook.timeout_secs == 0 || hook.timeout_secs > MAX_HOOK_TIMEOUT_SECS {
            return Err(Invalid(format!(
                "{what}.timeout_secs must be between 1 and {MAX_HOOK_TIMEOUT_SECS}"
            )));
        }
    }
    Ok(())
}

/// At most this many volumes per service.
pub const MAX_VOLUMES: usize = 16;
/// At most this many driver options per volume, each (name and value) at
/// most this long.
const MAX_VOLUME_OPTIONS: usize = 32;
const MAX_VOLUME_OPTION_BYTES: usize = 1024;

/// The types of storage the `local` volume driver may mount: network file
/// systems and memory. Anything else (`none` with `o=bind`, a block
/// device) would hand a container a piece of the node's own disk.
const LOCAL_DRIVER_TYPES: &[&str] = &["nfs", "nfs4", "cifs", "tmpfs"];

/// Checks a service's volumes: named volumes only — DNS-label names and
/// absolute mount paths, each once — whose driver and options never
/// mount a path of the node itself.
fn volumes(spec: &ServiceSpec) -> Result<(), Invalid> {
    if spec.volumes.len() > MAX_VOLUMES {
        return Err(Invalid(format!(
            "a service has at most {MAX_VOLUMES} volumes"
        )));
    }
    let mut names = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for volume in &spec.volumes {
        dns_label("volume name", &volume.name)?;
        if !names.insert(volume.name.as_str()) {
            return Err(Invalid(format!("volume {:?} is named twice", volume.name)));
        }
        let what = format!("volume {:?}", volume.name);
        let mount = volume.mount.as_str();
        let clean = mount.starts_with('/')
            && mount != "/"
            && mount.len() <= 255
            && !mount.ends_with('/')
            && !mount
                .chars()
                .any(|c| c.is_control() || c == ':' || c == ',' || c == '\\')
            && mount
                .split('/')
                .skip(1)
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !clean {
            return Err(Invalid(format!(
                "{what}: mount {mount:?} must be an absolute path inside the container (not \"/\", no \"..\", ':' or ',')"
            )));
        }
        if !mounts.insert(mount) {
            return Err(Invalid(format!("{what}: mount {mount:?} is used twice")));
        }
        let driver_ok = !volume.driver.is_empty()
            && volume.driver.len() <= 128
            && volume
                .driver
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
        if !driver_ok {
            return Err(Invalid(format!(
                "{what}: driver {:?} is not a volume driver name",
                volume.driver
            )));
        }
        if volume.options.len() > MAX_VOLUME_OPTIONS {
            return Err(Invalid(format!(
                "{what}: at most {MAX_VOLUME_OPTIONS} driver options"
            )));
        }
        for (key, value) in &volume.options {
            if key.len() + value.len() > MAX_VOLUME_OPTION_BYTES {
                return Err(Invalid(format!(
                    "{what}: option {key:?} is longer than {MAX_VOLUME_OPTION_BYTES} bytes"
                )));
            }
            if key.is_empty() || key.chars().chain(value.chars()).any(char::is_control) {
                return Err(Invalid(format!(
                    "{what}: option {key:?} must be a non-empty name without control characters"
                )));
            }
        }
        if volume.driver == "local" && !volume.options.is_empty() {
            let kind = volume.options.get("type").map(String::as_str);
            if !kind.is_some_and(|k| LOCAL_DRIVER_TYPES.contains(&k)) {
                return Err(Invalid(format!(
                    "{what}: the local driver's options may only mount network storage or memory (type {}); a path of the node is never mounted",
                    LOCAL_DRIVER_TYPES.join(", ")
                )));
            }
            if volume
                .options
                .get("o")
                .is_some_and(|o| o.split(',').any(|flag| flag.trim().ends_with("bind")))
            {
                return Err(Invalid(format!(
                    "{what}: bind mounts of the node's paths are not volumes"
                )));
            }
        }
    }
    Ok(())
}

/// Checks an HTTP health check's path: absolute (`/…`) and free of
/// whitespace and control characters, so the probe URL
/// `http://<instance address>:<port><path>` can only name that instance
/// (`@host:port/` would turn the address into user info and go elsewhere).
pub fn health_path(path: &str) -> Result<(), Invalid> {
    if !path.starts_with('/') {
        return Err(Invalid(format!(
            "health.path {path:?} must start with '/' (a path on the instance, e.g. /health)"
        )));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid(format!(
            "health.path {path:?} must not contain whitespace or control characters"
        )));
    }
    Ok(())
}

/// A container service's image must be a reference an engine can pull:
/// checked like [`health_rules`] (the API, and entries under limits), so
/// older entries replay as they were applied.
pub fn image_rules(spec: &ServiceSpec) -> Result<(), Invalid> {
    if spec.kind != ServiceKind::Container {
        return Ok(());
    }
    super::image_catalog::Reference::parse(&spec.image)
        .map(|_| ())
        .map_err(|reason| Invalid(format!("spec.image: {reason}")))
}

/// Rules of a service spec added after the first release. The API checks
/// them, and the state machine for entries written under limits
/// ([`super::Command::WithLimits`]), so older log entries replay as they
/// were first applied.
pub fn health_rules(spec: &ServiceSpec) -> Result<(), Invalid> {
    let Some(health) = &spec.health else {
        return Ok(());
    };
    if health.kind == ProbeKind::Http {
        health_path(&health.path)?;
    }
    if health.timeout_ms > health.interval_ms {
        return Err(Invalid(format!(
            "health.timeout_ms ({}) must not exceed health.interval_ms ({}): a probe ends before the next is due",
            health.timeout_ms, health.interval_ms
        )));
    }
    Ok(())
}

fn external_spec(spec: &ServiceSpec) -> Result<(), Invalid> {
    if !spec.image.is_empty()
        || !spec.command.is_empty()
        || spec.health.is_some()
        || !spec.volumes.is_empty()
        || spec.hooks.all().next().is_some()
    {
        return Err(Invalid::new(
            "an external service runs no containers: no image, command, health check, volumes or hooks",
        ));
    }
    match (&spec.hostname, spec.addresses.is_empty()) {
        (Some(_), false) => {
            return Err(Invalid::new(
                "an external service has either addresses or a hostname, not both",
            ))
        }
        (None, true) => {
            return Err(Invalid::new(
                "an external service needs addresses or a hostname",
            ))
        }
        _ => {}
    }
    for address in &spec.addresses {
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(Invalid(format!("address {address:?} is not an IP address")));
        }
    }
    if let Some(hostname) = &spec.hostname {
        let name = hostname.trim_end_matches('.');
        if name.is_empty()
            || name.len() > 253
            || name.split('.').any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            return Err(Invalid(format!("hostname {hostname:?} is not a DNS name")));
        }
    }
    let mut names = BTreeSet::new();
    for port in &spec.ports {
        dns_label("port name", &port.name)?;
        if !names.insert(port.name.as_str()) {
            return Err(Invalid(format!("port name {:?} is used twice", port.name)));
        }
    }
    Ok(())
}

/// Longest token id accepted.
pub const MAX_TOKEN_ID_CHARS: usize = 32;
/// Longest token name accepted.
pub const MAX_TOKEN_NAME_CHARS: usize = 128;

/// Checks a token's public id: 1-32 of `[a-z0-9]`, so it can sit in a URL
/// path and a log line without escaping.
pub fn token_id(id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TOKEN_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "token id {id:?} must be 1-{MAX_TOKEN_ID_CHARS} characters of a-z and 0-9"
        )))
    }
}

/// Checks a token's name (a free-text label for people).
/// At most this many namespaces, and as many KV prefixes, per token.
pub const MAX_TOKEN_LIMITS: usize = 32;

/// A limited token's namespaces and KV prefixes: DNS labels and key
/// prefixes, sorted without duplicates, not both empty, and never on an
/// admin token (it manages tokens and membership, which no namespace holds).
pub fn token_limits(role: super::Role, limits: &super::TokenLimits) -> Result<(), Invalid> {
    if role == super::Role::Admin {
        return Err(Invalid::new(
            "an admin token cannot be limited to namespaces or KV prefixes",
        ));
    }
    if limits.namespaces.is_empty() && limits.kv_prefixes.is_empty() {
        return Err(Invalid::new(
            "a limited token needs at least one namespace or KV prefix",
        ));
    }
    for (what, list) in [
        ("namespaces", &limits.namespaces),
        ("KV prefixes", &limits.kv_prefixes),
    ] {
        if list.len() > MAX_TOKEN_LIMITS {
            return Err(Invalid(format!(
                "a token may be limited to at most {MAX_TOKEN_LIMITS} {what}"
            )));
        }
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Invalid(format!("{what} must be sorted and distinct")));
        }
    }
    for namespace in &limits.namespaces {
        dns_label("namespace", namespace)?;
    }
    for prefix in &limits.kv_prefixes {
        kv_key(prefix).map_err(|e| Invalid(format!("KV prefix {prefix:?}: {}", e.0)))?;
    }
    Ok(())
}

pub fn token_name(name: &str) -> Result<(), Invalid> {
    if name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return Err(Invalid(format!(
            "token name is longer than {MAX_TOKEN_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::new(
            "token name must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a node spec.
pub fn node_spec(spec: &NodeSpec) -> Result<(), Invalid> {
    let endpoint = spec.docker_endpoint.as_str();
    let known = ["unix://", "tcp://", "http://", "https://", "tcp+tls://"];
    if !known.iter().any(|scheme| endpoint.starts_with(scheme)) {
        return Err(Invalid(format!(
            "docker_endpoint {endpoint:?} must start with one of {}",
            known.join(", ")
        )));
    }
    if spec.provider.is_empty() {
        return Err(Invalid::new("provider must not be empty"));
    }
    let tls_endpoint = endpoint.starts_with("https://") || endpoint.starts_with("tcp+tls://");
    match &spec.docker_tls {
        None if tls_endpoint => {
            return Err(Invalid(format!(
                "docker_endpoint {endpoint:?} is TLS: docker_tls (ca_cert, cert, key) is required"
            )))
        }
        Some(_) if !tls_endpoint => {
            return Err(Invalid(format!(
                "docker_tls is given but docker_endpoint {endpoint:?} is not https:// or tcp+tls://"
            )))
        }
        Some(tls) => {
            for (field, path) in [
                ("ca_cert", &tls.ca_cert),
                ("cert", &tls.cert),
                ("key", &tls.key),
            ] {
                if path.trim().is_empty() {
                    return Err(Invalid(format!("docker_tls.{field} must name a PEM file")));
                }
            }
        }
        None => {}
    }
    if let Some(zone) = &spec.zone {
        dns_label("zone", zone)?;
    }
    if let Some(region) = &spec.region {
        dns_label("region", region)?;
    }
    Ok(())
}

/// A spec entering the state holds sealed secrets only: the API seals them,
/// so a clear value here would mean a path that forgot to.
pub fn secrets_sealed(spec: &ServiceSpec) -> Result<(), Invalid> {
    match spec
        .secret_env
        .0
        .iter()
        .find(|(_, value)| !crate::secrets::is_sealed(value))
    {
        Some((name, _)) => Err(Invalid(format!(
            "secret_env {name:?} is not sealed; secrets are accepted through the API only"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_volumes(volumes: serde_json::Value) -> Result<(), Invalid> {
        let spec: ServiceSpec =
            serde_json::from_value(serde_json::json!({"image": "x", "volumes": volumes})).unwrap();
        service_spec(&spec)
    }

    #[test]
    fn fixed_host_ports_are_ports_and_published_once() {
        let with_ports = |ports: serde_json::Value| -> Result<(), Invalid> {
            let spec: ServiceSpec =
                serde_json::from_value(serde_json::json!({"image": "x", "ports": ports})).unwrap();
            service_spec(&spec)
        };
        let good = serde_json::json!([
            {"name": "client", "container_port": 2379, "host_port": 12379},
            {"name": "dns", "container_port": 53, "protocol": "udp", "host_port": 12379},
        ]);
        assert_eq!(with_ports(good), Ok(()));
        let twice = serde_json::json!([
            {"name": "a", "container_port": 1, "host_port": 9000},
            {"name": "b", "container_port": 2, "host_port": 9000},
        ]);
        assert!(with_ports(twice)
            .unwrap_err()
            .to_string()
            .contains("published twice"));
        let zero = serde_json::json!([{"name": "a", "container_port": 1, "host_port": 0}]);
        assert!(with_ports(zero).is_err());
    }

    #[test]
    fn hooks_name_a_program_and_a_bounded_timeout() {
        let with_hooks = |hooks: serde_json::Value| -> Result<(), Invalid> {
            let spec: ServiceSpec =
                serde_json::from_value(serde_json::json!({"image": "x", "hooks": hooks})).unwrap();
            service_spec(&spec)
        };
        let good = serde_json::json!({
            "backup": {"command": ["sh", "-c", "cat /data/f"]},
            "restore": {"command": ["sh", "-c", "cat > /data/f"], "run": "oneshot", "timeout_secs": 600},
        });
        assert_eq!(with_hooks(good), Ok(()));
        for bad in [
            serde_json::json!({"test": {"command": []}}),
            serde_json::json!({"test": {"command": [""]}}),
            serde_json::json!({"stop": {"command": ["x"], "timeout_secs": 0}}),
            serde_json::json!({"start": {"command": ["x"], "timeout_secs": 3601}}),
            serde_json::json!({"start": {"command": ["a\u{0}b"]}}),
        ] {
            let err = with_hooks(bad.clone()).unwrap_err();
            assert!(err.to_string().starts_with("hooks."), "{bad}: {err}");
        }
        let unknown: Result<ServiceSpec, _> = serde_json::from_value(
            serde_json::json!({"image": "x", "hooks": {"upgrade": {"command": ["x"]}}}),
        );
        assert!(unknown.is_err(), "an unknown hook is refused");
        let external: ServiceSpec = serde_json::from_value(serde_json::json!({
            "kind": "external", "addresses": ["10.0.0.1"],
            "hooks": {"test": {"command": ["true"]}},
        }))
        .unwrap();
        assert!(
            service_spec(&external).is_err(),
            "an external service runs no hooks"
        );
    }

    #[test]
    fn volumes_are_named_and_never_a_path_of_the_node() {
        let good = serde_json::json!([
            {"name": "data", "mount": "/var/lib/data"},
            {"name": "cache", "mount": "/cache", "driver": "local", "options": {"type": "tmpfs", "device": "tmpfs"}},
            {"name": "shared", "mount": "/shared", "options": {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/export/app"}},
            {"name": "plugin", "mount": "/p", "driver": "rexray/ebs", "options": {"size": "10"}},
        ]);
        assert_eq!(with_volumes(good), Ok(()));
        for bad in [
            serde_json::json!([{"name": "Data", "mount": "/d"}]),
            serde_json::json!([{"name": "d", "mount": "d"}]),
            serde_json::json!([{"name": "d", "mount": "/"}]),
            serde_json::json!([{"name": "d", "mount": "/a/../etc"}]),
            serde_json::json!([{"name": "d", "mount": "/a:/b"}]),
            serde_json::json!([{"name": "d", "mount": "/a"}, {"name": "d", "mount": "/b"}]),
            serde_json::json!([{"name": "d", "mount": "/a"}, {"name": "e", "mount": "/a"}]),
            serde_json::json!([{"name": "d", "mount": "/a", "driver": ""}]),
            // A bind mount of the node's own path through the local driver.
            serde_json::json!([{"name": "d", "mount": "/a", "options": {"type": "none", "o": "bind", "device": "/etc"}}]),
            serde_json::json!([{"name": "d", "mount": "/a", "options": {"type": "nfs", "o": "rbind", "device": "/etc"}}]),
            serde_json::json!([{"name": "d", "mount": "/a", "options": {"device": "/dev/sda1"}}]),
        ] {
            assert!(with_volumes(bad.clone()).is_err(), "{bad}");
        }
        // Host paths are no field at all.
        let host: Result<ServiceSpec, _> = serde_json::from_value(
            serde_json::json!({"image": "x", "volumes": [{"name": "d", "mount": "/a", "host_path": "/etc"}]}),
        );
        assert!(host.is_err());
    }

    #[test]
    fn a_slot_waits_for_its_node_only_with_local_data_and_no_move_empty() {
        let spec = |volumes: serde_json::Value, on_node_loss: &str| -> ServiceSpec {
            serde_json::from_value(
                serde_json::json!({"image": "x", "volumes": volumes, "on_node_loss": on_node_loss}),
            )
            .unwrap()
        };
        let local = serde_json::json!([{"name": "d", "mount": "/d"}]);
        let nfs = serde_json::json!([{"name": "d", "mount": "/d", "options": {"type": "nfs", "device": ":/x"}}]);
        assert!(spec(local.clone(), "wait").waits_for_its_node());
        assert!(!spec(local, "move-empty").waits_for_its_node());
        assert!(!spec(nfs, "wait").waits_for_its_node());
        assert!(!spec(serde_json::json!([]), "wait").waits_for_its_node());
    }

    #[test]
    fn dns_labels() {
        for good in ["a", "echo", "demo-1", "x".repeat(63).as_str()] {
            assert!(dns_label("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "x".repeat(64).as_str(),
            "é",
        ] {
            assert!(dns_label("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kv_limits() {
        assert!(kv_key("a/b").is_ok());
        assert!(kv_key("").is_err());
        // The text is what a 400 answers and what a rejected entry records.
        assert_eq!(
            kv_key("/a").unwrap_err().to_string(),
            "key must not start with '/'"
        );
        assert_eq!(
            String::from(kv_key("/a").unwrap_err()),
            "key must not start with '/'"
        );
        assert!(kv_value(&vec![0; MAX_KV_VALUE_BYTES]).is_ok());
        assert!(kv_value(&vec![0; MAX_KV_VALUE_BYTES + 1]).is_err());
    }

    fn with_health(health: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "image": "echo",
            "ports": [{"name": "http", "container_port": 8080}],
            "health": health,
        }))
        .unwrap()
    }

    #[test]
    fn health_paths_must_be_absolute() {
        assert!(health_rules(&with_health(serde_json::json!({"port": "http"}))).is_ok());
        assert!(health_rules(&with_health(
            serde_json::json!({"port": "http", "path": "/ready?x=1"})
        ))
        .is_ok());
        for bad in [
            "@127.0.0.1:2375/",
            "http://10.0.0.1/",
            "health",
            "",
            "/a b",
            "/a\r\nHost: x",
        ] {
            let error = health_rules(&with_health(
                serde_json::json!({"port": "http", "path": bad}),
            ))
            .expect_err(bad);
            assert!(error.contains("health.path"), "{error}");
        }
        // A TCP probe has no path to check.
        assert!(health_rules(&with_health(
            serde_json::json!({"port": "http", "kind": "tcp", "path": "x"})
        ))
        .is_ok());
    }

    #[test]
    fn a_health_timeout_longer_than_the_interval_is_refused() {
        let error = health_rules(&with_health(
            serde_json::json!({"port": "http", "interval_ms": 1000, "timeout_ms": 600000}),
        ))
        .unwrap_err();
        assert!(error.contains("health.timeout_ms"), "{error}");
        assert!(health_rules(&with_health(
            serde_json::json!({"port": "http", "interval_ms": 1000, "timeout_ms": 1000}),
        ))
        .is_ok());
    }

    #[test]
    fn token_ids_and_names() {
        for good in ["a", "0f3a9c2b71de", "x".repeat(32).as_str()] {
            assert!(token_id(good).is_ok(), "{good}");
        }
        for bad in ["", "A1", "a.b", "a/b", "a-b", "x".repeat(33).as_str()] {
            assert!(token_id(bad).is_err(), "{bad}");
        }
        assert!(token_name("").is_ok());
        assert!(token_name("ci deploys").is_ok());
        assert!(token_name("a\nb").is_err());
        assert!(token_name(&"n".repeat(129)).is_err());
    }
}
