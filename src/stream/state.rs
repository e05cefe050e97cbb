//! The decisions of one stream, with no I/O and no clock.
//!
//! A stream is a FIFO of pending updates plus the status uuids it ever
//! received, each marked once acknowledged. Live traffic runs in two steps
//! around the checkpoint write: `check_*` decides (and changes nothing), the caller
//! appends the record, then `apply_*` changes the state and says what to do
//! next. Replay of a file calls the same `apply_*` functions, so a recovered
//! stream is exactly the stream that wrote the file.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;

use tokio::time::Instant;

use crate::error::{AckError, UpdateError};
use crate::kind::{encode_framed, Record, RecordError, RecordRef, StatusUuid, UpdateKind};

/// The status uuids a stream ever received, each with whether it was
/// acknowledged (one table for both questions: one lookup per check, 17
/// bytes per uuid). Hashed with a small keyless hasher instead of SipHash:
/// no per-table seed and a few multiplications per uuid. The final
/// avalanche (murmur3's `fmix64`) makes every input bit reach the low bits
/// the table indexes with, so uuids that differ only in a few bytes
/// (sequential, or v7's timestamp prefix) spread as well as random v4s.
pub type UuidMap = HashMap<StatusUuid, Acknowledged, BuildHasherDefault<UuidHasher>>;

/// Whether a received uuid was acknowledged (the value of a [`UuidMap`]).
pub type Acknowledged = bool;

/// See [`UuidMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidHasher(u64);

impl Hasher for UuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// One queued, unacknowledged update.
///
/// The update is kept as the body of its UPDATE record (the bytes the
/// checkpoint file holds for it), not as a decoded message: one allocation
/// of about the record's size instead of a message struct plus one per
/// string and bytes field, which is most of an idle stream's memory. It is
/// decoded again when it is forwarded (a forward needs a copy anyway),
/// unless the stream still holds it as it arrived
/// ([`StreamState::keep_arrived`]). A queue slot (48 bytes) stays smaller
/// than the smallest framed record, so replaying a file never makes one
/// allocation larger than the file.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Whether acknowledging it ends the stream (first byte), then the
    /// record body.
    stored: Box<[u8]>,
    /// Its status uuid.
    pub uuid: StatusUuid,
    /// When it was queued (for the oldest-pending age).
    pub since: Instant,
}

impl Pending {
    fn new(terminal: bool, record: &[u8], uuid: StatusUuid, since: Instant) -> Self {
        let mut stored = Vec::with_capacity(record.len() + 1);
        stored.push(u8::from(terminal));
        stored.extend_from_slice(record);
        Pending {
            stored: stored.into_boxed_slice(),
            uuid,
            since,
        }
    }

    /// The body of the UPDATE record it was checkpointed as.
    pub fn record(&self) -> &[u8] {
        &self.stored[1..]
    }

    /// Whether acknowledging it ends the stream.
    pub fn is_terminal(&self) -> bool {
        self.stored[0] != 0
    }

    /// The update, decoded from its record.
    pub fn update<K: UpdateKind>(&self) -> Result<K::Update, RecordError> {
        match K::decode_record(self.record())? {
            Record::Update(update) => Ok(update),
            Record::Ack(_) => Err(RecordError::Decode(
                "a queued record holds an ACK, not an UPDATE".into(),
            )),
        }
    }
}

/// Why an accepted-looking update is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    /// The uuid was already acknowledged.
    AlreadyAcknowledged,
    /// The uuid was already received and is still pending (or was dropped).
    AlreadyReceived,
}

/// What `check_update` concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateDecision {
    /// Checkpoint it, then `apply_update`.
    Accept,
    /// Do nothing and report success.
    Duplicate(Duplicate),
}

/// What the caller must do after `apply_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateEffect {
    /// The new update is the head: forward it with a fresh backoff.
    pub forward_head: bool,
}

/// What the caller must do after `apply_ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEffect {
    /// The acknowledged update was terminal: the stream ends.
    pub terminated: bool,
    /// Updates still queued behind a terminal one, dropped unsent.
    pub dropped: usize,
    /// A next head exists: forward it with a fresh backoff.
    pub forward_head: bool,
}

