//! Network faults inside one manager container's network namespace, set
//! from the host with `nsenter -t <pid> -n iptables …` (FROM-scratch images
//! have no iptables of their own). The harness owns two chains per
//! namespace, `RVJ-IN` and `RVJ-OUT`, hooked first into `INPUT` and
//! `OUTPUT`: every fault adds rules there and healing flushes them, so no
//! rule of a fault outlives it. Also here: the probes that prove a fault
//! took effect (a TCP connection from inside the namespace, the rules'
//! packet counters).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Command;

const IN_CHAIN: &str = "RVJ-IN";
const OUT_CHAIN: &str = "RVJ-OUT";
/// In the `nat` table, hooked into `OUTPUT`: redirections through the
/// harness' delay proxies.
const NAT_CHAIN: &str = "RVJ-NAT";

async fn run(pid: u32, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new("nsenter")
            .arg("-t")
            .arg(pid.to_string())
            .arg("-n")
            .arg("--")
            .arg(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| {
        format!(
            "{program} {} in the namespace of pid {pid} hung",
            args.join(" ")
        )
    })?
    .with_context(|| format!("cannot run nsenter (util-linux) for {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} (pid {pid}): {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn iptables(pid: u32, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["-w", "5"];
    full.extend_from_slice(args);
    run(pid, "iptables", &full).await
}

/// Creates the harness' chains in the namespace of `pid` if they are
/// missing (a restarted container has a new namespace). Existing rules stay.
pub async fn prepare(pid: u32) -> anyhow::Result<()> {
    for (table, chain, hook) in [
        ("filter", IN_CHAIN, "INPUT"),
        ("filter", OUT_CHAIN, "OUTPUT"),
        ("nat", NAT_CHAIN, "OUTPUT"),
    ] {
        if iptables(pid, &["-t", table, "-n", "-L", chain])
            .await
            .is_err()
        {
            iptables(pid, &["-t", table, "-N", chain]).await?;
        }
        if iptables(pid, &["-t", table, "-C", hook, "-j", chain])
            .await
            .is_err()
        {
            iptables(pid, &["-t", table, "-I", hook, "1", "-j", chain]).await?;
        }
    }
    Ok(())
}

/// Sends new TCP connections to `to` instead of `destination`, and resets
/// the connections already open to `destination` so they are made again
/// through `to`.
pub async fn redirect(
    pid: u32,
    destination: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
) -> anyhow::Result<()> {
    let (ip, port) = (destination.ip().to_string(), destination.port().to_string());
    let to = to.to_string();
    iptables(
        pid,
        &[
            "-t",
            "nat",
            "-A",
            NAT_CHAIN,
            "-p",
            "tcp",
            "-d",
            &ip,
            "--dport",
            &port,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ],
    )
    .await?;
    // Redirected packets leave with the proxy's address (DNAT comes
    // first), so only the connections made before are reset here.
    iptables(
        pid,
        &[
            "-A",
            OUT_CHAIN,
            "-p",
            "tcp",
            "-d",
            &ip,
            "--dport",
            &port,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )
    .await?;
    Ok(())
}

/// Drops every packet arriving from `sources`.
pub async fn drop_from(pid: u32, sources: &[Ipv4Addr]) -> anyhow::Result<()> {
    for source in sources {
        let source = source.to_string();
        iptables(pid, &["-A", IN_CHAIN, "-s", &source, "-j", "DROP"]).await?;
    }
    Ok(())
}

/// Drops every TCP packet from `sources` to local port `port` (and only
/// those: answers to connections this namespace opens still arrive).
pub async fn drop_to_port_from(pid: u32, sources: &[Ipv4Addr], port: u16) -> anyhow::Result<()> {
    let port = port.to_string();
    for source in sources {
        let source = source.to_string();
        iptables(
            pid,
            &[
                "-A", IN_CHAIN, "-s", &source, "-p", "tcp", "--dport", &port, "-j", "DROP",
            ],
        )
        .await?;
    }
    Ok(())
}

/// Drops a random `probability` of the packets arriving from `sources`;
/// a counting rule before it records how many arrived in all.
pub async fn lose_from(pid: u32, sources: &[Ipv4Addr], probability: f64) -> anyhow::Result<()> {
    let probability = format!("{probability:.3}");
    for source in sources {
        let source = source.to_string();
        iptables(pid, &["-A", IN_CHAIN, "-s", &source]).await?;
        iptables(
            pid,
            &[
                "-A",
                IN_CHAIN,
                "-s",
                &source,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )
        .await?;
    }
    Ok(())
}

/// Removes every rule of the harness in the namespace of `pid`.
pub async fn heal(pid: u32) -> anyhow::Result<()> {
    prepare(pid).await?;
    iptables(pid, &["-F", IN_CHAIN]).await?;
    iptables(pid, &["-F", OUT_CHAIN]).await?;
    iptables(pid, &["-t", "nat", "-F", NAT_CHAIN]).await?;
    iptables(pid, &["-Z", IN_CHAIN]).await?;
    iptables(pid, &["-Z", OUT_CHAIN]).await?;
    Ok(())
}

/// Packets seen by the harness' rules in the namespace of `pid`:
/// `(dropped, counted)` — packets that hit a DROP rule, and packets that
/// hit a counting rule (no target).
pub async fn counters(pid: u32) -> anyhow::Result<(u64, u64)> {
    let mut dropped = 0;
    let mut counted = 0;
    for chain in [IN_CHAIN, OUT_CHAIN] {
        let listing = iptables(pid, &["-n", "-v", "-x", "-L", chain]).await?;
        let (d, c) = parse_counters(&listing);
        dropped += d;
        counted += c;
    }
    Ok((dropped, counted))
}

fn parse_counters(listing: &str) -> (u64, u64) {
    let mut dropped = 0;
    let mut counted = 0;
    // Rule lines: pkts bytes target prot opt in out source destination …;
    // a rule without target leaves that column out.
    for line in listing.lines().skip(2) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(packets) = fields.first().and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        match fields.get(2) {
            Some(&"DROP") => dropped += packets,
            Some(_) => counted += packets,
            None => {}
        }
    }
    (dropped, counted)
}

/// Whether the kernel offers the `netem` qdisc in the namespace of `pid`
/// (tried on its loopback and removed again), with `tc`'s answer when not.
pub async fn netem_available(pid: u32) -> Result<(), String> {
    let added = run(
        pid,
        "tc",
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    )
    .await;
    match added {
        Ok(_) => {
            let _ = run(pid, "tc", &["qdisc", "del", "dev", "lo", "root"]).await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a TCP connection from inside the namespace of `pid` to
/// `ip:port` completes within `within`.
pub async fn can_connect(pid: u32, ip: Ipv4Addr, port: u16, within: Duration) -> bool {
    let seconds = format!("{:.1}", within.as_secs_f64().max(0.1));
    let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
    run(pid, "timeout", &[&seconds, "bash", "-c", &script])
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_separate_drops_from_counting_rules() {
        let listing = "\
Chain RVJ-IN (1 references)
    pkts      bytes target     prot opt in     out     source               destination
      40     2400            0    --  *      *       10.214.3.12          0.0.0.0/0
      13      780 DROP       0    --  *      *       10.214.3.12          0.0.0.0/0            statistic mode random probability 0.30000000009
       7      420 DROP       0    --  *      *       10.214.3.13          0.0.0.0/0
";
        assert_eq!(parse_counters(listing), (20, 40));
        assert_eq!(
            parse_counters("Chain RVJ-OUT (1 references)\n pkts bytes target\n"),
            (0, 0)
        );
    }
}
