//! The UDP side of the DNS server. Each worker owns the whole path of a
//! datagram — receive, decode, answer through the shared [`Handler`],
//! encode within the client's payload size, send — on one task, so an
//! answer costs no task spawn and no hand-over between threads. Only
//! queries that must wait for an upstream resolver get a task of their own,
//! so a slow upstream never holds a worker — and only while they hold one
//! of the `max_forwards` forwarding slots ([`super::forward`]), so tasks
//! stay bounded. Answers never exceed [`super::handler::MAX_UDP_PAYLOAD`].
//! Their names point at the question's name (see [`prime_question`]), so
//! an answer is no larger than an authoritative server's for the same
//! records. An answer from the zone is kept whole ([`super::ready`]): the
//! same query at the same zone version is answered with it, before any
//! decoding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::forward::Admission;
use super::handler::Handler;
use super::ready::{ReadyAnswers, ZoneVersion, MAX_KEPT_QUERY};

/// Largest datagram read; EDNS clients rarely advertise more than 4096.
const MAX_DATAGRAM: usize = 65_535;

/// Serves `socket` with `workers` tasks until `stop` is cancelled.
pub fn spawn_workers(
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    workers: usize,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let ready = Arc::new(ReadyAnswers::new(READY_CAPACITY));
    for _ in 0..workers.max(1) {
        tasks.spawn(worker(
            handler.clone(),
            socket.clone(),
            ready.clone(),
            stop.clone(),
        ));
    }
}

/// Distinct queries whose answers are kept ready per zone version.
const READY_CAPACITY: usize = 16_384;

async fn worker(
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    ready: Arc<ReadyAnswers>,
    stop: CancellationToken,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut answer = Vec::with_capacity(usize::from(super::handler::MAX_UDP_PAYLOAD));
    let duration = super::handler::query_duration();
    loop {
        let (len, src) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors of earlier sends surface here on Linux;
                    // they concern one client, not the socket.
                    tracing::debug!(%error, "cannot receive a DNS datagram");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let started = Instant::now();
        let datagram = &buffer[..len];
        let version = handler.zone_version();
        if ready.answer(version, datagram, &mut answer) {
            if let Err(error) = socket.send_to(&answer, src).await {
                tracing::debug!(%error, "cannot send a DNS response");
            }
            duration.record(started.elapsed().as_secs_f64());
            continue;
        }
        let Some(request) = decode(datagram, src, &socket).await else {
            continue;
        };
        let question: Option<Box<[u8]>> =
            (request.queries.len() == 1).then(|| request.queries.as_bytes().into());
        let keep = match &question {
            Some(_) if len <= MAX_KEPT_QUERY => Some(Keep {
                ready: ready.clone(),
                version,
                query: datagram.into(),
                query_type: super::handler::query_type(&request),
            }),
            _ => None,
        };
        let reply = Reply {
            socket: socket.clone(),
            dst: src,
            question,
            keep,
        };
        match handler.admit(&request) {
            // Only a query holding a forwarding slot gets a task: at most
            // `max_forwards` of them exist at once.
            Some(granted @ Admission::Granted(_)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    handler.respond(&request, reply, Some(granted)).await;
                });
            }
            admission => {
                handler.respond(&request, reply, admission).await;
            }
        }
    }
}

/// Decodes a query. A datagram too short for a header, or a response, is
/// dropped (answering responses would make the server a reflector); a
/// query that does not parse gets FORMERR.
async fn decode(datagram: &[u8], src: SocketAddr, socket: &UdpSocket) -> Option<Request> {
    let header = Header::read(&mut BinDecoder::new(datagram)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    match Request::from_bytes(datagram.to_vec(), src, Protocol::Udp) {
        Ok(request) => Some(request),
        Err(error) => {
            tracing::debug!(%src, %error, "malformed DNS query");
            let mut metadata = Metadata::new(
                header.metadata.id,
                MessageType::Response,
                header.metadata.op_code,
            );
            metadata.response_code = ResponseCode::FormErr;
            let formerr = Header {
                metadata,
                counts: HeaderCounts::default(),
            };
            if let Ok(bytes) = formerr.to_bytes() {
                let _ = socket.send_to(&bytes, src).await;
            }
            None
        }
    }
}

/// Sends one answer to the client it belongs to.
#[derive(Clone)]
struct Reply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    /// The question section as the client sent it, when it holds one
    /// question: the answer repeats it at the same place.
    question: Option<Box<[u8]>>,
    /// Where the answer is kept for the next identical query.
    keep: Option<Keep>,
}

/// A query whose answer may be kept ready, and the zone version read
/// before it was answered.
#[derive(Clone)]
struct Keep {
    ready: Arc<ReadyAnswers>,
    version: ZoneVersion,
    query: Box<[u8]>,
    /// Its type, the label its answers are counted under.
    query_type: &'static str,
}