/// The state of one stream.
#[derive(Debug, Clone)]
pub struct StreamState<K: UpdateKind> {
    id: K::StreamId,
    checkpointed: bool,
    framework_id: Option<Box<str>>,
    pending: VecDeque<Pending>,
    kind: PhantomData<K>,
    /// Every uuid received, and whether it was acknowledged.
    uuids: UuidMap,
    /// How many of `uuids` were acknowledged.
    acknowledged: u32,
    terminated: bool,
    /// The newest queued update as it arrived, until it is forwarded as the
    /// head (see [`keep_arrived`](Self::keep_arrived)). Boxed: an idle
    /// stream, whose head was forwarded, holds none.
    arrived: Option<Box<(StatusUuid, K::Update)>>,
}

impl<K: UpdateKind> StreamState<K> {
    /// An empty stream.
    pub fn new(id: K::StreamId, checkpointed: bool, framework_id: Option<String>) -> Self {
        StreamState {
            id,
            checkpointed,
            framework_id: framework_id.map(String::into_boxed_str),
            pending: VecDeque::new(),
            kind: PhantomData,
            uuids: UuidMap::default(),
            acknowledged: 0,
            terminated: false,
            arrived: None,
        }
    }

    /// The stream's key.
    pub fn id(&self) -> &K::StreamId {
        &self.id
    }

    /// Whether the stream has a checkpoint file.
    pub fn checkpointed(&self) -> bool {
        self.checkpointed
    }

    /// The stream's framework, if any.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// The queued updates, head first.
    pub fn pending(&self) -> &VecDeque<Pending> {
        &self.pending
    }

    /// The head of the queue.
    pub fn head(&self) -> Option<&Pending> {
        self.pending.front()
    }

    /// Distinct status uuids ever accepted.
    pub fn received_count(&self) -> usize {
        self.uuids.len()
    }

