//! R3: property-based fuzzing of everything that reads checkpoint bytes, on stable Rust.
//!
//! Targets, each on arbitrary bytes, on loosely framed junk, and on valid files of the three
//! kinds after random mutations (bit flips, truncations, inserted and deleted bytes, dropped,
//! duplicated and swapped records, length prefixes set to zero, `0xFFFF_FFFF` and other huge
//! or off-by-one values, native checksums recomputed so that mutations reach the protobuf
//! decoder):
//!
//! - [`FrameReader`] and every kind's [`UpdateKind::decode_record`];
//! - [`replay`] for each kind (operation, task, native) and [`inspect_bytes`];
//! - [`recover_file`] of the bytes written to a temporary file, for each kind, strict and not.
//!
//! Properties: nothing panics; every result is one of the typed outcomes; `valid_bytes <=
//! file_bytes`; after recovery the file is exactly the valid prefix (or was removed when it held
//! no update), and replaying it again gives the same updates and a clean tail; and no single
//! allocation during decode, replay, inspection or recovery of an N-byte input is larger than
//! `max(N, 64 KiB)` — the counting allocator below (installed for this test binary only) sees
//! every request, so a length prefix of `0xFFFF_FFFF` that made us allocate 4 GiB would fail.
//! That bound holds for the inputs generated here (a few dozen records at most); a valid file of
//! many small records makes larger allocations, in proportion to its record count, which
//! [`many_valid_records_allocate_per_record`] measures and bounds.
//!
//! Case count: `SUM_FUZZ_CASES` per property (default [`DEFAULT_CASES`], which keeps the whole
//! file well under a minute in a debug build). A long run, printing the executions:
//!
//! ```text
//! SUM_FUZZ_CASES=1000000 cargo test --release --test fuzz_records -- --nocapture
//! ```
//!
//! Each of the five properties runs `SUM_FUZZ_CASES` cases (more only while shrinking a
//! failure), so that run executes 5,000,000 cases. `SUM_FUZZ_SEED=<u64>` replays a run (the
//! seed is printed with every result).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tokio::time::Instant;

use status_update_manager::error::ReplayError;
use status_update_manager::inspect::{inspect_bytes, InspectKind, Outcome, TailState};
use status_update_manager::kind::{
    encode_framed, status_uuid, Native, Operation, Record, RecordRef, Task, TaskStreamId,
    UpdateKind,
};
use status_update_manager::proto::mesos;
use status_update_manager::proto::status_update_manager::v1 as pb;
use status_update_manager::store::framing::{FrameReader, Next, LENGTH_PREFIX_BYTES};
use status_update_manager::store::SyncPolicy;
use status_update_manager::stream::recover::recover_file;
use status_update_manager::stream::replay::{replay, Replayed, Tail};

/// Cases per property unless `SUM_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 2_000;

/// Allocations this small are bookkeeping (error strings, paths, a few decoded records), never
/// sized from a length in the input.
const BOOKKEEPING_BYTES: usize = 64 * 1024;

/// The largest single allocation allowed while reading `n` bytes.
fn allocation_bound(n: usize) -> usize {
    n.max(BOOKKEEPING_BYTES)
}

// ---------------------------------------------------------------- counting allocator

/// `System`, recording the largest single request made by a thread while it is measuring.
///
/// The record is per thread (libtest runs the properties on parallel threads, whose
/// allocations must not count against each other); reading and resetting it is [`measure`].
struct MaxAllocation;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record_request(size: usize) {
    // `try_with`: an allocation during thread teardown must not panic.
    let _ = MEASURING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only touches
// const-initialized thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for MaxAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record_request(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_request(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record_request(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: MaxAllocation = MaxAllocation;

/// Stops measuring even if the measured code panics.
struct StopMeasuring;

impl Drop for StopMeasuring {
    fn drop(&mut self) {
        MEASURING.with(|on| on.set(false));
    }
}

/// Runs `f` and returns its result with the largest single allocation it requested.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    MEASURING.with(|on| on.set(true));
    let guard = StopMeasuring;
    let out = f();
    drop(guard);
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------- runner

/// Cases run by every property of this binary so far (shrinking included).
static ALL_CASES: AtomicU64 = AtomicU64::new(0);
/// Calls of a fuzzed function by every property so far.
static ALL_CALLS: AtomicU64 = AtomicU64::new(0);

fn cases() -> u32 {
    match std::env::var("SUM_FUZZ_CASES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SUM_FUZZ_CASES={text:?}: expected a case count")),
        Err(_) => DEFAULT_CASES,
    }
}

