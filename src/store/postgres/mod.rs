// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `PgStore`: environments in a PostgreSQL database, for fleets of Waggle
//! servers that share one store. Behind the `postgres` feature.
//!
//! # How it works
//!
//! * **Schema.** A table `environments (id text COLLATE "C" PRIMARY KEY,
//!   record text)` in a configurable schema ([`PgOptions::schema`]), so
//!   several deployments or test runs share one database. Records are the
//!   JSON [records](crate::record) a redb store holds. The SQL lives in
//!   `src/store/postgres/migrations/`, one file a version, applied on open
//!   inside one transaction under an advisory lock (two servers starting at
//!   once take turns); a schema newer than this build is refused and left
//!   as it is.
//! * **Each call is one statement** in autocommit: atomic on the server.
//!   A write whose caller drops it once it may have been sent keeps its
//!   connection out of the pool until the server has answered it (an empty
//!   query queued behind it), so no connection goes back mid-statement; it
//!   is remembered until then, and every later write of this store waits
//!   for it first: a dropped write never lands after a later one.
//! * **Pool.** `deadpool-postgres` over `tokio-postgres`: a pool of
//!   [`PgOptions::pool_size`] connections, each with a connect timeout and a
//!   server-side `statement_timeout`; a pool wait is bounded too, so a
//!   server that is down or slow gives a typed error, never a hang.
//! * **TLS**, on rustls, with libpq's `sslmode` and `sslrootcert` (in the
//!   connection string, or `PGSSLMODE` / `PGSSLROOTCERT`):
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | yes, or the connection fails | no; with `sslrootcert` given, as `verify-ca` |
//! | `verify-ca` | yes | signed by a root in `sslrootcert` |
//! | `verify-full` | yes | signed by a root in `sslrootcert`, and names the host |
//!
//!   `sslrootcert` is a PEM file of root certificates; for the `verify-*`
//!   modes it defaults to `~/.postgresql/root.crt`, as in libpq.

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::watch;
use tokio_postgres::types::ToSql;

use crate::domain::{Environment, validate_id};
use crate::error::{Error, Result};
use crate::history::{Audited, Change, ChangeStream, HistoryOptions, follow};
use crate::record;
use crate::repository::Repository;
use crate::revisions::{Expected, Revision, Revisioned, Versioned};
use crate::store::redb::CheckReport;

mod tls;
mod watcher;

/// The migrations, in order: version `n` is the `n`-th.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_environments.sql"),
    include_str!("migrations/0002_count.sql"),
    include_str!("migrations/0003_revisions.sql"),
    include_str!("migrations/0004_revisions_in_commit_order.sql"),
    include_str!("migrations/0005_history.sql"),
    include_str!("migrations/0006_watch.sql"),
];

/// How to open a [`PgStore`]: `PgOptions::default()` and the setters,
/// e.g. `PgOptions::default().schema("fleet").pool_size(32)`. New options
/// come with a default, so code that builds options this way keeps
/// compiling.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// The schema the store's tables live in; created if missing.
    /// Default `waggle`.
    pub schema: String,
    /// Connections in the pool. Default 16.
    pub pool_size: usize,
    /// How long to wait for a connection (connecting, or a free one from
    /// the pool). Default 5 s.
    pub connect_timeout: Duration,
    /// The server cancels a statement running longer. Default 10 s.
    pub statement_timeout: Duration,
    /// The origin this handle's writes carry in the history, and how long
    /// changes are kept. Default: `<host>:<pid>`, 90 days.
    pub history: HistoryOptions,
    /// Whether connecting switches the schema's recording of the history
    /// on or off as `history` says (see [`keep_recording`](Self::keep_recording)).
    switch_recording: bool,
}

impl PgOptions {
    /// Connects without switching the schema's recording of the history
    /// on or off, and without pruning: what a maintenance tool (`check`)
    /// wants, so that it changes nothing.
    pub fn keep_recording(mut self) -> Self {
        self.switch_recording = false;
        self
    }

