//! Certificate tooling (`raftvisor certs init|issue`): creates the cluster
//! CA and issues manager and client certificates signed by it, and reads
//! the role back out of a certificate.
//!
//! The managers need not hold the CA's key: a *manager issuer*
//! ([`init_issuer`]) is an intermediate CA the root signs, allowed no CA
//! below it (path length 0), whose key lives beside the manager
//! certificates. Where a directory holds one, manager certificates are
//! signed by it and carry it in their file (`leaf ++ issuer`), so peers
//! verify `leaf ← issuer ← root` against the root alone; client
//! certificates are always signed by the root.
//!
//! A certificate's role is a SAN URI `raftvisor://<role>/<name>`: the peer
//! port admits only `manager` certificates, so a client certificate signed
//! by the same CA cannot take part in Raft. A manager certificate also
//! names the Raft id of its replica (`raftvisor://raft-id/<id>`): peers
//! accept Raft messages only from the id the certificate names (see
//! `crate::replica::peer_identity`). Files are written with mode
//! 0600 and nothing is ever overwritten: a CA or key replaced by mistake
//! would lock every replica out of its cluster.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The URI scheme of the role SAN.
pub const ROLE_SCHEME: &str = "raftvisor://";
/// The SAN URI prefix naming a manager's Raft id.
pub const RAFT_ID_URI: &str = "raftvisor://raft-id/";
/// File names of the CA in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// File names of the manager issuer in a certificate directory.
pub const ISSUER_CERT: &str = "issuer.pem";
pub const ISSUER_KEY: &str = "issuer-key.pem";

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A replica: serves and speaks Raft on the peer port, serves the API.
    Manager,
    /// A user or program calling the API; never admitted to the peer port.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Client => "client",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "manager" => Ok(Role::Manager),
            "client" => Ok(Role::Client),
            other => Err(format!("role {other:?} is neither manager nor client")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The files one command wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const CA_VALIDITY_DAYS: i64 = 10 * 365;
const ISSUER_VALIDITY_DAYS: i64 = 5 * 365;
const LEAF_VALIDITY_DAYS: i64 = 2 * 365;

fn validity(params: &mut CertificateParams, days: i64) {
    // Back-date by a day so small clock differences between machines do
    // not make a fresh certificate "not yet valid".
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days);
}

fn generate(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_string(),
        source,
    }
}

/// Writes `contents` to a new file, mode 0600 (keys and certificates alike:
/// see [`crate::file_modes`]).
fn write_new(path: &Path, contents: &str) -> Result<(), CertError> {
    let mut options = crate::file_modes::options();
    options.write(true).create_new(true);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            CertError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| CertError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(CertError::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Creates the cluster CA (`ca.pem`, `ca-key.pem`) in `dir`.
pub fn init_ca(dir: &Path) -> Result<Written, CertError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    crate::file_modes::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate().map_err(generate("CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "raftvisor cluster CA");
    params.distinguished_name = dn;
    // One CA below it at most: the manager issuer.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(generate("CA certificate"))?;
    // Key first: a CA certificate without its key would block a retry.
    write_new(&key_path, &key.serialize_pem())?;
    write_new(&cert_path, &cert.pem())?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
    })
}

/// Whether the CA in `dir` may sign a manager issuer: CAs made before
/// issuers existed allow no CA below them.
pub fn ca_allows_issuer(dir: &Path) -> Result<bool, CertError> {
    let path = dir.join(CA_CERT);
    let pem = read_text(&path)?;
    let params = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| {
        CertError::Invalid(format!("{} is not a CA certificate: {e}", path.display()))
    })?;
    Ok(!matches!(
        params.is_ca,
        IsCa::Ca(BasicConstraints::Constrained(0))
    ))
}

