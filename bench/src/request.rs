//! Every RPC of `suppress.v1.Suppression`, and its requests read from proto3 JSON as ghz and grpcurl
//! write it (field names in `lowerCamelCase` or as in the `.proto`, enums by name or number,
//! timestamps in RFC 3339), by reflection over the descriptor set that `build.rs` compiles for the
//! server's reflection service (`suppressd::proto::FILE_DESCRIPTOR_SET`). A new RPC or field is
//! callable here the moment it is in the `.proto`; an unknown field is an error, not dropped.

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value;
use std::sync::OnceLock;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

const SERVICE: &str = "suppress.v1.Suppression";

/// The service's descriptors, decoded once.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(suppressd::proto::FILE_DESCRIPTOR_SET)
            .expect("build.rs writes a valid descriptor set")
    })
}

/// One RPC of the Suppression service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    method: prost_reflect::MethodDescriptor,
    /// The input and output messages' short names, for the call templates.
    input: String,
    output: String,
}

impl Call {
    /// Every RPC of the service, in the `.proto`'s order.
    pub fn all() -> Vec<Call> {
        pool()
            .get_service_by_name(SERVICE)
            .expect("the descriptor set holds the service")
            .methods()
            .map(|method| Call {
                input: method.input().name().to_owned(),
                output: method.output().name().to_owned(),
                method,
            })
            .collect()
    }

    /// Accepts `suppress.v1.Suppression.CheckSuppressed` and `suppress.v1.Suppression/CheckSuppressed`.
    pub fn parse(name: &str) -> Result<Call, String> {
        let method = name
            .strip_prefix(SERVICE)
            .and_then(|m| m.strip_prefix(['.', '/']))
            .unwrap_or("");
        let all = Call::all();
        all.iter()
            .find(|c| c.method() == method)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(Call::method).collect();
                format!(
                    "--call {name:?}: expected {SERVICE}.<method>, one of {}",
                    names.join(", ")
                )
            })
    }

    pub fn method(&self) -> &str {
        self.method.name()
    }

    /// `suppress.v1.Suppression.CheckSuppressed`, as ghz names calls.
    pub fn full_name(&self) -> String {
        format!("{SERVICE}.{}", self.method())
    }

    /// The HTTP/2 path: `/suppress.v1.Suppression/CheckSuppressed`.
    pub fn path(&self) -> http::uri::PathAndQuery {
        http::uri::PathAndQuery::try_from(format!("/{SERVICE}/{}", self.method()))
            .expect("method names are valid paths")
    }

    pub fn input(&self) -> &str {
        &self.input
    }

    pub fn output(&self) -> &str {
        &self.output
    }

    /// Client streaming (`ImportSuppressions`): the request data is the stream of messages.
    pub fn is_client_streaming(&self) -> bool {
        self.method.is_client_streaming()
    }

    /// A codec that encodes this call's requests and decodes its answers.
    pub fn codec(&self) -> DynamicCodec {
        DynamicCodec(self.method.output())
    }
}

/// A request ready to send: a message of the call's input type.
pub type Request = DynamicMessage;

/// Reads the request of `call` from its JSON form; the error names the field at fault.
pub fn from_json(call: &Call, json: &Value) -> Result<Request, String> {
    DynamicMessage::deserialize_with_options(
        call.method.input(),
        json,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| format!("{}: {e}", call.input()))
}