    /// With [`schema`](Self::schema).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// With [`pool_size`](Self::pool_size).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// With [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// With [`statement_timeout`](Self::statement_timeout).
    pub fn statement_timeout(mut self, d: Duration) -> Self {
        self.statement_timeout = d;
        self
    }

    /// With [`history`](Self::history).
    pub fn history(mut self, history: HistoryOptions) -> Self {
        self.history = history;
        self
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "waggle".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            history: HistoryOptions::default(),
            switch_recording: true,
        }
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("history", &self.history)
            .finish()
    }
}

/// The statements of one schema, its name quoted. Every write goes
/// through a function of migration 5, which takes the history's gate and
/// locks the id before it takes a revision, so an id's revisions increase
/// in commit order, and records the change in the same transaction.
#[derive(Debug)]
struct Sql {
    /// Inserts or replaces; returns the new revision.
    upsert: String,
    select: String,
    all: String,
    count: String,
    /// Saves only at the expected revision (`NULL`: only if absent);
    /// returns the new revision (`NULL` if refused) and the one found.
    save_if: String,
    /// Deletes; returns the revision the delete took (`NULL`: none was
    /// stored).
    delete: String,
    /// Deletes only at revision `$2`; returns whether it did and the
    /// revision found.
    delete_if: String,
    /// Whether changes are recorded and the highest pruned revision, then
    /// up to `$2` changes above `$1` (one row with no change if none).
    changes: String,
    /// Whether changes are recorded, then `$1`'s changes.
    history: String,
    /// Waits for every writer in flight (migration 5).
    fence: String,
    /// Removes changes older than `$1` seconds but each stored id's latest;
    /// returns how many.
    prune: String,
    /// Switches recording on or off.
    set_recording: String,
    /// Stored ids whose latest change is not their value at their revision.
    history_check: String,
    /// How many stored ids `history_check` judges (`NULL` if the history
    /// is not recorded).
    history_judged: String,
    /// Writers notify watchers for the next minute (migration 6).
    watch_lease: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = quote(schema);
        let t = format!("{s}.environments");
        let c = format!("{s}.environment_changes");
        let h = format!("{s}.history_state");
        let change = "c.revision, c.id, c.kind, c.at, c.origin, c.record";
        Self {
            upsert: format!("SELECT {s}.save_environment($1, $2, $3)"),
            select: format!("SELECT record, revision FROM {t} WHERE id = $1"),
            all: format!("SELECT id, record, revision FROM {t} ORDER BY id"),
            save_if: format!(
                "SELECT new_revision, found_revision FROM {s}.save_environment_if($1, $2, $3, $4)"
            ),
            delete: format!("SELECT {s}.delete_environment($1, $2)"),
            delete_if: format!(
                "SELECT deleted, found_revision FROM {s}.delete_environment_if($1, $2, $3)"
            ),
            changes: format!(
                "SELECT h.recording, h.pruned_through, {change} FROM {h} h \
                 LEFT JOIN LATERAL (SELECT * FROM {c} WHERE revision > $1 ORDER BY revision LIMIT $2) c ON true \
                 ORDER BY c.revision"
            ),
            history: format!(
                "SELECT h.recording, h.pruned_through, {change} FROM {h} h \
                 LEFT JOIN LATERAL (SELECT * FROM {c} WHERE id = $1 ORDER BY revision) c ON true \
                 ORDER BY c.revision"
            ),
            fence: format!("SELECT {s}.history_fence()"),
            prune: format!(
                "WITH gone AS (DELETE FROM {c} c \
                   WHERE c.at < clock_timestamp() - make_interval(secs => $1) \
                   AND NOT EXISTS (SELECT 1 FROM {t} e WHERE e.id = c.id AND e.revision = c.revision) \
                   RETURNING c.revision), \
                 bumped AS (UPDATE {h} SET pruned_through = greatest(pruned_through, (SELECT max(revision) FROM gone)) \
                   WHERE EXISTS (SELECT 1 FROM gone) RETURNING 1) \
                 SELECT count(*)::bigint FROM gone"
            ),
            set_recording: format!("SELECT {s}.set_history_recording($1)"),
            watch_lease: format!(
                "UPDATE {h} SET watched_until = greatest(watched_until, clock_timestamp() + interval '60 seconds')"
            ),
            history_judged: format!(
                "SELECT CASE WHEN h.recording THEN \
                 (SELECT count(*) FROM {t} e WHERE e.revision > h.pruned_through) END FROM {h} h"
            ),
            history_check: format!(
                "SELECT e.id, l.revision, l.kind, l.record = e.record FROM {h} h CROSS JOIN {t} e \
                 LEFT JOIN LATERAL (SELECT * FROM {c} c WHERE c.id = e.id ORDER BY c.revision DESC LIMIT 1) l ON true \
                 WHERE h.recording AND e.revision > h.pruned_through \
                 AND (l.revision IS DISTINCT FROM e.revision OR l.kind <> 'saved' OR l.record IS DISTINCT FROM e.record) \
                 ORDER BY e.id"
            ),
            // Slots kept by a trigger (migration 2): exact, and 64 rows
            // to read rather than every record.
            count: format!("SELECT coalesce(sum(n), 0)::bigint FROM {s}.environment_count"),
        }
    }
}

