//! Host CPU over a load phase (namespace mode): what the machine spent
//! relaying, wherever the kernel did the work.
//!
//! With the XDP fast path the relaying happens in the NAPI poll of the
//! server's veth end, charged to no server process at all, so the figure
//! cannot be the server's utime + stime. Two ways to count it, both
//! differences between snapshots before and after the phase:
//!
//! ```text
//! whole machine = busy − generator − others
//!   busy      = Σ over every CPU of user + nice + system + irq + softirq + steal (/proc/stat)
//!   generator = utime + stime of this process, all its threads (/proc/self/stat)
//!   others    = utime + stime + cutime + cstime of every other process that is
//!               not a kernel thread and not the server (/proc/<pid>/stat)
//! relaying (the headline) = server process + NAPI thread of each veth end + ksoftirqd
//! ```
//!
//! With threaded NAPI (netns.rs) every part of the relaying runs in one of
//! the second line's threads: the server's system calls, the receive path
//! and the XDP program in the server end's NAPI thread, the delivery into
//! the generator's sockets in the far end's (the receiving host's work on
//! a real network, counted for every server alike, as loopback mode counts
//! it in the server's system calls). On a quiet machine the two agree
//! (what the second misses: interrupts and softirq outside those threads,
//! kworkers). On a shared one `others`, everybody else's CPU, is most of
//! `busy`, and a process that starts and ends within the phase and whose
//! parent does not collect its times escapes it, so the whole-machine
//! figure swings with other people's builds; the report prints both, and
//! how far apart they are.
//!
//! Times are in clock ticks (`sysconf(_SC_CLK_TCK)`, 10 ms).

use std::collections::HashMap;
use std::fs;

/// Process flag of kernel threads (`PF_KTHREAD`, include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// What to watch besides the totals.
#[derive(Clone, Default)]
pub struct HostMeter {
    /// The CPUs of the server and of the generator, when pinned.
    pub cpus: Option<(usize, usize)>,
    /// The NAPI threads of the server's and of the generator's veth end.
    pub napi_server: Vec<u32>,
    pub napi_generator: Vec<u32>,
}

/// Seconds over one phase.
#[derive(Clone, Copy, Default, Debug)]
pub struct HostDelta {
    /// Wall time between the snapshots.
    pub wall: f64,
    /// Every CPU, non-idle (user, nice, system, irq, softirq, steal).
    pub busy: f64,
    pub softirq: f64,
    pub irq: f64,
    pub steal: f64,
    /// Non-idle time of the server's and of the generator's CPU.
    pub cpu_busy: Option<(f64, f64)>,
    pub generator: f64,
    pub server: f64,
    pub others: f64,
    pub napi_server: f64,
    pub napi_generator: f64,
    /// Every `ksoftirqd/N`.
    pub ksoftirqd: f64,
}

impl HostDelta {
    /// The relaying's CPU: the server process, both veth ends' NAPI
    /// threads and ksoftirqd (the module doc says why).
    pub fn relaying(&self) -> f64 {
        self.server + self.napi_server + self.napi_generator + self.ksoftirqd
    }

    /// The whole machine's: busy − generator − others.
    pub fn whole(&self) -> f64 {
        (self.busy - self.generator - self.others).max(0.0)
    }

    /// The server's side alone: its process and its end's NAPI thread,
    /// where all of the fast path's relaying happens.
    pub fn server_side(&self) -> f64 {
        self.server + self.napi_server
    }
}

/// Counters at one instant.
pub struct HostSnapshot {
    at: std::time::Instant,
    /// Per CPU (index = CPU number): [busy, softirq, irq, steal] in ticks.
    cpus: Vec<[u64; 4]>,
    /// Per process: (ticks of utime + stime, with the children's, kernel thread?).
    procs: HashMap<u32, Proc>,
}

