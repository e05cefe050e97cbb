//! Record framing: a 4-byte little-endian `u32` length followed by that many body bytes.
//!
//! This module knows nothing about what a body means. The writer side ([`encode_frame`])
//! prefixes a body with its length; the reader side ([`FrameReader`]) walks a whole file that
//! has already been read into memory and classifies what it finds at each position (see
//! [`Next`]). Decoding a body is the caller's job: a body that fails to decode is corruption at
//! the frame's `start`, exactly like a [`Next::ZeroLength`] frame.
//!
//! The reader never allocates: a frame's body is a sub-slice of the input, so a corrupt length
//! such as `0xFFFF_FFFF` costs nothing and is reported as [`Next::Partial`] (a torn tail),
//! because it claims more bytes than the file holds.

/// Number of bytes of the length prefix in front of every record body.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// A record body too long to be described by a `u32` length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record body of {len} bytes does not fit a 32-bit length prefix (at most {max} bytes)", max = u32::MAX)]
pub struct FrameTooLarge {
    /// Length of the rejected body, in bytes.
    pub len: usize,
}

/// Returns the length prefix for a body of `len` bytes, or an error if it does not fit in a `u32`.
fn prefix_for(len: usize) -> Result<u32, FrameTooLarge> {
    u32::try_from(len).map_err(|_| FrameTooLarge { len })
}

/// Appends one frame (`u32` little-endian length of `body`, then `body`) to `out`.
///
/// On error `out` is left unchanged.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    let len = prefix_for(body.len())?;
    out.reserve(LENGTH_PREFIX_BYTES.saturating_add(body.len()));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// What [`FrameReader::next_frame`] found at the reader's current offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'a> {
    /// A complete frame starting at byte `start`; `body` excludes the length prefix.
    /// The reader has moved past it.
    Record {
        /// Offset of the frame's length prefix in the input.
        start: u64,
        /// The frame's body (never empty).
        body: &'a [u8],
    },
    /// No bytes left: a clean end of the input.
    End,
    /// A torn tail starting at `start`: 1 to 3 bytes of a length prefix, or a declared length
    /// larger than the bytes that follow it. This is the normal result of a crash during an
    /// append; recovery truncates it silently.
    Partial {
        /// Offset of the incomplete frame in the input.
        start: u64,
    },
    /// A frame that declares a length of 0, at `start`. No writer produces one (every record
    /// has required fields), so it is corruption, as in Mesos where an empty body fails to parse.
    ZeroLength {
        /// Offset of the zero-length frame in the input.
        start: u64,
    },
}

