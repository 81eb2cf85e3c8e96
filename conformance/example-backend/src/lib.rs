// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! An out-of-tree backend, as a third party would write one: a sorted
//! `Vec` behind a mutex. It exists to prove that a crate whose only
//! dev-dependency is `waggle-store-conformance` can run the whole suite.
#![deny(missing_docs)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use waggle_store::domain::validate_id;
use waggle_store::{Environment, Error, Repository, Result, async_trait};

/// Environments in a `Vec` kept sorted by id.
#[derive(Debug, Default)]
pub struct SortedVecStore {
    envs: Mutex<Vec<Environment>>,
}

impl SortedVecStore {
    fn envs(&self) -> MutexGuard<'_, Vec<Environment>> {
        self.envs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound { id: id.to_owned() }
}

#[async_trait]
impl Repository for SortedVecStore {
    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn save(&self, env: &Environment) -> Result<()> {
        validate_id(&env.id)?;
        let mut envs = self.envs();
        match envs.binary_search_by(|e| e.id.as_str().cmp(&env.id)) {
            Ok(i) => envs[i] = env.clone(),
            Err(i) => envs.insert(i, env.clone()),
        }
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        let envs = self.envs();
        envs.binary_search_by(|e| e.id.as_str().cmp(id))
            .map(|i| envs[i].clone())
            .map_err(|_| not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self.envs().clone())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete(&self, id: &str) -> Result<()> {
        let mut envs = self.envs();
        let i = envs
            .binary_search_by(|e| e.id.as_str().cmp(id))
            .map_err(|_| not_found(id))?;
        envs.remove(i);
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        Ok(self.envs().len())
    }
}
