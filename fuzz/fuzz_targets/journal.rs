// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fuzz target: journal frame parsing and replay. The input is split into
//! a journal id, a `journal_next`, where the first file ends (u16) and
//! the two files' bytes, scanned as an
//! open scans them; the writes found are decoded as a replay would. Never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    waggle_store::store::redb::fuzzing::journal(data);
});
