// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fuzz target: import lines (the export format, JSON Lines). Never
//! panics; what is accepted exports back to lines that import the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waggle_store::record::{decode_lines, encode_lines};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envs) = decode_lines(text) {
        let lines = encode_lines(envs.iter()).unwrap_or_default();
        let again = decode_lines(std::str::from_utf8(&lines).unwrap_or_default());
        assert_eq!(again.ok(), Some(envs), "imported lines did not round-trip");
    }
});
