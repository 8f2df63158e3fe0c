//! Who is asking: the API token behind the request a task serves, set by
//! the API's token check for the length of the request
//! ([`crate::auth::middleware`]) and read by [`super::Replica::write`], which
//! wraps the command in [`Command::As`] so the change's events name the
//! token. The control plane's own writes (controllers, expiries) run
//! outside any request and name nobody.

use crate::state::{Actor, Command};

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `work` on behalf of `actor`.
pub async fn acting_as<F: std::future::Future>(actor: Actor, work: F) -> F::Output {
    ACTOR.scope(actor, work).await
}

/// `command` as asked by the current request's token, if any.
pub fn attributed(command: Command) -> Command {
    match ACTOR.try_with(Clone::clone) {
        Ok(actor) => Command::As {
            actor,
            command: Box::new(command),
        },
        Err(_) => command,
    }
}
