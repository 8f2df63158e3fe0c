//! Images onto nodes: a controller on the [`super::controller`] runtime
//! whose key is one image reference on one node. The services controller
//! asks ([`Pulls::want`]) before it creates a container, before it
//! replaces a running one in a rolling update, and to resolve a version's
//! tag; this controller answers in the shared [`PullBook`] and wakes the
//! services that asked. For each key it looks at the engine first, and
//! only when the image is missing (or the policy is `always`) fetches it:
//! an image the cluster keeps ([`crate::state::image_catalog`]) is copied
//! from an engine that holds it, anything else is pulled from its registry
//! with the cluster's login for that registry (unsealed only here, never
//! logged). A failure keeps the registry's own words, is recorded as an
//! event once per distinct reason, and is retried after a growing pause
//! ([`super::backoff::pull_delay`]), never in a loop.
//!
//! It decides nothing about where containers run and creates none.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backoff;
use super::controller::{self, Action, Limits, OnStop, Reason, Reconciler, Trigger};
use super::engines::Engines;
use super::observed::ServiceKey;
use crate::replica::Replica;
use crate::runtime::{ContainerRuntime, ImageInfo, RegistryAuth, RuntimeError};
use futures::StreamExt;

use crate::state::image_catalog::{login_secret_name, Reference, StoredImage};
use crate::state::{Command, Node, NodeState, PullPolicy};

/// One image reference on one node: to fetch it there, or (`resolve`) to
/// learn from its registry, through that node's engine, which digest its
/// tag names now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PullKey {
    pub node: String,
    pub reference: String,
    pub resolve: bool,
}

impl PullKey {
    fn new(node: &str, reference: &str, resolve: bool) -> PullKey {
        PullKey {
            node: node.to_string(),
            reference: reference.to_string(),
            resolve,
        }
    }
}

impl controller::KeyName for PullKey {
    fn key_name(&self) -> String {
        let what = if self.resolve { "resolve" } else { "fetch" };
        format!("{what} {} on {}", self.reference, self.node)
    }
}

/// Longest one pull, load or copy may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Pulls and copies running at once.
const CONCURRENCY: usize = 16;

/// With `pull = "always"`, a pull serves the creates asked within this
/// long of it: a burst of instances shares one trip to the registry.
const ALWAYS_FRESH: Duration = Duration::from_secs(10);

/// Whether an image can be used on a node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// On the engine.
    Ready(ImageInfo),
    /// Being looked up, pulled or copied; the asker is woken when done.
    Pending,
    /// The last attempt failed; the next is not before `retry_at`.
    Failed { reason: String, retry_at: Instant },
}

#[derive(Debug)]
struct Entry {
    readiness: Readiness,
    policy: PullPolicy,
    /// When the image was last found or fetched.
    fetched_at: Option<Instant>,
    failures: u32,
    /// The failure last recorded as an event.
    reported: Option<String>,
    waiters: BTreeSet<ServiceKey>,
}

impl Entry {
    /// Asked for just now: a fetch (or resolution) is on its way.
    fn asked(policy: PullPolicy) -> Entry {
        Entry {
            readiness: Readiness::Pending,
            policy,
            fetched_at: None,
            failures: 0,
            reported: None,
            waiters: BTreeSet::new(),
        }
    }
}

/// What the services controller and this controller share.
#[derive(Debug, Default)]
pub struct PullBook {
    entries: HashMap<PullKey, Entry>,
}

/// The services controller's handle on the puller; cheap to clone.
#[derive(Clone)]
pub struct Pulls {
    book: Arc<Mutex<PullBook>>,
    trigger: Trigger<PullKey>,
}

