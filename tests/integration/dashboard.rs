//! The web dashboard (`/ui`) in a real browser against a live cluster
//! supervising real containers: headless Chromium, driven by Selenium
//! (`tests/ui/dashboard.py`), signs in (a wrong token refused, then the
//! admin token), shows every view, puts a KV key and scales `demo/echo`
//! through the page until the new instance runs, and a read-only token's
//! scale is refused by the server (403) while the replica count stays.
//! Screenshots of every view land in `target/ui-screenshots/` (and in
//! `docs/dashboard/` with `RAFTVISOR_UI_SCREENSHOTS_TO_DOCS=1`).
//!
//! Needs Debian's chromium, chromium-driver and python3-selenium: missing,
//! the test fails when `CI` is set and is skipped (loudly) otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use raftvisor::state::Role;
use raftvisor::wire::CreateToken;
use serde_json::json;

use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::{eventually, ADMIN_TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the whole browser session may take.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(240);

/// A Python that can import selenium (Debian's python3-selenium lives in
/// the system interpreter, which a `python3` earlier on PATH may not be).
fn python_with_selenium() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import selenium"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The Python to run the browser test with, or `None` (skipped loudly)
/// when the browser tools are missing outside CI.
fn browser_tools() -> Option<&'static str> {
    let mut missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    let python = python_with_selenium();
    if python.is_none() {
        missing.push("python3 with selenium");
    }
    if missing.is_empty() {
        return python;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the dashboard test's browser tools are missing ({}): \
         apt-get install chromium chromium-driver python3-selenium",
        missing.join(", ")
    );
    eprintln!(
        "SKIPPED: the dashboard test needs {} (apt-get install chromium chromium-driver \
         python3-selenium; set CI=1 to make this a failure)",
        missing.join(", ")
    );
    None
}

/// An empty `target/ui-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

/// Copies the screenshots to `docs/dashboard/` (the README's pictures).
fn copy_to_docs(dir: &Path) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard");
    std::fs::create_dir_all(&docs).expect("create docs/dashboard");
    for entry in std::fs::read_dir(dir).expect("read the screenshots") {
        let path = entry.expect("a screenshot").path();
        let name = path.file_name().expect("a file name").to_string_lossy();
        if name.ends_with(".png") && name != "failure.png" {
            std::fs::copy(&path, docs.join(&*name)).expect("copy a screenshot");
        }
    }
    eprintln!("dashboard screenshots copied to {}", docs.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_every_view_scales_a_service_and_a_read_token_is_refused() {
    let Some(python) = browser_tools() else {
        return;
    };
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("demo", "echo", &echo_spec(2, json!({})), None)
        .await
        .expect("deploy demo/echo");
    env.wait_running("echo", 2, Duration::from_secs(60)).await;
    eventually(
        "the report shows 2 running instances",
        Duration::from_secs(60),
        || async {
            let report = client
                .service_report("demo", "echo")
                .await
                .map_err(|e| e.to_string())?;
            if report.running == 2 {
                Ok(())
            } else {
                Err(format!("{} running", report.running))
            }
        },
    )
    .await;
    // POST /v1/tokens: a token that may read everything and change nothing.
    let reader = client
        .token_create(&CreateToken::new(Role::Read, "ui-reader"))
        .await
        .expect("create a read token");
    assert_eq!(reader.info.role, Role::Read);

    // The browser talks to a follower: its reads are its own, its writes
    // are forwarded to the leader.
    let leader = env.cluster.wait_for_leader().await;
    let replica = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let url = env.cluster.api_url(replica);
    let screenshots = screenshot_dir();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/dashboard.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--url", &url])
        .args(["--admin-token", ADMIN_TOKEN])
        .args(["--read-token", &reader.token])
        .arg("--screenshots")
        .arg(&screenshots)
        .args(["--service", "demo/echo", "--node", "local"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so chromedriver and Chromium go with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("run tests/ui/dashboard.py");
    let group = child.id().expect("the script runs") as i32;
    let output = match tokio::time::timeout(SCRIPT_DEADLINE, child.wait_with_output()).await {
        Ok(output) => output.expect("the dashboard script's output"),
        Err(_) => {
            unsafe { libc::kill(-group, libc::SIGKILL) };
            panic!(
                "tests/ui/dashboard.py did not finish within {SCRIPT_DEADLINE:?} (killed); \
                 screenshots so far in {}",
                screenshots.display()
            )
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all dashboard checks passed"),
        "the dashboard test failed ({}):\n{stdout}\n{stderr}\nscreenshots in {}",
        output.status,
        screenshots.display()
    );

    // What the page did is what the cluster holds, and the audit trail
    // names the admin token (the bootstrap token) as who scaled.
    let service = client
        .service_get("demo", "echo")
        .await
        .expect("read demo/echo");
    assert_eq!(service.spec.replicas, 3, "scaled once, by the admin");
    env.wait_running("echo", 3, Duration::from_secs(60)).await;
    let events = client.events(0).await.expect("read the events");
    let scaled: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "service.scaled" && e.subject == "demo/echo")
        .collect();
    assert_eq!(
        scaled.len(),
        1,
        "one scale, the read token's refused: {scaled:?}"
    );
    assert_eq!(
        scaled[0].actor.as_ref().map(|a| a.token_name.as_str()),
        Some("bootstrap"),
        "{scaled:?}"
    );
    let pair = client
        .kv_get("ui-test/hello", Default::default())
        .await
        .expect("read ui-test/hello")
        .expect("the key the page put exists");
    assert_eq!(pair.value, b"world");
    for name in [
        "cluster.png",
        "services.png",
        "service.png",
        "nodes.png",
        "kv.png",
        "scaled.png",
        "events.png",
        "refused.png",
    ] {
        let path = screenshots.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} is missing or empty", path.display());
    }
    if std::env::var_os("RAFTVISOR_UI_SCREENSHOTS_TO_DOCS").is_some_and(|v| v == "1") {
        copy_to_docs(&screenshots);
    }
}
