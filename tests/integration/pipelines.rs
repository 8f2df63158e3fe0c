//! A pipeline from a git push to a release, with real git, real builds and
//! real containers: a bare repository's `post-receive` hook posts `git
//! archive` of each pushed commit to the webhook, signed with HMAC-SHA256
//! and no token. The image is built, tested in a one-shot container,
//! deployed to the release's idle environment, and goes live only on
//! `release approve`. A commit whose test fails deploys nowhere; a run
//! whose leader is killed mid-way finishes under the next leader.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{json, Value};

use crate::dns::query;
use crate::docker_env::{echo_spec, DockerCluster, ECHO_IMAGE, LOCAL_ENGINE};
use crate::harness::eventually;

const KEY: &str = "a-webhook-key-of-some-length";

/// Runs git in `dir`, failing the test with its output otherwise.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Process::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=raftvisor test",
            "-c",
            "user.email=test@raftvisor.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs (the test needs the git package)");
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bare repository's post-receive hook: for each pushed ref, `git
/// archive` of the new commit, posted with its HMAC signature; the answers
/// are appended to `answers`.
fn post_receive(url: &str, ca: &Path, answers: &Path) -> String {
    format!(
        r#"#!/usr/bin/env python3
import hashlib, hmac, ssl, subprocess, sys, urllib.request
for line in sys.stdin:
    old, new, ref = line.split()
    archive = subprocess.run(["git", "archive", "--format=tar", new], check=True, capture_output=True).stdout
    signature = "sha256=" + hmac.new({KEY:?}.encode(), archive, hashlib.sha256).hexdigest()
    request = urllib.request.Request({url:?} + "?commit=" + new, data=archive, method="POST",
        headers={{"X-Hub-Signature-256": signature, "Content-Type": "application/x-tar"}})
    context = ssl.create_default_context(cafile={ca:?})
    with urllib.request.urlopen(request, context=context, timeout=60) as answer:
        with open({answers:?}, "a") as out:
            out.write(answer.read().decode() + "\n")
"#,
        ca = ca.display().to_string(),
        answers = answers.display().to_string(),
    )
}

