//! `raftvisor image import | ls | rm`: images the cluster keeps without a
//! registry (archives in the `docker save` format).

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{print, Format, Table};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Make an image known to the cluster from a `docker save` archive:
    /// kept by two managers, loaded into every node that runs it.
    Import {
        /// The archive (`docker save -o FILE.tar NAME:TAG`).
        file: PathBuf,
        /// Which of the archive's tags to keep (needed when it has several).
        #[arg(long)]
        name: Option<String>,
    },
    /// Build an image from a context (a directory or a tar with a
    /// Dockerfile at its root) on a node the leader picks; the build's
    /// output is shown as it runs, then the image is kept like an import.
    Build {
        context: PathBuf,
        #[arg(long)]
        tag: String,
    },
    /// List the images: those the cluster keeps (id, size, the nodes that
    /// hold them, the managers that keep them) and those it pulled from
    /// registries (digest, nodes).
    Ls,
    /// Forget an image the cluster keeps (nodes keep what they loaded
    /// until image clean-up).
    Rm { name: String },
}

pub async fn run(client: &Client, format: Format, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Import { file, name } => {
            let image = client.image_import(&file, name.as_deref()).await?;
            match format {
                Format::Json => print(format, &image, || unreachable!()),
                Format::Human => println!(
                    "kept {} ({}, {}) on managers {}",
                    image.name,
                    short_id(&image.id),
                    human_size(image.size),
                    join(image.keepers.iter().map(u64::to_string))
                ),
            }
        }
        ImageCommand::Build { context, tag } => {
            let archive = ContextArchive::of(&context)?;
            let image = client
                .image_build(archive.path(), &tag, |line| eprintln!("{line}"))
                .await?;
            match format {
                Format::Json => print(format, &image, || unreachable!()),
                Format::Human => println!(
                    "built {} ({}, {}) on node {}; kept on managers {}",
                    image.name,
                    short_id(&image.id),
                    human_size(image.size),
                    join(image.holders.iter().cloned()),
                    join(image.keepers.iter().map(u64::to_string))
                ),
            }
        }
        ImageCommand::Ls => {
            let images = client.image_list().await?;
            print(format, &images, || {
                let mut table =
                    Table::new(&["NAME", "DIGEST", "SIZE", "SOURCE", "NODES", "MANAGERS"]);
                for image in &images {
                    table.row(vec![
                        image.name.clone(),
                        short_id(&image.digest),
                        image.size.map_or_else(|| "-".into(), human_size),
                        image.source.clone(),
                        join(image.nodes.iter().cloned()),
                        join(image.managers.iter().map(u64::to_string)),
                    ]);
                }
                table
            });
        }
        ImageCommand::Rm { name } => {
            client.image_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("the cluster no longer keeps {name}"),
            }
        }
    }
    Ok(())
}

/// A build context as a tar file: the given tar, or a directory packed
/// into a temporary one (removed on drop).
pub(super) struct ContextArchive {
    path: PathBuf,
    temporary: bool,
}

impl ContextArchive {
    pub(super) fn of(context: &std::path::Path) -> anyhow::Result<ContextArchive> {
        use anyhow::Context as _;
        if context.is_file() {
            return Ok(ContextArchive {
                path: context.to_path_buf(),
                temporary: false,
            });
        }
        if !context.join("Dockerfile").is_file() {
            anyhow::bail!("{} has no Dockerfile", context.display());
        }
        let path = std::env::temp_dir().join(format!(
            "raftvisor-context-{}-{}.tar",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let archive = ContextArchive {
            path,
            temporary: true,
        };
        let file = std::fs::File::create(&archive.path)
            .with_context(|| format!("cannot write {}", archive.path.display()))?;
        let mut builder = tar::Builder::new(file);
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", context)
            .with_context(|| format!("cannot pack {}", context.display()))?;
        builder.finish()?;
        Ok(archive)
    }

    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for ContextArchive {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `sha256:` and the first 12 hex digits, as docker shows ids.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

fn human_size(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MB {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{:.1} kB", bytes as f64 / 1024.0)
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(",")
    }
}