/// [`from_json`] of JSON text, read straight into the message without building a
/// [`serde_json::Value`] first: what a templated request costs the load generator on each call.
pub fn from_json_text(call: &Call, text: &str) -> Result<Request, String> {
    let mut json = serde_json::Deserializer::from_str(text);
    DynamicMessage::deserialize_with_options(
        call.method.input(),
        &mut json,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .and_then(|m| json.end().map(|()| m))
    .map_err(|e| format!("{}: {e}", call.input()))
}

/// Encodes any request message; decodes answers as the call's output type (so that an answer
/// that does not decode counts as an error, as in ghz).
pub struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the answer: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use suppressd::proto;

    #[test]
    fn calls_parse_in_both_spellings() {
        assert_eq!(
            Call::parse("suppress.v1.Suppression.OptOut")
                .unwrap()
                .method(),
            "OptOut"
        );
        assert_eq!(
            Call::parse("suppress.v1.Suppression/GetReceipt")
                .unwrap()
                .output(),
            "Receipt"
        );
        assert!(Call::parse("suppress.v1.Suppression.Nope").is_err());
    }

    #[test]
    fn every_rpc_of_the_service_is_callable() {
        let names: Vec<String> = Call::all().iter().map(|c| c.method().to_owned()).collect();
        // SetHaltTrigger is newer than the hand-written mapping this replaced: nothing here names it.
        for rpc in [
            "CheckSuppressed",
            "HaltCampaign",
            "ListImports",
            "RecordConsent",
            "SetHaltTrigger",
        ] {
            assert!(names.iter().any(|n| n == rpc), "{rpc} missing: {names:?}");
        }
        assert!(
            Call::parse("suppress.v1.Suppression.ImportSuppressions")
                .unwrap()
                .is_client_streaming()
        );
    }

    #[test]
    fn an_opt_out_reads_from_proto3_json_and_encodes_as_the_generated_type() {
        let call = Call::parse("suppress.v1.Suppression.OptOut").unwrap();
        let req = from_json(
            &call,
            &json!({"recipient": {"userId": "u-1"}, "scope": {"tenant": "acme", "channel": 2},
                    "reason": "REASON_BOUNCE", "source": "SOURCE_API",
                    "idempotency_key": "k", "durability": "DURABILITY_ACCEPTED",
                    "expiresAt": "2030-01-01T00:00:00Z"}),
        )
        .unwrap();
        let o = proto::OptOutRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            o.recipient.unwrap().id,
            Some(proto::recipient::Id::UserId("u-1".into()))
        );
        assert_eq!(o.scope.unwrap().channel, proto::Channel::Sms as i32);
        assert_eq!(o.reason, proto::Reason::Bounce as i32);
        assert_eq!(o.durability, proto::Durability::Accepted as i32);
        assert_eq!(o.idempotency_key, "k");
        assert_eq!(o.expires_at.unwrap().seconds, 1_893_456_000);
    }

    #[test]
    fn json_text_reads_as_its_value_does() {
        let call = Call::parse("suppress.v1.Suppression.OptOut").unwrap();
        let value = json!({"recipient": {"email": "a@example.com"},
                           "scope": {"tenant": "acme", "channel": "CHANNEL_EMAIL", "topic": "t"},
                           "reason": "REASON_USER_REQUEST", "durability": 2});
        let text = from_json_text(&call, &value.to_string()).unwrap();
        assert_eq!(
            text.encode_to_vec(),
            from_json(&call, &value).unwrap().encode_to_vec()
        );
        let err = from_json_text(&call, r#"{"scope": {"chanel": "CHANNEL_SMS"}}"#).unwrap_err();
        assert!(err.contains("chanel"), "{err}");
        let err = from_json_text(&call, r#"{"reason": "REASON_BOUNCE"} {}"#).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn mistakes_name_the_field() {
        let batch = Call::parse("suppress.v1.Suppression.CheckSuppressedBatch").unwrap();
        let err = from_json(
            &batch,
            &json!({"checks": [{}, {"scope": {"chanel": "CHANNEL_SMS"}}]}),
        )
        .unwrap_err();
        assert!(err.contains("chanel"), "{err}");
        let check = Call::parse("suppress.v1.Suppression.CheckSuppressed").unwrap();
        let err = from_json(&check, &json!({"scope": {"channel": "CHANNEL_FAX"}})).unwrap_err();
        assert!(err.contains("CHANNEL_FAX"), "{err}");
    }
}
