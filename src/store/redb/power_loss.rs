// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Power loss, simulated (tests only). `kill -9` keeps the page cache; a
//! power cut does not. The store reports every write, size change, sync
//! and directory change it makes ([`io_log`](super::io_log)); a workload
//! runs with checkpoints and concurrent writers while this module records
//! them; then crash images are built from the record, in the manner of
//! ALICE and CrashMonkey: at a point of the run, each file holds what it
//! had at its last sync, plus any subset of the writes made since (each
//! torn at 512-byte sectors: any subset of its sectors), plus or minus its
//! unsynced size changes; the directory holds its entries as of its last
//! sync plus a prefix of the changes since (directory changes are
//! journaled in order by the file systems we run on). Every image must open
//! — or, before the store was acknowledged as created, be refused with a
//! clear error or open empty — and hold every write acknowledged before
//! the point.
//!
//! `WAGGLE_POWER_LOSS_IMAGES` sets how many images (default 600).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Sector size: a write reaches the disk whole or not at all per sector.
const SECTOR: u64 = 512;

/// A file: device and inode number (hard links share one).
type Ino = (u64, u64);

/// One thing the store did, or the workload saw.
#[derive(Debug, Clone)]
enum Op {
    /// A file was there, durable, when the recording began.
    Existing {
        name: String,
        ino: Ino,
        bytes: Arc<[u8]>,
    },
    /// A file was created at a name.
    Created {
        name: String,
        ino: Ino,
    },
    Write {
        ino: Ino,
        offset: u64,
        data: Arc<[u8]>,
    },
    SetLen {
        ino: Ino,
        len: u64,
    },
    /// A file's data and size are durable.
    Synced {
        ino: Ino,
    },
    Link {
        from: String,
        to: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        name: String,
    },
    /// The directory's entries are durable.
    DirSynced,
    /// The workload: a write was issued or acknowledged (`task`, `step`).
    Issued {
        task: usize,
        step: usize,
    },
    Acked {
        task: usize,
        step: usize,
    },
    /// The store was acknowledged as created (its open returned).
    Opened,
}

/// A recording: the directory watched and what happened in it.
struct Recording {
    dir: PathBuf,
    ops: Arc<Mutex<Vec<Op>>>,
}

