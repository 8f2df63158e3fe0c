//! `raftvisor compose up|down FILE`: a docker-compose file read as
//! raftvisor services in one namespace. [`plan`] maps it (pure): image,
//! command, environment, ports, healthcheck, `deploy.replicas`,
//! `deploy.resources.limits` and `depends_on` (the deploy order); every
//! key it cannot map is named in [`Plan::unmapped`] with the reason, so
//! nothing is dropped without a word. The CLI refuses a file with unmapped
//! keys unless told to ignore them, then deploys in dependency order,
//! waiting for each service's dependencies to converge first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use serde_norway::Value as Yaml;

use crate::client::Client;
use crate::state::{validate, ServiceSpec};

/// One compose service as raftvisor will run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The compose name as written.
    pub compose_name: String,
    /// The raftvisor service name (a DNS label).
    pub name: String,
    pub spec: ServiceSpec,
    /// raftvisor names of the services it depends on.
    pub depends_on: Vec<String>,
}

/// A compose file mapped: services in deploy order, and what was not mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub namespace: String,
    pub services: Vec<Planned>,
    /// `(key path, why)` of every key left out.
    pub unmapped: Vec<(String, String)>,
}

/// Top-level keys and why they are left out.
fn top_level_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "services" | "name" => return None,
        "version" => "obsolete in the compose specification; nothing to map",
        "volumes" => return None,
        "networks" => {
            "services reach each other by DNS (<name>.<namespace>.svc), not compose networks"
        }
        "configs" | "secrets" => "use the spec's env and secret_env instead",
        _ => "not part of what raftvisor maps",
    })
}

fn text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A compose duration (`30s`, `1m30s`, `500ms`) in milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let amount: f64 = number.parse().ok()?;
        let factor = match unit {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" => 0.001,
            _ => return None,
        };
        total += (amount * factor) as u64;
        rest = tail;
    }
    Some(total)
}

