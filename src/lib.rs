// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Durable environment state for Waggle.
//!
//! Waggle hands AI agents isolated microVM [`Environment`]s. This crate keeps
//! them: the [`Repository`] contract, the stores that honour it
//! ([`MemoryStore`] and the persistent default, [`RedbStore`]), and the
//! wiring that picks one from the environment ([`StoreConfig`]).
//!
//! Layers, innermost first — each depends only on the ones before it:
//!
//! 1. [`domain`]: the entity and its rules; no I/O.
//! 2. [`record`]: the JSON record format.
//! 3. [`Repository`] and [`Error`]: the contract; [`revisions`]: its
//!    conditional writes ([`Revisioned`]); [`history`]: the audit trail
//!    ([`Audited`]).
//! 4. [`store`]: one module per backend.
//! 5. [`config`]: choosing and opening a store.
#![deny(missing_docs)]

pub mod config;
pub mod domain;
mod error;
pub mod history;
pub mod record;
mod repository;
pub mod revisions;
pub mod store;

pub use async_trait::async_trait;
pub use chrono;
pub use config::StoreConfig;
pub use domain::{Capabilities, Environment, Runtime, Status};
pub use error::{BoxError, Error, Result};
pub use history::{Audited, Change, ChangeKind, ChangeStream, HistoryOptions, Retention, Stream};
pub use repository::Repository;
pub use revisions::{Expected, Revision, Revisioned, RevisionedExt, Versioned};
pub use store::memory::MemoryStore;
pub use store::redb::RedbStore;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
