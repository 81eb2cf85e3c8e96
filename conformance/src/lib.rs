// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The conformance suite for [`waggle_store::Repository`] backends.
//!
//! One macro call in a backend's tests proves it honours the whole
//! contract:
//!
//! ```ignore
//! waggle_store_conformance::repository_conformance!(
//!     my_store,
//!     fresh: || async { (MyStore::new(), ()) },
//! );
//! ```
//!
//! Each check in [`CHECKS`] becomes its own `#[test]`, named
//! `my_store::<check>`, so `cargo test my_store::upsert` runs one. Checks
//! that need a capability the backend did not give (`reopen`, `share`,
//! `revisions`) are
//! generated as ignored tests whose reason says so — visible in the test
//! output, never a silent pass.
//!
//! The number of generated cases for property checks comes from
//! `WAGGLE_CONFORMANCE_CASES` (default 32).
#![deny(missing_docs)]

pub mod blocking;
pub mod cancellation;
pub mod checks;
pub mod churn;
pub mod concurrency;
pub mod generate;
mod harness;
pub mod history;
mod linearizability;
pub mod model;
pub mod revision_order;
pub mod revisions;
pub mod snapshot;
pub mod watch;

pub use harness::{Harness, Instance};

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// The variable that sets how many cases each property check generates.
pub const CASES_VAR: &str = "WAGGLE_CONFORMANCE_CASES";

/// The number of generated cases per property check: `$WAGGLE_CONFORMANCE_CASES`,
/// or 32.
pub fn cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(32)
}

/// A capability a backend may give the macro besides `fresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capability {
    /// `reopen`: open the same storage again after the store is dropped.
    Reopen,
    /// `share`: open a second store on the same storage while the first is
    /// open.
    Share,
    /// `revisions: true`: the store implements
    /// [`Revisioned`](waggle_store::Revisioned).
    Revisions,
    /// `history: true`: the store implements
    /// [`Audited`](waggle_store::Audited) (and so `Revisioned`).
    History,
}

/// One check of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// The test's name.
    pub name: &'static str,
    /// The capabilities it needs beyond `fresh` (none for most); without
    /// any one of them the check is generated as ignored.
    pub needs: &'static [Capability],
    /// The clause of the contract it proves.
    pub guarantees: &'static str,
}

impl Check {
    /// Whether it needs `capability`.
    pub fn needs(&self, capability: Capability) -> bool {
        self.needs.contains(&capability)
    }
}

const fn check(name: &'static str, needs_reopen: bool, guarantees: &'static str) -> Check {
    Check {
        name,
        needs: if needs_reopen {
            &[Capability::Reopen]
        } else {
            &[]
        },
        guarantees,
    }
}

const fn shared_check(name: &'static str, guarantees: &'static str) -> Check {
    Check {
        name,
        needs: &[Capability::Share],
        guarantees,
    }
}

const fn check_needing(
    name: &'static str,
    needs: &'static [Capability],
    guarantees: &'static str,
) -> Check {
    Check {
        name,
        needs,
        guarantees,
    }
}

/// What a revision check needs: `revisions: true`.
const REVISIONS: &[Capability] = &[Capability::Revisions];

