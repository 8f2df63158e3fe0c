//! A raftvisor replica serving a generated cluster zone over DNS, for the
//! DNS benchmark (`scripts/bench-dns.sh`).
//!
//! One in-process, single-member replica (Raft log and state machine on disk
//! in a temporary directory, fsync included, supervisor off: nothing dials
//! the fake node endpoints or touches the fake instances) gets, through Raft
//! (`Replica::write`, `--concurrency` services at once, their writes batched
//! by the replica's writer):
//!
//! - NODES nodes `node0..`, node K with address `127.0.1.(K+1)` and a Docker
//!   endpoint `tcp://127.0.0.1:(29501+K)` that is never dialled;
//! - SERVICES container services `svc0..` in namespace `default`, each with
//!   REPLICAS replicas and one TCP port named `http` (container port 8080,
//!   SRV weight 1);
//! - slot S of service I placed (`PlaceSlot`) on node `(I+S) % NODES`,
//!   then reported running (`SetInstanceStatus` with the generation the
//!   placement assigned) with the node's address, as the supervisor does, and
//!   host port `20000 + (I*REPLICAS+S) % 40000`.
//!
//! With `--measure-lookups N` it first times, in process, the zone lookup and
//! the leader lookup the handler does for every query.
//!
//! It then serves DNS on `--dns` (UDP and TCP) with the production handler
//! (`raftvisor::dns::server`), so `svcI.default.svc.cluster.local` has the
//! REPLICAS node addresses as A records and
//! `_http._tcp.svcI.default.svc.cluster.local` REPLICAS SRV records with
//! targets `nodeK.node.cluster.local`. The benchmark tool
//! (`scripts/benchtool/bench_dns.py`, `zone`) writes the same zone as a zone
//! file for nsd and knot; the two layouts must stay equal.
//!
//! Prints `ready` on stdout once every write is committed and a query over
//! UDP got the expected answer, then serves until SIGINT/SIGTERM or
//! `--hold-seconds`.
//!
//!     cargo run --release --example dns_zone -- --dns 127.0.0.1:5391 \
//!         --services 1000 --replicas 3 [--hold-seconds N]
//!
//! Exit status 1 when the replica does not start, a write is refused or
//! fails, the setup exceeds `--setup-timeout-seconds`, or the self-check
//! query gets a wrong answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use raftvisor::config::{AgentConfig, LoopbackPorts};
use raftvisor::dns::records::{Want, Zone};
use raftvisor::dns::server::{bind, serve, Handler};
use raftvisor::replica::Replica;
use raftvisor::state::{
    Command, InstanceState, InstanceStatus, NodeSpec, Outcome, Protocol, PublishedPort, ServiceSpec,
};

/// First port of the (never dialled) node Docker endpoints.
const FIRST_NODE_PORT: u16 = 29_501;
/// The published host port of instance `n` is `FIRST_HOST_PORT + n % 40000`.
const FIRST_HOST_PORT: u32 = 20_000;
const NAMESPACE: &str = "default";
const DOMAIN: &str = "cluster.local";
const TTL_SECS: u32 = 5;

#[derive(Parser, Debug)]
#[command(about = "Serve a generated raftvisor zone over DNS (benchmark helper)")]
struct Args {
    /// Address to serve DNS on (UDP and TCP), e.g. 127.0.0.1:5391.
    #[arg(long)]
    dns: SocketAddr,
    /// Number of services `svc0..`.
    #[arg(long, default_value_t = 1000)]
    services: u32,
    /// Replicas (instances) per service, at most --nodes.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Number of nodes `node0..` (1-254).
    #[arg(long, default_value_t = 10)]
    nodes: u32,
    /// Services populated at once (each with up to --replicas writes in
    /// flight).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop serving after this many seconds (default: until a signal).
    #[arg(long)]
    hold_seconds: Option<u64>,
    /// Before serving, time this many in-process zone lookups (each of A
    /// and SRV, through `Zone::lookup` under the state machine's read lock)
    /// and calls of `Replica::leader()`, the work the handler does per
    /// query besides the protocol, and print the cost per call on stderr.
    #[arg(long, default_value_t = 0)]
    measure_lookups: u32,
    /// Give up when the writes and the self-check take longer than this.
    #[arg(long, default_value_t = 300)]
    setup_timeout_seconds: u64,
}

