//! Manager identity is bound to its certificate (issue 12, item 8): the
//! peer port refuses a manager certificate speaking for another Raft id
//! (in the sender header or in a Raft message), a certificate naming no
//! id, and the certificate of a manager removed from the cluster; the
//! cluster view and `/metrics` show when each member's certificate expires.
//! A replica announcing a peer protocol below the cluster version (an
//! older build) is refused too.

use std::path::Path;
use std::time::Duration;

use raftvisor::replica::messages::LeaderRequest;
use raftvisor::tls::certs::{self, Role};

use crate::harness::{eventually, Cluster};

const SENDER: &str = "x-raftvisor-sender";
const PROTOCOL: &str = "x-raftvisor-protocol";

/// A peer-port client presenting `cert` + `key`.
fn peer_client(ca: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn read_index() -> Vec<u8> {
    raftvisor::codec::encode(&LeaderRequest::ReadIndex).unwrap()
}

/// POSTs `body` to `path` on `peer` as `sender`, announcing this build's
/// peer protocol: (status, body text).
async fn post(
    client: &reqwest::Client,
    peer: &str,
    path: &str,
    sender: Option<u64>,
    body: Vec<u8>,
) -> (u16, String) {
    let protocol = raftvisor::state::version::PROTOCOL.to_string();
    post_announcing(client, peer, path, sender, Some(&protocol), body).await
}

/// [`post`] announcing `protocol` (`None`: no protocol header, as 0.1.0).
async fn post_announcing(
    client: &reqwest::Client,
    peer: &str,
    path: &str,
    sender: Option<u64>,
    protocol: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut request = client
        .post(format!("https://{peer}{path}"))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(protocol) = protocol {
        request = request.header(PROTOCOL, protocol);
    }
    if let Some(sender) = sender {
        request = request.header(SENDER, sender.to_string());
    }
    let answer = request.send().await.expect("the handshake passes");
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_certificate_cannot_speak_for_another_raft_id() {
    let cluster = Cluster::start(3).await;
    let leader = cluster
        .client()
        .cluster_status()
        .await
        .unwrap()
        .leader_id
        .unwrap();
    let peer = cluster.replica(leader).peer_addr.clone();
    let ca = cluster.certs.ca.clone();
    let (cert, key) = cluster.certs.manager(2);
    let two = peer_client(&ca, &cert, &key);

    // Control: replica 2's certificate speaking as 2 is served.
    let (status, text) = post(&two, &peer, "/raft/leader", Some(2), read_index()).await;
    assert_eq!(status, 200, "{text}");

    let (status, text) = post(&two, &peer, "/raft/leader", Some(3), read_index()).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("names Raft id 2") && text.contains("claims 3"),
        "{text}"
    );

    let (status, text) = post(&two, &peer, "/raft/leader", None, read_index()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains(SENDER), "{text}");

    // A vote for candidate 3, sent with replica 2's certificate.
    let term = cluster.client().cluster_status().await.unwrap().term;
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term + 100, 3), None);
    let (status, text) = post(
        &two,
        &peer,
        "/raft/vote",
        Some(2),
        raftvisor::codec::encode(&vote).unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("Raft message claims 3"), "{text}");
    let after = cluster.client().cluster_status().await.unwrap();
    assert!(after.term < term + 100, "the refused vote moved the term");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_naming_no_raft_id_is_refused() {
    let cluster = Cluster::start(1).await;
    let peer = cluster.replica(1).peer_addr.clone();
    let anonymous = certs::issue(
        &cluster.certs.dir,
        Role::Manager,
        "no-id",
        &["127.0.0.1".into()],
    )
    .unwrap();
    let client = peer_client(&cluster.certs.ca, &anonymous.cert, &anonymous.key);
    let (status, text) = post(&client, &peer, "/raft/leader", Some(1), read_index()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("names no Raft id"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_managers_certificate_is_refused() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.remove_member(3).await.expect("remove member 3");
    cluster.kill(3);
    let ca = cluster.certs.ca.clone();
    let (cert, key) = cluster.certs.manager(3);
    let three = peer_client(&ca, &cert, &key);
    for id in [1, 2] {
        let peer = cluster.replica(id).peer_addr.clone();
        let three = three.clone();
        eventually(
            &format!("replica {id} refuses removed manager 3"),
            Duration::from_secs(10),
            || {
                let three = three.clone();
                let peer = peer.clone();
                async move {
                    let (status, text) =
                        post(&three, &peer, "/raft/leader", Some(3), read_index()).await;
                    if status == 403 && text.starts_with("not a member") {
                        Ok(())
                    } else {
                        Err(format!("{status}: {text}"))
                    }
                }
            },
        )
        .await;
    }
    // The members still talk to each other.
    assert!(client.kv_put("after-removal", b"v", 0, None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_view_and_metrics_show_certificate_expiry() {
    let cluster = Cluster::start(3).await;
    let leader = cluster
        .client()
        .cluster_status()
        .await
        .unwrap()
        .leader_id
        .unwrap();
    let client = cluster.client_for(leader);
    let status = eventually(
        "the leader knows every member's certificate expiry",
        Duration::from_secs(10),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            if status
                .members
                .iter()
                .all(|m| m.certificate_expires.is_some())
            {
                Ok(status)
            } else {
                Err(format!("{:?}", status.members))
            }
        },
    )
    .await;
    // Issued for two years by `certs issue`.
    let this_year: i32 = status.members[0].certificate_expires.as_ref().unwrap()[..4]
        .parse()
        .unwrap();
    for member in &status.members {
        let expires = member.certificate_expires.as_ref().unwrap();
        assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
        assert_eq!(expires[..4].parse::<i32>().unwrap(), this_year);
    }
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.api_url(leader)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in 1..=3 {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "raftvisor_certificate_expiry_seconds{{member=\"{id}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no expiry gauge of member {id}:\n{metrics}"));
        let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(seconds > 700.0 * 86_400.0, "{line}");
    }
}

/// The cluster version was raised from 1 exactly once: a restart finds
/// it in the log instead of raising it again.
async fn assert_raised_once(client: &raftvisor::client::Client) {
    let events = client.events(0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.message.contains("cluster version raised from 1 to"))
            .count(),
        1,
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_version_rises_with_its_members_and_older_protocols_are_refused() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    // Every member speaks this build's protocol: the leader raises the
    // cluster version to it, and every replica applies it.
    let current = raftvisor::state::version::PROTOCOL;
    for id in 1..=3u64 {
        let replica = cluster.client_for(id);
        eventually(
            &format!("replica {id} is at cluster version {current}"),
            Duration::from_secs(15),
            || async {
                let status = replica.cluster_status().await.map_err(|e| e.to_string())?;
                if status.cluster_version == current {
                    Ok(())
                } else {
                    Err(format!(
                        "version {}, protocols {:?}",
                        status.cluster_version,
                        status
                            .members
                            .iter()
                            .map(|m| (m.id, m.protocol))
                            .collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await;
    }
    let leader = cluster.wait_for_leader().await;
    let on_leader = cluster.status_of(leader).await.unwrap();
    assert!(
        on_leader
            .members
            .iter()
            .all(|m| m.protocol == Some(current)),
        "{:?}",
        on_leader.members
    );
    assert_raised_once(&client).await;

    let peer = cluster.replica(leader).peer_addr.clone();
    let (cert, key) = cluster.certs.manager(2);
    let two = peer_client(&cluster.certs.ca, &cert, &key);
    // A replica announcing no protocol (0.1.0) or an older one is refused,
    // with the reason; a protocol header that is not a number is a 400.
    for old in [None, Some("1")] {
        let (status, text) =
            post_announcing(&two, &peer, "/raft/leader", Some(2), old, read_index()).await;
        assert_eq!(status, 403, "{old:?}: {text}");
        assert!(
            text.contains("below the cluster version 2") && text.contains("upgrade it"),
            "{text}"
        );
    }
    let (status, text) = post_announcing(
        &two,
        &peer,
        "/raft/leader",
        Some(2),
        Some("two"),
        read_index(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = post(&two, &peer, "/raft/leader", Some(2), read_index()).await;
    assert_eq!(status, 200, "{text}");
    // The cluster version survives a restart of every replica (it is in
    // the log and the snapshots), and the cluster goes on.
    for id in 1..=3u64 {
        cluster.kill(id);
    }
    for id in 1..=3u64 {
        cluster.restart(id);
    }
    cluster.wait_for_leader().await;
    assert!(client.kv_put("after-restart", b"v", 0, None).await.unwrap());
    // A replica answers from what it has applied, which right after a
    // restart can stop short of the last entries until it hears the
    // commit point again; once it has, the version is back — from the log,
    // not raised a second time.
    eventually(
        "the cluster version is back after the restart",
        Duration::from_secs(10),
        || async {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            (status.cluster_version == current)
                .then_some(())
                .ok_or(format!("version {}", status.cluster_version))
        },
    )
    .await;
    assert_raised_once(&client).await;
}
