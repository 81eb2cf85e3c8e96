// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! What the suite's self-tests share: the verdict on one broken store.

use std::collections::BTreeSet;

/// Asserts the checks `what` failed are exactly `must`, plus any of `may`:
/// checks whose outcome depends on how tasks interleave (a concurrent
/// history may or may not hit the defect).
pub fn assert_failed_exactly(
    what: &dyn std::fmt::Debug,
    failed: &BTreeSet<&'static str>,
    must: &[&str],
    may: &[&str],
) {
    let must: BTreeSet<&str> = must.iter().copied().collect();
    let may: BTreeSet<&str> = may.iter().copied().collect();
    let missed: Vec<_> = must.iter().filter(|c| !failed.contains(*c)).collect();
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|c| !must.contains(*c) && !may.contains(*c))
        .collect();
    assert!(
        missed.is_empty() && unexpected.is_empty(),
        "{what:?}: checks that should have failed but passed: {missed:?}; checks that failed unexpectedly: {unexpected:?}"
    );
}
