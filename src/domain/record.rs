//! What is recorded about one opt-out, and which of several covering opt-outs a check names.

use super::{Invalid, Millis, Scope, SubjectHash};
use std::fmt;
use uuid::{Builder, Uuid};

/// Why a notice is suppressed. The split that matters: a person's own opt-out never expires; a
/// system-originated suppression may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    UserRequest,
    Complaint,
    Bounce,
    Legal,
    Operator,
}

impl Reason {
    pub(crate) const ALL: [Reason; 5] = [
        Reason::UserRequest,
        Reason::Complaint,
        Reason::Bounce,
        Reason::Legal,
        Reason::Operator,
    ];

    /// Only system-originated suppressions (`BOUNCE`, `OPERATOR`) may carry an expiry.
    pub(crate) fn may_expire(self) -> bool {
        matches!(self, Reason::Bounce | Reason::Operator)
    }

    /// A person's own opt-out (the complement of `may_expire`): only that person's verified opt-in
    /// ends it (SPEC §5, invariant 6).
    pub(crate) fn is_persons_own(self) -> bool {
        !self.may_expire()
    }

    pub fn code(self) -> u8 {
        match self {
            Reason::UserRequest => 1,
            Reason::Complaint => 2,
            Reason::Bounce => 3,
            Reason::Legal => 4,
            Reason::Operator => 5,
        }
    }

    /// The name used in metrics and spans (the proto name, lower-cased, without its prefix).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::UserRequest => "user_request",
            Reason::Complaint => "complaint",
            Reason::Bounce => "bounce",
            Reason::Legal => "legal",
            Reason::Operator => "operator",
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// How the opt-out reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Link,
    OneClick,
    SmsKeyword,
    SupportAgent,
    Api,
    Import,
    PreferenceSignal,
}

impl Source {
    pub(crate) const ALL: [Source; 7] = [
        Source::Link,
        Source::OneClick,
        Source::SmsKeyword,
        Source::SupportAgent,
        Source::Api,
        Source::Import,
        Source::PreferenceSignal,
    ];

    pub fn code(self) -> u8 {
        match self {
            Source::Link => 1,
            Source::OneClick => 2,
            Source::SmsKeyword => 3,
            Source::SupportAgent => 4,
            Source::Api => 5,
            Source::Import => 6,
            Source::PreferenceSignal => 7,
        }
    }

    /// The name used in metrics and spans (the proto name, lower-cased, without its prefix).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Link => "link",
            Source::OneClick => "one_click",
            Source::SmsKeyword => "sms_keyword",
            Source::SupportAgent => "support_agent",
            Source::Api => "api",
            Source::Import => "import",
            Source::PreferenceSignal => "preference_signal",
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Source::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// A receipt id: a UUIDv7, so ids sort by the time they were issued and no two replicas collide.
///
/// An imported record's receipt names its import batch, so that a check answered by it can say
/// which import it came from without a look-up (the cache keeps the 16 bytes of the receipt and
/// nothing else about the record). A batch id is a UUIDv7 whose last 32 bits are zero
/// ([`ReceiptId::new_batch`]); the receipt of the batch's `n`th record is that id with version 8
/// and `n` in those bits ([`ReceiptId::imported`]), which [`ReceiptId::import_batch`] reverses.
/// Both keep the 48-bit millisecond timestamp in front, so every receipt still sorts by time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiptId(pub(crate) Uuid);

impl ReceiptId {
    /// A new receipt: a UUIDv7 of `at` with 74 random bits, drawn from `rand`'s thread-local
    /// generator (a CSPRNG seeded by the operating system). `Uuid::new_v7` asked the kernel for
    /// them (`getrandom`) on every opt-out: a system call each.
    pub fn new(at: Millis) -> Self {
        let random: [u8; 10] = rand::random();
        ReceiptId(Builder::from_unix_timestamp_millis(at as u64, &random).into_uuid())
    }

    /// An import batch's id: a UUIDv7 with 42 random bits (two batches started in the same
    /// millisecond collide once in 4·10¹²) and the last 32 bits zero, for its records' numbers.
    pub(crate) fn new_batch(at: Millis) -> Self {
        let mut bytes = *Self::new(at).as_bytes();
        bytes[12..].fill(0);
        ReceiptId(Uuid::from_bytes(bytes))
    }

