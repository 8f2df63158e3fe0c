//! `raftvisor bootstrap FILE`: brings a whole cluster up from one cluster
//! file, or repairs it. Every step looks before it acts — CA and
//! certificates, admin token and secrets key exist? each machine's engine
//! answers? each manager's config is current and its container present and
//! running? the cluster has a leader and every manager as a voter? each
//! node registered as written? — and changes only what differs, so a second
//! run changes nothing and says so, and a run after damage repairs exactly
//! the damage. Progress is shown per step; a summary table ends the run;
//! the first failing step stops it with a non-zero exit naming the step.

pub mod cluster_file;
pub mod upgrade;

use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::output::{print, Format, Table};
use crate::client::{Client, ClientOptions};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::{ContainerRuntime, ContainerState, RuntimeError};
use crate::tls::certs::{self, Role};
use cluster_file::{ClusterFile, Machine};

/// What a step did to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Unchanged,
    Created,
    Started,
    Updated,
    Failed(String),
}

impl Outcome {
    fn is_change(&self) -> bool {
        matches!(self, Outcome::Created | Outcome::Started | Outcome::Updated)
    }
}

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub step: &'static str,
    pub target: String,
    pub outcome: Outcome,
}

/// Collects results and drives the progress display.
struct Report {
    bars: MultiProgress,
    results: Vec<StepResult>,
}

impl Report {
    fn step(&self, name: &'static str, total: usize) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(total as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:20}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        bar
    }

    /// Records `outcome`; a failure ends the run with the step named.
    fn record(
        &mut self,
        bar: &ProgressBar,
        step: &'static str,
        target: &str,
        outcome: Outcome,
    ) -> anyhow::Result<()> {
        bar.inc(1);
        bar.set_message(format!("{target}: {}", describe(&outcome)));
        let failed = match &outcome {
            Outcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        };
        self.results.push(StepResult {
            step,
            target: target.to_string(),
            outcome,
        });
        match failed {
            Some(reason) => {
                bar.abandon();
                anyhow::bail!("bootstrap failed at step {step} ({target}): {reason}")
            }
            None => Ok(()),
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Unchanged => "unchanged".into(),
        Outcome::Created => "created".into(),
        Outcome::Started => "started".into(),
        Outcome::Updated => "updated".into(),
        Outcome::Failed(reason) => format!("FAILED: {reason}"),
    }
}

/// Runs the bootstrap of `path`, printing progress and a summary.
pub async fn run(path: &Path, format: Format) -> anyhow::Result<()> {
    let mut file = ClusterFile::load(path)?;
    if let Ok(text) = std::fs::read_to_string(file.plan_file()) {
        let recorded: ClusterFile = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.plan_file().display()))?;
        file.merge_recorded(&recorded);
    }
    crate::tls::install_default_provider();
    let mut report = Report {
        bars: MultiProgress::new(),
        results: Vec::new(),
    };
    let outcome = steps(&mut file, &mut report).await;
    let _ = report.bars.clear();
    let changes = report
        .results
        .iter()
        .filter(|r| r.outcome.is_change())
        .count();
    print(format, &report.results, || {
        let mut table = Table::new(&["STEP", "TARGET", "RESULT"]);
        for result in &report.results {
            table.row(vec![
                result.step.to_string(),
                result.target.clone(),
                describe(&result.outcome),
            ]);
        }
        table
    });
    outcome?;
    if format == Format::Human {
        if changes == 0 {
            println!(
                "no changes: cluster {} already matches {}",
                file.cluster,
                path.display()
            );
        } else {
            println!(
                "{changes} change(s) made; cluster {} matches {}",
                file.cluster,
                path.display()
            );
        }
        println!(
            "API: {}  CA: {}  admin token: {}",
            file.managers
                .iter()
                .map(|m| file.api_addr(m))
                .collect::<Vec<_>>()
                .join(","),
            file.certs_dir().join("ca.pem").display(),
            file.token_file().display()
        );
    }
    Ok(())
}

