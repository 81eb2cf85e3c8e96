// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The history of every environment: the [`Audited`] contract.
//!
//! Every acknowledged write of a store that keeps history is a [`Change`]:
//! its revision, the id, whether it saved or deleted, when (the store's
//! clock), who wrote it (the writing handle's *origin*, a server's name),
//! and the value saved. [`history`](Audited::history) answers "what
//! happened to env-7f3a, when, and which server did it?", also after the
//! environment was destroyed; [`changes`](Audited::changes) lets a
//! follower — another server, an audit shipper — learn every change made
//! anywhere, exactly once and in order.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::revisions::{Revision, Revisioned};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A save — plain or conditional, through `update`, or an import —
    /// stored the change's value.
    Saved,
    /// A delete — plain or conditional — removed the id.
    Deleted,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Saved => "saved",
            ChangeKind::Deleted => "deleted",
        })
    }
}

/// One acknowledged write, as the history keeps it.
///
/// Made with [`Change::saved`] or [`Change::deleted`]; the fields are
/// public to read. A delete carries no value: what it removed is the value
/// of the id's change before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// The write's revision: the value's new revision for a save, the one
    /// the delete consumed for a delete.
    pub revision: Revision,
    /// The environment's id.
    pub id: String,
    /// Saved or deleted.
    pub kind: ChangeKind,
    /// When the store made the write, by its own clock, in UTC.
    pub at: DateTime<Utc>,
    /// Who wrote it: the origin of the handle that made the write (a
    /// server's name, `import` for an import).
    pub origin: String,
    /// The value saved; `None` for a delete.
    #[serde(rename = "environment")]
    pub env: Option<Environment>,
}

impl Change {
    /// A save of `env` at `revision`.
    pub fn saved(revision: Revision, env: Environment, at: DateTime<Utc>, origin: &str) -> Self {
        Self {
            revision,
            id: env.id.clone(),
            kind: ChangeKind::Saved,
            at,
            origin: origin.to_owned(),
            env: Some(env),
        }
    }

    /// A delete of `id` that consumed `revision`.
    pub fn deleted(revision: Revision, id: &str, at: DateTime<Utc>, origin: &str) -> Self {
        Self {
            revision,
            id: id.to_owned(),
            kind: ChangeKind::Deleted,
            at,
            origin: origin.to_owned(),
            env: None,
        }
    }
}

/// How long a store keeps changes (`WAGGLE_STORE_HISTORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Retention {
    /// Record no history: [`Audited`] calls return [`Error::HistoryOff`].
    Off,
    /// Keep every change for ever.
    All,
    /// Keep changes at least this long. Older ones are pruned in the
    /// background — except the latest change of each id that is stored,
    /// which stays as long as the id does.
    For(Duration),
}

/// The default retention: 90 days.
pub const DEFAULT_RETENTION: Retention = Retention::For(Duration::from_secs(90 * 24 * 60 * 60));

impl Default for Retention {
    fn default() -> Self {
        DEFAULT_RETENTION
    }
}

impl Retention {
    /// Whether changes are recorded at all.
    pub fn records(self) -> bool {
        !matches!(self, Retention::Off)
    }

    /// How long changes are kept, if not for ever (`None` for `all` and
    /// `off`).
    pub fn window(self) -> Option<Duration> {
        match self {
            Retention::For(d) => Some(d),
            _ => None,
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Off => f.write_str("off"),
            Retention::All => f.write_str("all"),
            Retention::For(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                    _ if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
                    _ if s % 60 == 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

impl FromStr for Retention {
    type Err = Error;

    /// `off`, `all`, or a positive whole number of days, hours, minutes
    /// or seconds: `90d`, `12h`, `30m`, `45s`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "history retention {s:?}: expected `off`, `all` or a positive number with a unit, e.g. `90d`, `12h`, `30m`, `45s`"
            ))
        };
        match s {
            "off" => return Ok(Retention::Off),
            "all" => return Ok(Retention::All),
            _ => {}
        }
        let split = s.len().checked_sub(1).ok_or_else(bad)?;
        let (n, unit) = (
            s.get(..split).ok_or_else(bad)?,
            s.get(split..).ok_or_else(bad)?,
        );
        let n: u64 = n.parse().map_err(|_| bad())?;
        let per = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        match n.checked_mul(per) {
            Some(secs) if secs > 0 => Ok(Retention::For(Duration::from_secs(secs))),
            _ => Err(bad()),
        }
    }
}

/// What a handle records in the history, and for how long
/// (`WAGGLE_STORE_ORIGIN`, `WAGGLE_STORE_HISTORY`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryOptions {
    /// Who this handle's writes are from ([`default_origin`] unless set).
    pub origin: String,
    /// How long changes are kept ([`DEFAULT_RETENTION`] unless set).
    pub retention: Retention,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self {
            origin: default_origin(),
            retention: Retention::default(),
        }
    }
}

impl HistoryOptions {
    /// With `origin` as the writer of every change.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// With `retention`.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
}