static RECORDINGS: Mutex<Vec<Recording>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records `op` if `path` lies in a watched directory (or, for a file
/// handle, if its inode was created in one).
fn record_at(path: &Path, op: impl FnOnce(&Path) -> Op) {
    let recordings = lock(&RECORDINGS);
    for r in recordings.iter() {
        if path.parent() == Some(r.dir.as_path()) {
            lock(&r.ops).push(op(&r.dir));
            return;
        }
    }
}

fn record_ino(file: &File, op: impl FnOnce(Ino) -> Op) {
    let Ok(meta) = file.metadata() else { return };
    let ino = (meta.dev(), meta.ino());
    let recordings = lock(&RECORDINGS);
    for r in recordings.iter() {
        let mut ops = lock(&r.ops);
        let known = ops.iter().any(
            |o| matches!(o, Op::Created { ino: i, .. } | Op::Existing { ino: i, .. } if *i == ino),
        );
        if known {
            ops.push(op(ino));
            return;
        }
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn record_created(path: &Path, file: &File) {
    let Ok(meta) = file.metadata() else { return };
    record_at(path, |_| Op::Created {
        name: name_of(path),
        ino: (meta.dev(), meta.ino()),
    });
}

pub(super) fn record_write(file: &File, offset: u64, data: &[u8]) {
    record_ino(file, |ino| Op::Write {
        ino,
        offset,
        data: Arc::from(data),
    });
}

pub(super) fn record_set_len(file: &File, len: u64) {
    record_ino(file, |ino| Op::SetLen { ino, len });
}

pub(super) fn record_synced(file: &File) {
    record_ino(file, |ino| Op::Synced { ino });
}

pub(super) fn record_linked(from: &Path, to: &Path) {
    record_at(from, |_| Op::Link {
        from: name_of(from),
        to: name_of(to),
    });
}

pub(super) fn record_renamed(from: &Path, to: &Path) {
    record_at(from, |_| Op::Rename {
        from: name_of(from),
        to: name_of(to),
    });
}

pub(super) fn record_removed(path: &Path) {
    record_at(path, |_| Op::Remove {
        name: name_of(path),
    });
}

pub(super) fn record_dir_synced(dir: &Path) {
    let recordings = lock(&RECORDINGS);
    for r in recordings.iter() {
        if r.dir == dir {
            lock(&r.ops).push(Op::DirSynced);
        }
    }
}

/// Watches `dir` until dropped.
struct Watch {
    dir: PathBuf,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Watch {
    /// Starts recording `dir`, whose files are taken as durable.
    fn new(dir: &Path) -> Self {
        let mut existing = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let (Ok(meta), Ok(bytes)) = (entry.metadata(), std::fs::read(entry.path())) {
                existing.push(Op::Existing {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    ino: (meta.dev(), meta.ino()),
                    bytes: Arc::from(bytes),
                });
            }
        }
        let ops = Arc::new(Mutex::new(existing));
        lock(&RECORDINGS).push(Recording {
            dir: dir.to_owned(),
            ops: Arc::clone(&ops),
        });
        Self {
            dir: dir.to_owned(),
            ops,
        }
    }

    fn push(&self, op: Op) {
        lock(&self.ops).push(op);
    }

    fn ops(&self) -> Vec<Op> {
        lock(&self.ops).clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&RECORDINGS).retain(|r| r.dir != self.dir);
    }
}

/// A small deterministic generator: every image can be built again.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

/// One file's contents: what is durable, and what happened since its
/// last sync.
#[derive(Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    since: Vec<Op>,
}

fn apply_write(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

/// Applies to `inode` its changes since the last sync: all of them
/// (`rng` `None`), or a random subset, each write torn at sectors.
fn settle(inode: &Inode, rng: Option<&mut Lcg>) -> Vec<u8> {
    let mut bytes = inode.durable.clone();
    let mut rng = rng;
    for op in &inode.since {
        match op {
            Op::Write { offset, data, .. } => match rng.as_deref_mut() {
                None => apply_write(&mut bytes, *offset, data),
                Some(rng) => {
                    // Each sector the write touches lands or not.
                    let (start, end) = (*offset, *offset + data.len() as u64);
                    let mut at = start;
                    while at < end {
                        let sector_end = ((at / SECTOR) + 1) * SECTOR;
                        let upto = sector_end.min(end);
                        if rng.chance(2) {
                            let from = (at - start) as usize;
                            apply_write(&mut bytes, at, &data[from..(upto - start) as usize]);
                        }
                        at = upto;
                    }
                }
            },
            Op::SetLen { len, .. } if rng.as_deref_mut().is_none_or(|r| r.chance(2)) => {
                bytes.resize(*len as usize, 0);
            }
            _ => {}
        }
    }
    bytes
}

/// The files a crash at `point` (ops before it happened) could leave:
/// everything synced, plus what `rng` picks of the rest.
fn image(ops: &[Op], point: usize, rng: &mut Lcg) -> BTreeMap<String, Vec<u8>> {
    let mut inodes: HashMap<Ino, Inode> = HashMap::new();
    let mut durable_names: BTreeMap<String, Ino> = BTreeMap::new();
    let mut names: BTreeMap<String, Ino> = BTreeMap::new();
    let mut dir_changes: Vec<Op> = Vec::new();
    for op in &ops[..point] {
        match op {
            Op::Created { name, ino } => {
                inodes.insert(*ino, Inode::default());
                names.insert(name.clone(), *ino);
                dir_changes.push(op.clone());
            }
            Op::Write { ino, .. } | Op::SetLen { ino, .. } => {
                if let Some(inode) = inodes.get_mut(ino) {
                    inode.since.push(op.clone());
                }
            }
            Op::Synced { ino } => {
                if let Some(inode) = inodes.get_mut(ino) {
                    inode.durable = settle(inode, None);
                    inode.since.clear();
                }
            }
            Op::Link { from, to } => {
                if let Some(&ino) = names.get(from) {
                    names.insert(to.clone(), ino);
                }
                dir_changes.push(op.clone());
            }
            Op::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
                dir_changes.push(op.clone());
            }
            Op::Remove { name } => {
                names.remove(name);
                dir_changes.push(op.clone());
            }
            Op::DirSynced => {
                apply_dir(&mut durable_names, &dir_changes);
                dir_changes.clear();
            }
            Op::Existing { name, ino, bytes } => {
                let inode = Inode {
                    durable: bytes.to_vec(),
                    since: Vec::new(),
                };
                inodes.insert(*ino, inode);
                names.insert(name.clone(), *ino);
                durable_names.insert(name.clone(), *ino);
            }
            Op::Issued { .. } | Op::Acked { .. } | Op::Opened => {}
        }
    }
    // A prefix of the unsynced directory changes survives.
    let kept = rng.next() as usize % (dir_changes.len() + 1);
    apply_dir(&mut durable_names, &dir_changes[..kept]);
    durable_names
        .into_iter()
        .filter_map(|(name, ino)| inodes.get(&ino).map(|i| (name, settle(i, Some(rng)))))
        .collect()
}

fn apply_dir(names: &mut BTreeMap<String, Ino>, changes: &[Op]) {
    for change in changes {
        match change {
            Op::Created { name, ino } => {
                names.insert(name.clone(), *ino);
            }
            Op::Link { from, to } => {
                if let Some(&ino) = names.get(from) {
                    names.insert(to.clone(), ino);
                }
            }
            Op::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
            Op::Remove { name } => {
                names.remove(name);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RedbOptions, RedbStore};
    use super::*;
    use crate::domain::{Environment, Runtime};
    use crate::error::Error;
    use crate::history::Audited;
    use crate::repository::Repository;

    const TASKS: usize = 4;
    const STEPS: usize = 40;
    /// Ids each task cycles through.
    const IDS: usize = 5;

    /// What step `step` of task `task` does: `Some(name)` saves the id
    /// with that name, `None` deletes it.
    fn step(task: usize, step: usize) -> (String, Option<String>) {
        let id = format!("t{task}-{}", step % IDS);
        // Every seventh step deletes an id the step before saved.
        if step % 7 == 6 {
            (format!("t{task}-{}", (step - 1) % IDS), None)
        } else {
            (id, Some(format!("{task}-{step}")))
        }
    }

    /// Runs the workload's `tasks` on a watched store in `dir` (a new
    /// store, or a crash image that opening recovers) and returns what was
    /// recorded, with every id and name the store held once opened.
    fn record(dir: &Path, tasks: std::ops::Range<usize>) -> (Vec<Op>, BTreeMap<String, String>) {
        let watch = Watch::new(dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let options = RedbOptions::default()
            .checkpoint_ids(6)
            .checkpoint_bytes(8 << 10);
        let store = Arc::new(RedbStore::open_with(dir.join("waggle.db"), options).expect("open"));
        watch.push(Op::Opened);
        let watch = Arc::new(watch);
        let recovered = names(&rt.block_on(store.find_all()).expect("find_all"));
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for task in tasks {
                let (store, watch) = (Arc::clone(&store), Arc::clone(&watch));
                set.spawn(async move {
                    for n in 0..STEPS {
                        let (id, name) = step(task, n);
                        watch.push(Op::Issued { task, step: n });
                        match name {
                            Some(name) => {
                                let env = Environment::new(id, name, Runtime::Shell);
                                store.save(&env).await.expect("save");
                            }
                            None => store.delete(&id).await.expect("delete"),
                        }
                        watch.push(Op::Acked { task, step: n });
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.expect("task");
            }
        });
        let checkpoints = store.stats().checkpoints;
        assert!(
            checkpoints >= 2,
            "too few checkpoints to test: {checkpoints}"
        );
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close().expect("close");
        }
        (watch.ops(), recovered)
    }

    fn names(envs: &[Environment]) -> BTreeMap<String, String> {
        envs.iter()
            .map(|e| (e.id.clone(), e.name.clone()))
            .collect()
    }

    /// For each id, the values a crash at `point` may leave: the one after
    /// its last acknowledged write, or after a write issued and not yet
    /// acknowledged. `None` is absent.
    fn allowed(
        ops: &[Op],
        point: usize,
        tasks: std::ops::Range<usize>,
    ) -> BTreeMap<String, Vec<Option<String>>> {
        let mut acked: HashMap<usize, usize> = HashMap::new();
        let mut issued: HashMap<usize, usize> = HashMap::new();
        for op in &ops[..point] {
            match op {
                Op::Issued { task, step } => {
                    issued.insert(*task, step + 1);
                }
                Op::Acked { task, step } => {
                    acked.insert(*task, step + 1);
                }
                _ => {}
            }
        }
        let mut allowed: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for task in tasks {
            let acked = acked.get(&task).copied().unwrap_or(0);
            let issued = issued.get(&task).copied().unwrap_or(0);
            let mut state: BTreeMap<String, Option<String>> =
                (0..IDS).map(|i| (format!("t{task}-{i}"), None)).collect();
            for n in 0..acked {
                let (id, name) = step(task, n);
                state.insert(id, name);
            }
            for (id, value) in &state {
                allowed.insert(id.clone(), vec![value.clone()]);
            }
            if issued > acked {
                let (id, name) = step(task, acked);
                allowed.entry(id).or_default().push(name);
            }
        }
        allowed
    }

    /// For each id of `tasks`, the histories a crash at `point` may leave:
    /// every acknowledged write of it in order (a save's name, or `None`
    /// for a delete), and the same with the write then in flight if it
    /// was of this id.
    fn allowed_histories(
        ops: &[Op],
        point: usize,
        tasks: std::ops::Range<usize>,
    ) -> BTreeMap<String, Vec<Vec<Option<String>>>> {
        let mut acked: HashMap<usize, usize> = HashMap::new();
        let mut issued: HashMap<usize, usize> = HashMap::new();
        for op in &ops[..point] {
            match op {
                Op::Issued { task, step } => {
                    issued.insert(*task, step + 1);
                }
                Op::Acked { task, step } => {
                    acked.insert(*task, step + 1);
                }
                _ => {}
            }
        }
        let mut allowed = BTreeMap::new();
        for task in tasks {
            let acked = acked.get(&task).copied().unwrap_or(0);
            let issued = issued.get(&task).copied().unwrap_or(0);
            let mut lives: BTreeMap<String, Vec<Option<String>>> = (0..IDS)
                .map(|i| (format!("t{task}-{i}"), Vec::new()))
                .collect();
            for n in 0..acked {
                let (id, name) = step(task, n);
                lives.entry(id).or_default().push(name);
            }
            for (id, life) in lives {
                let mut ways = vec![life.clone()];
                if issued > acked {
                    let (in_flight, name) = step(task, acked);
                    if in_flight == id {
                        let mut longer = life;
                        longer.push(name);
                        ways.push(longer);
                    }
                }
                allowed.insert(id, ways);
            }
        }
        allowed
    }

    /// What a run of crash images saw.
    #[derive(Default)]
    struct Tally {
        images: usize,
        opened: usize,
        before_creation: usize,
        checked: usize,
        histories: usize,
        lost: Vec<String>,
    }

    /// Builds `count` images from `ops` at points spread over the run (a
    /// few each), opens each, and checks every id against `expect(point)`.
    /// Before the open is recorded, a `new` store may be refused.
    fn crash_images(
        ops: &[Op],
        new: bool,
        count: usize,
        scratch: &Path,
        expect: &dyn Fn(usize) -> BTreeMap<String, Vec<Option<String>>>,
        histories: &dyn Fn(usize) -> BTreeMap<String, Vec<Vec<Option<String>>>>,
        tally: &mut Tally,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let opened_at = ops
            .iter()
            .position(|o| matches!(o, Op::Opened))
            .unwrap_or(0);
        // The files there from the start are all there at any point.
        let start = ops
            .iter()
            .take_while(|o| matches!(o, Op::Existing { .. }))
            .count()
            .max(1);
        for n in 0..count {
            let point = start + (n / 3) * (ops.len() - start) / count.div_ceil(3).max(1);
            let mut rng = Lcg(n as u64 * 7919 + tally.images as u64 + 1);
            let files = image(ops, point, &mut rng);
            let dir = scratch.join(format!("image-{}", tally.images));
            tally.images += 1;
            std::fs::create_dir(&dir).expect("image dir");
            for (name, bytes) in &files {
                std::fs::write(dir.join(name), bytes).expect("write image");
            }
            let store = match RedbStore::open(dir.join("waggle.db")) {
                Ok(store) => store,
                // Never acknowledged as created: a clear refusal is fine.
                Err(Error::Open { .. }) if new && point <= opened_at => {
                    tally.before_creation += 1;
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Err(e) => panic!("image {n} (crash after op {point} of {}): {e}", ops.len()),
            };
            tally.opened += 1;
            let found = names(
                &rt.block_on(store.find_all())
                    .unwrap_or_else(|e| panic!("image {n}: find_all: {e}")),
            );
            for (id, values) in expect(point) {
                tally.checked += 1;
                let got = found.get(&id).cloned();
                if !values.contains(&got) {
                    tally.lost.push(format!(
                        "image {n} (op {point}): {id} is {got:?}, acknowledged {values:?}"
                    ));
                }
            }
            // The history: each id's acknowledged writes, in order, and
            // the one in flight only if it landed.
            for (id, ways) in histories(point) {
                tally.histories += 1;
                let life: Vec<Option<String>> = rt
                    .block_on(store.history(&id))
                    .unwrap_or_else(|e| panic!("image {n}: history: {e}"))
                    .into_iter()
                    .map(|c| c.env.map(|e| e.name))
                    .collect();
                let landed = life.last().cloned().flatten();
                if !ways.contains(&life) || found.get(&id) != landed.as_ref() {
                    tally.lost.push(format!(
                        "image {n} (op {point}): {id}'s history is {life:?}, acknowledged {ways:?}, stored {:?}",
                        found.get(&id)
                    ));
                }
            }
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Power cuts at every point of two recorded runs: a new store written
    /// by four writers with checkpoints, then closed; and a crash image of
    /// that run opened again — the recovery (replay, its checkpoint, the
    /// journal started over) recorded too — and written by four more.
    #[test]
    fn every_power_cut_keeps_every_acknowledged_write() {
        let images: usize = std::env::var("WAGGLE_POWER_LOSS_IMAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        let scratch = tempfile::tempdir_in(
            Some(Path::new("/dev/shm"))
                .filter(|p| p.is_dir())
                .unwrap_or(&std::env::temp_dir()),
        )
        .expect("scratch");
        let mut tally = Tally::default();

        let first = scratch.path().join("first");
        std::fs::create_dir(&first).expect("dir");
        let (ops, _) = record(&first, 0..TASKS);
        crash_images(
            &ops,
            true,
            images / 2,
            scratch.path(),
            &|point| allowed(&ops, point, 0..TASKS),
            &|point| allowed_histories(&ops, point, 0..TASKS),
            &mut tally,
        );

        // A crash image three fifths into the first run, recovered under
        // the recorder.
        let second = scratch.path().join("second");
        std::fs::create_dir(&second).expect("dir");
        let crash = ops.len() * 3 / 5;
        for (name, bytes) in image(&ops, crash, &mut Lcg(42)) {
            std::fs::write(second.join(name), bytes).expect("write image");
        }
        let (again, recovered) = record(&second, 10..10 + TASKS);
        let first_ids = allowed(&ops, crash, 0..TASKS);
        for (id, values) in &first_ids {
            let got = recovered.get(id).cloned();
            assert!(
                values.contains(&got),
                "recovery: {id} is {got:?}, acknowledged {values:?}"
            );
        }
        crash_images(
            &again,
            false,
            images - images / 2,
            scratch.path(),
            &|point| {
                // The first run's ids exactly as recovered; the second's as
                // acknowledged.
                let mut expect: BTreeMap<String, Vec<Option<String>>> = first_ids
                    .keys()
                    .map(|id| (id.clone(), vec![recovered.get(id).cloned()]))
                    .collect();
                expect.extend(allowed(&again, point, 10..10 + TASKS));
                expect
            },
            // The second run's ids (the first run's were checked above).
            &|point| allowed_histories(&again, point, 10..10 + TASKS),
            &mut tally,
        );
        let syncs = ops
            .iter()
            .chain(&again)
            .filter(|o| matches!(o, Op::Synced { .. } | Op::DirSynced))
            .count();
        println!(
            "power loss: {} crash images from two recorded runs ({} and {} operations, {syncs} syncs; 4 writers each, checkpoints every 6 ids; the second recovers a crash image of the first): {} opened, {} before the store was acknowledged as created, {} ids checked, {} histories checked, acknowledged writes lost: {}",
            tally.images,
            ops.len(),
            again.len(),
            tally.opened,
            tally.before_creation,
            tally.checked,
            tally.histories,
            tally.lost.len()
        );
        assert!(
            tally.lost.is_empty(),
            "{:#?}",
            &tally.lost[..tally.lost.len().min(10)]
        );
    }
}