async fn steps(file: &mut ClusterFile, report: &mut Report) -> anyhow::Result<()> {
    secrets(file, report)?;
    let engines = machines(file, report).await?;
    let file = &*file;
    managers(file, &engines, report).await?;
    let client = cluster(file, report).await?;
    nodes(file, &client, report).await?;
    record_plan(file, &client, report).await
}

/// The CA (its key out of the managers' reach), the manager issuer, one
/// certificate per manager, the admin token and the secrets key.
fn secrets(file: &ClusterFile, report: &mut Report) -> anyhow::Result<()> {
    const STEP: &str = "secrets";
    let bar = report.step(STEP, 4 + file.managers.len());
    let certs_dir = file.certs_dir();
    let ca_dir = file.ca_dir();
    let outcome =
        cluster_ca(&ca_dir, &certs_dir).unwrap_or_else(|e| Outcome::Failed(e.to_string()));
    report.record(&bar, STEP, "cluster CA", outcome)?;
    let outcome = if certs_dir.join(certs::ISSUER_CERT).exists() {
        Outcome::Unchanged
    } else if !ca_dir.join(certs::CA_KEY).exists() {
        // A CA from before issuers: its key stays where the managers use it.
        Outcome::Unchanged
    } else {
        match certs::init_issuer(&ca_dir, &certs_dir) {
            Ok(_) => Outcome::Created,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    };
    report.record(&bar, STEP, "manager issuer", outcome)?;
    for manager in &file.managers {
        let outcome =
            ensure_certificate(file, manager).unwrap_or_else(|e| Outcome::Failed(e.to_string()));
        report.record(
            &bar,
            STEP,
            &format!("certificate of manager {}", manager.id),
            outcome,
        )?;
    }
    let token_file = file.token_file();
    let outcome = match crate::auth::first_token::read_file(&token_file) {
        Ok(Some(_)) => Outcome::Unchanged,
        Ok(None) => match crate::auth::first_token::obtain(Some(&token_file)) {
            Ok(_) => Outcome::Created,
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    };
    report.record(&bar, STEP, "admin token", outcome)?;
    let key_file = file.secrets_key_file();
    let outcome = if key_file.exists() {
        match crate::secrets::SecretsKey::from_file(&key_file) {
            Ok(_) => Outcome::Unchanged,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    } else {
        let key: [u8; 32] = rand::random();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        match write_private(&key_file, hex.as_bytes()) {
            Ok(()) => Outcome::Created,
            Err(e) => Outcome::Failed(format!("cannot write {}: {e}", key_file.display())),
        }
    };
    report.record(&bar, STEP, "secrets key", outcome)?;
    bar.finish();
    Ok(())
}

/// Why a step that makes or starts a manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerStepError {
    #[error("cannot issue the certificate of {name}: {source}")]
    Certificate {
        name: String,
        source: certs::CertError,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] RuntimeError),
}

/// The cluster CA with its key in `ca_dir`, and its certificate in
/// `certs_dir` too. A CA of an earlier bootstrap whose key is in
/// `certs_dir` is moved to `ca_dir` when it can sign a manager issuer; one
/// that cannot (made before issuers) stays, and the managers keep using it.
fn cluster_ca(ca_dir: &Path, certs_dir: &Path) -> Result<Outcome, ManagerStepError> {
    let file_error = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ManagerStepError::File {
            action,
            path,
            source,
        }
    };
    let certificate = |source| ManagerStepError::Certificate {
        name: "cluster CA".into(),
        source,
    };
    let shared_cert = certs_dir.join(certs::CA_CERT);
    let shared_key = certs_dir.join(certs::CA_KEY);
    if shared_key.exists() {
        if !certs::ca_allows_issuer(certs_dir).map_err(certificate)? {
            return Ok(Outcome::Unchanged);
        }
        if ca_dir.join(certs::CA_KEY).exists() {
            return Err(certificate(certs::CertError::Invalid(format!(
                "a CA key is in both {} and {}: keep the one that signed {}",
                certs_dir.display(),
                ca_dir.display(),
                shared_cert.display()
            ))));
        }
        crate::file_modes::create_dir_all(ca_dir).map_err(file_error("create", ca_dir))?;
        std::fs::copy(&shared_cert, ca_dir.join(certs::CA_CERT))
            .map_err(file_error("copy", &shared_cert))?;
        std::fs::rename(&shared_key, ca_dir.join(certs::CA_KEY))
            .map_err(file_error("move", &shared_key))?;
        return Ok(Outcome::Updated);
    }
    let mut outcome = Outcome::Unchanged;
    if !ca_dir.join(certs::CA_CERT).exists() {
        if shared_cert.exists() {
            return Err(certificate(certs::CertError::Invalid(format!(
                "{} has no key beside it nor in {}",
                shared_cert.display(),
                ca_dir.display()
            ))));
        }
        certs::init_ca(ca_dir).map_err(certificate)?;
        outcome = Outcome::Created;
    }
    if !shared_cert.exists() {
        crate::file_modes::create_dir_all(certs_dir).map_err(file_error("create", certs_dir))?;
        std::fs::copy(ca_dir.join(certs::CA_CERT), &shared_cert)
            .map_err(file_error("copy", &shared_cert))?;
    }
    Ok(outcome)
}

