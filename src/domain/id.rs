// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Environment ids: which strings a store accepts as a key.

/// The longest id a store accepts, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 128;

/// Why an id was refused by [`validate_id`] (and so by every store's `save`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid environment id {id:?}: {reason}")]
#[non_exhaustive]
pub struct InvalidId {
    /// The refused id, as given.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl InvalidId {
    /// The refusal of `id`, saying why: for a backend whose own rules
    /// are stricter than [`validate_id`]'s.
    pub fn new(id: impl Into<String>, reason: &'static str) -> Self {
        Self {
            id: id.into(),
            reason,
        }
    }
}

/// Checks that `id` can be stored: not empty, at most [`MAX_ID_BYTES`] bytes,
/// and free of whitespace and control characters.
///
/// ```
/// use waggle_store::domain::validate_id;
/// assert!(validate_id("env-7f3a").is_ok());
/// assert!(validate_id("").is_err());
/// assert!(validate_id("two words").is_err());
/// ```
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    let reason = if id.is_empty() {
        "the id is empty"
    } else if id.len() > MAX_ID_BYTES {
        "the id is longer than 128 bytes"
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "the id contains whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(InvalidId {
        id: id.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        let long_ok = "a".repeat(MAX_ID_BYTES);
        let long_bad = "a".repeat(MAX_ID_BYTES + 1);
        // 43 three-byte characters = 129 bytes: over the limit in bytes, not in chars.
        let long_unicode = "€".repeat(43);
        let cases: [(&str, bool); 10] = [
            ("env-1", true),
            ("ünïcödé-☃", true),
            (&long_ok, true),
            ("", false),
            (&long_bad, false),
            (&long_unicode, false),
            ("a b", false),
            ("tab\there", false),
            ("nl\n", false),
            ("nul\0", false),
        ];
        for (id, ok) in cases {
            assert_eq!(validate_id(id).is_ok(), ok, "id {id:?}");
        }
    }
}
