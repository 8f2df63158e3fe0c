//! A replica run in-process through `agent::run`: it answers with the
//! addresses it bound, and once its shutdown token is cancelled it drains
//! within its deadline — every task ended (nothing holds the replica any
//! more), its listeners closed and their ports free for the next start,
//! which finds its data again.

use std::sync::Arc;
use std::time::Duration;

use raftvisor::agent::{Running, Stopped};
use raftvisor::config::{AgentConfig, LoopbackPorts};
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, free_port};

fn config(dir: &std::path::Path, api: u16, peer: u16, dns: u16) -> AgentConfig {
    let ports = LoopbackPorts { api, peer, dns };
    let mut config = AgentConfig::loopback(1, dir.join("replica-1"), ports, &[(1, ports)]);
    config.auth.bootstrap_token_file = Some(dir.join("token"));
    config
}

/// Stops `running` and checks the drain: in time, nothing abandoned,
/// no task left holding the replica, every port closed and free again.
async fn stop_and_check_drain(running: Running, shutdown: CancellationToken) {
    let bound = running.bound.clone();
    let replica = Arc::downgrade(&running.replica);
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(15), running.stopped())
        .await
        .expect("the agent drains within its deadline");
    assert_eq!(
        stopped,
        Stopped {
            exit_code: None,
            abandoned: vec![]
        }
    );
    eventually(
        "no task holds the replica",
        Duration::from_secs(5),
        || async {
            match replica.upgrade() {
                None => Ok(()),
                Some(r) => Err(format!("{} holders left", Arc::strong_count(&r) - 1)),
            }
        },
    )
    .await;
    for addr in [bound.api, bound.peer] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} not free: {e}"));
    }
    for addr in &bound.dns {
        std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("DNS {addr} not free: {e}"));
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("DNS {addr} not free: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_in_process_reports_its_addresses_and_drains_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (api, peer, dns) = (free_port(), free_port(), free_port());
    let config = config(dir.path(), api, peer, dns);

    let shutdown = CancellationToken::new();
    let running = raftvisor::agent::run(config.clone(), shutdown.clone())
        .await
        .expect("the agent starts");
    assert_eq!(running.bound.api.port(), api);
    assert_eq!(running.bound.peer.port(), peer);
    assert_eq!(
        running
            .bound
            .dns
            .iter()
            .map(|a| a.port())
            .collect::<Vec<_>>(),
        [dns]
    );
    // A client connection kept open across the shutdown must not hold
    // the drain up.
    let http = reqwest::Client::new();
    let token = eventually("the bootstrap token", Duration::from_secs(20), || async {
        std::fs::read_to_string(dir.path().join("token")).map_err(|e| e.to_string())
    })
    .await;
    eventually("a KV write", Duration::from_secs(20), || async {
        let answer = http
            .put(format!("http://127.0.0.1:{api}/v1/kv/drain-test"))
            .bearer_auth(token.trim())
            .body("kept")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        answer
            .status()
            .is_success()
            .then_some(())
            .ok_or_else(|| answer.status().to_string())
    })
    .await;
    stop_and_check_drain(running, shutdown).await;

    // The same ports and data directory serve again.
    let shutdown = CancellationToken::new();
    let running = raftvisor::agent::run(config, shutdown.clone())
        .await
        .expect("the agent starts again on the same ports");
    eventually(
        "the KV value after the restart",
        Duration::from_secs(20),
        || async {
            let answer = http
                .get(format!("http://127.0.0.1:{api}/v1/kv/drain-test?raw"))
                .bearer_auth(token.trim())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body = answer.text().await.map_err(|e| e.to_string())?;
            (body == "kept").then_some(()).ok_or(body)
        },
    )
    .await;
    stop_and_check_drain(running, shutdown).await;
}
