// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The whole conformance suite against the out-of-tree store, with
//! `waggle-store-conformance` as the only dev-dependency.

use waggle_store_example_backend::SortedVecStore;

waggle_store_conformance::repository_conformance!(
    sorted_vec,
    fresh: || async { (SortedVecStore::default(), ()) },
);
