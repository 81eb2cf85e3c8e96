// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The history ([`Audited`]): complete and in order, nothing for refused
//! writes, a change exactly when a dropped write landed, kept across
//! reopens, a follower of `changes` that never skips, and retention that
//! keeps each stored id's latest change. Only for backends that give the
//! macro `history: true`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use waggle_store::chrono::{self, Utc};
use waggle_store::{
    Audited, Change, ChangeKind, Environment, Error, Expected, Revision, RevisionedExt, Runtime,
    Status,
};

use crate::generate;
use crate::harness::Harness;

fn value(id: &str, tag: u64) -> Environment {
    let mut e = Environment::new_at(id, format!("v{tag}"), Runtime::Shell, Default::default());
    e.ssh_port = (tag % 65_536) as u16;
    e
}

/// Every change the store keeps, read with `changes` page by page (7
/// at a time, so every read of a few writes crosses pages).
pub(crate) async fn all_changes<S: Audited>(store: &S, case: &str) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let mut cursor = Revision::new(0);
    loop {
        let page = store
            .changes(cursor, 7)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: changes({cursor}) failed: {e}"));
        let Some(last) = page.last() else {
            return out;
        };
        cursor = last.revision;
        out.extend(page);
    }
}

async fn history_of<S: Audited>(store: &S, case: &str, id: &str) -> Vec<Change> {
    store
        .history(id)
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: history({id:?}) failed: {e}"))
}

/// What a change should say: kind, revision, value.
type Expect = (ChangeKind, Revision, Option<Environment>);

fn shape(changes: &[Change]) -> Vec<Expect> {
    changes
        .iter()
        .map(|c| (c.kind, c.revision, c.env.clone()))
        .collect()
}

/// Checks what every change says besides kind, revision and value: the id
/// it is filed under, one origin (the handle's) for all, a time near now.
fn assert_stamped(case: &str, id: Option<&str>, changes: &[Change], since: chrono::DateTime<Utc>) {
    let origin = changes.first().map(|c| c.origin.clone());
    for c in changes {
        if let Some(id) = id {
            assert_eq!(
                c.id, id,
                "case {case:?}: a change of another id in {id:?}'s history"
            );
        }
        assert_eq!(
            c.env.as_ref().map(|e| e.id.as_str()).unwrap_or(&c.id),
            c.id,
            "case {case:?}: a change's value is of another id"
        );
        assert!(
            !c.origin.is_empty() && Some(&c.origin) == origin.as_ref(),
            "case {case:?}: one handle's changes name different origins: {:?} and {:?}",
            origin,
            c.origin
        );
        let slack = chrono::Duration::minutes(10);
        assert!(
            c.at >= since - slack && c.at <= Utc::now() + slack,
            "case {case:?}: change at {} was made between {since} and now (give or take the clocks)",
            c.at
        );
    }
}

