// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The table-driven checks: one function per clause of the contract, each
//! running a table of named cases. A failure names the check and the case.

use std::collections::BTreeMap;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use waggle_store::{Environment, Error, Repository, Runtime, Status};

use crate::generate;
use crate::harness::Harness;

/// Asserts `result` is `NotFound` carrying `id`.
pub(crate) fn expect_not_found<T: std::fmt::Debug>(case: &str, id: &str, result: Result<T, Error>) {
    match result {
        Err(Error::NotFound { id: got }) => {
            assert_eq!(
                got, id,
                "case {case:?}: NotFound must carry the id looked up"
            )
        }
        other => panic!("case {case:?}: expected NotFound {{ id: {id:?} }}, got {other:?}"),
    }
}

/// Reads everything back and compares it with `model`, through find_all,
/// count and find_by_id.
pub(crate) async fn assert_contents<S: Repository>(
    case: &str,
    store: &S,
    model: &BTreeMap<String, Environment>,
) {
    let all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: find_all failed: {e}"));
    let expected: Vec<&Environment> = model.values().collect();
    let got: Vec<&Environment> = all.iter().collect();
    assert!(
        got == expected,
        "case {case:?}: find_all disagrees with the model\n  ids got      {:?}\n  ids expected {:?}",
        all.iter().map(|e| &e.id).collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>(),
    );
    let count = store
        .count()
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: count failed: {e}"));
    assert_eq!(
        count,
        model.len(),
        "case {case:?}: count disagrees with the model"
    );
    for (id, env) in model {
        let found = store
            .find_by_id(id)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_by_id({id:?}) failed: {e}"));
        assert!(
            &found == env,
            "case {case:?}: find_by_id({id:?}) returned a different value"
        );
    }
}

async fn save<S: Repository>(case: &str, store: &S, env: &Environment) {
    store
        .save(env)
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: save({:?}) failed: {e}", env.id));
}

/// Saves one value per id and returns the model of what is stored.
async fn saved<S: Repository>(
    case: &str,
    store: &S,
    ids: &[&str],
) -> BTreeMap<String, Environment> {
    let mut model = BTreeMap::new();
    for id in ids {
        save(case, store, &env(id)).await;
        model.insert((*id).to_owned(), env(id));
    }
    model
}

fn env(id: &str) -> Environment {
    Environment::new_at(
        id,
        format!("name of {id}"),
        Runtime::Shell,
        Default::default(),
    )
}

/// `find_by_id` and `delete` of ids that are not stored — never saved,
/// deleted, or invalid — return `NotFound` carrying the id.
pub async fn not_found<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    save("setup", store, &env("present")).await;
    let mut ids: Vec<(String, String)> = vec![
        ("never saved".into(), "absent".into()),
        ("prefix of a stored id".into(), "pres".into()),
        ("stored id plus a suffix".into(), "present-2".into()),
        ("differs in case".into(), "PRESENT".into()),
    ];
    ids.extend(
        generate::invalid_ids()
            .into_iter()
            .map(|(name, id)| (format!("invalid id: {name}"), id)),
    );
    for (case, id) in &ids {
        expect_not_found(&format!("find {case}"), id, store.find_by_id(id).await);
        expect_not_found(&format!("delete {case}"), id, store.delete(id).await);
    }
    store
        .delete("present")
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    expect_not_found(
        "find after delete",
        "present",
        store.find_by_id("present").await,
    );
    expect_not_found(
        "delete after delete",
        "present",
        store.delete("present").await,
    );
}

/// Saving an id again replaces the whole value: count stays 1, the latest wins.
pub async fn upsert<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    type Change = fn(&mut Environment);
    let cases: [(&str, Change); 6] = [
        ("same value again", |_| {}),
        ("new name", |e| e.name = "renamed".into()),
        ("status moves on", |e| {
            let _ = e.transition_to(Status::Running);
        }),
        ("new port", |e| e.ssh_port = 2222),
        ("touched", |e| {
            e.last_used += std::time::Duration::from_nanos(1)
        }),
        ("capabilities detected", |e| {
            e.capabilities.path = "/bin".into();
            e.capabilities_detected = true;
        }),
    ];
    for (case, change) in cases {
        let inst = h.fresh().await;
        let store = inst.store();
        let first = env("u");
        save(case, store, &first).await;
        save(case, store, &env("other")).await;
        let mut second = first.clone();
        change(&mut second);
        save(case, store, &second).await;
        let model = BTreeMap::from([("other".to_owned(), env("other")), ("u".to_owned(), second)]);
        assert_contents(case, store, &model).await;
    }
}

