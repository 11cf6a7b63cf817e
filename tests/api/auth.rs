//! Who may do what: every RPC against every kind of caller gets exactly the code the README promises;
//! the principal is the recorded actor; keys rotate without a restart; the development flag cannot
//! be exposed beyond loopback.

use crate::helpers::*;
use std::time::Duration;
use suppressd::{
    config::ServeSettings,
    domain::Clock,
    proto::{self, Channel},
    startup::Application,
};
use tonic::Code;

#[derive(Clone, Copy, Debug)]
enum Rpc {
    Check,
    Batch,
    OptOut,
    GetReceipt,
    IssueToken,
}

const RPCS: [Rpc; 5] = [
    Rpc::Check,
    Rpc::Batch,
    Rpc::OptOut,
    Rpc::GetReceipt,
    Rpc::IssueToken,
];

/// Calls one RPC naming `tenant` (GetReceipt names none: it asks for `receipt`); its status code.
async fn call(client: &mut Client, rpc: Rpc, tenant: &str, receipt: &str) -> Code {
    let check = |t: &str| proto::CheckSuppressedRequest {
        recipient: Some(email("m@example.com")),
        scope: Some(scope(t, Channel::Email, "news", "")),
        ..Default::default()
    };
    let result = match rpc {
        Rpc::Check => client.check_suppressed(check(tenant)).await.map(|_| ()),
        Rpc::Batch => client
            .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
                checks: vec![check(tenant), check(tenant)],
            })
            .await
            .map(|_| ()),
        Rpc::OptOut => client
            .opt_out(opt_out_request(
                email("m@example.com"),
                scope(tenant, Channel::Email, "", ""),
            ))
            .await
            .map(|_| ()),
        Rpc::GetReceipt => client
            .get_receipt(proto::GetReceiptRequest {
                receipt_id: receipt.to_owned(),
            })
            .await
            .map(|_| ()),
        Rpc::IssueToken => client
            .issue_opt_out_token(proto::IssueOptOutTokenRequest {
                recipient: Some(email("m@example.com")),
                scope: Some(scope(tenant, Channel::Email, "", "")),
                ttl: None,
            })
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_caller_with_the_exact_code() {
    use Code::{
        NotFound as ABSENT, Ok as OK, PermissionDenied as DENIED, Unauthenticated as UNAUTH,
    };
    let mut app = spawn_app(Backend::Sqlite).await;
    let receipt = app
        .opt_out(opt_out_request(
            email("r@example.com"),
            scope("other", Channel::Email, "", ""),
        ))
        .await
        .receipt_id;
    // (caller, key, tenant named, expected code for Check, Batch, OptOut, GetReceipt, IssueToken)
    let matrix: [(&str, Option<&str>, &str, [Code; 5]); 10] = [
        ("no key", None, "acme", [UNAUTH; 5]),
        ("bad key", Some("sk_not_a_key"), "acme", [UNAUTH; 5]),
        ("admin", Some(ADMIN_KEY), "other", [OK; 5]),
        (
            "check",
            Some(CHECK_KEY),
            "other",
            [OK, OK, DENIED, DENIED, DENIED],
        ),
        (
            "write",
            Some(WRITE_KEY),
            "other",
            [DENIED, DENIED, OK, OK, OK],
        ),
        // Restricted to acme: acme is fine, any other tenant is not.
        (
            "acme check, acme",
            Some(ACME_CHECK_KEY),
            "acme",
            [OK, OK, DENIED, DENIED, DENIED],
        ),
        (
            "acme check, wrong tenant",
            Some(ACME_CHECK_KEY),
            "other",
            [DENIED; 5],
        ),
        // GetReceipt names no tenant: the receipt's own ("other") decides, whatever the request
        // names, and to acme's keys it does not exist.
        (
            "acme write, acme",
            Some(ACME_WRITE_KEY),
            "acme",
            [DENIED, DENIED, OK, ABSENT, OK],
        ),
        (
            "acme write, wrong tenant",
            Some(ACME_WRITE_KEY),
            "other",
            [DENIED, DENIED, DENIED, ABSENT, DENIED],
        ),
        (
            "acme write, default tenant",
            Some(ACME_WRITE_KEY),
            "",
            [DENIED, DENIED, DENIED, ABSENT, DENIED],
        ),
    ];
    let mut recorded = 1;
    for (caller, key, tenant, want) in matrix {
        let mut client = app.client_with_key(key).await;
        for (rpc, want) in RPCS.into_iter().zip(want) {
            let got = call(&mut client, rpc, tenant, &receipt).await;
            assert_eq!(got, want, "{caller} calling {rpc:?} on tenant {tenant:?}");
            if matches!(rpc, Rpc::OptOut) && got == Code::Ok {
                recorded += 1;
            }
        }
    }
    // Refused opt-outs recorded nothing.
    assert_eq!(app.rows(None).await, recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_refused_if_any_check_names_a_foreign_tenant() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = app.client_with_key(Some(ACME_CHECK_KEY)).await;
    let check = |t: &str| proto::CheckSuppressedRequest {
        recipient: Some(email("m@example.com")),
        scope: Some(scope(t, Channel::Email, "news", "")),
        ..Default::default()
    };
    let mut checks = vec![check("acme"); 999];
    checks.push(check("globex"));
    let err = client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest { checks })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("globex"), "{}", err.message());
}

