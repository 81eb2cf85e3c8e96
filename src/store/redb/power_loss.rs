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

use super::io_log::DirChange;

/// Sector size: a write reaches the disk whole or not at all per sector.
const SECTOR: u64 = 512;

/// A file: device and inode number (hard links share one).
type Ino = (u64, u64);

/// One thing the store did, or the workload saw.
#[derive(Debug, Clone)]
enum Op {
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
        let known = ops
            .iter()
            .any(|o| matches!(o, Op::Created { ino: i, .. } if *i == ino));
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

pub(super) fn record_dir_change(change: DirChange, from: &Path, to: &Path) {
    record_at(from, |_| match change {
        DirChange::Link => Op::Link {
            from: name_of(from),
            to: name_of(to),
        },
        DirChange::Rename => Op::Rename {
            from: name_of(from),
            to: name_of(to),
        },
        DirChange::Remove => Op::Remove {
            name: name_of(from),
        },
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
    fn new(dir: &Path) -> Self {
        let ops = Arc::new(Mutex::new(Vec::new()));
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

    /// Runs the workload on a watched store and returns what was recorded.
    fn record(dir: &Path) -> Vec<Op> {
        let watch = Watch::new(dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let options = RedbOptions {
            checkpoint_ids: 6,
            checkpoint_bytes: 8 << 10,
            ..RedbOptions::default()
        };
        let store = Arc::new(RedbStore::open_with(dir.join("waggle.db"), options).expect("open"));
        watch.push(Op::Opened);
        let watch = Arc::new(watch);
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..TASKS {
                let (store, watch) = (Arc::clone(&store), Arc::clone(&watch));
                tasks.spawn(async move {
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
            while let Some(r) = tasks.join_next().await {
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
        watch.ops()
    }

    /// For each id, the values a crash at `point` may leave: the one after
    /// its last acknowledged write, or after a write issued and not yet
    /// acknowledged. `None` is absent.
    fn allowed(ops: &[Op], point: usize) -> BTreeMap<String, Vec<Option<String>>> {
        let mut acked = [0usize; TASKS];
        let mut issued = [0usize; TASKS];
        for op in &ops[..point] {
            match op {
                Op::Issued { task, step } => issued[*task] = step + 1,
                Op::Acked { task, step } => acked[*task] = step + 1,
                _ => {}
            }
        }
        let mut allowed: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for task in 0..TASKS {
            let mut state: BTreeMap<String, Option<String>> =
                (0..IDS).map(|i| (format!("t{task}-{i}"), None)).collect();
            for n in 0..acked[task] {
                let (id, name) = step(task, n);
                state.insert(id, name);
            }
            for (id, value) in &state {
                allowed.insert(id.clone(), vec![value.clone()]);
            }
            if issued[task] > acked[task] {
                let (id, name) = step(task, acked[task]);
                allowed.entry(id).or_default().push(name);
            }
        }
        allowed
    }

    #[test]
    fn every_power_cut_keeps_every_acknowledged_write() {
        let images: usize = std::env::var("WAGGLE_POWER_LOSS_IMAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        let recorded = tempfile::tempdir().expect("tempdir");
        let ops = record(recorded.path());
        let syncs = ops
            .iter()
            .filter(|o| matches!(o, Op::Synced { .. } | Op::DirSynced))
            .count();
        let opened_at = ops
            .iter()
            .position(|o| matches!(o, Op::Opened))
            .expect("opened");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let scratch = tempfile::tempdir_in(
            Some(Path::new("/dev/shm"))
                .filter(|p| p.is_dir())
                .unwrap_or(&std::env::temp_dir()),
        )
        .expect("scratch");
        let (mut opened, mut before_creation, mut checked) = (0, 0, 0);
        let mut lost: Vec<String> = Vec::new();
        for n in 0..images {
            // Crash points spread over the whole run, a few images each.
            let point = 1 + (n / 3) * (ops.len() - 1) / images.div_ceil(3).max(1);
            let mut rng = Lcg(n as u64 * 7919 + 1);
            let files = image(&ops, point, &mut rng);
            let dir = scratch.path().join(format!("image-{n}"));
            std::fs::create_dir(&dir).expect("image dir");
            for (name, bytes) in &files {
                std::fs::write(dir.join(name), bytes).expect("write image");
            }
            let path = dir.join("waggle.db");
            let store = match RedbStore::open(&path) {
                Ok(store) => store,
                Err(e @ Error::Open { .. }) if point <= opened_at => {
                    // Never acknowledged as created: a clear refusal is fine.
                    let _ = e;
                    before_creation += 1;
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Err(e) => panic!("image {n} (crash after op {point} of {}): {e}", ops.len()),
            };
            opened += 1;
            let found: BTreeMap<String, String> = rt
                .block_on(store.find_all())
                .unwrap_or_else(|e| panic!("image {n}: find_all: {e}"))
                .into_iter()
                .map(|e| (e.id, e.name))
                .collect();
            for (id, values) in allowed(&ops, point) {
                checked += 1;
                let got = found.get(&id).cloned();
                if !values.contains(&got) {
                    lost.push(format!(
                        "image {n} (op {point}): {id} is {got:?}, acknowledged {values:?}"
                    ));
                }
            }
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!(
            "power loss: {images} crash images from {} recorded operations ({syncs} syncs, 4 writers, checkpoints every 6 ids): {opened} opened, {before_creation} before the store was acknowledged as created, {checked} ids checked, acknowledged writes lost: {}",
            ops.len(),
            lost.len()
        );
        assert!(lost.is_empty(), "{:#?}", &lost[..lost.len().min(10)]);
    }
}
