// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `PgStore` through the public conformance macro: each store in a schema
//! of its own; reopen is a new pool on the same schema, and so is share (a
//! second server), opened while the first pool is still in use.

#[cfg(waggle_postgres_server)]
mod with_server {
    use waggle_store_postgres_tests::{connect, unique_schema};

    /// The schema a store lives in: what `reopen` connects to again.
    pub struct Schema(String);

    waggle_store_conformance::repository_conformance!(
        postgres,
        fresh: || async {
            let schema = unique_schema("conf");
            (connect(&schema).await, Schema(schema))
        },
        reopen: |schema: &Schema| {
            let name = schema.0.clone();
            async move { connect(&name).await }
        },
        share: |schema: &Schema| {
            let name = schema.0.clone();
            async move { connect(&name).await }
        },
        history: true,
    );
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_conformance() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
