//! The DNS checker: after healing, every member's DNS server must answer
//! what the registry holds — for each service, the A records are the
//! addresses of its running instances and the SRV records their published
//! `http` ports. Answers may trail a commit by a fraction of a second, so
//! each member gets a few seconds to agree; then any difference fails.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use raftvisor::state::InstanceState;
use serde_json::json;
use tokio::time::Instant;

use super::Verdict;
use crate::nemesis::Context;
use crate::workloads::supervisor::{self, services, NAMESPACE};

const DOMAIN: &str = "cluster.local";

/// What a name should resolve to, or what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub addresses: BTreeSet<String>,
    pub ports: Vec<u16>,
}

/// One UDP query; the answer's records.
pub async fn query(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
) -> anyhow::Result<Message> {
    let name = Name::from_ascii(format!("{name}."))?;
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name, record_type));
    let bytes = message.to_vec()?;
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket.send_to(&bytes, server).await?;
    let mut reply = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut reply))
        .await
        .map_err(|_| anyhow::anyhow!("{server} did not answer within 1 s"))??;
    Ok(Message::from_vec(&reply[..n])?)
}

async fn resolve(server: SocketAddr, service: &str) -> anyhow::Result<Answers> {
    let a = query(
        server,
        &format!("{service}.{NAMESPACE}.svc.{DOMAIN}"),
        RecordType::A,
    )
    .await?;
    let srv = query(
        server,
        &format!("_http._tcp.{service}.{NAMESPACE}.svc.{DOMAIN}"),
        RecordType::SRV,
    )
    .await?;
    let mut answers = Answers::default();
    for record in &a.answers {
        if let RData::A(address) = &record.data {
            answers.addresses.insert(address.to_string());
        }
    }
    for record in &srv.answers {
        if let RData::SRV(srv) = &record.data {
            answers.ports.push(srv.port);
        }
    }
    answers.ports.sort_unstable();
    Ok(answers)
}

/// What the registry says `service` should resolve to.
async fn expected(ctx: &Context, service: &str) -> anyhow::Result<Answers> {
    let mut answers = Answers::default();
    for instance in supervisor::instances(ctx, service)
        .await?
        .iter()
        .filter(|i| i.state == InstanceState::Running)
    {
        if let Some(address) = &instance.address {
            answers.addresses.insert(address.clone());
        }
        answers.ports.extend(
            instance
                .ports
                .iter()
                .filter(|p| p.name == "http")
                .map(|p| p.host_port),
        );
    }
    answers.ports.sort_unstable();
    Ok(answers)
}

/// Asks every member until its answers equal the registry, for up to
/// `within` each.
pub async fn check(ctx: &Context, within: Duration) -> Verdict {
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for service in services() {
        let want = match expected(ctx, &service.name).await {
            Ok(want) => want,
            Err(e) => {
                return Verdict::new(
                    "dns",
                    None,
                    format!("the registry could not be read: {e}"),
                    json!({}),
                )
            }
        };
        for id in ctx.members() {
            let Some(manager) = ctx.cluster.manager(id) else {
                continue;
            };
            let deadline = Instant::now() + within;
            let mut last = Err(anyhow::anyhow!("not asked"));
            while Instant::now() < deadline {
                last = resolve(manager.dns_addr(), &service.name).await;
                if matches!(&last, Ok(got) if *got == want) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            checked += 1;
            match last {
                Ok(got) if got == want => {}
                Ok(got) => mismatches.push(json!({
                    "member": id, "service": service.name,
                    "want": { "addresses": want.addresses, "ports": want.ports },
                    "got": { "addresses": got.addresses, "ports": got.ports },
                })),
                Err(e) => mismatches.push(json!({
                    "member": id, "service": service.name, "error": e.to_string(),
                })),
            }
        }
    }
    Verdict::new(
        "dns",
        Some(mismatches.is_empty()),
        format!(
            "{checked} member×service answers checked, {} differ from the registry",
            mismatches.len()
        ),
        json!({ "mismatches": mismatches }),
    )
}
