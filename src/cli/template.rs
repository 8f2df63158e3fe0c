//! `raftvisor template ls | show | add | rm`: the templates of clustered
//! third-party services the cluster keeps, each a TOML file (see the
//! README's Templates section).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::output::{print, print_line, Format, Table};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// List the templates: name, image, description.
    Ls,
    /// Print a template's TOML text as it was added.
    Show { name: String },
    /// Add a template from a TOML file (replacing one of the same name).
    Add { file: PathBuf },
    /// Remove a template; what was made from it keeps running.
    Rm { name: String },
}

pub async fn run(client: &Client, format: Format, command: TemplateCommand) -> anyhow::Result<()> {
    match command {
        TemplateCommand::Ls => {
            let templates = client.template_list().await?;
            print(format, &templates, || {
                let mut table = Table::new(&["NAME", "IMAGE", "ADDED", "DESCRIPTION"]);
                for template in &templates {
                    table.row(vec![
                        template.name.clone(),
                        template.image.clone(),
                        crate::dates::short_utc_ms(template.added_ms),
                        template.description.clone(),
                    ]);
                }
                table
            });
        }
        TemplateCommand::Show { name } => {
            let template = client.template(&name).await?;
            print_line(format, &template, || template.text.trim_end().to_string());
        }
        TemplateCommand::Add { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            // The name inside the file names it (else the file's own
            // name); the cluster checks the whole text and says what is wrong.
            let name = toml::from_str::<toml::Table>(&text)
                .ok()
                .and_then(|table| table.get("name")?.as_str().map(str::to_string))
                .or_else(|| Some(file.file_stem()?.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let added = client.template_put(&name, &text).await?;
            print_line(format, &added, || {
                format!("template {} added (image {})", added.name, added.image)
            });
        }
        TemplateCommand::Rm { name } => {
            client.template_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed template {name}"),
            }
        }
    }
    Ok(())
}
