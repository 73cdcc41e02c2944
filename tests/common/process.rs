//! Child processes of the tests: the `turnpike` binary, external tools,
//! commands run with a time limit, children killed with the test.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Makes the child started by `cmd` be killed if the thread that starts it
/// (the test) goes away without dropping its guard, e.g. when the test
/// binary itself is killed by an outer timeout.
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// The path of the `turnpike` binary cargo built for these tests.
pub fn turnpike_bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnpike")
}

/// A child process killed when dropped (e.g. `turnutils_peer`).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of an external tool, or a panic saying how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: `./scripts/test.sh` installs the Debian packages the \
                 tests drive (`coturn` for the turnutils_* tools, `haproxy`, `redis-server`, …)"
            )
        })
}

/// What a command run by [`run_with_timeout`] did.
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit status; `None` if it was killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// True if the command ran to the end and exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` with stdin closed, captures its output, and kills it if it
/// has not exited after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> CmdOutput {
    let mut child = die_with_test(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = read_all(child.stdout.take().expect("stdout pipe"));
    let stderr = read_all(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    CmdOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
