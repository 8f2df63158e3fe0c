//! Images reaching nodes through raftvisor: pulls from a real registry
//! (Debian's docker-registry with TLS and htpasswd, `registry_env`) with
//! the cluster's sealed login, the tag resolved to one digest per version,
//! failures shown on the instance with the registry's reason and retried
//! with backoff, and a registry that comes back.

use std::time::Duration;

use raftvisor::state::InstanceState;
use serde_json::json;

use crate::docker_env::{echo_spec, DockerCluster, ECHO_IMAGE, LOCAL_ENGINE};
use crate::harness::{binary, eventually, ADMIN_TOKEN};
use crate::registry_env::{Registry, PASSWORD, USERNAME};

/// `raftvisor registry login` through the CLI, the password on stdin.
fn login(env: &DockerCluster, host: &str, password: &str) -> (i32, String) {
    use std::io::Write;
    let mut args = vec![
        "--addr".to_string(),
        env.cluster.replicas[0].api_addr.clone(),
    ];
    args.extend(env.cluster.certs.cli_args());
    args.extend(
        [
            "registry",
            "login",
            host,
            "--username",
            USERNAME,
            "--password-stdin",
        ]
        .map(String::from),
    );
    let mut child = std::process::Command::new(binary())
        .args(&args)
        .env("RAFTVISOR_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the CLI");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The reason an instance of `namespace/name` shows for its failed pull.
async fn pull_failure(client: &raftvisor::client::Client, namespace: &str, name: &str) -> String {
    eventually(
        "the pull fails on the instance",
        Duration::from_secs(30),
        || async {
            let report = client
                .service_report(namespace, name)
                .await
                .map_err(|e| e.to_string())?;
            report
                .instances
                .iter()
                .find(|i| i.state == InstanceState::PullFailed)
                .and_then(|i| i.last_exit.clone())
                .map(|exit| exit.reason)
                .ok_or_else(|| format!("no pull_failed instance yet: {:?}", report.instances))
        },
    )
    .await
}

/// The images the running containers of `service` were created from.
async fn images_of(env: &DockerCluster, service: &str) -> Vec<String> {
    env.running(service)
        .await
        .into_iter()
        .map(|c| c.image)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_image_runs_with_the_login_only_and_each_version_runs_one_digest() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(env) = DockerCluster::start(1).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let image = registry.push(ECHO_IMAGE, "images-a/echo:1");

    // No login yet: the instance shows the registry's refusal.
    client
        .service_put("img-a", "reg", &echo_spec(2, json!({"image": image})), None)
        .await
        .unwrap();
    let reason = pull_failure(&client, "img-a", "reg").await;
    // The registry's (through the engine's) own words.
    assert!(
        [
            "no basic auth credentials",
            "authentication required",
            "unauthorized"
        ]
        .iter()
        .any(|words| reason.contains(words)),
        "{reason}"
    );
    let events = client.events(0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "image.pull_failed" && e.subject == image),
        "{events:?}"
    );
    // Backoff: a refused pull is not repeated in a loop. (An observation
    // window, not a wait for a condition.)
    let before = registry.manifest_requests();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tries = registry.manifest_requests() - before;
    assert!(tries <= 6, "{tries} pulls in 6 s: no backoff");

    // A wrong password changes nothing; the right one makes it run.
    assert_eq!(login(&env, &registry.host(), "wrong-password").0, 0);
    let listed = client.registry_list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].username, USERNAME);
    let shown = serde_json::to_string(&client.get_json("/v1/registries").await.unwrap()).unwrap();
    assert!(
        !shown.contains("wrong-password") && !shown.contains("sealed"),
        "{shown}"
    );
    let (code, stderr) = login(&env, &registry.host(), PASSWORD);
    assert_eq!(code, 0, "{stderr}");
    env.wait_running("reg", 2, Duration::from_secs(60)).await;
    let first = images_of(&env, "reg").await;
    let digest = first[0].clone();
    assert!(
        digest.starts_with(&format!("{}/images-a/echo@sha256:", registry.host())),
        "{digest}"
    );
    assert!(first.iter().all(|i| *i == digest), "{first:?}");
    let report = client.service_report("img-a", "reg").await.unwrap();
    assert_eq!(report.image.as_deref(), Some(digest.as_str()));
    let listed = client.image_list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|i| i.name == digest && i.source == "registry" && i.nodes == ["n1"]),
        "{listed:?}"
    );
    for log in env.cluster.replicas.iter().map(|r| r.log()) {
        assert!(
            !log.contains(PASSWORD),
            "a replica logged the registry password"
        );
    }

    // The tag moves: instances of the running version keep its digest,
    // also a new one started by scaling.
    let variant = registry.variant(ECHO_IMAGE, "images-a-2");
    registry.push(&variant, "images-a/echo:1");
    client.service_scale("img-a", "reg", 3).await.unwrap();
    env.wait_running("reg", 3, Duration::from_secs(60)).await;
    let scaled = images_of(&env, "reg").await;
    assert!(scaled.iter().all(|i| *i == digest), "{scaled:?}");

    // A new deploy of the same spec is a new version: it resolves the tag
    // again and rolls to the new digest.
    client
        .service_put("img-a", "reg", &echo_spec(3, json!({"image": image})), None)
        .await
        .unwrap();
    let rolled = eventually(
        "the new digest rolls out",
        Duration::from_secs(90),
        || async {
            let images = images_of(&env, "reg").await;
            if images.len() == 3 && images.iter().all(|i| *i != digest) {
                Ok(images)
            } else {
                Err(format!("{images:?}"))
            }
        },
    )
    .await;
    assert!(rolled.iter().all(|i| *i == rolled[0]), "{rolled:?}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &variant])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_is_down_shows_on_the_instance_and_its_return_is_picked_up() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let Some(env) = DockerCluster::start(1).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    assert_eq!(login(&env, &registry.host(), PASSWORD).0, 0);
    let image = registry.push(ECHO_IMAGE, "images-b/echo:1");
    registry.stop();
    client
        .service_put(
            "img-b",
            "down",
            &echo_spec(1, json!({"image": image})),
            None,
        )
        .await
        .unwrap();
    let reason = pull_failure(&client, "img-b", "down").await;
    assert!(reason.contains("connection refused"), "{reason}");
    registry.resume();
    env.wait_running("down", 1, Duration::from_secs(90)).await;

    // `pull = "never"`: an image the engine lacks is an error on the
    // instance, and the registry is never asked.
    let asked = registry.manifest_requests();
    let never = registry.host() + "/images-b/absent:1";
    client
        .service_put(
            "img-b",
            "never",
            &echo_spec(1, json!({"image": never, "pull": "never"})),
            None,
        )
        .await
        .unwrap();
    let reason = eventually("pull = never fails", Duration::from_secs(30), || async {
        let report = client
            .service_report("img-b", "never")
            .await
            .map_err(|e| e.to_string())?;
        report
            .instances
            .iter()
            .find_map(|i| i.last_exit.clone())
            .map(|exit| exit.reason)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert!(reason.contains("\"never\""), "{reason}");
    assert_eq!(registry.manifest_requests(), asked);
}

/// Runs `docker` on the local engine; panics with its stderr on failure.
fn docker(args: &[&str], stdin: Option<&str>) -> String {
    crate::registry_env::run_docker(args, stdin, None)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_image_runs_where_it_never_was_and_outlives_its_first_node_and_manager() {
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    // An image no engine has: a variant of the echo image, saved to an
    // archive and removed from the engine.
    let tag = format!("raftvisor-test-import:{}", &env.cluster_id[..8]);
    docker(
        &["build", "-q", "-t", &tag, "-"],
        Some(&format!(
            "FROM {ECHO_IMAGE}\nLABEL raftvisor.test.import={}\n",
            env.cluster_id
        )),
    );
    let archive = env.cluster.dir.path().join("image.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &tag], None);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tag], None);
    docker(&["rmi", &tag], None);

    let (code, stdout, stderr) = env
        .cluster
        .cli(1, &["image", "import", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&tag), "{stdout}");
    let client = env.cluster.client();
    let kept = client.image_list().await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].digest, id);
    assert_eq!(kept[0].source, "import");
    assert_eq!(kept[0].managers.len(), 2, "two managers keep it: {kept:?}");
    // Bad input is refused with a reason and keeps nothing.
    let not_an_image = env.cluster.dir.path().join("not-an-image.tar");
    std::fs::write(&not_an_image, b"hello").unwrap();
    let (code, _, stderr) = env
        .cluster
        .cli(1, &["image", "import", not_an_image.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("not an image archive") || stderr.contains("reading the archive"),
        "{stderr}"
    );
    assert_eq!(client.image_list().await.unwrap().len(), 1);

    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let spec = echo_spec(1, json!({"image": tag}));
    client
        .service_put("img-c", "kept", &spec, None)
        .await
        .unwrap();
    let running = env.wait_running("kept", 1, Duration::from_secs(60)).await;
    assert_eq!(running[0].image, id, "created from the kept image's id");
    let listed = eventually(
        "n1 is listed as holding the image",
        Duration::from_secs(10),
        || async {
            let images = client.image_list().await.map_err(|e| e.to_string())?;
            if images[0].nodes.contains(&"n1".to_string()) {
                Ok(images)
            } else {
                Err(format!("{images:?}"))
            }
        },
    )
    .await;
    let first_keeper = listed[0].managers[0];

    // A kept image a service uses is not forgotten.
    let (code, _, stderr) = env.cluster.cli(1, &["image", "rm", &tag]);
    assert_ne!(code, 0);
    assert!(stderr.contains("img-c/kept"), "{stderr}");

    // The node that first held it goes, and with it the image; one of the
    // managers that kept the archive dies too.
    client.service_delete("img-c", "kept", None).await.unwrap();
    client.node_remove("n1", true).await.unwrap();
    eventually(
        "the service's containers are gone",
        Duration::from_secs(30),
        || async {
            let left = env.containers(Some("kept")).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left", left.len()))
            }
        },
    )
    .await;
    docker(&["rmi", &tag], None);
    env.cluster.kill(first_keeper);
    env.cluster.wait_for_leader().await;

    // A new node, on an engine without the image, runs it: from the
    // archive the other manager kept.
    let proxy = crate::docker_env::EngineProxy::start().await;
    let client = env.cluster.client();
    eventually(
        "a new node is registered",
        Duration::from_secs(20),
        || async {
            let spec = raftvisor::state::NodeSpec::static_engine(proxy.endpoint());
            client
                .node_put("n2", &spec)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    client
        .service_put("img-c", "again", &spec, None)
        .await
        .unwrap();
    let running = env.wait_running("again", 1, Duration::from_secs(90)).await;
    assert_eq!(running[0].image, id);

    // The dead keeper is removed from the cluster for good: the archive is
    // kept on two managers again, both members.
    client.remove_member(first_keeper).await.unwrap();
    eventually(
        "two members keep the archive again",
        Duration::from_secs(90),
        || async {
            let images = client.image_list().await.map_err(|e| e.to_string())?;
            let managers = &images[0].managers;
            if managers.len() == 2 && !managers.contains(&first_keeper) {
                Ok(())
            } else {
                Err(format!("{images:?}"))
            }
        },
    )
    .await;
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_built_from_a_context_directory_runs_and_its_log_reaches_the_cli() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let context = env.cluster.dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    let marker = format!("built-for-{}", env.cluster_id);
    std::fs::write(context.join("marker.txt"), &marker).unwrap();
    // A context of some size: a follower's early 421 (it does not read the
    // context) must not cut the upload with a broken pipe.
    let filler: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(context.join("filler.bin"), filler).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {ECHO_IMAGE}\nCOPY marker.txt /marker.txt\nLABEL raftvisor.test.build={marker}\n"
        ),
    )
    .unwrap();
    let tag = format!("raftvisor-test-build:{}", &env.cluster_id[..8]);
    // Asked of every replica in turn: a follower sends the CLI to the leader.
    for id in [1, 2, 3] {
        let (code, stdout, stderr) = env.cluster.cli(
            id,
            &["image", "build", context.to_str().unwrap(), "--tag", &tag],
        );
        assert_eq!(code, 0, "replica {id}: {stderr}");
        assert!(
            stderr.contains("COPY marker.txt"),
            "the build log reached the CLI: {stderr}"
        );
        assert!(stdout.contains(&tag), "{stdout}");
    }
    // The CLI sent every context to the leader: no follower had to turn
    // one away (its 421 comes before it reads the context, and a context
    // still being written then breaks the pipe).
    for id in [1, 2, 3] {
        let metrics = env
            .cluster
            .http()
            .get(format!("{}/metrics", env.cluster.api_url(id)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let misdirected = metrics.lines().find(|line| {
            line.starts_with("raftvisor_api_requests_total")
                && line.contains("route=\"/v1/images/build\"")
                && line.contains("code=\"421\"")
        });
        assert_eq!(misdirected, None, "replica {id} turned a build away");
    }
    let client = env.cluster.client();
    let kept = client.image_list().await.unwrap();
    let built = kept
        .iter()
        .find(|i| i.name == tag)
        .expect("the built image is kept");
    assert_eq!(built.managers.len(), 2, "{built:?}");
    assert_eq!(built.source, "build");
    assert!(built.nodes.contains(&"n1".to_string()), "{built:?}");
    client
        .service_put("img-d", "built", &echo_spec(1, json!({"image": tag})), None)
        .await
        .unwrap();
    let running = env.wait_running("built", 1, Duration::from_secs(60)).await;
    assert_eq!(running[0].image, built.digest);

    // A context without a Dockerfile is refused before anything is sent;
    // a failing build says why and keeps nothing.
    let empty = env.cluster.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = env.cluster.cli(
        1,
        &["image", "build", empty.to_str().unwrap(), "--tag", "x:1"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("no Dockerfile"), "{stderr}");
    std::fs::write(
        empty.join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /\n",
    )
    .unwrap();
    let (code, _, stderr) = env.cluster.cli(
        1,
        &[
            "image",
            "build",
            empty.to_str().unwrap(),
            "--tag",
            "raftvisor-test-broken:1",
        ],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.txt"), "{stderr}");
    assert!(client
        .image_list()
        .await
        .unwrap()
        .iter()
        .all(|i| i.name != "raftvisor-test-broken:1"));
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}