/// Every check, in the order the macro generates them.
pub const CHECKS: &[Check] = &[
    check(
        "not_found",
        false,
        "find_by_id and delete of ids not stored (never saved, deleted, invalid) return NotFound carrying the id",
    ),
    check(
        "upsert",
        false,
        "save of a stored id replaces the whole value; count stays the same",
    ),
    check(
        "round_trip",
        false,
        "find_by_id returns exactly what was saved, for edge cases and generated values",
    ),
    check(
        "find_all_order",
        false,
        "find_all returns every value, sorted bytewise by id",
    ),
    check(
        "count",
        false,
        "count is right after every kind of operation",
    ),
    check(
        "delete",
        false,
        "a deleted value is gone for every method, and nothing else is",
    ),
    check(
        "invalid_ids",
        false,
        "save refuses invalid ids with InvalidId and stores nothing",
    ),
    check(
        "valid_ids",
        false,
        "every id the rules allow (each boundary, 128 bytes of each UTF-8 width, punctuation) is kept byte for byte: read back, listed in order, reopened where offered, deleted",
    ),
    check(
        "copy_isolation",
        false,
        "changing a value passed to save or returned by a find changes nothing stored",
    ),
    check(
        "reopen_persists",
        true,
        "what was saved and not deleted is there after a reopen",
    ),
    check(
        "model_sequences",
        false,
        "random sequences of every operation agree with a BTreeMap model after every step",
    ),
    check(
        "model_sequences_with_reopen",
        true,
        "the same, with reopens in the sequences",
    ),
    check(
        "cancel_after_polls",
        false,
        "a future dropped after k polls leaves the store as before or fully after, and usable",
    ),
    check(
        "cancel_by_timeout",
        false,
        "a call cut short by a timeout leaves the store as before or fully after, and usable",
    ),
    check(
        "cancel_settles",
        false,
        "a save or delete dropped after k polls never lands after a later call's write of the same id (looked for 30 ms and 150 ms later)",
    ),
    check(
        "no_executor_stall",
        false,
        "on a current-thread runtime a timeout around any call fires on time",
    ),
    check(
        "no_blocking_poll",
        false,
        "on a current-thread runtime, in the median over 41 calls of each operation, no poll keeps the thread blocked (asleep, in an fsync or blocking I/O, waiting on a lock; computing does not count) for 0.5 ms",
    ),
    check(
        "concurrent_linearizable",
        false,
        "32 tasks on shared ids: each id's history is linearizable (bounded search; never an unbounded run or a silent pass); count matches find_all",
    ),
    check(
        "snapshot_reads",
        false,
        "find_all and count return states that existed while one task inserts, overwrites, or inserts one id and deletes another (every state 8 or 9 values); a read polled part way and then driven together with writes is still a snapshot; read on a second handle too where the backend offers share",
    ),
    check(
        "concurrent_distinct_writers",
        false,
        "64 tasks saving distinct ids: nothing is lost",
    ),
    shared_check(
        "shared_linearizable",
        "concurrent_linearizable with the tasks split over two handles on the same storage: each id's history is linearizable across both, and both read the same contents after",
    ),
    shared_check(
        "shared_distinct_writers",
        "64 tasks saving distinct ids split over two handles on the same storage: nothing is lost, and each handle reads every record",
    ),
    check_needing(
        "revision_conflicts",
        REVISIONS,
        "save_if and delete_if write only when the stored revision (or absence) is the one expected; otherwise Conflict carrying the id, what was expected and what is stored, and nothing written; an id save refuses is not stored: find_revision is NotFound, delete_if a Conflict finding nothing, save_if InvalidId",
    ),
    check_needing(
        "revisions_increase",
        REVISIONS,
        "an id's revisions strictly increase across plain and conditional saves, deletes and re-creates, and across reopens (a delete before one included) where the backend offers reopen; with writers and readers at once (over two handles too where the backend offers share), no read sees an id's revision go down and a write's revision is above every one visible when it began",
    ),
    check_needing(
        "revision_snapshots",
        REVISIONS,
        "find_all_revisions is one snapshot while writers insert, overwrite and delete: every value with the revision it was written at, and a state that existed (read on a second handle too where the backend offers share)",
    ),
    check_needing(
        "revision_cancellation",
        REVISIONS,
        "save_if, delete_if, update and find_revision dropped after 0…8 polls leave value and revision as before or fully after, the store usable, and never land after a later write",
    ),
    check_needing(
        "lost_updates",
        REVISIONS,
        "64 tasks incrementing one field of one id through update at once lose no increment, on one handle and split over two where the backend offers share",
    ),
    check_needing(
        "model_revisions",
        REVISIONS,
        "random sequences of plain and conditional writes, reads and updates agree with a model tracking each id's value and revision",
    ),
    check_needing(
        "model_revisions_with_reopen",
        &[Capability::Revisions, Capability::Reopen],
        "the same, with reopens: every kind of write, conditional ones and update included, is kept with its revision",
    ),
    check_needing(
        "model_revisions_shared",
        &[Capability::Revisions, Capability::Share],
        "the same, each step on one of two handles on the same storage: a condition or a revision that one handle knows and the other does not is caught",
    ),
    check_needing(
        "history_complete",
        HISTORY,
        "every acknowledged write (plain and conditional saves, update, deletes, re-creates) is one change of its id, oldest first, with its revision and value, kept after the delete; refused writes, NotFound deletes and invalid ids leave none; changes returns the same store-wide in revision order after any cursor, up to any limit",
    ),
    check_needing(
        "history_cancellation",
        HISTORY,
        "each write dropped after 0…8 polls leaves a change exactly when it landed: the latest change is what is stored, at its revision",
    ),
    check_needing(
        "history_with_reopen",
        &[Capability::History, Capability::Reopen],
        "the history, origins and times included, is the same after a reopen and goes on from it",
    ),
    check_needing(
        "changes_follower",
        HISTORY,
        "a follower calling changes with its last revision while 8 writers run (over two handles too where the backend offers share) never gets a revision at or below its cursor, and ends with every change exactly once, one per acknowledged write, none found later below its cursor; a write polled part way while another lands is checked deterministically",
    ),
    check_needing(
        "watch_changes",
        HISTORY,
        "a watcher from any cursor yields every later change once, in order; one caught up is woken by the next write (no gap between catch-up and live, within 5 s); dropped part way, a new one from its last change goes on; while 6 writers run (over two handles too where the backend offers share) it yields exactly the history",
    ),
    check_needing(
        "history_retention",
        HISTORY,
        "prune keeps each stored id's latest change and nothing of deleted ids; a follower behind what was pruned gets HistoryPruned, never a silent gap; writes after are recorded",
    ),
];

