//! Token parsing and verification on arbitrary input: never a panic, and nothing but a token this
//! key issued for this purpose, unexpired, is ever accepted. (libFuzzer finds the `v4.local.`
//! shape on its own within seconds.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use suppressd::auth::{Purpose, TokenKeys};

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = TokenKeys::default();
        keys.add("k1", &[0x11; 32], true).unwrap();
        keys.add("k0", &[0x22; 32], false).unwrap();
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for purpose in [Purpose::OptOut, Purpose::OptIn] {
        if let Ok(claims) = keys().verify(token, purpose, 0) {
            // Only a genuine token gets here: its claims must be the ones it was issued with.
            assert_eq!(claims.purpose, purpose);
            assert!(claims.expires_at > 0);
        }
    }
});
