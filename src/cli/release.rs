//! `raftvisor release create | ls | show | switch | approve | rm`: blue-green
//! releases. The release's DNS name, `<name>.release.<domain>`, answers as
//! the entry service of its live environment; `switch` makes the other one
//! live in one write.

use clap::Subcommand;

use super::output::{print, print_line, Format, Table};
use crate::client::Client;
use crate::wire::{ReleaseBody, ReleaseEnvironment, ReleaseView, SwitchBody};

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Create a release: two namespaces of the same topology and the entry
    /// service whose release name points at one of them.
    Create {
        name: String,
        /// The entry service's name (the same in both namespaces).
        #[arg(long)]
        entry: String,
        /// The blue environment's namespace.
        #[arg(long)]
        blue: String,
        /// The green environment's namespace.
        #[arg(long)]
        green: String,
        /// The environment live at first: blue or green.
        #[arg(long, default_value = "blue")]
        live: String,
    },
    /// List the releases: which environment is live, what runs in each.
    Ls,
    /// Show a release, its environments and its latest switches.
    Show { name: String },
    /// Make the idle environment live (refused when its entry runs nowhere).
    Switch {
        name: String,
        /// Back to the environment live before the latest switch.
        #[arg(long, conflicts_with = "to")]
        back: bool,
        /// Exactly this environment: blue or green.
        #[arg(long)]
        to: Option<String>,
        /// Switch even when the entry has no running instance there.
        #[arg(long)]
        force: bool,
    },
    /// Approve the pipeline run waiting at the release's gate: the release
    /// switches to the environment it deployed to.
    Approve { name: String },
    /// Forget a release; both environments keep running.
    Rm { name: String },
}

fn environment(env: &ReleaseEnvironment, live: &str) -> String {
    let marker = if env.color == live { " (live)" } else { "" };
    format!(
        "{}{marker}: {} — entry {} running{}",
        env.color,
        env.namespace,
        env.entry_running,
        env.entry_image
            .as_deref()
            .map(|image| format!(", image {image}"))
            .unwrap_or_default()
    )
}

fn describe(release: &ReleaseView) -> String {
    let mut lines = vec![
        format!(
            "release {} (version {}): {} answers as {}'s {}",
            release.name, release.version, release.dns_name, release.live, release.entry
        ),
        format!("  {}", environment(&release.blue, &release.live)),
        format!("  {}", environment(&release.green, &release.live)),
    ];
    for switch in &release.switches {
        lines.push(format!(
            "  switched {} -> {}{} at {} (index {}{})",
            switch.from,
            switch.to,
            if switch.back { " (back)" } else { "" },
            crate::dates::short_utc_ms(switch.at_ms),
            switch.index,
            switch
                .actor
                .as_deref()
                .map(|actor| format!(", by {actor}"))
                .unwrap_or_default()
        ));
    }
    lines.join("\n")
}

pub async fn run(client: &Client, format: Format, command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Create {
            name,
            entry,
            blue,
            green,
            live,
        } => {
            let body = ReleaseBody {
                entry,
                blue,
                green,
                live: Some(live),
            };
            let release = client.release_create(&name, &body).await?;
            print_line(format, &release, || describe(&release));
        }
        ReleaseCommand::Ls => {
            let releases = client.release_list().await?;
            print(format, &releases, || {
                let mut table = Table::new(&["NAME", "ENTRY", "LIVE", "BLUE", "GREEN", "VERSION"]);
                for r in &releases {
                    let env = |e: &ReleaseEnvironment| {
                        format!("{} ({} running)", e.namespace, e.entry_running)
                    };
                    table.row(vec![
                        r.name.clone(),
                        r.entry.clone(),
                        r.live.clone(),
                        env(&r.blue),
                        env(&r.green),
                        r.version.to_string(),
                    ]);
                }
                table
            });
        }
        ReleaseCommand::Show { name } => {
            let release = client.release(&name).await?;
            print_line(format, &release, || describe(&release));
        }
        ReleaseCommand::Switch {
            name,
            back,
            to,
            force,
        } => {
            let body = SwitchBody {
                to,
                back,
                force,
                expected_version: None,
            };
            let release = client.release_switch(&name, &body).await?;
            print_line(format, &release, || describe(&release));
        }
        ReleaseCommand::Approve { name } => {
            let release = client.release_approve(&name).await?;
            print_line(format, &release, || describe(&release));
        }
        ReleaseCommand::Rm { name } => {
            client.release_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed release {name}; both environments keep running"),
            }
        }
    }
    Ok(())
}
