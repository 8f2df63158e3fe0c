//! Docker engines reached over TLS: an engine endpoint that demands a
//! client certificate (a TLS front of the local engine's socket, the way
//! `dockerd --tlsverify` does) is used with the right CA and certificate,
//! and refused with a wrong CA or an untrusted client certificate — both
//! by the runtime directly and by the supervisor for a registered node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raftvisor::runtime::docker::DockerRuntime;
use raftvisor::runtime::ContainerRuntime;
use raftvisor::state::{DockerTls, NodeSpec, NodeState};
use raftvisor::tls::certs::{self, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UnixStream};

use crate::docker_env::{docker, DockerCluster};
use crate::harness::eventually;

const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A CA in `dir` with an engine certificate for 127.0.0.1 and a client
/// certificate.
struct Pki {
    ca: PathBuf,
    engine: certs::Written,
    client: certs::Written,
}

fn pki(dir: &Path) -> Pki {
    let ca = certs::init_ca(dir).expect("CA");
    // Any certificate for 127.0.0.1 with server use; a manager's has it.
    let engine = certs::issue(dir, Role::Manager, "engine", &["127.0.0.1".to_string()])
        .expect("engine certificate");
    let client = certs::issue(dir, Role::Client, "managers", &[]).expect("client certificate");
    Pki {
        ca: ca.cert,
        engine,
        client,
    }
}

/// Serves TLS on a loopback port, demands a client certificate signed by
/// `pki`'s CA, and relays each connection to the local engine's socket.
async fn tls_engine_front(pki: &Pki) -> (String, tokio::task::JoinHandle<()>) {
    raftvisor::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.engine.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.engine.key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake simply ends the connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            });
        }
    });
    (endpoint, task)
}

fn tls_of(ca: &Path, client: &certs::Written) -> DockerTls {
    DockerTls {
        ca_cert: ca.display().to_string(),
        cert: client.cert.display().to_string(),
        key: client.key.display().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_engine_is_used_with_the_right_ca_and_refused_otherwise() {
    if docker().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = pki(&dir.path().join("good"));
    let other = pki(&dir.path().join("other"));
    let (endpoint, front) = tls_engine_front(&good).await;

    let trusted = DockerRuntime::connect_tls(
        &endpoint,
        &tls_of(&good.ca, &good.client),
        Default::default(),
    )
    .unwrap();
    trusted
        .ping()
        .await
        .expect("the right CA and certificate reach the engine");

    // The engine's certificate is not signed by the CA we trust.
    let wrong_ca = DockerRuntime::connect_tls(
        &endpoint,
        &tls_of(&other.ca, &good.client),
        Default::default(),
    )
    .unwrap();
    let error = wrong_ca
        .ping()
        .await
        .expect_err("a wrong CA must be refused");
    assert!(error.is_unreachable(), "{error}");
    // The engine does not trust our client certificate.
    let untrusted_client = DockerRuntime::connect_tls(
        &endpoint,
        &tls_of(&good.ca, &other.client),
        Default::default(),
    )
    .unwrap();
    untrusted_client
        .ping()
        .await
        .expect_err("a client certificate of another CA must be refused");
    // Plain HTTP to a TLS endpoint, and TLS without files, are refused up front.
    let missing = DockerTls {
        ca_cert: dir.path().join("nope.pem").display().to_string(),
        ..tls_of(&good.ca, &good.client)
    };
    assert!(DockerRuntime::connect_tls(&endpoint, &missing, Default::default()).is_err());
    assert!(DockerRuntime::connect(&endpoint).is_err());

    // The supervisor: a node with the right files is ready, one with a
    // wrong CA goes down.
    let tuning = crate::harness::Tuning {
        extra_toml: format!("[supervisor]\ndocker_tls_dir = {:?}\n", dir.path()),
        ..Default::default()
    };
    let Some(env) = DockerCluster::start_with(3, tuning).await else {
        return;
    };
    let client = env.cluster.client();
    for (name, tls) in [
        ("tls-good", tls_of(&good.ca, &good.client)),
        ("tls-wrong-ca", tls_of(&other.ca, &good.client)),
    ] {
        let spec = NodeSpec {
            provider: "static".into(),
            docker_endpoint: endpoint.clone(),
            address: Some("127.0.0.1".into()),
            region: None,
            zone: None,
            labels: Default::default(),
            capacity: Default::default(),
            docker_tls: Some(tls),
        };
        client.node_put(name, &spec).await.expect("register node");
    }
    eventually(
        "the node with a wrong CA is down and the good one ready",
        Duration::from_secs(20),
        || async {
            let good = client
                .node_get("tls-good")
                .await
                .map_err(|e| e.to_string())?;
            let bad = client
                .node_get("tls-wrong-ca")
                .await
                .map_err(|e| e.to_string())?;
            if good.state == NodeState::Ready && bad.state == NodeState::Down {
                Ok(())
            } else {
                Err(format!("good {:?}, wrong CA {:?}", good.state, bad.state))
            }
        },
    )
    .await;
    // Work placed there runs through the TLS connection (the other node is down).
    let spec: raftvisor::state::ServiceSpec = serde_json::from_value(serde_json::json!({
        "image": crate::docker_env::ECHO_IMAGE,
        "replicas": 1,
        "ports": [{"name": "http", "container_port": 8080}],
    }))
    .unwrap();
    client
        .service_put("tls", "echo", &spec, None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 1, Duration::from_secs(30)).await;
    assert_eq!(running[0].labels["raftvisor.node"], "tls-good");
    // A TLS endpoint without docker_tls is bad input.
    let mut bare: NodeSpec = client.node_get("tls-good").await.unwrap().spec;
    bare.docker_tls = None;
    let error = client.node_put("tls-bare", &bare).await.unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    // TLS files only under docker_tls_dir: a path outside it, `..` and a
    // symbolic link leading out are refused with the rule; a relative name
    // is taken inside it.
    let outside = tempfile::tempdir().unwrap();
    let stolen = outside.path().join("stolen-key.pem");
    std::fs::copy(&good.client.key, &stolen).unwrap();
    std::os::unix::fs::symlink(&stolen, dir.path().join("link-out.pem")).unwrap();
    let mut spec = client.node_get("tls-good").await.unwrap().spec;
    let good_tls = spec.docker_tls.clone().unwrap();
    for key in [
        stolen.display().to_string(),
        "/etc/passwd".to_string(),
        "good/../../etc/passwd".to_string(),
        "link-out.pem".to_string(),
    ] {
        spec.docker_tls = Some(DockerTls {
            key: key.clone(),
            ..good_tls.clone()
        });
        let error = client.node_put("tls-outside", &spec).await.unwrap_err();
        assert_eq!(error.status(), Some(400), "{key}: {error}");
        assert!(
            error.to_string().contains("docker_tls_dir"),
            "{key}: {error}"
        );
    }
    assert!(client.node_get("tls-outside").await.is_err());
    let relative = good
        .client
        .key
        .strip_prefix(dir.path())
        .unwrap()
        .display()
        .to_string();
    spec.docker_tls = Some(DockerTls {
        key: relative,
        ..good_tls.clone()
    });
    let stored = client.node_put("tls-relative", &spec).await.unwrap();
    let stored_key = std::path::PathBuf::from(stored.spec.docker_tls.unwrap().key);
    assert_eq!(
        stored_key.canonicalize().unwrap(),
        good.client.key.canonicalize().unwrap()
    );
    front.abort();
}
