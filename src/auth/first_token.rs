//! The first admin token of a cluster, as a file: the leader that finds
//! the cluster without one (see `crate::replica`'s housekeeping) proposes
//! the token this module obtains. It comes from `[auth]
//! bootstrap_token_file` if that file exists; if the file is named but
//! missing, a fresh token is written there (mode 0600) before it is
//! proposed, so a retry or the next leader on the same machine proposes
//! the same token; with no file configured a fresh token is printed once
//! in this replica's log, clearly marked. It never writes to the cluster.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::token::{Token, TokenError};

/// Why the first admin token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum FirstTokenError {
    #[error("cannot read the bootstrap token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bootstrap token file {path} does not hold a raftvisor token: {source}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: TokenError,
    },
    #[error("cannot write the bootstrap token file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the bootstrap token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from the configured file.
    File(PathBuf),
    /// Generated and written to the configured file, which was missing.
    Written(PathBuf),
    /// Generated; no file is configured.
    Generated,
}

/// Reads the token in `path`; `Ok(None)` if there is no such file.
pub fn read_file(path: &Path) -> Result<Option<Token>, FirstTokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Token::parse(&text)
            .map(Some)
            .map_err(|source| FirstTokenError::Malformed {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FirstTokenError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The bootstrap token: from `file` if it exists, else a new one (written
/// to `file` when one is named).
pub fn obtain(file: Option<&Path>) -> Result<(Token, Origin), FirstTokenError> {
    let Some(path) = file else {
        return Ok((Token::generate(), Origin::Generated));
    };
    if let Some(token) = read_file(path)? {
        return Ok((token, Origin::File(path.to_path_buf())));
    }
    let token = Token::generate();
    let write_error = |source| FirstTokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::file_modes::create_dir_all(parent).map_err(write_error)?;
    }
    // Written whole to a private name, then linked into place: a reader
    // sees no file or the whole token, never a part of it; and the link,
    // like create_new, fails when another replica sharing the file got
    // there first — then its token is the one to use.
    let staged = path.with_file_name(format!(
        ".{}.{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        token.id()
    ));
    let mut options = crate::file_modes::options();
    options.write(true).create_new(true);
    let written = options.open(&staged).and_then(|mut out| {
        out.write_all(format!("{}\n", token.reveal()).as_bytes())?;
        out.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return match read_file(path)? {
                Some(token) => Ok((token, Origin::File(path.to_path_buf()))),
                None => Err(write_error(e)),
            };
        }
        Err(e) => return Err(write_error(e)),
    }
    // The new name itself must survive a crash.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(write_error)?;
    }
    Ok((token, Origin::Written(path.to_path_buf())))
}

impl Origin {
    /// Logs that `token`, from here, became the cluster's first admin
    /// token.
    pub fn announce(&self, token: &Token) {
        match self {
        Origin::File(path) => tracing::info!(
            token_id = token.id(),
            file = %path.display(),
            "bootstrap admin token taken from the bootstrap token file"
        ),
        Origin::Written(path) => tracing::warn!(
            token_id = token.id(),
            file = %path.display(),
            "BOOTSTRAP ADMIN TOKEN generated and written to the bootstrap token file (mode 0600); use it with --token-file"
        ),
        // The one place a secret is ever logged: no file was configured,
        // and without this line nobody could use the new cluster.
        Origin::Generated => tracing::warn!(
            "BOOTSTRAP ADMIN TOKEN (shown once, store it now; set [auth] bootstrap_token_file to avoid this): {}",
            token.reveal()
        ),
    }
    }

    /// A token from here lost the race to another leader's: a file
    /// written here would hold a token that does not work, so it goes.
    pub fn forget(&self) {
        if let Origin::Written(path) = self {
            tracing::warn!(file = %path.display(), "the cluster was bootstrapped with another token; removing the file written here");
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_missing_file_is_written_with_mode_0600_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bootstrap.token");
        let (written, origin) = obtain(Some(&path)).unwrap();
        assert_eq!(origin, Origin::Written(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, origin) = obtain(Some(&path)).unwrap();
        assert_eq!(origin, Origin::File(path.clone()));
        assert_eq!(again, written);
    }

    #[test]
    fn an_existing_file_is_used_and_a_malformed_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let token = Token::generate();
        std::fs::write(&path, format!("{}\n", token.reveal())).unwrap();
        assert_eq!(obtain(Some(&path)).unwrap().0, token);
        std::fs::write(&path, "hunter2").unwrap();
        let err = obtain(Some(&path)).unwrap_err();
        assert!(matches!(err, FirstTokenError::Malformed { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }

    /// Scripts and benchmarks read the file as soon as it appears.
    #[test]
    fn a_reader_sees_no_file_or_the_whole_token_never_a_part() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200 {
            let path = dir.path().join(format!("token-{round}"));
            let writer = {
                let path = path.clone();
                std::thread::spawn(move || obtain(Some(&path)).unwrap().0)
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let seen = loop {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    break text;
                }
                assert!(std::time::Instant::now() < deadline, "no token file");
            };
            let token = writer.join().unwrap();
            assert_eq!(seen, format!("{}\n", token.reveal()), "round {round}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "staged files left behind: {left:?}");
    }

    #[test]
    fn without_a_file_a_token_is_generated() {
        let (token, origin) = obtain(None).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert!(Token::parse(token.reveal()).is_ok());
    }
}
