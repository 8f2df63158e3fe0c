//! The side-by-side peer for commit throughput: a 3-member etcd (Debian's
//! `etcd-server`) on loopback, fsyncing as it does by default, written
//! through its JSON gateway (`POST /v3/kv/txn`) with the records and the
//! batching raftvisor used: one transaction per Raft entry raftvisor
//! committed, as many puts in it as raftvisor's entries held commands on
//! average, as many transactions in flight as raftvisor's writer allows.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;

/// The etcd members, killed when dropped.
pub struct Etcd {
    members: Vec<tokio::process::Child>,
    client_urls: Vec<String>,
}

/// Client ports `base+1..=3`, peer ports `base+11..=13`.
pub async fn start(binary: &str, dir: &Path, port_base: u16) -> Result<Etcd, String> {
    let peer = |n: u16| format!("http://127.0.0.1:{}", port_base + 10 + n);
    let client = |n: u16| format!("http://127.0.0.1:{}", port_base + n);
    let initial: Vec<String> = (1..=3).map(|n| format!("e{n}={}", peer(n))).collect();
    let mut members = Vec::new();
    for n in 1..=3u16 {
        let log = std::fs::File::create(dir.join(format!("etcd-{n}.log")))
            .map_err(|e| format!("etcd log file: {e}"))?;
        let child = tokio::process::Command::new(binary)
            .args([
                "--name",
                &format!("e{n}"),
                "--data-dir",
                &dir.join(format!("etcd-{n}")).display().to_string(),
                "--listen-client-urls",
                &client(n),
                "--advertise-client-urls",
                &client(n),
                "--listen-peer-urls",
                &peer(n),
                "--initial-advertise-peer-urls",
                &peer(n),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "raftvisor-scale-bench",
                "--max-txn-ops",
                "100000",
                "--max-request-bytes",
                "16777216",
                "--quota-backend-bytes",
                "8589934592",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        members.push(child);
    }
    Ok(Etcd {
        members,
        client_urls: (1..=3).map(client).collect(),
    })
}

/// What the etcd run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EtcdRun {
    pub records: usize,
    pub batch: usize,
    pub in_flight: usize,
    pub record_bytes: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    pub failed_batches: usize,
}

impl Etcd {
    /// The client URL of the current leader, once the cluster is healthy.
    pub async fn leader(&self, http: &reqwest::Client, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            for url in &self.client_urls {
                let status: Option<serde_json::Value> = match http
                    .post(format!("{url}/v3/maintenance/status"))
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                {
                    Ok(answer) => answer.json().await.ok(),
                    Err(_) => None,
                };
                let Some(status) = status else { continue };
                let leader = status["leader"].as_str().unwrap_or("0");
                let me = status["header"]["member_id"].as_str().unwrap_or("");
                if leader != "0" && leader == me {
                    return Ok(url.clone());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("etcd had no leader within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes `records` (key, value) in transactions of `batch` puts,
    /// `in_flight` at a time, to the leader at `url`.
    pub async fn write(
        &self,
        http: &reqwest::Client,
        url: &str,
        records: Vec<(String, Vec<u8>)>,
        batch: usize,
        in_flight: usize,
    ) -> EtcdRun {
        let b64 = base64::engine::general_purpose::STANDARD;
        let count = records.len();
        let record_bytes = records
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            / count.max(1);
        let bodies: Vec<serde_json::Value> = records
            .chunks(batch.max(1))
            .map(|chunk| {
                let puts: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|(key, value)| {
                        serde_json::json!({"requestPut": {"key": b64.encode(key), "value": b64.encode(value)}})
                    })
                    .collect();
                serde_json::json!({ "success": puts })
            })
            .collect();
        let started = Instant::now();
        let failed = futures::stream::iter(bodies)
            .map(|body| async move {
                let answer = http
                    .post(format!("{url}/v3/kv/txn"))
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(answer) if answer.status().is_success() => 0usize,
                    _ => 1,
                }
            })
            .buffer_unordered(in_flight.max(1))
            .fold(0usize, |sum, failed| async move { sum + failed })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        EtcdRun {
            records: count,
            batch,
            in_flight,
            record_bytes,
            seconds,
            records_per_s: count as f64 / seconds,
            failed_batches: failed,
        }
    }

    /// Stops every member.
    pub async fn stop(mut self) {
        for member in &mut self.members {
            let _ = member.kill().await;
        }
    }
}
