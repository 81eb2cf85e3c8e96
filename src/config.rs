// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Wiring: which store to open, from the environment or explicitly.
//!
//! | variable | meaning |
//! |---|---|
//! | `WAGGLE_STORE` | `redb` (default), `memory` or `postgres` |
//! | `WAGGLE_STORE_PATH` | the redb file |
//! | `WAGGLE_DATA_DIR` | a directory; the file is `$WAGGLE_DATA_DIR/waggle.db` when `WAGGLE_STORE_PATH` is unset |
//! | `WAGGLE_STORE_URL` | with `postgres`: a `postgres://` URL or libpq `key=value` string (`PGPASSWORD` is used when it has no password) |
//! | `WAGGLE_STORE_SCHEMA` | with `postgres`: the schema (default `waggle`) |
//! | `WAGGLE_STORE_POOL_SIZE` | with `postgres`: connections in the pool (default 16) |
//! | `WAGGLE_STORE_CONNECT_TIMEOUT_MS` | with `postgres`: the longest wait for a connection (default 5000) |
//! | `WAGGLE_STORE_STATEMENT_TIMEOUT_MS` | with `postgres`: the server cancels a longer statement (default 10000) |
//! | `WAGGLE_STORE_ORIGIN` | who this server's writes are from, in the history (default `<host name>:<pid>`) |
//! | `WAGGLE_STORE_HISTORY` | how long the history keeps changes: `90d` (default), `12h`, `all` or `off` |
//!
//! With neither path variable set, the file is `waggle/waggle.db` in the
//! platform's config directory (`$XDG_CONFIG_HOME` or `~/.config` on Linux).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::history::{Audited, HistoryOptions, Retention, validate_origin};
use crate::store::memory::MemoryStore;
use crate::store::redb::{RedbOptions, RedbStore};

/// The file name used inside `WAGGLE_DATA_DIR` and the config directory.
pub const DEFAULT_FILE_NAME: &str = "waggle.db";

/// Which store to open, and what its handle records in the history.
///
/// ```
/// use waggle_store::{Retention, StoreConfig};
///
/// let config = StoreConfig::memory()
///     .with_origin("server-a")
///     .with_retention(Retention::All);
/// assert_eq!(config.history.origin, "server-a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The store.
    pub kind: StoreKind,
    /// The origin this handle's writes carry, and how long changes are kept.
    pub history: HistoryOptions,
}

/// Which store: redb, memory or PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// A [`RedbStore`] at this path (the default).
    Redb {
        /// The store file.
        path: PathBuf,
    },
    /// A [`MemoryStore`]: nothing survives the process.
    Memory,
    /// A `PgStore` on a PostgreSQL server (the `postgres` feature).
    Postgres {
        /// Where to connect; its password is never shown.
        url: ConnectionString,
        /// The schema the store's tables live in.
        schema: String,
        /// The pool's size and timeouts.
        pool: PoolSettings,
    },
}

impl From<StoreKind> for StoreConfig {
    fn from(kind: StoreKind) -> Self {
        Self {
            kind,
            history: HistoryOptions::default(),
        }
    }
}

impl StoreConfig {
    /// A redb store at `path`, with the default history options.
    pub fn redb(path: impl Into<PathBuf>) -> Self {
        StoreKind::Redb { path: path.into() }.into()
    }

    /// A memory store, with the default history options.
    pub fn memory() -> Self {
        StoreKind::Memory.into()
    }

    /// A PostgreSQL store at `url` in the schema [`DEFAULT_SCHEMA`], with
    /// the default pool and history options.
    pub fn postgres(url: impl Into<String>) -> Self {
        StoreKind::Postgres {
            url: ConnectionString::new(url),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool: PoolSettings::default(),
        }
        .into()
    }

    /// With `origin` as the writer of this handle's changes.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.history.origin = origin.into();
        self
    }

    /// With `retention` for the history.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.history.retention = retention;
        self
    }
}

/// A PostgreSQL store's pool: how many connections and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Connections in the pool.
    pub size: usize,
    /// The longest wait for a connection: connecting, or a free one.
    pub connect_timeout: std::time::Duration,
    /// The server cancels a statement running longer.
    pub statement_timeout: std::time::Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            size: 16,
            connect_timeout: std::time::Duration::from_secs(5),
            statement_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A PostgreSQL connection string whose password `Debug` and `Display`
