//! The DNS request handler of a replica: each query is answered from this
//! replica's state machine through [`super::records`] (with an answer
//! cache per zone version), without touching Raft. Answers that do not fit
//! the UDP payload size (512 bytes, or the client's EDNS size up to
//! [`MAX_UDP_PAYLOAD`]) are truncated with TC set, and clients retry over
//! TCP. Names outside the domain go to [`super::forward`]. It never opens
//! a socket: [`super::server`] and [`super::udp`] do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{CNAME, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::cache::{AnswerCache, Built};
use super::forward::{Admission, Forwarder};
use super::ready::ZoneVersion;
use super::records::{Answer, Data, Rec, Want, Zone};
use crate::replica::Replica;

/// Distinct questions remembered per zone version.
const ANSWER_CACHE_CAPACITY: usize = 16_384;

/// Largest UDP answer sent, whatever a client's EDNS size: 1232 bytes
/// (the DNS flag day 2020 figure) fits any path without IP fragmentation
/// and bounds what a spoofed query can reflect; larger answers set TC and
/// the client asks again over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP payload an answer may use for a client that advertised
/// `client` (EDNS), at least the 512 bytes of RFC 1035.
pub fn udp_payload(client: Option<u16>) -> u16 {
    client.map_or(512, |size| size.clamp(512, MAX_UDP_PAYLOAD))
}

/// Answers queries from the replica's state.
pub struct Handler {
    replica: Arc<Replica>,
    domain: String,
    ttl: u32,
    this_server: IpAddr,
    forwarder: Option<Forwarder>,
    cache: AnswerCache,
}

impl Handler {
    pub fn new(replica: Arc<Replica>, domain: &str, ttl: u32, this_server: IpAddr) -> Handler {
        Handler {
            replica,
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            ttl,
            this_server,
            forwarder: None,
            cache: AnswerCache::new(ANSWER_CACHE_CAPACITY),
        }
    }

    /// Forwards names outside the domain through `forwarder` (none: they
    /// are refused).
    pub fn with_forwarder(mut self, forwarder: Option<Forwarder>) -> Handler {
        self.forwarder = forwarder;
        self
    }

    /// Whether `request` may be forwarded: `None` when it needs no
    /// upstream (a name of the domain, or no upstreams configured).
    pub fn admit(&self, request: &Request) -> Option<Admission> {
        let forwarder = self.forwarder.as_ref()?;
        let info = request.request_info().ok()?;
        if super::records::in_zone(&info.query.name().to_string(), &self.domain) {
            return None;
        }
        Some(forwarder.admit(request.src().ip()))
    }

    /// The version of the zone answers are built from now; read before an
    /// answer is built, it is never newer than the answer.
    pub fn zone_version(&self) -> ZoneVersion {
        let (term, leader) = {
            let metrics = self.replica.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_term, metrics.current_leader)
        };
        ZoneVersion {
            term,
            applied: self.replica.sm.applied_index(),
            leader,
        }
    }

    /// The answer to `name` as wire records, or `None` when the name is
    /// outside the zone.
    fn answer(&self, name: &str, record_type: RecordType) -> Option<Arc<Built>> {
        let name = name.to_ascii_lowercase();
        let leader_id = self.replica.raft.metrics().borrow().current_leader;
        self.replica.sm.read(|state| {
            if let Some(hit) = self
                .cache
                .get((state.applied_index, leader_id), &name, record_type)
            {
                return Some(hit);
            }
            // Built with the leader read here, and kept under it.
            let leader = self.replica.leader();
            let version = (state.applied_index, leader.as_ref().map(|(id, _)| *id));
            let leader_ip = leader
                .and_then(|(_, node)| node.api_addr.parse::<SocketAddr>().ok())
                .map(|a| a.ip());
            let answer: Answer = Zone {
                domain: &self.domain,
                state,
                leader: leader_ip,
                this_server: self.this_server,
            }
            .lookup(&name, want(record_type));
            if answer.out_of_zone {
                return None;
            }
            let records = |recs: &[Rec]| recs.iter().filter_map(|r| self.record(r)).collect();
            let built = Arc::new(Built {
                nxdomain: answer.nxdomain,
                answers: records(&answer.answers),
                additionals: records(&answer.additionals),
                soa: answer.soa.iter().filter_map(|r| self.record(r)).collect(),
            });
            self.cache.insert(version, name, record_type, built.clone());
            Some(built)
        })
    }

    fn record(&self, rec: &Rec) -> Option<Record> {
        let name = Name::from_ascii(format!("{}.", rec.name)).ok()?;
        let rdata = match &rec.data {
            Data::Addr(IpAddr::V4(ip)) => RData::A((*ip).into()),
            Data::Addr(IpAddr::V6(ip)) => RData::AAAA((*ip).into()),
            Data::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(
                *priority,
                *weight,
                *port,
                Name::from_ascii(format!("{target}.")).ok()?,
            )),
            Data::Ns(target) => RData::NS(NS(Name::from_ascii(format!("{target}.")).ok()?)),
            Data::Cname(target) => {
                RData::CNAME(CNAME(Name::from_ascii(format!("{target}.")).ok()?))
            }
            Data::Soa {
                mname,
                rname,
                serial,
            } => RData::SOA(SOA::new(
                Name::from_ascii(format!("{mname}.")).ok()?,
                Name::from_ascii(format!("{rname}.")).ok()?,
                *serial,
                60,
                10,
                3600,
                self.ttl,
            )),
        };
        Some(Record::from_rdata(name, self.ttl, rdata))
    }
}

