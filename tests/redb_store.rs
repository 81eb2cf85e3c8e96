// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! RedbStore beyond the contract: crashes, other processes, bad files,
//! file modes and group commit. Child processes are this test binary
//! re-run with `WAGGLE_TEST_CHILD` set, so no extra binary is needed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use waggle_store::store::redb::RedbOptions;
use waggle_store::{
    Audited, ChangeKind, Environment, Error, Expected, RedbStore, Repository, Revision, Revisioned,
    RevisionedExt, Runtime, Status,
};

const CHILD: &str = "WAGGLE_TEST_CHILD";
const CHILD_PATH: &str = "WAGGLE_TEST_CHILD_PATH";

/// The id the kill -9 writers update conditionally.
const HOT: &str = "hot";

/// Bumps `HOT` through `update`, or creates it if it is absent; returns
/// the revision acknowledged.
async fn write_hot(store: &RedbStore) -> Revision {
    match store
        .update(HOT, |e| {
            e.ssh_port = e.ssh_port.wrapping_add(1);
            Ok(())
        })
        .await
    {
        Ok(v) => v.revision,
        Err(Error::NotFound { .. }) => store
            .save_if(&env(HOT), Expected::Absent)
            .await
            .unwrap_or_else(|e| panic!("creating {HOT}: {e}")),
        Err(e) => panic!("updating {HOT}: {e}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn env(id: &str) -> Environment {
    let mut e = Environment::new(id, format!("name of {id}"), Runtime::Python);
    e.ssh_port = 2222;
    e
}

/// Runs `child_entry` in a new process with `mode` and `path`.
fn child(mode: &str, path: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")));
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(CHILD_PATH, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// What follows `tag` on each line of a child's output that starts with it.
fn tagged<'a>(lines: impl IntoIterator<Item = &'a str>, tag: &str) -> Vec<&'a str> {
    lines
        .into_iter()
        .filter_map(|l| l.strip_prefix(tag))
        .collect()
}

/// The child side. Does nothing unless run by [`child`].
#[test]
fn child_entry() {
    let (Ok(mode), Ok(path)) = (std::env::var(CHILD), std::env::var(CHILD_PATH)) else {
        return;
    };
    let rt = rt();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test child_entry ... " without a newline: end it.
    let _ = writeln!(out);
    match mode.as_str() {
        // Save forever, printing each id once its save has returned. The
        // checkpointing writer checkpoints every 16 ids, so kills land in
        // checkpoints and file switches too.
        "writer" | "writer-checkpointing" => rt.block_on(async {
            let options = if mode == "writer" {
                RedbOptions::default()
            } else {
                RedbOptions::default()
                    .checkpoint_ids(16)
                    .checkpoint_bytes(16 << 10)
            };
            let store = RedbStore::open_with(&path, options).unwrap_or_else(|e| panic!("{e}"));
            let mut checkpoints = 0;
            let pid = std::process::id();
            for i in 0.. {
                let mut e = env(&format!("p{pid}-{i}"));
                if i % 3 == 0 {
                    let _ = e.transition_to(Status::Running);
                }
                store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                let _ = writeln!(out, "ack {}", e.id);
                if store.stats().checkpoints > checkpoints {
                    checkpoints = store.stats().checkpoints;
                    let _ = writeln!(out, "checkpoints {checkpoints}");
                }
                // A conditional write of one shared id, printing each
                // revision acknowledged; every seventh round deletes it, so
                // re-creates follow deletes across kills.
                if i % 7 == 6 {
                    let _ = store.delete(HOT).await;
                } else {
                    let _ = writeln!(out, "rev {}", write_hot(&store).await.get());
                }
                let _ = out.flush();
                if i % 5 == 4 {
                    // Delete too, so a crash can land in either.
                    let _ = writeln!(out, "deleting p{pid}-{}", i - 1);
                    let _ = out.flush();
                    let _ = store.delete(&format!("p{pid}-{}", i - 1)).await;
                    let _ = writeln!(out, "del p{pid}-{}", i - 1);
                    let _ = out.flush();
                }
            }
        }),
        // Open read-only beside the writer and print what it sees.
        "reader" => rt.block_on(async {
            let store = RedbStore::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
            let n = store.count().await.unwrap_or_else(|e| panic!("{e}"));
            let _ = writeln!(out, "count {n}");
            let _ = out.flush();
            // Follow the parent's commits: read until more land (10 s at most).
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
            while all.len() == n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
            }
            // The parent commits its three saves one by one: wait for the last.
            while all.len() < n + 3 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
            }
            let _ = writeln!(out, "count {}", all.len());
        }),
        // Save 8 KiB environments until the file-size limit set by the
        // parent makes a save fail; then show the store still answers.
        "fill-disk" => rt.block_on(async {
            let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut failures = 0;
            for i in 0..100_000 {
                let mut e = env(&format!("f{i:05}"));
                e.name = "x".repeat(8 * 1024);
                match store.save(&e).await {
                    Ok(()) => {
                        let _ = writeln!(out, "ack {}", e.id);
                    }
                    Err(err) => {
                        let _ = writeln!(out, "err {err}");
                        failures += 1;
                        if failures == 5 {
                            break;
                        }
                    }
                }
                let _ = out.flush();
            }
            // Reads are answered from what was committed (or fail cleanly).
            match store.count().await {
                Ok(n) => {
                    let _ = writeln!(out, "count {n}");
                }
                Err(err) => {
                    let _ = writeln!(out, "count-err {err}");
                }
            }
            let _ = out.flush();
        }),
        "open-for-write" => {
            let result = RedbStore::open(&path);
            let _ = writeln!(
                out,
                "{}",
                result
                    .map(|_| "opened".to_owned())
                    .unwrap_or_else(|e| e.to_string())
            );
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn survives_kill_9_loop() {
    kill_9_loop("writer", false);
}

/// The same, with a checkpoint every 16 ids: kills land while checkpoints
/// run and journal files switch.
#[test]
fn survives_kill_9_loop_while_checkpointing() {
    kill_9_loop("writer-checkpointing", false);
}

/// The same store opened by two names — a symbolic link and the file it
/// points to — alternately, with a kill between: the journal follows the
/// file, so neither name loses what the other acknowledged.
#[test]
fn survives_kill_9_through_a_symlink_and_its_target() {
    kill_9_loop("writer-checkpointing", true);
}

/// Kills a child writer `WAGGLE_SOAK_KILLS` times (20), reopening after
/// each. With `through_link`, the child and the reopen use a symbolic link
/// and the real path in turn.
fn kill_9_loop(mode: &str, through_link: bool) {
    let kills: usize = std::env::var("WAGGLE_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("real").join("waggle.db");
    let link = dir.path().join("link.db");
    let names = if through_link {
        RedbStore::open(&path)
            .and_then(RedbStore::close)
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&path, &link).unwrap_or_else(|e| panic!("{e}"));
        [link.clone(), path.clone()]
    } else {
        [path.clone(), path.clone()]
    };
    let mut acked = std::collections::BTreeSet::new();
    let mut deleted = std::collections::BTreeSet::new();
    let mut deleting = std::collections::BTreeSet::new();
    // Every revision acknowledged, in order, across kills and reopens:
    // each must be higher than all before it (none issued twice).
    let (mut last_rev, mut revs) = (0_u64, 0_usize);
    let hot_revs = std::cell::RefCell::new(Vec::new());
    let mut check_rev = |n: u64, when: &str| {
        assert!(
            n > last_rev,
            "{when}: revision {n} acknowledged after revision {last_rev}: a revision was issued again"
        );
        last_rev = n;
        revs += 1;
        hot_revs.borrow_mut().push(n);
    };
    let mut history_checked = 0_usize;
    let rt = rt();
    let (mut journals, mut checkpoints) = (0, 0_u64);
    for k in 0..kills {
        let mut proc = child(mode, &names[k % 2])
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Kill at a different moment each round: 30 ms to 250 ms in.
        std::thread::sleep(Duration::from_millis(30 + (k as u64 * 37) % 220));
        proc.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
        let _ = proc.wait();
        let mut life = 0_u64;
        for line in lines.join().unwrap_or_default() {
            if let Some(id) = line.strip_prefix("ack ") {
                acked.insert(id.to_owned());
            } else if let Some(id) = line.strip_prefix("del ") {
                deleted.insert(id.to_owned());
            } else if let Some(n) = line.strip_prefix("checkpoints ") {
                life = n.parse().unwrap_or(life);
            } else if let Some(id) = line.strip_prefix("deleting ") {
                // In flight when killed: may or may not have landed.
                deleting.insert(id.to_owned());
            } else if let Some(n) = line.strip_prefix("rev ") {
                check_rev(n.parse().unwrap_or(0), &format!("writer before kill {k}"));
            }
        }
        checkpoints += life;
        // Killed, the writer left its journal for the reopen to replay.
        if std::fs::metadata(wal_of(&path)).is_ok_and(|m| m.len() > 32) {
            journals += 1;
        }
        // Reopen after every kill: recovery must succeed and lose nothing acknowledged.
        rt.block_on(async {
            let store = RedbStore::open(&names[(k + 1) % 2])
                .unwrap_or_else(|e| panic!("reopen after kill {k}: {e}"));
            let all = store
                .find_all()
                .await
                .unwrap_or_else(|e| panic!("find_all after kill {k}: {e}"));
            let ids: std::collections::BTreeSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
            let lost: Vec<&String> = acked
                .iter()
                .filter(|id| !deleting.contains(*id) && !ids.contains(id.as_str()))
                .collect();
            assert!(
                lost.is_empty(),
                "after kill {k}: acknowledged saves lost: {lost:?}"
            );
            let resurrected: Vec<&String> = deleted
                .iter()
                .filter(|id| ids.contains(id.as_str()))
                .collect();
            assert!(
                resurrected.is_empty(),
                "after kill {k}: acknowledged deletes undone: {resurrected:?}"
            );
            assert_eq!(store.count().await.ok(), Some(all.len()));
            // The history: every acknowledged write exactly once (counted
            // at the last reopen, which checks them all).
            history_checked = 0;
            for id in &acked {
                let life = store
                    .history(id)
                    .await
                    .unwrap_or_else(|e| panic!("history after kill {k}: {e}"));
                let kinds: Vec<ChangeKind> = life.iter().map(|c| c.kind).collect();
                // Deleted: acknowledged, or in flight at the kill and landed.
                let gone =
                    deleted.contains(id) || (deleting.contains(id) && !ids.contains(id.as_str()));
                let want: &[ChangeKind] = if gone {
                    &[ChangeKind::Saved, ChangeKind::Deleted]
                } else {
                    &[ChangeKind::Saved]
                };
                assert_eq!(
                    kinds, want,
                    "after kill {k}: the history of {id} is not its acknowledged writes"
                );
                history_checked += want.len();
            }
            let hot: Vec<u64> = store
                .history(HOT)
                .await
                .unwrap_or_else(|e| panic!("history after kill {k}: {e}"))
                .iter()
                .map(|c| c.revision.get())
                .collect();
            assert!(
                hot.windows(2).all(|w| w[0] < w[1]),
                "after kill {k}: {HOT}'s history is not in revision order, once each"
            );
            let missing: Vec<u64> = hot_revs
                .borrow()
                .iter()
                .filter(|r| !hot.contains(r))
                .copied()
                .collect();
            assert!(
                missing.is_empty(),
                "after kill {k}: acknowledged writes of {HOT} missing from its history: {missing:?}"
            );
            check_rev(
                write_hot(&store).await.get(),
                &format!("reopen after kill {k}"),
            );
            store.close().unwrap_or_else(|e| panic!("{e}"));
        });
        // Every stored id's latest change is its stored value: no change
        // is there whose write is not.
        let report =
            RedbStore::check(&path).unwrap_or_else(|e| panic!("check after kill {k}: {e}"));
        assert!(
            report.history.is_empty() && report.corrupt.is_empty(),
            "after kill {k}: {report:?}"
        );
    }
    history_checked += hot_revs.borrow().len();
    let lost_deletes = deleted.len();
    assert!(
        acked.len() > kills,
        "the writer acknowledged too few saves ({}) to test anything",
        acked.len()
    );
    println!(
        "kill -9 ({mode}{}): kills survived: {kills}, journals replayed: {journals}, checkpoints: {checkpoints}, acknowledged saves: {}, acknowledged deletes: {lost_deletes}, records lost: 0, revisions acknowledged: {revs}, reissued: 0, history: {history_checked} acknowledged changes found once each, missing 0, without their write 0",
        if through_link {
            ", through a symlink and its target in turn"
        } else {
            ""
        },
        acked.len()
    );
    assert!(journals > 0, "no kill left a journal to replay");
    if through_link {
        assert!(
            !std::fs::exists(wal_of(&link)).unwrap_or(true),
            "a journal was made beside the link"
        );
    }
    if mode == "writer-checkpointing" {
        assert!(
            checkpoints > kills as u64,
            "too few checkpoints: {checkpoints}"
        );
    }
}

#[test]
fn another_process_reads_live_while_this_one_writes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..5 {
            store
                .save(&env(&format!("a{i}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut reader = child("reader", &path)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut lines = BufReader::new(reader.stdout.take().unwrap_or_else(|| panic!("no stdout")))
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("count "));
        let first = lines.next().unwrap_or_default();
        assert_eq!(first, "count 5", "the reader sees the committed state");
        for i in 5..8 {
            store
                .save(&env(&format!("a{i}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let second = lines.next().unwrap_or_default();
        assert_eq!(second, "count 8", "the reader follows new commits");
        assert!(reader.wait().map(|s| s.success()).unwrap_or(false));
        // A second writer is refused while this one holds the file.
        let out = child("open-for-write", &path)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("locked") && text.contains(&*path.to_string_lossy()),
            "{text}"
        );
    });
}

#[test]
fn without_live_readers_the_file_is_locked_to_readers_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let options = waggle_store::store::redb::RedbOptions::default().live_readers(false);
    let _store = RedbStore::open_with(&path, options).unwrap_or_else(|e| panic!("{e}"));
    let out = child("reader", &path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.status.success(),
        "a reader opened an exclusively locked file"
    );
}

#[test]
fn read_only_handle_refuses_writes_and_missing_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let missing = RedbStore::open_read_only(&path).unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert!(!path.exists(), "a read-only open creates nothing");
    rt().block_on(async {
        RedbStore::open(&path)
            .and_then(RedbStore::close)
            .unwrap_or_else(|e| panic!("{e}"));
        let ro = RedbStore::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            ro.save(&env("x")).await,
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(ro.delete("x").await, Err(Error::ReadOnly { .. })));
        assert!(matches!(
            ro.save_if(&env("x"), Expected::Absent).await,
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(
            ro.delete_if("x", Revision::new(1)).await,
            Err(Error::ReadOnly { .. })
        ));
        assert_eq!(ro.count().await.ok(), Some(0));
    });
}

/// A read-only handle beside a live writer reads each value's revision as
/// the writer issued it: from the redb file after a checkpoint, and from
/// the journal before one.
#[test]
fn a_read_only_handle_sees_the_writers_revisions() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    rt().block_on(async {
        let writer = RedbStore::open_with(&path, RedbOptions::default().checkpoint_ids(4))
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..10 {
            writer
                .save_if(&env(&format!("r{i}")), Expected::Absent)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        writer
            .update("r3", |e| {
                e.ssh_port = 3;
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        writer.delete("r4").await.unwrap_or_else(|e| panic!("{e}"));
        let ro = RedbStore::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
        let want = writer
            .find_all_revisions()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(want.len(), 9);
        assert!(
            writer.stats().checkpoints > 0,
            "nothing reached the redb file"
        );
        assert_eq!(ro.find_all_revisions().await.ok(), Some(want.clone()));
        for v in &want {
            assert_eq!(ro.find_revision(&v.env.id).await.ok().as_ref(), Some(v));
        }
    });
}

#[test]
fn group_commit_batches_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        let store = Arc::new(
            RedbStore::open(dir.path().join("waggle.db")).unwrap_or_else(|e| panic!("{e}")),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..64 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                for i in 0..10 {
                    store
                        .save(&env(&format!("g{t}-{i}")))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        let stats = store.stats();
        println!(
            "group commit: {} saves in {} commits",
            stats.saves, stats.commits
        );
        assert_eq!(stats.saves, 640);
        assert!(
            stats.commits < stats.saves / 2,
            "64 concurrent writers should share commits: {stats:?}"
        );
        assert_eq!(store.count().await.ok(), Some(640));
    });
}

#[test]
fn creates_private_files_and_directories() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("a/b/waggle.db");
    let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&wal_of(&path)), 0o600);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    // A second handle in the same process is refused too, naming the path.
    let again = RedbStore::open(&path).unwrap_err();
    assert!(again.to_string().contains("locked"), "{again}");
    drop(store);
    RedbStore::open(&path).unwrap_or_else(|e| panic!("reopen after drop: {e}"));
}

/// The first journal file beside the store at `path` (the one an open
/// store appends to first).
fn wal_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal0");
    PathBuf::from(p)
}

/// The length of the stored name of `id` (the names tell the saves apart).
async fn name_len(store: &RedbStore, id: &str) -> Option<usize> {
    store.find_by_id(id).await.ok().map(|e| e.name.len())
}

/// Writes go to the journal and move into the redb file at checkpoints and
/// on close; values and the count agree throughout, and a cleanly closed
/// store is one file again.
#[test]
fn checkpoints_move_the_journal_into_the_file() {
    checkpoints_with(RedbOptions::default());
}

/// The same without the cache: whether an id exists (for `delete` and the
/// count) then comes from the redb file, across checkpoints.
#[test]
fn checkpoints_move_the_journal_into_the_file_uncached() {
    checkpoints_with(RedbOptions::default().cache_entries(0));
}

fn checkpoints_with(options: RedbOptions) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let wal = wal_of(&path);
    let big = |i: usize| {
        let mut e = env(&format!("big-{i:04}"));
        e.name = "n".repeat(64 * 1024 + i);
        e
    };
    let expected = 1700 - 170;
    rt().block_on(async {
        let store = RedbStore::open_with(&path, options).unwrap_or_else(|e| panic!("{e}"));
        assert!(wal.exists(), "an open store journals beside its file");
        // 64 KiB names: 1,700 saves are some 110 MiB of journal, three
        // checkpoints' worth: each journal file is used, then reused.
        for i in 0..1700 {
            store.save(&big(i)).await.unwrap_or_else(|e| panic!("{e}"));
            if i % 10 == 9 {
                let gone = format!("big-{:04}", i - 5);
                store.delete(&gone).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // Checkpoints run beside the writes; wait for the third. One starts
        // in a write's round once the one before it has finished: if the
        // second was still running when the writes ended (a loaded
        // machine), the third waits for the next write. Rewriting a record
        // with its own value gives it one without changing what is stored.
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.stats().checkpoints < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            store.save(&big(1)).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let stats = store.stats();
        assert!(stats.checkpoints >= 3, "{stats:?}");
        assert_eq!(store.count().await.ok(), Some(expected));
        // Rewrites of checkpointed ids are not new; a deleted one is, once.
        for i in (0..1700).step_by(17).filter(|i| i % 10 != 4) {
            store.save(&big(i)).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(store.count().await.ok(), Some(expected));
        store.save(&big(4)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(expected + 1));
        store
            .delete("big-0004")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .delete("big-0014")
                .await
                .is_err_and(|e| e.is_not_found())
        );
        assert_eq!(store.count().await.ok(), Some(expected));
        let all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), expected);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
        assert!(
            store
                .find_by_id("big-0004")
                .await
                .is_err_and(|e| e.is_not_found())
        );
        assert_eq!(name_len(&store, "big-1699").await, Some(64 * 1024 + 1699));
        assert_eq!(name_len(&store, "big-0001").await, Some(64 * 1024 + 1));
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    assert!(!wal.exists(), "a clean close leaves one file");
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(expected));
        assert_eq!(name_len(&store, "big-0150").await, Some(64 * 1024 + 150));
        assert!(
            store
                .find_by_id("big-0014")
                .await
                .is_err_and(|e| e.is_not_found())
        );
    });
    println!("checkpoints: {expected} records through the journal and back, records lost: 0");
}