/// What a history check needs: `history: true`.
const HISTORY: &[Capability] = &[Capability::History];

/// The names of [`CHECKS`], in order.
pub fn check_names() -> Vec<&'static str> {
    CHECKS.iter().map(|c| c.name).collect()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
}

/// Runs the check called `name` against stores from `harness`; panics with
/// the check and case name on failure.
pub fn run_check<S, G>(name: &str, harness: &Harness<S, G>)
where
    S: waggle_store::Repository + 'static,
    G: Send + 'static,
{
    let rt = multi_thread();
    match name {
        "not_found" => rt.block_on(checks::not_found(harness)),
        "upsert" => rt.block_on(checks::upsert(harness)),
        "round_trip" => rt.block_on(checks::round_trip(harness)),
        "find_all_order" => rt.block_on(checks::find_all_order(harness)),
        "count" => rt.block_on(checks::count(harness)),
        "delete" => rt.block_on(checks::delete(harness)),
        "invalid_ids" => rt.block_on(checks::invalid_ids(harness)),
        "valid_ids" => rt.block_on(checks::valid_ids(harness)),
        "copy_isolation" => rt.block_on(checks::copy_isolation(harness)),
        "reopen_persists" => rt.block_on(checks::reopen_persists(harness)),
        "model_sequences" => model::model_sequences(harness, &rt),
        "model_sequences_with_reopen" => model::model_sequences_with_reopen(harness, &rt),
        "cancel_after_polls" => rt.block_on(cancellation::cancel_after_polls(harness)),
        "cancel_by_timeout" => rt.block_on(cancellation::cancel_by_timeout(harness)),
        "cancel_settles" => rt.block_on(cancellation::cancel_settles(harness)),
        "no_executor_stall" => current_thread().block_on(cancellation::no_executor_stall(harness)),
        "no_blocking_poll" => current_thread().block_on(blocking::no_blocking_poll(harness)),
        "concurrent_linearizable" => rt.block_on(concurrency::concurrent_linearizable(harness)),
        "snapshot_reads" => rt.block_on(snapshot::snapshot_reads(harness)),
        "concurrent_distinct_writers" => {
            rt.block_on(concurrency::concurrent_distinct_writers(harness))
        }
        "shared_linearizable" => rt.block_on(concurrency::shared_linearizable(harness)),
        "shared_distinct_writers" => rt.block_on(concurrency::shared_distinct_writers(harness)),
        other => panic!("no conformance check is called {other:?}"),
    }
}

