//! Versions of the records written to the Raft log and to snapshots, and
//! the migrations between them.
//!
//! A persisted record type implements [`Migrate`]: a version marker written
//! in front of its encoding, the type of its previous version and the
//! conversion from it. Decoding checks the marker and, when it is an older
//! one, decodes the previous version and migrates it, down the chain to the
//! [`FirstVersion`]. Fields holding such records are written through
//! [`Versioned`] (or the `#[serde(with)]` helpers [`versioned`] and
//! [`versioned_seq`]) as a byte string `marker ++ body`, so a record can
//! change without changing the layout of what contains it.
//!
//! Values of codec format 1 (written before records were versioned) hold
//! every record inline, in the layout of its first version: while the codec
//! decodes such a value ([`crate::codec::reading_unversioned`]), a
//! versioned field reads its first version inline and migrates it.
//!
//! The rule: changing a persisted record (a field added, removed or
//! retyped, also with a serde default) moves its current definition, as it
//! is, into a frozen previous version, gives the new definition a new
//! marker and a `migrate` from the frozen one. JSON (the API) never sees
//! markers: human-readable formats get the plain value. This module never
//! does I/O and knows nothing of Raft.

use std::marker::PhantomData;

use serde::de::{DeserializeOwned, Error as _, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, CodecError};

/// Why a versioned record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("unknown version marker {found:?} (this build knows {known:?} and older)")]
    UnknownVersion { found: String, known: String },
    #[error("version {marker:?}: {source}")]
    Body {
        marker: String,
        #[source]
        source: CodecError,
    },
}

/// A persisted record type with a version and a migration from the
/// previous version.
pub trait Migrate: Serialize + DeserializeOwned + 'static {
    /// Written in front of every encoding of this version; unique per type
    /// and version, and never a prefix of another version's marker.
    const VERSION_MARKER: &'static [u8];

    /// The version this one replaces.
    type Previous: Migrate;

    /// Turns a value of the previous version into this one.
    fn migrate(previous: Self::Previous) -> Self;

    /// `VERSION_MARKER ++ body` (the body in the codec's current format).
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let body = codec::encode(self)?;
        let mut out = Vec::with_capacity(Self::VERSION_MARKER.len() + body.len());
        out.extend_from_slice(Self::VERSION_MARKER);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes what [`Migrate::encode`] wrote for this version or any
    /// earlier one, migrating it to this version.
    fn decode(bytes: &[u8]) -> Result<Self, MigrateError> {
        match bytes.strip_prefix(Self::VERSION_MARKER) {
            Some(body) => codec::decode(body).map_err(|source| MigrateError::Body {
                marker: marker_text(Self::VERSION_MARKER),
                source,
            }),
            None => Self::Previous::decode(bytes)
                .map(Self::migrate)
                .map_err(|e| match e {
                    MigrateError::UnknownVersion { found, .. } => MigrateError::UnknownVersion {
                        found,
                        known: marker_text(Self::VERSION_MARKER),
                    },
                    other => other,
                }),
        }
    }

    /// Reads the value inline, as codec format 1 wrote it (the layout of
    /// the first version), and migrates it to this version.
    fn deserialize_unversioned<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        Self::Previous::deserialize_unversioned(deserializer).map(Self::migrate)
    }
}

/// The first version of a persisted record type: nothing to migrate from.
pub trait FirstVersion: Serialize + DeserializeOwned + 'static {
    const VERSION_MARKER: &'static [u8];
}

impl<T: FirstVersion> Migrate for T {
    const VERSION_MARKER: &'static [u8] = <T as FirstVersion>::VERSION_MARKER;
    type Previous = NoPrevious;

    fn migrate(previous: NoPrevious) -> Self {
        match previous {}
    }

    fn deserialize_unversioned<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        T::deserialize(deserializer)
    }
}

/// The version before a [`FirstVersion`]: there is none, so it never
/// decodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum NoPrevious {}

impl Migrate for NoPrevious {
    const VERSION_MARKER: &'static [u8] = b"";
    type Previous = NoPrevious;

    fn migrate(previous: NoPrevious) -> Self {
        previous
    }

    fn decode(bytes: &[u8]) -> Result<Self, MigrateError> {
        Err(MigrateError::UnknownVersion {
            found: marker_text(&bytes[..bytes.len().min(8)]),
            known: String::new(),
        })
    }

    fn deserialize_unversioned<'de, D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom("no version precedes the first"))
    }
}

fn marker_text(marker: &[u8]) -> String {
    String::from_utf8_lossy(marker).into_owned()
}

/// A record written with its version marker (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T>(pub T);

impl<T: Migrate> Serialize for Versioned<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        let bytes = self.0.encode().map_err(S::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de, T: Migrate> Deserialize<'de> for Versioned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return T::deserialize(deserializer).map(Versioned);
        }
        if codec::reading_unversioned() {
            return T::deserialize_unversioned(deserializer).map(Versioned);
        }
        deserializer
            .deserialize_bytes(RecordVisitor(PhantomData))
            .map(Versioned)
    }
}

