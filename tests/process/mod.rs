//! The built `status-update-manager serve` as a child process, for tests of
//! a real process (SIGKILL, restart): started on port 0, it is ready once it
//! prints `listening on ADDR`; it is killed when dropped.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_status-update-manager");

/// A command for the binary with `args`: stdin closed, stdout and stderr
/// piped, and none of the `SUM_*` variables (configuration `SUM__*`, client
/// `SUM_TOKEN_FILE`, `SUM_CA_FILE`) of the environment running the tests,
/// only `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    isolated(command, env)
}

/// [`command`] run by `sh` after `ulimit LIMIT` (e.g. `-n 200`), so that
/// the binary starts under that descriptor limit.
pub fn command_under_ulimit(limit: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args);
    isolated(command, env)
}

/// `command` with stdin closed, stdout and stderr piped, and only `env` of
/// the `SUM_*` variables.
fn isolated(mut command: Command, env: &[(&str, &str)]) -> Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("SUM_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command
}

/// The server process, killed when dropped.
pub struct Server {
    child: Child,
    addr: String,
    /// What the server wrote on stderr, and a signal for each new chunk.
    stderr: Arc<(Mutex<String>, Condvar)>,
}

impl Server {
    /// Starts `serve` on `data_dir`, port 0, with `env` on top of a clean
    /// `SUM__*` environment, and waits (at most `wait`) for `listening on ADDR`.
    pub fn start(data_dir: &Path, env: &[(&str, &str)], wait: Duration) -> Server {
        let mut serve = command(&["serve", "--listen", "127.0.0.1:0", "--data-dir"], env);
        Self::spawn(serve.arg(data_dir), wait)
    }

    /// [`start`](Self::start) under `ulimit LIMIT` (e.g. `-n 200`).
    pub fn start_under_ulimit(
        limit: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
        wait: Duration,
    ) -> Server {
        let mut serve = command_under_ulimit(
            limit,
            &["serve", "--listen", "127.0.0.1:0", "--data-dir"],
            env,
        );
        Self::spawn(serve.arg(data_dir), wait)
    }

    fn spawn(command: &mut Command, wait: Duration) -> Server {
        let mut child = command.spawn().expect("start the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
                let (text, grew) = &*collected;
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
                grew.notify_all();
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stderr,
        };
        let deadline = Instant::now() + wait;
        server.addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "the server did not print `listening on ADDR` within {wait:?}:\n{}",
                    server.stderr()
                ),
            }
        };
        server
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits (at most `wait`) until the server's stderr holds `text`;
    /// whether it does.
    pub fn wait_for_stderr(&self, text: &str, wait: Duration) -> bool {
        let (collected, grew) = &*self.stderr;
        let (collected, _) = grew
            .wait_timeout_while(collected.lock().unwrap(), wait, |so_far| {
                !so_far.contains(text)
            })
            .unwrap();
        collected.contains(text)
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
