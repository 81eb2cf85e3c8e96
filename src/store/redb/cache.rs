// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The decoded-record cache: `find_by_id` of a cached id is answered from
//! memory, without the blocking pool or a JSON decode.
//!
//! # Coherence
//!
//! Only the writer thread changes stored data in this process. After each
//! commit it applies the batch to the cache and bumps `generation`, all
//! under the write lock, *before* it answers the callers. A reader that
//! misses notes the generation, reads its MVCC snapshot, and inserts what
//! it read only if the generation has not moved — so a value read from an
//! older snapshot can never overwrite, or resurrect, a newer one. Entries
//! the writer puts in are always current.
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
    /// commit has landed since or the cache is full.
    pub(super) fn fill(&self, generation: u64, env: &Environment) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation == generation && inner.entries.len() < self.capacity {
            inner.entries.insert(env.id.clone(), env.clone());
        }
    }

    /// Applies committed operations (writer thread only).
    pub(super) fn apply<'a>(&self, ops: impl Iterator<Item = &'a Op>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        if self.capacity == 0 {
            return;
        }
        for op in ops {
            match op {
                Op::Save { env, .. } => {
                    if inner.entries.len() < self.capacity || inner.entries.contains_key(&env.id) {
                        inner.entries.insert(env.id.clone(), (**env).clone());
                    }
                }
                Op::Delete { id } => {
                    inner.entries.remove(id);
                }
            }
        }
    }
}
