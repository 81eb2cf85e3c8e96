// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The one error type every store and the wiring return.

use std::path::PathBuf;

use crate::domain::{InvalidId, InvalidTransition};
use crate::revisions::{Expected, Revision};

/// A boxed error from the layer below (redb, the file system, …).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation, opening a store, or configuring one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No environment is stored under `id`.
    #[error("environment {id:?} not found")]
    NotFound {
        /// The id that was looked up.
        id: String,
    },
    /// `save` was given an id no store accepts; nothing was stored.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// A lifecycle transition the domain does not allow.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A conditional write found something other than it expected under
    /// `id`; nothing was written.
    #[error("environment {id:?} was not written: expected {expected}, found {}", found.map_or_else(|| "no value".to_owned(), |r| r.to_string()))]
    Conflict {
        /// The id written to.
        id: String,
        /// What the write expected.
        expected: Expected,
        /// What is stored: its revision, or `None` for nothing.
        found: Option<Revision>,
    },
    /// The stored record for `id` cannot be decoded.
    #[error("stored record {id:?} is corrupt: {reason}")]
    Corrupt {
        /// The key the record is stored under.
        id: String,
        /// What the decoder said.
        reason: String,
    },
    /// The stored record for `id` was written by a newer schema.
    #[error(
        "stored record {id:?} has schema version {found}; this build reads up to {supported}: upgrade waggle-store"
    )]
    UnsupportedSchema {
        /// The key the record is stored under.
        id: String,
        /// The version in the record.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The store file cannot be used as it is; `hint` says what to do.
    #[error("cannot open store {path}: {reason}; {hint}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What the operator can do about it.
        hint: &'static str,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The configuration (environment variables, flags) is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store was opened read-only; `save` and `delete` are refused.
    #[error("store {path} is open read-only")]
    ReadOnly {
        /// The store file.
        path: PathBuf,
    },
    /// The store records no history (its retention is `off`).
    #[error("this store records no history (its retention is off: WAGGLE_STORE_HISTORY=off)")]
    HistoryOff,
    /// Changes above `after` were pruned by the history's retention, up to
    /// revision `through`: a follower at `after` would miss them. Follow
    /// from `through` to go on knowingly without them.
    #[error(
        "changes after {after} were pruned by the history's retention (up to {through}): a follower there would miss them; follow from {through} to go on without them"
    )]
    HistoryPruned {
        /// The cursor asked about.
        after: Revision,
        /// The highest revision pruned.
        through: Revision,
    },
    /// The store has been closed or its background writer is gone.
    #[error("the store is closed")]
    Closed,
    /// The storage layer failed.
    #[error("storage failure while {context}: {source}")]
    Storage {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// The id of a [`NotFound`](Error::NotFound), [`Conflict`](Error::Conflict), [`Corrupt`](Error::Corrupt)
    /// or [`UnsupportedSchema`](Error::UnsupportedSchema) error.
    pub fn id(&self) -> Option<&str> {
        match self {
            Error::NotFound { id }
            | Error::Conflict { id, .. }
            | Error::Corrupt { id, .. }
            | Error::UnsupportedSchema { id, .. } => Some(id),
            Error::InvalidId(e) => Some(&e.id),
            _ => None,
        }
    }

    /// `NotFound` carrying `id`: what a backend returns from `find_by_id`
    /// and `delete` of an id it does not hold.
    pub fn not_found(id: &str) -> Self {
        Error::NotFound { id: id.to_owned() }
    }

    pub(crate) fn storage(context: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Storage {
            context,
            source: source.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