/// A check sent with exactly this `authorization` header.
async fn check_with_authorization(
    channel: &tonic::transport::Channel,
    header: String,
) -> Result<tonic::Response<proto::CheckSuppressedResponse>, tonic::Status> {
    let mut client = proto::suppression_client::SuppressionClient::with_interceptor(
        channel.clone(),
        move |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", header.parse().unwrap());
            Ok(req)
        },
    );
    client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(email("m@example.com")),
            scope: Some(scope("", Channel::Email, "news", "")),
            ..Default::default()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_unauthenticated() {
    let app = spawn_app(Backend::Sqlite).await;
    let channel = app.channel().await;
    for header in [
        format!("Basic {ADMIN_KEY}"),
        ADMIN_KEY.to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {ADMIN_KEY}x"),
    ] {
        let err = check_with_authorization(&channel, header)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(
            !err.message().contains(ADMIN_KEY),
            "the key is never echoed"
        );
    }
}

/// RFC 9110 §11.1: the scheme of an authorization header is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app(Backend::Sqlite).await;
    let channel = app.channel().await;
    for header in [
        format!("bearer {ADMIN_KEY}"),
        format!("BEARER {ADMIN_KEY}"),
        format!("Bearer  {ADMIN_KEY}"),
    ] {
        check_with_authorization(&channel, header)
            .await
            .expect("the key is accepted whatever the scheme's case");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_is_the_recorded_actor() {
    let app = spawn_app(Backend::Postgres).await;
    let mut writer = app.client_with_key(Some(ACME_WRITE_KEY)).await;
    let receipt = writer
        .opt_out(opt_out_request(
            email("actor@example.com"),
            scope("acme", Channel::Sms, "", ""),
        ))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let (actor, source) = app.actor_and_source(&receipt.receipt_id).await;
    assert_eq!(actor, "acme-writer");
    assert_eq!(source, proto::Source::Link as i64);
}

/// Polls until `client` gets `want` for a check, or fails after a bound.
async fn until_check_is(client: &mut Client, want: Code) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if call(client, Rpc::Check, "", "").await == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key file change never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_file_takes_effect_without_a_restart() {
    let app = spawn_app(Backend::Sqlite).await;
    let new_key = "sk_test_rotated_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut old = app.client_with_key(Some(CHECK_KEY)).await;
    let mut new = app.client_with_key(Some(new_key)).await;
    assert_eq!(call(&mut old, Rpc::Check, "", "").await, Code::Ok);
    assert_eq!(
        call(&mut new, Rpc::Check, "", "").await,
        Code::Unauthenticated
    );

    // Rotate the checker's key: the file changes, the server notices.
    let original = std::fs::read_to_string(app.key_file()).unwrap();
    let rotated = original.replace(
        &suppressd::auth::hash_key(CHECK_KEY),
        &suppressd::auth::hash_key(new_key),
    );
    rewrite(&app.key_file(), &rotated);
    until_check_is(&mut new, Code::Ok).await;
    assert_eq!(
        call(&mut old, Rpc::Check, "", "").await,
        Code::Unauthenticated
    );

    // A broken file does not lock anyone out: the last good keys stay.
    rewrite(&app.key_file(), "[[principal]]\nname = \"x\"\n");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(call(&mut new, Rpc::Check, "", "").await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_key_file() {
    let app = spawn_app(Backend::Sqlite).await;
    let new_key = "sk_test_hangup_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let mut new = app.client_with_key(Some(new_key)).await;
    // Same length, same modification time: only the signal can make the server read it.
    let path = app.key_file();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let original = std::fs::read_to_string(&path).unwrap();
    let rotated = original.replace(
        &suppressd::auth::hash_key(CHECK_KEY),
        &suppressd::auth::hash_key(new_key),
    );
    assert_eq!(original.len(), rotated.len());
    rewrite(&path, &rotated);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        call(&mut new, Rpc::Check, "", "").await,
        Code::Unauthenticated,
        "an unchanged-looking file is not re-read by the poll"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_check_is(&mut new, Code::Ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_no_auth_serves_loopback_without_keys_and_refuses_anything_else() {
    let app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.auth.keys = None;
        s.auth.dev_no_auth = true;
    })
    .await;
    let mut anonymous = app.client_with_key(None).await;
    assert_eq!(call(&mut anonymous, Rpc::Check, "", "").await, Code::Ok);
    let receipt = anonymous
        .opt_out(opt_out_request(
            email("dev@example.com"),
            scope("", Channel::Email, "", ""),
        ))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        app.actor_and_source(&receipt.receipt_id).await.0,
        "dev-no-auth"
    );
    // Without a key file a development server still issues unsubscribe links (a token key made
    // for the run), and a person can opt out with one.
    let token = crate::tokens::issue(
        &mut anonymous,
        "dev-link@example.com",
        scope("", Channel::Email, "news", ""),
        600,
    )
    .await;
    anonymous
        .opt_out(crate::tokens::by_token(&token))
        .await
        .expect("a development server's link works");

    let mut exposed = app.settings.clone();
    exposed.listen = "0.0.0.0:0".parse().unwrap();
    let err = Application::build(&exposed, Clock::System)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("loopback"), "{err:#}");
    let mut front_exposed = app.settings.clone();
    front_exposed.http_listen = Some("0.0.0.0:0".parse().unwrap());
    assert!(
        Application::build(&front_exposed, Clock::System)
            .await
            .is_err()
    );
    let mut admin_exposed = app.settings.clone();
    admin_exposed.admin_listen = Some("0.0.0.0:0".parse().unwrap());
    let err = Application::build(&admin_exposed, Clock::System)
        .await
        .err()
        .expect("an admin port beyond loopback without authentication is refused");
    assert!(format!("{err:#}").contains("loopback"), "{err:#}");
}

/// `--dev-no-auth` beside `--keys` would silently turn the key file off: refused, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_no_auth_with_a_key_file_is_refused() {
    let mut settings = ServeSettings::defaults();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.auth.dev_no_auth = true;
    settings.auth.keys = Some(shared_key_file().into());
    let err = Application::build(&settings, Clock::System)
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("--dev-no-auth") && err.contains("--keys"),
        "{err}"
    );
}

