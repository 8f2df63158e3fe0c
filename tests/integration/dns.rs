//! DNS served by every replica from its own state: service A and SRV
//! records of healthy running containers, node and leader names, NXDOMAIN,
//! followers answering like the leader, names vanishing when a service
//! stops, and garbage packets that never stop the server.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use raftvisor::dns::client::{self, QueryOptions};
use serde_json::json;

use crate::docker_env::{DockerCluster, ECHO_IMAGE, LOCAL_ENGINE};
use crate::harness::eventually;

/// One query through the project's DNS client (UDP or TCP).
pub async fn query(server: &str, name: &str, record_type: RecordType, tcp: bool) -> Message {
    let options = QueryOptions {
        tcp,
        ..QueryOptions::default()
    };
    client::query(server.parse().unwrap(), name, record_type, options)
        .await
        .unwrap()
}

fn addresses(message: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// The SRV answers of `message` as (port, weight, target), sorted.
pub fn srv_ports(message: &Message) -> Vec<(u16, u16, String)> {
    let mut ports: Vec<(u16, u16, String)> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.port, srv.weight, srv.target.to_ascii())),
            _ => None,
        })
        .collect();
    ports.sort();
    ports
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replica_answers_service_node_and_leader_names() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = serde_json::from_value(json!({
        "image": ECHO_IMAGE,
        "replicas": 2,
        "ports": [{"name": "http", "container_port": 8080, "weight": 5}]
    }))
    .unwrap();
    client.service_put("d1", "echo", &spec, None).await.unwrap();
    let running = env.wait_running("echo", 2, Duration::from_secs(30)).await;
    let mut published: Vec<u16> = running.iter().map(|c| c.ports[0].2).collect();
    published.sort();
    let servers: Vec<String> = env
        .cluster
        .replicas
        .iter()
        .map(|r| r.dns_addr.clone())
        .collect();

    for server in &servers {
        let srv = eventually(
            &format!("{server} serves the SRV records"),
            Duration::from_secs(20),
            || async {
                let answer = query(
                    server,
                    "_http._tcp.echo.d1.svc.cluster.local.",
                    RecordType::SRV,
                    false,
                )
                .await;
                let ports = srv_ports(&answer);
                if ports.len() == 2 {
                    Ok(answer)
                } else {
                    Err(format!("{ports:?}"))
                }
            },
        )
        .await;
        assert!(srv.metadata.authoritative);
        let ports = srv_ports(&srv);
        assert_eq!(
            ports.iter().map(|p| p.0).collect::<Vec<_>>(),
            published,
            "SRV ports are the published host ports"
        );
        assert!(ports
            .iter()
            .all(|(_, weight, target)| *weight == 5 && target == "local.node.cluster.local."));
        // The target resolves, in the additional section and on its own.
        assert!(srv
            .additionals
            .iter()
            .any(|r| r.name.to_ascii() == "local.node.cluster.local."));
        let node = query(server, "local.node.cluster.local.", RecordType::A, false).await;
        assert_eq!(
            addresses(&node),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );

        // Case does not matter; A answers carry the instances' addresses.
        let a = query(server, "ECHO.d1.SVC.cluster.local.", RecordType::A, false).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&a), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(a.answers.iter().all(|r| r.ttl == 5));

        let leader = query(
            server,
            "leader.managers.cluster.local.",
            RecordType::A,
            true,
        )
        .await;
        assert_eq!(
            addresses(&leader),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );

        let missing = query(
            server,
            "nothing.d1.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .await;
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert!(missing
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA));
        let outside = query(server, "example.org.", RecordType::A, false).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    }

    // Stopped instances leave DNS on every replica.
    client.service_action("d1", "echo", "stop").await.unwrap();
    for server in &servers {
        eventually(
            &format!("{server} drops the stopped instances"),
            Duration::from_secs(20),
            || async {
                let answer = query(
                    server,
                    "_http._tcp.echo.d1.svc.cluster.local.",
                    RecordType::SRV,
                    false,
                )
                .await;
                if answer.answers.is_empty()
                    && answer.metadata.response_code == ResponseCode::NoError
                {
                    Ok(())
                } else {
                    Err(format!("{:?}", srv_ports(&answer)))
                }
            },
        )
        .await;
    }

    // Garbage never stops the server.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for garbage in [
        &b""[..],
        &b"\x00"[..],
        &[0xffu8; 12][..],
        &[0x12, 0x34, 0x01, 0x00, 0x00, 0x01][..],
        &vec![0x41u8; 600][..],
    ] {
        socket.send_to(garbage, &servers[0]).await.unwrap();
    }
    let still = query(
        &servers[0],
        "leader.managers.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(still.metadata.response_code, ResponseCode::NoError);

    // The answer's name points at the question's: the record costs 16
    // bytes (pointer, type, class, TTL, length, address), as it does from
    // an authoritative server such as Knot.
    use hickory_proto::serialize::binary::BinEncodable;
    let name = "leader.managers.cluster.local.";
    let raw = exchange_from("127.0.0.1:0", &servers[0], name, false).await;
    let question = Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
        .to_bytes()
        .unwrap();
    let answer = Message::from_vec(&raw).unwrap();
    assert_eq!(
        (
            answer.answers.len(),
            answer.authorities.len(),
            answer.additionals.len()
        ),
        (1, 0, 0),
        "{answer:?}"
    );
    assert_eq!(raw.len(), 12 + question.len() + 16, "{answer:?}");
}