/// The type `request` asks, as a static metric label (no allocation per
/// query on the DNS hot path).
pub(super) fn query_type(request: &Request) -> &'static str {
    request
        .queries
        .queries()
        .first()
        .map_or("none", |q| q.query_type().into())
}

/// The counter of queries of `query_type` answered with `rcode`.
pub(super) fn queries_counted(query_type: &'static str, rcode: ResponseCode) -> metrics::Counter {
    metrics::counter!(
        "raftvisor_dns_queries_total",
        "type" => query_type,
        "rcode" => rcode.to_str()
    )
}

/// The histogram of the time from a query's arrival to its answer.
pub(super) fn query_duration() -> metrics::Histogram {
    metrics::histogram!("raftvisor_dns_query_duration_seconds")
}

fn want(record_type: RecordType) -> Want {
    match record_type {
        RecordType::A => Want::A,
        RecordType::AAAA => Want::Aaaa,
        RecordType::SRV => Want::Srv,
        RecordType::NS => Want::Ns,
        RecordType::SOA => Want::Soa,
        RecordType::ANY => Want::Any,
        _ => Want::Other,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let admission = self.admit(request);
        self.respond(request, response_handle, admission).await
    }
}

impl Handler {
    /// Answers `request`; a name outside the domain is forwarded only with
    /// a granted `admission` (see [`Handler::admit`]), whose slot is held
    /// until the answer is sent.
    pub async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: R,
        admission: Option<Admission>,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let info = self
            .respond_unmeasured(request, response_handle, admission)
            .await;
        queries_counted(query_type(request), info.response_code).increment(1);
        query_duration().record(started.elapsed().as_secs_f64());
        info
    }

    async fn respond_unmeasured<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
        admission: Option<Admission>,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|client| {
            let mut edns = Edns::new();
            edns.set_max_payload(udp_payload(Some(client.max_payload())));
            edns.set_version(0);
            edns
        });
        let builder = || MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let refuse = |code| builder().error_msg(&request.metadata, code);
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return send(&mut response_handle, refuse(ResponseCode::NotImp), request).await;
        }
        let Ok(info) = request.request_info() else {
            return send(&mut response_handle, refuse(ResponseCode::FormErr), request).await;
        };
        let name = info.query.name().to_string();
        let Some(answer) = self.answer(&name, info.query.query_type()) else {
            let (Some(forwarder), Some(Admission::Granted(_slot))) = (&self.forwarder, &admission)
            else {
                // No upstreams, a client outside `forward_from`, or every
                // forwarding slot taken.
                let code = if matches!(admission, Some(Admission::Busy)) {
                    ResponseCode::ServFail
                } else {
                    ResponseCode::Refused
                };
                return send(&mut response_handle, refuse(code), request).await;
            };
            let tcp = request.protocol() == hickory_server::net::xfer::Protocol::Tcp;
            let payload = request
                .edns
                .as_ref()
                .map(|e| udp_payload(Some(e.max_payload())));
            let Some(upstream) = forwarder
                .ask(&name, info.query.query_type(), tcp, payload)
                .await
            else {
                return send(
                    &mut response_handle,
                    refuse(ResponseCode::ServFail),
                    request,
                )
                .await;
            };
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.recursion_available = true;
            metadata.response_code = upstream.metadata.response_code;
            let response = builder().build(
                metadata,
                upstream.answers.iter(),
                upstream.authorities.iter(),
                std::iter::empty(),
                upstream.additionals.iter(),
            );
            return send(&mut response_handle, response, request).await;
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        metadata.response_code = if answer.nxdomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        let response = builder().build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        send(&mut response_handle, response, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "cannot send a DNS response");
            let mut metadata = Metadata::new(
                request.metadata.id,
                MessageType::Response,
                request.metadata.op_code,
            );
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_answers_are_capped_at_1232_bytes() {
        assert_eq!(udp_payload(None), 512);
        assert_eq!(udp_payload(Some(100)), 512);
        assert_eq!(udp_payload(Some(1000)), 1000);
        assert_eq!(udp_payload(Some(1232)), 1232);
        assert_eq!(udp_payload(Some(4096)), 1232);
        assert_eq!(udp_payload(Some(u16::MAX)), 1232);
    }
}
