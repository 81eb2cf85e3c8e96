// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The writer thread and group commit: every request waiting in the queue
//! goes into one write transaction and one durable commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use redb::Database;
use tokio::sync::oneshot;

use super::cache::Cache;
use super::file::{RECORDS, storage};
use crate::domain::Environment;
use crate::error::{Error, Result};

/// The most requests one write transaction applies.
const MAX_BATCH: usize = 4096;

pub(super) enum Op {
    /// `env` rides along so the cache can be updated without decoding.
    Save {
        env: Box<Environment>,
        bytes: Vec<u8>,
    },
    Delete {
        id: String,
    },
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) saves: AtomicU64,
    pub(super) deletes: AtomicU64,
    pub(super) commits: AtomicU64,
}

/// The writer thread: batch, apply, commit once, update the cache, answer.
/// It returns when every sender is gone.
pub(super) fn write_loop(
    db: &Database,
    rx: &mpsc::Receiver<Request>,
    counters: &Counters,
    cache: &Cache,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // The commit point: requests whose callers are gone are not applied.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        cache.begin_commit(batch.iter().map(|r| &r.op));
        // redb can panic on a damaged file; contain it to this batch.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(db, &batch)))
            .unwrap_or_else(|_| {
                Err(Error::storage(
                    "writing",
                    "the storage engine panicked; run `waggle-store check`",
                ))
            });
        let (results, saves, deletes) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "write batch failed");
                let results = batch.iter().map(|_| Err(same_failure(&e))).collect();
                (results, 0, 0)
            }
        };
        if saves + deletes > 0 {
            counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        counters.saves.fetch_add(saves, Ordering::Relaxed);
        counters.deletes.fetch_add(deletes, Ordering::Relaxed);
        tracing::trace!(ops = batch.len(), "committed a batch");
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        // Committed: make the cache agree before anyone hears back. The
        // saved values move into it; they are not needed after.
        cache.end_commit(
            ops.into_iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(op, _)| op),
        );
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result); // the caller may have gone since
        }
    }
}

type Applied = (Vec<Result<()>>, u64, u64);

fn apply(db: &Database, batch: &[Request]) -> Result<Applied> {
    let txn = db.begin_write().map_err(storage("beginning a write"))?;
    let mut results = Vec::with_capacity(batch.len());
    let (mut saves, mut deletes) = (0, 0);
    {
        let mut table = txn
            .open_table(RECORDS)
            .map_err(storage("opening the table"))?;
        for request in batch {
            results.push(match &request.op {
                Op::Save { env, bytes } => {
                    table
                        .insert(env.id.as_str(), bytes.as_slice())
                        .map_err(storage("saving"))?;
                    saves += 1;
                    Ok(())
                }
                Op::Delete { id } => {
                    if table
                        .remove(id.as_str())
                        .map_err(storage("deleting"))?
                        .is_some()
                    {
                        deletes += 1;
                        Ok(())
                    } else {
                        Err(Error::not_found(id))
                    }
                }
            });
        }
    }
    if saves + deletes == 0 {
        txn.abort().map_err(storage("aborting an empty write"))?;
    } else {
        txn.commit().map_err(storage("committing"))?;
    }
    Ok((results, saves, deletes))
}

/// The batch's failure, once for each of its callers.
fn same_failure(e: &Error) -> Error {
    match e {
        Error::Storage { context, source } => Error::storage(context, source.to_string()),
        other => Error::storage("committing", other.to_string()),
    }
}