/// Runs the revision check called `name` (one that needs
/// [`Capability::Revisions`]) against stores from `harness`; panics with
/// the check and case name on failure.
pub fn run_revision_check<S, G>(name: &str, harness: &Harness<S, G>)
where
    S: waggle_store::Revisioned + 'static,
    G: Send + 'static,
{
    let rt = multi_thread();
    match name {
        "revision_conflicts" => rt.block_on(revisions::revision_conflicts(harness)),
        "revisions_increase" => rt.block_on(revisions::revisions_increase(harness)),
        "revision_snapshots" => rt.block_on(snapshot::revision_snapshots(harness)),
        "revision_cancellation" => rt.block_on(revisions::revision_cancellation(harness)),
        "lost_updates" => rt.block_on(revisions::lost_updates(harness)),
        "model_revisions" => revisions::model_revisions(harness, &rt, revisions::Variant::Plain),
        "model_revisions_with_reopen" => {
            revisions::model_revisions(harness, &rt, revisions::Variant::Reopen)
        }
        "model_revisions_shared" => {
            revisions::model_revisions(harness, &rt, revisions::Variant::Shared)
        }
        other => panic!("no revision check is called {other:?}"),
    }
}

/// Runs the history check called `name` (one that needs
/// [`Capability::History`]) against stores from `harness`; panics with
/// the check and case name on failure.
pub fn run_history_check<S, G>(name: &str, harness: &Harness<S, G>)
where
    S: waggle_store::Audited + 'static,
    G: Send + 'static,
{
    let rt = multi_thread();
    match name {
        "history_complete" => rt.block_on(history::history_complete(harness)),
        "history_cancellation" => rt.block_on(history::history_cancellation(harness)),
        "history_with_reopen" => rt.block_on(history::history_with_reopen(harness)),
        "changes_follower" => rt.block_on(history::changes_follower(harness)),
        "watch_changes" => rt.block_on(watch::watch_changes(harness)),
        "history_retention" => rt.block_on(history::history_retention(harness)),
        other => panic!("no history check is called {other:?}"),
    }
}

/// Generates one `#[test]` per conformance check, in a module called
/// `$name`, against stores made by `fresh` (reopened by `reopen`, shared by
/// `share`).
///
/// * `fresh: || async { (store, guard) }` — a new, empty store and a value
///   kept alive as long as it (a temp dir; `()` if none).
/// * `reopen: |guard: &G| async move { store }` — optional: opens the
///   storage the guard names again; the suite drops the previous store
///   first. The future may borrow the guard. Also accepted: an async
///   closure (`async |guard: &G| …`) or the path of an
///   `async fn(&G) -> S`.
/// * `share: |guard: &G| async move { store }` — optional, in the same
///   forms: opens a second store on the storage the guard names while the
///   first stays open, as a second server on the same database would. A
///   backend with one writer per storage (redb) does not offer it.
/// * `revisions: true` — optional: the store implements
///   [`Revisioned`](waggle_store::Revisioned); the revision checks run.
/// * `history: true` — optional: the store implements
///   [`Audited`](waggle_store::Audited); the history checks run. It
///   implies `revisions: true` (an `Audited` store is `Revisioned`).
///
/// The optional arguments may come in any order, each at most once.
/// Without one, the checks that need it are generated with
/// `#[ignore = "skipped: …"]` and show as ignored.
///
/// The module does `use super::*`, so names imported where the macro is
/// called can be used in the closures.
#[macro_export]
macro_rules! repository_conformance {
    ($name:ident, fresh: $fresh:expr $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, ($fresh), (), (), (), (), $($($rest)*)?);
    };
}

