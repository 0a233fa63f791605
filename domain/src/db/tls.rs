//! TLS for every connection Till opens to PostgreSQL.
//!
//! The connection URL carries libpq's `sslmode` and `sslrootcert` parameters (tokio-postgres
//! knows only `disable`, `prefer` and `require`, and refuses `sslrootcert`). [`Target`]
//! takes them out, parses the rest with tokio-postgres, and connects through rustls (the
//! `ring` provider, which reqwest already brings in):
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers it | no |
//! | `require` | always | no; with `sslrootcert`, its chain (as libpq does) |
//! | `verify-ca` | always | chain up to a CA in `sslrootcert` |
//! | `verify-full` | always | chain, and the host name (or IP) in the URL against the certificate |
//!
//! `verify-ca` and `verify-full` need `sslrootcert` (a PEM bundle, e.g. Amazon RDS's
//! `global-bundle.pem`). Connections over a Unix socket never use TLS, as with libpq.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, as far as Till supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plaintext
    /// otherwise.
    Prefer,
    /// TLS always; the certificate is not checked unless a CA file is given.
    Require,
    /// TLS always; the certificate must chain to a CA of the CA file.
    VerifyCa,
    /// TLS always; the certificate must chain to a CA of the CA file and name the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(TlsError::UnknownSslMode(other.to_owned())),
        }
    }
}

/// Why a database URL or its TLS settings cannot be used. Messages never contain the URL
/// (it may hold a password).
#[derive(Debug, Error)]
pub enum TlsError {
    /// `sslmode` has a value Till does not support.
    #[error(
        "sslmode `{0}` is not supported (use disable, prefer, require, verify-ca or verify-full)"
    )]
    UnknownSslMode(String),
    /// `verify-ca`/`verify-full` without a CA file.
    #[error("sslmode {0} needs a CA file (sslrootcert in the URL, or TILL_DB_CA_FILE)")]
    CaFileRequired(SslMode),
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFileUnreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path} holds no usable PEM certificate")]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A setting and the URL both give `sslmode` or `sslrootcert`, with different values.
    #[error("{setting} is `{setting_value}` but the database URL says {parameter}=`{url_value}`; give it once")]
    Conflict {
        /// The setting's name.
        setting: &'static str,
        /// Its value.
        setting_value: String,
        /// The URL parameter.
        parameter: &'static str,
        /// The URL's value.
        url_value: String,
    },
    /// tokio-postgres refused the rest of the URL.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A parsed connection URL and the TLS client it needs; cheap to clone. Build it once and
