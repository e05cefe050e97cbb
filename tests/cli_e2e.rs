//! The command line as a user drives it: the built binary runs `serve` as a child process
//! (data in a temporary directory, port 0), and every other command runs against it as its
//! own process. Checks what each command prints and its exit status (API.md §2): 0 ok, 1 an
//! operation failed (`error: CODE: message` on stderr), 2 a usage error (a bad configuration
//! value included).
//!
//! Every wait is bounded (`PROCESS_BOUND`) and waits for a condition (a line, an exit);
//! children are killed when a test fails ([`Proc`]'s `Drop`).
#![cfg(feature = "service")]

mod common;

use uuid::Uuid;

use common::process::{Finished, Proc, Server};

/// A temporary data directory, and a running `serve` over it (bound in this
/// order, the server is dropped, killed, before its directory is removed).
fn start_server(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), env);
    (data, server)
}

/// Runs one client command against `server` and waits for it to finish.
fn cli(server: &Server, args: &[&str]) -> Finished {
    let mut all = args.to_vec();
    let url = server.url();
    all.extend(["--server", &url]);
    Proc::start(&args.join(" "), &all, &[]).finish()
}

/// Like [`cli`], and asserts exit status 0.
fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "{args:?} exited with {}; stdout:\n{}stderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Like [`cli`], and asserts exit status 1 with `error: CODE: …` on stderr.
fn cli_fails(server: &Server, args: &[&str], code: &str) -> String {
    let out = cli(server, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}; stdout:\n{}stderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.starts_with(&format!("error: {code}: ")),
        "{args:?}: stderr should start with `error: {code}: `:\n{}",
        out.stderr
    );
    out.stderr
}

/// The uuid `send` printed (the first word of its only line).
fn sent_uuid(stdout: &str) -> Uuid {
    let first = stdout.split_whitespace().next().unwrap_or_default();
    Uuid::parse_str(first).unwrap_or_else(|e| panic!("send printed {stdout:?}: {e}"))
}

/// The `streams` row of `stream`, split into its columns.
fn streams_row(table: &str, stream: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == stream))
        .unwrap_or_else(|| panic!("no row for {stream} in\n{table}"))
}

