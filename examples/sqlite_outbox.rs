//! The SQLite outbox that `status-update-manager bench` is measured against
//! (BENCHMARKS.md, "The manager against a SQLite outbox"): what an engineer
//! could write in an afternoon with the manager's rules, run on `bench`'s
//! load with `bench`'s flags.
//!
//! ```text
//! cargo build --release --example sqlite_outbox
//! target/release/examples/sqlite_outbox [--streams 10000] [--updates 20] [--concurrency 2048]
//!     [--sync batch|none] [--data-dir DIR] [--json]
//! ```
//!
//! # The outbox
//!
//! One database file in WAL mode with two tables:
//! `pending(stream, seq, uuid UNIQUE, payload)` WITHOUT ROWID, keyed by
//! `(stream, seq)`, and `acked(uuid)` WITHOUT ROWID, so that an update
//! acknowledged long ago (before a restart too) is still a duplicate. One
//! writer thread owns the connection. It takes every operation queued when it
//! looks (a round has no bound), runs them in one transaction with prepared
//! statements, commits, and only then answers:
//! - an update: inserted at the end of its stream (`seq` one past the
//!   stream's last pending row, 0 when none is pending) unless its uuid is
//!   pending or acked (a duplicate: nothing inserted, answered so); if it is
//!   the stream's head (nothing else pending), it is handed to the upstream
//!   after the commit;
//! - an acknowledgement of a stream's head, by uuid: the row is deleted, its
//!   uuid inserted into `acked`, and the stream's next pending row (if any)
//!   handed to the upstream after the commit. An acknowledgement of anything
//!   but the head fails.
//!
//! So per stream only the head is handed on, and the next only once the
//! head's acknowledgement is committed, as the manager forwards.
//!
//! # The load, as `bench`'s
//!
//! `--streams` × `--updates` updates, `--concurrency` in flight (a task each
//! on one thread, as `bench`'s producers share the actors' thread), update
//! `i` for stream `i % streams`; each is `bench`'s update
//! (`bench::load::bench_update`: stream `bench-N`, a 96-byte payload, ≈ 200
//! bytes as the manager frames it) with its uuid numbered by `i`, stored as
//! its protobuf encoding. An in-process upstream (a task on the producers'
//! thread) decodes each head handed to it and acknowledges it at once.
//! `updates_per_sec`: every update answered; `acks_per_sec`: every
//! acknowledgement answered, both since the load started (`bench`'s
//! meanings). At the end the run fails, exit status 1, unless each stream
//! was handed its updates exactly once and in the order they were sent, every
//! acknowledgement was committed, `pending` is empty, `acked` holds every
//! uuid, and an acked uuid and a pending one are both refused as duplicates.
//!
//! # Every setting
//!
//! - SQLite: the one rusqlite (`bundled` feature) compiles, with its build
//!   flags (libsqlite3-sys's `build.rs`): `SQLITE_CORE`,
//!   `SQLITE_DEFAULT_FOREIGN_KEYS=1`, `SQLITE_ENABLE_API_ARMOR`,
//!   `SQLITE_ENABLE_COLUMN_METADATA`, `SQLITE_ENABLE_DBSTAT_VTAB`,
//!   `SQLITE_ENABLE_FTS3`, `SQLITE_ENABLE_FTS3_PARENTHESIS`,
//!   `SQLITE_ENABLE_FTS5`, `SQLITE_ENABLE_JSON1`,
//!   `SQLITE_ENABLE_LOAD_EXTENSION=1`, `SQLITE_ENABLE_RTREE`,
//!   `SQLITE_ENABLE_STAT4`, `SQLITE_SOUNDEX`, `SQLITE_THREADSAFE=1`,
//!   `SQLITE_USE_URI`, `HAVE_USLEEP=1`, `HAVE_ISNAN`, `HAVE_LOCALTIME_R`,
//!   `_POSIX_THREAD_SAFE_FUNCTIONS`, at the Cargo profile's optimisation
//!   level (`-O3` in release), plus `HAVE_FDATASYNC=1` from
//!   `.cargo/config.toml` (`LIBSQLITE3_FLAGS`): without it SQLite syncs with
//!   `fsync`, with it `fdatasync`, as distributions build it (Debian 12's
//!   libsqlite3 calls `fdatasync`). The report's `libsqlite3_flags` says
//!   what the build saw. Debian's own build also sets `SQLITE_SECURE_DELETE`
//!   and `SQLITE_OMIT_LOOKASIDE`, which would only slow the outbox down: not
//!   set.
//! - `sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)` before the first
//!   connection: no memory statistics, and so no global mutex taken around
//!   each of SQLite's allocations (SQLite's own advice for speed,
//!   `SQLITE_DEFAULT_MEMSTATUS=0`, set at run time): 180 k acknowledged
//!   updates/s against 158 k at 10,000 streams, no change at 1,000
//!   (2026-12-06).
//! - The connection: rusqlite's default flags (read-write, create, URI, no
//!   connection mutex: one thread uses it).
//! - `PRAGMA journal_mode = WAL`; `PRAGMA synchronous = FULL` for
//!   `--sync batch` (every commit `fdatasync`s the WAL before the writer
//!   answers: each update and acknowledgement is durable when answered, as
//!   the manager's `batch`) or `OFF` for `--sync none` (no sync at all, as
//!   `none`).
//! - `PRAGMA locking_mode = EXCLUSIVE`: one process owns the outbox (as one
//!   `serve` owns its data directory), so the WAL index lives in the heap, no
//!   shared memory file.
//! - `PRAGMA cache_size = -65536` (64 MiB; the default is 2 MiB): the working
//!   set (the pending rows and the `acked` index) stays in SQLite's cache.
//! - `PRAGMA temp_store = MEMORY`: statement journals stay in memory. An
//!   insert or delete that touches two indexes needs one, and once a round's
//!   statement journal outgrew 64 KiB, SQLite moved it to a temporary file and
//!   wrote every page each later statement of the round touched to it: with
//!   the default, 0.3 to 1.1 million `pwrite`s per 10,000 × 20 run instead of
//!   about 52,000 (the WAL's), and 105–178 k acknowledged updates/s against
//!   157–159 k (2026-12-06).
//! - `PRAGMA wal_autocheckpoint = 16384` pages (64 MiB, the size at which the
//!   manager checkpoints its commit journal; SQLite's default is 1000 pages),
//!   run by the writer inside the commit that crosses it, as SQLite does.
//! - Page size 4096 (the default; 1024, 2048 and 8192 were no faster at
//!   10,000 or 1,000 streams, 16384 and 65536 much slower: each round writes
//!   its dirty pages whole), no `mmap`, statements prepared once and kept;
//!   each round is `BEGIN` (deferred) … `COMMIT`.
//! - `pending` keyed by `(stream, seq)`, `seq` counted per stream: a
//!   stream's rows are together, its head and its last row one seek each.
//!   Keyed instead by one `seq` for every stream, with an index on
//!   `(stream, seq)`, the outbox ran faster at 1,000 streams (114–124 k
//!   acknowledged updates/s against 91–94 k) and slower at 10,000 (147–153 k
//!   against 164–172 k), 2026-12-06: the table as the issue writes it is
//!   kept, the stronger peer where the manager is the weaker.
//! - Uuids are numbered as `bench`'s (a counter under the process id), so
//!   new `acked` keys land near the end of its index, as in `bench`.
//! - Rust's allocations go to mimalloc, as in the service binary
//!   (src/main.rs); SQLite's to the C library's `malloc`, its default.
//! - Built by Cargo's profile: `cargo build --release --example
//!   sqlite_outbox` is the release profile of the manager's binary (fat LTO,
//!   one codegen unit; it does not reach the C code).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use prost::Message as _;
use rusqlite::{params, Connection, OptionalExtension as _};
use serde::Serialize;
use status_update_manager::bench::baseline::{new_histogram, record_micros};
use status_update_manager::bench::load::{bench_update, DEFAULT_CONCURRENCY};
use status_update_manager::bench::Latency;
use status_update_manager::proto::status_update_manager::v1::StatusUpdate;
use tokio::sync::{mpsc as channel, oneshot};

