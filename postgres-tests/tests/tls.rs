// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! PgStore over TLS against the test server, whose certificate a throwaway
//! authority signed for `localhost` and `127.0.0.1` (`scripts/test-postgres`
//! makes it and sets `WAGGLE_TEST_POSTGRES_CA`): each `sslmode` gives what
//! libpq's does, and `verify-full` refuses a certificate from another
//! authority or for another host.

#[cfg(waggle_postgres_server)]
mod with_server {
    use std::time::{Duration, Instant};

    use waggle_store::store::postgres::{PgOptions, PgStore};
    use waggle_store::{Environment, Error, Repository, Runtime};
    use waggle_store_postgres_tests::{server_url, unique_schema};

    fn env_path(var: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: start the server with eval \"$(scripts/test-postgres start)\""
            )
        })
    }

    /// The test server as a libpq `key=value` string, with `extra` added.
    fn key_values(host: &str, extra: &str) -> String {
        let url = server_url().unwrap_or_else(|| panic!("no server"));
        let config: tokio_postgres::Config = url.parse().unwrap_or_else(|e| panic!("{e}"));
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user={} password={password} dbname={} {extra}",
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_user().unwrap_or("postgres"),
            config.get_dbname().unwrap_or("postgres"),
        )
    }

    async fn open(conn: &str) -> Result<PgStore, Error> {
        let options = PgOptions::default()
            .schema(unique_schema("tls"))
            .pool_size(2)
            .connect_timeout(Duration::from_secs(5));
        PgStore::connect(conn, options).await
    }

    /// Each mode opens a store that works, encrypted or not as libpq's
    /// would be, through a URL and through a `key=value` string.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_sslmode_connects_as_libpq_would() {
        let ca = env_path("WAGGLE_TEST_POSTGRES_CA");
        let url = server_url().unwrap_or_else(|| panic!("no server"));
        let cases = [
            (format!("{url}?sslmode=disable"), false),
            (url.clone(), true),
            (format!("{url}?sslmode=prefer"), true),
            (format!("{url}?sslmode=require"), true),
            (
                key_values("localhost", &format!("sslmode=verify-ca sslrootcert={ca}")),
                true,
            ),
            (
                key_values(
                    "localhost",
                    &format!("sslmode=verify-full sslrootcert={ca}"),
                ),
                true,
            ),
            (format!("{url}?sslmode=verify-full&sslrootcert={ca}"), true),
        ];
        for (n, (conn, encrypted)) in cases.iter().enumerate() {
            let store = open(conn).await.unwrap_or_else(|e| panic!("case {n}: {e}"));
            let env = Environment::new(format!("tls-{n}"), "x", Runtime::Python);
            store
                .save(&env)
                .await
                .unwrap_or_else(|e| panic!("case {n}: {e}"));
            assert_eq!(store.find_by_id(&env.id).await.ok(), Some(env), "case {n}");
            let version = store
                .tls_version()
                .await
                .unwrap_or_else(|e| panic!("case {n}: {e}"));
            assert_eq!(
                version.is_some(),
                *encrypted,
                "case {n}: TLS version {version:?}"
            );
            if let Some(v) = version {
                assert!(v.starts_with("TLSv1."), "case {n}: {v}");
            }
        }
        println!("{} sslmode cases connected as libpq would", cases.len());
    }

    /// `verify-full` refuses a server whose certificate another authority
    /// signed, or which names another host; `verify-ca` accepts the second
    /// (it checks the chain only). Each refusal is a typed error naming the
    /// certificate, well within the connect timeout, without the password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_full_refuses_the_wrong_authority_and_the_wrong_host() {
        let ca = env_path("WAGGLE_TEST_POSTGRES_CA");
        let other = env_path("WAGGLE_TEST_POSTGRES_OTHER_CA");
        let refused = [
            key_values(
                "localhost",
                &format!("sslmode=verify-full sslrootcert={other}"),
            ),
            key_values(
                "localhost",
                &format!("sslmode=verify-ca sslrootcert={other}"),
            ),
            key_values("localhost", &format!("sslmode=require sslrootcert={other}")),
            key_values(
                "not-the-server.invalid",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
        ];
        for (n, conn) in refused.iter().enumerate() {
            let started = Instant::now();
            match open(conn).await {
                Ok(_) => panic!("case {n}: a certificate that should not verify was accepted"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("certificate"), "case {n}: {msg}");
                    assert!(!msg.contains("waggle-test-password"), "case {n}: {msg}");
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "case {n}: refused only after {:?}",
                started.elapsed()
            );
        }
        let chain_only = key_values(
            "not-the-server.invalid",
            &format!("sslmode=verify-ca sslrootcert={ca}"),
        );
        let store = open(&chain_only)
            .await
            .unwrap_or_else(|e| panic!("verify-ca with another host name: {e}"));
        assert!(
            store
                .tls_version()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some()
        );
        println!("{} wrong certificates refused", refused.len());
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_tls() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