    /// Status uuids acknowledged.
    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged as usize
    }

    /// Whether `uuid` was acknowledged on this stream.
    pub fn is_acknowledged(&self, uuid: StatusUuid) -> bool {
        self.uuids.get(&uuid) == Some(&true)
    }

    /// Whether a terminal update was acknowledged.
    pub fn terminated(&self) -> bool {
        self.terminated
    }

    /// Decides what to do with a live update (validated by
    /// [`crate::kind::validate_update`]). Changes nothing.
    ///
    /// Order as Mesos: stream ended, checkpoint flag, framework id, then the
    /// duplicate checks (acknowledged before received).
    pub fn check_update(
        &self,
        update: &K::Update,
        uuid: StatusUuid,
        checkpoint: bool,
    ) -> Result<UpdateDecision, UpdateError> {
        if self.terminated {
            return Err(UpdateError::StreamClosing {
                stream: self.id.to_string(),
                uuid: uuid.to_string(),
            });
        }
        if checkpoint != self.checkpointed {
            return Err(UpdateError::CheckpointMismatch {
                stream: self.id.to_string(),
                uuid: uuid.to_string(),
                expected: self.checkpointed,
                actual: checkpoint,
            });
        }
        let framework = K::framework_id(update);
        if framework != self.framework_id.as_deref() {
            return Err(UpdateError::FrameworkMismatch {
                stream: self.id.to_string(),
                uuid: uuid.to_string(),
                expected: self.framework_id.as_deref().map(str::to_string),
                actual: framework.map(str::to_string),
            });
        }
        match self.uuids.get(&uuid) {
            Some(true) => return Ok(UpdateDecision::Duplicate(Duplicate::AlreadyAcknowledged)),
            Some(false) => return Ok(UpdateDecision::Duplicate(Duplicate::AlreadyReceived)),
            None => {}
        }
        Ok(UpdateDecision::Accept)
    }

    /// Queues an update, encoding its record here (for a stream without a
    /// file, and for tests); [`apply_record`](Self::apply_record) takes the
    /// record the caller already encoded for the file.
    pub fn apply_update(
        &mut self,
        update: &K::Update,
        uuid: StatusUuid,
        now: Instant,
    ) -> Result<UpdateEffect, crate::kind::InvalidUpdate> {
        let mut frame = Vec::new();
        encode_framed::<K>(RecordRef::Update(update), &mut frame)?;
        Ok(self.apply_record(
            update,
            &frame[crate::store::framing::LENGTH_PREFIX_BYTES..],
            uuid,
            now,
        ))
    }

    /// Queues an update that was checkpointed as the UPDATE record `record`
    /// (its body, without the length prefix), or replayed from one.
    pub fn apply_record(
        &mut self,
        update: &K::Update,
        record: &[u8],
        uuid: StatusUuid,
        now: Instant,
    ) -> UpdateEffect {
        if let Some(framework) = K::framework_id(update) {
            if self.framework_id.as_deref() != Some(framework) {
                self.framework_id = Some(framework.into());
            }
        }
        self.uuids.entry(uuid).or_insert(false);
        if self.pending.capacity() == 0 {
            // Most streams hold one pending update at a time: no spare slots.
            self.pending.reserve_exact(1);
        }
        self.pending
            .push_back(Pending::new(K::is_terminal(update), record, uuid, now));
        UpdateEffect {
            forward_head: self.pending.len() == 1,
        }
    }

    /// Decides whether an acknowledgement of `uuid` is valid. Changes nothing.
    ///
    /// A uuid already acknowledged is always [`AckError::DuplicateAck`]
    /// (checked first, so a client retrying an ack whose reply was lost can
    /// tell it succeeded); then nothing pending; then a uuid other than the
    /// head's.
    pub fn check_ack(&self, uuid: StatusUuid) -> Result<(), AckError> {
        if self.is_acknowledged(uuid) {
            return Err(AckError::DuplicateAck {
                stream: self.id.to_string(),
                uuid: uuid.to_string(),
            });
        }
        let Some(head) = self.pending.front() else {
            return Err(AckError::NothingPending {
                stream: self.id.to_string(),
                uuid: uuid.to_string(),
            });
        };
        if head.uuid != uuid {
            return Err(AckError::UnexpectedAck {
                stream: self.id.to_string(),
                expected: head.uuid.to_string(),
                got: uuid.to_string(),
            });
        }
        Ok(())
    }

    /// Pops the head after its ACK record was checkpointed (or replayed).
    ///
    /// Replay matches ACK records by position, as Mesos does: the head is
    /// what the record acknowledges. Returns `None` if nothing is pending.
    pub fn apply_ack(&mut self) -> Option<AckEffect> {
        let head = self.pending.pop_front()?;
        if let Some(acked) = self.uuids.get_mut(&head.uuid) {
            if !*acked {
                *acked = true;
                self.acknowledged = self.acknowledged.saturating_add(1);
            }
        }
        if !self.terminated {
            self.terminated = head.is_terminal();
        }
        let dropped = if self.terminated {
            let dropped = self.pending.len();
            self.pending.clear();
            dropped
        } else {
            0
        };
        if self.pending.is_empty() {
            self.arrived = None;
        }
        Some(AckEffect {
            terminated: self.terminated,
            dropped,
            forward_head: !self.terminated && !self.pending.is_empty(),
        })
    }

    /// Makes room for `additional` more pending updates without growing
    /// later (replay knows how many records a file holds).
    pub fn reserve_exact(&mut self, additional: usize) {
        self.pending.reserve_exact(additional);
    }

    /// Keeps `update`, as it arrived, if it is the newest queued update
    /// (`uuid` is the tail's): a forward needs the head decoded and the
    /// newest update's status, and the record was encoded from this update,
    /// so [`forward_copy`](Self::forward_copy) uses it instead of decoding
    /// either record. When updates arrive faster than their acks, each one
    /// is queued behind the head and then forwarded once its turn comes: with
    /// this, neither step decodes it. Replaces what was kept before.
    pub fn keep_arrived(&mut self, uuid: StatusUuid, update: K::Update) {
        if self
            .pending
            .back()
            .is_some_and(|newest| newest.uuid == uuid)
        {
            self.arrived = Some(Box::new((uuid, update)));
        }
    }

    /// The head as it is forwarded, with `latest_status` set to the status
    /// of the newest queued update: each of the two taken from the update
    /// kept by [`keep_arrived`](Self::keep_arrived) when it is that update,
    /// otherwise decoded from its record. A kept update forwarded as the
    /// head is not kept any longer (a resend decodes it).
    pub fn forward_copy(&mut self) -> Option<Result<(StatusUuid, K::Update), RecordError>> {
        let head = self.pending.front()?;
        let newest = self.pending.back()?;
        // Kept for an update that is no longer the newest: not usable.
        if self.arrived.as_ref().is_some_and(|a| a.0 != newest.uuid) {
            self.arrived = None;
        }
        if self.pending.len() == 1 {
            let update = match self.arrived.take() {
                Some(arrived) => Ok(arrived.1),
                None => head.update::<K>(),
            };
            return Some(update.map(|mut update| {
                K::set_latest_status(&mut update, None);
                (head.uuid, update)
            }));
        }
        Some(head.update::<K>().and_then(|mut update| {
            match self.arrived.as_deref() {
                Some((_, newest)) => K::set_latest_status(&mut update, Some(newest)),
                None => K::set_latest_status(&mut update, Some(&newest.update::<K>()?)),
            }
            Ok((head.uuid, update))
        }))
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
