//! Recipient normalization on arbitrary input: never a panic; a normalized value is a fixed point
//! (normalizing it again changes nothing), so every spelling meets the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::domain::{RecipientKind, recipient::normalize};

const KINDS: [RecipientKind; 5] = [
    RecipientKind::Email,
    RecipientKind::Phone,
    RecipientKind::UserId,
    RecipientKind::PushToken,
    RecipientKind::PostalAddress,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    if let Ok(once) = normalize(kind, raw) {
        assert_eq!(normalize(kind, &once).as_deref(), Ok(once.as_str()), "{kind:?}");
        assert!(!once.is_empty());
    }
});
