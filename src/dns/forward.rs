//! Forwarding of names outside the cluster's domain to the configured
//! upstream resolvers, so containers can use raftvisor as their only
//! resolver — without making every replica an open resolver:
//!
//! - only clients in `[dns] forward_from` (networks, by default loopback
//!   and Docker's default address pool 172.16.0.0/12) are served; others
//!   get REFUSED;
//! - at most `[dns] max_forwards` queries wait for upstreams at once; a
//!   query beyond that gets SERVFAIL at once (no task, no socket for it);
//! - a reply counts only if it comes from the upstream's address and port
//!   (a connected socket), carries the query's random id and echoes its
//!   question ([`super::client::query`]); anything else is ignored until
//!   the timeout.
//!
//! It never answers names of the cluster's own domain: those come from the
//! local state ([`super::records`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::Message;
use hickory_server::proto::rr::RecordType;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long one upstream may take to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);

/// An IP network, `address/prefix` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// A `[dns] forward_from` entry that is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dns.forward_from: {text:?} is not a network (address/prefix, e.g. 10.0.0.0/8)")]
pub struct BadNetwork {
    pub text: String,
}

impl std::str::FromStr for Network {
    type Err = BadNetwork;

    fn from_str(text: &str) -> Result<Network, BadNetwork> {
        let bad = || BadNetwork {
            text: text.to_string(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| bad())?,
            None => bits,
        };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` lies in this network (an IPv4 address written as
    /// IPv4-mapped IPv6, as a dual-stack socket reports it, counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (net, ip, bits): (u128, u128, u32) = match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (u32::from(net).into(), u32::from(ip).into(), 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => (net.into(), ip.into(), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        net & mask == ip & mask
    }
}

/// Parses `[dns] forward_from`.
pub fn networks(texts: &[String]) -> Result<Vec<Network>, BadNetwork> {
    texts.iter().map(|text| text.parse()).collect()
}

/// What a query for a name outside the domain may get.
#[derive(Debug)]
pub enum Admission {
    /// The client is outside `forward_from`: REFUSED.
    Refused,
    /// `max_forwards` queries are already waiting for upstreams: SERVFAIL.
    Busy,
    /// Ask the upstreams, holding this slot until the answer is sent.
    Granted(OwnedSemaphorePermit),
}

/// The upstream resolvers and the rules for using them.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    from: Vec<Network>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Forwarder {
    /// Forwards to `upstreams` (tried in order) for clients in `from`, at
    /// most `max_forwards` at once.
    pub fn new(upstreams: Vec<SocketAddr>, from: Vec<Network>, max_forwards: usize) -> Forwarder {
        Forwarder {
            upstreams,
            from,
            slots: Arc::new(Semaphore::new(max_forwards)),
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    /// From the agent's `[dns]` settings `upstreams`, `forward_from` and
    /// `max_forwards` (validated at start); `None` without upstreams.
    pub fn from_settings(
        upstreams: &[String],
        forward_from: &[String],
        max_forwards: usize,
    ) -> Option<Forwarder> {
        let upstreams: Vec<SocketAddr> = upstreams.iter().filter_map(|a| a.parse().ok()).collect();
        if upstreams.is_empty() {
            return None;
        }
        let from = networks(forward_from).unwrap_or_default();
        Some(Forwarder::new(upstreams, from, max_forwards))
    }

    /// Whether a query from `client` may be forwarded now.
    pub fn admit(&self, client: IpAddr) -> Admission {
        if !self.from.iter().any(|net| net.contains(client)) {
            return Admission::Refused;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Admission::Granted(permit),
            Err(_) => Admission::Busy,
        }
    }

    /// Asks the upstream resolvers in turn; the first matching answer wins.
    pub async fn ask(
        &self,
        name: &str,
        record_type: RecordType,
        tcp: bool,
        edns_payload: Option<u16>,
    ) -> Option<Message> {
        let options = super::client::QueryOptions {
            tcp,
            edns_payload,
            timeout: self.timeout,
        };
        for upstream in &self.upstreams {
            match super::client::query(*upstream, name, record_type, options).await {
                Ok(answer) => return Some(answer),
                Err(e) => tracing::debug!(%upstream, error = %e, "upstream resolver failed"),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Network> {
        networks(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let defaults = nets(&["127.0.0.0/8", "::1/128", "172.16.0.0/12"]);
        let allowed = |ip: &str| defaults.iter().any(|n| n.contains(ip.parse().unwrap()));
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "172.17.0.2",
            "172.31.255.255",
            "::ffff:127.0.0.1",
            "::ffff:172.18.0.5",
        ] {
            assert!(allowed(ip), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "172.32.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "::2",
            "fe80::1",
        ] {
            assert!(!allowed(ip), "{ip}");
        }
        let host = nets(&["10.1.2.3"]);
        assert!(host[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!host[0].contains("10.1.2.4".parse().unwrap()));
        let everything = nets(&["0.0.0.0/0", "::/0"]);
        assert!(everything
            .iter()
            .any(|n| n.contains("203.0.113.9".parse().unwrap())));
        assert!(everything
            .iter()
            .any(|n| n.contains("2001:db8::1".parse().unwrap())));
        for bad in ["10.0.0.0/33", "::/129", "localhost", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarding_only_for_allowed_sources() {
        let forwarder = Forwarder::new(
            vec!["127.0.0.1:53".parse().unwrap()],
            nets(&["127.0.0.1/32"]),
            4,
        );
        assert!(matches!(
            forwarder.admit("127.0.0.2".parse().unwrap()),
            Admission::Refused
        ));
        assert!(matches!(
            forwarder.admit("127.0.0.1".parse().unwrap()),
            Admission::Granted(_)
        ));
        let nobody = Forwarder::new(vec!["127.0.0.1:53".parse().unwrap()], Vec::new(), 4);
        assert!(matches!(
            nobody.admit("127.0.0.1".parse().unwrap()),
            Admission::Refused
        ));
    }

    #[test]
    fn no_more_forwards_at_once_than_the_cap() {
        let forwarder = Forwarder::new(
            vec!["127.0.0.1:53".parse().unwrap()],
            nets(&["127.0.0.0/8"]),
            3,
        );
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..10 {
            if let Admission::Granted(permit) = forwarder.admit(client) {
                held.push(permit);
            }
        }
        assert_eq!(held.len(), 3, "the cap bounds the queries in flight");
        assert!(matches!(forwarder.admit(client), Admission::Busy));
        // A finished forward frees its slot.
        held.pop();
        assert!(matches!(forwarder.admit(client), Admission::Granted(_)));
    }
}