fn seed() -> u64 {
    match std::env::var("SUM_FUZZ_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SUM_FUZZ_SEED={text:?}: expected a u64")),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Runs `property` on `cases()` inputs of `strategy`; `property` returns how many calls of
/// fuzzed functions it made. Prints the executions; fails with the shrunk input and the seed.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<u64, TestCaseError>,
) {
    let seed = seed();
    let config = Config {
        cases: cases(),
        // A failure prints its shrunk input and the seed; nothing is written into the tree.
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let cases = Cell::new(0u64);
    let calls = Cell::new(0u64);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |input| {
        cases.set(cases.get() + 1);
        calls.set(calls.get() + property(input)?);
        Ok(())
    });
    let elapsed = started.elapsed();
    let all_cases = ALL_CASES.fetch_add(cases.get(), Ordering::Relaxed) + cases.get();
    let all_calls = ALL_CALLS.fetch_add(calls.get(), Ordering::Relaxed) + calls.get();
    println!(
        "fuzz {name}: {} executions ({} calls) in {:.1} s, seed {seed}; \
         all properties so far: {all_cases} executions ({all_calls} calls)",
        cases.get(),
        calls.get(),
        elapsed.as_secs_f64(),
    );
    if let Err(err) = result {
        panic!("fuzz {name} failed (SUM_FUZZ_SEED={seed}): {err}");
    }
}

// ---------------------------------------------------------------- valid files of each kind

/// What a generated UPDATE record holds, whatever its kind.
#[derive(Debug, Clone)]
struct UpdateSpec {
    uuid: [u8; 16],
    state: u8,
    terminal: bool,
    framework: bool,
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
enum RecordSpec {
    Update(UpdateSpec),
    Ack([u8; 16]),
}

/// The kinds, with what the fuzzer needs to write their files.
trait FuzzKind: UpdateKind {
    const INSPECT: InspectKind;
    /// The stream id replay and recovery are given.
    fn id() -> Self::StreamId;
    /// An update as the manager would write it.
    fn update(spec: &UpdateSpec) -> Self::Update;
}

fn states(valid: impl Fn(i32) -> bool) -> Vec<i32> {
    (0..32).filter(|s| valid(*s)).collect::<Vec<_>>()
}

fn pick(states: &[i32], n: u8) -> i32 {
    states
        .get(usize::from(n) % states.len().max(1))
        .copied()
        .unwrap_or_default()
}

impl FuzzKind for Native {
    const INSPECT: InspectKind = InspectKind::Native;

    fn id() -> String {
        "fuzz".into()
    }

    fn update(spec: &UpdateSpec) -> pb::StatusUpdate {
        const STATES: [&str; 4] = ["STARTING", "RUNNING", "FINISHED", "FAILED"];
        pb::StatusUpdate {
            stream_id: "fuzz".into(),
            framework_id: if spec.framework {
                "fw".into()
            } else {
                String::new()
            },
            status: Some(pb::Status {
                uuid: spec.uuid.to_vec(),
                state: STATES[usize::from(spec.state) % STATES.len()].into(),
                terminal: spec.terminal,
                message: String::new(),
                payload: spec.payload.clone(),
                timestamp_unix_micros: i64::from(spec.state),
            }),
            latest_status: None,
        }
    }
}

impl FuzzKind for Operation {
    const INSPECT: InspectKind = InspectKind::Operation;

    fn id() -> uuid::Uuid {
        uuid::Uuid::from_bytes([1; 16])
    }

    fn update(spec: &UpdateSpec) -> mesos::internal::UpdateOperationStatusMessage {
        let states = states(|s| mesos::OperationState::try_from(s).is_ok());
        mesos::internal::UpdateOperationStatusMessage {
            framework_id: spec
                .framework
                .then(|| mesos::FrameworkId { value: "fw".into() }),
            slave_id: None,
            status: Some(mesos::OperationStatus {
                state: pick(&states, spec.state),
                uuid: Some(mesos::Uuid {
                    value: spec.uuid.to_vec(),
                }),
                message: (!spec.payload.is_empty())
                    .then(|| String::from_utf8_lossy(&spec.payload).into_owned()),
                ..Default::default()
            }),
            latest_status: None,
            operation_uuid: Some(mesos::Uuid { value: vec![1; 16] }),
        }
    }
}

impl FuzzKind for Task {
    const INSPECT: InspectKind = InspectKind::Task;

    fn id() -> TaskStreamId {
        TaskStreamId {
            framework_id: "fw".into(),
            task_id: "task".into(),
        }
    }

