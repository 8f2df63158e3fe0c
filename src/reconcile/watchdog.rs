//! The supervision watchdog: catches a gray failure of the leader — one that
//! still answers Raft heartbeats while its supervision has stalled (a hung
//! engine call, a deadlock) and is therefore as dead to users as a crashed
//! leader, yet never loses its leadership by itself.
//!
//! **Progress.** The controller runtime ([`super::controller`]) of each
//! loop ([`Loop`]) reports [`ProgressReporter::progress`] whenever its
//! queue turns while none of its reconciles has overrun its bound; a
//! reconcile that failed and waits for its backoff counts, a runtime that
//! stopped turning or a reconcile stuck past its bound does not. The
//! leader's *last progress* is the oldest of its loops' latest reports:
//! supervision is only as fresh as its stalest loop. A loop that has not
//! reported since this replica became leader counts from the moment of
//! election, so a new leader gets one full `stall_after` of grace before it
//! is judged. Every engine call a reconcile waits for is bounded (the round
//! budget, half of `stall_after`, see [`super::round_budget`]), so one slow
//! engine fails the keys that need it, not the leader — otherwise every new
//! leader would meet the same engine and give up in turn.
//!
//! **Giving up leadership.** A checker on its own OS thread (so a wedged
//! async runtime cannot starve it) looks once a second; when this replica
//! leads and has made no progress for `stall_after`, it logs
//! `supervision stalled for Ns: giving up leadership` and the agent exits
//! with [`EXIT_STALLED`]. openraft 0.9 has no leadership transfer: a new
//! election (`trigger().elect()`) is won again by the up-to-date stalled
//! leader, a membership change would remove a healthy voter, and silencing
//! its heartbeats does not stop appends or its own writes. Exiting is the
//! one step-down that is certain and also ends the hung calls; the
//! process's restart policy (Docker `unless-stopped` for managers in
//! containers, systemd `Restart=on-failure`) brings it back as a follower
//! of the leader elected meanwhile. The exit is a crash as far as storage
//! is concerned, which the log and state machine are built to survive.
//!
//! **What followers see.** The leader's progress rides on the Raft
//! messages it already sends: every append-entries request (heartbeats
//! included, every `heartbeat_ms`) carries a [`PROGRESS_HEADER`] saying
//! `leader term ms_ago`. No Raft entry is written for it (no write
//! amplification, no log growth), it is fresh to a heartbeat, and "ms ago"
//! rather than a wall-clock time keeps clock skew between machines out of
//! it. A follower keeps the latest report and shows it in `GET /v1/cluster`
//! as long as it names the leader and term it follows, aged by the time
//! since it arrived; when the leader dies the age simply keeps growing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit code of an agent that gave up leadership because its supervision
/// stalled (EX_TEMPFAIL: restart me).
pub const EXIT_STALLED: i32 = 75;

/// Header of append-entries requests carrying the leader's progress; the
/// peer network carries it, the replica installs [`Watchdog::header_for`].
pub use crate::raft::network::PROGRESS_HEADER;

/// How often the checker looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The reconcile loops whose rounds count as progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Services,
    Nodes,
    Managers,
    Health,
    Probes,
    Autoscale,
    Housekeeping,
    Pulls,
    ImageGc,
    ArchiveKeepers,
    SessionTtl,
    VolumeGc,
    Hooks,
    Pipelines,
}

impl Loop {
    pub const ALL: [Loop; 14] = [
        Loop::Services,
        Loop::Nodes,
        Loop::Managers,
        Loop::Health,
        Loop::Probes,
        Loop::Autoscale,
        Loop::Housekeeping,
        Loop::Pulls,
        Loop::ImageGc,
        Loop::ArchiveKeepers,
        Loop::SessionTtl,
        Loop::VolumeGc,
        Loop::Hooks,
        Loop::Pipelines,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Loop::Services => "services",
            Loop::Nodes => "nodes",
            Loop::Managers => "managers",
            Loop::Health => "health",
            Loop::Probes => "probes",
            Loop::Autoscale => "autoscale",
            Loop::Housekeeping => "housekeeping",
            Loop::Pulls => "pulls",
            Loop::ImageGc => "image-gc",
            Loop::ArchiveKeepers => "archive-keepers",
            Loop::SessionTtl => "session-ttl",
            Loop::VolumeGc => "volume-gc",
            Loop::Hooks => "hooks",
            Loop::Pipelines => "pipelines",
        }
    }
}

