//! Leader-only: gives a cluster its first admin token. The leader that
//! finds the cluster without one (a new cluster, or one from before tokens
//! existed) writes `Command::BootstrapToken` with the token
//! [`crate::auth::first_token`] obtained, which the state machine applies
//! once per cluster.

use super::{OpError, Replica};
use crate::auth::first_token::{self, Origin};
use crate::auth::Token;
use crate::state::{Command, Outcome};

/// A token proposed as the first admin token whose fate is not known yet.
#[derive(Debug)]
pub struct Pending {
    token: Token,
    origin: Origin,
}

/// Leader-only: makes sure the cluster has had its bootstrap admin token,
/// proposing one if not. `pending` carries a proposed token across retries
/// whose outcome was unknown, so it is announced if it did commit.
pub async fn ensure_first_token(
    replica: &Replica,
    pending: &mut Option<Pending>,
) -> Result<(), OpError> {
    if let Some(Pending { token, origin }) = pending.as_ref() {
        let committed = replica.sm.read(|s| {
            s.tokens
                .get(token.id())
                .is_some_and(|t| t.hash == token.hash())
        });
        if committed {
            origin.announce(token);
            *pending = None;
            return Ok(());
        }
    }
    if replica.sm.read(|s| s.tokens_bootstrapped) {
        if let Some(Pending { origin, .. }) = pending.take() {
            origin.forget();
        }
        return Ok(());
    }
    let (token, origin) = match pending.take() {
        Some(p) => (p.token, p.origin),
        None => first_token::obtain(replica.config.auth.bootstrap_token_file.as_deref()).map_err(|e| {
            tracing::error!(error = %e, "no bootstrap admin token: the API cannot be used until this is fixed");
            OpError::Unavailable(e.to_string())
        })?,
    };
    let command = Command::BootstrapToken {
        id: token.id().to_string(),
        hash: token.hash(),
    };
    match replica.write(command).await {
        Ok(applied) if matches!(applied.outcome, Outcome::Token(_)) => {
            origin.announce(&token);
            Ok(())
        }
        Ok(_) => {
            // Another leader bootstrapped the cluster first.
            origin.forget();
            Ok(())
        }
        Err(e) => {
            *pending = Some(Pending { token, origin });
            Err(e)
        }
    }
}