/// The service binary's allocator (src/main.rs), so that the Rust side of
/// the outbox allocates as the manager does; SQLite itself uses the C
/// library's `malloc` (`SQLITE_SYSTEM_MALLOC`, its default), with its own
/// page cache and lookaside memory in front of it.
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc, asked for an alignment only when the layout needs more than
/// the 8 bytes every block has (as src/main.rs's).
struct Mimalloc;

/// Every block mimalloc returns is aligned to at least this.
const MI_MIN_ALIGN: usize = 8;

// SAFETY: each method forwards to the mimalloc function for the same
// operation, with the same size and pointer; the unaligned functions only
// where `layout.align()` is at most the 8 bytes every mimalloc block is
// aligned to, so the block is aligned as the layout asks.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// SQLite's page cache, KiB (`PRAGMA cache_size` takes it negated).
const CACHE_KIB: i64 = 65_536;
/// Pages of WAL after which a commit checkpoints it.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

const SCHEMA: &str = "
    CREATE TABLE pending (
        stream  TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        uuid    BLOB    NOT NULL UNIQUE,
        payload BLOB    NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;
    CREATE TABLE acked (uuid BLOB PRIMARY KEY) WITHOUT ROWID;
";

/// An update at the end of its stream, unless its uuid is pending or acked
/// (then nothing is inserted and no row returned); returns its `seq`, 0 when
/// it is the stream's head.
const INSERT_UPDATE: &str = "
    INSERT INTO pending (stream, seq, uuid, payload)
    SELECT ?1, COALESCE((SELECT max(seq) FROM pending WHERE stream = ?1) + 1, 0), ?2, ?3
    WHERE NOT EXISTS (SELECT 1 FROM acked WHERE uuid = ?2)
    ON CONFLICT DO NOTHING
    RETURNING seq
";
/// The stream's head, if its uuid is the one acknowledged.
const DELETE_HEAD: &str = "
    DELETE FROM pending
    WHERE stream = ?1 AND seq = (SELECT min(seq) FROM pending WHERE stream = ?1) AND uuid = ?2
";
const INSERT_ACKED: &str = "INSERT INTO acked (uuid) VALUES (?1)";
const NEXT_HEAD: &str = "SELECT uuid, payload FROM pending WHERE stream = ?1 ORDER BY seq LIMIT 1";

/// The load's flags, as `status-update-manager bench` spells them.
#[derive(Debug, Parser)]
#[command(about = "The SQLite outbox on bench's load (BENCHMARKS.md)")]
struct Args {
    /// Streams.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    streams: u64,
    /// Updates per stream.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    updates: u64,
    /// Updates in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    concurrency: u64,
    /// `batch`: `synchronous=FULL` (durable when answered); `none`: `synchronous=OFF`.
    #[arg(long, value_enum, default_value_t = Sync::Batch)]
    sync: Sync,
    /// Directory for the database (a fresh directory inside it is used, then removed).
    #[arg(long, value_name = "DIR", default_value = ".")]
    data_dir: PathBuf,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

/// `--sync`, mapped onto `PRAGMA synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Sync {
    /// `synchronous = FULL`.
    Batch,
    /// `synchronous = OFF`.
    None,
}

impl Sync {
    fn synchronous(self) -> &'static str {
        match self {
            Sync::Batch => "FULL",
            Sync::None => "OFF",
        }
    }
}

