//! `raftvisor tps create | resize | rm`: a clustered third-party service
//! made from a template ([`crate::state::templates`]) as one service per
//! member, `<name>-<k>` in its namespace: the seed first, then each member
//! in turn, each waited for until its template's check passed (the
//! member's `test` hook, which its rollout waits for). Member k publishes
//! each template port on the fixed host port `base + k` and finds in its
//! env who it is and where the seed is. Shrinking runs the template's
//! `leave` in each member removed (its stop hook). Only ever calls the API.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::rollout;
use crate::client::Client;
use crate::state::templates::Template;
use crate::state::{Hook, HookRun, ServiceSpec};

#[derive(Subcommand, Debug)]
pub enum TpsCommand {
    /// Create a cluster from a template: the seed, then each member in
    /// turn once the one before it passed its check; a failure removes
    /// the members made (their volumes are kept) and says why.
    Create {
        name: String,
        /// The template (`template ls`).
        #[arg(long)]
        template: String,
        /// How many members.
        #[arg(long)]
        size: u32,
        #[arg(long, default_value = "tps")]
        namespace: String,
        /// How long each member may take to pass its check.
        #[arg(long, default_value = "3m", value_parser = super::parse_cli_duration)]
        timeout: Duration,
    },
    /// Add members the same way, or remove the last ones (each runs the
    /// template's leave first); shrinking a cluster with volumes is
    /// refused unless --force.
    Resize {
        name: String,
        size: u32,
        /// Shrink although the members hold data: the platform cannot know
        /// whether its hand-over finished.
        #[arg(long)]
        force: bool,
        #[arg(long, default_value = "tps")]
        namespace: String,
        #[arg(long, default_value = "3m", value_parser = super::parse_cli_duration)]
        timeout: Duration,
    },
    /// Stop and remove every member; their volumes are kept (a `tps
    /// create` of the same name mounts them again).
    Rm {
        name: String,
        #[arg(long, default_value = "tps")]
        namespace: String,
    },
}

/// The service of member `k` of `name`.
fn member(name: &str, k: u32) -> String {
    format!("{name}-{k}")
}

/// The env name of a port's value (`TPS_PORT_CLIENT` for `client`).
fn port_env(prefix: &str, port: &str) -> String {
    format!("{prefix}{}", port.to_uppercase().replace('-', "_"))
}

/// The spec of member `k`: the template's seed (k = 0) or join command,
/// its ports on `base + k`, its check as the `test` hook, and who it is.
fn member_spec(
    template: &Template,
    name: &str,
    k: u32,
    seed_address: &str,
) -> anyhow::Result<ServiceSpec> {
    let command = if k == 0 {
        &template.commands.seed
    } else {
        &template.commands.join
    };
    let mut spec = template.member_spec(command);
    for port in &mut spec.ports {
        if let Some(base) = port.host_port {
            let own = u16::try_from(u32::from(base) + k)
                .with_context(|| format!("port {}: {base} + {k} is past 65535", port.name))?;
            port.host_port = Some(own);
            spec.env
                .insert(port_env("TPS_PORT_", &port.name), own.to_string());
            spec.env
                .insert(port_env("TPS_SEED_PORT_", &port.name), base.to_string());
        }
    }
    for (key, value) in [
        ("TPS_NAME", name.to_string()),
        ("TPS_TEMPLATE", template.name.clone()),
        ("TPS_MEMBER", member(name, k)),
        ("TPS_INDEX", k.to_string()),
        ("TPS_SEED_ADDRESS", seed_address.to_string()),
    ] {
        spec.env.insert(key.to_string(), value);
    }
    spec.hooks.test = Some(Hook {
        command: template.commands.check.clone(),
        run: HookRun::Instance,
        timeout_secs: CHECK_TIMEOUT_SECS,
    });
    Ok(spec)
}

/// Longest one run of a template's check.
const CHECK_TIMEOUT_SECS: u32 = 120;
/// Longest one run of a template's leave (within the stop grace period).
const LEAVE_TIMEOUT_SECS: u32 = 10;

