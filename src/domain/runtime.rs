// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The language runtime an environment is built for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The runtime an environment's VM image provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A Python interpreter.
    Python,
    /// Node.js.
    Node,
    /// A plain shell.
    Shell,
}

impl Runtime {
    /// Every runtime, in declaration order.
    pub const ALL: [Runtime; 3] = [Runtime::Python, Runtime::Node, Runtime::Shell];

    /// The lowercase name used in records and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown runtime {value:?}: expected one of python, node, shell")]
#[non_exhaustive]
pub struct UnknownRuntime {
    /// The string that was given.
    pub value: String,
}

impl FromStr for Runtime {
    type Err = UnknownRuntime;

    /// Parses the exact lowercase name (`python`, `node`, `shell`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRuntime {
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_refuses_unknown() {
        for r in Runtime::ALL {
            assert_eq!(r.as_str().parse::<Runtime>(), Ok(r));
        }
        for bad in ["", "Python", "ruby", "node "] {
            let err = bad.parse::<Runtime>().unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains("python, node, shell"));
        }
    }
}
