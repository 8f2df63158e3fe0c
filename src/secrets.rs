//! Secret environment values of services.
//!
//! A service's `secret_env` is sealed (encrypted) by the replica that
//! receives the API request, before the spec enters the Raft log, so the
//! log, the snapshots and every state machine hold only sealed text. Only
//! the supervisor unseals a value, when it hands the environment to the
//! container engine. The key comes from the agent's config
//! (`[secrets] key_file`), never from the log: a copy of a data directory
//! reveals no secret.
//!
//! [`SecretEnv`] keeps the values out of everything printed: its `Debug`
//! shows names only, and JSON (any human-readable format) shows sealed
//! values as [`REDACTED`]. Plain values only exist on the way in (a deploy
//! file, a request body) and serialize unchanged so a client can send them.
//!
//! Every seal draws a fresh random nonce (`sealed:v2:<nonce>:<ciphertext>`,
//! XChaCha20-Poly1305), so equal values never give equal sealed texts and
//! nothing derived from a sealed text (the template fingerprint a read token
//! sees) tells whether two secrets are equal, or equal to a guess. Values
//! sealed by older versions (`sealed:v1:`, a deterministic nonce) still open.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

/// What the API, the CLI and the logs show instead of a secret value.
pub const REDACTED: &str = "<redacted>";
/// What every sealed value starts with, whatever its version.
const SEALED_MARK: &str = "sealed:";
/// Deterministic nonce (an HMAC of name and value): opened, never written.
const V1_PREFIX: &str = "sealed:v1:";
const V1_NONCE_LEN: usize = 12;
/// Random 192-bit nonce per seal: `sealed:v2:<nonce>:<ciphertext>`.
const V2_PREFIX: &str = "sealed:v2:";

/// Why a secret could not be sealed or unsealed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("secret env {name:?} cannot be unsealed with this replica's key (sealed with another key, or damaged)")]
    Unseal { name: String },
    #[error("secret env {name:?} is not sealed")]
    NotSealed { name: String },
}

/// The key that seals and unseals secret values.
pub struct SecretsKey {
    /// Opens `sealed:v1:` values.
    v1: ChaCha20Poly1305,
    /// Seals and opens `sealed:v2:` values.
    v2: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

fn derive(master: &[u8; 32], purpose: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(master: &[u8; 32]) -> SecretsKey {
        let v1_key = derive(master, b"raftvisor secret env: cipher");
        let v2_key = derive(master, b"raftvisor secret env: v2 cipher");
        SecretsKey {
            v1: ChaCha20Poly1305::new((&v1_key).into()),
            v2: XChaCha20Poly1305::new((&v2_key).into()),
        }
    }

    /// Reads a key file: 32 bytes written as 64 hexadecimal digits or in
    /// base64 (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<SecretsKey, SecretsError> {
        let fail = |reason: &str| SecretsError::KeyFile {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(&e.to_string()))?;
        let bytes = parse_key(text.trim())
            .ok_or_else(|| fail("expected 32 bytes as 64 hex digits or base64"))?;
        Ok(SecretsKey::from_bytes(&bytes))
    }

    /// Seals `value` of the variable `name` under a fresh random nonce; the
    /// name is authenticated too, so a sealed value cannot be moved to
    /// another variable.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut nonce = XNonce::default();
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .v2
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        format!("{V2_PREFIX}{}:{}", b64.encode(nonce), b64.encode(sealed))
    }

    /// The clear value of `sealed`, the sealed value of variable `name`
    /// (either version).
    pub fn unseal(&self, name: &str, sealed: &str) -> Result<String, SecretsError> {
        let fail = || SecretsError::Unseal {
            name: name.to_string(),
        };
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let aad = name.as_bytes();
        let clear = if let Some(encoded) = sealed.strip_prefix(V2_PREFIX) {
            let (nonce, ciphertext) = encoded.split_once(':').ok_or_else(fail)?;
            let nonce = b64.decode(nonce).map_err(|_| fail())?;
            if nonce.len() != XNonce::default().len() {
                return Err(fail());
            }
            let ciphertext = b64.decode(ciphertext).map_err(|_| fail())?;
            self.v2.decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
        } else if let Some(encoded) = sealed.strip_prefix(V1_PREFIX) {
            let bytes = b64.decode(encoded).map_err(|_| fail())?;
            if bytes.len() < V1_NONCE_LEN {
                return Err(fail());
            }
            let (nonce, ciphertext) = bytes.split_at(V1_NONCE_LEN);
            self.v1.decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
        } else if is_sealed(sealed) {
            return Err(fail());
        } else {
            return Err(SecretsError::NotSealed {
                name: name.to_string(),
            });
        };
        String::from_utf8(clear.map_err(|_| fail())?).map_err(|_| fail())
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()?
    };
    bytes.try_into().ok()
}

/// Whether `value` is a sealed secret (as stored) rather than a clear one.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_MARK)
}

/// A service's secret environment variables: name → value, where the value
/// is sealed once the spec has passed the API (see the module docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl SecretEnv {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names of the variables, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, REDACTED)))
            .finish()
    }
}