    fn update(spec: &UpdateSpec) -> mesos::internal::StatusUpdate {
        let states = states(|s| mesos::TaskState::try_from(s).is_ok());
        mesos::internal::StatusUpdate {
            framework_id: Some(mesos::FrameworkId { value: "fw".into() }),
            executor_id: None,
            slave_id: spec.framework.then(|| mesos::SlaveId {
                value: "agent".into(),
            }),
            status: Some(mesos::TaskStatus {
                task_id: Some(mesos::TaskId {
                    value: "task".into(),
                }),
                state: pick(&states, spec.state),
                uuid: Some(spec.uuid.to_vec()),
                data: (!spec.payload.is_empty()).then(|| spec.payload.clone()),
                ..Default::default()
            }),
            timestamp: f64::from(spec.state),
            uuid: Some(spec.uuid.to_vec()),
            latest_state: None,
        }
    }
}

/// The file the manager would have written for `specs` (an ACK only while something is pending).
fn encode_file<K: FuzzKind>(specs: &[RecordSpec]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = 0usize;
    for spec in specs {
        let written = match spec {
            RecordSpec::Update(spec) => {
                pending += 1;
                encode_framed::<K>(RecordRef::Update(&K::update(spec)), &mut out)
            }
            RecordSpec::Ack(_) if pending == 0 => continue,
            RecordSpec::Ack(uuid) => {
                pending -= 1;
                encode_framed::<K>(RecordRef::Ack(uuid::Uuid::from_bytes(*uuid)), &mut out)
            }
        };
        written.expect("a small record fits the 32-bit length");
    }
    out
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    let update = (
        any::<[u8; 16]>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(uuid, state, terminal, framework, payload)| {
            RecordSpec::Update(UpdateSpec {
                uuid,
                state,
                terminal,
                framework,
                payload,
            })
        });
    prop_oneof![3 => update, 2 => any::<[u8; 16]>().prop_map(RecordSpec::Ack)]
}

fn valid_file<K: FuzzKind>() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(record_spec(), 0..16).prop_map(|specs| encode_file::<K>(&specs))
}

// ---------------------------------------------------------------- mutations

/// A length prefix to write over a frame's.
#[derive(Debug, Clone)]
enum Length {
    Zero,
    Max,
    Huge(u32),
    /// The real body length plus this (wrapping).
    OffBy(i8),
    /// Exactly the bytes left after the prefix: the frame swallows every later record.
    RestOfFile,
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    SetLength(Index, Length),
    DropFrame(Index),
    DuplicateFrame(Index),
    SwapFrames(Index, Index),
    Append(Vec<u8>),
}

fn length() -> impl Strategy<Value = Length> {
    prop_oneof![
        Just(Length::Zero),
        Just(Length::Max),
        (0x8000_0000u32..=u32::MAX).prop_map(Length::Huge),
        any::<u32>().prop_map(Length::Huge),
        any::<i8>().prop_map(Length::OffBy),
        Just(Length::RestOfFile),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..12);
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), length()).prop_map(|(i, l)| Mutation::SetLength(i, l)),
        1 => any::<Index>().prop_map(Mutation::DropFrame),
        1 => any::<Index>().prop_map(Mutation::DuplicateFrame),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapFrames(a, b)),
        1 => bytes().prop_map(Mutation::Append),
    ]
}

