//! The cluster's images in the replicated model: the reference each
//! service version's image tag resolved to (its pin), the registry logins
//! (passwords sealed, never shown) and the images imported or built into
//! the cluster, with the nodes that hold them. Pure: the controllers pull,
//! load and copy; this module only records what they did and parses image
//! references.
//!
//! A tag is resolved once per version of a service's spec: the first
//! engine that has (or pulls) the image tells its registry digest, the
//! leader writes it as the version's pin, and every container of that
//! version is created from the digest. A tag that moved makes the next
//! version's pin, and so its template, differ: it rolls like any change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Outcome, State};

/// Pins kept per service: its current version's and the one before, so
/// the previous image stays on the nodes for a rollback.
pub const PINS_KEPT: usize = 2;

/// The docker hub's registry host, for references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// What a service version's image resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePin {
    /// The service version (its spec's Raft index) this pin is for.
    pub version: u64,
    /// `repository@sha256:…` when a registry resolved it; otherwise the
    /// spec's own reference (an image only ever on the engines).
    pub reference: String,
}

/// A registry account; the password is sealed and never leaves the leader
/// in clear except towards an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    /// Sealed with the cluster's secrets key under the name
    /// [`login_secret_name`].
    pub password: String,
    /// Raft index of the last change.
    pub version: u64,
}

/// The name a registry password is sealed under.
pub fn login_secret_name(host: &str) -> String {
    format!("registry:{host}")
}

/// Where an image of the cluster came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// `raftvisor image import` (a `docker save` archive).
    Import,
    /// `raftvisor image build` from a context.
    Build,
}

/// An image the cluster keeps without a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// `name:tag`, as services refer to it.
    pub name: String,
    /// The engine's image id (`sha256:…` of its config): the same on every
    /// engine that loaded the same archive.
    pub id: String,
    /// Bytes of the archive.
    pub size: u64,
    pub source: ImageSource,
    /// The SHA-256 of the archive (`docker save` format) the managers keep.
    pub archive: String,
    /// Raft ids of the managers that keep the archive in their data
    /// directory: at least two while the cluster has two.
    pub keepers: BTreeSet<u64>,
    /// Nodes whose engines hold the image.
    pub holders: BTreeSet<String>,
    pub created_ms: u64,
    /// Raft index of the last change.
    pub version: u64,
}

/// Everything about images the cluster replicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCatalog {
    /// Per service (`namespace`, `name`): the pins of its latest versions,
    /// oldest first, at most [`PINS_KEPT`].
    pub pins: BTreeMap<(String, String), Vec<ImagePin>>,
    /// Registry logins by registry host (`host[:port]`).
    pub logins: BTreeMap<String, RegistryLogin>,
    /// Images imported or built into the cluster, by name.
    pub stored: BTreeMap<String, StoredImage>,
    /// Per node, the images the cluster brought there (pulled or loaded):
    /// the only ones image clean-up may ever remove.
    pub brought: BTreeMap<String, BTreeSet<String>>,
}

impl super::migrate::FirstVersion for ImageCatalog {
    const VERSION_MARKER: &'static [u8] = b"IC01";
}

impl ImageCatalog {
    /// The pin of `version` of a service, if resolved.
    pub fn pin(&self, namespace: &str, name: &str, version: u64) -> Option<&str> {
        self.pins
            .get(&(namespace.to_string(), name.to_string()))?
            .iter()
            .find(|p| p.version == version)
            .map(|p| p.reference.as_str())
    }

    /// A service change that runs the same image (scale, start, stop,
    /// restart) keeps the pin of the version it replaces.
    pub(super) fn carry_pin(&mut self, key: &(String, String), from: u64, to: u64) {
        let Some(pins) = self.pins.get_mut(key) else {
            return;
        };
        if let Some(pin) = pins.iter_mut().find(|p| p.version == from) {
            pin.version = to;
        }
    }

    /// Every image reference a service may run now or roll back to: the
    /// pins of its latest versions and its spec's own reference.
    pub fn in_use<'a>(
        &'a self,
        services: impl Iterator<Item = &'a super::Service>,
    ) -> BTreeSet<&'a str> {
        let mut used: BTreeSet<&str> = self
            .pins
            .values()
            .flatten()
            .map(|pin| pin.reference.as_str())
            .collect();
        used.extend(services.map(|s| s.spec.image.as_str()));
        used
    }

    /// The stored image `reference` names, by name or by id.
    pub fn stored_for(&self, reference: &str) -> Option<&StoredImage> {
        self.stored
            .get(reference)
            .or_else(|| self.stored.values().find(|i| i.id == reference))
    }
}

