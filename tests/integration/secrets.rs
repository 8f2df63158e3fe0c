//! Secret env values: the container gets the clear value, and nothing
//! else ever shows it — API responses, the CLI, events, replica logs, and
//! the data directories (log and snapshots hold the sealed text only).

use std::path::Path;
use std::time::Duration;

use raftvisor::state::{Role, ServiceSpec};
use raftvisor::wire::CreateToken;
use serde_json::json;

use crate::docker_env::{DockerCluster, ECHO_IMAGE, LOCAL_ENGINE};
use crate::harness::{eventually, Tuning};

const SECRET: &str = "s3cr3t-Vq7pZk2-never-shown";

fn spec_with_secret(value: &str, plain: &str) -> ServiceSpec {
    serde_json::from_value(json!({
        "image": ECHO_IMAGE,
        "replicas": 1,
        "ports": [{"name": "http", "container_port": 8080}],
        "env": {"GREETING": plain},
        "secret_env": {"DB_PASSWORD": value},
    }))
    .unwrap()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

async fn container_env(name: &str) -> Vec<String> {
    let docker = bollard::Docker::connect_with_unix(
        LOCAL_ENGINE.trim_start_matches("unix://"),
        10,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    docker
        .inspect_container(name, None)
        .await
        .unwrap()
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_the_container_and_nothing_else() {
    // Snapshots after a few entries, so the secret also passes through one.
    let tuning = Tuning {
        snapshot_threshold: 20,
        keep_logs_after_snapshot: 5,
        ..Tuning::default()
    };
    let Some(mut env) = DockerCluster::start_with(3, tuning).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("sec", "echo", &spec_with_secret(SECRET, "hello"), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 1, Duration::from_secs(30)).await;
    let first = running[0].name.clone();
    let first_env = container_env(&first).await;
    assert!(
        first_env.contains(&format!("DB_PASSWORD={SECRET}")),
        "the container must get the clear value: {first_env:?}"
    );

    // The API shows `<redacted>`, on every replica and in every listing.
    for id in env.cluster.running_ids() {
        let one = env.cluster.client_for(id);
        for path in [
            "/v1/services/sec/echo",
            "/v1/services",
            "/v1/services/sec/echo/report",
            "/v1/services/sec/echo/instances",
            "/v1/events",
        ] {
            let shown = one.get_json(path).await.unwrap().to_string();
            assert!(!shown.contains(SECRET), "{path} on {id} shows the secret");
        }
        let shown = one.get_json("/v1/services/sec/echo").await.unwrap();
        assert_eq!(shown["spec"]["secret_env"]["DB_PASSWORD"], "<redacted>");
    }
    for args in [
        &["service", "show", "sec/echo"][..],
        &["service", "show", "sec/echo", "--output", "json"],
        &["service", "ls"],
        &["service", "report", "sec/echo"],
    ] {
        let (code, out, err) = env.cluster.cli(1, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.contains(SECRET) && !err.contains(SECRET), "{args:?}");
    }

    // Deploying the spec as read back (`<redacted>`) keeps the secret and
    // changes nothing: the same container keeps running.
    let read_back = client.service_get("sec", "echo").await.unwrap().spec;
    assert_eq!(read_back.secret_env.0["DB_PASSWORD"], "<redacted>");
    client
        .service_put("sec", "echo", &read_back, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = env.wait_running("echo", 1, Duration::from_secs(10)).await;
    assert_eq!(still[0].name, first, "an unchanged secret must not roll");
    assert!(container_env(&first)
        .await
        .contains(&format!("DB_PASSWORD={SECRET}")));

    // An operator edits an unrelated field of the spec as read back: the
    // secret is kept — the rolled container gets the real value — and the
    // operator never sees it.
    let operator = client
        .token_create(&CreateToken::new(Role::Operator, "deployer"))
        .await
        .unwrap();
    let ids = env.cluster.running_ids();
    let op = env.cluster.client_with_token(&ids, Some(operator.token));
    let mut edited = op.service_get("sec", "echo").await.unwrap().spec;
    assert_eq!(edited.secret_env.0["DB_PASSWORD"], "<redacted>");
    edited.env.insert("GREETING".into(), "hello again".into());
    let shown = op.service_put("sec", "echo", &edited, None).await.unwrap();
    assert_eq!(shown.spec.secret_env.0["DB_PASSWORD"], "<redacted>");
    let first = eventually(
        "the edited spec's container runs",
        Duration::from_secs(30),
        || async {
            let running = env.running("echo").await;
            match running.as_slice() {
                [one] if one.name != first => Ok(one.name.clone()),
                _ => Err(format!("{} running", running.len())),
            }
        },
    )
    .await;
    let edited_env = container_env(&first).await;
    assert!(
        edited_env.contains(&format!("DB_PASSWORD={SECRET}"))
            && edited_env.contains(&"GREETING=hello again".to_string()),
        "{edited_env:?}"
    );

    // A new value rolls the container, which gets the new value.
    let rotated = format!("{SECRET}-rotated");
    client
        .service_put("sec", "echo", &spec_with_secret(&rotated, "hello"), None)
        .await
        .unwrap();
    let next = eventually(
        "the container with the rotated secret runs",
        Duration::from_secs(30),
        || async {
            let running = env.running("echo").await;
            match running.as_slice() {
                [one] if one.name != first => Ok(one.name.clone()),
                _ => Err(format!("{} running", running.len())),
            }
        },
    )
    .await;
    assert!(container_env(&next)
        .await
        .contains(&format!("DB_PASSWORD={rotated}")));

    // The same value in another service: nothing a read token sees tells
    // that the two secrets are equal — the instances' template
    // fingerprints differ although the specs are the same.
    client
        .service_put("sec", "twin", &spec_with_secret(&rotated, "hello"), None)
        .await
        .unwrap();
    env.wait_running("twin", 1, Duration::from_secs(30)).await;
    let template = |service: &'static str| {
        let client = &client;
        async move {
            let instances = client.service_instances("sec", service).await.unwrap();
            assert_eq!(instances.len(), 1, "{service}");
            instances[0].template.clone()
        }
    };
    assert_ne!(template("echo").await, template("twin").await);
    // Deploying a clear value seals it anew even when it is unchanged, so
    // whoever deploys a guess cannot tell from the rollout whether it was
    // right: the container rolls (keep a secret with `<redacted>`).
    client
        .service_put("sec", "echo", &spec_with_secret(&rotated, "hello"), None)
        .await
        .unwrap();
    eventually(
        "the redeployed clear secret rolls the container",
        Duration::from_secs(30),
        || async {
            let running = env.running("echo").await;
            match running.as_slice() {
                [one] if one.name != next => Ok(()),
                _ => Err(format!("{} running", running.len())),
            }
        },
    )
    .await;

    // Bad input: a secret with nothing to keep, a value that looks sealed,
    // a name in both maps — all 400, nothing stored.
    for spec in [
        spec_with_secret("<redacted>", "x"),
        spec_with_secret("sealed:v1:AAAA", "x"),
        spec_with_secret("sealed:v2:AAAA:AAAA", "x"),
    ] {
        let error = client
            .service_put("sec", "other", &spec, None)
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
    }
    let mut both = spec_with_secret("x", "y");
    both.env.insert("DB_PASSWORD".into(), "clear".into());
    let error = client
        .service_put("sec", "other", &both, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    assert!(client.service_get("sec", "other").await.is_err());

    // Nothing at rest or in the logs holds a clear value.
    for id in env.cluster.running_ids() {
        env.cluster.kill(id);
    }
    for secret in [SECRET, rotated.as_str()] {
        let leaked = files_containing(env.cluster.dir.path(), secret.as_bytes());
        assert!(leaked.is_empty(), "clear secret found in {leaked:?}");
    }
}
