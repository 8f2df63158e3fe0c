//! This replica's certificate and key as they are now, swapped without a
//! restart. One [`CurrentCert`] serves the peer server, the API server and
//! the peer client; [`watch`] reads the `[tls]` files again every few
//! seconds and swaps in a new pair once it checks — a manager certificate
//! of the same CA naming this replica's Raft id, with the key that matches
//! it — so `raftvisor certs rotate` (or any tool that rewrites the files)
//! takes effect on every new connection. A pair that does not check (a
//! file half written, a wrong certificate) is logged and the current one
//! kept. It never writes files; connections already open keep the
//! certificate they were made with until they close.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::certs::{self, Role};
use super::{provider, read_certs, read_key, TlsError};

/// The certificate and key every TLS configuration of the replica uses.
#[derive(Debug)]
pub struct CurrentCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    pub fn new(key: CertifiedKey) -> CurrentCert {
        CurrentCert {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This replica's certificate now (DER).
    pub fn certificate(&self) -> Vec<u8> {
        self.get().cert[0].to_vec()
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The files a replica's certificate comes from, and what a new one must be.
pub struct Source {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The Raft id the certificate must name.
    pub raft_id: u64,
    /// Checks the chain against the cluster CA (as peers will).
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl Source {
    /// Reads the files and checks the pair: a manager certificate of the
    /// cluster CA naming this replica's id, and the key that matches it.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let chain = read_certs("certificate", &self.cert)?;
        let key = read_key(&self.key)?;
        let not_manager = |reason: String| TlsError::NotManager {
            path: self.cert.clone(),
            reason,
        };
        if !matches!(certs::role_of(&chain[0]), Some((Role::Manager, _))) {
            return Err(not_manager("it carries no manager role".into()));
        }
        match certs::raft_id_of(&chain[0]) {
            Ok(id) if id == self.raft_id => {}
            Ok(id) => {
                return Err(not_manager(format!(
                    "it names Raft id {id}, this replica is {}",
                    self.raft_id
                )))
            }
            Err(e) => return Err(not_manager(e.to_string())),
        }
        self.verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| not_manager(e.to_string()))?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Read {
            what: "key",
            path: self.key.clone(),
            reason: format!("it does not match the certificate: {e}"),
        })
    }
}

/// How often the `[tls]` files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Reads `source` every [`RELOAD_EVERY`] and swaps a changed, valid pair
/// into `current`; `swapped` is called with the new certificate (DER)
/// after each swap.
pub async fn watch(
    current: Arc<CurrentCert>,
    source: Source,
    swapped: impl Fn(&[u8]) + Send + 'static,
) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refusal = None;
    loop {
        tick.tick().await;
        let files = (
            std::fs::read(&source.cert).unwrap_or_default(),
            std::fs::read(&source.key).unwrap_or_default(),
        );
        let now = current.certificate();
        // Cheap look first: only a changed certificate is parsed and checked.
        let changed = read_certs("certificate", &source.cert)
            .ok()
            .and_then(|chain| chain.first().map(|c| c.to_vec()))
            .is_some_and(|der| der != now);
        if !changed {
            continue;
        }
        match source.load() {
            Ok(key) => {
                let der = key.cert[0].to_vec();
                current.set(key);
                last_refusal = None;
                tracing::info!(
                    cert = %source.cert.display(),
                    expires = certs::not_after_of(&der).map(crate::dates::rfc3339_secs).unwrap_or_default(),
                    "certificate reloaded: new connections use it"
                );
                swapped(&der);
            }
            Err(e) => {
                // Logged once per content: a rotation in progress writes
                // the key and the certificate one after the other.
                if last_refusal.as_ref() != Some(&files) {
                    tracing::warn!(error = %e, "the certificate files changed but do not check: keeping the current certificate");
                    last_refusal = Some(files);
                }
            }
        }
    }
}
