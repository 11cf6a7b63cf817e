//! A person's rights: an opt-out is removed only by that person's verified opt-in (a short-lived
//! opt-in token, or an admin with written grounds), never deleted, and never by any other means;
//! a person (with their own token) or an admin sees every record kept about them, with its history.

use crate::helpers::*;
use crate::tokens::issue as issue_opt_out_token;
use suppressd::{
    domain::{Channel as DomainChannel, Notice, Pepper, Recipient, RecipientKind},
    proto::{self, Channel, RecordState},
};
use tonic::Code;

const PERSON: &str = "rights-person@example.com";

fn marketing() -> proto::Scope {
    scope("acme", Channel::Email, "marketing", "")
}

async fn issue_opt_in_token(client: &mut Client, address: &str, s: proto::Scope) -> String {
    client
        .issue_opt_in_token(proto::IssueOptInTokenRequest {
            recipient: Some(email(address)),
            scope: Some(s),
            ttl: None,
        })
        .await
        .expect("an admin may issue opt-in tokens")
        .into_inner()
        .token
}

fn by_token(token: &str) -> proto::OptInRequest {
    proto::OptInRequest {
        recipient: None,
        scope: None,
        token: token.to_owned(),
        reason: String::new(),
    }
}

fn by_admin(address: &str, s: proto::Scope, reason: &str) -> proto::OptInRequest {
    proto::OptInRequest {
        recipient: Some(email(address)),
        scope: Some(s),
        token: String::new(),
        reason: reason.to_owned(),
    }
}

async fn history(app: &mut TestApp, address: &str) -> Vec<proto::RecordHistory> {
    app.client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(address)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .expect("an admin may list a person's records")
        .into_inner()
        .records
}

/// What the cache itself holds for the person's acme email marketing notices (the service may fall
/// back to the store; this reads Redis only), and whether the bucket vouches for absences.
async fn cached(app: &TestApp, address: &str) -> (bool, usize) {
    let cache = app.cache().await;
    let pepper = Pepper::new(PEPPER.as_bytes()).unwrap();
    let subject = pepper.subject(&Recipient::parse(RecipientKind::Email, address).unwrap());
    let notice = Notice::parse("acme", Some(DomainChannel::Email), "marketing", "").unwrap();
    let mut lookups = cache
        .lookup(&[cache.probe(&subject, &notice)])
        .await
        .unwrap();
    let lookup = lookups.checks.pop().unwrap();
    (lookup.complete, lookup.found.len())
}

fn actions(h: &proto::RecordHistory) -> Vec<&str> {
    h.events.iter().map(|e| e.action.as_str()).collect()
}

async fn opt_in_without_proof_is_refused_and_changes_nothing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let mut anonymous = app.client_with_key(None).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let forged = "v4.local.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let opt_out_token = issue_opt_out_token(&mut app.client, PERSON, marketing(), 3600).await;

    let refusals = [
        (
            anonymous
                .opt_in(by_admin(PERSON, marketing(), "asked nicely"))
                .await,
            Code::Unauthenticated,
        ),
        (
            writer
                .opt_in(by_admin(PERSON, marketing(), "asked nicely"))
                .await,
            Code::PermissionDenied,
        ),
        (
            anonymous.opt_in(by_token(forged)).await,
            Code::Unauthenticated,
        ),
        // An opt-out token is weaker proof: it is not an opt-in token.
        (
            anonymous.opt_in(by_token(&opt_out_token)).await,
            Code::Unauthenticated,
        ),
        (
            app.client.opt_in(by_admin(PERSON, marketing(), "  ")).await,
            Code::InvalidArgument,
        ),
    ];
    for (i, (result, code)) in refusals.into_iter().enumerate() {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), code, "case {i}: {status:?}");
    }
    // A writer may not mint opt-in tokens either.
    let status = writer
        .issue_opt_in_token(proto::IssueOptInTokenRequest {
            recipient: Some(email(PERSON)),
            scope: Some(marketing()),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    assert!(app.is_suppressed(email(PERSON), marketing()).await);
    let records = history(&mut app, PERSON).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Active as i32);
    assert_eq!(actions(&records[0]), ["opt_out"]);
}