impl Pulls {
    pub fn new(trigger: Trigger<PullKey>) -> Pulls {
        Pulls {
            book: Arc::new(Mutex::new(PullBook::default())),
            trigger,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, PullBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `reference` can be used on `node` now; when it is not known
    /// to be there, a look (and, by `policy`, a fetch) is started and
    /// `waiter` is woken when it ends.
    pub fn want(
        &self,
        node: &str,
        reference: &str,
        policy: PullPolicy,
        waiter: &ServiceKey,
    ) -> Readiness {
        self.ask(PullKey::new(node, reference, false), policy, waiter)
    }

    /// What the tag `reference` names now, asked of its registry through
    /// `node`'s engine (`Ready` carries the digest among its repo
    /// digests); an image only ever on engines answers with itself.
    pub fn resolution(
        &self,
        node: &str,
        reference: &str,
        policy: PullPolicy,
        waiter: &ServiceKey,
    ) -> Readiness {
        self.ask(PullKey::new(node, reference, true), policy, waiter)
    }

    fn ask(&self, key: PullKey, policy: PullPolicy, waiter: &ServiceKey) -> Readiness {
        let now = controller::now();
        let mut book = self.book();
        let fresh = !book.entries.contains_key(&key);
        let entry = book
            .entries
            .entry(key.clone())
            .or_insert_with(|| Entry::asked(policy));
        let start = fresh
            || match &entry.readiness {
                Readiness::Ready(_) => {
                    let stale = policy == PullPolicy::Always
                        && entry
                            .fetched_at
                            .is_none_or(|at| now.duration_since(at) > ALWAYS_FRESH);
                    if !stale {
                        return entry.readiness.clone();
                    }
                    true
                }
                // Already asked for; the waiter joins.
                Readiness::Pending => false,
                Readiness::Failed { retry_at, .. } => *retry_at <= now,
            };
        entry.waiters.insert(waiter.clone());
        if start {
            entry.policy = policy;
            entry.readiness = Readiness::Pending;
            drop(book);
            self.trigger.wake(key, Reason::Commit);
            return Readiness::Pending;
        }
        entry.readiness.clone()
    }

    /// What is known of `reference` on `node`, asking nothing.
    pub fn known(&self, node: &str, reference: &str) -> Option<Readiness> {
        self.book()
            .entries
            .get(&PullKey::new(node, reference, false))
            .map(|entry| entry.readiness.clone())
    }

    /// A look at the engine (by the services controller) found the image:
    /// no fetch is needed.
    pub fn note_present(&self, node: &str, reference: &str, info: ImageInfo) {
        let mut book = self.book();
        let entry = book
            .entries
            .entry(PullKey::new(node, reference, false))
            .or_insert_with(|| Entry::asked(PullPolicy::IfMissing));
        entry.readiness = Readiness::Ready(info);
        entry.fetched_at = Some(controller::now());
        entry.failures = 0;
    }

    /// The engine said it lacks an image thought to be there (a create
    /// failed with "no such image"): the next [`Pulls::want`] looks again.
    pub fn forget(&self, node: &str, reference: &str) {
        self.book()
            .entries
            .remove(&PullKey::new(node, reference, false));
    }

    /// The registry logins or the images the cluster keeps changed: what
    /// failed may work now, so every failure is retried at once.
    pub fn retry_failures(&self) {
        let mut retry = Vec::new();
        {
            let mut book = self.book();
            for (key, entry) in &mut book.entries {
                if matches!(entry.readiness, Readiness::Failed { .. }) {
                    entry.readiness = Readiness::Pending;
                    retry.push(key.clone());
                }
            }
        }
        for key in retry {
            self.trigger.wake(key, Reason::Commit);
        }
    }

    /// A resolution was used (its version is pinned): the next version's
    /// asks the registry again.
    pub fn forget_resolution(&self, node: &str, reference: &str) {
        self.book()
            .entries
            .remove(&PullKey::new(node, reference, true));
    }
}

/// The puller of one term.
pub struct Puller {
    replica: Arc<Replica>,
    engines: Engines,
    pulls: Pulls,
    services: Trigger<ServiceKey>,
}

impl Puller {
    pub fn new(
        replica: Arc<Replica>,
        engines: Engines,
        pulls: Pulls,
        services: Trigger<ServiceKey>,
    ) -> Puller {
        Puller {
            replica,
            engines,
            pulls,
            services,
        }
    }

    /// Records how `key` ended and wakes whoever waited for it.
    async fn settle(&self, key: &PullKey, outcome: Result<ImageInfo, String>) {
        let now = controller::now();
        let (waiters, report) = {
            let mut book = self.pulls.book();
            let Some(entry) = book.entries.get_mut(key) else {
                return;
            };
            let report = match outcome {
                Ok(info) => {
                    entry.readiness = Readiness::Ready(info);
                    entry.fetched_at = Some(now);
                    entry.failures = 0;
                    entry.reported = None;
                    None
                }
                Err(reason) => {
                    entry.failures += 1;
                    entry.readiness = Readiness::Failed {
                        reason: reason.clone(),
                        retry_at: now + backoff::pull_delay(entry.failures),
                    };
                    let new = entry.reported.as_deref() != Some(reason.as_str());
                    entry.reported = Some(reason.clone());
                    new.then_some(reason)
                }
            };
            (std::mem::take(&mut entry.waiters), report)
        };
        if let Some(reason) = report {
            tracing::warn!(node = %key.node, image = %key.reference, %reason, "cannot fetch the image");
            self.event(
                "image.pull_failed",
                &key.reference,
                format!("on node {}: {reason}", key.node),
            )
            .await;
        }
        for waiter in waiters {
            self.services.wake(waiter, Reason::Engine);
        }
    }

    async fn event(&self, kind: &str, subject: &str, message: String) {
        let message =
            crate::state::limits::truncate(message, crate::state::limits::MAX_EVENT_MESSAGE_BYTES);
        let _ = self
            .replica
            .write_as_leader(Command::RecordEvent {
                kind: kind.into(),
                subject: subject.into(),
                message,
            })
            .await;
    }

    /// Brings `reference` onto `node`'s engine as `policy` says.
    async fn fetch(
        &self,
        node: &Node,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<ImageInfo, String> {
        let engine = self.engines.for_node(node).map_err(|e| e.to_string())?;
        if policy != PullPolicy::Always {
            match engine.inspect_image(reference).await {
                Ok(Some(info)) => return Ok(info),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let stored = self.replica.sm.read(|s| {
            s.images.stored_for(reference).map(|image| {
                let holders: Vec<Node> = image
                    .holders
                    .iter()
                    .filter(|h| **h != node.name)
                    .filter_map(|h| s.nodes.get(h))
                    .filter(|h| h.state == NodeState::Ready)
                    .cloned()
                    .collect();
                (image.clone(), holders)
            })
        });
        if let Some((image, holders)) = stored {
            if policy == PullPolicy::Always {
                if let Ok(Some(info)) = engine.inspect_image(reference).await {
                    return Ok(info);
                }
            }
            let info = self.load_kept(&image, &holders, node, &*engine).await?;
            self.brought(node, &image.id).await;
            let mut now_holding = image.holders.clone();
            if now_holding.insert(node.name.clone()) {
                let _ = self
                    .replica
                    .write_as_leader(Command::SetImageHolders {
                        name: image.name.clone(),
                        id: image.id.clone(),
                        holders: now_holding,
                    })
                    .await;
            }
            return Ok(info);
        }
        if policy == PullPolicy::Never {
            return Err(format!(
                "image {reference} is not on node {} and the service's pull policy is \"never\"",
                node.name
            ));
        }
        let auth = self.auth(reference)?;
        self.event(
            "image.pulling",
            reference,
            format!("pulling onto node {}", node.name),
        )
        .await;
        let started = Instant::now();
        match engine.pull(reference, auth.as_ref(), PULL_TIMEOUT).await {
            Ok(info) => {
                tracing::info!(node = %node.name, image = reference, elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
                self.brought(node, reference).await;
                Ok(info)
            }
            Err(e @ RuntimeError::Pull { .. }) => Err(e.to_string()),
            Err(e) => Err(format!("pulling {reference} failed: {e}")),
        }
    }

    /// What the tag `reference` names now. An image the engine has that
    /// no registry ever gave it (built or loaded there) names itself; with
    /// `pull = "never"`, so does the engine's copy. Otherwise the registry
    /// is asked; when it cannot answer, the engine's copy serves (a
    /// registry that is down must not stop a deploy of what nodes have).
    async fn resolve(
        &self,
        node: &Node,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<ImageInfo, String> {
        let parsed = Reference::parse(reference)?;
        let engine = self.engines.for_node(node).map_err(|e| e.to_string())?;
        let local = engine
            .inspect_image(reference)
            .await
            .map_err(|e| e.to_string())?;
        match local {
            Some(local) if names_itself(&parsed, &local, policy) => return Ok(local),
            None if policy == PullPolicy::Never => {
                return Err(format!(
                "image {reference} is not on node {} and the service's pull policy is \"never\"",
                node.name
            ))
            }
            _ => {}
        }
        if parsed.digest.is_some() {
            // A digest names itself.
            return Ok(ImageInfo {
                id: String::new(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                size: 0,
            });
        }
        let auth = self.auth(reference)?;
        match engine.resolve(reference, auth.as_ref()).await {
            Ok(digest) => Ok(ImageInfo {
                id: String::new(),
                repo_tags: vec![reference.to_string()],
                repo_digests: vec![parsed.pinned(&digest)],
                size: 0,
            }),
            Err(e) => match local {
                Some(local) => {
                    tracing::warn!(image = reference, error = %e, "the registry cannot resolve the tag: using the node's copy");
                    Ok(local)
                }
                None => Err(match e {
                    RuntimeError::Pull { .. } => e.to_string(),
                    other => format!("resolving {reference} failed: {other}"),
                }),
            },
        }
    }

    /// Records that the cluster brought `reference` to `node`: image
    /// clean-up may remove it there once no service uses it.
    async fn brought(&self, node: &Node, reference: &str) {
        let _ = self
            .replica
            .write_as_leader(Command::ImageOnNode {
                node: node.name.clone(),
                reference: reference.to_string(),
                present: true,
            })
            .await;
    }

    /// The cluster's login for `reference`'s registry, unsealed.
    fn auth(&self, reference: &str) -> Result<Option<RegistryAuth>, String> {
        let registry = Reference::parse(reference)?.registry;
        let Some(login) = self
            .replica
            .sm
            .read(|s| s.images.logins.get(&registry).cloned())
        else {
            return Ok(None);
        };
        let key = self.replica.secrets.as_deref().ok_or_else(|| {
            format!(
                "a login for {registry} is stored but this manager has no secrets key to open it"
            )
        })?;
        let password = key
            .unseal(&login_secret_name(&registry), &login.password)
            .map_err(|e| format!("the stored login for {registry} cannot be opened: {e}"))?;
        Ok(Some(RegistryAuth {
            registry,
            username: login.username,
            password,
        }))
    }

    /// Loads the kept `image` onto `engine`: copied from the engine of one
    /// of `holders` when one answers, else from the archive the managers
    /// keep (fetched from a keeper first when this manager has none).
    async fn load_kept(
        &self,
        image: &StoredImage,
        holders: &[Node],
        node: &Node,
        engine: &dyn ContainerRuntime,
    ) -> Result<ImageInfo, String> {
        for holder in holders {
            match copy_image(&self.engines, &image.name, holder, engine).await {
                Ok(info) => {
                    tracing::info!(image = %image.name, from = %holder.name, to = %node.name, "image copied from an engine");
                    return Ok(info);
                }
                Err(e) => {
                    tracing::debug!(image = %image.name, from = %holder.name, error = %e, "no copy from this engine")
                }
            }
        }
        let path = self
            .replica
            .archive_from(&image.archive, &image.keepers)
            .await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("opening the archive of {}: {e}", image.name))?;
        let archive = tokio_util::io::ReaderStream::new(file)
            .map(|chunk| {
                chunk.map_err(|e| RuntimeError::Engine(format!("reading the archive: {e}")))
            })
            .boxed();
        engine
            .load_image(archive, PULL_TIMEOUT)
            .await
            .map_err(|e| format!("loading {} onto node {}: {e}", image.name, node.name))?;
        let info = engine
            .inspect_image(&image.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "node {} loaded the archive of {} but has no image {}",
                    node.name, image.name, image.id
                )
            })?;
        tracing::info!(image = %image.name, to = %node.name, "image loaded from the managers' archive");
        Ok(info)
    }
}

/// Whether the engine's copy `local` of `reference` is what the reference
/// names, with no registry to ask: a digest names itself, so does an image
/// no registry gave the engine (built or loaded there), and any copy when
/// the policy is `never`.
pub fn names_itself(reference: &Reference, local: &ImageInfo, policy: PullPolicy) -> bool {
    reference.digest.is_some()
        || reference.digest_among(&local.repo_digests).is_none()
        || policy == PullPolicy::Never
}

/// Streams `name` from `from`'s engine into `to` (engine to engine, through
/// this manager, never whole in memory) and answers what `to` then has.
async fn copy_image(
    engines: &Engines,
    name: &str,
    from: &Node,
    to: &dyn ContainerRuntime,
) -> Result<ImageInfo, RuntimeError> {
    let source = engines.for_node(from)?;
    let archive = source.save_image(name).await?;
    to.load_image(archive, PULL_TIMEOUT).await?;
    to.inspect_image(name)
        .await?
        .ok_or_else(|| RuntimeError::ImageNotFound(name.to_string()))
}

#[async_trait::async_trait]
impl Reconciler for Puller {
    type Key = PullKey;
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "pulls"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: PULL_TIMEOUT + Duration::from_secs(30),
            concurrency: CONCURRENCY,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    /// Nothing is pulled until someone asks.
    fn keys(&self) -> Vec<PullKey> {
        Vec::new()
    }

    async fn reconcile(&self, key: &PullKey, _: Reason) -> Result<Action, Self::Error> {
        let policy = {
            let book = self.pulls.book();
            match book.entries.get(key) {
                Some(entry) => entry.policy,
                None => return Ok(Action::AwaitChange),
            }
        };
        let node = self.replica.sm.read(|s| s.nodes.get(&key.node).cloned());
        let outcome = match node {
            None => Err(format!("node {} is not in the inventory", key.node)),
            Some(node) if key.resolve => self.resolve(&node, &key.reference, policy).await,
            Some(node) => self.fetch(&node, &key.reference, policy).await,
        };
        self.settle(key, outcome).await;
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> ServiceKey {
        ("ns".into(), "svc".into())
    }

    #[test]
    fn a_want_starts_one_fetch_and_later_wants_wait_for_it() {
        let (trigger, mut triggers) = controller::channel();
        let pulls = Pulls::new(trigger);
        let first = pulls.want("n1", "app:1", PullPolicy::IfMissing, &waiter());
        assert_eq!(first, Readiness::Pending);
        let again = pulls.want(
            "n1",
            "app:1",
            PullPolicy::IfMissing,
            &("ns".into(), "b".into()),
        );
        assert_eq!(again, Readiness::Pending);
        assert_eq!(
            triggers.drain_keys(),
            vec![PullKey::new("n1", "app:1", false)]
        );
        let waiting = pulls.book().entries[&PullKey::new("n1", "app:1", false)]
            .waiters
            .len();
        assert_eq!(waiting, 2);
    }

    #[test]
    fn a_failure_is_answered_until_its_retry_time_and_then_fetched_again() {
        let (trigger, mut triggers) = controller::channel();
        let pulls = Pulls::new(trigger);
        pulls.want("n1", "app:1", PullPolicy::IfMissing, &waiter());
        let key = PullKey::new("n1", "app:1", false);
        let past = controller::now();
        {
            let mut book = pulls.book();
            let entry = book.entries.get_mut(&key).unwrap();
            entry.readiness = Readiness::Failed {
                reason: "unauthorized".into(),
                retry_at: past + Duration::from_secs(3600),
            };
        }
        assert!(matches!(
            pulls.want("n1", "app:1", PullPolicy::IfMissing, &waiter()),
            Readiness::Failed { .. }
        ));
        triggers.drain_keys();
        pulls.book().entries.get_mut(&key).unwrap().readiness = Readiness::Failed {
            reason: "unauthorized".into(),
            retry_at: past,
        };
        assert_eq!(
            pulls.want("n1", "app:1", PullPolicy::IfMissing, &waiter()),
            Readiness::Pending
        );
        assert_eq!(triggers.drain_keys(), vec![key]);
    }
}