/// How many members `name` has: its services `<name>-0`, `<name>-1`, …
async fn size_of(client: &Client, namespace: &str, name: &str) -> anyhow::Result<u32> {
    let mut k = 0;
    loop {
        match client.service_get(namespace, &member(name, k)).await {
            Ok(_) => k += 1,
            Err(e) if e.status() == Some(404) => return Ok(k),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The template `name`'s members were made from (member 0's env says).
async fn template_of(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Template> {
    let seed = client.service_get(namespace, &member(name, 0)).await?;
    let template = seed
        .spec
        .env
        .get("TPS_TEMPLATE")
        .with_context(|| format!("{namespace}/{} is no member of a tps", member(name, 0)))?;
    load_template(client, template).await
}

async fn load_template(client: &Client, name: &str) -> anyhow::Result<Template> {
    let entry = client.template(name).await?;
    Template::parse(&entry.text).map_err(|e| anyhow::anyhow!("template {name}: {e}"))
}

/// Adds members `from..to`, each once the one before passed its check;
/// on a failure removes the members it added and says why.
async fn add_members(
    client: &Client,
    namespace: &str,
    name: &str,
    template: &Template,
    from: u32,
    to: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut seed_address = String::new();
    for k in from..to {
        if k > 0 && seed_address.is_empty() {
            seed_address = client
                .service_instances(namespace, &member(name, 0))
                .await?
                .into_iter()
                .find_map(|i| i.address)
                .with_context(|| format!("the seed {} has no address yet", member(name, 0)))?;
        }
        let service = member(name, k);
        let added = async {
            let spec = member_spec(template, name, k, &seed_address)?;
            let put = client
                .service_put(namespace, &service, &spec, Some(0))
                .await?;
            rollout::wait(client, namespace, &service, put.version, timeout, false).await
        }
        .await;
        if let Err(e) = added {
            for made in (from..=k).rev() {
                let _ = client
                    .service_delete(namespace, &member(name, made), None)
                    .await;
            }
            bail!(
                "member {service} did not join: {e:#}; the members this run made are removed (their volumes are kept)"
            );
        }
        eprintln!("{namespace}/{service} joined");
    }
    Ok(())
}

/// Removes members `to..from`, the last first, each leaving first.
async fn remove_members(
    client: &Client,
    namespace: &str,
    name: &str,
    template: &Template,
    from: u32,
    to: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    for k in (to..from).rev() {
        let service = member(name, k);
        let mut current = client.service_get(namespace, &service).await?;
        if !template.commands.leave.is_empty() {
            current.spec.hooks.stop = Some(Hook {
                command: template.commands.leave.clone(),
                run: template.commands.leave_run,
                timeout_secs: LEAVE_TIMEOUT_SECS,
            });
            client
                .service_put(namespace, &service, &current.spec, Some(current.version))
                .await?;
        }
        // Scaled to nothing while its spec (and stop hook) still exists,
        // so the member leaves before its container goes.
        let scaled = client.service_scale(namespace, &service, 0).await?;
        rollout::wait(client, namespace, &service, scaled.version, timeout, false).await?;
        client.service_delete(namespace, &service, None).await?;
        // Its stop hook's event says whether it left the cluster.
        let subject = format!("{namespace}/{service}");
        let failed = client
            .events(0)
            .await?
            .into_iter()
            .rev()
            .find(|e| e.kind == "hook.stop" && e.subject == subject)
            .filter(|e| !e.message.contains("exited 0"));
        if let Some(event) = failed {
            bail!(
                "{subject} is removed, but its leave command did not succeed ({}); the cluster may still count it as a member",
                event.message
            );
        }
        eprintln!("{subject} left");
    }
    Ok(())
}

pub async fn run(client: &Client, command: TpsCommand) -> anyhow::Result<()> {
    match command {
        TpsCommand::Create {
            name,
            template,
            size,
            namespace,
            timeout,
        } => {
            if size == 0 {
                bail!("a tps has at least one member (--size 1 or more)");
            }
            let existing = size_of(client, &namespace, &name).await?;
            if existing > 0 {
                bail!("tps {namespace}/{name} exists ({existing} members): `tps resize` it or `tps rm` it first");
            }
            let template = load_template(client, &template).await?;
            add_members(client, &namespace, &name, &template, 0, size, timeout).await?;
            println!(
                "tps {namespace}/{name} created: {size} member(s) of template {}",
                template.name
            );
        }
        TpsCommand::Resize {
            name,
            size,
            force,
            namespace,
            timeout,
        } => {
            let current = size_of(client, &namespace, &name).await?;
            if current == 0 {
                bail!("tps {namespace}/{name} does not exist");
            }
            let template = template_of(client, &namespace, &name).await?;
            if size > current {
                add_members(client, &namespace, &name, &template, current, size, timeout).await?;
            } else if size < current {
                if size == 0 {
                    bail!("a tps keeps at least one member: `tps rm` removes it");
                }
                if !template.volumes.is_empty() && !force {
                    bail!(
                        "tps {namespace}/{name} holds data: shrinking it from {current} to {size} is refused without --force (raftvisor cannot know whether the members' data was handed over)"
                    );
                }
                remove_members(client, &namespace, &name, &template, current, size, timeout)
                    .await?;
            }
            println!("tps {namespace}/{name} has {size} member(s)");
        }
        TpsCommand::Rm { name, namespace } => {
            let current = size_of(client, &namespace, &name).await?;
            if current == 0 {
                bail!("tps {namespace}/{name} does not exist");
            }
            for k in (0..current).rev() {
                client
                    .service_delete(&namespace, &member(&name, k), None)
                    .await?;
            }
            println!(
                "tps {namespace}/{name} removed ({current} member(s)); their volumes are kept (volume ls)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_k_gets_its_ports_its_name_and_the_seed() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cluster-config/templates/etcd.toml"
        ))
        .unwrap();
        let template = Template::parse(&text).unwrap();
        let seed = member_spec(&template, "kv", 0, "").unwrap();
        assert_eq!(seed.command, template.commands.seed);
        let third = member_spec(&template, "kv", 2, "10.0.0.5").unwrap();
        assert_eq!(third.command, template.commands.join);
        let ports: Vec<Option<u16>> = third.ports.iter().map(|p| p.host_port).collect();
        assert_eq!(ports, [Some(23792), Some(23892)]);
        assert_eq!(third.env["TPS_PORT_CLIENT"], "23792");
        assert_eq!(third.env["TPS_SEED_PORT_CLIENT"], "23790");
        assert_eq!(third.env["TPS_MEMBER"], "kv-2");
        assert_eq!(third.env["TPS_SEED_ADDRESS"], "10.0.0.5");
        assert_eq!(
            third.hooks.test.as_ref().map(|h| &h.command),
            Some(&template.commands.check)
        );
        crate::state::validate::service_spec(&third).unwrap();
        // etcd's member stops once removed: it leaves from beside itself.
        assert_eq!(template.commands.leave_run, HookRun::Oneshot);
    }
}
