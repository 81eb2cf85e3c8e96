// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Conditional writes: the [`Revisioned`] contract, so that two servers (or
//! two tasks) that read the same value never overwrite each other's change.
//!
//! Each stored value has a [`Revision`]. A write can be made conditional on
//! it — [`save_if`](Revisioned::save_if), [`delete_if`](Revisioned::delete_if)
//! — and [`update`](RevisionedExt::update) wraps the usual
//! read-change-write in one call that retries on conflict.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Environment, InvalidId, Status};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// The revision of a stored value.
///
/// Revisions of one id strictly increase with every write of it — plain or
/// conditional save, delete, and a save after the delete — and are never
/// issued twice for an id: not after a reopen, not after a crash. They
/// follow real time, on every handle of the store: once a call has shown
/// an id at some revision, no call that begins afterwards shows it at a
/// lower one, and a write that begins afterwards gets a higher one, however
/// many tasks, handles or servers write it at once. Compare them only for
/// equality and order; their values are the store's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(u64);

impl Revision {
    /// A revision with this number (stores make them; tests may too).
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {}", self.0)
    }
}

/// What a conditional save expects to find stored under the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expected {
    /// Nothing: create, never overwrite.
    Absent,
    /// A value at exactly this revision.
    Revision(Revision),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Absent => f.write_str("no value"),
            Expected::Revision(r) => r.fmt(f),
        }
    }
}

/// A stored value with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub env: Environment,
    /// Its revision.
    pub revision: Revision,
}

/// How many times [`update`](RevisionedExt::update) tries before it gives
/// up and returns the last [`Error::Conflict`].
pub const UPDATE_ATTEMPTS: u32 = 1_000;

/// A [`Repository`] whose values carry [`Revision`]s, with writes that land
/// only if the value is still the one the caller read.
///
/// Object safe: a server holds an `Arc<dyn Revisioned>`, which is also a
/// `Repository`. Plain [`save`](Repository::save) and
/// [`delete`](Repository::delete) keep their meaning (unconditional) and
/// advance revisions too.
///
/// Every clause of the [`Repository`] contract holds for these methods:
/// each is atomic (a conditional write compares and writes as one step),
/// values are copies, a dropped call leaves the store as before or fully
/// after, and none blocks the executor.
///
/// An id that [`validate_id`](crate::domain::validate_id) refuses is never
/// stored, and these methods treat it so: `find_revision` returns
/// `NotFound` (as `find_by_id` does), `delete_if` a `Conflict` finding
/// nothing (as for any id not stored), and `save_if` refuses it with
/// `InvalidId` (as `save` does), whatever it expected.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use waggle_store::revisions::{Expected, Revisioned, RevisionedExt};
/// use waggle_store::{Environment, Error, MemoryStore, Runtime, Status};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store: Arc<dyn Revisioned> = Arc::new(MemoryStore::new());
/// let first = store.save_if(&Environment::new("env-1", "a", Runtime::Shell), Expected::Absent).await?;
/// // Somebody else read it too, and wrote first:
/// let read = store.find_revision("env-1").await?;
/// let mut theirs = read.env.clone();
/// theirs.name = "theirs".into();
/// store.save_if(&theirs, Expected::Revision(read.revision)).await?;
/// // Our write, based on what we read, is refused, not lost silently:
/// let mut ours = read.env.clone();
/// ours.name = "ours".into();
/// let err = store.save_if(&ours, Expected::Revision(first)).await.unwrap_err();
/// assert!(matches!(err, Error::Conflict { .. }));
/// // update() reads, changes and saves, retrying on conflict:
/// let now = store.update("env-1", |env| Ok(env.transition_to(Status::Running)?)).await?;
/// assert_eq!((now.env.name.as_str(), now.env.status()), ("theirs", Status::Running));
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Revisioned: Repository {
    /// Returns a copy of the value stored under `id` with its revision, or
    /// `NotFound` (for an id `save` would refuse too).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn find_revision(&self, id: &str) -> Result<Versioned>;

    /// Returns copies of every stored value with its revision, sorted by id
    /// bytewise: what [`find_all`](Repository::find_all) returns, with
    /// revisions, from the same snapshot.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>>;

    /// Saves `env` only if what is stored under `env.id` is what `expected`
    /// says, and returns the new revision. Otherwise nothing is written and
    /// the error is [`Error::Conflict`] with the id, what was expected and
    /// what is stored. `InvalidId` as for [`save`](Repository::save),
    /// whatever `expected` says.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the contract's sense: if the future is dropped, the
    /// value is either not stored at all or stored whole with a new
    /// revision. Once the drop has returned, the dropped write can no
    /// longer land after a later write of the same id by this process.
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision>;

    /// Removes the value stored under `id` only if it is at `expected`.
    /// Otherwise nothing is removed and the error is [`Error::Conflict`]
    /// (with `found: None` when nothing is stored, as for an id `save`
    /// would refuse).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the contract's sense: if the future is dropped, the
    /// value is either still stored whole or gone. Once the drop has
    /// returned, the dropped delete can no longer remove a value a later
    /// write of the same id by this process stored.
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()>;
}

