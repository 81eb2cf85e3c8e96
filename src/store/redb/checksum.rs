// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The checksum and revision each record carries in the redb file, so
//! that damage the page checksums miss (or a page redb does not check on a
//! read) comes back as [`Error::Corrupt`](crate::Error::Corrupt) naming the
//! id, never as a changed value.
//!
//! A stored value is a tag byte, the CRC-32 (IEEE, little-endian) of what
//! follows it, the value's [revision](crate::Revision) (u64, little-endian),
//! then the [record](crate::record) itself:
//!
//! ```text
//! 0x02 | crc32 u32 LE | revision u64 LE | {"schema_version":1,"environment":{…}}
//! ```
//!
//! Older values are still read: tag `0x01` (format 3: checksum, no
//! revision) and a bare record starting with `{` (format 2 and older). They
//! have revision 0, and gain a checksum and a revision when next written.
//! Any other first byte is damage. (A single flipped bit cannot turn one
//! tag into another: `0x02`, `0x01` and `{` differ pairwise in two bits or
//! more.)

/// The first byte of a value with a checksum and a revision.
const TAG: u8 = 0x02;
/// The first byte of a format 3 value: a checksum, no revision.
const TAG_NO_REVISION: u8 = 0x01;
/// Tag plus checksum.
const HEAD: usize = 1 + 4;

/// The value stored for `record` at `revision`.
pub(super) fn seal(revision: u64, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 8 + record.len());
    out.push(TAG);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&revision.to_le_bytes());
    crc.update(record);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// The revision and the record inside a stored value, once its checksum
/// checks out; older values (see the module docs) have revision 0.
pub(super) fn open(value: &[u8]) -> Result<(u64, &[u8]), String> {
    let checked = |body: &[u8]| -> Result<(), String> {
        let Some(stored) = value.get(1..HEAD) else {
            return Err(format!("the value is {} bytes, too short", value.len()));
        };
        let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let actual = crc32fast::hash(body);
        if stored == actual {
            Ok(())
        } else {
            Err(format!(
                "checksum mismatch: stored {stored:08x}, the bytes give {actual:08x}"
            ))
        }
    };
    match value.first() {
        Some(&TAG) => {
            let body = value
                .get(HEAD..)
                .filter(|b| b.len() >= 8)
                .ok_or_else(|| format!("the value is {} bytes, too short", value.len()))?;
            checked(body)?;
            let (revision, record) = body.split_at(8);
            let mut n = [0; 8];
            n.copy_from_slice(revision);
            Ok((u64::from_le_bytes(n), record))
        }
        Some(&TAG_NO_REVISION) => {
            let record = value
                .get(HEAD..)
                .ok_or_else(|| format!("the value is {} bytes, too short", value.len()))?;
            checked(record)?;
            Ok((0, record))
        }
        Some(b'{') => Ok((0, value)),
        Some(other) => Err(format!(
            "the value starts with byte {other:#04x}, not a record"
        )),
        None => Err("the value is empty".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_every_flipped_bit_is_caught() {
        let record = br#"{"schema_version":1,"environment":{"id":"a"}}"#;
        let sealed = seal(7, record);
        assert_eq!(open(&sealed), Ok((7, &record[..])));
        let mut caught = 0;
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut damaged = sealed.clone();
                damaged[byte] ^= 1 << bit;
                assert!(open(&damaged).is_err(), "byte {byte} bit {bit}");
                caught += 1;
            }
        }
        assert_eq!(caught, sealed.len() * 8);
        // Older values are read at revision 0; cut values are not read.
        assert_eq!(open(record), Ok((0, &record[..])));
        let mut format_3 = vec![TAG_NO_REVISION];
        format_3.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        format_3.extend_from_slice(record);
        assert_eq!(open(&format_3), Ok((0, &record[..])));
        assert!(open(&sealed[..3]).is_err() && open(&sealed[..10]).is_err() && open(&[]).is_err());
    }
}
