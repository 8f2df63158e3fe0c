//! Programs nobody here wrote read a live cluster supervising real
//! containers: py-consul through the Consul catalog and health API
//! (including a blocking query that returns when an instance stops), and
//! Debian's Prometheus discovering the echo instances and the managers
//! through the HTTP service discovery and scraping them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::docker_env::{crash, echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::{eventually, free_port, ADMIN_TOKEN};

/// Deploys `demo/echo` with `replicas` on the local engine and waits until
/// the health API calls every one of them passing.
async fn echo_cluster(replicas: u32) -> Option<DockerCluster> {
    let env = DockerCluster::start(3).await?;
    env.add_node("local", LOCAL_ENGINE, "a").await;
    env.cluster
        .client()
        .service_put("demo", "echo", &echo_spec(replicas, json!({})), None)
        .await
        .expect("deploy demo/echo");
    wait_passing(&env, replicas as usize).await;
    Some(env)
}

async fn passing(env: &DockerCluster) -> Result<Vec<Value>, String> {
    let url = format!(
        "{}/v1/health/service/echo.demo?passing",
        env.cluster.api_url(1)
    );
    let response = env
        .cluster
        .http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

async fn wait_passing(env: &DockerCluster, n: usize) {
    eventually(
        &format!("{n} passing echo instances"),
        Duration::from_secs(60),
        || async {
            let entries = passing(env).await?;
            if entries.len() == n {
                Ok(())
            } else {
                Err(format!("{} passing", entries.len()))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_reads_the_catalog_and_health_and_blocks_until_an_instance_stops() {
    let Some(mut env) = echo_cluster(3).await else {
        return;
    };
    let leader = env.cluster.wait_for_leader().await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let addr = env.cluster.replica(follower).api_addr.clone();
    let (host, port) = addr.split_once(':').unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/consul/catalog_client.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .args([
            script,
            host,
            port,
            &env.cluster.certs.ca.display().to_string(),
            ADMIN_TOKEN,
            "echo.demo",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 (py-consul is required: scripts/test.sh installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let blocking = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read the script's output") {
            seen.push(line.clone());
            if line.starts_with("BLOCKING") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !blocking {
        let output = child.wait_with_output().await.expect("the script ends");
        panic!(
            "py-consul's reads failed before the blocking query:\n{}\n{}",
            seen.join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The script now blocks on the health of echo.demo; one instance stops.
    let running = env.running("echo").await;
    crash(&running[0]);
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await
    {
        seen.push(line);
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the script ends")
        .expect("the script's status");
    let stdout = seen.join("\n");
    assert!(
        output.status.success() && stdout.contains("all expectations held"),
        "py-consul run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Debian's Prometheus with `http_sd_configs` pointed at the cluster.
struct Prometheus {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus discovering the `http` ports of every instance
    /// (job `echo`) and the managers (job `raftvisor`) through replica 1,
    /// refreshing discovery every `refresh`.
    async fn start(env: &DockerCluster, refresh: &str) -> Prometheus {
        let binary = "/usr/bin/prometheus";
        assert!(
            std::path::Path::new(binary).exists(),
            "Debian's prometheus is required (apt-get install prometheus; scripts/test.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, ADMIN_TOKEN).expect("write the token file");
        let ca = env.cluster.certs.ca.display().to_string();
        let base = env.cluster.api_url(1);
        let token = token_file.display();
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: echo
    http_sd_configs:
      - url: "{base}/v1/prometheus/targets?port=http"
        refresh_interval: {refresh}
        authorization:
          type: Bearer
          credentials_file: "{token}"
        tls_config:
          ca_file: "{ca}"
  - job_name: raftvisor
    scheme: https
    authorization:
      type: Bearer
      credentials_file: "{token}"
    tls_config:
      ca_file: "{ca}"
    http_sd_configs:
      - url: "{base}/v1/prometheus/targets?managers"
        refresh_interval: {refresh}
        authorization:
          type: Bearer
          credentials_file: "{token}"
        tls_config:
          ca_file: "{ca}"
"#
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str) -> Result<Value, String> {
        let body: Value = reqwest::get(format!("{}{path}", self.url))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{body}"));
        }
        Ok(body["data"].clone())
    }

    /// The active targets of `job`, as (instance label, health).
    async fn targets(&self, job: &str) -> Result<Vec<(String, String)>, String> {
        let data = self.api("/api/v1/targets?state=active").await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["labels"]["job"] == job)
            .map(|t| {
                (
                    t["labels"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    t["health"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// The value of every series `query` returns, keyed by its labels.
    async fn query(&self, query: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", urlencode(query)))
            .await?;
        Ok(data["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect())
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_discovers_scrapes_and_drops_echo_instances_and_scrapes_the_managers() {
    let Some(env) = echo_cluster(3).await else {
        return;
    };
    let mut prometheus = Prometheus::start(&env, "2s").await;
    let up = eventually(
        "Prometheus scrapes three echo instances (up == 1)",
        Duration::from_secs(60),
        || async {
            let series = prometheus.query(r#"up{job="echo"} == 1"#).await?;
            if series.len() == 3 {
                Ok(series)
            } else {
                Err(format!("{series:?}\n{}", prometheus.log()))
            }
        },
    )
    .await;
    for (labels, _) in &up {
        assert_eq!(labels["namespace"], "demo", "{labels}");
        assert_eq!(labels["service"], "echo", "{labels}");
        assert_eq!(labels["port"], "http", "{labels}");
        assert_eq!(labels["node"], "local", "{labels}");
        assert!(
            labels["instance"]
                .as_str()
                .unwrap()
                .starts_with("demo.echo."),
            "{labels}"
        );
    }
    // The echo image's own metrics arrive through the discovered targets.
    eventually(
        "echo_healthy is scraped",
        Duration::from_secs(30),
        || async {
            let series = prometheus.query(r#"echo_healthy{job="echo"}"#).await?;
            if series.len() == 3 {
                Ok(())
            } else {
                Err(format!("{series:?}"))
            }
        },
    )
    .await;
    // Every manager is discovered and scraped over HTTPS with the token.
    eventually(
        "the three managers are scraped",
        Duration::from_secs(60),
        || async {
            let series = prometheus
                .query(r#"raftvisor_raft_term{job="raftvisor"}"#)
                .await?;
            let targets = prometheus.targets("raftvisor").await?;
            if series.len() == 3 && targets.iter().all(|(_, health)| health == "up") {
                Ok(())
            } else {
                Err(format!("{series:?} {targets:?}\n{}", prometheus.log()))
            }
        },
    )
    .await;

    // A few series a dashboard is made of, through Prometheus's query API.
    for (query, expect_at_least) in [
        // Every replica fsyncs its log and applies entries.
        (
            r#"sum by (instance) (raftvisor_raft_fsync_seconds_count{job="raftvisor",file="segment"}) > 0"#,
            3,
        ),
        (
            r#"raftvisor_raft_apply_seconds_count{job="raftvisor"} > 0"#,
            3,
        ),
        // The leader committed writes and its controllers reconciled.
        (
            r#"raftvisor_raft_commit_seconds_bucket{job="raftvisor",le="+Inf"} > 0"#,
            1,
        ),
        (
            r#"raftvisor_reconcile_duration_seconds_count{job="raftvisor",controller="services"} > 0"#,
            1,
        ),
        (r#"raftvisor_placements_total{job="raftvisor"} > 0"#, 1),
        // Every replica knows the three running instances and the node.
        (
            r#"raftvisor_instances{job="raftvisor",state="running"} == 3"#,
            3,
        ),
        (r#"raftvisor_nodes{job="raftvisor",state="ready"} == 1"#, 3),
        // Prometheus's own scrapes of /metrics are API requests too.
        (
            r#"raftvisor_api_requests_total{job="raftvisor",route="/metrics",code="200"} > 0"#,
            3,
        ),
        (
            r#"raftvisor_certificate_expiry_seconds{job="raftvisor"} > 86400"#,
            3,
        ),
    ] {
        eventually(query, Duration::from_secs(30), || async {
            let series = prometheus.query(query).await?;
            if series.len() >= expect_at_least {
                Ok(())
            } else {
                Err(format!("{} series: {series:?}", series.len()))
            }
        })
        .await;
    }

    // One instance goes away for good: scaled down, it leaves raftvisor's
    // discovery, then Prometheus's active targets within one refresh
    // (2 s; the deadline leaves room for a busy machine).
    env.cluster
        .client()
        .service_scale("demo", "echo", 2)
        .await
        .expect("scale to 2");
    wait_passing(&env, 2).await;
    eventually(
        "Prometheus drops the stopped instance",
        Duration::from_secs(10),
        || async {
            let targets = prometheus.targets("echo").await?;
            if targets.len() == 2 {
                Ok(())
            } else {
                Err(format!("{targets:?}"))
            }
        },
    )
    .await;
    let _ = prometheus.child.kill().await;
}

/// Runs the CLI against replica 1 of `env` with the admin token.
async fn cli(env: &DockerCluster, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "--addr".to_string(),
        env.cluster.replica(1).api_addr.clone(),
    ];
    all.extend(env.cluster.certs.cli_args());
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || crate::harness::run_cli(&all, ADMIN_TOKEN))
        .await
        .expect("the CLI runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_waits_for_rollouts_and_tells_failures_apart_by_exit_code() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "namespace = \"cli\"\nname = \"{name}\"\n[spec]\nimage = \"raftvisor-echo:local\"\nreplicas = 2\n{extra}[[spec.ports]]\nname = \"http\"\ncontainer_port = 8080\n"
            ),
        )
        .unwrap();
        file.display().to_string()
    };

    // A good rollout: --wait returns once both instances run, exit 0.
    let good = write("good", "");
    let (code, out, err) = cli(
        &env,
        &[
            "--output",
            "json",
            "service",
            "deploy",
            &good,
            "--wait",
            "--timeout",
            "90s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("the final report as JSON");
    assert_eq!(
        (report["running"].as_u64(), report["desired"].as_u64()),
        (Some(2), Some(2)),
        "{report}"
    );

    // A crash-looping rollout fails with its reason, exit 1.
    let bad = write(
        "bad",
        "restart = { initial_backoff_ms = 200, max_backoff_ms = 1000, reset_after_ms = 10000 }\n[spec.env]\nECHO_CRASH_AFTER_MS = \"50\"\n",
    );
    let (code, _, err) = cli(
        &env,
        &["service", "deploy", &bad, "--wait", "--timeout", "90s"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rollout of cli/bad failed") && err.trim().lines().count() == 1,
        "{err}"
    );

    // A wait that runs out: exit 5 (unavailable), saying what was under way.
    let slow = write("slow", "");
    let (code, _, err) = cli(
        &env,
        &["service", "deploy", &slow, "--wait", "--timeout", "0s"],
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("did not converge"), "{err}");

    // Not found, conflict, usage, denied, unavailable.
    let (code, _, err) = cli(&env, &["service", "show", "cli/nope"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = cli(&env, &["service", "deploy", &good, "--if-match", "1"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = cli(&env, &["service", "scale", "cli/good"]).await;
    assert_eq!(code, 2, "{err}");
    let mut denied = vec![
        "--addr".to_string(),
        env.cluster.replica(1).api_addr.clone(),
    ];
    denied.extend(env.cluster.certs.cli_args());
    denied.extend(["service".to_string(), "ls".to_string()]);
    let (code, _, err) =
        tokio::task::spawn_blocking(move || crate::harness::run_cli(&denied, "rv_nobody.wrong"))
            .await
            .unwrap();
    assert_eq!(code, 6, "{err}");
    let unreachable = vec![
        "--addr".to_string(),
        format!("127.0.0.1:{}", free_port()),
        "service".to_string(),
        "ls".to_string(),
    ];
    let (code, _, err) =
        tokio::task::spawn_blocking(move || crate::harness::run_cli(&unreachable, ADMIN_TOKEN))
            .await
            .unwrap();
    assert_eq!(code, 5, "{err}");

    // Shell completion for the three shells.
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = cli(&env, &["completion", shell]).await;
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("deploy") && out.contains("raftvisor"),
            "{shell}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_up_runs_three_services_in_dependency_order_and_down_removes_them() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    let services = r#"
services:
  db:
    image: raftvisor-echo:local
    environment: [ROLE=db]
    ports: ["8080"]
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8080/health"]
      interval: 1s
  api:
    image: raftvisor-echo:local
    environment: { ROLE: api }
    ports: ["8080"]
    depends_on: [db]
    deploy: { replicas: 2 }
  web:
    image: raftvisor-echo:local
    ports: ["18080:8080"]
    depends_on:
      api: { condition: service_started }
"#;
    std::fs::write(&file, format!("name: shop\n{services}")).unwrap();
    let path = file.display().to_string();

    // The published host port cannot be kept: named, and refused by default.
    let (code, _, err) = cli(&env, &["compose", "up", &path]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("services.web.ports[0] (published 18080)") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(
        env.cluster
            .client()
            .service_list()
            .await
            .unwrap()
            .is_empty(),
        "nothing deployed"
    );

    let (code, out, err) = cli(
        &env,
        &[
            "--output",
            "json",
            "compose",
            "up",
            &path,
            "--ignore-unmapped",
            "--timeout",
            "90s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["deployed"],
        json!(["shop/db", "shop/api", "shop/web"]),
        "{result}"
    );
    // Dependencies were running before their dependents were deployed.
    let order: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("deployed shop/"))
        .collect();
    assert_eq!(order.len(), 3, "{err}");
    let client = env.cluster.client();
    let created = |name: &'static str| {
        let client = client.clone();
        async move { client.service_get("shop", name).await.unwrap().create_index }
    };
    let (db, api, web) = (
        created("db").await,
        created("api").await,
        created("web").await,
    );
    assert!(db < api && api < web, "deploy order {db} {api} {web}");
    let db_running_at = env
        .cluster
        .client()
        .service_report("shop", "db")
        .await
        .unwrap();
    assert!(db_running_at.running >= 1);
    let db_spec = client.service_get("shop", "db").await.unwrap().spec;
    assert_eq!(db_spec.env["ROLE"], "db");
    assert_eq!(
        db_spec.health.as_ref().map(|h| h.path.as_str()),
        Some("/health")
    );
    for (name, replicas) in [("db", 1), ("api", 2), ("web", 1)] {
        env.wait_running(name, replicas, Duration::from_secs(60))
            .await;
    }

    let (code, out, err) = cli(&env, &["--output", "json", "compose", "down", &path]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    eventually(
        "compose down removed every container",
        Duration::from_secs(60),
        || async {
            let left = env.containers(None).await.len();
            let services = env
                .cluster
                .client()
                .service_list()
                .await
                .map_err(|e| e.to_string())?;
            if left == 0 && services.is_empty() {
                Ok(())
            } else {
                Err(format!("{left} containers, {} services", services.len()))
            }
        },
    )
    .await;
}
