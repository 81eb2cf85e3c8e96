// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Panics inside redb, caught where they happen and turned into errors,
//! without their message printed.
//!
//! redb checks page checksums when a file is opened for writing (this
//! crate's default, [`RedbOptions::verify_on_open`](super::RedbOptions)),
//! not on a read. A page damaged where no open looked — a file read
//! read-only, `check` naming the records of a file that failed its page
//! check, an open with `verify_on_open(false)` — can make redb index past
//! a page's end and panic. Every such read runs under [`quietly`]: the
//! panic becomes an error that names the damage, is logged with
//! `tracing`, and is counted ([`contained_panics`]); its message and
//! backtrace never reach the terminal.

use std::cell::{Cell, RefCell};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Whether this thread is inside [`quietly`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The message of the panic [`quietly`] caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static CONTAINED: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// How many panics inside the storage engine this process has caught and
/// turned into errors (each on damage no open had checked for). For
/// tests and monitoring: anything but 0 means a store file is damaged.
pub fn contained_panics() -> u64 {
    CONTAINED.load(Ordering::Relaxed)
}

/// Runs `f`; a panic inside it is caught and returned as its message
/// (with where it happened), counted, and logged, not printed. The first
/// call sets a process-wide panic hook that passes every panic outside
/// `quietly` on to the hook that was there before.
pub(super) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{what}{at}")));
            } else {
                before(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|_| {
        CONTAINED.fetch_add(1, Ordering::Relaxed);
        let what = CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "a panic".to_owned());
        tracing::error!(panic = %what, "the storage engine panicked on a damaged file; reported as an error");
        what
    })
}
