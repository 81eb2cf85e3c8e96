// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Compiles the PostgreSQL tests in when `WAGGLE_TEST_POSTGRES_URL` names a
//! server (`scripts/test-postgres start` sets it); without it they are one
//! ignored test saying so. Under `CI=true` a missing server fails the build.

fn main() {
    println!("cargo:rerun-if-env-changed=WAGGLE_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-env-changed=CI");
    let url = std::env::var("WAGGLE_TEST_POSTGRES_URL").unwrap_or_default();
    if !url.is_empty() {
        println!("cargo:rustc-cfg=waggle_postgres_server");
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true, but WAGGLE_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server (.ci/run starts one with scripts/test-postgres)"
        );
    }
}