impl Serialize for SecretEnv {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // What people and scripts read: a sealed value never leaves,
            // a clear one is still on its way in (a client's request).
            let shown: BTreeMap<&str, &str> = self
                .0
                .iter()
                .map(|(name, value)| {
                    let shown = if is_sealed(value) { REDACTED } else { value };
                    (name.as_str(), shown)
                })
                .collect();
            shown.serialize(serializer)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for SecretEnv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(SecretEnv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; 32])
    }

    /// A `sealed:v1:` value as versions before v2 wrote it (nonce: an
    /// HMAC of name and value).
    fn seal_v1(master: &[u8; 32], name: &str, value: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&derive(master, b"raftvisor secret env: nonce"))
                .unwrap();
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let nonce = Nonce::from_slice(&tag[..V1_NONCE_LEN]);
        let cipher =
            ChaCha20Poly1305::new((&derive(master, b"raftvisor secret env: cipher")).into());
        let sealed = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .unwrap();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!(
            "{V1_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        )
    }

    #[test]
    fn seal_round_trips_with_a_fresh_nonce_each_time() {
        let k = key(7);
        let sealed = k.seal("DB_PASSWORD", "hunter2");
        assert!(
            is_sealed(&sealed) && sealed.starts_with(V2_PREFIX),
            "{sealed}"
        );
        assert!(!sealed.contains("hunter2"));
        // Equal values never seal alike: no equality oracle.
        let again = k.seal("DB_PASSWORD", "hunter2");
        assert_ne!(sealed, again);
        assert_eq!(k.unseal("DB_PASSWORD", &sealed).unwrap(), "hunter2");
        assert_eq!(k.unseal("DB_PASSWORD", &again).unwrap(), "hunter2");
        // The length of a sealed text depends on the value's length only.
        assert_eq!(sealed.len(), k.seal("DB_PASSWORD", "hunter3").len());
    }

    #[test]
    fn values_sealed_by_older_versions_still_open() {
        let master = [7u8; 32];
        let old = seal_v1(&master, "DB_PASSWORD", "hunter2");
        assert!(is_sealed(&old));
        let k = SecretsKey::from_bytes(&master);
        assert_eq!(k.unseal("DB_PASSWORD", &old).unwrap(), "hunter2");
        assert!(k.unseal("OTHER", &old).is_err());
        assert!(key(8).unseal("DB_PASSWORD", &old).is_err());
    }

    #[test]
    fn unseal_refuses_another_key_another_name_or_damage() {
        let sealed = key(1).seal("A", "value");
        assert!(matches!(
            key(2).unseal("A", &sealed),
            Err(SecretsError::Unseal { .. })
        ));
        assert!(matches!(
            key(1).unseal("B", &sealed),
            Err(SecretsError::Unseal { .. })
        ));
        let mut damaged = sealed.clone().into_bytes();
        let last = damaged.len() - 1;
        damaged[last] = if damaged[last] == b'A' { b'B' } else { b'A' };
        let damaged = String::from_utf8(damaged).unwrap();
        assert!(key(1).unseal("A", &damaged).is_err());
        assert!(matches!(
            key(1).unseal("A", "clear"),
            Err(SecretsError::NotSealed { .. })
        ));
        for odd in ["sealed:v9:AAAA", "sealed:v2:AAAA", "sealed:v2:AAAA:AAAA"] {
            assert!(matches!(
                key(1).unseal("A", odd),
                Err(SecretsError::Unseal { .. })
            ));
        }
    }

    #[test]
    fn json_and_debug_never_show_sealed_values() {
        let k = key(3);
        let mut env = SecretEnv::default();
        env.0.insert("TOKEN".into(), k.seal("TOKEN", "s3cret"));
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(json, r#"{"TOKEN":"<redacted>"}"#);
        assert_eq!(format!("{env:?}"), r#"{"TOKEN": "<redacted>"}"#);
        // The binary codec (log, snapshots, peers) keeps the sealed text.
        let bytes = crate::codec::encode(&env).unwrap();
        let back: SecretEnv = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, env);
        // A clear value on its way in serializes as is.
        let clear = SecretEnv([("A".to_string(), "b".to_string())].into());
        assert_eq!(serde_json::to_string(&clear).unwrap(), r#"{"A":"b"}"#);
    }

    #[test]
    fn equal_secrets_give_fingerprints_that_do_not_reveal_it() {
        use crate::state::supervision::template_fingerprint;
        let k = key(4);
        let spec_with = |sealed: String| {
            let mut spec: crate::state::ServiceSpec =
                serde_json::from_value(serde_json::json!({"image": "a", "replicas": 1})).unwrap();
            spec.secret_env.0.insert("PASSWORD".into(), sealed);
            spec
        };
        // Two services, the same value: different sealed texts, different
        // fingerprints — as different as for two different values.
        let a = spec_with(k.seal("PASSWORD", "guess-me"));
        let b = spec_with(k.seal("PASSWORD", "guess-me"));
        assert_ne!(a.secret_env, b.secret_env);
        assert_ne!(template_fingerprint(&a), template_fingerprint(&b));
        // The fingerprint of one stored spec is stable (no rollout without
        // a change), and what JSON shows is the same for both.
        assert_eq!(template_fingerprint(&a), template_fingerprint(&a.clone()));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }

    #[test]
    fn key_files_take_hex_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let hex = dir.path().join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        let b64 = dir.path().join("b64");
        std::fs::write(
            &b64,
            base64::engine::general_purpose::STANDARD.encode([0xab; 32]),
        )
        .unwrap();
        let a = SecretsKey::from_file(&hex).unwrap();
        let b = SecretsKey::from_file(&b64).unwrap();
        assert_eq!(b.unseal("X", &a.seal("X", "y")).unwrap(), "y");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        let error = SecretsKey::from_file(&short).unwrap_err().to_string();
        assert!(error.contains("32 bytes"), "{error}");
    }
}