/// Reads the optional `reopen:`, `share:` and `revisions:` arguments (in
/// any order) of [`repository_conformance!`] into a harness.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_args {
    // A closure `|guard: &G| body`, whose future may borrow the guard,
    // becomes an async closure. `$guard:tt` matches a name and `_` alike.
    (@munch $name:ident, $fresh:tt, (), $share:tt, $rev:tt, $hist:tt,
        reopen: $(move)? |$guard:tt : $ty:ty| $body:expr $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh,
            (async move |$guard: $ty| ($body).await), $share, $rev, $hist, $($($rest)*)?);
    };
    (@munch $name:ident, $fresh:tt, $reopen:tt, (), $rev:tt, $hist:tt,
        share: $(move)? |$guard:tt : $ty:ty| $body:expr $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen,
            (async move |$guard: $ty| ($body).await), $rev, $hist, $($($rest)*)?);
    };
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, $rev:tt, $hist:tt,
        $arg:ident: $(move)? |$guard:tt| $body:expr $(, $($rest:tt)*)?) => {
        ::core::compile_error!(concat!(
            "repository_conformance!: give the guard's type in `", stringify!($arg),
            "`, e.g. `", stringify!($arg), ": |", stringify!($guard),
            ": &MyGuard| async move { … }`"
        ));
    };
    (@munch $name:ident, $fresh:tt, (), $share:tt, $rev:tt, $hist:tt,
        reopen: $reopen:expr $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, ($reopen), $share, $rev, $hist, $($($rest)*)?);
    };
    (@munch $name:ident, $fresh:tt, $reopen:tt, (), $rev:tt, $hist:tt,
        share: $share:expr $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen, ($share), $rev, $hist, $($($rest)*)?);
    };
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, (), $hist:tt,
        revisions: true $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen, $share, (true), $hist, $($($rest)*)?);
    };
    // After `history: true`, `revisions: true` says nothing new.
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, (true), (true),
        revisions: true $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen, $share, (true), (true), $($($rest)*)?);
    };
    // `history: true` implies `revisions: true`.
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, $rev:tt, (),
        history: true $(, $($rest:tt)*)?) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen, $share, (true), (true), $($($rest)*)?);
    };
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, $rev:tt, $hist:tt,) => {
        $crate::__conformance_args!(@munch $name, $fresh, $reopen, $share, $rev, $hist);
    };
    (@munch $name:ident, ($fresh:expr), $reopen:tt, $share:tt, $rev:tt, $hist:tt) => {
        $crate::__conformance_module!(
            $name,
            ($crate::__conformance_args!(@with
                $crate::__conformance_args!(@with $crate::Harness::new($fresh), with_reopen, $reopen),
                with_share, $share)),
            $reopen, $share, $rev, $hist
        );
    };
    (@with $harness:expr, $method:ident, ()) => { $harness };
    (@with $harness:expr, $method:ident, ($arg:expr)) => { $harness.$method($arg) };
    (@munch $name:ident, $fresh:tt, $reopen:tt, $share:tt, $rev:tt, $hist:tt, $($other:tt)+) => {
        ::core::compile_error!(concat!(
            "repository_conformance!: after `fresh`, expected `reopen: …`, `share: …`, `revisions: true` or `history: true` (each optional, each at most once), found `",
            stringify!($($other)+), "`"
        ));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_module {
    ($name:ident, $harness:tt, $reopen:tt, $share:tt, $rev:tt, $hist:tt) => {
        #[allow(unused_imports)]
        mod $name {
            use super::*;

            $crate::__conformance_test!(not_found, $harness, run_check, []);
            $crate::__conformance_test!(upsert, $harness, run_check, []);
            $crate::__conformance_test!(round_trip, $harness, run_check, []);
            $crate::__conformance_test!(find_all_order, $harness, run_check, []);
            $crate::__conformance_test!(count, $harness, run_check, []);
            $crate::__conformance_test!(delete, $harness, run_check, []);
            $crate::__conformance_test!(invalid_ids, $harness, run_check, []);
            $crate::__conformance_test!(valid_ids, $harness, run_check, []);
            $crate::__conformance_test!(copy_isolation, $harness, run_check, []);
            $crate::__conformance_test!(reopen_persists, $harness, run_check, [reopen $reopen]);
            $crate::__conformance_test!(model_sequences, $harness, run_check, []);
            $crate::__conformance_test!(model_sequences_with_reopen, $harness, run_check, [reopen $reopen]);
            $crate::__conformance_test!(cancel_after_polls, $harness, run_check, []);
            $crate::__conformance_test!(cancel_by_timeout, $harness, run_check, []);
            $crate::__conformance_test!(cancel_settles, $harness, run_check, []);
            $crate::__conformance_test!(no_executor_stall, $harness, run_check, []);
            $crate::__conformance_test!(no_blocking_poll, $harness, run_check, []);
            $crate::__conformance_test!(concurrent_linearizable, $harness, run_check, []);
            $crate::__conformance_test!(snapshot_reads, $harness, run_check, []);
            $crate::__conformance_test!(concurrent_distinct_writers, $harness, run_check, []);
            $crate::__conformance_test!(shared_linearizable, $harness, run_check, [share $share]);
            $crate::__conformance_test!(shared_distinct_writers, $harness, run_check, [share $share]);
            $crate::__conformance_test!(revision_conflicts, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(revisions_increase, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(revision_snapshots, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(revision_cancellation, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(lost_updates, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(model_revisions, $harness, run_revision_check, [revisions $rev]);
            $crate::__conformance_test!(model_revisions_with_reopen, $harness, run_revision_check, [revisions $rev, reopen $reopen]);
            $crate::__conformance_test!(model_revisions_shared, $harness, run_revision_check, [revisions $rev, share $share]);
            $crate::__conformance_test!(history_complete, $harness, run_history_check, [history $hist]);
            $crate::__conformance_test!(history_cancellation, $harness, run_history_check, [history $hist]);
            $crate::__conformance_test!(history_with_reopen, $harness, run_history_check, [history $hist, reopen $reopen]);
            $crate::__conformance_test!(changes_follower, $harness, run_history_check, [history $hist]);
            $crate::__conformance_test!(watch_changes, $harness, run_history_check, [history $hist]);
            $crate::__conformance_test!(history_retention, $harness, run_history_check, [history $hist]);

            /// The macro generates a test for every check the crate knows.
            #[test]
            fn suite_is_complete() {
                let generated = [
                    "not_found",
                    "upsert",
                    "round_trip",
                    "find_all_order",
                    "count",
                    "delete",
                    "invalid_ids",
                    "valid_ids",
                    "copy_isolation",
                    "reopen_persists",
                    "model_sequences",
                    "model_sequences_with_reopen",
                    "cancel_after_polls",
                    "cancel_by_timeout",
                    "cancel_settles",
                    "no_executor_stall",
                    "no_blocking_poll",
                    "concurrent_linearizable",
                    "snapshot_reads",
                    "concurrent_distinct_writers",
                    "shared_linearizable",
                    "shared_distinct_writers",
                    "revision_conflicts",
                    "revisions_increase",
                    "revision_snapshots",
                    "revision_cancellation",
                    "lost_updates",
                    "model_revisions",
                    "model_revisions_with_reopen",
                    "model_revisions_shared",
                    "history_complete",
                    "history_cancellation",
                    "history_with_reopen",
                    "changes_follower",
                    "watch_changes",
                    "history_retention",
                ];
                assert_eq!(generated.to_vec(), $crate::check_names());
            }
        }
    };
}

/// One test: `$run` (`run_check` or `run_revision_check`) of the check,
/// or, when a capability it needs was not given (`()`), an ignored test
/// saying which.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($check:ident, ($harness:expr), $run:ident, []) => {
        #[test]
        fn $check() {
            $crate::$run(stringify!($check), &$harness);
        }
    };
    ($check:ident, $harness:tt, $run:ident, [history () $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@skipped $check,
            "skipped: this backend gave repository_conformance! no `history: true` (it does not implement Audited)");
    };
    ($check:ident, $harness:tt, $run:ident, [revisions () $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@skipped $check,
            "skipped: this backend gave repository_conformance! no `revisions: true` (it does not implement Revisioned)");
    };
    ($check:ident, $harness:tt, $run:ident, [reopen () $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@skipped $check,
            "skipped: this backend gave repository_conformance! no `reopen`");
    };
    ($check:ident, $harness:tt, $run:ident, [share () $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@skipped $check,
            "skipped: this backend gave repository_conformance! no `share` (a second handle on the same storage)");
    };
    ($check:ident, $harness:tt, $run:ident, [$capability:ident ($($given:tt)+) $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!($check, $harness, $run, [$($($rest)*)?]);
    };
    (@skipped $check:ident, $reason:literal) => {
        #[test]
        #[ignore = $reason]
        fn $check() {
            panic!("{}: the check cannot run", $reason);
        }
    };
}
