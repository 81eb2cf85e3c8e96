// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! An environment's lifecycle status and the transitions allowed between them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an environment is in its lifecycle.
///
/// ```text
/// creating ──► running ──► destroying ──► destroyed
///     │           │
///     └──► error ◄┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The VM is being built.
    Creating,
    /// The VM is up and usable.
    Running,
    /// The VM is being torn down.
    Destroying,
    /// The VM is gone.
    Destroyed,
    /// Creation or operation failed.
    Error,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] = [
        Status::Creating,
        Status::Running,
        Status::Destroying,
        Status::Destroyed,
        Status::Error,
    ];

    /// The lowercase name used in records and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Destroying => "destroying",
            Status::Destroyed => "destroyed",
            Status::Error => "error",
        }
    }

    /// Whether the lifecycle allows going from `self` to `to`: exactly
    /// creating → running | error, running → destroying | error and
    /// destroying → destroyed.
    pub const fn can_transition_to(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Creating, Status::Running)
                | (Status::Creating, Status::Error)
                | (Status::Running, Status::Destroying)
                | (Status::Running, Status::Error)
                | (Status::Destroying, Status::Destroyed)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status {value:?}: expected one of creating, running, destroying, destroyed, error"
)]
#[non_exhaustive]
pub struct UnknownStatus {
    /// The string that was given.
    pub value: String,
}

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                value: s.to_owned(),
            })
    }
}

/// A status change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid status transition from {from} to {to}")]
#[non_exhaustive]
pub struct InvalidTransition {
    /// The status the environment was in.
    pub from: Status,
    /// The status that was asked for.
    pub to: Status,
}