macro_rules! forward_revisioned {
    ($($ptr:ident),*) => {$(
        /// Forwards every call to the shared store, so `Arc<dyn Revisioned>`
        /// and `Box<dyn Revisioned>` are revisioned stores themselves.
        #[async_trait]
        impl<R: Revisioned + ?Sized> Revisioned for $ptr<R> {
            async fn find_revision(&self, id: &str) -> Result<Versioned> {
                (**self).find_revision(id).await
            }
            async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
                (**self).find_all_revisions().await
            }
            async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
                (**self).save_if(env, expected).await
            }
            async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
                (**self).delete_if(id, expected).await
            }
        }
    )*};
}

forward_revisioned!(Arc, Box);

/// Read-change-write in one call, for every [`Revisioned`] store (an
/// `Arc<dyn Revisioned>` included).
pub trait RevisionedExt: Revisioned {
    /// Reads the value stored under `id`, applies `change` to a copy and
    /// saves it on condition that nobody wrote it meanwhile; on a conflict
    /// it reads again and retries, up to [`UPDATE_ATTEMPTS`] times, yielding
    /// to other tasks a growing, random number of times in between. Returns
    /// what it saved, with its revision.
    ///
    /// `NotFound` if nothing is stored; an error `change` returns is
    /// returned as it is, with nothing written. `change` may run once per
    /// attempt, so it should only change the value. It must not change the
    /// id (`InvalidId` if it does).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the contract's sense: each attempt is one conditional
    /// save, so a dropped `update` has applied its change once or not at
    /// all.
    fn update<'a, F>(
        &'a self,
        id: &'a str,
        mut change: F,
    ) -> impl Future<Output = Result<Versioned>> + Send + 'a
    where
        F: FnMut(&mut Environment) -> Result<()> + Send + 'a,
    {
        async move {
            let mut last = None;
            for attempt in 0..UPDATE_ATTEMPTS {
                let read = self.find_revision(id).await?;
                let mut env = read.env;
                change(&mut env)?;
                if env.id != id {
                    return Err(InvalidId {
                        id: env.id,
                        reason: "update's change must not change the id",
                    }
                    .into());
                }
                match self.save_if(&env, Expected::Revision(read.revision)).await {
                    Ok(revision) => return Ok(Versioned { env, revision }),
                    Err(e @ Error::Conflict { .. }) => {
                        last = Some(e);
                        back_off(attempt).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| Error::not_found(id)))
        }
    }

    /// Moves the environment stored under `id` to `to` through
    /// [`update`](Self::update): a transition the domain refuses is
    /// `InvalidTransition`, with nothing written.
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update).
    fn transition<'a>(
        &'a self,
        id: &'a str,
        to: Status,
    ) -> impl Future<Output = Result<Versioned>> + Send + 'a {
        self.update(id, move |env| Ok(env.transition_to(to)?))
    }

    /// Sets `last_used` of the environment stored under `id` to now through
    /// [`update`](Self::update), so a touch never undoes another server's
    /// change.
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update).
    fn touch<'a>(&'a self, id: &'a str) -> impl Future<Output = Result<Versioned>> + Send + 'a {
        self.update(id, |env| {
            env.touch();
            Ok(())
        })
    }
}

impl<R: Revisioned + ?Sized> RevisionedExt for R {}

/// Yields a random number of times, growing with `attempt` (fewer than 8),
/// so that tasks that conflicted do not retry in lockstep. Kept small: on
/// a durable store a conflict already cost the caller a wait for the
/// winner's sync, and a longer back-off left syncs without a contender
/// (64 tasks on one redb id: about 2,400 updates/s with up to 1,024
/// yields, about 4,600/s with up to 8; BENCHMARKS.md).
async fn back_off(attempt: u32) {
    let ceiling = 1u64 << attempt.min(3);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let yields = hasher.finish() % ceiling;
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
}
