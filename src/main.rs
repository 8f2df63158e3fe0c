//! The `raftvisor` binary: parse the command line, set up logging, run the
//! agent or a client command, and turn any failure into one line on stderr
//! and exit code 1 (2 for usage errors, from clap).

use clap::Parser;
use raftvisor::cli::{Cli, Command};

fn init_tracing() {
    // hickory-server logs every DNS query at info; that is a debug matter.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RAFTVISOR_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,openraft=warn,hickory_server=warn")
        });
    // azure_core 0.21 logs each request at debug with its Authorization
    // header in clear (its Debug redacts every header but that one): never
    // let that through, whatever RAFTVISOR_LOG asks for.
    let filter = filter.add_directive(
        raftvisor::provider::azure::SDK_TRANSPORT_LOG_CAP
            .parse()
            .expect("a valid directive"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

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
                init_tracing();
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
        std::process::exit(1);
    }
}