/// The value of `key=` in a `watch` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn a_user_drives_the_service_with_the_cli() {
    // A short first retry, so that a retried forward shows up within the test.
    let (_data, server) = start_server(&[("SUM__RETRY__MIN", "300ms")]);
    let url = server.url();

    // send: the uuid on stdout; the same uuid again is a duplicate.
    let sent = cli_ok(
        &server,
        &[
            "send",
            "--stream",
            "s1",
            "--state",
            "RUNNING",
            "--framework",
            "fw",
        ],
    );
    let u1 = sent_uuid(&sent);
    assert_eq!(sent, format!("{u1}\n"));
    let again = cli_ok(
        &server,
        &[
            "send",
            "--stream",
            "s1",
            "--state",
            "RUNNING",
            "--framework",
            "fw",
            "--uuid",
            &u1.to_string(),
        ],
    );
    assert_eq!(again, format!("{u1} (duplicate)\n"));

    // streams / stream: one pending update.
    let table = cli_ok(&server, &["streams"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..3], ["STREAM", "FRAMEWORK", "PENDING"], "{table}");
    let row = streams_row(&table, "s1");
    assert_eq!((row[1].as_str(), row[2].as_str()), ("fw", "1"), "{table}");
    // The last column: the stream's mailbox backlog, a count.
    assert_eq!(header.last(), Some(&"BACKLOG"), "{table}");
    assert_eq!(row.len(), header.len(), "{table}");
    row[row.len() - 1]
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("BACKLOG of s1: {e}\n{table}"));
    let one = cli_ok(&server, &["stream", "s1"]);
    assert!(one.contains("\npending             1\n"), "{one}");
    assert!(
        one.contains(&format!("  {u1}  RUNNING  terminal=false")),
        "{one}"
    );
    // The mailbox figures, after `terminated`: counts, and a duration.
    let figure = |name: &str| {
        one.lines()
            .find_map(|l| l.strip_prefix(&format!("{name:<18}  ")))
            .unwrap_or_else(|| panic!("no {name:?} line in\n{one}"))
    };
    figure("mailbox backlog").parse::<u64>().unwrap();
    let handled: u64 = figure("messages handled").parse().unwrap();
    assert!(handled >= 3, "two updates and this request: {one}");
    assert!(figure("mailbox wait").ends_with("ms"), "{one}");

    // watch without acks: the first send, then a retry.
    let watcher = Proc::start("watch", &["watch", "--server", &url], &[]);
    let first = watcher.line_where("the forward of u1", |l| l.contains(&u1.to_string()));
    assert_eq!(field(&first, "stream"), "s1", "{first}");
    assert_eq!(field(&first, "state"), "RUNNING", "{first}");
    assert_eq!(field(&first, "attempt"), "0", "{first}");
    assert_eq!(field(&first, "latest"), "RUNNING", "{first}");
    assert_eq!(field(&first, "framework"), "fw", "{first}");
    assert_eq!(field(&first, "terminal"), "false", "{first}");
    let retry = watcher.line_where("a retry of u1", |l| l.contains(&u1.to_string()));
    assert_eq!(field(&retry, "attempt"), "1", "{retry}");

    // A second subscriber takes over: the first one is told why and exits 1.
    let acker = Proc::start(
        "watch --auto-ack",
        &["watch", "--auto-ack", "--name", "acker", "--server", &url],
        &[],
    );
    let replaced = watcher.finish();
    assert_eq!(replaced.status.code(), Some(1), "{}", replaced.stderr);
    assert!(
        replaced.stderr.contains("error: ABORTED: ") && replaced.stderr.contains("acker"),
        "{}",
        replaced.stderr
    );
    let acked = acker.line_where("the forward of u1", |l| l.contains(&u1.to_string()));
    assert_eq!(field(&acked, "ack"), "ok", "{acked}");

    // The head was acknowledged: acking it again is ALREADY_EXISTS; nothing is pending.
    let stderr = cli_fails(
        &server,
        &["ack", "--stream", "s1", "--uuid", &u1.to_string()],
        "ALREADY_EXISTS",
    );
    assert!(stderr.contains("s1"), "{stderr}");
    let one = cli_ok(&server, &["stream", "s1"]);
    assert!(one.contains("\npending             0\n"), "{one}");
    assert!(one.contains("\nacknowledged        1\n"), "{one}");
    assert!(
        one.ends_with("pending statuses (head first):\n  (none)\n"),
        "{one}"
    );

    // A terminal update: its ack ends the stream, which is then gone.
    let u2 = sent_uuid(&cli_ok(
        &server,
        &[
            "send",
            "--stream",
            "s1",
            "--state",
            "FINISHED",
            "--terminal",
            "--framework",
            "fw",
            "--message",
            "all done",
        ],
    ));
    let ended = acker.line_where("the forward of u2", |l| l.contains(&u2.to_string()));
    assert_eq!(field(&ended, "terminal"), "true", "{ended}");
    assert_eq!(field(&ended, "ack"), "ended", "{ended}");
    cli_fails(&server, &["stream", "s1"], "NOT_FOUND");

    // An ack for a stream the server does not know.
    let stderr = cli_fails(
        &server,
        &[
            "ack",
            "--stream",
            "nope",
            "--uuid",
            &Uuid::new_v4().to_string(),
        ],
        "NOT_FOUND",
    );
    assert!(stderr.contains("nope"), "{stderr}");

    // pause holds forwards back (no retry armed); resume sends the head.
    assert_eq!(cli_ok(&server, &["pause"]), "forwarding paused\n");
    let u3 = sent_uuid(&cli_ok(
        &server,
        &[
            "send",
            "--stream",
            "s2",
            "--state",
            "STAGING",
            "--framework",
            "fw",
        ],
    ));
    let table = cli_ok(&server, &["streams", "--framework", "fw"]);
    let row = streams_row(&table, "s2");
    assert_eq!((row[2].as_str(), row[6].as_str()), ("1", "-"), "{table}");
    assert_eq!(cli_ok(&server, &["resume"]), "forwarding resumed\n");
    let resumed = acker.line_where("the forward of u3", |l| l.contains(&u3.to_string()));
    assert_eq!(field(&resumed, "ack"), "ok", "{resumed}");

    // cleanup closes the framework's open stream.
    assert_eq!(
        cli_ok(&server, &["cleanup", "--framework", "fw"]),
        "closed 1 stream of framework fw\n"
    );
    assert!(cli_ok(&server, &["streams"]).ends_with("(no streams)\n"));

    // SIGTERM: a graceful stop, exit 0; the subscriber is told and exits 1.
    server.signal("-TERM");
    let stopped = server.finish();
    assert!(
        stopped.status.success(),
        "serve: {}\n{}",
        stopped.status,
        stopped.stderr
    );
    let watcher = acker.finish();
    assert_eq!(watcher.status.code(), Some(1), "{}", watcher.stderr);
    assert!(
        watcher
            .stderr
            .contains("error: UNAVAILABLE: the server is shutting down"),
        "{}",
        watcher.stderr
    );

    // Nothing listens any more.
    let out = Proc::start(
        "send to a stopped server",
        &[
            "send", "--stream", "s3", "--state", "RUNNING", "--server", &url,
        ],
        &[],
    )
    .finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with(&format!("error: UNAVAILABLE: cannot connect to {url}: ")),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn a_bad_configuration_value_is_a_usage_error() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8 temp path");
    let out = Proc::start(
        "serve with store.sync = sometimes",
        &["serve", "--data-dir", dir, "--listen", "127.0.0.1:0"],
        &[("SUM__STORE__SYNC", "sometimes")],
    )
    .finish();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing listens: {}", out.stdout);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("store.sync"))
        .unwrap_or_else(|| panic!("no line names store.sync:\n{}", out.stderr));
    for part in ["sometimes", "none", "always", "batch"] {
        assert!(line.contains(part), "{line:?} should name {part}");
    }
}

