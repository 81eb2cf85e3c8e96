// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Revisions in real-time order, under concurrency: part of
//! `revisions_increase`.
//!
//! A revision shown by a call that has returned is a floor for every call
//! that begins afterwards, on any handle: a read must not show the id at a
//! lower revision, and a write must return a higher one. Every call below
//! takes the floor of its id before it begins and raises it once it has
//! returned, so a store whose revisions go backwards between two calls —
//! a number taken before waiting for the row, a counter kept per handle —
//! is caught by whichever call comes second.
//!
//! Two phases, on one handle and again over two where the backend offers
//! `share`:
//!
//! * **Interleaved, deterministically.** A write is polled `k` times, a
//!   second write of the same id runs to completion and is read, then the
//!   first finishes and the id is read again: the second read follows the
//!   first, so its revision may not be lower. No luck involved.
//! * **Racing.** Writers mix plain and conditional saves, `update`, plain
//!   and conditional deletes and re-creates on two shared ids while readers
//!   read them (`find_revision`, `find_all_revisions`) until the writers
//!   are done.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use waggle_store::{Environment, Error, Expected, Revision, Revisioned, RevisionedExt, Runtime};

const IDS: [&str; 2] = ["order-0", "order-1"];
const WRITERS: usize = 8;
const READERS: usize = 3;
const OPS_PER_WRITER: usize = 64;

fn value(id: &str, tag: u64) -> Environment {
    let mut e = Environment::new_at(id, format!("v{tag}"), Runtime::Node, Default::default());
    e.ssh_port = (tag % 65_536) as u16;
    e
}

/// For each id, the highest revision a returned call showed, plus one
/// (0: none yet).
#[derive(Default)]
struct Floors([AtomicU64; IDS.len()]);

/// An id's floor when a call began.
#[derive(Clone, Copy)]
struct Began {
    id: usize,
    floor: u64,
}

impl Floors {
    fn begin(&self, id: usize) -> Began {
        Began {
            id,
            floor: self.0[id].load(Ordering::SeqCst),
        }
    }

    /// A read that began at `began` showed `r`.
    fn read(&self, case: &str, began: Began, r: Revision) {
        let shown = r.get().saturating_add(1);
        assert!(
            shown >= began.floor,
            "case {case:?}: {:?} read at {r}, but a call that had returned before this read began showed {}: an id's revision went down",
            IDS[began.id],
            Revision::new(began.floor - 1)
        );
        self.0[began.id].fetch_max(shown, Ordering::SeqCst);
    }

    /// A write that began at `began` returned `r`.
    fn wrote(&self, case: &str, began: Began, r: Revision) {
        let shown = r.get().saturating_add(1);
        assert!(
            shown > began.floor,
            "case {case:?}: a write of {:?} returned {r}, but a call that had returned before the write began showed {}: a write's revision must be above every one visible when it began",
            IDS[began.id],
            Revision::new(began.floor.saturating_sub(1))
        );
        self.0[began.id].fetch_max(shown, Ordering::SeqCst);
    }

    /// Reads `id` on `store`, raising its floor.
    async fn find<S: Revisioned>(&self, case: &str, store: &S, id: usize) -> Option<Revision> {
        let began = self.begin(id);
        match store.find_revision(IDS[id]).await {
            Ok(v) => {
                self.read(case, began, v.revision);
                Some(v.revision)
            }
            Err(Error::NotFound { .. }) => None,
            Err(e) => panic!("case {case:?}: find_revision({:?}) failed: {e}", IDS[id]),
        }
    }

    /// Reads every id on `store` at once, raising their floors.
    async fn find_all<S: Revisioned>(&self, case: &str, store: &S) {
        let began: Vec<Began> = (0..IDS.len()).map(|id| self.begin(id)).collect();
        let all = store
            .find_all_revisions()
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_all_revisions failed: {e}"));
        for v in all {
            if let Some(id) = IDS.iter().position(|id| *id == v.env.id) {
                self.read(case, began[id], v.revision);
            }
        }
    }
}

/// No read sees an id's revision go down, and a write's revision is above
/// every one visible when it began: interleaved, then racing, on the
/// handles given (one, or two on the same storage).
pub(crate) async fn revisions_in_order<S: Revisioned + 'static>(handles: &[Arc<S>]) {
    let floors = Floors::default();
    interleaved(handles, &floors).await;
    racing(handles, Arc::new(floors)).await;
}

