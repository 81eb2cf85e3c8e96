// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The JSON record format every persistent store and the export file use.
//!
//! A record is one JSON object on one line:
//!
//! ```json
//! {"schema_version":1,"environment":{"id":"env-1","name":"scratch","runtime":"python",…}}
//! ```
//!
//! Field names are snake_case, timestamps RFC 3339 in UTC with up to nine
//! fractional digits, and the inactivity timeout `{"secs":…,"nanos":…}`.
//! Encoding is lossless: `decode(&encode(&env)?)? == env` for every value.
//!
//! **Revisions are not part of a record.** A [`Revision`](crate::Revision)
//! belongs to the store that issued it: stores keep it beside the record
//! (redb in the value's header, PostgreSQL in a column), an export holds
//! none, and an import writes each record anew, at a new revision of the
//! target store.
//!
//! **Newer schemas are refused, never truncated.** A record whose
//! `schema_version` is above [`SCHEMA_VERSION`] decodes to
//! [`RecordError::UnsupportedSchema`], and a record of this version with a
//! field this reader does not know is refused as invalid. So an older reader
//! can never load a newer record and save it back with fields dropped.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::Environment;

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Why bytes could not be decoded into an [`Environment`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record was written by a newer schema than this build reads.
    #[error(
        "record has schema version {found}, newer than version {supported} that this build reads; upgrade waggle-store"
    )]
    UnsupportedSchema {
        /// The version found in the record.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// The bytes are not a valid record of this schema.
    #[error("{0}")]
    Invalid(String),
    /// The value could not be encoded (serde_json refused it).
    #[error("cannot encode the record: {0}")]
    Encode(String),
}

#[derive(Serialize)]
struct RecordOut<'a> {
    schema_version: u32,
    environment: &'a Environment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn<'a> {
    schema_version: u32,
    #[serde(borrow)]
    environment: &'a RawValue,
}

/// Only the version, read leniently to explain a record the strict parse refused.
#[derive(Deserialize)]
struct VersionOnly {
    schema_version: u32,
}

/// Encodes `env` as one line of JSON (no trailing newline).
///
/// Every field is a string, integer, boolean, chrono timestamp or
/// `Duration`, so serde_json has no reason to refuse one; the error exists
/// so that a future field that can fail is reported, never stored empty.
pub fn encode(env: &Environment) -> Result<Vec<u8>, RecordError> {
    let record = RecordOut {
        schema_version: SCHEMA_VERSION,
        environment: env,
    };
    serde_json::to_vec(&record).map_err(|e| RecordError::Encode(e.to_string()))
}