/// Walks the frames of an in-memory buffer (normally a whole checkpoint file).
///
/// The reader only advances over [`Next::Record`] results, so after any other result
/// [`FrameReader::offset`] is the end of the last complete frame: the length the file must be
/// truncated to.
#[derive(Debug, Clone)]
pub struct FrameReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Widens a buffer offset to a file offset (lossless on every supported platform).
pub(super) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl<'a> FrameReader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// End offset of the last complete frame returned (0 before the first one).
    pub fn offset(&self) -> u64 {
        to_u64(self.pos)
    }

    /// Classifies the bytes at the current offset; advances only past a complete frame.
    pub fn next_frame(&mut self) -> Next<'a> {
        let start = to_u64(self.pos);
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Next::End;
        }
        let Some((prefix, tail)) = rest.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Next::Partial { start };
        };
        let declared = u32::from_le_bytes(*prefix);
        if declared == 0 {
            return Next::ZeroLength { start };
        }
        // A length that does not fit in usize certainly exceeds the bytes left.
        let Ok(len) = usize::try_from(declared) else {
            return Next::Partial { start };
        };
        let Some(body) = tail.get(..len) else {
            return Next::Partial { start };
        };
        self.pos = self
            .pos
            .saturating_add(LENGTH_PREFIX_BYTES)
            .saturating_add(len);
        Next::Record { start, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            assert_eq!(encode_frame(body, &mut out), Ok(()));
        }
        out
    }

    /// Reads every record until a non-record result; returns (start, body) pairs and that result.
    fn read_all(buf: &[u8]) -> (Vec<(u64, Vec<u8>)>, Next<'_>, u64) {
        let mut reader = FrameReader::new(buf);
        let mut records = Vec::new();
        loop {
            match reader.next_frame() {
                Next::Record { start, body } => records.push((start, body.to_vec())),
                other => return (records, other, reader.offset()),
            }
        }
    }

    #[test]
    fn encode_writes_little_endian_prefix() {
        let mut out = vec![0xAA];
        assert_eq!(encode_frame(&[1, 2, 3], &mut out), Ok(()));
        assert_eq!(out, [0xAA, 3, 0, 0, 0, 1, 2, 3]);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn prefix_rejects_bodies_over_u32() {
        let too_long = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
        assert_eq!(prefix_for(too_long), Err(FrameTooLarge { len: too_long }));
        assert_eq!(prefix_for(u32::MAX as usize), Ok(u32::MAX));
    }

    #[test]
    fn round_trip_of_several_frames() {
        let bodies: [&[u8]; 4] = [b"a", b"hello", &[0u8; 300], b"\x08\x00\x12\x00"];
        let buf = encode_all(&bodies);
        let (records, end, offset) = read_all(&buf);
        assert_eq!(end, Next::End);
        assert_eq!(offset, to_u64(buf.len()));
        let mut expected_start = 0u64;
        assert_eq!(records.len(), bodies.len());
        for ((start, body), expected) in records.iter().zip(bodies) {
            assert_eq!(*start, expected_start);
            assert_eq!(body.as_slice(), expected);
            expected_start += to_u64(LENGTH_PREFIX_BYTES + expected.len());
        }
    }

    #[test]
    fn every_truncation_inside_the_last_frame_is_partial() {
        let bodies: [&[u8]; 3] = [b"first", b"second record", b"last one here"];
        let full = encode_all(&bodies);
        let last_start = full.len() - (LENGTH_PREFIX_BYTES + bodies[2].len());
        for cut in last_start + 1..full.len() {
            let buf = full.get(..cut).unwrap_or_default();
            let (records, end, offset) = read_all(buf);
            assert_eq!(
                end,
                Next::Partial {
                    start: to_u64(last_start)
                },
                "cut at {cut}"
            );
            assert_eq!(offset, to_u64(last_start), "cut at {cut}");
            let got: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
            assert_eq!(got, bodies[..2], "cut at {cut}");
        }
        // Cutting exactly at the frame boundary is a clean end.
        let (records, end, _) = read_all(full.get(..last_start).unwrap_or_default());
        assert_eq!((records.len(), end), (2, Next::End));
    }

    #[test]
    fn special_inputs_are_classified() {
        let mut huge = encode_all(&[b"ok"]);
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        let mut zero = encode_all(&[b"ok"]);
        zero.extend_from_slice(&[0, 0, 0, 0]);
        zero.extend_from_slice(&encode_all(&[b"after"]));
        let cases: [(&str, Vec<u8>, usize, Next<'static>); 6] = [
            ("empty input", vec![], 0, Next::End),
            ("huge length", huge, 1, Next::Partial { start: 6 }),
            ("zero length", zero, 1, Next::ZeroLength { start: 6 }),
            (
                "lone zero length",
                vec![0, 0, 0, 0],
                0,
                Next::ZeroLength { start: 0 },
            ),
            (
                "three prefix bytes",
                vec![5, 0, 0],
                0,
                Next::Partial { start: 0 },
            ),
            (
                "length one past the end",
                vec![2, 0, 0, 0, 9],
                0,
                Next::Partial { start: 0 },
            ),
        ];
        for (name, buf, n_records, expected) in cases {
            let (records, end, offset) = read_all(&buf);
            assert_eq!(records.len(), n_records, "{name}");
            assert_eq!(end, expected, "{name}");
            assert_eq!(offset, to_u64(n_records * 6), "{name}");
        }
    }

    #[test]
    fn reader_does_not_advance_past_non_records() {
        let buf = [0u8, 0, 0, 0];
        let mut reader = FrameReader::new(&buf);
        for _ in 0..3 {
            assert_eq!(reader.next_frame(), Next::ZeroLength { start: 0 });
            assert_eq!(reader.offset(), 0);
        }
    }
}