struct RecordVisitor<T>(PhantomData<T>);

impl<T: Migrate> Visitor<'_> for RecordVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a versioned record (marker and body)")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        T::decode(bytes).map_err(E::custom)
    }
}

/// `#[serde(with = "versioned")]` for a field holding one record.
pub mod versioned {
    use super::*;

    pub fn serialize<T: Migrate, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        VersionedRef(value).serialize(serializer)
    }

    pub fn deserialize<'de, T: Migrate, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        Versioned::deserialize(deserializer).map(|v| v.0)
    }
}

/// `#[serde(with = "versioned_seq")]` for a field holding a list of records.
pub mod versioned_seq {
    use super::*;

    pub fn serialize<T: Migrate, S: Serializer>(
        values: &[T],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(VersionedRef))
    }

    pub fn deserialize<'de, T: Migrate, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        Vec::<Versioned<T>>::deserialize(deserializer)
            .map(|all| all.into_iter().map(|v| v.0).collect())
    }
}

/// [`Versioned`] by reference, to write a record without cloning it.
struct VersionedRef<'a, T>(&'a T);

impl<T: Migrate> Serialize for VersionedRef<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        let bytes = self.0.encode().map_err(S::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec as first written.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct SpecV1 {
        image: String,
        replicas: u32,
    }

    impl FirstVersion for SpecV1 {
        const VERSION_MARKER: &'static [u8] = b"TS01";
    }

    /// The same spec with a field added (with a default).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct SpecV2 {
        image: String,
        replicas: u32,
        #[serde(default)]
        labels: Vec<String>,
    }

    impl Migrate for SpecV2 {
        const VERSION_MARKER: &'static [u8] = b"TS02";
        type Previous = SpecV1;
        fn migrate(previous: SpecV1) -> SpecV2 {
            SpecV2 {
                image: previous.image,
                replicas: previous.replicas,
                labels: Vec::new(),
            }
        }
    }

    /// What contains a spec: unchanged when the spec changes.
    #[derive(Debug, Serialize, Deserialize)]
    struct Holder<T: Migrate> {
        name: String,
        #[serde(with = "versioned")]
        #[serde(bound = "")]
        spec: T,
        #[serde(with = "versioned_seq")]
        #[serde(bound = "")]
        more: Vec<T>,
    }

    fn v1() -> SpecV1 {
        SpecV1 {
            image: "echo".into(),
            replicas: 3,
        }
    }

    #[test]
    fn a_record_written_by_the_previous_version_decodes_as_the_current_one() {
        let bytes = v1().encode().unwrap();
        assert!(bytes.starts_with(b"TS01"));
        let migrated = SpecV2::decode(&bytes).unwrap();
        assert_eq!(migrated, SpecV2::migrate(v1()));
        let current = SpecV2 {
            labels: vec!["a".into()],
            ..migrated
        };
        assert_eq!(SpecV2::decode(&current.encode().unwrap()).unwrap(), current);
    }

    #[test]
    fn a_container_of_old_records_decodes_with_the_new_record_type() {
        let old = Holder {
            name: "svc".into(),
            spec: v1(),
            more: vec![v1(), v1()],
        };
        let bytes = codec::encode(&old).unwrap();
        let new: Holder<SpecV2> = codec::decode(&bytes).unwrap();
        assert_eq!(new.name, "svc");
        assert_eq!(new.spec, SpecV2::migrate(v1()));
        assert_eq!(new.more.len(), 2);
    }

    /// `Holder` as codec format 1 wrote it: records inline, no markers.
    #[derive(Serialize)]
    struct UnversionedHolder {
        name: String,
        spec: SpecV1,
        more: Vec<SpecV1>,
    }

    #[test]
    fn a_container_written_before_versions_decodes_its_records_inline() {
        let mut bytes = codec::encode(&UnversionedHolder {
            name: "svc".into(),
            spec: v1(),
            more: vec![v1()],
        })
        .unwrap();
        bytes[0] = 1;
        let new: Holder<SpecV2> = codec::decode(&bytes).unwrap();
        assert_eq!(new.spec, SpecV2::migrate(v1()));
        assert_eq!(new.more, vec![SpecV2::migrate(v1())]);
        assert!(!codec::reading_unversioned());
    }

    #[test]
    fn unknown_markers_and_bad_bodies_are_errors_not_panics() {
        let error = SpecV2::decode(b"XX99garbage").unwrap_err();
        assert!(
            matches!(error, MigrateError::UnknownVersion { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("TS02"), "{error}");
        let error = SpecV2::decode(b"TS02\x02\xff").unwrap_err();
        assert!(matches!(error, MigrateError::Body { .. }), "{error}");
        assert!(SpecV2::decode(b"").is_err());
    }

    #[test]
    fn json_sees_the_plain_record() {
        let holder = Holder {
            name: "svc".into(),
            spec: v1(),
            more: vec![],
        };
        let json = serde_json::to_value(&holder).unwrap();
        assert_eq!(json["spec"]["image"], "echo");
        let back: Holder<SpecV1> = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, v1());
    }
}
