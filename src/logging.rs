//! Where raftvisor's programs send their logs: standard error, filtered by
//! `RAFTVISOR_LOG` (an `EnvFilter` directive list) or a program's default.
//! It owns that one set-up for the agent, the benchmarks and the examples;
//! it must never let the Azure SDK's transport log through (see
//! [`crate::provider::azure::SDK_TRANSPORT_LOG_CAP`]), whatever is asked.

use tracing_subscriber::EnvFilter;

/// Logs to standard error with `RAFTVISOR_LOG`'s filter, or `default`'s
/// when it is unset; with neither, logs nothing.
pub fn to_stderr(default: Option<&str>) {
    let filter = match (EnvFilter::try_from_env("RAFTVISOR_LOG"), default) {
        (Ok(asked), _) => asked,
        (Err(_), Some(default)) => EnvFilter::new(default),
        (Err(_), None) => return,
    };
    let filter = filter.add_directive(
        crate::provider::azure::SDK_TRANSPORT_LOG_CAP
            .parse()
            .expect("a valid directive"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