/// The manager certificate of `manager`, issued (by the manager issuer, or
/// the CA of a cluster from before issuers) if missing.
pub(crate) fn ensure_certificate(
    file: &ClusterFile,
    manager: &cluster_file::ManagerPlacement,
) -> Result<Outcome, ManagerStepError> {
    let certs_dir = file.certs_dir();
    let name = format!("replica-{}", manager.id);
    if certs_dir.join(format!("{name}.pem")).exists() {
        return Ok(Outcome::Unchanged);
    }
    certs::issue_with_id(
        &certs_dir,
        Role::Manager,
        &name,
        &file.manager_sans(manager),
        Some(manager.id),
    )
    .map(|_| Outcome::Created)
    .map_err(|source| ManagerStepError::Certificate { name, source })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        crate::file_modes::create_dir_all(parent)?;
    }
    let mut options = crate::file_modes::options();
    options.write(true).create_new(true);
    let mut out = options.open(path)?;
    out.write_all(bytes)?;
    out.sync_all()
}

pub(crate) fn engine_of(machine: &Machine) -> Result<DockerRuntime, RuntimeError> {
    match &machine.docker_tls {
        Some(tls) => DockerRuntime::connect_tls(&machine.docker_endpoint, tls, Default::default()),
        None => DockerRuntime::connect(&machine.docker_endpoint),
    }
}

/// Every machine exists and runs (a provider makes or starts the ones it
/// owns); the engines of machines that host managers answer. A machine
/// that only hosts workloads may still be installing its engine: the
/// supervisor marks its node ready once it answers.
async fn machines(
    file: &mut ClusterFile,
    report: &mut Report,
) -> anyhow::Result<Vec<(String, DockerRuntime)>> {
    const STEP: &str = "machines";
    let bar = report.step(STEP, file.machines.len());
    let mut engines = Vec::new();
    for index in 0..file.machines.len() {
        let machine = file.machines[index].clone();
        let mut outcome = Outcome::Unchanged;
        if machine.is_provisioned() {
            match provision_machine(&machine).await {
                Ok((made, spec)) => {
                    outcome = made;
                    if let Some(spec) = spec {
                        let known = &mut file.machines[index];
                        known.docker_endpoint = spec.docker_endpoint;
                        known.docker_tls = spec.docker_tls;
                        known.address = spec.address.unwrap_or_default();
                    }
                }
                Err(e) => outcome = Outcome::Failed(e),
            }
        }
        let hosts_managers = file.managers.iter().any(|m| m.machine == machine.name);
        if hosts_managers && !matches!(outcome, Outcome::Failed(_)) {
            match engine_of(&file.machines[index]) {
                Ok(engine) => match engine.ping().await {
                    Ok(()) => engines.push((machine.name.clone(), engine)),
                    Err(e) => outcome = Outcome::Failed(e.to_string()),
                },
                Err(e) => outcome = Outcome::Failed(e.to_string()),
            }
        }
        report.record(&bar, STEP, &format!("machine {}", machine.name), outcome)?;
    }
    bar.finish();
    Ok(engines)
}

