//! The four RPCs of `suppress.v1.Suppression`, and their requests read from proto3 JSON as ghz and
//! grpcurl write it: field names in `lowerCamelCase` or as in the `.proto`, enums by name or number,
//! timestamps in RFC 3339. A hand-written mapping rather than serde derives on generated code: it is
//! short, it names every field, and an unknown field is an error instead of being dropped.

use serde_json::{Map, Value};
use suppressd::proto;

/// One RPC of the Suppression service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    CheckSuppressed,
    CheckSuppressedBatch,
    OptOut,
    GetReceipt,
}

const SERVICE: &str = "suppress.v1.Suppression";

impl Call {
    pub const ALL: [Call; 4] = [
        Call::CheckSuppressed,
        Call::CheckSuppressedBatch,
        Call::OptOut,
        Call::GetReceipt,
    ];

    /// Accepts `suppress.v1.Suppression.CheckSuppressed` and `suppress.v1.Suppression/CheckSuppressed`.
    pub fn parse(name: &str) -> Result<Call, String> {
        let method = name
            .strip_prefix(SERVICE)
            .and_then(|m| m.strip_prefix(['.', '/']))
            .unwrap_or("");
        Call::ALL
            .into_iter()
            .find(|c| c.method() == method)
            .ok_or_else(|| {
                format!(
                    "--call {name:?}: expected {SERVICE}.<method>, one of {}",
                    Call::ALL.map(Call::method).join(", ")
                )
            })
    }

    pub fn method(self) -> &'static str {
        match self {
            Call::CheckSuppressed => "CheckSuppressed",
            Call::CheckSuppressedBatch => "CheckSuppressedBatch",
            Call::OptOut => "OptOut",
            Call::GetReceipt => "GetReceipt",
        }
    }

    /// `suppress.v1.Suppression.CheckSuppressed`, as ghz names calls.
    pub fn full_name(self) -> String {
        format!("{SERVICE}.{}", self.method())
    }

    pub fn input(self) -> &'static str {
        match self {
            Call::CheckSuppressed => "CheckSuppressedRequest",
            Call::CheckSuppressedBatch => "CheckSuppressedBatchRequest",
            Call::OptOut => "OptOutRequest",
            Call::GetReceipt => "GetReceiptRequest",
        }
    }

    pub fn output(self) -> &'static str {
        match self {
            Call::CheckSuppressed => "CheckSuppressedResponse",
            Call::CheckSuppressedBatch => "CheckSuppressedBatchResponse",
            Call::OptOut => "OptOutResponse",
            Call::GetReceipt => "Receipt",
        }
    }
}

/// A request ready to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Check(proto::CheckSuppressedRequest),
    Batch(proto::CheckSuppressedBatchRequest),
    OptOut(proto::OptOutRequest),
    GetReceipt(proto::GetReceiptRequest),
}

impl Request {
    /// Reads the request of `call` from its JSON form; the error names the field at fault.
    pub fn from_json(call: Call, json: &Value) -> Result<Request, String> {
        Ok(match call {
            Call::CheckSuppressed => Request::Check(check(json, "")?),
            Call::CheckSuppressedBatch => {
                let m = object(json, "", &[("checks", "checks")])?;
                let checks = match field(m, "checks", "checks") {
                    None => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, c)| check(c, &format!("checks[{i}].")))
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err("checks: must be an array".into()),
                };
                Request::Batch(proto::CheckSuppressedBatchRequest { checks })
            }
            Call::OptOut => Request::OptOut(opt_out(json)?),
            Call::GetReceipt => {
                let m = object(json, "", &[("receipt_id", "receiptId")])?;
                Request::GetReceipt(proto::GetReceiptRequest {
                    receipt_id: string(field(m, "receipt_id", "receiptId"), "receipt_id")?,
                })
            }
        })
    }
}

fn check(json: &Value, at: &str) -> Result<proto::CheckSuppressedRequest, String> {
    let m = object(
        json,
        at,
        &[
            ("recipient", "recipient"),
            ("scope", "scope"),
            ("time_zone", "timeZone"),
        ],
    )?;
    Ok(proto::CheckSuppressedRequest {
        recipient: optional(field(m, "recipient", "recipient"), |v| {
            recipient(v, &format!("{at}recipient"))
        })?,
        scope: optional(field(m, "scope", "scope"), |v| {
            scope(v, &format!("{at}scope"))
        })?,
        time_zone: string(field(m, "time_zone", "timeZone"), &format!("{at}time_zone"))?,
        // The benchmark's checks are notices.
        purpose: 0,
    })
}

fn opt_out(json: &Value) -> Result<proto::OptOutRequest, String> {
    let names = [
        ("recipient", "recipient"),
        ("scope", "scope"),
        ("reason", "reason"),
        ("source", "source"),
        ("idempotency_key", "idempotencyKey"),
        ("durability", "durability"),
        ("expires_at", "expiresAt"),
        ("token", "token"),
    ];
    let m = object(json, "", &names)?;
    let get = |(snake, camel): (&str, &str)| field(m, snake, camel);
    Ok(proto::OptOutRequest {
        recipient: optional(get(names[0]), |v| recipient(v, "recipient"))?,
        scope: optional(get(names[1]), |v| scope(v, "scope"))?,
        reason: enumeration(get(names[2]), "reason", |s| {
            proto::Reason::from_str_name(s).map(|e| e as i32)
        })?,
        source: enumeration(get(names[3]), "source", |s| {
            proto::Source::from_str_name(s).map(|e| e as i32)
        })?,
        idempotency_key: string(get(names[4]), "idempotency_key")?,
        durability: enumeration(get(names[5]), "durability", |s| {
            proto::Durability::from_str_name(s).map(|e| e as i32)
        })?,
        expires_at: optional(get(names[6]), |v| match v {
            Value::String(s) => s
                .parse::<prost_types::Timestamp>()
                .map_err(|e| format!("expires_at: {e}")),
            _ => Err("expires_at: must be an RFC 3339 string".into()),
        })?,
        token: string(get(names[7]), "token")?,
    })
}

