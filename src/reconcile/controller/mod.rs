//! The controller runtime every leader-only loop runs on (services, nodes,
//! managers, health probes): the reconcile contract of kube-runtime on a
//! keyed delay queue. A controller ([`Reconciler`]) says which keys exist,
//! reconciles one key (`reconcile(key, reason) -> Result<Action, _>`, the
//! reconciler itself being the shared context) and decides what a failure
//! means (`error_policy`, by default a backoff growing with the key's
//! consecutive failures). The runtime owns everything around that:
//!
//! - one [`queue::WorkQueue`] per controller: a key is never reconciled
//!   twice at once, triggers of a pending key collapse into one run, and
//!   the requeue a reconcile asks for replaces what was pending before it
//!   ran — no task per deadline, one timer for the whole queue;
//! - triggers by object ([`Trigger`]): whoever learns that an object
//!   changed (a commit, an engine event, a probe verdict) names its key,
//!   and only that key runs; a slow resync over every key is the safety net;
//! - a bound on every reconcile (a hung engine call becomes a failure of
//!   that key, retried with backoff, not a stall of the controller), a
//!   tracing span per reconcile with the controller, key and reason, and
//!   counts per key ([`Counts`]) and per reason (`/metrics`);
//! - progress for the [`super::watchdog`]: reported by the runtime while
//!   its queue turns and no reconcile has overrun its bound, never by the
//!   controllers themselves.
//!
//! It never decides anything about services, nodes or engines. Stopping it
//! (its cancellation token) aborts the reconciles in flight, or — for a
//! controller whose limits say [`OnStop::Finish`] — waits for them to end
//! within their timeout; it starts none after the token is cancelled.

pub mod queue;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use queue::Reason;
use queue::{Failures, WorkQueue};

use super::backoff;
use super::watchdog::ProgressReporter;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run again after this long, even if nothing changes.
    RequeueAfter(Duration),
    /// Run again only when a trigger names the key (or at the resync).
    AwaitChange,
}

impl Action {
    /// Requeue at `at` (now if it has passed).
    pub fn at(at: Instant) -> Action {
        Action::RequeueAfter(at.saturating_duration_since(now()))
    }
}

/// The runtime's clock: tokio's, so tests with a paused clock control it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Why a reconcile failed: the controller's own error, or what the runtime
/// saw happen to it.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError<E> {
    #[error(transparent)]
    Failed(E),
    #[error("the reconcile did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("the reconcile panicked")]
    Panicked,
}

/// How the runtime drives one controller.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest one reconcile may run before it is cancelled as failed.
    pub timeout: Duration,
    /// Reconciles of different keys running at once.
    pub concurrency: usize,
    /// Every key is reconciled at least this often (`None`: only on
    /// triggers and requeues).
    pub resync: Option<Duration>,
    /// What stopping the controller does to the reconciles in flight.
    pub on_stop: OnStop,
}

/// What stopping a controller (a lost lease, a lost leadership, shutdown)
/// does to its reconciles in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Cancel them where they wait: right for reconciles whose every step
    /// is repeated from the state by the next run (and engine calls are
    /// gated on the lease anyway).
    Abort,
    /// Let them run to their end (still bounded by the timeout): for
    /// multi-step operations that a cancellation between two steps would
    /// leave half done, such as a membership change waiting for a learner.
    Finish,
}

/// The name of a key in spans, logs and [`Counts`].
pub trait KeyName {
    fn key_name(&self) -> String;
}

impl KeyName for String {
    fn key_name(&self) -> String {
        self.clone()
    }
}

impl KeyName for (String, String) {
    fn key_name(&self) -> String {
        format!("{}/{}", self.0, self.1)
    }
}

impl KeyName for () {
    fn key_name(&self) -> String {
        "cluster".into()
    }
}

