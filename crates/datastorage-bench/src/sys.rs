//! The machine: description, CPU accounting from `/proc`, and process memory.
//!
//! CPU is read in clock ticks from `/proc/stat` (whole machine) and `/proc/<pid>/stat`
//! (processes). PostgreSQL's CPU is the postmaster's own time, the time of its exited children
//! (`cutime`/`cstime`, which the postmaster reaps) and the live backends' time, so a backend that
//! exits between two snapshots is still counted.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The file system type of `path` (`df --output=fstype`), `unknown` when `df` cannot tell.
pub fn fs_type(path: &Path) -> String {
    Command::new("df")
        .arg("--output=fstype")
        .arg(path)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name, split on spaces (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn field(f: &[String], stat_index: usize) -> u64 {
    // `stat_index` is the 1-based field number of proc(5); index 0 of `f` is field 3.
    f.get(stat_index - 3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// User + system ticks of one process.
pub fn proc_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(field(&f, 14) + field(&f, 15))
}

/// Ticks of a process tree one level deep: the process, its reaped children, its live children.
pub fn tree_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let mut total = field(&f, 14) + field(&f, 15) + field(&f, 16) + field(&f, 17);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(cf) = stat_fields(child) {
                if field(&cf, 4) == u64::from(pid) {
                    total += field(&cf, 14) + field(&cf, 15);
                }
            }
        }
    }
    Some(total)
}

/// Busy and total ticks of the whole machine (all cores).
pub fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
pub fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resets a process's peak resident memory (VmHWM) to its current VmRSS, by writing `5` to
/// `/proc/<pid>/clear_refs` (Linux 4.0 and later). False when the kernel or permissions refuse.
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A process's memory over one step of a scenario, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemPeak {
    /// VmRSS when the step began.
    pub before_kib: u64,
    /// Highest resident memory during the step: VmHWM, reset when the step began (`exact`),
    /// and never below the highest VmRSS sampled every 10 ms.
    pub peak_kib: u64,
    /// VmRSS when the step ended.
    pub after_kib: u64,
    /// Whether VmHWM could be reset, so `peak_kib` is the kernel's own peak, not only samples.
    pub exact: bool,
}

/// Watches a process's memory from [`MemWatch::start`] to [`MemWatch::finish`].
pub struct MemWatch {
    pid: u32,
    before: u64,
    exact: bool,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<u64>,
}

impl MemWatch {
    /// Resets the process's VmHWM (when allowed), reads its VmRSS and starts sampling.
    pub fn start(pid: u32) -> Self {
        let exact = reset_hwm(pid);
        let before = vm_kib(pid, "VmRSS").unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            // Bounded by the flag, and by an hour of samples as a backstop.
            for _ in 0..360_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(rss) = vm_kib(pid, "VmRSS") {
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        });
        Self {
            pid,
            before,
            exact,
            stop,
            sampler,
        }
    }

    /// Stops sampling and reports the step.
    pub async fn finish(self) -> MemPeak {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.sampler.await.unwrap_or(0);
        let after = vm_kib(self.pid, "VmRSS").unwrap_or(0);
        let hwm = if self.exact {
            vm_kib(self.pid, "VmHWM").unwrap_or(0)
        } else {
            0
        };
        MemPeak {
            before_kib: self.before,
            peak_kib: hwm.max(sampled).max(after).max(self.before),
            after_kib: after,
            exact: self.exact,
        }
    }
}

/// Which processes a scenario accounts CPU to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe {
    /// The DataStorage server.
    pub server: Option<u32>,
    /// The PostgreSQL postmaster (only for a cluster this harness started).
    pub postmaster: Option<u32>,
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnap {
    at: Instant,
    busy: u64,
    server: Option<u64>,
    pg: Option<u64>,
    me: u64,
}

impl CpuSnap {
    /// Reads every counter now.
    pub fn take(p: Probe) -> Self {
        let (busy, _) = machine_ticks();
        Self {
            at: Instant::now(),
            busy,
            server: p.server.and_then(proc_ticks),
            pg: p.postmaster.and_then(tree_ticks),
            me: proc_ticks(std::process::id()).unwrap_or(0),
        }
    }