/// A parsed image reference: `[host[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host (with port), [`DEFAULT_REGISTRY`] when none is named.
    pub registry: String,
    /// The repository as written, host included (`host:5000/team/app`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text` as docker does: the first path component names a
    /// registry when it has a `.` or `:` or is `localhost`.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("image reference {text:?}: {why}");
        if text.is_empty() || text.len() > 512 {
            return Err(bad("must have 1 to 512 bytes"));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(bad("must be printable ASCII without spaces"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                let (algorithm, hex) = digest
                    .split_once(':')
                    .ok_or_else(|| bad("a digest is algorithm:hex"))?;
                if algorithm != "sha256"
                    || hex.len() != 64
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(bad("a digest is sha256: and 64 hex digits"));
                }
                (name, Some(digest.to_ascii_lowercase()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(bad("a tag is up to 128 of [A-Za-z0-9_.-]"));
            }
        }
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(bad("the repository has an empty path component"));
        }
        let first = repository.split('/').next().unwrap_or_default();
        let names_registry = repository.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let path = if names_registry {
            &repository[first.len() + 1..]
        } else {
            repository
        };
        let path_ok = path.split('/').all(|component| {
            component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
        if !path_ok {
            return Err(bad(
                "repository names are lowercase letters, digits and . _ - separated by /",
            ));
        }
        Ok(Reference {
            registry: if names_registry {
                first.to_string()
            } else {
                DEFAULT_REGISTRY.to_string()
            },
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `repository@digest`: how a pinned image is named.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository)
    }

    /// The digest among an engine's `RepoDigests` that belongs to this
    /// reference's repository.
    pub fn digest_among<'a>(&self, repo_digests: &'a [String]) -> Option<&'a str> {
        repo_digests.iter().find_map(|d| {
            let (repository, digest) = d.split_once('@')?;
            (repository == self.repository
                || normalized(repository) == normalized(&self.repository))
            .then_some(digest)
        })
    }
}

/// Docker hub references are written with or without `docker.io/` and
/// `library/`.
fn normalized(repository: &str) -> &str {
    let bare = repository.strip_prefix("docker.io/").unwrap_or(repository);
    bare.strip_prefix("library/").unwrap_or(bare)
}

/// Whether `text` is a SHA-256 in lowercase hex (an archive's name).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `host` is a registry host as references name them.
pub fn valid_registry_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "registry host {host:?}: expected host or host:port (letters, digits, . - :)"
        ))
    }
}

impl State {
    /// The template of `service`'s current version: its spec's fingerprint
    /// with the version's pin, when resolved.
    pub fn template_of(&self, service: &super::Service) -> String {
        let pin = self
            .images
            .pin(&service.namespace, &service.name, service.version);
        super::supervision::template_fingerprint_pinned(&service.spec, pin)
    }

    pub(super) fn apply_pin_image(
        &mut self,
        namespace: &str,
        name: &str,
        version: u64,
        reference: &str,
    ) -> Outcome {
        let key = (namespace.to_string(), name.to_string());
        match self.services.get(&key) {
            None => return Outcome::NotFound,
            Some(service) if service.version != version => {
                return Outcome::VersionMismatch {
                    current: service.version,
                }
            }
            Some(_) => {}
        }
        if let Err(e) = Reference::parse(reference) {
            return Outcome::Rejected(e);
        }
        let pins = self.images.pins.entry(key).or_default();
        // The first resolution of a version wins: every instance of it
        // runs the same image, whoever resolved it later.
        if pins.iter().any(|p| p.version == version) {
            return Outcome::Done;
        }
        pins.push(ImagePin {
            version,
            reference: reference.to_string(),
        });
        let excess = pins.len().saturating_sub(PINS_KEPT);
        pins.drain(..excess);
        Outcome::Done
    }

    pub(super) fn apply_put_registry_login(
        &mut self,
        index: u64,
        time_ms: u64,
        host: &str,
        username: &str,
        password: &str,
    ) -> Outcome {
        if let Err(e) = valid_registry_host(host) {
            return Outcome::Rejected(e);
        }
        if !crate::secrets::is_sealed(password) {
            return Outcome::Rejected("a registry password enters the log sealed".into());
        }
        self.images.logins.insert(
            host.to_string(),
            RegistryLogin {
                username: username.to_string(),
                password: password.to_string(),
                version: index,
            },
        );
        self.event(
            index,
            time_ms,
            "registry.login",
            host,
            format!("credentials of {username} stored"),
        );
        Outcome::Done
    }

