//! Durable directory operations of the log directory: fsync-ing it after a
//! file appears or disappears, and deleting a file that may already be gone.
//! It must never know what the files hold.

use std::fs;
use std::fs::File;
use std::io;
use std::path::Path;

use super::error::io_error;
use super::error::LogStoreError;

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

pub(super) fn remove_file(path: &Path) -> Result<(), LogStoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("delete", path)(e)),
    }
}
