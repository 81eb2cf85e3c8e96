// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The write-ahead journal: two files beside the redb file, `<store>-wal0`
//! and `<store>-wal1`, where a write becomes durable with one sequential
//! `pwrite` and one `fdatasync`.
//!
//! # Format
//!
//! Each file starts with a 32-byte header — magic `WAGGLWAL`, format
//! version (u32 LE), reserved (u32), the store's journal id (u64 LE, also
//! kept in the redb file's metadata), reserved (u64) — then frames, back to
//! back:
//!
//! ```text
//! len u32 LE | crc32 u32 LE | seq u64 LE | kind u8 | payload (len - 1 bytes)
//! ```
//!
//! `kind` 1 is a save whose payload is the [record](crate::record); 2 is a
//! delete whose payload is the id. Since version 2 the first frame of each
//! batch (one `pwrite` and one `fdatasync`) has bit `0x80` of `kind` set. The
//! CRC covers `seq`, `kind` and the payload. Sequence numbers are never
//! reused, so a frame that checks out with a given number is the one write
//! that ever had it. Version 1 files (no batch marks) are read as before.
//!
//! # Generations and which frames are live
//!
//! The writer appends to one file at a time. To checkpoint, it *switches*:
//! later frames go to the other file, from its header on, while the
//! frames of the first are written into the redb file in the background.
//! That commit records `journal_next`, the first sequence number the redb
//! file does not hold — the first frame of the other file. A switch waits
//! until the previous checkpoint is done, so a file is only started over
//! once everything in it is in the redb file.
//!
//! The live frames are the chain that starts with frame `journal_next`
//! right after the header of one of the files, goes on in that file while
//! each frame checks out and follows its predecessor by one, and may then
//! go on after the other file's header. A torn last frame, an older
//! generation's frames beyond the chain's end, or zeros end it. Each file
//! is preallocated with zeros ahead of its chain so that an append does
//! not change the file's size and its `fdatasync` writes data only.
//!
//! # A torn tail or damage
//!
//! A crash can tear only the batch being written: its `fdatasync` had not
//! returned, so none of its writes was acknowledged, and a power loss may
//! keep any of its sectors and lose others. A batch starts only after the
//! one before it is synced. So where the chain breaks, a frame further on
//! that checks out, follows the break in number and *starts a batch* proves
//! that the broken frame's batch had been synced — acknowledged writes are
//! damaged, not torn. So does the other file starting past the break (a
//! switch comes after a synced batch). Opening refuses that, naming the file
//! and the byte where the chain breaks ([`JournalError::Damaged`]), rather
//! than drop the acknowledged writes after it. (RocksDB's WAL recovery modes
//! name the choices: we tolerate a torn tail like
//! `kTolerateCorruptedTailRecords` and refuse damage before acknowledged
//! records like `kAbsoluteConsistency`; we do not take
//! `kPointInTimeRecovery`, which opens without them and says nothing.)
//!
//! # A journal that must be there
//!
//! From format 3 the store file records `journal_state`: `open` is
//! committed only after both files exist with their headers and
//! preallocation synced, and `closed` before a clean close removes them. A
//! store left `open` whose journal is missing, empty, shorter than its
//! preallocation, foreign or damaged is refused ([`Expect::required`]): it
//! holds writes the redb file does not.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::file::sync_parent;
use super::io_log;

/// Header length; the first frame starts here.
pub(super) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"WAGGLWAL";
/// Version 3 added frames of kind [`KIND_CHANGE`].
const VERSION: u32 = 3;
/// Bit of `kind` marking the first frame of a batch (version 2).
const BATCH_START: u8 = 0x80;
/// `len` + `crc` + `seq` + `kind`.
const FRAME_HEAD: usize = 4 + 4 + 8 + 1;
/// Frames above this are garbage, not records (a record is at most a few MiB).
const MAX_FRAME: usize = 256 << 20;
/// The first preallocation.
const FIRST_ALLOCATION: u64 = 64 << 10;
/// How much the preallocation grows by when the chain reaches its end: a
/// step is written with zeros and synced by the append that needs it.
const GROWTH: u64 = 1 << 20;

const KIND_SAVE: u8 = 1;
const KIND_DELETE: u8 = 2;
/// A write with its history: a [change](super::changes), save or delete.
const KIND_CHANGE: u8 = 3;

/// The two journal files of the store at `store`: its path plus `-wal0`
/// and `-wal1`.
pub(super) fn paths_of(store: &Path) -> [PathBuf; 2] {
    [0, 1].map(|n| {
        let mut p = store.as_os_str().to_owned();
        p.push(format!("-wal{n}"));
        PathBuf::from(p)
    })
}

/// One journaled write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// The encoded record of a save (before format 5).
    Save(Vec<u8>),
    /// The id of a delete (before format 5).
    Delete(String),
    /// A save or a delete with its revision, time and origin: the
    /// [change](super::changes) the history keeps.
    Change(super::changes::Bytes),
}

/// What a journal file holds for a given `journal_next`.
#[derive(Debug)]
pub(super) enum Scan {
    /// The live frames, in order (possibly none).
    Live(Vec<Entry>),
    /// The chain starts past `journal_next`: the journal belongs to a later
    /// state of the store than the snapshot that was asked about.
    Ahead {
        /// The first sequence number found.
        first: u64,
    },
}

