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

/// A [`Repository`] kept in memory: lost when dropped.
///
/// Every method finishes in its first poll without awaiting, so each is
/// trivially atomic under cancellation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    envs: RwLock<BTreeMap<String, Environment>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // No code panics while holding the lock (only clones and map updates run
    // under it), so a poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Environment>> {
        self.envs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Environment>> {
        self.envs.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Repository for MemoryStore {
    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn save(&self, env: &Environment) -> Result<()> {
        env.validate()?;
        let copy = env.clone();
        self.write().insert(copy.id.clone(), copy);
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self.read().values().cloned().collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete(&self, id: &str) -> Result<()> {
        self.write()
            .remove(id)
            .map(drop)
            .ok_or_else(|| Error::not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        Ok(self.read().len())
    }
}
