// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The stores that implement [`Repository`](crate::Repository), one module
//! per backend.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redb;
