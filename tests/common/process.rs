//! The built `status-update-manager` as a child process, for tests of a real
//! process (SIGKILL, restart, exit statuses, descriptor limits).
//!
//! [`Proc`] runs any command of the binary: its stdout arrives line by line,
//! its stderr is collected, every wait is bounded by [`PROCESS_BOUND`], and it
//! is killed when dropped (a failing test leaves no process behind).
//! [`Server`] is `serve` on port 0, ready once it prints `listening on ADDR`;
//! [`connect`] is a gRPC client of it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use tonic::transport::Channel;

use super::{POLL, PROCESS_BOUND};

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

/// A child process of the binary, killed when dropped. Its stdout arrives
/// line by line on a channel; its stderr is collected for assertions and
/// failure messages.
pub struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    /// What the process wrote on stderr, and a signal for each new chunk.
    stderr: Arc<(Mutex<String>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
}

/// What a finished process printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    /// Starts the binary with `args` and only `env` of the `SUM_*`
    /// variables; `what` names it in failure messages.
    pub fn start(what: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::spawn(what, command(args, env))
    }

    /// Starts `command` (from [`command`] or [`command_under_ulimit`]).
    pub fn spawn(what: &str, mut command: Command) -> Proc {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start {BIN}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let collected = Arc::clone(&stderr);
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }),
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
                    let (text, grew) = &*collected;
                    text.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                    grew.notify_all();
                }
            }),
        ];
        Proc {
            what: what.to_string(),
            child,
            lines,
            stderr,
            readers,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits (at most [`PROCESS_BOUND`]) until the process's stderr holds
    /// `text`; whether it does.
    pub fn wait_for_stderr(&self, text: &str) -> bool {
        let (collected, grew) = &*self.stderr;
        let (collected, _) = grew
            .wait_timeout_while(collected.lock().unwrap(), PROCESS_BOUND, |so_far| {
                !so_far.contains(text)
            })
            .unwrap();
        collected.contains(text)
    }

    /// The next stdout line that satisfies `wanted`, skipping others; fails
    /// after [`PROCESS_BOUND`] or once stdout closed.
    pub fn line_where(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PROCESS_BOUND;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => skipped.push(line),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {what} within {PROCESS_BOUND:?}; skipped {skipped:#?}\nstderr:\n{}",
                    self.what,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: stdout closed before a line with {what}; skipped {skipped:#?}\nstderr:\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for the process to exit (at most [`PROCESS_BOUND`]; still
    /// running then fails the test), then collects what it printed.
    pub fn finish(mut self) -> Finished {
        let status = match wait_timeout::ChildExt::wait_timeout(&mut self.child, PROCESS_BOUND) {
            Ok(Some(status)) => status,
            Ok(None) => panic!(
                "{}: still running after {PROCESS_BOUND:?}\nstderr:\n{}",
                self.what,
                self.stderr()
            ),
            Err(e) => panic!("{}: cannot wait: {e}", self.what),
        };
        // The pipes close with the process, so the readers end.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let stdout: Vec<String> = self.lines.try_iter().collect();
        Finished {
            status,
            stdout: stdout.iter().map(|l| format!("{l}\n")).collect(),
            stderr: self.stderr(),
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, pid.as_str()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the process");
        self.child.wait().expect("reap the process");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `serve` as a child process, listening on `127.0.0.1:0`; killed when
/// dropped.
pub struct Server {
    proc: Proc,
    addr: String,
}

impl Server {
    /// Starts `serve` on `data_dir`, port 0, with `env` on top of a clean
    /// `SUM_*` environment, and waits for `listening on ADDR`.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut serve = command(&["serve", "--listen", "127.0.0.1:0", "--data-dir"], env);
        serve.arg(data_dir);
        Self::listening(Proc::spawn("serve", serve))
    }

    /// [`start`](Self::start) under `ulimit LIMIT` (e.g. `-n 200`).
    pub fn start_under_ulimit(limit: &str, data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut serve = command_under_ulimit(
            limit,
            &["serve", "--listen", "127.0.0.1:0", "--data-dir"],
            env,
        );
        serve.arg(data_dir);
        Self::listening(Proc::spawn(&format!("serve under ulimit {limit}"), serve))
    }

    fn listening(proc: Proc) -> Server {
        let line = proc.line_where("`listening on ADDR`", |l| l.starts_with("listening on "));
        let addr = line.trim_start_matches("listening on ").trim().to_string();
        Server { proc, addr }
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id.
    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// See [`Proc::wait_for_stderr`].
    pub fn wait_for_stderr(&self, text: &str) -> bool {
        self.proc.wait_for_stderr(text)
    }

    /// See [`Proc::signal`].
    pub fn signal(&self, signal: &str) {
        self.proc.signal(signal);
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Waits for the server to exit (after a signal), and what it printed.
    pub fn finish(self) -> Finished {
        self.proc.finish()
    }
}

/// A client of the server at `url`, retrying (every [`POLL`], at most
/// [`PROCESS_BOUND`]) while the connection is refused.
pub async fn connect(url: &str) -> StatusUpdateManagerClient<Channel> {
    let deadline = Instant::now() + PROCESS_BOUND;
    loop {
        match StatusUpdateManagerClient::connect(url.to_string()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() >= deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
