//! The CLI's exit codes, one per kind of failure a script may want to
//! tell apart, chosen from the error alone (pure):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (a rollout that failed, a file that cannot be read) |
//! | 2 | usage: wrong arguments (clap), or input the API refused (400, 413, 422) |
//! | 3 | not found (404) |
//! | 4 | conflict: a version mismatch, a refused change, a quota (409, 412) |
//! | 5 | unavailable: no replica reachable, no quorum in time (503, 504), a wait that ran out |
//! | 6 | denied: no valid token, or a role too weak (401, 403) |

use crate::client::ClientError;

pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const CONFLICT: i32 = 4;
pub const UNAVAILABLE: i32 = 5;
pub const DENIED: i32 = 6;

/// The exit code for `error`.
pub fn of(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Connect(_) => UNAVAILABLE,
                ClientError::Api { status, .. } => match status {
                    400 | 413 | 422 => USAGE,
                    401 | 403 => DENIED,
                    404 => NOT_FOUND,
                    409 | 412 => CONFLICT,
                    503 | 504 => UNAVAILABLE,
                    _ => FAILURE,
                },
                ClientError::Config(_) => USAGE,
                ClientError::Decode { .. } => FAILURE,
            };
        }
        if cause.downcast_ref::<super::rollout::TimedOut>().is_some()
            || cause.downcast_ref::<super::backup::JobTimedOut>().is_some()
        {
            return UNAVAILABLE;
        }
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> anyhow::Error {
        anyhow::Error::new(ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
            current_version: None,
        })
        .context("while doing something")
    }

    #[test]
    fn statuses_map_to_documented_codes() {
        assert_eq!(of(&api(404)), NOT_FOUND);
        assert_eq!(of(&api(412)), CONFLICT);
        assert_eq!(of(&api(409)), CONFLICT);
        assert_eq!(of(&api(503)), UNAVAILABLE);
        assert_eq!(of(&api(400)), USAGE);
        assert_eq!(of(&api(403)), DENIED);
        assert_eq!(
            of(&anyhow::Error::new(ClientError::Connect("refused".into()))),
            UNAVAILABLE
        );
        assert_eq!(of(&anyhow::anyhow!("cannot read file")), FAILURE);
    }
}
