// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! TLS for `PgStore`: libpq's `sslmode` and `sslrootcert`, on rustls.
//!
//! `tokio-postgres` knows `sslmode` `disable`, `prefer` and `require` only,
//! and no `sslrootcert`. This module takes both out of the connection
//! string (or from `PGSSLMODE` / `PGSSLROOTCERT` when the string has none,
//! as libpq does), hands `tokio-postgres` the rest, and builds the rustls
//! configuration with libpq's meaning of each mode:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | yes, or the connection fails | no; with `sslrootcert` given, as `verify-ca` |
//! | `verify-ca` | yes | signed by a root in `sslrootcert` |
//! | `verify-full` | yes | signed by a root in `sslrootcert`, and names the host |
//!
//! `sslrootcert` is a PEM file of root certificates; for the `verify-*`
//! modes it defaults to `~/.postgresql/root.crt`, as in libpq.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never encrypt.
    Disable,
    /// Encrypt if the server offers it; check no certificate (the default).
    Prefer,
    /// Encrypt or fail; check no certificate unless `sslrootcert` is given.
    Require,
    /// Encrypt, and check the server's certificate chains to a known root.
    VerifyCa,
    /// As `VerifyCa`, and check that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(Error::Config(
                    "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full".into(),
                ));
            }
            other => {
                return Err(Error::Config(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// The TLS settings a connection string asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsParams {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `conn` (a `postgres://` URL or
/// a libpq `key=value` string) and returns the rest, for `tokio-postgres`,
/// with what they said. `env` looks up `PGSSLMODE` and `PGSSLROOTCERT`, the
/// defaults when the string names neither.
pub fn take_tls_params(
    conn: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, TlsParams)> {
    let (rest, found) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)?
    } else {
        split_key_values(conn)?
    };
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in found {
        match key {
            Key::Mode => mode = Some(value),
            Key::RootCert => root_cert = Some(value),
        }
    }
    let mode = match mode.or_else(|| env("PGSSLMODE")) {
        Some(value) => SslMode::parse(&value)?,
        None => SslMode::Prefer,
    };
    let root_cert = root_cert
        .or_else(|| env("PGSSLROOTCERT"))
        .map(PathBuf::from);
    Ok((rest, TlsParams { mode, root_cert }))
}

#[derive(Clone, Copy)]
enum Key {
    Mode,
    RootCert,
}

fn tls_key(key: &str) -> Option<Key> {
    match key {
        "sslmode" => Some(Key::Mode),
        "sslrootcert" => Some(Key::RootCert),
        _ => None,
    }
}

fn bad(what: &str) -> Error {
    // Never the string itself: it may hold the password.
    Error::Config(format!("the PostgreSQL connection string: {what}"))
}

/// `postgres://…?a=b&sslmode=…`: the query's TLS parameters taken out.
fn split_url(conn: &str) -> Result<(String, Vec<(Key, String)>)> {
    let Some((base, query)) = conn.split_once('?') else {
        return Ok((conn.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        match tls_key(&key) {
            Some(k) => found.push((k, decode(value)?)),
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, found))
}

fn decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad("a parameter is not valid UTF-8 once percent-decoded"))
}

/// `host=… sslmode=… password='a b'`: the TLS parameters taken out, every
/// other parameter kept as written.
fn split_key_values(conn: &str) -> Result<(String, Vec<(Key, String)>)> {
    let mut kept: Vec<&str> = Vec::new();
    let mut found = Vec::new();
    let bytes = conn.as_bytes();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &conn[start..i];
        i = skip_ws(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad("expected `=` after a key"));
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(bad("a quoted value is not closed")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&b) = bytes.get(i) {
                if b.is_ascii_whitespace() {
                    break;
                }
                if b == b'\\' && i + 1 < bytes.len() {
                    value.push(bytes[i + 1]);
                    i += 2;
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        match tls_key(key) {
            Some(k) => found.push((
                k,
                String::from_utf8(value).map_err(|_| bad("a value is not valid UTF-8"))?,
            )),
            None => kept.push(&conn[start..i]),
        }
    }
    Ok((kept.join(" "), found))
}

/// What `tokio-postgres` is told, and the connector it is given.
pub struct Tls {
    /// The mode `tokio-postgres` negotiates with.
    pub mode: PgSslMode,
    /// The rustls connector (unused under `disable`).
    pub connector: MakeRustlsConnect,
}

/// The rustls connector for `params`, its root certificates read now.
pub fn connector(params: &TlsParams) -> Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let roots = match (params.mode, &params.root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::Require, Some(path)) => Some(read_roots(path)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, Some(path)) => Some(read_roots(path)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            let default = dirs::home_dir()
                .map(|home| home.join(".postgresql/root.crt"))
                .filter(|p| p.exists())
                .ok_or_else(|| {
                    Error::Config(
                        "sslmode=verify-ca and verify-full need the server's root certificate: give sslrootcert=<PEM file> (or put it in ~/.postgresql/root.crt)".into(),
                    )
                })?;
            Some(read_roots(&default)?)
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (params.mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| Error::Config(format!("the TLS root certificates: {e}")))?
        }
        (_, Some(roots)) => Arc::new(ChainOnly { roots, algorithms }),
        (_, None) => Arc::new(EncryptionOnly { algorithms }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mode = match params.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    };
    Ok(Tls {
        mode,
        connector: MakeRustlsConnect::new(config),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Config(format!("sslrootcert {shown}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("sslrootcert {shown}: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Config(format!(
            "sslrootcert {shown}: no certificate in it could be used"
        )));
    }
    Ok(roots)
}

/// `prefer` and `require` without roots: the channel is encrypted and the
/// handshake's signatures are checked, but not who signed the certificate
/// (libpq's meaning of these modes).
#[derive(Debug)]
struct EncryptionOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

/// `verify-ca`: the certificate must chain to a root, whatever it names.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

macro_rules! signatures_checked {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signatures_checked!();
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    signatures_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(conn: &str) -> Result<(String, TlsParams)> {
        take_tls_params(conn, |_| None)
    }

    #[test]
    fn urls_lose_only_their_tls_parameters() {
        let (rest, params) = take(
            "postgres://u:p%3Fw@db:5432/w?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rest,
            "postgres://u:p%3Fw@db:5432/w?application_name=x&connect_timeout=3"
        );
        assert_eq!(params.mode, SslMode::VerifyFull);
        assert_eq!(params.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));

        let (rest, params) =
            take("postgresql://db/w?sslmode=require").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "postgresql://db/w");
        assert_eq!(params.mode, SslMode::Require);
        assert_eq!(params.root_cert, None);
    }

    #[test]
    fn key_values_keep_every_other_parameter_as_written() {
        let (rest, params) = take(
            "host=db  password='it\\'s a'  sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=w\\ x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "host=db password='it\\'s a' dbname=w\\ x");
        assert_eq!(params.mode, SslMode::VerifyCa);
        assert_eq!(params.root_cert.as_deref(), Some(Path::new("/a b/ca.pem")));
        // What is left parses as tokio-postgres reads it.
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());
    }

    #[test]
    fn the_environment_is_the_default_and_the_string_wins() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_owned()),
            "PGSSLROOTCERT" => Some("/env/ca.pem".to_owned()),
            _ => None,
        };
        let (_, from_env) = take_tls_params("host=db", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_env.mode, SslMode::VerifyFull);
        assert_eq!(
            from_env.root_cert.as_deref(),
            Some(Path::new("/env/ca.pem"))
        );
        let (_, given) =
            take_tls_params("host=db sslmode=disable", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(given.mode, SslMode::Disable);
        let (_, default) = take("host=db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default.mode, SslMode::Prefer);
    }

    #[test]
    fn bad_modes_and_strings_are_typed_errors_without_the_password() {
        for conn in [
            "postgres://u:secret@db/w?sslmode=maybe",
            "host=db password=secret sslmode=allow",
            "host=db password='secret",
            "host=db password secret",
        ] {
            match take(conn) {
                Err(Error::Config(msg)) => assert!(!msg.contains("secret"), "{msg}"),
                other => panic!("{conn:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn verify_modes_without_roots_say_what_they_need() {
        let params = TlsParams {
            mode: SslMode::VerifyFull,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        match connector(&params) {
            Err(Error::Config(msg)) => assert!(msg.contains("/nonexistent/ca.pem"), "{msg}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a missing root certificate file was accepted"),
        }
    }
}
