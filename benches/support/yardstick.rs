// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! What the benchmarks share: medians, how figures print, and the
//! yardstick (a raw 4 KiB `pwrite` + `fdatasync` on a preallocated file).
#![allow(dead_code)] // each bench uses what it needs

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// The median of `v` (the upper one of an even count); NaN if empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `secs` in ns, µs or ms, whichever reads best.
pub fn fmt_time(secs: f64) -> String {
    if secs < 1e-6 {
        format!("{:.0} ns", secs * 1e9)
    } else if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

/// The yardstick's file: 64 blocks of 4 KiB, preallocated and synced so
/// that a write measures a data sync, not file growth.
pub fn raw_file(dir: &Path, tag: &str) -> std::fs::File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join(format!("raw-{tag}")))
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_at(&vec![0; 64 * 4096], 0)
        .unwrap_or_else(|e| panic!("{e}"));
    file.sync_all().unwrap_or_else(|e| panic!("{e}"));
    file
}

/// One yardstick sample: `buf` written at block `i % 64`, then
/// `fdatasync`; seconds.
pub fn raw_sample(file: &std::fs::File, buf: &[u8], i: usize) -> f64 {
    let started = Instant::now();
    file.write_at(buf, (i % 64) as u64 * 4096)
        .unwrap_or_else(|e| panic!("{e}"));
    file.sync_data().unwrap_or_else(|e| panic!("{e}"));
    started.elapsed().as_secs_f64()
}
