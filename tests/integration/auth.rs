//! Client authentication: every endpoint but `GET /v1/health` needs a
//! token; roles limit what a token may do; Consul's `X-Consul-Token`
//! works; a revoked token stops working on every replica; secrets never
//! reach a log or `token ls`; the bootstrap token file is written by the
//! cluster when it is named but missing, and the bootstrap happens once.

use std::time::Duration;

use raftvisor::state::Role;
use raftvisor::wire::CreateToken;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{eventually, run_cli, Cluster, Tuning, ADMIN_TOKEN};

/// Every route of the API router, with a concrete path.
fn all_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/v1/cluster"),
        (Method::POST, "/v1/cluster/members"),
        (Method::DELETE, "/v1/cluster/members/9"),
        (Method::GET, "/v1/events"),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/services"),
        (Method::GET, "/v1/services/auth/echo"),
        (Method::PUT, "/v1/services/auth/echo"),
        (Method::DELETE, "/v1/services/auth/echo"),
        (Method::POST, "/v1/services/auth/echo/scale"),
        (Method::GET, "/v1/services/auth/echo/instances"),
        (Method::GET, "/v1/services/auth/echo/report"),
        (Method::POST, "/v1/services/auth/echo/start"),
        (Method::POST, "/v1/services/auth/echo/stop"),
        (Method::POST, "/v1/services/auth/echo/restart"),
        (Method::GET, "/v1/nodes"),
        (Method::GET, "/v1/nodes/n1"),
        (Method::PUT, "/v1/nodes/n1"),
        (Method::DELETE, "/v1/nodes/n1"),
        (Method::POST, "/v1/nodes/n1/drain"),
        (Method::GET, "/v1/kv"),
        (Method::DELETE, "/v1/kv"),
        (Method::GET, "/v1/kv/"),
        (Method::DELETE, "/v1/kv/"),
        (Method::GET, "/v1/kv/app/a"),
        (Method::PUT, "/v1/kv/app/a"),
        (Method::DELETE, "/v1/kv/app/a"),
        (Method::GET, "/v1/tokens"),
        (Method::POST, "/v1/tokens"),
        (Method::DELETE, "/v1/tokens/abc123"),
        // Unknown routes and methods are no way around the check either.
        (Method::GET, "/v1/nope"),
        (Method::PATCH, "/v1/kv/app/a"),
    ]
}

fn is_read(method: &Method) -> bool {
    method == Method::GET
}

