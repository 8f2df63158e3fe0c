//! API tokens as text: `rvt_<id>.<secret>`, where `<id>` is 12 lowercase
//! hex characters (public) and `<secret>` 64 hex characters (256 random
//! bits). Generation, parsing, SHA-256 hashing and constant-time
//! verification. Pure apart from the random generator.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this, so a leaked one is easy to recognise.
pub const PREFIX: &str = "rvt_";
/// Shortest secret accepted: 32 hex characters are 128 bits.
pub const MIN_SECRET_CHARS: usize = 32;
/// Longest secret accepted (keeps hashing of hostile input bounded).
pub const MAX_SECRET_CHARS: usize = 256;

/// Why a text is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token has the form {PREFIX}<id>.<secret>")]
    Shape,
    #[error("{0}")]
    Id(crate::state::validate::Invalid),
    #[error("the secret of a token must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} characters of a-z, A-Z, 0-9, '-' and '_'")]
    Secret,
}

/// A whole token, secret included. `Debug` shows only the id, so a token
/// that ends up in a log line by mistake does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    id_len: usize,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({PREFIX}{}.…)", self.id())
    }
}

impl Token {
    /// A fresh token from the operating system's random generator.
    pub fn generate() -> Token {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let text = format!("{PREFIX}{}.{}", hex(&id), hex(&secret));
        Token {
            text,
            id_len: id.len() * 2,
        }
    }

    /// Parses a token (surrounding whitespace, as in a file, is ignored).
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        let rest = text.strip_prefix(PREFIX).ok_or(TokenError::Shape)?;
        let (id, secret) = rest.split_once('.').ok_or(TokenError::Shape)?;
        crate::state::validate::token_id(id).map_err(TokenError::Id)?;
        let secret_ok = (MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok {
            return Err(TokenError::Secret);
        }
        Ok(Token {
            text: text.to_string(),
            id_len: id.len(),
        })
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.text[PREFIX.len()..PREFIX.len() + self.id_len]
    }

    /// The whole token, secret included: only to hand it to its owner once.
    pub fn reveal(&self) -> &str {
        &self.text
    }

    /// What the cluster stores instead of the token.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// Whether this token hashes to `stored`, in constant time.
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        self.hash().ct_eq(stored).into()
    }
}

/// The public id of something presented as a token, if it has one, for
/// log lines about refused requests; never any part of the secret.
pub fn public_id(presented: &str) -> Option<&str> {
    let rest = presented.trim().strip_prefix(PREFIX)?;
    let (id, _) = rest.split_once('.')?;
    crate::state::validate::token_id(id).ok().map(|_| id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_ne!(a.id(), b.id());
        let parsed = Token::parse(&format!("  {}\n", a.reveal())).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(a.id().len(), 12);
        let secret = a.reveal().rsplit('.').next().unwrap();
        assert_eq!(secret.len(), 64, "256 bits of hex");
    }

    #[test]
    fn hashes_match_only_their_token() {
        let a = Token::generate();
        let b = Token::generate();
        assert!(a.matches(&a.hash()));
        assert!(!b.matches(&a.hash()));
        // Same id, other secret: refused.
        let forged = Token::parse(&format!("{PREFIX}{}.{}", a.id(), "0".repeat(64))).unwrap();
        assert_eq!(forged.id(), a.id());
        assert!(!forged.matches(&a.hash()));
        // The hash is SHA-256 of the whole text (known answer).
        let known = Token::parse(&format!("rvt_abc.{}", "a".repeat(32))).unwrap();
        let expected: [u8; 32] = Sha256::digest(format!("rvt_abc.{}", "a".repeat(32))).into();
        assert_eq!(known.hash(), expected);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let secret = "s".repeat(MIN_SECRET_CHARS);
        for bad in [
            String::new(),
            "Bearer x".into(),
            format!("abc.{secret}"),
            format!("rvt_abc{secret}"),
            format!("rvt_.{secret}"),
            format!("rvt_ABC.{secret}"),
            format!("rvt_abc.{}", "s".repeat(MIN_SECRET_CHARS - 1)),
            format!("rvt_abc.{}", "s".repeat(MAX_SECRET_CHARS + 1)),
            format!("rvt_abc.{secret} x"),
            format!("rvt_abc.{secret}.x"),
        ] {
            assert!(Token::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_and_public_id_never_show_the_secret() {
        let token = Token::generate();
        let secret = token.reveal().rsplit('.').next().unwrap().to_string();
        let shown = format!("{token:?}");
        assert!(
            shown.contains(token.id()) && !shown.contains(&secret),
            "{shown}"
        );
        assert_eq!(public_id(token.reveal()), Some(token.id()));
        assert_eq!(public_id("garbage"), None);
        assert_eq!(public_id("rvt_BAD.x"), None);
    }
}
