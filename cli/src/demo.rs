// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The first-run demo: environments taken through Waggle's lifecycle — each
//! change a conditional write, as two servers on one store need — are still
//! there, revisions included, after the store is closed and reopened, as
//! after a restart.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use waggle_store::chrono::Utc;
use waggle_store::{
    Environment, Expected, RedbStore, Repository, Revisioned, RevisionedExt, Runtime, Status,
    StoreConfig,
};

use waggle_store::config::StoreKind;

use crate::commands::print_table;

/// Runs the demo on `config`'s store, or on a temporary one when `None`.
pub async fn run(config: Option<&StoreConfig>) -> anyhow::Result<()> {
    let temp;
    let path: PathBuf = match config {
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().join("waggle.db")
        }
        Some(StoreConfig {
            kind: StoreKind::Redb { path },
            ..
        }) => path.clone(),
        Some(_) => {
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
        let revision = store.save_if(&env, Expected::Absent).await?;
        println!("  {id}: creating -> saved ({revision})");
        let mut current = store.find_revision(id).await?;
        for status in steps {
            // Read, change, save only if nobody changed it meanwhile.
            current = store
                .update(id, |env| {
                    env.transition_to(*status)?;
                    if *status == Status::Running {
                        env.ssh_port = 2200 + i as u16;
                        env.touch();
                    }
                    Ok(())
                })
                .await?;
            println!("  {id}: {status} -> saved ({})", current.revision);
        }
        saved.push(current);
    }
    let gone = saved
        .iter()
        .find(|v| v.env.id == "demo-gone")
        .map(|v| v.revision)
        .context("demo-gone was not saved")?;
    store.delete_if("demo-gone", gone).await?;
    saved.retain(|v| v.env.id != "demo-gone");
    saved.sort_by(|a, b| a.env.id.cmp(&b.env.id));
    println!("  demo-gone: deleted after it was destroyed (only if still at {gone})");
    println!();
    println!("Before the restart:");
    print_table(&store.find_all().await?, Utc::now());
    store.close()?;

    println!();
    println!("Store closed. Reopening it, as a restarted server would...");
    let reopened = RedbStore::open(&path)?;
    let after = reopened.find_all_revisions().await?;
    println!();
    println!("After the restart:");
    let envs: Vec<Environment> = after.iter().map(|v| v.env.clone()).collect();
    print_table(&envs, Utc::now());
    ensure!(
        after == saved,
        "the reopened store differs from what was saved"
    );
    println!();
    println!(
        "All {} environments survived the restart, field for field, each at the revision it was saved at.",
        after.len()
    );
    Ok(())
}
