//! The codec of check answers: protobuf as usual, but an answer carrying a field this client does
//! not know is not an answer.
//!
//! A newer server may add a field to `CheckSuppressedResponse` that changes what the answer means
//! (a new reason not to send). Protobuf decoders skip unknown fields silently, so an old client
//! would read "suppressed = false" and send. This decoder refuses such an answer instead: the call
//! fails with `INTERNAL` ("fields this client does not know") and [`crate::Decision`] says "do not
//! send" until the client is upgraded.
//!
//! How it tells: prost keeps only the fields it knows, and its encoding is canonical (our server
//! encodes with prost too), so a message re-encodes to exactly the bytes received unless some were
//! skipped. An answer whose decoded message encodes shorter than what arrived carried fields (at any
//! depth) this client does not know. A foreign, non-canonical encoder could trip this too; the
//! error is then on the safe side.

use prost::{Message, bytes::Buf};
use std::marker::PhantomData;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// The message of the status an answer with unknown fields fails with.
pub(crate) const UNKNOWN_FIELDS: &str =
    "the answer carries fields this client does not know (a newer server?): upgrade the client";

/// Encodes `E` as prost does; decodes `D` refusing unknown fields.
#[derive(Debug)]
pub(crate) struct StrictCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for StrictCodec<E, D> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<E, D> Codec for StrictCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = Plain<E>;
    type Decoder = Strict<D>;

    fn encoder(&mut self) -> Plain<E> {
        Plain(PhantomData)
    }

    fn decoder(&mut self) -> Strict<D> {
        Strict(PhantomData)
    }
}

#[derive(Debug)]
pub(crate) struct Plain<E>(PhantomData<E>);

impl<E: Message> Encoder for Plain<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[derive(Debug)]
pub(crate) struct Strict<D>(PhantomData<D>);

impl<D: Message + Default> Decoder for Strict<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        decode_strict(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes `D`, refusing bytes that hold more than `D` knows.
pub(crate) fn decode_strict<D: Message + Default>(buf: impl Buf) -> Result<D, Status> {
    let received = buf.remaining();
    let message =
        D::decode(buf).map_err(|e| Status::internal(format!("decoding the answer: {e}")))?;
    if message.encoded_len() != received {
        return Err(Status::internal(UNKNOWN_FIELDS));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ClientError, Decision,
        proto::{CheckSuppressedBatchResponse, CheckSuppressedResponse, SuppressionRecord},
    };

    fn not_suppressed() -> Vec<u8> {
        CheckSuppressedResponse::default().encode_to_vec()
    }

    /// Field 1000, varint 1: what a newer server's "do not send, for a reason you do not know yet"
    /// could look like on the wire.
    fn unknown_field() -> Vec<u8> {
        let mut extra = Vec::new();
        prost::encoding::encode_key(1000, prost::encoding::WireType::Varint, &mut extra);
        prost::encoding::encode_varint(1, &mut extra);
        extra
    }

    #[test]
    fn a_known_answer_decodes() {
        let answer = CheckSuppressedResponse {
            suppressed: true,
            matched: Some(SuppressionRecord {
                receipt_id: "r".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let decoded: CheckSuppressedResponse =
            decode_strict(answer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, answer);
        let empty: CheckSuppressedResponse = decode_strict(not_suppressed().as_slice()).unwrap();
        assert!(!empty.suppressed);
    }

    #[test]
    fn an_answer_with_an_unknown_field_is_not_an_answer_and_not_send() {
        let mut bytes = not_suppressed();
        bytes.extend(unknown_field());
        // prost alone would read this as "not suppressed".
        assert!(
            !CheckSuppressedResponse::decode(bytes.as_slice())
                .unwrap()
                .suppressed
        );
        let status = decode_strict::<CheckSuppressedResponse>(bytes.as_slice()).unwrap_err();
        assert_eq!(status.message(), UNKNOWN_FIELDS);
        let decision = Decision::from_answer(Err(ClientError::Status(status)));
        assert!(!decision.may_send());
    }

    #[test]
    fn an_unknown_field_deep_in_a_batch_answer_is_refused_too() {
        // One result whose nested record carries an unknown field.
        let mut record = SuppressionRecord::default().encode_to_vec();
        record.extend(unknown_field());
        let mut result = Vec::new();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut result);
        prost::encoding::encode_varint(record.len() as u64, &mut result);
        result.extend(&record);
        let mut batch = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut batch);
        prost::encoding::encode_varint(result.len() as u64, &mut batch);
        batch.extend(&result);
        assert_eq!(
            CheckSuppressedBatchResponse::decode(batch.as_slice())
                .unwrap()
                .results
                .len(),
            1
        );
        assert!(decode_strict::<CheckSuppressedBatchResponse>(batch.as_slice()).is_err());
    }
}
