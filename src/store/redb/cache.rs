// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The decoded-record cache: `find_by_id` of a cached id is answered from
//! memory, without the blocking pool or a JSON decode.
//!
//! # Coherence
//!
//! Only the writer thread changes stored data in this process, and an entry
//! always equals the latest committed value of its id:
//!
//! 1. Before a commit, the writer removes every id the batch touches and
//!    makes `generation` odd ([`Cache::begin_commit`]). While the commit is
//!    in flight, reads of those ids miss and go to MVCC snapshots, which are
//!    ordered by commit — so no cached value can be older than a value some
//!    reader has already seen from a snapshot.
//! 2. After the commit, and before answering the callers, it puts the new
//!    values in and makes `generation` even again ([`Cache::end_commit`]).
//! 3. A reader that misses notes the generation, reads its snapshot, and
//!    fills the cache only if the generation was even and has not moved:
//!    no commit began between its look and its fill, so what it read is
//!    still the latest.
//!
//! A read-only handle beside another process's writer has no cache: it
//! would not see that process's commits.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use super::writer::Op;
use crate::domain::Environment;

/// A bounded map of id → decoded value, kept coherent with the writer.
#[derive(Debug)]
pub(super) struct Cache {
    inner: RwLock<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Environment>,
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
    pub(super) fn get(&self, id: &str) -> Result<Environment, u64> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(id).cloned().ok_or(inner.generation)
    }

    /// Caches `env`, read from a snapshot begun at `generation`, unless a
    /// commit began since (or was in flight), or the cache is full.
    pub(super) fn fill(&self, generation: u64, env: &Environment) {
        if self.capacity == 0 || generation % 2 == 1 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation == generation && inner.entries.len() < self.capacity {
            inner.entries.insert(env.id.clone(), env.clone());
        }
    }

    /// Before a commit (writer thread only): forgets every id `ops` touch
    /// and marks a commit in flight.
    pub(super) fn begin_commit<'a>(&self, ops: impl Iterator<Item = &'a Op>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        for op in ops {
            let id = match op {
                Op::Save { env, .. } => &env.id,
                Op::Delete { id } => id,
            };
            inner.entries.remove(id);
        }
    }

    /// After a commit (writer thread only): puts in the values `ops` saved
    /// (the ones that were applied) and ends the commit.
    pub(super) fn end_commit(&self, ops: impl Iterator<Item = Op>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        if self.capacity == 0 {
            return;
        }
        for op in ops {
            match op {
                Op::Save { env, .. } => {
                    if inner.entries.len() < self.capacity {
                        inner.entries.insert(env.id.clone(), *env);
                    }
                }
                Op::Delete { id } => {
                    inner.entries.remove(&id);
                }
            }
        }
    }
}