/// A journal that is not this store's is refused, naming it, and neither it
/// nor the store file is changed: replaying it could write another store's
/// data, and dropping it could lose this one's.
#[test]
fn a_journal_that_does_not_belong_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let foreign_journal = rt().block_on(async {
        let sa = RedbStore::open(&a).unwrap_or_else(|e| panic!("{e}"));
        let sb = RedbStore::open(&b).unwrap_or_else(|e| panic!("{e}"));
        sa.save(&env("a1")).await.unwrap_or_else(|e| panic!("{e}"));
        sb.save(&env("b1")).await.unwrap_or_else(|e| panic!("{e}"));
        // a's live journal, holding a1.
        let bytes = std::fs::read(wal_of(&a)).unwrap_or_else(|e| panic!("{e}"));
        sa.close().unwrap_or_else(|e| panic!("{e}"));
        sb.close().unwrap_or_else(|e| panic!("{e}"));
        bytes
    });
    let mut garbage = b"NOT A JOURNAL".to_vec();
    garbage.resize(4096, b'?');
    let wal = wal_of(&b);
    for (case, bytes, says) in [
        (
            "another store's journal",
            foreign_journal,
            "another store file",
        ),
        ("not a journal", garbage, "not a waggle-store journal"),
    ] {
        write(&wal, &bytes);
        let before = files_beside(&b);
        let err = RedbStore::open(&b).expect_err(case);
        let text = err.to_string();
        assert!(
            matches!(err, Error::Open { .. })
                && text.contains(&*wal.to_string_lossy())
                && text.contains(says),
            "{case}: {text}"
        );
        assert!(files_beside(&b) == before, "{case}: a file was modified");
    }
    std::fs::remove_file(&wal).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(&wal).unwrap_or_else(|e| panic!("{e}"));
    let err = RedbStore::open(&b).expect_err("a directory as journal");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_dir(&wal).unwrap_or_else(|e| panic!("{e}"));
    // Moved aside, the store opens with what it had.
    rt().block_on(async {
        let store = RedbStore::open(&b).unwrap_or_else(|e| panic!("{e}"));
        assert!(store.find_by_id("b1").await.is_ok());
        assert!(store.find_by_id("a1").await.is_err());
    });
    println!("journals that do not belong: 3 kinds refused, 0 modified");
}