/// Every kind of write leaves exactly one change, in order, with the
/// revision the store gave it and the value saved; refused writes,
/// `NotFound` deletes and invalid ids leave none; the history outlives the
/// delete and goes on after a re-create; `changes` returns the same
/// store-wide, in revision order, after any cursor and up to any limit.
pub async fn history_complete<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let since = Utc::now();
    let inst = h.fresh().await;
    let s = inst.store();
    let ok = |case: &'static str| move |e: Error| -> Revision { panic!("case {case:?}: {e}") };
    let read = async |case: &str, id: &str| {
        s.find_revision(id)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_revision: {e}"))
            .revision
    };
    let mut want: Vec<Expect> = Vec::new();
    let mut other: Vec<Expect> = Vec::new();

    // Plain save, conditional saves, update, transition.
    s.save(&value("a", 1))
        .await
        .unwrap_or_else(|e| panic!("case \"plain save\": {e}"));
    let r = read("plain save", "a").await;
    want.push((ChangeKind::Saved, r, Some(value("a", 1))));
    let r = s
        .save_if(&value("a", 2), Expected::Revision(r))
        .await
        .unwrap_or_else(ok("save_if"));
    want.push((ChangeKind::Saved, r, Some(value("a", 2))));
    let v = s
        .update("a", |e| {
            e.ssh_port += 1;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("case \"update\": {e}"));
    want.push((ChangeKind::Saved, v.revision, Some(v.env.clone())));
    let v = s
        .transition("a", Status::Running)
        .await
        .unwrap_or_else(|e| panic!("case \"transition\": {e}"));
    want.push((ChangeKind::Saved, v.revision, Some(v.env.clone())));
    // Another id in between: store-wide order interleaves them.
    let rb = s
        .save_if(&value("b", 1), Expected::Absent)
        .await
        .unwrap_or_else(ok("another id"));
    other.push((ChangeKind::Saved, rb, Some(value("b", 1))));

    // Refused writes leave nothing.
    let current = v.revision;
    let refused: Vec<(&str, waggle_store::Result<()>)> = vec![
        (
            "save_if expecting absent",
            s.save_if(&value("a", 9), Expected::Absent).await.map(drop),
        ),
        (
            "save_if at a stale revision",
            s.save_if(&value("a", 9), Expected::Revision(rb))
                .await
                .map(drop),
        ),
        ("delete_if at a stale revision", s.delete_if("a", rb).await),
        ("delete of an id never saved", s.delete("nobody").await),
        (
            "delete_if of an id never saved",
            s.delete_if("nobody", current).await,
        ),
        (
            "transition the lifecycle refuses",
            s.transition("a", Status::Creating).await.map(drop),
        ),
    ];
    for (case, result) in refused {
        assert!(result.is_err(), "case {case:?}: the write was not refused");
    }
    for (name, id) in generate::invalid_ids() {
        let _ = s.save(&value(&id, 1)).await;
        let _ = s.save_if(&value(&id, 1), Expected::Absent).await;
        let _ = s.delete(&id).await;
        let got = history_of(s, &format!("invalid id: {name}"), &id).await;
        assert!(
            got.is_empty(),
            "case \"invalid id: {name}\": an invalid id has a history: {got:?}"
        );
    }

    // Delete, the history outlives it, a re-create goes on.
    s.delete("a")
        .await
        .unwrap_or_else(|e| panic!("case \"delete\": {e}"));
    let after_delete = history_of(s, "delete", "a").await;
    let deleted_at = after_delete
        .last()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .unwrap_or_else(|| {
            panic!("case \"delete\": the history does not end with the delete: {after_delete:?}")
        })
        .revision;
    want.push((ChangeKind::Deleted, deleted_at, None));
    let r = s
        .save_if(&value("a", 3), Expected::Absent)
        .await
        .unwrap_or_else(ok("re-create"));
    assert!(
        r > deleted_at,
        "case \"re-create\": {r} does not follow the delete's {deleted_at}"
    );
    want.push((ChangeKind::Saved, r, Some(value("a", 3))));
    s.delete_if("a", r)
        .await
        .unwrap_or_else(|e| panic!("case \"delete_if\": {e}"));
    let life = history_of(s, "delete_if", "a").await;
    let last = life.last().map(|c| c.revision).unwrap_or(r);
    want.push((ChangeKind::Deleted, last, None));

    let life = history_of(s, "the whole life", "a").await;
    assert_eq!(
        shape(&life),
        want,
        "case \"the whole life\": history(\"a\") is every acknowledged write, oldest first (kind, revision, value)"
    );
    assert_stamped("the whole life", Some("a"), &life, since);
    assert_eq!(
        shape(&history_of(s, "another id", "b").await),
        other,
        "case \"another id\""
    );

    // Store-wide: the same changes, in revision order, page by page.
    let all = all_changes(s, "changes").await;
    let mut expected: Vec<Expect> = want.iter().chain(&other).cloned().collect();
    expected.sort_by_key(|(_, r, _)| *r);
    assert_eq!(
        shape(&all),
        expected,
        "case \"changes\": store-wide, every change once, in revision order"
    );
    assert_stamped("changes", None, &all, since);
    for (i, cursor) in all.iter().map(|c| c.revision).enumerate() {
        for limit in [1, 2, 100] {
            let page = s
                .changes(cursor, limit)
                .await
                .unwrap_or_else(|e| panic!("case \"changes after {cursor}\": {e}"));
            let rest: Vec<&Change> = all.iter().skip(i + 1).take(limit).collect();
            assert_eq!(
                page.iter().collect::<Vec<_>>(),
                rest,
                "case \"changes after {cursor}, limit {limit}\""
            );
        }
    }
}

