// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! A correct store that is slow the way a store doing I/O is: it yields
//! before every call, and `find_all` takes its snapshot under the lock and
//! then yields while decoding each record. It must pass the whole suite,
//! through the public macro, in bounded time — the suite must never hang
//! (or fail) on a correct backend because it is slow.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use waggle_store::domain::validate_id;
use waggle_store::{Environment, Error, Repository, Result, async_trait, record};

/// Encoded records behind a mutex, shared with reopened handles.
#[derive(Default)]
struct SlowStore {
    records: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl SlowStore {
    fn records(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn decode(bytes: &[u8]) -> Result<Environment> {
    record::decode(bytes).map_err(|e| Error::Corrupt {
        id: String::new(),
        reason: e.to_string(),
    })
}

#[async_trait]
impl Repository for SlowStore {
    /// # Cancel safety
    ///
    /// Cancel safe: the write happens in one step after the only await.
    async fn save(&self, env: &Environment) -> Result<()> {
        tokio::task::yield_now().await;
        validate_id(&env.id)?;
        let bytes = record::encode(env).map_err(|e| Error::Corrupt {
            id: env.id.clone(),
            reason: e.to_string(),
        })?;
        self.records().insert(env.id.clone(), bytes);
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        tokio::task::yield_now().await;
        let bytes = self.records().get(id).cloned();
        decode(&bytes.ok_or_else(|| Error::not_found(id))?)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        tokio::task::yield_now().await;
        let snapshot: Vec<Vec<u8>> = self.records().values().cloned().collect();
        let mut all = Vec::with_capacity(snapshot.len());
        for bytes in snapshot {
            tokio::task::yield_now().await;
            all.push(decode(&bytes)?);
        }
        Ok(all)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: the removal happens in one step after the only await.
    async fn delete(&self, id: &str) -> Result<()> {
        tokio::task::yield_now().await;
        self.records()
            .remove(id)
            .map(drop)
            .ok_or_else(|| Error::not_found(id))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        tokio::task::yield_now().await;
        Ok(self.records().len())
    }
}

type Shared = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

waggle_store_conformance::repository_conformance!(
    slow_correct,
    fresh: || async {
        let store = SlowStore::default();
        let shared = Arc::clone(&store.records);
        (store, shared)
    },
    reopen: |shared: &Shared| async move { SlowStore { records: Arc::clone(shared) } },
    share: |shared: &Shared| async move { SlowStore { records: Arc::clone(shared) } },
);