/// The longest origin, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 64;

/// Checks an origin: 1 to 64 bytes, no whitespace or control characters
/// (it is shown in tables and stored beside each change).
pub fn validate_origin(origin: &str) -> Result<()> {
    if origin.is_empty()
        || origin.len() > MAX_ORIGIN_BYTES
        || origin.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Config(format!(
            "origin {origin:?}: 1 to {MAX_ORIGIN_BYTES} bytes without whitespace or control characters"
        )));
    }
    Ok(())
}

/// The origin a handle has unless told otherwise: `<host name>:<process
/// id>`, so that a fleet's history names the server that wrote.
pub fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let pid = std::process::id();
    let mut origin = format!("{host}:{pid}");
    if origin.len() > MAX_ORIGIN_BYTES {
        let keep = MAX_ORIGIN_BYTES - format!(":{pid}").len();
        let mut end = keep;
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        origin = format!("{}:{pid}", &host[..end]);
    }
    origin
}

/// The origin an import writes with: an audit tells restored records from
/// a server's writes.
pub const IMPORT_ORIGIN: &str = "import";

/// A [`Revisioned`] store that keeps the history of every environment.
///
/// Object safe: a server holds an `Arc<dyn Audited>`, which is also an
/// `Arc<dyn Revisioned>` and an `Arc<dyn Repository>`.
///
/// # The contract
///
/// * **Complete.** Every acknowledged write is one [`Change`]: each save
///   (plain or conditional, `update`, an import) and each delete (plain or
///   conditional), at the revision it got.
/// * **Atomic with the write.** A change is kept if and only if its write
///   took effect: a refused conditional write, a `delete` that found
///   nothing and an invalid id leave none; a dropped call leaves one
///   exactly when its write landed; after a crash (`kill -9`, power loss,
///   a database server's crash) every acknowledged write's change is there
///   and no change is there whose write is not.
/// * **Kept after the delete.** An id's history survives its delete and
///   goes on when the id is created again.
/// * **Retention** ([`Retention`]): changes older than the store's
///   retention may be pruned, but never an id's latest change while the id
///   is stored.
/// * **Exactly once, in order.** A follower that calls
///   [`changes`](Self::changes) again and again with the last revision it
///   saw gets every change exactly once, in revision order, and never
///   finds later a change at or below its cursor — whatever the number of
///   writers, tasks or handles (servers). How each store guarantees it:
///   `MemoryStore` and `RedbStore` issue revisions in the order their
///   writes become visible (one lock; one writer's batches); `PgStore`,
///   whose writers take revisions from a sequence and commit in any order,
///   returns a change only once every write that took a lower revision has
///   committed or rolled back — see its docs.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use waggle_store::history::{Audited, ChangeKind};
/// use waggle_store::{Environment, MemoryStore, Repository, Revision, RevisionedExt, Runtime, Status};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store: Arc<dyn Audited> = Arc::new(MemoryStore::with_origin("server-a")?);
/// store.save(&Environment::new("env-7f3a", "analysis", Runtime::Python)).await?;
/// store.transition("env-7f3a", Status::Running).await?;
/// store.delete("env-7f3a").await?;
///
/// let life = store.history("env-7f3a").await?;
/// let kinds: Vec<_> = life.iter().map(|c| c.kind).collect();
/// assert_eq!(kinds, [ChangeKind::Saved, ChangeKind::Saved, ChangeKind::Deleted]);
/// assert!(life.iter().all(|c| c.origin == "server-a"));
///
/// // A follower: every change after its cursor, in order.
/// let all = store.changes(Revision::new(0), 100).await?;
/// assert_eq!(all, life);
/// # Ok::<(), waggle_store::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Audited: Revisioned {
    /// Every change of `id` the store keeps, oldest first: every
    /// acknowledged write, earlier lives (before a delete and a re-create)
    /// included, and still after the last delete. Empty for an id never
    /// written (or whose history retention pruned). Its cost grows with the
    /// id's changes, not with the store's size.
    ///
    /// [`Error::HistoryOff`] if the store records no history.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn history(&self, id: &str) -> Result<Vec<Change>>;

    /// Up to `limit` changes with a revision above `after`, store-wide, in
    /// revision order: call it again with the last revision returned to
    /// follow the store (see the trait docs). `Revision::new(0)` starts at
    /// the beginning.
    ///
    /// [`Error::HistoryPruned`] if changes above `after` were pruned by
    /// retention (a follower that fell that far behind would miss them:
    /// it is told, never given a silent gap); [`Error::HistoryOff`] if the
    /// store records no history.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing, so dropping it loses nothing.
    async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>>;

    /// Removes the changes older than `older_than` — except each id's
    /// latest change while the id is stored — and returns how many it
    /// removed. A store whose retention is a window does this on its own in
    /// the background; an operator (or a test) may do it now. Followers
    /// whose cursor is below a removed change get [`Error::HistoryPruned`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it removes in one transaction, all of it or none.
    async fn prune(&self, older_than: Duration) -> Result<usize>;

    /// Every change after `after`, from the history, then each new one as
    /// it is acknowledged — in revision order, each exactly once, with no
    /// gap where the catch-up ends and the live changes begin. The stream
    /// does not end while the store is open; a watcher that falls behind
    /// catches up from the history at its own pace (it holds at most
    /// [`WATCH_BATCH`] changes), and no writer ever waits for it. If the
    /// history above its cursor was pruned it yields
    /// [`Error::HistoryPruned`] and ends; [`Error::HistoryOff`] likewise.
    /// How each store wakes its watchers: `MemoryStore` and `RedbStore`
    /// (in the writer's process) are told of each write; a read-only
    /// `RedbStore` looks at the journal every 10 ms; `PgStore` listens
    /// (`LISTEN`/`NOTIFY`) and also looks every second, and rides out a
    /// lost connection or a server restart on its own.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream is always safe: it changes nothing, and it
    /// releases whatever it held (a subscription, a connection) at once.
    /// A change it had read but not yielded is read again by a new stream
    /// started from the last revision yielded.
    fn watch(&self, after: Revision) -> ChangeStream<'_>;
}

