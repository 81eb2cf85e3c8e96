// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fuzz target: a value as the redb file stores it (checksum, then the
//! record), read as a store reads it. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    waggle_store::store::redb::fuzzing::stored_value(data);
});