    /// The receipt of record number `n` of the batch `batch` (see [`ReceiptId::new_batch`]).
    pub(crate) fn imported(batch: ReceiptId, n: u32) -> Self {
        let mut bytes = *batch.as_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[12..].copy_from_slice(&n.to_be_bytes());
        ReceiptId(Uuid::from_bytes(bytes))
    }

    /// The import batch an imported record's receipt names; `None` for any other receipt (and for
    /// records imported before receipts named their batch).
    pub(crate) fn import_batch(&self) -> Option<ReceiptId> {
        if self.0.get_version_num() != 8 {
            return None;
        }
        let mut bytes = *self.as_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x70;
        bytes[12..].fill(0);
        Some(ReceiptId(Uuid::from_bytes(bytes)))
    }

    /// The millisecond timestamp every receipt starts with.
    pub(crate) fn millis(&self) -> Millis {
        let b = self.as_bytes();
        i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    pub(crate) fn parse(field: &str, raw: &str) -> Result<Self, Invalid> {
        Uuid::try_parse(raw)
            .map(ReceiptId)
            .map_err(|_| Invalid::new(field, "must be a receipt id as returned by OptOut"))
    }

    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        ReceiptId(Uuid::from_bytes(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// As its text form, as every API and log shows it (the controls snapshot in Redis carries ids).
impl serde::Serialize for ReceiptId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ReceiptId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Uuid::try_parse(&text)
            .map(ReceiptId)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiptId({})", self.0)
    }
}

/// The actor recorded for what a person does with their own token and no API key:
/// `token:<key id>`. Formatted in this one place because a person's view of their records
/// recognises it ([`is_token_actor`]) and shows it as "you".
pub fn token_actor(key_id: &str) -> String {
    format!("{TOKEN_ACTOR}{key_id}")
}

pub fn is_token_actor(actor: &str) -> bool {
    actor.starts_with(TOKEN_ACTOR)
}

const TOKEN_ACTOR: &str = "token:";

/// One recorded opt-out: what the store keeps and the stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub receipt: ReceiptId,
    pub subject: SubjectHash,
    pub scope: Scope,
    pub reason: Reason,
    pub source: Source,
    /// The authenticated caller that recorded it.
    pub actor: String,
    pub received_at: Millis,
    /// When checks began to see it: the moment it was written to the cache.
    pub effective_at: Millis,
    pub expires_at: Option<Millis>,
    pub idempotency_key: Option<String>,
    /// The person's raw identifier, sealed by the vault for destinations that need it; `None`
    /// unless the opt-out asked to keep it and a vault key was configured. Only the write path
    /// (stream and insert) carries it: records read back from the store leave it `None`, and only
    /// `Store::sealed_identifier` reads it.
    pub sealed: Option<SealedIdentifier>,
}

/// A raw identifier sealed by the vault (`auth::vault`): opaque bytes to everything but the vault,
/// and printed as its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedIdentifier(pub(crate) Vec<u8>);

/// What seals and opens kept identifiers: a port the use cases call, implemented by the key file's
/// vault keys (`auth::vault`), so the service never holds a key.
pub trait IdentifierVault: Send + Sync {
    /// `identifier` sealed for the record `receipt`, or `None` when no key may seal.
    fn seal(&self, identifier: &str, receipt: &str) -> Option<SealedIdentifier>;
    /// The identifier sealed in `sealed` for `receipt`, or why it does not open (never the
    /// plaintext).
    fn open(&self, sealed: &[u8], receipt: &str) -> Result<String, String>;
}

impl fmt::Debug for SealedIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedIdentifier({} bytes)", self.0.len())
    }
}