async fn query_edns(server: &str, name: &str, record_type: RecordType, payload: u16) -> Message {
    let options = QueryOptions {
        edns_payload: Some(payload),
        ..QueryOptions::default()
    };
    client::query(server.parse().unwrap(), name, record_type, options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn external_services_large_answers_and_follower_freshness() {
    let mut cluster = crate::harness::Cluster::start(3).await;
    let client = cluster.client();
    let leader = cluster.wait_for_leader().await;
    let follower = cluster
        .replicas
        .iter()
        .map(|r| r.id)
        .find(|id| *id != leader)
        .unwrap();
    let follower_dns = cluster.replica(follower).dns_addr.clone();

    // 100 addresses do not fit in 512 bytes: TC over UDP, all over TCP or
    // with a large enough EDNS payload.
    let many: Vec<String> = (0..100)
        .map(|i| format!("10.20.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let spec = serde_json::from_value(json!({"kind": "external", "addresses": many})).unwrap();
    client
        .service_put("ext", "many", &spec, None)
        .await
        .unwrap();
    let name = "many.ext.svc.cluster.local.";
    let udp = eventually(
        "the follower knows the external service",
        Duration::from_secs(10),
        || async {
            let answer = query(&follower_dns, name, RecordType::A, false).await;
            if answer.metadata.truncation || !answer.answers.is_empty() {
                Ok(answer)
            } else {
                Err(format!("{answer:?}"))
            }
        },
    )
    .await;
    assert!(
        udp.metadata.truncation,
        "a 100-address answer over plain UDP must be truncated"
    );
    assert!(udp.to_vec().unwrap().len() <= 512);
    let tcp = query(&follower_dns, name, RecordType::A, true).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(addresses(&tcp).len(), 100);
    // EDNS raises the UDP limit up to 1232 bytes and never beyond (no IP
    // fragments, little to reflect): TC past that, whatever the client says.
    let edns = query_edns(&follower_dns, name, RecordType::A, 4096).await;
    assert!(edns.metadata.truncation && edns.edns.is_some());
    assert!(edns.to_vec().unwrap().len() <= 1232);
    // 50 addresses (about 860 bytes) fit in EDNS, not in plain UDP.
    let fifty: Vec<String> = (0..50).map(|i| format!("10.21.0.{}", i + 1)).collect();
    let spec = serde_json::from_value(json!({"kind": "external", "addresses": fifty})).unwrap();
    client
        .service_put("ext", "fifty", &spec, None)
        .await
        .unwrap();
    let fifty_name = "fifty.ext.svc.cluster.local.";
    let edns = eventually(
        "the follower answers 50 addresses with EDNS",
        Duration::from_secs(10),
        || async {
            let answer = query_edns(&follower_dns, fifty_name, RecordType::A, 4096).await;
            if addresses(&answer).len() == 50 {
                Ok(answer)
            } else {
                Err(format!("{answer:?}"))
            }
        },
    )
    .await;
    assert!(!edns.metadata.truncation);
    let plain = query(&follower_dns, fifty_name, RecordType::A, false).await;
    assert!(plain.metadata.truncation);

    // A commit is visible on a follower's DNS right away.
    let cname =
        serde_json::from_value(json!({"kind": "external", "hostname": "db.example.org"})).unwrap();
    client.service_put("ext", "db", &cname, None).await.unwrap();
    let started = std::time::Instant::now();
    eventually(
        "the follower answers the new name",
        Duration::from_secs(5),
        || async {
            let answer = query(
                &follower_dns,
                "db.ext.svc.cluster.local.",
                RecordType::A,
                false,
            )
            .await;
            match answer.answers.first().map(|r| &r.data) {
                Some(RData::CNAME(target)) if target.0.to_ascii() == "db.example.org." => Ok(()),
                _ => Err(format!("{answer:?}")),
            }
        },
    )
    .await;
    eprintln!("commit -> follower DNS answer in {:?}", started.elapsed());
    // Every replica answers the same.
    let mut seen = Vec::new();
    for replica in &cluster.replicas {
        seen.push(addresses(
            &query(&replica.dns_addr, name, RecordType::A, true).await,
        ));
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "replicas disagree");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_looks_names_up() {
    let cluster = crate::harness::Cluster::start(1).await;
    let dns = cluster.replica(1).dns_addr.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::harness::binary())
                .args(args)
                .output()
                .unwrap()
        })
    };
    let args = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let found = run(args(format!(
        "dns lookup leader.managers.cluster.local --dns {dns}"
    )))
    .await
    .unwrap();
    assert!(found.status.success(), "{found:?}");
    let out = String::from_utf8_lossy(&found.stdout);
    assert!(out.contains("NOERROR") || out.contains("No Error"), "{out}");
    assert!(out.contains("127.0.0.1"), "{out}");
    let json = run(args(format!(
        "--output json dns lookup cluster.local --type SOA --tcp --dns {dns}"
    )))
    .await
    .unwrap();
    assert!(json.status.success());
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["records"][0]["type"], "SOA");
    let missing = run(args(format!(
        "dns lookup nothing.x.svc.cluster.local --dns {dns}"
    )))
    .await
    .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A local NSD serving `upstream.test` on a loopback port: the upstream
/// resolver of the forwarding test (never an outside address).
struct Nsd {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Nsd {
    fn start() -> Nsd {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::harness::free_port();
        let path = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("upstream.zone"),
            "$ORIGIN upstream.test.\n$TTL 60\n@ IN SOA ns.upstream.test. host.upstream.test. 1 60 60 60 60\n@ IN NS ns.upstream.test.\nns IN A 127.0.0.1\nwww IN A 192.0.2.7\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{path}\"\n  database: \"\"\n  pidfile: \"{path}/nsd.pid\"\n  xfrdfile: \"{path}/xfrd.state\"\n  zonelistfile: \"{path}/zone.list\"\n  logfile: \"{path}/nsd.log\"\nremote-control:\n  control-enable: no\nzone:\n  name: upstream.test\n  zonefile: {path}/upstream.zone\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("nsd")
            .args(["-d", "-c"])
            .arg(dir.path().join("nsd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nsd is required for the forwarding test (Debian package nsd; scripts/test.sh installs it)");
        Nsd {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_outside_the_domain_are_forwarded_upstream() {
    let nsd = Nsd::start();
    eventually("nsd answers", Duration::from_secs(10), || async {
        let options = QueryOptions {
            timeout: Duration::from_millis(300),
            ..QueryOptions::default()
        };
        match client::query(
            nsd.addr.parse().unwrap(),
            "www.upstream.test",
            RecordType::A,
            options,
        )
        .await
        {
            Ok(answer) if !answer.answers.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let tuning = crate::harness::Tuning {
        extra_toml: format!("[dns]\nupstreams = [{:?}]\n", nsd.addr),
        ..Default::default()
    };
    let cluster = crate::harness::Cluster::start_with(1, tuning).await;
    let dns = cluster.replica(1).dns_addr.clone();
    for tcp in [false, true] {
        let answer = query(&dns, "www.upstream.test.", RecordType::A, tcp).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{answer:?}"
        );
        assert_eq!(
            addresses(&answer),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert!(answer.metadata.recursion_available);
    }
    let missing = query(&dns, "nope.upstream.test.", RecordType::A, false).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    // The cluster's own names are still answered locally.
    let own = query(&dns, "leader.managers.cluster.local.", RecordType::A, false).await;
    assert!(own.metadata.authoritative);
}

/// Asks `server` over UDP for the A records of `name`, spelled as given,
/// with message id `id`.
async fn ask_with_id(server: &str, name: &str, id: u16) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&message.to_vec().unwrap()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut reply))
        .await
        .expect("the DNS server answers")
        .unwrap();
    Message::from_vec(&reply[..n]).unwrap()
}

/// A question asked again is answered from the whole answer kept for it:
/// with the asker's id and spelling, and never from a state older than the
/// replica's.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_questions_get_their_own_id_and_the_newest_answer() {
    let mut cluster = crate::harness::Cluster::start(3).await;
    let client = cluster.client();
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.replicas.iter().find(|r| r.id != leader).unwrap();
    let dns = follower.dns_addr.clone();
    let put = |addresses: &[&str]| {
        let spec =
            serde_json::from_value(json!({"kind": "external", "addresses": addresses})).unwrap();
        let client = client.clone();
        async move { client.service_put("ext", "web", &spec, None).await.unwrap() }
    };
    let name = "web.ext.svc.cluster.local.";
    let old: Vec<IpAddr> = vec!["10.30.0.1".parse().unwrap(), "10.30.0.2".parse().unwrap()];
    put(&["10.30.0.1", "10.30.0.2"]).await;
    eventually(
        "the follower answers web",
        Duration::from_secs(10),
        || async {
            let answer = ask_with_id(&dns, name, 1).await;
            (addresses(&answer) == old)
                .then_some(())
                .ok_or(format!("{answer:?}"))
        },
    )
    .await;
    for id in 2..=40u16 {
        let answer = ask_with_id(&dns, name, id).await;
        assert_eq!(answer.metadata.id, id);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&answer), old);
    }
    // A resolver mixing the case of the name (0x20) gets it back as asked.
    let mixed = "WeB.eXt.SvC.cluster.local.";
    for id in [41u16, 42] {
        let answer = ask_with_id(&dns, mixed, id).await;
        assert_eq!(answer.metadata.id, id);
        assert_eq!(answer.queries[0].name().to_ascii(), mixed);
        assert_eq!(addresses(&answer), old);
    }

    put(&["10.30.0.3"]).await;
    let new: Vec<IpAddr> = vec!["10.30.0.3".parse().unwrap()];
    let mut id = 100u16;
    eventually(
        "the follower answers the new address",
        Duration::from_secs(10),
        || {
            id += 1;
            let id = id;
            let dns = dns.clone();
            let new = new.clone();
            async move {
                let answer = ask_with_id(&dns, name, id).await;
                assert_eq!(answer.metadata.id, id);
                (addresses(&answer) == new)
                    .then_some(())
                    .ok_or(format!("{answer:?}"))
            }
        },
    )
    .await;
    for id in 1000..1040u16 {
        let answer = ask_with_id(&dns, name, id).await;
        assert_eq!(answer.metadata.id, id);
        assert_eq!(addresses(&answer), new, "an older answer came back");
    }
}

/// The query for `name` (A) as sent from `local`, an address of this
/// machine (any 127.x address works on loopback), over UDP or TCP.
async fn query_from(local: &str, server: &str, name: &str, tcp: bool) -> Message {
    Message::from_vec(&exchange_from(local, server, name, tcp).await).unwrap()
}

/// [`query_from`]'s answer as the bytes received.
async fn exchange_from(local: &str, server: &str, name: &str, tcp: bool) -> Vec<u8> {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = message.to_vec().unwrap();
    let server: std::net::SocketAddr = server.parse().unwrap();
    let local: std::net::SocketAddr = local.parse().unwrap();
    let exchange = async {
        if tcp {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(local).unwrap();
            let mut stream = socket.connect(server).await.unwrap();
            stream
                .write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&bytes).await.unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut reply).await.unwrap();
            reply
        } else {
            let socket = tokio::net::UdpSocket::bind(local).await.unwrap();
            socket.connect(server).await.unwrap();
            socket.send(&bytes).await.unwrap();
            let mut reply = vec![0u8; 4096];
            let n = socket.recv(&mut reply).await.unwrap();
            reply.truncate(n);
            reply
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the DNS server answers")
}

/// An upstream resolver on loopback (UDP) that answers every query with
/// 192.0.2.99 — after two forgeries a fast attacker might send: the same
/// answer from another port holding 6.6.6.6, and one with a wrong id
/// holding 6.6.6.7. Counts the queries it gets.
async fn forging_upstream() -> (String, Arc<AtomicUsize>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let queries = Arc::new(AtomicUsize::new(0));
    let counted = queries.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        loop {
            let Ok((n, client)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buffer[..n]) else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = |id: u16, ip: [u8; 4]| {
                let mut reply = Message::new(id, MessageType::Response, OpCode::Query);
                for q in &query.queries {
                    reply.add_query(q.clone());
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(std::net::Ipv4Addr::from(ip).into()),
                    ));
                }
                reply.to_vec().unwrap()
            };
            let id = query.metadata.id;
            let _ = forger.send_to(&answer(id, [6, 6, 6, 6]), client).await;
            let _ = socket
                .send_to(&answer(id.wrapping_add(1), [6, 6, 6, 7]), client)
                .await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = socket.send_to(&answer(id, [192, 0, 2, 99]), client).await;
        }
    });
    (addr, queries)
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_serves_forward_from_only_and_ignores_forged_replies() {
    let (upstream, upstream_queries) = forging_upstream().await;
    // Only 127.0.0.1 may have names forwarded: 127.0.0.2 stands for a
    // client outside `forward_from`.
    let tuning = crate::harness::Tuning {
        extra_toml: format!(
            "[dns]\nupstreams = [{upstream:?}]\nforward_from = [\"127.0.0.1/32\"]\nmax_forwards = 16\n"
        ),
        ..Default::default()
    };
    let cluster = crate::harness::Cluster::start_with(1, tuning).await;
    let dns = cluster.replica(1).dns_addr.clone();

    // An allowed client gets the real answer: the forgery from another
    // port and the one with a wrong id are ignored.
    let answer = query_from("127.0.0.1:0", &dns, "www.fake.test.", false).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NoError,
        "{answer:?}"
    );
    assert_eq!(
        addresses(&answer),
        vec!["192.0.2.99".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(upstream_queries.load(Ordering::SeqCst), 1);

    // Another source is refused, over UDP and TCP, and nothing is asked
    // upstream for it; the cluster's own names still answer it.
    for tcp in [false, true] {
        let refused = query_from("127.0.0.2:0", &dns, "www.fake.test.", tcp).await;
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "tcp {tcp}: {refused:?}"
        );
        assert!(refused.answers.is_empty());
    }
    assert_eq!(upstream_queries.load(Ordering::SeqCst), 1);
    let own = query_from("127.0.0.2:0", &dns, "leader.managers.cluster.local.", false).await;
    assert_eq!(own.metadata.response_code, ResponseCode::NoError);
    assert!(own.metadata.authoritative);
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_resolve_cluster_names() {
    // One replica also serves the Docker bridge gateway's port 53 and hands
    // that address to managed containers as their resolver.
    // The default bridge's gateway: its configured Gateway, else the first
    // address of its subnet (what dockerd gives docker0).
    let ipam = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let gateway = ipam
        .split_whitespace()
        .find_map(|part| part.parse::<std::net::Ipv4Addr>().ok())
        .or_else(|| {
            let subnet = ipam.split_whitespace().find(|p| p.contains('/'))?;
            let base: std::net::Ipv4Addr = subnet.split('/').next()?.parse().ok()?;
            Some(std::net::Ipv4Addr::from(u32::from(base) + 1))
        })
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    if crate::docker_env::docker().await.is_none() {
        return;
    }
    assert!(!gateway.is_empty(), "no gateway on Docker's bridge network");
    let tuning = crate::harness::Tuning {
        extra_toml: format!(
            "[dns]\nextra_addrs = [\"{gateway}:53\"]\ncontainer_resolvers = [\"{gateway}\"]\n"
        ),
        ..Default::default()
    };
    let Some(env) = DockerCluster::start_with(1, tuning).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = serde_json::from_value(json!({"image": ECHO_IMAGE, "replicas": 1, "ports": [{"name": "http", "container_port": 8080}]})).unwrap();
    client.service_put("d2", "echo", &spec, None).await.unwrap();
    let running = env.wait_running("echo", 1, Duration::from_secs(30)).await;
    let dns = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{json .HostConfig.Dns}}", &running[0].id])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dns.stdout).trim(),
        format!("[\"{gateway}\"]"),
        "managed containers get the cluster's resolver"
    );
    eventually(
        "the instance is in DNS",
        Duration::from_secs(10),
        || async {
            let answer = query(
                &env.cluster.replica(1).dns_addr,
                "echo.d2.svc.cluster.local.",
                RecordType::A,
                false,
            )
            .await;
            if answer.answers.is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    // From inside a container with the same resolver: busybox nslookup.
    let name = format!("rv-dns-probe-{}", std::process::id());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--name",
                &name,
                "--label",
                "raftvisor.test=dns",
                "--dns",
                &gateway,
                "--entrypoint",
                "nslookup",
                "raftvisor:local",
                "echo.d2.svc.cluster.local",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "nslookup inside a container failed: {text}"
    );
    assert!(text.contains("127.0.0.1"), "{text}");
}

