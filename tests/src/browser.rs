//! The browser tests' driver: a script of tests/browser run by node against a stack, in
//! headless Chromium, reporting its steps on stdout and waiting on stdin for the test's
//! answers.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Stack;
use crate::auth::{self, OPERATOR};

/// A browser test script (tests/browser/*.mjs) run by node against a stack: it reports each
/// step on stdout, and waits on stdin for the test's answer where it needs one.
pub struct BrowserScript {
    child: tokio::process::Child,
    answers: tokio::process::ChildStdin,
    steps: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl BrowserScript {
    /// Starts `script` on `stack`'s console as the operator, for `customer` and `product`;
    /// it saves a screenshot at `target/<screenshot>`. Node's packages and Chromium are
    /// installed by scripts/test.
    pub fn start(
        script: &str,
        stack: &Stack,
        customer: &str,
        product: &str,
        screenshot: &str,
    ) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        assert!(
            dir.join("node_modules/playwright-core").exists() && PathBuf::from(&chromium).exists(),
            "the browser test needs Node packages in tests/browser and Chromium at {chromium}: \
             scripts/test installs both (npm ci; apt-get install chromium)"
        );
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg(script)
            .arg(stack.url("order-service"))
            .arg(auth::admin_token(OPERATOR))
            .args([customer, product])
            .arg(screenshot_path(screenshot))
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the browser test");
        Self {
            answers: child.stdin.take().unwrap(),
            steps: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            seen: Vec::new(),
        }
    }

    /// The next step the script reports, with the words after it; `None` once it ended.
    pub async fn next_step(&mut self) -> Option<(String, Vec<String>)> {
        let line = self.steps.next_line().await.unwrap()?;
        println!("browser: {line}");
        let mut words = line.split_whitespace().map(str::to_owned);
        let step = words.next().unwrap_or_default();
        self.seen.push(step.clone());
        Some((step, words.collect()))
    }

    pub async fn answer(&mut self, answer: &str) {
        self.answers
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the script's end: it must succeed, having reported exactly `expected`.
    pub async fn finish(mut self, expected: &[&str]) {
        let status = self.child.wait().await.unwrap();
        assert!(
            status.success(),
            "the browser test failed after {:?}",
            self.seen
        );
        assert_eq!(self.seen, expected);
    }
}

pub fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name)
}
