//! Freezing the local broker (SIGSTOP: the JVM stops answering, its sockets stay open) for chaos tests. Only one test binary at a time may
//! freeze it: every test sharing the broker would see the outage.

use std::path::PathBuf;
use std::process::Command;

/// Freezes the local broker; thaws it when dropped, even if the test panics.
pub struct FrozenBroker {
    pid: String,
}

impl FrozenBroker {
    pub fn freeze() -> Self {
        let pid = broker_pid();
        signal("-STOP", &pid);
        Self { pid }
    }
}

/// The local broker: from `KAFKA_PID_FILE`, else `.stack/kafka.pid` (written by
/// `scripts/stack-up` when it started the broker), else the one Kafka broker JVM on this
/// machine (a stack started from another checkout).
fn broker_pid() -> String {
    let pid_file = std::env::var("KAFKA_PID_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack/kafka.pid"));
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid = pid.trim().to_owned();
        // A stale file (the chaos test restarts the broker) names a process that is gone.
        if Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return pid;
        }
    }
    let output = Command::new("pgrep")
        .args(["-f", "kafka\\.Kafka server\\.properties"])
        .output()
        .unwrap();
    let pids = String::from_utf8(output.stdout).unwrap();
    let mut pids = pids.lines();
    match (pids.next(), pids.next()) {
        (Some(pid), None) => pid.to_owned(),
        _ => panic!("no single local Kafka broker runs: start the stack with scripts/stack-up"),
    }
}

impl Drop for FrozenBroker {
    fn drop(&mut self) {
        signal("-CONT", &self.pid);
    }
}

fn signal(sig: &str, pid: &str) {
    let status = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid} failed");
}