#[derive(Clone, Copy)]
struct Proc {
    own: u64,
    with_children: u64,
    kthread: bool,
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        HostSnapshot {
            at: std::time::Instant::now(),
            cpus: cpu_lines(),
            procs: processes(),
        }
    }

    /// From `self` (before) to `after`; `server` is the server's pid.
    pub fn delta(&self, after: &HostSnapshot, meter: &HostMeter, server: u32) -> HostDelta {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = |t: u64| t as f64 / hz;
        let cpu_sum = |i: usize| -> u64 {
            let n = after.cpus.len().min(self.cpus.len());
            (0..n).map(|c| after.cpus[c][i].saturating_sub(self.cpus[c][i])).sum()
        };
        let one_cpu = |c: usize| -> f64 {
            match (self.cpus.get(c), after.cpus.get(c)) {
                (Some(b), Some(a)) => secs(a[0].saturating_sub(b[0])),
                _ => 0.0,
            }
        };
        let own = |pid: u32| -> f64 {
            let b = self.procs.get(&pid).map_or(0, |p| p.own);
            let a = after.procs.get(&pid).map_or(b, |p| p.own);
            secs(a.saturating_sub(b))
        };
        let me = std::process::id();
        // Signed: a child reaped during the phase leaves its own ticks and
        // shows up in its parent's cutime/cstime, a zero sum.
        let mut others: i64 = 0;
        for (pid, a) in &after.procs {
            if a.kthread || *pid == me || *pid == server {
                continue;
            }
            others += a.with_children as i64 - self.procs.get(pid).map_or(0, |b| b.with_children as i64);
        }
        for (pid, b) in &self.procs {
            if !b.kthread && *pid != me && *pid != server && !after.procs.contains_key(pid) {
                others -= b.with_children as i64;
            }
        }
        let ksoftirqd: Vec<u32> = after
            .procs
            .keys()
            .copied()
            .filter(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("ksoftirqd/")))
            .collect();
        HostDelta {
            wall: after.at.duration_since(self.at).as_secs_f64(),
            busy: secs(cpu_sum(0)),
            softirq: secs(cpu_sum(1)),
            irq: secs(cpu_sum(2)),
            steal: secs(cpu_sum(3)),
            cpu_busy: meter.cpus.map(|(s, g)| (one_cpu(s), one_cpu(g))),
            generator: own(me),
            server: own(server),
            others: secs(others.max(0) as u64),
            napi_server: meter.napi_server.iter().map(|&p| own(p)).sum(),
            napi_generator: meter.napi_generator.iter().map(|&p| own(p)).sum(),
            ksoftirqd: ksoftirqd.iter().map(|&p| own(p)).sum(),
        }
    }
}

/// The `cpuN` lines of /proc/stat: [busy, softirq, irq, steal] per CPU.
fn cpu_lines() -> Vec<[u64; 4]> {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut cpus = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<usize>) else {
            continue; // the "cpu" total line
        };
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already inside user and nice.
        let f: Vec<u64> = words.map(|w| w.parse().unwrap_or(0)).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        let (irq, softirq, steal) = (at(5), at(6), at(7));
        if cpus.len() <= n {
            cpus.resize(n + 1, [0; 4]);
        }
        cpus[n] = [at(0) + at(1) + at(2) + irq + softirq + steal, softirq, irq, steal];
    }
    cpus
}

/// utime + stime (and the children's) of every process now.
fn processes() -> HashMap<u32, Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the parenthesised name: state (field 3) is index 0, so
            // flags (9) is 6, utime..cstime (14-17) are 11-14.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(1)
                .map(|w| w.parse().unwrap_or(0))
                .collect();
            let at = |i: usize| f.get(i - 1).copied().unwrap_or(0);
            Some((
                pid,
                Proc {
                    own: at(11) + at(12),
                    with_children: at(11) + at(12) + at(13) + at(14),
                    kthread: at(6) & PF_KTHREAD != 0,
                },
            ))
        })
        .collect()
}