/// Every file in `path`'s directory, with its contents: what a refusal
/// must leave exactly as it was (nothing changed, nothing created).
/// The bytes of every file beside `path` (and its own).
fn bytes_beside(path: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files_beside(path)
        .into_iter()
        .map(|(p, (bytes, ..))| (p, bytes))
        .collect()
}

/// Every file beside `path` (and it): its bytes, modification time and
/// permissions. Equal before and after means nothing was written, made,
/// removed, or touched.
#[allow(clippy::type_complexity)]
fn files_beside(
    path: &Path,
) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, Option<std::time::SystemTime>, u32)> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map_while(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let meta = std::fs::metadata(e.path()).ok();
            (
                e.path(),
                (
                    std::fs::read(e.path()).unwrap_or_default(),
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map_or(0, |m| m.permissions().mode()),
                ),
            )
        })
        .collect()
}

/// Runs a writer in a child process until it has acknowledged at least
/// `acks` saves, then kills it (`kill -9`): a crash image with a live
/// journal. Returns the ids acknowledged and not being deleted.
fn crash_image(path: &Path, acks: usize) -> Vec<String> {
    let mut proc = child("writer", path)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut kept = Vec::new();
    let mut killed = false;
    // Until the kill, then what it printed before it died: a delete begun
    // after the count was reached still takes its id out.
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(id) = line.strip_prefix("ack ") {
            kept.push(id.to_owned());
        } else if let Some(id) = line.strip_prefix("deleting ") {
            kept.retain(|k| k != id);
        }
        if kept.len() >= acks && !killed {
            proc.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
            killed = true;
        }
    }
    let _ = proc.wait();
    kept
}

