//! Opt-out tokens: a token opts its person out of its scope with no API key, once; every altered,
//! truncated, foreign, expired or wrong-purpose token is UNAUTHENTICATED and records nothing; keys
//! rotate without breaking links already sent.

use crate::helpers::*;
use std::time::Duration;
use suppressd::{
    auth::{Purpose, TokenKeys},
    domain::{Channel as DomainChannel, Clock, Pepper, Recipient, RecipientKind, Scope},
    proto::{self, Channel, ReceiptState},
};
use tonic::Code;

const PERSON: &str = "token-person@example.com";

pub async fn issue(client: &mut Client, address: &str, s: proto::Scope, ttl_secs: i64) -> String {
    client
        .issue_opt_out_token(proto::IssueOptOutTokenRequest {
            recipient: Some(email(address)),
            scope: Some(s),
            ttl: Some(prost_types::Duration {
                seconds: ttl_secs,
                nanos: 0,
            }),
        })
        .await
        .expect("a writer may issue tokens")
        .into_inner()
        .token
}

pub fn by_token(token: &str) -> proto::OptOutRequest {
    proto::OptOutRequest {
        recipient: None,
        scope: None,
        reason: proto::Reason::Unspecified as i32,
        source: proto::Source::Unspecified as i32,
        idempotency_key: String::new(),
        durability: proto::Durability::Durable as i32,
        expires_at: None,
        token: token.to_owned(),
        keep_identifier_for_delivery: false,
    }
}

fn marketing(tenant: &str) -> proto::Scope {
    scope(tenant, Channel::Email, "marketing", "")
}

/// A token minted outside the service, as an attacker (or another deployment) would.
fn mint(keys: &[(&str, [u8; 32])], purpose: Purpose, expires_at: i64) -> String {
    let mut tokens = TokenKeys::default();
    for (i, (id, secret)) in keys.iter().enumerate() {
        tokens.add(id, secret, i == 0).unwrap();
    }
    let pepper = Pepper::new(PEPPER.as_bytes()).unwrap();
    let subject = pepper.subject(&Recipient::parse(RecipientKind::Email, PERSON).unwrap());
    let scope = Scope::parse("acme", Some(DomainChannel::Email), "marketing", "").unwrap();
    tokens.issue(subject, &scope, purpose, expires_at).unwrap()
}

async fn assert_refused(anonymous: &mut Client, token: &str, what: &str) {
    let err = anonymous.opt_out(by_token(token)).await.expect_err(what);
    assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
}

async fn assert_nothing_recorded(app: &mut TestApp) {
    assert_eq!(app.rows(None).await, 0, "nothing is stored");
    assert!(
        !app.is_suppressed(email(PERSON), marketing("acme")).await,
        "the person is not suppressed"
    );
}

async fn a_token_opts_out_its_person_once_without_a_key(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut writer = app.client_with_key(Some(ACME_WRITE_KEY)).await;
    let token = issue(&mut writer, PERSON, marketing("acme"), 3600).await;
    assert!(
        token.starts_with("v4.local.") && token.len() < 400,
        "{token}"
    );
    assert!(!token.contains("token-person") && !token.contains("acme"));

    let mut anonymous = app.client_with_key(None).await;
    let first = anonymous
        .opt_out(by_token(&token))
        .await
        .unwrap()
        .into_inner();
    let first = first.receipt.unwrap();
    assert_eq!(first.state, ReceiptState::Durable as i32);
    // Clicking again (or a mail client retrying) returns the same receipt.
    let again = anonymous
        .opt_out(by_token(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.receipt.unwrap().receipt_id, first.receipt_id);
    assert_eq!(app.rows(None).await, 1);

    let (actor, source) = app.actor_and_source(&first.receipt_id).await;
    assert_eq!(actor, "token:k1");
    assert_eq!(source, proto::Source::Link as i64);
    // Exactly the token's scope: acme's marketing email, not its SMS nor another tenant's email.
    assert!(app.is_suppressed(email(PERSON), marketing("acme")).await);
    assert!(
        !app.is_suppressed(email(PERSON), scope("acme", Channel::Sms, "marketing", ""))
            .await
    );
    assert!(!app.is_suppressed(email(PERSON), marketing("globex")).await);
    assert!(
        !app.is_suppressed(email("someone-else@example.com"), marketing("acme"))
            .await
    );
}

async fn every_bit_flip_and_truncation_is_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let token = issue(&mut app.client, PERSON, marketing("acme"), 3600).await;
    let mut anonymous = app.client_with_key(None).await;
    for i in 0..token.len() {
        for bit in [0x01u8, 0x04, 0x20] {
            let mut bytes = token.clone().into_bytes();
            bytes[i] ^= bit;
            let Ok(altered) = String::from_utf8(bytes) else {
                continue;
            };
            assert_refused(
                &mut anonymous,
                &altered,
                &format!("bit {bit:#x} of byte {i}"),
            )
            .await;
        }
    }
    for len in 0..token.len() {
        assert_refused(
            &mut anonymous,
            &token[..len],
            &format!("truncated to {len}"),
        )
        .await;
    }
    assert_refused(&mut anonymous, &format!("{token}A"), "extended").await;
    assert_nothing_recorded(&mut app).await;
    // The control: the unaltered token works.
    anonymous
        .opt_out(by_token(&token))
        .await
        .expect("the original token works");
    assert!(app.is_suppressed(email(PERSON), marketing("acme")).await);
}