/// One controller: its keys, its reconcile and its error policy.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Ord + Debug + KeyName + Send + Sync + 'static;
    /// Why one reconcile failed ([`std::convert::Infallible`] for a
    /// controller whose failures are only what the runtime sees).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The controller's name (spans, metrics and the watchdog's loop).
    fn name(&self) -> &'static str;

    fn limits(&self) -> Limits;

    /// Every key that exists now: reconciled when the controller starts
    /// and at each resync.
    fn keys(&self) -> Vec<Self::Key>;

    /// Brings `key`'s object one step closer to what it should be.
    async fn reconcile(&self, key: &Self::Key, reason: Reason) -> Result<Action, Self::Error>;

    /// What to do after a failed reconcile; `failures` counts the key's
    /// consecutive failures, this one included.
    fn error_policy(
        &self,
        _key: &Self::Key,
        _error: &ReconcileError<Self::Error>,
        failures: u32,
    ) -> Action {
        Action::RequeueAfter(backoff::error_delay(failures))
    }
}

enum Message<K> {
    Key(K, Instant, Reason),
    All(Reason),
}

/// Wakes keys of one controller; cheap to clone. Triggers sent before the
/// controller runs (or after it stopped) are dropped.
pub struct Trigger<K> {
    tx: mpsc::UnboundedSender<Message<K>>,
}

impl<K> Clone for Trigger<K> {
    fn clone(&self) -> Self {
        Trigger {
            tx: self.tx.clone(),
        }
    }
}

impl<K> Trigger<K> {
    /// Reconcile `key` as soon as it is not running.
    pub fn wake(&self, key: K, reason: Reason) {
        let _ = self.tx.send(Message::Key(key, now(), reason));
    }

    /// Reconcile `key` not later than `at`.
    pub fn wake_at(&self, key: K, at: Instant, reason: Reason) {
        let _ = self.tx.send(Message::Key(key, at, reason));
    }

    /// Reconcile every key the controller has now.
    pub fn wake_all(&self, reason: Reason) {
        let _ = self.tx.send(Message::All(reason));
    }
}

/// The receiving side of a [`Trigger`], handed to [`run`].
pub struct Triggers<K> {
    rx: mpsc::UnboundedReceiver<Message<K>>,
}

#[cfg(test)]
impl<K> Triggers<K> {
    /// The keys woken so far, in order (tests of controllers' handles).
    pub fn drain_keys(&mut self) -> Vec<K> {
        let mut keys = Vec::new();
        while let Ok(message) = self.rx.try_recv() {
            if let Message::Key(key, _, _) = message {
                keys.push(key);
            }
        }
        keys
    }
}

/// A trigger and what it feeds.
pub fn channel<K>() -> (Trigger<K>, Triggers<K>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Trigger { tx }, Triggers { rx })
}

/// Reconciles counted per controller and key, for tests and debugging.
/// Cheap to clone; every clone counts into the same table.
#[derive(Clone, Default)]
pub struct Counts {
    table: Arc<Mutex<BTreeMap<(&'static str, String), u64>>>,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts").finish_non_exhaustive()
    }
}

impl Counts {
    fn record(&self, controller: &'static str, key: String) {
        *self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((controller, key))
            .or_default() += 1;
    }

    /// Reconciles of `key` by `controller` so far.
    pub fn of(&self, controller: &str, key: &str) -> u64 {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|((c, k), _)| *c == controller && k == key)
            .map_or(0, |(_, n)| *n)
    }

    /// Reconciles by `controller` so far, of any key.
    pub fn total(&self, controller: &str) -> u64 {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((c, _), _)| *c == controller)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// What a reconcile task ends with: its key and how it went.
type Finished<R> = (
    <R as Reconciler>::Key,
    Result<Action, ReconcileError<<R as Reconciler>::Error>>,
);

/// How often an idle runtime still turns (and reports progress).
const IDLE_TURN: Duration = Duration::from_millis(250);

/// A reconcile still running this long past its bound is stuck in a way
/// cancellation cannot reach (a blocked thread): no progress is reported.
const OVERRUN_SLACK: Duration = Duration::from_secs(1);

