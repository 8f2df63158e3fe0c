//! Transport security: the peer port admits only manager certificates of the
//! cluster CA (plain HTTP, no certificate, another CA's certificate and a
//! client-role certificate are refused in the handshake, and the term does
//! not move); a replica holding another CA's certificate cannot join; the
//! API is served over HTTPS to the CLI with `--ca-cert`; a config with
//! neither certificates nor `insecure = true` refuses to start in one line;
//! insecure mode warns.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftvisor::client::{Client, ClientOptions};
use raftvisor::tls::certs::{self, Role};

use crate::harness::{binary, eventually, free_port, Cluster, Tuning, ADMIN_TOKEN};

/// A Vote request with a term far ahead: what an intruder would send to
/// depose the leader.
fn disruptive_vote(term: u64) -> Vec<u8> {
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term + 100, 99), None);
    raftvisor::codec::encode(&vote).expect("encode a vote")
}

fn pem_identity(cert: &Path, key: &Path) -> reqwest::Identity {
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    reqwest::Identity::from_pem(&pem).expect("identity from PEM")
}

fn https_client(ca: &Path, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_port_admits_only_manager_certificates_of_the_cluster_ca() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let before = client.cluster_status().await.unwrap();
    let peer = cluster.replica(before.leader_id.unwrap()).peer_addr.clone();
    let ca = cluster.certs.ca.clone();

    // Certificates an intruder might hold.
    let dir = &cluster.certs.dir;
    let client_role = certs::issue(dir, Role::Client, "stolen-client", &[]).unwrap();
    let other = tempfile::tempdir().unwrap();
    certs::init_ca(other.path()).unwrap();
    let foreign = certs::issue(
        other.path(),
        Role::Manager,
        "replica-1",
        &["127.0.0.1".into()],
    )
    .unwrap();

    let attempts: Vec<(&str, reqwest::Client, String)> = vec![
        (
            "plain HTTP",
            reqwest::Client::new(),
            format!("http://{peer}"),
        ),
        (
            "no client certificate",
            https_client(&ca, None),
            format!("https://{peer}"),
        ),
        (
            "a manager certificate of another CA",
            https_client(&ca, Some(pem_identity(&foreign.cert, &foreign.key))),
            format!("https://{peer}"),
        ),
        (
            "a client-role certificate of the cluster CA",
            https_client(&ca, Some(pem_identity(&client_role.cert, &client_role.key))),
            format!("https://{peer}"),
        ),
    ];
    for (who, http, base) in &attempts {
        for path in ["/raft/vote", "/raft/append", "/raft/leader"] {
            let result = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/octet-stream")
                .body(disruptive_vote(before.term))
                .send()
                .await;
            assert!(
                result.is_err(),
                "{who}: {path} answered {:?}",
                result.map(|r| r.status())
            );
        }
    }

    // Control: the same request shape with a manager certificate passes the
    // handshake (an undecodable body gets a 400, so nothing changes).
    let (cert, key) = cluster.certs.manager(1);
    let manager = https_client(&ca, Some(pem_identity(&cert, &key)));
    let answer = manager
        .post(format!("https://{peer}/raft/append"))
        .header("x-raftvisor-sender", "1")
        .header("x-raftvisor-protocol", "2")
        .body("not a raft message")
        .send()
        .await
        .expect("a manager certificate passes the handshake");
    assert_eq!(answer.status(), 400);

    let after = client.cluster_status().await.unwrap();
    assert_eq!(after.term, before.term, "an intruder moved the term");
    assert_eq!(after.leader_id, before.leader_id);
    let leader_log = cluster.replica(before.leader_id.unwrap()).log();
    assert!(
        leader_log.contains("TLS handshake refused"),
        "refusals are logged:\n{leader_log}"
    );
}