/// A store left by a crash needs its journal. Missing, emptied, cut short,
/// another store's, not a journal at all, or damaged before acknowledged
/// writes: each is refused with an error naming the journal file, and no
/// file — store or journal — changes by a byte (redb's crash repair
/// included). Put back, the journal is replayed and nothing is lost.
#[test]
fn a_crashed_store_refuses_a_journal_it_cannot_trust_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let acked = crash_image(&path, 40);
    let [wal0, wal1] = [0, 1].map(|n| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!("-wal{n}"));
        PathBuf::from(p)
    });
    let pristine = bytes_beside(&path);
    assert!(pristine.contains_key(&wal0) && pristine.contains_key(&wal1));
    let journal = pristine[&wal0].clone();
    type Damage = Box<dyn Fn()>;
    let (w0, w1, j) = (wal0.clone(), wal1.clone(), journal.clone());
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "both journal files removed",
            Box::new({
                let (w0, w1) = (w0.clone(), w1.clone());
                move || {
                    let _ = std::fs::remove_file(&w0);
                    let _ = std::fs::remove_file(&w1);
                }
            }),
            "it is missing",
        ),
        (
            "the journal emptied",
            Box::new({
                let w0 = w0.clone();
                move || write(&w0, b"")
            }),
            "it is empty",
        ),
        (
            "the journal truncated",
            Box::new({
                let (w0, j) = (w0.clone(), j.clone());
                move || write(&w0, &j[..4000])
            }),
            "truncated",
        ),
        (
            "another store's journal",
            Box::new({
                let (w0, j) = (w0.clone(), j.clone());
                move || {
                    let mut other = j.clone();
                    other[16] ^= 0xff; // the journal id in the header
                    write(&w0, &other);
                }
            }),
            "another store file",
        ),
        (
            "not a journal",
            Box::new({
                let w0 = w0.clone();
                move || write(&w0, &[b'?'; 70_000])
            }),
            "not a waggle-store journal",
        ),
        (
            "a flipped byte in the first write",
            Box::new({
                let (w0, j) = (w0.clone(), j.clone());
                move || {
                    let mut d = j.clone();
                    d[32 + 17 + 5] ^= 0x01; // inside frame 1's payload
                    write(&w0, &d);
                }
            }),
            "damaged at byte 32",
        ),
    ];
    let restore = || {
        for (p, bytes) in &pristine {
            write(p, bytes);
        }
    };
    for (case, damage, says) in &cases {
        restore();
        damage();
        let before = files_beside(&path);
        let err = match RedbStore::open(&path) {
            Err(e) => e,
            Ok(_) => panic!("{case}: opened"),
        };
        let text = err.to_string();
        assert!(
            matches!(err, Error::Open { .. }) && text.contains(says) && text.contains("-wal"),
            "{case}: {text}"
        );
        assert!(
            files_beside(&path) == before,
            "{case}: a refusal changed or created a file"
        );
    }
    restore();
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for id in &acked {
            assert!(store.find_by_id(id).await.is_ok(), "{id} lost");
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    println!(
        "crash image with {} acknowledged saves: {} untrustworthy journals refused, 0 files modified, 0 records lost once put back",
        acked.len(),
        cases.len()
    );
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{e}"));
}

