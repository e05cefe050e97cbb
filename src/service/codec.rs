//! The gRPC codec: prost's, except that a request that does not decode is
//! `INVALID_ARGUMENT` (the caller sent bad input: e.g. a `stream_id` that is
//! not UTF-8) rather than prost's `INTERNAL`, which this service reserves
//! for storage failures (API.md §1). `build.rs` makes the generated client
//! and server use it.

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// [`ProstCodec`] with decode failures mapped to `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct ValidatingCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ValidatingCodec<T, U> {
    fn default() -> Self {
        ValidatingCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for ValidatingCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ValidatingDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ValidatingDecoder(self.0.decoder())
    }
}

/// The decoding half of [`ValidatingCodec`].
#[derive(Debug)]
pub struct ValidatingDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for ValidatingDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(buf).map_err(|status| match status.code() {
            Code::Internal => Status::invalid_argument(format!(
                "malformed message: {}; expected valid protobuf with UTF-8 strings",
                status.message()
            )),
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
