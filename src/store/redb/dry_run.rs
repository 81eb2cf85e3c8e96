// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! A redb storage backend that reads a file and keeps every write in
//! memory, while taking redb's locks on the real file: redb can open it
//! for writing — taking the writer's lock as any writer would, verifying
//! every page's checksum, repairing a crash image — without changing a
//! byte of it. Opening a store looks at it through this view first: the
//! store and its journal are judged there, and only a store that passes is
//! opened for real (and, after a crash, repaired on disk).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Granularity of the copy-on-write overlay.
const BLOCK: u64 = 4096;

/// A file seen through an in-memory overlay of writes. Reads and writes go
/// through a handle opened read-only: nothing here can change the file.
/// Locks go to the real file, so that another process writing it is seen
/// (and kept out while this view is open).
#[derive(Debug)]
pub(super) struct DryRun {
    file: File,
    view: Mutex<View>,
    /// redb's own backend on the file, used for its locks only.
    locks: Option<FileBackend>,
}

#[derive(Debug)]
struct View {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file still seen where no block was written: shrinking
    /// hides the rest, and growing again shows zeros there.
    file_len: u64,
    /// Blocks written, by block number.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl DryRun {
    /// A view of `file` (opened for reading) as it is now; `locks`, a
    /// handle on the same file, takes redb's locks (without it, none).
    pub(super) fn new(file: File, locks: Option<FileBackend>) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            view: Mutex::new(View {
                len,
                file_len: len,
                blocks: BTreeMap::new(),
            }),
            locks,
        })
    }

    fn locks(&self) -> Result<&FileBackend, BackendError> {
        self.locks.as_ref().ok_or(BackendError::Unsupported)
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl View {
    /// Block `n` as the file shows it (zeros past what it still shows).
    fn file_block(&self, file: &File, n: u64) -> io::Result<Box<[u8]>> {
        let mut block = vec![0; BLOCK as usize].into_boxed_slice();
        let start = n * BLOCK;
        if start < self.file_len {
            let visible = usize::try_from((self.file_len - start).min(BLOCK)).unwrap_or(0);
            file.read_exact_at(&mut block[..visible], start)?;
        }
        Ok(block)
    }

    /// Copies `[offset, offset + out.len())` into `out`.
    fn read(&self, file: &File, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let (n, within) = (at / BLOCK, (at % BLOCK) as usize);
            let take = (BLOCK as usize - within).min(out.len() - done);
            let dest = &mut out[done..done + take];
            match self.blocks.get(&n) {
                Some(block) => dest.copy_from_slice(&block[within..within + take]),
                None => dest.copy_from_slice(&self.file_block(file, n)?[within..within + take]),
            }
            done += take;
        }
        Ok(())
    }
}

impl StorageBackend for DryRun {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.view().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let view = self.view();
        if offset.saturating_add(out.len() as u64) > view.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        view.read(&self.file, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut view = self.view();
        if len < view.len {
            view.file_len = view.file_len.min(len);
            // Blocks past the end go; the one it cuts keeps zeros after it.
            let first_gone = len.div_ceil(BLOCK);
            view.blocks.split_off(&first_gone);
            if !len.is_multiple_of(BLOCK)
                && let Some(block) = view.blocks.get_mut(&(len / BLOCK))
            {
                block[(len % BLOCK) as usize..].fill(0);
            }
        }
        view.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        match &self.locks {
            Some(locks) => locks.close(),
            None => Ok(()),
        }
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks()?.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.locks()?.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks()?.query_lock_range(start, end)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut view = self.view();
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (n, within) = (at / BLOCK, (at % BLOCK) as usize);
            let take = (BLOCK as usize - within).min(data.len() - done);
            if !view.blocks.contains_key(&n) {
                let block = view.file_block(&self.file, n)?;
                view.blocks.insert(n, block);
            }
            if let Some(block) = view.blocks.get_mut(&n) {
                block[within..within + take].copy_from_slice(&data[done..done + take]);
            }
            done += take;
        }
        view.len = view.len.max(offset + data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let run = DryRun::new(File::open(&path).unwrap(), None).unwrap();
        run.write(4090, &[0xAA; 20]).unwrap();
        let mut out = vec![0; 40];
        run.read(4080, &mut out).unwrap();
        assert_eq!(&out[..10], &original[4080..4090]);
        assert_eq!(&out[10..30], &[0xAA; 20]);
        assert_eq!(&out[30..], &original[4110..4120]);
        // Shrink, then grow: the cut part reads as zeros.
        run.set_len(5000).unwrap();
        run.set_len(12_000).unwrap();
        let mut tail = vec![1; 100];
        run.read(4990, &mut tail).unwrap();
        assert_eq!(&tail[..10], &original[4990..5000]);
        assert!(tail[10..].iter().all(|&b| b == 0));
        assert!(run.read(11_990, &mut [0; 20]).is_err());
        run.write(11_999, &[7]).unwrap();
        assert_eq!(run.len().unwrap(), 12_000);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the file was changed"
        );
    }
}
