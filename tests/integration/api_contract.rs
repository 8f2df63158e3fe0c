//! The HTTP and CLI contract: compare-and-set, bad input answered with a
//! 4xx JSON reason (never a 500), Consul KV query forms, and the CLI's exit
//! codes and output formats.

use std::process::Command;

use raftvisor::client::ClientError;
use raftvisor::state::ServiceSpec;
use serde_json::{json, Value};

use crate::harness::{binary, run_cli, Cluster, ADMIN_TOKEN};

fn echo_spec(replicas: u32) -> ServiceSpec {
    serde_json::from_value(json!({
        "image": "raftvisor-echo:local",
        "replicas": replicas,
        "ports": [{"name": "http", "container_port": 8080}]
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_set_conflicts_change_nothing() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();

    // Services: If-Match on the version, 412 on mismatch.
    let created = client
        .service_put("demo", "echo", &echo_spec(3), Some(0))
        .await
        .unwrap();
    let conflict = client
        .service_put("demo", "echo", &echo_spec(5), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, ClientError::Api { status: 412, current_version: Some(v), .. } if v == created.version),
        "{conflict:?}"
    );
    let stale = client
        .service_put("demo", "echo", &echo_spec(5), Some(created.version + 100))
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(412));
    assert_eq!(
        client
            .service_get("demo", "echo")
            .await
            .unwrap()
            .spec
            .replicas,
        3
    );
    let updated = client
        .service_put("demo", "echo", &echo_spec(4), Some(created.version))
        .await
        .unwrap();
    assert!(updated.version > created.version);
    assert_eq!(updated.create_index, created.create_index);
    let scaled = client.service_scale("demo", "echo", 2).await.unwrap();
    assert_eq!(scaled.spec.replicas, 2);
    assert_eq!(
        client
            .service_delete("demo", "echo", Some(created.version))
            .await
            .unwrap_err()
            .status(),
        Some(412)
    );
    client
        .service_delete("demo", "echo", Some(scaled.version))
        .await
        .unwrap();
    assert_eq!(
        client
            .service_get("demo", "echo")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    // KV: Consul answers false and keeps the value.
    assert!(client.kv_put("cfg", b"one", 0, Some(0)).await.unwrap());
    let first = client
        .kv_get("cfg", Default::default())
        .await
        .unwrap()
        .unwrap();
    assert!(!client.kv_put("cfg", b"two", 0, Some(0)).await.unwrap());
    assert!(!client
        .kv_put("cfg", b"two", 0, Some(first.modify_index + 7))
        .await
        .unwrap());
    assert!(!client
        .kv_delete("cfg", Some(first.modify_index + 7), false)
        .await
        .unwrap());
    assert_eq!(
        client
            .kv_get("cfg", Default::default())
            .await
            .unwrap()
            .unwrap(),
        first
    );
    assert!(client
        .kv_put("cfg", b"two", 9, Some(first.modify_index))
        .await
        .unwrap());
    let second = client
        .kv_get("cfg", Default::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.value.as_slice(), second.flags, second.create_index),
        (&b"two"[..], 9, first.create_index)
    );
}

/// Method, path, body, headers, expected status.
type BadInputCase = (
    reqwest::Method,
    String,
    Option<String>,
    Vec<(&'static str, &'static str)>,
    u16,
);

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_with_a_json_reason() {
    let cluster = Cluster::start(1).await;
    let base = cluster.api_url(1);
    let http = cluster.http();
    let huge = "x".repeat(2 * 1024 * 1024);
    let cases: Vec<BadInputCase> = vec![
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some("{not json".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": 5}"#.into()),
            vec![],
            422,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "bogus": 1}"#.into()),
            vec![],
            422,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": ""}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/Bad_NS/echo".into(),
            Some(r#"{"image": "a"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo.x".into(),
            Some(r#"{"image": "a"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "replicas": 100000}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a"}"#.into()),
            vec![("if-match", "abc")],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(format!(r#"{{"image": "{huge}"}}"#)),
            vec![],
            413,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "ports": [{"name": "http", "container_port": 0}]}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "ports": [{"name": "http", "container_port": 70000}]}"#.into()),
            vec![],
            422,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "ports": [{"name": "HTTP_1", "container_port": 80}]}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/demo/echo".into(),
            Some(r#"{"image": "a", "ports": [{"name": "http", "container_port": 80}], "health": {"port": "grpc"}}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::GET,
            "/v1/services/demo/missing".into(),
            None,
            vec![],
            404,
        ),
        (
            reqwest::Method::POST,
            "/v1/services/demo/missing/scale".into(),
            Some(r#"{"replicas": 2}"#.into()),
            vec![],
            404,
        ),
        (
            reqwest::Method::POST,
            "/v1/services/demo/missing/scale".into(),
            Some(r#"{"replicas": -1}"#.into()),
            vec![],
            422,
        ),
        (reqwest::Method::GET, "/v1/nope".into(), None, vec![], 404),
        (
            reqwest::Method::PATCH,
            "/v1/services".into(),
            None,
            vec![],
            405,
        ),
        (
            reqwest::Method::PUT,
            "/v1/nodes/n1".into(),
            Some(r#"{"docker_endpoint": "ftp://x"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/nodes/-n1".into(),
            Some(r#"{"docker_endpoint": "unix:///var/run/docker.sock"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::POST,
            "/v1/nodes/missing/drain".into(),
            None,
            vec![],
            404,
        ),
        (
            reqwest::Method::PUT,
            "/v1/kv/big".into(),
            Some("v".repeat(600 * 1024)),
            vec![],
            413,
        ),
        (
            reqwest::Method::PUT,
            "/v1/kv/k?cas=notanumber".into(),
            Some("v".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/kv/k?acquire=".into(),
            Some("v".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/kv/k?acquire=a&release=a".into(),
            Some("v".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/session/create".into(),
            Some(r#"{"Behavior":"explode"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/session/create".into(),
            Some("[1,2]".into()),
            vec![],
            400,
        ),
        // Clients with a bearer token get JSON reasons where Consul's
        // dialect (X-Consul-Token alone) gets Consul's 500s and text.
        (
            reqwest::Method::PUT,
            "/v1/session/create".into(),
            Some(r#"{"TTL":"1s"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/kv/k?acquire=00000000-0000-0000-0000-000000000000".into(),
            Some("v".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/session/renew/00000000-0000-0000-0000-000000000000".into(),
            None,
            vec![],
            404,
        ),
        (
            reqwest::Method::PUT,
            "/v1/txn".into(),
            Some(r#"[{"KV":{"Verb":"explode","Key":"k"}}]"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/txn".into(),
            Some(r#"[{"Node":{"Verb":"set"}}]"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/txn".into(),
            Some("{}".into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::GET,
            "/v1/catalog/services?filter=Service==web".into(),
            None,
            vec![],
            400,
        ),
        (
            reqwest::Method::GET,
            "/v1/health/service/web?wait=soon&index=1".into(),
            None,
            vec![],
            400,
        ),
        (
            reqwest::Method::GET,
            "/v1/kv/k?index=1&wait=forever".into(),
            None,
            vec![],
            400,
        ),
        (reqwest::Method::GET, "/v1/kv/".into(), None, vec![], 400),
        (
            reqwest::Method::POST,
            "/v1/cluster/members".into(),
            Some(r#"{"id": 9, "api_addr": "nowhere", "peer_addr": "x"}"#.into()),
            vec![],
            400,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/cluster/members/abc".into(),
            None,
            vec![],
            400,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/cluster/members/77".into(),
            None,
            vec![],
            409,
        ),
    ];
    for (method, path, body, headers, expected) in cases {
        // A rejected oversized body ends its connection: never reuse one.
        let mut request = cluster
            .http()
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("connection", "close");
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let shown = &text[..text.len().min(200)];
        assert_eq!(status, expected, "{method} {path}: {shown}");
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: body is not JSON: {shown}"));
        assert!(
            parsed["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: no reason in {shown}"
        );
        assert!(
            parsed["code"].as_str().is_some(),
            "{method} {path}: no code in {shown}"
        );
    }
    // Valid JSON is accepted whatever the content type (as `curl -d` sends it).
    let form = http
        .put(format!("{base}/v1/services/curl/echo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"image": "raftvisor-echo:local"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let form = http
        .delete(format!("{base}/v1/services/curl/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 204);
    // Nothing above changed the state.
    let services: Value = http
        .get(format!("{base}/v1/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(services, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_kv_query_forms() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    for key in ["app/a", "app/b/c", "app/b/d", "other"] {
        assert!(client.kv_put(key, key.as_bytes(), 0, None).await.unwrap());
    }
    let base = cluster.api_url(2);
    let http = cluster.http();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    let raw = get("/v1/kv/app/a?raw").await.unwrap();
    assert!(raw.headers().contains_key("x-consul-index"));
    assert_eq!(raw.text().await.unwrap(), "app/a");
    let keys: Vec<String> = get("/v1/kv/app/?keys&separator=/")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys, vec!["app/a", "app/b/"]);
    let all: Vec<Value> = get("/v1/kv/app?recurse")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    for form in [
        "?stale",
        "?stale=",
        "?stale=true",
        "?consistent",
        "?consistent=",
        "?dc=dc1",
    ] {
        let response = get(&format!("/v1/kv/other{form}")).await.unwrap();
        assert_eq!(response.status(), 200, "{form}");
    }
    assert_eq!(get("/v1/kv/missing").await.unwrap().status(), 404);

    // A blocking read returns when the key changes.
    let index: u64 = get("/v1/kv/other").await.unwrap().headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let waiter = {
        let url = format!("{base}/v1/kv/other?index={index}&wait=10s");
        let http = http.clone();
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "blocking read returned before any change"
    );
    assert!(client.kv_put("other", b"changed", 0, None).await.unwrap());
    let changed = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed[0]["Value"], "Y2hhbmdlZA==");
    // A blocking read that sees no change returns after its wait.
    let started = std::time::Instant::now();
    let response = get("/v1/kv/other?index=999999&wait=300ms").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    // Delete recurse and CAS delete.
    assert!(client.kv_delete("app/b/", None, true).await.unwrap());
    let left: Vec<String> = get("/v1/kv/?keys").await.unwrap().json().await.unwrap();
    assert_eq!(left, vec!["app/a", "other"]);
}

fn cli(addr: &str, tls: &[String], args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--addr".to_string(), addr.to_string()];
    all.extend(tls.iter().cloned());
    all.extend(args.iter().map(|a| a.to_string()));
    run_cli(&all, ADMIN_TOKEN)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_speaks_tables_json_and_exit_codes() {
    let cluster = Cluster::start(3).await;
    let addr = cluster.replica(3).api_addr.clone();
    let tls = cluster.certs.cli_args();
    let run = |args: Vec<String>| {
        let addr = addr.clone();
        let tls = tls.clone();
        tokio::task::spawn_blocking(move || {
            cli(
                &addr,
                &tls,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    let (code, out, _) = run(args("kv put color blue")).await.unwrap();
    assert_eq!((code, out.trim()), (0, "put color"));
    let (code, out, _) = run(args("kv get color")).await.unwrap();
    assert_eq!((code, out.trim()), (0, "blue"));
    let (code, out, _) = run(args("--output json kv get color")).await.unwrap();
    assert_eq!(code, 0);
    let parsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["value"], "blue");
    let index = parsed["modify_index"].as_u64().unwrap();
    let (code, _, err) = run(args(&format!("kv cas color red --index {}", index + 1)))
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, _) = run(args(&format!("kv cas color red --index {index}")))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(args("kv get nothing-here")).await.unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("not found") && err.trim().lines().count() == 1,
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.toml");
    std::fs::write(
        &file,
        "namespace = \"demo\"\nname = \"echo\"\n[spec]\nimage = \"raftvisor-echo:local\"\nreplicas = 3\n[[spec.ports]]\nname = \"http\"\ncontainer_port = 8080\n",
    )
    .unwrap();
    let (code, out, err) = run(vec![
        "service".into(),
        "deploy".into(),
        file.display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("demo/echo"), "{out}");
    let (code, out, _) = run(args("service ls")).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("SERVICE") && out.contains("demo/echo"),
        "{out}"
    );
    let (code, out, _) = run(args("--output json service scale demo/echo 5"))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["spec"]["replicas"],
        5
    );
    let (code, _, err) = run(args("service scale demo-echo 5")).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
    std::fs::write(
        &file,
        "namespace = \"demo\"\nname = \"broken\"\n[spec]\nimage = 3\n",
    )
    .unwrap();
    let (code, _, err) = run(vec![
        "service".into(),
        "deploy".into(),
        file.display().to_string(),
    ])
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (code, out, err) = run(args(
        "node add worker-1 --docker unix:///var/run/docker.sock --zone z1 --label disk=ssd",
    ))
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("worker-1") && out.contains("disk=ssd"),
        "{out}"
    );
    let (code, out, _) = run(args("node drain worker-1")).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("draining"), "{out}");
    // The demo service's instances may already be placed there: `--force`
    // removes it either way (at once, or retired until they moved; the
    // refusal without it is tested in limits.rs).
    let (code, _, err) = run(args("node rm worker-1 --force")).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(args("--output json node ls")).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.trim() == "[]" || out.contains("\"retired\""), "{out}");

    let (code, out, _) = run(args("cluster status")).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("leader") && out.lines().count() >= 5, "{out}");

    // An unreachable address: one line, non-zero.
    let output = Command::new(binary())
        .args(["--addr", "127.0.0.1:1", "kv", "get", "x"])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("no replica could be reached") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_bad_agent_config_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "id = 0\ndata_dir = \"/tmp/x\"\napi_addr = \"127.0.0.1:1\"\npeer_addr = \"127.0.0.1:2\"\ndns_addr = \"127.0.0.1:3\"\n").unwrap();
    let output = Command::new(binary())
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("id must be a positive integer") && err.trim().lines().count() == 1,
        "{err}"
    );
    let output = Command::new(binary())
        .args(["agent", "--config", "/does/not/exist.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config"));
}