fn valid_store(path: &Path, n: usize) {
    rt().block_on(async {
        let store = RedbStore::open(path).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..n {
            store
                .save(&env(&format!("v{i:04}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A foreign redb file: someone else's tables.
fn foreign_redb(path: &Path) {
    let db = redb::Database::create(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("their_data");
        let mut t = txn.open_table(table).unwrap_or_else(|e| panic!("{e}"));
        t.insert("answer", 42).unwrap_or_else(|e| panic!("{e}"));
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// The tables as format 6 lays them out.
const RECORDS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("waggle_records");
const META: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("waggle_metadata");
/// The tables before format 6, keyed by `&str`.
const LEGACY_META: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("waggle_meta");
const LEGACY_RECORDS: redb::TableDefinition<&str, &[u8]> =
    redb::TableDefinition::new("waggle_environments");

/// Sets (`Some`) or removes (`None`) metadata keys of a closed store.
fn set_meta(path: &Path, edits: &[(&str, Option<&str>)]) {
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let mut t = txn.open_table(META).unwrap_or_else(|e| panic!("{e}"));
        for &(key, value) in edits {
            match value {
                Some(value) => t.insert(key.as_bytes(), value.as_bytes()).map(drop),
                None => t.remove(key.as_bytes()).map(drop),
            }
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// Like [`set_meta`], on a store in the layout before format 6.
fn set_legacy_meta(path: &Path, edits: &[(&str, Option<&str>)]) {
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let mut t = txn
            .open_table(LEGACY_META)
            .unwrap_or_else(|e| panic!("{e}"));
        for &(key, value) in edits {
            match value {
                Some(value) => t.insert(key, value).map(drop),
                None => t.remove(key).map(drop),
            }
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// Turns a closed store into the layout before format 6 (tables keyed
/// by `&str`), at `format_version` 5: what 0.4 and earlier wrote.
fn to_legacy_layout(path: &Path) {
    use redb::ReadableTable;
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let read = |t: &redb::Table<&[u8], &[u8]>| -> Vec<(Vec<u8>, Vec<u8>)> {
            t.iter()
                .unwrap_or_else(|e| panic!("{e}"))
                .map_while(Result::ok)
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .collect()
        };
        let meta = read(&txn.open_table(META).unwrap_or_else(|e| panic!("{e}")));
        let records = read(&txn.open_table(RECORDS).unwrap_or_else(|e| panic!("{e}")));
        for name in ["waggle_meta", "waggle_metadata", "waggle_records"] {
            // By name: the handle's types are not checked.
            txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap_or_else(|e| panic!("{e}"));
        let mut t = txn
            .open_table(LEGACY_META)
            .unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in &meta {
            t.insert(text(k).as_str(), text(v).as_str())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        t.insert("format_version", "5")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut t = txn
            .open_table(LEGACY_RECORDS)
            .unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in &records {
            t.insert(text(k).as_str(), v.as_slice())
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// A store written by the first format (no journal keys) opens, keeps its
/// records, and is upgraded to the current format on its first writable
/// open, so that a build that would not replay the journal refuses it.
#[test]
fn a_version_1_store_is_upgraded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 5);
    to_legacy_layout(&path);
    set_legacy_meta(
        &path,
        &[
            ("format_version", Some("1")),
            ("journal_id", None),
            ("journal_next", None),
        ],
    );
    assert_eq!(legacy_meta(&path, "journal_id"), None);
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(5));
        store
            .save(&env("after"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    assert_eq!(
        meta(&path, "format_version").as_deref(),
        Some(
            waggle_store::store::redb::FORMAT_VERSION
                .to_string()
                .as_str()
        )
    );
    assert!(meta(&path, "journal_id").is_some());
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(6));
    });
}

/// The raw values of a closed store's records table.
fn raw_values(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_read().unwrap_or_else(|e| panic!("{e}"));
    let t = txn.open_table(RECORDS).unwrap_or_else(|e| panic!("{e}"));
    t.iter()
        .unwrap_or_else(|e| panic!("{e}"))
        .map_while(Result::ok)
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k.value()).into_owned(),
                v.value().to_vec(),
            )
        })
        .collect()
}

/// Writes raw values into a closed store's records table.
fn put_raw(path: &Path, values: &[(&[u8], &[u8])]) {
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let mut t = txn.open_table(RECORDS).unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in values {
            t.insert(*k, *v).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// A format 2 store (records without a checksum, no `journal_state`), one
/// record already in format 3 (a checksum, no revision), opens and reads
/// as before, every record at revision 0; a record gains its checksum and
/// a revision when it is next written, the others keep reading; the file
/// is format 4 afterwards and records the last revision issued.
#[test]
fn a_format_2_store_reads_and_upgrades() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 4);
    to_legacy_layout(&path);
    // Back to format 2: plain records, no journal state.
    let written: Vec<Environment> = (0..4).map(|i| env(&format!("v{i:04}"))).collect();
    {
        let db = redb::Database::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut t = txn
                .open_table(LEGACY_RECORDS)
                .unwrap_or_else(|e| panic!("{e}"));
            for e in &written {
                let plain = waggle_store::record::encode(e).unwrap_or_default();
                let value = if e.id == "v0002" {
                    let mut v = vec![0x01];
                    v.extend_from_slice(&crc32fast::hash(&plain).to_le_bytes());
                    v.extend_from_slice(&plain);
                    v
                } else {
                    plain
                };
                t.insert(e.id.as_str(), value.as_slice())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    set_legacy_meta(
        &path,
        &[("format_version", Some("2")), ("journal_state", None)],
    );
    // Before its first writable open it is refused read-only, untouched.
    let before = files_beside(&path);
    let refused = RedbStore::open_read_only(&path).map(drop);
    assert!(
        matches!(&refused, Err(Error::Open { reason, .. }) if reason.contains("older waggle-store")),
        "{refused:?}"
    );
    assert!(
        files_beside(&path) == before,
        "a refused open changed a file"
    );
    let rewritten = rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all, written);
        for v in store.find_all_revisions().await.unwrap_or_default() {
            assert_eq!(
                v.revision,
                Revision::new(0),
                "{}: an older record",
                v.env.id
            );
        }
        store
            .save(&env("v0001"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rewritten = store
            .find_revision("v0001")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rewritten.revision > Revision::new(0));
        store.close().unwrap_or_else(|e| panic!("{e}"));
        rewritten.revision
    });
    let raw = raw_values(&path);
    assert_eq!(
        raw["v0001"].first(),
        Some(&0x02),
        "rewritten: checksum and revision"
    );
    assert_eq!(
        raw["v0002"].first(),
        Some(&0x01),
        "untouched: as it was (format 3)"
    );
    assert_eq!(
        raw["v0003"].first(),
        Some(&b'{'),
        "untouched: as it was (format 2)"
    );
    assert_eq!(meta(&path, "format_version").as_deref(), Some("6"));
    // Older builds read the old metadata table: it says the file is newer.
    assert_eq!(legacy_meta(&path, "format_version").as_deref(), Some("6"));
    assert_eq!(
        legacy_tables(&path),
        [
            "waggle_changes",
            "waggle_history",
            "waggle_meta",
            "waggle_metadata",
            "waggle_records"
        ]
    );
    // The history starts with the upgrade: nothing before it is missing
    // here (every older record is at revision 0), and the rewrite is in it.
    assert_eq!(meta(&path, "history").as_deref(), Some("on"));
    assert_eq!(meta(&path, "pruned_through").as_deref(), Some("0"));
    assert_eq!(
        meta(&path, "last_revision"),
        Some(rewritten.get().to_string())
    );
    assert_eq!(meta(&path, "journal_state").as_deref(), Some("closed"));
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.find_all().await.map(|a| a.len()).ok(), Some(4));
        // The next revision follows the one recorded.
        store
            .delete("v0001")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = store
            .save_if(&env("v0001"), Expected::Absent)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(again > rewritten, "{again} after {rewritten}");
    });
}

/// One metadata value of a closed store.
fn meta(path: &Path, key: &str) -> Option<String> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_read().unwrap_or_else(|e| panic!("{e}"));
    let t = txn.open_table(META).unwrap_or_else(|e| panic!("{e}"));
    t.get(key.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
}

/// One value of the metadata table older builds read.
fn legacy_meta(path: &Path, key: &str) -> Option<String> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_read().unwrap_or_else(|e| panic!("{e}"));
    let t = txn
        .open_table(LEGACY_META)
        .unwrap_or_else(|e| panic!("{e}"));
    t.get(key)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|v| v.value().to_owned())
}

/// The names of a closed store's tables, sorted.
fn legacy_tables(path: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_read().unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|t| t.name().to_owned())
        .collect();
    names.sort();
    names
}

/// Every bad file is refused with an error naming the path, without a
/// panic and without changing the file.
#[test]
fn bad_files_are_refused_untouched() {
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 7] = [
        (
            "random bytes",
            |p| {
                write(
                    p,
                    &(0..8192u32)
                        .map(|i| (i * 7919 % 251) as u8)
                        .collect::<Vec<_>>(),
                )
            },
            "not a redb database",
        ),
        (
            "a text file",
            |p| write(p, b"hello, I am somebody's notes\n"),
            "not a redb database",
        ),
        ("one byte", |p| write(p, b"x"), "not a redb database"),
        (
            "a redb file of another application",
            foreign_redb,
            "another application",
        ),
        (
            "a newer schema",
            |p| {
                valid_store(p, 3);
                set_meta(p, &[("schema_version", Some("99"))]);
            },
            "schema_version is 99",
        ),
        (
            "a newer format",
            |p| {
                valid_store(p, 3);
                set_meta(p, &[("format_version", Some("7"))]);
            },
            "format_version is 7",
        ),
        (
            "metadata naming another format",
            |p| {
                valid_store(p, 1);
                set_meta(p, &[("format", Some("other"))]);
            },
            "does not name waggle-store",
        ),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (i, (case, make, says)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.db"));
        make(&path);
        let before = files_beside(&path);
        let err = match RedbStore::open(&path) {
            Err(e) => e,
            Ok(_) => panic!("case {case:?}: opened"),
        };
        let text = err.to_string();
        assert!(matches!(err, Error::Open { .. }), "case {case:?}: {err:?}");
        assert!(text.contains(says), "case {case:?}: {text}");
        assert!(
            text.contains(&*path.to_string_lossy()),
            "case {case:?}: the error names the path: {text}"
        );
        assert!(
            files_beside(&path) == before,
            "case {case:?}: a file was modified or created"
        );
        let ro = RedbStore::open_read_only(&path);
        assert!(ro.is_err(), "case {case:?}: opened read-only");
    }
    println!("bad files: {} kinds refused, 0 modified", 7);
}

/// A store path that is a symbolic link to nothing is refused, naming the
/// link and its target, and nothing is created: no store, no journal, no
/// `.creating-*` file (it used to recurse until the stack overflowed).
#[test]
fn a_dangling_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let link = dir.path().join("waggle.db");
    let target = dir.path().join("moved-away.db");
    std::os::unix::fs::symlink(&target, &link).unwrap_or_else(|e| panic!("{e}"));
    let writable = RedbStore::open(&link).map(drop);
    let read_only = RedbStore::open_read_only(&link).map(drop);
    for (how, result) in [("open", writable), ("open_read_only", read_only)] {
        let message = match result {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{how} of a dangling link succeeded"),
        };
        assert!(
            message.contains(&link.display().to_string())
                && message.contains(&target.display().to_string()),
            "{how}: the error names both paths: {message}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .map_while(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("waggle.db")],
        "only the link"
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(
        err.to_string().contains("DIR/waggle.db"),
        "the error says what to do: {err}"
    );
}

#[test]
fn a_fifo_or_device_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let fifo = dir.path().join("fifo.db");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(made, "mkfifo failed");
    for path in [fifo.as_path(), Path::new("/dev/null")] {
        let err = RedbStore::open(path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = RedbStore::open_read_only(path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

/// A zero-length file, and a redb file without tables (a crash between
/// redb creating a file and the commit that makes it ours), become new
/// stores rather than being refused.
#[test]
fn empty_files_become_new_stores() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let zero_length = dir.path().join("empty.db");
    write(&zero_length, b"");
    let no_tables = dir.path().join("bare.db");
    drop(redb::Database::create(&no_tables).unwrap_or_else(|e| panic!("{e}")));
    for path in [zero_length, no_tables] {
        rt().block_on(async {
            let store =
                RedbStore::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            store
                .save(&env("z"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(store.count().await.ok(), Some(1));
        });
    }
}

/// `kill -9` while a new store is being created (0 to 39 ms after the
/// writer starts, a fresh path each time): every later open succeeds and
/// holds what was acknowledged. A store made in place could be left with
/// half a header, which every open then refuses.
#[test]
fn survives_kill_9_while_creating() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let (mut kills, mut created) = (0, 0);
    for k in 0..40_u64 {
        let path = dir.path().join(format!("new-{k}.db"));
        let mut proc = child("writer", &path)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        std::thread::sleep(Duration::from_millis(k));
        proc.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
        let _ = proc.wait();
        kills += 1;
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        // Saves acknowledged and not being deleted since.
        let deleting = tagged(lines.iter().map(String::as_str), "deleting ");
        let mut acked = tagged(lines.iter().map(String::as_str), "ack ");
        acked.retain(|id| !deleting.contains(id));
        created += usize::from(path.exists());
        rt.block_on(async {
            let store = RedbStore::open(&path)
                .unwrap_or_else(|e| panic!("open after a kill {k} ms in: {e}"));
            for id in &acked {
                assert!(store.find_by_id(id).await.is_ok(), "{id} lost");
            }
            store.close().unwrap_or_else(|e| panic!("{e}"));
        });
    }
    println!(
        "kill -9 while creating: kills: {kills}, stores left by the writer: {created}, opens refused: 0, records lost: 0"
    );
}

/// Damaged stores: truncated or with bytes flipped. Whatever the damage
/// hits, opening and reading return errors or data — never a panic.
#[test]
fn damaged_stores_never_panic() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = dir.path().join("good.db");
    valid_store(&good, 200);
    let bytes = std::fs::read(&good).unwrap_or_default();
    let rt = rt();
    let (mut tried, mut refused, mut read_errors) = (0, 0, 0);
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [bytes.len() / 2, bytes.len() - 1, 4096, 512, 100] {
        damaged.push((
            format!("truncated to {cut} bytes"),
            bytes[..cut.min(bytes.len())].to_vec(),
        ));
    }
    for at in (0..bytes.len()).step_by(bytes.len() / 24 + 1) {
        let mut b = bytes.clone();
        for x in b.iter_mut().skip(at).take(64) {
            *x ^= 0x5a;
        }
        damaged.push((format!("64 bytes flipped at {at}"), b));
    }
    for (case, b) in damaged {
        let path: PathBuf = dir.path().join("damaged.db");
        write(&path, &b);
        tried += 1;
        let outcome = std::panic::catch_unwind(|| {
            rt.block_on(async {
                // Read-only first (it changes nothing): a refusal names the path too.
                if let Err(e) = RedbStore::open_read_only(&path) {
                    assert!(
                        e.to_string().contains(&*path.to_string_lossy()),
                        "case {case:?}, read-only: {e}"
                    );
                }
                let before = files_beside(&path);
                match RedbStore::open(&path) {
                    Err(e) => {
                        assert!(
                            e.to_string().contains(&*path.to_string_lossy()),
                            "case {case:?}: {e}"
                        );
                        assert!(
                            files_beside(&path) == before,
                            "case {case:?}: refused, yet changed"
                        );
                        1
                    }
                    Ok(store) => {
                        let a = store.find_all().await.is_err();
                        let b = store.find_by_id("v0100").await.is_err();
                        let c = store.count().await.is_err();
                        let _ = store.save(&env("after-damage")).await;
                        if a || b || c { 2 } else { 0 }
                    }
                }
            })
        });
        match outcome {
            Ok(1) => refused += 1,
            Ok(2) => read_errors += 1,
            Ok(_) => {}
            Err(_) => panic!("case {case:?}: panicked"),
        }
        let _ = std::fs::remove_file(&path);
    }
    println!(
        "damaged files: {tried} tried, {refused} refused at open, {read_errors} gave read errors, 0 panics reached the caller"
    );
}

/// A record that does not decode is reported as Corrupt with its id by
/// find_by_id and find_all, and the rest of the store still works.
#[test]
fn undecodable_record_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 3);
    let newer = String::from_utf8(waggle_store::record::encode(&env("v0002")).unwrap_or_default())
        .unwrap_or_default()
        .replace("\"schema_version\":1", "\"schema_version\":5");
    put_raw(
        &path,
        &[
            (b"v0001", b"{\"schema_version\":1,\"environment\":{\"id\":"),
            (b"v0002", newer.as_bytes()),
        ],
    );
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        match store.find_by_id("v0001").await {
            Err(Error::Corrupt { id, .. }) => assert_eq!(id, "v0001"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        match store.find_by_id("v0002").await {
            Err(Error::UnsupportedSchema {
                id,
                found: 5,
                supported: 1,
            }) => assert_eq!(id, "v0002"),
            other => panic!("expected UnsupportedSchema, got {other:?}"),
        }
        assert!(store.find_by_id("v0000").await.is_ok());
        assert!(matches!(store.find_all().await, Err(Error::Corrupt { .. })));
        // Saving over the bad record repairs it.
        store
            .save(&env("v0001"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.find_by_id("v0001").await.is_ok());
    });
}

/// A flipped bit inside a stored record: the writable open verifies every
/// page and refuses the file untouched; a read-only handle (which cannot
/// verify pages) reports the record as Corrupt naming the id — never a
/// changed value — and the other records still read; `check` lists it.
#[test]
fn a_flipped_bit_in_a_record_is_corruption_not_data() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 50);
    // "name" becomes "Name": still valid JSON.
    let flipped = flip_copies(&path, b"name of v0042", 0, 0x20, |_| true);
    assert!(flipped > 0, "the record was not found in the file");
    refused_as_corrupt(&path);
    rt().block_on(async {
        let store = RedbStore::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
        match store.find_by_id("v0042").await {
            Err(Error::Corrupt { id, reason }) => {
                assert_eq!(id, "v0042");
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(store.find_all().await, Err(Error::Corrupt { .. })));
        assert_eq!(
            store.find_by_id("v0041").await.map(|e| e.name).ok(),
            Some("name of v0041".to_owned())
        );
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    // redb's page checksums catch it too when asked: the whole check.
    let report = RedbStore::check(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.integrity, Some(false), "{report:?}");
    assert_eq!(report.records_ok, 49);
    assert!(
        matches!(report.corrupt.as_slice(), [(id, _)] if id == "v0042"),
        "{report:?}"
    );
    println!(
        "a flipped bit in a record: {flipped} copies flipped, reported as corrupt, 0 changed values returned"
    );
}

/// A record damaged behind the store's back (its pages intact, its own
/// checksum wrong) is `Corrupt` when read, and when a conditional write
/// needs its revision; a plain `delete` or `save` still replaces it, which
/// is how an operator repairs what `check` lists.
#[test]
fn a_corrupt_record_can_be_deleted_or_overwritten() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 4);
    let garbage: &[u8] = b"\x02 not what was sealed";
    put_raw(
        &path,
        &[
            (b"v0001", garbage),
            (b"v0002", garbage),
            (b"v0003", garbage),
        ],
    );
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            store.find_by_id("v0001").await,
            Err(Error::Corrupt { .. })
        ));
        match store
            .save_if(&env("v0003"), Expected::Revision(Revision::new(3)))
            .await
        {
            Err(Error::Corrupt { id, .. }) => assert_eq!(id, "v0003"),
            other => panic!("a conditional write over a damaged record: {other:?}"),
        }
        store
            .delete("v0001")
            .await
            .unwrap_or_else(|e| panic!("deleting a damaged record: {e}"));
        let fresh = env("v0002");
        store
            .save(&fresh)
            .await
            .unwrap_or_else(|e| panic!("overwriting a damaged record: {e}"));
        assert_eq!(store.find_by_id("v0002").await.ok(), Some(fresh));
        assert!(store.find_by_id("v0001").await.unwrap_err().is_not_found());
        assert_eq!(store.count().await.ok(), Some(3));
    });
}

