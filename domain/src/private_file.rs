//! Files holding secrets (the dev JWT secret, the embedded PostgreSQL's password):
//! readable and writable by their owner only (mode 0600), never for a moment anything
//! else.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every secret file Till writes.
pub const MODE: u32 = 0o600;

/// Writes `contents` to `path` with mode 0600: into a new file beside it, created with
/// that mode, then renamed over `path`, so the secret is never in a file anyone else
/// can read, and a reader never sees half of it.
pub fn write(path: &Path, contents: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut temp_name = name.to_owned();
    temp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let temp = path.with_file_name(temp_name);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Reads a secret file, first taking group and other permissions away from it when it
/// has any (a file an older version wrote world-readable).
pub fn read(path: &Path) -> io::Result<String> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(MODE))?;
    }
    fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_and_kept_private() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("till-private-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir)?;
        let path = dir.join("secret");
        write(&path, "one")?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, MODE);
        write(&path, "two")?;
        assert_eq!(read(&path)?, "two");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        assert_eq!(read(&path)?, "two");
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, MODE);
        assert_eq!(fs::read_dir(&dir)?.count(), 1, "no temporary file left");
        fs::remove_dir_all(&dir)
    }
}
