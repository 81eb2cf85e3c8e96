// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `MemoryStore`: the contract over a map in memory. For tests, and as an
//! explicit fallback when nothing needs to survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::Utc;

use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::history::{
    Audited, Change, ChangeStream, HistoryOptions, WATCH_BATCH, follow, validate_origin,
};
use crate::repository::Repository;
use crate::revisions::{Expected, Revision, Revisioned, Versioned};

/// A [`Repository`] kept in memory: lost when dropped.
///
/// Every method finishes in its first poll without awaiting, so each is
/// trivially atomic under cancellation. Revisions come from one counter
/// for the whole store, so none is ever issued twice; each write's
/// [`Change`] is recorded under the same lock, in revision order.
#[derive(Debug)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    history: HistoryOptions,
    /// The last revision issued: watchers wait for it to move.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            history: HistoryOptions::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    envs: BTreeMap<String, Versioned>,
    /// The last revision issued.
    last: u64,
    /// Every change kept, by revision.
    changes: BTreeMap<u64, Change>,
    /// Each id's kept changes, oldest first.
    by_id: HashMap<String, Vec<u64>>,
    /// The highest revision retention removed (0: none).
    pruned_through: u64,
    /// Writes since the last pruning sweep.
    since_prune: usize,
}

/// Writes between two pruning sweeps of the changes retention allows to go.
const PRUNE_EVERY: usize = 1024;

impl Inner {
    fn next(&mut self) -> Revision {
        self.last += 1;
        Revision::new(self.last)
    }

    /// Records `change`, and every [`PRUNE_EVERY`] writes drops the changes
    /// retention lets go (never a stored id's latest).
    fn record(&mut self, history: &HistoryOptions, change: Change) {
        if !history.retention.records() {
            return;
        }
        let revision = change.revision.get();
        self.by_id
            .entry(change.id.clone())
            .or_default()
            .push(revision);
        self.changes.insert(revision, change);
        self.since_prune += 1;
        if self.since_prune >= PRUNE_EVERY {
            self.since_prune = 0;
            if let Some(window) = history.retention.window() {
                self.prune(window);
            }
        }
    }

    /// Drops the changes older than `window`, except each stored id's
    /// latest; returns how many.
    fn prune(&mut self, window: std::time::Duration) -> usize {
        let Ok(window) = chrono::Duration::from_std(window) else {
            return 0;
        };
        let Some(cutoff) = Utc::now().checked_sub_signed(window) else {
            return 0;
        };
        let old: Vec<(u64, String)> = self
            .changes
            .iter()
            .take_while(|(_, c)| c.at < cutoff)
            .filter(|(r, c)| self.envs.get(&c.id).map(|v| v.revision.get()) != Some(**r))
            .map(|(r, c)| (*r, c.id.clone()))
            .collect();
        let removed = old.len();
        for (revision, id) in old {
            self.changes.remove(&revision);
            if let Some(revisions) = self.by_id.get_mut(&id) {
                revisions.retain(|r| *r != revision);
                if revisions.is_empty() {
                    self.by_id.remove(&id);
                }
            }
            self.pruned_through = self.pruned_through.max(revision);
        }
        removed
    }

    fn conflict(&self, id: &str, expected: Expected) -> Error {
        Error::Conflict {
            id: id.to_owned(),
            expected,
            found: self.envs.get(id).map(|v| v.revision),
        }
    }
}

impl MemoryStore {
    /// An empty store, its history kept with the default options (origin
    /// `<host>:<pid>`, 90 days).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose history names `origin` as the writer of
    /// every change; `Config` if the origin is not valid
    /// ([`validate_origin`]).
    pub fn with_origin(origin: &str) -> Result<Self> {
        Self::with_history(HistoryOptions::default().origin(origin))
    }

    /// An empty store with these history options; `Config` if the origin
    /// is not valid.
    pub fn with_history(history: HistoryOptions) -> Result<Self> {
        validate_origin(&history.origin)?;
        Ok(Self {
            history,
            ..Self::default()
        })
    }