/// `name` as a quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` ready to go between single quotes in SQL.
fn in_literal(text: &str) -> String {
    text.replace('\'', "''")
}

/// A [`Repository`] in a PostgreSQL database: see the [module docs](self).
pub struct PgStore {
    pool: Pool,
    sql: Sql,
    schema: String,
    /// Where it connects, without the password.
    target: String,
    /// Writes whose callers went away before they ended: each is `true`
    /// once it has.
    orphans: Arc<std::sync::Mutex<Vec<watch::Receiver<bool>>>>,
    /// The origin of this handle's writes, in their changes.
    origin: String,
    /// The background sweep of the history (a retention window only);
    /// stopped when the store is dropped.
    sweeper: Option<tokio::task::AbortHandle>,
    /// How to open a connection of its own (a watcher's).
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The channel this schema's writers notify (migration 6).
    channel: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

/// How often the background sweep prunes the history.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A `tokio-postgres` error with the server's own message, which its
/// `Display` leaves out ("db error").
fn pg_error(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| match e.as_db_error() {
        Some(db) => Error::storage(
            context,
            format!("{} ({}: {})", db.message(), db.severity(), db.code().code()),
        ),
        // tokio-postgres says "error performing TLS handshake" and keeps
        // why (an unknown issuer, a certificate for another host) in its
        // source: the reader needs both.
        None => match std::error::Error::source(&e) {
            Some(why) => Error::storage(context, format!("{e}: {why}")),
            None => Error::storage(context, e),
        },
    }
}

/// `sql` prepared on this connection once, then reused from its cache.
async fn prepared(
    client: &deadpool_postgres::Client,
    sql: &str,
) -> Result<tokio_postgres::Statement> {
    client
        .prepare_cached(sql)
        .await
        .map_err(pg_error("preparing a statement"))
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    match e {
        // The server's own words, not deadpool's "db error".
        deadpool_postgres::PoolError::Backend(e) => pg_error("connecting to PostgreSQL")(e),
        other => Error::storage("getting a PostgreSQL connection", other),
    }
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq
    /// `key=value` string; `PGPASSWORD` is used when it names no password,
    /// `PGSSLMODE` and `PGSSLROOTCERT` when it names no `sslmode` or
    /// `sslrootcert`), creates or migrates the schema, and returns the
    /// store. TLS follows libpq's `sslmode` (the module docs).
    ///
    /// Refuses a schema written by a newer waggle-store, without changing
    /// it. Errors never contain the password.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the migration is one transaction; dropped, it is rolled
    /// back by the server when the connection closes.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let (url, tls_params) = tls::take_tls_params(url, |key| std::env::var(key).ok())?;
        let tls = tls::connector(&tls_params)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("the PostgreSQL connection string: {e}")))?;
        config.ssl_mode(tls.mode);
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        config.connect_timeout(options.connect_timeout);
        config.options(format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        if config.get_application_name().is_none() {
            config.application_name("waggle-store");
        }
        let target = format!(
            "{}@{}/{}",
            config.get_user().unwrap_or("?"),
            config
                .get_hosts()
                .first()
                .map_or_else(|| "?".to_owned(), |h| format!("{h:?}")),
            config.get_dbname().unwrap_or("?"),
        );
        let watch_config = config.clone();
        let watch_tls = tls.connector.clone();
        let manager = Manager::from_config(
            config,
            tls.connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Some(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            // The connection used last is taken first: a lone writer keeps
            // one warm server process instead of cycling through them all.
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .timeouts(Timeouts {
                wait,
                create: wait,
                recycle: wait,
            })
            .build()
            .map_err(|e| Error::Config(format!("the PostgreSQL pool: {e}")))?;
        crate::history::validate_origin(&options.history.origin)?;
        migrate(&pool, &options.schema).await?;
        let sql = Sql::new(&options.schema);
        if options.switch_recording {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    sql.set_recording.as_str(),
                    &[&options.history.retention.records()],
                )
                .await
                .map_err(pg_error("switching the history's recording"))?;
        }
        let sweep = options
            .history
            .retention
            .window()
            .filter(|_| options.switch_recording);
        let sweeper = sweep.map(|window| {
            let (pool, prune) = (pool.clone(), sql.prune.clone());
            tokio::spawn(async move {
                loop {
                    match prune_with(&pool, &prune, window).await {
                        Ok(n) => tracing::debug!(removed = n, "pruned the history"),
                        Err(e) => tracing::warn!(error = %e, "pruning the history failed; trying again later"),
                    }
                    tokio::time::sleep(SWEEP_EVERY).await;
                }
            })
            .abort_handle()
        });
        let channel: String = {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .query_one(
                    &format!("SELECT {}.watch_channel()", quote(&options.schema)),
                    &[],
                )
                .await
                .map_err(pg_error("naming the watch channel"))?
                .get(0)
        };
        Ok(Self {
            pool,
            sql,
            schema: options.schema,
            target,
            orphans: Arc::default(),
            origin: options.history.origin,
            sweeper,
            config: watch_config,
            tls: watch_tls,
            channel,
        })
    }

    /// The schema this store's table lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops this store's schema and everything in it — every environment
    /// and its history. For scratch stores (the CLI's benchmark, tests);
    /// the store is unusable afterwards.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: one statement, all of it or none.
    pub async fn drop_schema(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", quote(&self.schema)))
            .await
            .map_err(pg_error("dropping the schema"))
    }

    /// Waits until every write whose caller went away has ended (usually
    /// none: one lock, no copy).
    async fn settle_orphans(&self) {
        let pending: Vec<watch::Receiver<bool>> = {
            let orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
            if orphans.is_empty() {
                return;
            }
            orphans.clone()
        };
        for mut done in pending {
            // An error means the task is gone: ended, too.
            let _ = done.wait_for(|ended| *ended).await;
        }
        self.orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|done| !*done.borrow());
    }

    /// Runs one write statement on a pooled connection (see the module
    /// docs) and returns the rows it returned (the revision of each row it
    /// wrote, as every write statement says `RETURNING revision`).
    async fn write(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &'static str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        // Waiting here changes nothing: dropped now, nothing was sent.
        self.settle_orphans().await;
        let client = self.pool.get().await.map_err(pool_error)?;
        let prepared = prepared(&client, sql).await?;
        // From here the statement may be on its way: a drop hands the
        // connection to a task that waits for it (see `InFlight`).
        let mut flight = InFlight {
            client: Some(client),
            orphans: Arc::clone(&self.orphans),
        };
        let client = flight.client.as_ref().ok_or(Error::Closed)?;
        let result = client.query(&prepared, params).await;
        // Answered: the connection goes back to the pool as it is.
        flight.client = None;
        result.map_err(pg_error(context))
    }
}