/// Kills the process when dropped (also when the test fails).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_config(dir: &Path, id: u64, api: &str, peer: &str, tls: &str) -> std::path::PathBuf {
    let path = dir.join(format!("replica-{id}.toml"));
    let text = format!(
        "id = {id}\ndata_dir = {:?}\napi_addr = {api:?}\npeer_addr = {peer:?}\ndns_addr = \"127.0.0.1:{}\"\n[raft]\nheartbeat_ms = 50\nelection_min_ms = 150\nelection_max_ms = 300\n{tls}",
        dir.join(format!("data-{id}")),
        free_port()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_toml(ca: &Path, cert: &Path, key: &Path) -> String {
    format!("[tls]\nca_cert = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_another_ca_cannot_join() {
    let cluster = Cluster::start(3).await;
    let other = tempfile::tempdir().unwrap();
    let ca = certs::init_ca(other.path()).unwrap();
    let cert = certs::issue(
        other.path(),
        Role::Manager,
        "replica-4",
        &["127.0.0.1".into()],
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let config = agent_config(
        other.path(),
        4,
        &api,
        &peer,
        &tls_toml(&ca.cert, &cert.cert, &cert.key),
    );
    let log_path = other.path().join("replica-4.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _joiner = Agent(
        Command::new(binary())
            .args(["agent", "--config"])
            .arg(&config)
            .env("RAFTVISOR_LOG", "info,openraft=error")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its own API answers (over HTTPS with its own CA) before it is added.
    let mut options = ClientOptions::new([api.clone()]);
    options.ca_cert = Some(ca.cert.clone());
    let joiner = Client::new(options).unwrap();
    eventually(
        "the joiner serves its API",
        Duration::from_secs(10),
        || async { joiner.health().await.map_err(|e| e.to_string()) },
    )
    .await;

    // The membership change itself may commit (the other three are a
    // quorum of four), but no Raft message ever reaches the joiner.
    let client = cluster.client();
    let _ = client.add_member(4, &api, &peer, true).await;
    eventually(
        "the cluster's handshakes are refused by the joiner",
        Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("TLS handshake refused") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    assert!(client.kv_put("still", b"works", 0, None).await.unwrap());
    let status = client.cluster_status().await.unwrap();
    let leader = status.leader_id.unwrap();
    let on_leader = cluster.client_for(leader).cluster_status().await.unwrap();
    assert!(
        on_leader
            .members
            .iter()
            .all(|m| m.id != 4 || m.last_contact_ms.is_none()),
        "the leader exchanged Raft messages with replica 4: {:?}",
        on_leader.members
    );
    // Had the joiner received the log, it would know the cluster's admin
    // token; it knows no token at all.
    let mut options = ClientOptions::new([api.clone()]);
    options.ca_cert = Some(ca.cert.clone());
    options.token = Some(ADMIN_TOKEN.to_string());
    let as_admin = Client::new(options).unwrap();
    let refused = as_admin.cluster_status().await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(401),
        "the joiner received entries: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_speaks_https_to_the_cli_with_the_ca() {
    let cluster = Cluster::start(1).await;
    let addr = cluster.replica(1).api_addr.clone();
    let ca = cluster.certs.ca.display().to_string();
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let output = Command::new(binary())
                .args(args)
                .env("RAFTVISOR_TOKEN", ADMIN_TOKEN)
                .output()
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).to_string(),
                String::from_utf8_lossy(&output.stderr).to_string(),
            )
        })
    };
    let args = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let (code, _, err) = cli(args(format!(
        "--addr https://{addr} --ca-cert {ca} kv put color blue"
    )))
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    // host:port with --ca-cert means https.
    let (code, out, err) = cli(args(format!("--addr {addr} --ca-cert {ca} kv get color")))
        .await
        .unwrap();
    assert_eq!((code, out.trim()), (Some(0), "blue"), "{err}");
    // Without the CA the server is not trusted: one line, non-zero.
    let (code, _, err) = cli(args(format!("--addr https://{addr} kv get color")))
        .await
        .unwrap();
    assert_ne!(code, Some(0));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}

