//! Topologies on real containers: a namespace exported as TOML and applied
//! as another namespace runs the same services; a server-side clone does
//! the same in one write, sharing what it is told to; saved topologies
//! keep their versions and an earlier one can be applied.

use std::time::Duration;

use serde_json::json;

use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

/// Waits until every service of `namespace` in `names` runs all its replicas.
async fn wait_all_running(env: &DockerCluster, namespace: &str, names: &[&str]) {
    let client = env.cluster.client();
    for name in names {
        eventually(
            &format!("{namespace}/{name} runs every replica"),
            Duration::from_secs(90),
            || async {
                let report = client
                    .service_report(namespace, name)
                    .await
                    .map_err(|e| e.to_string())?;
                if report.desired > 0 && report.running == report.desired && report.outdated == 0 {
                    Ok(())
                } else {
                    Err(format!("{report:?}"))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_exported_applied_and_cloned_runs_the_same_services() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let db = echo_spec(
        1,
        json!({"env": {"ROLE": "db"}, "volumes": [{"name": "data", "mount": "/data"}]}),
    );
    let web = |version: &str| {
        echo_spec(
            2,
            json!({
                "env": {"ROLE": "web", "VERSION": version},
                "health": {"kind": "http", "port": "http", "path": "/health"},
            }),
        )
    };
    client.service_put("topo-a", "db", &db, None).await.unwrap();
    client
        .service_put("topo-a", "web", &web("one"), None)
        .await
        .unwrap();
    wait_all_running(&env, "topo-a", &["db", "web"]).await;
    let dir = tempfile::tempdir().unwrap();

    // Export: TOML, deploy order, nothing secret; apply as another namespace.
    let (code, exported, err) = env.cluster.cli(1, &["namespace", "export", "topo-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        exported.starts_with("# raftvisor topology of namespace topo-a"),
        "{exported}"
    );
    assert!(
        exported.find("name = \"db\"").unwrap() < exported.find("name = \"web\"").unwrap(),
        "{exported}"
    );
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, &exported).unwrap();
    let file = file.display().to_string();
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "namespace",
            "apply",
            &file,
            "--as",
            "topo-b",
            "--timeout",
            "90s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_all_running(&env, "topo-b", &["db", "web"]).await;
    for name in ["db", "web"] {
        let a = client.service_get("topo-a", name).await.unwrap();
        let b = client.service_get("topo-b", name).await.unwrap();
        assert_eq!(a.spec, b.spec, "{name}");
    }

    // Clone server-side, sharing the database: one write, db a reference.
    let (code, _, err) = env.cluster.cli(
        1,
        &["namespace", "clone", "topo-a", "topo-c", "--share", "db"],
    );
    assert_eq!(code, 0, "{err}");
    wait_all_running(&env, "topo-c", &["web"]).await;
    let shared = client.service_get("topo-c", "db").await.unwrap();
    assert_eq!(shared.spec.kind, raftvisor::state::ServiceKind::External);
    assert_eq!(
        shared.spec.hostname.as_deref(),
        Some("db.topo-a.svc.cluster.local")
    );
    assert_eq!(
        client.service_get("topo-c", "web").await.unwrap().spec,
        web("one")
    );
    let running_db = env
        .containers(Some("db"))
        .await
        .into_iter()
        .filter(|c| c.labels.get("raftvisor.namespace").map(String::as_str) == Some("topo-c"))
        .count();
    assert_eq!(running_db, 0, "a shared service is not duplicated");
    let (code, _, err) = env
        .cluster
        .cli(1, &["namespace", "clone", "topo-a", "topo-c"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("has services") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Saved topologies keep their versions; an earlier one applies as it was.
    let save = || {
        let (code, out, err) = env.cluster.cli(
            1,
            &[
                "--output", "json", "topology", "save", "shop", "--from", "topo-a",
            ],
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["version"]
            .as_u64()
            .unwrap()
    };
    let first = save();
    client
        .service_put("topo-a", "web", &web("two"), None)
        .await
        .unwrap();
    let second = save();
    assert!(second > first);
    let (code, out, err) = env
        .cluster
        .cli(1, &["--output", "json", "topology", "ls", "shop"]);
    assert_eq!(code, 0, "{err}");
    let versions: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![first, second]
    );
    let (code, shown, err) = env.cluster.cli(1, &["topology", "show", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("VERSION = \"two\""), "{shown}");
    let old = format!("shop@{first}");
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "namespace",
            "apply",
            "--topology",
            &old,
            "--as",
            "topo-d",
            "--timeout",
            "90s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        client.service_get("topo-d", "web").await.unwrap().spec,
        web("one")
    );
    wait_all_running(&env, "topo-d", &["db", "web"]).await;
    let (code, _, err) = env.cluster.cli(1, &["topology", "rm", "shop"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.cluster.cli(1, &["topology", "show", "shop"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
}
