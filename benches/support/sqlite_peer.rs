// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The SQLite peer of the benchmark: the same JSON records in one table,
//! WAL and `synchronous=FULL` so every commit is as durable as redb's.
//! Bench-only: it exists to be measured against.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use waggle_store::domain::validate_id;
use waggle_store::{BoxError, Environment, Error, Repository, Result, async_trait, record};

/// A [`Repository`] over one SQLite connection; every call runs on the
/// blocking pool, each write in its own transaction.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Storage {
        context: "sqlite",
        source: BoxError::from(e),
    }
}

impl SqliteStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS environments (id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;",
        )
        .map_err(sql)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Inserts many records in one transaction (benchmark setup only).
    pub fn load(&self, envs: &[Environment]) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = conn.transaction().map_err(sql)?;
        {
            let mut stmt = txn
                .prepare_cached("INSERT OR REPLACE INTO environments (id, record) VALUES (?1, ?2)")
                .map_err(sql)?;
            for env in envs {
                stmt.execute(params![env.id, record::encode(env).unwrap_or_default()])
                    .map_err(sql)?;
            }
        }
        txn.commit().map_err(sql)
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(PoisonError::into_inner)))
            .await
            .map_err(|e| Error::Storage {
                context: "sqlite task",
                source: BoxError::from(e),
            })?
    }
}

fn decode(bytes: &[u8]) -> Result<Environment> {
    record::decode(bytes).map_err(|e| Error::Storage {
        context: "sqlite decode",
        source: BoxError::from(e),
    })
}

#[async_trait]
impl Repository for SqliteStore {
    async fn save(&self, env: &Environment) -> Result<()> {
        validate_id(&env.id)?;
        let (id, bytes) = (
            env.id.clone(),
            record::encode(env).map_err(|e| Error::Storage {
                context: "encode",
                source: BoxError::from(e),
            })?,
        );
        self.with(move |c| {
            c.prepare_cached("INSERT OR REPLACE INTO environments (id, record) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![id, bytes]))
                .map(drop)
                .map_err(sql)
        })
        .await
    }

    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        let id = id.to_owned();
        self.with(move |c| {
            let bytes: Option<Vec<u8>> = c
                .prepare_cached("SELECT record FROM environments WHERE id = ?1")
                .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
                .map_err(sql)?;
            match bytes {
                Some(b) => decode(&b),
                None => Err(Error::NotFound { id }),
            }
        })
        .await
    }

    async fn find_all(&self) -> Result<Vec<Environment>> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached("SELECT record FROM environments ORDER BY id")
                .map_err(sql)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))
                .map_err(sql)?;
            rows.map(|b| decode(&b.map_err(sql)?)).collect()
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.with(move |c| {
            let n = c
                .prepare_cached("DELETE FROM environments WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id]))
                .map_err(sql)?;
            if n == 0 {
                Err(Error::NotFound { id })
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn count(&self) -> Result<usize> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM environments", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(sql)
        })
        .await
    }
}
