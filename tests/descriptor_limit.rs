//! `serve` under a descriptor limit (`ulimit -n`) too low for
//! `limits.max_open_files`: it raises the soft limit as far as the hard one
//! allows, and keeps fewer stream files open when even that is too low, so
//! that no stream fails to open its file (`EMFILE`). The agents'
//! connections get what the files leave; past that share they wait in the
//! listen queue.
#![cfg(feature = "service")]

mod common;

use common::process::Server;
use status_update_manager::bench::grpc_caller::{GrpcCaller, UPDATE};
use status_update_manager::bench::load::bench_update;
use status_update_manager::proto::status_update_manager::v1::{UpdateRequest, UpdateResponse};

/// Streams the test creates: more than fit under a limit of 200 descriptors.
const STREAMS: usize = 300;

/// One update to each of `streams` streams through the server's gRPC API;
/// the error of the first that fails.
fn one_update_per_stream(addr: &str, streams: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let caller = GrpcCaller::connect(addr).await.map_err(|e| e.to_string())?;
        for stream in 0..streams {
            let request = UpdateRequest {
                update: Some(bench_update(stream, 0)),
                memory_only: false,
            };
            caller
                .unary::<_, UpdateResponse>(UPDATE, &request)
                .await
                .map_err(|e| format!("stream {stream}: {e}"))?;
        }
        Ok(())
    })
}

/// Starts `serve` under `ulimit LIMIT`, sends [`one_update_per_stream`]
/// (every one must succeed), and returns what the server logged.
fn every_stream_works_under_ulimit(limit: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under_ulimit(limit, dir.path(), &[]);
    let sent = one_update_per_stream(server.addr(), STREAMS);
    let stderr = server.stderr();
    assert_eq!(sent, Ok(()), "{stderr}");
    stderr
}

#[test]
fn a_hard_limit_below_the_bound_keeps_fewer_files_open_and_every_stream_works() {
    // Soft and hard: 200 descriptors, against the default bound of 4 096 files.
    let stderr = every_stream_works_under_ulimit("-n 200");
    assert!(
        stderr.contains("limits.max_open_files=4096 kept=104 ulimit_n=200"),
        "the log says how many files are kept open, and why: {stderr}"
    );
}

#[test]
fn a_soft_limit_is_raised_to_the_hard_one() {
    let hard = {
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("sh runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .ok()
    };
    let stderr = every_stream_works_under_ulimit("-Sn 100");
    assert!(
        stderr.contains("raised the soft descriptor limit"),
        "{stderr}"
    );
    use status_update_manager::store::files::{MIN_CONNECTIONS, RESERVED_DESCRIPTORS};
    let needed = 4096 + RESERVED_DESCRIPTORS + MIN_CONNECTIONS;
    match hard {
        // Room for the files and for every connection the system allows.
        Some(hard) => assert!(stderr.contains(&format!("from=100 to={hard}")), "{stderr}"),
        // Unlimited: Linux caps the soft limit at fs.nr_open.
        None => {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").expect("Linux");
            let nr_open = nr_open.trim();
            assert!(
                stderr.contains(&format!("from=100 to={nr_open}")),
                "{stderr}"
            );
        }
    }
    let short = hard.is_some_and(|hard| hard < needed);
    assert_eq!(stderr.contains("fewer stream files"), short, "{stderr}");
}

#[test]
fn agents_connections_past_their_share_wait_and_the_stream_files_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    // 200 descriptors: 104 stream files, 32 connections, 64 for the rest.
    let server = Server::start_under_ulimit("-n 200", dir.path(), &[]);
    assert!(
        server.wait_for_stderr("max_connections=32 max_open_files=104"),
        "{}",
        server.stderr()
    );
    let connect = |_| std::net::TcpStream::connect(server.addr()).expect("queued by the kernel");
    let mut held: Vec<_> = (0..32).map(connect).collect();
    // More agents than that: they wait in the listen queue, unaccepted.
    let waiting: Vec<_> = (0..100).map(connect).collect();
    assert!(
        server.wait_for_stderr("new ones wait in the listen queue"),
        "{}",
        server.stderr()
    );
    // The waiting ones give up and one held connection closes: the next
    // agent gets in, and its updates to 300 streams (more than the 104 files
    // kept open: reopens all along) succeed while 31 other connections stay
    // open. The connections never took a stream file's descriptor.
    drop(waiting);
    held.pop();
    let sent = one_update_per_stream(server.addr(), STREAMS);
    let stderr = server.stderr();
    assert_eq!(sent, Ok(()), "{stderr}");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The limit is reached again and again while the 100 that gave up are
    // accepted and closed; the log says so at most once every
    // ACCEPT_WARN_EVERY (10 s).
    let said = stderr.matches("new ones wait in the listen queue").count();
    assert!(
        (1..10).contains(&said),
        "said {said} times, not once per connection: {stderr}"
    );
    drop(held);
}
