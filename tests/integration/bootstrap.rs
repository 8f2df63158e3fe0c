//! `raftvisor bootstrap`: three manager containers (`raftvisor:local`) on
//! the local engine come up from one cluster file; a second run changes
//! nothing; after damage (one manager stopped, another's container
//! deleted) a run repairs exactly that, and the cluster answers again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use raftvisor::client::{Client, ClientOptions};
use raftvisor::runtime::docker::DockerRuntime;
use raftvisor::runtime::{ContainerRuntime, ContainerState};

use raftvisor::provider::ProviderConfig;

use crate::arm_double::{ArmDouble, CLIENT_SECRET};
use crate::docker_env::{docker, LOCAL_ENGINE};
use crate::harness::{binary, eventually, free_port};

/// The manager image; `RAFTVISOR_TEST_MANAGER_IMAGE` names another build
/// (a branch's own agent, while `raftvisor:local` is another's).
pub(crate) fn manager_image() -> String {
    std::env::var("RAFTVISOR_TEST_MANAGER_IMAGE").unwrap_or_else(|_| "raftvisor:local".into())
}
/// Short, to keep the test fast; the repair below finishes well within it.
const REPLACE_AFTER_MS: u64 = 6_000;

/// Removes the cluster's manager containers when the test ends.
pub(crate) struct Managers {
    pub(crate) engine: Arc<DockerRuntime>,
    pub(crate) cluster: String,
}

impl Managers {
    pub(crate) async fn list(&self) -> Vec<raftvisor::runtime::ContainerInfo> {
        let labels = BTreeMap::from([(
            "raftvisor.manager.cluster".to_string(),
            self.cluster.clone(),
        )]);
        self.engine.list(&labels).await.expect("list managers")
    }
}

impl Drop for Managers {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=raftvisor.manager.cluster={}", self.cluster))
            .output()
            .map(|out| {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            });
    }
}

/// Fails if a CA key (`ca-key.pem`) lies anywhere under `dir`.
pub(crate) fn assert_no_ca_key_under(dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            assert_ne!(
                path.file_name().and_then(|n| n.to_str()),
                Some("ca-key.pem"),
                "a CA key within the managers' reach: {}",
                path.display()
            );
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            }
        }
    }
}

pub(crate) fn bootstrap(file: &Path) -> (i32, String, String) {
    let output = Command::new(binary())
        .arg("bootstrap")
        .arg(file)
        .output()
        .expect("run bootstrap");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The summary line of `target`.
fn row_of(out: &str, target: &str) -> String {
    out.lines()
        .find(|l| l.contains(target) && !l.contains("certificate"))
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn cluster_file(cluster: &str, state_dir: &Path, ports: &[[u16; 3]]) -> String {
    cluster_file_of(cluster, state_dir, ports, &manager_image())
}

/// [`cluster_file`] with managers running `image`.
pub(crate) fn cluster_file_of(
    cluster: &str,
    state_dir: &Path,
    ports: &[[u16; 3]],
    image: &str,
) -> String {
    let mut text = format!(
        "cluster = {cluster:?}\nstate_dir = {state_dir:?}\nimage = {image:?}\nreplace_after_ms = {REPLACE_AFTER_MS}\n\
         [[machines]]\nname = \"local\"\ndocker_endpoint = {LOCAL_ENGINE:?}\naddress = \"127.0.0.1\"\n"
    );
    for (i, [api, peer, dns]) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[[managers]]\nid = {}\nmachine = \"local\"\napi_port = {api}\npeer_port = {peer}\ndns_port = {dns}\n",
            i + 1
        ));
    }
    text.push_str("[[nodes]]\nname = \"local\"\nmachine = \"local\"\nzone = \"a\"\n");
    text
}