/// Each write dropped after 0…8 polls leaves a change exactly when its
/// write landed: the history's last change is the stored value at its
/// revision, or a delete if nothing is stored.
pub async fn history_cancellation<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let s = inst.store();
    let id = "c";
    for round in 0..9usize {
        for kind in ["save", "save_if", "update", "delete", "delete_if"] {
            let case = format!("{kind}, dropped after {round} polls");
            let current = match s.find_revision(id).await {
                Ok(v) => Some(v.revision),
                Err(Error::NotFound { .. }) => None,
                Err(e) => panic!("case {case:?}: {e}"),
            };
            let current = match current {
                Some(r) => r,
                None => s
                    .save_if(&value(id, 0), Expected::Absent)
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: seeding: {e}")),
            };
            let before = history_of(s, &case, id).await.len();
            let tag = 100 + round as u64;
            let op: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match kind {
                "save" => Box::pin(async move {
                    let _ = s.save(&value(id, tag)).await;
                }),
                "save_if" => Box::pin(async move {
                    let _ = s
                        .save_if(&value(id, tag), Expected::Revision(current))
                        .await;
                }),
                "update" => Box::pin(async move {
                    let _ = s
                        .update(id, |e| {
                            e.ssh_port = e.ssh_port.wrapping_add(1);
                            Ok(())
                        })
                        .await;
                }),
                "delete" => Box::pin(async move {
                    let _ = s.delete(id).await;
                }),
                _ => Box::pin(async move {
                    let _ = s.delete_if(id, current).await;
                }),
            };
            poll_then_drop(op, round).await;
            // A write of our own is the sync point, as in the other
            // cancellation checks; then wait for anything landing late.
            s.save(&value("zz-sync", 0))
                .await
                .unwrap_or_else(|e| panic!("case {case:?}: the store did not answer: {e}"));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let life = history_of(s, &case, id).await;
            let stored = match s.find_revision(id).await {
                Ok(v) => Some(v),
                Err(Error::NotFound { .. }) => None,
                Err(e) => panic!("case {case:?}: {e}"),
            };
            let landed = match &stored {
                Some(v) => v.revision != current,
                None => true,
            };
            assert_eq!(
                life.len(),
                before + usize::from(landed),
                "case {case:?}: the write {} but the history gained {} changes",
                if landed { "landed" } else { "did not land" },
                life.len() - before.min(life.len())
            );
            let last = life
                .last()
                .unwrap_or_else(|| panic!("case {case:?}: no history"));
            match &stored {
                Some(v) => assert!(
                    last.kind == ChangeKind::Saved
                        && last.revision == v.revision
                        && last.env.as_ref() == Some(&v.env),
                    "case {case:?}: the latest change {last:?} is not what is stored ({v:?})"
                ),
                None => assert_eq!(
                    last.kind,
                    ChangeKind::Deleted,
                    "case {case:?}: nothing is stored but the latest change is {last:?}"
                ),
            }
        }
    }
}

type Op<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

