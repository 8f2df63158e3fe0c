//! Templates of clustered third-party services (etcd, Redis, a broker):
//! data, not code per product. A template names the image, env, ports and
//! volumes of a member, and the commands that start the seed, start a
//! member that joins, check that a member joined, and make one leave. The
//! cluster keeps each template as the TOML text it was given, checked
//! when it is added (pure: parsing and checking only, no I/O), so `template
//! show` answers exactly what was added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{self, Invalid};
use super::{HookRun, PortSpec, ServiceSpec, VolumeSpec};

/// Largest template text.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most templates the cluster keeps.
pub const MAX_TEMPLATES: usize = 256;

/// A template as its TOML says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// A DNS label: `tps create --template NAME`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The members' image.
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Each member's own volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    pub commands: TemplateCommands,
}

/// What a template runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateCommands {
    /// The first member's command: it starts a cluster of one.
    pub seed: Vec<String>,
    /// Every other member's command: it joins the members before it.
    pub join: Vec<String>,
    /// Run inside a member until it exits 0: the member has joined.
    pub check: Vec<String>,
    /// Run for a member before it is removed: it leaves the cluster.
    #[serde(default)]
    pub leave: Vec<String>,
    /// Where `leave` runs: inside the member (`instance`, the default), or
    /// in a one-shot container of its image, env and volumes beside it
    /// (`oneshot`) — for a product whose member stops as soon as the
    /// cluster let it go, taking an exec inside it along.
    #[serde(default)]
    pub leave_run: HookRun,
}

impl Template {
    /// Parses and checks a template's TOML text.
    pub fn parse(text: &str) -> Result<Template, Invalid> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(Invalid::new(format!(
                "a template is at most {MAX_TEMPLATE_BYTES} bytes"
            )));
        }
        let template: Template = toml::from_str(text).map_err(|e| {
            Invalid::new(format!(
                "not a template: {}",
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })?;
        template.check()?;
        Ok(template)
    }

    fn check(&self) -> Result<(), Invalid> {
        validate::dns_label("template name", &self.name)?;
        if self.description.len() > 1024 {
            return Err(Invalid::new(
                "a template's description is at most 1024 bytes",
            ));
        }
        for (what, command) in [
            ("commands.seed", &self.commands.seed),
            ("commands.join", &self.commands.join),
            ("commands.check", &self.commands.check),
        ] {
            if command.first().is_none_or(String::is_empty) {
                return Err(Invalid::new(format!("{what} names no program")));
            }
        }
        // What a member runs is a service spec: checked as one.
        validate::service_spec(&self.member_spec(&self.commands.join))
    }

    /// The spec of a member running `command` (the seed's or a joiner's).
    pub fn member_spec(&self, command: &[String]) -> ServiceSpec {
        let mut spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "image": self.image,
            "replicas": 1,
        }))
        .expect("a minimal spec parses");
        spec.command = command.to_vec();
        spec.env = self.env.clone();
        spec.ports = self.ports.clone();
        spec.volumes = self.volumes.clone();
        spec
    }
}

/// One template the cluster keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    /// The TOML text as it was added.
    pub text: String,
    /// When it was added or last replaced (ms since the Unix epoch).
    pub added_ms: u64,
}

/// Every template, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBook {
    pub templates: BTreeMap<String, TemplateRecord>,
}

impl super::migrate::FirstVersion for TemplateBook {
    const VERSION_MARKER: &'static [u8] = b"TB01";
}

impl TemplateBook {
    /// Adds (or replaces) the template `text` defines; `name` must be its
    /// own.
    pub fn put(&mut self, name: &str, text: &str, time_ms: u64) -> Result<Template, Invalid> {
        let template = Template::parse(text)?;
        if template.name != name {
            return Err(Invalid::new(format!(
                "the template is named {:?}, not {name:?}",
                template.name
            )));
        }
        if !self.templates.contains_key(name) && self.templates.len() >= MAX_TEMPLATES {
            return Err(Invalid::new(format!(
                "the cluster keeps at most {MAX_TEMPLATES} templates"
            )));
        }
        self.templates.insert(
            name.to_string(),
            TemplateRecord {
                name: name.to_string(),
                text: text.to_string(),
                added_ms: time_ms,
            },
        );
        Ok(template)
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.templates.remove(name).is_some()
    }

    /// The template `name`, parsed.
    pub fn get(&self, name: &str) -> Option<Template> {
        self.templates
            .get(name)
            .and_then(|record| Template::parse(&record.text).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD_LIKE: &str = r#"
name = "kv"
description = "a key-value store, one member per slot"
image = "kv:1"
env = { DATA = "/data" }
ports = [{ name = "client", container_port = 2379 }]
volumes = [{ name = "data", mount = "/data" }]

[commands]
seed = ["kv", "--new"]
join = ["kv", "--join"]
check = ["kvctl", "health"]
leave = ["kvctl", "leave"]
"#;

    #[test]
    fn a_template_is_parsed_checked_and_kept_as_its_text() {
        let mut book = TemplateBook::default();
        let template = book.put("kv", ETCD_LIKE, 7).unwrap();
        assert_eq!(template.commands.check, ["kvctl", "health"]);
        assert_eq!(book.templates["kv"].text, ETCD_LIKE);
        assert_eq!(book.get("kv"), Some(template.clone()));
        let member = template.member_spec(&template.commands.seed);
        assert_eq!(member.command, ["kv", "--new"]);
        assert_eq!((member.replicas, member.volumes.len()), (1, 1));
        assert!(book.remove("kv"));
        assert!(!book.remove("kv"));
    }

    #[test]
    fn a_bad_template_is_refused_with_its_reason() {
        let cases = [
            (
                ETCD_LIKE.replace("name = \"kv\"", "name = \"Not A Label\""),
                "template name",
            ),
            (
                ETCD_LIKE.replace("check = [\"kvctl\", \"health\"]", "check = []"),
                "commands.check",
            ),
            (
                ETCD_LIKE.replace("image = \"kv:1\"", "image = \"\""),
                "image",
            ),
            (
                ETCD_LIKE.replace("mount = \"/data\"", "mount = \"data\""),
                "mount",
            ),
            (
                ETCD_LIKE.replace("[commands]", "surprise = 1\n[commands]"),
                "unknown field",
            ),
            ("not toml at all [".to_string(), "not a template"),
        ];
        for (text, says) in cases {
            let err = Template::parse(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let mut book = TemplateBook::default();
        let err = book.put("other", ETCD_LIKE, 1).unwrap_err().to_string();
        assert!(err.contains("named \"kv\""), "{err}");
        assert!(Template::parse(&"#".repeat(MAX_TEMPLATE_BYTES + 1)).is_err());
    }
}