fn run_agent(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .args(["agent", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn bad_tls_settings_refuse_to_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::init_ca(dir.path()).unwrap();
    let client = certs::issue(dir.path(), Role::Client, "alice", &[]).unwrap();
    let manager = certs::issue(
        dir.path(),
        Role::Manager,
        "replica-1",
        &["127.0.0.1".into()],
    )
    .unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_ca = certs::init_ca(other.path()).unwrap();
    let addr = || format!("127.0.0.1:{}", free_port());
    let cases = [
        ("", "no certificates configured"),
        (
            &tls_toml(&ca.cert, &client.cert, &client.key) as &str,
            "manager role",
        ),
        (
            &tls_toml(&other_ca.cert, &manager.cert, &manager.key),
            "not a manager certificate of this cluster",
        ),
        (
            &tls_toml(&ca.cert, &manager.cert, &dir.path().join("missing.pem")),
            "cannot read key",
        ),
        (
            &format!("[tls]\ncert = {:?}\n", manager.cert),
            "ca_cert, key missing",
        ),
    ];
    for (tls, expected) in cases {
        let config = agent_config(dir.path(), 1, &addr(), &addr(), tls);
        let (code, err) = run_agent(&config);
        assert_eq!(code, Some(1), "{tls}: {err}");
        assert!(
            err.contains(expected) && err.trim().lines().count() == 1,
            "{tls}: expected one line with {expected:?}, got: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_mode_serves_plain_http_and_warns() {
    let tuning = Tuning {
        insecure: true,
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(1, tuning).await;
    assert!(cluster.api_url(1).starts_with("http://"));
    let client = cluster.client();
    assert!(client.kv_put("k", b"v", 0, None).await.unwrap());
    let log = cluster.replica(1).log();
    assert!(
        log.contains("WARN") && log.contains("INSECURE"),
        "no warning in:\n{log}"
    );
}

#[test]
fn the_certs_command_creates_a_ca_and_issues_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs").display().to_string();
    let run = |args: &[&str]| {
        let output = Command::new(binary()).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    assert_eq!(run(&["certs", "init", "--dir", &d]).0, Some(0));
    let (code, err) = run(&["certs", "init", "--dir", &d]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refusing to overwrite") && err.trim().lines().count() == 1,
        "{err}"
    );
    let issue = [
        "certs",
        "issue",
        "--dir",
        &d,
        "--role",
        "manager",
        "--name",
        "replica-1",
        "--san",
        "127.0.0.1",
        "--san",
        "localhost",
    ];
    // A manager certificate names its replica's Raft id.
    let (code, err) = run(&issue);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--id") && err.trim().lines().count() == 1,
        "{err}"
    );
    let with_id = [&issue[..], &["--id", "1"]].concat();
    assert_eq!(run(&with_id).0, Some(0));
    assert!(dir.path().join("certs/replica-1.pem").exists());
    assert!(dir.path().join("certs/replica-1-key.pem").exists());
    // `certs show` prints the id and the expiry.
    let shown = Command::new(binary())
        .args(["certs", "show"])
        .arg(dir.path().join("certs/replica-1.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains("raft id:  1") && text.contains("role:     manager"),
        "{text}"
    );
    let year = time_year_in(2 * 365);
    assert!(text.contains(&format!("expires:  {year}-")), "{text}");
    let (code, err) = run(&[
        "certs", "issue", "--dir", &d, "--role", "manager", "--name", "x", "--id", "5",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--san") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (code, _) = run(&[
        "certs", "issue", "--dir", &d, "--role", "admin", "--name", "x",
    ]);
    assert_eq!(code, Some(2), "clap rejects an unknown role");
}

/// The year `days` from now (UTC).
fn time_year_in(days: i64) -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + days * 86_400;
    // Civil year from days since the epoch (good for 1970..2100).
    let mut day = secs.div_euclid(86_400);
    let mut year = 1970;
    loop {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        if day < len {
            return year;
        }
        day -= len;
        year += 1;
    }
}
