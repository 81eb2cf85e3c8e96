// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The decoded-record cache: `find_by_id` of a cached id is answered from
//! memory, without the blocking pool or a JSON decode.
//!
//! # Coherence
//!
//! The cache holds values of the redb file only; [pending](super::pending)
//! writes shadow it, and readers look there first. Only checkpoints change
//! the redb file, one at a time, and an entry always equals the value its
//! id has in the latest checkpoint:
//!
//! 1. Before a checkpoint, the checkpointer removes every id it touches and
//!    makes `generation` odd ([`Cache::begin_commit`]). While the commit is
//!    in flight, reads of those ids miss and go to MVCC snapshots, which are
//!    ordered by commit — so no cached value can be older than a value some
//!    reader has already seen from a snapshot.
//! 2. After the commit, and before the pending writes are dropped, it puts
//!    the new values in and makes `generation` even again
//!    ([`Cache::end_commit`]).
//! 3. A reader that misses notes the generation, reads its snapshot, and
//!    fills the cache only if the generation was even and has not moved:
//!    no commit began between its look and its fill, so what it read is
//!    still the latest.
//!
//! A read-only handle beside another process's writer has no cache: it
//! would not see that process's commits.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use super::pending::Pending;
use crate::revisions::{Revision, Versioned};

/// A bounded map of id → decoded value, kept coherent with checkpoints.
#[derive(Debug)]
pub(super) struct Cache {
    inner: RwLock<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Versioned>,
    generation: u64,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: RwLock::default(),
            capacity,
        }
    }

    /// The cached value of `id`, or the generation to hand to
    /// [`fill`](Self::fill) after reading it from the file.
    pub(super) fn get(&self, id: &str) -> Result<Versioned, u64> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(id).cloned().ok_or(inner.generation)
    }

    /// Caches `env`, read from a snapshot begun at `generation`, unless a
    /// commit began since (or was in flight), or the cache is full.
    pub(super) fn fill(&self, generation: u64, env: &Versioned) {
        if self.capacity == 0 || generation % 2 == 1 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation == generation && inner.entries.len() < self.capacity {
            inner.entries.insert(env.env.id.clone(), env.clone());
        }
    }

    /// Moves at the start and at the end of every checkpoint (odd while
    /// one is in flight): a snapshot of the redb file taken at a later
    /// generation has seen every checkpoint whose writes were dropped from
    /// the pending state before this was read.
    pub(super) fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// The revision of `id`'s cached value, if it has one (it is then in
    /// the redb file at that revision).
    pub(super) fn revision(&self, id: &str) -> Option<Revision> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(id).map(|v| v.revision)
    }

    /// Before a checkpoint (one checkpoint at a time): forgets `ids` and marks a
    /// commit in flight.
    pub(super) fn begin_commit<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        for id in ids {
            inner.entries.remove(id);
        }
    }

    /// After a checkpoint (one checkpoint at a time): puts in the values it
    /// committed, if it did, and ends the commit.
    pub(super) fn end_commit(&self, committed: Option<&Pending>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        let Some(committed) = committed else {
            return;
        };
        for (id, value) in committed {
            match value {
                Some(env) if inner.entries.len() < self.capacity => {
                    inner.entries.insert(id.clone(), env.clone());
                }
                _ => {
                    inner.entries.remove(id);
                }
            }
        }
    }
}
