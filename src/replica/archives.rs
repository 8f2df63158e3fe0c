//! The image archives this manager keeps (`<data_dir>/archives/<sha256>.tar`):
//! images imported or built into the cluster live on the managers, outside
//! the Raft log, which carries only their SHA-256. An archive is written to
//! a staging file while its hash is computed, made durable, and only then
//! renamed to its name, so a named archive is always whole; reading one
//! back checks nothing more (its name was its hash when it was written).
//! It decides nothing about which managers keep what.

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Largest archive a manager keeps.
pub const MAX_ARCHIVE_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Why an archive could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveStoreError {
    #[error("the archive store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the archive is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive's stream broke: {0}")]
    Stream(String),
    #[error("the archive's SHA-256 is {found}, not {expected}")]
    Mismatch { expected: String, found: String },
}

/// One stored archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
    pub path: PathBuf,
}

/// The archives of one manager.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    dir: PathBuf,
}

impl ArchiveStore {
    pub fn new(data_dir: &Path) -> ArchiveStore {
        ArchiveStore {
            dir: data_dir.join("archives"),
        }
    }

    fn io(&self, source: std::io::Error) -> ArchiveStoreError {
        ArchiveStoreError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    /// Where the archive `sha256` is, if this manager keeps it.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        if !crate::state::image_catalog::is_sha256_hex(sha256) {
            return None;
        }
        let path = self.dir.join(format!("{sha256}.tar"));
        path.is_file().then_some(path)
    }

    /// Writes `stream` into the store; with `expected`, refuses (and keeps
    /// nothing) unless the bytes hash to it.
    pub async fn store<S, E>(
        &self,
        mut stream: S,
        limit: u64,
        expected: Option<&str>,
    ) -> Result<Stored, ArchiveStoreError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.io(e))?;
        let staging = self
            .dir
            .join(format!("staging-{}.part", uuid::Uuid::new_v4()));
        let result = async {
            let mut file = tokio::fs::File::create(&staging)
                .await
                .map_err(|e| self.io(e))?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ArchiveStoreError::Stream(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(ArchiveStoreError::TooLarge { limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| self.io(e))?;
            }
            file.sync_all().await.map_err(|e| self.io(e))?;
            let sha256 = format!("{:x}", hasher.finalize());
            if let Some(expected) = expected {
                if expected != sha256 {
                    return Err(ArchiveStoreError::Mismatch {
                        expected: expected.to_string(),
                        found: sha256,
                    });
                }
            }
            let path = self.dir.join(format!("{sha256}.tar"));
            tokio::fs::rename(&staging, &path)
                .await
                .map_err(|e| self.io(e))?;
            if let Ok(dir) = tokio::fs::File::open(&self.dir).await {
                let _ = dir.sync_all().await;
            }
            Ok(Stored { sha256, size, path })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&staging).await;
        }
        result
    }

    /// Removes the archives not in `keep` and the staging files left by a
    /// crash, once they are older than `grace` (an import records its
    /// archive only after storing it); answers how many were removed.
    pub fn sweep(
        &self,
        keep: &std::collections::BTreeSet<String>,
        grace: std::time::Duration,
    ) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().unwrap_or_default() >= grace);
            let stale = old
                && match name.strip_suffix(".tar") {
                    Some(sha256) => !keep.contains(sha256),
                    None => name.ends_with(".part"),
                };
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<bytes::Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(bytes::Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn an_archive_is_stored_under_its_hash_and_a_wrong_hash_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArchiveStore::new(dir.path());
        let stored = store.store(chunks(&[b"ab", b"c"]), 10, None).await.unwrap();
        assert_eq!(stored.sha256, format!("{:x}", Sha256::digest(b"abc")));
        assert_eq!(stored.size, 3);
        assert_eq!(store.path(&stored.sha256), Some(stored.path.clone()));
        let wrong = store
            .store(chunks(&[b"abd"]), 10, Some(&stored.sha256))
            .await;
        assert!(matches!(wrong, Err(ArchiveStoreError::Mismatch { .. })));
        let big = store.store(chunks(&[b"0123456789", b"x"]), 10, None).await;
        assert!(matches!(big, Err(ArchiveStoreError::TooLarge { .. })));
        let files = std::fs::read_dir(dir.path().join("archives"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "failed stores leave nothing behind");
        let now = std::time::Duration::ZERO;
        assert_eq!(
            store.sweep(&Default::default(), std::time::Duration::from_secs(3600)),
            0
        );
        assert_eq!(store.sweep(&[stored.sha256.clone()].into(), now), 0);
        assert_eq!(store.sweep(&Default::default(), now), 1);
        assert_eq!(store.path(&stored.sha256), None);
        assert_eq!(store.path("../../etc/passwd"), None);
    }
}
