//! API tokens in the replicated model: adding (with or without limits to
//! namespaces and KV prefixes), revoking and the one-time bootstrap admin
//! token. Only ids, roles and SHA-256 hashes are stored;
//! the secrets never reach the log. Pure, like the rest of `apply`.

use super::{validate, Outcome, Role, State, TokenLimits, TokenRecord};

impl State {
    pub(super) fn put_token(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        name: &str,
        role: Role,
        hash: &[u8; 32],
    ) -> Outcome {
        if let Err(reason) = validate::token_id(id).and(validate::token_name(name)) {
            return Outcome::Rejected(reason.into());
        }
        if self.tokens.contains_key(id) {
            return Outcome::Rejected(format!("token id {id} is already in use"));
        }
        let record = TokenRecord {
            id: id.to_string(),
            name: name.to_string(),
            role,
            hash: *hash,
            created_ms: time_ms,
            create_index: index,
        };
        self.tokens.insert(id.to_string(), record.clone());
        self.event(
            index,
            time_ms,
            "token.created",
            id,
            format!("{} token {name:?} created", role.as_str()),
        );
        Outcome::Token(Box::new(record))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_limited_token(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        name: &str,
        role: Role,
        hash: &[u8; 32],
        limits: &TokenLimits,
    ) -> Outcome {
        if let Err(reason) = validate::token_limits(role, limits) {
            return Outcome::Rejected(reason.into());
        }
        // The token and its limits appear in one apply: no reader ever
        // sees the token without them.
        let outcome = self.put_token(index, time_ms, id, name, role, hash);
        if matches!(outcome, Outcome::Token(_)) {
            self.token_limits.insert(id.to_string(), limits.clone());
            if let Some(event) = self.events.back_mut() {
                event.message = format!(
                    "{}, limited to namespaces [{}] and KV prefixes [{}]",
                    event.message,
                    limits.namespaces.join(", "),
                    limits.kv_prefixes.join(", ")
                );
            }
        }
        outcome
    }

    pub(super) fn revoke_token(&mut self, index: u64, time_ms: u64, id: &str) -> Outcome {
        let Some(token) = self.tokens.get(id) else {
            return Outcome::NotFound;
        };
        // Without an admin token nobody could ever manage tokens or
        // membership again: refuse instead of locking the cluster.
        if token.role == Role::Admin
            && self
                .tokens
                .values()
                .filter(|t| t.role == Role::Admin)
                .count()
                == 1
        {
            return Outcome::Rejected(format!(
                "token {id} is the last admin token; create another admin token first"
            ));
        }
        self.tokens.remove(id);
        self.token_limits.remove(id);
        self.event(index, time_ms, "token.revoked", id, "token revoked".into());
        Outcome::Deleted
    }

    pub(super) fn bootstrap_token(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        hash: &[u8; 32],
    ) -> Outcome {
        if self.tokens_bootstrapped {
            return Outcome::Done;
        }
        let outcome = self.put_token(index, time_ms, id, "bootstrap", Role::Admin, hash);
        if matches!(outcome, Outcome::Token(_)) {
            self.tokens_bootstrapped = true;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, Request, RequestId};
    use super::*;

    fn req(seq: u128, command: Command) -> Request {
        Request {
            id: RequestId(seq),
            time_ms: 5_000 + seq as u64,
            command,
        }
    }

    fn put(id: &str, role: Role) -> Command {
        Command::PutToken {
            id: id.into(),
            name: format!("{id} name"),
            role,
            hash: [7; 32],
        }
    }

    #[test]
    fn put_token_stores_the_hash_and_rejects_reused_or_bad_ids() {
        let mut state = State::default();
        let outcome = state.apply(3, &req(1, put("abc1", Role::Read))).outcome;
        let Outcome::Token(record) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            (
                record.role,
                record.hash,
                record.create_index,
                record.created_ms
            ),
            (Role::Read, [7; 32], 3, 5_001)
        );
        assert_eq!(state.tokens["abc1"], *record);
        assert!(matches!(
            state.apply(4, &req(2, put("abc1", Role::Admin))).outcome,
            Outcome::Rejected(_)
        ));
        assert_eq!(state.tokens["abc1"].role, Role::Read);
        assert!(matches!(
            state
                .apply(5, &req(3, put("Not-An-Id", Role::Read)))
                .outcome,
            Outcome::Rejected(_)
        ));
        assert_eq!(state.tokens.len(), 1);
    }

    fn limits(namespaces: &[&str], kv_prefixes: &[&str]) -> TokenLimits {
        TokenLimits {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            kv_prefixes: kv_prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn put_limited(id: &str, role: Role, limits: TokenLimits) -> Command {
        Command::PutLimitedToken {
            id: id.into(),
            name: format!("{id} name"),
            role,
            hash: [9; 32],
            limits,
        }
    }

    #[test]
    fn a_limited_token_keeps_its_limits_until_revoked() {
        let mut state = State::default();
        state.apply(1, &req(1, put("admin1", Role::Admin)));
        let team = limits(&["a", "b"], &["a/", "b/"]);
        let outcome = state
            .apply(
                2,
                &req(2, put_limited("team1", Role::Operator, team.clone())),
            )
            .outcome;
        assert!(matches!(outcome, Outcome::Token(_)), "{outcome:?}");
        assert_eq!(state.token_limits["team1"], team);
        let created = state.events.back().unwrap();
        assert!(
            created.message.contains("namespaces [a, b]") && created.message.contains("[a/, b/]"),
            "{}",
            created.message
        );
        // The limits travel with snapshots.
        let restored = State::from_image(state.to_image());
        assert_eq!(restored.token_limits, state.token_limits);
        state.apply(3, &req(3, Command::RevokeToken { id: "team1".into() }));
        assert!(state.token_limits.is_empty());
    }

    #[test]
    fn limits_that_reach_nothing_or_an_admin_are_refused() {
        let mut state = State::default();
        let refused = [
            put_limited("x1", Role::Admin, limits(&["a"], &[])),
            put_limited("x2", Role::Read, limits(&[], &[])),
            put_limited("x3", Role::Read, limits(&["B"], &[])),
            put_limited("x4", Role::Read, limits(&["b", "a"], &[])),
            put_limited("x5", Role::Read, limits(&["a", "a"], &[])),
            put_limited("x6", Role::Read, limits(&[], &["/abs"])),
        ];
        for (seq, command) in refused.into_iter().enumerate() {
            let outcome = state
                .apply(seq as u64 + 1, &req(seq as u128 + 1, command))
                .outcome;
            assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        }
        assert!(state.tokens.is_empty() && state.token_limits.is_empty());
        // KV prefixes alone make a KV-only token.
        let outcome = state
            .apply(
                9,
                &req(9, put_limited("kv1", Role::Operator, limits(&[], &["pg/"]))),
            )
            .outcome;
        assert!(matches!(outcome, Outcome::Token(_)), "{outcome:?}");
    }

    #[test]
    fn limits_match_namespaces_exactly_and_keys_by_prefix() {
        let team = limits(&["a"], &["a/", "shared/x"]);
        assert!(team.allows_namespace("a") && !team.allows_namespace("ab"));
        assert!(team.allows_key("a/k") && team.allows_key("a/") && team.allows_key("shared/xy"));
        assert!(!team.allows_key("a") && !team.allows_key("ab/k") && !team.allows_key(""));
    }

    #[test]
    fn revoke_removes_but_never_the_last_admin() {
        let mut state = State::default();
        state.apply(1, &req(1, put("admin1", Role::Admin)));
        state.apply(2, &req(2, put("op1", Role::Operator)));
        let revoke = |id: &str| Command::RevokeToken { id: id.into() };
        assert_eq!(
            state.apply(3, &req(3, revoke("op1"))).outcome,
            Outcome::Deleted
        );
        assert_eq!(
            state.apply(4, &req(4, revoke("op1"))).outcome,
            Outcome::NotFound
        );
        assert!(matches!(
            state.apply(5, &req(5, revoke("admin1"))).outcome,
            Outcome::Rejected(_)
        ));
        state.apply(6, &req(6, put("admin2", Role::Admin)));
        assert_eq!(
            state.apply(7, &req(7, revoke("admin1"))).outcome,
            Outcome::Deleted
        );
        assert_eq!(state.tokens.keys().collect::<Vec<_>>(), vec!["admin2"]);
    }

    #[test]
    fn bootstrap_applies_once_per_cluster() {
        let mut state = State::default();
        let boot = |id: &str, byte: u8| Command::BootstrapToken {
            id: id.into(),
            hash: [byte; 32],
        };
        assert!(matches!(
            state.apply(1, &req(1, boot("first", 1))).outcome,
            Outcome::Token(_)
        ));
        // A second leader (or a retry with a new request id) changes nothing.
        assert_eq!(
            state.apply(2, &req(2, boot("second", 2))).outcome,
            Outcome::Done
        );
        assert_eq!(state.tokens.keys().collect::<Vec<_>>(), vec!["first"]);
        assert_eq!(state.tokens["first"].role, Role::Admin);
        // Still once after the bootstrap token was replaced and revoked.
        state.apply(3, &req(3, put("admin2", Role::Admin)));
        state.apply(4, &req(4, Command::RevokeToken { id: "first".into() }));
        assert_eq!(
            state.apply(5, &req(5, boot("third", 3))).outcome,
            Outcome::Done
        );
        assert!(!state.tokens.contains_key("third"));
    }

    #[test]
    fn tokens_survive_a_snapshot_image() {
        let mut state = State::default();
        state.apply(
            1,
            &req(
                1,
                Command::BootstrapToken {
                    id: "boot".into(),
                    hash: [1; 32],
                },
            ),
        );
        state.apply(2, &req(2, put("reader", Role::Read)));
        let image = crate::codec::encode(&state.to_image()).unwrap();
        let restored = State::from_image(crate::codec::decode(&image).unwrap());
        assert_eq!(restored.tokens, state.tokens);
        assert!(restored.tokens_bootstrapped);
    }
}
