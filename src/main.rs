//! The `raftvisor` binary: parse the command line, set up logging, run the
//! agent or a client command, and turn any failure into one line on stderr
//! and an exit code telling the kind of failure apart
//! ([`raftvisor::cli::exit_codes`]; 2 for usage errors, also from clap).

use clap::Parser;
use raftvisor::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    raftvisor::tls::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result: anyhow::Result<()> = runtime.block_on(async move {
        match cli.command {
            Command::Agent { config } => {
                // hickory-server logs every DNS query at info; that is a
                // debug matter.
                raftvisor::logging::to_stderr(Some("info,openraft=warn,hickory_server=warn"));
                let config = raftvisor::config::AgentConfig::load(&config)?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                let running = raftvisor::agent::run(config, shutdown.clone()).await?;
                tokio::spawn(async move {
                    raftvisor::agent::shutdown_signal().await;
                    shutdown.cancel();
                });
                let stopped = running.stopped().await;
                if let Some(code) = stopped.exit_code {
                    std::process::exit(code);
                }
                Ok(())
            }
            command => raftvisor::cli::run_client(cli.global, command).await,
        }
    });
    if let Err(error) = result {
        // Many errors already quote their source; add only causes not yet said.
        let mut line = String::new();
        for cause in error.chain().map(|e| e.to_string()) {
            if !line.contains(&cause) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&cause);
            }
        }
        line.retain(|c| c != '\n');
        eprintln!("raftvisor: {line}");
        std::process::exit(raftvisor::cli::exit_codes::of(&error));
    }
}
