//! What the bench reads from /proc and asks of the scheduler: CPU time,
//! RSS, socket inodes and the kernel's UDP drop counters and queues.

use std::fs;
use std::io;

/// utime + stime of the whole process (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// A `kB` (or plain number) line of /proc/<pid>/status (VmHWM, VmRSS, Threads).
pub fn status_kb(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Inodes of the sockets a process holds open.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<u64> = dir
        .filter_map(|e| {
            let link = fs::read_link(e.ok()?.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Datagrams the kernel discarded because a socket's receive buffer was
/// full (the `drops` column of /proc/net/udp), summed per owner.
#[derive(Clone, Copy, Default, Debug)]
pub struct Drops {
    pub server: u64,
    pub generator: u64,
}

impl Drops {
    pub fn since(self, before: Drops) -> Drops {
        Drops {
            server: self.server.saturating_sub(before.server),
            generator: self.generator.saturating_sub(before.generator),
        }
    }
}

/// The sockets of one measurement: the server's and the generator's.
pub struct Sockets {
    pub server: Vec<u64>,
    pub generator: Vec<u64>,
    /// The server's UDP table, when the server is in another network
    /// namespace than the generator (namespace mode).
    server_table: Option<String>,
}

impl Sockets {
    pub fn of(server_pid: u32) -> Sockets {
        let ns = |p: &str| fs::read_link(format!("{p}/ns/net")).ok();
        let own = ns("/proc/self");
        Sockets {
            server: socket_inodes(server_pid),
            generator: socket_inodes(std::process::id()),
            server_table: (ns(&format!("/proc/{server_pid}")) != own).then(|| format!("/proc/{server_pid}/net/udp")),
        }
    }

    /// Drop counters now, and the bytes waiting in the server's UDP
    /// receive queues.
    pub fn udp_table(&self) -> (Drops, u64) {
        let own = fs::read_to_string("/proc/self/net/udp").unwrap_or_default();
        let theirs = self
            .server_table
            .as_ref()
            .map(|p| fs::read_to_string(p).unwrap_or_default());
        let mut d = Drops::default();
        let mut queued = 0;
        for line in own.lines().skip(1).chain(theirs.iter().flat_map(|t| t.lines().skip(1))) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(inode), Some(drops)) = (fields.get(9), fields.last()) else {
                continue;
            };
            let (Ok(inode), Ok(drops)) = (inode.parse::<u64>(), drops.parse::<u64>()) else {
                continue;
            };
            if self.server.binary_search(&inode).is_ok() {
                // "tx_queue:rx_queue" in hex.
                let rx = fields.get(4).and_then(|q| q.split_once(':'));
                queued += rx.and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok()).unwrap_or(0);
                d.server += drops;
            } else if self.generator.binary_search(&inode).is_ok() {
                d.generator += drops;
            }
        }
        (d, queued)
    }
}

/// The first two CPUs this process may run on, if there are two.
pub fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET only reads the set.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Restricts the calling thread (and threads and processes it starts
/// later) to one CPU.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    pin_pid(0, cpu)
}

/// Restricts thread `pid` (0: the calling thread) to one CPU.
pub fn pin_pid(pid: u32, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it and
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it)
/// and returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: rlimit is plain data; getrlimit/setrlimit read and write it.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

/// Sets a socket's kernel buffers to `size`, past rmem_max if allowed.
pub fn set_buffers(fd: std::os::fd::RawFd, size: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let ptr = (&size as *const libc::c_int).cast();
        // SAFETY: fd is an open socket and ptr/len describe a c_int.
        unsafe {
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, ptr, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, ptr, len);
            }
        }
    }
}