/// Makes or starts `machine` through its provider. Returns what was done
/// and, when provisioning ran, the node it reported (engine, address).
async fn provision_machine(
    machine: &Machine,
) -> Result<(Outcome, Option<crate::state::NodeSpec>), String> {
    use crate::provider::{MachineRequest, MachineStatus, ProviderConfig};
    let path = machine.provider_file.as_ref().ok_or("no provider_file")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = ProviderConfig::parse(&text).map_err(|e| e.to_string())?;
    let provider = crate::provider::from_config(&config).map_err(|e| e.to_string())?;
    if provider.kind() != machine.provider {
        return Err(format!(
            "{} configures a {} provider, the machine says {}",
            path.display(),
            provider.kind(),
            machine.provider
        ));
    }
    let request = MachineRequest {
        name: machine.name.clone(),
        zone: None,
        labels: Default::default(),
        tags: [("raftvisor".to_string(), "bootstrap".to_string())].into(),
    };
    let provision = || async {
        provider
            .provision(&request)
            .await
            .map(|made| Some(made.node))
            .map_err(|e| e.to_string())
    };
    let known = !machine.docker_endpoint.is_empty();
    match provider
        .status(&machine.name)
        .await
        .map_err(|e| e.to_string())?
    {
        MachineStatus::Running if known => Ok((Outcome::Unchanged, None)),
        MachineStatus::Running | MachineStatus::Provisioning => {
            Ok((Outcome::Unchanged, provision().await?))
        }
        MachineStatus::Stopped | MachineStatus::Deallocated => {
            provider
                .start(&machine.name)
                .await
                .map_err(|e| e.to_string())?;
            let spec = if known { None } else { provision().await? };
            Ok((Outcome::Started, spec))
        }
        MachineStatus::Missing => Ok((Outcome::Created, provision().await?)),
        MachineStatus::Unknown(state) => Err(format!("the provider reports {state:?}")),
    }
}

/// Each manager's config file is current and its container runs.
async fn managers(
    file: &ClusterFile,
    engines: &[(String, DockerRuntime)],
    report: &mut Report,
) -> anyhow::Result<()> {
    const STEP: &str = "managers";
    let bar = report.step(STEP, file.managers.len());
    for manager in &file.managers {
        let engine = &engines
            .iter()
            .find(|(name, _)| *name == manager.machine)
            .expect("every machine was checked")
            .1;
        let outcome = match ensure_manager(file, manager, engine, false).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        report.record(&bar, STEP, &format!("manager {}", manager.id), outcome)?;
    }
    bar.finish();
    Ok(())
}