/// The complete frames at the start of `bytes`, as (start, end) offsets.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut reader = FrameReader::new(bytes);
    let mut out = Vec::new();
    while let Next::Record { start, body } = reader.next_frame() {
        let start = start as usize;
        out.push((start, start + LENGTH_PREFIX_BYTES + body.len()));
    }
    out
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::SetByte(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Mutation::Insert(i, new) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            bytes.drain(at..(at + usize::from(*n)).min(len));
        }
        Mutation::SetLength(i, length) => {
            let frames = frames(bytes);
            // With no complete frame, the file's first four bytes (if any) are the prefix.
            let (start, end) = match frames.len() {
                0 if len >= LENGTH_PREFIX_BYTES => (0, len),
                0 => return,
                n => frames[i.index(n)],
            };
            let body = (end - start - LENGTH_PREFIX_BYTES) as u32;
            let value = match length {
                Length::Zero => 0,
                Length::Max => u32::MAX,
                Length::Huge(v) => *v,
                Length::OffBy(d) => body.wrapping_add_signed(i32::from(*d)),
                Length::RestOfFile => (len - start - LENGTH_PREFIX_BYTES) as u32,
            };
            bytes[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::DropFrame(i) => {
            let frames = frames(bytes);
            if !frames.is_empty() {
                let (start, end) = frames[i.index(frames.len())];
                bytes.drain(start..end);
            }
        }
        Mutation::DuplicateFrame(i) => {
            let frames = frames(bytes);
            if !frames.is_empty() {
                let (start, end) = frames[i.index(frames.len())];
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
        Mutation::SwapFrames(a, b) => {
            let frames = frames(bytes);
            if frames.len() >= 2 {
                let (x, y) = (a.index(frames.len()), b.index(frames.len()));
                let (first, second) = (frames[x.min(y)], frames[x.max(y)]);
                if first != second {
                    let mut out = bytes[..first.0].to_vec();
                    out.extend_from_slice(&bytes[second.0..second.1]);
                    out.extend_from_slice(&bytes[first.1..second.0]);
                    out.extend_from_slice(&bytes[first.0..first.1]);
                    out.extend_from_slice(&bytes[second.1..]);
                    *bytes = out;
                }
            }
        }
        Mutation::Append(new) => bytes.extend_from_slice(new),
        Mutation::FlipBit(..) | Mutation::SetByte(..) | Mutation::Delete(..) => {}
    }
}

/// Rewrites the CRC32C trailer of every complete frame, so that a mutated native record
/// reaches the protobuf decoder instead of failing its checksum.
fn fix_checksums(bytes: &mut [u8]) {
    for (start, end) in frames(bytes) {
        let body = start + LENGTH_PREFIX_BYTES;
        if end - body >= 4 {
            let crc = crc32c::crc32c(&bytes[body..end - 4]);
            bytes[end - 4..end].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fn mutated(file: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (file, prop::collection::vec(mutation(), 0..5), any::<bool>()).prop_map(
        |(mut bytes, mutations, rechecksum)| {
            for m in &mutations {
                apply(&mut bytes, m);
            }
            if rechecksum {
                fix_checksums(&mut bytes);
            }
            bytes
        },
    )
}

/// Frames with arbitrary bodies and length prefixes (optionally with a valid native CRC).
fn framed_junk() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop::option::weighted(0.2, length()),
        prop::collection::vec(any::<u8>(), 0..48),
        any::<bool>(),
    );
    (
        prop::collection::vec(frame, 0..8),
        prop::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(|(frames, tail)| {
            let mut out = Vec::new();
            for (length, mut body, crc) in frames {
                if crc {
                    let sum = crc32c::crc32c(&body);
                    body.extend_from_slice(&sum.to_le_bytes());
                }
                let real = body.len() as u32;
                let prefix = match length {
                    None => real,
                    Some(Length::Zero) => 0,
                    Some(Length::Max) => u32::MAX,
                    Some(Length::Huge(v)) => v,
                    Some(Length::OffBy(d)) => real.wrapping_add_signed(i32::from(d)),
                    Some(Length::RestOfFile) => real,
                };
                out.extend_from_slice(&prefix.to_le_bytes());
                out.extend_from_slice(&body);
            }
            out.extend_from_slice(&tail);
            out
        })
}

/// Everything a checkpoint file could hold.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512),
        2 => framed_junk(),
        3 => mutated(valid_file::<Native>()),
        3 => mutated(valid_file::<Operation>()),
        3 => mutated(valid_file::<Task>()),
    ]
}

// ---------------------------------------------------------------- properties

fn check_allocation(what: &str, input: usize, largest: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        largest <= allocation_bound(input),
        "{what} of {input} bytes made a single allocation of {largest} bytes (bound {})",
        allocation_bound(input)
    );
    Ok(())
}

#[test]
fn frame_reader_classifies_any_bytes() {
    fuzz("frame_reader", file_bytes(), |bytes| {
        let mut reader = FrameReader::new(&bytes);
        let mut expected_start = 0u64;
        let (end, largest) = measure(|| loop {
            match reader.next_frame() {
                Next::Record { start, body } => {
                    if start != expected_start || body.is_empty() {
                        break Err(format!(
                            "record at {start} (expected {expected_start}), {} bytes",
                            body.len()
                        ));
                    }
                    expected_start = start + (LENGTH_PREFIX_BYTES + body.len()) as u64;
                    if reader.offset() != expected_start {
                        break Err(format!(
                            "offset {} after the record at {start}",
                            reader.offset()
                        ));
                    }
                }
                other => break Ok(other),
            }
        });
        prop_assert_eq!(largest, 0, "the frame reader allocated");
        let end = end.map_err(TestCaseError::fail)?;
        let n = bytes.len() as u64;
        let offset = reader.offset();
        prop_assert_eq!(offset, expected_start);
        let rest = &bytes[offset as usize..];
        match end {
            Next::End => prop_assert_eq!(offset, n),
            Next::Partial { start } => {
                prop_assert_eq!(start, offset);
                let declared = rest
                    .get(..4)
                    .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as u64);
                prop_assert!(
                    declared.is_none_or(|len| len > (rest.len() - 4) as u64),
                    "partial at {start} although {declared:?} bytes of {} follow",
                    rest.len()
                );
            }
            Next::ZeroLength { start } => {
                prop_assert_eq!(start, offset);
                prop_assert_eq!(rest.get(..4), Some(&[0u8; 4][..]));
            }
            Next::Record { .. } => unreachable!("the loop only ends on other results"),
        }
        // The reader stays put on a non-record.
        prop_assert_eq!(reader.next_frame(), end);
        Ok(1)
    });
}