/// What the run measured (`bench --json`'s names where they mean the same).
#[derive(Debug, Serialize)]
struct Report {
    system: &'static str,
    streams: usize,
    updates: usize,
    concurrency: usize,
    sync: Sync,
    updates_per_sec: f64,
    acks_per_sec: f64,
    update_latency_micros: Latency,
    /// Transactions the writer committed.
    rounds: u64,
    /// Operations (updates and acknowledgements) per round, on average.
    ops_per_round: f64,
    /// The most operations in one round.
    max_ops_per_round: usize,
    /// The most rows `pending` held at a commit.
    pending_peak: u64,
    /// The database and its WAL after the load, bytes.
    database_bytes: u64,
    /// An update's protobuf encoding, bytes.
    payload_bytes: usize,
    sqlite: Settings,
}

/// Every SQLite setting of the run, as SQLite reports it.
#[derive(Debug, Serialize)]
struct Settings {
    version: String,
    libsqlite3_flags: &'static str,
    journal_mode: String,
    synchronous: &'static str,
    locking_mode: String,
    cache_size: i64,
    temp_store: &'static str,
    wal_autocheckpoint: i64,
    page_size: i64,
    /// `SQLITE_CONFIG_MEMSTATUS`: no memory statistics (and no mutex around every allocation).
    memstatus: bool,
}

