// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The damage sweep: a crash image (a store of records, a live journal of
//! acknowledged writes) with one byte flipped, at thousands of places across
//! the store file and both journal files, then a cleanly closed store, then
//! the bytes of its ids wherever they sit (record keys, the ids inside
//! records, the history) flipped to bytes that are not UTF-8 and to other
//! ids, then every used byte of the page of redb's table of tables. Each
//! case is opened and read in a child process — so an abort or a
//! hang is counted, not fatal. Every case must end in a refusal that
//! changed no file, a typed read error, or the exact values the undamaged
//! image holds: never a panic reaching the caller or printed, a panic on
//! pages the open checked, an abort, a hang, or a silently wrong value. A
//! refused file is then read as an operator would anyway (`check`,
//! read-only, `verify_on_open(false)`): errors or the exact values, and
//! `check` must call it damaged; redb panics on those unchecked pages are
//! contained quietly by the store and counted.
//!
//! `WAGGLE_DAMAGE_PLACES` sets how many places (default 2,400, and a
//! quarter as many in ids).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use waggle_store::store::redb::{RedbOptions, contained_panics};
use waggle_store::{Environment, RedbStore, Repository, Runtime, record};

const CHILD_DIR: &str = "WAGGLE_DAMAGE_CHILD_DIR";
const CHILD_FROM: &str = "WAGGLE_DAMAGE_CHILD_FROM";
const CHILD_WRITER: &str = "WAGGLE_DAMAGE_CHILD_WRITER";
/// Panics in a child, caught or not.
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// A case that prints nothing for this long is a hang.
const HANG: Duration = Duration::from_secs(20);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn env(id: &str) -> Environment {
    Environment::new(id, format!("name of {id}"), Runtime::Shell)
}

/// The three files of the store at `db`.
fn files(db: &Path) -> [PathBuf; 3] {
    [0, 1, 2].map(|n| {
        let mut p = db.as_os_str().to_owned();
        if n > 0 {
            p.push(format!("-wal{}", n - 1));
        }
        PathBuf::from(p)
    })
}

fn read_all(db: &Path) -> [Vec<u8>; 3] {
    files(db).map(|p| std::fs::read(p).unwrap_or_default())
}

fn write_all(db: &Path, contents: &[Vec<u8>; 3]) {
    for (p, bytes) in files(db).iter().zip(contents) {
        std::fs::write(p, bytes).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// One place to damage: which file, which byte, which bits.
#[derive(Debug, Clone, Copy)]
struct Place {
    file: usize,
    offset: usize,
    mask: u8,
}

/// The child: the crash-image writer, or a run of cases from `from`.
#[test]
fn damage_child_entry() {
    if let Ok(path) = std::env::var(CHILD_WRITER) {
        // Save one at a time, printing each id once acknowledged, until killed.
        rt().block_on(async {
            let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out);
            for i in 0.. {
                let id = format!("j{i:04}");
                store
                    .save(&env(&id))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if i % 7 == 6 {
                    let gone = format!("j{:04}", i - 3);
                    store.delete(&gone).await.unwrap_or_else(|e| panic!("{e}"));
                }
                let _ = writeln!(out, "ack {id}");
                let _ = out.flush();
            }
        });
        return;
    }
    let (Ok(dir), Ok(from)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_FROM)) else {
        return;
    };
    // Every panic the store does not contain quietly is counted here
    // (those it does, by `contained_panics`).
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let dir = PathBuf::from(dir);
    let from: usize = from.parse().unwrap_or(0);
    let places = read_places(&dir.join("places"));
    let pristine: [Vec<u8>; 3] = [0, 1, 2]
        .map(|n| std::fs::read(dir.join(format!("pristine{n}"))).unwrap_or_else(|e| panic!("{e}")));
    let expected = std::fs::read(dir.join("expected")).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.join("case.db");
    let rt = rt();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    for (n, place) in places.iter().enumerate().skip(from) {
        let _ = writeln!(out, "start {n}");
        let _ = out.flush();
        let mut damaged = pristine.clone();
        if let Some(b) = damaged[place.file].get_mut(place.offset) {
            *b ^= place.mask;
        }
        write_all(&db, &damaged);
        let panics = PANICS.load(std::sync::atomic::Ordering::SeqCst);
        let (outcome, unchecked) =
            std::panic::catch_unwind(|| rt.block_on(one_case(&db, &expected)))
                .unwrap_or_else(|_| ("panic".to_owned(), 0));
        // A panic the store did not contain (its message printed).
        let outcome =
            if outcome != "panic" && PANICS.load(std::sync::atomic::Ordering::SeqCst) > panics {
                "uncontained-panic".to_owned()
            } else {
                outcome
            };
        let _ = writeln!(out, "done {n} {outcome} {unchecked}");
        let _ = out.flush();
    }
}