/// Fail point `reconcile-stall`: with `return` (forever) or `return(MS)`
/// the runtime's queue stops turning — ignoring cancellation too — as a
/// wedged supervisor would. Compiles to nothing without the `failpoints`
/// feature.
async fn stall_failpoint() {
    match stall_requested() {
        Some(Some(pause)) => {
            tracing::warn!(?pause, "fail point reconcile-stall: the runtime stalls");
            tokio::time::sleep(pause).await;
        }
        Some(None) => {
            tracing::warn!("fail point reconcile-stall: the runtime stalls for good");
            std::future::pending::<()>().await;
        }
        None => {}
    }
}

/// `Some(pause)` (`None`: forever) when the fail point is on.
fn stall_requested() -> Option<Option<Duration>> {
    fail::fail_point!("reconcile-stall", |arg: Option<String>| {
        Some(
            arg.and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
        )
    });
    None
}

/// Runs `reconciler` until `token` is cancelled: every key at once, then
/// whatever `triggers`, requeues, backoffs and the resync ask for — while
/// `active` says so. A pause (`active` false: the leader's lease lapsed)
/// starts nothing new and treats the reconciles in flight as a stop would
/// ([`OnStop`]), but keeps the queue and its triggers; on resuming, the
/// reconciles it cut off and the keys woken meanwhile run. No other
/// leader can have acted in between: a pause ends only when a quorum
/// answers this leader again in the same term, which a quorum that had
/// elected another leader would refuse.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    mut triggers: Triggers<R::Key>,
    mut active: watch::Receiver<bool>,
    progress: ProgressReporter,
    counts: Counts,
    token: CancellationToken,
) {
    let name = reconciler.name();
    let limits = reconciler.limits();
    let concurrency = limits.concurrency.max(1);
    let mut queue: WorkQueue<R::Key> = WorkQueue::default();
    let mut failures: Failures<R::Key> = Failures::default();
    let mut started: HashMap<R::Key, Instant> = HashMap::new();
    let mut tasks: JoinSet<Finished<R>> = JoinSet::new();
    // The key of each task, for the tasks a pause aborts.
    let mut task_keys: HashMap<tokio::task::Id, R::Key> = HashMap::new();
    let start = now();
    for key in reconciler.keys() {
        queue.schedule(key, start, Reason::Start);
    }
    let mut next_resync = limits.resync.map(|every| start + every);
    let mut triggers_open = true;
    let mut active_open = true;
    let mut was_active = *active.borrow_and_update();
    loop {
        stall_failpoint().await;
        // A stopped controller starts nothing, whatever else was ready.
        if token.is_cancelled() {
            break;
        }
        let now = now();
        let is_active = *active.borrow_and_update();
        if is_active != was_active {
            was_active = is_active;
            // Resuming needs no look at every key: the reconciles a pause
            // cut off were requeued, and what was woken meanwhile waits
            // in the queue.
            if !is_active && limits.on_stop == OnStop::Abort {
                tasks.abort_all();
            }
        }
        if is_active && next_resync.is_some_and(|at| at <= now) {
            if let Some(every) = limits.resync {
                spread(&mut queue, reconciler.keys(), now, every);
                next_resync = Some(now + every);
            }
        }
        while is_active && tasks.len() < concurrency {
            let Some((key, reason)) = queue.pop_due(now) else {
                break;
            };
            started.insert(key.clone(), now);
            let key_name = key.key_name();
            counts.record(name, key_name.clone());
            metrics::counter!("raftvisor_reconciles_total", "controller" => name, "reason" => reason.as_str())
                .increment(1);
            let span = tracing::info_span!(
                "reconcile",
                controller = name,
                key = %key_name,
                reason = reason.as_str()
            );
            let this = reconciler.clone();
            let timeout = limits.timeout;
            let task_key = key.clone();
            let handle = tasks.spawn(
                async move {
                    let attempt = std::panic::AssertUnwindSafe(tokio::time::timeout(
                        timeout,
                        this.reconcile(&key, reason),
                    ))
                    .catch_unwind();
                    let result = match attempt.await {
                        Ok(Ok(result)) => result.map_err(ReconcileError::Failed),
                        Ok(Err(_)) => Err(ReconcileError::TimedOut(timeout)),
                        Err(_) => Err(ReconcileError::Panicked),
                    };
                    (key, result)
                }
                .instrument(span),
            );
            task_keys.insert(handle.id(), task_key);
        }
        metrics::gauge!("raftvisor_reconcile_queue_depth", "controller" => name)
            .set(queue.pending() as f64);
        let overrun = started
            .values()
            .any(|at| now.saturating_duration_since(*at) > limits.timeout + OVERRUN_SLACK);
        if !overrun {
            progress.progress();
        }
        let mut wake = now + IDLE_TURN;
        if is_active && tasks.len() < concurrency {
            if let Some(due) = queue.next_due() {
                wake = wake.min(due);
            }
        }
        if let Some(at) = next_resync.filter(|_| is_active) {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = token.cancelled() => break,
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (key, result) = match joined {
                    Ok((id, done)) => {
                        task_keys.remove(&id);
                        done
                    }
                    Err(aborted) => {
                        // Cut off by a pause: run again once resumed.
                        if let Some(key) = task_keys.remove(&aborted.id()) {
                            started.remove(&key);
                            queue.finish(&key, Some((self::now(), Reason::Resume)));
                        }
                        continue;
                    }
                };
                if let Some(at) = started.remove(&key) {
                    metrics::histogram!("raftvisor_reconcile_duration_seconds", "controller" => name)
                        .record(self::now().saturating_duration_since(at).as_secs_f64());
                }
                let requeue = match result {
                    Ok(action) => {
                        failures.succeeded(&key);
                        action_at(action, Reason::Requeue)
                    }
                    Err(error) => {
                        let count = failures.failed(&key);
                        metrics::counter!("raftvisor_reconcile_errors_total", "controller" => name)
                            .increment(1);
                        tracing::warn!(controller = name, key = %key.key_name(), %error, failures = count, "reconcile failed");
                        action_at(reconciler.error_policy(&key, &error, count), Reason::Backoff)
                    }
                };
                queue.finish(&key, requeue);
            }
            message = triggers.rx.recv(), if triggers_open => {
                match message {
                    Some(message) => {
                        apply(&mut queue, &*reconciler, message);
                        while let Ok(message) = triggers.rx.try_recv() {
                            apply(&mut queue, &*reconciler, message);
                        }
                    }
                    None => triggers_open = false,
                }
            }
            changed = active.changed(), if active_open => {
                if changed.is_err() {
                    active_open = false;
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
    match limits.on_stop {
        OnStop::Abort => tasks.shutdown().await,
        OnStop::Finish => while tasks.join_next().await.is_some() {},
    }
}

fn action_at(action: Action, reason: Reason) -> Option<(Instant, Reason)> {
    match action {
        Action::RequeueAfter(after) => Some((now() + after, reason)),
        Action::AwaitChange => None,
    }
}

/// Schedules a resync of `keys` spread evenly over `period` from `from`:
/// the safety net costs the same every moment instead of a burst that
/// would queue every change behind it. A key woken meanwhile runs at once
/// (the earlier time wins).
fn spread<K: Clone + Eq + Hash + Ord>(
    queue: &mut WorkQueue<K>,
    keys: Vec<K>,
    from: Instant,
    period: Duration,
) {
    let count = keys.len().max(1) as u32;
    for (i, key) in keys.into_iter().enumerate() {
        queue.schedule(key, from + period / count * i as u32, Reason::Resync);
    }
}

fn apply<R: Reconciler>(queue: &mut WorkQueue<R::Key>, reconciler: &R, message: Message<R::Key>) {
    match message {
        Message::Key(key, at, reason) => queue.schedule(key, at, reason),
        Message::All(reason) => {
            let at = now();
            for key in reconciler.keys() {
                queue.schedule(key, at, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::watchdog::{Loop, Watchdog};
    use tokio::sync::Semaphore;

    /// Counts reconciles and overlapping runs per key; key "slow" waits
    /// for a permit of `gate`, key "bad" always fails.
    struct Probe {
        runs: Mutex<BTreeMap<String, Vec<Instant>>>,
        running: Mutex<BTreeMap<String, u32>>,
        overlapped: Mutex<u32>,
        gate: Semaphore,
        on_stop: OnStop,
        /// What `keys()` answers.
        known: Vec<String>,
    }

    impl Probe {
        fn new() -> Arc<Probe> {
            Probe::stopping(OnStop::Abort)
        }

        fn stopping(on_stop: OnStop) -> Arc<Probe> {
            Probe::with(on_stop, &[])
        }

        fn with(on_stop: OnStop, known: &[&str]) -> Arc<Probe> {
            Arc::new(Probe {
                runs: Mutex::new(BTreeMap::new()),
                running: Mutex::new(BTreeMap::new()),
                overlapped: Mutex::new(0),
                gate: Semaphore::new(0),
                on_stop,
                known: known.iter().map(|k| k.to_string()).collect(),
            })
        }

        fn runs(&self, key: &str) -> Vec<Instant> {
            self.runs
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .unwrap_or_default()
        }

        fn running(&self, key: &str) -> u32 {
            self.running.lock().unwrap().get(key).copied().unwrap_or(0)
        }
    }

    /// The failure of the test controller's `bad` key.
    #[derive(Debug, thiserror::Error)]
    #[error("always fails")]
    struct Always;

    #[async_trait::async_trait]
    impl Reconciler for Probe {
        type Key = String;
        type Error = Always;
        fn name(&self) -> &'static str {
            "probe"
        }
        fn limits(&self) -> Limits {
            Limits {
                timeout: Duration::from_secs(30),
                concurrency: 8,
                resync: None,
                on_stop: self.on_stop,
            }
        }
        fn keys(&self) -> Vec<String> {
            self.known.clone()
        }
        async fn reconcile(&self, key: &String, _: Reason) -> Result<Action, Always> {
            {
                let mut running = self.running.lock().unwrap();
                let now = running.entry(key.clone()).or_default();
                *now += 1;
                if *now > 1 {
                    *self.overlapped.lock().unwrap() += 1;
                }
            }
            self.runs
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .push(Instant::now());
            if key == "slow" {
                self.gate.acquire().await.unwrap().forget();
            }
            *self.running.lock().unwrap().get_mut(key).unwrap() -= 1;
            if key == "bad" {
                return Err(Always);
            }
            Ok(Action::AwaitChange)
        }
    }

    fn start(probe: &Arc<Probe>, counts: Counts) -> (Trigger<String>, CancellationToken) {
        let Spawned(trigger, token, _, _) = spawn(probe, counts);
        (trigger, token)
    }

    struct Spawned(
        Trigger<String>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        watch::Sender<bool>,
    );

    fn spawn(probe: &Arc<Probe>, counts: Counts) -> Spawned {
        let (trigger, triggers) = channel();
        let token = CancellationToken::new();
        let watchdog = Watchdog::new(1, None);
        let (active, active_rx) = watch::channel(true);
        let handle = tokio::spawn(run(
            probe.clone(),
            triggers,
            active_rx,
            watchdog.reporter(Loop::Services, 1),
            counts,
            token.clone(),
        ));
        Spawned(trigger, token, handle, active)
    }

    /// Stops a controller while key "slow" is in flight; answers whether
    /// that reconcile ran to its end.
    async fn stopped_mid_reconcile(on_stop: OnStop) -> bool {
        let probe = Probe::stopping(on_stop);
        let Spawned(trigger, token, handle, _active) = spawn(&probe, Counts::default());
        trigger.wake("slow".to_string(), Reason::Commit);
        until("slow runs", || probe.running("slow") == 1).await;
        token.cancel();
        // Whatever the policy, no new reconcile starts after the stop.
        trigger.wake("fast".to_string(), Reason::Commit);
        let release = {
            let probe = probe.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                probe.gate.add_permits(1);
            }
        };
        let (joined, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(10), handle),
            release
        );
        joined.expect("the controller stops").unwrap();
        assert!(
            probe.runs("fast").is_empty(),
            "nothing starts after the stop"
        );
        probe.running("slow") == 0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_aborts_in_flight_starts_nothing_and_resuming_runs_what_it_cut_off_or_was_woken(
    ) {
        let probe = Probe::with(OnStop::Abort, &["idle"]);
        let Spawned(trigger, token, _handle, active) = spawn(&probe, Counts::default());
        until("every key runs at the start", || {
            probe.runs("idle").len() == 1
        })
        .await;
        trigger.wake("slow".to_string(), Reason::Commit);
        until("slow runs", || probe.running("slow") == 1).await;
        active.send_replace(false);
        // Woken while paused: queued, not run.
        trigger.wake("fast".to_string(), Reason::Commit);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(probe.runs("fast").is_empty(), "nothing runs while paused");
        assert_eq!(probe.runs("slow").len(), 1);
        // The aborted run never got past its gate.
        *probe.running.lock().unwrap() = BTreeMap::new();
        probe.gate.add_permits(1);
        active.send_replace(true);
        until("fast runs once resumed", || probe.runs("fast").len() == 1).await;
        until("the aborted key runs again", || {
            probe.runs("slow").len() == 2
        })
        .await;
        // A key neither cut off nor woken is not looked at again: no
        // other leader can have acted while this one was paused.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(probe.runs("idle").len(), 1);
        token.cancel();
    }

    /// The resync looks at every key once a period, spread over it.
    #[test]
    fn a_resync_is_spread_over_its_period() {
        let mut queue: WorkQueue<u32> = WorkQueue::default();
        let from = Instant::now();
        let period = Duration::from_secs(10);
        spread(&mut queue, (0..100).collect(), from, period);
        let mut due_in_first_second = 0;
        while queue.pop_due(from + Duration::from_secs(1)).is_some() {
            due_in_first_second += 1;
        }
        assert_eq!(due_in_first_second, 11, "keys 0 to 10 of 100 over 10 s");
        let mut rest = 0;
        while queue.pop_due(from + period).is_some() {
            rest += 1;
        }
        assert_eq!(rest, 89);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_aborts_or_finishes_the_reconciles_in_flight_as_the_limits_say() {
        assert!(
            !stopped_mid_reconcile(OnStop::Abort).await,
            "an aborting controller cancels the reconcile where it waits"
        );
        assert!(
            stopped_mid_reconcile(OnStop::Finish).await,
            "a finishing controller lets the reconcile end"
        );
    }

    /// Waits (at most 10 s) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_is_never_reconciled_twice_at_once_and_bursts_collapse() {
        let probe = Probe::new();
        let counts = Counts::default();
        let (trigger, token) = start(&probe, counts.clone());
        trigger.wake("slow".to_string(), Reason::Commit);
        until("slow runs", || probe.running("slow") == 1).await;
        // While it runs, a burst of triggers: one more run, after it.
        for _ in 0..50 {
            trigger.wake("slow".to_string(), Reason::Engine);
        }
        // Another key runs meanwhile: a slow key holds up no other.
        trigger.wake("fast".to_string(), Reason::Commit);
        until("fast runs while slow waits", || {
            probe.runs("fast").len() == 1
        })
        .await;
        assert_eq!(probe.running("slow"), 1);
        probe.gate.add_permits(1);
        until("slow runs again", || probe.runs("slow").len() == 2).await;
        probe.gate.add_permits(1);
        until("slow is done", || probe.running("slow") == 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probe.runs("slow").len(), 2, "the burst was one more run");
        assert_eq!(*probe.overlapped.lock().unwrap(), 0);
        assert_eq!(counts.of("probe", "slow"), 2);
        assert_eq!(counts.of("probe", "fast"), 1);
        assert_eq!(counts.total("probe"), 3);
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consecutive_failures_back_off() {
        let probe = Probe::new();
        let (trigger, token) = start(&probe, Counts::default());
        trigger.wake("bad".to_string(), Reason::Commit);
        until("four attempts", || probe.runs("bad").len() >= 4).await;
        let runs = probe.runs("bad");
        // Retries wait 100, 200, 400 ms: never sooner.
        for (i, pause) in [100, 200, 400].into_iter().enumerate() {
            let gap = runs[i + 1] - runs[i];
            assert!(
                gap >= Duration::from_millis(pause),
                "retry {i} after {gap:?}"
            );
        }
        token.cancel();
    }
}