/// What `find_by_id` returns equals what was saved, field by field: the
/// edge cases, then generated values.
pub async fn round_trip<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let mut model = BTreeMap::new();
    let mut cases: Vec<(String, Environment)> = generate::edge_cases()
        .into_iter()
        .map(|(n, mut e)| {
            // The edge cases of other fields share the id "edge"; the edge
            // cases of the id itself are kept exactly as they are.
            if e.id == "edge" {
                e.id = format!("edge-{}", n.replace(' ', "_"));
            }
            (n.to_owned(), e)
        })
        .collect();
    let mut runner = TestRunner::deterministic();
    for i in 0..crate::cases() {
        if let Ok(tree) = generate::environment().new_tree(&mut runner) {
            cases.push((format!("generated #{i}"), tree.current()));
        }
    }
    for (case, env) in &cases {
        save(case, store, env).await;
        let back = store
            .find_by_id(&env.id)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_by_id failed: {e}"));
        assert!(
            &back == env,
            "case {case:?}: the value read back differs from the value saved\n  saved {env:?}\n  read  {back:?}"
        );
        model.insert(env.id.clone(), env.clone());
    }
    assert_contents("everything at once", store, &model).await;
}

/// `find_all` returns every value sorted bytewise by id.
pub async fn find_all_order<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let cases: [(&str, &[&str]); 5] = [
        ("empty store", &[]),
        ("one", &["solo"]),
        ("reverse insertion", &["c", "b", "a"]),
        ("prefixes and case", &["ab", "a", "a-", "B", "b", "A", "a0"]),
        (
            "unicode sorts by bytes",
            &["é", "z", "ÿ", "~", "🐝", "\u{ff5e}"],
        ),
    ];
    for (case, ids) in cases {
        let inst = h.fresh().await;
        let store = inst.store();
        let model = saved(case, store, ids).await;
        assert_contents(case, store, &model).await;
    }
}

/// `count` is right after every kind of operation.
pub async fn count<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let steps: [(&str, &str, usize); 8] = [
        ("empty", "", 0),
        ("save new", "save a", 1),
        ("save another", "save b", 2),
        ("upsert", "save a", 2),
        ("refused save", "save-invalid", 2),
        ("delete missing", "delete zz", 2),
        ("delete", "delete a", 1),
        ("delete last", "delete b", 0),
    ];
    for (case, step, expected) in steps {
        match step.split_once(' ') {
            Some(("save", id)) => save(case, store, &env(id)).await,
            Some(("delete", id)) => {
                let _ = store.delete(id).await;
            }
            _ if step == "save-invalid" => {
                let _ = store.save(&env("bad id")).await;
            }
            _ => {}
        }
        let n = store
            .count()
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: count failed: {e}"));
        assert_eq!(n, expected, "case {case:?}: count");
        let all = store
            .find_all()
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_all failed: {e}"));
        assert_eq!(all.len(), expected, "case {case:?}: find_all length");
    }
}

/// After `delete`, the value is gone for every method, and only it.
pub async fn delete<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let cases: [(&str, &[&str], &str); 4] = [
        ("only value", &["a"], "a"),
        ("first of three", &["a", "b", "c"], "a"),
        ("middle of three", &["a", "b", "c"], "b"),
        ("last of three", &["a", "b", "c"], "c"),
    ];
    for (case, ids, victim) in cases {
        let inst = h.fresh().await;
        let store = inst.store();
        let mut model = saved(case, store, ids).await;
        store
            .delete(victim)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: delete failed: {e}"));
        model.remove(victim);
        expect_not_found(case, victim, store.find_by_id(victim).await);
        expect_not_found(case, victim, store.delete(victim).await);
        assert_contents(case, store, &model).await;
        save(case, store, &env(victim)).await;
        model.insert(victim.to_owned(), env(victim));
        assert_contents(&format!("{case}, saved again"), store, &model).await;
    }
}