/// Creates the manager issuer (`issuer.pem`, `issuer-key.pem`) in `dir`,
/// signed by the CA in `ca_dir`: an intermediate CA that can sign
/// certificates but no CA, for managers to issue their replacements'
/// certificates without the root's key. Never overwrites.
pub fn init_issuer(ca_dir: &Path, dir: &Path) -> Result<Written, CertError> {
    let cert_path = dir.join(ISSUER_CERT);
    let key_path = dir.join(ISSUER_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    if !ca_allows_issuer(ca_dir)? {
        return Err(CertError::Invalid(format!(
            "the CA in {} allows no CA below it (made before manager issuers): it cannot sign one",
            ca_dir.display()
        )));
    }
    crate::file_modes::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let (ca, ca_key) = signer(&ca_dir.join(CA_CERT), &ca_dir.join(CA_KEY))?;
    let key = KeyPair::generate().map_err(generate("issuer key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "raftvisor manager issuer");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, ISSUER_VALIDITY_DAYS);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(generate("issuer certificate"))?;
    write_new(&key_path, &key.serialize_pem())?;
    write_new(&cert_path, &cert.pem())?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
    })
}

fn read_text(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The CA certificate at `cert` as rcgen's issuer, with its key at `key`.
fn signer(cert: &Path, key: &Path) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let ca_key = KeyPair::from_pem(&read_text(key)?)
        .map_err(|e| CertError::Invalid(format!("{} is not a key: {e}", key.display())))?;
    // rcgen signs with an issuer Certificate: rebuild it from the CA's
    // subject and key (same name and key identifier as the file on disk).
    let ca = CertificateParams::from_ca_cert_pem(&read_text(cert)?)
        .map_err(|e| {
            CertError::Invalid(format!("{} is not a CA certificate: {e}", cert.display()))
        })?
        .self_signed(&ca_key)
        .map_err(generate("CA issuer"))?;
    Ok((ca, ca_key))
}

/// Checks a certificate name: it becomes a file name and a URI path part.
fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['.', '-'])
        && name != "ca"
        && name != "issuer";
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "name {name:?} must be 1-64 letters, digits, '-', '_' or '.', not start with '.' or '-', and not be \"ca\" or \"issuer\""
        )))
    }
}

/// The role SAN of `name`.
pub fn role_uri(role: Role, name: &str) -> String {
    format!("{ROLE_SCHEME}{role}/{name}")
}

/// The Raft-id SAN of replica `id`.
pub fn raft_id_uri(id: u64) -> String {
    format!("{RAFT_ID_URI}{id}")
}

/// Issues `NAME.pem` + `NAME-key.pem` in `dir`, signed by the CA there,
/// naming no Raft id (see [`issue_with_id`]).
pub fn issue(dir: &Path, role: Role, name: &str, sans: &[String]) -> Result<Written, CertError> {
    issue_with_id(dir, role, name, sans, None)
}

/// Issues `NAME.pem` + `NAME-key.pem` in `dir`, signed by the CA there.
/// `sans` are the IP addresses and host names the certificate is valid for;
/// a manager needs those of its peer and API addresses, and its Raft id
/// (`raft_id`) to be admitted by its peers.
pub fn issue_with_id(
    dir: &Path,
    role: Role,
    name: &str,
    sans: &[String],
    raft_id: Option<u64>,
) -> Result<Written, CertError> {
    check_name(name)?;
    match (role, raft_id) {
        (Role::Client, Some(_)) => {
            return Err(CertError::Invalid(
                "only a manager certificate names a Raft id".into(),
            ))
        }
        (_, Some(0)) => return Err(CertError::Invalid("a Raft id is a positive integer".into())),
        _ => {}
    }
    if role == Role::Manager && sans.is_empty() {
        return Err(CertError::Invalid(
            "a manager certificate needs --san with the IP addresses or host names of its peer and API addresses".into(),
        ));
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    refuse_existing(&[&cert_path, &key_path])?;
    let (key_pem, cert_pem) = sign(dir, role, name, sans, raft_id, LEAF_VALIDITY_DAYS)?;
    write_new(&key_path, &key_pem)?;
    write_new(&cert_path, &cert_pem)?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
    })
}

