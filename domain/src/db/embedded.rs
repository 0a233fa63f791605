//! An embedded PostgreSQL cluster started from the machine's own PostgreSQL binaries,
//! for `till serve` with no `DATABASE_URL` and for tests.
//!
//! The postmaster is a direct child of this process, spawned from a dedicated thread
//! that lives as long as the cluster, with a parent-death signal: if this process dies
//! by any means (even `kill -9`), the kernel tells PostgreSQL to shut down, so no orphan
//! is left holding the data folder. When running as root, PostgreSQL runs as the
//! unprivileged `postgres` user (it refuses to run as root).
//!
//! It listens on 127.0.0.1 only, and not as an open door: its `postgres` superuser has
//! a password generated when the folder is initialised (`initdb
//! --auth=scram-sha-256`), kept in [`PASSWORD_FILE`] inside the data folder with mode
//! 0600 (owned by PostgreSQL's user, who owns the cluster anyway, so that a replica's
//! base backup can copy it), and every connection must give it (scram-sha-256). Without that any local
//! user could connect as the superuser and run programs as `postgres` (`COPY ... TO
//! PROGRAM`). A folder initialised by an older Till with trust authentication gets a
//! password and this authentication when it is next started.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid, User};
use thiserror::Error;

/// Why the embedded cluster could not start.
#[derive(Debug, Error)]
pub enum EmbeddedError {
    /// No `initdb`/`postgres` binaries were found.
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH and under \
         /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `apt-get install postgresql`) \
         or set DATABASE_URL to an existing database"
    )]
    NoBinaries,
    /// Running as root but no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root: create an unprivileged \
         `postgres` user (`useradd -r postgres`) or run as a normal user"
    )]
    NoUnprivilegedUser,
    /// The data folder is not reachable by the user PostgreSQL runs as.
    #[error("the PostgreSQL data folder {0} is not reachable by the `postgres` user; set TILL_PG_DATA to a folder it can reach (e.g. under /var/tmp)")]
    Unreachable(PathBuf),
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which step.
        what: &'static str,
        /// Its output or error.
        detail: String,
    },
    /// The server did not accept connections in time.
    #[error("PostgreSQL did not become ready within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    /// The superuser's password file could not be read or written.
    #[error("the embedded PostgreSQL's password file {0}: {1}")]
    PasswordFile(PathBuf, io::Error),
    /// Filesystem trouble.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The file in the data folder holding the superuser's password (mode 0600, owned by
/// PostgreSQL's user when Till runs as root, by Till's user otherwise).
pub const PASSWORD_FILE: &str = "till-password";

/// The authentication rules Till gives a cluster: a password for every connection.
const PG_HBA: &str = "\
# Written by Till: every connection gives the superuser's password (scram-sha-256).
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
";

/// Options for [`EmbeddedPostgres::start`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Data folder; created and initialised when empty.
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Trade durability for speed (fsync off): for throwaway test clusters only.
    pub ephemeral: bool,
    /// `max_connections` of the cluster.
    pub max_connections: u32,
}

/// Options for [`EmbeddedPostgres::start_replica`].
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Data folder of the replica; emptied and filled with a fresh base backup.
    pub data_dir: PathBuf,
    /// The physical replication slot it streams from, created by the base backup (drop
    /// a stale one first: [`super::drop_idle_slot`]).
    pub slot: String,
    /// `recovery_min_apply_delay`: how far behind the primary it replays, on purpose.
    pub apply_delay: Duration,
    /// As [`EmbeddedOptions::ephemeral`].
    pub ephemeral: bool,
}

/// A running cluster owned by this process.
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    port: u16,
    /// The `postgres` superuser's password (hex).
    password: String,
    child: Arc<Mutex<Option<Child>>>,
    pid: u32,
    max_connections: u32,
}

