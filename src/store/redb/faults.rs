// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fault injection into the journal: a batch whose append fails (growth,
//! a torn write, a failed sync) is refused whole, later writes are
//! acknowledged and kept, and neither the live store, a crash image taken
//! right after, nor a reopen brings a refused write back or loses an
//! acknowledged one.

use std::collections::BTreeSet;
use std::path::Path;

use tokio::sync::oneshot;

use super::journal::{Fault, paths_of};
use super::writer::{Op, Request};
use super::{RedbOptions, RedbStore};
use crate::domain::{Environment, Runtime};
use crate::error::Error;
use crate::record;
use crate::repository::Repository;

pub(super) fn env(id: &str) -> Environment {
    Environment::new(id, format!("name of {id}"), Runtime::Shell)
}

pub(super) fn save(id: &str) -> Op {
    let e = env(id);
    let record = record::encode(&e).expect("encode");
    Op::Save {
        env: Box::new(e),
        payload: super::changes::save("test", id, &record),
        expected: None,
    }
}

/// The ids `store` holds, checked against its count.
pub(super) fn ids(rt: &tokio::runtime::Runtime, store: &RedbStore) -> BTreeSet<String> {
    let all = rt.block_on(store.find_all()).expect("find_all");
    let count = rt.block_on(store.count()).expect("count");
    assert_eq!(count, all.len(), "count disagrees with find_all");
    all.into_iter().map(|e| e.id).collect()
}

/// One batch of four frames (three saves, a delete of `a0`), led as one
/// batch after `fault` is injected; every answer must be a storage error.
/// Returns how many were refused.
fn refused_batch(store: &RedbStore, fault: Fault, fence_fails: bool, case: &str) -> usize {
    let lane = store.lane.clone().expect("a writable store");
    lane.inject(fault, fence_fails);
    let (requests, answers): (Vec<_>, Vec<_>) = [
        save("b0"),
        save("b1"),
        Op::Delete {
            id: "a0".into(),
            expected: None,
        },
        save("b2"),
    ]
    .into_iter()
    .map(|op| {
        let (reply, answer) = oneshot::channel();
        (Request { op, reply }, answer)
    })
    .unzip();
    lane.submit_batch(requests);
    answers
        .into_iter()
        .map(|answer| {
            let result = answer.blocking_recv().expect("an answer");
            assert!(
                matches!(result, Err(Error::Storage { .. })),
                "{case}: {result:?}"
            );
        })
        .count()
}

/// Copies the store file and its journal as a `kill -9` now would leave
/// them, and opens the copy.
fn crash_image(store: &Path, into: &Path) -> RedbStore {
    let copy = into.join("image.redb");
    std::fs::copy(store, &copy).expect("copy the store file");
    for (from, to) in paths_of(store).iter().zip(paths_of(&copy)) {
        if from.exists() {
            std::fs::copy(from, to).expect("copy a journal file");
        }
    }
    RedbStore::open(&copy).expect("open the crash image")
}