/// Why a journal file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is not a waggle-store journal")]
    Foreign,
    #[error("its format version is {0}; this build reads {VERSION}")]
    Newer(u32),
    #[error(
        "it belongs to another store file (journal id {found:016x}, the store's is {expected:016x})"
    )]
    OtherStore { found: u64, expected: u64 },
    #[error("its first write is number {first}, but the store file holds writes up to {next}")]
    Ahead { first: u64, next: u64 },
    #[error("it is not a regular file")]
    NotAFile,
    #[error(
        "it is missing, but the store was not closed cleanly: the journal holds writes the store file does not"
    )]
    Missing,
    #[error(
        "it is empty (its header was never written or was erased), but the store was not closed cleanly"
    )]
    Unwritten,
    #[error(
        "it is {len} bytes, shorter than the {min} bytes it was given when the store was opened: it was truncated"
    )]
    Truncated { len: u64, min: u64 },
    #[error(
        "it is damaged at byte {offset}: write number {seq} cannot be read, yet later acknowledged writes follow it"
    )]
    Damaged { offset: u64, seq: u64 },
}

/// What the store file says about its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expect {
    /// The journal id in the store's metadata.
    pub(super) id: u64,
    /// The first sequence number the store file does not hold.
    pub(super) next: u64,
    /// The store was left open (`journal_state = open`): both files must
    /// be there, whole.
    pub(super) required: bool,
}

/// Shortest a journal file can be once the store has been opened with it:
/// its first preallocation (header included), synced before `open` is
/// committed.
const MIN_LEN: u64 = FIRST_ALLOCATION;

/// Refuses a journal path that is a directory, FIFO, socket or device
/// (reading a FIFO could block forever). `Ok(false)` when it is missing.
fn regular(path: &Path) -> Result<bool, JournalError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(_) => Err(JournalError::NotAFile),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A header that is shorter than its length or all zeros: a journal whose
/// creation did not finish. It holds nothing.
fn is_unwritten(header: &[u8]) -> bool {
    header.len() < HEADER_LEN as usize || header.iter().all(|&b| b == 0)
}

fn header(id: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h
}