/// `save` refuses invalid ids with `InvalidId` and stores nothing.
pub async fn invalid_ids<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    save("setup", store, &env("keep")).await;
    let model = BTreeMap::from([("keep".to_owned(), env("keep"))]);
    for (case, id) in generate::invalid_ids() {
        match store.save(&env(&id)).await {
            Err(Error::InvalidId(e)) => {
                assert_eq!(e.id, id, "case {case:?}: InvalidId must carry the id")
            }
            other => panic!(
                "case {case:?}: save of invalid id {id:?} returned {other:?}, expected InvalidId"
            ),
        }
        assert_contents(case, store, &model).await;
    }
}

/// Every id the rules allow — each boundary, and the characters stores
/// like to mangle — is saved as it is, read back, listed in order,
/// survives a reopen (where the backend offers one) and is deleted.
pub async fn valid_ids<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let mut inst = h.fresh().await;
    let table = generate::valid_ids();
    let mut model = BTreeMap::new();
    for (case, id) in &table {
        let e = env(id);
        match inst.store().save(&e).await {
            Ok(()) => {}
            Err(err) => panic!("case {case:?}: save of the valid id {id:?} failed: {err}"),
        }
        let back = inst
            .store()
            .find_by_id(id)
            .await
            .unwrap_or_else(|err| panic!("case {case:?}: find_by_id({id:?}) failed: {err}"));
        assert!(
            back == e,
            "case {case:?}: read back {:?} for id {id:?}",
            back.id
        );
        model.insert(id.clone(), e);
    }
    assert_contents("every valid id", inst.store(), &model).await;
    if h.can_reopen() {
        inst.reopen().await;
        assert_contents("every valid id, after a reopen", inst.store(), &model).await;
    }
    for (case, id) in &table {
        inst.store()
            .delete(id)
            .await
            .unwrap_or_else(|err| panic!("case {case:?}: delete({id:?}) failed: {err}"));
        model.remove(id);
        expect_not_found(case, id, inst.store().find_by_id(id).await);
    }
    assert_contents("every valid id deleted", inst.store(), &model).await;
}

/// Values are copies: changing a value after saving it, or a value read
/// back, changes nothing stored.
pub async fn copy_isolation<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let original = env("c");
    let mut input = original.clone();
    save("setup", store, &input).await;
    input.name = "changed after save".into();
    input.ssh_port = 1;
    input.capabilities.path = "/changed".into();
    let model = BTreeMap::from([("c".to_owned(), original.clone())]);
    assert_contents("input changed after save", store, &model).await;
    let mut read = store
        .find_by_id("c")
        .await
        .unwrap_or_else(|e| panic!("find: {e}"));
    read.name = "changed after find".into();
    let _ = read.transition_to(Status::Running);
    assert_contents("value from find_by_id changed", store, &model).await;
    let mut all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("find_all: {e}"));
    for e in &mut all {
        e.name = "changed after find_all".into();
    }
    all.clear();
    assert_contents("values from find_all changed", store, &model).await;
}

/// What was saved is there after the store is dropped and reopened.
pub async fn reopen_persists<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let mut inst = h.fresh().await;
    let mut model = BTreeMap::new();
    inst.reopen().await;
    assert_contents("reopened empty", inst.store(), &model).await;
    for (case, e) in generate::edge_cases() {
        let mut e = e;
        e.id = format!("p-{}", case.replace(' ', "_"));
        save(case, inst.store(), &e).await;
        model.insert(e.id.clone(), e);
    }
    let victim = model.keys().next().cloned().unwrap_or_default();
    inst.store()
        .delete(&victim)
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    model.remove(&victim);
    inst.reopen().await;
    assert_contents("after reopen", inst.store(), &model).await;
    expect_not_found(
        "deleted before reopen",
        &victim,
        inst.store().find_by_id(&victim).await,
    );
    inst.reopen().await;
    assert_contents("after a second reopen", inst.store(), &model).await;
}
