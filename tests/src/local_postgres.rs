//! The local stack's own PostgreSQL cluster (`scripts/stack-up` starts it), for the tests
//! that take the database away: stopped (every session ends, new connections are refused)
//! and started again exactly as it ran.

use std::path::{Path, PathBuf};

use sqlx::Connection;
use std::process::Command;
use std::time::Duration;

/// The running cluster's data folder, as the server reports it (whichever checkout's
/// `scripts/stack-up` started it).
async fn data_dir() -> PathBuf {
    let url = shared_events::settings::database_url(&crate::postgres_url(), "postgres");
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut db)
        .await
        .unwrap();
    PathBuf::from(dir)
}

/// `pg_ctl` with `arguments` on the cluster in `dir`, as its owner (PostgreSQL refuses to
/// run as root).
fn pg_ctl(dir: &Path, arguments: &[&str]) {
    let options = std::fs::read_to_string(dir.join("postmaster.opts")).unwrap_or_else(|_| {
        panic!(
            "{} holds no cluster this machine runs (a PostgreSQL elsewhere cannot be stopped by the tests)",
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
        .arg(dir)
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {arguments:?} failed");
}

/// The server's options as it was started (`postmaster.opts`, less the binary and its data
/// folder), to start it again the same way.
fn server_options(dir: &Path) -> String {
    let options = std::fs::read_to_string(dir.join("postmaster.opts")).unwrap();
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
    let dir = data_dir().await;
    let options = server_options(&dir);
    let stopping = dir.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&stopping, &["stop", "-m", "fast", "-w"]))
        .await
        .unwrap();
    tokio::time::sleep(outage).await;
    let log = dir.join("server.log");
    tokio::task::spawn_blocking(move || {
        pg_ctl(
            &dir,
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
            ],
        );
    })
    .await
    .unwrap();
}