impl Suppression {
    pub(crate) fn is_active_at(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// The fields a check answers with, however the record was found (cache or store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub(crate) scope: Scope,
    pub(crate) reason: Reason,
    pub(crate) source: Source,
    pub(crate) received_at: Millis,
    pub(crate) effective_at: Millis,
    pub(crate) expires_at: Option<Millis>,
    pub(crate) receipt: ReceiptId,
}

impl Match {
    pub(crate) fn is_active_at(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl From<&Suppression> for Match {
    fn from(s: &Suppression) -> Self {
        Match {
            scope: s.scope.clone(),
            reason: s.reason,
            source: s.source,
            received_at: s.received_at,
            effective_at: s.effective_at,
            expires_at: s.expires_at,
            receipt: s.receipt,
        }
    }
}

/// Of the active covering records, the one a check names: the most wildcards, then the earliest
/// received (then the lowest receipt id, so the answer never depends on the order records arrive in).
pub(crate) fn best_match(
    candidates: impl IntoIterator<Item = Match>,
    now: Millis,
) -> Option<Match> {
    candidates
        .into_iter()
        .filter(|m| m.is_active_at(now))
        .min_by(|a, b| {
            b.scope
                .wildcards()
                .cmp(&a.scope.wildcards())
                .then(a.received_at.cmp(&b.received_at))
                .then(a.receipt.cmp(&b.receipt))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    fn m(
        channel: Option<Channel>,
        topic: &str,
        received_at: Millis,
        expires_at: Option<Millis>,
    ) -> Match {
        Match {
            scope: Scope::parse("t", channel, topic, "").unwrap(),
            reason: Reason::Bounce,
            source: Source::Api,
            received_at,
            effective_at: received_at,
            expires_at,
            receipt: ReceiptId::new(received_at),
        }
    }

    #[test]
    fn a_receipt_is_a_version_7_uuid_of_its_millisecond_with_random_bits() {
        let at = 1_796_578_376_503;
        let (a, b) = (ReceiptId::new(at), ReceiptId::new(at));
        for id in [a, b] {
            assert_eq!(id.0.get_version_num(), 7);
            assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id.millis(), at);
            let (secs, nanos) = id.0.get_timestamp().expect("a v7 timestamp").to_unix();
            assert_eq!((secs, nanos), (1_796_578_376, 503_000_000));
        }
        assert_ne!(
            a, b,
            "74 random bits tell two receipts of one millisecond apart"
        );
        assert!(a.import_batch().is_none());
    }

    #[test]
    fn the_broadest_then_earliest_record_is_named() {
        let narrow_early = m(Some(Channel::Email), "recall", 1, None);
        let broad_late = m(None, "recall", 5, None);
        let broad_early = m(None, "recall", 3, None);
        let got = best_match([narrow_early, broad_late, broad_early.clone()], 10);
        assert_eq!(got, Some(broad_early));
    }

    #[test]
    fn expired_records_never_match() {
        let expired = m(None, "", 1, Some(10));
        let live = m(Some(Channel::Sms), "x", 2, Some(11));
        assert_eq!(best_match([expired.clone(), live.clone()], 10), Some(live));
        assert_eq!(best_match([expired], 10), None);
    }

    #[test]
    fn only_system_reasons_may_expire() {
        let may: Vec<_> = Reason::ALL.into_iter().filter(|r| r.may_expire()).collect();
        assert_eq!(may, [Reason::Bounce, Reason::Operator]);
    }

    #[test]
    fn codes_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        for s in Source::ALL {
            assert_eq!(Source::from_code(s.code()), Some(s));
        }
        for c in Channel::ALL {
            assert_eq!(Channel::from_code(c.code()), Some(c));
        }
    }

    #[test]
    fn receipt_ids_carry_their_time_and_parse_back() {
        let id = ReceiptId::new(1_790_000_000_123);
        assert_eq!(ReceiptId::parse("receipt_id", &id.to_string()), Ok(id));
        assert!(ReceiptId::parse("receipt_id", "nope").is_err());
        assert_eq!(id.millis(), 1_790_000_000_123);
    }

    #[test]
    fn an_imported_records_receipt_names_its_batch() {
        let at = 1_790_000_000_123;
        let batch = ReceiptId::new_batch(at);
        assert_eq!(batch.0.get_version_num(), 7, "a batch id is a UUIDv7");
        assert_eq!(batch.import_batch(), None);
        let receipts: Vec<_> = [0, 1, 2, u32::MAX]
            .map(|n| ReceiptId::imported(batch, n))
            .to_vec();
        for r in &receipts {
            assert_eq!(r.0.get_version_num(), 8);
            assert_eq!(r.import_batch(), Some(batch));
            assert_eq!(r.millis(), at, "still sorts by time");
            assert_eq!(ReceiptId::parse("receipt_id", &r.to_string()), Ok(*r));
        }
        let distinct: std::collections::HashSet<_> = receipts.iter().collect();
        assert_eq!(distinct.len(), receipts.len());
        // Another batch of the same millisecond: other receipts, another batch named.
        let other = ReceiptId::new_batch(at);
        assert_ne!(other, batch);
        assert_eq!(ReceiptId::imported(other, 0).import_batch(), Some(other));
        // Receipts of opt-outs name no batch.
        for _ in 0..100 {
            assert_eq!(ReceiptId::new(at).import_batch(), None);
        }
    }
}
