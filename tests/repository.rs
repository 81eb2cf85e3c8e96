// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The contract, table-driven with rstest, over every store we ship: each
//! case runs once per store, in parallel.

use std::sync::Arc;

use rstest::rstest;
use tempfile::TempDir;
use waggle_store::{Environment, Error, MemoryStore, RedbStore, Repository, Runtime, Status};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Redb,
}

/// A fresh store of `kind`, with the temp dir that holds its file.
fn store(kind: Kind) -> (Arc<dyn Repository>, Option<TempDir>) {
    match kind {
        Kind::Memory => (Arc::new(MemoryStore::new()), None),
        Kind::Redb => {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let store = RedbStore::open(dir.path().join("w.db")).unwrap_or_else(|e| panic!("{e}"));
            (Arc::new(store), Some(dir))
        }
    }
}

fn env(id: &str) -> Environment {
    Environment::new(id, format!("name of {id}"), Runtime::Node)
}

#[rstest]
#[case::save_then_find(&["a"], "a", Some("name of a"))]
#[case::find_among_several(&["a", "b", "c"], "b", Some("name of b"))]
#[case::find_missing(&["a"], "z", None)]
#[case::find_in_empty(&[], "a", None)]
#[case::find_invalid_id(&["a"], "not valid", None)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_by_id(
    #[values(Kind::Memory, Kind::Redb)] kind: Kind,
    #[case] saved: &[&str],
    #[case] id: &str,
    #[case] name: Option<&str>,
) {
    let (repo, _dir) = store(kind);
    for s in saved {
        repo.save(&env(s)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    match (repo.find_by_id(id).await, name) {
        (Ok(found), Some(name)) => assert_eq!(found.name, name),
        (Err(Error::NotFound { id: got }), None) => assert_eq!(got, id),
        (other, _) => panic!("{kind:?}: unexpected {other:?}"),
    }
}

#[rstest]
#[case::upsert_keeps_count_one(&["a", "a"], 1)]
#[case::three_distinct(&["a", "b", "c"], 3)]
#[case::upserts_among_distinct(&["a", "b", "a", "b", "c"], 3)]
#[case::none(&[], 0)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_find_all(
    #[values(Kind::Memory, Kind::Redb)] kind: Kind,
    #[case] saves: &[&str],
    #[case] expected: usize,
) {
    let (repo, _dir) = store(kind);
    for (i, s) in saves.iter().enumerate() {
        let mut e = env(s);
        e.ssh_port = i as u16; // the latest save must win
        repo.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(repo.count().await.ok(), Some(expected));
    let all = repo.find_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), expected);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
    for e in &all {
        let last = saves.iter().rposition(|s| *s == e.id).unwrap_or(usize::MAX);
        assert_eq!(
            e.ssh_port as usize, last,
            "{kind:?}: latest save wins for {}",
            e.id
        );
    }
}

#[rstest]
#[case::delete_existing(&["a", "b"], "a", true, 1)]
#[case::delete_missing(&["a"], "z", false, 1)]
#[case::delete_in_empty(&[], "a", false, 0)]
#[case::delete_invalid(&["a"], "", false, 1)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete(
    #[values(Kind::Memory, Kind::Redb)] kind: Kind,
    #[case] saved: &[&str],
    #[case] id: &str,
    #[case] ok: bool,
    #[case] left: usize,
) {
    let (repo, _dir) = store(kind);
    for s in saved {
        repo.save(&env(s)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    match repo.delete(id).await {
        Ok(()) => assert!(ok, "{kind:?}: deleted a missing id"),
        Err(e) => {
            assert!(
                !ok && e.is_not_found() && e.id() == Some(id),
                "{kind:?}: {e}"
            );
        }
    }
    assert_eq!(repo.count().await.ok(), Some(left));
    assert!(repo.find_by_id(id).await.unwrap_err().is_not_found());
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_both_directions(#[values(Kind::Memory, Kind::Redb)] kind: Kind) {
    let (repo, _dir) = store(kind);
    let mut input = env("c");
    let original = input.clone();
    repo.save(&input).await.unwrap_or_else(|e| panic!("{e}"));
    input.name = "mutated input".into();
    let mut out = repo.find_by_id("c").await.unwrap_or_else(|e| panic!("{e}"));
    out.transition_to(Status::Running)
        .unwrap_or_else(|e| panic!("{e}"));
    out.name = "mutated output".into();
    assert_eq!(repo.find_by_id("c").await.ok(), Some(original));
}

/// 50 tasks each write their own environment, then read everyone's.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tasks_write_then_read(#[values(Kind::Memory, Kind::Redb)] kind: Kind) {
    let (repo, _dir) = store(kind);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50 {
        let (repo, barrier) = (Arc::clone(&repo), Arc::clone(&barrier));
        tasks.spawn(async move {
            repo.save(&env(&format!("t{t:02}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            barrier.wait().await; // every write has returned
            for other in 0..50 {
                let id = format!("t{other:02}");
                let found = repo
                    .find_by_id(&id)
                    .await
                    .unwrap_or_else(|e| panic!("task {t}: {e}"));
                assert_eq!(
                    (found.id.as_str(), found.name.as_str()),
                    (id.as_str(), format!("name of {id}").as_str())
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    assert_eq!(repo.count().await.ok(), Some(50));
}

#[rstest]
#[case::empty("")]
#[case::too_long(&"x".repeat(129))]
#[case::whitespace("a b")]
#[case::control("a\u{1}")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_store_nothing(
    #[values(Kind::Memory, Kind::Redb)] kind: Kind,
    #[case] id: &str,
) {
    let (repo, _dir) = store(kind);
    let err = repo.save(&env(id)).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidId(e) if e.id == id), "{err:?}");
    assert_eq!(repo.count().await.ok(), Some(0));
}