async fn a_token_for_another_person_or_scope_is_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let mut anonymous = app.client_with_key(None).await;
    let sms = scope("acme", Channel::Sms, "marketing", "");
    let mismatched = [
        issue_opt_in_token(&mut app.client, "someone-else@example.com", marketing()).await,
        issue_opt_in_token(&mut app.client, PERSON, sms).await,
        // Wildcards are literal in an opt-in: "every channel" is another scope than "email".
        issue_opt_in_token(
            &mut app.client,
            PERSON,
            scope("acme", Channel::Unspecified, "marketing", ""),
        )
        .await,
    ];
    for token in mismatched {
        let status = anonymous.opt_in(by_token(&token)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert!(app.is_suppressed(email(PERSON), marketing()).await);
}

async fn a_valid_opt_in_token_removes_the_opt_out_and_keeps_its_history(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.wait_cache_complete().await;
    let receipt = app
        .opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    assert_eq!(cached(&app, PERSON).await, (true, 1));
    let token = issue_opt_in_token(&mut app.client, PERSON, marketing()).await;

    let mut anonymous = app.client_with_key(None).await;
    let removed = anonymous
        .opt_in(by_token(&token))
        .await
        .expect("a valid token opts in")
        .into_inner()
        .removed;

    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].receipt_id, receipt.receipt_id);
    assert_eq!(cached(&app, PERSON).await, (true, 0), "gone from the cache");
    assert!(!app.is_suppressed(email(PERSON), marketing()).await);
    assert_eq!(
        app.rows(Some(&receipt.receipt_id)).await,
        1,
        "never deleted"
    );
    let records = history(&mut app, PERSON).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::OptedIn as i32);
    assert_eq!(actions(&records[0]), ["opt_out", "opt_in"]);
    assert_eq!(records[0].events[1].actor, "token:k1");
    // A repeat changes nothing, and the log has exactly one opt-in entry.
    let again = anonymous.opt_in(by_token(&token)).await.unwrap();
    assert!(again.into_inner().removed.is_empty());
    assert_eq!(
        actions(&history(&mut app, PERSON).await[0]),
        ["opt_out", "opt_in"]
    );
}

async fn an_admin_with_grounds_opts_in_and_the_grounds_are_logged(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let removed = app
        .client
        .opt_in(by_admin(
            PERSON,
            marketing(),
            "ticket 4711: signed consent form",
        ))
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert_eq!(removed.len(), 1);
    assert!(!app.is_suppressed(email(PERSON), marketing()).await);
    let event = &history(&mut app, PERSON).await[0].events[1];
    assert_eq!(
        (event.action.as_str(), event.actor.as_str()),
        ("opt_in", "admin")
    );
    assert_eq!(event.detail, "admin: ticket 4711: signed consent form");
}

async fn an_opt_in_ends_only_the_persons_own_opt_outs(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let bounce = app
        .opt_out(proto::OptOutRequest {
            reason: proto::Reason::Bounce as i32,
            source: proto::Source::Api as i32,
            ..opt_out_request(email(PERSON), marketing())
        })
        .await;
    let everything = scope("acme", Channel::Unspecified, "", "");
    app.opt_out(opt_out_request(email(PERSON), everything.clone()))
        .await;

    let removed = app
        .client
        .opt_in(by_admin(PERSON, marketing(), "consent renewed"))
        .await
        .unwrap()
        .into_inner()
        .removed;

    assert_eq!(removed.len(), 1, "only the own opt-out of that exact scope");
    // The person's "everything" opt-out still blocks; once it goes, the bounce does.
    let answer = app.check(email(PERSON), marketing()).await;
    assert_eq!(answer.matched.unwrap().scope.unwrap(), everything);
    app.client
        .opt_in(by_admin(PERSON, everything, "consent renewed"))
        .await
        .unwrap();
    let answer = app.check(email(PERSON), marketing()).await;
    assert!(answer.suppressed);
    assert_eq!(answer.matched.unwrap().receipt_id, bounce.receipt_id);
}

