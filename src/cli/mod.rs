//! The `raftvisor` command line: arguments parsed once by clap, validated
//! into calls of the typed [`Client`], results printed as tables or JSON.
//! Every failure becomes one line on stderr and a non-zero exit code (in
//! `main`).

pub mod backup;
pub mod cluster_ops;
pub mod compose;
pub mod exit_codes;
pub mod image;
pub mod output;
pub mod pipeline;
pub mod registry;
pub mod release;
pub mod rollout;
pub mod template;
pub mod topology;
pub mod tps;
pub mod volume;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Client, ClientOptions, Consistency};
use crate::state::{DockerTls, NodeSpec, ServiceSpec};
use crate::wire::{CreateToken, TokenInfo};
use output::{print, Format, Table};

#[derive(Parser, Debug)]
#[command(
    name = "raftvisor",
    version,
    about = "A self-healing supervisor for containers, replicated with Raft"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// API address of any replica (host:port, comma-separated for several).
    #[arg(
        long,
        global = true,
        env = "RAFTVISOR_ADDR",
        default_value = "127.0.0.1:7001"
    )]
    pub addr: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// API token.
    #[arg(long, global = true, env = "RAFTVISOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token.
    #[arg(long, global = true, env = "RAFTVISOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) of a TLS-enabled API.
    #[arg(long, global = true, env = "RAFTVISOR_CA")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one manager replica.
    Agent {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read and write the KV store.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Deploy and manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage the node (machine) inventory.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Inspect and change the manager cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Ask the cluster's DNS.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Manage API tokens (needs an admin token).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Images the cluster keeps without a registry.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Registry logins the cluster pulls images with.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The slots' volumes: list them, remove one no slot uses.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Backups taken by `service backup`: show or remove one.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Blue-green releases: two environments and the entry name that
    /// points at one of them.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Pipelines from source to release: build, test, deploy, approve.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// A namespace's deployment: export it, apply it as another, clone it.
    #[command(subcommand)]
    Namespace(topology::NamespaceCommand),
    /// Topologies the cluster keeps, with their versions.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Templates of clustered third-party services (TOML).
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Clustered third-party services made from templates.
    #[command(subcommand)]
    Tps(tps::TpsCommand),
    /// Create the cluster CA and issue certificates (no cluster needed).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Bring up, or repair, a whole cluster from a cluster file (machines,
    /// managers, nodes); a second run changes nothing.
    Bootstrap {
        /// The cluster file, e.g. cluster-config/docker-3.toml.
        file: PathBuf,
    },
    /// Run a docker-compose file's services in one namespace.
    #[command(subcommand)]
    Compose(ComposeCommand),
    /// Print a shell completion script, e.g.
    /// `raftvisor completion bash > /etc/bash_completion.d/raftvisor`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum ComposeCommand {
    /// Deploy the file's services (dependencies first, each once what it
    /// depends on converged). Keys that cannot be mapped are listed and
    /// refused unless --ignore-unmapped.
    Up {
        file: PathBuf,
        /// The namespace (default: the file's `name`).
        #[arg(long)]
        namespace: Option<String>,
        /// Deploy without the keys that cannot be mapped (still listed).
        #[arg(long)]
        ignore_unmapped: bool,
        /// How long to wait for a dependency to converge.
        #[arg(long, default_value = "5m", value_parser = parse_cli_duration)]
        timeout: std::time::Duration,
    },
    /// Remove the file's services (dependents first).
    Down {
        file: PathBuf,
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// read (GET only), operator (services, KV, node drains) or admin (everything).
        #[arg(long)]
        role: crate::state::Role,
        /// A label for people, e.g. what or who uses the token.
        #[arg(long, default_value = "")]
        name: String,
        /// Limit the token to these namespaces (comma-separated): it sees
        /// and changes their services, instances, events and catalog
        /// entries and nothing of the rest of the cluster.
        #[arg(long, value_delimiter = ',')]
        namespace: Option<Vec<String>>,
        /// Limit the token's KV reach to keys under these prefixes
        /// (comma-separated); with --namespace it defaults to `<namespace>/`
        /// for each namespace.
        #[arg(long = "kv-prefix", value_delimiter = ',')]
        kv_prefix: Option<Vec<String>>,
    },
    /// List tokens: id, name, role, creation time, limits (never secrets).
    Ls,
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the cluster CA (DIR/ca.pem, DIR/ca-key.pem); never overwrites.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue DIR/NAME.pem + DIR/NAME-key.pem signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// manager (a replica: peer port and API) or client.
        #[arg(long)]
        role: crate::tls::certs::Role,
        #[arg(long)]
        name: String,
        /// IP address or host name the certificate is valid for (repeatable);
        /// a manager needs those of its peer_addr and api_addr.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The Raft id of the replica a manager certificate is for (its
        /// `id` in the agent config); required for managers: peers accept
        /// Raft messages only from the id the certificate names.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Print what a certificate (PEM FILE) says: role, name, Raft id,
    /// expiry and the addresses it is valid for.
    Show { file: PathBuf },
    /// Renew every manager certificate in DIR (same name, Raft id and
    /// addresses, a new key), signed by the CA there; running replicas
    /// pick the new files up within seconds, without a restart.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        /// How long the new certificates are valid.
        #[arg(long, default_value_t = 730)]
        days: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum DnsCommand {
    /// Resolve a name (e.g. echo.demo.svc.cluster.local) with a replica's DNS.
    Lookup {
        name: String,
        /// Record type: A, AAAA, SRV, CNAME, NS, SOA, ANY.
        #[arg(long = "type", default_value = "A")]
        record_type: String,
        /// DNS address of a replica.
        #[arg(long, env = "RAFTVISOR_DNS", default_value = "127.0.0.1:8601")]
        dns: std::net::SocketAddr,
        /// Ask over TCP.
        #[arg(long)]
        tcp: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Print a key's value.
    Get {
        key: String,
        /// Answer from the contacted replica without a read barrier.
        #[arg(long)]
        stale: bool,
    },
    /// Set a key.
    Put {
        key: String,
        value: String,
        #[arg(long, default_value_t = 0)]
        flags: u64,
    },
    /// Set a key only if its ModifyIndex is INDEX (0: only if absent).
    Cas {
        key: String,
        value: String,
        #[arg(long)]
        index: u64,
    },
    /// Delete a key (or every key under a prefix with --recurse).
    Rm {
        key: String,
        #[arg(long)]
        recurse: bool,
        #[arg(long)]
        cas: Option<u64>,
    },
    /// List keys under a prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create or update a service from a TOML or JSON file.
    Deploy {
        file: PathBuf,
        /// Only if the service is at this version (0: only if new).
        #[arg(long)]
        if_match: Option<u64>,
        /// Follow the rollout (a progress bar) until it converges, or fail
        /// with its reason.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 5m); exit code 5 when it runs out.
        #[arg(long, default_value = "5m", value_parser = parse_cli_duration)]
        timeout: std::time::Duration,
    },
    /// List services.
    Ls,
    /// Show one service and its instances.
    Show {
        service: String,
        /// Show again every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Set the number of replicas.
    Scale { service: String, replicas: u32 },
    /// The versions of a service's spec, oldest first (`update.history`
    /// of them are kept, 20 by default).
    History { service: String },
    /// Let a canary deploy (`update.canary`) roll out to every instance.
    Promote { service: String },
    /// Take a canary deploy back: the version before it, as a new version.
    Abort { service: String },
    /// Back to an earlier version's spec and image (with the current
    /// replica count), as a new version.
    Rollback {
        service: String,
        /// The version to go back to (`service history`); the one before
        /// the newest if not given.
        #[arg(long)]
        to: Option<u64>,
        /// Follow the rollout until it converges, or fail with its reason.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits; exit code 5 when it runs out.
        #[arg(long, default_value = "5m", value_parser = parse_cli_duration)]
        timeout: std::time::Duration,
    },
    /// Remove a service; its volumes are kept (`volume ls`) unless
    /// --purge.
    Rm {
        service: String,
        /// Remove its volumes too: their data is gone for good.
        #[arg(long)]
        purge: bool,
    },
    /// Start a stopped service.
    Start { service: String },
    /// Stop a service's containers (kept for a later start).
    Stop { service: String },
    /// Restart every instance of a service once.
    Restart { service: String },
    /// Desired vs running, restarts, last exits and recent events.
    Report {
        service: String,
        /// Show again every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Run the service's backup hook in every slot and keep what each
    /// writes to stdout; waits until it ends.
    Backup {
        service: String,
        /// Answer once it started instead of waiting for it to end.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait (e.g. 90s, 1h); exit code 5 when it runs out.
        #[arg(long, default_value = "1h", value_parser = parse_cli_duration)]
        timeout: std::time::Duration,
    },
    /// List a service's backups.
    Backups { service: String },
    /// Feed each slot's part of a backup to the service's restore hook in
    /// the same slot; waits until it ends.
    Restore {
        service: String,
        /// The backup's id (`service backups`).
        #[arg(long)]
        from: String,
        /// Answer once it started instead of waiting for it to end.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait (e.g. 90s, 1h); exit code 5 when it runs out.
        #[arg(long, default_value = "1h", value_parser = parse_cli_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand, Debug)]
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum NodeCommand {
    /// List nodes.
    Ls,
    /// Show one node.
    Show { name: String },
    /// Register (or update) a node.
    Add {
        name: String,
        /// Docker endpoint, e.g. unix:///var/run/docker.sock or tcp://10.0.0.5:2375.
        #[arg(long)]
        docker: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// Node label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value = "static")]
        provider: String,
        /// For an https:// or tcp+tls:// engine: the CA that signed its
        /// certificate (a path on every manager).
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_ca: Option<String>,
        /// The managers' client certificate for the engine.
        #[arg(long, requires = "tls_ca")]
        tls_cert: Option<String>,
        /// The key of --tls-cert.
        #[arg(long, requires = "tls_ca")]
        tls_key: Option<String>,
    },
    /// Move instances off a node (or --cancel a drain).
    Drain {
        name: String,
        #[arg(long)]
        cancel: bool,
    },
    /// Remove a node from the inventory (refused while instances are
    /// placed on it: drain it first, or --force).
    Rm {
        name: String,
        /// Remove it anyway: its instances move to other nodes and its
        /// containers are removed, then the node.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, leader, term and indexes.
    Status,
    /// Add a replica (learner first, promoted once caught up; run it again
    /// without --learner to promote a learner).
    AddMember {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        api: String,
        #[arg(long)]
        peer: String,
        /// Join as a learner only: it replicates but does not vote.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a replica.
    RemoveMember { id: u64 },
    /// Write a backup of the cluster's state (one applied index, with its
    /// cluster id and a SHA-256) to FILE.
    Backup { file: PathBuf },
    /// Seed a stopped agent's empty data directory from a backup, as a
    /// member of the cluster its config names (run once per member, same
    /// file); the running containers are adopted, not started again.
    Restore {
        file: PathBuf,
        /// The agent config of the member to seed.
        #[arg(long)]
        config: PathBuf,
        /// Keep the backed-up cluster's id (default: the restored
        /// cluster's leader gives it a new one).
        #[arg(long)]
        keep_cluster_id: bool,
    },
    /// Run the managers of a bootstrapped cluster on another image, one at
    /// a time (followers first, the leader last), each back as a caught-up
    /// voter before the next; the plan records the image.
    Upgrade {
        /// The cluster file (as for raftvisor bootstrap).
        file: PathBuf,
        #[arg(long)]
        image: String,
    },
    /// After a majority of managers is lost for good: restart the cluster
    /// from this stopped survivor alone (says which survivor is the most up
    /// to date and what may be lost; changes nothing without --yes).
    Recover {
        /// The survivor's agent config.
        #[arg(long)]
        config: PathBuf,
        /// Do it.
        #[arg(long)]
        yes: bool,
        /// Even when another survivor holds a longer log.
        #[arg(long, requires = "yes")]
        force: bool,
    },
}

/// A service file: `namespace`, `name` and the `spec` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    namespace: String,
    name: String,
    spec: ServiceSpec,
}

fn read_service_file(path: &Path) -> anyhow::Result<ServiceFile> {
    read_json_or_toml(path)
}

/// A file read as JSON when its name ends in `.json`, as TOML otherwise.
fn read_json_or_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    } else {
        crate::config::parse_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    parsed
}

/// Follows the rollout of `service`'s version (a progress bar on a
/// terminal) and prints where it ended; an error when it failed.
async fn wait_and_print(
    client: &Client,
    format: Format,
    service: &crate::state::Service,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let show_bar = format == Format::Human && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = rollout::wait(
        client,
        &service.namespace,
        &service.name,
        service.version,
        timeout,
        show_bar,
    )
    .await?;
    print(format, &report, || {
        let mut table = Table::new(&["SERVICE", "VERSION", "RUNNING", "IMAGE"]);
        table.row(vec![
            report.service.clone(),
            report.version.to_string(),
            format!("{}/{}", report.running, report.desired),
            report
                .image
                .clone()
                .unwrap_or_else(|| service.spec.image.clone()),
        ]);
        table
    });
    Ok(())
}

fn split_service(reference: &str) -> anyhow::Result<(&str, &str)> {
    match reference.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => bail!("service {reference:?} must be written NAMESPACE/NAME"),
    }
}

fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    Ok(Client::new(client_options(global)?)?)
}

/// How `global` says to reach and authenticate to the cluster.
fn client_options(global: &GlobalArgs) -> anyhow::Result<ClientOptions> {
    let token = match (&global.token, &global.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let mut options = ClientOptions::new([global.addr.clone()]);
    options.token = token;
    options.ca_cert = global.ca_cert.clone();
    Ok(options)
}

/// Runs `raftvisor certs …`.
pub fn run_certs(format: Format, command: CertsCommand) -> anyhow::Result<()> {
    use crate::tls::certs;
    let (what, written) = match command {
        CertsCommand::Init { dir } => ("cluster CA", certs::init_ca(&dir)?),
        CertsCommand::Issue {
            dir,
            role,
            name,
            sans,
            id,
        } => {
            if role == certs::Role::Manager && id.is_none() {
                anyhow::bail!("a manager certificate needs --id with the Raft id of its replica");
            }
            (
                "certificate",
                certs::issue_with_id(&dir, role, &name, &sans, id)?,
            )
        }
        CertsCommand::Rotate { dir, days } => {
            let rotated = certs::rotate(&dir, days)?;
            print(format, &rotated, || {
                let mut table = Table::new(&["NAME", "RAFT_ID", "EXPIRES", "CERT"]);
                for r in &rotated {
                    table.row(vec![
                        r.name.clone(),
                        r.raft_id.to_string(),
                        r.expires.clone(),
                        r.cert.display().to_string(),
                    ]);
                }
                table
            });
            return Ok(());
        }
        CertsCommand::Show { file } => {
            let summary = certs::show(&file)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&summary)?),
                Format::Human => {
                    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    println!("subject:  {}", summary.subject);
                    println!("role:     {}", or_dash(summary.role));
                    println!("name:     {}", or_dash(summary.name));
                    println!(
                        "raft id:  {}",
                        or_dash(summary.raft_id.map(|i| i.to_string()))
                    );
                    println!(
                        "expires:  {} (in {} days)",
                        summary.expires, summary.expires_in_days
                    );
                    println!("valid for: {}", summary.subject_names.join(", "));
                }
            }
            return Ok(());
        }
    };
    match format {
        Format::Json => println!("{}", json!({"cert": written.cert, "key": written.key})),
        Format::Human => println!(
            "{what}: {}\nkey (keep private): {}",
            written.cert.display(),
            written.key.display()
        ),
    }
    Ok(())
}

/// Runs a client command (everything but `agent`).
pub async fn run_client(global: GlobalArgs, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Certs(certs) => return run_certs(global.output, certs),
        Command::Bootstrap { file } => return crate::bootstrap::run(&file, global.output).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "raftvisor", &mut script);
            // A reader that stops early (`| head`) is not a failure.
            return match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            };
        }
        _ => {}
    }
    let client = client(&global)?;
    let format = global.output;
    match command {
        Command::Agent { .. }
        | Command::Certs(_)
        | Command::Bootstrap { .. }
        | Command::Completion { .. } => {
            unreachable!("dispatched above")
        }
        Command::Kv(kv) => run_kv(&client, format, kv).await,
        Command::Service(service) => run_service(&client, format, service).await,
        Command::Compose(compose) => run_compose(&client, format, compose).await,
        Command::Node(node) => run_node(&client, format, node).await,
        Command::Cluster(cluster) => {
            run_cluster(&client, client_options(&global)?, format, cluster).await
        }
        Command::Dns(dns) => run_dns(format, dns).await,
        Command::Token(token) => run_token(&client, format, token).await,
        Command::Registry(registry) => registry::run(&client, format, registry).await,
        Command::Image(image) => image::run(&client, format, image).await,
        Command::Volume(volume) => volume::run(&client, format, volume).await,
        Command::Backup(command) => backup::run(&client, format, command).await,
        Command::Release(command) => release::run(&client, format, command).await,
        Command::Pipeline(command) => pipeline::run(&client, format, command).await,
        Command::Namespace(command) => topology::run_namespace(&client, format, command).await,
        Command::Topology(command) => topology::run_topology(&client, format, command).await,
        Command::Template(command) => template::run(&client, format, command).await,
        Command::Tps(command) => tps::run(&client, command).await,
    }
}

