// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The record format over generated values: decode(encode(env)) == env.

use proptest::prelude::*;
use waggle_store::record::{decode, encode};
use waggle_store_conformance::generate;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Lossless for every field, including nanoseconds, extreme ports and
    /// timeouts, unicode, and empty or full capabilities.
    #[test]
    fn round_trip_is_lossless(env in generate::environment()) {
        prop_assert_eq!(decode(&encode(&env)), Ok(env));
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}

#[test]
fn edge_cases_round_trip() {
    for (case, env) in generate::edge_cases() {
        assert_eq!(decode(&encode(&env)), Ok(env), "case {case:?}");
    }
}
