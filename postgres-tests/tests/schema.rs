// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! PgStore's schema and connection: servers starting at once, a schema
//! newer than this build refused untouched, the password never shown.

#[cfg(waggle_postgres_server)]
mod with_server {
    use waggle_store::store::postgres::{PgOptions, PgStore};
    use waggle_store::{Repository, Revisioned};
    use waggle_store_postgres_tests::{connect, server_url, unique_schema};

    async fn raw() -> tokio_postgres::Client {
        let url = server_url().unwrap_or_else(|| panic!("no server"));
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(connection);
        client
    }

    /// Eight servers opening one new schema at once: one creates it, the
    /// others wait for it (the advisory lock) and find it made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_starting_at_once_share_one_schema() {
        let schema = unique_schema("race");
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let schema = schema.clone();
                tokio::spawn(async move { connect(&schema).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap_or_else(|e| panic!("{e}")));
        }
        let env = waggle_store::Environment::new("shared", "one", waggle_store::Runtime::Shell);
        stores[0].save(&env).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stores[7].find_by_id("shared").await.ok(), Some(env));
        let versions: String = raw()
            .await
            .query_one(
                &format!(
                    "SELECT string_agg(version::text, ',' ORDER BY version) FROM \"{schema}\".waggle_schema"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        assert_eq!(versions, "1,2,3,4,5,6", "each migration is recorded once");
        assert_eq!(
            stores[3].count().await.ok(),
            Some(1),
            "the count slots were made once"
        );
    }

    /// A schema a newer waggle-store wrote is refused, and left as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_schema_is_refused_untouched() {
        let schema = unique_schema("newer");
        drop(connect(&schema).await);
        let client = raw().await;
        client
            .batch_execute(&format!(
                "INSERT INTO \"{schema}\".waggle_schema VALUES (99); \
                 INSERT INTO \"{schema}\".environments VALUES ('kept', 'not a record')"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = server_url().unwrap_or_default();
        let options = PgOptions::default().schema(schema.clone());
        let contents = async || -> String {
            client
                .query_one(
                    &format!(
                        "SELECT (SELECT string_agg(version::text, ',' ORDER BY version) \
                                 FROM \"{schema}\".waggle_schema) || ' / ' || \
                                (SELECT string_agg(id || '=' || record, ',' ORDER BY id) \
                                 FROM \"{schema}\".environments)"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .get(0)
        };
        let before = contents().await;
        let err = PgStore::connect(&url, options)
            .await
            .expect_err("a newer schema opened");
        assert!(err.to_string().contains("newer waggle-store"), "{err}");
        assert!(before.ends_with(",99 / kept=not a record"), "{before}");
        assert_eq!(contents().await, before, "the refused schema was changed");
    }

    /// A version 1 schema (no count slots, no revisions) holding records is
    /// upgraded on open: its count is right from the first call, inserts,
    /// upserts and deletes keep it right, and every record it held has a
    /// revision of its own, older than any written after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_schema_is_upgraded_and_counted() {
        let schema = unique_schema("v1");
        drop(connect(&schema).await);
        // Back to what version 1 made, with three records written as a
        // version 1 server would.
        let client = raw().await;
        client
            .batch_execute(&format!(
                "DROP FUNCTION \"{schema}\".save_environment, \"{schema}\".save_environment_if, \
                     \"{schema}\".delete_environment, \"{schema}\".delete_environment_if, \
                     \"{schema}\".history_fence, \"{schema}\".set_history_recording, \
                     \"{schema}\".watch_channel; \
                 DROP TABLE \"{schema}\".environment_changes, \"{schema}\".history_state; \
                 ALTER TABLE \"{schema}\".environments DROP COLUMN revision; \
                 DROP SEQUENCE \"{schema}\".revisions; \
                 DROP TRIGGER environments_counted ON \"{schema}\".environments; \
                 DROP FUNCTION \"{schema}\".environments_counted(); \
                 DROP TABLE \"{schema}\".environment_count; \
                 DELETE FROM \"{schema}\".waggle_schema WHERE version > 1"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v1 = connect_v1_writes(&client, &schema, &["a", "b", "c"]).await;
        let store = connect(&schema).await;
        assert_eq!(store.count().await.ok(), Some(v1));
        let old: Vec<_> = store
            .find_all_revisions()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|v| v.revision)
            .collect();
        let distinct: std::collections::BTreeSet<_> = old.iter().collect();
        assert_eq!(
            distinct.len(),
            v1,
            "each upgraded record has a revision of its own: {old:?}"
        );
        let env = |id: &str| waggle_store::Environment::new(id, "v2", waggle_store::Runtime::Shell);
        store
            .save(&env("d"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .save(&env("a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.delete("b").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(3));
        let newer = store
            .find_revision("a")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .revision;
        assert!(old.iter().all(|r| *r < newer), "{old:?} then {newer}");
        let report = store.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_ok() && report.records_ok == 3, "{report:?}");
    }

    /// Writes records straight into the table, as a version 1 server did;
    /// returns how many.
    async fn connect_v1_writes(
        client: &tokio_postgres::Client,
        schema: &str,
        ids: &[&str],
    ) -> usize {
        for id in ids {
            let env = waggle_store::Environment::new(*id, "v1", waggle_store::Runtime::Shell);
            let record = String::from_utf8(
                waggle_store::record::encode(&env).unwrap_or_else(|e| panic!("{e}")),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            client
                .execute(
                    &format!("INSERT INTO \"{schema}\".environments VALUES ($1, $2)"),
                    &[id, &record],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        ids.len()
    }

    /// `check` reports a count that disagrees with the rows (a slot changed
    /// behind the store's back).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_sees_a_count_that_drifted() {
        let schema = unique_schema("drift");
        let store = connect(&schema).await;
        let env = waggle_store::Environment::new("one", "x", waggle_store::Runtime::Shell);
        store.save(&env).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store.check().await.ok().and_then(|r| r.integrity),
            Some(true)
        );
        raw()
            .await
            .execute(
                &format!("UPDATE \"{schema}\".environment_count SET n = n + 1 WHERE slot = 7"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.ok(), Some(2));
        let report = store.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.integrity, Some(false), "{report:?}");
    }

    /// `WAGGLE_STORE=postgres` with `WAGGLE_STORE_URL` and
    /// `WAGGLE_STORE_SCHEMA` opens a PgStore there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_environment_picks_postgres() {
        let schema = unique_schema("config");
        let url = server_url().unwrap_or_default();
        let vars = [
            ("WAGGLE_STORE", "postgres".to_owned()),
            ("WAGGLE_STORE_URL", url),
            ("WAGGLE_STORE_SCHEMA", schema.clone()),
        ];
        let config = waggle_store::StoreConfig::from_lookup(|key| {
            vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.into())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let store = config.open().await.unwrap_or_else(|e| panic!("{e}"));
        let env = waggle_store::Environment::new("cfg", "by env", waggle_store::Runtime::Node);
        store.save(&env).await.unwrap_or_else(|e| panic!("{e}"));
        // The same schema, through another pool: it was that schema.
        assert_eq!(
            connect(&schema).await.find_by_id("cfg").await.ok(),
            Some(env)
        );
    }

    /// `check` decodes every record and names the ones that do not; the
    /// count agrees with the rows read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_names_corrupt_records() {
        let schema = unique_schema("check");
        let store = connect(&schema).await;
        for id in ["a", "b", "c"] {
            let env = waggle_store::Environment::new(id, "ok", waggle_store::Runtime::Shell);
            store.save(&env).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let report = store.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_ok() && report.records_ok == 3, "{report:?}");
        raw()
            .await
            .execute(
                &format!("UPDATE \"{schema}\".environments SET record = 'garbage' WHERE id = 'b'"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let report = store.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.integrity, Some(true), "the count still agrees");
        assert_eq!(report.records_ok, 2);
        assert!(
            matches!(report.corrupt.as_slice(), [(id, _)] if id == "b"),
            "{report:?}"
        );
    }

    /// Recording switched off and on again on one schema: off, writes are
    /// recorded nowhere and reads are `HistoryOff`; on again, a follower
    /// from before is told (`HistoryPruned`) and new writes are kept. And
    /// `check` names a stored id whose latest change was removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_off_then_on_and_a_check_that_disagrees() {
        use waggle_store::{Audited, Error, HistoryOptions, Retention, Revision};
        let schema = unique_schema("hist");
        let with = |retention: Retention| {
            PgOptions::default()
                .schema(schema.clone())
                .history(HistoryOptions::default().retention(retention))
        };
        let url = server_url().unwrap_or_default();
        let off = PgStore::connect(&url, with(Retention::Off))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let env = |id: &str| waggle_store::Environment::new(id, "x", waggle_store::Runtime::Shell);
        off.save(&env("quiet"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(off.history("quiet").await, Err(Error::HistoryOff)));
        let quiet = off
            .find_revision("quiet")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .revision;
        drop(off);
        let on = PgStore::connect(&url, with(Retention::All))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match on.changes(Revision::new(0), 10).await {
            Err(Error::HistoryPruned { through, .. }) => assert!(through >= quiet),
            other => panic!("a follower from before the history started: {other:?}"),
        }
        on.save(&env("loud"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let through = match on.changes(Revision::new(0), 10).await {
            Err(Error::HistoryPruned { through, .. }) => through,
            other => panic!("{other:?}"),
        };
        let after = on
            .changes(through, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            after.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["loud"]
        );
        let report = on.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_ok() && report.history_ok == 1, "{report:?}");
        raw()
            .await
            .execute(
                &format!("DELETE FROM \"{schema}\".environment_changes WHERE id = 'loud'"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let report = on.check().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !report.is_ok() && matches!(report.history.as_slice(), [(id, _)] if id == "loud"),
            "{report:?}"
        );
    }

    /// Once the schema exists, a role with only `USAGE` on it and the table
    /// privileges the README lists (no `CREATE` anywhere) opens it and
    /// works: opening
    /// an up-to-date schema creates nothing. The same role cannot create a
    /// new one, and says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_least_privilege_role_uses_an_existing_schema() {
        let schema = unique_schema("priv");
        drop(connect(&schema).await);
        let role = format!("r_{}", schema.to_lowercase());
        let password = "least-privilege-pw";
        raw()
            .await
            .batch_execute(&format!(
                "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'; \
                 REVOKE CREATE ON DATABASE postgres FROM PUBLIC; \
                 REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
                 GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\"; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON \"{schema}\".environments TO \"{role}\"; \
                 GRANT SELECT, UPDATE ON \"{schema}\".environment_count TO \"{role}\"; \
                 GRANT USAGE ON SEQUENCE \"{schema}\".revisions TO \"{role}\"; \
                 GRANT SELECT ON \"{schema}\".waggle_schema TO \"{role}\"; \
                 GRANT SELECT, INSERT, DELETE ON \"{schema}\".environment_changes TO \"{role}\"; \
                 GRANT SELECT, UPDATE ON \"{schema}\".history_state TO \"{role}\""
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = server_url().unwrap_or_default();
        let host = url.split_once('@').map(|(_, h)| h).unwrap_or_default();
        let as_role = format!("postgres://{role}:{password}@{host}");
        let open = |schema: String| {
            let as_role = as_role.clone();
            async move {
                let options = PgOptions::default().schema(schema);
                PgStore::connect(&as_role, options).await
            }
        };
        let store = open(schema.clone())
            .await
            .unwrap_or_else(|e| panic!("the least-privilege role: {e}"));
        let env = waggle_store::Environment::new("p", "least", waggle_store::Runtime::Shell);
        store.save(&env).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.find_all().await.ok(), Some(vec![env]));
        store.delete("p").await.unwrap_or_else(|e| panic!("{e}"));
        let err = open(unique_schema("priv_new"))
            .await
            .expect_err("a role without CREATE made a schema");
        assert!(err.to_string().contains("permission denied"), "{err}");
    }

    /// A wrong password is a typed error that does not contain it; nor
    /// does a store's Debug output.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_password_is_never_shown() {
        let url = server_url().unwrap_or_default();
        let secret = "Sup3r-Secret-Pw";
        let wrong = match url.split_once('@') {
            Some((_, host)) => format!("postgres://waggle:{secret}@{host}"),
            None => panic!("the test URL has no credentials"),
        };
        let err = PgStore::connect(&wrong, PgOptions::default())
            .await
            .expect_err("a wrong password connected");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(secret), "{shown}");
        let store = connect(&unique_schema("debug")).await;
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(user, _)| user.split_once(':'))
            .map(|(_, pw)| pw.to_owned())
            .unwrap_or_default();
        assert!(!password.is_empty());
        assert!(!format!("{store:?}").contains(&password), "{store:?}");
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_schema() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
