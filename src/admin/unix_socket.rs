//! `admin.socket`: the admin API's Unix socket, created with mode 0600.
//!
//! Linux checks a socket file's write permission on `connect`, so with
//! mode 0600 only this process's user (and root) can reach the API there;
//! no other local user can connect, let alone hold its connection slots.
//! The rules that make the mode mean something:
//!
//! * the socket's directory is owned by this user or root and writable by
//!   no one else (group or others): otherwise another user could replace
//!   the socket with one of their own and collect the key that `turnpike
//!   admin` sends to it;
//! * the socket never exists with another mode: it is bound inside a
//!   private directory (mode 0700) next to its final place, set to 0600
//!   there, and then renamed into place;
//! * a socket file already at the path is replaced if nothing listens on
//!   it (left by a crash), refused if something does (another instance),
//!   and anything that is not a socket is refused and left alone;
//! * the owner removes it when the API stops ([`remove`]).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "its directory {dir} is writable by its group or others (mode {mode:o}): another user could \
         replace the socket; use a directory only this user can write, e.g. systemd's RuntimeDirectory"
    )]
    SharedDirectory { dir: PathBuf, mode: u32 },
    #[error(
        "its directory {dir} belongs to user {owner}, neither this user nor root: that user could \
         replace the socket"
    )]
    ForeignDirectory { dir: PathBuf, owner: u32 },
    #[error("it exists and is not a socket; remove it or choose another path")]
    NotASocket,
    #[error("another process is listening on it")]
    InUse,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Binds `path` with mode 0600, by the rules of the module doc. `path` is
/// absolute with a file name (the config checks it).
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, SocketError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    check_directory(dir)?;
    clear_stale(path)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = std::os::unix::net::UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    if bound.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    let _ = std::fs::remove_dir(&private);
    Ok(bound?)
}

/// Removes the socket at `path` (at stop); a failure is only logged.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), "cannot remove the admin socket: {e}");
    }
}

fn check_directory(dir: &Path) -> Result<(), SocketError> {
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SocketError::SharedDirectory {
            dir: dir.to_owned(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(SocketError::ForeignDirectory {
            dir: dir.to_owned(),
            owner: meta.uid(),
        });
    }
    Ok(())
}

/// Removes a socket at `path` that nothing listens on.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket);
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(std::fs::remove_file(path)?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turnpike-admin-socket-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        dir
    }

    #[test]
    fn the_socket_is_made_owner_only_and_a_stale_one_replaced() {
        let dir = scratch("made");
        let path = dir.join("admin.sock");
        let listener = bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // Listening: a second bind is refused and the socket stays.
        assert!(matches!(bind(&path), Err(SocketError::InUse)));
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        // Closed without removal (a crash): the next bind replaces it.
        drop(listener);
        let _again = bind(&path).unwrap();
        remove(&path);
        assert!(std::fs::symlink_metadata(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_directory_or_a_file_in_the_way_is_refused() {
        let dir = scratch("refused");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.join("admin.sock");
        assert!(matches!(bind(&path), Err(SocketError::SharedDirectory { .. })));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
