//! The API's OpenAPI description against the API itself: schemathesis (a
//! fuzzer nobody here wrote) reads `/v1/openapi.json` from a live
//! three-replica cluster and sends every described operation valid and
//! invalid requests with an operator token; no answer may be a 5xx or
//! break the described schema.

use std::process::{Command, Stdio};
use std::time::Duration;

use raftvisor::state::Role;
use raftvisor::wire::CreateToken;

use crate::harness::Cluster;

/// How long the whole fuzzing run may take.
const DEADLINE: Duration = Duration::from_secs(600);

fn schemathesis_available() -> bool {
    Command::new("python3")
        .args(["-c", "import schemathesis"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_is_served_and_the_api_keeps_to_it_under_fuzzing() {
    if !schemathesis_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 cannot import schemathesis (python3 -m pip install schemathesis; scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: python3 cannot import schemathesis");
        return;
    }
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader().await;
    // Served without a token, and it is OpenAPI 3.1.
    let base = cluster.api_url(2);
    let http = cluster.certs.http_builder().build().unwrap();
    let document: serde_json::Value = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));

    // An operator token: everything a client of services, KV and sessions
    // does, while membership, nodes and tokens (admin) stay out of reach
    // of random input, so the cluster fuzzed stays the cluster.
    let operator = cluster
        .client()
        .token_create(&CreateToken::new(Role::Operator, "fuzzer"))
        .await
        .unwrap();
    // The service the description's examples name, so the service routes
    // are fuzzed on something that exists (no nodes: nothing runs).
    cluster
        .client()
        .service_put(
            "demo",
            "echo",
            &serde_json::from_value(
                serde_json::json!({"image": "raftvisor-echo:local", "replicas": 0}),
            )
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let report =
        std::env::temp_dir().join(format!("raftvisor-schemathesis-{}", std::process::id()));
    let config = format!(
        "{}/tests/openapi/schemathesis.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let args = vec![
        "-m".to_string(),
        "schemathesis.cli".into(),
        "--config-file".into(),
        config,
        "run".into(),
        format!("{base}/v1/openapi.json"),
        "--url".into(),
        base.clone(),
        "--tls-verify".into(),
        cluster.certs.ca.display().to_string(),
        "--header".into(),
        format!("Authorization: Bearer {}", operator.token),
        "--checks".into(),
        "not_a_server_error,response_schema_conformance".into(),
        "--phases".into(),
        "examples,coverage,fuzzing".into(),
        "--max-examples".into(),
        "25".into(),
        "--workers".into(),
        "2".into(),
        "--request-timeout".into(),
        "30".into(),
        "--seed".into(),
        "20261203".into(),
        "--no-color".into(),
        // Nothing of the run is kept in the source tree.
        "--generation-database".into(),
        "none".into(),
        "--report".into(),
        "junit".into(),
        "--report-dir".into(),
        report.display().to_string(),
    ];
    let mut child = tokio::process::Command::new("python3")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .spawn()
        .expect("run schemathesis");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
            text
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {DEADLINE:?}"))
        .unwrap();
    let (out, err) = (out.await.unwrap(), err.await.unwrap());
    assert!(
        status.success(),
        "schemathesis found answers that are 5xx or break the description:\n{out}\n{err}"
    );
    // The run covered the API, not an empty description.
    assert!(out.contains("passed"), "{out}");
}