/// Sends `method path` to `base` with `headers`; answers (status, JSON body).
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the replica answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The secret part of a token (after the dot).
fn secret(token: &str) -> &str {
    token.rsplit_once('.').expect("a token has a dot").1
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_but_health_needs_a_valid_token() {
    let cluster = Cluster::start(1).await;
    let base = cluster.api_url(1);
    // Trusts the cluster CA, sends no token of its own.
    let http = cluster.certs.http_builder().build().unwrap();
    let (status, body) = call(&http, &base, Method::GET, "/v1/health", &[], None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let unknown = format!("rvt_feedbeef0000.{}", "a".repeat(64));
    let forged = format!("rvt_harness.{}", "0".repeat(64));
    let bad_headers: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("authorization", "Bearer".into())],
        vec![("authorization", bearer("not-a-token"))],
        vec![("authorization", bearer(&unknown))],
        // The harness token's id with another secret.
        vec![("authorization", bearer(&forged))],
        vec![("x-consul-token", forged.clone())],
    ];
    for (method, path) in all_routes() {
        for headers in &bad_headers {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (status, body) = call(&http, &base, method.clone(), path, &headers, None).await;
            assert_eq!(status, 401, "{method} {path} with {headers:?}: {body}");
            assert_eq!(body["code"], "unauthorized", "{method} {path}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
    // Refusals are logged with what was asked, never with the secret.
    let log = cluster.replica(1).log();
    assert!(
        log.contains("API request refused") && log.contains("/v1/tokens"),
        "{log}"
    );
    assert!(log.contains("feedbeef0000"), "{log}");
    assert!(!log.contains(secret(&forged)) && !log.contains(&"a".repeat(64)));
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_limit_what_a_token_may_do() {
    let cluster = Cluster::start(1).await;
    let base = cluster.api_url(1);
    // Trusts the cluster CA, sends no token of its own.
    let http = cluster.certs.http_builder().build().unwrap();
    let admin = cluster.client();
    let reader = admin
        .token_create(&CreateToken::new(Role::Read, "reader"))
        .await
        .unwrap();
    let operator = admin
        .token_create(&CreateToken::new(Role::Operator, "operator"))
        .await
        .unwrap();
    assert_eq!(reader.info.role, Role::Read);
    assert!(reader
        .token
        .starts_with(&format!("rvt_{}.", reader.info.id)));

    // Something to read.
    assert!(admin.kv_put("app/a", b"1", 0, None).await.unwrap());
    let read_auth = bearer(&reader.token);
    let read_headers = [("authorization", read_auth.as_str())];
    for (method, path) in all_routes() {
        let (status, body) = call(&http, &base, method.clone(), path, &read_headers, None).await;
        if is_read(&method) && !path.starts_with("/v1/tokens") {
            assert!(
                status != 401 && status != 403,
                "read token refused on {method} {path}: {status} {body}"
            );
        } else {
            assert_eq!(status, 403, "read token on {method} {path}: {body}");
            assert_eq!(body["code"], "forbidden", "{method} {path}: {body}");
        }
    }
    for path in [
        "/v1/cluster",
        "/v1/events",
        "/metrics",
        "/v1/services",
        "/v1/nodes",
        "/v1/kv/app/a",
    ] {
        let response = http
            .get(format!("{base}{path}"))
            .header("authorization", &read_auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "read token on GET {path}");
    }

    // Operators write services and KV and drain nodes, but manage neither
    // tokens, membership nor the node inventory (a node's engine receives
    // secrets; its docker_tls names files on the managers).
    let op_auth = bearer(&operator.token);
    let op = [("authorization", op_auth.as_str())];
    let (status, body) = call(&http, &base, Method::PUT, "/v1/kv/app/b", &op, None).await;
    assert_eq!((status, body), (200, json!(true)));
    let spec = json!({"image": "raftvisor-echo:local", "replicas": 0});
    let (status, body) = call(
        &http,
        &base,
        Method::PUT,
        "/v1/services/auth/echo",
        &op,
        Some(spec),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        (Method::GET, "/v1/tokens", None),
        (Method::POST, "/v1/tokens", Some(json!({"role": "read"}))),
        (
            Method::DELETE,
            &*format!("/v1/tokens/{}", reader.info.id),
            None,
        ),
        (
            Method::POST,
            "/v1/cluster/members",
            Some(json!({"id": 9, "api_addr": "127.0.0.1:1", "peer_addr": "127.0.0.1:2"})),
        ),
        (Method::DELETE, "/v1/cluster/members/1", None),
        (
            Method::PUT,
            "/v1/nodes/n1",
            Some(json!({"provider": "static", "docker_endpoint": "tcp://127.0.0.1:2375"})),
        ),
        (Method::DELETE, "/v1/nodes/n1", None),
    ] {
        let (status, answer) = call(&http, &base, method.clone(), path, &op, body).await;
        assert_eq!(status, 403, "operator on {method} {path}: {answer}");
    }
    // An admin registers the node; the operator may neither change nor
    // delete it, and may drain it.
    let node = json!({"provider": "static", "docker_endpoint": "tcp://127.0.0.1:2375"});
    let admin_auth = bearer(&cluster.admin_token());
    let admin_headers = [("authorization", admin_auth.as_str())];
    let (status, answer) = call(
        &http,
        &base,
        Method::PUT,
        "/v1/nodes/n1",
        &admin_headers,
        Some(node.clone()),
    )
    .await;
    assert_eq!(status, 200, "admin registers a node: {answer}");
    let mut changed = node.clone();
    changed["docker_endpoint"] = json!("tcp://192.0.2.9:2375");
    for (method, body) in [(Method::PUT, Some(changed)), (Method::DELETE, None)] {
        let (status, answer) = call(&http, &base, method.clone(), "/v1/nodes/n1", &op, body).await;
        assert_eq!(status, 403, "operator on {method} /v1/nodes/n1: {answer}");
    }
    let (status, answer) = call(&http, &base, Method::POST, "/v1/nodes/n1/drain", &op, None).await;
    assert_eq!(status, 200, "operator drains a node: {answer}");
    let (status, shown) = call(
        &http,
        &base,
        Method::GET,
        "/v1/nodes/n1",
        &read_headers,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["spec"]["docker_endpoint"], "tcp://127.0.0.1:2375");

    // Consul's header works like the bearer token.
    let consul = [("x-consul-token", operator.token.as_str())];
    let (status, body) = call(&http, &base, Method::PUT, "/v1/kv/app/c", &consul, None).await;
    assert_eq!((status, body), (200, json!(true)));
    let consul = [("x-consul-token", reader.token.as_str())];
    let (status, _) = call(&http, &base, Method::GET, "/v1/kv/app/c?raw", &consul, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&http, &base, Method::PUT, "/v1/kv/app/c", &consul, None).await;
    assert_eq!(status, 403);

    // Bad requests to the token API are 4xx with a reason.
    for body in [
        json!({"role": "root"}),
        json!({"role": "read", "name": "x".repeat(200)}),
        json!({"role": "read", "bogus": 1}),
    ] {
        let response = cluster
            .http()
            .post(format!("{base}/v1/tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{body}");
    }
    // The last admin token cannot be revoked (nobody could manage the
    // cluster any more).
    let err = admin.token_revoke("harness").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(
        admin
            .token_revoke("nosuchtoken")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

/// Runs the CLI against `addr` (trusting the CA file `ca`) with `token`.
fn cli(addr: &str, ca: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = ["--addr", addr, "--ca-cert", ca]
        .iter()
        .map(|a| a.to_string())
        .collect();
    all.extend(args.iter().map(|a| a.to_string()));
    run_cli(&all, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_tokens_stop_working_everywhere_and_secrets_stay_out_of_logs() {
    let cluster = Cluster::start(3).await;
    let addr = cluster.replica(2).api_addr.clone();
    let ca = cluster.certs.ca.display().to_string();
    let run = |args: &'static str| {
        let (addr, ca) = (addr.clone(), ca.clone());
        tokio::task::spawn_blocking(move || {
            cli(
                &addr,
                &ca,
                ADMIN_TOKEN,
                &args.split_whitespace().collect::<Vec<_>>(),
            )
        })
    };
    // The CLI creates a token and prints it once (JSON for scripts).
    let (code, out, err) = run("--output json token create --role operator --name ci")
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        (created["role"].as_str(), created["name"].as_str()),
        (Some("operator"), Some("ci"))
    );
    let (code, human, _) = run("token create --role read").await.unwrap();
    assert_eq!(code, 0);
    assert!(human.trim().starts_with("rvt_"), "{human}");
    let read_token = human.trim().to_string();

    // It works on every replica once applied there.
    for replica in [1, 2, 3] {
        let client = cluster.client_with_token(&[replica], Some(token.clone()));
        eventually(
            &format!("the new token works on replica {replica}"),
            Duration::from_secs(10),
            || async {
                client
                    .kv_put("revoke/k", b"v", 0, None)
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await;
    }

    // `token ls` shows ids, names and roles, never secrets or hashes.
    let (code, listing, _) = run("token ls").await.unwrap();
    assert_eq!(code, 0);
    assert!(listing.contains(&id) && listing.contains("operator") && listing.contains("ci"));
    let (code, json_listing, _) = run("--output json token ls").await.unwrap();
    assert_eq!(code, 0);
    let listed: Vec<Value> = serde_json::from_str(&json_listing).unwrap();
    assert_eq!(listed.len(), 3, "{json_listing}");
    for entry in &listed {
        let keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["create_index", "created_ms", "id", "name", "role"],
            "{entry}"
        );
    }
    for text in [&listing, &json_listing] {
        for t in [&token, &read_token, &ADMIN_TOKEN.to_string()] {
            assert!(!text.contains(secret(t)), "a secret in token ls: {text}");
        }
    }

    // Revoked: refused by every replica.
    let (code, _, err) = run_owned(&addr, &ca, &["token", "revoke", &id]).await;
    assert_eq!(code, 0, "{err}");
    for replica in [1, 2, 3] {
        let client = cluster.client_with_token(&[replica], Some(token.clone()));
        eventually(
            &format!("the revoked token is refused by replica {replica}"),
            Duration::from_secs(10),
            || async {
                match client.kv_get("revoke/k", Default::default()).await {
                    Err(e) if e.status() == Some(401) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let (code, _, err) = run_owned(&addr, &ca, &["token", "revoke", &id]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("does not exist") && err.trim().lines().count() == 1,
        "{err}"
    );

    // No secret ever reached a replica's log.
    for r in &cluster.replicas {
        let log = r.log();
        for t in [&token, &read_token, &ADMIN_TOKEN.to_string()] {
            assert!(
                !log.contains(secret(t)),
                "a secret in replica {}'s log",
                r.id
            );
        }
    }
}

async fn run_owned(addr: &str, ca: &str, args: &[&str]) -> (i32, String, String) {
    let (addr, ca) = (addr.to_string(), ca.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        cli(
            &addr,
            &ca,
            ADMIN_TOKEN,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_missing_bootstrap_file_is_written_once_per_cluster() {
    let tuning = Tuning {
        prefill_token: false,
        ..Tuning::default()
    };
    // Starting waits for a leader through the API, so it returns only once
    // the cluster has written the file and applied its token.
    let mut cluster = Cluster::start_with(3, tuning).await;
    let token = cluster.admin_token();
    assert!(token.starts_with("rvt_"), "{token:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cluster.token_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let tokens = cluster.client().token_list().await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(
        (tokens[0].role, tokens[0].name.as_str()),
        (Role::Admin, "bootstrap")
    );

    // A new leader does not bootstrap again.
    let leader = cluster.wait_for_leader().await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    assert!(cluster
        .client()
        .kv_put("after/failover", b"1", 0, None)
        .await
        .unwrap());
    let tokens = cluster.client().token_list().await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(cluster.admin_token(), token);
    for r in &cluster.replicas {
        assert!(
            !r.log().contains(secret(&token)),
            "the secret in replica {}'s log",
            r.id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_name_the_token_that_caused_each_change() {
    let cluster = Cluster::start(3).await;
    let admin = cluster.client();
    let deployer = admin
        .token_create(&CreateToken::new(Role::Operator, "deployer"))
        .await
        .unwrap();
    // Through a follower: the actor travels with the forwarded write.
    let mut ids: Vec<u64> = vec![1, 2, 3];
    let status = admin.cluster_status().await.unwrap();
    ids.retain(|id| Some(*id) != status.leader_id);
    let as_deployer = cluster.client_with_token(&ids, Some(deployer.token.clone()));
    let spec: raftvisor::state::ServiceSpec =
        serde_json::from_value(serde_json::json!({"image": "raftvisor-echo:local", "replicas": 0}))
            .unwrap();
    as_deployer
        .service_put("audit", "web", &spec, None)
        .await
        .unwrap();
    let events = admin.events(0).await.unwrap();
    let deployed = events
        .iter()
        .find(|e| e.subject == "audit/web")
        .unwrap_or_else(|| panic!("no event of audit/web in {events:?}"));
    let actor = deployed.actor.as_ref().expect("the deploy names its token");
    assert_eq!(
        (actor.token_id.as_str(), actor.token_name.as_str()),
        (deployer.info.id.as_str(), "deployer")
    );
    // The token itself was created by the bootstrap admin token.
    let created = events
        .iter()
        .find(|e| e.subject.contains(&deployer.info.id))
        .unwrap_or_else(|| panic!("no token event in {events:?}"));
    assert_eq!(
        created.actor.as_ref().map(|a| a.token_id.as_str()),
        Some("harness"),
        "{created:?}"
    );
}

/// A refused request whose body is still being sent gets its answer, refused
/// by the auth layer or by its route: the replica reads the body (bounded)
/// before the 403 or 400, instead of closing the connection under the
/// client's upload.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upload_gets_its_answer_not_a_broken_connection() {
    let cluster = Cluster::start(1).await;
    let base = cluster.api_url(1);
    let http = cluster.certs.http_builder().build().unwrap();
    let reader = cluster
        .client()
        .token_create(&CreateToken::new(Role::Read, "reader"))
        .await
        .unwrap();
    for attempt in 0..5 {
        // Just under the body limit (1 MiB), sent in small pieces.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..250).map(|_| Ok(vec![b' '; 4096])).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let response = http
            .put(format!("{base}/v1/nodes/n{attempt}"))
            .bearer_auth(&reader.token)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the refusal was not received: {e:?}"));
        assert_eq!(response.status(), 403, "attempt {attempt}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "forbidden");
    }
    // A route that refuses on its query, before reading the upload.
    for attempt in 0..5 {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..250).map(|_| Ok(vec![b' '; 4096])).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let response = http
            .post(format!("{base}/v1/images?name=Not%20A%20Name"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the refusal was not received: {e:?}"));
        assert_eq!(response.status(), 400, "attempt {attempt}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid", "{body}");
    }
}

/// A token limited to namespace `a` (created with the CLI) sees and changes
/// the services, events, catalog and KV keys of `a` only; cluster-wide
/// routes refuse it, and nothing outside its reach changes when it tries.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_limited_to_namespaces_reaches_nothing_else() {
    let cluster = Cluster::start(1).await;
    let base = cluster.api_url(1);
    let http = cluster.certs.http_builder().build().unwrap();
    let admin = cluster.client();
    let spec = json!({"image": "raftvisor-echo:local", "replicas": 0});
    for namespace in ["a", "b"] {
        let admin_headers = [("authorization", &*bearer(ADMIN_TOKEN))];
        let path = format!("/v1/services/{namespace}/echo");
        let (status, body) = call(
            &http,
            &base,
            Method::PUT,
            &path,
            &admin_headers,
            Some(spec.clone()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(admin
            .kv_put(&format!("{namespace}/k"), b"1", 0, None)
            .await
            .unwrap());
    }
    assert!(admin.kv_put("top", b"1", 0, None).await.unwrap());

    let addr = cluster.replica(1).api_addr.clone();
    let ca = cluster.certs.ca.display().to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        cli(
            &addr,
            &ca,
            ADMIN_TOKEN,
            &[
                "--output",
                "json",
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "team-a",
                "--namespace",
                "a",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["namespaces"], json!(["a"]), "{created}");
    assert_eq!(created["kv_prefixes"], json!(["a/"]), "{created}");
    let auth = bearer(created["token"].as_str().unwrap());
    let team = [("authorization", auth.as_str())];

    // Its own record; listings show only namespace `a`.
    let (status, own) = call(&http, &base, Method::GET, "/v1/tokens/self", &team, None).await;
    assert_eq!((status, &own["namespaces"]), (200, &json!(["a"])), "{own}");
    let (_, services) = call(&http, &base, Method::GET, "/v1/services", &team, None).await;
    let namespaces: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["a"], "{services}");
    let (_, catalog) = call(
        &http,
        &base,
        Method::GET,
        "/v1/catalog/services",
        &team,
        None,
    )
    .await;
    assert_eq!(
        catalog.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["echo.a"],
        "{catalog}"
    );
    let (status, health) = call(
        &http,
        &base,
        Method::GET,
        "/v1/health/service/echo.b",
        &team,
        None,
    )
    .await;
    assert_eq!((status, health), (200, json!([])));
    let (_, events) = call(&http, &base, Method::GET, "/v1/events", &team, None).await;
    let events = events.as_array().unwrap();
    assert!(!events.is_empty());
    for event in events {
        assert!(
            event["subject"].as_str().unwrap().starts_with("a/"),
            "{event}"
        );
    }
    let (_, keys) = call(&http, &base, Method::GET, "/v1/kv/?keys", &team, None).await;
    assert_eq!(keys, json!(["a/k"]));
    let (_, entries) = call(&http, &base, Method::GET, "/v1/kv/?recurse", &team, None).await;
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");

    // Inside its reach it changes things.
    let (status, body) = call(
        &http,
        &base,
        Method::PUT,
        "/v1/services/a/web",
        &team,
        Some(spec.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &http,
        &base,
        Method::PUT,
        "/v1/kv/a/new",
        &team,
        Some(json!("v")),
    )
    .await;
    assert_eq!((status, body), (200, json!(true)));

    // Outside: refused with a reason, and nothing changes.
    let txn = json!([
        {"KV": {"Verb": "set", "Key": "a/t", "Value": "MQ=="}},
        {"KV": {"Verb": "set", "Key": "b/t", "Value": "MQ=="}},
    ]);
    for (method, path, body) in [
        (Method::GET, "/v1/services/b/echo", None),
        (
            Method::PUT,
            "/v1/services/b/echo",
            Some(json!({"image": "x", "replicas": 3})),
        ),
        (Method::DELETE, "/v1/services/b/echo", None),
        (
            Method::POST,
            "/v1/services/b/echo/scale",
            Some(json!({"replicas": 2})),
        ),
        (Method::GET, "/v1/kv/b/k", None),
        (Method::GET, "/v1/kv/top", None),
        (Method::PUT, "/v1/kv/b/k", Some(json!("x"))),
        (Method::DELETE, "/v1/kv/b/k", None),
        (Method::DELETE, "/v1/kv/?recurse", None),
        (Method::DELETE, "/v1/kv/a?recurse", None),
        (Method::PUT, "/v1/txn", Some(txn)),
        (Method::GET, "/v1/nodes", None),
        (Method::GET, "/v1/cluster", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/v1/images", None),
        (Method::GET, "/v1/catalog/nodes", None),
        (Method::GET, "/v1/session/list", None),
        (Method::GET, "/v1/prometheus/targets?managers", None),
    ] {
        let (status, answer) = call(&http, &base, method.clone(), path, &team, body).await;
        assert_eq!(status, 403, "limited token on {method} {path}: {answer}");
        assert_eq!(answer["code"], "forbidden", "{method} {path}: {answer}");
    }
    let b = admin.service_get("b", "echo").await.unwrap();
    assert_eq!(b.spec.replicas, 0);
    for (key, present) in [("b/k", true), ("top", true), ("a/k", true), ("a/t", false)] {
        let found = admin
            .kv_get(key, raftvisor::client::Consistency::Linearizable)
            .await
            .unwrap()
            .is_some();
        assert_eq!(found, present, "{key}");
    }

    // The admin's listing names the token's reach.
    let tokens = admin.token_list().await.unwrap();
    let listed = tokens.iter().find(|t| t.name == "team-a").unwrap();
    assert_eq!(listed.kv_prefixes.as_deref(), Some(&["a/".to_string()][..]));
    // An admin token cannot be limited.
    let refused = admin
        .token_create(&CreateToken {
            namespaces: Some(vec!["a".into()]),
            ..CreateToken::new(Role::Admin, "x")
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
}
