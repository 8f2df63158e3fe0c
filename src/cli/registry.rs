//! `raftvisor registry login | ls | logout`: the accounts the cluster
//! pulls images with. The password is read from stdin or the environment,
//! never from the command line (where `ps` and shell history would keep it).

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::output::{print, Format, Table};
use crate::client::Client;

/// Where `registry login` reads the password when not from stdin.
pub const PASSWORD_ENV: &str = "RAFTVISOR_REGISTRY_PASSWORD";

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Store the account the cluster pulls from HOST with (sealed; never shown).
    Login {
        /// The registry as image references name it: host or host:port.
        host: String,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin (otherwise from
        /// RAFTVISOR_REGISTRY_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the registries with a stored login (host and username).
    Ls,
    /// Forget the login of HOST.
    Logout { host: String },
}

pub async fn run(client: &Client, format: Format, command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Login {
            host,
            username,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                std::env::var(PASSWORD_ENV).with_context(|| {
                    format!("give the password on stdin (--password-stdin) or in {PASSWORD_ENV}")
                })?
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            let info = client.registry_login(&host, &username, &password).await?;
            match format {
                Format::Json => print(format, &info, || unreachable!()),
                Format::Human => {
                    println!("stored the login of {} for {}", info.username, info.host)
                }
            }
        }
        RegistryCommand::Ls => {
            let logins = client.registry_list().await?;
            print(format, &logins, || {
                let mut table = Table::new(&["REGISTRY", "USERNAME"]);
                for login in &logins {
                    table.row(vec![login.host.clone(), login.username.clone()]);
                }
                table
            });
        }
        RegistryCommand::Logout { host } => {
            client.registry_logout(&host).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed the login for {host}"),
            }
        }
    }
    Ok(())
}