/// Checks that `store` (at `path`) holds exactly `expected`: live, in a
/// crash image taken now, and after a clean close and a reopen. Returns
/// the reopened store.
fn holds_everywhere(
    rt: &tokio::runtime::Runtime,
    store: RedbStore,
    path: &Path,
    expected: &BTreeSet<String>,
    case: &str,
) -> RedbStore {
    assert_eq!(&ids(rt, &store), expected, "{case}: live store");
    let image_dir = tempfile::tempdir().expect("tempdir");
    let image = crash_image(path, image_dir.path());
    assert_eq!(&ids(rt, &image), expected, "{case}: crash image");
    image.close().expect("close the image");
    store.close().expect("close");
    let reopened = RedbStore::open(path).expect("reopen");
    assert_eq!(&ids(rt, &reopened), expected, "{case}: reopened");
    reopened
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

#[test]
fn failed_appends_are_fenced_off() {
    let rt = runtime();
    let (mut refused, mut acknowledged, mut images) = (0, 0, 0);
    let faults = [Fault::Grow, Fault::TornWrite, Fault::Sync];
    // The failing batch in the middle of the first journal file, and first
    // in a file after one and after two checkpoints (each switches files).
    // A fence that reused its numbers would leave both files starting with
    // the same one.
    let placements = [("mid-file", 0), ("first in wal1", 1), ("first in wal0", 2)];
    for (fault, (placement, checkpoints)) in
        faults.into_iter().flat_map(|f| placements.map(|p| (f, p)))
    {
        let case = format!("{fault:?}, {placement}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let store = RedbStore::open_with(&path, RedbOptions::default()).expect("open");
        let lane = store.lane.clone().expect("a writable store");
        let mut expected = BTreeSet::new();
        for id in ["a0", "a1", "a2", "a3"] {
            rt.block_on(store.save(&env(id))).expect("save");
            expected.insert(id.to_owned());
        }
        for _ in 0..checkpoints {
            lane.checkpoint_now();
        }

        refused += refused_batch(&store, fault, false, &case);

        // Three frames of the same sizes as its first three: if they took
        // its numbers and its place, a replay would follow them with its
        // fourth (b2) and bring it back; if they were mistaken for it, a
        // replay would lose them.
        for id in ["c0", "c1"] {
            rt.block_on(store.save(&env(id)))
                .expect("save after the fault");
            expected.insert(id.to_owned());
        }
        rt.block_on(store.delete("a1"))
            .expect("delete after the fault");
        expected.remove("a1");
        acknowledged += 3;
        let reopened = holds_everywhere(&rt, store, &path, &expected, &case);
        images += 1;
        reopened.close().expect("close");
    }
    println!(
        "faults injected: 9, writes refused: {refused}, acknowledged after a fault: \
         {acknowledged}, crash images checked: {images}, refused writes kept: 0, records lost: 0"
    );
}

/// When the checkpoint that fences a failed batch off fails too, writes
/// are refused until the store is reopened, and the batch's frames are
/// erased so that a crash before then does not replay them.
#[test]
fn a_failed_fence_refuses_writes_until_reopened() {
    let rt = runtime();
    let (mut refused, mut images) = (0, 0);
    for fault in [Fault::TornWrite, Fault::Sync] {
        let case = format!("{fault:?}, fence fails");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let store = RedbStore::open(&path).expect("open");
        let expected: BTreeSet<String> = ["a0", "a1", "a2", "a3"].map(String::from).into();
        for id in &expected {
            rt.block_on(store.save(&env(id))).expect("save");
        }
        refused += refused_batch(&store, fault, true, &case);
        let later = rt.block_on(store.save(&env("c0")));
        assert!(
            matches!(&later, Err(e) if e.to_string().contains("reopen the store")),
            "{case}: {later:?}"
        );
        refused += 1;
        let reopened = holds_everywhere(&rt, store, &path, &expected, &case);
        images += 1;
        rt.block_on(reopened.save(&env("c0")))
            .expect("writes again after a reopen");
        reopened.close().expect("close");
    }
    println!(
        "fences failed: 2, writes refused: {refused}, crash images checked: {images}, \
         refused writes kept: 0, records lost: 0"
    );
}

/// A panic inside the storage engine while closing (redb can panic on a
/// damaged page in the last checkpoint) never reaches the caller of
/// `close` or of `drop`: `close` returns a typed error, `drop` logs it, and
/// the journal kept behind is replayed by the next open, losing nothing.
#[test]
fn a_panic_while_closing_stays_inside() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("waggle.db");
    for how in ["close", "drop"] {
        let store = RedbStore::open(&path).expect("open");
        let id = format!("kept-through-{how}");
        rt.block_on(store.save(&env(&id))).expect("save");
        store
            .lane
            .clone()
            .expect("a writable store")
            .panic_on_close();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match how {
            "close" => store.close(),
            _ => {
                drop(store);
                Ok(())
            }
        }));
        match (how, outcome) {
            (_, Err(_)) => panic!("{how}: the panic reached the caller"),
            ("close", Ok(Err(e))) => {
                assert!(e.to_string().contains("failed while closing"), "close: {e}")
            }
            ("close", Ok(Ok(()))) => panic!("close reported success after a panic"),
            _ => {}
        }
        let reopened = RedbStore::open(&path).expect("reopen");
        assert!(
            ids(&rt, &reopened).contains(&id),
            "{how}: the save before the panic was lost"
        );
        reopened.close().expect("close");
    }
}

/// A panic inside the storage engine while writing (redb can panic on a
/// damaged page) reaches no caller: the batch gets a typed error, every
/// later write is refused with one (the engine's state may be half
/// changed), reads still answer, and the store closes without a panic.
#[test]
fn a_panic_while_writing_stops_writes_not_the_caller() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("waggle.db");
    let store = RedbStore::open(&path).expect("open");
    rt.block_on(store.save(&env("before"))).expect("save");
    store
        .lane
        .clone()
        .expect("a writable store")
        .panic_on_next_write();
    for id in ["hit", "after"] {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(store.save(&env(id)))
        }));
        match outcome {
            Err(_) => panic!("{id}: the panic reached the caller"),
            Ok(Ok(())) => panic!("{id}: a write was accepted after a panic"),
            Ok(Err(e)) => assert!(e.to_string().contains("storage engine failed"), "{id}: {e}"),
        }
    }
    assert!(rt.block_on(store.find_by_id("before")).is_ok());
    assert_eq!(ids(&rt, &store).len(), 1);
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.close()));
    assert!(closed.is_ok(), "close panicked");
    let reopened = RedbStore::open(&path).expect("reopen");
    assert_eq!(
        ids(&rt, &reopened).into_iter().collect::<Vec<_>>(),
        ["before"]
    );
    rt.block_on(reopened.save(&env("after-reopen")))
        .expect("writes again after a reopen");
    reopened.close().expect("close");
}