/// An operation for the writer.
enum Op {
    /// A producer's update, answered after the commit.
    Update {
        stream: String,
        uuid: [u8; 16],
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Accepted, String>>,
    },
    /// The upstream's acknowledgement of a stream's head, answered on the
    /// upstream's channel after the commit.
    Ack { stream: String, uuid: [u8; 16] },
    /// After the load: the tables' contents and the duplicate rules.
    Check {
        acked_uuid: [u8; 16],
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// How an update was answered.
#[derive(Debug, PartialEq, Eq)]
enum Accepted {
    Queued,
    Duplicate,
}

/// What the writer sends the upstream after a commit.
enum ToUpstream {
    /// A stream's head.
    Forward {
        stream: String,
        uuid: [u8; 16],
        payload: Vec<u8>,
    },
    /// An acknowledgement was committed (or refused).
    Acked(Result<(), String>),
}

/// The writer's own figures.
#[derive(Debug, Default)]
struct WriterFigures {
    rounds: u64,
    ops: u64,
    max_ops: usize,
    /// Rows in `pending` now, and the most at any commit.
    pending: u64,
    pending_peak: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => fail(&format!("report: {err}")),
                }
            } else {
                print!("{}", table(&report));
            }
        }
        Err(err) => fail(&err),
    }
}

fn fail(err: &str) -> ! {
    eprintln!("error: sqlite outbox: {err}");
    std::process::exit(1);
}

fn run(args: &Args) -> Result<Report, String> {
    // SAFETY: `sqlite3_config` is called before SQLite is initialized (no
    // connection was opened yet, in this single thread) with an option that
    // takes one `int`, as its documentation requires.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int)
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(format!(
            "sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) failed: {rc}"
        ));
    }
    let as_usize = |v: u64| usize::try_from(v).map_err(|e| e.to_string());
    let (streams, updates) = (as_usize(args.streams)?, as_usize(args.updates)?);
    let concurrency = as_usize(args.concurrency)?;
    let root = args
        .data_dir
        .join(format!("sum-outbox-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let result = run_in(&root, args.sync, streams, updates, concurrency);
    let removed = std::fs::remove_dir_all(&root);
    let report = result?;
    removed.map_err(|e| format!("removing {}: {e}", root.display()))?;
    Ok(report)
}

fn run_in(
    root: &Path,
    sync: Sync,
    streams: usize,
    updates: usize,
    concurrency: usize,
) -> Result<Report, String> {
    let db_path = root.join("outbox.db");
    let (conn, settings) = open(&db_path, sync)?;
    let (ops_tx, ops_rx) = mpsc::channel::<Op>();
    let (up_tx, up_rx) = channel::unbounded_channel::<ToUpstream>();
    let writer = std::thread::Builder::new()
        .name("outbox-writer".into())
        .spawn(move || writer(conn, &ops_rx, &up_tx))
        .map_err(|e| format!("writer thread: {e}"))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let load = local.block_on(
        &runtime,
        load(ops_tx, up_rx, streams, updates, concurrency, &db_path),
    );
    // Whatever tasks a failed run left go with their senders: the writer
    // ends its loop once every sender is gone.
    drop(local);
    let writer = writer
        .join()
        .unwrap_or_else(|_| Err("the writer thread panicked".into()));
    let (load, figures) = match (load, writer) {
        (Ok(load), Ok(figures)) => (load, figures),
        (Err(err), Ok(_)) => return Err(err),
        (Ok(_), Err(writer)) => return Err(format!("writer: {writer}")),
        (Err(err), Err(writer)) => return Err(format!("{err} (writer: {writer})")),
    };
    let total = streams * updates;
    let rate = |elapsed: Duration| total as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(Report {
        system: "sqlite-outbox",
        streams,
        updates,
        concurrency,
        sync,
        updates_per_sec: rate(load.updates_elapsed),
        acks_per_sec: rate(load.acks_elapsed),
        update_latency_micros: load.latency,
        rounds: figures.rounds,
        ops_per_round: figures.ops as f64 / figures.rounds.max(1) as f64,
        max_ops_per_round: figures.max_ops,
        pending_peak: figures.pending_peak,
        database_bytes: load.database_bytes,
        payload_bytes: load.payload_bytes,
        sqlite: settings,
    })
}

/// Creates the database with its settings and tables.
fn open(path: &Path, sync: Sync) -> Result<(Connection, Settings), String> {
    let settings = || -> rusqlite::Result<(Connection, Settings)> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", sync.synchronous())?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.execute_batch(SCHEMA)?;
        let text = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, String>(0));
        let number = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
        let synchronous = match number("synchronous")? {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            _ => "EXTRA",
        };
        let settings = Settings {
            version: rusqlite::version().to_string(),
            libsqlite3_flags: option_env!("LIBSQLITE3_FLAGS").unwrap_or(""),
            journal_mode: text("journal_mode")?,
            synchronous,
            locking_mode: text("locking_mode")?,
            cache_size: number("cache_size")?,
            temp_store: match number("temp_store")? {
                0 => "DEFAULT",
                1 => "FILE",
                _ => "MEMORY",
            },
            wal_autocheckpoint: number("wal_autocheckpoint")?,
            page_size: number("page_size")?,
            memstatus: false,
        };
        Ok((conn, settings))
    };
    let (conn, settings) = settings().map_err(|e| format!("opening {}: {e}", path.display()))?;
    if settings.journal_mode != "wal" || settings.synchronous != sync.synchronous() {
        return Err(format!(
            "SQLite runs journal_mode={} synchronous={}, not WAL and {}",
            settings.journal_mode,
            settings.synchronous,
            sync.synchronous()
        ));
    }
    Ok((conn, settings))
}

