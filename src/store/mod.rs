// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The stores that implement [`Repository`](crate::Repository), one module
//! per backend.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redb;

use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::record::{self, RecordError};

/// The environment in the record stored under `id`, as every persistent
/// store reads it: a record that does not decode is `Corrupt` naming the
/// id, one of a newer schema `UnsupportedSchema`, one holding another id
/// `Corrupt`.
pub(crate) fn decode_stored(id: &str, bytes: &[u8]) -> Result<Environment> {
    let env = record::decode(bytes).map_err(|e| match e {
        RecordError::UnsupportedSchema { found, supported } => Error::UnsupportedSchema {
            id: id.to_owned(),
            found,
            supported,
        },
        other => Error::Corrupt {
            id: id.to_owned(),
            reason: other.to_string(),
        },
    })?;
    if env.id != id {
        return Err(Error::Corrupt {
            id: id.to_owned(),
            reason: format!("the record holds id {:?}", env.id),
        });
    }
    Ok(env)
}
