//! File modes of everything raftvisor writes: directories 0700, files
//! 0600 (Raft log segments and meta, snapshots, keys, certificates,
//! tokens), so a replica's data and secrets are readable by its own user
//! only. Every place that creates a file or a directory goes through here;
//! a mode is set when the file or directory is created, and
//! [`secure_dir`] also tightens a directory that already exists (a data
//! directory made by an older raftvisor, or by hand).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Mode of directories raftvisor creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files raftvisor creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents with mode 0700 (existing ones
/// are left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(path)
}

/// Creates `path` if missing and sets its mode to 0700.
pub fn secure_dir(path: &Path) -> io::Result<()> {
    create_dir_all(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
    Ok(())
}

/// Open options that create files with mode 0600.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Creates (or truncates) `path` for writing, mode 0600 when created.
pub fn create(path: &Path) -> io::Result<std::fs::File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Writes `bytes` to `path` (created with mode 0600, or truncated).
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes.as_ref())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        let file = nested.join("f");
        write(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
