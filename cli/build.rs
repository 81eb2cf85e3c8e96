// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Compiles the CLI's PostgreSQL test (`tests/postgres.rs`) in when
//! `WAGGLE_TEST_POSTGRES_URL` names a server (`scripts/test-postgres start`
//! sets it); without it that test shows as ignored, saying why. The binary
//! itself is the same either way.

fn main() {
    println!("cargo:rerun-if-env-changed=WAGGLE_TEST_POSTGRES_URL");
    if std::env::var("WAGGLE_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=waggle_postgres_server");
    }
}
