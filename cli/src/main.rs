// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `waggle-store`: the operator command line. Inspect, back up, restore,
//! check and compact a store, and a first-run demo.
//!
//! Exit codes: 0 success; 1 error; 2 usage error; 3 `check` found damage.

mod bench;
mod commands;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use waggle_store::chrono;

use waggle_store::{Runtime, Status};

/// Exit code when `check` finds damage.
const EXIT_DAMAGED: u8 = 3;

/// Inspect, back up, restore and repair Waggle's environment store.
///
/// The store is the one the server uses: $WAGGLE_STORE_PATH, else
/// $WAGGLE_DATA_DIR/waggle.db, else ~/.config/waggle/waggle.db;
/// `--store` overrides. Read commands work while the server runs.
///
/// Exit codes: 0 ok, 1 error, 2 usage error, 3 check found damage.
#[derive(Debug, Parser)]
#[command(name = "waggle-store", version, propagate_version = true)]
struct Cli {
    /// The store: a redb file path, `memory`, or a `postgres://` URL
    /// (TLS: add `sslmode=verify-full&sslrootcert=ca.pem`). Overrides the
    /// environment.
    #[arg(
        long,
        global = true,
        value_name = "PATH|memory|URL",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    store: Option<String>,
    /// The schema of a PostgreSQL store (default: $WAGGLE_STORE_SCHEMA,
    /// else `waggle`).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    schema: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take environments through Waggle's lifecycle, "restart", and show
    /// they are still there. Uses a temporary store unless --store is given.
    ///
    /// Example: waggle-store demo
    Demo,
    /// List environments as a table (or JSON).
    ///
    /// Example: waggle-store list --status running --json
    List {
        /// Only this status (creating, running, destroying, destroyed, error).
        #[arg(long)]
        status: Option<Status>,
        /// Only this runtime (python, node, shell).
        #[arg(long)]
        runtime: Option<Runtime>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one environment's full record as JSON.
    ///
    /// Example: waggle-store show env-7f3a
    Show {
        /// The environment id.
        id: String,
    },
    /// Print how many environments are stored.
    ///
    /// Example: waggle-store count
    Count,
    /// Write every record as JSON Lines, sorted by id: the backup format.
    ///
    /// Example: waggle-store export --out backup.jsonl
    Export {
        /// The file to write (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Validate a JSON Lines file whole, then upsert every record. Nothing
    /// is written if any line is bad.
    ///
    /// Example: waggle-store import backup.jsonl --dry-run
    Import {
        /// The file to read; `-` reads standard input.
        file: PathBuf,
        /// Validate only; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify the file (page checksums, structure) and decode every record.
    /// Exits 3 if anything is wrong.
    ///
    /// Example: waggle-store check
    Check,
    /// The life of one environment: every change the history keeps, oldest
    /// first — revision, time, origin (which server), what changed.
    ///
    /// Example: waggle-store history env-7f3a
    History {
        /// The environment id.
        id: String,
        /// A JSON array of the changes instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every change store-wide, in revision order, as JSON Lines: for audit
    /// export and log shippers. Resume with --since the last revision seen.
    ///
    /// Example: waggle-store changes --since 1200 --follow
    Changes {
        /// Only changes after this revision.
        #[arg(long, value_name = "REV")]
        since: Option<u64>,
        /// Only changes made at or after this time (RFC 3339, e.g.
        /// 2026-12-08T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        since_time: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many changes.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keep printing each new change as it is made (like `tail -f`)
        /// until interrupted (Ctrl-C) or the output closes.
        #[arg(long)]
        follow: bool,
    },
    /// Reclaim free space in the file; prints the size before and after.
    /// The server must be stopped.
    ///
    /// Example: waggle-store compact
    Compact,
    /// Measure a store under a workload: throughput and p50/p99/p99.9 per
    /// operation. Uses a temporary store unless --store is given.
    ///
    /// Example: waggle-store bench --concurrency 64 --duration 10 --json report.json
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAGGLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The library turns a panic inside the storage engine into an error;
    // should one get past it, it is still a failure (exit 1), not an abort.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(commands::run(cli))
    }));
    match run {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "error: waggle-store failed unexpectedly (see the panic above); run `waggle-store check` on the store and report it"
            );
            ExitCode::FAILURE
        }
    }
}