/// A write statement that may have been sent on `client`. Dropped before
/// its answer (the caller went away), it keeps the connection out of the
/// pool on a task that sends an empty query behind it — answers come in
/// order, so when that one is answered the write has ended — and is
/// remembered as an orphan until then, so later writes wait for it.
struct InFlight {
    client: Option<deadpool_postgres::Object>,
    orphans: Arc<std::sync::Mutex<Vec<watch::Receiver<bool>>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on: the connection is dropped unused.
            return;
        };
        let (ended, done) = watch::channel(false);
        self.orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(done);
        runtime.spawn(async move {
            let _ = client.simple_query("").await;
            let _ = ended.send(true);
        });
    }
}

impl PgStore {
    /// Checks the store: every record decodes (and holds its own id), and
    /// `count` agrees with the rows read; `integrity` says whether they
    /// agree. The server checks its own pages (`pg_amcheck`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: reads only.
    pub async fn check(&self) -> Result<CheckReport> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        // One snapshot for both reads, so a writer between them is no
        // disagreement.
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error("starting the check"))?;
        let rows = txn
            .query(self.sql.all.as_str(), &[])
            .await
            .map_err(pg_error("reading"))?;
        let counted: i64 = txn
            .query_one(self.sql.count.as_str(), &[])
            .await
            .map_err(pg_error("counting"))?
            .get(0);
        let history = txn
            .query(self.sql.history_check.as_str(), &[])
            .await
            .map_err(pg_error("checking the history"))?;
        let judged: Option<i64> = txn
            .query_one(self.sql.history_judged.as_str(), &[])
            .await
            .map_err(pg_error("checking the history"))?
            .get(0);
        txn.commit().await.map_err(pg_error("ending the check"))?;
        let mut report = tokio::task::spawn_blocking(move || {
            let mut report = CheckReport::default();
            for row in &rows {
                let id: &str = row.get(0);
                match decode(id, row.get(1)) {
                    Ok(_) => report.records_ok += 1,
                    Err(e) => report.corrupt.push((id.to_owned(), e.to_string())),
                }
            }
            report
        })
        .await
        .map_err(|e| Error::storage("checking", e))?;
        let read = report.records_ok + report.corrupt.len();
        report.integrity = Some(i64::try_from(read).is_ok_and(|read| read == counted));
        for row in &history {
            let id: &str = row.get(0);
            let latest: Option<i64> = row.get(1);
            let why = match latest {
                None => "the history has no change of it".to_owned(),
                Some(r) => format!(
                    "its latest change (revision {r}) is not its stored value at its revision"
                ),
            };
            report.history.push((id.to_owned(), why));
        }
        let judged = usize::try_from(judged.unwrap_or(0)).unwrap_or(0);
        report.history_ok = judged.saturating_sub(report.history.len());
        Ok(report)
    }

    /// The TLS version of a pooled connection as the server sees it
    /// (`pg_stat_ssl`), e.g. `"TLSv1.3"`, or `None` when it is not
    /// encrypted: how an operator or a test confirms what `sslmode` gave.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: reads only.
    pub async fn tls_version(&self) -> Result<Option<String>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                "SELECT CASE WHEN ssl THEN version END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(pg_error("reading pg_stat_ssl"))?;
        Ok(row.get(0))
    }
}