async fn run_token(client: &Client, format: Format, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            role,
            name,
            namespace,
            kv_prefix,
        } => {
            let created = client
                .token_create(&CreateToken {
                    role,
                    name,
                    namespaces: namespace,
                    kv_prefixes: kv_prefix,
                })
                .await?;
            match format {
                Format::Json => print(format, &created, || unreachable!()),
                Format::Human => {
                    println!("{}", created.token);
                    eprintln!(
                        "created {} token {} (id {}); store it now, it is not shown again",
                        created.info.role.as_str(),
                        if created.info.name.is_empty() {
                            "without a name".to_string()
                        } else {
                            format!("{:?}", created.info.name)
                        },
                        created.info.id
                    );
                    if let Some(reach) = token_reach(&created.info) {
                        eprintln!("it reaches {reach}");
                    }
                }
            }
        }
        TokenCommand::Ls => {
            let tokens = client.token_list().await?;
            print(format, &tokens, || {
                let mut table = Table::new(&["ID", "ROLE", "CREATED", "NAME", "REACH"]);
                for t in &tokens {
                    table.row(vec![
                        t.id.clone(),
                        t.role.as_str().into(),
                        crate::dates::short_utc_ms(t.created_ms),
                        if t.name.is_empty() {
                            "-".into()
                        } else {
                            t.name.clone()
                        },
                        token_reach(t).unwrap_or_else(|| "cluster".into()),
                    ]);
                }
                table
            });
        }
        TokenCommand::Revoke { id } => {
            client.token_revoke(&id).await?;
            done(format, true, &format!("revoked token {id}"))?;
        }
    }
    Ok(())
}

