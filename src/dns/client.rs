//! A minimal DNS client (one query over UDP or TCP, hickory-proto messages)
//! used by `raftvisor dns lookup`, the tests and the forwarding of names
//! outside the domain ([`super::forward`]), so all ask the same way. It
//! accepts only the answer to its query: from the server's address and
//! port, with the query's random id and question.

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
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let question = Query::query(name, record_type);
    message.add_query(question.clone());
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
            let reply =
                Message::from_vec(&reply).map_err(|e| DnsClientError::Decode(e.to_string()))?;
            if answers(&reply, id, &question) {
                Ok(reply)
            } else {
                Err(DnsClientError::Decode(
                    "the answer does not match the query (id or question)".into(),
                ))
            }
        } else {
            let local: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .expect("static address");
            // Connected: the kernel drops datagrams from any other address
            // or port, so only the server itself can answer.
            let socket = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
            socket.connect(server).await.map_err(io)?;
            socket.send(&bytes).await.map_err(io)?;
            let mut buffer = vec![0u8; 65_535];
            loop {
                let n = socket.recv(&mut buffer).await.map_err(io)?;
                // A datagram that is not the answer to this query (another
                // id, another question, not DNS) is ignored: a forger must
                // guess the port and id within the timeout.
                match Message::from_vec(&buffer[..n]) {
                    Ok(reply) if answers(&reply, id, &question) => return Ok(reply),
                    _ => {
                        tracing::debug!(%server, "ignored a DNS datagram that does not answer the query")
                    }
                }
            }
        }
    };
    tokio::time::timeout(options.timeout, exchange)
        .await
        .map_err(|_| DnsClientError::Timeout {
            server,
            timeout: options.timeout,
        })?
}

/// Whether `reply` is the answer to the query `id` asking `question`: a
/// response with that id whose question is the same (names compared
/// without regard to case).
fn answers(reply: &Message, id: u16, question: &Query) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && matches!(reply.queries.as_slice(), [echoed]
            if echoed.query_type() == question.query_type()
                && echoed.query_class() == question.query_class()
                && echoed.name().eq_ignore_root(question.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{RData, Record};
    use tokio::net::UdpSocket;

    /// An answer to `query` with `id`, for `name`, holding the address `ip`.
    fn reply(query: &Message, id: u16, name: &str, ip: [u8; 4]) -> Vec<u8> {
        let name = Name::from_ascii(name).unwrap();
        let mut answer = Message::new(id, MessageType::Response, OpCode::Query);
        answer.add_query(Query::query(name.clone(), query.queries[0].query_type()));
        answer.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(std::net::Ipv4Addr::from(ip).into()),
        ));
        answer.to_vec().unwrap()
    }

    /// An upstream on loopback that answers each query first with forgeries
    /// — from another port (right id and question), with a wrong id, with
    /// another question — and then, unless `honest` is off, truly.
    async fn upstream(honest: bool) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((n, client)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let query = Message::from_vec(&buffer[..n]).unwrap();
                let id = query.metadata.id;
                let name = query.queries[0].name().to_ascii();
                let forged = reply(&query, id, &name, [6, 6, 6, 6]);
                forger.send_to(&forged, client).await.unwrap();
                let wrong_id = reply(&query, id.wrapping_add(1), &name, [6, 6, 6, 7]);
                socket.send_to(&wrong_id, client).await.unwrap();
                let other_question = reply(&query, id, "other.example.", [6, 6, 6, 8]);
                socket.send_to(&other_question, client).await.unwrap();
                socket.send_to(b"not dns", client).await.unwrap();
                if honest {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let real = reply(&query, id, &name, [192, 0, 2, 1]);
                    socket.send_to(&real, client).await.unwrap();
                }
            }
        });
        addr
    }

    fn addresses(message: &Message) -> Vec<String> {
        message
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn forged_replies_are_ignored_and_the_real_one_is_used() {
        let server = upstream(true).await;
        let answer = query(
            server,
            "www.Example.test",
            RecordType::A,
            QueryOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(addresses(&answer), vec!["192.0.2.1"]);
    }

    #[tokio::test]
    async fn only_forged_replies_end_in_a_timeout() {
        let server = upstream(false).await;
        let options = QueryOptions {
            timeout: Duration::from_millis(400),
            ..QueryOptions::default()
        };
        let error = query(server, "www.example.test", RecordType::A, options)
            .await
            .unwrap_err();
        assert!(matches!(error, DnsClientError::Timeout { .. }), "{error}");
    }
}
