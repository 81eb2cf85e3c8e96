// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The bytes of one [`Change`]: what a journal frame of a write holds
//! (format 5) and what the history's blocks keep, so that a checkpoint
//! moves a change from one to the other without encoding it again.
//!
//! ```text
//! 0x03 | revision u64 LE | at i64 LE (ns since 1970, UTC) | kind u8 (1 saved, 2 deleted)
//!      | origin length u8 | origin | id length u8 | id | record (saves only)
//! ```
//!
//! The writer fills in the revision and the time when it judges the batch
//! ([`stamp`]); everything else is known when the caller makes the request.
//! Ids (at most 128 bytes) and origins (at most 64) fit their length byte;
//! [`parse`] refuses anything that does not hold together, never panics.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::history::{Change, ChangeKind};
use crate::revisions::Revision;

/// The first byte of a change.
pub(super) const MARK: u8 = 0x03;
const SAVED: u8 = 1;
const DELETED: u8 = 2;
/// Mark, revision, time, kind.
const FIXED: usize = 1 + 8 + 8 + 1;

/// One change's bytes, shared by the journal entry, the pending log and
/// the checkpoint.
pub(super) type Bytes = Arc<[u8]>;

fn encode(kind: u8, origin: &str, id: &str, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + 2 + origin.len() + id.len() + record.len());
    out.push(MARK);
    out.extend_from_slice(&[0; 16]);
    out.push(kind);
    // Both are validated short: an origin at most 64 bytes, an id 128.
    out.push(u8::try_from(origin.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(origin.as_bytes().get(..255).unwrap_or(origin.as_bytes()));
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id.as_bytes().get(..255).unwrap_or(id.as_bytes()));
    out.extend_from_slice(record);
    out
}

/// A save of `record` (of environment `id`) by `origin`; [`stamp`] fills in
/// its revision and time.
pub(super) fn save(origin: &str, id: &str, record: &[u8]) -> Vec<u8> {
    encode(SAVED, origin, id, record)
}

/// A delete of `id` by `origin`; [`stamp`] fills in its revision and time.
pub(super) fn delete(origin: &str, id: &str) -> Vec<u8> {
    encode(DELETED, origin, id, &[])
}

/// Writes the revision and the time into a change.
pub(super) fn stamp(change: &mut [u8], revision: Revision, at: DateTime<Utc>) {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    if let Some(slot) = change.get_mut(1..9) {
        slot.copy_from_slice(&revision.get().to_le_bytes());
    }
    if let Some(slot) = change.get_mut(9..17) {
        slot.copy_from_slice(&nanos.to_le_bytes());
    }
}

/// A change's parts, borrowed from its bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed<'a> {
    pub(super) revision: u64,
    pub(super) at: i64,
    pub(super) kind: ChangeKind,
    pub(super) origin: &'a str,
    pub(super) id: &'a str,
    /// The record of a save; empty for a delete.
    pub(super) record: &'a [u8],
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        id: "(history)".to_owned(),
        reason: reason.into(),
    }
}

/// Reads a change's parts.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed<'_>> {
    let fixed = bytes
        .get(..FIXED)
        .ok_or_else(|| bad(format!("a change of {} bytes is too short", bytes.len())))?;
    if fixed[0] != MARK {
        return Err(bad(format!("a change starts with {:#04x}", fixed[0])));
    }
    let u64_at = |at: usize| {
        let mut n = [0; 8];
        n.copy_from_slice(&fixed[at..at + 8]);
        n
    };
    let revision = u64::from_le_bytes(u64_at(1));
    let at = i64::from_le_bytes(u64_at(9));
    let kind = match fixed[17] {
        SAVED => ChangeKind::Saved,
        DELETED => ChangeKind::Deleted,
        other => return Err(bad(format!("a change of unknown kind {other}"))),
    };
    let mut rest = &bytes[FIXED..];
    let mut text = |what: &str| -> Result<&str> {
        let (&len, tail) = rest
            .split_first()
            .ok_or_else(|| bad(format!("a change ends before its {what}")))?;
        let (text, tail) = tail
            .split_at_checked(usize::from(len))
            .ok_or_else(|| bad(format!("a change's {what} is cut short")))?;
        rest = tail;
        std::str::from_utf8(text).map_err(|_| bad(format!("a change's {what} is not UTF-8")))
    };
    let origin = text("origin")?;
    let id = text("id")?;
    if kind == ChangeKind::Deleted && !rest.is_empty() {
        return Err(bad("a delete carries a record"));
    }
    Ok(Parsed {
        revision,
        at,
        kind,
        origin,
        id,
        record: rest,
    })
}

impl Parsed<'_> {
    /// The change, its record decoded (`Corrupt` naming the id if it does
    /// not decode, or holds another id).
    pub(super) fn to_change(&self) -> Result<Change> {
        let at = DateTime::from_timestamp_nanos(self.at);
        let revision = Revision::new(self.revision);
        Ok(match self.kind {
            ChangeKind::Deleted => Change::deleted(revision, self.id, at, self.origin),
            _ => Change::saved(
                revision,
                crate::store::decode_stored(self.id, self.record)?,
                at,
                self.origin,
            ),
        })
    }
}

/// The change in `bytes`.
pub(super) fn decode(bytes: &[u8]) -> Result<Change> {
    parse(bytes)?.to_change()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Environment, Runtime};

    #[test]
    fn a_change_round_trips_and_damage_is_an_error() {
        let env = Environment::new("env-1", "x", Runtime::Shell);
        let record = crate::record::encode(&env).unwrap_or_default();
        let at = DateTime::from_timestamp_nanos(1_765_000_000_123_456_789);
        let mut bytes = save("server-a:7", "env-1", &record);
        stamp(&mut bytes, Revision::new(42), at);
        let change = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            change,
            Change::saved(Revision::new(42), env, at, "server-a:7")
        );
        let mut del = delete("o", "env-1");
        stamp(&mut del, Revision::new(43), at);
        assert_eq!(
            decode(&del).unwrap_or_else(|e| panic!("{e}")),
            Change::deleted(Revision::new(43), "env-1", at, "o")
        );
        // Every prefix and every flipped byte is an error or another
        // change, never a panic.
        for n in 0..bytes.len() {
            let _ = decode(&bytes[..n]);
            let mut flipped = bytes.clone();
            flipped[n] ^= 0xff;
            let _ = decode(&flipped);
        }
        assert!(decode(&bytes[..FIXED]).is_err());
    }
}