/// A limited token's reach in words; `None` for the whole cluster.
fn token_reach(info: &TokenInfo) -> Option<String> {
    let list = |items: &Option<Vec<String>>| items.as_deref().unwrap_or_default().join(",");
    (info.namespaces.is_some() || info.kv_prefixes.is_some()).then(|| {
        format!(
            "namespaces={} kv={}",
            list(&info.namespaces),
            list(&info.kv_prefixes)
        )
    })
}

fn done(format: Format, ok: bool, what: &str) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{ok}"),
        Format::Human if ok => println!("{what}"),
        Format::Human => {}
    }
    if ok {
        Ok(())
    } else {
        bail!("{what} refused: the compare-and-set index did not match")
    }
}

async fn run_kv(client: &Client, format: Format, command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get { key, stale } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let Some(pair) = client.kv_get(&key, consistency).await? else {
                bail!("key {key:?} not found");
            };
            match format {
                Format::Json => print(format, &pair_json(&pair), || unreachable!()),
                Format::Human => println!("{}", String::from_utf8_lossy(&pair.value)),
            }
        }
        KvCommand::Put { key, value, flags } => {
            let ok = client.kv_put(&key, value.as_bytes(), flags, None).await?;
            done(format, ok, &format!("put {key}"))?;
        }
        KvCommand::Cas { key, value, index } => {
            let ok = client
                .kv_put(&key, value.as_bytes(), 0, Some(index))
                .await?;
            done(format, ok, &format!("put {key}"))?;
        }
        KvCommand::Rm { key, recurse, cas } => {
            let ok = client.kv_delete(&key, cas, recurse).await?;
            done(format, ok, &format!("removed {key}"))?;
        }
        KvCommand::Ls { prefix } => {
            let pairs = client.kv_list(&prefix, Consistency::Linearizable).await?;
            let json: Vec<_> = pairs.iter().map(pair_json).collect();
            print(format, &json, || {
                let mut table = Table::new(&["KEY", "MODIFY_INDEX", "FLAGS", "BYTES"]);
                for p in &pairs {
                    table.row(vec![
                        p.key.clone(),
                        p.modify_index.to_string(),
                        p.flags.to_string(),
                        p.value.len().to_string(),
                    ]);
                }
                table
            });
        }
    }
    Ok(())
}