async fn an_opt_in_holds_through_a_cache_rebuild(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    app.client
        .opt_in(by_admin(PERSON, marketing(), "consent renewed"))
        .await
        .unwrap();

    app.flush_redis();
    app.wait_cache_complete().await;

    assert_eq!(cached(&app, PERSON).await, (true, 0), "not copied back");
    assert!(!app.is_suppressed(email(PERSON), marketing()).await);
    // And an opt-out made afterwards suppresses again: the opt-in was not a standing exemption.
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    assert!(app.is_suppressed(email(PERSON), marketing()).await);
}

async fn a_person_lists_their_own_records_with_their_opt_out_token(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    app.opt_out(opt_out_request(
        email(PERSON),
        scope("other-tenant", Channel::Sms, "", ""),
    ))
    .await;
    let token = issue_opt_out_token(&mut app.client, PERSON, marketing(), 3600).await;
    let mut anonymous = app.client_with_key(None).await;

    let records = anonymous
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: None,
            tenant: String::new(),
            token,
        })
        .await
        .expect("a person may list their own records")
        .into_inner()
        .records;

    assert_eq!(records.len(), 1, "only the token's tenant");
    assert_eq!(records[0].record.as_ref().unwrap().scope, Some(marketing()));
    let events = &records[0].events;
    assert_eq!(events.len(), 1);
    assert!(events[0].log_index.is_some());

    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let status = writer
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(PERSON)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = anonymous
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(PERSON)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// Everything an operator wrote or was named by; a person's view must carry none of it.
const GROUNDS: &str = "ticket 4711: Jane Roe's signed consent form";

/// The words a person's view uses in place of an actor's name.
const ROLES: [&str; 5] = ["you", "a service", "an operator", "an import", "the system"];

async fn list_by_token(client: &mut Client, token: String) -> Vec<proto::RecordHistory> {
    client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: None,
            tenant: String::new(),
            token,
        })
        .await
        .expect("a person may list their records with their token")
        .into_inner()
        .records
}

fn scope_of(h: &proto::RecordHistory) -> proto::Scope {
    h.record.as_ref().unwrap().scope.clone().unwrap()
}

/// (action, actor) of each event.
fn who(h: &proto::RecordHistory) -> Vec<(&str, &str)> {
    h.events
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect()
}

/// No principal name, no operator's text, no import batch: only role words and empty details.
fn assert_nothing_of_operators(records: &[proto::RecordHistory], batch_id: &str) {
    for h in records {
        assert_eq!(h.record.as_ref().unwrap().import_batch, "", "{h:?}");
        for e in &h.events {
            assert!(ROLES.contains(&e.actor.as_str()), "a name shown: {e:?}");
            assert_eq!(e.detail, "", "operator text shown: {e:?}");
        }
    }
    let shown = format!("{records:?}");
    for secret in [
        "admin", "writer", "4711", "Jane", "counsel", "30118", batch_id,
    ] {
        assert!(!shown.contains(secret), "{secret:?} shown: {shown}");
    }
}

