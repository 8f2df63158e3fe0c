//! Applying a write under the leader's limits ([`Command::WithLimits`]):
//! the size limits again (the state machine never trusts an entry to be
//! well-formed) and the rules added since the first release, then the
//! quotas, which only the state machine can check without a race — two
//! concurrent creates each see room at the API. Pure and deterministic:
//! the numbers come from the log entry, not from this replica's config.

use super::limits::{self, LimitError, Limits};
use super::{validate, Command, Outcome, State};

fn refused(error: LimitError) -> Outcome {
    Outcome::Refused {
        code: error.code().to_string(),
        message: error.message,
    }
}

impl State {
    pub(super) fn apply_limited(
        &mut self,
        index: u64,
        time_ms: u64,
        limits: &Limits,
        command: &Command,
    ) -> Outcome {
        if let Err(error) = self.within_limits(limits, command) {
            return error;
        }
        self.apply_command(index, time_ms, command)
    }

    fn within_limits(&self, limits: &Limits, command: &Command) -> Result<(), Outcome> {
        match command {
            Command::WithLimits { .. } | Command::As { .. } => {
                return Err(Outcome::Rejected(
                    "limits wrap the command itself, not limits or an actor".into(),
                ))
            }
            Command::PutService {
                namespace,
                name,
                spec,
                ..
            } => {
                limits.check_service_spec(spec, true).map_err(refused)?;
                validate::health_rules(spec)
                    .and_then(|_| validate::image_rules(spec))
                    .map_err(|reason| Outcome::Rejected(reason.into()))?;
                let key = (namespace.clone(), name.clone());
                let current = self.services.get(&key);
                if current.is_none() && self.services.len() >= limits.max_services as usize {
                    return Err(refused(LimitError::quota(
                        "max_services",
                        "the number of services",
                        self.services.len() as u64 + 1,
                        u64::from(limits.max_services),
                    )));
                }
                let before = current.map_or(0, |s| limits::replicas_run(&s.spec));
                self.instance_quota(limits, before, limits::replicas_run(spec))?;
            }
            Command::ScaleService {
                namespace,
                name,
                replicas,
            } => {
                if let Some(service) = self.services.get(&(namespace.clone(), name.clone())) {
                    let mut scaled = service.spec.clone();
                    scaled.replicas = *replicas;
                    self.instance_quota(
                        limits,
                        limits::replicas_run(&service.spec),
                        limits::replicas_run(&scaled),
                    )?;
                }
            }
            Command::PutNode { name, spec, .. } => {
                limits.check_node_spec(spec).map_err(refused)?;
                if !self.nodes.contains_key(name) && self.nodes.len() >= limits.max_nodes as usize {
                    return Err(refused(LimitError::quota(
                        "max_nodes",
                        "the number of nodes",
                        self.nodes.len() as u64 + 1,
                        u64::from(limits.max_nodes),
                    )));
                }
            }
            Command::KvPut { key, value, .. }
            | Command::KvAcquire { key, value, .. }
            | Command::KvRelease { key, value, .. } => self.kv_quota(limits, key, value)?,
            Command::KvTxn { ops } => {
                for op in ops
                    .iter()
                    .filter(|op| op.verb.writes() && !op.value.is_empty())
                {
                    self.kv_quota(limits, &op.key, &op.value)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Refuses a KV write of `value` at `key` over the size limits, the
    /// number of keys or the bytes of all values.
    fn kv_quota(&self, limits: &Limits, key: &str, value: &[u8]) -> Result<(), Outcome> {
        limits.check_kv(key, value).map_err(refused)?;
        let existing = self.kv.get(key);
        if existing.is_none() && self.kv.len() >= limits.max_kv_keys as usize {
            return Err(refused(LimitError::quota(
                "max_kv_keys",
                "the number of keys",
                self.kv.len() as u64 + 1,
                u64::from(limits.max_kv_keys),
            )));
        }
        let replaced = existing.map_or(0, |e| e.value.len() as u64);
        let total = self.kv_bytes.saturating_sub(replaced) + value.len() as u64;
        if value.len() as u64 > replaced && total > limits.max_kv_bytes {
            return Err(refused(LimitError::quota(
                "max_kv_bytes",
                "the bytes of all values",
                total,
                limits.max_kv_bytes,
            )));
        }
        Ok(())
    }

    /// Refuses growing the replicas of all container services together
    /// from `before` to `after` (for one service) beyond `max_instances`;
    /// shrinking is always allowed.
    fn instance_quota(&self, limits: &Limits, before: u64, after: u64) -> Result<(), Outcome> {
        if after <= before {
            return Ok(());
        }
        let total: u64 = self
            .services
            .values()
            .map(|s| limits::replicas_run(&s.spec))
            .sum();
        let total = total - before + after;
        if total > u64::from(limits.max_instances) {
            return Err(refused(LimitError::quota(
                "max_instances",
                "the replicas of all services",
                total,
                u64::from(limits.max_instances),
            )));
        }
        Ok(())
    }
}