/// A new key and certificate (PEM) for `name`, valid for `days`: a
/// manager's signed by the manager issuer in `dir` when there is one (the
/// certificate text then ends with the issuer's), anything else by the CA
/// in `dir`.
fn sign(
    dir: &Path,
    role: Role,
    name: &str,
    sans: &[String],
    raft_id: Option<u64>,
    days: i64,
) -> Result<(String, String), CertError> {
    let issuer = (role == Role::Manager && dir.join(ISSUER_KEY).exists())
        .then(|| read_text(&dir.join(ISSUER_CERT)))
        .transpose()?;
    let (ca, ca_key) = match issuer {
        Some(_) => signer(&dir.join(ISSUER_CERT), &dir.join(ISSUER_KEY))?,
        None => signer(&dir.join(CA_CERT), &dir.join(CA_KEY))?,
    };

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    let uri = role_uri(role, name);
    params.subject_alt_names.push(SanType::URI(
        uri.as_str()
            .try_into()
            .map_err(|e| CertError::Invalid(format!("role URI {uri:?}: {e}")))?,
    ));
    if let Some(id) = raft_id {
        let uri = raft_id_uri(id);
        params.subject_alt_names.push(SanType::URI(
            uri.as_str()
                .try_into()
                .map_err(|e| CertError::Invalid(format!("Raft id URI {uri:?}: {e}")))?,
        ));
    }
    for san in sans {
        let san = san.trim();
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_host_name(san) => SanType::DnsName(
                san.try_into()
                    .map_err(|e| CertError::Invalid(format!("SAN {san:?}: {e}")))?,
            ),
            Err(_) => {
                return Err(CertError::Invalid(format!(
                    "SAN {san:?} is neither an IP address nor a host name"
                )))
            }
        };
        params.subject_alt_names.push(entry);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        // A manager is a TLS server (peer and API ports) and a TLS client
        // (calling its peers).
        Role::Manager => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(generate("key"))?;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(generate("certificate"))?;
    let mut pem = cert.pem();
    if let Some(issuer) = issuer {
        pem.push_str(&issuer);
    }
    Ok((key.serialize_pem(), pem))
}

/// A manager certificate `rotate` renewed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    pub name: String,
    pub raft_id: u64,
    pub cert: PathBuf,
    /// The new certificate's expiry (RFC 3339).
    pub expires: String,
}

/// Renews every manager certificate in `dir` (`NAME.pem` with
/// `NAME-key.pem`): a new key and a certificate with the same name, Raft
/// id and addresses, signed by the CA there and valid for `days`. The files
/// are rewritten in place (same inode: manager containers bind-mount them),
/// the key first; a running replica picks the pair up within seconds (see
/// [`super::reload`]), refusing a half-written one until both are there.
pub fn rotate(dir: &Path, days: i64) -> Result<Vec<Rotated>, CertError> {
    if !(1..=3650).contains(&days) {
        return Err(CertError::Invalid(format!(
            "--days {days}: a certificate is valid for 1 to 3650 days"
        )));
    }
    let listed = std::fs::read_dir(dir).map_err(|source| CertError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut managers = Vec::new();
    for entry in listed {
        let path = entry
            .map_err(|source| CertError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
            .filter(|n| !["ca", "issuer"].contains(n) && !n.ends_with("-key"))
        else {
            continue;
        };
        let key = dir.join(format!("{name}-key.pem"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Some(der) = first_der(&text) else {
            continue;
        };
        if !matches!(role_of(&der), Some((Role::Manager, _))) || !key.exists() {
            continue;
        }
        let raft_id =
            raft_id_of(&der).map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))?;
        managers.push((name.to_string(), raft_id, subject_names(&der), path, key));
    }
    if managers.is_empty() {
        return Err(CertError::Invalid(format!(
            "{} holds no manager certificate (NAME.pem with NAME-key.pem) to rotate",
            dir.display()
        )));
    }
    managers.sort();
    // Every pair is signed before any file is touched: a CA that cannot
    // sign leaves every certificate as it was.
    let mut signed = Vec::new();
    for (name, raft_id, sans, cert, key) in managers {
        let (key_pem, cert_pem) = sign(dir, Role::Manager, &name, &sans, Some(raft_id), days)?;
        signed.push((name, raft_id, cert, key, key_pem, cert_pem));
    }
    let mut rotated = Vec::new();
    for (name, raft_id, cert, key, key_pem, cert_pem) in signed {
        write_in_place(&key, &key_pem)?;
        write_in_place(&cert, &cert_pem)?;
        let expires = first_der(&cert_pem)
            .and_then(|der| not_after_of(&der))
            .map(crate::dates::rfc3339_secs)
            .unwrap_or_default();
        rotated.push(Rotated {
            name,
            raft_id,
            cert,
            expires,
        });
    }
    Ok(rotated)
}

/// The first certificate of a PEM text (DER).
fn first_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|der| der.to_vec())
}