/// Why the writer stopped before every sender was gone.
#[derive(Debug)]
enum WriterError {
    Sql(rusqlite::Error),
    UpstreamGone,
    BadUuid,
}

impl From<rusqlite::Error> for WriterError {
    fn from(err: rusqlite::Error) -> Self {
        WriterError::Sql(err)
    }
}

impl std::fmt::Display for WriterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterError::Sql(err) => write!(f, "SQLite: {err}"),
            WriterError::UpstreamGone => f.write_str("the upstream stopped"),
            WriterError::BadUuid => f.write_str("a pending row's uuid is not 16 bytes"),
        }
    }
}

/// The writer thread: a round is every operation queued, one transaction,
/// then the answers. Ends when every sender is gone.
fn writer(
    conn: Connection,
    ops: &mpsc::Receiver<Op>,
    upstream: &channel::UnboundedSender<ToUpstream>,
) -> Result<WriterFigures, String> {
    writer_rounds(&conn, ops, upstream).map_err(|e| e.to_string())
}

fn writer_rounds(
    conn: &Connection,
    ops: &mpsc::Receiver<Op>,
    upstream: &channel::UnboundedSender<ToUpstream>,
) -> Result<WriterFigures, WriterError> {
    let mut begin = conn.prepare("BEGIN")?;
    let mut commit = conn.prepare("COMMIT")?;
    let mut rollback = conn.prepare("ROLLBACK")?;
    let mut insert = conn.prepare(INSERT_UPDATE)?;
    let mut delete_head = conn.prepare(DELETE_HEAD)?;
    let mut insert_acked = conn.prepare(INSERT_ACKED)?;
    let mut next_head = conn.prepare(NEXT_HEAD)?;
    let mut figures = WriterFigures::default();
    let mut round = Vec::new();
    let mut replies = Vec::new();
    let mut after = Vec::new();
    let mut checks = Vec::new();
    while let Ok(first) = ops.recv() {
        round.push(first);
        round.extend(ops.try_iter());
        figures.rounds += 1;
        figures.ops += round.len() as u64;
        figures.max_ops = figures.max_ops.max(round.len());
        begin.execute([])?;
        for op in round.drain(..) {
            match op {
                Op::Update {
                    stream,
                    uuid,
                    payload,
                    reply,
                } => {
                    let seq: Option<i64> = insert
                        .query_row(params![stream, &uuid[..], payload], |r| r.get(0))
                        .optional()?;
                    let answer = match seq {
                        None => Accepted::Duplicate,
                        Some(0) => {
                            after.push(ToUpstream::Forward {
                                stream,
                                uuid,
                                payload,
                            });
                            Accepted::Queued
                        }
                        Some(_) => Accepted::Queued,
                    };
                    if answer == Accepted::Queued {
                        figures.pending += 1;
                    }
                    replies.push((reply, answer));
                }
                Op::Ack { stream, uuid } => {
                    if delete_head.execute(params![stream, &uuid[..]])? != 1 {
                        after.push(ToUpstream::Acked(Err(format!(
                            "stream {stream}: {} is not its head",
                            uuid::Uuid::from_bytes(uuid)
                        ))));
                        continue;
                    }
                    insert_acked.execute(params![&uuid[..]])?;
                    figures.pending -= 1;
                    after.push(ToUpstream::Acked(Ok(())));
                    let next = next_head
                        .query_row(params![stream], |r| {
                            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .optional()?;
                    if let Some((uuid, payload)) = next {
                        let uuid = <[u8; 16]>::try_from(uuid.as_slice())
                            .map_err(|_| WriterError::BadUuid)?;
                        after.push(ToUpstream::Forward {
                            stream,
                            uuid,
                            payload,
                        });
                    }
                }
                Op::Check { acked_uuid, reply } => checks.push((acked_uuid, reply)),
            }
        }
        commit.execute([])?;
        figures.pending_peak = figures.pending_peak.max(figures.pending);
        for (reply, answer) in replies.drain(..) {
            let _ = reply.send(Ok(answer));
        }
        for message in after.drain(..) {
            upstream
                .send(message)
                .map_err(|_| WriterError::UpstreamGone)?;
        }
        for (acked_uuid, reply) in checks.drain(..) {
            let checked = check(conn, &mut begin, &mut rollback, &mut insert, acked_uuid);
            let _ = reply.send(checked);
        }
    }
    Ok(figures)
}

/// After the load: nothing is pending, and both kinds of duplicate are
/// refused (in a transaction rolled back). Returns the rows of `acked`.
fn check(
    conn: &Connection,
    begin: &mut rusqlite::Statement<'_>,
    rollback: &mut rusqlite::Statement<'_>,
    insert: &mut rusqlite::Statement<'_>,
    acked_uuid: [u8; 16],
) -> Result<u64, String> {
    let sql = |e: rusqlite::Error| e.to_string();
    let count = |table: &str| {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql)
        .map(|n| u64::try_from(n).unwrap_or(0))
    };
    let pending = count("pending")?;
    if pending != 0 {
        return Err(format!("{pending} updates still pending after the load"));
    }
    let acked = count("acked")?;
    begin.execute([]).map_err(sql)?;
    let mut insert = |stream: &str, uuid: &[u8]| {
        insert
            .query_row(params![stream, uuid, &b"probe"[..]], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql)
    };
    let fresh = *uuid::Uuid::new_v4().as_bytes();
    let outcome = (
        insert("bench-0", &acked_uuid)?,
        insert("probe", &fresh)?,
        insert("probe", &fresh)?,
        insert("probe-2", &fresh)?,
    );
    rollback.execute([]).map_err(sql)?;
    match outcome {
        (None, Some(0), None, None) => Ok(acked),
        other => Err(format!(
            "duplicate rules broken: an acked uuid, a new one, it again, it on another stream \
             gave seq {other:?} (expected None, Some(0), None, None)"
        )),
    }
}

/// What the load measured.
struct LoadFigures {
    updates_elapsed: Duration,
    acks_elapsed: Duration,
    latency: Latency,
    database_bytes: u64,
    payload_bytes: usize,
}

/// Update `i`'s uuid: a counter under the process id, as `bench` numbers
/// them, so that the upstream can tell which update it was handed.
fn uuid_of(i: usize) -> [u8; 16] {
    let n = u128::from(i as u64) + 1;
    uuid::Builder::from_u128(n | (u128::from(std::process::id()) << 96))
        .into_uuid()
        .into_bytes()
}

fn index_of(uuid: &[u8; 16]) -> usize {
    let low = u64::from_be_bytes([
        uuid[8], uuid[9], uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15],
    ]);
    usize::try_from(low).map_or(usize::MAX, |n| n.wrapping_sub(1))
}

