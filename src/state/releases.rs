//! Blue-green releases: two environments of one topology (two namespaces)
//! and an entry service whose name, `<release>.release.<domain>`, answers
//! with the entry of the live one. Pure: it keeps what apply decided and
//! checks a switch against the state it is given; the DNS zone reads the
//! live environment from here, so a switch is one Raft write that every
//! replica answers from as soon as it applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Actor;

/// Switches kept per release, newest last.
pub const SWITCHES_KEPT: usize = 20;
/// The refusal of a switch to an environment whose entry runs nowhere (409).
pub const NOT_READY: &str = "not_ready";
/// The refusal of `switch --back` on a release never switched (409).
pub const NO_PREVIOUS: &str = "no_previous";

/// One of a release's two environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
    // Variants are only ever appended: the log encodes them by position.
}

impl Color {
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl std::str::FromStr for Color {
    type Err = String;
    fn from_str(s: &str) -> Result<Color, String> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(format!("{other:?} is not an environment: blue or green")),
        }
    }
}

/// One cutover of a release's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    /// The Raft index of the write.
    pub index: u64,
    pub from: Color,
    pub to: Color,
    pub at_ms: u64,
    pub actor: Option<Actor>,
    /// Whether it was `switch --back`.
    pub back: bool,
}

/// A blue-green release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    /// The entry service's name, the same in both environments.
    pub entry: String,
    /// The blue environment's namespace.
    pub blue: String,
    /// The green environment's namespace.
    pub green: String,
    /// The environment the release's name answers with.
    pub live: Color,
    /// The Raft index of its last change (create or switch).
    pub version: u64,
    pub created_ms: u64,
    /// The latest switches, oldest first (at most [`SWITCHES_KEPT`]).
    pub switches: Vec<Switch>,
}

impl Release {
    /// The namespace of environment `color`.
    pub fn namespace(&self, color: Color) -> &str {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    /// The live environment's namespace.
    pub fn live_namespace(&self) -> &str {
        self.namespace(self.live)
    }

    /// The environment that does not take traffic (where a new version goes).
    pub fn idle(&self) -> Color {
        self.live.other()
    }

    /// Which environment `namespace` is, if either.
    pub fn color_of(&self, namespace: &str) -> Option<Color> {
        if namespace == self.blue {
            Some(Color::Blue)
        } else if namespace == self.green {
            Some(Color::Green)
        } else {
            None
        }
    }
}

/// Where a switch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwitchTarget {
    /// The idle environment.
    Idle,
    /// Exactly this one (a no-op when it is live already).
    To(Color),
    /// Back to the environment live before the latest switch.
    Back,
    // Variants are only ever appended: the log encodes them by position.
}

/// Every release, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBook {
    pub releases: BTreeMap<String, Release>,
}

impl super::migrate::FirstVersion for ReleaseBook {
    const VERSION_MARKER: &'static [u8] = b"SR01";
}