async fn poll_then_drop(mut op: Op<'_>, polls: usize) {
    for _ in 0..polls {
        let done = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx).is_ready())).await;
        if done {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// The history, every change with its origin and time, is the same after
/// a reopen, and goes on from it.
pub async fn history_with_reopen<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let mut inst = h.fresh().await;
    {
        let s = inst.store();
        for i in 0..5 {
            s.save(&value("r", i))
                .await
                .unwrap_or_else(|e| panic!("case \"before reopen\": {e}"));
        }
        let r = s
            .save_if(&value("q", 1), Expected::Absent)
            .await
            .unwrap_or_else(|e| panic!("case \"before reopen\": {e}"));
        s.delete_if("q", r)
            .await
            .unwrap_or_else(|e| panic!("case \"before reopen\": {e}"));
        s.update("r", |e| {
            e.name = "updated".into();
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("case \"before reopen\": {e}"));
    }
    let before = all_changes(inst.store(), "before reopen").await;
    assert_eq!(
        before.len(),
        8,
        "case \"before reopen\": 8 acknowledged writes"
    );
    inst.reopen().await;
    let after = all_changes(inst.store(), "after reopen").await;
    assert_eq!(
        after, before,
        "case \"after reopen\": the history changed across a reopen"
    );
    inst.store()
        .delete("r")
        .await
        .unwrap_or_else(|e| panic!("case \"after reopen\": {e}"));
    inst.reopen().await;
    let life = history_of(inst.store(), "deleted, then reopened", "r").await;
    assert_eq!(
        life.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [[ChangeKind::Saved; 6].as_slice(), &[ChangeKind::Deleted]].concat(),
        "case \"deleted, then reopened\": the life of \"r\""
    );
    assert!(
        life.last().map(|c| c.revision) > before.last().map(|c| c.revision),
        "case \"deleted, then reopened\": a revision after the reopen does not follow the ones before"
    );
}

const FOLLOW_IDS: [&str; 4] = ["f0", "f1", "f2", "f3"];
const FOLLOW_WRITERS: usize = 8;
const FOLLOW_OPS: usize = 24;

/// A follower calls `changes` again and again with the last revision it
/// saw while writers (plain and conditional saves, updates, deletes) run
/// on shared ids — on one handle, and over two where the backend offers
/// `share`: it never gets a revision at or below its cursor, and when the
/// writers are done it has every change exactly once — none found later
/// below its cursor — one per acknowledged write. A deterministic phase
/// polls a write part way while another lands and the follower reads.
pub async fn changes_follower<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let mut splits = vec![false];
    if h.can_share() {
        splits.push(true);
    }
    for two in splits {
        let inst = h.fresh().await;
        let handles = if two {
            vec![inst.shared(), inst.second_handle().await]
        } else {
            vec![inst.shared()]
        };
        let case = if two { "two handles" } else { "one handle" };
        let mut follower = Follower::default();
        interleaved_follow(&handles, &mut follower, case).await;
        racing_follow(&handles, follower, case).await;
    }
}

/// What a follower has: its cursor, the changes it got, and how many
/// writes were acknowledged.
#[derive(Default)]
struct Follower {
    cursor: u64,
    got: Vec<Change>,
}

impl Follower {
    async fn poll<S: Audited>(&mut self, store: &S, case: &str) -> usize {
        let page = store
            .changes(Revision::new(self.cursor), 5)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: changes({}) failed: {e}", self.cursor));
        for c in &page {
            assert!(
                c.revision.get() > self.cursor,
                "case {case:?}: changes after revision {} returned {}",
                self.cursor,
                c.revision
            );
            self.cursor = c.revision.get();
        }
        let n = page.len();
        self.got.extend(page);
        n
    }