/// Runs the producers and the upstream on this thread until every update
/// and acknowledgement was answered, then checks the outcome.
async fn load(
    ops: mpsc::Sender<Op>,
    from_writer: channel::UnboundedReceiver<ToUpstream>,
    streams: usize,
    updates: usize,
    concurrency: usize,
    db_path: &Path,
) -> Result<LoadFigures, String> {
    let total = streams * updates;
    let (done_tx, done_rx) = oneshot::channel();
    let upstream = tokio::task::spawn_local(upstream(
        from_writer,
        ops.clone(),
        streams,
        updates,
        done_tx,
    ));
    let latency = Rc::new(RefCell::new(new_histogram().map_err(|e| e.to_string())?));
    let next = Rc::new(Cell::new(0usize));
    let failure: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let payload_bytes = Rc::new(Cell::new(0usize));
    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..concurrency.clamp(1, total.max(1)) {
        let (ops, latency, next, failure, payload_bytes) = (
            ops.clone(),
            latency.clone(),
            next.clone(),
            failure.clone(),
            payload_bytes.clone(),
        );
        producers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= total || failure.borrow().is_some() {
                    return;
                }
                next.set(i + 1);
                let answer = produce(&ops, i, streams, &payload_bytes).await;
                match answer {
                    Ok(sent) => record_micros(&mut latency.borrow_mut(), sent.elapsed()),
                    Err(err) => {
                        failure.borrow_mut().get_or_insert(err);
                        return;
                    }
                }
            }
        }));
    }
    for producer in producers {
        producer.await.map_err(|e| format!("producer: {e}"))?;
    }
    if let Some(err) = failure.borrow_mut().take() {
        return Err(err);
    }
    let updates_elapsed = started.elapsed();
    let Ok(acked_at) = done_rx.await else {
        // The upstream stopped before the last acknowledgement: its error says why.
        return Err(match upstream.await {
            Ok(Err(err)) => err,
            Ok(Ok(())) => "the upstream stopped early".into(),
            Err(err) => format!("upstream: {err}"),
        });
    };
    let acks_elapsed = acked_at.duration_since(started);
    upstream.await.map_err(|e| format!("upstream: {e}"))??;

    // The outcome: every uuid acked, nothing pending, duplicates refused.
    let (reply, checked) = oneshot::channel();
    ops.send(Op::Check {
        acked_uuid: uuid_of(0),
        reply,
    })
    .map_err(|_| "the writer stopped".to_string())?;
    let acked = checked
        .await
        .map_err(|_| "the writer stopped".to_string())??;
    if acked != total as u64 {
        return Err(format!("{acked} uuids acked, {total} expected"));
    }
    let size = |suffix: &str| {
        let mut path = db_path.as_os_str().to_owned();
        path.push(suffix);
        std::fs::metadata(path).map_or(0, |m| m.len())
    };
    let database_bytes = size("") + size("-wal");
    let latency = latency.borrow();
    Ok(LoadFigures {
        updates_elapsed,
        acks_elapsed,
        latency: Latency {
            p50: latency.value_at_quantile(0.5),
            p99: latency.value_at_quantile(0.99),
            max: latency.max(),
        },
        database_bytes,
        payload_bytes: payload_bytes.get(),
    })
}

