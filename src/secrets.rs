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
//! Sealing is deterministic (the nonce is an HMAC of the name and the value,
//! a synthetic IV), so deploying an unchanged secret again gives the same
//! sealed text and does not roll the service's containers. The price is
//! that equal values under the same name have equal sealed texts.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

/// What the API, the CLI and the logs show instead of a secret value.
pub const REDACTED: &str = "<redacted>";
const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 12;

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
    cipher: ChaCha20Poly1305,
    nonce_key: [u8; 32],
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
        let cipher_key = derive(master, b"raftvisor secret env: cipher");
        SecretsKey {
            cipher: ChaCha20Poly1305::new((&cipher_key).into()),
            nonce_key: derive(master, b"raftvisor secret env: nonce"),
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

    /// Seals `value` of the variable `name`; the name is authenticated too,
    /// so a sealed value cannot be moved to another variable.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.nonce_key)
            .expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let nonce = Nonce::from_slice(&tag[..NONCE_LEN]);
        let sealed = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        )
    }

    /// The clear value of `sealed`, the sealed value of variable `name`.
    pub fn unseal(&self, name: &str, sealed: &str) -> Result<String, SecretsError> {
        let fail = || SecretsError::Unseal {
            name: name.to_string(),
        };
        let encoded =
            sealed
                .strip_prefix(SEALED_PREFIX)
                .ok_or_else(|| SecretsError::NotSealed {
                    name: name.to_string(),
                })?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| fail())?;
        if bytes.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let clear = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(clear).map_err(|_| fail())
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
    value.starts_with(SEALED_PREFIX)
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

    #[test]
    fn seal_round_trips_and_is_deterministic() {
        let k = key(7);
        let sealed = k.seal("DB_PASSWORD", "hunter2");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(sealed, k.seal("DB_PASSWORD", "hunter2"));
        assert_ne!(sealed, k.seal("DB_PASSWORD", "hunter3"));
        assert_eq!(k.unseal("DB_PASSWORD", &sealed).unwrap(), "hunter2");
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
        assert_eq!(a.seal("X", "y"), b.seal("X", "y"));
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        let error = SecretsKey::from_file(&short).unwrap_err().to_string();
        assert!(error.contains("32 bytes"), "{error}");
    }
}