    /// Reads until it is level with the store, then compares what it got
    /// with the whole history read afresh and with the writes acknowledged.
    async fn finish<S: Audited>(mut self, store: &S, case: &str, acknowledged: u64) {
        while self.poll(store, case).await > 0 {}
        let all = all_changes(store, case).await;
        let got: Vec<u64> = self.got.iter().map(|c| c.revision.get()).collect();
        let all_revisions: Vec<u64> = all.iter().map(|c| c.revision.get()).collect();
        if got != all_revisions {
            let missed: Vec<u64> = all_revisions
                .iter()
                .filter(|r| !got.contains(r))
                .copied()
                .collect();
            panic!(
                "case {case:?}: the follower got {} changes, the history holds {}: it missed {missed:?} (found later below its cursor)",
                got.len(),
                all.len()
            );
        }
        assert_eq!(
            all.len() as u64,
            acknowledged,
            "case {case:?}: {acknowledged} writes were acknowledged, the history holds {} changes",
            all.len()
        );
        assert!(
            self.got == all,
            "case {case:?}: a change read while following differs from the same change read later"
        );
    }
}

/// Each acknowledged write adds one to `acked`.
async fn write_once<S: Audited>(
    store: &S,
    case: &str,
    id: &str,
    kind: usize,
    tag: u64,
    acked: &AtomicU64,
) {
    let result = match kind % 5 {
        0 | 1 => store.save(&value(id, tag)).await,
        2 => match store.find_revision(id).await {
            Ok(v) => store
                .save_if(&value(id, tag), Expected::Revision(v.revision))
                .await
                .map(drop),
            Err(Error::NotFound { .. }) => store
                .save_if(&value(id, tag), Expected::Absent)
                .await
                .map(drop),
            Err(e) => Err(e),
        },
        3 => store
            .update(id, |e| {
                e.ssh_port = e.ssh_port.wrapping_add(1);
                Ok(())
            })
            .await
            .map(drop),
        _ => store.delete(id).await,
    };
    match result {
        Ok(()) => {
            acked.fetch_add(1, Ordering::SeqCst);
        }
        Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
        Err(e) => panic!("case {case:?}: a write failed: {e}"),
    }
}

async fn interleaved_follow<S: Audited + 'static>(
    handles: &[Arc<S>],
    follower: &mut Follower,
    case: &str,
) {
    let acked = AtomicU64::new(0);
    let n = handles.len();
    for k in 1..=3usize {
        for first in 0..n {
            let (a, b) = (&*handles[first], &*handles[(first + 1) % n]);
            let case = format!("{case}, a write polled {k} times while another lands");
            let tag = (k * 10 + first) as u64;
            let mut early: Op<'_> = Box::pin(write_once(a, &case, "i0", 0, tag, &acked));
            let mut done = false;
            for _ in 0..k {
                done = std::future::poll_fn(|cx| Poll::Ready(early.as_mut().poll(cx).is_ready()))
                    .await;
                if done {
                    break;
                }
                tokio::task::yield_now().await;
            }
            write_once(b, &case, "i1", 0, tag, &acked).await;
            follower.poll(b, &case).await;
            if !done {
                early.await;
            }
            follower.poll(a, &case).await;
        }
    }
    let total = acked.load(Ordering::SeqCst);
    let mut check = Follower {
        cursor: 0,
        got: Vec::new(),
    };
    std::mem::swap(&mut check, follower);
    check
        .finish(&*handles[0], &format!("{case}, interleaved"), total)
        .await;
}

