//! `raftvisor cluster backup | restore | recover`: taking a backup of the
//! replicated state from a running cluster, seeding the data directories of
//! a new cluster from one, and restarting a cluster from its most
//! up-to-date survivor after a majority of managers is gone for good.
//!
//! Restore and recover work on a stopped replica's data directory and never
//! change a running one; recover changes nothing without `--yes`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::output::{print, print_line, Format, Table};
use crate::client::{Client, ClientOptions};
use crate::config::AgentConfig;
use crate::raft::backup::{self, Backup, Seed};
use crate::raft::{NodeId, PeerNode};

/// What `cluster backup` wrote.
#[derive(Serialize)]
struct BackupWritten {
    file: String,
    cluster_id: Option<String>,
    index: u64,
    term: u64,
    taken_by: NodeId,
    bytes: usize,
    sha256: String,
}

/// `raftvisor cluster backup FILE`: the state at one applied index, from
/// the replica asked (after a read barrier, so it holds every write
/// acknowledged before the call), checked, then written atomically.
pub async fn backup(client: &Client, format: Format, file: &Path) -> anyhow::Result<()> {
    let bytes = client.cluster_backup().await?;
    let backup = Backup::decode(&bytes).context("the replica sent a backup that does not check")?;
    let sha256 = Backup::checksum_of(&bytes).unwrap_or_default();
    write_atomically(file, &bytes)?;
    let written = BackupWritten {
        file: file.display().to_string(),
        cluster_id: backup.header.cluster_id.clone(),
        index: backup.header.index,
        term: backup.header.term,
        taken_by: backup.header.taken_by,
        bytes: bytes.len(),
        sha256,
    };
    print_line(format, &written, || {
        format!(
            "backup of cluster {} at index {} (term {}) from manager {}: {} bytes, sha256 {} → {}",
            written.cluster_id.as_deref().unwrap_or("-"),
            written.index,
            written.term,
            written.taken_by,
            written.bytes,
            written.sha256,
            written.file
        )
    });
    Ok(())
}