/// Opens and reads the damaged image: `refused`, `refused-but-changed`,
/// `read-error`, `intact` or `mismatch`; `contained-panic` when redb
/// panicked (caught) on a file the open checked; `check-missed` when the
/// open refused it but `check` calls it sound. A refused image is also
/// read as an operator would read it anyway — `check`, a read-only
/// handle, an open without the page check (`verify_on_open(false)`) —
/// where redb reads pages nobody checked: each read there ends in an
/// error or the exact values (else `unverified-mismatch`). With the
/// outcome, how many panics inside redb were contained on those
/// unchecked pages.
async fn one_case(db: &Path, expected: &[u8]) -> (String, u64) {
    let before = read_all(db);
    let contained = contained_panics();
    let store = match RedbStore::open(db) {
        Err(_) if read_all(db) == before => {
            let mut outcome = match RedbStore::check(db) {
                Ok(report) if report.is_ok() => "check-missed",
                _ => "refused",
            };
            if let Ok(ro) = RedbStore::open_read_only(db) {
                if read_case(&ro, expected).await == "mismatch" {
                    outcome = "unverified-mismatch";
                }
                drop(ro);
            }
            let unverified = RedbOptions::default().verify_on_open(false);
            if let Ok(store) = RedbStore::open_with(db, unverified) {
                if read_case(&store, expected).await == "mismatch" {
                    outcome = "unverified-mismatch";
                }
                let _ = store.close();
            }
            return (outcome.to_owned(), contained_panics() - contained);
        }
        Err(_) => return ("refused-but-changed".to_owned(), 0),
        Ok(store) => store,
    };
    let outcome = read_case(&store, expected).await;
    // The store still takes a write and closes without a panic.
    let _ = store.save(&env("after-damage")).await;
    let _ = store.close();
    if contained_panics() > contained {
        return ("contained-panic".to_owned(), 0);
    }
    (outcome.to_owned(), 0)
}

/// Reads everything `store` holds: `read-error`, `intact` (the exact
/// values, by id and in all, and their count) or `mismatch`.
async fn read_case(store: &RedbStore, expected: &[u8]) -> &'static str {
    match store.find_all().await {
        Err(_) => "read-error",
        Ok(all) => match record::encode_lines(all.iter()) {
            Ok(lines) if lines == expected => {
                // Each record by id and the count agree, or fail typed.
                let mut agree = true;
                for e in &all {
                    if let Ok(found) = store.find_by_id(&e.id).await {
                        agree &= &found == e;
                    }
                }
                if let Ok(n) = store.count().await {
                    agree &= n == all.len();
                }
                if agree { "intact" } else { "mismatch" }
            }
            _ => "mismatch",
        },
    }
}

fn read_places(path: &Path) -> Vec<Place> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ').filter_map(|x| x.parse::<usize>().ok());
            Some(Place {
                file: it.next()?,
                offset: it.next()?,
                mask: u8::try_from(it.next()?).ok()?,
            })
        })
        .collect()
}

/// Where the last frame of a journal file's chain starts (a pristine file:
/// frames back to back from the header, then zeros).
fn last_frame(wal: &[u8]) -> usize {
    let (mut at, mut last) = (32, 32);
    while let Some(len) = wal.get(at..at + 4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 || at + 17 + len - 1 > wal.len() {
            break;
        }
        last = at;
        at += 17 + len - 1;
    }
    last
}