impl EmbeddedPostgres {
    /// Finds the directory holding `initdb`, `postgres` and `pg_isready`.
    pub fn find_binaries() -> Result<PathBuf, EmbeddedError> {
        let has_all = |dir: &Path| {
            ["initdb", "postgres", "pg_isready"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_all(&dir) {
                    return Ok(dir);
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                has_all(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, p)| p)
            .ok_or(EmbeddedError::NoBinaries)
    }

    /// Initialises the data folder if needed and starts the postmaster; returns once it
    /// accepts connections.
    pub fn start(opts: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin = Self::find_binaries()?;
        let run_as = unprivileged_user()?;
        let data_dir = own_data_dir(&opts.data_dir, run_as.as_ref())?;

        let password_file = data_dir.join(PASSWORD_FILE);
        if !data_dir.join("PG_VERSION").exists() {
            let password = new_password();
            initdb(&bin, &data_dir, run_as.as_ref(), &password, opts.ephemeral)?;
            crate::private_file::write(&password_file, &password)
                .map_err(|e| EmbeddedError::PasswordFile(password_file.clone(), e))?;
        }
        stop_stale_postmaster(&data_dir);
        let password = match crate::private_file::read(&password_file) {
            Ok(password) => password.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Initialised by an older Till, with trust authentication (or start-up
                // stopped between initdb and writing the file): lock it now.
                tracing::warn!(data = %data_dir.display(), "giving the embedded PostgreSQL a password");
                let password = new_password();
                set_password(&bin, &data_dir, run_as.as_ref(), &password)?;
                crate::private_file::write(&password_file, &password)
                    .map_err(|e| EmbeddedError::PasswordFile(password_file.clone(), e))?;
                password
            }
            Err(e) => return Err(EmbeddedError::PasswordFile(password_file, e)),
        };
        if let Some(user) = &run_as {
            // PostgreSQL's user may read it (it owns the cluster, superuser and all):
            // a streaming replica's base backup copies every file of the folder.
            nix::unistd::chown(&password_file, Some(user.uid), Some(user.gid))
                .map_err(|e| EmbeddedError::PasswordFile(password_file.clone(), e.into()))?;
        }

        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let log_path = data_dir.join("server.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        if let Some(user) = &run_as {
            nix::unistd::chown(&log_path, Some(user.uid), Some(user.gid))
                .map_err(io::Error::from)?;
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", &format!("max_connections={}", opts.max_connections)])
            // The projector commits without waiting for the flush, and a streaming
            // replica only receives flushed WAL: with the default 200 ms a token read
            // through a replica waited for the WAL writer's next round.
            .args(["-c", "wal_writer_delay=10ms"]);
        if opts.ephemeral {
            // Test clusters take base backups for replicas while other tests write WAL
            // (each new database is one): keep recent WAL, so a backup's stream never
            // finds its start recycled by another test's checkpoint.
            cmd.args(["-c", "wal_keep_size=512MB"]);
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.try_clone()?));
        let mut cmd = as_user(cmd, run_as.as_ref());
        die_with_parent(&mut cmd);

        let child = spawn_on_keeper_thread(cmd)?;
        let pid = child_pid(&child);
        let pg = Self {
            data_dir: data_dir.clone(),
            port,
            password,
            child,
            pid,
            max_connections: opts.max_connections,
        };
        pg.wait_ready(&bin, Duration::from_secs(60), &log_path)?;
        Ok(pg)
    }

    /// Starts a streaming replica of this cluster (a hot standby on a port of its own):
    /// a base backup of it through replication slot `slot`, a `standby.signal`, and
    /// the connection back to this cluster; returns once it accepts connections (it
    /// replays from then on). For `till serve --replicas` and tests.
    pub fn start_replica(&self, opts: &ReplicaOptions) -> Result<Self, EmbeddedError> {
        use std::os::unix::fs::DirBuilderExt;
        let bin = Self::find_binaries()?;
        let run_as = unprivileged_user()?;
        if opts.data_dir.join("PG_VERSION").exists() {
            stop_stale_postmaster(&opts.data_dir);
        }
        if opts.data_dir.exists() {
            fs::remove_dir_all(&opts.data_dir)?;
        }
        let data_dir = own_data_dir(&opts.data_dir, run_as.as_ref())?;
        // The password reaches pg_basebackup in a password file of its own user, in a
        // folder only that user can read, removed once the backup is taken.
        let scratch =
            std::env::temp_dir().join(format!("till-basebackup-{}", uuid::Uuid::new_v4().simple()));
        fs::DirBuilder::new().mode(0o700).create(&scratch)?;
        let backup = (|| {
            let passfile = scratch.join("pgpass");
            crate::private_file::write(
                &passfile,
                &format!("127.0.0.1:{}:*:postgres:{}\n", self.port, self.password),
            )?;
            if let Some(user) = &run_as {
                for path in [&scratch, &passfile] {
                    nix::unistd::chown(path.as_path(), Some(user.uid), Some(user.gid))
                        .map_err(io::Error::from)?;
                }
            }
            let mut cmd = Command::new(bin.join("pg_basebackup"));
            cmd.args(self.client_args())
                .arg("-D")
                .arg(&data_dir)
                .args(["-X", "stream", "-c", "fast", "-C", "-S", &opts.slot, "-w"])
                .env("PGPASSFILE", &passfile);
            if opts.ephemeral {
                cmd.arg("--no-sync");
            }
            run_checked(as_user(cmd, run_as.as_ref()), "pg_basebackup")
        })();
        let _ = fs::remove_dir_all(&scratch);
        backup?;
        // Standby settings, after the primary's own (the last setting wins). The
        // password sits in the data folder, as the primary's does.
        let conf = data_dir.join("postgresql.auto.conf");
        let mut settings = fs::read_to_string(&conf).unwrap_or_default();
        settings.push_str(&format!(
            "\n# Written by Till: a streaming replica of the cluster on port {port}.\n\
             primary_conninfo = 'host=127.0.0.1 port={port} user=postgres password={password} application_name={slot}'\n\
             primary_slot_name = '{slot}'\n\
             recovery_min_apply_delay = '{delay}ms'\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n",
            port = self.port,
            password = self.password,
            slot = opts.slot,
            delay = opts.apply_delay.as_millis(),
        ));
        crate::private_file::write(&conf, &settings)?;
        let signal = data_dir.join("standby.signal");
        crate::private_file::write(&signal, "")?;
        if let Some(user) = &run_as {
            for path in [&conf, &signal] {
                nix::unistd::chown(path.as_path(), Some(user.uid), Some(user.gid))
                    .map_err(io::Error::from)?;
            }
        }
        Self::start(&EmbeddedOptions {
            data_dir,
            port: None,
            ephemeral: opts.ephemeral,
            max_connections: self.max_connections,
        })
    }

    fn wait_ready(&self, bin: &Path, timeout: Duration, log: &Path) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut guard) = self.child.lock() {
                if let Some(child) = guard.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        let tail = fs::read_to_string(log).unwrap_or_default();
                        let tail: String =
                            tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
                        return Err(EmbeddedError::Command {
                            what: "postgres",
                            detail: format!("exited with {status} during start-up; log:\n{tail}"),
                        });
                    }
                }
            }
            let ready = Command::new(bin.join("pg_isready"))
                .arg("-q")
                .args(self.client_args())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::NotReady(timeout, log.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The arguments that point a PostgreSQL client program at this cluster as its
    /// superuser.
    fn client_args(&self) -> [String; 6] {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]
        .map(str::to_owned)
    }

    /// The TCP port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for database `db` as the `postgres` superuser, with its
    /// password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The file holding the superuser's password ([`PASSWORD_FILE`] in the data folder).
    pub fn password_file(&self) -> PathBuf {
        self.data_dir.join(PASSWORD_FILE)
    }

    /// Stops the cluster with a fast shutdown (clients disconnected, clean checkpoint)
    /// and waits for it to exit.
    pub fn stop(&self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let done = match self.child.lock() {
                Ok(mut guard) => match guard.as_mut() {
                    Some(child) => !matches!(child.try_wait(), Ok(None)),
                    None => true,
                },
                Err(_) => true,
            };
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGQUIT);
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 32 random bytes, hex: safe in a URL and in SQL without quoting.
fn new_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Initialises `data_dir` with password authentication. initdb reads the password from
/// a file, as the user PostgreSQL runs as, and wants the data folder empty: the file
/// goes in a folder of its own under the temporary directory, readable by that user
/// alone, removed once initdb is done.
fn initdb(
    bin: &Path,
    data_dir: &Path,
    run_as: Option<&User>,
    password: &str,
    ephemeral: bool,
) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::DirBuilderExt;
    let scratch =
        std::env::temp_dir().join(format!("till-initdb-{}", uuid::Uuid::new_v4().simple()));
    fs::DirBuilder::new().mode(0o700).create(&scratch)?;
    let result = (|| {
        let pwfile = scratch.join("password");
        crate::private_file::write(&pwfile, password)?;
        if let Some(user) = run_as {
            for path in [&scratch, &pwfile] {
                nix::unistd::chown(path.as_path(), Some(user.uid), Some(user.gid))
                    .map_err(io::Error::from)?;
            }
        }
        let mut cmd = Command::new(bin.join("initdb"));
        cmd.arg("-D")
            .arg(data_dir)
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]);
        if ephemeral {
            cmd.arg("--no-sync");
        }
        run_checked(as_user(cmd, run_as), "initdb")
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Gives the superuser of an existing cluster `password` and makes every connection
/// need it: single-user mode (no listener, the statement on its standard input, never
/// in a process listing), then Till's `pg_hba.conf`.
fn set_password(
    bin: &Path,
    data_dir: &Path,
    run_as: Option<&User>,
    password: &str,
) -> Result<(), EmbeddedError> {
    use std::io::Write as _;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("--single")
        .arg("-D")
        .arg(data_dir)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = as_user(cmd, run_as)
        .spawn()
        .map_err(|e| EmbeddedError::Command {
            what: "postgres --single",
            detail: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(
            stdin,
            "SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres PASSWORD '{password}';"
        )?;
    }
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Single-user mode reports a failed statement and carries on: look for it.
    if !out.status.success() || said.contains("ERROR") || said.contains("FATAL") {
        return Err(EmbeddedError::Command {
            what: "postgres --single",
            detail: format!("exited with {}: {said}", out.status),
        });
    }
    let hba = data_dir.join("pg_hba.conf");
    crate::private_file::write(&hba, PG_HBA)?;
    if let Some(user) = run_as {
        nix::unistd::chown(&hba, Some(user.uid), Some(user.gid)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Creates `dir` if needed and makes it the data folder of the user PostgreSQL runs as
/// (reachable, owned, mode 0700); returns its canonical path.
fn own_data_dir(dir: &Path, run_as: Option<&User>) -> Result<PathBuf, EmbeddedError> {
    fs::create_dir_all(dir)?;
    let data_dir = dir.canonicalize()?;
    if let Some(user) = run_as {
        check_reachable(&data_dir)?;
        chown_tree_root(&data_dir, user)?;
    }
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
    Ok(data_dir)
}

/// `Some(user)` when running as root (PostgreSQL must run as someone else).
fn unprivileged_user() -> Result<Option<User>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        _ => Err(EmbeddedError::NoUnprivilegedUser),
    }
}

/// Every ancestor must be searchable by others, or the `postgres` user cannot reach the
/// data folder.
fn check_reachable(dir: &Path) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(EmbeddedError::Unreachable(dir.to_owned()));
        }
    }
    Ok(())
}

