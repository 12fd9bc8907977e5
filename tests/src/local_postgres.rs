//! The local stack's own PostgreSQL cluster (`scripts/stack-up` starts it), for the tests
//! that take the database away: stopped (every session ends, new connections are refused)
//! and started again exactly as it ran.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The cluster's data folder, as `scripts/stack-env` finds it.
fn data_dir() -> PathBuf {
    let state = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack");
    std::fs::read_to_string(state.join("postgres.datadir"))
        .map(|dir| PathBuf::from(dir.trim()))
        .unwrap_or_else(|_| state.join("postgres"))
}

/// `pg_ctl` with `arguments`, as the cluster's owner (PostgreSQL refuses to run as root).
fn pg_ctl(arguments: &[&str]) {
    let dir = data_dir();
    let options = std::fs::read_to_string(dir.join("postmaster.opts"))
        .or_else(|_| std::fs::read_to_string(dir.join("postmaster.opts.saved")))
        .unwrap_or_else(|_| {
            panic!(
                "{} holds no cluster of the stack's own (a PostgreSQL elsewhere cannot be stopped by the tests)",
                dir.display()
            )
        });
    let binary = options.split_whitespace().next().unwrap();
    let pg_ctl = PathBuf::from(binary).with_file_name("pg_ctl");
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut command = if root {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        runuser
    } else {
        Command::new(&pg_ctl)
    };
    let status = command
        .current_dir("/")
        .arg("-D")
        .arg(&dir)
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {arguments:?} failed");
}

/// The server's options as it was started (`postmaster.opts`, less the binary and its data
/// folder), to start it again the same way.
fn server_options() -> String {
    let options = std::fs::read_to_string(data_dir().join("postmaster.opts")).unwrap();
    let words: Vec<&str> = options
        .trim()
        .split("\" \"")
        .map(|word| word.trim_matches('"'))
        .collect();
    // words[0] is `<binary> "-D`, words[1] the data folder.
    words[2..]
        .chunks(2)
        .map(|pair| format!("{} '{}'", pair[0], pair.get(1).unwrap_or(&"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stops the cluster (`-m fast`: sessions end at once, as in a crash of the server's host
/// they would), keeps it down for `outage`, and starts it again with the same options.
pub async fn outage(outage: Duration) {
    let options = server_options();
    tokio::task::spawn_blocking(|| pg_ctl(&["stop", "-m", "fast", "-w"]))
        .await
        .unwrap();
    tokio::time::sleep(outage).await;
    let log = data_dir().join("server.log");
    tokio::task::spawn_blocking(move || {
        pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
        ]);
    })
    .await
    .unwrap();
}