/// Makes the crash image: 120 records checkpointed into the store file,
/// then a writer killed after 60 acknowledged saves (and some deletes).
fn crash_image(db: &Path) {
    rt().block_on(async {
        let store = RedbStore::open(db).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..120 {
            store
                .save(&env(&format!("s{i:04}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
    });
    let mut proc = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
        .args(["--exact", "damage_child_entry", "--nocapture"])
        .env(CHILD_WRITER, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let acks = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("ack "))
        .take(60)
        .count();
    assert_eq!(acks, 60);
    proc.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
    let _ = proc.wait();
}

/// What one image's sweep saw: outcome → count, and the bad cases.
type Seen = (BTreeMap<String, usize>, Vec<String>);

#[test]
fn a_flipped_byte_anywhere_is_refused_or_reported_never_wrong() {
    let total: usize = std::env::var("WAGGLE_DAMAGE_PLACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2400);
    // Damage, not durability, is under test: a RAM disk, where there is
    // one, spares thousands of fsyncs.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap_or_else(|e| panic!("{e}"));
    // A crash image: the store file needs redb's repair, the journal a replay.
    let crashed = dir.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap_or_else(|e| panic!("{e}"));
    crash_image(&crashed.join("image.db"));
    let pristine = read_all(&crashed.join("image.db"));
    assert!(pristine.iter().all(|f| !f.is_empty()), "no crash image");
    // The live journal is the one whose frames follow its header.
    let active = if last_frame(&pristine[1]) > 32 { 1 } else { 2 };
    let tail_from = last_frame(&pristine[active]);
    let frames_end = tail_from + 600;
    // Places: a third across the store file, the rest across the live
    // journal's frames, its zeros, and the other journal's header and body.
    let crash_total = total * 2 / 3;
    let mut places: Vec<(usize, usize)> = Vec::with_capacity(crash_total);
    let spread = |len: usize, k: usize, of: usize| k * len / of.max(1);
    let (in_store, in_frames) = (crash_total / 3, crash_total * 4 / 10);
    let in_rest = crash_total - in_store - in_frames;
    for k in 0..in_store {
        places.push((0, spread(pristine[0].len(), k, in_store)));
    }
    for k in 0..in_frames {
        places.push((active, spread(frames_end, k, in_frames)));
    }
    let other = 3 - active;
    for k in 0..in_rest {
        let (file, offset) = if k % 2 == 0 {
            (
                active,
                frames_end + spread(pristine[active].len() - frames_end, k, in_rest),
            )
        } else {
            (other, spread(pristine[other].len().min(4096), k, in_rest))
        };
        places.push((file, offset));
    }
    let tail = |file: usize, offset: usize| file == active && offset >= tail_from;
    let places = with_masks(places);
    let (crash_seen, crash_bad) = sweep(&crashed, &pristine, &places, &tail);
    report("a crash image", &places, &crash_seen);

    // The same store closed cleanly: one file, no repair, no journal; what
    // redb does not check on a read, the record checksums must.
    let clean = dir.path().join("clean");
    std::fs::create_dir(&clean).unwrap_or_else(|e| panic!("{e}"));
    write_all(&clean.join("image.db"), &pristine);
    RedbStore::open(clean.join("image.db"))
        .and_then(RedbStore::close)
        .unwrap_or_else(|e| panic!("{e}"));
    let clean_files = read_all(&clean.join("image.db"));
    let clean_places = with_masks(
        (0..total - crash_total)
            .map(|k| (0, spread(clean_files[0].len(), k, total - crash_total)))
            .collect(),
    );
    let (clean_seen, clean_bad) = sweep(&clean, &clean_files, &clean_places, &|_, _| false);
    report("a cleanly closed store", &clean_places, &clean_seen);

    // Keys: every place an id's bytes sit in the closed file — record
    // keys, the ids inside records, the history's index and blocks — each
    // flipped to a byte that is not UTF-8 (0x80) and to another id.
    let key_places = id_places(&clean_files[0], total / 4);
    let (key_seen, key_bad) = sweep(&clean, &clean_files, &key_places, &|_, _| false);
    report("ids and keys in a closed store", &key_places, &key_seen);

    // redb's table of tables: every byte its page uses, each in turn. A
    // table's name, root or length damaged there is read by every open
    // and unchecked by a read-only one (a store that read as empty, a
    // length that sized an allocation past any memory: both seen here).
    let tables_places = table_of_tables_places(&clean_files[0]);
    let (tables_seen, tables_bad) = sweep(&clean, &clean_files, &tables_places, &|_, _| false);
    report("redb's table of tables", &tables_places, &tables_seen);

    let bad: Vec<String> = crash_bad
        .into_iter()
        .chain(clean_bad)
        .chain(key_bad)
        .chain(tables_bad)
        .collect();
    let sum = |key: &str| -> usize {
        [&crash_seen, &clean_seen, &key_seen, &tables_seen]
            .iter()
            .filter_map(|seen| seen.get(key))
            .sum()
    };
    println!(
        "damage sweep: {} places in all ({} in keys and ids); panics: {}, panics printed: {}, contained panics on checked pages: {}, aborts: {}, hangs: {}, silent wrong values: {} (on unchecked pages: {}), refused files that check called sound: {}, files changed by a refusal: {}; after a refusal, redb panics contained quietly on unchecked pages: {}",
        places.len() + clean_places.len() + key_places.len() + tables_places.len(),
        key_places.len(),
        sum("panic"),
        sum("uncontained-panic"),
        sum("contained-panic"),
        sum("abort"),
        sum("hang"),
        sum("mismatch"),
        sum("unverified-mismatch"),
        sum("check-missed"),
        sum("refused-but-changed"),
        sum("unchecked-contained"),
    );
    assert!(
        bad.is_empty(),
        "{} bad outcomes: {:?}",
        bad.len(),
        &bad[..bad.len().min(20)]
    );
}

/// Places with the bit each flips: one of the eight, in turn.
fn with_masks(places: Vec<(usize, usize)>) -> Vec<(usize, usize, u8)> {
    places
        .into_iter()
        .enumerate()
        .map(|(k, (file, offset))| (file, offset, 1u8 << (k % 8)))
        .collect()
}

/// Every used byte (up to the last that is not zero) of each page of the
/// store file `bytes` that holds redb's table of tables — where the table
/// names are; older copies of it that a commit left behind included, as
/// which one is live is redb's to know.
fn table_of_tables_places(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    const PAGE: usize = 4096;
    let name = b"waggle_records";
    let mut pages: Vec<usize> = bytes
        .windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name)
        .map(|(at, _)| at / PAGE * PAGE)
        .collect();
    pages.dedup();
    assert!(!pages.is_empty(), "the table of tables was not found");
    let mut places = Vec::new();
    for page in pages {
        let end = bytes[page..(page + PAGE).min(bytes.len())]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(page, |last| page + last + 1);
        places.extend((page..end).map(|offset| (0, offset)));
    }
    with_masks(places)
}

/// Up to `most` places in the ids of the store file `bytes` (`s` and four
/// digits, wherever they sit), spread over all of them: each flips one
/// byte of an id to 0x80 or more (not UTF-8), or to another character.
fn id_places(bytes: &[u8], most: usize) -> Vec<(usize, usize, u8)> {
    let found: Vec<usize> = bytes
        .windows(5)
        .enumerate()
        .filter(|(_, w)| w[0] == b's' && w[1..].iter().all(u8::is_ascii_digit))
        .map(|(at, _)| at)
        .collect();
    assert!(found.len() >= 120, "the ids were not found in the file");
    let n = most.max(2);
    (0..n)
        .map(|k| {
            let at = found[k * found.len() / n] + k % 5;
            (0, at, if k % 2 == 0 { 0x80 } else { 1u8 << (k / 2 % 7) })
        })
        .collect()
}

fn report(image: &str, places: &[(usize, usize, u8)], seen: &BTreeMap<String, usize>) {
    let count = |k: &str| seen.get(k).copied().unwrap_or(0);
    let in_store = places.iter().filter(|(f, ..)| *f == 0).count();
    println!(
        "damage sweep, {image}: {} places flipped ({in_store} in the store file, {} in the journal): {} refused (files unchanged), {} read errors, {} intact, {} in the last batch dropped as a torn tail; panics: {}, printed: {}, contained on checked pages: {}, aborts: {}, hangs: {}, silent wrong values: {} (unchecked pages: {}), check missed: {}, refused but changed: {}; contained on unchecked pages: {}",
        places.len(),
        places.len() - in_store,
        count("refused"),
        count("read-error"),
        count("intact"),
        count("last-batch-dropped"),
        count("panic"),
        count("uncontained-panic"),
        count("contained-panic"),
        count("abort"),
        count("hang"),
        count("mismatch"),
        count("unverified-mismatch"),
        count("check-missed"),
        count("refused-but-changed"),
        count("unchecked-contained"),
    );
}

/// Runs every place against the image in `dir` (whose undamaged files are
/// `pristine`) in child processes, restarting after one dies or hangs.
/// `tail(file, offset)` says a place lies in the last acknowledged batch.
fn sweep(
    dir: &Path,
    pristine: &[Vec<u8>; 3],
    places: &[(usize, usize, u8)],
    tail: &dyn Fn(usize, usize) -> bool,
) -> Seen {
    for (n, bytes) in pristine.iter().enumerate() {
        std::fs::write(dir.join(format!("pristine{n}")), bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    // What the undamaged image holds, read from a copy.
    let copy = dir.join("copy.db");
    write_all(&copy, pristine);
    let expected = rt().block_on(async {
        let store = RedbStore::open(&copy).unwrap_or_else(|e| panic!("{e}"));
        let all = store.find_all().await.unwrap_or_else(|e| panic!("{e}"));
        store.close().unwrap_or_else(|e| panic!("{e}"));
        record::encode_lines(all.iter()).unwrap_or_else(|e| panic!("{e}"))
    });
    std::fs::write(dir.join("expected"), &expected).unwrap_or_else(|e| panic!("{e}"));
    let list: String = places
        .iter()
        .map(|(file, offset, mask)| format!("{file} {offset} {mask}\n"))
        .collect();
    std::fs::write(dir.join("places"), list).unwrap_or_else(|e| panic!("{e}"));

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad: Vec<String> = Vec::new();
    let mut from = 0;
    while from < places.len() {
        let mut proc = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
            .args(["--exact", "damage_child_entry", "--nocapture"])
            .env(CHILD_DIR, dir)
            .env(CHILD_FROM, from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<usize> = None;
        let ended = loop {
            match rx.recv_timeout(HANG) {
                Ok(line) => {
                    let mut words = line.split(' ');
                    match (words.next(), words.next().and_then(|n| n.parse().ok())) {
                        (Some("start"), Some(n)) => current = Some(n),
                        (Some("done"), Some(n)) => {
                            let (file, offset, _) = places[n];
                            let outcome = match words.next().unwrap_or("?") {
                                // Damage in the last acknowledged batch looks
                                // like a crash's torn tail: dropped, counted.
                                "mismatch" if tail(file, offset) => "last-batch-dropped",
                                other => other,
                            };
                            if [
                                "panic",
                                "uncontained-panic",
                                "contained-panic",
                                "mismatch",
                                "unverified-mismatch",
                                "check-missed",
                                "refused-but-changed",
                            ]
                            .contains(&outcome)
                            {
                                bad.push(format!("{outcome} at file {file} byte {offset}"));
                            }
                            *outcomes.entry(outcome.to_owned()).or_default() += 1;
                            let unchecked: usize =
                                words.next().and_then(|k| k.parse().ok()).unwrap_or(0);
                            *outcomes
                                .entry("unchecked-contained".to_owned())
                                .or_default() += unchecked;
                            current = None;
                            from = n + 1;
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = proc.kill();
                    break "hang";
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break "abort",
            }
        };
        let status = proc.wait();
        match current {
            // The case it was running died with it.
            Some(n) => {
                let (file, offset, _) = places[n];
                bad.push(format!("{ended} ({status:?}) at file {file} byte {offset}"));
                *outcomes.entry(ended.to_owned()).or_default() += 1;
                from = n + 1;
            }
            None if from < places.len() => {
                panic!("the child stopped between cases ({ended}, {status:?})")
            }
            None => {}
        }
    }
    (outcomes, bad)
}