pub(crate) async fn healthy(client: &Client, voters: usize) {
    eventually(
        "a leader and every manager a voter",
        Duration::from_secs(60),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            let count = status.voter_ids().len();
            if status.leader_id.is_some() && count == voters {
                Ok(())
            } else {
                Err(format!("leader {:?}, {count} voters", status.leader_id))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_brings_up_managers_changes_nothing_twice_and_repairs_damage() {
    let Some(engine) = docker().await else {
        return;
    };
    let image = manager_image();
    assert!(
        engine.image_exists(&image).await.unwrap_or(false),
        "image {image} is missing: run scripts/build-images.sh (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("bt{}", std::process::id());
    let managers = Managers {
        engine: engine.clone(),
        cluster: cluster.clone(),
    };
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let state_dir = dir.path().join("state");
    let file = dir.path().join("cluster.toml");
    // A cloud machine for workloads, made through the azure provider (its
    // ARM API is the local test double).
    let double = ArmDouble::start(2).await;
    let azure_dir = dir.path().join("azure");
    std::fs::create_dir_all(&azure_dir).unwrap();
    let azure = ProviderConfig::Azure(Box::new(crate::azure_provider::config(
        &double,
        &azure_dir,
        CLIENT_SECRET,
    )));
    let provider_file = azure_dir.join("azure.toml");
    std::fs::write(&provider_file, toml::to_string(&azure).unwrap()).unwrap();
    let cloud = format!(
        "[[machines]]\nname = \"vm1\"\nprovider = \"azure\"\nprovider_file = {provider_file:?}\n\
         [[nodes]]\nname = \"cloud\"\nmachine = \"vm1\"\nzone = \"b\"\n"
    );
    std::fs::write(&file, cluster_file(&cluster, &state_dir, &ports) + &cloud).unwrap();

    // First run: everything is created.
    let (code, out, err) = bootstrap(&file);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("change(s) made"), "{out}");
    for what in ["cluster CA", "admin token", "manager 3", "node local"] {
        assert!(out.contains(what), "no {what} in the summary:\n{out}");
    }
    assert!(row_of(&out, "manager issuer").contains("created"), "{out}");
    // The CA's key lies beside state_dir, which the managers mount; their
    // certificates come from the manager issuer, and carry it.
    assert!(dir.path().join("state-ca/ca-key.pem").exists());
    assert_no_ca_key_under(&state_dir);
    let pem = std::fs::read_to_string(state_dir.join("certs/replica-1.pem")).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
    assert!(row_of(&out, "machine vm1").contains("created"), "{out}");
    assert!(double.vm("vm1").is_some(), "the provider made no VM");
    assert!(double.violations().is_empty(), "{:?}", double.violations());
    let mut options = ClientOptions::new(ports.iter().map(|p| format!("127.0.0.1:{}", p[0])));
    options.ca_cert = Some(state_dir.join("certs/ca.pem"));
    options.token = Some(
        std::fs::read_to_string(state_dir.join("bootstrap.token"))
            .unwrap()
            .trim()
            .to_string(),
    );
    let client = Client::new(options).unwrap();
    healthy(&client, 3).await;
    assert!(client.kv_put("boot", b"1", 0, None).await.unwrap());
    assert_eq!(
        client.node_get("local").await.unwrap().spec.zone.as_deref(),
        Some("a")
    );
    let cloud = client.node_get("cloud").await.unwrap().spec;
    assert_eq!(cloud.provider, "azure");
    assert!(cloud.docker_endpoint.starts_with("https://"), "{cloud:?}");
    let running = managers.list().await;
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(running.iter().all(|c| c.state == ContainerState::Running));

    // Second run: nothing to do, and it says so.
    let (code, out, err) = bootstrap(&file);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no changes"), "{out}");
    assert!(
        !out.contains("created") && !out.contains("started"),
        "{out}"
    );

    // Damage: manager 2 stopped, manager 3's container deleted (its data
    // stays on the machine).
    let name = |id: u64| format!("rv-manager-{cluster}-{id}");
    engine
        .stop(&name(2), Duration::from_secs(10))
        .await
        .unwrap();
    engine.remove(&name(3)).await.unwrap();
    let (code, out, err) = bootstrap(&file);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(row_of(&out, "manager 2").contains("started"), "{out}");
    assert!(row_of(&out, "manager 3").contains("created"), "{out}");
    assert!(row_of(&out, "manager 1").contains("unchanged"), "{out}");
    healthy(&client, 3).await;
    assert!(client.kv_put("repaired", b"1", 0, None).await.unwrap());
    assert_eq!(
        client
            .kv_get("boot", raftvisor::client::Consistency::Linearizable)
            .await
            .unwrap()
            .map(|p| p.value),
        Some(b"1".to_vec())
    );

    // A follower manager's container is removed for good: the leader
    // replaces it with a new manager (a new id), one change at a time,
    // while writes go on.
    let status = client.cluster_status().await.unwrap();
    let leader = status.leader_id.unwrap();
    let victim = [3, 2, 1].into_iter().find(|id| *id != leader).unwrap();
    engine.remove(&name(victim)).await.unwrap();
    let mut written = 0;
    let replaced = eventually(
        "a new manager replaces the removed one",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            written += 1;
            let key = format!("during-{written}");
            async move {
                let _ = client.kv_put(&key, b"x", 0, None).await;
                let status = client.cluster_status().await.map_err(|e| e.to_string())?;
                let voters: Vec<u64> = status.voter_ids();
                if voters.len() == 3 && !voters.contains(&victim) && voters.contains(&4) {
                    Ok(voters)
                } else {
                    Err(format!("voters {voters:?}"))
                }
            }
        },
    )
    .await;
    assert!(replaced.contains(&leader), "{replaced:?}");
    assert!(client
        .kv_put("after-replacement", b"1", 0, None)
        .await
        .unwrap());
    // The plan is updated and the event recorded right after the removal.
    eventually(
        "the replacement is recorded",
        Duration::from_secs(10),
        || async {
            let events = client.events(0).await.map_err(|e| e.to_string())?;
            events
                .iter()
                .any(|e| e.message.contains("replaced by manager 4"))
                .then_some(())
                .ok_or_else(|| format!("{} events, none says replaced", events.len()))
        },
    )
    .await;
    // The leader's container is removed: another manager leads at once,
    // and replaces the old leader after replace_after.
    let old_leader = client.cluster_status().await.unwrap().leader_id.unwrap();
    engine.remove(&name(old_leader)).await.unwrap();
    let after = eventually(
        "a new leader replaces the removed leader",
        Duration::from_secs(60),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            let voters: Vec<u64> = status.voter_ids();
            match status.leader_id {
                Some(leader)
                    if leader != old_leader
                        && voters.len() == 3
                        && !voters.contains(&old_leader) =>
                {
                    Ok(voters)
                }
                other => Err(format!("leader {other:?}, voters {voters:?}")),
            }
        },
    )
    .await;
    assert!(
        after.contains(&5),
        "the new manager has a new id: {after:?}"
    );
    assert!(client
        .kv_put("after-leader-loss", b"1", 0, None)
        .await
        .unwrap());

    // Bootstrap again: the cluster's record (managers 4 and 5, not the
    // removed ones) is what it checks, and nothing needs doing.
    let (code, out, err) = bootstrap(&file);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no changes"), "{out}");
    assert!(row_of(&out, "manager 4").contains("unchanged"), "{out}");

    // A file that cannot work fails with the step named.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        cluster_file(&cluster, &state_dir, &ports).replace(LOCAL_ENGINE, "tcp://127.0.0.1:1"),
    )
    .unwrap();
    let (code, _, err) = bootstrap(&broken);
    assert_ne!(code, 0);
    assert!(err.contains("step machines"), "{err}");
    drop(managers);
}