/// Why a switch was refused (apply turns it into a 409 with the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl ReleaseBook {
    /// Checks the names of a new release; the caller checks the namespaces'
    /// labels. A release of the same name is replaced only when it is the
    /// same release (a retried create), never silently re-pointed.
    pub(super) fn check_new(&self, release: &Release) -> Result<(), String> {
        if release.blue == release.green {
            return Err(format!(
                "blue and green must be two namespaces, both are {:?}",
                release.blue
            ));
        }
        if let Some(existing) = self.releases.get(&release.name) {
            return Err(format!(
                "release {} exists (entry {} in {} and {}); remove it first",
                existing.name, existing.entry, existing.blue, existing.green
            ));
        }
        for other in self.releases.values() {
            for namespace in [&release.blue, &release.green] {
                if other.color_of(namespace).is_some() && other.entry == release.entry {
                    return Err(format!(
                        "namespace {namespace}'s {} is already the entry of release {}",
                        release.entry, other.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a switch of `release` to `target` goes, or why not; `ready`
    /// says whether an environment's entry has a running instance (a
    /// switch to one whose entry runs nowhere would answer nothing).
    pub(super) fn switch_to(
        release: &Release,
        target: SwitchTarget,
        force: bool,
        ready: impl Fn(Color) -> bool,
    ) -> Result<Color, Refusal> {
        let to = match target {
            SwitchTarget::Idle => release.idle(),
            SwitchTarget::To(color) => color,
            SwitchTarget::Back => match release.switches.last() {
                Some(last) if last.to == release.live => last.from,
                _ => {
                    return Err(Refusal {
                        code: NO_PREVIOUS,
                        message: format!("release {} was never switched", release.name),
                    })
                }
            },
        };
        if to != release.live && !force && !ready(to) {
            return Err(Refusal {
                code: NOT_READY,
                message: format!(
                    "{} has no running instance in {} ({}): switching would answer nothing (--force switches anyway)",
                    release.entry,
                    release.namespace(to),
                    to.as_str()
                ),
            });
        }
        Ok(to)
    }

    /// Makes `to` live; a no-op (false) when it is already.
    pub(super) fn switch(
        &mut self,
        name: &str,
        to: Color,
        back: bool,
        index: u64,
        at_ms: u64,
        actor: Option<Actor>,
    ) -> bool {
        let Some(release) = self.releases.get_mut(name) else {
            return false;
        };
        if release.live == to {
            return false;
        }
        release.switches.push(Switch {
            index,
            from: release.live,
            to,
            at_ms,
            actor,
            back,
        });
        if release.switches.len() > SWITCHES_KEPT {
            let extra = release.switches.len() - SWITCHES_KEPT;
            release.switches.drain(..extra);
        }
        release.live = to;
        release.version = index;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release {
            name: "shop".into(),
            entry: "web".into(),
            blue: "shop-a".into(),
            green: "shop-b".into(),
            live: Color::Blue,
            version: 1,
            created_ms: 0,
            switches: Vec::new(),
        }
    }

    #[test]
    fn a_switch_goes_to_the_idle_environment_and_back() {
        let mut book = ReleaseBook::default();
        book.releases.insert("shop".into(), release());
        let r = &book.releases["shop"];
        assert_eq!(
            ReleaseBook::switch_to(r, SwitchTarget::Idle, false, |_| true),
            Ok(Color::Green)
        );
        assert_eq!(
            ReleaseBook::switch_to(r, SwitchTarget::Back, false, |_| true)
                .unwrap_err()
                .code,
            NO_PREVIOUS
        );
        assert!(book.switch("shop", Color::Green, false, 7, 70, None));
        assert!(!book.switch("shop", Color::Green, false, 8, 80, None));
        let r = &book.releases["shop"];
        assert_eq!(
            (r.live, r.version, r.live_namespace()),
            (Color::Green, 7, "shop-b")
        );
        assert_eq!(
            ReleaseBook::switch_to(r, SwitchTarget::Back, false, |_| true),
            Ok(Color::Blue)
        );
    }

    #[test]
    fn a_switch_to_an_environment_that_runs_nothing_is_refused_unless_forced() {
        let r = release();
        let refusal = ReleaseBook::switch_to(&r, SwitchTarget::Idle, false, |_| false).unwrap_err();
        assert_eq!(refusal.code, NOT_READY);
        assert!(refusal.message.contains("shop-b"), "{}", refusal.message);
        assert_eq!(
            ReleaseBook::switch_to(&r, SwitchTarget::Idle, true, |_| false),
            Ok(Color::Green)
        );
        // Staying where it is needs nothing to run there.
        assert_eq!(
            ReleaseBook::switch_to(&r, SwitchTarget::To(Color::Blue), false, |_| false),
            Ok(Color::Blue)
        );
    }

    #[test]
    fn the_switch_history_is_bounded() {
        let mut book = ReleaseBook::default();
        book.releases.insert("shop".into(), release());
        for i in 0..(SWITCHES_KEPT as u64 + 5) {
            let to = book.releases["shop"].idle();
            assert!(book.switch("shop", to, false, i + 2, i, None));
        }
        let r = &book.releases["shop"];
        assert_eq!(r.switches.len(), SWITCHES_KEPT);
        assert_eq!(r.switches.last().unwrap().index, SWITCHES_KEPT as u64 + 6);
    }

    #[test]
    fn two_releases_cannot_share_an_entry() {
        let mut book = ReleaseBook::default();
        book.releases.insert("shop".into(), release());
        let mut again = release();
        assert!(book.check_new(&again).unwrap_err().contains("exists"));
        again.name = "shop2".into();
        again.green = "shop-c".into();
        assert!(book
            .check_new(&again)
            .unwrap_err()
            .contains("already the entry"));
        again.entry = "api".into();
        assert_eq!(book.check_new(&again), Ok(()));
        again.green = again.blue.clone();
        assert!(book
            .check_new(&again)
            .unwrap_err()
            .contains("two namespaces"));
    }
}