/// Sends update `i` and waits for its answer; returns when it was sent.
async fn produce(
    ops: &mpsc::Sender<Op>,
    i: usize,
    streams: usize,
    payload_bytes: &Cell<usize>,
) -> Result<Instant, String> {
    let mut update = bench_update(i % streams, i / streams);
    let status = update.status.as_mut().ok_or("an update without a status")?;
    status.uuid = uuid_of(i).to_vec();
    let uuid = <[u8; 16]>::try_from(status.uuid.as_slice())
        .map_err(|_| "a status uuid is 16 bytes".to_string())?;
    let payload = update.encode_to_vec();
    payload_bytes.set(payload.len());
    let (reply, answer) = oneshot::channel();
    let sent = Instant::now();
    ops.send(Op::Update {
        stream: update.stream_id,
        uuid,
        payload,
        reply,
    })
    .map_err(|_| "the writer stopped".to_string())?;
    match answer.await {
        Ok(Ok(Accepted::Queued)) => Ok(sent),
        Ok(Ok(Accepted::Duplicate)) => Err(format!(
            "update {i} refused as a duplicate ({})",
            uuid::Uuid::from_bytes(uuid)
        )),
        Ok(Err(err)) => Err(err),
        Err(_) => Err("the writer stopped before answering".into()),
    }
}