#[test]
fn reopen_is_quick_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 1000);
    let started = Instant::now();
    let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "reopen of 1,000 records after a clean close: {:?}",
        started.elapsed()
    );
    assert_eq!(rt().block_on(store.count()).ok(), Some(1000));
}

/// Dropping a store closes the file cleanly: a read-only open, which
/// refuses files that need recovery, succeeds. After kill -9 it is refused
/// until a writer recovers the file.
#[test]
fn drop_closes_cleanly_and_kill_needs_recovery() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        store
            .save(&env("a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(store);
    });
    let clean = RedbStore::open_read_only(&path);
    assert!(clean.is_ok(), "after drop: {:?}", clean.err());
    drop(clean);

    let mut proc = child("writer", &path)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lines =
        BufReader::new(proc.stdout.take().unwrap_or_else(|| panic!("no stdout"))).lines();
    let _ = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("ack ")));
    proc.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = proc.wait();
    let err = RedbStore::open_read_only(&path).unwrap_err().to_string();
    assert!(
        err.contains("needs recovery") && err.contains("open it once for writing"),
        "{err}"
    );
    RedbStore::open(&path)
        .and_then(RedbStore::close)
        .unwrap_or_else(|e| panic!("recovery: {e}"));
    assert!(RedbStore::open_read_only(&path).is_ok(), "recovered");
}

#[test]
fn a_path_through_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("plain");
    write(&file, b"x");
    let err = RedbStore::open(file.join("waggle.db")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(
        text.contains("plain/waggle.db") && text.contains("check the path"),
        "{text}"
    );
}

