//! Transport security of a replica: loads the `[tls]` certificates once at
//! start and turns them into the three rustls configurations the agent
//! needs — the peer server (mutual TLS, manager certificates only), the
//! peer client (presents this replica's manager certificate, trusts only
//! the cluster CA and only manager servers) and the API server (server
//! authentication only). Every problem with the files is reported here, in
//! one line, before anything listens. rustls runs on `ring` so the release
//! binary links statically; this module never touches the network itself.

pub mod certs;
pub mod reload;
pub mod serve;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use certs::Role;
use verify::{ManagerClientVerifier, ManagerServerVerifier};

/// The crypto provider of every TLS configuration raftvisor builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs `ring` as the process-wide default provider, for libraries
/// (reqwest) that build rustls configurations of their own. Idempotent.
pub fn install_default_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the certificates of `[tls]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: {what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("tls: certificate {path} is not a manager certificate of this cluster: {reason}")]
    NotManager { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Config(String),
}

/// The rustls configurations of one replica.
#[derive(Clone)]
pub struct AgentTls {
    pub peer_server: Arc<ServerConfig>,
    pub peer_client: Arc<ClientConfig>,
    pub api_server: Arc<ServerConfig>,
    /// The IP addresses and host names this replica's certificate names.
    pub subject_names: Vec<String>,
    /// This replica's certificate and key, shared by the three
    /// configurations and swapped by [`reload::watch`].
    pub current: Arc<reload::CurrentCert>,
    /// Checks a manager certificate against the cluster CA.
    verifier: Arc<dyn ClientCertVerifier>,
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn config_error(what: &str) -> impl FnOnce(rustls::Error) -> TlsError + '_ {
    move |e| TlsError::Config(format!("{what}: {e}"))
}

impl AgentTls {
    /// Loads the CA, this replica's certificate chain and key, checks that
    /// the certificate is a manager certificate signed by the CA, and
    /// builds the configurations.
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<AgentTls, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for ca in read_certs("CA certificate", ca_cert)? {
            roots.add(ca).map_err(|e| TlsError::Read {
                what: "CA certificate",
                path: ca_cert.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = read_certs("certificate", cert)?;
        let key = read_key(key)?;

        let client_verifier = Arc::new(
            ManagerClientVerifier::new(roots.clone(), provider.clone())
                .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca_cert.display())))?,
        );
        // The same checks the peers will make: better one clear line now
        // than every handshake failing later.
        match certs::role_of(&chain[0]) {
            Some((Role::Manager, _)) => {}
            other => {
                return Err(TlsError::NotManager {
                    path: cert.to_path_buf(),
                    reason: format!(
                        "it carries {}, not the manager role; issue one with `raftvisor certs issue --role manager --id ID`",
                        match other {
                            Some((role, _)) => format!("the {role} role"),
                            None => "no raftvisor role".into(),
                        }
                    ),
                })
            }
        }
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| TlsError::NotManager {
                path: cert.to_path_buf(),
                reason: format!("{e} (is it signed by the CA in {}?)", ca_cert.display()),
            })?;
        let subject_names = certs::subject_names(&chain[0]);
        let current = Arc::new(reload::CurrentCert::new(
            rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                TlsError::Config(format!("the key does not match the certificate: {e}"))
            })?,
        ));

        let versions = rustls::DEFAULT_VERSIONS;
        let http1 = || vec![b"http/1.1".to_vec()];

        let mut peer_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(config_error("peer server"))?
            .with_client_cert_verifier(client_verifier.clone())
            .with_cert_resolver(current.clone());
        peer_server.alpn_protocols = http1();

        let mut api_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(config_error("API server"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        api_server.alpn_protocols = http1();

        let server_verifier = ManagerServerVerifier::new(roots, provider.clone())
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca_cert.display())))?;
        let peer_client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(config_error("peer client"))?
            .dangerous()
            // Not a weakening: WebPKI verification against the cluster CA
            // only, plus the manager-role check (see verify.rs).
            .with_custom_certificate_verifier(Arc::new(server_verifier))
            .with_client_cert_resolver(current.clone());

        Ok(AgentTls {
            peer_server: Arc::new(peer_server),
            peer_client: Arc::new(peer_client),
            api_server: Arc::new(api_server),
            subject_names,
            current,
            verifier: client_verifier,
        })
    }

    /// This replica's certificate now (DER).
    pub fn certificate(&self) -> Vec<u8> {
        self.current.certificate()
    }

    /// Where [`reload::watch`] reads this replica's certificate again.
    pub fn reload_source(&self, cert: &Path, key: &Path, raft_id: u64) -> reload::Source {
        reload::Source {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            raft_id,
            verifier: self.verifier.clone(),
        }
    }

    /// Checks that the certificate names Raft id `id`: peers refuse Raft
    /// messages from a replica whose certificate names another id, or none
    /// (that last is only warned about here, so a replica with an older
    /// certificate still starts and says what to do).
    pub fn check_raft_id(&self, id: u64, path: &Path) -> Result<(), TlsError> {
        match certs::raft_id_of(&self.certificate()) {
            Ok(named) if named == id => Ok(()),
            Ok(named) => Err(TlsError::NotManager {
                path: path.to_path_buf(),
                reason: format!(
                    "it names Raft id {named}, and this replica's id is {id}; issue one with `raftvisor certs issue --role manager --id {id}`"
                ),
            }),
            Err(why) => {
                tracing::warn!(
                    path = %path.display(),
                    "{why}: peers will refuse this replica's Raft messages; issue a new one with `raftvisor certs issue --role manager --id {id}`"
                );
                Ok(())
            }
        }
    }

    /// Whether the certificate names the host of `addr` (`host:port`), so
    /// peers and clients dialling it pass hostname verification. Unspecified
    /// addresses (0.0.0.0) are not checked: they are never dialled.
    pub fn names_host_of(&self, addr: &str) -> bool {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return true;
        }
        self.subject_names.iter().any(|n| n == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_manager_certificate_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let ca = certs::init_ca(dir.path()).unwrap();
        let m = certs::issue(dir.path(), Role::Manager, "m1", &["127.0.0.1".into()]).unwrap();
        let tls = AgentTls::load(&ca.cert, &m.cert, &m.key).unwrap();
        assert!(tls.names_host_of("127.0.0.1:7101"));
        assert!(tls.names_host_of("0.0.0.0:7101"));
        assert!(!tls.names_host_of("10.0.0.1:7101"));

        let c = certs::issue(dir.path(), Role::Client, "c1", &[]).unwrap();
        let err = AgentTls::load(&ca.cert, &c.cert, &c.key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("manager role") && !err.contains('\n'), "{err}");

        let other = tempfile::tempdir().unwrap();
        let other_ca = certs::init_ca(other.path()).unwrap();
        let err = AgentTls::load(&other_ca.cert, &m.cert, &m.key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("signed by the CA"), "{err}");

        let err = AgentTls::load(&ca.cert, &m.cert, Path::new("/nope/key.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read key"), "{err}");
        // A key that is not the certificate's.
        let err = AgentTls::load(&ca.cert, &m.cert, &c.key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("tls:"), "{err}");
        let err = AgentTls::load(&m.key, &m.cert, &m.key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