/// The upstream: each head handed on is decoded, checked against what its
/// stream was sent (each update once, in order) and acknowledged at once.
/// Ends when every acknowledgement was answered, telling `done` when.
async fn upstream(
    mut from_writer: channel::UnboundedReceiver<ToUpstream>,
    ops: mpsc::Sender<Op>,
    streams: usize,
    updates: usize,
    done: oneshot::Sender<Instant>,
) -> Result<(), String> {
    let total = streams * updates;
    let mut next = vec![0usize; streams];
    let mut acked = 0usize;
    while acked < total {
        let message = from_writer
            .recv()
            .await
            .ok_or("the writer stopped before every update was acknowledged")?;
        match message {
            ToUpstream::Forward {
                stream,
                uuid,
                payload,
            } => {
                let update = StatusUpdate::decode(payload.as_slice())
                    .map_err(|e| format!("stream {stream}: a head that does not decode: {e}"))?;
                let i = index_of(&uuid);
                let s = stream
                    .strip_prefix("bench-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&s| s < streams)
                    .ok_or_else(|| format!("a head of an unknown stream {stream}"))?;
                let in_order = i < total
                    && i % streams == s
                    && i / streams == next[s]
                    && update.stream_id == stream
                    && update.status.as_ref().map(|st| st.uuid.as_slice()) == Some(&uuid[..]);
                if !in_order {
                    return Err(format!(
                        "stream {stream}: handed update {} ({}), expected update {} of it",
                        i / streams,
                        uuid::Uuid::from_bytes(uuid),
                        next[s]
                    ));
                }
                next[s] += 1;
                ops.send(Op::Ack { stream, uuid })
                    .map_err(|_| "the writer stopped".to_string())?;
            }
            ToUpstream::Acked(Ok(())) => acked += 1,
            ToUpstream::Acked(Err(err)) => return Err(format!("acknowledgement refused: {err}")),
        }
    }
    let _ = done.send(Instant::now());
    if let Some((s, n)) = next.iter().enumerate().find(|(_, &n)| n != updates) {
        return Err(format!(
            "stream bench-{s} was handed {n} updates, {updates} expected"
        ));
    }
    Ok(())
}

/// The report as readable lines.
fn table(r: &Report) -> String {
    let mut out = format!(
        "sqlite outbox: {} streams x {} updates ({} in flight), sync {} (synchronous={})\n",
        r.streams,
        r.updates,
        r.concurrency,
        match r.sync {
            Sync::Batch => "batch",
            Sync::None => "none",
        },
        r.sqlite.synchronous
    );
    let mut line = |name: &str, value: String| out.push_str(&format!("  {name:<28} {value}\n"));
    line("updates/s", format!("{:.0}", r.updates_per_sec));
    line("acks/s", format!("{:.0}", r.acks_per_sec));
    let l = &r.update_latency_micros;
    line(
        "update latency p50/p99/max",
        format!("{} / {} / {} µs", l.p50, l.p99, l.max),
    );
    line(
        "rounds",
        format!(
            "{} ({:.1} operations each, at most {})",
            r.rounds, r.ops_per_round, r.max_ops_per_round
        ),
    );
    line("pending rows (peak)", r.pending_peak.to_string());
    line("database + WAL", format!("{} bytes", r.database_bytes));
    line("payload", format!("{} bytes", r.payload_bytes));
    let s = &r.sqlite;
    line(
        "SQLite",
        format!(
            "{} (LIBSQLITE3_FLAGS \"{}\"), journal_mode={}, locking_mode={}, cache_size={}, \
             temp_store={}, wal_autocheckpoint={}, page_size={}, memstatus={}",
            s.version,
            s.libsqlite3_flags,
            s.journal_mode,
            s.locking_mode,
            s.cache_size,
            s.temp_store,
            s.wal_autocheckpoint,
            s.page_size,
            s.memstatus
        ),
    );
    out
}
