//! `raftvisor namespace export | apply | clone` and `raftvisor topology
//! save | ls | show | rm`: a namespace's deployment as one TOML document
//! (services in deploy order, images pinned, secret values left out),
//! applied to another namespace service by service, cloned server-side in
//! one write, or kept in the cluster with versions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::output::{print, print_line, Format, Table};
use crate::client::Client;
use crate::secrets::REDACTED;
use crate::state::topology::Topology;
use crate::state::ServiceKind;
use crate::wire::{CloneBody, TopologyEntry};

#[derive(Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Print a namespace's topology as TOML: every service's spec in deploy
    /// order, images pinned to their digests, secret values left out.
    Export {
        namespace: String,
        /// A service not duplicated where the topology is applied: it is
        /// exported as a reference (an external service naming the original).
        #[arg(long = "share")]
        share: Vec<String>,
    },
    /// Deploy a topology (a file, or a saved one) as namespace --as,
    /// service by service in its order, each rolled out before the next.
    Apply {
        /// A topology file (TOML, or JSON by its extension).
        #[arg(required_unless_present = "topology", conflicts_with = "topology")]
        file: Option<PathBuf>,
        /// A topology the cluster keeps: NAME or NAME@VERSION.
        #[arg(long)]
        topology: Option<String>,
        /// The namespace to deploy it as.
        #[arg(long = "as")]
        namespace: String,
        /// A secret value the topology leaves out: SERVICE.VARIABLE=VALUE.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// Write every service without waiting for rollouts.
        #[arg(long)]
        no_wait: bool,
        /// How long each service's rollout may take (e.g. 90s, 5m).
        #[arg(long, default_value = "5m", value_parser = super::parse_cli_duration)]
        timeout: Duration,
    },
    /// Clone a namespace into an empty one in one write (server-side:
    /// secrets are copied sealed, volumes start empty).
    Clone {
        from: String,
        to: String,
        /// A service not duplicated: the clone gets an external service
        /// naming the original.
        #[arg(long = "share")]
        share: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopologyCommand {
    /// Save a new version of a named topology: exported from a namespace
    /// (--from) or read from a file.
    Save {
        name: String,
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        file: Option<PathBuf>,
        /// Export this namespace.
        #[arg(long)]
        from: Option<String>,
        /// With --from: services exported as references.
        #[arg(long = "share", requires = "from")]
        share: Vec<String>,
    },
    /// List the saved topologies (their newest versions), or every version
    /// of one.
    Ls { name: Option<String> },
    /// Print a saved topology as TOML (the newest version, or --version).
    Show {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Remove a saved topology and all its versions.
    Rm { name: String },
}

/// The topology as the TOML `namespace export` prints.
pub fn to_toml(topology: &Topology) -> anyhow::Result<String> {
    let body = toml::to_string_pretty(topology).context("cannot write the topology as TOML")?;
    let mut header = String::from("# raftvisor topology");
    if let Some(source) = &topology.source {
        header.push_str(&format!(" of namespace {source}"));
    }
    if let Some(index) = topology.exported_index {
        header.push_str(&format!(", exported at index {index}"));
    }
    header.push_str(
        "\n# Services in deploy order; secret values are left out (give them with\n\
         # `namespace apply --secret SERVICE.VARIABLE=VALUE`).\n",
    );
    Ok(format!("{header}{body}"))
}

/// Fills the secret values a topology left out from `SERVICE.VARIABLE=VALUE`
/// arguments; an error names every one still missing, before anything is
/// written.
fn fill_secrets(topology: &mut Topology, given: &[String]) -> anyhow::Result<()> {
    let mut values = BTreeMap::new();
    for arg in given {
        let Some((key, value)) = arg.split_once('=') else {
            bail!("--secret {arg:?} is not SERVICE.VARIABLE=VALUE");
        };
        values.insert(key.to_string(), value.to_string());
    }
    let mut missing = Vec::new();
    for service in &mut topology.services {
        for (variable, value) in service.spec.secret_env.0.iter_mut() {
            let key = format!("{}.{variable}", service.name);
            match values.remove(&key) {
                Some(given) => *value = given,
                None if value == REDACTED => missing.push(key),
                None => {}
            }
        }
    }
    if let Some(unknown) = values.keys().next() {
        bail!("--secret {unknown}: the topology has no such secret variable");
    }
    if !missing.is_empty() {
        bail!(
            "the topology leaves out secret values; give them with --secret: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `NAME` or `NAME@VERSION`.
fn name_and_version(text: &str) -> anyhow::Result<(String, Option<u64>)> {
    match text.split_once('@') {
        None => Ok((text.to_string(), None)),
        Some((name, version)) => Ok((
            name.to_string(),
            Some(
                version
                    .parse()
                    .with_context(|| format!("{version:?} is not a version number"))?,
            ),
        )),
    }
}

fn entries_table(entries: &[TopologyEntry]) -> Table {
    let mut table = Table::new(&["NAME", "VERSION", "SAVED", "SOURCE", "BY", "SERVICES"]);
    for e in entries {
        table.row(vec![
            e.name.clone(),
            e.version.to_string(),
            crate::dates::short_utc_ms(e.at_ms),
            e.source.clone().unwrap_or_else(|| "-".into()),
            e.actor.clone().unwrap_or_else(|| "-".into()),
            e.services.join(","),
        ]);
    }
    table
}

pub async fn run_namespace(
    client: &Client,
    format: Format,
    command: NamespaceCommand,
) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::Export { namespace, share } => {
            let topology = client.namespace_export(&namespace, &share).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&topology)?),
                Format::Human => print!("{}", to_toml(&topology)?),
            }
        }
        NamespaceCommand::Apply {
            file,
            topology,
            namespace,
            secrets,
            no_wait,
            timeout,
        } => {
            let mut document = match (file, topology) {
                (Some(file), _) => super::read_json_or_toml::<Topology>(&file)?,
                (None, Some(saved)) => {
                    let (name, version) = name_and_version(&saved)?;
                    client
                        .topology(&name, version)
                        .await?
                        .topology
                        .context("the cluster sent no topology")?
                }
                (None, None) => bail!("give a topology file or --topology NAME"),
            };
            document.check().map_err(|e| anyhow::anyhow!(e))?;
            fill_secrets(&mut document, &secrets)?;
            let show_bar =
                format == Format::Human && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut applied = Vec::new();
            for service in &document.services {
                let written = client
                    .service_put(&namespace, &service.name, &service.spec, None)
                    .await
                    .with_context(|| format!("{namespace}/{}", service.name))?;
                if !no_wait && written.spec.kind == ServiceKind::Container {
                    super::rollout::wait(
                        client,
                        &namespace,
                        &service.name,
                        written.version,
                        timeout,
                        show_bar,
                    )
                    .await?;
                }
                applied.push(written);
            }
            print(format, &applied, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "REPLICAS", "IMAGE"]);
                for s in &applied {
                    table.row(vec![
                        format!("{}/{}", s.namespace, s.name),
                        s.version.to_string(),
                        s.spec.replicas.to_string(),
                        s.spec.image.clone(),
                    ]);
                }
                table
            });
        }
        NamespaceCommand::Clone { from, to, share } => {
            let services = client
                .namespace_clone(&from, &CloneBody { to, share })
                .await?;
            print(format, &services, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "KIND", "IMAGE"]);
                for s in &services {
                    table.row(vec![
                        format!("{}/{}", s.namespace, s.name),
                        s.version.to_string(),
                        format!("{:?}", s.spec.kind).to_lowercase(),
                        s.spec
                            .hostname
                            .clone()
                            .unwrap_or_else(|| s.spec.image.clone()),
                    ]);
                }
                table
            });
        }
    }
    Ok(())
}

