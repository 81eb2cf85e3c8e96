// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `MemoryStore` through the public conformance macro, as any backend would.

use waggle_store::MemoryStore;

waggle_store_conformance::repository_conformance!(
    memory,
    fresh: || async { (MemoryStore::new(), ()) },
    history: true,
);
