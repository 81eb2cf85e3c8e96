// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Every write, size change, sync and directory change the store makes to
//! its files, reported here as it is made. In a normal build these calls
//! are empty and vanish; under `cfg(test)` they feed the recorder of the
//! power-loss simulation ([`power_loss`](super::power_loss)), which builds
//! the crash images a power cut could leave.
//!
//! Also the store file's redb backend, [`StoreFile`]: redb's own
//! `FileBackend`, with its writes and syncs reported.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// `file` was just created at `path`.
pub(super) fn created(path: &Path, file: &File) {
    #[cfg(test)]
    super::power_loss::record_created(path, file);
    #[cfg(not(test))]
    let _ = (path, file);
}

/// `data` is about to be written to `file` at `offset`.
pub(super) fn write(file: &File, offset: u64, data: &[u8]) {
    #[cfg(test)]
    super::power_loss::record_write(file, offset, data);
    #[cfg(not(test))]
    let _ = (file, offset, data);
}

/// `file` is about to be cut or grown to `len` (only redb does, through
/// [`StoreFile`]).
#[cfg(test)]
fn set_len(file: &File, len: u64) {
    super::power_loss::record_set_len(file, len);
}

/// `file`'s data and size were just synced.
pub(super) fn synced(file: &File) {
    #[cfg(test)]
    super::power_loss::record_synced(file);
    #[cfg(not(test))]
    let _ = file;
}

/// `to` was just made a second name of the file `from` names.
pub(super) fn linked(from: &Path, to: &Path) {
    #[cfg(test)]
    super::power_loss::record_linked(from, to);
    #[cfg(not(test))]
    let _ = (from, to);
}

/// `from` was just renamed to `to`.
pub(super) fn renamed(from: &Path, to: &Path) {
    #[cfg(test)]
    super::power_loss::record_renamed(from, to);
    #[cfg(not(test))]
    let _ = (from, to);
}

/// Removes the file at `path`, and reports it.
pub(super) fn remove_file(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    #[cfg(test)]
    super::power_loss::record_removed(path);
    Ok(())
}

/// The directory `dir` was just synced: its entries are durable.
pub(super) fn dir_synced(dir: &Path) {
    #[cfg(test)]
    super::power_loss::record_dir_synced(dir);
    #[cfg(not(test))]
    let _ = dir;
}

/// The store file as redb sees it: redb's `FileBackend`, with every write,
/// size change and sync reported (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct StoreFile {
    inner: FileBackend,
    /// The same file, to report against (tests only: elsewhere the reports
    /// are empty).
    #[cfg(test)]
    file: File,
}

impl StoreFile {
    /// Opens the store file at `path` for reading and writing.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        #[cfg(test)]
        let reported = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self {
            inner,
            #[cfg(test)]
            file: reported,
        })
    }
}

impl StorageBackend for StoreFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        #[cfg(test)]
        set_len(&self.file, len);
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()?;
        #[cfg(test)]
        synced(&self.file);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        #[cfg(test)]
        write(&self.file, offset, data);
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