/// Decodes one record, refusing newer schemas, unknown fields and invalid ids.
pub fn decode(bytes: &[u8]) -> Result<Environment, RecordError> {
    let record: RecordIn<'_> = match serde_json::from_slice(bytes) {
        Ok(record) => record,
        Err(strict) => {
            return Err(match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(v) if v.schema_version > SCHEMA_VERSION => RecordError::UnsupportedSchema {
                    found: v.schema_version,
                    supported: SCHEMA_VERSION,
                },
                _ => RecordError::Invalid(strict.to_string()),
            });
        }
    };
    if record.schema_version > SCHEMA_VERSION {
        return Err(RecordError::UnsupportedSchema {
            found: record.schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    if record.schema_version != SCHEMA_VERSION {
        return Err(RecordError::Invalid(format!(
            "unknown schema version {}",
            record.schema_version
        )));
    }
    let env: Environment = serde_json::from_str(record.environment.get())
        .map_err(|e| RecordError::Invalid(format!("environment: {e}")))?;
    env.validate()
        .map_err(|e| RecordError::Invalid(e.to_string()))?;
    Ok(env)
}

/// Encodes `envs` as JSON Lines: one record per line, in the order given.
/// This is the export (backup and migration) format.
pub fn encode_lines<'a>(
    envs: impl IntoIterator<Item = &'a Environment>,
) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    for env in envs {
        out.extend_from_slice(&encode(env)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// Why a JSON Lines export was refused by [`decode_lines`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
#[non_exhaustive]
pub struct LineError {
    /// The 1-based line number; 0 for the file as a whole.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Decodes a whole JSON Lines export, all or nothing: every line must be a
/// valid record (no blank lines), no id may appear twice, and there must be
/// at least one record.
pub fn decode_lines(text: &str) -> Result<Vec<Environment>, LineError> {
    let mut envs = Vec::new();
    let mut first_seen = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fail = |reason: String| LineError { line: n, reason };
        if line.trim().is_empty() {
            return Err(fail("empty line".into()));
        }
        let env = decode(line.as_bytes()).map_err(|e| fail(e.to_string()))?;
        if let Some(first) = first_seen.insert(env.id.clone(), n) {
            return Err(fail(format!(
                "duplicate id {:?} (first on line {first})",
                env.id
            )));
        }
        envs.push(env);
    }
    if envs.is_empty() {
        return Err(LineError {
            line: 0,
            reason: "the file holds no records".into(),
        });
    }
    Ok(envs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capabilities, Runtime};
    use chrono::{DateTime, Utc};
    use std::time::Duration;

    fn full() -> Environment {
        let t = DateTime::<Utc>::from_timestamp(1_790_000_000, 123_456_789).unwrap_or_default();
        let mut env = Environment::new_at("env-1", "näme ☃ \"quoted\"", Runtime::Node, t);
        env.ssh_port = 65535;
        env.inactivity_timeout = Duration::new(1800, 1);
        env.capabilities = Capabilities {
            detected_at: Some(t),
            path: "/usr/bin:/bin".into(),
            python_cmd: Some("python3".into()),
            has_apt_get: true,
            ..Capabilities::default()
        };
        env.capabilities_detected = true;
        env
    }

    #[test]
    fn format_is_snake_case_rfc3339_and_versioned() {
        let text = String::from_utf8(encode(&full()).unwrap_or_default()).unwrap_or_default();
        for needle in [
            "\"schema_version\":1",
            "\"created_at\":\"2026-09-21T",
            ".123456789Z\"",
            "\"runtime\":\"node\"",
            "\"status\":\"creating\"",
            "\"has_apt_get\":true",
            "\"inactivity_timeout\":{\"secs\":1800,\"nanos\":1}",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
        assert!(!text.contains('\n'));
    }

    #[test]
    fn refuses_newer_schema_unknown_fields_and_bad_ids() {
        let good = String::from_utf8(encode(&full()).unwrap_or_default()).unwrap_or_default();
        let newer = good.replace("\"schema_version\":1", "\"schema_version\":2");
        assert_eq!(
            decode(newer.as_bytes()),
            Err(RecordError::UnsupportedSchema {
                found: 2,
                supported: 1
            })
        );
        let newer_with_field = newer.replace("\"name\"", "\"colour\":\"red\",\"name\"");
        assert!(matches!(
            decode(newer_with_field.as_bytes()),
            Err(RecordError::UnsupportedSchema { found: 2, .. })
        ));
        let cases = [
            (
                "unknown field",
                good.replace("\"name\"", "\"colour\":\"red\",\"name\""),
            ),
            (
                "unknown outer field",
                good.replace("{\"schema_version\"", "{\"x\":1,\"schema_version\""),
            ),
            (
                "version zero",
                good.replace("\"schema_version\":1", "\"schema_version\":0"),
            ),
            ("bad id", good.replace("\"env-1\"", "\"env 1\"")),
            ("bad runtime", good.replace("\"node\"", "\"ruby\"")),
            ("truncated", good[..good.len() / 2].to_owned()),
            ("not json", "\u{0}\u{1}garbage".to_owned()),
            ("empty", String::new()),
        ];
        for (name, text) in cases {
            assert!(
                matches!(decode(text.as_bytes()), Err(RecordError::Invalid(_))),
                "case {name}"
            );
        }
    }

    #[test]
    fn round_trip_edges() {
        let mut long = full();
        long.name = "ü".repeat(100_000);
        long.ssh_port = 0;
        let mut empty = Environment::new_at("e", "", Runtime::Shell, DateTime::<Utc>::MIN_UTC);
        empty.last_used = DateTime::<Utc>::MAX_UTC;
        for env in [full(), long, empty] {
            assert_eq!(decode(&encode(&env).unwrap_or_default()), Ok(env));
        }
    }
}