async fn racing_follow<S: Audited + 'static>(handles: &[Arc<S>], _: Follower, case: &str) {
    // A fresh follower over everything, the interleaved writes included.
    let before = all_changes(&*handles[0], case).await.len() as u64;
    let acked = Arc::new(AtomicU64::new(before));
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = tokio::task::JoinSet::new();
    for t in 0..FOLLOW_WRITERS {
        let store = Arc::clone(&handles[t % handles.len()]);
        let (acked, case) = (Arc::clone(&acked), format!("{case}, racing writer {t}"));
        writers.spawn(async move {
            for i in 0..FOLLOW_OPS {
                let id = FOLLOW_IDS[(t + i) % FOLLOW_IDS.len()];
                write_once(&*store, &case, id, t * 3 + i, (t * 1000 + i) as u64, &acked).await;
                if i % 2 == 1 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    let followers: Vec<_> = (0..handles.len())
        .map(|f| {
            let store = Arc::clone(&handles[f]);
            let writing = Arc::clone(&writing);
            let case = format!("{case}, follower on handle {f}");
            tokio::spawn(async move {
                let mut follower = Follower::default();
                while writing.load(Ordering::SeqCst) {
                    follower.poll(&*store, &case).await;
                    tokio::task::yield_now().await;
                }
                follower
            })
        })
        .collect();
    let mut first_panic = None;
    while let Some(done) = writers.join_next().await {
        if let Err(e) = done {
            first_panic.get_or_insert(e);
        }
    }
    writing.store(false, Ordering::SeqCst);
    let mut done = Vec::new();
    for (f, follower) in followers.into_iter().enumerate() {
        match follower.await {
            Ok(follower) => done.push((f, follower)),
            Err(e) => {
                first_panic.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_panic {
        std::panic::resume_unwind(e.into_panic());
    }
    let total = acked.load(Ordering::SeqCst);
    for (f, follower) in done {
        follower
            .finish(
                &*handles[f],
                &format!("{case}, racing, follower on handle {f}"),
                total,
            )
            .await;
    }
}

/// Pruning everything retention may remove keeps each stored id's latest
/// change (the stored value at its revision) and nothing of deleted ids;
/// a follower behind what was pruned is told (`HistoryPruned`), never
/// given a silent gap; writes go on being recorded after.
pub async fn history_retention<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let s = inst.store();
    for i in 0..4 {
        for id in ["kept", "gone"] {
            s.save(&value(id, i))
                .await
                .unwrap_or_else(|e| panic!("case \"writes\": {e}"));
        }
    }
    s.delete("gone")
        .await
        .unwrap_or_else(|e| panic!("case \"writes\": {e}"));
    let first = all_changes(s, "before pruning")
        .await
        .first()
        .map(|c| c.revision)
        .unwrap_or_else(|| panic!("case \"before pruning\": no history"));
    // Changes are made at some time before now: a window of zero lets
    // every one go that retention may let go.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let removed = s
        .prune(Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("case \"prune\": {e}"));
    let stored = s
        .find_revision("kept")
        .await
        .unwrap_or_else(|e| panic!("case \"prune\": {e}"));
    let kept = history_of(s, "prune", "kept").await;
    assert_eq!(
        shape(&kept),
        vec![(ChangeKind::Saved, stored.revision, Some(stored.env.clone()))],
        "case \"prune\": a stored id keeps exactly its latest change"
    );
    let gone = history_of(s, "prune", "gone").await;
    assert!(
        gone.is_empty(),
        "case \"prune\": a deleted id's old changes survived pruning: {gone:?}"
    );
    assert_eq!(removed, 8, "case \"prune\": 9 changes, 1 kept");
    match s
        .changes(Revision::new(first.get().saturating_sub(1)), 10)
        .await
    {
        Err(Error::HistoryPruned { after, through }) => assert!(
            through >= after,
            "case \"a follower behind\": pruned through {through}, asked after {after}"
        ),
        other => panic!(
            "case \"a follower behind\": changes from before the pruned ones must be HistoryPruned, got {other:?}"
        ),
    }
    let r = s
        .save_if(&value("kept", 9), Expected::Revision(stored.revision))
        .await
        .unwrap_or_else(|e| panic!("case \"after pruning\": {e}"));
    let life = history_of(s, "after pruning", "kept").await;
    assert_eq!(
        life.last().map(|c| c.revision),
        Some(r),
        "case \"after pruning\": a write after pruning is recorded"
    );
    // Pruning again keeps the new latest, and now lets the old one go.
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.prune(Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("case \"prune again\": {e}"));
    assert_eq!(
        shape(&history_of(s, "prune again", "kept").await),
        vec![(ChangeKind::Saved, r, Some(value("kept", 9)))],
        "case \"prune again\""
    );
}