    /// Stores `env` at the next revision and records the change.
    fn put(&self, inner: &mut Inner, env: Environment) -> Revision {
        let revision = inner.next();
        let change = Change::saved(revision, env.clone(), Utc::now(), &self.history.origin);
        inner.record(&self.history, change);
        inner
            .envs
            .insert(env.id.clone(), Versioned { env, revision });
        self.changed.send_replace(revision.get());
        revision
    }

    /// Removes `id` (stored), consuming a revision, and records the change.
    fn remove(&self, inner: &mut Inner, id: &str) {
        inner.envs.remove(id);
        let revision = inner.next();
        let change = Change::deleted(revision, id, Utc::now(), &self.history.origin);
        inner.record(&self.history, change);
        self.changed.send_replace(revision.get());
    }

    // No code panics while holding the lock (only clones and map updates run
    // under it), so a poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Repository for MemoryStore {
    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn save(&self, env: &Environment) -> Result<()> {
        env.validate()?;
        let env = env.clone();
        self.put(&mut self.write(), env);
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.read()
            .envs
            .get(id)
            .map(|v| v.env.clone())
            .ok_or_else(|| Error::not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self.read().envs.values().map(|v| v.env.clone()).collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete(&self, id: &str) -> Result<()> {
        let mut inner = self.write();
        if !inner.envs.contains_key(id) {
            return Err(Error::not_found(id));
        }
        self.remove(&mut inner, id);
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        Ok(self.read().envs.len())
    }
}

#[async_trait]
impl Revisioned for MemoryStore {
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_revision(&self, id: &str) -> Result<Versioned> {
        self.read()
            .envs
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
        Ok(self.read().envs.values().cloned().collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
        env.validate()?;
        let env = env.clone();
        let mut inner = self.write();
        let found = inner.envs.get(&env.id).map(|v| v.revision);
        let holds = match expected {
            Expected::Absent => found.is_none(),
            Expected::Revision(r) => found == Some(r),
        };
        if !holds {
            return Err(inner.conflict(&env.id, expected));
        }
        Ok(self.put(&mut inner, env))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        let mut inner = self.write();
        if inner.envs.get(id).map(|v| v.revision) != Some(expected) {
            return Err(inner.conflict(id, Expected::Revision(expected)));
        }
        self.remove(&mut inner, id);
        Ok(())
    }
}

#[async_trait]
impl Audited for MemoryStore {
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn history(&self, id: &str) -> Result<Vec<Change>> {
        if !self.history.retention.records() {
            return Err(Error::HistoryOff);
        }
        let inner = self.read();
        Ok(inner
            .by_id
            .get(id)
            .map(|revisions| {
                revisions
                    .iter()
                    .filter_map(|r| inner.changes.get(r).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
        if !self.history.retention.records() {
            return Err(Error::HistoryOff);
        }
        let inner = self.read();
        if after.get() < inner.pruned_through {
            return Err(Error::HistoryPruned {
                after,
                through: Revision::new(inner.pruned_through),
            });
        }
        let from = after.get().saturating_add(1);
        Ok(inner
            .changes
            .range(from..)
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn prune(&self, older_than: std::time::Duration) -> Result<usize> {
        if !self.history.retention.records() {
            return Err(Error::HistoryOff);
        }
        Ok(self.write().prune(older_than))
    }

    /// Woken by every write, without polling.
    fn watch(&self, after: Revision) -> ChangeStream<'_> {
        follow(after, move |cursor| {
            // Subscribed before reading: a write after the read wakes it.
            let mut moved = self.changed.subscribe();
            Box::pin(async move {
                loop {
                    let batch = self.changes(cursor, WATCH_BATCH).await?;
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                    moved.changed().await.map_err(|_| Error::Closed)?;
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;
    use std::task::Poll;

    #[test]
    fn a_watcher_is_woken_by_a_write() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let store = MemoryStore::new();
            let mut w = store.watch(Revision::new(0));
            let polled = std::future::poll_fn(|cx| Poll::Ready(w.as_mut().poll_next(cx))).await;
            assert!(polled.is_pending());
            store
                .save(&Environment::new("a", "x", Runtime::Shell))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let next = std::future::poll_fn(|cx| w.as_mut().poll_next(cx));
            let got = tokio::time::timeout(std::time::Duration::from_secs(1), next).await;
            assert!(matches!(got, Ok(Some(Ok(_)))), "{got:?}");
        });
    }
}
