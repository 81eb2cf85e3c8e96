// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Helpers for the PostgreSQL tests: a store in a schema of its own on the
//! server `WAGGLE_TEST_POSTGRES_URL` names.
#![deny(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};

use waggle_store::store::postgres::{PgOptions, PgStore};

/// The test server's connection string, if one was given.
pub fn server_url() -> Option<String> {
    std::env::var("WAGGLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A schema name no other store of this run (or another process) uses.
pub fn unique_schema(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("t_{tag}_{}_{nanos}_{n}", std::process::id())
}

/// A store in `schema` on the test server.
///
/// # Panics
///
/// When there is no test server or the store cannot be opened: tests only.
pub async fn connect(schema: &str) -> PgStore {
    let url = server_url().unwrap_or_else(|| panic!("WAGGLE_TEST_POSTGRES_URL is not set"));
    let options = PgOptions::default().schema(schema).pool_size(8);
    PgStore::connect(&url, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
