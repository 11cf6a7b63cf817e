//! Recipients: one typed identifier, normalized so that every spelling of one address meets the same
//! record, then turned into a keyed hash. The raw value lives only as long as a request: it is never
//! stored, cached, logged or traced, which is why [`Recipient`] has no `Display` and a redacted `Debug`.

use super::Invalid;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const MAX_EMAIL: usize = 254;
const MAX_USER_ID: usize = 256;
const MAX_PUSH_TOKEN: usize = 4096;
const MAX_POSTAL: usize = 1024;

/// The kinds of identifier a person can be reached by. The tag is part of the keyed hash, so the same
/// string as a user id and as a push token are different subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientKind {
    Email,
    Phone,
    UserId,
    PushToken,
    PostalAddress,
}

impl RecipientKind {
    /// The request field this kind arrives in, for error messages.
    pub(crate) fn field(self) -> &'static str {
        match self {
            RecipientKind::Email => "recipient.email",
            RecipientKind::Phone => "recipient.phone",
            RecipientKind::UserId => "recipient.user_id",
            RecipientKind::PushToken => "recipient.push_token",
            RecipientKind::PostalAddress => "recipient.postal_address",
        }
    }

    fn tag(self) -> u8 {
        match self {
            RecipientKind::Email => 1,
            RecipientKind::Phone => 2,
            RecipientKind::UserId => 3,
            RecipientKind::PushToken => 4,
            RecipientKind::PostalAddress => 5,
        }
    }
}

/// A normalized identifier. Only [`Pepper::subject`] reads the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient {
    kind: RecipientKind,
    normalized: String,
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({:?}, <redacted>)", self.kind)
    }
}

impl Recipient {
    pub fn parse(kind: RecipientKind, raw: &str) -> Result<Self, Invalid> {
        let normalized =
            normalize(kind, raw).map_err(|message| Invalid::new(kind.field(), message))?;
        Ok(Self { kind, normalized })
    }

    /// The normalized identifier, for the identifier vault to seal when an opt-out asks to keep it
    /// for delivery: the only reader besides [`Pepper::subject`].
    pub(crate) fn value_for_vault(&self) -> &str {
        &self.normalized
    }
}

/// Normalizes one identifier, or says in words what is wrong with it. Idempotent: normalizing a
/// normalized value returns it unchanged (a property test holds this).
pub fn normalize(kind: RecipientKind, raw: &str) -> Result<String, String> {
    match kind {
        RecipientKind::Email => normalize_email(raw),
        RecipientKind::Phone => normalize_phone(raw),
        RecipientKind::UserId => normalize_opaque(raw, MAX_USER_ID),
        RecipientKind::PushToken => normalize_opaque(raw, MAX_PUSH_TOKEN),
        RecipientKind::PostalAddress => normalize_postal(raw),
    }
}

fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".into());
    }
    if email.len() > MAX_EMAIL {
        return Err(format!(
            "must be at most {MAX_EMAIL} bytes, got {}",
            email.len()
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain white space or control characters".into());
    }
    match email.split_once('@') {
        None => Err("must contain one '@'".into()),
        Some((_, domain)) if domain.contains('@') => Err("must contain exactly one '@'".into()),
        Some(("", _)) => Err("the part before '@' must not be empty".into()),
        Some((_, "")) => Err("the part after '@' must not be empty".into()),
        Some(_) => Ok(email),
    }
}

/// Characters people write inside phone numbers that carry no meaning.
fn is_phone_formatting(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')' | '/')
}

fn normalize_phone(raw: &str) -> Result<String, String> {
    let phone: String = raw.chars().filter(|&c| !is_phone_formatting(c)).collect();
    let Some(digits) = phone.strip_prefix('+') else {
        return Err("must be E.164: '+' followed by 8 to 15 digits".into());
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be E.164: only digits may follow '+'".into());
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(format!(
            "must be E.164: 8 to 15 digits after '+', got {}",
            digits.len()
        ));
    }
    Ok(phone)
}

fn normalize_opaque(raw: &str, max: usize) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} bytes, got {}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

fn normalize_postal(raw: &str) -> Result<String, String> {
    let folded = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    // Lower-casing can, rarely, turn one character into several that include white space-like marks;
    // fold once more so that the result is a fixed point.
    let folded = folded.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.is_empty() {
        return Err("must not be empty".into());
    }
    if folded.len() > MAX_POSTAL {
        return Err(format!(
            "must be at most {MAX_POSTAL} bytes, got {}",
            folded.len()
        ));
    }
    if folded.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(folded)
}

/// The secret that keys the subject hash. Without it a stolen cache or store cannot be matched against
/// a list of addresses. It holds the HMAC already keyed (the key's inner and outer blocks hashed
/// once), so each subject hash starts from that state instead of re-deriving it on every check.
#[derive(Clone)]
pub struct Pepper(Hmac<Sha256>);

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<secret>)")
    }
}

impl Pepper {
    pub(crate) const MIN_LEN: usize = 16;

    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, Invalid> {
        let secret = secret.into();
        if secret.len() < Self::MIN_LEN {
            return Err(Invalid::new(
                "pepper",
                format!("must be at least {} bytes", Self::MIN_LEN),
            ));
        }
        Ok(Self(
            Hmac::new_from_slice(&secret).expect("HMAC takes any key length"),
        ))
    }

    /// HMAC-SHA256 over the kind's tag and the normalized value.
    pub fn subject(&self, recipient: &Recipient) -> SubjectHash {
        let mut mac = self.0.clone();
        mac.update(&[recipient.kind.tag()]);
        mac.update(recipient.normalized.as_bytes());
        SubjectHash(mac.finalize().into_bytes().into())
    }
}