fn recipient(json: &Value, at: &str) -> Result<proto::Recipient, String> {
    use proto::recipient::Id;
    /// The JSON names of each member of the oneof, and how to make it.
    type Kind = (&'static str, &'static str, fn(String) -> Id);
    let kinds: [Kind; 5] = [
        ("email", "email", Id::Email),
        ("phone", "phone", Id::Phone),
        ("user_id", "userId", Id::UserId),
        ("push_token", "pushToken", Id::PushToken),
        ("postal_address", "postalAddress", Id::PostalAddress),
    ];
    let names: Vec<(&str, &str)> = kinds.iter().map(|(s, c, _)| (*s, *c)).collect();
    let m = object(json, at, &names)?;
    let mut id = None;
    for (snake, camel, make) in kinds {
        if let Some(v) = field(m, snake, camel) {
            if id.is_some() {
                return Err(format!("{at}: more than one of the oneof `id`"));
            }
            id = Some(make(string(Some(v), &format!("{at}.{snake}"))?));
        }
    }
    Ok(proto::Recipient { id })
}

fn scope(json: &Value, at: &str) -> Result<proto::Scope, String> {
    let names = [
        ("tenant", "tenant"),
        ("channel", "channel"),
        ("topic", "topic"),
        ("campaign", "campaign"),
    ];
    let m = object(json, at, &names)?;
    let path = |f: &str| format!("{at}.{f}");
    Ok(proto::Scope {
        tenant: string(field(m, "tenant", "tenant"), &path("tenant"))?,
        channel: enumeration(field(m, "channel", "channel"), &path("channel"), |s| {
            proto::Channel::from_str_name(s).map(|e| e as i32)
        })?,
        topic: string(field(m, "topic", "topic"), &path("topic"))?,
        campaign: string(field(m, "campaign", "campaign"), &path("campaign"))?,
    })
}

/// The object at `at`, refusing fields the message does not have.
fn object<'a>(
    json: &'a Value,
    at: &str,
    known: &[(&str, &str)],
) -> Result<&'a Map<String, Value>, String> {
    let at = at.trim_end_matches('.');
    let Value::Object(m) = json else {
        return Err(format!("{}: must be a JSON object", or_root(at)));
    };
    if let Some(unknown) = m
        .keys()
        .find(|k| !known.iter().any(|(s, c)| k == s || k == c))
    {
        return Err(format!("{}: unknown field {unknown:?}", or_root(at)));
    }
    Ok(m)
}

fn or_root(at: &str) -> &str {
    if at.is_empty() { "request" } else { at }
}

/// A field by either of its JSON names; `null` counts as absent, as in proto3 JSON.
fn field<'a>(m: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    m.get(snake)
        .or_else(|| m.get(camel))
        .filter(|v| !v.is_null())
}

fn optional<T>(
    v: Option<&Value>,
    read: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    v.map(read).transpose()
}

fn string(v: Option<&Value>, at: &str) -> Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at}: must be a string")),
    }
}

fn enumeration(
    v: Option<&Value>,
    at: &str,
    by_name: impl Fn(&str) -> Option<i32>,
) -> Result<i32, String> {
    match v {
        None => Ok(0),
        Some(Value::String(s)) => by_name(s).ok_or_else(|| format!("{at}: unknown value {s:?}")),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("{at}: {n} is not an enum number")),
        Some(_) => Err(format!("{at}: must be an enum name or number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_parse_in_both_spellings() {
        assert_eq!(
            Call::parse("suppress.v1.Suppression.OptOut"),
            Ok(Call::OptOut)
        );
        assert_eq!(
            Call::parse("suppress.v1.Suppression/GetReceipt"),
            Ok(Call::GetReceipt)
        );
        assert!(Call::parse("suppress.v1.Suppression.Nope").is_err());
    }

    #[test]
    fn an_opt_out_reads_from_proto3_json() {
        let req = Request::from_json(
            Call::OptOut,
            &json!({"recipient": {"userId": "u-1"}, "scope": {"tenant": "acme", "channel": 2},
                    "reason": "REASON_BOUNCE", "source": "SOURCE_API",
                    "idempotency_key": "k", "durability": "DURABILITY_ACCEPTED",
                    "expiresAt": "2030-01-01T00:00:00Z"}),
        )
        .unwrap();
        let Request::OptOut(o) = req else {
            panic!("not an opt-out")
        };
        assert_eq!(
            o.recipient.unwrap().id,
            Some(proto::recipient::Id::UserId("u-1".into()))
        );
        assert_eq!(o.scope.unwrap().channel, proto::Channel::Sms as i32);
        assert_eq!(o.reason, proto::Reason::Bounce as i32);
        assert_eq!(o.durability, proto::Durability::Accepted as i32);
        assert_eq!(o.expires_at.unwrap().seconds, 1_893_456_000);
    }

    #[test]
    fn mistakes_name_the_field() {
        let err = Request::from_json(
            Call::CheckSuppressedBatch,
            &json!({"checks": [{}, {"scope": {"chanel": "CHANNEL_SMS"}}]}),
        )
        .unwrap_err();
        assert_eq!(err, "checks[1].scope: unknown field \"chanel\"");
        let err = Request::from_json(
            Call::CheckSuppressed,
            &json!({"scope": {"channel": "CHANNEL_FAX"}}),
        )
        .unwrap_err();
        assert_eq!(err, "scope.channel: unknown value \"CHANNEL_FAX\"");
    }
}
