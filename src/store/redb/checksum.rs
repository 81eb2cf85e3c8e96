// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The checksum each record carries in the redb file, so that damage the
//! page checksums miss (or a page redb does not check on a read) comes back
//! as [`Error::Corrupt`](crate::Error::Corrupt) naming the id, never as a
//! changed value.
//!
//! A stored value is a tag byte, the CRC-32 (IEEE, little-endian) of the
//! record, then the [record](crate::record) itself:
//!
//! ```text
//! 0x01 | crc32 u32 LE | {"schema_version":1,"environment":{…}}
//! ```
//!
//! A record written before format 3 has no checksum: it starts with `{`
//! and is read as before; it gains one when it is next written. Any other
//! first byte is damage. (A single flipped bit cannot turn the tag into `{`:
//! they differ in five bits.)

/// The first byte of a value that carries a checksum.
const TAG: u8 = 0x01;
/// Tag plus checksum.
const HEAD: usize = 1 + 4;

/// The value stored for `record`: tag, checksum, record.
pub(super) fn seal(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + record.len());
    out.push(TAG);
    out.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// The record inside a stored value, once its checksum checks out; a
/// value without one (format 2 and older) is the record itself.
pub(super) fn open(value: &[u8]) -> Result<&[u8], String> {
    match value.first() {
        Some(&TAG) => {
            let (Some(stored), Some(record)) = (value.get(1..HEAD), value.get(HEAD..)) else {
                return Err(format!("the value is {} bytes, too short", value.len()));
            };
            let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
            let actual = crc32fast::hash(record);
            if stored == actual {
                Ok(record)
            } else {
                Err(format!(
                    "checksum mismatch: stored {stored:08x}, the bytes give {actual:08x}"
                ))
            }
        }
        Some(b'{') => Ok(value),
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
        let sealed = seal(record);
        assert_eq!(open(&sealed), Ok(&record[..]));
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
        // Unsealed (older) records are read as they are; cut values are not.
        assert_eq!(open(record), Ok(&record[..]));
        assert!(open(&sealed[..3]).is_err() && open(&[]).is_err());
    }
}