async fn foreign_expired_and_wrong_purpose_tokens_are_refused(backend: Backend) {
    let start = 1_900_000_000_000;
    let clock = Clock::manual(start);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let mut anonymous = app.client_with_key(None).await;
    let later = start + 3_600_000;
    let cases = [
        (
            "another secret",
            mint(&[("k1", [0x22; 32])], Purpose::OptOut, later),
        ),
        (
            "an unknown key id",
            mint(&[("k9", TOKEN_KEY.1)], Purpose::OptOut, later),
        ),
        ("another purpose", mint(&[TOKEN_KEY], Purpose::OptIn, later)),
        (
            "already expired",
            mint(&[TOKEN_KEY], Purpose::OptOut, start),
        ),
    ];
    for (what, token) in &cases {
        assert_refused(&mut anonymous, token, what).await;
    }
    // The control: the same minting with the right key and purpose is accepted…
    let good = mint(&[TOKEN_KEY], Purpose::OptOut, later);
    // …until it expires.
    clock.advance(3_600_000);
    assert_refused(&mut anonymous, &good, "expired by the clock").await;
    assert_nothing_recorded(&mut app).await;
    clock.advance(-3_600_000);
    anonymous
        .opt_out(by_token(&good))
        .await
        .expect("the control token works");
}

async fn a_token_cannot_be_pointed_at_another_scope_or_person(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let token = issue(&mut app.client, PERSON, marketing("acme"), 3600).await;
    let mut anonymous = app.client_with_key(None).await;
    let mut other_scope = by_token(&token);
    other_scope.scope = Some(scope("acme", Channel::Unspecified, "", ""));
    let mut other_person = by_token(&token);
    other_person.recipient = Some(email("victim@example.com"));
    let mut system_reason = by_token(&token);
    system_reason.reason = proto::Reason::Bounce as i32;
    let mut other_source = by_token(&token);
    other_source.source = proto::Source::Import as i32;
    for (what, req) in [
        ("scope", other_scope),
        ("recipient", other_person),
        ("reason", system_reason),
        ("source", other_source),
    ] {
        let err = anonymous.opt_out(req).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    assert_nothing_recorded(&mut app).await;
    assert!(
        !app.is_suppressed(email("victim@example.com"), marketing("acme"))
            .await
    );
}

/// Waits until the server issues with `kid` (the key file was re-read).
async fn until_issuing_with(client: &mut Client, kid: &str) {
    use base64::Engine;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let token = issue(client, "probe@example.com", marketing("acme"), 60).await;
        let footer = token.rsplit('.').next().unwrap();
        let footer = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(footer)
            .unwrap();
        if String::from_utf8(footer)
            .unwrap()
            .contains(&format!("\"{kid}\""))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never issued with {kid}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_old_key_verifies_until_it_is_removed(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let sent_before = issue(&mut app.client, PERSON, marketing("acme"), 3600).await;
    let also_before = issue(
        &mut app.client,
        "second@example.com",
        marketing("acme"),
        3600,
    )
    .await;
    let k2 = ("k2", [0x33u8; 32]);

    // Rotation: k2 issues, k1 still verifies.
    rewrite(
        &app.key_file(),
        &key_file_text(&[(k2.0, k2.1, true), (TOKEN_KEY.0, TOKEN_KEY.1, false)]),
    );
    until_issuing_with(&mut app.client, "k2").await;
    let mut anonymous = app.client_with_key(None).await;
    anonymous
        .opt_out(by_token(&sent_before))
        .await
        .expect("a link sent before the rotation still works");
    let after = issue(
        &mut app.client,
        "third@example.com",
        marketing("acme"),
        3600,
    )
    .await;

    // k1 removed (and, in the same edit, the checker's key rotated, which shows when the server
    // has read the file): k1's links stop working, k2's keep working.
    let new_check_key = "sk_test_marker_cccccccccccccccccccccccccccccccccc";
    let removed = key_file_text(&[(k2.0, k2.1, true)]).replace(
        &suppressd::auth::hash_key(CHECK_KEY),
        &suppressd::auth::hash_key(new_check_key),
    );
    rewrite(&app.key_file(), &removed);
    let mut marker = app.client_with_key(Some(new_check_key)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while marker
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(email(PERSON)),
            scope: Some(marketing("acme")),
            ..Default::default()
        })
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(&mut anonymous, &also_before, "a token of a removed key").await;
    anonymous
        .opt_out(by_token(&after))
        .await
        .expect("k2 tokens verify");
    assert_eq!(app.rows(None).await, 2);
    assert!(
        !app.is_suppressed(email("second@example.com"), marketing("acme"))
            .await
    );
}

on_both_stores!(
    a_token_opts_out_its_person_once_without_a_key,
    every_bit_flip_and_truncation_is_refused,
    foreign_expired_and_wrong_purpose_tokens_are_refused,
    a_token_cannot_be_pointed_at_another_scope_or_person,
    an_old_key_verifies_until_it_is_removed,
);
