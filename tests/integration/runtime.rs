//! The Docker runtime against the real local Docker Engine: lifecycle of an
//! echo container (ports, resources, labels, env), label filters, "die"
//! events with exit codes, graceful stops, and how refusals and an absent
//! engine are reported. Every test labels its containers
//! `raftvisor.test=<random>` and removes them when it ends, also on panic.
//! Without a Docker Engine these tests skip loudly, unless `CI` is set: then
//! they fail. The images come from `scripts/build-images.sh`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use raftvisor::runtime::docker::DockerRuntime;
use raftvisor::runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, PortBinding, RuntimeError, RuntimeEvent,
};
use raftvisor::state::Protocol;

use crate::harness::eventually;

const ECHO_IMAGE: &str = "raftvisor-echo:local";
const TEST_LABEL: &str = "raftvisor.test";

fn docker_endpoint() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// A connection to the local engine for one test, with a label of its own;
/// every container carrying that label is removed when it is dropped.
struct TestEngine {
    runtime: Arc<DockerRuntime>,
    endpoint: String,
    run: String,
}

impl TestEngine {
    /// The engine, or `None` (after a loud message) when there is none and
    /// `CI` is not set. Panics when the test images are missing.
    async fn get(test: &str) -> Option<TestEngine> {
        let endpoint = docker_endpoint();
        let runtime = DockerRuntime::connect(&endpoint).expect("a valid DOCKER_HOST");
        let mut last = None;
        for _ in 0..3 {
            match runtime.ping().await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(error) = last {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: the Docker Engine at {endpoint} is required when CI is set: {error}"
                );
            }
            // Straight to stderr: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED {test}: no Docker Engine at {endpoint} ({error}); \
                 set CI=1 to make this a failure !!!!!!!!\n"
            );
            return None;
        }
        let present = runtime
            .image_exists(ECHO_IMAGE)
            .await
            .expect("image lookup");
        assert!(
            present,
            "{test}: image {ECHO_IMAGE} is missing: run scripts/build-images.sh"
        );
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Some(TestEngine {
            runtime: Arc::new(runtime),
            endpoint,
            run,
        })
    }

    fn labels(&self) -> BTreeMap<String, String> {
        [(TEST_LABEL.to_string(), self.run.clone())].into()
    }

    fn name(&self, what: &str) -> String {
        format!("rvt-{}-{what}", self.run)
    }

    /// An echo container publishing 8080 on an ephemeral loopback port.
    fn echo_spec(&self, what: &str) -> ContainerSpec {
        let mut labels = self.labels();
        labels.insert("raftvisor.instance".into(), what.into());
        ContainerSpec {
            name: self.name(what),
            image: ECHO_IMAGE.into(),
            env: [("RAFTVISOR_INSTANCE".to_string(), what.to_string())].into(),
            labels,
            ports: vec![PortBinding {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_port: None,
                host_ip: Some("127.0.0.1".into()),
            }],
            ..Default::default()
        }
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        let endpoint = self.endpoint.clone();
        let labels = self.labels();
        // A thread of its own: this may run inside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime");
            rt.block_on(async move {
                let Ok(docker) = DockerRuntime::connect(&endpoint) else {
                    return;
                };
                match docker.list(&labels).await {
                    Ok(containers) => {
                        for container in containers {
                            if let Err(e) = docker.remove(&container.id).await {
                                eprintln!("cleanup: cannot remove {}: {e}", container.name);
                            }
                        }
                    }
                    Err(e) => eprintln!("cleanup: cannot list test containers: {e}"),
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
}

/// Reads events until one matches, or fails after `within`.
async fn wait_event(
    events: &mut BoxStream<'static, Result<RuntimeEvent, RuntimeError>>,
    within: Duration,
    what: &str,
    matches: impl Fn(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Ok(event))) if matches(&event) => return event,
            Ok(Some(Ok(event))) => seen.push(format!("{}:{:?}", event.action, event.exit_code)),
            Ok(Some(Err(e))) => panic!("{what}: event stream error: {e}"),
            Ok(None) => panic!("{what}: the event stream ended; saw {seen:?}"),
            Err(_) => panic!("{what}: no such event within {within:?}; saw {seen:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_engine_is_reported_quickly() {
    let runtime = DockerRuntime::connect("tcp://127.0.0.1:1").unwrap();
    let started = Instant::now();
    let error = runtime.ping().await.unwrap_err();
    assert!(
        matches!(error, RuntimeError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let error = runtime.list(&BTreeMap::new()).await.unwrap_err();
    assert!(error.is_unreachable(), "{error:?}");
    let error = runtime.events(&BTreeMap::new()).await.err().unwrap();
    assert!(error.is_unreachable(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let missing = DockerRuntime::connect("unix:///nonexistent/docker.sock").unwrap();
    assert!(missing.ping().await.unwrap_err().is_unreachable());
    assert!(matches!(
        DockerRuntime::connect("https://127.0.0.1:2376"),
        Err(RuntimeError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_container_lifecycle() {
    let Some(engine) = TestEngine::get("echo_container_lifecycle").await else {
        return;
    };
    let docker = &engine.runtime;
    docker.ping().await.unwrap();

    let mut spec = engine.echo_spec("life");
    spec.cpu_millis = 500;
    spec.memory_mb = 64;
    spec.dns = vec!["127.0.0.53".into()];
    let mut events = docker.events(&engine.labels()).await.unwrap();

    let started = Instant::now();
    let id = docker.create(&spec).await.unwrap();
    let created_in = started.elapsed();
    let created = docker.inspect(&id).await.unwrap().expect("created");
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(created.name, spec.name);
    assert_eq!(created.image, ECHO_IMAGE);
    assert_eq!(created.exit_code, None);
    assert_eq!(created.pid, 0);
    docker.start(&id).await.unwrap();
    let started_in = started.elapsed();

    let info = docker.inspect(&id).await.unwrap().expect("running");
    assert_eq!(info.id, id);
    assert_eq!(info.state, ContainerState::Running);
    assert!(info.pid > 0, "{info:?}");
    assert!(info.ip_address.is_some(), "{info:?}");
    assert!(
        !info.started_at.is_empty() && info.finished_at.is_empty(),
        "{info:?}"
    );
    for (key, value) in &spec.labels {
        assert_eq!(info.labels.get(key), Some(value), "{info:?}");
    }
    let host_port = match info.ports.as_slice() {
        [(8080, Protocol::Tcp, host)] => *host,
        other => panic!("one published port expected: {other:?}"),
    };
    assert!(host_port > 0);

    let client = http();
    let base = format!("http://127.0.0.1:{host_port}");
    answers_health(&client, &base, "the echo container answers /health").await;
    let healthy_in = started.elapsed();
    eprintln!(
        "echo container: created in {created_in:?}, started at {started_in:?}, \
         healthy at {healthy_in:?}"
    );
    let echoed: serde_json::Value = client
        .get(format!("{base}/some/path"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["instance"], "life");
    assert_eq!(echoed["path"], "/some/path");

    // Resources reached the engine.
    let listed = docker.list(&engine.labels()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0], docker.inspect(&id).await.unwrap().unwrap());
    let mut narrower = engine.labels();
    narrower.insert("raftvisor.instance".into(), "other".into());
    assert!(docker.list(&narrower).await.unwrap().is_empty());

    wait_event(&mut events, Duration::from_secs(5), "start event", |e| {
        e.container_id == id && e.action == "start"
    })
    .await;

    // A crash: the process exits with code 3.
    let response = client
        .post(format!("{base}/exit?code=3"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let die = wait_event(&mut events, Duration::from_secs(10), "die event", |e| {
        e.container_id == id && e.action == "die"
    })
    .await;
    assert_eq!(die.exit_code, Some(3));
    assert_eq!(die.labels.get(TEST_LABEL), Some(&engine.run));
    assert_eq!(
        die.labels.get("raftvisor.instance").map(String::as_str),
        Some("life")
    );
    let exited = docker.inspect(&id).await.unwrap().unwrap();
    assert_eq!(exited.state, ContainerState::Exited);
    assert_eq!(exited.exit_code, Some(3));
    assert!(!exited.oom_killed);
    assert_eq!(exited.pid, 0);
    assert!(!exited.finished_at.is_empty());

    // Started again, then stopped: SIGTERM is handled well within the grace.
    docker.start(&id).await.unwrap();
    wait_event(&mut events, Duration::from_secs(5), "second start", |e| {
        e.container_id == id && e.action == "start"
    })
    .await;
    // PID 1 ignores SIGTERM until the server installs its handler: stop
    // only once it answers again (on the port published for this start).
    let restarted = docker.inspect(&id).await.unwrap().expect("running again");
    let base = match restarted.ports.as_slice() {
        [(8080, Protocol::Tcp, host)] => format!("http://127.0.0.1:{host}"),
        other => panic!("one published port expected: {other:?}"),
    };
    answers_health(
        &client,
        &base,
        "the restarted echo container answers /health",
    )
    .await;
    let stopping = Instant::now();
    docker.stop(&id, Duration::from_secs(5)).await.unwrap();
    let stopped_in = stopping.elapsed();
    assert!(stopped_in < Duration::from_secs(4), "{stopped_in:?}");
    let die = wait_event(&mut events, Duration::from_secs(5), "die on stop", |e| {
        e.container_id == id && e.action == "die"
    })
    .await;
    assert_eq!(die.exit_code, Some(0));
    let stopped = docker.inspect(&id).await.unwrap().unwrap();
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (ContainerState::Exited, Some(0))
    );
    // Stopping a stopped container is fine.
    docker.stop(&id, Duration::from_secs(1)).await.unwrap();

    docker.remove(&id).await.unwrap();
    wait_event(&mut events, Duration::from_secs(5), "destroy", |e| {
        e.container_id == id && e.action == "destroy"
    })
    .await;
    assert_eq!(docker.inspect(&id).await.unwrap(), None);
    docker.remove(&id).await.unwrap();
    assert_eq!(
        docker.start(&id).await,
        Err(RuntimeError::NotFound(id.clone()))
    );
    assert_eq!(
        docker.stop(&id, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound(id.clone()))
    );
    assert!(docker.list(&engine.labels()).await.unwrap().is_empty());
    eprintln!("echo container: stopped in {stopped_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_kills_and_removal_report_die() {
    let Some(engine) = TestEngine::get("crashes_kills_and_removal_report_die").await else {
        return;
    };
    let docker = &engine.runtime;
    let mut events = docker.events(&engine.labels()).await.unwrap();

    // A crash-looping image: exits with 1 (or $ECHO_EXIT_CODE) on its own.
    let mut crashing = engine.echo_spec("crash");
    crashing.ports.clear();
    crashing
        .env
        .insert("ECHO_CRASH_AFTER_MS".into(), "300".into());
    crashing.env.insert("ECHO_EXIT_CODE".into(), "42".into());
    let crash_id = docker.create(&crashing).await.unwrap();
    docker.start(&crash_id).await.unwrap();
    let die = wait_event(&mut events, Duration::from_secs(10), "crash", |e| {
        e.container_id == crash_id && e.action == "die"
    })
    .await;
    assert_eq!(die.exit_code, Some(42));

    // Removing a running container kills it: "die" with 137 (SIGKILL).
    let mut running = engine.echo_spec("removed");
    running.ports.clear();
    let removed_id = docker.create(&running).await.unwrap();
    docker.start(&removed_id).await.unwrap();
    wait_event(&mut events, Duration::from_secs(5), "start", |e| {
        e.container_id == removed_id && e.action == "start"
    })
    .await;
    docker.remove(&removed_id).await.unwrap();
    let die = wait_event(&mut events, Duration::from_secs(5), "die on remove", |e| {
        e.container_id == removed_id && e.action == "die"
    })
    .await;
    assert_eq!(die.exit_code, Some(137));
    wait_event(&mut events, Duration::from_secs(5), "destroy", |e| {
        e.container_id == removed_id && e.action == "destroy"
    })
    .await;

    // The engine's own restart policy, when asked for.
    let mut restarting = engine.echo_spec("restarting");
    restarting.ports.clear();
    restarting.restart_unless_stopped = true;
    restarting
        .env
        .insert("ECHO_CRASH_AFTER_MS".into(), "200".into());
    let restart_id = docker.create(&restarting).await.unwrap();
    docker.start(&restart_id).await.unwrap();
    for round in 0..2 {
        wait_event(&mut events, Duration::from_secs(10), "die", |e| {
            e.container_id == restart_id && e.action == "die"
        })
        .await;
        let again = wait_event(&mut events, Duration::from_secs(10), "restart", |e| {
            e.container_id == restart_id && e.action == "start"
        })
        .await;
        assert_eq!(again.exit_code, None, "round {round}");
    }
    docker
        .stop(&restart_id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed() {
    let Some(engine) = TestEngine::get("refusals_are_typed").await else {
        return;
    };
    let docker = &engine.runtime;

    let spec = engine.echo_spec("taken");
    let id = docker.create(&spec).await.unwrap();
    assert_eq!(
        docker.create(&spec).await,
        Err(RuntimeError::Conflict(spec.name.clone()))
    );

    let mut missing = engine.echo_spec("missing-image");
    missing.image = format!("raftvisor-absent-{}:none", engine.run);
    assert!(!docker.image_exists(&missing.image).await.unwrap());
    assert_eq!(
        docker.create(&missing).await,
        Err(RuntimeError::ImageNotFound(missing.image.clone()))
    );
    assert!(docker.image_exists(ECHO_IMAGE).await.unwrap());

    let mut tiny = engine.echo_spec("tiny");
    tiny.memory_mb = 1;
    match docker.create(&tiny).await {
        Err(RuntimeError::Invalid(message)) => {
            assert!(message.to_lowercase().contains("memory"), "{message}")
        }
        other => panic!("a 1 MB memory limit must be refused: {other:?}"),
    }
    let mut greedy = engine.echo_spec("greedy");
    greedy.cpu_millis = 4_000_000;
    assert!(
        matches!(docker.create(&greedy).await, Err(RuntimeError::Invalid(_))),
        "4000 CPUs must be refused"
    );
    let mut unknown_net = engine.echo_spec("net");
    unknown_net.network = Some(format!("raftvisor-absent-{}", engine.run));
    let refused = match docker.create(&unknown_net).await {
        // Older engines accept the create and refuse the start.
        Ok(id) => docker.start(&id).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(refused, RuntimeError::Invalid(_)), "{refused:?}");

    // A host port taken by a running container: the second start is refused.
    docker.start(&id).await.unwrap();
    let host_port = docker.inspect(&id).await.unwrap().unwrap().ports[0].2;
    let mut clash = engine.echo_spec("clash");
    clash.ports[0].host_port = Some(host_port);
    let clash_id = docker.create(&clash).await.unwrap();
    let refused = docker.start(&clash_id).await.unwrap_err();
    assert!(matches!(refused, RuntimeError::Invalid(_)), "{refused:?}");

    assert_eq!(docker.inspect("rvt-no-such-container").await, Ok(None));
    docker.remove("rvt-no-such-container").await.unwrap();
}

/// Waits until the echo server at `base` answers `/health` with `ok`.
async fn answers_health(client: &reqwest::Client, base: &str, what: &str) {
    eventually(what, Duration::from_secs(10), || {
        let client = client.clone();
        let url = format!("{base}/health");
        async move {
            let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            if status.is_success() && body.trim() == "ok" {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        }
    })
    .await;
}