/// Splits a command string as a POSIX shell would split words (quotes,
/// backslashes; no expansion).
fn split_words(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in {command:?}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The raftvisor name of a compose name: lowercase, `_` and `.` as `-`.
pub fn service_name(compose: &str) -> Result<String, String> {
    let name: String = compose
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    validate::dns_label("service name", &name)
        .map_err(|e| format!("compose service {compose:?}: {e}"))?;
    Ok(name)
}

/// A port of a compose service: short (`"8080"`, `"8081:8080"`,
/// `"127.0.0.1:8081:8080/udp"`) or long form.
fn port(value: &Yaml, at: &str, unmapped: &mut Vec<(String, String)>) -> Result<Value, String> {
    let (target, protocol, name, published) = match value {
        Yaml::Mapping(map) => {
            let get = |k: &str| map.get(Yaml::String(k.into())).and_then(text);
            let target =
                get("target").ok_or_else(|| format!("{at}: a long-form port needs target"))?;
            (target, get("protocol"), get("name"), get("published"))
        }
        other => {
            let spec =
                text(other).ok_or_else(|| format!("{at}: a port is a string or a mapping"))?;
            let (spec, protocol) = match spec.split_once('/') {
                Some((spec, protocol)) => (spec.to_string(), Some(protocol.to_string())),
                None => (spec, None),
            };
            let parts: Vec<&str> = spec.rsplitn(2, ':').collect();
            let target = parts[0].to_string();
            (target, protocol, None, parts.get(1).map(|p| p.to_string()))
        }
    };
    if target.contains('-') {
        return Err(format!("{at}: port ranges ({target}) are not mapped"));
    }
    let container_port: u16 = target
        .parse()
        .map_err(|_| format!("{at}: {target:?} is not a port number"))?;
    if let Some(published) = published {
        unmapped.push((
            format!("{at} (published {published})"),
            "raftvisor chooses host ports; find them by DNS SRV or the catalog".into(),
        ));
    }
    let protocol = protocol.unwrap_or_else(|| "tcp".into());
    let name = name.unwrap_or_else(|| format!("p{container_port}"));
    Ok(json!({"name": name, "container_port": container_port, "protocol": protocol}))
}

/// A compose healthcheck as an HTTP or TCP check when its test names one
/// (`curl … http://localhost:PORT/path`, `wget … http://…`, `nc -z … PORT`).
fn health(
    check: &serde_norway::Mapping,
    ports: &[Value],
    at: &str,
) -> Result<Option<Value>, String> {
    let get = |k: &str| check.get(Yaml::String(k.into()));
    if get("disable").and_then(Yaml::as_bool) == Some(true) {
        return Ok(None);
    }
    let words: Vec<String> = match get("test") {
        Some(Yaml::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(other) => text(other)
            .map(|t| vec!["CMD-SHELL".into(), t])
            .unwrap_or_default(),
        None => return Err(format!("{at}: a healthcheck needs a test")),
    };
    let command: Vec<String> = match words.first().map(String::as_str) {
        Some("NONE") => return Ok(None),
        Some("CMD") => words[1..].to_vec(),
        Some("CMD-SHELL") => split_words(&words[1..].join(" "))?,
        _ => words.clone(),
    };
    let port_named = |number: u16| {
        ports
            .iter()
            .find(|p| p["container_port"] == number)
            .and_then(|p| p["name"].as_str().map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "{at}: the healthcheck probes port {number}, which `ports` does not declare"
                )
            })
    };
    let mut probe = None;
    if let Some(url) = command.iter().find(|w| w.starts_with("http://")) {
        let rest = &url["http://".len()..];
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let number = authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(80);
        let path = if path.is_empty() { "/" } else { path };
        probe = Some(json!({"kind": "http", "port": port_named(number)?, "path": path}));
    } else if command.first().is_some_and(|c| c == "nc") && command.iter().any(|w| w == "-z") {
        if let Some(number) = command.last().and_then(|p| p.parse().ok()) {
            probe = Some(json!({"kind": "tcp", "port": port_named(number)?}));
        }
    }
    let Some(mut probe) = probe else {
        return Err(format!(
            "{at}: test {command:?} is neither an HTTP request (curl/wget http://…) nor `nc -z HOST PORT`; raftvisor probes from outside the container"
        ));
    };
    for (key, field) in [("interval", "interval_ms"), ("timeout", "timeout_ms")] {
        if let Some(value) = get(key).and_then(text) {
            let ms = duration_ms(&value)
                .ok_or_else(|| format!("{at}.{key}: {value:?} is not a duration"))?;
            probe[field] = json!(ms);
        }
    }
    if let Some(retries) = get("retries").and_then(Yaml::as_u64) {
        probe["retries"] = json!(retries);
    }
    Ok(Some(probe))
}

/// Maps one compose service; keys it cannot map go to `unmapped`.
/// A named volume the file declares at the top level: its driver and
/// driver options (`None`: the `local` driver without options).
#[derive(Debug, Clone, Default)]
struct DeclaredVolume {
    driver: Option<String>,
    options: BTreeMap<String, String>,
}

/// The top-level `volumes:` of the file: what each named volume is made
/// with. Keys raftvisor cannot honour (`external`, `name`, `labels`) are
/// named in `unmapped`.
fn declared_volumes(
    top: &serde_norway::Mapping,
    unmapped: &mut Vec<(String, String)>,
) -> BTreeMap<String, DeclaredVolume> {
    let mut declared = BTreeMap::new();
    let Some(Yaml::Mapping(volumes)) = top.get(Yaml::String("volumes".into())) else {
        return declared;
    };
    for (name, body) in volumes {
        let name = text(name).unwrap_or_default();
        let mut volume = DeclaredVolume::default();
        if let Yaml::Mapping(body) = body {
            for (key, value) in body {
                let key = text(key).unwrap_or_default();
                match (key.as_str(), value) {
                    ("driver", value) => volume.driver = text(value),
                    ("driver_opts", Yaml::Mapping(options)) => {
                        volume.options = options
                            .iter()
                            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                            .collect();
                    }
                    _ => unmapped.push((
                        format!("volumes.{name}.{key}"),
                        "each slot gets a volume of its own, made and named by raftvisor".into(),
                    )),
                }
            }
        }
        declared.insert(name, volume);
    }
    declared
}