pub async fn run_topology(
    client: &Client,
    format: Format,
    command: TopologyCommand,
) -> anyhow::Result<()> {
    match command {
        TopologyCommand::Save {
            name,
            file,
            from,
            share,
        } => {
            let topology = match (file, from) {
                (Some(file), _) => super::read_json_or_toml::<Topology>(&file)?,
                (None, Some(namespace)) => client.namespace_export(&namespace, &share).await?,
                (None, None) => bail!("give a topology file or --from NAMESPACE"),
            };
            let saved = client.topology_save(&name, &topology).await?;
            print_line(format, &saved, || {
                format!(
                    "topology {} version {}: {}",
                    saved.name,
                    saved.version,
                    saved.services.join(", ")
                )
            });
        }
        TopologyCommand::Ls { name } => {
            let entries = match name {
                Some(name) => client.topology_versions(&name).await?,
                None => client.topology_list().await?,
            };
            print(format, &entries, || entries_table(&entries));
        }
        TopologyCommand::Show { name, version } => {
            let entry = client.topology(&name, version).await?;
            let topology = entry.topology.clone().unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&entry)?),
                Format::Human => print!("{}", to_toml(&topology)?),
            }
        }
        TopologyCommand::Rm { name } => {
            client.topology_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed topology {name}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::topology::TopologyService;

    fn topology() -> Topology {
        let spec = |extra: serde_json::Value| {
            let mut spec = serde_json::json!({
                "image": "raftvisor-echo@sha256:0123",
                "replicas": 2,
                "env": {"MODE": "a"},
                "ports": [{"name": "http", "container_port": 8080}],
                "health": {"kind": "http", "port": "http", "path": "/ready"},
                "volumes": [{"name": "data", "mount": "/data"}],
            });
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(spec).unwrap()
        };
        Topology {
            source: Some("shop-a".into()),
            exported_index: Some(42),
            services: vec![
                TopologyService {
                    name: "db".into(),
                    spec: spec(serde_json::json!({"secret_env": {"PASSWORD": REDACTED}})),
                },
                TopologyService {
                    name: "web".into(),
                    spec: spec(serde_json::json!({})),
                },
            ],
        }
    }

    #[test]
    fn a_topology_survives_toml_unchanged() {
        let topology = topology();
        let text = to_toml(&topology).unwrap();
        assert!(
            text.starts_with("# raftvisor topology of namespace shop-a"),
            "{text}"
        );
        let back: Topology = crate::config::parse_toml(&text).unwrap();
        assert_eq!(back, topology);
        assert!(text.find("name = \"db\"").unwrap() < text.find("name = \"web\"").unwrap());
    }

    #[test]
    fn secret_values_left_out_must_all_be_given_and_known() {
        let mut t = topology();
        let err = fill_secrets(&mut t, &[]).unwrap_err().to_string();
        assert!(err.contains("db.PASSWORD"), "{err}");
        let err = fill_secrets(&mut t, &["web.X=1".into(), "db.PASSWORD=p".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("web.X"), "{err}");
        fill_secrets(&mut t, &["db.PASSWORD=s3cret".into()]).unwrap();
        assert_eq!(t.services[0].spec.secret_env.0["PASSWORD"], "s3cret");
        assert!(fill_secrets(&mut t, &["nonsense".into()]).is_err());
    }

    #[test]
    fn a_saved_topology_is_named_with_an_optional_version() {
        assert_eq!(name_and_version("shop").unwrap(), ("shop".into(), None));
        assert_eq!(
            name_and_version("shop@12").unwrap(),
            ("shop".into(), Some(12))
        );
        assert!(name_and_version("shop@x").is_err());
    }
}