/// Creates the schema or brings it to the newest version, in one
/// transaction under an advisory lock; refuses a newer one untouched.
async fn migrate(pool: &Pool, schema: &str) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let txn = client
        .transaction()
        .await
        .map_err(pg_error("starting the migration"))?;
    let quoted = quote(schema);
    // Servers starting at once take turns; the lock ends with the transaction.
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('waggle-store:' || $1, 0))",
        &[&schema],
    )
    .await
    .map_err(pg_error("locking the schema"))?;
    let exists: bool = txn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'waggle_schema')",
            &[&schema],
        )
        .await
        .map_err(pg_error("reading the schema version"))?
        .get(0);
    let current: i32 = if exists {
        txn.query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {quoted}.waggle_schema"),
            &[],
        )
        .await
        .map_err(pg_error("reading the schema version"))?
        .get(0)
    } else {
        0
    };
    let newest = MIGRATIONS.len() as i32;
    if current > newest {
        // Dropped unapplied: the transaction is rolled back.
        return Err(Error::storage(
            "opening the PostgreSQL store",
            format!(
                "schema {schema:?} is at version {current}, written by a newer waggle-store; this build knows up to {newest}: upgrade it. Nothing was modified"
            ),
        ));
    }
    if current == newest {
        return Ok(());
    }
    txn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted}; \
         CREATE TABLE IF NOT EXISTS {quoted}.waggle_schema (version integer PRIMARY KEY)"
    ))
    .await
    .map_err(pg_error("creating the schema"))?;
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let sql = sql
            .replace("{schema_in_literal}", &in_literal(&quoted))
            .replace("{schema}", &quoted);
        txn.batch_execute(&sql)
            .await
            .map_err(pg_error("migrating the schema"))?;
        txn.execute(
            &format!("INSERT INTO {quoted}.waggle_schema (version) VALUES ($1)"),
            &[&(n as i32 + 1)],
        )
        .await
        .map_err(pg_error("migrating the schema"))?;
    }
    txn.commit()
        .await
        .map_err(pg_error("committing the migration"))?;
    tracing::info!(
        schema,
        from = current,
        to = newest,
        "migrated the PostgreSQL schema"
    );
    Ok(())
}

