//! The Debian root the container boots: a minimal one with systemd, made
//! once by `mmdebstrap` from this host's apt sources and cached in
//! `/var/cache/turnpike-tests/` (about 210 MB, 25–80 s to make), made
//! again only when missing.
//!
//! Invariants: a cached root is complete (made under another name and
//! renamed); one process at a time makes it or boots it ([`Root`] holds an
//! exclusive `flock` until dropped, since nspawn runs one container per
//! root); the name carries the release and [`ROOT_VERSION`], so a change
//! of the package list below makes a new root instead of reusing a stale
//! one.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{require_tool, run_with_timeout};

const CACHE: &str = "/var/cache/turnpike-tests";

/// Bump when [`PACKAGES`] or the mmdebstrap options change.
const ROOT_VERSION: u32 = 1;

/// What a booted systemd and the package's maintainer scripts need beyond
/// `minbase` (`kill` and `pgrep` from procps).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,procps";

/// How long to wait for another test process that holds the root.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The cached root, locked for this process until dropped.
pub struct Root {
    path: PathBuf,
    _lock: File,
}

impl Root {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The release of this host (`VERSION_CODENAME`), whose apt sources make
/// the root: the container runs the same Debian as the host.
fn host_release() -> String {
    let os_release = std::fs::read_to_string("/etc/os-release").expect("read /etc/os-release");
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .expect("VERSION_CODENAME in /etc/os-release (a Debian host)")
}

/// The host's apt sources file. Passing it as mmdebstrap's mirror copies
/// it into the root as it is: the host's mirror, and no other name.
fn host_sources() -> PathBuf {
    ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("the host's apt sources (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)")
}

/// The host's `Acquire::Check-Valid-Until` and `Acquire::Check-Date`
/// settings (a snapshot mirror needs them off), which mmdebstrap does not
/// read from the host's apt.conf.d.
fn host_apt_options() -> Vec<String> {
    let dump = run_with_timeout(
        Command::new(require_tool("apt-config")).arg("dump"),
        Duration::from_secs(30),
    );
    assert!(dump.success(), "apt-config dump: {}", dump.combined());
    dump.stdout
        .lines()
        .filter(|l| l.starts_with("Acquire::Check-Valid-Until ") || l.starts_with("Acquire::Check-Date "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

/// Takes the cache's lock, waiting (bounded) for another test process.
fn lock(cache: &Path) -> File {
    let file = File::create(cache.join("root.lock")).expect("create the root's lock file");
    let deadline = Instant::now() + LOCK_WAIT;
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "{}/root.lock held by another process for {LOCK_WAIT:?}",
            cache.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    file
}

/// The cached root, made first if missing.
pub fn cached_root() -> Root {
    let cache = Path::new(CACHE);
    std::fs::create_dir_all(cache).unwrap_or_else(|e| panic!("mkdir {CACHE}: {e} (the test needs root)"));
    let lock = lock(cache);
    let release = host_release();
    let path = cache.join(format!("{release}-systemd-{ROOT_VERSION}"));
    if !path.join("usr/lib/systemd/systemd").is_file() {
        let partial = cache.join(format!("{release}-systemd-{ROOT_VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let _ = std::fs::remove_dir_all(&path);
        let started = Instant::now();
        let mut mmdebstrap = Command::new(require_tool("mmdebstrap"));
        mmdebstrap
            .args(["--variant=minbase", &format!("--include={PACKAGES}")])
            .args(host_apt_options().iter().map(|o| format!("--aptopt={o}")))
            .arg(&release)
            .arg(&partial)
            .arg(host_sources());
        let out = run_with_timeout(&mut mmdebstrap, Duration::from_secs(600));
        assert!(out.success(), "mmdebstrap failed:\n{}", out.combined());
        std::fs::rename(&partial, &path).expect("move the new root in place");
        eprintln!("made the {release} root in {:?}: {}", started.elapsed(), path.display());
    }
    Root { path, _lock: lock }
}