/// Commits a source whose test exits `test_exit` after `test_sleep` s, and pushes it.
fn push(work: &Path, label: &str, test_exit: u8, test_sleep: u8) -> String {
    std::fs::write(
        work.join("Dockerfile"),
        format!("FROM {ECHO_IMAGE}\nCOPY test.sh /test.sh\nLABEL raftvisor.test.source={label}\n"),
    )
    .unwrap();
    std::fs::write(
        work.join("test.sh"),
        format!("echo testing {label}\nsleep {test_sleep}\nexit {test_exit}\n"),
    )
    .unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", label]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

fn pipeline_json(env: &DockerCluster, via: u64, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["--output", "json", "pipeline"];
    all.extend_from_slice(args);
    let (code, out, err) = env.cluster.cli(via, &all);
    if code != 0 {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// Waits until run `number` is `status` (asked of replica `via`).
async fn wait_run(env: &DockerCluster, via: u64, number: u64, status: &str) -> Value {
    eventually(
        &format!("run {number} is {status}"),
        Duration::from_secs(180),
        || async {
            let run = pipeline_json(env, via, &["show", "web", &number.to_string()])?;
            if run["status"] == status {
                Ok(run)
            } else if run["status"] == "failed" && status != "failed" {
                panic!("run {number} failed: {run:#}");
            } else {
                Err(format!("{run}"))
            }
        },
    )
    .await
}

async fn srv_ports(server: &str) -> Vec<u16> {
    let name = "_http._tcp.shop.release.cluster.local.";
    let answer = query(server, name, RecordType::SRV, false).await;
    crate::dns::srv_ports(&answer).iter().map(|p| p.0).collect()
}

async fn running_ports(env: &DockerCluster, namespace: &str, image: &str) -> Vec<u16> {
    eventually(
        &format!("{namespace}/web runs {image}"),
        Duration::from_secs(90),
        || async {
            let client = env.cluster.client();
            let service = client
                .service_get(namespace, "web")
                .await
                .map_err(|e| e.to_string())?;
            let instances = client
                .service_instances(namespace, "web")
                .await
                .map_err(|e| e.to_string())?;
            let ports: Vec<u16> = instances
                .iter()
                .filter(|i| i.state == raftvisor::state::InstanceState::Running)
                .filter_map(|i| i.ports.first().map(|p| p.host_port))
                .collect();
            if service.spec.image == image && ports.len() == 1 {
                Ok(ports)
            } else {
                Err(format!("{} {instances:?}", service.spec.image))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_commit_is_built_tested_deployed_to_green_and_released_on_approval() {
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let blue_spec = echo_spec(1, json!({}));
    client
        .service_put("pl-blue", "web", &blue_spec, None)
        .await
        .unwrap();
    let blue_ports = running_ports(&env, "pl-blue", ECHO_IMAGE).await;
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "release", "create", "shop", "--entry", "web", "--blue", "pl-blue", "--green",
            "pl-green",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let key_file = key_file.display().to_string();
    let created = pipeline_json(
        &env,
        1,
        &[
            "create",
            "web",
            "--image",
            "pl-web",
            "--service",
            "web",
            "--release",
            "shop",
            "--test",
            "sh /test.sh",
            "--secret-file",
            &key_file,
        ],
    )
    .unwrap();
    assert_eq!(created["signed"], true, "{created}");

    // A bare repository whose hook posts to a follower's API, and a clone.
    let status = env.cluster.status_of(1).await.unwrap();
    let leader = status.leader_id.unwrap();
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let dns = env.cluster.replica(follower).dns_addr.clone();
    let bare = dir.path().join("repo.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let answers = dir.path().join("answers");
    let url = format!("{}/v1/pipelines/web/runs", env.cluster.api_url(follower));
    let hook = bare.join("hooks").join("post-receive");
    std::fs::write(&hook, post_receive(&url, &env.cluster.certs.ca, &answers)).unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
    git(dir.path(), &["clone", "-q", bare.to_str().unwrap(), "work"]);

    // A wrong signature is refused and starts nothing.
    let refused = env
        .cluster
        .certs
        .http_builder()
        .build()
        .unwrap()
        .post(&url)
        .header("X-Hub-Signature-256", format!("sha256={}", "00".repeat(32)))
        .body(b"not the archive".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "bad_signature", "{body}");

    // A good commit: built, tested, deployed to green, waiting.
    let first = push(&work, "one", 0, 0);
    let run = wait_run(&env, follower, 1, "waiting").await;
    assert_eq!(run["commit"], first.as_str());
    assert_eq!(run["image"], "pl-web:run-1");
    assert_eq!(run["target"], "pl-green");
    let stages: Vec<&str> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["passed", "passed", "passed", "pending"], "{run:#}");
    assert!(
        run["stages"][1]["log_tail"]
            .as_str()
            .unwrap()
            .contains("testing one"),
        "{run:#}"
    );
    let green_ports = running_ports(&env, "pl-green", "pl-web:run-1").await;
    assert_eq!(
        srv_ports(&dns).await,
        blue_ports,
        "production is untouched until approval"
    );
    let (code, out, err) = env
        .cluster
        .cli(1, &["--output", "json", "release", "approve", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["live"],
        "green"
    );
    eventually(
        "the entry answers green",
        Duration::from_secs(10),
        || async {
            match srv_ports(&dns).await {
                ports if ports == green_ports => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_run(&env, follower, 1, "succeeded").await;
    let (code, _, err) = env.cluster.cli(1, &["release", "approve", "shop"]);
    assert_ne!(code, 0);
    assert!(err.contains("no pipeline run waits"), "{err}");

    // A commit whose test fails is deployed nowhere.
    push(&work, "two", 3, 0);
    let failed = wait_run(&env, follower, 2, "failed").await;
    let states: Vec<&str> = failed["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["passed", "failed", "skipped", "skipped"],
        "{failed:#}"
    );
    assert!(
        failed["stages"][1]["log_tail"]
            .as_str()
            .unwrap()
            .contains("exited 3"),
        "{failed:#}"
    );
    assert_eq!(
        client
            .service_get("pl-blue", "web")
            .await
            .unwrap()
            .spec
            .image,
        ECHO_IMAGE
    );
    assert_eq!(
        client
            .service_get("pl-green", "web")
            .await
            .unwrap()
            .spec
            .image,
        "pl-web:run-1"
    );

    // The leader dies while a run tests: the next leader finishes it,
    // deploying to the idle environment, now blue.
    push(&work, "three", 0, 3);
    eventually("run 3 is testing", Duration::from_secs(120), || async {
        let run = pipeline_json(&env, follower, &["show", "web", "3"])?;
        match run["stages"][1]["state"].as_str() {
            Some("running") => Ok(()),
            _ => Err(format!("{run}")),
        }
    })
    .await;
    let leader = env
        .cluster
        .status_of(follower)
        .await
        .unwrap()
        .leader_id
        .unwrap();
    env.cluster.kill(leader);
    let alive = (1..=3u64).find(|id| *id != leader).unwrap();
    let run = wait_run(&env, alive, 3, "waiting").await;
    assert_eq!(run["target"], "pl-blue", "{run:#}");
    assert!(
        run["stages"][1]["attempts"].as_u64().unwrap() >= 1,
        "{run:#}"
    );
    running_ports(&env, "pl-blue", "pl-web:run-3").await;
    let answered: Vec<Value> = std::fs::read_to_string(&answers)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        answered
            .iter()
            .map(|a| a["run"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
}
