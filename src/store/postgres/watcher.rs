// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `PgStore`'s watchers: a connection of their own that `LISTEN`s for the
//! wake-up (migration 6), the history for the content, so that a lost
//! notification, a dropped connection or a restarted server loses nothing.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{PgStore, pg_error, quote};
use crate::error::{Error, Result};
use crate::history::{Audited, Change, WATCH_BATCH};
use crate::revisions::Revision;

/// How often a watcher renews its lease (writers notify while one holds;
/// each runs 60 s).
const LEASE_RENEW: Duration = Duration::from_secs(20);
/// How long a watcher waits for a notification before it looks anyway.
const LOOK_ANYWAY: Duration = Duration::from_secs(1);
/// The longest wait between two tries while the server cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection listening on the schema's channel: each notification
/// becomes one wake-up (at most one waits: they carry nothing else).
pub(super) struct Listener {
    _client: tokio_postgres::Client,
    woken: mpsc::Receiver<()>,
    /// The task that reads the connection; aborted when dropped, so no
    /// task outlives the watcher.
    reader: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl PgStore {
    /// A new connection that listens on this schema's channel.
    async fn listen(&self) -> Result<Listener> {
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(pg_error("connecting a watcher"))?;
        let (wake, woken) = mpsc::channel(1);
        let reader = tokio::spawn(async move {
            // Reading the connection also drives the client's queries.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = wake.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .abort_handle();
        let listener = Listener {
            _client: client,
            woken,
            reader,
        };
        listener
            ._client
            .batch_execute(&format!("LISTEN {}", quote(&self.channel)))
            .await
            .map_err(pg_error("listening for changes"))?;
        Ok(listener)
    }

    /// Writers notify for the next minute.
    async fn renew_lease(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(super::pool_error)?;
        client
            .execute(self.sql.watch_lease.as_str(), &[])
            .await
            .map_err(pg_error("renewing the watch lease"))?;
        Ok(())
    }

    /// The watcher's step: the changes after `cursor`, waiting until there
    /// is one; what may pass (the server down, a connection lost) is tried
    /// again, and only a pruned or unrecorded history ends the stream.
    pub(super) async fn next_changes(
        &self,
        cursor: Revision,
        state: &mut WatchState,
    ) -> Result<Vec<Change>> {
        let mut backoff = Duration::from_millis(10);
        loop {
            if state.renewed.is_none_or(|t| t.elapsed() >= LEASE_RENEW)
                && self.renew_lease().await.is_ok()
            {
                state.renewed = Some(Instant::now());
            }
            if state.listener.is_none() {
                match self.listen().await {
                    Ok(l) => state.listener = Some(l),
                    Err(e) => tracing::debug!(error = %e, "a watcher cannot listen yet"),
                }
            }
            // Wake-ups before this read are answered by it.
            if let Some(l) = &mut state.listener {
                while l.woken.try_recv().is_ok() {}
            }
            match self.changes(cursor, WATCH_BATCH).await {
                Ok(batch) if !batch.is_empty() => return Ok(batch),
                Ok(_) => backoff = Duration::from_millis(10),
                Err(e @ (Error::HistoryPruned { .. } | Error::HistoryOff)) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "a watcher's read failed; trying again");
                    state.listener = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            match &mut state.listener {
                Some(l) => {
                    tokio::select! {
                        woke = l.woken.recv() => if woke.is_none() {
                            // The connection closed: listen again.
                            state.listener = None;
                        },
                        () = tokio::time::sleep(LOOK_ANYWAY) => {}
                    }
                }
                None => tokio::time::sleep(backoff.max(Duration::from_millis(100))).await,
            }
        }
    }
}

/// What a watcher keeps between its steps.
#[derive(Default)]
pub(super) struct WatchState {
    listener: Option<Listener>,
    renewed: Option<Instant>,
}
