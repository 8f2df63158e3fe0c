//! `raftvisor volume ls | rm`: the slots' volumes the cluster made, and
//! the removal of one no slot uses (`service rm --purge` removes a
//! service's volumes with it).

use clap::Subcommand;

use super::output::{print, Format, Table};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List the slots' volumes: whose they are, the nodes that hold them,
    /// and whether a slot uses them (`in-use`), they outlived their
    /// service or slot (`kept`) or are being removed.
    Ls {
        /// Only this namespace's volumes.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Remove a volume no slot uses, from every node that holds it; its
    /// data is gone for good.
    Rm { name: String },
}

pub async fn run(client: &Client, format: Format, command: VolumeCommand) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Ls { namespace } => {
            let volumes = client.volume_list(namespace.as_deref()).await?;
            print(format, &volumes, || {
                let mut table = Table::new(&[
                    "NAME", "SERVICE", "SLOT", "VOLUME", "DRIVER", "NODES", "STATE", "CREATED",
                ]);
                for volume in &volumes {
                    table.row(vec![
                        volume.name.clone(),
                        format!("{}/{}", volume.namespace, volume.service),
                        volume.slot.to_string(),
                        volume.volume.clone(),
                        volume.driver.clone(),
                        volume.nodes.join(","),
                        volume.state.clone(),
                        crate::dates::short_utc_ms(volume.created_ms),
                    ]);
                }
                table
            });
        }
        VolumeCommand::Rm { name } => {
            client.volume_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("{name} is being removed from every node that holds it"),
            }
        }
    }
    Ok(())
}
