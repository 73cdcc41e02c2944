//! The cache directory (`tls.acme.cache_dir`): what lets a restart reuse
//! the ACME account and the certificate instead of asking the CA again
//! (and running into its rate limits).
//!
//! * `account.json`: the account's URL and private key (instant-acme's
//!   `AccountCredentials`) with the directory it belongs to, so that a
//!   changed `tls.acme.directory` registers a new account;
//! * `certificate.pem`: the chain the CA issued, leaf first;
//! * `certificate.key.pem`: its private key.
//!
//! Invariants: the folder is created 0700 and every file is written 0600
//! (private keys), whatever the umask; a file is written to a temporary
//! name, synced and renamed over the old one, so a crash leaves the old
//! file or the new one, never half of one; the certificate's key is
//! written before the chain, so a chain on disk always has its key.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use serde::{Deserialize, Serialize};

const ACCOUNT: &str = "account.json";
const CHAIN: &str = "certificate.pem";
const KEY: &str = "certificate.key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an account this version wrote: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// The account file: the credentials and the directory they are for.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The cache directory.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Cache {
        Cache { dir: dir.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_error(&self, file: &str) -> impl FnOnce(io::Error) -> CacheError {
        let path = self.dir.join(file);
        move |source| CacheError::Io { path, source }
    }

    /// Creates the folder (0700) if it is missing.
    pub fn prepare(&self) -> Result<(), CacheError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CacheError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// The account registered with `directory`, if one is cached.
    pub fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, CacheError> {
        let Some(text) = self.read(ACCOUNT)? else {
            return Ok(None);
        };
        let stored: StoredAccount = serde_json::from_str(&text).map_err(|source| CacheError::Json {
            path: self.dir.join(ACCOUNT),
            source,
        })?;
        Ok((stored.directory == directory).then_some(stored.credentials))
    }

    pub fn store_account(&self, directory: &str, credentials: AccountCredentials) -> Result<(), CacheError> {
        let stored = StoredAccount {
            directory: directory.to_owned(),
            credentials,
        };
        let text = serde_json::to_string_pretty(&stored).map_err(|source| CacheError::Json {
            path: self.dir.join(ACCOUNT),
            source,
        })?;
        self.write(ACCOUNT, text.as_bytes())
    }

    /// The cached chain and key (PEM), if both are there.
    pub fn certificate(&self) -> Result<Option<(String, String)>, CacheError> {
        match (self.read(CHAIN)?, self.read(KEY)?) {
            (Some(chain), Some(key)) => Ok(Some((chain, key))),
            _ => Ok(None),
        }
    }

    pub fn store_certificate(&self, chain: &str, key: &str) -> Result<(), CacheError> {
        self.write(KEY, key.as_bytes())?;
        self.write(CHAIN, chain.as_bytes())
    }

    fn read(&self, file: &str) -> Result<Option<String>, CacheError> {
        match fs::read_to_string(self.dir.join(file)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(file)(e)),
        }
    }

    /// Writes `file` (0600) through a temporary file and a rename.
    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let temporary = self.dir.join(format!(".{file}.new"));
        let written = (|| {
            let _ = fs::remove_file(&temporary);
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            out.write_all(bytes)?;
            out.sync_all()?;
            fs::rename(&temporary, self.dir.join(file))
        })();
        written.map_err(self.io_error(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_read_back() {
        let root = std::env::temp_dir().join(format!("turnpike-acme-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let cache = Cache::new(&root.join("acme"));
        assert_eq!(cache.certificate().expect("no folder is no cache"), None);
        cache.prepare().expect("create");
        assert_eq!(mode(cache.dir()), 0o700);
        cache.store_certificate("CHAIN", "KEY").expect("store");
        assert_eq!(
            cache.certificate().expect("read"),
            Some(("CHAIN".to_owned(), "KEY".to_owned()))
        );
        cache.store_certificate("CHAIN2", "KEY2").expect("replace");
        assert_eq!(
            cache.certificate().expect("read").map(|c| c.0),
            Some("CHAIN2".to_owned())
        );
        for file in [CHAIN, KEY] {
            assert_eq!(mode(&cache.dir().join(file)), 0o600, "{file}");
        }
        let leftovers: Vec<_> = fs::read_dir(cache.dir())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        fs::write(cache.dir().join(ACCOUNT), "{not json").expect("write");
        assert!(matches!(cache.account("https://ca/dir"), Err(CacheError::Json { .. })));
        fs::remove_dir_all(&root).expect("clean up");
    }
}
