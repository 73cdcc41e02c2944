//! A Debian root booted by a real systemd (`systemd-nspawn -b`), alone in
//! a network namespace the test makes, and commands run inside it with
//! `nsenter` (no machined, no D-Bus on the host: `machinectl` and
//! `systemd-run --machine` cannot work).
//!
//! Invariants, each against a pitfall seen on this kind of machine
//! (docs/testing.md, "The Debian package under systemd"):
//! * the network namespace holds only its loopback interface, so the
//!   service's ports (0.0.0.0:3478 as packaged) and relays are reachable
//!   from the test's clients, which enter it (`setns`), and from nowhere
//!   else;
//! * nspawn is started from a cgroup of its own in every hierarchy
//!   (`--keep-unit` without machined puts `payload/` and `supervisor/`
//!   under the launcher's cgroup and leaves them): the subtree goes with
//!   the container;
//! * `--volatile=overlay`: whatever the test does inside lands in a tmpfs,
//!   so the cached root stays as mmdebstrap made it;
//! * everything is undone on every exit path, panics included
//!   ([`Container`]'s `Drop`): the container is halted (SIGTERM to nspawn;
//!   SIGKILL after 20 s), the cgroups and the namespace removed.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{require_tool, run_with_timeout, CmdOutput};

/// The address the container's network namespace gives this "host" besides
/// loopback: a documentation address (RFC 5737), local to the namespace.
pub const PUBLIC_IP: &str = "203.0.113.7";

/// How long one command inside may take (dpkg, a start that drains).
const COMMAND_LIMIT: Duration = Duration::from_secs(90);

/// The PATH of commands run inside.
const INSIDE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A booted container and what it was built on; dropping it undoes all.
pub struct Container {
    name: String,
    /// `/run/netns/<name>`, once made.
    netns: Option<PathBuf>,
    /// The cgroup made for nspawn in each hierarchy.
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    /// The container's PID 1 as the host sees it.
    leader: u32,
    console: PathBuf,
}

/// The cgroup hierarchies nspawn registers the container in: on a hybrid
/// host the unified one and systemd's named v1 one, on a pure v2 host the
/// one tree.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let hybrid = [base.join("unified"), base.join("systemd")];
    if hybrid[0].join("cgroup.procs").is_file() {
        hybrid
            .into_iter()
            .filter(|h| h.join("cgroup.procs").is_file())
            .collect()
    } else {
        vec![base.to_path_buf()]
    }
}

/// The container's systemd: the child of `parent` (nspawn) that runs
/// `systemd`, once it does (before, that child is nspawn setting up).
fn systemd_child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // "pid (comm) state ppid …": comm may hold spaces, so split at the
        // last ')'.
        let (head, tail) = stat.rsplit_once(')')?;
        let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && head.ends_with("(systemd")).then_some(pid)
    })
}