/// Size of a DNS header: the question starts right after it.
const HEADER_LEN: usize = 12;

/// Lets the answer's names point at the question's name. hickory-server
/// writes the question back as the client sent it and registers it as a
/// single piece (name, type and class) that no name ever matches, so the
/// first answer would spell its owner name in full. This writes the
/// header's place and the question's name where the response will write
/// them, registers each suffix of that name for compression, and rewinds:
/// the response then writes the same bytes over them. Returns whether it
/// did (a name that does not parse is left alone).
fn prime_question(encoder: &mut BinEncoder<'_>, question: &[u8]) -> bool {
    // The first name of a message is never compressed: plain labels up to
    // the root's zero byte.
    let mut label_starts = Vec::new();
    let mut at = 0;
    let name_end = loop {
        match question.get(at) {
            Some(0) => break at,
            Some(&len) if len & 0xC0 == 0 => {
                label_starts.push(at);
                at += 1 + usize::from(len);
            }
            _ => return false,
        }
    };
    let written = encoder
        .emit_vec(&[0u8; HEADER_LEN])
        .and_then(|()| encoder.emit_vec(&question[..name_end]));
    if written.is_ok() {
        for start in label_starts {
            encoder.store_label_pointer(HEADER_LEN + start, HEADER_LEN + name_end);
        }
    }
    encoder.set_offset(0);
    written.is_ok()
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // RFC 1035 4.2.1: 512 bytes unless the client's EDNS says more, and
        // never more than 1232; the encoder sets TC and leaves out what
        // does not fit.
        let max_size = super::handler::udp_payload(response.edns().map(|edns| edns.max_payload()));
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        // The response is built from the request's question (see
        // `super::handler`), so it writes the same bytes at the same place.
        if let Some(question) = &self.question {
            prime_question(&mut encoder, question);
        }
        let info = response.destructive_emit(&mut encoder)?;
        let end = encoder.offset();
        bytes.truncate(end);
        self.socket.send_to(&bytes, self.dst).await?;
        if let Some(keep) = &self.keep {
            let counted = super::handler::queries_counted(keep.query_type, info.response_code);
            keep.ready.keep(keep.version, &keep.query, &bytes, counted);
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, OpCode, Query};
    use hickory_server::proto::rr::{Name, RData, RecordType};

    /// A response to a one-question query, written as the UDP path does:
    /// header, the question as the client sent it, then `answers`.
    fn response(question: &[u8], answers: &[Record], primed: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        if primed {
            assert!(prime_question(&mut encoder, question));
        }
        let mut metadata = Metadata::new(7, MessageType::Response, OpCode::Query);
        metadata.authoritative = true;
        let header = Header {
            metadata,
            counts: HeaderCounts {
                queries: 1,
                answers: answers.len() as u16,
                authorities: 0,
                additionals: 0,
            },
        };
        header.emit(&mut encoder).unwrap();
        encoder.emit_vec(question).unwrap();
        for answer in answers {
            answer.emit(&mut encoder).unwrap();
        }
        let end = encoder.offset();
        bytes.truncate(end);
        bytes
    }

    #[test]
    fn answers_point_at_the_question_name() {
        let name = Name::from_ascii("web.prod.svc.cluster.local.").unwrap();
        let question = Query::query(name.clone(), RecordType::A)
            .to_bytes()
            .unwrap();
        let answers: Vec<Record> = (1..=3)
            .map(|i| {
                Record::from_rdata(
                    name.clone(),
                    5,
                    RData::A(std::net::Ipv4Addr::new(10, 0, 0, i).into()),
                )
            })
            .collect();
        let plain = response(&question, &answers, false);
        let primed = response(&question, &answers, true);
        // Each answer: a 2-byte pointer, type, class, TTL, length, address.
        assert_eq!(primed.len(), HEADER_LEN + question.len() + 3 * (2 + 10 + 4));
        // Without it, the first answer spells the name out.
        let name_len = name.to_bytes().unwrap().len();
        assert_eq!(plain.len() - primed.len(), name_len - 2);
        let decoded = Message::from_vec(&primed).unwrap();
        assert_eq!(decoded.queries[0].name(), &name);
        assert_eq!(decoded.answers.len(), 3);
        assert!(decoded.answers.iter().all(|r| r.name == name));
        assert_eq!(Message::from_vec(&plain).unwrap().answers, decoded.answers);
        // A question whose name does not parse is not primed.
        let mut scratch = Vec::new();
        let mut encoder = BinEncoder::new(&mut scratch);
        assert!(!prime_question(&mut encoder, &[3, b'a']));
        assert!(!prime_question(&mut encoder, &[0xC0, 12]));
    }
}
