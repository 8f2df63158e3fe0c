//! Lifecycle hooks on real containers: a backup taken through the CLI
//! (an exec in every slot), the data damaged, then restored (a one-shot
//! container with the slot's volume, the artifact on stdin): the data is
//! back; start and stop hooks run in the containers; a version whose test
//! hook fails stops its rollout, and a version whose test passes rolls
//! out.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

/// Runs `sh -c script` in a container; its stdout.
fn sh_in(container: &str, script: &str) -> String {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("run docker exec");
    assert!(
        output.status.success(),
        "docker exec {container} {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The events of `kind` on `service` so far.
async fn events_of(env: &DockerCluster, kind: &str, service: &str) -> Vec<String> {
    env.cluster
        .client()
        .events(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind && e.subject == service)
        .map(|e| e.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_damaged_data_and_start_and_stop_hooks_run() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let spec = echo_spec(
        2,
        json!({
            "volumes": [{"name": "data", "mount": "/data"}],
            "hooks": {
                "start": {"command": ["sh", "-c", "echo started >> /data/starts"]},
                "stop": {"command": ["sh", "-c", "echo stopped > /data/stopped"]},
                "backup": {"command": ["sh", "-c", "cat /data/note"]},
                "restore": {"command": ["sh", "-c", "cat > /data/note"], "run": "oneshot"},
            },
        }),
    );
    let client = env.cluster.client();
    client.service_put("st", "db", &spec, None).await.unwrap();
    let running = env.wait_running("db", 2, Duration::from_secs(30)).await;

    // The start hook ran once in each container.
    for container in &running {
        let starts = eventually("the start hook ran", Duration::from_secs(30), || async {
            let starts = sh_in(&container.name, "cat /data/starts 2>/dev/null || true");
            if starts.is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(starts)
            }
        })
        .await;
        assert_eq!(starts, "started", "{}", container.name);
    }
    let started = events_of(&env, "hook.start", "st/db").await;
    assert!(
        started.len() >= 2 && started.iter().all(|m| m.contains("exited 0")),
        "{started:?}"
    );

    // Each slot holds its own data.
    for container in &running {
        let slot = &container.labels["raftvisor.slot"];
        sh_in(&container.name, &format!("echo slot-{slot} > /data/note"));
    }

    // A backup through the CLI: done, one artifact per slot.
    let (code, out, err) = env
        .cluster
        .cli(1, &["--output", "json", "service", "backup", "st/db"]);
    assert_eq!(code, 0, "{err}");
    let backup: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(backup["state"], "done", "{backup}");
    assert_eq!(backup["slots"].as_array().unwrap().len(), 2, "{backup}");
    assert_eq!(backup["bytes"], 14, "two lines of 7 bytes: {backup}");
    assert_eq!(
        backup["keepers"].as_array().unwrap().len(),
        2,
        "kept on two managers: {backup}"
    );
    let id = backup["id"].as_str().unwrap().to_string();
    let (code, out, err) = env.cluster.cli(1, &["service", "backups", "st/db"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("done"), "{out}");

    // The data is damaged, then restored from the backup.
    for container in &running {
        sh_in(&container.name, "echo damaged > /data/note");
    }
    let (code, out, err) = env.cluster.cli(
        1,
        &[
            "--output", "json", "service", "restore", "st/db", "--from", &id,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let restore: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restore["state"], "done", "{restore}");
    for container in &running {
        let slot = &container.labels["raftvisor.slot"];
        assert_eq!(
            sh_in(&container.name, "cat /data/note"),
            format!("slot-{slot}"),
            "{} has its data back",
            container.name
        );
    }
    let restored = events_of(&env, "hook.restore", "st/db").await;
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(
        restored.iter().all(|m| m.contains("exited 0")),
        "{restored:?}"
    );
    // The one-shot containers are gone.
    let leftovers = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=raftvisor.hook"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "no hook container is left"
    );

    // A restore from a backup that does not exist is refused in one line.
    let (code, _, err) = env
        .cluster
        .cli(1, &["service", "restore", "st/db", "--from", "nope"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The stop hook runs in the container before it is stopped.
    let (code, _, err) = env.cluster.cli(1, &["service", "stop", "st/db"]);
    assert_eq!(code, 0, "{err}");
    eventually(
        "the containers are stopped",
        Duration::from_secs(30),
        || async {
            match env.running("db").await.len() {
                0 => Ok(()),
                n => Err(format!("{n} still running")),
            }
        },
    )
    .await;
    let stopped = events_of(&env, "hook.stop", "st/db").await;
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    let (code, _, err) = env.cluster.cli(1, &["service", "start", "st/db"]);
    assert_eq!(code, 0, "{err}");
    for container in env.wait_running("db", 2, Duration::from_secs(30)).await {
        assert_eq!(sh_in(&container.name, "cat /data/stopped"), "stopped");
    }

    // Removed, the backup's record goes.
    let (code, _, err) = env.cluster.cli(1, &["backup", "rm", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = env.cluster.cli(1, &["backup", "show", &id]);
    assert_eq!(code, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_test_hook_stops_a_rollout_and_a_passing_one_lets_it_finish() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let dir = tempfile::tempdir().unwrap();
    // Deploys the version whose env says `version`, waiting for its
    // rollout: the CLI's exit code and stderr, and the report after it.
    let deploy = |version: &str| {
        let spec = echo_spec(
            3,
            json!({
                "env": {"VERSION": version},
                "hooks": {"test": {"command": ["sh", "-c", "test \"$VERSION\" != bad || { echo version is bad >&2; exit 3; }"]}},
            }),
        );
        let path = dir.path().join(format!("{version}.json"));
        std::fs::write(
            &path,
            json!({"namespace": "rl", "name": "web", "spec": spec}).to_string(),
        )
        .unwrap();
        let file = path.display().to_string();
        let env = &env;
        async move {
            let (code, _, err) = env.cluster.cli(
                1,
                &["service", "deploy", &file, "--wait", "--timeout", "120s"],
            );
            let report = env
                .cluster
                .client()
                .service_report("rl", "web")
                .await
                .unwrap();
            (code, err, report)
        }
    };

    // v1 passes its test: deployed.
    let (code, err, report) = deploy("good").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report.test, "passed", "{report:?}");

    // v2 fails its test: the rollout stops after its first replacement.
    let (code, err, report) = deploy("bad").await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("test hook") && err.contains("exited 3"),
        "{err}"
    );
    assert!(err.contains("version is bad"), "the output's tail: {err}");
    assert_eq!(report.test, "failed", "{report:?}");
    assert_eq!(
        report.outdated, 2,
        "two keep the previous version: {report:?}"
    );
    // And it stays stopped (bounded look).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let report = env
            .cluster
            .client()
            .service_report("rl", "web")
            .await
            .unwrap();
        assert_eq!(report.outdated, 2, "no further replacement: {report:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tests = events_of(&env, "hook.test", "rl/web").await;
    assert!(tests.iter().any(|m| m.contains("exited 3")), "{tests:?}");

    // v3 passes: the rollout finishes.
    let (code, err, report) = deploy("fixed").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report.test.as_str(), report.outdated, report.running),
        ("passed", 0, 3),
        "{report:?}"
    );
}