/// The leader's own record of one term (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leading {
    term: u64,
    since: Instant,
    last: [Option<Instant>; Loop::ALL.len()],
}

impl Leading {
    /// The last progress of `l`: its latest round, or the election.
    fn last_of(&self, l: Loop) -> Instant {
        self.last[l.index()].unwrap_or(self.since)
    }

    /// The stalest loop and its last progress.
    fn stalest(&self) -> (Loop, Instant) {
        Loop::ALL
            .iter()
            .map(|l| (*l, self.last_of(*l)))
            .min_by_key(|(_, at)| *at)
            .expect("there are loops")
    }
}

/// Supervision has made no progress for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub term: u64,
    /// The loop silent the longest.
    pub stalled: Loop,
    /// How long it has been silent (since its last round or the election).
    pub silent: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "supervision stalled for {}s: giving up leadership (the {} loop has not completed a round in term {} for {} ms)",
            self.silent.as_secs(),
            self.stalled.name(),
            self.term,
            self.silent.as_millis()
        )
    }
}

/// The leader's progress as heard from it over Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heard {
    leader: u64,
    term: u64,
    ms_ago: u64,
    at: Instant,
}

/// What `GET /v1/cluster` shows about the leader's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderProgress {
    pub leader: u64,
    pub term: u64,
    /// How long ago the leader last made progress.
    pub ago: Duration,
}

#[derive(Debug, Default)]
struct State {
    leading: Option<Leading>,
    heard: Option<Heard>,
}

