// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Wiring: which store to open, from the environment or explicitly.
//!
//! | variable | meaning |
//! |---|---|
//! | `WAGGLE_STORE` | `redb` (default) or `memory` |
//! | `WAGGLE_STORE_PATH` | the redb file |
//! | `WAGGLE_DATA_DIR` | a directory; the file is `$WAGGLE_DATA_DIR/waggle.db` when `WAGGLE_STORE_PATH` is unset |
//!
//! With neither path variable set, the file is `waggle/waggle.db` in the
//! platform's config directory (`$XDG_CONFIG_HOME` or `~/.config` on Linux).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::store::memory::MemoryStore;
use crate::store::redb::RedbStore;

/// The file name used inside `WAGGLE_DATA_DIR` and the config directory.
pub const DEFAULT_FILE_NAME: &str = "waggle.db";

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A [`RedbStore`] at this path (the default).
    Redb {
        /// The store file.
        path: PathBuf,
    },
    /// A [`MemoryStore`]: nothing survives the process.
    Memory,
}

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
        match non_empty("WAGGLE_STORE") {
            None => {}
            Some(kind) if kind == "redb" => {}
            Some(kind) if kind == "memory" => return Ok(StoreConfig::Memory),
            Some(other) => {
                return Err(Error::Config(format!(
                    "WAGGLE_STORE={other:?} is not a store kind; use redb or memory"
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
        Ok(StoreConfig::Redb { path })
    }

    /// Parses a `--store` argument: `memory`, or a path to a redb file.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "memory" {
            StoreConfig::Memory
        } else {
            StoreConfig::Redb { path: arg.into() }
        }
    }

    /// Opens the configured store for reading and writing.
    pub fn open(&self) -> Result<Arc<dyn Repository>> {
        Ok(match self {
            StoreConfig::Redb { path } => Arc::new(RedbStore::open(path)?),
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
        })
    }

    /// Opens the configured store for reading only, beside a process that
    /// may be writing it (see [`RedbStore::open_read_only`]). A memory
    /// store is simply new and empty.
    pub fn open_read_only(&self) -> Result<Arc<dyn Repository>> {
        Ok(match self {
            StoreConfig::Redb { path } => Arc::new(RedbStore::open_read_only(path)?),
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
        })
    }
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
        let redb = |p: &str| StoreConfig::Redb { path: p.into() };
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
            Some(StoreConfig::Memory)
        );
        assert_eq!(
            config(&[("WAGGLE_STORE", "redb"), ("WAGGLE_DATA_DIR", "/d")]).ok(),
            Some(redb("/d/waggle.db"))
        );
        let err = config(&[("WAGGLE_STORE", "postgres")]).unwrap_err();
        assert!(err.to_string().contains("use redb or memory"), "{err}");
    }

    #[test]
    fn non_utf8_paths_are_kept_byte_for_byte() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"/tmp/\xffstore.db".to_vec());
        let config = StoreConfig::from_lookup(|k| (k == "WAGGLE_STORE_PATH").then(|| raw.clone()));
        assert_eq!(
            config.ok(),
            Some(StoreConfig::Redb {
                path: PathBuf::from(raw)
            })
        );
    }

    #[test]
    fn default_is_redb_in_the_config_dir() {
        if let Some(dir) = dirs::config_dir() {
            assert_eq!(
                config(&[]).ok(),
                Some(StoreConfig::Redb {
                    path: dir.join("waggle").join("waggle.db")
                })
            );
        }
    }
}