/// One entry of a service's `volumes:` as a spec volume, or why not: only
/// a named volume the file declares maps; a host path never does.
fn volume(item: &Yaml, declared: &BTreeMap<String, DeclaredVolume>) -> Result<Value, String> {
    let (source, target, read_only) = match item {
        Yaml::String(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            match parts[..] {
                [source, target] => (source.to_string(), target.to_string(), false),
                [source, target, mode] => (
                    source.to_string(),
                    target.to_string(),
                    mode.split(',').any(|m| m == "ro"),
                ),
                _ => return Err("an anonymous volume has no name to keep its data under".into()),
            }
        }
        Yaml::Mapping(long) => {
            let field = |name: &str| long.get(Yaml::String(name.into())).and_then(text);
            if field("type").as_deref().unwrap_or("volume") != "volume" {
                return Err(
                    "only named volumes map; host paths and tmpfs are never mounted".into(),
                );
            }
            (
                field("source").unwrap_or_default(),
                field("target").unwrap_or_default(),
                field("read_only").as_deref() == Some("true"),
            )
        }
        _ => return Err("a volume is a string or a mapping".into()),
    };
    if source.starts_with('.') || source.starts_with('/') || source.starts_with('~') {
        return Err("a host path is never mounted; declare a named volume".into());
    }
    if read_only {
        return Err("read-only mounts are not supported".into());
    }
    let Some(declared) = declared.get(&source) else {
        return Err(format!(
            "volume {source:?} is not declared under the top-level volumes"
        ));
    };
    let name = service_name(&source).map_err(|e| format!("volume {source:?}: {e}"))?;
    let mut volume = serde_json::json!({"name": name, "mount": target});
    if let Some(driver) = &declared.driver {
        volume["driver"] = Value::String(driver.clone());
    }
    if !declared.options.is_empty() {
        volume["options"] = serde_json::to_value(&declared.options).unwrap_or_default();
    }
    Ok(volume)
}

