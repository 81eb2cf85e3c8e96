// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The first-run demo: environments taken through Waggle's lifecycle are
//! still there after the store is closed and reopened, as after a restart.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use waggle_store::chrono::Utc;
use waggle_store::{Environment, RedbStore, Repository, Runtime, Status, StoreConfig};

use crate::commands::print_table;

/// Runs the demo on `config`'s store, or on a temporary one when `None`.
pub async fn run(config: Option<&StoreConfig>) -> anyhow::Result<()> {
    let temp;
    let path: PathBuf = match config {
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().join("waggle.db")
        }
        Some(StoreConfig::Redb { path }) => path.clone(),
        Some(StoreConfig::Memory | StoreConfig::Postgres { .. }) => {
            anyhow::bail!(
                "the demo shows a redb file's persistence: give it a redb path, or no --store"
            )
        }
    };
    println!("waggle-store demo: store file {}", path.display());
    println!();

    let store = RedbStore::open(&path)?;
    let mut saved = Vec::new();
    let script: [(&str, &str, Runtime, &[Status]); 4] = [
        (
            "demo-py",
            "data analysis",
            Runtime::Python,
            &[Status::Running],
        ),
        (
            "demo-node",
            "web scraper",
            Runtime::Node,
            &[Status::Running],
        ),
        ("demo-sh", "build failed", Runtime::Shell, &[Status::Error]),
        (
            "demo-gone",
            "finished job",
            Runtime::Python,
            &[Status::Running, Status::Destroying, Status::Destroyed],
        ),
    ];
    for (i, (id, name, runtime, steps)) in script.into_iter().enumerate() {
        let mut env = Environment::new(id, name, runtime);
        env.inactivity_timeout = Duration::from_secs(30 * 60);
        store.save(&env).await?;
        println!("  {id}: creating -> saved");
        for status in steps {
            env.transition_to(*status)?;
            if *status == Status::Running {
                env.ssh_port = 2200 + i as u16;
                env.touch();
            }
            store.save(&env).await?;
            println!("  {id}: {} -> saved", status);
        }
        saved.push(env);
    }
    store.delete("demo-gone").await?;
    saved.retain(|e| e.id != "demo-gone");
    saved.sort_by(|a, b| a.id.cmp(&b.id));
    println!("  demo-gone: deleted after it was destroyed");
    println!();
    println!("Before the restart:");
    print_table(&store.find_all().await?, Utc::now());
    store.close()?;

    println!();
    println!("Store closed. Reopening it, as a restarted server would...");
    let reopened = RedbStore::open(&path)?;
    let after = reopened.find_all().await?;
    println!();
    println!("After the restart:");
    print_table(&after, Utc::now());
    ensure!(
        after == saved,
        "the reopened store differs from what was saved"
    );
    println!();
    println!(
        "All {} environments survived the restart, field for field.",
        after.len()
    );
    Ok(())
}