    /// CPU used between `self` and `later`, in core-seconds.
    pub fn until(&self, later: &CpuSnap, tck: f64) -> CpuUse {
        let d = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck),
            _ => None,
        };
        CpuUse {
            wall: later.at.duration_since(self.at).as_secs_f64(),
            machine: later.busy.saturating_sub(self.busy) as f64 / tck,
            server: d(self.server, later.server),
            pg: d(self.pg, later.pg),
            harness: later.me.saturating_sub(self.me) as f64 / tck,
        }
    }
}

/// CPU used over a window, in core-seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Wall-clock seconds of the window.
    pub wall: f64,
    /// Whole machine, every process.
    pub machine: f64,
    /// The server process.
    pub server: Option<f64>,
    /// PostgreSQL (postmaster and backends).
    pub pg: Option<f64>,
    /// This harness (the load generator).
    pub harness: f64,
}

impl CpuUse {
    /// Average cores busy with processes other than server, PostgreSQL and harness.
    pub fn others_cores(&self) -> f64 {
        if self.wall <= 0.0 {
            return 0.0;
        }
        let ours = self.server.unwrap_or(0.0) + self.pg.unwrap_or(0.0) + self.harness;
        ((self.machine - ours) / self.wall).max(0.0)
    }
}

/// What the report says about the machine.
#[derive(Debug, Clone, Default)]
pub struct MachineInfo {
    /// `nproc`.
    pub nproc: String,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in MiB.
    pub mem_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// PostgreSQL server version.
    pub pg_version: String,
    /// `git rev-parse HEAD` plus a note on uncommitted changes to the server's crates.
    pub git: String,
    /// Load average when the run started.
    pub loadavg: String,
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl MachineInfo {
    /// Reads the description; `pg_bin` is the PostgreSQL binaries' folder, `repo` the checkout.
    pub fn read(pg_bin: &Path, repo: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        let repo_s = repo.to_string_lossy().into_owned();
        let head = cmd_out("git", &["-C", &repo_s, "rev-parse", "--short=12", "HEAD"]);
        let dirty = cmd_out(
            "git",
            &[
                "-C",
                &repo_s,
                "status",
                "--porcelain",
                "--",
                "crates/datastorage",
                "crates/datastorage-api",
            ],
        );
        let git = if head.is_empty() {
            "unknown (not a git checkout)".to_owned()
        } else if dirty.is_empty() {
            head
        } else {
            format!(
                "{head} + uncommitted changes in crates/datastorage* ({} files; the measured binary was built from the working tree)",
                dirty.lines().count()
            )
        };
        Self {
            nproc: cmd_out("nproc", &[]),
            cpu_model,
            mem_mib,
            kernel: cmd_out("uname", &["-r"]),
            pg_version: cmd_out(&pg_bin.join("postgres").to_string_lossy(), &["--version"]),
            git,
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_counters_are_readable() {
        let me = std::process::id();
        assert!(proc_ticks(me).is_some());
        assert!(vm_kib(me, "VmRSS").unwrap() > 0);
        assert!(vm_kib(me, "VmHWM").unwrap() >= vm_kib(me, "VmRSS").unwrap() / 2);
        let (busy, total) = machine_ticks();
        assert!(total >= busy && total > 0);
        let a = CpuSnap::take(Probe::default());
        let b = CpuSnap::take(Probe::default());
        let u = a.until(&b, clk_tck());
        assert!(u.server.is_none() && u.pg.is_none());
    }

    #[tokio::test]
    async fn a_memory_watch_sees_at_least_what_was_resident() {
        let me = std::process::id();
        let w = MemWatch::start(me);
        let block = vec![1u8; 8 << 20];
        tokio::time::sleep(Duration::from_millis(30)).await;
        let m = w.finish().await;
        assert!(block.iter().all(|b| *b == 1));
        assert!(m.before_kib > 0 && m.after_kib > 0);
        assert!(m.peak_kib >= m.before_kib.max(m.after_kib));
    }
}