fn service(
    compose_name: &str,
    body: &serde_norway::Mapping,
    declared: &BTreeMap<String, DeclaredVolume>,
    unmapped: &mut Vec<(String, String)>,
) -> Result<Planned, String> {
    let at = format!("services.{compose_name}");
    let name = service_name(compose_name)?;
    let mut spec = Map::new();
    let mut depends_on = Vec::new();
    let mut ports = Vec::new();
    // Ports first: the healthcheck names one.
    if let Some(Yaml::Sequence(items)) = body.get(Yaml::String("ports".into())) {
        for (i, item) in items.iter().enumerate() {
            ports.push(port(item, &format!("{at}.ports[{i}]"), unmapped)?);
        }
    }
    if let Some(Yaml::Sequence(items)) = body.get(Yaml::String("expose".into())) {
        for (i, item) in items.iter().enumerate() {
            let p = port(item, &format!("{at}.expose[{i}]"), unmapped)?;
            if !ports
                .iter()
                .any(|q| q["container_port"] == p["container_port"])
            {
                ports.push(p);
            }
        }
    }
    for (key, value) in body {
        let key = text(key).unwrap_or_default();
        let here = format!("{at}.{key}");
        match key.as_str() {
            "image" => {
                spec.insert(
                    "image".into(),
                    json!(text(value).ok_or(format!("{here} is a string"))?),
                );
            }
            "command" => {
                let words = match value {
                    Yaml::Sequence(items) => items.iter().filter_map(text).collect(),
                    other => {
                        split_words(&text(other).ok_or(format!("{here} is a string or a list"))?)?
                    }
                };
                spec.insert("command".into(), json!(words));
            }
            "environment" => {
                let mut env = BTreeMap::new();
                match value {
                    Yaml::Mapping(map) => {
                        for (k, v) in map {
                            let k = text(k).unwrap_or_default();
                            match v {
                                Yaml::Null => unmapped.push((
                                    format!("{here}.{k}"),
                                    "a value taken from the shell running compose; write it in the file".into(),
                                )),
                                v => {
                                    env.insert(k, text(v).unwrap_or_default());
                                }
                            }
                        }
                    }
                    Yaml::Sequence(items) => {
                        for item in items.iter().filter_map(text) {
                            match item.split_once('=') {
                                Some((k, v)) => {
                                    env.insert(k.to_string(), v.to_string());
                                }
                                None => unmapped.push((
                                    format!("{here}.{item}"),
                                    "a value taken from the shell running compose; write it in the file".into(),
                                )),
                            }
                        }
                    }
                    _ => return Err(format!("{here} is a mapping or a list")),
                }
                spec.insert("env".into(), json!(env));
            }
            "ports" | "expose" => {}
            "healthcheck" => {
                let Yaml::Mapping(check) = value else {
                    return Err(format!("{here} is a mapping"));
                };
                if let Some(probe) = health(check, &ports, &here)? {
                    spec.insert("health".into(), probe);
                }
            }
            "depends_on" => match value {
                Yaml::Sequence(items) => {
                    for item in items.iter().filter_map(text) {
                        depends_on.push(service_name(&item)?);
                    }
                }
                Yaml::Mapping(map) => {
                    for (dependency, _) in map {
                        depends_on.push(service_name(&text(dependency).unwrap_or_default())?);
                    }
                }
                _ => return Err(format!("{here} is a list or a mapping")),
            },
            "deploy" => {
                let Yaml::Mapping(deploy) = value else {
                    return Err(format!("{here} is a mapping"));
                };
                for (k, v) in deploy {
                    let k = text(k).unwrap_or_default();
                    match (k.as_str(), v) {
                        ("replicas", v) => {
                            let n = v.as_u64().ok_or(format!("{here}.replicas is a number"))?;
                            spec.insert("replicas".into(), json!(n));
                        }
                        ("resources", Yaml::Mapping(resources)) => {
                            for (rk, rv) in resources {
                                let rk = text(rk).unwrap_or_default();
                                let Yaml::Mapping(limits) = rv else { continue };
                                if rk != "limits" {
                                    unmapped.push((
                                        format!("{here}.resources.{rk}"),
                                        "only limits are mapped".into(),
                                    ));
                                    continue;
                                }
                                let mut res = Map::new();
                                for (lk, lv) in limits {
                                    let lk = text(lk).unwrap_or_default();
                                    let lv = text(lv).unwrap_or_default();
                                    match lk.as_str() {
                                        "cpus" => {
                                            let cpus: f64 = lv.parse().map_err(|_| {
                                                format!("{here}.resources.limits.cpus: {lv:?}")
                                            })?;
                                            res.insert(
                                                "cpu_millis".into(),
                                                json!((cpus * 1000.0).round() as u64),
                                            );
                                        }
                                        "memory" => {
                                            res.insert(
                                                "memory_mb".into(),
                                                json!(memory_mb(&lv).ok_or(format!(
                                                    "{here}.resources.limits.memory: {lv:?}"
                                                ))?),
                                            );
                                        }
                                        other => unmapped.push((
                                            format!("{here}.resources.limits.{other}"),
                                            "only cpus and memory are mapped".into(),
                                        )),
                                    }
                                }
                                spec.insert("resources".into(), Value::Object(res));
                            }
                        }
                        (other, _) => unmapped.push((
                            format!("{here}.{other}"),
                            "only deploy.replicas and deploy.resources.limits are mapped".into(),
                        )),
                    }
                }
            }
            "restart" => {
                let policy = text(value).unwrap_or_default();
                if policy == "no" {
                    unmapped.push((
                        here,
                        "raftvisor always restarts what exits (with backoff)".into(),
                    ));
                }
            }
            "container_name" | "hostname" => unmapped.push((
                here,
                "raftvisor names containers itself; find instances by DNS or the catalog".into(),
            )),
            "build" => unmapped.push((
                here,
                "build it with `raftvisor image build` and name it in image".into(),
            )),
            "volumes" => {
                let Yaml::Sequence(items) = value else {
                    return Err(format!("{here} is a list"));
                };
                let mut volumes = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match volume(item, declared) {
                        Ok(volume) => volumes.push(volume),
                        Err(why) => unmapped.push((format!("{here}[{i}]"), why)),
                    }
                }
                if !volumes.is_empty() {
                    spec.insert("volumes".into(), Value::Array(volumes));
                }
            }
            other => unmapped.push((
                format!("{at}.{other}"),
                "not part of what raftvisor maps".into(),
            )),
        }
    }
    if !spec.contains_key("image") {
        return Err(format!(
            "{at} has no image (raftvisor runs images; build one with `raftvisor image build`)"
        ));
    }
    spec.insert("ports".into(), Value::Array(ports));
    let spec: ServiceSpec =
        serde_json::from_value(Value::Object(spec)).map_err(|e| format!("{at}: {e}"))?;
    Ok(Planned {
        compose_name: compose_name.to_string(),
        name,
        spec,
        depends_on,
    })
}