/// Decodes `body` as `K`; a record that decodes re-encodes to a body that decodes to itself.
fn check_decode<K: FuzzKind>(body: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, largest) = measure(|| K::decode_record(body));
    check_allocation(&format!("{} decode_record", K::KIND), body.len(), largest)?;
    let record = match decoded {
        Ok(record) => record,
        Err(err) => {
            prop_assert!(!err.to_string().is_empty());
            return Ok(());
        }
    };
    let mut encoded = Vec::new();
    match &record {
        Record::Update(update) => {
            prop_assert!(
                status_uuid::<K>(update).is_ok(),
                "{} decoded an update without a valid status uuid: {update:?}",
                K::KIND
            );
            K::encode_record(RecordRef::Update(update), &mut encoded);
        }
        Record::Ack(uuid) => {
            prop_assert!(!uuid.is_nil(), "{} decoded an ACK of the nil uuid", K::KIND);
            K::encode_record(RecordRef::Ack(*uuid), &mut encoded);
        }
    }
    // Compared as bytes: a NaN timestamp is not equal to itself.
    let again = K::decode_record(&encoded);
    let mut reencoded = Vec::new();
    match &again {
        Ok(Record::Update(update)) => K::encode_record(RecordRef::Update(update), &mut reencoded),
        Ok(Record::Ack(uuid)) => K::encode_record(RecordRef::Ack(*uuid), &mut reencoded),
        Err(err) => {
            return Err(TestCaseError::fail(format!(
                "{}: {record:?} re-encoded does not decode: {err}",
                K::KIND
            )))
        }
    }
    prop_assert_eq!(
        reencoded,
        encoded,
        "{} record changed on a round trip",
        K::KIND
    );
    Ok(())
}

#[test]
fn decode_record_of_any_body_is_typed() {
    fuzz("decode_record", file_bytes(), |bytes| {
        // The whole input as one body, then every complete frame's body.
        let mut bodies = vec![bytes.as_slice()];
        bodies.extend(
            frames(&bytes)
                .into_iter()
                .map(|(s, e)| &bytes[s + LENGTH_PREFIX_BYTES..e]),
        );
        for body in &bodies {
            check_decode::<Native>(body)?;
            check_decode::<Operation>(body)?;
            check_decode::<Task>(body)?;
        }
        Ok(3 * bodies.len() as u64)
    });
}

/// What two replays must agree on.
fn same_replay<K: FuzzKind>(
    a: &Replayed<K>,
    b: &Replayed<K>,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(a.updates == b.updates, "{what}: {} updates differ", K::KIND);
    let pending = |r: &Replayed<K>| r.state.pending().iter().map(|p| p.uuid).collect::<Vec<_>>();
    prop_assert_eq!(pending(a), pending(b), "{}: pending", what);
    prop_assert_eq!(
        a.state.terminated(),
        b.state.terminated(),
        "{}: terminated",
        what
    );
    prop_assert_eq!(
        a.state.framework_id(),
        b.state.framework_id(),
        "{}: framework",
        what
    );
    prop_assert_eq!(
        a.state.acknowledged_count(),
        b.state.acknowledged_count(),
        "{}: acks",
        what
    );
    Ok(())
}

