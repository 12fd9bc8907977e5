//! The local stack's broker (whichever checkout started it), for the tests that fail it:
//! found by its command line, frozen and thawed (SIGSTOP, SIGCONT: a host that stops
//! answering), or killed with SIGKILL and started again exactly as it ran.

use std::time::Duration;

/// The local broker's pid, found by its command line (whichever checkout started it).
pub fn pid() -> Option<String> {
    let found = std::process::Command::new("pgrep")
        .args(["-f", "kafka\\.Kafka server\\.properties"])
        .output()
        .unwrap()
        .stdout;
    String::from_utf8(found)
        .unwrap()
        .lines()
        .next()
        .map(str::to_owned)
}

/// Kills the local broker with SIGKILL and starts it again exactly as it ran (same command,
/// same working directory, so the same storage), whichever checkout started it.
pub async fn restart() {
    outage(Duration::from_millis(500)).await;
}

/// Kills the local broker with SIGKILL, keeps it down for `down_for`, and starts it again
/// as [`restart`] does; returns once it serves.
pub async fn outage(down_for: Duration) {
    let running = pid().expect("no local Kafka broker runs");
    let argv: Vec<String> = std::fs::read_to_string(format!("/proc/{running}/cmdline"))
        .unwrap()
        .split('\0')
        .filter(|arg| !arg.is_empty())
        .map(str::to_owned)
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{running}/cwd")).unwrap();
    // Its log goes on where it went (stack-up appends it to .stack/logs/kafka.log).
    let log = std::fs::read_link(format!("/proc/{running}/fd/1"))
        .ok()
        .filter(|path| path.is_file())
        .and_then(|path| std::fs::OpenOptions::new().append(true).open(path).ok());
    let killed = std::process::Command::new("kill")
        .args(["-9", &running])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(down_for).await;
    // setsid --fork: the broker, in a session of its own, outlives this test as it outlived
    // the script that started it; setsid itself returns at once.
    // scripts/stack-up runs it in .stack/kafka with its pid file beside that folder; the file
    // must name the new broker, or stack-down would not stop it.
    let pid_file = cwd
        .parent()
        .map(|state| state.join("kafka.pid"))
        .filter(|file| file.exists());
    let started = std::process::Command::new("setsid")
        .arg("--fork")
        .args(&argv)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(
            log.as_ref()
                .and_then(|f| f.try_clone().ok())
                .map_or_else(std::process::Stdio::null, Into::into),
        )
        .stderr(log.map_or_else(std::process::Stdio::null, Into::into))
        .status()
        .unwrap();
    assert!(started.success());
    let broker = crate::bootstrap_servers();
    // A JVM's start plus the recovery of logs it did not close: about 12 s on 2 busy cores.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&broker).await.is_ok() {
            if let Some(pid_file) = pid_file {
                let restarted = pid().expect("the restarted broker runs");
                std::fs::write(pid_file, format!("{restarted}\n")).unwrap();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the broker did not come back on {broker}");
}

/// Freezes the broker (SIGSTOP): its connections stay open and answer nothing.
pub fn freeze() {
    signal("-STOP");
}

/// Lets a frozen broker go on (SIGCONT).
pub fn thaw() {
    signal("-CONT");
}

fn signal(signal: &str) {
    let broker = pid().expect("no local Kafka broker runs");
    let status = std::process::Command::new("kill")
        .args([signal, &broker])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {broker}");
}