fn chown_tree_root(dir: &Path, user: &User) -> Result<(), EmbeddedError> {
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).map_err(io::Error::from)?;
    Ok(())
}

fn as_user(mut cmd: Command, user: Option<&User>) -> Command {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir).env("USER", &u.name);
    }
    cmd
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(io::Error::from));
    }
}

fn run_checked(mut cmd: Command, what: &'static str) -> Result<(), EmbeddedError> {
    let out = cmd.output().map_err(|e| EmbeddedError::Command {
        what,
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            what,
            detail: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A postmaster left running from an earlier process that died before its
/// parent-death signal could be set up, or an old version without it: stop it so the
/// data folder can be used.
fn stop_stale_postmaster(data_dir: &Path) {
    let Ok(pidfile) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = Pid::from_raw(pid);
    if kill(pid, None).is_err() {
        return; // stale file, PostgreSQL handles it
    }
    tracing::warn!(%pid, "stopping a PostgreSQL left running on this data folder");
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Spawns the child from a thread that stays alive (and reaps it) for as long as the
/// child runs: the parent-death signal fires when the spawning *thread* exits.
fn spawn_on_keeper_thread(mut cmd: Command) -> Result<Arc<Mutex<Option<Child>>>, EmbeddedError> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<Arc<Mutex<Option<Child>>>, io::Error>>();
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let shared = Arc::new(Mutex::new(Some(child)));
            let _ = tx.send(Ok(shared.clone()));
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let exited = match shared.lock() {
                    Ok(mut g) => match g.as_mut() {
                        Some(c) => !matches!(c.try_wait(), Ok(None)),
                        None => true,
                    },
                    Err(_) => true,
                };
                if exited {
                    return;
                }
            }
        })?;
    match rx.recv() {
        Ok(Ok(child)) => Ok(child),
        Ok(Err(e)) => Err(EmbeddedError::Command {
            what: "postgres",
            detail: e.to_string(),
        }),
        Err(_) => Err(EmbeddedError::Command {
            what: "postgres",
            detail: "keeper thread died".into(),
        }),
    }
}

fn child_pid(child: &Arc<Mutex<Option<Child>>>) -> u32 {
    child
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(Child::id))
        .unwrap_or(0)
}