/// Replays `bytes` as `K` and checks the outcome.
fn check_replay<K: FuzzKind>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz.updates");
    let now = Instant::now();
    let (result, largest) = measure(|| replay::<K>(K::id(), path, bytes, now));
    check_allocation(&format!("{} replay", K::KIND), bytes.len(), largest)?;
    let n = bytes.len() as u64;
    match &result {
        Ok(replayed) => {
            prop_assert_eq!(replayed.file_bytes, n);
            let valid = replayed.valid_bytes;
            prop_assert!(valid <= n, "valid_bytes {} > file_bytes {}", valid, n);
            match &replayed.tail {
                Tail::Clean => prop_assert_eq!(valid, n, "clean tail before the end"),
                Tail::Partial => prop_assert!(valid < n, "partial tail at the end"),
                Tail::Corrupt { offset, .. } => {
                    prop_assert_eq!(
                        *offset,
                        valid,
                        "corrupt record not at the valid prefix's end"
                    );
                    prop_assert!(valid < n);
                }
            }
            // The valid prefix alone replays the same, to a clean end.
            let prefix = &bytes[..valid as usize];
            let again = replay::<K>(K::id(), path, prefix, now)
                .map_err(|e| TestCaseError::fail(format!("the valid prefix fails: {e}")))?;
            prop_assert_eq!(&again.tail, &Tail::Clean);
            prop_assert_eq!(again.valid_bytes, valid);
            same_replay(replayed, &again, "replay of the valid prefix")?;
        }
        Err(ReplayError::AckWithNothingPending {
            offset, path: p, ..
        }) => {
            prop_assert!(*offset < n, "ACK at {offset} of {n} bytes");
            prop_assert_eq!(p.as_path(), path);
            // Everything before that ACK record is complete and valid.
            let before =
                replay::<K>(K::id(), path, &bytes[..*offset as usize], now).map_err(|e| {
                    TestCaseError::fail(format!("the records before the ACK fail: {e}"))
                })?;
            prop_assert_eq!(&before.tail, &Tail::Clean);
            prop_assert!(before.state.pending().is_empty());
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "replay returned an untyped outcome: {other}"
            )))
        }
    }
    Ok(())
}

#[test]
fn replay_of_any_file_is_typed_and_bounded() {
    fuzz("replay", file_bytes(), |bytes| {
        check_replay::<Native>(&bytes)?;
        check_replay::<Operation>(&bytes)?;
        check_replay::<Task>(&bytes)?;
        Ok(3)
    });
}

fn check_inspect<K: FuzzKind>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz.updates");
    let (report, largest) = measure(|| inspect_bytes(path, K::INSPECT, bytes));
    check_allocation(&format!("{} inspect_bytes", K::KIND), bytes.len(), largest)?;
    let n = bytes.len() as u64;
    prop_assert_eq!(report.kind, K::INSPECT);
    prop_assert_eq!(report.file_bytes, n);
    prop_assert!(report.valid_bytes <= n);
    let replayed = replay::<K>(K::id(), path, bytes, Instant::now());
    match &replayed {
        Ok(r) => {
            let outcome = if r.updates.is_empty() {
                Outcome::Empty
            } else {
                Outcome::Ok
            };
            prop_assert_eq!(report.outcome, outcome);
            prop_assert_eq!(report.error.as_ref(), None);
            prop_assert_eq!(report.valid_bytes, r.valid_bytes);
            prop_assert_eq!(report.tail.as_str(), r.tail.as_str());
            prop_assert_eq!(report.updates.len(), r.updates.len());
            prop_assert_eq!(report.pending, r.state.pending().len());
            prop_assert_eq!(report.terminated, r.state.terminated());
        }
        Err(ReplayError::AckWithNothingPending { offset, .. }) => {
            prop_assert_eq!(report.outcome, Outcome::Error);
            prop_assert_eq!(report.tail, TailState::Corrupt);
            prop_assert_eq!(report.valid_bytes, *offset);
            prop_assert!(report
                .error
                .as_ref()
                .is_some_and(|e| e.contains("nothing is pending")));
        }
        Err(other) => return Err(TestCaseError::fail(format!("replay failed: {other}"))),
    }
    let json = serde_json::to_string(&report).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let field = format!("\"file_bytes\":{n}");
    prop_assert!(
        json.contains(&field),
        "{} report lacks {}: {}",
        K::KIND,
        field,
        json
    );
    Ok(())
}

#[test]
fn inspect_of_any_file_agrees_with_replay() {
    fuzz("inspect_bytes", file_bytes(), |bytes| {
        check_inspect::<Native>(&bytes)?;
        check_inspect::<Operation>(&bytes)?;
        check_inspect::<Task>(&bytes)?;
        Ok(3)
    });
}

fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