/// The stream [`Audited::watch`] returns: every change after a cursor, in
/// order, then each new one as it is acknowledged. It borrows the store.
pub type ChangeStream<'a> = Pin<Box<dyn Stream<Item = Result<Change>> + Send + 'a>>;

/// One step of a [`follow`]er: the next changes after a cursor, waiting
/// until there is at least one.
pub type NextChanges<'a> = Pin<Box<dyn Future<Output = Result<Vec<Change>>> + Send + 'a>>;

/// How many changes a watcher reads at a time: its memory stays bounded
/// however far behind it is.
pub const WATCH_BATCH: usize = 256;

/// A [`ChangeStream`] from its steps, for implementing
/// [`watch`](Audited::watch): `next(cursor)` returns the changes after
/// `cursor`, waiting until there is at least one (and retrying what may
/// pass, such as a lost connection); the stream yields them one by one,
/// moves the cursor to the last, and asks again. An error `next` returns
/// is yielded, and the stream ends.
pub fn follow<'a>(
    after: Revision,
    next: impl FnMut(Revision) -> NextChanges<'a> + Send + 'a,
) -> ChangeStream<'a> {
    Box::pin(Follow {
        cursor: after,
        ready: VecDeque::new(),
        pending: None,
        next: Box::new(next),
        ended: false,
    })
}

struct Follow<'a> {
    cursor: Revision,
    ready: VecDeque<Change>,
    pending: Option<NextChanges<'a>>,
    next: Box<dyn FnMut(Revision) -> NextChanges<'a> + Send + 'a>,
    ended: bool,
}

impl Stream for Follow<'_> {
    type Item = Result<Change>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(change) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let cursor = this.cursor;
            let next = &mut this.next;
            let pending = this.pending.get_or_insert_with(|| next(cursor));
            match pending.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(batch)) => {
                    this.pending = None;
                    // Only ever forward: a step never goes back.
                    for change in batch {
                        if change.revision > this.cursor {
                            this.cursor = change.revision;
                            this.ready.push_back(change);
                        }
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.pending = None;
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

macro_rules! forward_audited {
    ($($ptr:ident),*) => {$(
        /// Forwards every call to the shared store, so `Arc<dyn Audited>`
        /// and `Box<dyn Audited>` are audited stores themselves.
        #[async_trait]
        impl<R: Audited + ?Sized> Audited for $ptr<R> {
            async fn history(&self, id: &str) -> Result<Vec<Change>> {
                (**self).history(id).await
            }
            async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
                (**self).changes(after, limit).await
            }
            async fn prune(&self, older_than: Duration) -> Result<usize> {
                (**self).prune(older_than).await
            }
            fn watch(&self, after: Revision) -> ChangeStream<'_> {
                (**self).watch(after)
            }
        }
    )*};
}

forward_audited!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_and_prints() {
        for (text, want) in [
            ("off", Retention::Off),
            ("all", Retention::All),
            ("90d", Retention::For(Duration::from_secs(90 * 86_400))),
            ("12h", Retention::For(Duration::from_secs(12 * 3_600))),
            ("30m", Retention::For(Duration::from_secs(1_800))),
            ("45s", Retention::For(Duration::from_secs(45))),
        ] {
            let got: Retention = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1w",
            "1.5d",
            "90",
            "ALL",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn origins_are_checked_and_the_default_is_valid() {
        validate_origin(&default_origin()).unwrap_or_else(|e| panic!("{e}"));
        assert!(default_origin().ends_with(&format!(":{}", std::process::id())));
        for bad in ["", "a b", "a\n", &"x".repeat(65)] {
            assert!(validate_origin(bad).is_err(), "{bad:?} was accepted");
        }
        validate_origin(IMPORT_ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    }
}