/// A key file open to group or others is refused under --strict-key-file (and only warned about
/// without it); a private one is accepted.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_open_to_others_is_refused_when_strict() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, key_file_text(&[])).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut settings = ServeSettings::defaults();
    settings.auth.keys = Some(path.clone());
    settings.auth.strict_key_file = true;
    let err = settings
        .check()
        .expect_err("a world-readable key file is refused");
    assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
    settings.auth.strict_key_file = false;
    settings.check().expect("without the flag it only warns");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    settings.auth.strict_key_file = true;
    settings.check().expect("a private key file is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_file_the_server_refuses_to_start() {
    let mut settings = ServeSettings::defaults();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    assert!(settings.auth.keys.is_none() && !settings.auth.dev_no_auth);
    let err = Application::build(&settings, Clock::System)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("--keys"), "{err:#}");
}

/// `keys new … >> keys.toml` (the README's quick start) appends the entry alone: the key goes to
/// standard error, or to a private file with --key-out, never into the key file.
#[test]
fn keys_new_never_writes_the_key_into_the_entry() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(["keys", "new", "--name", "me", "--role", "admin"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let key_in = |text: &str| {
        text.split_whitespace()
            .find(|w| w.starts_with("sk_"))
            .map(str::to_owned)
    };

    let (entry, said) = run(&[]);
    let key = key_in(&said).expect("the key is on standard error");
    assert_eq!(key_in(&entry), None, "the key is not in the entry: {entry}");
    assert!(entry.contains(&suppressd::auth::hash_key(&key)), "{entry}");
    assert!(entry.starts_with("[[principal]]"), "{entry}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.key");
    let (entry, said) = run(&["--key-out", file.to_str().unwrap()]);
    let key = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(
        key_in(&said),
        None,
        "with --key-out the key is only in the file"
    );
    assert!(entry.contains(&suppressd::auth::hash_key(&key)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// A key restricted to one tenant reads that tenant's receipts only: another tenant's receipt id
/// is answered as one that does not exist (no oracle for ids across tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_receipt_keeps_to_the_callers_tenants() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let mine = app
        .opt_out(opt_out_request(
            email("r@example.com"),
            scope("acme", Channel::Email, "", ""),
        ))
        .await;
    let theirs = app
        .opt_out(opt_out_request(
            email("r@example.com"),
            scope("globex", Channel::Email, "", ""),
        ))
        .await;
    let mut acme = app.client_with_key(Some(ACME_WRITE_KEY)).await;
    let get = |id: &str| proto::GetReceiptRequest {
        receipt_id: id.to_owned(),
    };
    let seen = acme
        .get_receipt(get(&mine.receipt_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.receipt_id, mine.receipt_id);
    let refused = acme.get_receipt(get(&theirs.receipt_id)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let missing = acme
        .get_receipt(get("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.message().replace(&theirs.receipt_id, "ID"),
        missing
            .message()
            .replace("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "ID"),
        "the same answer as for an id nobody has"
    );
    // Unrestricted keys read both.
    app.client
        .get_receipt(get(&theirs.receipt_id))
        .await
        .unwrap();
}
