//! The UDP side of the DNS server. Each worker owns the whole path of a
//! datagram — receive, decode, answer through the shared [`Handler`],
//! encode within the client's payload size, send — on one task, so an
//! answer costs no task spawn and no hand-over between threads. Only
//! queries that must wait for an upstream resolver get a task of their own,
//! so a slow upstream never holds a worker — and only while they hold one
//! of the `max_forwards` forwarding slots ([`super::forward`]), so tasks
//! stay bounded. Answers never exceed [`super::handler::MAX_UDP_PAYLOAD`].

use std::net::SocketAddr;
use std::sync::Arc;

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
    for _ in 0..workers.max(1) {
        tasks.spawn(worker(handler.clone(), socket.clone(), stop.clone()));
    }
}

async fn worker(handler: Arc<Handler>, socket: Arc<UdpSocket>, stop: CancellationToken) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
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
        let Some(request) = decode(&buffer[..len], src, &socket).await else {
            continue;
        };
        let reply = Reply {
            socket: socket.clone(),
            dst: src,
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
        let info = response.destructive_emit(&mut encoder)?;
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}