fn decode(id: &str, text: &str) -> Result<Environment> {
    super::decode_stored(id, text.as_bytes())
}

#[async_trait]
impl Repository for PgStore {
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while it waits for earlier dropped writes or
    /// for a connection, nothing is sent; after, the statement (all of it or
    /// none) ends before any later write by this store begins.
    async fn save(&self, env: &Environment) -> Result<()> {
        self.save_with(env, None).await.map(drop)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one read statement; a dropped call changes nothing.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.find_revision(id).await.map(|v| v.env)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one read statement (one snapshot); a dropped call
    /// changes nothing.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self
            .find_all_revisions()
            .await?
            .into_iter()
            .map(|v| v.env)
            .collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe, like [`save`](Self::save).
    async fn delete(&self, id: &str) -> Result<()> {
        if validate_id(id).is_err() {
            return Err(Error::not_found(id));
        }
        let rows = self
            .write(&self.sql.delete, &[&id, &self.origin], "deleting")
            .await?;
        let removed: Option<i64> = one_row(&rows, "deleting")?.get(0);
        match removed {
            Some(_) => Ok(()),
            None => Err(Error::not_found(id)),
        }
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one read statement; a dropped call changes nothing.
    async fn count(&self) -> Result<usize> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = prepared(&client, &self.sql.count).await?;
        let n: i64 = client
            .query_one(&statement, &[])
            .await
            .map_err(pg_error("counting"))?
            .get(0);
        usize::try_from(n).map_err(|e| Error::storage("counting", e))
    }
}

/// A revision as PostgreSQL stores it (a `bigint` from the schema's
/// sequence, which starts at 1).
fn revision(n: i64) -> Result<Revision> {
    u64::try_from(n)
        .map(Revision::new)
        .map_err(|e| Error::storage("reading a revision", e))
}

fn as_bigint(r: Revision) -> i64 {
    // Revisions come from a bigint sequence: any other one matches no row.
    i64::try_from(r.get()).unwrap_or(-1)
}

/// The one row a write function returns.
fn one_row<'r>(
    rows: &'r [tokio_postgres::Row],
    context: &'static str,
) -> Result<&'r tokio_postgres::Row> {
    rows.first()
        .ok_or_else(|| Error::storage(context, "the write function returned no row"))
}

impl PgStore {
    /// A save, conditional on `expected` when given, in one call of a
    /// write function (migration 4). Returns the new revision.
    async fn save_with(&self, env: &Environment, expected: Option<Expected>) -> Result<Revision> {
        env.validate()?;
        let bytes = record::encode(env).map_err(|e| Error::storage("encoding the record", e))?;
        let record =
            String::from_utf8(bytes).map_err(|e| Error::storage("encoding the record", e))?;
        let (id, record) = (&env.id, &record);
        let origin = &self.origin;
        let Some(expected) = expected else {
            let rows = self
                .write(&self.sql.upsert, &[id, record, origin], "saving")
                .await?;
            return revision(one_row(&rows, "saving")?.get(0));
        };
        let at: Option<i64> = match expected {
            Expected::Absent => None,
            Expected::Revision(r) => Some(as_bigint(r)),
        };
        let rows = self
            .write(&self.sql.save_if, &[id, record, &at, origin], "saving")
            .await?;
        let row = one_row(&rows, "saving")?;
        let (new, found): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        match new {
            Some(new) => revision(new),
            None => Err(Error::Conflict {
                id: id.clone(),
                expected,
                found: found.map(revision).transpose()?,
            }),
        }
    }
}

