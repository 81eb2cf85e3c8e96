// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Does an `fdatasync` issued through io_uring let the group-commit leader
//! overlap its ~40 µs of work per batch with the sync, on this machine?
//!
//! Three ways of doing one 16 KiB append (about one 64-writer batch of
//! journal frames) and 40 µs of work, taking turns in rounds of 200:
//!
//! * serial: `pwrite`, `fdatasync`, then the work (what the store does);
//! * overlapped: `pwrite`, submit an io_uring `FSYNC` with `DATASYNC`, the
//!   work, then wait for the sync;
//! * io_uring alone: `pwrite` and the io_uring sync, no work.
//!
//! An fsync cannot be issued without blocking, so io_uring runs it on one
//! of its kernel worker threads; `--pin` pins this thread to CPU 0 and those
//! workers to CPU 1, as a library could not. Prints medians.
//!
//!     cargo run --release --manifest-path scripts/uring_overlap/Cargo.toml [-- --pin] [DIR]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};

const APPEND: usize = 16 << 10;
const WORK: Duration = Duration::from_micros(40);
const SPAN: u64 = 60 << 20;

fn busy(d: Duration) {
    let started = Instant::now();
    while started.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Pins this thread to CPU 0 and the ring's workers to CPU 1.
fn pin(ring: &IoUring) -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data; zeroed is the empty set.
    let (mut here, mut there): (libc::cpu_set_t, libc::cpu_set_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: CPU_SET writes into the sets above, and
    // `sched_setaffinity` reads `here`, of the size given.
    let pinned = unsafe {
        libc::CPU_SET(0, &mut here);
        libc::CPU_SET(1, &mut there);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &here)
    };
    if pinned != 0 {
        return Err(std::io::Error::last_os_error());
    }
    ring.submitter().register_iowq_aff(&there)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pinned = args.iter().any(|a| a == "--pin");
    let dir = args
        .iter()
        .find(|a| *a != "--pin")
        .map_or_else(|| "/var/tmp".into(), String::clone);
    let path = std::path::Path::new(&dir).join(format!("uring-overlap-{}", std::process::id()));
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // Written once and synced, so the appends below change no metadata.
    file.write_all_at(&vec![0; SPAN as usize + APPEND], 0)?;
    file.sync_all()?;
    let mut ring = IoUring::new(8)?;
    if pinned {
        pin(&ring)?;
    }
    let sync = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
        .flags(types::FsyncFlags::DATASYNC)
        .build();
    let buf = vec![0x5a_u8; APPEND];
    let mut at = 0_u64;
    let mut times: [Vec<f64>; 3] = Default::default();
    let until = Instant::now() + Duration::from_secs(15);
    let mut round = 0;
    while Instant::now() < until {
        for _ in 0..200 {
            let started = Instant::now();
            file.write_all_at(&buf, at)?;
            at = (at + APPEND as u64) % SPAN;
            if round % 3 == 0 {
                file.sync_data()?;
                busy(WORK);
            } else {
                // SAFETY: the entry refers to `file`, which outlives the
                // wait for its completion just below.
                unsafe { ring.submission().push(&sync) }.map_err(std::io::Error::other)?;
                ring.submit()?;
                if round % 3 == 1 {
                    busy(WORK);
                }
                ring.submit_and_wait(1)?;
                match ring.completion().next() {
                    Some(done) if done.result() >= 0 => {}
                    Some(done) => return Err(std::io::Error::from_raw_os_error(-done.result())),
                    None => return Err(std::io::Error::other("no completion")),
                }
            }
            times[round % 3].push(started.elapsed().as_secs_f64() * 1e6);
        }
        round += 1;
    }
    std::fs::remove_file(&path)?;
    let [serial, overlapped, alone] = times.map(median);
    println!(
        "{} KiB append, {} µs of work{}",
        APPEND >> 10,
        WORK.as_micros(),
        if pinned {
            ", pinned (this thread on CPU 0, io_uring workers on CPU 1)"
        } else {
            ""
        }
    );
    println!("serial: fdatasync, then the work       p50 {serial:.1} µs");
    println!(
        "overlapped: io_uring sync during work  p50 {overlapped:.1} µs ({:.2}× serial)",
        overlapped / serial
    );
    println!("io_uring sync alone, no work           p50 {alone:.1} µs");
    Ok(())
}
