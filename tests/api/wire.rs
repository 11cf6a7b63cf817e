//! What arrives on the wire, below the generated client: bytes that are not the message a method
//! expects are the caller's error.

use crate::helpers::*;
use bytes::{Buf, BufMut};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Sends the bytes it is given as the request message, unchanged; never decodes an answer.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct NoDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = NoDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> NoDecoder {
        NoDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for NoDecoder {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        buf.advance(buf.remaining());
        Ok(Some(()))
    }
}

/// A body that is not valid protobuf (a field header announcing more bytes than follow) is
/// INVALID_ARGUMENT, saying it did not decode; INTERNAL is for our own faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_protobuf_is_invalid_argument() {
    let app = spawn_app(Backend::Sqlite).await;
    let channel = app.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(vec![0x0a, 0x7f, 0x01]);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    let path = http::uri::PathAndQuery::from_static("/suppress.v1.Suppression/CheckSuppressed");
    let status = grpc
        .unary(request, path, RawCodec)
        .await
        .expect_err("garbage is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("decode"), "{}", status.message());
}
