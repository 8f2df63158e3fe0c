//! Safe releases on real containers: every version of a spec is kept; a
//! rollout whose new instances crash-loop goes back by itself to the last
//! version that rolled out (`update.on_failure = "revert"`), and `service
//! rollback --to` returns to an exact earlier version, image included.

use std::time::Duration;

use serde_json::{json, Value};

use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

/// `service history` as JSON.
fn history(env: &DockerCluster) -> Vec<Value> {
    let (code, out, err) = env
        .cluster
        .cli(1, &["--output", "json", "service", "history", "rel/web"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_rollout_reverts_by_itself_and_rollback_returns_to_an_exact_version() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let dir = tempfile::tempdir().unwrap();
    // Deploys the version whose env says `version` (and `extra` env),
    // waiting for its rollout: the CLI's exit code and stderr.
    let deploy = |version: &str, extra: Value| {
        let mut env_vars = json!({ "VERSION": version });
        env_vars
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let spec = echo_spec(
            3,
            json!({
                "env": env_vars,
                "restart": {"initial_backoff_ms": 200, "max_backoff_ms": 1000, "reset_after_ms": 10000},
                "update": {"on_failure": "revert"},
            }),
        );
        let path = dir.path().join(format!("{version}.json"));
        std::fs::write(
            &path,
            json!({"namespace": "rel", "name": "web", "spec": spec}).to_string(),
        )
        .unwrap();
        let file = path.display().to_string();
        let (code, _, err) = env.cluster.cli(
            1,
            &["service", "deploy", &file, "--wait", "--timeout", "120s"],
        );
        (code, err)
    };
    let version_of = |env_value: &str| {
        let revisions = history(&env);
        revisions
            .iter()
            .find(|r| r["spec"]["env"]["VERSION"] == env_value && r["cause"] == "deploy")
            .unwrap_or_else(|| panic!("no deploy of {env_value}: {revisions:?}"))["version"]
            .as_u64()
            .unwrap()
    };

    let (code, err) = deploy("one", json!({}));
    assert_eq!(code, 0, "{err}");
    let (code, err) = deploy("two", json!({}));
    assert_eq!(code, 0, "{err}");
    let (one, two) = (version_of("one"), version_of("two"));

    // Three crashes a container: the new version crash-loops, and the
    // service goes back to two by itself; the deploy says so.
    let (code, err) = deploy("three", json!({"ECHO_CRASH_AFTER_MS": "100"}));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reverted"), "{err}");
    let three = version_of("three");
    let report = client.service_report("rel", "web").await.unwrap();
    let reverted = report
        .reverted
        .clone()
        .expect("the report shows the revert");
    assert_eq!((reverted.from, reverted.to), (three, two), "{report:?}");
    assert!(reverted.reason.contains("crash"), "{reverted:?}");
    eventually(
        "every slot runs version two again",
        Duration::from_secs(60),
        || async {
            let report = client
                .service_report("rel", "web")
                .await
                .map_err(|e| e.to_string())?;
            let service = client
                .service_get("rel", "web")
                .await
                .map_err(|e| e.to_string())?;
            match (
                report.running,
                report.outdated,
                service.spec.env["VERSION"].as_str(),
            ) {
                (3, 0, "two") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let revisions = history(&env);
    let newest = revisions.last().unwrap();
    assert_eq!(newest["cause"], "revert", "{revisions:?}");
    assert_eq!(newest["from"], three);
    assert_eq!(newest["to"], two);
    assert_eq!(newest["current"], true);
    eventually(
        "the revert rolled out (settled)",
        Duration::from_secs(30),
        || async {
            let revisions = history(&env);
            match revisions.last().unwrap()["settled_ms"].as_u64() {
                Some(_) => Ok(()),
                None => Err(format!("{revisions:?}")),
            }
        },
    )
    .await;
    let events = client.events(0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "service.reverted" && e.subject == "rel/web"),
        "{events:?}"
    );

    // Back to the first version exactly: its spec and the image it ran.
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "service",
            "rollback",
            "rel/web",
            "--to",
            &one.to_string(),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let service = client.service_get("rel", "web").await.unwrap();
    assert_eq!(service.spec.env["VERSION"], "one");
    let revisions = history(&env);
    let first = revisions.iter().find(|r| r["version"] == one).unwrap();
    let newest = revisions.last().unwrap();
    assert_eq!(newest["cause"], "rollback");
    assert_eq!(newest["to"], one);
    assert_eq!(newest["pin"], first["pin"], "{revisions:?}");
    let report = client.service_report("rel", "web").await.unwrap();
    assert_eq!((report.running, report.outdated), (3, 0), "{report:?}");

    // A version that is not kept, or the current one, is refused.
    let (code, _, err) = env
        .cluster
        .cli(1, &["service", "rollback", "rel/web", "--to", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("not in the history"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_must_run_min_healthy_before_the_next_is_replaced() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = |version: &str, crash_after_ms: Option<&str>| {
        let mut vars = json!({ "VERSION": version });
        if let Some(ms) = crash_after_ms {
            vars["ECHO_CRASH_AFTER_MS"] = json!(ms);
        }
        echo_spec(
            3,
            json!({
                "env": vars,
                "restart": {"initial_backoff_ms": 200, "max_backoff_ms": 1000, "reset_after_ms": 60000},
                "update": {"on_failure": "revert", "min_healthy_ms": 4000},
            }),
        )
    };
    client
        .service_put("mh", "web", &spec("one", None), None)
        .await
        .unwrap();
    eventually(
        "version one rolled out",
        Duration::from_secs(60),
        || async {
            let revisions = client
                .service_history("mh", "web")
                .await
                .map_err(|e| e.to_string())?;
            match revisions.last().and_then(|r| r.settled_ms) {
                Some(_) => Ok(()),
                None => Err(format!("{revisions:?}")),
            }
        },
    )
    .await;

    // Version two dies 1.5 s after it starts: its first instance never
    // runs the 4 s it must, so no second one is replaced before the
    // service goes back.
    let bad = client
        .service_put("mh", "web", &spec("two", Some("1500")), None)
        .await
        .unwrap();
    let most_new = std::cell::Cell::new(0);
    let reverted = eventually(
        "version two is reverted",
        Duration::from_secs(90),
        || async {
            let report = client
                .service_report("mh", "web")
                .await
                .map_err(|e| e.to_string())?;
            if report.version == bad.version {
                let new = report.instances.len() as u32 - report.outdated;
                most_new.set(most_new.get().max(new));
            }
            report.reverted.clone().ok_or_else(|| format!("{report:?}"))
        },
    )
    .await;
    assert_eq!(reverted.from, bad.version);
    assert_eq!(
        most_new.get(),
        1,
        "one instance of version two at a time, never more"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_surge_rollout_never_runs_fewer_than_the_replicas() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = |version: &str| {
        echo_spec(
            3,
            json!({ "env": { "VERSION": version }, "update": { "max_surge": 1 } }),
        )
    };
    let rolled_out = |version: u64| {
        let client = &client;
        async move {
            let revisions = client
                .service_history("sg", "web")
                .await
                .map_err(|e| e.to_string())?;
            match revisions.last() {
                Some(r) if r.version == version && r.settled_ms.is_some() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    };
    let one = client
        .service_put("sg", "web", &spec("one"), None)
        .await
        .unwrap();
    eventually("version one rolled out", Duration::from_secs(60), || {
        rolled_out(one.version)
    })
    .await;
    let two = client
        .service_put("sg", "web", &spec("two"), None)
        .await
        .unwrap();
    let fewest = std::cell::Cell::new(u32::MAX);
    let most = std::cell::Cell::new(0);
    eventually(
        "version two rolled out",
        Duration::from_secs(90),
        || async {
            let report = client
                .service_report("sg", "web")
                .await
                .map_err(|e| e.to_string())?;
            fewest.set(fewest.get().min(report.running));
            most.set(most.get().max(report.running));
            rolled_out(two.version).await
        },
    )
    .await;
    assert!(
        fewest.get() >= 3,
        "never fewer than 3 running (fewest {})",
        fewest.get()
    );
    assert_eq!(most.get(), 4, "the surge instance ran beside the three");
    eventually(
        "the surge slot is gone",
        Duration::from_secs(30),
        || async {
            let instances = client
                .service_instances("sg", "web")
                .await
                .map_err(|e| e.to_string())?;
            match instances.len() {
                3 => Ok(()),
                n => Err(format!("{n} instances")),
            }
        },
    )
    .await;
    let service = client.service_get("sg", "web").await.unwrap();
    assert_eq!(service.spec.env["VERSION"], "two");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_runs_beside_the_old_version_until_promoted_or_aborted() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let dir = tempfile::tempdir().unwrap();
    let deploy = |version: &str| {
        let spec = echo_spec(
            3,
            json!({ "env": { "VERSION": version }, "update": { "canary": 1, "canary_weight": 7 } }),
        );
        let path = dir.path().join(format!("{version}.json"));
        std::fs::write(
            &path,
            json!({"namespace": "cn", "name": "web", "spec": spec}).to_string(),
        )
        .unwrap();
        let file = path.display().to_string();
        let (code, _, err) = env.cluster.cli(
            1,
            &["service", "deploy", &file, "--wait", "--timeout", "120s"],
        );
        assert_eq!(code, 0, "{version}: {err}");
    };
    // Running on every slot: new service, a canary has nothing to replace.
    deploy("one");
    let versions = |want: &'static str| {
        let client = &client;
        async move {
            let report = client
                .service_report("cn", "web")
                .await
                .map_err(|e| e.to_string())?;
            let service = client
                .service_get("cn", "web")
                .await
                .map_err(|e| e.to_string())?;
            match (
                report.running,
                report.outdated,
                service.spec.env["VERSION"].as_str(),
            ) {
                (3, 0, version) if version == want => Ok(report),
                other => Err(format!("{other:?}")),
            }
        }
    };
    eventually("version one everywhere", Duration::from_secs(60), || {
        versions("one")
    })
    .await;

    // Version two: one canary, two keep version one, and it stays so.
    deploy("two");
    let report = client.service_report("cn", "web").await.unwrap();
    let canary = report.canary.clone().expect("a canary waits");
    assert_eq!((canary.wanted, canary.running), (1, 1), "{report:?}");
    assert_eq!(report.outdated, 2, "{report:?}");
    // DNS gives the canary the weight its spec sets, the others their port's.
    let weights = || async {
        let server = env.cluster.replica(1).dns_addr.clone();
        let answer = crate::dns::query(
            &server,
            "_http._tcp.web.cn.svc.cluster.local.",
            hickory_proto::rr::RecordType::SRV,
            false,
        )
        .await;
        let mut weights: Vec<u16> = crate::dns::srv_ports(&answer).iter().map(|p| p.1).collect();
        weights.sort();
        weights
    };
    eventually(
        "the canary answers with weight 7",
        Duration::from_secs(20),
        || async {
            match weights().await.as_slice() {
                [1, 1, 7] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (code, _, err) = env.cluster.cli(1, &["service", "promote", "cn/web"]);
    assert_eq!(code, 0, "{err}");
    eventually("version two everywhere", Duration::from_secs(60), || {
        versions("two")
    })
    .await;
    eventually(
        "every instance answers with the port's weight",
        Duration::from_secs(20),
        || async {
            match weights().await.as_slice() {
                [1, 1, 1] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (code, _, err) = env.cluster.cli(1, &["service", "promote", "cn/web"]);
    assert_ne!(code, 0, "nothing left to promote");
    assert!(err.contains("no canary"), "{err}");

    // Version three: its canary aborted, every slot runs version two.
    deploy("three");
    let report = client.service_report("cn", "web").await.unwrap();
    assert_eq!(report.outdated, 2, "{report:?}");
    let (code, _, err) = env.cluster.cli(1, &["service", "abort", "cn/web"]);
    assert_eq!(code, 0, "{err}");
    let report = eventually(
        "back to version two everywhere",
        Duration::from_secs(60),
        || versions("two"),
    )
    .await;
    assert!(report.canary.is_none(), "{report:?}");
}
