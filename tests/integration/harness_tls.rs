//! TLS for the test clusters: one cluster CA per [`crate::harness::Cluster`]
//! (in its temporary directory), a manager certificate per replica issued on
//! first use, the `[tls]` section of each replica's config, and clients
//! (typed and raw reqwest) that trust the CA. Clusters run with TLS unless a
//! test asks for `insecure`.

use std::path::{Path, PathBuf};

use raftvisor::client::ClientOptions;
use raftvisor::tls::certs::{self, Role};

/// The certificate directory of one test cluster.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// Plain HTTP (`[tls] insecure = true`) instead of certificates.
    pub insecure: bool,
}

impl TestCerts {
    /// Creates the CA under `parent/certs`.
    pub fn create(parent: &Path, insecure: bool) -> TestCerts {
        let dir = parent.join("certs");
        let ca = certs::init_ca(&dir).expect("create the test CA").cert;
        TestCerts { dir, ca, insecure }
    }

    /// Issues (once) the manager certificate of replica `id`; returns
    /// (cert, key).
    pub fn manager(&self, id: u64) -> (PathBuf, PathBuf) {
        let name = format!("replica-{id}");
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        if !cert.exists() {
            certs::issue_with_id(
                &self.dir,
                Role::Manager,
                &name,
                &["127.0.0.1".into(), "localhost".into()],
                Some(id),
            )
            .expect("issue a replica certificate");
        }
        (cert, key)
    }

    /// The `[tls]` section of replica `id`'s config.
    pub fn toml(&self, id: u64) -> String {
        if self.insecure {
            return "[tls]\ninsecure = true\n".into();
        }
        let (cert, key) = self.manager(id);
        format!(
            "[tls]\nca_cert = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
            self.ca
        )
    }

    /// Lets a typed client trust the cluster CA.
    pub fn configure(&self, options: &mut ClientOptions) {
        if !self.insecure {
            options.ca_cert = Some(self.ca.clone());
        }
    }

    /// `https://addr` (or `http://` when insecure).
    pub fn url(&self, addr: &str) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{addr}")
    }

    /// A reqwest client builder that trusts the cluster CA.
    pub fn http_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        if self.insecure {
            return builder;
        }
        let pem = std::fs::read(&self.ca).expect("read the test CA");
        builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
    }

    /// CLI arguments that make `raftvisor` trust the CA.
    pub fn cli_args(&self) -> Vec<String> {
        if self.insecure {
            Vec::new()
        } else {
            vec!["--ca-cert".into(), self.ca.display().to_string()]
        }
    }
}
