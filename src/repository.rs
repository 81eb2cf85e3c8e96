// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The storage contract: the [`Repository`] trait every store implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::Environment;
use crate::error::Result;

/// Durable (or, for [`MemoryStore`](crate::MemoryStore), volatile) storage
/// of [`Environment`]s keyed by id.
///
/// The trait is object safe: services hold an `Arc<dyn Repository>`.
///
/// # The contract
///
/// * **Upsert.** [`save`](Self::save) inserts or replaces the whole value
///   stored under `env.id`.
/// * **Not found.** [`find_by_id`](Self::find_by_id) and
///   [`delete`](Self::delete) of an id that is not stored — including ids
///   `save` would refuse — return [`Error::NotFound`](crate::Error::NotFound)
///   carrying that id.
/// * **Valid ids.** `save` refuses an id that fails
///   [`validate_id`](crate::domain::validate_id) with
///   [`Error::InvalidId`](crate::Error::InvalidId) and stores nothing.
/// * **Copies.** Values are copies: nothing a caller does to a value it
///   passed in or got back changes what is stored. Only `save` does.
/// * **Exact.** What `find_by_id` returns equals what was saved, field by
///   field, to the nanosecond.
/// * **Order.** [`find_all`](Self::find_all) returns every value sorted by id
///   (bytewise); `count` equals its length.
/// * **Concurrency.** Every method may be called from many tasks at once.
///   Each call is atomic: others see it wholly or not at all.
/// * **Cancellation.** A future dropped or timed out before it completes
///   leaves the store as it was before the call or as it would be fully
///   after it, never in between, and never wedged: later calls work.
///   Once the dropped future has given control back, its write is settled
///   in order: if it still lands, it lands before any call made afterwards
///   by the same process, so it never overwrites a later write of the same
///   id.
/// * **No blocking.** Methods do not block the async worker thread they are
///   polled on; a timeout around any call fires on time.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use waggle_store::{Environment, MemoryStore, Repository, Runtime};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let repo: Arc<dyn Repository> = Arc::new(MemoryStore::new());
/// repo.save(&Environment::new("env-1", "scratch", Runtime::Python)).await?;
/// assert_eq!(repo.find_by_id("env-1").await?.name, "scratch");
/// assert!(repo.find_by_id("env-2").await.unwrap_err().is_not_found());
/// # Ok::<(), waggle_store::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Repository: Send + Sync {
    /// Inserts `env`, or replaces the value stored under `env.id`.
    ///
    /// Returns once the change is visible to every later call (and, for a
    /// persistent store, durable). Fails with `InvalidId` for an id that
    /// [`validate_id`](crate::domain::validate_id) refuses.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the contract's sense: if the future is dropped, the
    /// value is either not stored at all or stored whole. Which one is not
    /// reported; save again to be sure. Once the drop has returned, the
    /// dropped save can no longer overwrite a later `save` or `delete` of
    /// the same id made by this process.
    async fn save(&self, env: &Environment) -> Result<()>;

    /// Returns a copy of the value stored under `id`, or `NotFound`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn find_by_id(&self, id: &str) -> Result<Environment>;

    /// Returns copies of every stored value, sorted by id bytewise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn find_all(&self) -> Result<Vec<Environment>>;

    /// Removes the value stored under `id`, or returns `NotFound`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the contract's sense: if the future is dropped, the
    /// value is either still stored whole or gone. Once the drop has
    /// returned, the dropped delete can no longer remove a value a later
    /// `save` of the same id by this process stored.
    async fn delete(&self, id: &str) -> Result<()>;

    /// Returns how many values are stored.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn count(&self) -> Result<usize>;
}

macro_rules! forward_repository {
    ($($ptr:ident),*) => {$(
        /// Forwards every call to the shared store, so `Arc<dyn Repository>`
        /// and `Box<dyn Repository>` are repositories themselves.
        #[async_trait]
        impl<R: Repository + ?Sized> Repository for $ptr<R> {
            async fn save(&self, env: &Environment) -> Result<()> {
                (**self).save(env).await
            }
            async fn find_by_id(&self, id: &str) -> Result<Environment> {
                (**self).find_by_id(id).await
            }
            async fn find_all(&self) -> Result<Vec<Environment>> {
                (**self).find_all().await
            }
            async fn delete(&self, id: &str) -> Result<()> {
                (**self).delete(id).await
            }
            async fn count(&self) -> Result<usize> {
                (**self).count().await
            }
        }
    )*};
}

forward_repository!(Arc, Box);