/// Fault injection: the disk "fills up" (a file-size limit, RLIMIT_FSIZE,
/// with SIGXFSZ ignored, so writes fail with EFBIG). Saves must fail with a
/// typed error and no panic, and every acknowledged save must be there
/// after the limit is lifted and the store reopened.
#[test]
fn disk_full_loses_no_acknowledged_save() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // bash's `ulimit -f` counts 1 KiB blocks: 3 MiB here. An ignored signal
    // stays ignored across exec.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 3072; exec "$0" "$@""#)
        .arg(&exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, "fill-disk")
        .env(CHILD_PATH, &path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the writer died instead of failing cleanly:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked = tagged(text.lines(), "ack ");
    let errors = tagged(text.lines(), "err ");
    assert!(
        acked.len() > 10,
        "too few saves before the limit: {}",
        acked.len()
    );
    assert_eq!(errors.len(), 5, "saves past the limit must fail: {text}");
    assert!(
        errors.iter().all(|e| e.contains("storage failure")),
        "{errors:?}"
    );
    // Lift the limit: recover, count what survived.
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("reopen after disk full: {e}"));
        let all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
        let ids: std::collections::BTreeSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
        let lost: Vec<&&str> = acked.iter().filter(|id| !ids.contains(**id)).collect();
        assert!(lost.is_empty(), "acknowledged saves lost after disk full: {lost:?}");
        store.save(&env("after")).await.unwrap_or_else(|e| panic!("the store must take writes again: {e}"));
        println!(
            "disk full: {} acknowledged saves, {} refused with a typed error (first: {}), records lost: 0",
            acked.len(),
            errors.len(),
            errors.first().copied().unwrap_or_default()
        );
    });
}

