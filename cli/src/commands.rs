// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The subcommands: each opens the store it needs (read-only when it only
//! reads, so it works beside a running server) and prints its result.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use waggle_store::chrono;
use waggle_store::config::StoreKind;
use waggle_store::history::IMPORT_ORIGIN;
use waggle_store::{
    Change, ChangeKind, Environment, RedbStore, Revision, StoreConfig, Versioned, record,
};

use crate::{Cli, Command, EXIT_DAMAGED};

/// An environment as JSON with its `revision` beside its fields: what
/// `show` and `list --json` print. (Exports carry no revisions.)
fn with_revision(v: &Versioned) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(&v.env)?;
    if let serde_json::Value::Object(fields) = &mut json {
        fields.insert("revision".into(), v.revision.get().into());
    }
    Ok(json)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = match &cli.store {
        Some(arg) => StoreConfig::from_arg(arg),
        None => StoreConfig::from_env()?,
    };
    if let StoreKind::Postgres { schema, .. } = &mut config.kind {
        // From the environment, the schema came with the URL; with
        // `--store`, $WAGGLE_STORE_SCHEMA still names it. `--schema` wins.
        let named_by_env = || {
            cli.store.as_ref()?;
            std::env::var("WAGGLE_STORE_SCHEMA")
                .ok()
                .filter(|s| !s.is_empty())
        };
        if let Some(chosen) = cli.schema.clone().or_else(named_by_env) {
            *schema = chosen;
        }
    } else if cli.schema.is_some() {
        bail!("--schema applies to a PostgreSQL store (--store postgres://…)");
    }
    match cli.command {
        Command::Demo => crate::demo::run(cli.store.as_deref().map(|_| &config)).await?,
        Command::List {
            status,
            runtime,
            json,
        } => {
            let all = config.open_read_only().await?.find_all_revisions().await?;
            let rows: Vec<Versioned> = all
                .into_iter()
                .filter(|v| status.is_none_or(|s| v.env.status() == s))
                .filter(|v| runtime.is_none_or(|r| v.env.runtime == r))
                .collect();
            if json {
                let rows = rows
                    .iter()
                    .map(with_revision)
                    .collect::<Result<Vec<_>, _>>()?;
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let envs: Vec<Environment> = rows.into_iter().map(|v| v.env).collect();
                print_table(&envs, Utc::now());
            }
        }
        Command::Show { id } => {
            let v = config.open_read_only().await?.find_revision(&id).await?;
            println!("{}", serde_json::to_string_pretty(&with_revision(&v)?)?);
        }
        Command::Count => println!("{}", config.open_read_only().await?.count().await?),
        Command::Export { out } => export(&config, out.as_deref()).await?,
        Command::Import { file, dry_run } => import(&config, &file, dry_run).await?,
        Command::Check => return check(&config).await,
        Command::History { id, json } => history(&config, &id, json).await?,
        Command::Changes {
            since,
            since_time,
            limit,
            follow,
        } => changes(&config, since, since_time, limit, follow).await?,
        Command::Bench(args) => {
            crate::bench::run(cli.store.as_deref().map(|_| &config), args).await?
        }
        Command::Compact => {
            let path = redb_path(&config, "compact")?.to_owned();
            let (before, after) =
                tokio::task::spawn_blocking(move || RedbStore::compact(&path)).await??;
            println!("compacted: {before} bytes before, {after} bytes after");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn redb_path<'a>(config: &'a StoreConfig, what: &str) -> anyhow::Result<&'a Path> {
    match &config.kind {
        StoreKind::Redb { path } => Ok(path),
        StoreKind::Postgres { url, .. } => bail!(
            "{what} works on a redb store file; {url} is a PostgreSQL store: use the server's own tools (VACUUM, pg_amcheck)"
        ),
        _ => bail!("{what} works on a redb store file, not on `memory`"),
    }
}

/// A progress bar on a terminal; hidden when standard error is piped.
pub fn progress(len: usize, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_message(what);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Prints `header` and `rows` as columns padded to their widest cell, two
/// spaces apart.
fn print_aligned<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    println!("{}", line(&header.map(str::to_owned)));
    for row in rows {
        println!("{}", line(row));
    }
}