/// An unsubscribe link sits in mailboxes and gets forwarded: whoever holds it sees the records of
/// the person that the token's scope covers, and no operator's name, grounds or batch.
async fn a_token_shows_only_what_it_covers_without_names_or_grounds(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let mut anonymous = app.client_with_key(None).await;
    // Covered by a token for acme's marketing email: the scope itself (opted out, then opted back
    // in by an admin with written grounds), a campaign of it, an imported campaign of it, and the
    // person's own click on the link.
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    app.client
        .opt_in(by_admin(PERSON, marketing(), GROUNDS))
        .await
        .unwrap();
    let spring = scope("acme", Channel::Email, "marketing", "spring-sale");
    writer
        .opt_out(opt_out_request(email(PERSON), spring.clone()))
        .await
        .unwrap();
    let autumn = scope("acme", Channel::Email, "marketing", "autumn-sale");
    let batch = crate::imports::import(
        &mut app.client,
        vec![crate::imports::row(1, PERSON, autumn.clone())],
    )
    .await
    .batch_id;
    let token = issue_opt_out_token(&mut app.client, PERSON, marketing(), 3600).await;
    anonymous
        .opt_out(crate::tokens::by_token(&token))
        .await
        .unwrap();
    // Not covered: another channel, another topic, every channel (broader than the token), and a
    // mandatory declaration whose legal basis and approver are an operator's text.
    for other in [
        scope("acme", Channel::Sms, "marketing", ""),
        scope("acme", Channel::Email, "account", ""),
        scope("acme", Channel::Unspecified, "", ""),
    ] {
        app.opt_out(opt_out_request(email(PERSON), other)).await;
    }
    let in_a_year = suppressd::domain::Clock::System.now() + 365 * 24 * 3600 * 1000;
    app.client
        .declare_mandatory(crate::controls::declaration(
            "recall",
            &[Channel::Postal],
            in_a_year,
        ))
        .await
        .unwrap();

    let records = list_by_token(&mut anonymous, token).await;

    let scopes: Vec<proto::Scope> = records.iter().map(scope_of).collect();
    assert_eq!(
        scopes,
        [marketing(), spring, autumn, marketing()],
        "{records:?}"
    );
    assert_eq!(
        who(&records[0]),
        [("opt_out", "a service"), ("opt_in", "an operator")]
    );
    assert_eq!(records[0].state, RecordState::OptedIn as i32);
    assert_eq!(who(&records[1]), [("opt_out", "a service")]);
    assert_eq!(who(&records[2]), [("import", "an import")]);
    assert_eq!(who(&records[3]), [("opt_out", "you")]);
    assert!(
        records
            .iter()
            .flat_map(|h| &h.events)
            .all(|e| e.log_index.is_some())
    );
    assert_nothing_of_operators(&records, &batch);

    // A token for every channel and topic of acme covers all of it, still without names or text.
    let everything = scope("acme", Channel::Unspecified, "", "");
    let broad = issue_opt_out_token(&mut app.client, PERSON, everything.clone(), 3600).await;
    let records = list_by_token(&mut anonymous, broad).await;
    assert_eq!(records.len(), 7, "{records:?}");
    let overridden = records.iter().find(|h| scope_of(h) == everything).unwrap();
    assert_eq!(
        who(overridden),
        [("opt_out", "a service"), ("overridden", "an operator")]
    );
    assert_nothing_of_operators(&records, &batch);

    // The operator's view is unchanged: every record, with names, grounds and the batch.
    let full = history(&mut app, PERSON).await;
    assert_eq!(full.len(), 7);
    assert_eq!(who(&full[0]), [("opt_out", "admin"), ("opt_in", "admin")]);
    assert_eq!(full[0].events[1].detail, format!("admin: {GROUNDS}"));
    assert_eq!(who(&full[1]), [("opt_out", "writer")]);
    assert_eq!(full[2].record.as_ref().unwrap().import_batch, batch);
    assert_eq!(full[3].events[0].actor, "token:k1");
}

/// A token names one person in one tenant: with it, nothing of anyone else, nor of the same person
/// in another tenant, is shown.
async fn a_token_for_another_tenant_or_person_shows_nothing_of_this_one(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mine = app
        .opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let elsewhere = scope("other-tenant", Channel::Email, "marketing", "");
    let theirs = app
        .opt_out(opt_out_request(email(PERSON), elsewhere.clone()))
        .await;
    let someone = "someone-else@example.com";
    let someones = app
        .opt_out(opt_out_request(email(someone), marketing()))
        .await;
    let mut anonymous = app.client_with_key(None).await;

    let other_tenant = issue_opt_out_token(&mut app.client, PERSON, elsewhere, 3600).await;
    let records = list_by_token(&mut anonymous, other_tenant).await;
    let receipts: Vec<&str> = records
        .iter()
        .map(|h| h.record.as_ref().unwrap().receipt_id.as_str())
        .collect();
    assert_eq!(receipts, [theirs.receipt_id.as_str()], "{records:?}");

    let other_person = issue_opt_out_token(&mut app.client, someone, marketing(), 3600).await;
    let records = list_by_token(&mut anonymous, other_person).await;
    let receipts: Vec<&str> = records
        .iter()
        .map(|h| h.record.as_ref().unwrap().receipt_id.as_str())
        .collect();
    assert_eq!(receipts, [someones.receipt_id.as_str()], "{records:?}");
    assert_ne!(mine.receipt_id, someones.receipt_id);
}