/// Writes the calling process's pid into `cgroup.procs` files: run between
/// fork and exec, so no allocation, only open/write/close.
fn join_cgroups(procs: &[CString]) -> std::io::Result<()> {
    // SAFETY: getpid, open, write and close are async-signal-safe; the
    // buffers live on this stack or in `procs`, made before the fork.
    unsafe {
        let mut digits = [0u8; 12];
        let mut at = digits.len();
        let mut pid = libc::getpid() as u32;
        loop {
            at -= 1;
            digits[at] = b'0' + (pid % 10) as u8;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for path in procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
            libc::close(fd);
            if written < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // The container halts cleanly if the test's thread dies first.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    Ok(())
}

impl Container {
    /// Boots `root` (which the caller holds locked: nspawn runs one
    /// container per root) with `share` bound read-only at `/test`, and
    /// waits until its systemd has finished starting up.
    pub fn boot(root: &Path, share: &Path) -> Container {
        let name = format!("turnpike-deb-{}", std::process::id());
        let mut container = Container {
            name: name.clone(),
            netns: None,
            cgroups: Vec::new(),
            nspawn: None,
            leader: 0,
            console: share.join("console.log"),
        };
        let ip = require_tool("ip");
        container.host(Command::new(&ip).args(["netns", "add", &name]));
        container.netns = Some(Path::new("/run/netns").join(&name));
        container.host(Command::new(&ip).args(["-n", &name, "link", "set", "lo", "up"]));
        // The host's public address, as on a VM: a documentation address on
        // one end of a veth pair whose both ends are in the namespace (this
        // kernel has no dummy interfaces), so packets to it stay inside.
        for args in [
            &["link", "add", "public0", "type", "veth", "peer", "name", "public1"][..],
            &["addr", "add", &format!("{PUBLIC_IP}/32"), "dev", "public0"],
            &["link", "set", "public0", "up"],
            &["link", "set", "public1", "up"],
        ] {
            container.host(Command::new(&ip).args(["-n", &name]).args(args));
        }

        for hierarchy in cgroup_hierarchies() {
            let cgroup = hierarchy.join(&name);
            std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
            container.cgroups.push(cgroup);
        }
        let procs: Vec<CString> = container
            .cgroups
            .iter()
            .map(|c| CString::new(c.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("no NUL"))
            .collect();
        let console = File::create(&container.console).expect("create the console log");
        let mut nspawn = Command::new(require_tool("systemd-nspawn"));
        nspawn
            .arg("--directory")
            .arg(root)
            .args([
                "--machine",
                &name,
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--boot",
            ])
            .arg(format!(
                "--network-namespace-path={}",
                container.netns.as_ref().expect("made above").display()
            ))
            .arg(format!("--bind-ro={}:/test", share.display()))
            // What a host's systemd has and nspawn keeps from a container
            // by default: the XDP fast path's capabilities and `bpf()`,
            // which the unit grants with the drop-in of operations.md.
            .args([
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                "--system-call-filter=bpf",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console);
        // SAFETY: join_cgroups only makes async-signal-safe calls.
        unsafe {
            use std::os::unix::process::CommandExt;
            nspawn.pre_exec(move || join_cgroups(&procs));
        }
        let nspawn = container.nspawn.insert(nspawn.spawn().expect("start systemd-nspawn"));
        let nspawn_pid = nspawn.id();

        let deadline = Instant::now() + Duration::from_secs(60);
        container.leader = loop {
            if let Some(leader) = systemd_child_of(nspawn_pid) {
                break leader;
            }
            let exited = container.nspawn.as_mut().and_then(|n| n.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "systemd-nspawn started no container ({exited:?}):\n{}",
                container.console_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // "running", or "degraded" if a unit of the image failed: either
        // way its systemd has finished starting up. Before its socket is
        // there, systemctl answers at once ("offline"): asked again.
        loop {
            let state = container.run(&["systemctl", "is-system-running", "--wait"]);
            let state = state.stdout.trim();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd is {state:?}:\n{}",
                container.console_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        container
    }

    /// Runs `cmd` on the host; it must succeed.
    fn host(&self, cmd: &mut Command) {
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert!(out.success(), "{cmd:?}: {}", out.combined());
    }

    /// The container's console (what systemd printed while booting).
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Runs `args` inside the container (its namespaces and cgroup, a
    /// clean environment), as root.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        let out = run_with_timeout(&mut self.command(args), COMMAND_LIMIT);
        assert!(out.status.is_some(), "{args:?} still running after {COMMAND_LIMIT:?}");
        out
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(require_tool("nsenter"));
        cmd.arg("--target")
            .arg(self.leader.to_string())
            .args(["-m", "-u", "-i", "-n", "-p", "-C", "--", "env", "-i", INSIDE_PATH])
            .args(args);
        cmd
    }

    /// Runs `args` inside; it must succeed. Returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.success(),
            "{args:?} failed inside the container:\n{}",
            out.combined()
        );
        out.stdout
    }

    /// A file of the container's file system, as the host reaches it.
    pub fn path(&self, inside: &str) -> PathBuf {
        Path::new("/proc")
            .join(self.leader.to_string())
            .join("root")
            .join(inside.trim_start_matches('/'))
    }

    /// Runs `f` on a thread of its own inside the container's network
    /// namespace: the sockets it opens are there, on its loopback.
    pub fn in_network<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let netns = File::open(self.netns.as_ref().expect("made at boot")).expect("open the network namespace");
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a namespace fd moves only this thread.
                let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader != 0 {
            let journal = run_with_timeout(
                &mut self.command(&["journalctl", "--no-pager", "-n", "80", "-u", "turnpike"]),
                COMMAND_LIMIT,
            );
            eprintln!("--- the container's journal of turnpike:\n{}", journal.combined());
        }
        if self.leader != 0 {
            // A service still draining live allocations would hold the
            // halt up to its shutdown_grace.
            let _ = run_with_timeout(
                &mut self.command(&["systemctl", "kill", "--signal=SIGKILL", "turnpike"]),
                COMMAND_LIMIT,
            );
        }
        if let Some(mut nspawn) = self.nspawn.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(nspawn.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        for cgroup in self.cgroups.drain(..) {
            remove_cgroup(&cgroup);
        }
        if self.netns.take().is_some() {
            let _ = run_with_timeout(
                Command::new(require_tool("ip")).args(["netns", "delete", &self.name]),
                Duration::from_secs(30),
            );
        }
    }
}

/// Removes a cgroup and what nspawn made under it, deepest first, killing
/// what is left in it (a container whose halt did not finish). A cgroup
/// whose last process is still exiting refuses for a moment: retried.
fn remove_cgroup(cgroup: &Path) {
    fn dirs_deepest_first(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs_deepest_first(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut dirs = Vec::new();
        dirs_deepest_first(cgroup, &mut dirs);
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<libc::pid_t>().ok()) {
                // SAFETY: kill(2); the pid was in the container's cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let left = dirs.iter().filter(|d| std::fs::remove_dir(d).is_err()).count();
        if left == 0 || !cgroup.exists() || Instant::now() >= deadline {
            if cgroup.exists() {
                eprintln!("could not remove the cgroup {}", cgroup.display());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
