//! Packet delay between managers. The kernels here have no `netem` qdisc,
//! so delay is made the way a slow network would make it at the TCP level:
//! every manager's connections to every peer port are redirected (DNAT in
//! its namespace) to a proxy on the host that holds each chunk for the
//! fault's delay before passing it on, in both directions. Connections open
//! before the fault are reset so they are made again through the proxies;
//! stopping the fault drops the redirections and closes the proxies, and
//! the managers reconnect directly. The proof: the proxies carried peer
//! traffic, and how much they held back.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Context, Started, Undo};
use crate::cluster::PEER_PORT;
use crate::net;

/// What the proxies of one fault carried.
#[derive(Default, Debug)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
}

/// The running proxies of an active delay fault.
pub struct ActiveDelay {
    tasks: JoinSet<()>,
    pub stats: Arc<ProxyStats>,
    pub delay: Duration,
    managers: Vec<u64>,
}

/// A proxy on `listener` to `target` that holds every chunk for `delay`.
async fn proxy(
    listener: TcpListener,
    target: SocketAddrV4,
    delay: Duration,
    stats: Arc<ProxyStats>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                pipe(in_read, out_write, delay, stats.clone()),
                pipe(out_read, in_write, delay, stats),
            );
        });
        // Reap finished connections so the set does not grow for ever.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    stats: Arc<ProxyStats>,
) {
    let (send, mut receive) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if send
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = receive.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            stats.chunks.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

pub async fn start(ctx: &Arc<Context>, rng: &mut StdRng) -> anyhow::Result<Option<Started>> {
    let nodes = super::partition::running_members(ctx).await;
    if nodes.len() < 2 {
        return Ok(None);
    }
    let delay = Duration::from_millis(rng.gen_range(10..=50));
    let stats = Arc::new(ProxyStats::default());
    let mut tasks = JoinSet::new();
    let gateway = ctx.cluster.gateway;
    let ip = |id: u64| ctx.cluster.manager(id).map(|m| m.ip);
    let mut first_pid = None;
    for &from in &nodes {
        let Ok(pid) = super::partition::pid_of(ctx, from).await else {
            continue;
        };
        first_pid.get_or_insert(pid);
        net::prepare(pid).await?;
        for &to in nodes.iter().filter(|&&to| to != from) {
            let Some(target_ip) = ip(to) else { continue };
            let listener = TcpListener::bind((gateway, 0)).await?;
            let port = listener.local_addr()?.port();
            let target = SocketAddrV4::new(target_ip, PEER_PORT);
            tasks.spawn(proxy(listener, target, delay, stats.clone()));
            net::redirect(pid, target, SocketAddrV4::new(gateway, port)).await?;
        }
    }
    *ctx.delay.lock().await = Some(ActiveDelay {
        tasks,
        stats: stats.clone(),
        delay,
        managers: nodes.clone(),
    });
    // Heartbeats flow every few milliseconds: within a second every link
    // must have reconnected through its proxy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connections = stats.connections.load(Ordering::Relaxed);
    let chunks = stats.chunks.load(Ordering::Relaxed);
    // Said in every delay fault's proof: why packets are not delayed by
    // the kernel itself here.
    let netem = match first_pid {
        Some(pid) => match net::netem_available(pid).await {
            Ok(()) => {
                "available (the proxy is used all the same, for one method everywhere)".to_string()
            }
            Err(e) => format!("not available: {e}"),
        },
        None => "not checked".to_string(),
    };
    Ok(Some(Started {
        targets: json!({ "managers": nodes, "delay_ms_each_way": delay.as_millis() as u64 }),
        proof: json!({
            "method": "a delaying TCP proxy on every peer link",
            "tc_netem": netem,
            "proxied_connections": connections,
            "delayed_chunks_in_first_second": chunks,
        }),
        effective: connections > 0 && chunks > 0,
        undo: Undo::StopDelay,
    }))
}

/// Drops the redirections and closes the proxies (and their connections).
pub async fn stop(ctx: &Arc<Context>) -> anyhow::Result<serde_json::Value> {
    let Some(mut active) = ctx.delay.lock().await.take() else {
        return Ok(json!(null));
    };
    super::partition::heal(ctx, &active.managers).await?;
    active.tasks.shutdown().await;
    Ok(json!({
        "delay_ms_each_way": active.delay.as_millis() as u64,
        "proxied_connections": active.stats.connections.load(Ordering::Relaxed),
        "delayed_chunks": active.stats.chunks.load(Ordering::Relaxed),
        "delayed_bytes": active.stats.bytes.load(Ordering::Relaxed),
    }))
}