#[test]
fn a_port_in_use_is_a_startup_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8 temp path");
    let out = Proc::start(
        "serve on a taken port",
        &["serve", "--data-dir", dir, "--listen", &addr],
        &[],
    )
    .finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("error: cannot listen on {addr}: ")),
        "{}",
        out.stderr
    );
    // It failed before it touched the data directory: no journal, no lock.
    let left: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn an_unwritable_data_directory_is_a_startup_failure_that_leaves_nothing_behind() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8 temp path");
    // Immutable: no file can be created in it, not even by root (tests run as root in CI).
    let chattr = |flag: &str| {
        let status = std::process::Command::new("chattr")
            .args([flag, dir])
            .status()
            .expect("chattr (e2fsprogs) runs");
        assert!(
            status.success(),
            "chattr {flag} {dir}: this filesystem keeps the flag"
        );
    };
    chattr("+i");
    let out = Proc::start(
        "serve on an immutable data directory",
        &["serve", "--data-dir", dir, "--listen", "127.0.0.1:0"],
        &[],
    )
    .finish();
    chattr("-i");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: the data directory '{dir}' is not writable (a file could not be created in it)"
        )),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn a_data_directory_in_use_is_a_startup_failure_and_is_free_again_once_its_server_is_killed() {
    let (data, first) = start_server(&[]);
    let dir = data.path().to_str().expect("utf-8 temp path").to_string();
    let serve = ["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"];
    let out = Proc::start("a second serve on the same data directory", &serve, &[]).finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let holder = first.id();
    assert!(
        out.stderr.contains(&format!(
            "error: the data directory '{dir}' is in use by another process (pid {holder})"
        )) && out.stderr.contains("store.data_dir"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("listening on"),
        "the second server listened: {}",
        out.stdout
    );
    // inspect reads the directory without taking the lock, and says who serves it.
    let inspected = Proc::start("inspect of a served directory", &["inspect", &dir], &[]).finish();
    // It holds no stream yet: nothing to inspect (exit 1), said after the warning.
    assert_eq!(inspected.status.code(), Some(1), "{}", inspected.stderr);
    assert!(
        inspected
            .stderr
            .contains(&format!("is being served right now (pid {holder})")),
        "{}",
        inspected.stderr
    );
    // SIGKILL leaves the lock file, not the lock: the next start needs nothing cleared.
    first.signal("-KILL");
    let killed = first.finish();
    assert!(!killed.status.success(), "{:?}", killed.status);
    // Serves the same directory: it prints `listening on ADDR`.
    Server::start(data.path(), &[]);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for (i, args) in [
        &["send", "--stream", "s1"][..],
        &["ack", "--stream", "s1", "--uuid", "not-a-uuid"],
        &["watch", "--server", "127.0.0.1:50051"],
        &["frobnicate"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = Proc::start(&format!("case {i}"), args, &[]).finish();
        assert_eq!(out.status.code(), Some(2), "case {i}: {}", out.stderr);
    }
    for command in [
        "serve", "send", "ack", "watch", "streams", "stream", "cleanup", "pause", "resume",
        "status",
    ] {
        let out = Proc::start(command, &[command, "--help"], &[]).finish();
        assert!(out.status.success(), "{command} --help: {}", out.stderr);
        let about = out.stdout.lines().next().unwrap_or_default();
        assert!(
            !about.is_empty() && !about.starts_with("Usage"),
            "{command}: {about:?}"
        );
    }
}

/// The value of `key: ` in `status`'s output.
fn status_value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no `{key}: ` line in\n{out}"))
}

#[test]
fn status_shows_an_operators_pause_which_survives_a_restart_until_resume() {
    let (data, server) = start_server(&[]);
    let out = cli_ok(&server, &["status"]);
    let keys: Vec<&str> = out.lines().filter_map(|l| l.split(": ").next()).collect();
    assert_eq!(
        keys,
        [
            "paused",
            "cause",
            "operator pause since",
            "subscriber",
            "subscribed since",
            "streams",
            "pending updates",
            "data dir",
            "sync",
            "version"
        ],
        "{out}"
    );
    assert_eq!(status_value(&out, "paused"), "true", "{out}");
    assert_eq!(status_value(&out, "cause"), "no subscriber", "{out}");
    assert_eq!(status_value(&out, "sync"), "batch", "{out}");
    assert_eq!(
        status_value(&out, "version"),
        env!("CARGO_PKG_VERSION"),
        "{out}"
    );
    let dir = data.path().to_str().expect("utf-8 temp path");
    assert_eq!(status_value(&out, "data dir"), dir, "{out}");

    let u1 = sent_uuid(&cli_ok(
        &server,
        &["send", "--stream", "s1", "--state", "RUNNING"],
    ));
    assert_eq!(cli_ok(&server, &["pause"]), "forwarding paused\n");
    let out = cli_ok(&server, &["status"]);
    assert_eq!(
        status_value(&out, "cause"),
        "operator pause, no subscriber",
        "{out}"
    );
    let since = status_value(&out, "operator pause since");
    assert!(
        since.len() == "2026-01-01T00:00:00Z".len() && since.ends_with('Z'),
        "RFC 3339: {out}"
    );
    assert_eq!(
        (
            status_value(&out, "streams"),
            status_value(&out, "pending updates")
        ),
        ("1", "1"),
        "{out}"
    );

    // A graceful restart on the same directory: still paused by the operator.
    server.signal("-TERM");
    assert!(server.finish().status.success());
    let server = Server::start(data.path(), &[]);
    let url = server.url();
    let watcher = Proc::start("watch", &["watch", "--auto-ack", "--server", &url], &[]);
    // `watch` says so once its subscription was answered: the server knows it then.
    assert!(watcher.wait_for_stderr("watching "), "{}", watcher.stderr());
    let out = cli_ok(&server, &["status"]);
    assert_eq!(status_value(&out, "paused"), "true", "{out}");
    assert_eq!(status_value(&out, "cause"), "operator pause", "{out}");
    assert_eq!(
        status_value(&out, "operator pause since"),
        since,
        "the pause kept its time: {out}"
    );
    assert_eq!(
        status_value(&out, "subscriber"),
        "\"status-update-manager watch\"",
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&server, &["status", "--json"])).expect("status --json");
    assert_eq!(json["paused"], true, "{json}");
    assert_eq!(json["operator_paused"], true, "{json}");
    assert_eq!(json["subscriber"], "status-update-manager watch", "{json}");
    assert_eq!(json["pending_updates"], 1, "{json}");
    assert!(json["subscribed_since_unix_seconds"].is_i64(), "{json}");

    // Resume: the watcher gets the update (its first send by this process).
    assert_eq!(cli_ok(&server, &["resume"]), "forwarding resumed\n");
    let line = watcher.line_where("the forward of u1", |l| l.contains(&u1.to_string()));
    assert_eq!(field(&line, "attempt"), "0", "{line}");
    assert_eq!(field(&line, "ack"), "ok", "{line}");
    let out = cli_ok(&server, &["status"]);
    assert_eq!(
        (status_value(&out, "paused"), status_value(&out, "cause")),
        ("false", "-"),
        "{out}"
    );
    assert_eq!(status_value(&out, "operator pause since"), "-", "{out}");
}