/// Replaces the content of the existing file `path` (its inode and mode
/// stay: a bind mount of it sees the new content).
fn write_in_place(path: &Path, contents: &str) -> Result<(), CertError> {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        });
    written.map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The role and name a DER certificate carries in its `raftvisor://` SAN,
/// or `None` when it carries none (or the certificate does not parse).
pub fn role_of(der: &[u8]) -> Option<(Role, String)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let rest = uri.strip_prefix(ROLE_SCHEME)?;
            let (role, name) = rest.split_once('/')?;
            Some((role.parse().ok()?, name.to_string()))
        }
        _ => None,
    })
}

/// Why a certificate names no usable Raft id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftIdError {
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    #[error("its subject alternative names do not parse: {0}")]
    BadNames(String),
    #[error("the certificate names no Raft id (a {RAFT_ID_URI}<id> SAN; issue it with `raftvisor certs issue --id`)")]
    Missing,
    #[error("the certificate's Raft id {0:?} is not a positive integer")]
    NotPositive(String),
    #[error("the certificate names more than one Raft id")]
    Several,
}

/// The Raft id a DER certificate names in its `raftvisor://raft-id/` SAN.
pub fn raft_id_of(der: &[u8]) -> Result<u64, RaftIdError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| RaftIdError::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| RaftIdError::BadNames(e.to_string()))?;
    let ids: Vec<&str> = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => uri.strip_prefix(RAFT_ID_URI),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match ids.as_slice() {
        [] => Err(RaftIdError::Missing),
        [id] => id
            .parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| RaftIdError::NotPositive(id.to_string())),
        _ => Err(RaftIdError::Several),
    }
}

/// When a DER certificate expires, in seconds since the Unix epoch.
pub fn not_after_of(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// What `raftvisor certs show` prints about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    pub subject: String,
    /// `manager` or `client`; `null` for the CA or a foreign certificate.
    pub role: Option<String>,
    pub name: Option<String>,
    /// The Raft id a manager certificate names.
    pub raft_id: Option<u64>,
    /// RFC 3339.
    pub not_before: String,
    pub expires: String,
    pub expires_in_days: i64,
    pub subject_names: Vec<String>,
}

/// Reads the first certificate of the PEM file `path`.
pub fn show(path: &Path) -> Result<CertSummary, CertError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).map_err(|e| {
        CertError::Invalid(format!("{} holds no PEM certificate: {e}", path.display()))
    })?;
    summarize(&der)
        .ok_or_else(|| CertError::Invalid(format!("{} does not parse as X.509", path.display())))
}

