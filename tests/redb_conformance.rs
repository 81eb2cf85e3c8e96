// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `RedbStore` through the public conformance macro: fresh, and reopened
//! from the same file.

use tempfile::TempDir;
use waggle_store::RedbStore;

fn open(dir: &TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("waggle.db")).unwrap_or_else(|e| panic!("{e}"))
}

waggle_store_conformance::repository_conformance!(
    redb,
    fresh: || async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        (open(&dir), dir)
    },
    reopen: |dir: &TempDir| {
        let store = open(dir);
        async move { store }
    },
);