    pub(super) fn apply_remove_registry_login(
        &mut self,
        index: u64,
        time_ms: u64,
        host: &str,
    ) -> Outcome {
        if self.images.logins.remove(host).is_none() {
            return Outcome::NotFound;
        }
        self.event(
            index,
            time_ms,
            "registry.logout",
            host,
            "credentials removed".into(),
        );
        Outcome::Deleted
    }

    pub(super) fn apply_put_stored_image(
        &mut self,
        index: u64,
        time_ms: u64,
        mut image: StoredImage,
    ) -> Outcome {
        if let Err(e) = Reference::parse(&image.name) {
            return Outcome::Rejected(e);
        }
        if !is_sha256_hex(&image.archive) {
            return Outcome::Rejected(
                "an image archive is named by its SHA-256 (64 hex digits)".into(),
            );
        }
        image.version = index;
        image.created_ms = time_ms;
        let message = format!(
            "{} ({}, {} bytes) kept by managers {}",
            image.id,
            match image.source {
                ImageSource::Import => "imported",
                ImageSource::Build => "built",
            },
            image.size,
            image
                .keepers
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.event(index, time_ms, "image.stored", &image.name, message);
        self.images.stored.insert(image.name.clone(), image);
        Outcome::Done
    }

    /// Records which nodes hold a stored image; ignored unless the image
    /// still has `id` (a newer import of the name is another image).
    pub(super) fn apply_set_image_holders(
        &mut self,
        name: &str,
        id: &str,
        holders: &BTreeSet<String>,
        index: u64,
    ) -> Outcome {
        match self.images.stored.get_mut(name) {
            Some(image) if image.id == id => {
                image.holders = holders.clone();
                image.version = index;
                Outcome::Done
            }
            Some(_) => Outcome::Rejected(format!("{name} is now another image")),
            None => Outcome::NotFound,
        }
    }

    /// Records which managers keep a stored image's archive; ignored
    /// unless the image still has `id`.
    pub(super) fn apply_set_image_keepers(
        &mut self,
        name: &str,
        id: &str,
        keepers: &BTreeSet<u64>,
        index: u64,
    ) -> Outcome {
        match self.images.stored.get_mut(name) {
            Some(image) if image.id == id => {
                image.keepers = keepers.clone();
                image.version = index;
                Outcome::Done
            }
            Some(_) => Outcome::Rejected(format!("{name} is now another image")),
            None => Outcome::NotFound,
        }
    }

    /// Records that the cluster brought `reference` to `node`
    /// (`present`), or removed it from there.
    pub(super) fn apply_image_on_node(
        &mut self,
        node: &str,
        reference: &str,
        present: bool,
    ) -> Outcome {
        if present {
            self.images
                .brought
                .entry(node.to_string())
                .or_default()
                .insert(reference.to_string());
        } else if let Some(references) = self.images.brought.get_mut(node) {
            references.remove(reference);
            if references.is_empty() {
                self.images.brought.remove(node);
            }
            for image in self.images.stored.values_mut() {
                if image.id == reference || image.name == reference {
                    image.holders.remove(node);
                }
            }
        }
        Outcome::Done
    }

    pub(super) fn apply_remove_stored_image(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
    ) -> Outcome {
        if self.images.stored.remove(name).is_none() {
            return Outcome::NotFound;
        }
        self.event(
            index,
            time_ms,
            "image.removed",
            name,
            "removed from the cluster".into(),
        );
        Outcome::Deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed_as_docker_reads_them() {
        let r = Reference::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.digest, None);
        let r = Reference::parse("raftvisor-echo:local").unwrap();
        assert_eq!(r.registry, DEFAULT_REGISTRY);
        assert_eq!(r.repository, "raftvisor-echo");
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag, None);
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("reg.example:443/app:1@{digest}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.pinned(&digest), format!("reg.example:443/app@{digest}"));
        for bad in [
            "",
            "App:1",
            "app:",
            "app@sha256:12",
            "a b",
            "reg:5000//app",
            "app:-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_digest_of_a_reference_is_found_among_repo_digests() {
        let r = Reference::parse("127.0.0.1:5000/app:1").unwrap();
        let digests = vec![
            "other/app@sha256:1".to_string(),
            "127.0.0.1:5000/app@sha256:2".to_string(),
        ];
        assert_eq!(r.digest_among(&digests), Some("sha256:2"));
        let hub = Reference::parse("busybox:1").unwrap();
        assert_eq!(
            hub.digest_among(&["docker.io/library/busybox@sha256:3".into()]),
            Some("sha256:3")
        );
        assert_eq!(r.digest_among(&[]), None);
    }
}
