//! A minimal DNS client (one query over UDP or TCP, hickory-proto messages)
//! used by `raftvisor dns lookup` and the tests, so humans and tests ask
//! the cluster's DNS the same way.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsClientError {
    #[error("{0:?} is not a DNS name")]
    BadName(String),
    #[error("cannot reach the DNS server {server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the DNS server {server} did not answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("undecodable DNS answer: {0}")]
    Decode(String),
}

/// How to ask.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    pub tcp: bool,
    /// EDNS payload size to advertise (`None`: plain DNS, 512-byte UDP).
    pub edns_payload: Option<u16>,
    pub timeout: Duration,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            tcp: false,
            edns_payload: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Sends one query for `name`/`record_type` to `server` and returns the answer.
pub async fn query(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    options: QueryOptions,
) -> Result<Message, DnsClientError> {
    let absolute = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let name =
        Name::from_ascii(&absolute).map_err(|_| DnsClientError::BadName(absolute.clone()))?;
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, record_type));
    if let Some(payload) = options.edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.edns = Some(edns);
    }
    let bytes = message
        .to_vec()
        .map_err(|e| DnsClientError::Decode(e.to_string()))?;
    let io = |source| DnsClientError::Io { server, source };
    let exchange = async {
        if options.tcp {
            let mut stream = tokio::net::TcpStream::connect(server).await.map_err(io)?;
            stream
                .write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .map_err(io)?;
            stream.write_all(&bytes).await.map_err(io)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(io)?;
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut reply).await.map_err(io)?;
            Ok(reply)
        } else {
            let local: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .expect("static address");
            let socket = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
            socket.send_to(&bytes, server).await.map_err(io)?;
            let mut reply = vec![0u8; 65_535];
            let (n, _) = socket.recv_from(&mut reply).await.map_err(io)?;
            reply.truncate(n);
            Ok(reply)
        }
    };
    let reply = tokio::time::timeout(options.timeout, exchange)
        .await
        .map_err(|_| DnsClientError::Timeout {
            server,
            timeout: options.timeout,
        })??;
    Message::from_vec(&reply).map_err(|e| DnsClientError::Decode(e.to_string()))
}
