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

    fn chain_of(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_manager_of_the_manager_issuer_chains_to_the_root_and_the_issuer_makes_no_ca() {
        use crate::tls::certs::{
            ca_allows_issuer, init_issuer, issue_with_id, raft_id_uri, role_uri, CA_CERT, CA_KEY,
            ISSUER_CERT, ISSUER_KEY,
        };
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

        let root = tempfile::tempdir().unwrap();
        let ca = init_ca(root.path()).unwrap();
        let certs = tempfile::tempdir().unwrap();
        std::fs::copy(&ca.cert, certs.path().join(CA_CERT)).unwrap();
        init_issuer(root.path(), certs.path()).unwrap();
        let manager = issue_with_id(
            certs.path(),
            Role::Manager,
            "replica-4",
            &["127.0.0.1".into()],
            Some(4),
        )
        .unwrap();
        assert!(!certs.path().join(CA_KEY).exists());
        let chain = chain_of(&manager.cert);
        assert_eq!(chain.len(), 2, "the file carries the issuer");
        let v = verifier(&ca.cert);
        let now = UnixTime::now();
        assert!(v.verify_client_cert(&chain[0], &chain[1..], now).is_ok());
        assert!(v.verify_client_cert(&chain[0], &[], now).is_err());
        // Client certificates are the root's alone: not issued here.
        assert!(issue(certs.path(), Role::Client, "c1", &[]).is_err());

        // A CA the issuer signed vouches for nothing (path length 0).
        let issuer_key =
            KeyPair::from_pem(&std::fs::read_to_string(certs.path().join(ISSUER_KEY)).unwrap())
                .unwrap();
        let issuer = CertificateParams::from_ca_cert_pem(
            &std::fs::read_to_string(certs.path().join(ISSUER_CERT)).unwrap(),
        )
        .unwrap()
        .self_signed(&issuer_key)
        .unwrap();
        let sub_key = KeyPair::generate().unwrap();
        let mut sub = CertificateParams::default();
        sub.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let sub = sub.signed_by(&sub_key, &issuer, &issuer_key).unwrap();
        let mut leaf = CertificateParams::default();
        for uri in [role_uri(Role::Manager, "rogue"), raft_id_uri(9)] {
            leaf.subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().unwrap()));
        }
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &sub, &sub_key)
            .unwrap();
        let refused = v.verify_client_cert(leaf.der(), &[sub.der().clone(), chain[1].clone()], now);
        assert!(refused.is_err(), "a CA below the issuer was accepted");

        // A CA made before issuers (path length 0) cannot sign one.
        let old = tempfile::tempdir().unwrap();
        let old_key = KeyPair::generate().unwrap();
        let mut old_ca = CertificateParams::default();
        old_ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let old_ca = old_ca.self_signed(&old_key).unwrap();
        std::fs::write(old.path().join(CA_CERT), old_ca.pem()).unwrap();
        std::fs::write(old.path().join(CA_KEY), old_key.serialize_pem()).unwrap();
        assert!(!ca_allows_issuer(old.path()).unwrap());
        let elsewhere = tempfile::tempdir().unwrap();
        let refused = init_issuer(old.path(), elsewhere.path()).unwrap_err();
        assert!(
            refused.to_string().contains("allows no CA below it"),
            "{refused}"
        );
        assert!(ca_allows_issuer(root.path()).unwrap());
    }
}