/// Prints environments as an aligned table.
pub fn print_table(rows: &[Environment], now: DateTime<Utc>) {
    let header = [
        "ID",
        "NAME",
        "RUNTIME",
        "STATUS",
        "SSH",
        "CREATED",
        "LAST USED",
        "EXPIRED",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.name.chars().take(32).collect(),
                e.runtime.to_string(),
                e.status().to_string(),
                e.ssh_port.to_string(),
                short_time(e.created_at),
                short_time(e.last_used),
                if e.is_expired(now) { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    print_aligned(header, &cells);
    println!(
        "({} environment{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
}

async fn export(config: &StoreConfig, out: Option<&Path>) -> anyhow::Result<()> {
    let all = config.open_read_only().await?.find_all().await?;
    let bar = progress(all.len(), "export");
    let buffer = record::encode_lines(all.iter().inspect(|_| bar.inc(1)))?;
    bar.finish_and_clear();
    match out {
        Some(path) => {
            std::fs::write(path, &buffer)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported {} records to {}", all.len(), path.display());
        }
        None => std::io::stdout()
            .lock()
            .write_all(&buffer)
            .context("cannot write to standard output")?,
    }
    Ok(())
}

/// Parses a JSON Lines export whole; the error names the file and line.
fn parse_export(file: &Path, text: &str) -> anyhow::Result<Vec<Environment>> {
    record::decode_lines(text).map_err(|e| match e.line {
        0 => anyhow::anyhow!("{}: {}", file.display(), e.reason),
        _ => anyhow::anyhow!("{}: {e}", file.display()),
    })
}

async fn import(config: &StoreConfig, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    // `-` is standard input: `waggle-store --store A export | waggle-store --store B import -`.
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin().lock()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let envs = parse_export(file, &text)?;
    if dry_run {
        println!(
            "{}: {} records valid; nothing written (dry run)",
            file.display(),
            envs.len()
        );
        return Ok(());
    }
    // The history names the import as the writer of what it restored.
    let store = config.clone().with_origin(IMPORT_ORIGIN).open().await?;
    let bar = progress(envs.len(), "import");
    // Many saves in flight at once so the redb writer group-commits them.
    let mut tasks = tokio::task::JoinSet::new();
    let total = envs.len();
    for env in envs {
        while tasks.len() >= 256 {
            if let Some(done) = tasks.join_next().await {
                done??;
                bar.inc(1);
            }
        }
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.save(&env).await });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("imported {total} records from {}", file.display());
    Ok(())
}

async fn check(config: &StoreConfig) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "postgres")]
    if let StoreKind::Postgres { url, schema, pool } = &config.kind {
        return check_postgres(url, schema, *pool).await;
    }
    let path = redb_path(config, "check")?.to_owned();
    let bar = progress(1, "check");
    let shown = path.clone();
    let report = tokio::task::spawn_blocking(move || RedbStore::check(&path)).await??;
    bar.finish_and_clear();
    println!("store: {}", shown.display());
    Ok(print_report(&report, "the file"))
}

/// `check` on a PostgreSQL store: every record decodes, and the count
/// agrees with the rows read. The server checks its own pages.
#[cfg(feature = "postgres")]
async fn check_postgres(
    url: &waggle_store::config::ConnectionString,
    schema: &str,
    pool: waggle_store::config::PoolSettings,
) -> anyhow::Result<ExitCode> {
    use waggle_store::store::postgres::{PgOptions, PgStore};
    // Whether the history is recorded stays as the schema says: a check
    // switches nothing.
    let options = PgOptions::default()
        .schema(schema)
        .pool_size(pool.size)
        .connect_timeout(pool.connect_timeout)
        .statement_timeout(pool.statement_timeout)
        .keep_recording();
    let store = PgStore::connect(url.expose(), options).await?;
    let report = store.check().await?;
    println!("store: {url} (schema {schema})");
    Ok(print_report(&report, "the table"))
}

/// Prints a check report; the exit code says whether anything is wrong.
fn print_report(report: &waggle_store::store::redb::CheckReport, what: &str) -> ExitCode {
    match report.integrity {
        Some(true) => println!("integrity: ok"),
        Some(false) => println!(
            "integrity: DAMAGED ({what} fails its checks and was not modified: restore it from a backup with import, after saving what export still reads)"
        ),
        None => println!(
            "integrity: skipped (another process has the file open for writing; stop it for a full check)"
        ),
    }
    println!("records ok: {}", report.records_ok);
    println!("records corrupt: {}", report.corrupt.len());
    for (id, why) in &report.corrupt {
        println!("  {id}: {why}");
    }
    println!(
        "history: {} ids' latest change matches what is stored, {} do not",
        report.history_ok,
        report.history.len()
    );
    for (id, why) in &report.history {
        println!("  {id}: {why}");
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    }
}