/// The watchdog of one replica: its own progress while it leads and the
/// leader's progress as heard while it follows. Cheap to clone.
#[derive(Clone)]
pub struct Watchdog {
    id: u64,
    /// `None`: the watchdog is off (never judges, still reports).
    stall_after: Option<Duration>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("id", &self.id)
            .field("stall_after", &self.stall_after)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// The watchdog of replica `id`; `stall_after` `None` or zero never judges.
    pub fn new(id: u64, stall_after: Option<Duration>) -> Watchdog {
        Watchdog {
            id,
            stall_after: stall_after.filter(|d| !d.is_zero()),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    pub fn stall_after(&self) -> Option<Duration> {
        self.stall_after
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This replica leads in `term` (as of `now`): a new term starts a
    /// fresh grace; the same term changes nothing.
    pub fn leading(&self, term: u64, now: Instant) {
        let mut state = self.state();
        if state.leading.as_ref().is_none_or(|l| l.term < term) {
            state.leading = Some(Leading {
                term,
                since: now,
                last: [None; Loop::ALL.len()],
            });
        }
    }

    /// This replica does not lead (any more).
    pub fn following(&self) {
        self.state().leading = None;
    }

    /// A handle for loop `l` of the supervisor started in `term`.
    pub fn reporter(&self, l: Loop, term: u64) -> ProgressReporter {
        ProgressReporter {
            watchdog: self.clone(),
            l,
            term,
        }
    }

    fn progress(&self, l: Loop, term: u64, now: Instant) {
        let mut state = self.state();
        // Rounds of a loop left over from an older term say nothing about
        // this one.
        if let Some(leading) = state.leading.as_mut().filter(|s| s.term == term) {
            leading.last[l.index()] = Some(now);
        }
    }

    /// `Some` when this replica leads and has made no progress for
    /// `stall_after` (never when the watchdog is off).
    pub fn check(&self, now: Instant) -> Option<Stall> {
        let stall_after = self.stall_after?;
        let state = self.state();
        let leading = state.leading.as_ref()?;
        let (stalled, last) = leading.stalest();
        let silent = now.saturating_duration_since(last);
        (silent >= stall_after).then_some(Stall {
            term: leading.term,
            stalled,
            silent,
        })
    }

    /// This replica's own progress while it leads, for its followers and
    /// its API: `(term, ms since the last progress)`.
    pub fn own_report(&self, now: Instant) -> Option<(u64, u64)> {
        let state = self.state();
        let leading = state.leading.as_ref()?;
        let (_, last) = leading.stalest();
        Some((
            leading.term,
            now.saturating_duration_since(last).as_millis() as u64,
        ))
    }

    /// The [`PROGRESS_HEADER`] value for an append-entries request of
    /// `term`: `leader term ms_ago`, or `None` if this replica does not
    /// lead in that term.
    pub fn header_for(&self, term: u64, now: Instant) -> Option<String> {
        let (leading_term, ms_ago) = self.own_report(now)?;
        (leading_term == term).then(|| format!("{} {term} {ms_ago}", self.id))
    }

    /// Records a [`PROGRESS_HEADER`] value received from a leader; an
    /// unreadable one is ignored.
    pub fn heard(&self, header: &str, now: Instant) {
        let mut parts = header.split_ascii_whitespace().map(str::parse::<u64>);
        let (Some(Ok(leader)), Some(Ok(term)), Some(Ok(ms_ago)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let mut state = self.state();
        if state.heard.is_some_and(|h| h.term > term) {
            return;
        }
        state.heard = Some(Heard {
            leader,
            term,
            ms_ago,
            at: now,
        });
    }

    /// The progress of `leader` in `term` as this replica knows it: its
    /// own if it is that leader, else the latest report heard from it.
    pub fn leader_progress(&self, leader: u64, term: u64, now: Instant) -> Option<LeaderProgress> {
        if leader == self.id {
            let (own_term, ms_ago) = self.own_report(now)?;
            return (own_term == term).then_some(LeaderProgress {
                leader,
                term,
                ago: Duration::from_millis(ms_ago),
            });
        }
        let heard = self.state().heard?;
        (heard.leader == leader && heard.term == term).then(|| LeaderProgress {
            leader,
            term,
            ago: Duration::from_millis(heard.ms_ago) + now.saturating_duration_since(heard.at),
        })
    }
}

/// How one reconcile loop reports its completed rounds.
#[derive(Clone)]
pub struct ProgressReporter {
    watchdog: Watchdog,
    l: Loop,
    term: u64,
}

impl ProgressReporter {
    /// A round of this loop completed.
    pub fn progress(&self) {
        self.watchdog.progress(self.l, self.term, Instant::now());
    }
}

/// Stops the checker thread when dropped or stopped.
pub struct CheckerGuard {
    stop: Arc<AtomicBool>,
}

impl CheckerGuard {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for CheckerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the checker thread: once a second it tells the watchdog whether
/// this replica leads (from `metrics`, so a fresh term gets a fresh grace
/// even if the supervisor never started) and calls `on_stall` when the
/// watchdog finds supervision stalled. Nothing when the watchdog is off.
pub fn spawn_checker(
    watchdog: Watchdog,
    metrics: tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
    on_stall: impl Fn(Stall) + Send + 'static,
) -> CheckerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let guard = CheckerGuard { stop: stop.clone() };
    let Some(stall_after) = watchdog.stall_after else {
        return guard;
    };
    let every = CHECK_EVERY
        .min(stall_after / 4)
        .max(Duration::from_millis(50));
    let spawned = std::thread::Builder::new()
        .name("raftvisor-watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let leading_term = {
                    let m = metrics.borrow();
                    (m.state == openraft::ServerState::Leader).then_some(m.current_term)
                };
                let now = Instant::now();
                match leading_term {
                    Some(term) => watchdog.leading(term, now),
                    None => watchdog.following(),
                }
                if let Some(stall) = watchdog.check(now) {
                    on_stall(stall);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the supervision watchdog");
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_new_leader_gets_a_full_grace() {
        let w = Watchdog::new(1, Some(STALL));
        let t0 = Instant::now();
        assert_eq!(w.check(t0 + STALL * 5), None, "not leading: never judged");
        w.leading(3, t0);
        assert_eq!(w.check(t0 + STALL - ms(1)), None);
        let stall = w.check(t0 + STALL).expect("no round in the whole grace");
        assert_eq!(stall.term, 3);
        assert_eq!(stall.silent, STALL);
    }

    #[test]
    fn every_loop_must_progress() {
        let w = Watchdog::new(1, Some(STALL));
        let t0 = Instant::now();
        w.leading(2, t0);
        // The other loops keep going; the service loop hangs after one round.
        w.progress(Loop::Services, 2, t0 + ms(500));
        for i in 1..=30 {
            for l in Loop::ALL.into_iter().filter(|l| *l != Loop::Services) {
                w.progress(l, 2, t0 + ms(i * 500));
            }
        }
        assert_eq!(w.check(t0 + ms(10_499)), None);
        let stall = w.check(t0 + ms(10_500)).expect("the service loop hangs");
        assert_eq!(stall.stalled, Loop::Services);
        assert_eq!(w.own_report(t0 + ms(10_500)), Some((2, 10_000)));
        assert!(stall
            .to_string()
            .starts_with("supervision stalled for 10s: giving up leadership (the services loop"));
        // Rounds of both loops: healthy again.
        w.progress(Loop::Services, 2, t0 + ms(11_000));
        assert_eq!(w.check(t0 + ms(15_000)), None);
    }

    #[test]
    fn rounds_of_an_older_term_do_not_count() {
        let w = Watchdog::new(1, Some(STALL));
        let t0 = Instant::now();
        w.leading(2, t0);
        w.following();
        w.leading(4, t0 + ms(1_000));
        for l in Loop::ALL {
            w.progress(l, 2, t0 + ms(9_000));
        }
        assert!(w.check(t0 + ms(11_000)).is_some());
        // Seeing the same term again does not restart the grace.
        w.leading(4, t0 + ms(11_000));
        assert!(w.check(t0 + ms(11_000)).is_some());
    }

    #[test]
    fn following_or_off_never_stalls() {
        let t0 = Instant::now();
        let w = Watchdog::new(1, Some(STALL));
        w.leading(1, t0);
        w.following();
        assert_eq!(w.check(t0 + STALL * 2), None);
        assert_eq!(w.own_report(t0), None);
        for off in [None, Some(Duration::ZERO)] {
            let w = Watchdog::new(1, off);
            w.leading(1, t0);
            assert_eq!(w.check(t0 + STALL * 100), None);
            assert!(w.own_report(t0).is_some(), "progress is still reported");
        }
    }

    #[test]
    fn followers_see_the_leaders_progress_aged() {
        let t0 = Instant::now();
        let leader = Watchdog::new(1, Some(STALL));
        let follower = Watchdog::new(2, Some(STALL));
        leader.leading(5, t0);
        leader.progress(Loop::Services, 5, t0 + ms(100));
        for l in Loop::ALL.into_iter().filter(|l| *l != Loop::Services) {
            leader.progress(l, 5, t0 + ms(200));
        }
        assert_eq!(leader.header_for(4, t0 + ms(300)), None);
        let header = leader.header_for(5, t0 + ms(300)).unwrap();
        assert_eq!(header, "1 5 200");
        follower.heard(&header, t0 + ms(300));
        let seen = follower.leader_progress(1, 5, t0 + ms(1_300)).unwrap();
        assert_eq!(seen.ago, ms(1_200));
        assert_eq!(
            leader.leader_progress(1, 5, t0 + ms(1_300)).unwrap().ago,
            ms(1_200)
        );
        // Another leader or term: what was heard is not about it.
        assert_eq!(follower.leader_progress(3, 6, t0), None);
        // Older terms and garbage never replace a newer report.
        follower.heard("3 4 0", t0 + ms(400));
        follower.heard("1 5", t0 + ms(400));
        follower.heard("x 5 1", t0 + ms(400));
        assert_eq!(
            follower.leader_progress(1, 5, t0 + ms(300)).unwrap().ago,
            ms(200)
        );
    }
}
