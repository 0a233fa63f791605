//! Test support: an ephemeral PostgreSQL cluster that accepts TLS connections only
//! (`hostssl` in `pg_hba.conf`), with a certificate for `localhost` signed by a CA made
//! for the test, and a second CA that signed nothing the server presents.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::embedded::{EmbeddedOptions, EmbeddedPostgres};

/// A running TLS-only cluster; stopped and its folder removed on drop.
pub struct TlsCluster {
    pg: Option<EmbeddedPostgres>,
    dir: PathBuf,
    /// PEM file of the CA that signed the server's certificate (made out to
    /// `localhost` only, so `127.0.0.1` does not match it).
    pub ca_file: PathBuf,
    /// PEM file of a CA that did not sign it.
    pub other_ca_file: PathBuf,
}

impl TlsCluster {
    /// The test binary's one TLS cluster, started on first use (a panic says why it
    /// could not start).
    pub fn shared() -> &'static Self {
        static CLUSTER: std::sync::OnceLock<Result<TlsCluster, String>> =
            std::sync::OnceLock::new();
        let started = CLUSTER.get_or_init(|| {
            // Start-up blocks: not on the test's runtime thread.
            std::thread::spawn(TlsCluster::start)
                .join()
                .unwrap_or_else(|_| Err("TLS cluster start-up panicked".into()))
        });
        match started {
            Ok(c) => c,
            Err(e) => panic!("cannot start the TLS test cluster: {e}"),
        }
    }

    /// Starts it (blocking: call from a blocking thread or before a runtime).
    pub fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            // `till-test-<pid>-` lets `testing` remove it once this process is gone.
            "till-test-{}-tls-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut cluster = Self {
            pg: None,
            ca_file: dir.join("ca.pem"),
            other_ca_file: dir.join("other-ca.pem"),
            dir,
        };
        let opts = EmbeddedOptions {
            data_dir: cluster.dir.join("pg"),
            port: None,
            ephemeral: true,
            max_connections: 100,
        };
        // Initialise the cluster, stop it, turn TLS on and refuse plaintext, start again.
        let pg = EmbeddedPostgres::start(&opts).map_err(|e| e.to_string())?;
        let port = pg.port();
        let data_dir = pg.data_dir().to_owned();
        drop(pg);
        let (ca_pem, server_pem, server_key) = certificates("Till test CA", "localhost")?;
        let (other_ca_pem, _, _) = certificates("Another test CA", "localhost")?;
        write(&cluster.ca_file, &ca_pem, 0o644)?;
        write(&cluster.other_ca_file, &other_ca_pem, 0o644)?;
        let owner = std::fs::metadata(&data_dir).map_err(|e| e.to_string())?;
        for (name, contents, mode) in [
            ("server.crt", &server_pem, 0o644),
            ("server.key", &server_key, 0o600),
        ] {
            let path = data_dir.join(name);
            write(&path, contents, mode)?;
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(owner.uid())),
                Some(nix::unistd::Gid::from_raw(owner.gid())),
            )
            .map_err(|e| e.to_string())?;
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data_dir.join("postgresql.conf"))
            .map_err(|e| e.to_string())?;
        conf.write_all(b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            .map_err(|e| e.to_string())?;
        let hba_path = data_dir.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path).map_err(|e| e.to_string())?;
        let hba: String = hba
            .lines()
            .map(
                |line| match line.strip_prefix("host ").or(line.strip_prefix("host\t")) {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{line}\n"),
                },
            )
            .collect();
        std::fs::write(&hba_path, hba).map_err(|e| e.to_string())?;
        cluster.pg = Some(
            EmbeddedPostgres::start(&EmbeddedOptions {
                port: Some(port),
                ..opts
            })
            .map_err(|e| e.to_string())?,
        );
        Ok(cluster)
    }

    /// A URL for database `db` on host `host` (`localhost` or `127.0.0.1`), with the
    /// query string `query` (may be empty).
    pub fn url(&self, host: &str, db: &str, query: &str) -> String {
        let url = self
            .pg
            .as_ref()
            .map(|pg| pg.url(db))
            .unwrap_or_default()
            .replacen("@127.0.0.1:", &format!("@{host}:"), 1);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        // Stop the server before removing its folder.
        drop(self.pg.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh CA named `ca_name`, and a certificate for `host` it signed: (CA PEM,
/// certificate PEM, key PEM).
fn certificates(ca_name: &str, host: &str) -> Result<(String, String, String), String> {
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut server = CertificateParams::new(vec![host.to_owned()]).map_err(err)?;
    server.distinguished_name.push(DnType::CommonName, host);
    let server = server.signed_by(&key, &ca, &ca_key).map_err(err)?;
    Ok((ca.pem(), server.pem(), key.serialize_pem()))
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, contents).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}