/// Recovers `bytes` written to `path` and checks the file afterwards against replay.
fn check_recover<K: FuzzKind>(
    path: &Path,
    bytes: &[u8],
    strict: bool,
) -> Result<(), TestCaseError> {
    let what = format!("{} recovery (strict={strict})", K::KIND);
    fs::write(path, bytes)
        .map_err(|e| TestCaseError::fail(format!("write {}: {e}", path.display())))?;
    let now = Instant::now();
    let expected = replay::<K>(K::id(), path, bytes, now);
    let (result, largest) =
        measure(|| recover_file::<K>(K::id(), path, strict, SyncPolicy::None, now, None));
    check_allocation(&what, bytes.len(), largest)?;
    let n = bytes.len() as u64;
    let check_prefix = |expected: &Replayed<K>| -> Result<(), TestCaseError> {
        let on_disk =
            fs::read(path).map_err(|e| TestCaseError::fail(format!("{what}: read back: {e}")))?;
        prop_assert_eq!(
            on_disk.len() as u64,
            expected.valid_bytes,
            "{}: file length",
            what
        );
        prop_assert_eq!(
            &on_disk[..],
            &bytes[..on_disk.len()],
            "{}: the prefix changed",
            what
        );
        let again = replay::<K>(K::id(), path, &on_disk, now)
            .map_err(|e| TestCaseError::fail(format!("{what}: the truncated file fails: {e}")))?;
        prop_assert_eq!(&again.tail, &Tail::Clean, "{}: tail after recovery", what);
        same_replay(expected, &again, &what)
    };
    match (&expected, result) {
        (Ok(expected), Ok(Some(recovered))) => {
            prop_assert!(
                !expected.updates.is_empty(),
                "{}: a stream without updates",
                what
            );
            let corrupt = matches!(expected.tail, Tail::Corrupt { .. });
            prop_assert!(
                !(strict && corrupt),
                "{}: strict recovery accepted a corrupt record",
                what
            );
            prop_assert_eq!(recovered.error.is_some(), corrupt, "{}: error mark", what);
            prop_assert_eq!(recovered.replayed.valid_bytes, expected.valid_bytes);
            prop_assert_eq!(recovered.replayed.file_bytes, n);
            prop_assert_eq!(
                recovered.log.len(),
                expected.valid_bytes,
                "{}: log length",
                what
            );
            same_replay(expected, &recovered.replayed, &what)?;
            drop(recovered);
            check_prefix(expected)?;
        }
        (Ok(expected), Ok(None)) => {
            prop_assert!(expected.updates.is_empty(), "{}: updates lost", what);
            let corrupt = matches!(expected.tail, Tail::Corrupt { .. });
            prop_assert!(
                !(strict && corrupt),
                "{}: strict recovery accepted a corrupt record",
                what
            );
            prop_assert_eq!(
                file_len(path),
                None,
                "{}: an empty stream's file stays",
                what
            );
        }
        (
            Ok(expected),
            Err(ReplayError::Corrupt {
                offset,
                reason,
                path: p,
            }),
        ) => {
            prop_assert!(
                strict,
                "{}: non-strict recovery failed on a corrupt record",
                what
            );
            prop_assert_eq!(
                &expected.tail,
                &Tail::Corrupt { offset, reason },
                "{}: the error is not replay's corrupt tail",
                what
            );
            prop_assert_eq!(p.as_path(), path);
            check_prefix(expected)?;
        }
        (
            Err(ReplayError::AckWithNothingPending { offset: a, .. }),
            Err(ReplayError::AckWithNothingPending { offset: b, .. }),
        ) => {
            prop_assert_eq!(*a, b);
            let on_disk = fs::read(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                on_disk == bytes,
                "{}: the file changed although recovery failed",
                what
            );
        }
        (expected, got) => {
            return Err(TestCaseError::fail(format!(
                "{what}: replay said {:?}, recovery said {:?}",
                expected
                    .as_ref()
                    .map(|r| (&r.tail, r.valid_bytes, r.updates.len())),
                got.map(|r| r.map(|r| r.replayed.valid_bytes))
            )))
        }
    }
    let _ = fs::remove_file(path);
    Ok(())
}

#[test]
fn recovery_of_any_file_leaves_exactly_the_valid_prefix() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("fuzz.updates");
    fuzz("recover_file", file_bytes(), |bytes| {
        for strict in [true, false] {
            check_recover::<Native>(&path, &bytes, strict)?;
            check_recover::<Operation>(&path, &bytes, strict)?;
            check_recover::<Task>(&path, &bytes, strict)?;
        }
        Ok(6)
    });
}

// ---------------------------------------------------------------- fixed cases

#[test]
fn the_allocation_counter_sees_a_large_request() {
    let (v, largest) = measure(|| Vec::<u8>::with_capacity(1 << 20));
    assert!(
        largest >= 1 << 20,
        "measured {largest} bytes for a 1 MiB Vec"
    );
    drop(v);
    let (_, outside) = measure(|| ());
    assert_eq!(outside, 0, "a new measurement starts at zero");
}