/// `512m`, `1g`, `1.5G`, `1024` (bytes) as MiB.
fn memory_mb(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let amount: f64 = number.parse().ok()?;
    let mib = match unit.trim_end_matches('b') {
        "" => amount / 1_048_576.0,
        "k" => amount / 1024.0,
        "m" => amount,
        "g" => amount * 1024.0,
        _ => return None,
    };
    Some(mib.ceil() as u64)
}

/// Maps the compose file `text`; `namespace` (or the file's `name`) is
/// where the services go.
pub fn plan(text: &str, namespace: Option<&str>) -> Result<Plan, String> {
    let file: Yaml =
        serde_norway::from_str(text).map_err(|e| format!("not a compose file: {e}"))?;
    let Yaml::Mapping(top) = file else {
        return Err("a compose file is a mapping".into());
    };
    let mut unmapped = Vec::new();
    for (key, _) in &top {
        let key = self::text(key).unwrap_or_default();
        if let Some(why) = top_level_reason(&key) {
            unmapped.push((key, why.to_string()));
        }
    }
    let namespace = match namespace {
        Some(ns) => ns.to_string(),
        None => top
            .get(Yaml::String("name".into()))
            .and_then(self::text)
            .ok_or("the file has no `name`: give --namespace")?,
    };
    validate::dns_label("namespace", &namespace).map_err(|e| e.to_string())?;
    let Some(Yaml::Mapping(services)) = top.get(Yaml::String("services".into())) else {
        return Err("the file has no services".into());
    };
    let declared = declared_volumes(&top, &mut unmapped);
    let mut planned = BTreeMap::new();
    for (name, body) in services {
        let name = self::text(name).unwrap_or_default();
        let Yaml::Mapping(body) = body else {
            return Err(format!("services.{name} is a mapping"));
        };
        let service = service(&name, body, &declared, &mut unmapped)?;
        if planned.insert(service.name.clone(), service).is_some() {
            return Err(format!(
                "two compose services map to the same name as {name:?}"
            ));
        }
    }
    for service in planned.values() {
        for dependency in &service.depends_on {
            if !planned.contains_key(dependency) {
                return Err(format!(
                    "services.{} depends on {dependency:?}, which the file does not define",
                    service.compose_name
                ));
            }
        }
    }
    // Dependencies first (Kahn's order, by name among equals).
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < planned.len() {
        let ready: Vec<String> = planned
            .values()
            .filter(|s| {
                !placed.contains(&s.name) && s.depends_on.iter().all(|d| placed.contains(d))
            })
            .map(|s| s.name.clone())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = planned
                .keys()
                .filter(|n| !placed.contains(*n))
                .map(String::as_str)
                .collect();
            return Err(format!("depends_on forms a cycle among {stuck:?}"));
        }
        for name in ready {
            placed.insert(name.clone());
            order.push(planned[&name].clone());
        }
    }
    Ok(Plan {
        namespace,
        services: order,
        unmapped,
    })
}

