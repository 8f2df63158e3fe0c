//! Client authentication of the `/v1` API with tokens and roles.
//!
//! A token is `rvt_<id>.<secret>`: the id is public (listing, revocation,
//! log lines), the secret is 256 random bits. The replicated state keeps
//! only the id, a role and the SHA-256 of the whole token
//! ([`crate::state::TokenRecord`]); every replica checks requests against
//! its own copy, so a revocation takes effect wherever it has been applied.
//!
//! - [`token`]: generating, parsing, hashing and verifying tokens (pure).
//! - [`policy`]: which role each method and path needs (pure).
//! - [`scope`]: what a token limited to namespaces and KV prefixes may
//!   reach (pure).
//! - [`middleware`]: the axum layer that answers 401/403 and logs refusals.
//! - [`first_token`]: the first admin token of a new cluster, from or to
//!   the configured file, or generated and printed once.
//!
//! Nothing here ever logs or stores a secret.

pub mod first_token;
pub mod middleware;
pub mod policy;
pub mod scope;
pub mod token;

pub use token::Token;
