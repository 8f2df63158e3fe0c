//! Error messages with their causes: the one walk over
//! [`std::error::Error::source`] for messages that must say why (an engine
//! call, a peer call, the failure harness's client). It formats only; it
//! never decides what an error means.

use std::error::Error;

/// How many causes are followed at most: a source chain that loops back
/// on itself still ends.
const MAX_DEPTH: usize = 8;

/// `error` followed by each cause it does not already say, joined by `: `.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    for _ in 0..MAX_DEPTH {
        let Some(cause) = source else { break };
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The innermost cause of `error` (itself when it has none), e.g. the
/// "connection refused" beneath an HTTP client's error.
pub fn root_cause(error: &dyn Error) -> String {
    let mut cause = error;
    for _ in 0..MAX_DEPTH {
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot start the container")]
        Start(#[source] Middle),
        #[error("engine call failed: {0}")]
        Repeats(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("request to the engine")]
    struct Middle(#[source] std::io::Error);

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let error = Outer::Start(Middle(refused()));
        assert_eq!(
            error_chain(&error),
            "cannot start the container: request to the engine: connection refused"
        );
        let error = Outer::Repeats(Middle(refused()));
        assert_eq!(
            error_chain(&error),
            "engine call failed: request to the engine: connection refused"
        );
    }

    #[test]
    fn the_root_cause_is_the_innermost() {
        assert_eq!(
            root_cause(&Outer::Start(Middle(refused()))),
            "connection refused"
        );
        assert_eq!(root_cause(&refused()), "connection refused");
    }
}