/// `manager`'s config is current and its container runs; a `joining`
/// manager waits to be added to the cluster.
pub(crate) async fn ensure_manager(
    file: &ClusterFile,
    manager: &cluster_file::ManagerPlacement,
    engine: &DockerRuntime,
    joining: bool,
) -> Result<Outcome, ManagerStepError> {
    let dir = file.manager_dir(manager.id);
    std::fs::create_dir_all(dir.join("data")).map_err(|source| ManagerStepError::File {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    let config_path = dir.join("config.toml");
    let config = file.agent_config(manager, joining);
    // `[[members]]` only seeds a new cluster: once a manager has formed or
    // joined one, a different list (after a replacement) changes nothing.
    let config_changed = std::fs::read_to_string(&config_path)
        .ok()
        .is_none_or(|current| without_members(&current) != without_members(&config));
    if config_changed {
        std::fs::write(&config_path, &config).map_err(|source| ManagerStepError::File {
            action: "write",
            path: config_path.clone(),
            source,
        })?;
    }
    let spec = file.manager_container(manager);
    match engine.inspect(&spec.name).await? {
        None => {
            let id = engine.create(&spec).await?;
            engine.start(&id).await?;
            Ok(Outcome::Created)
        }
        Some(container) if container.state != ContainerState::Running => {
            engine.start(&container.id).await?;
            Ok(Outcome::Started)
        }
        Some(container) if config_changed => {
            engine.stop(&container.id, Duration::from_secs(10)).await?;
            engine.start(&container.id).await?;
            Ok(Outcome::Updated)
        }
        Some(_) => Ok(Outcome::Unchanged),
    }
}

/// `config` without its `[[members]]` tables.
fn without_members(config: &str) -> String {
    let mut in_members = false;
    config
        .lines()
        .filter(|line| {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                in_members = trimmed == "[[members]]";
            }
            !in_members && !trimmed.is_empty()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn client_of(file: &ClusterFile) -> anyhow::Result<Client> {
    let mut options = ClientOptions::new(file.managers.iter().map(|m| file.api_addr(m)));
    options.ca_cert = Some(file.certs_dir().join(certs::CA_CERT));
    options.token =
        crate::auth::first_token::read_file(&file.token_file())?.map(|t| t.reveal().to_string());
    options.timeout = Duration::from_secs(5);
    Ok(Client::new(options)?)
}

/// One leader, every manager a voter.
async fn cluster(file: &ClusterFile, report: &mut Report) -> anyhow::Result<Client> {
    const STEP: &str = "cluster";
    let bar = report.step(STEP, 1);
    let client = client_of(file)?;
    let wanted: std::collections::BTreeSet<u64> = file.managers.iter().map(|m| m.id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let seen = match client.cluster_status().await {
            Ok(status) => {
                let voters: std::collections::BTreeSet<u64> =
                    status.voter_ids().into_iter().collect();
                if status.leader_id.is_some() && voters == wanted {
                    break Outcome::Unchanged;
                }
                format!("leader {:?}, voters {voters:?}", status.leader_id)
            }
            Err(e) => e.to_string(),
        };
        bar.set_message(format!("waiting: {seen}"));
        if tokio::time::Instant::now() >= deadline {
            break Outcome::Failed(format!(
                "no leader with managers {wanted:?} as voters within 60 s ({seen})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    report.record(&bar, STEP, &format!("{} managers", wanted.len()), outcome)?;
    bar.finish();
    Ok(client)
}

/// The cluster keeps the plan, so its leader can replace managers.
async fn record_plan(
    file: &ClusterFile,
    client: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    const STEP: &str = "plan";
    let bar = report.step(STEP, 1);
    let outcome = match client.cluster_plan().await {
        Ok(recorded) if recorded == *file => Outcome::Unchanged,
        Ok(_) => match client.put_cluster_plan(file).await {
            Ok(_) => Outcome::Updated,
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Err(e) if e.status() == Some(404) => match client.put_cluster_plan(file).await {
            Ok(_) => Outcome::Created,
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let outcome = match (outcome, file.save_plan_file()) {
        (Outcome::Failed(e), _) => Outcome::Failed(e),
        (_, Err(e)) => Outcome::Failed(format!("cannot write {}: {e}", file.plan_file().display())),
        (outcome, Ok(())) => outcome,
    };
    report.record(&bar, STEP, "manager plan", outcome)?;
    bar.finish();
    Ok(())
}

/// Copies `machine`'s engine TLS files into the managers' `docker_tls_dir`
/// (private files, rewritten only when they changed).
fn stage_docker_tls(file: &ClusterFile, machine: &cluster_file::Machine) -> Result<(), String> {
    let Some((source, staged)) = file.staged_docker_tls(machine) else {
        return Ok(());
    };
    for (from, to) in [
        (&source.ca_cert, &staged.ca_cert),
        (&source.cert, &staged.cert),
        (&source.key, &staged.key),
    ] {
        let bytes = std::fs::read(from).map_err(|e| format!("cannot read {from}: {e}"))?;
        if std::fs::read(to).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        let _ = std::fs::remove_file(to);
        write_private(Path::new(to), &bytes).map_err(|e| format!("cannot write {to}: {e}"))?;
    }
    Ok(())
}

/// Each node registered as the file says.
async fn nodes(file: &ClusterFile, client: &Client, report: &mut Report) -> anyhow::Result<()> {
    const STEP: &str = "nodes";
    let bar = report.step(STEP, file.nodes.len());
    for node in &file.nodes {
        if let Err(e) = stage_docker_tls(file, file.machine(&node.machine)) {
            report.record(
                &bar,
                STEP,
                &format!("node {}", node.name),
                Outcome::Failed(e),
            )?;
            continue;
        }
        let spec = file.node_spec(node);
        let outcome = match client.node_get(&node.name).await {
            Ok(existing) if existing.spec == spec => Outcome::Unchanged,
            Ok(_) => match client.node_put(&node.name, &spec).await {
                Ok(_) => Outcome::Updated,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Err(e) if e.status() == Some(404) => match client.node_put(&node.name, &spec).await {
                Ok(_) => Outcome::Created,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
        report.record(&bar, STEP, &format!("node {}", node.name), outcome)?;
    }
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_key_lives_outside_the_managers_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_dir, certs_dir) = (dir.path().join("state-ca"), dir.path().join("state/certs"));
        assert_eq!(cluster_ca(&ca_dir, &certs_dir).unwrap(), Outcome::Created);
        assert!(ca_dir.join(certs::CA_KEY).exists());
        assert!(certs_dir.join(certs::CA_CERT).exists());
        assert!(!certs_dir.join(certs::CA_KEY).exists());
        assert_eq!(cluster_ca(&ca_dir, &certs_dir).unwrap(), Outcome::Unchanged);

        // An earlier layout with the key among the managers' files: moved.
        let dir = tempfile::tempdir().unwrap();
        let (ca_dir, certs_dir) = (dir.path().join("state-ca"), dir.path().join("state/certs"));
        let made = certs::init_ca(&certs_dir).unwrap();
        let key = std::fs::read(&made.key).unwrap();
        assert_eq!(cluster_ca(&ca_dir, &certs_dir).unwrap(), Outcome::Updated);
        assert!(!certs_dir.join(certs::CA_KEY).exists());
        assert_eq!(std::fs::read(ca_dir.join(certs::CA_KEY)).unwrap(), key);
        assert_eq!(
            std::fs::read(ca_dir.join(certs::CA_CERT)).unwrap(),
            std::fs::read(certs_dir.join(certs::CA_CERT)).unwrap()
        );

        // A CA from before issuers cannot sign one: its key stays.
        let dir = tempfile::tempdir().unwrap();
        let (ca_dir, certs_dir) = (dir.path().join("state-ca"), dir.path().join("state/certs"));
        std::fs::create_dir_all(&certs_dir).unwrap();
        let old_key = rcgen::KeyPair::generate().unwrap();
        let mut old = rcgen::CertificateParams::default();
        old.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let old = old.self_signed(&old_key).unwrap();
        std::fs::write(certs_dir.join(certs::CA_CERT), old.pem()).unwrap();
        std::fs::write(certs_dir.join(certs::CA_KEY), old_key.serialize_pem()).unwrap();
        assert_eq!(cluster_ca(&ca_dir, &certs_dir).unwrap(), Outcome::Unchanged);
        assert!(certs_dir.join(certs::CA_KEY).exists());
        assert!(!ca_dir.exists());

        // A CA certificate whose key is nowhere is an error, not a new CA.
        let dir = tempfile::tempdir().unwrap();
        let (ca_dir, certs_dir) = (dir.path().join("state-ca"), dir.path().join("state/certs"));
        std::fs::create_dir_all(&certs_dir).unwrap();
        std::fs::write(certs_dir.join(certs::CA_CERT), old.pem()).unwrap();
        let refused = cluster_ca(&ca_dir, &certs_dir).unwrap_err().to_string();
        assert!(refused.contains("has no key beside it"), "{refused}");
    }
}
