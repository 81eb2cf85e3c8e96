// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `RedbStore` through the public conformance macro, fresh and reopened
//! from the same file: with the default options, without the record cache
//! (every read from the file), and with the file locked exclusively.

use tempfile::TempDir;
use waggle_store::RedbStore;
use waggle_store::store::redb::RedbOptions;

fn open(dir: &TempDir, options: RedbOptions) -> RedbStore {
    RedbStore::open_with(dir.path().join("waggle.db"), options).unwrap_or_else(|e| panic!("{e}"))
}

macro_rules! redb_conformance {
    ($name:ident, $options:expr) => {
        waggle_store_conformance::repository_conformance!(
            $name,
            fresh: || async {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                (open(&dir, $options), dir)
            },
            reopen: |dir: &TempDir| {
                let store = open(dir, $options);
                async move { store }
            },
            history: true,
        );
    };
}

redb_conformance!(redb, RedbOptions::default());
redb_conformance!(redb_uncached, RedbOptions::default().cache_entries(0));
redb_conformance!(redb_exclusive, RedbOptions::default().live_readers(false));
