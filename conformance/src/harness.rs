// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The harness: how the suite gets fresh stores, reopens them, and opens a
//! second handle on the same storage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use waggle_store::Repository;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Fresh<S, G> = Box<dyn Fn() -> BoxFuture<(S, G)> + Send + Sync>;

/// A function opening a store from a guard (reopen or share), with its
/// types erased; its future may borrow the guard.
trait OpenFromGuard<S, G>: Send + Sync {
    fn open<'a>(&'a self, guard: &'a G) -> Pin<Box<dyn Future<Output = S> + 'a>>;
}

impl<S, G, F> OpenFromGuard<S, G> for F
where
    F: AsyncFn(&G) -> S + Send + Sync,
{
    fn open<'a>(&'a self, guard: &'a G) -> Pin<Box<dyn Future<Output = S> + 'a>> {
        Box::pin(self(guard))
    }
}

/// How the suite makes stores of the backend under test.
///
/// `fresh` returns a new, empty store and a guard the suite keeps alive as
/// long as the store (a temporary directory, a database schema, … — use
/// `()` when there is none). `reopen`, when given, opens the same storage
/// again from the guard after the suite has dropped the previous store, as
/// a restarted server would. `share`, when given, opens a second store on
/// the same storage while the first is still open, as a second server
/// would.
pub struct Harness<S, G> {
    fresh: Fresh<S, G>,
    reopen: Option<Box<dyn OpenFromGuard<S, G>>>,
    share: Option<Box<dyn OpenFromGuard<S, G>>>,
}

impl<S: Repository + 'static, G: Send + 'static> Harness<S, G> {
    /// A harness with a factory of fresh stores and no reopen.
    pub fn new<F, Fut>(fresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (S, G)> + Send + 'static,
    {
        Self {
            fresh: Box::new(move || Box::pin(fresh())),
            reopen: None,
            share: None,
        }
    }

    /// Adds the ability to reopen the storage a guard names: an async
    /// closure (or `async fn`) taking the guard by reference, whose future
    /// may borrow it — `async |dir: &TempDir| MyStore::open(dir.path())`.
    pub fn with_reopen<R>(mut self, reopen: R) -> Self
    where
        R: AsyncFn(&G) -> S + Send + Sync + 'static,
    {
        self.reopen = Some(Box::new(reopen));
        self
    }

    /// Adds the ability to open a second handle on the storage a guard
    /// names while the first is open — a second server on the same
    /// database: an async closure (or `async fn`) taking the guard by
    /// reference, whose future may borrow it.
    pub fn with_share<R>(mut self, share: R) -> Self
    where
        R: AsyncFn(&G) -> S + Send + Sync + 'static,
    {
        self.share = Some(Box::new(share));
        self
    }

    /// Whether the backend can be reopened.
    pub fn can_reopen(&self) -> bool {
        self.reopen.is_some()
    }

    /// Whether the backend can open a second handle on the same storage.
    pub fn can_share(&self) -> bool {
        self.share.is_some()
    }

    /// A fresh, empty store.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the backend's `fresh` future: dropping it drops
    /// whatever that future had built.
    pub async fn fresh(&self) -> Instance<'_, S, G> {
        let (store, guard) = (self.fresh)().await;
        Instance {
            store: Some(Arc::new(store)),
            guard,
            harness: self,
        }
    }
}

/// One store under test, with its guard.
pub struct Instance<'h, S, G> {
    store: Option<Arc<S>>,
    guard: G,
    harness: &'h Harness<S, G>,
}

impl<S: Repository + 'static, G: Send + 'static> Instance<'_, S, G> {
    /// The store.
    pub fn store(&self) -> &S {
        // `store` is only `None` inside `reopen`, between the drop and the
        // reopen, where nothing can observe it.
        self.store
            .as_deref()
            .unwrap_or_else(|| unreachable!("store taken"))
    }

    /// The store, shared with spawned tasks. Drop every clone before
    /// [`reopen`](Self::reopen).
    pub fn shared(&self) -> Arc<S> {
        Arc::clone(
            self.store
                .as_ref()
                .unwrap_or_else(|| unreachable!("store taken")),
        )
    }

    /// Drops the store and opens the same storage again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after its first poll, the old store is
    /// already gone and the instance has none until `reopen` is called
    /// again (`store()` then panics).
    ///
    /// # Panics
    ///
    /// If the harness has no reopen; checks that need it are skipped instead.
    pub async fn reopen(&mut self) {
        let reopen =
            self.harness.reopen.as_ref().unwrap_or_else(|| {
                panic!("this backend gave no reopen to repository_conformance!")
            });
        drop(self.store.take());
        self.store = Some(Arc::new(reopen.open(&self.guard).await));
    }

    /// A second store on the same storage as this one, which stays open.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the backend's `share` future.
    ///
    /// # Panics
    ///
    /// If the harness has no share; checks that need it are skipped instead.
    pub async fn second_handle(&self) -> Arc<S> {
        let share = self
            .harness
            .share
            .as_ref()
            .unwrap_or_else(|| panic!("this backend gave no share to repository_conformance!"));
        Arc::new(share.open(&self.guard).await)
    }
}