fn read(file: &std::path::Path, namespace: Option<&str>) -> anyhow::Result<Plan> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    plan(&text, namespace).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn describe_unmapped(plan: &Plan) -> String {
    plan.unmapped
        .iter()
        .map(|(key, why)| format!("{key} ({why})"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `compose up`: deploys every service in dependency order; a service
/// with dependencies is deployed once they converged.
pub async fn up(
    client: &Client,
    file: &std::path::Path,
    namespace: Option<&str>,
    ignore_unmapped: bool,
    timeout: Duration,
) -> anyhow::Result<Plan> {
    let plan = read(file, namespace)?;
    if !plan.unmapped.is_empty() {
        if !ignore_unmapped {
            bail!(
                "{} key(s) cannot be mapped (re-run with --ignore-unmapped to deploy without them): {}",
                plan.unmapped.len(),
                describe_unmapped(&plan)
            );
        }
        eprintln!("raftvisor: not mapped: {}", describe_unmapped(&plan));
    }
    let mut versions = BTreeMap::new();
    for service in &plan.services {
        for dependency in &service.depends_on {
            super::rollout::wait(
                client,
                &plan.namespace,
                dependency,
                versions[dependency],
                timeout,
                false,
            )
            .await
            .with_context(|| format!("{} waits for {dependency}", service.name))?;
        }
        let deployed = client
            .service_put(&plan.namespace, &service.name, &service.spec, None)
            .await
            .with_context(|| format!("deploying {}/{}", plan.namespace, service.name))?;
        eprintln!(
            "raftvisor: deployed {}/{} (version {})",
            plan.namespace, service.name, deployed.version
        );
        versions.insert(service.name.clone(), deployed.version);
    }
    Ok(plan)
}

/// `compose down`: removes the file's services, dependents first.
pub async fn down(
    client: &Client,
    file: &std::path::Path,
    namespace: Option<&str>,
) -> anyhow::Result<Plan> {
    let plan = read(file, namespace)?;
    for service in plan.services.iter().rev() {
        match client
            .service_delete(&plan.namespace, &service.name, None)
            .await
        {
            Ok(_) => eprintln!("raftvisor: removed {}/{}", plan.namespace, service.name),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("removing {}/{}", plan.namespace, service.name))
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name: shop
version: "3.8"
services:
  db:
    image: redis:7
    command: redis-server --appendonly "yes please"
    ports: ["6379"]
    healthcheck:
      test: ["CMD", "nc", "-z", "localhost", "6379"]
      interval: 2s
    volumes: ["data:/data", {type: volume, source: cache, target: /cache}]
  web_api:
    image: raftvisor-echo:local
    environment:
      MODE: prod
      FROM_SHELL:
    ports:
      - "8081:8080"
      - target: 9090
        name: admin
    healthcheck:
      test: curl -f http://localhost:8080/health
      interval: 1m30s
      timeout: 500ms
      retries: 5
    depends_on:
      db:
        condition: service_healthy
    deploy:
      replicas: 3
      resources:
        limits: { cpus: "0.5", memory: 256M }
      placement: { constraints: ["node.role==worker"] }
    volumes: ["./data:/data", "data:/ro:ro"]
volumes:
  data: {}
  cache:
    driver: local
    driver_opts: {type: tmpfs, device: tmpfs}
    labels: {team: shop}
"#;

    #[test]
    fn a_compose_file_maps_to_services_in_dependency_order() {
        let plan = plan(FILE, None).unwrap();
        assert_eq!(plan.namespace, "shop");
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web-api"]);
        let db = &plan.services[0].spec;
        assert_eq!(db.command, ["redis-server", "--appendonly", "yes please"]);
        // Named volumes become the slots' volumes, with the declared driver.
        let volumes: Vec<(&str, &str, &str)> = db
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.mount.as_str(), v.driver.as_str()))
            .collect();
        assert_eq!(
            volumes,
            [("data", "/data", "local"), ("cache", "/cache", "local")]
        );
        assert_eq!(db.volumes[1].options["type"], "tmpfs");
        let db_health = db.health.as_ref().unwrap();
        assert_eq!(
            (db_health.port.as_str(), db_health.interval_ms),
            ("p6379", 2000)
        );
        let web = &plan.services[1];
        assert_eq!(web.depends_on, ["db"]);
        assert_eq!(web.spec.replicas, 3);
        assert_eq!(web.spec.env["MODE"], "prod");
        assert_eq!(
            (web.spec.resources.cpu_millis, web.spec.resources.memory_mb),
            (500, 256)
        );
        let ports: Vec<(&str, u16)> = web
            .spec
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.container_port))
            .collect();
        assert_eq!(ports, [("p8080", 8080), ("admin", 9090)]);
        let health = web.spec.health.as_ref().unwrap();
        assert_eq!(
            (
                health.port.as_str(),
                health.path.as_str(),
                health.interval_ms,
                health.timeout_ms,
                health.retries
            ),
            ("p8080", "/health", 90_000, 500, 5)
        );
    }

    #[test]
    fn every_key_left_out_is_named_with_its_reason() {
        let plan = plan(FILE, Some("other")).unwrap();
        assert_eq!(plan.namespace, "other");
        let keys: Vec<&str> = plan.unmapped.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "version",
            "volumes.cache.labels",
            "services.web_api.environment.FROM_SHELL",
            "services.web_api.ports[0] (published 8081)",
            "services.web_api.deploy.placement",
            // A host path, and a read-only mount.
            "services.web_api.volumes[0]",
            "services.web_api.volumes[1]",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cycle = "name: x\nservices:\n  a: {image: i, depends_on: [b]}\n  b: {image: i, depends_on: [a]}\n";
        assert!(plan(cycle, None).unwrap_err().contains("cycle"));
        let missing = "name: x\nservices:\n  a: {image: i, depends_on: [nope]}\n";
        assert!(plan(missing, None).unwrap_err().contains("does not define"));
        let no_image = "name: x\nservices:\n  a: {build: .}\n";
        assert!(plan(no_image, None).unwrap_err().contains("no image"));
        let shell_check = "name: x\nservices:\n  a:\n    image: i\n    healthcheck: {test: [\"CMD\", \"pg_isready\"]}\n";
        assert!(plan(shell_check, None).unwrap_err().contains("pg_isready"));
        assert!(plan("services: {a: {image: i}}", None)
            .unwrap_err()
            .contains("--namespace"));
        assert!(plan("[1, 2", None).is_err());
    }

    #[test]
    fn durations_and_words_parse_like_compose() {
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("soon"), None);
        assert_eq!(
            split_words(r#"a "b c" 'd e' f\ g"#).unwrap(),
            ["a", "b c", "d e", "f g"]
        );
        assert!(split_words("a \"b").is_err());
        assert_eq!(memory_mb("1g"), Some(1024));
        assert_eq!(memory_mb("512M"), Some(512));
    }
}
