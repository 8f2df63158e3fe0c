//! Certificate verifiers of the peer port: rustls' WebPKI verification
//! against the cluster CA, plus a check that the other side's certificate
//! carries the manager role (see [`super::certs`]). Both directions use it:
//! the peer server admits only manager clients, and a replica calling a
//! peer accepts only a manager server — so neither a stolen client
//! certificate nor a server holding one can take part in Raft. The check
//! runs inside the handshake, which then fails before any request is read.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use super::certs::{role_of, Role};

/// The certificate does not carry the role the peer port requires.
#[derive(thiserror::Error)]
#[error("certificate does not carry the manager role (found {found})")]
pub struct NotManager {
    found: String,
}

// rustls prints certificate errors with `{:?}`: keep the sentence readable.
impl std::fmt::Debug for NotManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Fails unless `end_entity` carries the manager role.
pub fn require_manager(end_entity: &CertificateDer<'_>) -> Result<(), Error> {
    match role_of(end_entity) {
        Some((Role::Manager, _)) => Ok(()),
        other => {
            let found = match other {
                Some((role, name)) => format!("{role} {name:?}"),
                None => "no raftvisor role".into(),
            };
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotManager { found })),
            )))
        }
    }
}

/// Peer server side: a client certificate is mandatory, must chain to the
/// cluster CA and carry the manager role.
#[derive(Debug)]
pub struct ManagerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ManagerClientVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ManagerClientVerifier, rustls::server::VerifierBuilderError> {
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
        Ok(ManagerClientVerifier { inner })
    }
}

/// The handshake signature checks, which both verifiers leave to the
/// webpki verifier they wrap (`self.inner`): only the certificate checks
/// differ.
macro_rules! signatures_checked_by_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

impl ClientCertVerifier for ManagerClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        require_manager(end_entity)?;
        Ok(verified)
    }

    signatures_checked_by_inner!();
}

/// Peer client side: the server must chain to the cluster CA, match the
/// address dialled (its SANs) and carry the manager role.
#[derive(Debug)]
pub struct ManagerServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ManagerServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ManagerServerVerifier, rustls::server::VerifierBuilderError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        Ok(ManagerServerVerifier { inner })
    }
}

impl ServerCertVerifier for ManagerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        require_manager(end_entity)?;
        Ok(verified)
    }

    signatures_checked_by_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{init_ca, issue};
    use rustls::pki_types::pem::PemObject;

    fn der(path: &std::path::Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn verifier(ca: &std::path::Path) -> ManagerClientVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca)).unwrap();
        ManagerClientVerifier::new(Arc::new(roots), super::super::provider()).unwrap()
    }

    #[test]
    fn admits_only_managers_of_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path()).unwrap();
        let manager = issue(dir.path(), Role::Manager, "m1", &["127.0.0.1".into()]).unwrap();
        let client = issue(dir.path(), Role::Client, "c1", &[]).unwrap();
        let other = tempfile::tempdir().unwrap();
        init_ca(other.path()).unwrap();
        let stranger = issue(other.path(), Role::Manager, "m1", &["127.0.0.1".into()]).unwrap();

        let v = verifier(&ca.cert);
        let now = UnixTime::now();
        assert!(v.verify_client_cert(&der(&manager.cert), &[], now).is_ok());
        let refused = v
            .verify_client_cert(&der(&client.cert), &[], now)
            .unwrap_err();
        assert!(refused.to_string().contains("manager role"), "{refused}");
        assert!(v
            .verify_client_cert(&der(&stranger.cert), &[], now)
            .is_err());
        // The CA itself is no manager either.
        assert!(v.verify_client_cert(&der(&ca.cert), &[], now).is_err());
    }
}