/// An opt-in racing a fresh opt-out of the same person and scope may go either way, but once both
/// returned, the cache must say what the store says: an active record that the cache lacks would
/// be a false "send" from a bucket that vouches for absences.
async fn opt_ins_racing_opt_outs_leave_cache_and_store_agreeing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.wait_cache_complete().await;
    let store = app.store().await;
    let pepper = Pepper::new(PEPPER.as_bytes()).unwrap();
    for round in 0..12 {
        let people: Vec<String> = (0..4)
            .map(|i| format!("racer-{round}-{i}@example.com"))
            .collect();
        for p in &people {
            app.opt_out(opt_out_request(email(p), marketing())).await;
        }
        let races = people.iter().map(|p| {
            let (mut a, mut b) = (app.client.clone(), app.client.clone());
            async move {
                let opt_in = a.opt_in(by_admin(p, marketing(), "race"));
                let opt_out = b.opt_out(opt_out_request(email(p), marketing()));
                let (i, o) = tokio::join!(opt_in, opt_out);
                i.expect("the opt-in succeeds");
                o.expect("the opt-out succeeds");
            }
        });
        futures_util::future::join_all(races).await;

        for p in &people {
            let subject = pepper.subject(&Recipient::parse(RecipientKind::Email, p).unwrap());
            let now = suppressd::domain::Clock::System.now();
            let active = store
                .records_of(&subject, "acme")
                .await
                .unwrap()
                .iter()
                .filter(|r| r.is_active_at(now))
                .count();
            let (complete, cached) = cached(&app, p).await;
            assert!(complete);
            assert_eq!(
                cached > 0,
                active > 0,
                "{p}: cache {cached}, store {active}"
            );
            assert_eq!(app.is_suppressed(email(p), marketing()).await, active > 0);
        }
    }
}

/// An opt-in ends every opt-out of the person's acknowledged before it, those still waiting in the
/// write-behind stream (ACCEPTED) too: none of them comes back once the worker commits it.
async fn an_opt_in_ends_opt_outs_still_queued(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.wait_cache_complete().await;
    for i in 0..6 {
        let person = format!("queued-{i}@example.com");
        app.opt_out(opt_out_request(email(&person), marketing()))
            .await;
        let mut accepted = opt_out_request(email(&person), marketing());
        accepted.durability = proto::Durability::Accepted as i32;
        accepted.reason = proto::Reason::Complaint as i32;
        app.opt_out(accepted).await;
        app.client
            .opt_in(by_admin(&person, marketing(), "asked right after"))
            .await
            .expect("the opt-in succeeds");

        let cache = app.cache().await;
        while cache.backlog().await.unwrap().length > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            !app.is_suppressed(email(&person), marketing()).await,
            "{person}: a queued opt-out outlived the opt-in"
        );
        let records = history(&mut app, &person).await;
        assert_eq!(records.len(), 2, "{person}");
        assert!(
            records.iter().all(|r| actions(r).contains(&"opt_in")),
            "{person}: {records:?}"
        );
    }
}

