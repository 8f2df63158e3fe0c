//! The one place that decides how Raft log entries, snapshots and peer
//! messages are encoded on disk and on the wire.
//!
//! Every encoded value starts with a one-byte format version followed by a
//! bincode 2.x (standard configuration) body produced through serde. A later
//! release that changes the encoding bumps [`FORMAT_VERSION`] and keeps a
//! decoder for every older version here, so logs and snapshots written by an
//! older raftvisor stay readable. Nothing outside this module calls bincode.
//!
//! Format 2 writes the model's persisted records with their version
//! markers ([`crate::state::migrate`]); format 1 held them inline, without
//! markers. Both have the same bincode body otherwise: while a format-1
//! value is decoded, [`reading_unversioned`] tells the records to read
//! their first version inline.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version byte written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 2;

/// The format whose records were written inline, without version markers.
const UNVERSIONED_FORMAT: u8 = 1;

thread_local! {
    /// Whether the value being decoded on this thread is of format 1.
    static READING_UNVERSIONED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the value this thread is decoding was written by format 1, so
/// persisted records are inline in their first version's layout.
pub fn reading_unversioned() -> bool {
    READING_UNVERSIONED.with(std::cell::Cell::get)
}

/// Runs `decode` with [`reading_unversioned`] telling the format of
/// `version`; the previous setting is restored after it (decodes nest: a
/// record's body is a value of its own).
fn decoding_format<R>(version: u8, decode: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            READING_UNVERSIONED.with(|flag| flag.set(self.0));
        }
    }
    let _restore =
        Restore(READING_UNVERSIONED.with(|flag| flag.replace(version == UNVERSIONED_FORMAT)));
    decode()
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty buffer: no format version byte")]
    Empty,
    #[error("unsupported format version {found} (this build reads up to {FORMAT_VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("encode failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode failed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{trailing} trailing bytes after the encoded value")]
    Trailing { trailing: usize },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as `[FORMAT_VERSION][bincode body]`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// The length [`encode`] would produce for `value`, without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())?;
    Ok(1 + size.bytes_written)
}

/// Decodes a value written by [`encode`]; the whole buffer must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        UNVERSIONED_FORMAT | FORMAT_VERSION => {
            let (value, read) = decoding_format(version, || {
                bincode::serde::decode_from_slice(body, config())
            })?;
            if read != body.len() {
                return Err(CodecError::Trailing {
                    trailing: body.len() - read,
                });
            }
            Ok(value)
        }
        found => Err(CodecError::UnsupportedVersion { found }),
    }
}

/// Decodes the leading value of a buffer written by [`encode`], ignoring
/// whatever follows it: reads the first fields of a larger struct (a
/// struct of just those fields decodes from the same bytes), e.g. the vote
/// every Raft request starts with, without decoding its entries.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        UNVERSIONED_FORMAT | FORMAT_VERSION => Ok(decoding_format(version, || {
            bincode::serde::decode_from_slice(body, config())
        })?
        .0),
        found => Err(CodecError::UnsupportedVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoded_len_matches_the_encoding() {
        let value = (7u64, "raftvisor".to_string(), vec![1u8; 300]);
        assert_eq!(
            super::encoded_len(&value).unwrap(),
            super::encode(&value).unwrap().len()
        );
    }

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        values: Vec<u64>,
        flag: Option<bool>,
    }

    #[test]
    fn round_trips_with_version_byte() {
        let sample = Sample {
            name: "echo".into(),
            values: vec![1, 2, 300_000],
            flag: Some(true),
        };
        let bytes = encode(&sample).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        let mut bytes = encode(&Sample {
            name: "x".into(),
            values: vec![],
            flag: None,
        })
        .unwrap();
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        bytes.push(0);
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::Trailing { .. })
        ));
        bytes[0] = 9;
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::UnsupportedVersion { found: 9 })
        ));
    }
}