fn pair_json(pair: &crate::client::KvPair) -> serde_json::Value {
    serde_json::json!({
        "key": pair.key,
        "value": String::from_utf8_lossy(&pair.value),
        "flags": pair.flags,
        "create_index": pair.create_index,
        "modify_index": pair.modify_index,
    })
}

async fn run_service(
    client: &Client,
    format: Format,
    command: ServiceCommand,
) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Deploy {
            file,
            if_match,
            wait,
            timeout,
        } => {
            let parsed = read_service_file(&file)?;
            let service = client
                .service_put(&parsed.namespace, &parsed.name, &parsed.spec, if_match)
                .await?;
            if wait {
                return wait_and_print(client, format, &service, timeout).await;
            }
            print(format, &service, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "REPLICAS", "IMAGE"]);
                table.row(vec![
                    format!("{}/{}", service.namespace, service.name),
                    service.version.to_string(),
                    service.spec.replicas.to_string(),
                    service.spec.image.clone(),
                ]);
                table
            });
        }
        ServiceCommand::Ls => {
            let services = client.service_list().await?;
            print(format, &services, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "REPLICAS", "STATE", "IMAGE"]);
                for s in &services {
                    table.row(vec![
                        format!("{}/{}", s.namespace, s.name),
                        s.version.to_string(),
                        s.spec.replicas.to_string(),
                        format!("{:?}", s.run_state).to_lowercase(),
                        s.spec.image.clone(),
                    ]);
                }
                table
            });
        }
        ServiceCommand::Show { service, watch } => {
            if watch {
                return watching(|| show_service(client, format, &service)).await;
            }
            show_service(client, format, &service).await?;
        }
        ServiceCommand::Scale { service, replicas } => {
            let (ns, name) = split_service(&service)?;
            let scaled = client.service_scale(ns, name, replicas).await?;
            print(format, &scaled, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "REPLICAS"]);
                table.row(vec![
                    service.clone(),
                    scaled.version.to_string(),
                    scaled.spec.replicas.to_string(),
                ]);
                table
            });
        }
        ServiceCommand::History { service } => {
            let (ns, name) = split_service(&service)?;
            let revisions = client.service_history(ns, name).await?;
            print(format, &revisions, || {
                let mut table =
                    Table::new(&["VERSION", "WRITTEN", "CAUSE", "IMAGE", "ROLLED OUT", "BY"]);
                for r in &revisions {
                    let cause = match (r.cause.as_str(), r.from, r.to) {
                        ("revert", Some(from), Some(to)) => format!(
                            "revert of {from} to {to}: {}",
                            r.reason.as_deref().unwrap_or_default()
                        ),
                        ("rollback", _, Some(to)) => format!("rollback to {to}"),
                        (cause, _, _) => cause.to_string(),
                    };
                    table.row(vec![
                        format!("{}{}", r.version, if r.current { " *" } else { "" }),
                        crate::dates::short_utc_ms(r.at_ms),
                        cause,
                        r.pin.clone().unwrap_or_else(|| r.image.clone()),
                        r.settled_ms
                            .map_or_else(|| "-".to_string(), crate::dates::short_utc_ms),
                        r.actor.clone().unwrap_or_else(|| "-".to_string()),
                    ]);
                }
                table
            });
        }
        ServiceCommand::Rollback {
            service,
            to,
            wait,
            timeout,
        } => {
            let (ns, name) = split_service(&service)?;
            let rolled = client.service_rollback(ns, name, to).await?;
            if wait {
                return wait_and_print(client, format, &rolled, timeout).await;
            }
            print(format, &rolled, || {
                let mut table = Table::new(&["SERVICE", "VERSION", "REPLICAS", "IMAGE"]);
                table.row(vec![
                    service.clone(),
                    rolled.version.to_string(),
                    rolled.spec.replicas.to_string(),
                    rolled.spec.image.clone(),
                ]);
                table
            });
        }
        ServiceCommand::Promote { service } => {
            run_action(client, format, &service, "promote").await?
        }
        ServiceCommand::Abort { service } => run_action(client, format, &service, "abort").await?,
        ServiceCommand::Start { service } => run_action(client, format, &service, "start").await?,
        ServiceCommand::Stop { service } => run_action(client, format, &service, "stop").await?,
        ServiceCommand::Restart { service } => {
            run_action(client, format, &service, "restart").await?
        }
        ServiceCommand::Report { service, watch } => {
            if watch {
                return watching(|| show_report(client, format, &service)).await;
            }
            show_report(client, format, &service).await?;
        }
        ServiceCommand::Backup {
            service,
            no_wait,
            timeout,
        } => {
            let (ns, name) = split_service(&service)?;
            backup::backup(client, format, ns, name, !no_wait, timeout).await?;
        }
        ServiceCommand::Backups { service } => {
            let (ns, name) = split_service(&service)?;
            backup::list(client, format, ns, name).await?;
        }
        ServiceCommand::Restore {
            service,
            from,
            no_wait,
            timeout,
        } => {
            let (ns, name) = split_service(&service)?;
            backup::restore(client, format, ns, name, &from, !no_wait, timeout).await?;
        }
        ServiceCommand::Rm { service, purge } => {
            let (ns, name) = split_service(&service)?;
            if purge {
                client.service_purge(ns, name).await?;
                done(format, true, &format!("removed {service} and its volumes"))?;
            } else {
                client.service_delete(ns, name, None).await?;
                done(format, true, &format!("removed {service}"))?;
            }
        }
    }
    Ok(())
}

