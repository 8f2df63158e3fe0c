//! Connections cannot wedge a replica (issue 12, item 3): a connection that
//! sent half a request header is closed within `[api] header_timeout_ms`;
//! an idle keep-alive connection outlives the header timeout and is closed
//! after `[api] idle_timeout_ms`; beyond `[api] max_connections` new
//! connections are closed at once while open ones keep working; and a
//! replica whose Raft log cannot be written exits with code 74 (answering
//! `/v1/health` with 503 until it does) instead of living on unable to
//! write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::harness::{Cluster, Tuning};

fn tuning(api: &str) -> Tuning {
    Tuning {
        extra_api_toml: api.to_string(),
        ..Tuning::default()
    }
}

/// A TLS connection to `addr` trusting the cluster CA.
async fn connect(cluster: &Cluster, addr: &str) -> std::io::Result<TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&cluster.certs.ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(raftvisor::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// Sends `GET /v1/health` on `stream` and reads the answer: its status line.
async fn health(stream: &mut TlsStream<TcpStream>) -> std::io::Result<String> {
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(head.lines().next().unwrap_or_default().to_string());
            }
        }
    }
}

/// Waits until the server closes `stream`; returns how long that took.
async fn closed_within(stream: &mut TlsStream<TcpStream>, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            // EOF, or an abrupt close (no TLS close_notify).
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_request_header_is_closed_within_the_header_timeout() {
    let cluster = Cluster::start_with(
        1,
        tuning("header_timeout_ms = 500\nidle_timeout_ms = 2000\n"),
    )
    .await;
    let api = cluster.replica(1).api_addr.clone();

    let mut slow = connect(&cluster, &api).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("a half-sent header is closed within 5 s (header timeout 500 ms)");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );

    // A connection that never sends a byte is closed as soon.
    let mut silent = connect(&cluster, &api).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection is closed within 5 s");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // Between requests the header timer does not run: an idle keep-alive
    // connection lives out the idle timeout, then is closed.
    let mut idle = connect(&cluster, &api).await.unwrap();
    assert!(health(&mut idle).await.unwrap().contains("200"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        health(&mut idle).await.unwrap().contains("200"),
        "an idle keep-alive connection was closed by the header timeout"
    );
    let took = closed_within(&mut idle, Duration::from_secs(6))
        .await
        .expect("an idle connection is closed after the idle timeout");
    assert!(
        took >= Duration::from_millis(1_500),
        "closed after {took:?}, before the 2 s idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_closed_while_open_ones_keep_working() {
    const CAP: usize = 4;
    let cluster = Cluster::start_with(1, tuning(&format!("max_connections = {CAP}\n"))).await;
    let api = cluster.replica(1).api_addr.clone();

    // The harness's own connections close as its clients are dropped:
    // retry until this test holds every slot.
    let mut open = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while open.len() < CAP {
        assert!(
            Instant::now() < deadline,
            "could not open {CAP} connections"
        );
        match connect(&cluster, &api).await {
            Ok(mut stream) => match health(&mut stream).await {
                Ok(status) if status.contains("200") => open.push(stream),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    for attempt in 0..3 {
        let refused = match connect(&cluster, &api).await {
            Err(_) => true,
            Ok(mut extra) => health(&mut extra).await.is_err(),
        };
        assert!(
            refused,
            "attempt {attempt}: a connection beyond the cap was served"
        );
    }
    for (i, stream) in open.iter_mut().enumerate() {
        let status = health(stream).await.unwrap();
        assert!(status.contains("200"), "connection {i}: {status}");
    }
    let log = cluster.replica(1).log();
    assert!(log.contains("too many open connections"), "{log}");

    // A slot given back is served again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = connect(&cluster, &api).await {
            if health(&mut stream)
                .await
                .is_ok_and(|status| status.contains("200"))
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a freed slot was not served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_log_storage_fails_exits_with_code_74() {
    let mut cluster = Cluster::start(1).await;
    let http = cluster.http();
    let base = cluster.api_url(1);
    let set = http
        .put(format!("{base}/v1/debug/failpoints/log-append-io"))
        .body("return")
        .send()
        .await
        .expect("fail points are served (build with --features failpoints)");
    assert_eq!(
        set.status(),
        200,
        "{}",
        set.text().await.unwrap_or_default()
    );

    // The next write reaches the log, which refuses it: Raft stops.
    let write = tokio::spawn({
        let http = http.clone();
        let base = base.clone();
        async move {
            let _ = http
                .put(format!("{base}/v1/kv/after-the-failure"))
                .body("x")
                .timeout(Duration::from_secs(5))
                .send()
                .await;
        }
    });
    // Until it exits, the replica says it failed.
    let mut saw_failed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match http
            .get(format!("{base}/v1/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            Ok(answer) if answer.status() == 503 => {
                let body = answer.text().await.unwrap_or_default();
                assert!(body.contains("failed"), "{body}");
                saw_failed = true;
                break;
            }
            Ok(answer) => assert_eq!(answer.status(), 200),
            // Gone already.
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = cluster
        .wait_for_exit(1, Duration::from_secs(10))
        .await
        .expect("a replica whose storage failed exits");
    write.abort();
    assert_eq!(status.code(), Some(74), "{}", cluster.replica(1).log());
    assert!(saw_failed, "/v1/health never answered 503 before the exit");
    let log = cluster.replica(1).log();
    assert!(log.contains("raft stopped"), "{log}");
}
