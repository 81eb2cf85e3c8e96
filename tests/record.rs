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
        prop_assert_eq!(decode(&encode(&env).unwrap_or_default()), Ok(env));
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
        assert_eq!(
            decode(&encode(&env).unwrap_or_default()),
            Ok(env),
            "case {case:?}"
        );
    }
}

/// The export format carries stores across backends exactly:
/// redb → JSON Lines → memory → JSON Lines → redb.
#[test]
fn export_round_trips_across_backends() {
    use proptest::strategy::{Strategy, ValueTree};
    use waggle_store::record::{decode_lines, encode_lines};
    use waggle_store::{MemoryStore, RedbStore, Repository};

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut envs: Vec<_> = (0..64)
        .filter_map(|_| generate::environment().new_tree(&mut runner).ok())
        .map(|t| t.current())
        .collect();
    envs.sort_by(|a, b| a.id.cmp(&b.id));
    envs.dedup_by(|a, b| a.id == b.id);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let first = RedbStore::open(dir.path().join("a.db")).unwrap_or_else(|e| panic!("{e}"));
        for e in &envs {
            first.save(e).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let export = encode_lines(&first.find_all().await.unwrap_or_default()).unwrap_or_default();
        let memory = MemoryStore::new();
        for e in decode_lines(std::str::from_utf8(&export).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
        {
            memory.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let again = encode_lines(&memory.find_all().await.unwrap_or_default()).unwrap_or_default();
        assert_eq!(again, export, "memory exports what redb exported");
        let last = RedbStore::open(dir.path().join("b.db")).unwrap_or_else(|e| panic!("{e}"));
        for e in decode_lines(std::str::from_utf8(&again).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
        {
            last.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(last.find_all().await.unwrap_or_default(), envs);
    });
}

/// Bad input, counted: valid records mutated byte by byte (flips,
/// truncations, insertions). The decoder must never panic, and whatever it
/// accepts must be a valid environment that round-trips.
#[test]
fn mutated_records_never_panic() {
    let seeds: Vec<Vec<u8>> = generate::edge_cases()
        .into_iter()
        .filter(|(_, e)| e.name.len() < 4096)
        .map(|(_, e)| encode(&e).unwrap_or_default())
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state as usize) % n.max(1)
    };
    let (mut tried, mut accepted) = (0usize, 0usize);
    for seed in &seeds {
        for _ in 0..2_000 {
            let mut bytes = seed.clone();
            match next(3) {
                0 => {
                    let i = next(bytes.len());
                    bytes[i] ^= 1 << next(8);
                }
                1 => bytes.truncate(next(bytes.len())),
                _ => {
                    let i = next(bytes.len());
                    let junk = [b'"', b'{', b'}', b',', b'9', b'\\', 0xff, b' '][next(8)];
                    bytes.insert(i, junk);
                }
            }
            tried += 1;
            if let Ok(env) = decode(&bytes) {
                accepted += 1;
                assert!(env.validate().is_ok());
                assert_eq!(decode(&encode(&env).unwrap_or_default()), Ok(env));
            }
        }
    }
    println!(
        "bad input: {tried} mutated records tried, {accepted} still valid and round-tripped, {} refused, 0 panics",
        tried - accepted
    );
    assert!(tried >= 20_000);
}