fn write_atomically(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("partial");
    let written = (|| -> std::io::Result<()> {
        let mut out = crate::file_modes::create(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", file.display());
    }
    Ok(())
}

/// The voters a seeded data directory starts with: the config's initial
/// members, or this replica alone when it names none.
fn members_of(config: &AgentConfig) -> anyhow::Result<BTreeMap<NodeId, PeerNode>> {
    let this = PeerNode {
        peer_addr: config.peer_addr.to_string(),
        api_addr: config.api_addr.to_string(),
    };
    if config.members.is_empty() {
        return Ok(BTreeMap::from([(config.id, this)]));
    }
    if !config.members.iter().any(|m| m.id == config.id) {
        bail!(
            "the config's [[members]] do not include this replica (id {}): a restored cluster starts from its members",
            config.id
        );
    }
    Ok(config
        .members
        .iter()
        .map(|m| (m.id, PeerNode::of_member(m)))
        .collect())
}

/// What `cluster restore` did.
#[derive(Serialize)]
struct Restored {
    data_dir: String,
    from_cluster: Option<String>,
    cluster_id: Option<String>,
    index: u64,
    members: Vec<NodeId>,
    plan_dropped: bool,
}

/// `raftvisor cluster restore FILE --config AGENT.toml`: seeds the agent's
/// empty data directory from the backup, as a member of the cluster its
/// config names. Every member is seeded from the same file (run it once per
/// member's config); the agents then start as one cluster at the backup's
/// index. A new cluster id unless `keep_cluster_id`; either way the
/// containers keep the label they were started with, so the new cluster's
/// leader adopts those still running instead of starting them again.
pub async fn restore(
    format: Format,
    file: &Path,
    config_path: &Path,
    keep_cluster_id: bool,
) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let read = Backup::read(file)?;
    let members = members_of(&config)?;
    let from_cluster = read.header.cluster_id.clone();
    let mut image = read.image;
    if !keep_cluster_id {
        // The restored cluster's leader gives it a new id through Raft (as
        // to any cluster without one), so every member seeded from this
        // file agrees on it. What the old cluster started keeps its label,
        // and the restored cluster goes on owning it.
        image.owner_id = image.owner_id.take().or(image.cluster_id.take());
    }
    let cluster_id = image.cluster_id.clone();
    // The plan places the backed-up cluster's managers, not these: the
    // restored cluster's leader must not start or replace managers from it
    // (`raftvisor bootstrap` records the plan of the new managers).
    let plan_dropped = image.manager_template.take().is_some();
    backup::seed(
        &config.data_dir,
        Seed {
            image,
            index: read.header.index,
            members: members.clone(),
            term: read.header.term,
            this: config.id,
        },
    )
    .await?;
    let restored = Restored {
        data_dir: config.data_dir.display().to_string(),
        from_cluster,
        cluster_id,
        index: read.header.index,
        members: members.keys().copied().collect(),
        plan_dropped,
    };
    print_line(format, &restored, || {
        format!(
            "{} seeded at index {} as cluster {} (from cluster {}), members {:?}: seed every member from the same backup, then start the agents",
            restored.data_dir,
            restored.index,
            restored
                .cluster_id
                .as_deref()
                .unwrap_or("(a new id, given at the first leader's start)"),
            restored.from_cluster.as_deref().unwrap_or("-"),
            restored.members
        ) + if restored.plan_dropped {
            "; the backed-up manager plan was left out (run raftvisor bootstrap with the new cluster file to record one)"
        } else {
            ""
        }
    });
    Ok(())
}

/// One member as `cluster recover` sees it.
#[derive(Serialize)]
struct Survivor {
    id: NodeId,
    api_addr: String,
    /// This replica (read from its data directory).
    this: bool,
    reachable: bool,
    last_log_index: Option<u64>,
    term: Option<u64>,
    note: String,
}

/// What `cluster recover` found, and did.
#[derive(Serialize)]
struct Recovery {
    this_id: NodeId,
    cluster_id: Option<String>,
    last_log_index: u64,
    last_log_term: u64,
    committed_index: u64,
    survivors: Vec<Survivor>,
    most_up_to_date: Option<NodeId>,
    may_be_lost: String,
    recovered: bool,
    moved_aside: Option<String>,
}

/// `raftvisor cluster recover --config AGENT.toml [--yes]`: after a
/// majority of managers is gone for good, restarts the cluster from this
/// stopped survivor as a one-member cluster holding every entry of its log.
/// It first asks the other members that still answer how far their logs
/// reach, says which survivor is the most up to date and what may be lost,
/// and changes nothing without `yes`. With `yes` (and this survivor the
/// most up to date, unless `force`) its log and snapshot are moved aside
/// under the data directory and it is seeded with itself as the only voter.
pub async fn recover(
    options: ClientOptions,
    format: Format,
    config_path: &Path,
    yes: bool,
    force: bool,
) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    if answers(&config.api_addr.to_string()).await {
        bail!(
            "replica {} still answers on {}: stop its agent first (recover reads and rewrites its data directory)",
            config.id,
            config.api_addr
        );
    }
    let local = backup::local_state(&config.data_dir).await?;
    let last = local
        .last_log
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    let committed = local.committed.map_or(0, |l| l.index);
    let membership = local.membership.membership().clone();
    let mut survivors = vec![Survivor {
        id: config.id,
        api_addr: config.api_addr.to_string(),
        this: true,
        reachable: true,
        last_log_index: Some(last.0),
        term: local.vote.map(|v| v.leader_id.term),
        note: "this replica's data directory".into(),
    }];
    for (id, node) in membership.nodes().filter(|(id, _)| **id != config.id) {
        let mut asked = options.clone();
        asked.addrs = vec![node.api_addr.clone()];
        asked.timeout = Duration::from_secs(3);
        let status = match Client::new(asked) {
            Ok(client) => client.cluster_status().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        survivors.push(match status {
            Ok(status) => Survivor {
                id: *id,
                api_addr: node.api_addr.clone(),
                this: false,
                reachable: true,
                last_log_index: Some(status.last_log_index),
                term: Some(status.term),
                note: format!("answers ({})", status.state),
            },
            Err(e) => Survivor {
                id: *id,
                api_addr: node.api_addr.clone(),
                this: false,
                reachable: false,
                last_log_index: None,
                term: None,
                note: format!("not reached: {e}"),
            },
        });
    }
    let most_up_to_date = survivors
        .iter()
        .filter(|s| s.last_log_index.is_some())
        .max_by_key(|s| (s.last_log_index, s.this))
        .map(|s| s.id);
    let may_be_lost = format!(
        "entries after index {} that only the lost managers held; entries {}..={} are kept though this replica never learned they were committed",
        last.0,
        committed + 1,
        last.0
    );
    let mut recovery = Recovery {
        this_id: config.id,
        cluster_id: local.image.cluster_id.clone(),
        last_log_index: last.0,
        last_log_term: last.1,
        committed_index: committed,
        survivors,
        most_up_to_date,
        may_be_lost,
        recovered: false,
        moved_aside: None,
    };
    let behind = most_up_to_date.filter(|id| *id != config.id);
    if yes && (behind.is_none() || force) {
        let aside = move_aside(&config.data_dir)?;
        let mut image = local.image;
        // The other members are out of the recovered cluster for good: their
        // peer requests are refused as a removed member's are, and one that
        // comes back joins under a new id.
        for (id, _) in membership.nodes().filter(|(id, _)| **id != config.id) {
            if !image.departed_managers.contains(id) {
                image.departed_managers.push(*id);
            }
        }
        let this = membership
            .get_node(&config.id)
            .cloned()
            .unwrap_or_else(|| PeerNode {
                peer_addr: config.peer_addr.to_string(),
                api_addr: config.api_addr.to_string(),
            });
        backup::seed(
            &config.data_dir,
            Seed {
                image,
                index: last.0,
                members: BTreeMap::from([(config.id, this)]),
                term: local.vote.map_or(last.1, |v| v.leader_id.term.max(last.1)),
                this: config.id,
            },
        )
        .await?;
        recovery.recovered = true;
        recovery.moved_aside = Some(aside.display().to_string());
    }
    print(format, &recovery, || {
        let mut table = Table::new(&["MEMBER", "API", "LAST LOG", "TERM", "NOTE"]);
        for s in &recovery.survivors {
            table.row(vec![
                format!("{}{}", s.id, if s.this { " (this)" } else { "" }),
                s.api_addr.clone(),
                s.last_log_index.map_or("-".into(), |i| i.to_string()),
                s.term.map_or("-".into(), |t| t.to_string()),
                s.note.clone(),
            ]);
        }
        table
    });
    if format == Format::Human {
        eprintln!(
            "most up to date: {}; may be lost: {}",
            most_up_to_date.map_or("-".into(), |id| format!("manager {id}")),
            recovery.may_be_lost
        );
    }
    match (recovery.recovered, behind) {
        (true, _) => {
            if format == Format::Human {
                eprintln!(
                    "recovered: manager {} is a one-member cluster at index {} (the old log and snapshot are in {}); start its agent, then the other survivors are refused until added again (cluster add-member, or the manager plan brings the count back)",
                    config.id,
                    last.0,
                    recovery.moved_aside.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        (false, Some(ahead)) if yes => bail!(
            "manager {ahead} holds a longer log than this replica: recover there instead, or add --force to lose what only it holds"
        ),
        (false, _) => bail!(
            "nothing changed: run again with --yes to restart the cluster from manager {} alone",
            config.id
        ),
    }
}

/// Whether something accepts connections at `addr` (a running agent).
async fn answers(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Moves the data directory's log and snapshots into
/// `pre-recover-<ms>/` beside them: nothing is deleted.
fn move_aside(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let aside = data_dir.join(format!("pre-recover-{}", crate::replica::now_ms()));
    crate::file_modes::create_dir_all(&aside)
        .with_context(|| format!("cannot create {}", aside.display()))?;
    for store in ["log", "snapshots"] {
        let from = data_dir.join(store);
        if from.exists() {
            std::fs::rename(&from, aside.join(store)).with_context(|| {
                format!("cannot move {} to {}", from.display(), aside.display())
            })?;
        }
    }
    Ok(aside)
}
