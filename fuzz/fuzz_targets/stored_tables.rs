// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fuzz target: the rows of a store's records and metadata tables, keys
//! and values of any bytes (a flipped bit in a key included), read as an
//! open, a read and `check` read them. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    waggle_store::store::redb::fuzzing::stored_tables(data);
});