fn node_name(k: u32) -> String {
    format!("node{k}")
}

fn node_address(k: u32) -> String {
    format!("127.0.1.{}", k + 1)
}

fn main() {
    let args = Args::parse();
    if args.services == 0 || args.replicas == 0 || args.concurrency == 0 {
        eprintln!("--services, --replicas and --concurrency must be positive");
        std::process::exit(2);
    }
    if args.nodes == 0 || args.nodes > 254 || args.replicas > args.nodes {
        eprintln!("--nodes must be 1-254 and at least --replicas (one instance per node)");
        std::process::exit(2);
    }
    raftvisor::logging::to_stderr(None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(&args));
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Err(message) = result {
        eprintln!("dns_zone: {message}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    // Bind first: a port in use is reported before anything is written.
    let sockets = bind(&args.dns.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("raftvisor-dns-zone.")
        .tempdir()
        .map_err(|e| format!("temporary data directory: {e}"))?;
    // A single member: it elects itself; its peer and API addresses are
    // never bound or dialled.
    let ports = LoopbackPorts {
        dns: args.dns.port(),
        ..LoopbackPorts::from_api(29201)
    };
    let mut config = AgentConfig::loopback(1, dir.path().join("replica-1"), ports, &[(1, ports)]);
    config.dns_addr = args.dns;
    config.supervisor.enabled = false;
    config.dns.enabled = true;
    config.dns.domain = DOMAIN.into();
    config.dns.ttl_secs = TTL_SECS;
    let replica = Replica::start(config, raftvisor::raft::network::PeerNetwork::new(None))
        .await
        .map_err(|e| format!("the replica did not start: {e}"))?;
    // The cluster id and the managers, written once it leads.
    let housekeeping = tokio_util::sync::CancellationToken::new();
    let _stop_housekeeping = housekeeping.clone().drop_guard();
    tokio::spawn(raftvisor::reconcile::housekeeping::run(
        replica.clone(),
        housekeeping,
    ));

    let setup = Duration::from_secs(args.setup_timeout_seconds);
    let started = Instant::now();
    let outcome = tokio::time::timeout(setup, async {
        populate(&replica, args).await?;
        if args.measure_lookups > 0 {
            measure_lookups(&replica, args);
        }
        let server = serve(
            Handler::new(replica.clone(), DOMAIN, TTL_SECS, args.dns.ip()),
            vec![sockets],
        );
        self_check(args).await?;
        Ok::<_, String>(server)
    })
    .await;
    let mut server = match outcome {
        Ok(Ok(server)) => server,
        Ok(Err(message)) => {
            let _ = replica.raft.shutdown().await;
            return Err(message);
        }
        Err(_) => {
            let _ = replica.raft.shutdown().await;
            return Err(format!(
                "the setup took longer than {} s",
                args.setup_timeout_seconds
            ));
        }
    };
    let applied = replica.sm.read(|s| s.applied_index);
    eprintln!(
        "dns_zone: {} services x {} instances on {} nodes committed (applied index {applied}) \
         in {:.1} s; serving DNS on {}",
        args.services,
        args.replicas,
        args.nodes,
        started.elapsed().as_secs_f64(),
        args.dns
    );
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let hold = async {
        match args.hold_seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending::<()>().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    tokio::select! {
        _ = hold => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
    let _ = replica.raft.shutdown().await;
    drop(dir);
    Ok(())
}

/// Applies `command` through Raft; a refused command is an error.
async fn write(replica: &Replica, command: Command) -> Result<Outcome, String> {
    let what = format!("{command:?}");
    let applied = replica
        .write(command)
        .await
        .map_err(|e| format!("write failed: {e}: {what:.120}"))?;
    match applied.outcome {
        Outcome::Rejected(reason) => Err(format!("write refused: {reason}: {what:.120}")),
        Outcome::NotFound | Outcome::VersionMismatch { .. } => Err(format!(
            "write refused ({:?}): {what:.120}",
            applied.outcome
        )),
        outcome => Ok(outcome),
    }
}

/// Registers the nodes, then for every service (several at once): the
/// service, its placements and its running statuses.
async fn populate(replica: &Arc<Replica>, args: &Args) -> Result<(), String> {
    // Leader, and the cluster id (written by the replica's housekeeping once
    // it leads).
    let ready_by = Instant::now() + Duration::from_secs(30);
    while replica.sm.read(|s| s.cluster_id.is_none()) {
        if Instant::now() > ready_by {
            return Err("the single-member cluster did not elect itself within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..args.nodes {
        let spec = NodeSpec {
            provider: "static".into(),
            docker_endpoint: format!("tcp://127.0.0.1:{}", FIRST_NODE_PORT as u32 + k),
            address: Some(node_address(k)),
            region: None,
            zone: None,
            labels: BTreeMap::new(),
            capacity: Default::default(),
            docker_tls: None,
        };
        write(
            replica,
            Command::PutNode {
                name: node_name(k),
                spec,
                expected_version: None,
            },
        )
        .await?;
    }
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "image": "raftvisor-echo:local",
        "replicas": args.replicas,
        "ports": [{"name": "http", "container_port": 8080}]
    }))
    .map_err(|e| format!("service spec: {e}"))?;

    let results: Vec<Result<(), String>> = futures::stream::iter(0..args.services)
        .map(|i| {
            let replica = replica.clone();
            let spec = spec.clone();
            async move { populate_service(&replica, &spec, i, args).await }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    if let Some(first) = results.into_iter().find_map(Result::err) {
        return Err(first);
    }

    let expected = args.services as usize * args.replicas as usize;
    let running = replica.sm.read(|s| {
        s.instances
            .values()
            .filter(|i| i.namespace == NAMESPACE && i.state == InstanceState::Running)
            .count()
    });
    if running != expected {
        return Err(format!(
            "{running} instances are running after the writes, not {expected}"
        ));
    }
    Ok(())
}

async fn populate_service(
    replica: &Replica,
    spec: &ServiceSpec,
    i: u32,
    args: &Args,
) -> Result<(), String> {
    let service = format!("svc{i}");
    write(
        replica,
        Command::PutService {
            namespace: NAMESPACE.into(),
            name: service.clone(),
            spec: spec.clone(),
            expected_version: None,
        },
    )
    .await?;
    let placements = futures::future::join_all((0..args.replicas).map(|slot| {
        write(
            replica,
            Command::PlaceSlot {
                namespace: NAMESPACE.into(),
                service: service.clone(),
                slot,
                node: node_name((i + slot) % args.nodes),
            },
        )
    }))
    .await;
    let mut statuses = Vec::new();
    for (slot, placed) in (0..args.replicas).zip(placements) {
        let Outcome::Instance(instance) = placed? else {
            return Err(format!(
                "placing slot {slot} of {service} did not return the instance"
            ));
        };
        let k = (i + slot) % args.nodes;
        let n = i * args.replicas + slot;
        let host_port = (FIRST_HOST_PORT + n % 40_000) as u16;
        statuses.push(write(
            replica,
            Command::SetInstanceStatus {
                id: instance.id.clone(),
                generation: instance.generation,
                status: InstanceStatus {
                    state: InstanceState::Running,
                    container_id: Some(format!("{:012x}", n + 1)),
                    restarts: 0,
                    last_exit: None,
                    address: Some(node_address(k)),
                    ports: vec![PublishedPort {
                        name: "http".into(),
                        container_port: 8080,
                        host_port,
                        protocol: Protocol::Tcp,
                    }],
                    spec_version: instance.spec_version,
                    restart_epoch: instance.restart_epoch,
                },
            },
        ));
    }
    for status in futures::future::join_all(statuses).await {
        status?;
    }
    Ok(())
}

/// Times what the handler does per query outside the DNS protocol: the
/// leader lookup (`Replica::leader()`, called for every query) and the zone
/// lookup under the read lock, for random A and SRV names of the zone.
fn measure_lookups(replica: &Replica, args: &Args) {
    let n = args.measure_lookups;
    let names: Vec<u32> = (0..n)
        .map(|_| rand::random::<u32>() % args.services)
        .collect();
    let this_server = args.dns.ip();
    let started = Instant::now();
    let mut leaders = 0usize;
    for _ in 0..n {
        leaders += usize::from(replica.leader().is_some());
    }
    let leader_ns = started.elapsed().as_nanos() as f64 / f64::from(n);
    let leader = replica
        .leader()
        .and_then(|(_, node)| node.api_addr.parse::<SocketAddr>().ok())
        .map(|a| a.ip());
    let mut per_kind = Vec::new();
    for (kind, want) in [("A", Want::A), ("SRV", Want::Srv)] {
        let started = Instant::now();
        let mut records = 0usize;
        for i in &names {
            let name = match want {
                Want::Srv => format!("_http._tcp.svc{i}.{NAMESPACE}.svc.{DOMAIN}."),
                _ => format!("svc{i}.{NAMESPACE}.svc.{DOMAIN}."),
            };
            records += replica.sm.read(|state| {
                Zone {
                    domain: DOMAIN,
                    state,
                    leader,
                    this_server,
                }
                .lookup(&name, want)
                .answers
                .len()
            });
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(n);
        per_kind.push(format!(
            "{kind} {:.1} us ({:.1} records each)",
            ns / 1000.0,
            records as f64 / f64::from(n)
        ));
    }
    eprintln!(
        "dns_zone: in-process cost per call over {n} calls: Replica::leader() {:.2} us \
         (leader known {leaders} times); Zone::lookup under the read lock: {}",
        leader_ns / 1000.0,
        per_kind.join(", ")
    );
}

/// One UDP query for `svc0`'s A records and `_http._tcp.svc0`'s SRV records
/// against the server just started: each must list every replica.
async fn self_check(args: &Args) -> Result<(), String> {
    let a_name = format!("svc0.{NAMESPACE}.svc.{DOMAIN}.");
    let srv_name = format!("_http._tcp.svc0.{NAMESPACE}.svc.{DOMAIN}.");
    for (name, record_type) in [(a_name, RecordType::A), (srv_name, RecordType::SRV)] {
        let reply = udp_query(args.dns, &name, record_type).await?;
        let count = reply
            .answers
            .iter()
            .filter(|r| {
                matches!(
                    (&r.data, record_type),
                    (RData::A(_), RecordType::A) | (RData::SRV(_), RecordType::SRV)
                )
            })
            .count();
        if reply.metadata.response_code != ResponseCode::NoError || count != args.replicas as usize
        {
            return Err(format!(
                "self-check: {name} {record_type} answered {:?} with {count} records, not {}",
                reply.metadata.response_code, args.replicas
            ));
        }
    }
    Ok(())
}

async fn udp_query(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
) -> Result<Message, String> {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    let qname = Name::from_ascii(name).map_err(|e| format!("{name}: {e}"))?;
    message.add_query(Query::query(qname, record_type));
    let bytes = message
        .to_vec()
        .map_err(|e| format!("encoding a query: {e}"))?;
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => "127.0.0.1:0",
        IpAddr::V6(_) => "[::1]:0",
    }
    .parse()
    .expect("a socket address");
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("self-check socket: {e}"))?;
    for _ in 0..5 {
        socket
            .send_to(&bytes, server)
            .await
            .map_err(|e| format!("self-check send: {e}"))?;
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Message::from_vec(&buf).map_err(|e| format!("self-check reply: {e}"));
        }
    }
    Err(format!(
        "self-check: no answer from {server} for {name} in 5 tries"
    ))
}
