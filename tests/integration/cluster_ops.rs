//! Operating the control plane: a backup restored as a new cluster on
//! other ports brings back services, KV and tokens and adopts the
//! containers still running; after a majority of managers is lost for
//! good, `cluster recover` restarts the cluster from its most up-to-date
//! survivor with every acknowledged write it held, and the other survivor
//! is refused until added again.

use std::time::Duration;

use raftvisor::client::Consistency;
use serde_json::{json, Value};

use crate::docker_env::{crash, echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::{eventually, run_cli, Cluster, TimedWriter, Tuning, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restored_as_a_new_cluster_has_the_same_state_and_adopts_running_containers() {
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = echo_spec(2, json!({"env": {"ROLE": "restored"}}));
    client.service_put("bk", "web", &spec, None).await.unwrap();
    let before = env.wait_running("web", 2, Duration::from_secs(60)).await;
    for i in 0..20 {
        let value = format!("v{i}");
        assert!(client
            .kv_put(&format!("bk/{i}"), value.as_bytes(), 0, None)
            .await
            .unwrap());
    }
    let kv_before = client
        .kv_list("bk/", Consistency::Linearizable)
        .await
        .unwrap();
    let services_before = client.service_list().await.unwrap();

    // The backup is taken from a follower.
    let leader = env.cluster.wait_for_leader().await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let file = env.cluster.dir.path().join("cluster.backup");
    let file_arg = file.display().to_string();
    let (code, out, err) = env.cluster.cli(
        follower,
        &["--output", "json", "cluster", "backup", &file_arg],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let written: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(written["cluster_id"], json!(env.cluster_id), "{written}");
    assert_eq!(written["taken_by"], json!(follower), "{written}");
    let backup_index = written["index"].as_u64().unwrap();
    assert!(
        kv_before.iter().all(|p| p.modify_index <= backup_index),
        "the backup holds every acknowledged write"
    );
    // A read-only token may not take one (it holds every token record).
    let (code, _, err) = run_cli(
        &[
            "--addr".to_string(),
            env.cluster.replica(follower).api_addr.clone(),
        ]
        .into_iter()
        .chain(env.cluster.certs.cli_args())
        .chain(["cluster", "backup", "/dev/null"].map(String::from))
        .collect::<Vec<_>>(),
        "not-a-token",
    );
    assert_ne!(code, 0);
    assert!(err.contains("401") || err.contains("403"), "{err}");

    // The old cluster is gone; its containers run on.
    let secrets_key = env.cluster.dir.path().join("secrets.key");
    let kept_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&secrets_key, kept_key.path()).unwrap();
    for id in [1, 2, 3] {
        env.cluster.kill(id);
    }

    // A damaged backup is refused with one line, and seeds nothing.
    let damaged = env.cluster.dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let spare = env.cluster.dir.path().join("spare.toml");
    std::fs::write(
        &spare,
        format!(
            "id = 9\ndata_dir = {:?}\napi_addr = \"127.0.0.1:1\"\npeer_addr = \"127.0.0.1:2\"\ndns_addr = \"127.0.0.1:3\"\n[tls]\ninsecure = true\n",
            env.cluster.dir.path().join("spare")
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &[
            "cluster".to_string(),
            "restore".into(),
            damaged.display().to_string(),
            "--config".into(),
            spare.display().to_string(),
        ],
        ADMIN_TOKEN,
    );
    assert_ne!(code, 0);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!env.cluster.dir.path().join("spare/snapshots").exists());

    // Restored as a new cluster on other ports, every member seeded from
    // the same file.
    let restored = Cluster::start_seeded(3, Tuning::default(), Some(kept_key.path()), |replica| {
        let (code, out, err) = run_cli(
            &[
                "--output".to_string(),
                "json".into(),
                "cluster".into(),
                "restore".into(),
                file_arg.clone(),
                "--config".into(),
                replica.config_path.display().to_string(),
            ],
            ADMIN_TOKEN,
        );
        assert_eq!(code, 0, "{out}\n{err}");
    })
    .await;
    let old = std::mem::replace(&mut env.cluster, restored);
    drop(old);
    let client = env.cluster.client();
    let new_id = eventually(
        "the restored cluster has a new id",
        Duration::from_secs(20),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            match status.cluster_id {
                Some(id) => Ok(id),
                None => Err("no id yet".to_string()),
            }
        },
    )
    .await;
    assert_ne!(new_id, env.cluster_id);
    assert_eq!(client.service_list().await.unwrap(), services_before);
    assert_eq!(
        client
            .kv_list("bk/", Consistency::Linearizable)
            .await
            .unwrap(),
        kv_before
    );
    // The containers still running are adopted, not started again.
    eventually(
        "the restored cluster reports both instances running",
        Duration::from_secs(60),
        || async {
            let report = client
                .service_report("bk", "web")
                .await
                .map_err(|e| e.to_string())?;
            if report.running == 2 && report.desired == 2 {
                Ok(())
            } else {
                Err(format!("{report:?}"))
            }
        },
    )
    .await;
    let after = env.wait_running("web", 2, Duration::from_secs(10)).await;
    let ids = |list: &[raftvisor::runtime::ContainerInfo]| {
        let mut ids: Vec<String> = list.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before), "the same containers run");
    // ... and supervised by the restored cluster.
    crash(&after[0]);
    env.wait_restarted(&after[0], "the crashed container").await;
    // Writes go on above the backup's index.
    assert!(client.kv_put("bk/new", b"1", 0, None).await.unwrap());
    let new = client
        .kv_get("bk/new", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert!(new.modify_index > backup_index, "{new:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_majority_is_lost_recover_restarts_the_cluster_from_the_most_up_to_date_survivor() {
    let mut cluster = Cluster::start(5).await;
    let client = cluster.client();
    for i in 0..40 {
        assert!(client
            .kv_put(&format!("rc/{i}"), b"acknowledged", 0, None)
            .await
            .unwrap());
    }
    let last_write = client
        .kv_get("rc/39", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap()
        .modify_index;
    // Two survivors that hold every acknowledged write.
    let leader = cluster.wait_for_leader().await;
    let survivors: Vec<u64> = (1..=5).filter(|id| *id != leader).take(2).collect();
    for id in &survivors {
        let replica = cluster.client_for(*id);
        eventually(
            &format!("manager {id} holds every write"),
            Duration::from_secs(10),
            || async {
                let status = replica.cluster_status().await.map_err(|e| e.to_string())?;
                (status.last_log_index >= last_write)
                    .then_some(())
                    .ok_or(format!("at {}", status.last_log_index))
            },
        )
        .await;
    }
    let (first, second) = (survivors[0], survivors[1]);
    // Three managers are lost for good: processes and data.
    for id in (1..=5).filter(|id| !survivors.contains(id)) {
        cluster.kill(id);
        std::fs::remove_dir_all(&cluster.replica(id).data_dir).unwrap();
    }
    let config = cluster.replica(first).config_path.display().to_string();
    let (code, _, err) = cluster.cli(first, &["cluster", "recover", "--config", &config]);
    assert_ne!(code, 0);
    assert!(err.contains("stop its agent"), "{err}");
    cluster.kill(first);

    // Without --yes it only says what it found, and changes nothing.
    let (code, out, err) = cluster.cli(
        first,
        &[
            "--output", "json", "cluster", "recover", "--config", &config,
        ],
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("--yes"), "{err}");
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["recovered"], json!(false), "{found}");
    assert!(found["last_log_index"].as_u64().unwrap() >= last_write);
    let reached: Vec<&Value> = found["survivors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reachable"] == json!(true))
        .collect();
    assert_eq!(reached.len(), 2, "{found}");
    let most = found["most_up_to_date"].as_u64().unwrap();
    assert!(survivors.contains(&most), "{found}");
    assert!(
        found["may_be_lost"]
            .as_str()
            .unwrap()
            .contains("entries after"),
        "{found}"
    );
    // Both survivors hold every acknowledged write; when the other one's
    // log is longer (by an entry no client saw acknowledged), recovering
    // here is refused unless forced.
    let mut recover = vec![
        "--output", "json", "cluster", "recover", "--config", &config, "--yes",
    ];
    if most != first {
        let (code, _, err) = cluster.cli(first, &recover);
        assert_ne!(code, 0);
        assert!(err.contains("--force"), "{err}");
        recover.push("--force");
    }
    let (code, out, err) = cluster.cli(first, &recover);
    assert_eq!(code, 0, "{out}\n{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["recovered"], json!(true), "{done}");
    assert!(std::path::Path::new(done["moved_aside"].as_str().unwrap()).exists());
    cluster.restart(first);

    // Writes are accepted again, and every acknowledged write is there.
    let client = cluster.client_for(first);
    eventually(
        "the recovered cluster takes writes",
        Duration::from_secs(20),
        || async {
            client
                .kv_put("rc/after", b"1", 0, None)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    for i in 0..40 {
        let pair = client
            .kv_get(&format!("rc/{i}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(
            pair.map(|p| p.value),
            Some(b"acknowledged".to_vec()),
            "rc/{i}"
        );
    }
    let status = client.cluster_status().await.unwrap();
    assert_eq!(
        status.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![first]
    );
    // The other survivor is refused until it is added again.
    let other = cluster.client_for(second);
    let refused = other.kv_put("rc/other", b"1", 0, None).await;
    assert!(refused.is_err(), "{refused:?}");
    cluster.kill(second);
    std::fs::remove_dir_all(&cluster.replica(second).data_dir).unwrap();
    let joiner = cluster.spawn_joiner(6);
    let (api, peer) = (
        cluster.replicas[joiner].api_addr.clone(),
        cluster.replicas[joiner].peer_addr.clone(),
    );
    client.add_member(6, &api, &peer, true).await.unwrap();
    let status = client.cluster_status().await.unwrap();
    let voters: Vec<u64> = status.voter_ids();
    assert_eq!(voters, vec![first, 6]);
    assert!(client.kv_put("rc/two", b"1", 0, None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrapped_cluster_recovered_from_one_survivor_returns_to_its_three_managers() {
    use crate::bootstrap::{healthy, manager_image, Managers};
    use raftvisor::client::{Client, ClientOptions};
    use raftvisor::runtime::ContainerRuntime;

    let Some(engine) = crate::docker_env::docker().await else {
        return;
    };
    let image = manager_image();
    assert!(
        engine.image_exists(&image).await.unwrap_or(false),
        "image {image} is missing: run scripts/build-images.sh (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("rc{}", std::process::id());
    let _managers = Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    let Bootstrapped {
        client,
        state_dir,
        token,
        ports,
        ..
    } = bootstrapped(dir.path(), &cluster, "").await;
    let ca = state_dir.join("certs/ca.pem");
    for i in 0..20 {
        assert!(client
            .kv_put(&format!("boot/{i}"), b"acknowledged", 0, None)
            .await
            .unwrap());
    }
    let last_write = client
        .kv_get("boot/19", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap()
        .modify_index;
    let leader = client.cluster_status().await.unwrap().leader_id.unwrap();
    let survivor = [1u64, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let port_of = |id: u64| ports[(id - 1) as usize];
    let mut at_survivor = ClientOptions::new([format!("127.0.0.1:{}", port_of(survivor)[0])]);
    at_survivor.ca_cert = Some(ca.clone());
    at_survivor.token = Some(token.clone());
    let at_survivor = Client::new(at_survivor).unwrap();
    eventually(
        "the survivor holds every write",
        Duration::from_secs(10),
        || async {
            let status = at_survivor
                .cluster_status()
                .await
                .map_err(|e| e.to_string())?;
            (status.last_log_index >= last_write)
                .then_some(())
                .ok_or(format!("at {}", status.last_log_index))
        },
    )
    .await;

    // Two managers are lost for good: containers and data.
    let name = |id: u64| format!("rv-manager-{cluster}-{id}");
    for id in [1u64, 2, 3].into_iter().filter(|id| *id != survivor) {
        engine.remove(&name(id)).await.unwrap();
        std::fs::remove_dir_all(state_dir.join(format!("managers/replica-{id}"))).unwrap();
    }
    engine
        .stop(&name(survivor), Duration::from_secs(10))
        .await
        .unwrap();
    // Recover on the survivor's data directory, as its machine's operator.
    let host_config = dir.path().join("survivor.toml");
    std::fs::write(
        &host_config,
        format!(
            "id = {survivor}\ndata_dir = {:?}\napi_addr = \"127.0.0.1:{}\"\npeer_addr = \"127.0.0.1:{}\"\ndns_addr = \"127.0.0.1:{}\"\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            state_dir.join(format!("managers/replica-{survivor}/data")),
            port_of(survivor)[0],
            port_of(survivor)[1],
            port_of(survivor)[2],
            ca,
            state_dir.join(format!("certs/replica-{survivor}.pem")),
            state_dir.join(format!("certs/replica-{survivor}-key.pem")),
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(
        &[
            "--ca-cert".to_string(),
            ca.display().to_string(),
            "cluster".into(),
            "recover".into(),
            "--config".into(),
            host_config.display().to_string(),
            "--yes".into(),
        ],
        &token,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    engine.start(&name(survivor)).await.unwrap();

    // Writes are accepted again with every acknowledged write there, and
    // the leader brings the managers back to the plan's three.
    eventually(
        "the recovered cluster takes writes",
        Duration::from_secs(30),
        || async {
            at_survivor
                .kv_put("boot/after", b"1", 0, None)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    for i in 0..20 {
        let pair = at_survivor
            .kv_get(&format!("boot/{i}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(pair.map(|p| p.value), Some(b"acknowledged".to_vec()));
    }
    healthy(&at_survivor, 3).await;
    let voters: Vec<u64> = at_survivor.cluster_status().await.unwrap().voter_ids();
    assert!(
        voters.contains(&survivor) && voters.contains(&4) && voters.contains(&5),
        "{voters:?}"
    );
    // The leader issued their certificates with the manager issuer: no CA
    // key is within the managers' reach.
    for id in [4u64, 5] {
        let pem =
            std::fs::read_to_string(state_dir.join(format!("certs/replica-{id}.pem"))).unwrap();
        assert_eq!(
            pem.matches("BEGIN CERTIFICATE").count(),
            2,
            "replica {id}: {pem}"
        );
    }
    crate::bootstrap::assert_no_ca_key_under(&state_dir);
    assert!(at_survivor
        .kv_put("boot/three", b"1", 0, None)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_in_use_on_every_peer_link_while_writes_flow() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            let (mut written, mut errors) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
                && written < 20_000
            {
                match client
                    .kv_put(&format!("rot/{written}"), b"x", 0, None)
                    .await
                {
                    Ok(true) => written += 1,
                    other => errors.push(format!("rot/{written}: {other:?}")),
                }
            }
            (written, errors)
        })
    };
    let (code, out, err) = run_cli(
        &[
            "--output".to_string(),
            "json".into(),
            "certs".into(),
            "rotate".into(),
            "--dir".into(),
            cluster.certs.dir.display().to_string(),
            "--days".into(),
            "400".into(),
        ],
        ADMIN_TOKEN,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let rotated: Vec<Value> = serde_json::from_str(&out).unwrap();
    let expires: std::collections::BTreeMap<u64, String> = rotated
        .iter()
        .map(|r| {
            (
                r["raft_id"].as_u64().unwrap(),
                r["expires"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        expires.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{out}"
    );
    // Every peer link uses the new certificates: the leader has seen every
    // member's (it calls them all), each follower its own and the leader's
    // (the leader calls it). Nothing shows an old one.
    let leader = cluster.wait_for_leader().await;
    for id in [1u64, 2, 3] {
        let linked: Vec<u64> = if id == leader {
            vec![1, 2, 3]
        } else {
            vec![id, leader]
        };
        eventually(
            &format!("replica {id} sees the new certificates of {linked:?}"),
            Duration::from_secs(30),
            || async {
                let status = cluster.status_of(id).await?;
                let seen: std::collections::BTreeMap<u64, String> = status
                    .members
                    .iter()
                    .filter_map(|m| Some((m.id, m.certificate_expires.clone()?)))
                    .collect();
                let stale = seen
                    .iter()
                    .any(|(member, at)| expires.get(member) != Some(at));
                if !stale && linked.iter().all(|member| seen.contains_key(member)) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, errors) = writer.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(written > 0);
    // The cluster goes on under the new certificates.
    assert!(client.kv_put("rot/after", b"1", 0, None).await.unwrap());
    // A certificate that does not check is not taken: the replica keeps
    // the one it has.
    let cert = cluster.certs.dir.join("replica-1.pem");
    let before = std::fs::read(&cert).unwrap();
    std::fs::write(
        &cert,
        std::fs::read(cluster.certs.dir.join("replica-2.pem")).unwrap(),
    )
    .unwrap();
    eventually(
        "replica 1 refuses the certificate that does not check",
        Duration::from_secs(10),
        || async {
            cluster
                .replica(1)
                .log()
                .contains("do not check: keeping the current certificate")
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    let status = cluster.status_of(1).await.unwrap();
    let own = status.members.iter().find(|m| m.id == 1).unwrap();
    assert_eq!(own.certificate_expires.as_ref(), expires.get(&1));
    std::fs::write(&cert, before).unwrap();
    assert!(client.kv_put("rot/still", b"1", 0, None).await.unwrap());
}

/// A cluster of three managers on the machine `local` that `raftvisor
/// bootstrap` brought up from a cluster file with `extra` appended.
struct Bootstrapped {
    client: raftvisor::client::Client,
    file: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    token: String,
    /// `[api, peer, dns]` of managers 1, 2 and 3.
    ports: Vec<[u16; 3]>,
}

async fn bootstrapped(dir: &std::path::Path, cluster: &str, extra: &str) -> Bootstrapped {
    bootstrapped_of(dir, cluster, extra, &crate::bootstrap::manager_image()).await
}

/// [`bootstrapped`] with managers running `image`.
async fn bootstrapped_of(
    dir: &std::path::Path,
    cluster: &str,
    extra: &str,
    image: &str,
) -> Bootstrapped {
    use crate::bootstrap::{bootstrap, cluster_file_of, healthy};
    use raftvisor::client::{Client, ClientOptions};
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| {
            [
                crate::harness::free_port(),
                crate::harness::free_port(),
                crate::harness::free_port(),
            ]
        })
        .collect();
    let state_dir = dir.join("state");
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        cluster_file_of(cluster, &state_dir, &ports, image) + extra,
    )
    .unwrap();
    let (code, out, err) = bootstrap(&file);
    assert_eq!(code, 0, "{out}\n{err}");
    let token = std::fs::read_to_string(state_dir.join("bootstrap.token"))
        .unwrap()
        .trim()
        .to_string();
    let mut options = ClientOptions::new(ports.iter().map(|p| format!("127.0.0.1:{}", p[0])));
    options.ca_cert = Some(state_dir.join("certs/ca.pem"));
    options.token = Some(token.clone());
    let client = Client::new(options).unwrap();
    healthy(&client, 3).await;
    Bootstrapped {
        client,
        file,
        state_dir,
        token,
        ports,
    }
}

/// Removes the container of a follower manager for good; returns its id.
async fn lose_a_follower(
    engine: &raftvisor::runtime::docker::DockerRuntime,
    client: &raftvisor::client::Client,
    cluster: &str,
) -> u64 {
    use raftvisor::runtime::ContainerRuntime;
    let leader = client.cluster_status().await.unwrap().leader_id.unwrap();
    let victim = [3u64, 2, 1].into_iter().find(|id| *id != leader).unwrap();
    engine
        .remove(&format!("rv-manager-{cluster}-{victim}"))
        .await
        .unwrap();
    victim
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_free_machine_a_replacement_manager_runs_on_a_static_spare() {
    let Some(engine) = crate::docker_env::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("sp{}", std::process::id());
    let _managers = crate::bootstrap::Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    // The spare is the local engine under another machine's name: every
    // manager shares the one engine here, but the plan sees two machines.
    let spares_file = dir.path().join("state/spares.toml");
    std::fs::create_dir_all(spares_file.parent().unwrap()).unwrap();
    std::fs::write(
        &spares_file,
        format!(
            "kind = \"static\"\n[[machines]]\nname = \"spare-1\"\ndocker_endpoint = {:?}\naddress = \"127.0.0.1\"\n",
            crate::docker_env::LOCAL_ENGINE
        ),
    )
    .unwrap();
    let client = bootstrapped(
        dir.path(),
        &cluster,
        &format!("[spares]\nprovider = \"static\"\nprovider_file = {spares_file:?}\n"),
    )
    .await
    .client;
    let victim = lose_a_follower(&engine, &client, &cluster).await;
    let voters = eventually(
        "manager 4 replaces the lost one on the spare",
        Duration::from_secs(60),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            let voters: Vec<u64> = status.voter_ids();
            if voters.len() == 3 && voters.contains(&4) && !voters.contains(&victim) {
                Ok(voters)
            } else {
                Err(format!("voters {voters:?}"))
            }
        },
    )
    .await;
    assert!(voters.contains(&4));
    let plan = client.cluster_plan().await.unwrap();
    assert!(
        plan.machines.iter().any(|m| m.name == "spare-1"),
        "the spare is recorded in the plan: {plan:?}"
    );
    let placed = plan.managers.iter().find(|m| m.id == 4).unwrap();
    assert_eq!(placed.machine, "spare-1");
    assert!(client.kv_put("after-spare", b"1", 0, None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_vm_whose_engine_never_answers_is_deleted_and_the_replacement_retried() {
    let Some(engine) = crate::docker_env::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("az{}", std::process::id());
    let _managers = crate::bootstrap::Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    // The ARM test double makes VMs whose engine (at a private address of
    // the double's) never answers. The provider's files lie in the state
    // directory, which the manager containers mount.
    let double = crate::arm_double::ArmDouble::start(1).await;
    let azure_dir = dir.path().join("state/azure");
    std::fs::create_dir_all(&azure_dir).unwrap();
    let azure = raftvisor::provider::ProviderConfig::Azure(Box::new(
        crate::azure_provider::config(&double, &azure_dir, crate::arm_double::CLIENT_SECRET),
    ));
    let provider_file = azure_dir.join("azure.toml");
    std::fs::write(&provider_file, toml::to_string(&azure).unwrap()).unwrap();
    let client = bootstrapped(
        dir.path(),
        &cluster,
        &format!(
            "[spares]\nprovider = \"azure\"\nprovider_file = {provider_file:?}\nengine_wait_ms = 1500\n"
        ),
    )
    .await
    .client;
    lose_a_follower(&engine, &client, &cluster).await;
    let vm = format!("{cluster}-manager-4");
    eventually(
        "the VM is made, deleted when its engine does not answer, and made again",
        Duration::from_secs(90),
        || async {
            let finished = double.finished();
            let creates = finished.iter().filter(|(kind, _)| kind == "create").count();
            let deletes = finished.iter().filter(|(kind, _)| kind == "delete").count();
            if creates >= 2 && deletes >= 1 {
                Ok(())
            } else {
                Err(format!(
                    "{finished:?}, vm now {:?}",
                    double.vm(&vm).map(|v| v.power)
                ))
            }
        },
    )
    .await;
    assert!(double.violations().is_empty(), "{:?}", double.violations());
    let events = client.events(0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("did not answer") && e.message.contains("deleted")),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // The plan records no machine that was deleted.
    let plan = client.cluster_plan().await.unwrap();
    assert!(
        plan.machines.iter().all(|m| m.name == "local"),
        "{:?}",
        plan.machines
    );
    // Two managers still form a quorum throughout.
    assert!(client
        .kv_put("during-retries", b"1", 0, None)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_replaces_every_manager_one_at_a_time_under_writes() {
    use crate::bootstrap::{healthy, manager_image, Managers};

    let Some(engine) = crate::docker_env::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("up{}", std::process::id());
    let managers = Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    // The new image: the manager image under a name of this test's own,
    // so every container must be replaced.
    let target = format!("raftvisor:upgrade-{cluster}");
    let tagged = std::process::Command::new("docker")
        .args(["tag", &manager_image(), &target])
        .status()
        .unwrap();
    assert!(tagged.success());
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", &self.0])
                .output();
        }
    }
    let _untag = Untag(target.clone());
    let Bootstrapped {
        client,
        file,
        token,
        ..
    } = bootstrapped(dir.path(), &cluster, "").await;

    let writer = TimedWriter::start(&client, "up/");
    let (code, out, err) = upgrade(&file, &target, &token);
    let written = writer.stop().await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(report.len(), 3, "{out}");
    assert!(
        report.iter().all(|r| r["outcome"] == json!("replaced")),
        "{out}"
    );
    // The leader went last.
    assert_eq!(report[2]["was_leader"], json!(true), "{out}");
    let running = managers.list().await;
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|c| c.image == target), "{running:?}");
    assert_eq!(client.cluster_plan().await.unwrap().image, target);
    healthy(&client, 3).await;
    written.all_readable(&client, "upgrade").await;
    // Upgrading to the image it runs changes nothing.
    let (code, out, err) = upgrade(&file, &target, &token);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("unchanged").count(), 3, "{out}");
}

/// `raftvisor --output json cluster upgrade FILE --image IMAGE`.
fn upgrade(file: &std::path::Path, image: &str, token: &str) -> (i32, String, String) {
    run_cli(
        &[
            "--output".to_string(),
            "json".into(),
            "cluster".into(),
            "upgrade".into(),
            file.display().to_string(),
            "--image".into(),
            image.to_string(),
        ],
        token,
    )
}

/// The image of the last release listed in `RELEASES`, which
/// `scripts/build-images.sh --previous-release` builds from its commit.
fn previous_release_image() -> String {
    let releases = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/RELEASES"))
        .expect("RELEASES lists the releases");
    let tag = releases
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .expect("RELEASES names a release")
        .to_string();
    format!("raftvisor:{tag}")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_the_last_release_runs_mixed_then_raises_the_cluster_version() {
    use crate::bootstrap::{healthy, manager_image, Managers};

    let Some(engine) = crate::docker_env::docker().await else {
        return;
    };
    let previous = previous_release_image();
    use raftvisor::runtime::ContainerRuntime;
    if !engine.image_exists(&previous).await.unwrap_or(false) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{previous} is missing: scripts/build-images.sh --previous-release builds it"
        );
        eprintln!(
            "SKIPPED: no {previous} image (scripts/build-images.sh --previous-release builds it)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("rel{}", std::process::id());
    let managers = Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    let Bootstrapped {
        client,
        file,
        token,
        state_dir,
        ports,
    } = bootstrapped_of(dir.path(), &cluster, "", &previous).await;
    // The last release reports no cluster version nor protocols: it is
    // at version 1.
    assert_eq!(client.cluster_status().await.unwrap().cluster_version, 1);

    // Watches each replica's own view while the managers are replaced:
    // members of both protocols must show up together, and no leader may
    // report the new cluster version while it hears a member on the old
    // protocol.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let replicas: Vec<raftvisor::client::Client> = ports
            .iter()
            .map(|[api, _, _]| {
                let mut options =
                    raftvisor::client::ClientOptions::new([format!("127.0.0.1:{api}")]);
                options.ca_cert = Some(state_dir.join("certs/ca.pem"));
                options.token = Some(token.clone());
                raftvisor::client::Client::new(options).unwrap()
            })
            .collect();
        tokio::spawn(async move {
            let mut seen_mixed = false;
            let mut violations = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while watching.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                for replica in &replicas {
                    let Ok(status) = replica.cluster_status().await else {
                        continue;
                    };
                    let protocols: Vec<Option<u32>> =
                        status.members.iter().map(|m| m.protocol).collect();
                    let old_member = protocols.contains(&Some(1));
                    seen_mixed |= old_member && protocols.contains(&Some(2));
                    let leads = status.leader_id == Some(status.this_id);
                    if leads && status.cluster_version >= 2 && old_member {
                        violations.push(format!(
                            "leader {}: {protocols:?} at version {}",
                            status.this_id, status.cluster_version
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen_mixed, violations)
        })
    };
    let writer = TimedWriter::start(&client, "rel/");
    let current = manager_image();
    let (code, out, err) = upgrade(&file, &current, &token);
    let written = writer.stop().await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(
        report.len() == 3 && report.iter().all(|r| r["outcome"] == json!("replaced")),
        "{out}"
    );
    assert_eq!(report[2]["was_leader"], json!(true), "{out}");
    let running = managers.list().await;
    assert!(
        running.len() == 3 && running.iter().all(|c| c.image == current),
        "{running:?}"
    );
    healthy(&client, 3).await;
    written
        .all_readable(&client, "upgrade from the last release")
        .await;
    // Every member now speaks the new protocol: the leader raises the
    // cluster version, and every replica applies it.
    eventually(
        "the cluster version is raised to 2 once every member speaks it",
        Duration::from_secs(30),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            if status.cluster_version == 2 {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (seen_mixed, violations) = watcher.await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        seen_mixed,
        "the upgrade never showed old and new members together"
    );
    let events = client.events(0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.message.contains("cluster version raised from 1 to 2"))
            .count(),
        1
    );
    assert!(client.kv_put("rel/after", b"1", 0, None).await.unwrap());
}