/// Whom an opt-out is about: a recipient the service hashes, or a hash it already made (an opt-out
/// token carries the keyed hash, never the raw identifier, so a link reveals nothing readable).
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    Recipient(Recipient),
    Hash(SubjectHash),
}

impl Pepper {
    /// The keyed hash of a subject; only a raw recipient is hashed.
    pub(crate) fn subject_of(&self, subject: &Subject) -> SubjectHash {
        match subject {
            Subject::Recipient(r) => self.subject(r),
            Subject::Hash(h) => *h,
        }
    }
}

/// The keyed hash of one recipient: the only form of a person's identifier that leaves a request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectHash(pub(crate) [u8; 32]);

impl fmt::Debug for SubjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectHash({})", hex::encode(&self.0[..8]))
    }
}

impl SubjectHash {
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(SubjectHash)
    }

    /// Lowercase hex, as the stream entry and the audit log carry it.
    pub fn to_hex(&self) -> String {
        hex_digits(&self.0)
    }
}

/// `bytes` in lowercase hex, as `hex::encode` writes them, in one pass: `hex::encode` collects its
/// digits one `char` at a time, which was most of what an opt-out spent encoding its stream entry,
/// its audit entry and its idempotency key's name.
pub(crate) fn hex_digits(bytes: &[u8]) -> String {
    let mut digits = vec![0; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut digits).expect("two digits a byte");
    String::from_utf8(digits).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [RecipientKind; 5] = [
        RecipientKind::Email,
        RecipientKind::Phone,
        RecipientKind::UserId,
        RecipientKind::PushToken,
        RecipientKind::PostalAddress,
    ];

    #[test]
    fn normalization_table() {
        use RecipientKind::*;
        let ok = [
            (Email, "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
            (Email, "a@b", "a@b"),
            (Phone, "+44 (20) 7946-0958", "+442079460958"),
            (Phone, "+1.555.010.9999", "+15550109999"),
            (UserId, "  u-42 ", "u-42"),
            (PushToken, "tok:ABC", "tok:ABC"),
            (
                PostalAddress,
                " 1 High   Street\n  LONDON ",
                "1 high street london",
            ),
        ];
        for (kind, raw, want) in ok {
            assert_eq!(
                normalize(kind, raw).as_deref(),
                Ok(want),
                "{kind:?} {raw:?}"
            );
        }
        let bad = [
            (Email, "", "must not be empty"),
            (Email, "no-at-sign", "one '@'"),
            (Email, "a@b@c", "exactly one '@'"),
            (Email, "@example.com", "before '@'"),
            (Email, "jane@", "after '@'"),
            (Email, "ja ne@example.com", "white space"),
            (Phone, "442079460958", "'+'"),
            (Phone, "+44 20 79x6", "only digits"),
            (Phone, "+1234567", "8 to 15 digits"),
            (Phone, "+1234567890123456", "8 to 15 digits"),
            (UserId, "   ", "must not be empty"),
            (UserId, "a\u{0}b", "control"),
            (PostalAddress, " \n ", "must not be empty"),
        ];
        for (kind, raw, want) in bad {
            let err = normalize(kind, raw).expect_err(raw);
            assert!(err.contains(want), "{kind:?} {raw:?}: {err}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize(Email, &long).unwrap_err().contains("at most 254"));
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = Recipient::parse(RecipientKind::Phone, "12").unwrap_err();
        assert_eq!(err.field, "recipient.phone");
    }

    #[test]
    fn spellings_of_one_address_share_a_subject_and_kinds_do_not() {
        let pepper = Pepper::new(*b"0123456789abcdef").unwrap();
        let a = Recipient::parse(RecipientKind::Email, "Jane@Example.com").unwrap();
        let b = Recipient::parse(RecipientKind::Email, " jane@example.COM").unwrap();
        assert_eq!(pepper.subject(&a), pepper.subject(&b));
        let as_user = Recipient::parse(RecipientKind::UserId, "jane@example.com").unwrap();
        assert_ne!(pepper.subject(&a), pepper.subject(&as_user));
        let other = Pepper::new(*b"fedcba9876543210").unwrap();
        assert_ne!(pepper.subject(&a), other.subject(&a));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let r = Recipient::parse(RecipientKind::Email, "secret@example.com").unwrap();
        assert!(!format!("{r:?}").contains("secret"));
    }

    proptest! {
        /// `hex_digits` (and so `to_hex`) is `hex::encode`, written in one pass.
        #[test]
        fn hex_digits_are_hex_encode(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(hex_digits(&bytes), hex::encode(&bytes));
        }

        #[test]
        fn normalization_is_idempotent(kind in prop::sample::select(KINDS.to_vec()), raw in "\\PC{0,40}") {
            if let Ok(once) = normalize(kind, &raw) {
                prop_assert_eq!(normalize(kind, &once), Ok(once.clone()));
            }
        }

        #[test]
        fn phone_formatting_never_changes_the_number(digits in "[0-9]{8,15}", seps in prop::collection::vec(prop::sample::select(vec![" ", "-", ".", "(", ")", ""]), 16)) {
            let mut spelled = String::from("+");
            for (d, s) in digits.chars().zip(seps.iter().cycle()) {
                spelled.push(d);
                spelled.push_str(s);
            }
            prop_assert_eq!(normalize(RecipientKind::Phone, &spelled), Ok(format!("+{digits}")));
        }

        #[test]
        fn email_case_and_padding_never_matter(local in "[a-zA-Z0-9._%+-]{1,30}", domain in "[a-zA-Z0-9.-]{1,30}", pad in " {0,3}") {
            let raw = format!("{pad}{local}@{domain}{pad}");
            prop_assert_eq!(normalize(RecipientKind::Email, &raw), Ok(format!("{local}@{domain}").to_lowercase()));
        }
    }
}