/// The summary of a DER certificate.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let role = role_of(der);
    let validity = cert.validity();
    let rfc3339 = |t: &x509_parser::time::ASN1Time| crate::dates::rfc3339_secs(t.timestamp());
    Some(CertSummary {
        subject: cert.subject().to_string(),
        role: role.as_ref().map(|(r, _)| r.to_string()),
        name: role.map(|(_, n)| n),
        raft_id: raft_id_of(der).ok(),
        not_before: rfc3339(&validity.not_before),
        expires: rfc3339(&validity.not_after),
        expires_in_days: (validity.not_after.timestamp()
            - OffsetDateTime::now_utc().unix_timestamp())
        .div_euclid(86_400),
        subject_names: subject_names(der),
    })
}

/// The IP addresses and DNS names a DER certificate is valid for.
pub fn subject_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(path: &Path) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(path)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn issues_certificates_carrying_their_role() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&ca.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let m = issue(
            dir.path(),
            Role::Manager,
            "replica-1",
            &["127.0.0.1".into(), "rv-1.example".into()],
        )
        .unwrap();
        assert_eq!(
            role_of(&der_of(&m.cert)),
            Some((Role::Manager, "replica-1".into()))
        );
        assert_eq!(
            subject_names(&der_of(&m.cert)),
            vec!["127.0.0.1".to_string(), "rv-1.example".to_string()]
        );
        let c = issue(dir.path(), Role::Client, "alice", &[]).unwrap();
        assert_eq!(
            role_of(&der_of(&c.cert)),
            Some((Role::Client, "alice".into()))
        );
        assert_eq!(role_of(&der_of(&ca.cert)), None);
    }

    #[test]
    fn manager_certificates_name_their_raft_id_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        let m = issue_with_id(
            dir.path(),
            Role::Manager,
            "replica-7",
            &["127.0.0.1".into()],
            Some(7),
        )
        .unwrap();
        let der = der_of(&m.cert);
        assert_eq!(raft_id_of(&der), Ok(7));
        // The role SAN is still found beside the id SAN.
        assert_eq!(role_of(&der), Some((Role::Manager, "replica-7".into())));
        let summary = show(&m.cert).unwrap();
        assert_eq!(summary.raft_id, Some(7));
        assert_eq!(summary.role.as_deref(), Some("manager"));
        assert!(
            (2 * 365 - 1..=2 * 365).contains(&summary.expires_in_days),
            "{summary:?}"
        );
        let expires = not_after_of(&der).unwrap();
        let in_two_years = OffsetDateTime::now_utc().unix_timestamp() + 2 * 365 * 86_400;
        assert!((expires - in_two_years).abs() < 120, "{expires}");

        let without = issue(dir.path(), Role::Manager, "m-none", &["127.0.0.1".into()]).unwrap();
        let why = raft_id_of(&der_of(&without.cert)).unwrap_err();
        assert_eq!(why, RaftIdError::Missing);
        assert!(why.to_string().contains("names no Raft id"), "{why}");
        assert!(matches!(
            issue_with_id(dir.path(), Role::Client, "c", &[], Some(1)),
            Err(CertError::Invalid(_))
        ));
        assert!(matches!(
            issue_with_id(
                dir.path(),
                Role::Manager,
                "z",
                &["127.0.0.1".into()],
                Some(0)
            ),
            Err(CertError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_to_overwrite_and_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        let again = init_ca(dir.path()).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        issue(dir.path(), Role::Client, "bob", &[]).unwrap();
        assert!(matches!(
            issue(dir.path(), Role::Client, "bob", &[]),
            Err(CertError::Exists { .. })
        ));
        for name in ["", "ca", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(
                    issue(dir.path(), Role::Client, name, &[]),
                    Err(CertError::Invalid(_))
                ),
                "{name:?}"
            );
        }
        let no_san = issue(dir.path(), Role::Manager, "m", &[]).unwrap_err();
        assert!(no_san.to_string().contains("--san"), "{no_san}");
        let bad_san = issue(dir.path(), Role::Manager, "m", &["not a host".into()]).unwrap_err();
        assert!(bad_san.to_string().contains("SAN"), "{bad_san}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(empty.path(), Role::Client, "x", &[]),
            Err(CertError::Read { .. })
        ));
    }
}