/// A hickory resolver that asks only `server` (UDP, falling back to TCP).
fn resolver(
    server: &str,
) -> hickory_resolver::Resolver<hickory_resolver::net::runtime::TokioRuntimeProvider> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let addr: std::net::SocketAddr = server.parse().unwrap();
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
    name_server.connections = vec![udp, tcp];
    hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_resolver_gets_truncated_answers_over_tcp_and_nxdomain() {
    let cluster = crate::harness::Cluster::start(3).await;
    let client = cluster.client();
    let many: Vec<String> = (0..80).map(|i| format!("10.30.0.{}", i + 1)).collect();
    let spec = serde_json::from_value(json!({"kind": "external", "addresses": many})).unwrap();
    client.service_put("ext", "big", &spec, None).await.unwrap();
    for replica in &cluster.replicas {
        let resolver = resolver(&replica.dns_addr);
        eventually(
            "the resolver sees all 80 addresses",
            Duration::from_secs(10),
            || async {
                match resolver.lookup_ip("big.ext.svc.cluster.local.").await {
                    Ok(found) if found.iter().count() == 80 => Ok(()),
                    other => Err(format!("{:?}", other.map(|f| f.iter().count()))),
                }
            },
        )
        .await;
        let missing = resolver.lookup_ip("ghost.ext.svc.cluster.local.").await;
        assert!(missing.is_err(), "an unknown name resolved: {missing:?}");
    }
}