/// What a change did to the value before it, in a few words: the status
/// transition first (`creating → running`), then the other fields that
/// moved.
fn what_changed(before: Option<&Environment>, change: &Change) -> String {
    let Some(after) = &change.env else {
        return "deleted".to_owned();
    };
    let Some(before) = before else {
        return format!("created ({})", after.status());
    };
    let mut moved = Vec::new();
    if before.status() != after.status() {
        moved.push(format!("{} → {}", before.status(), after.status()));
    }
    if before.name != after.name {
        moved.push(format!("name {:?} → {:?}", before.name, after.name));
    }
    if before.runtime != after.runtime {
        moved.push(format!("runtime {} → {}", before.runtime, after.runtime));
    }
    if before.ssh_port != after.ssh_port {
        moved.push(format!("ssh {} → {}", before.ssh_port, after.ssh_port));
    }
    if before.inactivity_timeout != after.inactivity_timeout {
        moved.push("inactivity timeout".to_owned());
    }
    if before.capabilities != after.capabilities {
        moved.push("capabilities".to_owned());
    }
    if before.created_at != after.created_at {
        moved.push("created at".to_owned());
    }
    if before.last_used != after.last_used {
        moved.push("touched".to_owned());
    }
    if moved.is_empty() {
        "saved unchanged".to_owned()
    } else {
        moved.join(", ")
    }
}

/// `history ID`: the life of one environment.
async fn history(config: &StoreConfig, id: &str, json: bool) -> anyhow::Result<()> {
    let life = config.open_read_only().await?.history(id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&life)?);
        return Ok(());
    }
    if life.is_empty() {
        println!("no history of {id:?} (never written, or pruned by retention)");
        return Ok(());
    }
    let mut rows = Vec::with_capacity(life.len());
    let mut before: Option<&Environment> = None;
    for change in &life {
        rows.push([
            change.revision.get().to_string(),
            change.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            change.origin.clone(),
            what_changed(before, change),
        ]);
        before = change.env.as_ref();
    }
    let header = ["REVISION", "TIME (UTC)", "ORIGIN", "CHANGE"];
    print_aligned(header, &rows);
    let deleted = life.last().is_some_and(|c| c.kind == ChangeKind::Deleted);
    println!(
        "({} change{}{})",
        life.len(),
        if life.len() == 1 { "" } else { "s" },
        if deleted { "; deleted" } else { "" }
    );
    Ok(())
}

/// Changes read per call while paging through the history.
const PAGE: usize = 1000;

/// `changes`: the store-wide history as JSON Lines, from a revision or a
/// time on, at most `limit`; with `follow`, then each new change as it is
/// made, until Ctrl-C or a closed pipe.
async fn changes(
    config: &StoreConfig,
    since: Option<u64>,
    since_time: Option<DateTime<Utc>>,
    limit: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    let store = config.open_read_only().await?;
    let mut left = limit.unwrap_or(usize::MAX);
    if left == 0 {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    // One JSON object a line, flushed at once for a follower; false once
    // the reader has gone (`| head`), which ends the listing, not in error.
    let mut print = |change: &Change| -> anyhow::Result<bool> {
        if since_time.is_some_and(|t| change.at < t) {
            return Ok(true);
        }
        let line = serde_json::to_string(change)?;
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {
                left -= 1;
                Ok(left > 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("cannot write to standard output"),
        }
    };
    let cursor = Revision::new(since.unwrap_or(0));
    if follow {
        let mut watch = store.watch(cursor);
        loop {
            let next = std::future::poll_fn(|cx| watch.as_mut().poll_next(cx));
            let change = tokio::select! {
                next = next => next,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match change {
                Some(change) => {
                    if !print(&change?)? {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    }
    let mut cursor = cursor;
    loop {
        let page = store.changes(cursor, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        cursor = last.revision;
        for change in &page {
            if !print(change)? {
                return Ok(());
            }
        }
    }
}