/// Checks a header; `Ok(false)` for an unwritten one.
fn check_header(bytes: &[u8], id: u64) -> Result<bool, JournalError> {
    if is_unwritten(bytes) {
        return Ok(false);
    }
    if &bytes[..8] != MAGIC {
        return Err(JournalError::Foreign);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    match version {
        0 => return Err(JournalError::Foreign),
        1..=VERSION => {}
        newer => return Err(JournalError::Newer(newer)),
    }
    let mut found = [0; 8];
    found.copy_from_slice(&bytes[16..24]);
    let found = u64::from_le_bytes(found);
    if found != id {
        return Err(JournalError::OtherStore {
            found,
            expected: id,
        });
    }
    Ok(true)
}

fn crc(seq: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Appends `entry`'s frame; `starts_batch` marks the first of a batch.
fn encode_frame(out: &mut Vec<u8>, seq: u64, entry: &Entry, starts_batch: bool) {
    let (kind, payload) = match entry {
        Entry::Save(bytes) => (KIND_SAVE, bytes.as_slice()),
        Entry::Delete(id) => (KIND_DELETE, id.as_bytes()),
        Entry::Change(bytes) => (KIND_CHANGE, &bytes[..]),
    };
    let kind = if starts_batch {
        kind | BATCH_START
    } else {
        kind
    };
    // Records are far below 4 GiB: the writer refuses anything larger.
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(seq, kind, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// A frame that checks out, borrowed from the file's bytes.
struct Frame<'a> {
    seq: u64,
    /// `kind` without the batch mark.
    kind: u8,
    starts_batch: bool,
    payload: &'a [u8],
    /// Bytes the frame takes.
    used: usize,
}

/// The frame at the start of `bytes`, if one is there whole and checks out.
fn frame_at(bytes: &[u8]) -> Option<Frame<'_>> {
    let head = bytes.get(..FRAME_HEAD)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let marked = head[16];
    let kind = marked & !BATCH_START;
    if !matches!(kind, KIND_SAVE | KIND_DELETE | KIND_CHANGE) {
        return None;
    }
    let payload = bytes.get(FRAME_HEAD..FRAME_HEAD + len - 1)?;
    let stored_crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut seq = [0; 8];
    seq.copy_from_slice(&head[8..16]);
    let seq = u64::from_le_bytes(seq);
    if crc(seq, marked, payload) != stored_crc {
        return None;
    }
    Some(Frame {
        seq,
        kind,
        starts_batch: marked & BATCH_START != 0,
        payload,
        used: FRAME_HEAD + len - 1,
    })
}

/// The frame at the start of `bytes` as `(seq, entry, bytes it takes)`.
fn decode_frame(bytes: &[u8]) -> Option<(u64, Entry, usize)> {
    let frame = frame_at(bytes)?;
    let entry = match frame.kind {
        KIND_SAVE => Entry::Save(frame.payload.to_vec()),
        KIND_CHANGE => Entry::Change(frame.payload.into()),
        _ => Entry::Delete(String::from_utf8(frame.payload.to_vec()).ok()?),
    };
    Some((frame.seq, entry, frame.used))
}

/// Whether, after a chain that breaks at `at` where write `expected`
/// should be, `bytes` hold a frame that starts a later batch: proof that
/// the batch of the broken frame had been synced (see the module docs).
/// Valid frames are skipped whole (an older generation); runs of zeros
/// fast; anything else a byte at a time.
fn later_batch_after(bytes: &[u8], at: usize, expected: u64) -> bool {
    let mut p = at;
    while p + FRAME_HEAD <= bytes.len() {
        if bytes[p] == 0 {
            // A frame's length has at most three zero bytes before a
            // non-zero one (it is at most MAX_FRAME, little-endian).
            let run = bytes[p..].iter().take_while(|&&b| b == 0).count();
            if run > 3 {
                p += run - 3;
                continue;
            }
        }
        match frame_at(&bytes[p..]) {
            Some(frame) if frame.starts_batch && frame.seq > expected => return true,
            Some(frame) => p += frame.used,
            None => p += 1,
        }
    }
    false
}

/// Frames of one file's contents from its header on, while they follow
/// each other by one from `first`: the entries and the offset after them.
fn chain(bytes: &[u8], first: u64) -> (Vec<Entry>, u64) {
    let mut at = HEADER_LEN as usize;
    let mut entries = Vec::new();
    let mut expected = first;
    while let Some((seq, entry, used)) = bytes.get(at..).and_then(decode_frame) {
        if seq != expected {
            break;
        }
        entries.push(entry);
        expected += 1;
        at += used;
    }
    (entries, at as u64)
}

/// The sequence number of the first frame of a file, if one checks out.
fn first_seq(bytes: &[u8]) -> Option<u64> {
    bytes
        .get(HEADER_LEN as usize..)
        .and_then(decode_frame)
        .map(|(seq, ..)| seq)
}

/// The live frames of the two files' contents (headers included) for a
/// store whose redb file holds everything before `next`; also the file the
/// chain ends in and the offset after its last frame. A damaged chain is
/// `Err((file, Damaged))`: only for opening, when no one else writes (a
/// reader beside a writer may see a file while it is appended to).
pub(super) fn scan_pair(
    files: [&[u8]; 2],
    id: u64,
    next: u64,
) -> Result<(Scan, usize, u64), (usize, JournalError)> {
    let mut written = [false; 2];
    for (n, bytes) in files.iter().enumerate() {
        written[n] = check_header(bytes.get(..HEADER_LEN as usize).unwrap_or(bytes), id)
            .map_err(|e| (n, e))?;
    }
    let firsts = [0, 1].map(|n| {
        if written[n] {
            first_seq(files[n])
        } else {
            None
        }
    });
    let Some(start) = (0..2).find(|&n| firsts[n] == Some(next)) else {
        // Every older generation is below `next`: a chain past it means the
        // journal has moved on from the redb state asked about.
        if let Some(first) = firsts.iter().flatten().copied().find(|&f| f > next) {
            return Ok((Scan::Ahead { first }, 0, HEADER_LEN));
        }
        // Or the chain's first frame is the one broken.
        if let Some(n) =
            (0..2).find(|&n| written[n] && later_batch_after(files[n], HEADER_LEN as usize, next))
        {
            return Err((
                n,
                JournalError::Damaged {
                    offset: HEADER_LEN,
                    seq: next,
                },
            ));
        }
        return Ok((Scan::Live(Vec::new()), 0, HEADER_LEN));
    };
    let (mut entries, mut end) = chain(files[start], next);
    let mut last = start;
    let other = 1 - start;
    let mut expected = next + entries.len() as u64;
    let damaged =
        |file: usize, at: u64, seq: u64| (file, JournalError::Damaged { offset: at, seq });
    if firsts[other] == Some(expected) {
        let (more, other_end) = chain(files[other], expected);
        entries.extend(more);
        (last, end) = (other, other_end);
        expected = next + entries.len() as u64;
    } else if firsts[other].is_some_and(|f| f > expected) {
        // The other file was started after this one's last batch was synced.
        return Err(damaged(start, end, expected));
    }
    if later_batch_after(files[last], end as usize, expected) {
        return Err(damaged(last, end, expected));
    }
    Ok((Scan::Live(entries), last, end))
}

/// The contents of one journal file; empty when it is missing. A path
/// that is not a regular file is refused.
fn file_bytes(path: &Path) -> Result<Vec<u8>, JournalError> {
    if !regular(path)? {
        return Ok(Vec::new());
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        // Removed since it was looked at: missing.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// How much of a journal file a [`Follower`] reads at first: most calls
/// find a few new frames, or none (zeros).
const FOLLOW_FIRST: usize = 4 << 10;
/// The most it reads at a time, growing from [`FOLLOW_FIRST`] while the
/// chunks it reads are full of frames.
const FOLLOW_CHUNK: usize = 1 << 20;

/// `len` bytes of `path` from `offset`, fewer at its end; none when the
/// file is missing. A path that is not a regular file is refused.
fn read_span(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, JournalError> {
    if !regular(path)? {
        return Ok(Vec::new());
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut bytes[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// The sequence number of the first frame of a file, if its header is this
/// store's and its first frame checks out. Reads only those.
fn head_seq(path: &Path, id: u64) -> Result<Option<u64>, JournalError> {
    let head = read_span(path, 0, HEADER_LEN as usize + FRAME_HEAD)?;
    if !check_header(head.get(..HEADER_LEN as usize).unwrap_or(&head), id)? {
        return Ok(None);
    }
    let Some(len) = head.get(HEADER_LEN as usize..HEADER_LEN as usize + 4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Ok(None);
    }
    let head = read_span(path, 0, HEADER_LEN as usize + FRAME_HEAD + len - 1)?;
    Ok(first_seq(&head))
}

/// What a [`Follower`] found since it was last asked.
#[derive(Debug)]
pub(super) enum Followed {
    /// Writes appended to the chain since the last call, in order; after
    /// `reset`, the whole chain (the caller drops what it had).
    More { reset: bool, entries: Vec<Entry> },
    /// The chain starts past `journal_next`: the journal belongs to a later
    /// state of the store than the snapshot asked about.
    Ahead,
}

/// Follows the live chain of a journal another process writes, for a
/// read-only handle: each call reads only the frames appended since the
/// one before (in chunks), not the files whole, so a read costs the same
/// however long the journal has grown. A checkpoint (a new
/// `journal_next`) starts it over.
#[derive(Debug, Default)]
pub(super) struct Follower {
    /// The `(journal id, journal_next)` the chain followed belongs to.
    key: Option<(u64, u64)>,
    /// The file the chain goes on in, once its first frame was found.
    file: Option<usize>,
    /// Where its next frame would start.
    offset: u64,
    /// The number it would have.
    seq: u64,
    /// It started over since it last returned writes: the caller must drop
    /// what it had.
    restarted: bool,
}

impl Follower {
    /// The frames appended to the live chain of the journal of `store`
    /// since the last call, for a redb snapshot holding everything before
    /// `next`. A frame being written (torn) ends a call; the next call
    /// reads it again.
    /// A failed read leaves it to start over at the next call: the frames
    /// it had read past were not returned.
    pub(super) fn follow(
        &mut self,
        store: &Path,
        id: u64,
        next: u64,
    ) -> Result<Followed, JournalError> {
        if self.key != Some((id, next)) {
            *self = Self {
                key: Some((id, next)),
                file: None,
                offset: HEADER_LEN,
                seq: next,
                restarted: true,
            };
        }
        let followed = self.read_on(store, id, next);
        if followed.is_err() {
            *self = Self::default();
        }
        followed
    }

    fn read_on(&mut self, store: &Path, id: u64, next: u64) -> Result<Followed, JournalError> {
        let paths = paths_of(store);
        let mut entries = Vec::new();
        if self.file.is_none() {
            let firsts = [head_seq(&paths[0], id)?, head_seq(&paths[1], id)?];
            match (0..2).find(|&n| firsts[n] == Some(next)) {
                Some(n) => self.file = Some(n),
                None if firsts.iter().flatten().any(|&f| f > next) => return Ok(Followed::Ahead),
                // Nothing written since the snapshot: look again next time.
                None => {
                    let reset = std::mem::take(&mut self.restarted);
                    return Ok(Followed::More { reset, entries });
                }
            }
        }
        while let Some(n) = self.file {
            self.extend(&paths[n], &mut entries)?;
            // The chain may go on after the other file's header.
            let other = 1 - n;
            if head_seq(&paths[other], id)? == Some(self.seq) {
                self.file = Some(other);
                self.offset = HEADER_LEN;
            } else {
                break;
            }
        }
        let reset = std::mem::take(&mut self.restarted);
        Ok(Followed::More { reset, entries })
    }

    /// Reads the chain on in one file, from where it stopped.
    fn extend(&mut self, path: &Path, entries: &mut Vec<Entry>) -> Result<(), JournalError> {
        let mut want = FOLLOW_FIRST;
        loop {
            let chunk = read_span(path, self.offset, want)?;
            let mut at = 0;
            while let Some((seq, entry, used)) = chunk.get(at..).and_then(decode_frame) {
                if seq != self.seq {
                    return Ok(());
                }
                entries.push(entry);
                self.seq += 1;
                at += used;
            }
            self.offset += at as u64;
            // Cut by the chunk, not the chain: read on from that frame.
            let rest = &chunk[at..];
            let needed = match rest.get(..4) {
                Some(len) => {
                    FRAME_HEAD + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize
                }
                None => FRAME_HEAD,
            };
            if chunk.len() < want || rest.len() >= needed || needed > MAX_FRAME + FRAME_HEAD {
                return Ok(());
            }
            want = needed.max((want * 2).min(FOLLOW_CHUNK));
        }
    }
}

/// Why an append failed, which decides what the writer does next.
#[derive(Debug)]
pub(super) enum AppendError {
    /// Growing the preallocation failed; no frame was written.
    Grow(io::Error),
    /// Writing or syncing the frames failed; they may be partly on disk.
    Write(io::Error),
}

/// A failure [`Journal::append`] is made to have, for tests of what the
/// writer does after it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Growing the preallocation fails: no frame is written.
    Grow,
    /// Half of the frames' bytes reach the file, then the write fails.
    TornWrite,
    /// Every frame reaches the file, then the sync fails.
    Sync,
}

/// Writes `data` at `offset`, reporting it to the [`io_log`].
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    io_log::write(file, offset, data);
    file.write_all_at(data, offset)
}

/// Syncs a journal file's data (and size), reporting it to the [`io_log`].
fn sync(file: &File) -> io::Result<()> {
    file.sync_data()?;
    io_log::synced(file);
    Ok(())
}

/// One of the two journal files.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    /// Where the next frame goes.
    end: u64,
    /// Bytes of the file known to be written (zeros or frames).
    allocated: u64,
}

impl Log {
    /// Opens (creating if needed, mode 0600) one journal file.
    fn open(path: &Path) -> Result<Self, JournalError> {
        let existed = std::fs::symlink_metadata(path).is_ok();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        if !existed {
            io_log::created(path, &file);
        }
        let allocated = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            end: HEADER_LEN,
            allocated,
        })
    }

    /// Writes the header of a file whose creation had not finished.
    fn initialise(&mut self, id: u64) -> io::Result<()> {
        write_at(&self.file, &header(id), 0)?;
        self.allocated = self.allocated.max(HEADER_LEN);
        self.grow(FIRST_ALLOCATION)?;
        sync(&self.file)?;
        sync_parent(&self.path)
    }

    /// Writes zeros up to `target` bytes; not synced here.
    fn grow(&mut self, target: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0; CHUNK];
        while self.allocated < target {
            let n = usize::try_from(target - self.allocated)
                .unwrap_or(CHUNK)
                .min(CHUNK);
            write_at(&self.file, &zeros[..n], self.allocated)?;
            self.allocated += n as u64;
        }
        Ok(())
    }
}

/// Journal contents, live entries, and where the chain ends.
type Loaded = ([Vec<u8>; 2], Vec<Entry>, usize, u64);

/// Reads both files and checks them, creating and writing nothing; an
/// error names the file it is about.
fn load(paths: &[PathBuf; 2], expect: Expect) -> Result<Loaded, (PathBuf, JournalError)> {
    let mut contents: [Vec<u8>; 2] = Default::default();
    for (path, bytes) in paths.iter().zip(&mut contents) {
        let at = |e| (path.clone(), e);
        if expect.required && !regular(path).map_err(at)? {
            return Err(at(JournalError::Missing));
        }
        *bytes = file_bytes(path).map_err(at)?;
        let header = bytes.get(..HEADER_LEN as usize).unwrap_or(bytes);
        if !check_header(header, expect.id).map_err(at)? && expect.required {
            return Err(at(JournalError::Unwritten));
        }
        let len = bytes.len() as u64;
        if expect.required && len < MIN_LEN {
            return Err(at(JournalError::Truncated { len, min: MIN_LEN }));
        }
    }
    let (scan, last, end) = scan_pair([&contents[0], &contents[1]], expect.id, expect.next)
        .map_err(|(n, e)| (paths[n].clone(), e))?;
    match scan {
        Scan::Live(entries) => Ok((contents, entries, last, end)),
        Scan::Ahead { first } => Err((
            paths[0].clone(),
            JournalError::Ahead {
                first,
                next: expect.next,
            },
        )),
    }
}

/// Checks, without creating or changing anything, that the journal of
/// the store at `store` can be opened for a store file that says
/// `expect`, and returns the writes opening it would replay.
pub(super) fn check(store: &Path, expect: Expect) -> Result<Vec<Entry>, (PathBuf, JournalError)> {
    load(&paths_of(store), expect).map(|(_, entries, ..)| entries)
}

/// The journal, open for appending by the writer thread.
#[derive(Debug)]
pub(super) struct Journal {
    logs: [Log; 2],
    /// The file frames are appended to.
    active: usize,
    /// The sequence number of the next frame.
    next_seq: u64,
    buf: Vec<u8>,
    /// A failure the next append has.
    #[cfg(test)]
    pub(super) fault: Option<Fault>,
}

impl Journal {
    /// Opens (creating if needed, mode 0600) the journal of the store at
    /// `store` with journal id `id`, whose redb file holds everything before
    /// `next`, and returns it with the live frames to replay. Appends go on
    /// after them.
    pub(super) fn open(
        store: &Path,
        expect: Expect,
    ) -> Result<(Self, Vec<Entry>), (PathBuf, JournalError)> {
        let Expect { id, next, .. } = expect;
        let paths = paths_of(store);
        let (contents, entries, last, end) = load(&paths, expect)?;
        let [l0, l1] = [0, 1].map(|n| Log::open(&paths[n]).map_err(|e| (paths[n].clone(), e)));
        let mut journal = Self {
            logs: [l0?, l1?],
            active: last,
            next_seq: next + entries.len() as u64,
            buf: Vec::new(),
            #[cfg(test)]
            fault: None,
        };
        journal.logs[last].end = end;
        for (log, bytes) in journal.logs.iter_mut().zip(&contents) {
            if is_unwritten(bytes.get(..HEADER_LEN as usize).unwrap_or(bytes)) {
                log.initialise(id)
                    .map_err(|e| (log.path.clone(), e.into()))?;
            }
        }
        Ok((journal, entries))
    }

    /// The sequence number the next frame gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of frames in the file being appended to.
    pub(super) fn live_bytes(&self) -> u64 {
        self.logs[self.active].end - HEADER_LEN
    }

    /// Appends `entries` as frames and syncs them. On success they are
    /// durable and numbered from the old [`next_seq`](Self::next_seq).
    pub(super) fn append<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Result<(), AppendError> {
        self.buf.clear();
        let mut seq = self.next_seq;
        for entry in entries {
            encode_frame(&mut self.buf, seq, entry, seq == self.next_seq);
            seq += 1;
        }
        let log = &mut self.logs[self.active];
        let needed = log.end + self.buf.len() as u64;
        if needed > log.allocated {
            let target = needed.max(log.allocated + GROWTH);
            log.grow(target).map_err(AppendError::Grow)?;
        }
        #[cfg(test)]
        if let Some(fault) = self.fault.take() {
            let injected = || io::Error::other("injected fault");
            let written = match fault {
                Fault::Grow => return Err(AppendError::Grow(injected())),
                Fault::TornWrite => &self.buf[..self.buf.len() / 2],
                Fault::Sync => &self.buf[..],
            };
            write_at(&log.file, written, log.end).map_err(AppendError::Write)?;
            return Err(AppendError::Write(injected()));
        }
        write_at(&log.file, &self.buf, log.end)
            .and_then(|()| sync(&log.file))
            .map_err(AppendError::Write)?;
        log.end = needed;
        self.next_seq = seq;
        Ok(())
    }

    /// Gives up `n` sequence numbers whose frames may be partly on disk,
    /// so that nothing written later can be mistaken for them.
    pub(super) fn skip(&mut self, n: u64) {
        self.next_seq += n;
    }

    /// Overwrites with zeros, and syncs, where the last append that failed
    /// wrote its frames, so a replay ends before them. For when they
    /// cannot be fenced off by a checkpoint; appends must not go on after
    /// it (their numbers would not follow on).
    pub(super) fn erase_failed(&mut self) -> io::Result<()> {
        let log = &self.logs[self.active];
        write_at(&log.file, &vec![0; self.buf.len()], log.end)?;
        sync(&log.file)
    }

    /// Sends later frames to the other file, from its header on. Only once
    /// everything in that file is in the redb file.
    pub(super) fn switch(&mut self) {
        self.active = 1 - self.active;
        self.logs[self.active].end = HEADER_LEN;
    }

    /// Removes both files after a final checkpoint.
    pub(super) fn remove(self) -> io::Result<()> {
        for log in self.logs {
            let Log { path, file, .. } = log;
            drop(file);
            io_log::remove_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `frames`, each its own batch.
    fn contents(frames: &[(u64, Entry)], id: u64) -> Vec<u8> {
        let mut bytes = header(id).to_vec();
        for (seq, e) in frames {
            encode_frame(&mut bytes, *seq, e, true);
        }
        bytes
    }

    fn ex(id: u64, next: u64) -> Expect {
        Expect {
            id,
            next,
            required: false,
        }
    }

    fn live(scan: Scan) -> Vec<Entry> {
        match scan {
            Scan::Live(e) => e,
            Scan::Ahead { first } => panic!("ahead at {first}"),
        }
    }

    fn scan(a: &[u8], b: &[u8], id: u64, next: u64) -> Result<Scan, JournalError> {
        scan_pair([a, b], id, next).map(|r| r.0).map_err(|(_, e)| e)
    }

    #[test]
    fn the_chain_starts_at_next_and_a_gap_is_damage() {
        let a = Entry::Save(b"{}".to_vec());
        let b = Entry::Delete("x".into());
        let file = contents(&[(5, a.clone()), (6, b.clone()), (8, a.clone())], 9);
        let empty = contents(&[], 9);
        // Numbers are never skipped within a file: 7 was lost.
        assert!(matches!(
            scan(&file, &empty, 9, 5),
            Err(JournalError::Damaged { seq: 7, .. })
        ));
        let file = contents(&[(5, a.clone()), (6, b.clone())], 9);
        assert_eq!(live(scan(&file, &empty, 9, 5).unwrap()), vec![a, b]);
        // Already held by the store file: an older generation.
        assert!(live(scan(&empty, &file, 9, 7).unwrap()).is_empty());
        assert!(matches!(
            scan(&file, &empty, 9, 3).unwrap(),
            Scan::Ahead { first: 5 }
        ));
    }

    #[test]
    fn the_chain_goes_on_in_the_other_file() {
        let e = |n: u8| Entry::Save(vec![n]);
        let older = contents(&[(3, e(3)), (4, e(4)), (5, e(5))], 1);
        let newer = contents(&[(6, e(6)), (7, e(7))], 1);
        let all: Vec<Entry> = (3..8).map(e).collect();
        assert_eq!(live(scan(&older, &newer, 1, 3).unwrap()), all);
        assert_eq!(live(scan(&newer, &older, 1, 3).unwrap()), all);
        // Checkpointed up to 6: only the newer file is live.
        assert_eq!(live(scan(&older, &newer, 1, 6).unwrap()), all[3..].to_vec());
        // A gap between the files is damage: the newer file was started
        // only after the older one's last batch was synced.
        let gap = contents(&[(7, e(7))], 1);
        assert!(matches!(
            scan(&older, &gap, 1, 3),
            Err(JournalError::Damaged { seq: 6, .. })
        ));
    }

    #[test]
    fn a_torn_or_flipped_frame_ends_the_chain() {
        let a = Entry::Save(vec![b'a'; 100]);
        let bytes = contents(&[(1, a.clone()), (2, a.clone())], 1);
        let one = HEADER_LEN as usize + FRAME_HEAD + 100;
        for cut in [one, one + 1, bytes.len() - 1] {
            assert_eq!(live(scan(&bytes[..cut], &[], 1, 1).unwrap()).len(), 1);
        }
        let mut flipped = bytes.clone();
        flipped[one + FRAME_HEAD + 3] ^= 1;
        assert_eq!(live(scan(&flipped, &[], 1, 1).unwrap()).len(), 1);
    }

    #[test]
    fn headers_of_other_stores_and_formats_are_refused() {
        let bytes = contents(&[], 1);
        assert!(matches!(
            scan(&bytes, &[], 2, 1),
            Err(JournalError::OtherStore { .. })
        ));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert!(matches!(
            scan(&[], &newer, 1, 1),
            Err(JournalError::Newer(9))
        ));
        let mut foreign = bytes;
        foreign[0] = b'X';
        assert!(matches!(
            scan(&foreign, &[], 1, 1),
            Err(JournalError::Foreign)
        ));
        // Unwritten (creation interrupted): empty, not an error.
        assert!(live(scan(&[0; 20], &[], 1, 1).unwrap()).is_empty());
    }

    #[test]
    fn the_check_agrees_with_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let (mut j, _) = Journal::open(&store, ex(7, 1)).unwrap();
        let big = Entry::Save(vec![b'z'; 300 << 10]);
        j.append([big, Entry::Delete("a".into())].iter()).unwrap();
        j.switch();
        j.append([Entry::Delete("b".into())].iter()).unwrap();
        drop(j);
        let paths = paths_of(&store);
        let before = paths.clone().map(|p| std::fs::read(p).unwrap());
        for next in [1, 3, 4] {
            let checked = check(&store, ex(7, next)).unwrap();
            assert_eq!(checked.len() as u64, 4 - next, "next {next}");
        }
        // Where opening refuses, so does the check.
        for (id, next) in [(7, 0), (8, 1)] {
            let checked = check(&store, ex(id, next))
                .map(|_| ())
                .map_err(|e| e.1.to_string());
            let opened = Journal::open(&store, ex(id, next))
                .map(|_| ())
                .map_err(|e| e.1.to_string());
            assert!(checked.is_err(), "{id} {next}");
            assert_eq!(checked, opened, "{id} {next}");
        }
        assert_eq!(paths.map(|p| std::fs::read(p).unwrap()), before);
    }

    /// A frame that checks out, follows the break and starts a later
    /// batch proves the broken one was acknowledged: damage, refused. A
    /// torn last batch (its later frames intact) is the crash's tail.
    #[test]
    fn damage_before_a_later_batch_is_refused_a_torn_batch_is_not() {
        let e = |n: u8| Entry::Save(vec![n; 50]);
        let frame = FRAME_HEAD + 50;
        let at = |k: usize| HEADER_LEN as usize + k * frame;
        // Frames 1..=6: batches {1,2,3} and {4,5,6}.
        let mut bytes = header(1).to_vec();
        for seq in 1..=6u64 {
            encode_frame(&mut bytes, seq, &e(seq as u8), seq == 1 || seq == 4);
        }
        bytes.resize(bytes.len() + 4096, 0);
        let damaged = |k: usize| {
            let mut b = bytes.clone();
            b[at(k) + FRAME_HEAD + 7] ^= 1;
            b
        };
        // Frame 2 broken, batch {4,5,6} follows: damage at frame 2.
        match scan(&damaged(1), &[], 1, 1) {
            Err(JournalError::Damaged { offset, seq: 2 }) => assert_eq!(offset, at(1) as u64),
            other => panic!("{other:?}"),
        }
        // Frame 5 broken: only frame 6 of its own batch follows: a torn tail.
        assert_eq!(live(scan(&damaged(4), &[], 1, 1).unwrap()).len(), 4);
        // Frame 4 (a batch start) broken: 5 and 6 are its batch: torn.
        assert_eq!(live(scan(&damaged(3), &[], 1, 1).unwrap()).len(), 3);
        // The chain breaks in one file and the other starts past it.
        let first = contents(&[(1, e(1)), (2, e(2))], 1);
        let second = contents(&[(4, e(4))], 1);
        assert!(matches!(
            scan(&first, &second, 1, 1),
            Err(JournalError::Damaged { seq: 3, .. })
        ));
        // An older generation past the chain's end is not damage.
        let mut reused = contents(&[(9, e(9))], 1);
        reused.extend_from_slice(&bytes[at(1)..]);
        assert_eq!(live(scan(&reused, &[], 1, 9).unwrap()).len(), 1);
        // The chain's very first frame broken.
        assert!(matches!(
            scan(&damaged(0), &[], 1, 1),
            Err(JournalError::Damaged { offset: 32, seq: 1 })
        ));
    }

    /// A store left open needs its journal: missing, unwritten or cut short
    /// is refused; a store closed cleanly needs none.
    #[test]
    fn a_required_journal_must_be_there_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let required = Expect {
            required: true,
            ..ex(7, 1)
        };
        assert!(matches!(
            check(&store, required),
            Err((_, JournalError::Missing))
        ));
        assert!(check(&store, ex(7, 1)).is_ok());
        let (mut j, _) = Journal::open(&store, ex(7, 1)).unwrap();
        j.append([Entry::Delete("a".into())].iter()).unwrap();
        drop(j);
        assert_eq!(check(&store, required).unwrap().len(), 1);
        let wal = &paths_of(&store)[1];
        let whole = std::fs::read(wal).unwrap();
        for (len, says) in [(0, "empty"), (20, "empty"), (HEADER_LEN + 100, "truncated")] {
            std::fs::write(wal, &whole[..len as usize]).unwrap();
            let err = check(&store, required).unwrap_err();
            assert!(err.1.to_string().contains(says), "{len}: {}", err.1);
            assert_eq!(&err.0, wal);
        }
        std::fs::write(wal, vec![0; whole.len()]).unwrap();
        assert!(matches!(
            check(&store, required),
            Err((_, JournalError::Unwritten))
        ));
    }

    /// A reader follows the chain as the writer appends, across a switch
    /// and through frames bigger than its chunk, reading only what is new;
    /// a new `journal_next` starts it over.
    #[test]
    fn the_follower_reads_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let (mut j, _) = Journal::open(&store, ex(7, 1)).unwrap();
        let mut f = Follower::default();
        let more = |f: &mut Follower, next| match f.follow(&store, 7, next).unwrap() {
            Followed::More { reset, entries } => (reset, entries.len()),
            Followed::Ahead => panic!("ahead"),
        };
        assert_eq!(more(&mut f, 1), (true, 0));
        j.append([Entry::Delete("a".into()), Entry::Delete("b".into())].iter())
            .unwrap();
        assert_eq!(more(&mut f, 1), (false, 2));
        assert_eq!(more(&mut f, 1), (false, 0));
        // A failed read starts it over: nothing it read past is lost.
        let wal1 = &paths_of(&store)[1];
        let aside = dir.path().join("aside");
        std::fs::rename(wal1, &aside).unwrap();
        std::fs::create_dir(wal1).unwrap();
        assert!(f.follow(&store, 7, 1).is_err());
        std::fs::remove_dir(wal1).unwrap();
        std::fs::rename(&aside, wal1).unwrap();
        assert_eq!(more(&mut f, 1), (true, 2));
        let big = Entry::Save(vec![b'z'; FOLLOW_CHUNK + 10]);
        j.append([big].iter()).unwrap();
        j.switch();
        j.append([Entry::Delete("c".into())].iter()).unwrap();
        assert_eq!(more(&mut f, 1), (false, 2));
        // Checkpointed up to 4: only the newer file is live.
        assert_eq!(more(&mut f, 4), (true, 1));
        assert!(matches!(f.follow(&store, 7, 0), Ok(Followed::Ahead)));
    }

    #[test]
    fn append_switch_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let (mut j, replay) = Journal::open(&store, ex(7, 1)).unwrap();
        assert!(replay.is_empty());
        let e = [
            Entry::Save(b"{\"a\":1}".to_vec()),
            Entry::Delete("a".into()),
        ];
        j.append(e.iter()).unwrap();
        assert_eq!(j.next_seq(), 3);
        drop(j);
        let (mut j, replay) = Journal::open(&store, ex(7, 1)).unwrap();
        assert_eq!(replay, e.to_vec());
        // The other file takes the next frames; the chain crosses over.
        j.switch();
        j.append([Entry::Delete("b".into())].iter()).unwrap();
        drop(j);
        let (_, replay) = Journal::open(&store, ex(7, 1)).unwrap();
        assert_eq!(replay.len(), 3);
        let (mut j, replay) = Journal::open(&store, ex(7, 3)).unwrap();
        assert_eq!(replay, vec![Entry::Delete("b".into())]);
        // Grows past its preallocation.
        let big = [Entry::Save(vec![b'z'; 300 << 10])];
        j.append(big.iter()).unwrap();
        drop(j);
        let (_, replay) = Journal::open(&store, ex(7, 3)).unwrap();
        assert!(replay.len() == 2 && replay[1] == big[0], "{}", replay.len());
        // A checkpoint always ends where a file starts: nothing is live.
        let (j, replay) = Journal::open(&store, ex(7, 5)).unwrap();
        assert!(replay.is_empty());
        j.remove().unwrap();
        assert!(paths_of(&store).iter().all(|p| !p.exists()));
    }
}