/// never show.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    /// Wraps a `postgres://` URL or a libpq `key=value` string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The string itself, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        if let Some((scheme, rest)) = s.split_once("://") {
            // URL: scheme://user:password@host...
            if let Some((userinfo, host)) = rest.split_once('@')
                && let Some((user, _)) = userinfo.split_once(':')
            {
                return format!("{scheme}://{user}:***@{host}");
            }
            return s.clone();
        }
        // key=value pairs: password=... (possibly quoted).
        s.split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The schema when `WAGGLE_STORE_SCHEMA` is unset.
pub const DEFAULT_SCHEMA: &str = "waggle";

impl StoreConfig {
    /// Reads the configuration from the process environment (see the
    /// [module docs](self)).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var_os(key))
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`
    /// (for tests and embedding).
    /// Paths are taken as the operating system gives them (not necessarily
    /// UTF-8).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let non_empty = |key: &str| lookup(key).filter(|v| !v.is_empty());
        let mut history = HistoryOptions::default();
        if let Some(origin) = non_empty("WAGGLE_STORE_ORIGIN") {
            let origin = origin
                .into_string()
                .map_err(|_| Error::Config("WAGGLE_STORE_ORIGIN is not valid UTF-8".into()))?;
            validate_origin(&origin)
                .map_err(|e| Error::Config(format!("WAGGLE_STORE_ORIGIN: {e}")))?;
            history.origin = origin;
        }
        if let Some(retention) = non_empty("WAGGLE_STORE_HISTORY") {
            history.retention = retention
                .to_str()
                .ok_or_else(|| Error::Config("WAGGLE_STORE_HISTORY is not valid UTF-8".into()))?
                .parse()
                .map_err(|e| Error::Config(format!("WAGGLE_STORE_HISTORY: {e}")))?;
        }
        Ok(Self {
            kind: Self::kind_from_lookup(non_empty)?,
            history,
        })
    }

    fn kind_from_lookup(non_empty: impl Fn(&str) -> Option<OsString>) -> Result<StoreKind> {
        match non_empty("WAGGLE_STORE") {
            None => {}
            Some(kind) if kind == "redb" => {}
            Some(kind) if kind == "memory" => return Ok(StoreKind::Memory),
            Some(kind) if kind == "postgres" => {
                let url = non_empty("WAGGLE_STORE_URL").ok_or_else(|| {
                    Error::Config(
                        "WAGGLE_STORE=postgres needs WAGGLE_STORE_URL (a postgres:// URL or libpq key=value string)".into(),
                    )
                })?;
                let url = url
                    .into_string()
                    .map_err(|_| Error::Config("WAGGLE_STORE_URL is not valid UTF-8".into()))?;
                let schema = non_empty("WAGGLE_STORE_SCHEMA")
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
                let number = |key: &str, default: u64| -> Result<u64> {
                    match non_empty(key) {
                        None => Ok(default),
                        Some(v) => v
                            .to_str()
                            .and_then(|v| v.parse::<u64>().ok())
                            .filter(|&n| n > 0)
                            .ok_or_else(|| {
                                Error::Config(format!("{key}={v:?} is not a positive whole number"))
                            }),
                    }
                };
                let defaults = PoolSettings::default();
                let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let pool = PoolSettings {
                    size: usize::try_from(number("WAGGLE_STORE_POOL_SIZE", defaults.size as u64)?)
                        .unwrap_or(usize::MAX),
                    connect_timeout: std::time::Duration::from_millis(number(
                        "WAGGLE_STORE_CONNECT_TIMEOUT_MS",
                        ms(defaults.connect_timeout),
                    )?),
                    statement_timeout: std::time::Duration::from_millis(number(
                        "WAGGLE_STORE_STATEMENT_TIMEOUT_MS",
                        ms(defaults.statement_timeout),
                    )?),
                };
                return Ok(StoreKind::Postgres {
                    url: ConnectionString::new(url),
                    schema,
                    pool,
                });
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "WAGGLE_STORE={other:?} is not a store kind; use redb, memory or postgres"
                )));
            }
        }
        let path = if let Some(path) = non_empty("WAGGLE_STORE_PATH") {
            PathBuf::from(path)
        } else if let Some(dir) = non_empty("WAGGLE_DATA_DIR") {
            Path::new(&dir).join(DEFAULT_FILE_NAME)
        } else {
            default_path()?
        };
        Ok(StoreKind::Redb { path })
    }

    /// Parses a `--store` argument: `memory`, a `postgres://` (or
    /// `postgresql://`) URL (schema [`DEFAULT_SCHEMA`]), or a path to a redb
    /// file; the history options are the defaults.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "memory" {
            Self::memory()
        } else if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            Self::postgres(arg)
        } else {
            Self::redb(arg)
        }
    }

    /// Opens the configured store for reading and writing. A redb file is
    /// opened on Tokio's blocking pool (opening verifies its pages).
    /// `Config` if the origin is not valid.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, no store is returned; a redb open already
    /// running finishes on the blocking pool and is closed again.
    pub async fn open(&self) -> Result<Arc<dyn Audited>> {
        validate_origin(&self.history.origin)?;
        match &self.kind {
            StoreKind::Redb { path } => {
                let options = RedbOptions::default().history(self.history.clone());
                open_blocking(path, move |p| RedbStore::open_with(p, options)).await
            }
            StoreKind::Memory => Ok(Arc::new(MemoryStore::with_history(self.history.clone())?)),
            StoreKind::Postgres { url, schema, pool } => {
                connect_postgres(url, schema, *pool, &self.history).await
            }
        }
    }

    /// Opens the configured store for reading only, beside a process that
    /// may be writing it (see [`RedbStore::open_read_only`]). A memory
    /// store is simply new and empty; a PostgreSQL store is connected to
    /// as by [`open`](Self::open) (the server shares it anyway).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`open`](Self::open).
    pub async fn open_read_only(&self) -> Result<Arc<dyn Audited>> {
        match &self.kind {
            StoreKind::Redb { path } => open_blocking(path, RedbStore::open_read_only).await,
            _ => self.open().await,
        }
    }
}

