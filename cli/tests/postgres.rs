// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The `waggle-store` binary on a PostgreSQL store: a redb store moved to
//! PostgreSQL and back through `export | import -` keeps every record byte
//! for byte, every command works there, and over verified TLS.

#[cfg(waggle_postgres_server)]
mod with_server {
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Output, Stdio};

    use waggle_store::{Environment, RedbStore, Repository, Runtime, Status};

    fn url() -> String {
        std::env::var("WAGGLE_TEST_POSTGRES_URL").unwrap_or_else(|_| panic!("no server"))
    }

    /// A schema no other test uses.
    fn schema(tag: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("t_cli_{tag}_{}_{nanos}", std::process::id())
    }

    /// Runs the binary with `args`, `input` on its standard input.
    fn run<S: AsRef<std::ffi::OsStr>>(args: &[S], input: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
            .args(args)
            .env_remove("WAGGLE_STORE")
            .env_remove("WAGGLE_STORE_PATH")
            .env_remove("WAGGLE_STORE_SCHEMA")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run waggle-store: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], input: &str) -> String {
        let out = run(args, input);
        assert!(
            out.status.success(),
            "waggle-store {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A redb store with records of every runtime and status, names in
    /// several scripts, and ids at the edges of the rules.
    fn seeded(path: &Path) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let store = RedbStore::open(path).unwrap_or_else(|e| panic!("{e}"));
            let long = "z".repeat(128);
            let ids = ["a", "B-2", "env_3.x", "ü-4", long.as_str()];
            let runtimes = [Runtime::Python, Runtime::Node, Runtime::Shell];
            let statuses = [Status::Running, Status::Error, Status::Creating];
            for (i, id) in ids.iter().enumerate() {
                let mut e = Environment::new(*id, format!("имя {i} \"quoted\" ✓"), runtimes[i % 3]);
                if statuses[i % 3] != Status::Creating {
                    e.transition_to(statuses[i % 3])
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                e.ssh_port = 2200 + i as u16;
                e.capabilities.path = format!("/opt/{i}/bin:/usr/bin");
                store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
            }
            store.close().unwrap_or_else(|e| panic!("{e}"));
            ids.len()
        })
    }

    /// `bench` pointed at a real schema never touches it: two benches at
    /// once on one database both succeed, each in a scratch schema of its
    /// own that is gone afterwards, and the named schema exports the same
    /// bytes before and after.
    #[test]
    fn bench_runs_in_a_scratch_schema_and_two_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let redb = dir.path().join("seed.db");
        seeded(&redb);
        let target = schema("bench");
        let exported = ok(&["--store", redb.to_str().unwrap_or(""), "export"], "");
        ok(
            &["--store", &url(), "--schema", &target, "import", "-"],
            &exported,
        );
        let before = ok(&["--store", &url(), "--schema", &target, "export"], "");
        let bench = |n: usize| {
            let (url, target) = (url(), target.clone());
            std::thread::spawn(move || {
                let json =
                    std::env::temp_dir().join(format!("bench-{}-{n}.json", std::process::id()));
                let args = [
                    "--store",
                    &url,
                    "--schema",
                    &target,
                    "bench",
                    "--records",
                    "40",
                    "--concurrency",
                    "4",
                    "--duration",
                    "0.5",
                    "--warmup",
                    "0",
                    "--json",
                    json.to_str().unwrap_or(""),
                ];
                let out = run(&args, "");
                let _ = std::fs::remove_file(&json);
                out
            })
        };
        let runs = [bench(1), bench(2)];
        let mut scratch = Vec::new();
        for run in runs {
            let out = run
                .join()
                .unwrap_or_else(|_| panic!("a bench thread panicked"));
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "a bench failed: {err}");
            let name = err
                .split_whitespace()
                .find(|w| w.starts_with("waggle_bench_"))
                .unwrap_or_else(|| panic!("the scratch schema is not named: {err}"))
                .trim_end_matches(';')
                .to_owned();
            assert!(
                err.contains(&format!("dropped the scratch schema {name}")),
                "{err}"
            );
            scratch.push(name);
        }
        assert_ne!(scratch[0], scratch[1], "each bench has a schema of its own");
        let after = ok(&["--store", &url(), "--schema", &target, "export"], "");
        assert_eq!(
            after, before,
            "the bench changed the schema it was pointed at"
        );
        let left = ok(&["--store", &url(), "--schema", &target, "count"], "");
        assert_eq!(left.trim(), "5");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let remaining: i64 = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(connection);
            client
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)",
                    &[&scratch],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .get(0)
        });
        assert_eq!(remaining, 0, "a scratch schema was left behind");
    }

    #[test]
    fn redb_to_postgres_and_back_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let from = dir.path().join("from.db");
        let back = dir.path().join("back.db");
        let (from, back) = (
            from.to_str().unwrap_or_default(),
            back.to_str().unwrap_or_default(),
        );
        let n = seeded(Path::new(from));
        let url = url();
        let schema = schema("move");
        let pg = ["--store", url.as_str(), "--schema", schema.as_str()];
        let with = |args: &[&str]| -> Vec<String> {
            pg.iter().chain(args).map(|s| (*s).to_owned()).collect()
        };

        let exported = ok(&["--store", from, "export"], "");
        assert_eq!(exported.lines().count(), n);
        let imported = ok(&with(&["import", "-"]), &exported);
        assert!(
            imported.contains(&format!("imported {n} records")),
            "{imported}"
        );
        assert_eq!(
            ok(&with(&["export"]), ""),
            exported,
            "PostgreSQL exports what redb did"
        );
        assert_eq!(ok(&with(&["count"]), "").trim(), n.to_string());
        assert!(ok(&with(&["list"]), "").contains("B-2"));
        assert!(ok(&with(&["show", "ü-4"]), "").contains("\"ssh_port\": 2203"));
        let checked = run(&with(&["check"]), "");
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&checked.stdout)
        );
        let compact = run(&with(&["compact"]), "");
        assert_eq!(
            compact.status.code(),
            Some(1),
            "compact does not apply to PostgreSQL"
        );
        let said = String::from_utf8_lossy(&compact.stderr);
        assert!(
            said.contains("PostgreSQL store") && !said.contains("waggle-test-password"),
            "{said}"
        );

        let again = ok(&with(&["export"]), "");
        ok(&["--store", back, "import", "-"], &again);
        assert_eq!(
            ok(&["--store", back, "export"], ""),
            exported,
            "redb → PostgreSQL → redb keeps every record byte for byte"
        );
        println!("{n} records moved redb → PostgreSQL → redb through the CLI, byte for byte");
    }

    /// The CLI reaches the server over verified TLS from the URL alone.
    #[test]
    fn the_cli_verifies_the_server_certificate() {
        let ca = std::env::var("WAGGLE_TEST_POSTGRES_CA")
            .unwrap_or_else(|_| panic!("WAGGLE_TEST_POSTGRES_CA is not set"));
        let other = std::env::var("WAGGLE_TEST_POSTGRES_OTHER_CA")
            .unwrap_or_else(|_| panic!("WAGGLE_TEST_POSTGRES_OTHER_CA is not set"));
        let schema = schema("tls");
        let local = url().replace("@127.0.0.1:", "@localhost:");
        let verified = format!("{local}?sslmode=verify-full&sslrootcert={ca}");
        assert_eq!(
            ok(&["--store", &verified, "--schema", &schema, "count"], "").trim(),
            "0"
        );
        let wrong = format!("{local}?sslmode=verify-full&sslrootcert={other}");
        let refused = run(&["--store", &wrong, "--schema", &schema, "count"], "");
        assert_eq!(refused.status.code(), Some(1));
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("certificate"), "{said}");
        assert!(!said.contains("waggle-test-password"), "{said}");
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn cli_on_postgres() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
