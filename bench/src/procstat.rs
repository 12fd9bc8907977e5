//! What processes cost, read from `/proc`: CPU time (user + system) and resident memory.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time a process has used so far; `None` if it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every process whose command name is `name` (e.g. all of PostgreSQL's).
pub fn pids_named(name: &str) -> Vec<u32> {
    pids_where(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
    })
}

/// The local Kafka broker: every JVM whose main class is `kafka.Kafka`.
pub fn kafka_broker_pids() -> Vec<u32> {
    pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka"))
    })
}

fn pids_where(matches: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches(*pid))
        .collect()
}

/// Named groups of processes whose CPU time is measured together.
#[derive(Debug, Clone, Default)]
pub struct CpuMeter {
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Clone)]
enum Group {
    Pids(Vec<u32>),
    /// Looked up at every reading (PostgreSQL starts a backend per connection).
    Named(String),
}

impl CpuMeter {
    pub fn pid(&mut self, label: &str, pid: u32) {
        self.pids(label, vec![pid]);
    }

    pub fn pids(&mut self, label: &str, pids: Vec<u32>) {
        self.groups.insert(label.to_owned(), Group::Pids(pids));
    }

    pub fn named(&mut self, label: &str, command: &str) {
        self.groups
            .insert(label.to_owned(), Group::Named(command.to_owned()));
    }

    /// CPU time per group so far.
    pub fn read(&self) -> BTreeMap<String, Duration> {
        self.groups
            .iter()
            .map(|(label, group)| {
                let pids = match group {
                    Group::Pids(pids) => pids.clone(),
                    Group::Named(name) => pids_named(name),
                };
                let total = pids.into_iter().filter_map(cpu_time).sum();
                (label.clone(), total)
            })
            .collect()
    }
}

/// CPU time per group between two readings.
pub fn spent(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> BTreeMap<String, Duration> {
    after
        .iter()
        .map(|(label, t)| {
            let start = before.get(label).copied().unwrap_or_default();
            (label.clone(), t.saturating_sub(start))
        })
        .collect()
}
