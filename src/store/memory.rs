// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `MemoryStore`: the contract over a map in memory. For tests, and as an
//! explicit fallback when nothing needs to survive a restart.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::revisions::{Expected, Revision, Revisioned, Versioned};

/// A [`Repository`] kept in memory: lost when dropped.
///
/// Every method finishes in its first poll without awaiting, so each is
/// trivially atomic under cancellation. Revisions come from one counter
/// for the whole store, so none is ever issued twice.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    envs: BTreeMap<String, Versioned>,
    /// The last revision issued.
    last: u64,
}

impl Inner {
    fn next(&mut self) -> Revision {
        self.last += 1;
        Revision::new(self.last)
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
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        let mut inner = self.write();
        let revision = inner.next();
        inner
            .envs
            .insert(env.id.clone(), Versioned { env, revision });
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
        inner.envs.remove(id).ok_or_else(|| Error::not_found(id))?;
        inner.next();
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
        let revision = inner.next();
        inner
            .envs
            .insert(env.id.clone(), Versioned { env, revision });
        Ok(revision)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        let mut inner = self.write();
        if inner.envs.get(id).map(|v| v.revision) != Some(expected) {
            return Err(inner.conflict(id, Expected::Revision(expected)));
        }
        inner.envs.remove(id);
        inner.next();
        Ok(())
    }
}