/// Absurd length prefixes, alone and after valid records, never allocate what they declare:
/// every reader of every kind stays within bookkeeping size.
#[test]
fn huge_length_prefixes_allocate_nothing_large() {
    fn cases<K: FuzzKind>() -> Vec<(String, Vec<u8>)> {
        let good = encode_file::<K>(&[RecordSpec::Update(UpdateSpec {
            uuid: [7; 16],
            state: 1,
            terminal: false,
            framework: true,
            payload: b"payload".to_vec(),
        })]);
        let mut cases = Vec::new();
        for declared in [u32::MAX, 0xFFFF_FFF0, 0x8000_0000, 0x7FFF_FFFF, 1 << 24] {
            let prefix = declared.to_le_bytes();
            cases.push((format!("{declared:#x} alone"), prefix.to_vec()));
            let mut with_body = prefix.to_vec();
            with_body.extend_from_slice(&[0xAB; 100]);
            cases.push((format!("{declared:#x} and 100 bytes"), with_body));
            let mut after = good.clone();
            after.extend_from_slice(&prefix);
            after.extend_from_slice(&good);
            cases.push((format!("{declared:#x} after a valid record"), after));
        }
        cases
    }
    fn run<K: FuzzKind>(dir: &Path) {
        for (name, bytes) in cases::<K>() {
            let what = format!("{} file with a length of {name}", K::KIND);
            let (_, largest) = measure(|| replay::<K>(K::id(), dir, &bytes, Instant::now()));
            assert!(
                largest <= BOOKKEEPING_BYTES,
                "{what}: replay allocated {largest} bytes"
            );
            let (_, largest) = measure(|| inspect_bytes(dir, K::INSPECT, &bytes));
            assert!(
                largest <= BOOKKEEPING_BYTES,
                "{what}: inspect allocated {largest} bytes"
            );
            for strict in [true, false] {
                let path = dir.join("huge.updates");
                fs::write(&path, &bytes).unwrap();
                let (_, largest) = measure(|| {
                    recover_file::<K>(
                        K::id(),
                        &path,
                        strict,
                        SyncPolicy::None,
                        Instant::now(),
                        None,
                    )
                });
                assert!(
                    largest <= BOOKKEEPING_BYTES,
                    "{what}: recovery allocated {largest} bytes"
                );
                check_recover::<K>(&path, &bytes, strict).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    run::<Native>(dir.path());
    run::<Operation>(dir.path());
    run::<Task>(dir.path());
}

/// A large valid file stays within the same bound as the fuzzed inputs: no single allocation
/// during replay (or inspection) exceeds `max(N, 64 KiB)`, because the queue and the list of
/// updates hold boxes (40-byte slots, smaller than any record) sized once from the number of
/// frames, and each decoded update is its own allocation.
#[test]
fn many_valid_records_allocate_per_record() {
    fn run<K: FuzzKind>(records: usize) {
        let specs: Vec<RecordSpec> = (1..=records as u64)
            .map(|i| {
                let mut uuid = [0u8; 16];
                uuid[..8].copy_from_slice(&i.to_le_bytes());
                RecordSpec::Update(UpdateSpec {
                    uuid,
                    state: 1,
                    terminal: false,
                    framework: false,
                    payload: Vec::new(),
                })
            })
            .collect();
        let bytes = encode_file::<K>(&specs);
        let (replayed, largest) =
            measure(|| replay::<K>(K::id(), Path::new("many.updates"), &bytes, Instant::now()));
        let replayed = replayed.expect("a valid file replays");
        assert_eq!(
            (replayed.updates.len(), &replayed.tail),
            (records, &Tail::Clean)
        );
        let bound = allocation_bound(bytes.len());
        println!(
            "{}: {records} records, {} bytes: largest allocation {largest} bytes ({:.1}x the file)",
            K::KIND,
            bytes.len(),
            largest as f64 / bytes.len() as f64
        );
        assert!(
            largest <= bound,
            "{}: {records} records in {} bytes made an allocation of {largest} bytes (bound {bound})",
            K::KIND,
            bytes.len()
        );
        let (report, largest) =
            measure(|| inspect_bytes(Path::new("many.updates"), K::INSPECT, &bytes));
        assert_eq!(report.updates.len(), records);
        assert!(
            largest <= bound,
            "{}: inspecting {records} records in {} bytes made an allocation of {largest} bytes (bound {bound})",
            K::KIND,
            bytes.len()
        );
    }
    for records in [1, 100, 20_000] {
        run::<Native>(records);
        run::<Operation>(records);
        run::<Task>(records);
    }
}
