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
use crate::record;
use crate::repository::Repository;
use crate::revisions::{Expected, Revision, Revisioned, Versioned};
use crate::store::redb::CheckReport;

mod tls;

/// The migrations, in order: version `n` is the `n`-th.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_environments.sql"),
    include_str!("migrations/0002_count.sql"),
    include_str!("migrations/0003_revisions.sql"),
    include_str!("migrations/0004_revisions_in_commit_order.sql"),
];

/// How to open a [`PgStore`].
#[derive(Clone, PartialEq, Eq)]
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
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "waggle".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
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
            .finish()
    }
}

/// The statements of one schema, its name quoted. Every write goes
/// through a function of migration 4, which locks the id before it takes
/// a revision, so an id's revisions increase in commit order.
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
    /// Deletes; returns the revision removed (`NULL`: none was stored).
    delete: String,
    /// Deletes only at revision `$2`; returns whether it did and the
    /// revision found.
    delete_if: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = quote(schema);
        let t = format!("{s}.environments");
        Self {
            upsert: format!("SELECT {s}.save_environment($1, $2)"),
            select: format!("SELECT record, revision FROM {t} WHERE id = $1"),
            all: format!("SELECT id, record, revision FROM {t} ORDER BY id"),
            save_if: format!(
                "SELECT new_revision, found_revision FROM {s}.save_environment_if($1, $2, $3)"
            ),
            delete: format!("SELECT {s}.delete_environment($1)"),
            delete_if: format!(
                "SELECT deleted, found_revision FROM {s}.delete_environment_if($1, $2)"
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
}

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
        migrate(&pool, &options.schema).await?;
        Ok(Self {
            pool,
            sql: Sql::new(&options.schema),
            schema: options.schema,
            target,
            orphans: Arc::default(),
        })
    }

    /// The schema this store's table lives in.
    pub fn schema(&self) -> &str {
        &self.schema
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
        let rows = self.write(&self.sql.delete, &[&id], "deleting").await?;
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
        let Some(expected) = expected else {
            let rows = self
                .write(&self.sql.upsert, &[id, record], "saving")
                .await?;
            return revision(one_row(&rows, "saving")?.get(0));
        };
        let at: Option<i64> = match expected {
            Expected::Absent => None,
            Expected::Revision(r) => Some(as_bigint(r)),
        };
        let rows = self
            .write(&self.sql.save_if, &[id, record, &at], "saving")
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
                &[&id, &as_bigint(expected)],
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