async fn a_listing_shows_where_a_mandatory_declaration_overrode_a_record(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let everything = scope("acme", Channel::Unspecified, "", "");
    app.opt_out(opt_out_request(email(PERSON), everything))
        .await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let in_a_year = suppressd::domain::Clock::System.now() + 365 * 24 * 3600 * 1000;
    app.client
        .declare_mandatory(crate::controls::declaration(
            "recall",
            &[Channel::Postal],
            in_a_year,
        ))
        .await
        .unwrap();

    let records = history(&mut app, PERSON).await;

    let everything = &records[0];
    assert_eq!(actions(everything), ["opt_out", "overridden"]);
    let event = &everything.events[1];
    assert!(event.log_index.is_none());
    assert!(
        event.detail.contains("recall") && event.detail.contains("postal"),
        "{}",
        event.detail
    );
    assert_eq!(
        actions(&records[1]),
        ["opt_out"],
        "email marketing: not covered"
    );
}

/// Runs the real binary against the app; returns (success, stdout + stderr).
async fn suppressd(app: &TestApp, key: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"));
    command
        .args(args)
        .args(["--server", &app.addr.to_string()])
        .env_remove("SUPPRESSD_API_KEY");
    if let Some(key) = key {
        command.args(["--api-key", key]);
    }
    let out = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn an_operator_acts_from_the_command_line(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email(PERSON), marketing()))
        .await;
    let person = ["--email", PERSON, "--tenant", "acme"];
    let marketing_args = [&person[..], &["--channel", "email", "--topic", "marketing"]].concat();

    let (ok, out) = suppressd(&app, Some(ADMIN_KEY), &[&["records"], &person[..]].concat()).await;
    assert!(
        ok && out.contains("1 record(s)") && out.contains("[active]"),
        "{out}"
    );

    let (ok, out) = suppressd(
        &app,
        Some(WRITE_KEY),
        &[&["opt-in"], &marketing_args[..], &["--reason", "ticket 1"]].concat(),
    )
    .await;
    assert!(!ok && out.contains("PermissionDenied"), "{out}");

    let (ok, out) = suppressd(
        &app,
        Some(ADMIN_KEY),
        &[&["opt-in-token"], &marketing_args[..]].concat(),
    )
    .await;
    assert!(ok, "{out}");
    let token = out.lines().next().unwrap().to_owned();
    let (ok, out) = suppressd(&app, None, &["opt-in", "--token", &token]).await;
    assert!(ok && out.contains("opted in: 1"), "{out}");

    let (ok, out) = suppressd(&app, Some(ADMIN_KEY), &[&["records"], &person[..]].concat()).await;
    assert!(
        ok && out.contains("[opted_in]") && out.contains("opt_in"),
        "{out}"
    );
    assert!(!app.is_suppressed(email(PERSON), marketing()).await);
}

on_both_stores!(
    opt_in_without_proof_is_refused_and_changes_nothing,
    a_token_for_another_person_or_scope_is_refused,
    a_valid_opt_in_token_removes_the_opt_out_and_keeps_its_history,
    an_admin_with_grounds_opts_in_and_the_grounds_are_logged,
    an_opt_in_ends_only_the_persons_own_opt_outs,
    an_opt_in_holds_through_a_cache_rebuild,
    a_person_lists_their_own_records_with_their_opt_out_token,
    an_operator_acts_from_the_command_line,
    opt_ins_racing_opt_outs_leave_cache_and_store_agreeing,
    a_listing_shows_where_a_mandatory_declaration_overrode_a_record,
    an_opt_in_ends_opt_outs_still_queued,
    a_token_shows_only_what_it_covers_without_names_or_grounds,
    a_token_for_another_tenant_or_person_shows_nothing_of_this_one,
);

in_audit_blocks!(
    a_valid_opt_in_token_removes_the_opt_out_and_keeps_its_history,
    a_person_lists_their_own_records_with_their_opt_out_token,
);

// The retraction script and the rebuild on a Redis Cluster.
on_cluster!(
    a_valid_opt_in_token_removes_the_opt_out_and_keeps_its_history,
    an_opt_in_holds_through_a_cache_rebuild,
    opt_ins_racing_opt_outs_leave_cache_and_store_agreeing,
    an_opt_in_ends_opt_outs_still_queued,
);
