//! The protobuf codec of the generated server and client: prost's (`tonic_prost::ProstCodec`),
//! except that bytes which do not decode as the expected message are `INVALID_ARGUMENT`. prost's
//! codec says `INTERNAL`, the code for our own faults; a request that is not valid protobuf is the
//! caller's error, and the message says what did not decode.
//!
//! The client shares it (tonic generates both with one codec): a client that cannot decode an
//! answer says `INVALID_ARGUMENT` too, with the same message.

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(self.0.decoder())
    }
}

/// prost's decoder, with its decode failures reported as the sender's.
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            use super::details::{reason, rich};
            rich(
                tonic::Code::InvalidArgument,
                s.message(),
                reason::MALFORMED_REQUEST,
                None,
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
