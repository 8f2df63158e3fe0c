//! `raftvisor service backup | backups | restore` and `raftvisor backup
//! show | rm`: asks for a backup or restore of a service (its hooks run on
//! the leader) and follows it until it ends, or lists and removes backups.

use std::time::Duration;

use clap::Subcommand;

use super::output::{print, print_line, Format, Table};
use crate::client::Client;
use crate::wire::{BackupEntry, RestoreEntry};

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Show one backup: its state, each slot's artifact and its keepers.
    Show { id: String },
    /// Forget a backup; the managers then delete its artifacts.
    Rm { id: String },
}

/// How often a running job is looked at.
const POLL: Duration = Duration::from_millis(500);

/// A job still running when the wait ran out.
#[derive(Debug, thiserror::Error)]
#[error("{what} is still running after {waited:?}; follow it with `{follow}`")]
pub struct JobTimedOut {
    pub what: String,
    pub waited: Duration,
    pub follow: String,
}

/// A job that ended failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed: {reason}")]
pub struct JobFailed {
    pub what: String,
    pub reason: String,
}

/// A backup or restore as the API shows it.
trait Job: Sized {
    /// `running`, `done` or `failed`, and why it failed.
    fn progress(&self) -> (&str, Option<&str>);
}

impl Job for BackupEntry {
    fn progress(&self) -> (&str, Option<&str>) {
        (&self.state, self.reason.as_deref())
    }
}

impl Job for RestoreEntry {
    fn progress(&self) -> (&str, Option<&str>) {
        (&self.state, self.reason.as_deref())
    }
}

/// `started` as it is once it ended (`Ok` when done), looking again with
/// `look` until then; `started` itself unless `wait`.
async fn follow<J: Job, F, Fut>(
    what: &str,
    follow_with: &str,
    started: J,
    wait: bool,
    timeout: Duration,
    look: F,
) -> anyhow::Result<J>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<J, crate::client::ClientError>>,
{
    if !wait {
        return Ok(started);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut job = started;
    loop {
        match job.progress() {
            ("done", _) => return Ok(job),
            ("failed", reason) => {
                return Err(JobFailed {
                    what: what.to_string(),
                    reason: reason.unwrap_or_default().to_string(),
                }
                .into())
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(JobTimedOut {
                    what: what.to_string(),
                    waited: timeout,
                    follow: follow_with.to_string(),
                }
                .into())
            }
            _ => tokio::time::sleep(POLL).await,
        }
        job = look().await?;
    }
}

fn backup_line(backup: &BackupEntry) -> String {
    match backup.state.as_str() {
        "done" => format!(
            "backup {} done: {} slot(s), {} bytes",
            backup.id,
            backup.slots.len(),
            backup.bytes
        ),
        "failed" => format!(
            "backup {} failed: {}",
            backup.id,
            backup.reason.as_deref().unwrap_or("")
        ),
        _ => format!("backup {} is running", backup.id),
    }
}

/// `service backup NS/NAME`.
pub async fn backup(
    client: &Client,
    format: Format,
    namespace: &str,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = client.backup_start(namespace, name).await?;
    let id = started.id.clone();
    let entry = follow(
        &format!("backup {id}"),
        &format!("raftvisor backup show {id}"),
        started,
        wait,
        timeout,
        || client.backup(&id),
    )
    .await?;
    print_line(format, &entry, || backup_line(&entry));
    Ok(())
}

/// `service backups NS/NAME`.
pub async fn list(
    client: &Client,
    format: Format,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let backups = client.backup_list(namespace, name).await?;
    print(format, &backups, || {
        let mut table = Table::new(&["ID", "STATE", "SLOTS", "BYTES", "VERSION", "CREATED"]);
        for backup in &backups {
            table.row(vec![
                backup.id.clone(),
                match &backup.reason {
                    Some(reason) => format!("{}: {reason}", backup.state),
                    None => backup.state.clone(),
                },
                backup.slots.len().to_string(),
                backup.bytes.to_string(),
                backup.version.to_string(),
                crate::dates::short_utc_ms(backup.created_ms),
            ]);
        }
        table
    });
    Ok(())
}

/// `service restore NS/NAME --from ID`.
pub async fn restore(
    client: &Client,
    format: Format,
    namespace: &str,
    name: &str,
    from: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = client.restore_start(namespace, name, from).await?;
    let id = started.id.clone();
    let entry = follow(
        &format!("restore {id}"),
        &format!("GET /v1/restores/{id}"),
        started,
        wait,
        timeout,
        || client.restore(&id),
    )
    .await?;
    print_line(format, &entry, || {
        format!(
            "restore {} of {namespace}/{name} from backup {from}: {}",
            entry.id, entry.state
        )
    });
    Ok(())
}

pub async fn run(client: &Client, format: Format, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Show { id } => {
            let backup = client.backup(&id).await?;
            print_line(format, &backup, || {
                let mut text = backup_line(&backup);
                for slot in &backup.slots {
                    text.push_str(&format!(
                        "\n  slot {}: {} bytes, sha256 {}",
                        slot.slot, slot.bytes, slot.archive
                    ));
                }
                text
            });
        }
        BackupCommand::Rm { id } => {
            client.backup_remove(&id).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed backup {id}"),
            }
        }
    }
    Ok(())
}
