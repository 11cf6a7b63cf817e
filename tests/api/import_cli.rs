//! `suppressd import`, `imports list` and `rollback`: the real binary against a test server.

use crate::{helpers::*, imports::marketing};
use suppressd::proto::{self, Channel};

/// Runs the real binary against the app; returns its exit status, stdout and stderr.
async fn suppressd(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .args(["--server", &app.addr.to_string(), "--api-key", ADMIN_KEY])
        .output()
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap(),
        text(out.stdout),
        text(out.stderr),
    )
}

/// The value of a `name: value` line of the printed summary.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_csv_and_json_lines_and_prints_the_summary() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "recipient_type,recipient,tenant,channel,topic,campaign,reason,source,received_at,expires_at\n\
         email,a@example.com,,email,marketing,,user_request,,2024-01-02T03:04:05Z,\n\
         email,b@example.com,,,,,COMPLAINT,SUPPORT_AGENT,,\n\
         email,A@example.com,,email,marketing,,user_request,,,\n\
         fax,123,,,,,user_request,,,\n\
         email,not-an-address,,,,,user_request,,,\n\
         email,\"c@example.com\",,sms,,,bounce,,,2099-01-01T00:00:00Z\n\
         email,d@example.com\n",
    )
    .unwrap();

    let (status, out, err) = suppressd(&app, &["import", csv.to_str().unwrap()]).await;

    assert_eq!(status, 3, "some rows rejected: {out}{err}");
    assert_eq!(
        ["imported", "duplicates", "rejected"].map(|n| field(&out, n)),
        ["3", "1", "3"],
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("line 5: recipient_type: unknown value"),
        "{out}"
    );
    assert!(lines[1].starts_with("line 6: recipient.email: "), "{out}");
    assert_eq!(
        lines[2],
        "line 8: bad CSV: 2 fields where the header has 10"
    );
    for (who, s) in [
        ("a@example.com", marketing()),
        ("b@example.com", scope("", Channel::Voice, "any", "")),
        ("c@example.com", scope("", Channel::Sms, "any", "")),
    ] {
        assert!(app.is_suppressed(email(who), s).await, "{who}");
    }

    let jsonl = dir.path().join("people.jsonl");
    std::fs::write(
        &jsonl,
        "{\"recipient_type\":\"phone\",\"recipient\":\"+1 415 555 0100\",\"channel\":\"sms\",\"reason\":\"user_request\"}\n\
         {\"recipient_type\":\"email\",\"recipient\":\"x@example.com\",\"topic\":\"recall\",\"reason\":\"legal\"}\n\
         \n\
         not json\n\
         {\"recipient_type\":\"email\",\"recipient\":\"y@example.com\",\"reason\":\"legal\",\"colour\":\"red\"}\n",
    )
    .unwrap();
    let (status, out, err) = suppressd(&app, &["import", jsonl.to_str().unwrap()]).await;
    assert_eq!(status, 3, "some rows rejected: {out}{err}");
    assert_eq!(
        ["imported", "duplicates", "rejected"].map(|n| field(&out, n)),
        ["2", "0", "2"],
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
    assert!(lines[0].starts_with("line 4: bad JSON: "), "{out}");
    assert!(
        lines[1].starts_with("line 5: bad JSON: unknown field `colour`"),
        "{out}"
    );
    let phone = proto::Recipient {
        id: Some(proto::recipient::Id::Phone("+14155550100".into())),
    };
    assert!(
        app.is_suppressed(phone, scope("", Channel::Sms, "x", ""))
            .await
    );

    let (status, listed, _) = suppressd(&app, &["imports", "list"]).await;
    assert_eq!(status, 0);
    assert_eq!(
        listed.lines().count(),
        3,
        "a header and two batches: {listed}"
    );
    assert!(
        listed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(field(&out, "batch_id"))
    );
}

/// The exit status tells a complete import (0) from one where nothing was imported (4), and a
/// file with CRLF line endings (RFC 4180, Excel) names the same lines as one with LF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_status_says_whether_anything_was_imported_and_crlf_lines_are_counted_right() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let header = "recipient_type,recipient,reason\r\n";

    let all_good = write(
        "good.csv",
        &format!("{header}email,g@example.com,user_request\r\n"),
    );
    let (status, out, err) = suppressd(&app, &["import", &all_good]).await;
    assert_eq!(status, 0, "{out}{err}");
    assert_eq!(field(&out, "imported"), "1");

    let all_bad = write(
        "bad.csv",
        &format!(
            "{header}fax,1,user_request\r\nemail,x@example.com\r\nemail,no-at,user_request\r\n"
        ),
    );
    let (status, out, err) = suppressd(&app, &["import", &all_bad]).await;
    assert_eq!(status, 4, "nothing imported: {out}{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, expected) in lines.iter().zip(["line 2: ", "line 3: ", "line 4: "]) {
        assert!(line.starts_with(expected), "{line} (expected {expected}…)");
    }

    let empty = write("empty.csv", header);
    let (status, out, err) = suppressd(&app, &["import", &empty]).await;
    assert_eq!(status, 4, "an empty file imports nothing: {out}{err}");
}