async fn show_service(client: &Client, format: Format, service: &str) -> anyhow::Result<()> {
    let (ns, name) = split_service(service)?;
    let found = client.service_get(ns, name).await?;
    let instances = client.service_instances(ns, name).await?;
    let json = serde_json::json!({ "service": found, "instances": instances });
    print(format, &json, || {
        let mut table = Table::new(&["INSTANCE", "SLOT", "GEN", "NODE", "STATE", "RESTARTS"]);
        for i in &instances {
            table.row(vec![
                i.id.clone(),
                i.slot.to_string(),
                i.generation.to_string(),
                i.node.clone().unwrap_or_else(|| "-".into()),
                format!("{:?}", i.state).to_lowercase(),
                i.restarts.to_string(),
            ]);
        }
        println!(
            "{}/{}  version {}  replicas {}  image {}",
            found.namespace, found.name, found.version, found.spec.replicas, found.spec.image
        );
        table
    });
    Ok(())
}

async fn show_report(client: &Client, format: Format, service: &str) -> anyhow::Result<()> {
    let (ns, name) = split_service(service)?;
    let report = client.service_report(ns, name).await?;
    print(format, &report, || {
        println!(
            "{}  version {}  {:?}  desired {}  running {}  unhealthy {}  crash-looping {}  pending {}  restarts {}",
            report.service, report.version, report.run_state, report.desired, report.running, report.unhealthy, report.crash_looping, report.pending, report.restarts
        );
        if let Some(reason) = &report.rollout_paused {
            println!("{reason}");
        }
        for (id, exit) in &report.last_exits {
            println!("last exit of {id}: code {} ({})", exit.code, exit.reason);
        }
        let mut table = Table::new(&["INDEX", "EVENT", "SUBJECT", "MESSAGE"]);
        for e in &report.recent_events {
            table.row(vec![
                e.index.to_string(),
                e.kind.clone(),
                e.subject.clone(),
                e.message.clone(),
            ]);
        }
        table
    });
    Ok(())
}
/// Runs `show` every second, clearing the terminal between runs, until
/// interrupted; a failed run is shown and retried (the cluster may be
/// between leaders).
async fn watching<F, Fut>(show: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        print!("\x1b[2J\x1b[H");
        if let Err(error) = show().await {
            eprintln!("raftvisor: {error:#}");
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// A duration on the command line: `90s`, `5m`, `1h`, `500ms`.
fn parse_cli_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::dates::parse_duration(text)
}

async fn run_compose(
    client: &Client,
    format: Format,
    command: ComposeCommand,
) -> anyhow::Result<()> {
    let (plan, action) = match command {
        ComposeCommand::Up {
            file,
            namespace,
            ignore_unmapped,
            timeout,
        } => (
            compose::up(
                client,
                &file,
                namespace.as_deref(),
                ignore_unmapped,
                timeout,
            )
            .await?,
            "deployed",
        ),
        ComposeCommand::Down { file, namespace } => (
            compose::down(client, &file, namespace.as_deref()).await?,
            "removed",
        ),
    };
    let json = json!({
        "namespace": plan.namespace,
        action: plan.services.iter().map(|s| format!("{}/{}", plan.namespace, s.name)).collect::<Vec<_>>(),
        "unmapped": plan.unmapped.iter().map(|(key, why)| json!({"key": key, "reason": why})).collect::<Vec<_>>(),
    });
    print(format, &json, || {
        let mut table = Table::new(&["SERVICE", "COMPOSE NAME", "REPLICAS", "DEPENDS ON"]);
        for s in &plan.services {
            table.row(vec![
                format!("{}/{}", plan.namespace, s.name),
                s.compose_name.clone(),
                s.spec.replicas.to_string(),
                s.depends_on.join(","),
            ]);
        }
        table
    });
    Ok(())
}

async fn run_action(
    client: &Client,
    format: Format,
    service: &str,
    action: &str,
) -> anyhow::Result<()> {
    let (ns, name) = split_service(service)?;
    let changed = client.service_action(ns, name, action).await?;
    print(format, &changed, || {
        let mut table = Table::new(&["SERVICE", "VERSION", "STATE"]);
        table.row(vec![
            service.to_string(),
            changed.version.to_string(),
            format!("{:?}", changed.run_state).to_lowercase(),
        ]);
        table
    });
    Ok(())
}

async fn run_dns(format: Format, command: DnsCommand) -> anyhow::Result<()> {
    let DnsCommand::Lookup {
        name,
        record_type,
        dns,
        tcp,
    } = command;
    let parsed: hickory_proto::rr::RecordType = record_type
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown record type {record_type:?}"))?;
    let options = crate::dns::client::QueryOptions {
        tcp,
        ..Default::default()
    };
    let answer = crate::dns::client::query(dns, &name, parsed, options).await?;
    let code = answer.metadata.response_code;
    let records: Vec<serde_json::Value> = answer
        .answers
        .iter()
        .chain(answer.additionals.iter())
        .map(|r| json!({"name": r.name.to_ascii(), "type": r.record_type().to_string(), "ttl": r.ttl, "data": r.data.to_string()}))
        .collect();
    let summary = json!({"status": code.to_string(), "truncated": answer.metadata.truncation, "records": records});
    print(format, &summary, || {
        println!(
            "{name}: {code}{}",
            if answer.metadata.truncation {
                " (truncated; retry with --tcp)"
            } else {
                ""
            }
        );
        let mut table = Table::new(&["NAME", "TYPE", "TTL", "DATA"]);
        for r in answer.answers.iter().chain(answer.additionals.iter()) {
            table.row(vec![
                r.name.to_ascii(),
                r.record_type().to_string(),
                r.ttl.to_string(),
                r.data.to_string(),
            ]);
        }
        table
    });
    if code == hickory_proto::op::ResponseCode::NoError {
        Ok(())
    } else {
        bail!("{name}: {code}")
    }
}

async fn run_node(client: &Client, format: Format, command: NodeCommand) -> anyhow::Result<()> {
    let node_table = |nodes: &[crate::state::Node]| {
        let mut table = Table::new(&["NODE", "STATE", "DOCKER", "REGION", "ZONE", "LABELS"]);
        for n in nodes {
            table.row(vec![
                n.name.clone(),
                format!("{:?}", n.state).to_lowercase(),
                n.spec.docker_endpoint.clone(),
                n.spec.region.clone().unwrap_or_else(|| "-".into()),
                n.spec.zone.clone().unwrap_or_else(|| "-".into()),
                n.spec
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        table
    };
    match command {
        NodeCommand::Ls => {
            let nodes = client.node_list().await?;
            print(format, &nodes, || node_table(&nodes));
        }
        NodeCommand::Show { name } => {
            let node = client.node_get(&name).await?;
            print(format, &node, || node_table(std::slice::from_ref(&node)));
        }
        NodeCommand::Add {
            name,
            docker,
            address,
            region,
            zone,
            labels,
            provider,
            tls_ca,
            tls_cert,
            tls_key,
        } => {
            let mut parsed = BTreeMap::new();
            for label in labels {
                let Some((k, v)) = label.split_once('=') else {
                    bail!("label {label:?} must be KEY=VALUE");
                };
                parsed.insert(k.to_string(), v.to_string());
            }
            let spec = NodeSpec {
                provider,
                docker_endpoint: docker,
                address,
                region,
                zone,
                labels: parsed,
                capacity: Default::default(),
                docker_tls: match (tls_ca, tls_cert, tls_key) {
                    (Some(ca_cert), Some(cert), Some(key)) => {
                        Some(DockerTls { ca_cert, cert, key })
                    }
                    _ => None,
                },
            };
            let node = client.node_put(&name, &spec).await?;
            print(format, &node, || node_table(std::slice::from_ref(&node)));
        }
        NodeCommand::Drain { name, cancel } => {
            let node = client.node_drain(&name, cancel).await?;
            print(format, &node, || node_table(std::slice::from_ref(&node)));
        }
        NodeCommand::Rm { name, force } => match client.node_remove(&name, force).await? {
            None => done(format, true, &format!("removed node {name}"))?,
            Some(node) => {
                if format == Format::Human {
                    println!(
                        "node {name} is retired: its instances move to other nodes, then its containers and the node are removed"
                    );
                }
                print(format, &node, || node_table(std::slice::from_ref(&node)));
            }
        },
    }
    Ok(())
}

/// `cluster status` warns about a manager certificate expiring within
/// this long (30 days).
const CERTIFICATE_WARNING_MS: u64 = 30 * 86_400_000;

async fn run_cluster(
    client: &Client,
    options: ClientOptions,
    format: Format,
    command: ClusterCommand,
) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Backup { file } => cluster_ops::backup(client, format, &file).await?,
        ClusterCommand::Restore {
            file,
            config,
            keep_cluster_id,
        } => cluster_ops::restore(format, &file, &config, keep_cluster_id).await?,
        ClusterCommand::Upgrade { file, image } => {
            crate::bootstrap::upgrade::run(&file, &image, format).await?
        }
        ClusterCommand::Recover { config, yes, force } => {
            cluster_ops::recover(options, format, &config, yes, force).await?
        }
        ClusterCommand::Status => {
            let status = client.cluster_status().await?;
            print(format, &status, || {
                println!(
                    "cluster {}  version {}  leader {}  term {}  applied {}  (answered by replica {}, data in {})",
                    status.cluster_id.as_deref().unwrap_or("-"),
                    status.cluster_version,
                    status.leader_id.map_or("none".to_string(), |l| l.to_string()),
                    status.term,
                    status.applied_index,
                    status.this_id,
                    status.data_dir
                );
                match (&status.leader_last_progress, status.leader_progress_ms_ago) {
                    (Some(at), Some(ago)) => println!(
                        "leader supervision: last progress {at} ({ago} ms ago{})",
                        match status.stall_after_ms {
                            Some(limit) if ago >= limit =>
                                format!(", STALLED: over stall_after {limit} ms"),
                            Some(limit) => format!(", stall_after {limit} ms"),
                            None => String::new(),
                        }
                    ),
                    _ => println!("leader supervision: no progress known"),
                }
                let now_ms = crate::replica::now_ms();
                for m in &status.members {
                    let Some(expires) = m.certificate_expires.as_deref() else {
                        continue;
                    };
                    let Some(at) = crate::dates::parse_rfc3339_ms(expires) else {
                        continue;
                    };
                    if at <= now_ms {
                        println!(
                            "WARNING: manager {}'s certificate expired at {expires}: rotate it now",
                            m.id
                        );
                    } else if at - now_ms < CERTIFICATE_WARNING_MS {
                        println!(
                            "WARNING: manager {}'s certificate expires in {} days ({expires}): rotate it",
                            m.id,
                            (at - now_ms) / 86_400_000
                        );
                    }
                }
                let mut table = Table::new(&[
                    "ID",
                    "ROLE",
                    "API",
                    "PEER",
                    "LAST_CONTACT_MS",
                    "PROTOCOL",
                    "CERT_EXPIRES",
                ]);
                for m in &status.members {
                    let role = if Some(m.id) == status.leader_id {
                        "leader"
                    } else if m.voter {
                        "voter"
                    } else {
                        "learner"
                    };
                    table.row(vec![
                        m.id.to_string(),
                        role.into(),
                        m.api_addr.clone(),
                        m.peer_addr.clone(),
                        m.last_contact_ms.map_or("-".into(), |ms| ms.to_string()),
                        m.protocol.map_or("-".into(), |p| p.to_string()),
                        m.certificate_expires.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                table
            });
        }
        ClusterCommand::AddMember {
            id,
            api,
            peer,
            learner,
        } => {
            let result = client.add_member(id, &api, &peer, !learner).await?;
            print(format, &result, || {
                let mut table = Table::new(&["ADDED", "MEMBERSHIP_INDEX"]);
                table.row(vec![id.to_string(), result["index"].to_string()]);
                table
            });
        }
        ClusterCommand::RemoveMember { id } => {
            let result = client.remove_member(id).await?;
            print(format, &result, || {
                let mut table = Table::new(&["REMOVED", "MEMBERSHIP_INDEX"]);
                table.row(vec![id.to_string(), result["index"].to_string()]);
                table
            });
        }
    }
    Ok(())
}
