//! Generated protobuf code (prost), one module per proto package. Never
//! edited by hand: the sources are in `proto/`. The gRPC client and server
//! (tonic) are generated only with the `service` feature.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
#![allow(clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/protos.rs"));

/// The encoded `FileDescriptorSet` of every proto in `proto/` (for server
/// reflection).
#[cfg(feature = "service")]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