type Write<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Polls `fut` up to `k` times; whether it finished.
async fn poll_up_to(fut: &mut Write<'_>, k: usize) -> bool {
    for _ in 0..k {
        let done = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
        if done {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

async fn interleaved<S: Revisioned + 'static>(handles: &[Arc<S>], floors: &Floors) {
    let n = handles.len();
    let mut tag = 0u64;
    // (first writer's handle, second's): the same one, then each way over two.
    let pairs: Vec<(usize, usize)> = if n == 1 {
        vec![(0, 0)]
    } else {
        vec![(0, 0), (0, 1), (1, 0)]
    };
    for (a, b) in pairs {
        let (first, second) = (&*handles[a], &*handles[b]);
        for k in 1..=3 {
            for conditional in [false, true] {
                let case = format!(
                    "a {} on handle {a} polled {k} times, a save on handle {b} run meanwhile",
                    if conditional { "save_if" } else { "plain save" }
                );
                tag += 2;
                let seeded = floors.find(&case, first, 0).await;
                let expected = seeded.map_or(Expected::Absent, Expected::Revision);
                let v1 = value(IDS[0], tag);
                let mut early: Write<'_> = Box::pin(async move {
                    if conditional {
                        // Refused if the second write lands first: fine.
                        let _ = first.save_if(&v1, expected).await;
                    } else {
                        first
                            .save(&v1)
                            .await
                            .unwrap_or_else(|e| panic!("save failed: {e}"));
                    }
                });
                let done = poll_up_to(&mut early, k).await;
                second
                    .save(&value(IDS[0], tag + 1))
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: save failed: {e}"));
                floors.find(&case, second, 0).await;
                if !done {
                    early.await;
                }
                floors.find(&case, first, 0).await;
                floors.find(&case, second, 0).await;
            }
        }
        // Many writes on one handle, then one on the other.
        let case = format!("four saves on handle {a}, then one on handle {b}");
        for _ in 0..4 {
            tag += 1;
            let began = floors.begin(1);
            let r = first
                .save_if(
                    &value(IDS[1], tag),
                    floors
                        .find(&case, first, 1)
                        .await
                        .map_or(Expected::Absent, Expected::Revision),
                )
                .await
                .unwrap_or_else(|e| panic!("case {case:?}: save_if failed: {e}"));
            floors.wrote(&case, began, r);
        }
        tag += 1;
        second
            .save(&value(IDS[1], tag))
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: save failed: {e}"));
        floors.find(&case, second, 1).await;
        floors.find(&case, first, 1).await;
    }
}

/// One writer's call: `(t * 5 + i * 3) % 7` picks it.
async fn write_one<S: Revisioned>(store: &S, floors: &Floors, t: usize, i: usize) {
    let id = (t + i) % IDS.len();
    let name = IDS[id];
    let tag = (t * 1_000 + i) as u64;
    let kind = (t * 5 + i * 3) % 7;
    let case = format!("racing writer {t}, call {i}");
    match kind {
        0 | 1 => store
            .save(&value(name, tag))
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: save failed: {e}")),
        2 | 3 => {
            let current = floors.find(&case, store, id).await;
            let began = floors.begin(id);
            let expected = current.map_or(Expected::Absent, Expected::Revision);
            match store.save_if(&value(name, tag), expected).await {
                Ok(r) => floors.wrote(&case, began, r),
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("case {case:?}: save_if failed: {e}"),
            }
        }
        4 => {
            let began = floors.begin(id);
            match store
                .update(name, |e| {
                    e.ssh_port = e.ssh_port.wrapping_add(1);
                    Ok(())
                })
                .await
            {
                Ok(v) => floors.wrote(&case, began, v.revision),
                Err(Error::NotFound { .. }) => {}
                Err(e) => panic!("case {case:?}: update failed: {e}"),
            }
        }
        5 => match store.delete(name).await {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("case {case:?}: delete failed: {e}"),
        },
        _ => {
            if let Some(current) = floors.find(&case, store, id).await {
                match store.delete_if(name, current).await {
                    Ok(()) | Err(Error::Conflict { .. }) => {}
                    Err(e) => panic!("case {case:?}: delete_if failed: {e}"),
                }
            }
        }
    }
}

async fn racing<S: Revisioned + 'static>(handles: &[Arc<S>], floors: Arc<Floors>) {
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = tokio::task::JoinSet::new();
    for t in 0..WRITERS {
        let store = Arc::clone(&handles[t % handles.len()]);
        let floors = Arc::clone(&floors);
        writers.spawn(async move {
            for i in 0..OPS_PER_WRITER {
                write_one(&*store, &floors, t, i).await;
                if i % 2 == 1 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    let mut readers = tokio::task::JoinSet::new();
    for r in 0..READERS {
        let store = Arc::clone(&handles[(r + 1) % handles.len()]);
        let floors = Arc::clone(&floors);
        let writing = Arc::clone(&writing);
        readers.spawn(async move {
            let case = format!("racing reader {r}");
            let mut rounds = 0u64;
            // One more round once the writers are done.
            let mut last = false;
            while !last {
                last = !writing.load(Ordering::SeqCst);
                for id in 0..IDS.len() {
                    floors.find(&case, &*store, id).await;
                }
                if rounds % 4 == 3 {
                    floors.find_all(&case, &*store).await;
                }
                rounds += 1;
                tokio::task::yield_now().await;
            }
        });
    }
    let mut first_panic = None;
    while let Some(done) = writers.join_next().await {
        if let Err(e) = done {
            first_panic.get_or_insert(e);
        }
    }
    writing.store(false, Ordering::SeqCst);
    while let Some(done) = readers.join_next().await {
        if let Err(e) = done {
            first_panic.get_or_insert(e);
        }
    }
    if let Some(e) = first_panic {
        std::panic::resume_unwind(e.into_panic());
    }
}