#[async_trait]
impl Revisioned for PgStore {
    /// # Cancel safety
    ///
    /// Cancel safe: one read statement; a dropped call changes nothing.
    async fn find_revision(&self, id: &str) -> Result<Versioned> {
        if validate_id(id).is_err() {
            return Err(Error::not_found(id));
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = prepared(&client, &self.sql.select).await?;
        let row = client
            .query_opt(&statement, &[&id])
            .await
            .map_err(pg_error("reading"))?
            .ok_or_else(|| Error::not_found(id))?;
        Ok(Versioned {
            env: decode(id, row.get(0))?,
            revision: revision(row.get(1))?,
        })
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one read statement (one snapshot); a dropped call
    /// changes nothing.
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = prepared(&client, &self.sql.all).await?;
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(pg_error("reading"))?;
        tokio::task::spawn_blocking(move || {
            rows.iter()
                .map(|row| {
                    Ok(Versioned {
                        env: decode(row.get(0), row.get(1))?,
                        revision: revision(row.get(2))?,
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| Error::storage("decoding", e))?
    }

    /// # Cancel safety
    ///
    /// Cancel safe, like [`save`](Repository::save): one statement that
    /// compares and writes.
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
        self.save_with(env, Some(expected)).await
    }

    /// # Cancel safety
    ///
    /// Cancel safe, like [`delete`](Repository::delete): one statement that
    /// compares and deletes.
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        let expected_as = Expected::Revision(expected);
        if validate_id(id).is_err() {
            return Err(Error::Conflict {
                id: id.to_owned(),
                expected: expected_as,
                found: None,
            });
        }
        let rows = self
            .write(
                &self.sql.delete_if,
                &[&id, &as_bigint(expected), &self.origin],
                "deleting",
            )
            .await?;
        let row = one_row(&rows, "deleting")?;
        let (deleted, found): (bool, Option<i64>) = (row.get(0), row.get(1));
        if deleted {
            return Ok(());
        }
        Err(Error::Conflict {
            id: id.to_owned(),
            expected: expected_as,
            found: found.map(revision).transpose()?,
        })
    }
}

/// Runs the history's prune statement for changes older than `window`.
async fn prune_with(pool: &Pool, sql: &str, window: Duration) -> Result<usize> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = prepared(&client, sql).await?;
    let n: i64 = client
        .query_one(&statement, &[&window.as_secs_f64()])
        .await
        .map_err(pg_error("pruning the history"))?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// How long [`PgStore::changes`] waits, at most, for a write in flight to
/// fill a gap right after the cursor before it fences (the waits double).
const GAP_WAITS: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
];

impl PgStore {
    /// Runs a history read (`self.sql.changes` or `history`): whether
    /// changes are recorded, the highest pruned revision, and the changes.
    async fn history_rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(bool, u64, Vec<Change>)> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = prepared(&client, sql).await?;
        let rows = client
            .query(&statement, params)
            .await
            .map_err(pg_error("reading the history"))?;
        let first = one_row(&rows, "reading the history")?;
        let recording: bool = first.get(0);
        let pruned = revision(first.get(1))?.get();
        let changes = tokio::task::spawn_blocking(move || {
            rows.iter()
                .filter(|row| row.get::<_, Option<i64>>(2).is_some())
                .map(change_of_row)
                .collect::<Result<Vec<Change>>>()
        })
        .await
        .map_err(|e| Error::storage("decoding the history", e))??;
        Ok((recording, pruned, changes))
    }

    /// The changes above `after`, at most `limit`, as one read sees them
    /// (checked for recording and pruning).
    async fn changes_read(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let (recording, pruned, changes) = self
            .history_rows(&self.sql.changes, &[&as_bigint(after), &limit_sql])
            .await?;
        if !recording {
            return Err(Error::HistoryOff);
        }
        if after.get() < pruned {
            return Err(Error::HistoryPruned {
                after,
                through: Revision::new(pruned),
            });
        }
        Ok(changes)
    }
}

/// A row of `revision, id, kind, at, origin, record` (from index 2).
fn change_of_row(row: &tokio_postgres::Row) -> Result<Change> {
    let revision = revision(row.get(2))?;
    let id: &str = row.get(3);
    let kind: &str = row.get(4);
    let at: chrono::DateTime<chrono::Utc> = row.get(5);
    let origin: &str = row.get(6);
    let record: Option<&str> = row.get(7);
    match (kind, record) {
        ("saved", Some(record)) => Ok(Change::saved(revision, decode(id, record)?, at, origin)),
        ("deleted", None) => Ok(Change::deleted(revision, id, at, origin)),
        _ => Err(Error::Corrupt {
            id: format!("(history, revision {})", revision.get()),
            reason: format!(
                "a change of kind {kind:?} with a record: {}",
                record.is_some()
            ),
        }),
    }
}

#[async_trait]
impl Audited for PgStore {
    /// # Cancel safety
    ///
    /// Cancel safe: one read statement; a dropped call changes nothing.
    async fn history(&self, id: &str) -> Result<Vec<Change>> {
        // An id `save` refuses has no history; it may hold bytes the
        // server refuses in text (NUL), so the empty id asks instead.
        let id = if validate_id(id).is_ok() { id } else { "" };
        let (recording, _, changes) = self.history_rows(&self.sql.history, &[&id]).await?;
        if !recording {
            return Err(Error::HistoryOff);
        }
        Ok(changes)
    }

    /// Returns changes only while their revisions run on from `after`
    /// without a gap: no write still in flight can hold a number below the
    /// last one returned. At a gap right after `after`, it waits up to 7 ms
    /// for the write in flight, then fences: waits for every writer in
    /// flight (they hold the history's gate, shared) and takes the gaps
    /// below the highest revision it had seen as final (migration 5 says
    /// why that is sound).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads, and the fence holds nothing once its
    /// statement ends; a dropped call changes nothing.
    async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
        let mut waits = GAP_WAITS.iter();
        loop {
            let mut changes = self.changes_read(after, limit).await?;
            let contiguous = changes
                .iter()
                .zip(after.get().saturating_add(1)..)
                .take_while(|(c, n)| c.revision.get() == *n)
                .count();
            if contiguous == changes.len() {
                return Ok(changes);
            }
            if contiguous > 0 {
                changes.truncate(contiguous);
                return Ok(changes);
            }
            if let Some(wait) = waits.next() {
                tokio::time::sleep(*wait).await;
                continue;
            }
            // The gap stays: wait for every writer in flight, then every
            // number up to the highest seen is final.
            let seen = changes.last().map_or(after, |c| c.revision);
            {
                let client = self.pool.get().await.map_err(pool_error)?;
                let statement = prepared(&client, &self.sql.fence).await?;
                client
                    .execute(&statement, &[])
                    .await
                    .map_err(pg_error("waiting for the writers in flight"))?;
            }
            let mut changes = self.changes_read(after, limit).await?;
            changes.retain(|c| c.revision <= seen);
            return Ok(changes);
        }
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one statement, all of it or none.
    async fn prune(&self, older_than: Duration) -> Result<usize> {
        prune_with(&self.pool, &self.sql.prune, older_than).await
    }

    /// Woken by `NOTIFY` on a connection of the stream's own (writers
    /// notify while a watcher holds a lease), and looking once a second
    /// anyway; a lost connection or a restarted server is ridden out.
    fn watch(&self, after: Revision) -> ChangeStream<'_> {
        let state = Arc::new(tokio::sync::Mutex::new(watcher::WatchState::default()));
        follow(after, move |cursor| {
            let state = Arc::clone(&state);
            Box::pin(async move {
                let mut state = state.lock().await;
                self.next_changes(cursor, &mut state).await
            })
        })
    }
}