/// Creates memory-only streams `ids` on `server`, each with one pending update, over gRPC.
fn create_streams(server: &Server, ids: &[String]) {
    use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut client = StatusUpdateManagerClient::connect(server.url())
            .await
            .expect("the client connects");
        for id in ids {
            let status = common::server::status("RUNNING", false);
            let update = common::status_update(id, "", &status);
            client
                .update(common::server::memory_only(update))
                .await
                .unwrap_or_else(|s| panic!("Update of {id}: {s}"));
        }
    });
}

/// The first word of every line of a `streams` table: the header's `STREAM`, then the ids.
fn first_words(table: &str) -> Vec<&str> {
    table
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect()
}

#[test]
fn streams_reads_every_page_and_stops_at_the_limit() {
    let (_data, server) = start_server(&[]);
    // More than one page of 1000; byte order is not numeric order (`p-10` < `p-2`).
    let mut ids: Vec<String> = (0..1050).map(|i| format!("p-{i}")).collect();
    create_streams(&server, &ids);
    ids.sort();

    let table = cli_ok(&server, &["streams"]);
    let words = first_words(&table);
    assert_eq!(words[0], "STREAM", "one header");
    assert_eq!(
        words[1..],
        ids,
        "every stream once, in id order, over two pages"
    );

    for (i, limit) in [1, 999, 1000, 1001, 1050, 5000].into_iter().enumerate() {
        let table = cli_ok(&server, &["streams", "--limit", &limit.to_string()]);
        let words = first_words(&table);
        assert_eq!(words[0], "STREAM", "case {i}");
        assert_eq!(
            words[1..],
            ids[..limit.min(ids.len())],
            "case {i}: --limit {limit}"
        );
    }

    let out = cli(&server, &["streams", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "--limit 0: {}", out.stderr);
    let help = Proc::start("streams --help", &["streams", "--help"], &[]).finish();
    assert!(help.stdout.contains("--limit <N>"), "{}", help.stdout);
}
