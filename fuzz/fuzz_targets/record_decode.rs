// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Fuzz target: record decoding. Never panics; what decodes encodes back
//! to a record that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waggle_store::record::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = decode(data) {
        let again = encode(&env).map(|bytes| decode(&bytes));
        assert_eq!(again, Ok(Ok(env)), "a decoded record did not round-trip");
    }
});