/// History switched off and on again: off, nothing is recorded and the
/// history is `HistoryOff`; on again, it starts after the last revision, a
/// follower from before is told (`HistoryPruned`), new writes are kept.
/// A background sweep prunes what the retention lets go on open. And
/// `check` finds a stored id whose latest change is missing.
#[test]
fn history_off_on_swept_and_checked() {
    use waggle_store::{HistoryOptions, Retention};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let with = |retention: Retention| {
        RedbOptions::default().history(HistoryOptions::default().retention(retention))
    };
    let rt = rt();
    let last_off = rt.block_on(async {
        let store =
            RedbStore::open_with(&path, with(Retention::Off)).unwrap_or_else(|e| panic!("{e}"));
        store
            .save(&env("quiet"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            store.history("quiet").await,
            Err(Error::HistoryOff)
        ));
        assert!(matches!(
            store.changes(Revision::new(0), 10).await,
            Err(Error::HistoryOff)
        ));
        let r = store
            .find_revision("quiet")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .revision;
        store.close().unwrap_or_else(|e| panic!("{e}"));
        r
    });
    assert_eq!(meta(&path, "history").as_deref(), Some("off"));
    rt.block_on(async {
        let store =
            RedbStore::open_with(&path, with(Retention::All)).unwrap_or_else(|e| panic!("{e}"));
        match store.changes(Revision::new(0), 10).await {
            Err(Error::HistoryPruned { through, .. }) => assert_eq!(through, last_off),
            other => panic!("a follower from before the history started: {other:?}"),
        }
        assert!(
            store
                .history("quiet")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        store
            .save(&env("loud"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.delete("loud").await.unwrap_or_else(|e| panic!("{e}"));
        let after = store
            .changes(last_off, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.len(), 2, "{after:?}");
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    // Opened with a window the changes are already past: the checkpointer
    // sweeps them when the store opens.
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(async {
        let store = RedbStore::open_with(&path, with(Retention::For(Duration::from_secs(1))))
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store
            .history("loud")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the background sweep did not prune"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store
            .save(&env("kept"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    let report = RedbStore::check(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_ok() && report.history_ok == 1, "{report:?}");
    // Damage: the latest change of "kept" removed behind the store's back.
    {
        use redb::ReadableTable;
        let db = redb::Database::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        {
            let changes: redb::TableDefinition<u64, &[u8]> =
                redb::TableDefinition::new("waggle_changes");
            let mut t = txn.open_table(changes).unwrap_or_else(|e| panic!("{e}"));
            let last = t
                .last()
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|(k, _)| k.value())
                .unwrap_or_else(|| panic!("no change"));
            t.remove(last).unwrap_or_else(|e| panic!("{e}"));
        }
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    let report = RedbStore::check(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(
        report
            .history
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["kept"],
        "{report:?}"
    );
}

/// A watcher in another process than the writer: it follows the journal
/// while the writer writes, and after the writer is killed (-9) it has
/// every change the recovered store holds — every acknowledged write among
/// them — in order, once each, and nothing else.
#[test]
fn a_watcher_in_another_process_survives_the_writers_kill_9() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    let mut proc = child("writer", &path)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let rt = rt();
    let watched = rt.block_on(async {
        let started = Instant::now();
        let store = loop {
            match RedbStore::open_read_only(&path) {
                Ok(store) => break store,
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("the reader could not open the store: {e}"),
            }
        };
        let mut watch = store.watch(Revision::new(0));
        let mut watched = Vec::new();
        let mut killed = false;
        loop {
            if !killed && started.elapsed() > Duration::from_millis(400) {
                proc.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
                let _ = proc.wait();
                killed = true;
            }
            let next = std::future::poll_fn(|cx| watch.as_mut().poll_next(cx));
            match tokio::time::timeout(Duration::from_millis(500), next).await {
                Ok(Some(Ok(change))) => watched.push(change),
                Ok(other) => panic!("the watcher stopped: {other:?}"),
                // Nothing new for half a second after the kill: all read.
                Err(_) if killed => break watched,
                Err(_) => {}
            }
        }
    });
    // Killed and reaped above; this only makes sure of it.
    let _ = proc.kill();
    let _ = proc.wait();
    let acked: Vec<String> = tagged(
        lines.join().unwrap_or_default().iter().map(String::as_str),
        "ack ",
    )
    .into_iter()
    .map(str::to_owned)
    .collect();
    let recovered = rt.block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut all = Vec::new();
        let mut cursor = Revision::new(0);
        loop {
            let page = store
                .changes(cursor, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            all.extend(page);
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
        all
    });
    let seen: std::collections::BTreeSet<&str> = watched.iter().map(|c| c.id.as_str()).collect();
    let missed: Vec<&String> = acked
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    println!(
        "watch from another process across a kill -9: {} changes watched, {} saves acknowledged, acknowledged missed: {}, watched and not in the recovered store: {}",
        watched.len(),
        acked.len(),
        missed.len(),
        watched.len().saturating_sub(recovered.len())
    );
    assert!(
        acked.len() > 10,
        "the writer acknowledged too little to test"
    );
    assert!(
        missed.is_empty(),
        "acknowledged saves the watcher never reported: {missed:?}"
    );
    assert!(
        watched == recovered,
        "the watcher reported {} changes; the recovered store holds {}: they must be the same, in order",
        watched.len(),
        recovered.len()
    );
}

/// A store whose directory has become read-only (closed: its journal
/// must be made), and one left by a crash whose journal files have become
/// read-only: a writable open is refused, saying why, and every file is
/// byte for byte and to the nanosecond as it was. Run as an unprivileged
/// user (root ignores modes).
#[test]
fn a_refused_open_in_a_read_only_directory_changes_nothing() {
    use std::os::unix::process::CommandExt;
    let root = nix_is_root();
    for crashed in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let store_dir = dir.path().join("store");
        let path = store_dir.join("waggle.db");
        if crashed {
            crash_with_journal(&path);
        } else {
            rt().block_on(async {
                let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
                store
                    .save(&env("kept"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                store.close().unwrap_or_else(|e| panic!("{e}"));
            });
        }
        if root {
            // Hand the store to an unprivileged user.
            let status = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(&store_dir)
                .status()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(status.success());
        }
        if crashed {
            for wal in ["waggle.db-wal0", "waggle.db-wal1"] {
                std::fs::set_permissions(
                    store_dir.join(wal),
                    std::fs::Permissions::from_mode(0o400),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        } else {
            std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o500))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let before = files_beside(&path);
        let mut open = child("open-for-write", &path);
        if root {
            // A copy of this binary the unprivileged user can run, wherever
            // the checkout is.
            let exe = dir.path().join("redb_store-test");
            std::fs::copy(
                std::env::current_exe().unwrap_or_else(|e| panic!("{e}")),
                &exe,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
            open = Command::new(&exe);
            open.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
                .env(CHILD, "open-for-write")
                .env(CHILD_PATH, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .current_dir(dir.path())
                .uid(65534)
                .gid(65534);
        }
        let out = open.output().unwrap_or_else(|e| panic!("{e}"));
        let said = String::from_utf8_lossy(&out.stdout);
        let after = files_beside(&path);
        std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !said.contains("opened") && said.contains("cannot open store"),
            "crashed {crashed}: the open was not refused: {said}"
        );
        assert!(
            after == before,
            "crashed {crashed}: a refused open changed {:?}",
            after
                .iter()
                .filter(|(name, v)| before.get(*name) != Some(v))
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        );
    }
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

/// A store left by a `kill -9` of a writer, its journal beside it.
fn crash_with_journal(path: &Path) {
    let mut proc = child("writer", path)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    // Some writes acknowledged, then the kill.
    for _ in 0..20 {
        let _ = lines.next();
    }
    let _ = proc.kill();
    let _ = proc.wait();
}

/// A key damaged where the page check cannot see it (its page's checksum
/// made anew, as redb does for a write behind the store's back): bytes
/// that are not UTF-8. Reads that meet it return `Corrupt` naming it, the
/// other records still read, `check` lists it — and no panic happens
/// anywhere (none contained either).
/// Held by the tests that count contained panics (a process-wide count).
static COUNTING_PANICS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_damaged_key_is_corrupt_never_a_panic() {
    let _counting = COUNTING_PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 4);
    let value = raw_values(&path)["v0001"].clone();
    put_raw(&path, &[(b"v\xff0001", value.as_slice())]);
    let panics = waggle_store::store::redb::contained_panics();
    rt().block_on(async {
        for read_only in [false, true] {
            let store = if read_only {
                RedbStore::open_read_only(&path)
            } else {
                RedbStore::open(&path)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            match store.find_all().await {
                Err(Error::Corrupt { id, reason }) => {
                    assert_eq!(id, "v\u{fffd}0001");
                    assert!(reason.contains("ff30303031"), "{reason}");
                    assert!(reason.contains("not UTF-8"), "{reason}");
                }
                other => panic!("read_only {read_only}: expected Corrupt, got {other:?}"),
            }
            assert!(store.find_by_id("v0002").await.is_ok());
            assert!(matches!(
                store.find_by_id("v\u{fffd}0001").await,
                Err(Error::NotFound { .. })
            ));
            drop(store);
        }
    });
    let report = RedbStore::check(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(report.records_ok, 4);
    assert!(
        matches!(report.corrupt.as_slice(), [(id, why)] if id == "v\u{fffd}0001" && why.contains("key is damaged")),
        "{report:?}"
    );
    assert_eq!(
        waggle_store::store::redb::contained_panics(),
        panics,
        "a panic was caught on the way"
    );
    println!(
        "a damaged key: Corrupt from find_all (writable and read-only), listed by check, 0 panics"
    );
}

/// A file written before format 6 whose record key was damaged to bytes
/// that are not UTF-8 (there, redb decodes keys as `&str` and panics):
/// with the page check it is refused as damaged pages; without it, the
/// upgrade meets the key, the panic inside redb is contained quietly, and
/// the open is refused as Corrupt naming where — every file as it was.
#[test]
fn a_damaged_key_in_an_older_file_refuses_its_upgrade_untouched() {
    let _counting = COUNTING_PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    valid_store(&path, 4);
    to_legacy_layout(&path);
    // The key, not the id inside the record (after `"`) or the name
    // (after a space).
    let flipped = flip_copies(&path, b"v0002", 1, 0x80, |before| {
        before != b'"' && before != b' '
    });
    assert!(flipped > 0, "the key was not found");
    let before = files_beside(&path);
    refused_as_corrupt(&path);
    let panics = waggle_store::store::redb::contained_panics();
    match RedbStore::open_with(&path, RedbOptions::default().verify_on_open(false)) {
        Err(e @ Error::Open { .. }) => {
            assert!(e.to_string().contains("key is damaged"), "{e}");
            assert!(e.to_string().contains("v0001"), "names where: {e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(waggle_store::store::redb::contained_panics() > panics);
    assert!(files_beside(&path) == before, "a refusal changed a file");
}

/// Flips `mask` into byte `offset` of every copy of `needle` in the file
/// at `path` whose preceding byte `keep` accepts; returns how many.
fn flip_copies(
    path: &Path,
    needle: &[u8],
    offset: usize,
    mask: u8,
    keep: impl Fn(u8) -> bool,
) -> usize {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    let mut flipped = 0;
    for at in 1..bytes.len().saturating_sub(needle.len()) {
        if bytes[at..].starts_with(needle) && keep(bytes[at - 1]) {
            bytes[at + offset] ^= mask;
            flipped += 1;
        }
    }
    write(path, &bytes);
    flipped
}

/// A writable open of `path` is refused as corrupt, every file as it was.
fn refused_as_corrupt(path: &Path) {
    let before = files_beside(path);
    match RedbStore::open(path) {
        Err(e @ Error::Open { .. }) => assert!(e.to_string().contains("corrupt"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(files_beside(path) == before, "the refusal changed a file");
}

/// A new store is born with its history's state: a read-only handle that
/// opens it while its first writer is still opening it (as a watcher
/// started beside a server does) never finds the history off.
#[test]
fn a_new_store_is_never_seen_without_its_history() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const STORES: usize = 40;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths: Arc<Vec<PathBuf>> = Arc::new(
        (0..STORES)
            .map(|i| dir.path().join(format!("s{i}.db")))
            .collect(),
    );
    let current = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (paths, current, done) = (Arc::clone(&paths), Arc::clone(&current), Arc::clone(&done));
        std::thread::spawn(move || {
            let rt = rt();
            let (mut opened, mut off) = (0usize, 0usize);
            while !done.load(Ordering::SeqCst) {
                let path = &paths[current.load(Ordering::SeqCst).min(STORES - 1)];
                let Ok(store) = RedbStore::open_read_only(path) else {
                    continue;
                };
                opened += 1;
                if let Err(Error::HistoryOff) = rt.block_on(store.changes(Revision::new(0), 1)) {
                    off += 1;
                }
            }
            (opened, off)
        })
    };
    let rt = rt();
    for (i, path) in paths.iter().enumerate() {
        current.store(i, Ordering::SeqCst);
        let store = RedbStore::open(path).unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(store.save(&env("first")))
            .unwrap_or_else(|e| panic!("{e}"));
        store.close().unwrap_or_else(|e| panic!("{e}"));
    }
    done.store(true, Ordering::SeqCst);
    let (opened, off) = reader
        .join()
        .unwrap_or_else(|_| panic!("the reader panicked"));
    println!(
        "{STORES} new stores, {opened} read-only opens beside their first writer: history off {off} times"
    );
    assert!(opened > 0, "the reader never opened a store");
    assert_eq!(off, 0, "a new store was seen without its history");
}

/// A store whose records table is gone from redb's table of tables (its
/// name damaged there, on a page a read-only open never checks) is damage
/// on every open — writable, without the page check, read-only — never an
/// empty store that a write would then make anew; and no refusal changes a
/// file.
#[test]
fn a_missing_records_table_is_damage_never_an_empty_store() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("waggle.db");
    rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        store
            .save(&env("kept"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    {
        let db = redb::Database::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        txn.delete_table(RECORDS).unwrap_or_else(|e| panic!("{e}"));
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    let before = files_beside(&path);
    let unverified = RedbOptions::default().verify_on_open(false);
    let opens = [
        ("open", RedbStore::open(&path).map(drop)),
        (
            "open without the page check",
            RedbStore::open_with(&path, unverified).map(drop),
        ),
        ("read-only open", RedbStore::open_read_only(&path).map(drop)),
    ];
    for (how, opened) in opens {
        match opened {
            Err(e @ Error::Open { .. }) => assert!(
                e.to_string().contains("waggle_records is missing"),
                "{how}: {e}"
            ),
            other => panic!("{how}: expected a refusal, got {other:?}"),
        }
    }
    assert!(files_beside(&path) == before, "a refusal changed a file");
    let report = RedbStore::check(&path);
    assert!(
        report.as_ref().map_or(true, |r| !r.is_ok()),
        "check called it sound: {report:?}"
    );
}