/// connect many times (a pool's connections share one).
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.config.get_hosts())
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `url` (URL or `key=value` form) with its `sslmode` and `sslrootcert`, and
    /// reads the CA file.
    pub fn parse(url: &str) -> Result<Self, TlsError> {
        let parts = split(url)?;
        let mode = match &parts.sslmode {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        };
        let mut config: tokio_postgres::Config = parts
            .rest
            .parse()
            .map_err(|e: tokio_postgres::Error| TlsError::Url(with_causes(&e)))?;
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty() && hosts.iter().all(|h| !matches!(h, Host::Tcp(_)));
        let roots = parts.sslrootcert.as_deref().map(load_roots).transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Option<Arc<dyn ServerCertVerifier>> = match (mode, roots) {
            (SslMode::Disable, _) => None,
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(TlsError::CaFileRequired(mode))
            }
            (SslMode::VerifyFull, Some(roots)) => Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?,
            ),
            (SslMode::VerifyCa | SslMode::Require | SslMode::Prefer, Some(roots)) => {
                Some(Arc::new(NameBlind {
                    roots: Some(Arc::new(roots)),
                    provider: provider.clone(),
                }))
            }
            (SslMode::Require | SslMode::Prefer, None) => Some(Arc::new(NameBlind {
                roots: None,
                provider: provider.clone(),
            })),
        };
        let tls = match verifier {
            Some(verifier) => {
                let mut client = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth();
                // PostgreSQL 17 insists on it for direct TLS (`sslnegotiation=direct`);
                // older servers ignore it.
                client.alpn_protocols = vec![b"postgresql".to_vec()];
                Some(MakeRustlsConnect::new(client))
            }
            None => None,
        };
        config.ssl_mode(match mode {
            // libpq never uses TLS over a Unix socket, whatever sslmode says.
            _ if unix_only => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(Self { config, mode, tls })
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// Opens a connection; its protocol driver runs as a task on the current runtime.
    pub async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let bad = |e: tokio_postgres::Error| ConnectionError::BadConnection(with_causes(&e));
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// `e` and its causes: tokio-postgres's own message is only the kind ("error performing
/// TLS handshake"), the reason (an unknown issuer, a name mismatch) is in the source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Adds the `TILL_DB_SSLMODE` and `TILL_DB_CA_FILE` settings to `url` as `sslmode` and
/// `sslrootcert`. A setting the URL already has with the same value is left alone; with a
/// different value it is an error, so a weaker URL never silently wins over the setting
/// (or the reverse).
pub fn with_settings(
    url: &str,
    sslmode: Option<SslMode>,
    ca_file: Option<&Path>,
) -> Result<String, TlsError> {
    let parts = split(url)?;
    let mut add: Vec<(&str, String)> = Vec::new();
    if let Some(mode) = sslmode {
        match &parts.sslmode {
            None => add.push(("sslmode", mode.as_str().to_owned())),
            Some(given) if given.parse::<SslMode>().ok() == Some(mode) => {}
            Some(given) => {
                return Err(TlsError::Conflict {
                    setting: "TILL_DB_SSLMODE",
                    setting_value: mode.to_string(),
                    parameter: "sslmode",
                    url_value: given.clone(),
                })
            }
        }
    }
    if let Some(file) = ca_file {
        let file_str = file.to_string_lossy().into_owned();
        match &parts.sslrootcert {
            None => add.push(("sslrootcert", file_str)),
            Some(given) if Path::new(given) == file => {}
            Some(given) => {
                return Err(TlsError::Conflict {
                    setting: "TILL_DB_CA_FILE",
                    setting_value: file_str,
                    parameter: "sslrootcert",
                    url_value: given.clone(),
                })
            }
        }
    }
    let mut out = url.to_owned();
    for (key, value) in add {
        if parts.is_url {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(key);
            out.push('=');
            out.extend(utf8_percent_encode(&value, QUERY_VALUE));
        } else {
            out.push(' ');
            out.push_str(key);
            out.push('=');
            out.push_str(&quote(&value));
        }
    }
    Ok(out)
}

/// Characters left as they are in a query value; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A URL with the parameters tokio-postgres does not know taken out.
#[derive(Debug, PartialEq)]
struct Parts {
    /// What tokio-postgres parses.
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    /// URL form (`postgres://`), not `key=value` form.
    is_url: bool,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (the last of each wins, as in libpq).
fn split(url: &str) -> Result<Parts, TlsError> {
    let mut parts = Parts {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
        is_url: url.starts_with("postgres://") || url.starts_with("postgresql://"),
    };
    if parts.is_url {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || {
                percent_decode_str(value)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| TlsError::Url(format!("`{key}` is not valid UTF-8")))
            };
            match key {
                "sslmode" => parts.sslmode = Some(decoded()?),
                "sslrootcert" => parts.sslrootcert = Some(decoded()?),
                _ => kept.push(pair),
            }
        }
        parts.rest = base.to_owned();
        if !kept.is_empty() {
            parts.rest.push('?');
            parts.rest.push_str(&kept.join("&"));
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(url)? {
            match key.as_str() {
                "sslmode" => parts.sslmode = Some(value),
                "sslrootcert" => parts.sslrootcert = Some(value),
                _ => kept.push(format!("{key}={}", quote(&value))),
            }
        }
        parts.rest = kept.join(" ");
    }
    Ok(parts)
}

/// The pairs of a `key=value` connection string, values unquoted and unescaped (the
/// grammar libpq and tokio-postgres accept).
fn key_values(s: &str) -> Result<Vec<(String, String)>, TlsError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(TlsError::Url(format!("expected `=` after `{key}`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some(c) => value.push(c),
                    None => return Err(TlsError::Url(format!("unterminated quote in `{key}`"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(c) = chars.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `value` quoted for a `key=value` connection string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The certificates of a PEM file, as trust anchors.
fn load_roots(path: &str) -> Result<RootCertStore, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path).map_err(|source| TlsError::CaFileUnreadable {
        path: path.clone(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::CaFileEmpty { path });
    }
    Ok(roots)
}

/// A verifier that never compares the certificate's name with the host: `verify-ca`
/// (and `require`/`prefer` with a CA file) checks that the chain leads to one of
/// `roots`; `require`/`prefer` without one accepts any certificate (encrypted, not
/// authenticated). The handshake's signatures are checked against the certificate
/// either way.
#[derive(Debug)]
struct NameBlind {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameBlind {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T, E: fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept() {
        let parts = ok(split(
            "postgres://u:p%3Fw@db.example.com:5432/till?application_name=till&sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem&connect_timeout=5",
        ));
        assert_eq!(
            parts,
            Parts {
                rest: "postgres://u:p%3Fw@db.example.com:5432/till?application_name=till&connect_timeout=5".into(),
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/etc/rds ca.pem".into()),
                is_url: true,
            }
        );
        let parts = ok(split("postgresql://localhost/till?sslmode=require"));
        assert_eq!(parts.rest, "postgresql://localhost/till");
        assert_eq!(parts.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn key_value_strings_are_understood_with_quotes_and_escapes() {
        let parts = ok(split(
            r"host=db.example.com  dbname = till password='it\'s' sslmode=verify-ca sslrootcert='/ca dir/it\'s.pem' user=a\ b",
        ));
        assert!(!parts.is_url);
        assert_eq!(parts.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(parts.sslrootcert.as_deref(), Some("/ca dir/it's.pem"));
        let config: tokio_postgres::Config = ok(parts.rest.parse());
        assert_eq!(config.get_dbname(), Some("till"));
        assert_eq!(config.get_user(), Some("a b"));
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert!(split("host=x sslmode").is_err());
        assert!(split("host='x").is_err());
    }

    #[test]
    fn settings_are_added_and_conflicts_refused() {
        let ca = Path::new("/etc/till/rds ca.pem");
        assert_eq!(
            ok(with_settings(
                "postgres://u@h/till",
                Some(SslMode::VerifyFull),
                Some(ca)
            )),
            "postgres://u@h/till?sslmode=verify-full&sslrootcert=/etc/till/rds%20ca.pem"
        );
        assert_eq!(
            ok(with_settings(
                "postgres://u@h/till?application_name=x",
                Some(SslMode::Require),
                None
            )),
            "postgres://u@h/till?application_name=x&sslmode=require"
        );
        assert_eq!(
            ok(with_settings(
                "host=h dbname=till",
                Some(SslMode::VerifyCa),
                Some(ca)
            )),
            "host=h dbname=till sslmode='verify-ca' sslrootcert='/etc/till/rds ca.pem'"
        );
        // Said twice alike: left as it is.
        let same = "postgres://u@h/till?sslmode=verify-full";
        assert_eq!(
            ok(with_settings(same, Some(SslMode::VerifyFull), None)),
            same
        );
        // Said twice differently: refused, naming both and not the URL.
        let err = with_settings(
            "postgres://u:secret@h/till?sslmode=require",
            Some(SslMode::VerifyFull),
            None,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("TILL_DB_SSLMODE") && err.contains("require"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        assert!(matches!(
            with_settings("postgres://h/t?sslrootcert=/a.pem", None, Some(ca)),
            Err(TlsError::Conflict { .. })
        ));
        assert_eq!(
            ok(with_settings("postgres://h/t", None, None)),
            "postgres://h/t"
        );
    }

    #[test]
    fn modes_are_parsed_and_checked() {
        assert_eq!(
            ok(Target::parse("postgres://h/t")).ssl_mode(),
            SslMode::Prefer
        );
        assert_eq!(
            ok(Target::parse("postgres://h/t?sslmode=disable")).ssl_mode(),
            SslMode::Disable
        );
        assert!(matches!(
            Target::parse("postgres://h/t?sslmode=allow"),
            Err(TlsError::UnknownSslMode(m)) if m == "allow"
        ));
        assert!(matches!(
            Target::parse("postgres://h/t?sslmode=verify-full"),
            Err(TlsError::CaFileRequired(SslMode::VerifyFull))
        ));
        assert!(matches!(
            Target::parse("postgres://h/t?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"),
            Err(TlsError::CaFileUnreadable { .. })
        ));
        assert!(matches!(
            Target::parse("postgres://h/t?port=notaport"),
            Err(TlsError::Url(_))
        ));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("till-tls-unit-{}", uuid::Uuid::new_v4()));
        ok(std::fs::create_dir_all(&dir));
        let file = dir.join("empty.pem");
        ok(std::fs::write(&file, "not a certificate\n"));
        let url = format!(
            "postgres://h/t?sslmode=verify-full&sslrootcert={}",
            file.display()
        );
        let result = Target::parse(&url);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(result, Err(TlsError::CaFileEmpty { .. })),
            "{result:?}"
        );
    }
}