/// Runs a redb `open` of `path` on Tokio's blocking pool.
async fn open_blocking(
    path: &Path,
    open: impl FnOnce(PathBuf) -> Result<RedbStore> + Send + 'static,
) -> Result<Arc<dyn Audited>> {
    let path = path.to_owned();
    let store = tokio::task::spawn_blocking(move || open(path))
        .await
        .map_err(|e| Error::storage("opening the store", e))??;
    Ok(Arc::new(store))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(
    url: &ConnectionString,
    schema: &str,
    pool: PoolSettings,
    history: &HistoryOptions,
) -> Result<Arc<dyn Audited>> {
    use crate::store::postgres::{PgOptions, PgStore};
    let options = PgOptions::default()
        .schema(schema)
        .pool_size(pool.size)
        .connect_timeout(pool.connect_timeout)
        .statement_timeout(pool.statement_timeout)
        .history(history.clone());
    Ok(Arc::new(PgStore::connect(url.expose(), options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(
    url: &ConnectionString,
    _schema: &str,
    _pool: PoolSettings,
    _history: &HistoryOptions,
) -> Result<Arc<dyn Audited>> {
    Err(Error::Config(format!(
        "{url}: this build has no PostgreSQL support (the `postgres` feature)"
    )))
}

/// `waggle/waggle.db` in the platform config directory.
pub fn default_path() -> Result<PathBuf> {
    dirs::config_dir()
        .map(|dir| dir.join("waggle").join(DEFAULT_FILE_NAME))
        .ok_or_else(|| {
            Error::Config(
                "no config directory is known for this user (HOME unset?); set WAGGLE_STORE_PATH or WAGGLE_DATA_DIR"
                    .into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StoreConfig> {
        StoreConfig::from_lookup(|key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn precedence_and_errors() {
        let redb = |p: &str| StoreConfig::redb(p);
        assert_eq!(
            config(&[("WAGGLE_STORE_PATH", "/a/s.db"), ("WAGGLE_DATA_DIR", "/d")]).ok(),
            Some(redb("/a/s.db"))
        );
        assert_eq!(
            config(&[("WAGGLE_DATA_DIR", "/d")]).ok(),
            Some(redb("/d/waggle.db"))
        );
        assert_eq!(
            config(&[("WAGGLE_STORE_PATH", ""), ("WAGGLE_DATA_DIR", "/d")]).ok(),
            Some(redb("/d/waggle.db"))
        );
        assert_eq!(
            config(&[("WAGGLE_STORE", "memory")]).ok(),
            Some(StoreConfig::memory())
        );
        assert_eq!(
            config(&[("WAGGLE_STORE", "redb"), ("WAGGLE_DATA_DIR", "/d")]).ok(),
            Some(redb("/d/waggle.db"))
        );
        let err = config(&[("WAGGLE_STORE", "postgres")]).unwrap_err();
        assert!(err.to_string().contains("needs WAGGLE_STORE_URL"), "{err}");
        let err = config(&[("WAGGLE_STORE", "mysql")]).unwrap_err();
        assert!(
            err.to_string().contains("use redb, memory or postgres"),
            "{err}"
        );
        let pg = config(&[
            ("WAGGLE_STORE", "postgres"),
            ("WAGGLE_STORE_URL", "postgres://u:hunter2@db/w"),
        ]);
        assert_eq!(
            pg.ok(),
            Some(StoreConfig::postgres("postgres://u:hunter2@db/w"))
        );
        let tuned = config(&[
            ("WAGGLE_STORE", "postgres"),
            ("WAGGLE_STORE_URL", "postgres://db/w"),
            ("WAGGLE_STORE_POOL_SIZE", "4"),
            ("WAGGLE_STORE_CONNECT_TIMEOUT_MS", "250"),
        ]);
        assert!(
            matches!(&tuned, Ok(StoreConfig { kind: StoreKind::Postgres { pool, .. }, .. })
                if pool.size == 4 && pool.connect_timeout.as_millis() == 250
                    && pool.statement_timeout == PoolSettings::default().statement_timeout),
            "{tuned:?}"
        );
        let err = config(&[
            ("WAGGLE_STORE", "postgres"),
            ("WAGGLE_STORE_URL", "postgres://db/w"),
            ("WAGGLE_STORE_POOL_SIZE", "0"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("WAGGLE_STORE_POOL_SIZE"), "{err}");
        assert!(matches!(
            StoreConfig::from_arg("postgresql://db/w").kind,
            StoreKind::Postgres { .. }
        ));
    }

    /// The password is never shown: not in `Debug`, not in `Display`.
    #[test]
    fn connection_strings_hide_the_password() {
        for (raw, shown) in [
            (
                "postgres://u:hunter2@db:5432/w",
                "postgres://u:***@db:5432/w",
            ),
            (
                "host=db user=u password=hunter2 dbname=w",
                "host=db user=u password=*** dbname=w",
            ),
            ("postgres://db/w", "postgres://db/w"),
        ] {
            let url = ConnectionString::new(raw);
            let config = StoreConfig::postgres(raw);
            assert_eq!(url.to_string(), shown);
            assert!(
                !format!("{url:?} {config:?}").contains("hunter2"),
                "{config:?}"
            );
        }
    }

    #[test]
    fn origin_and_retention_from_the_environment() {
        let c = config(&[
            ("WAGGLE_STORE", "memory"),
            ("WAGGLE_STORE_ORIGIN", "server-a"),
            ("WAGGLE_STORE_HISTORY", "all"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            StoreConfig::memory()
                .with_origin("server-a")
                .with_retention(Retention::All)
        );
        let d = config(&[("WAGGLE_STORE", "memory")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.history, HistoryOptions::default());
        for (key, bad) in [
            ("WAGGLE_STORE_ORIGIN", "two words"),
            ("WAGGLE_STORE_HISTORY", "forever"),
        ] {
            let err = config(&[(key, bad)]).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn non_utf8_paths_are_kept_byte_for_byte() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"/tmp/\xffstore.db".to_vec());
        let config = StoreConfig::from_lookup(|k| (k == "WAGGLE_STORE_PATH").then(|| raw.clone()));
        assert_eq!(config.ok(), Some(StoreConfig::redb(PathBuf::from(raw))));
    }

    #[test]
    fn default_is_redb_in_the_config_dir() {
        if let Some(dir) = dirs::config_dir() {
            assert_eq!(
                config(&[]).ok(),
                Some(StoreConfig::redb(dir.join("waggle").join("waggle.db")))
            );
        }
    }
}
