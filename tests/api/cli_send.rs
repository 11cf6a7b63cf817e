//! The operator CLI's client commands against a production-shaped server: TLS with a private CA,
//! client certificates required (mTLS), and an API key. `check` and `opt-out` (table and --json,
//! their exit codes), `receipt get`, a refused key that is never echoed, and every other client
//! command once.

use crate::helpers::*;
use crate::tls::Pki;
use std::path::PathBuf;

/// The TLS flags for a server of `pki`, with a fresh client certificate.
struct Flags {
    server: String,
    files: Vec<String>,
}

impl Flags {
    fn new(pki: &Pki, app: &TestApp) -> Flags {
        let (cert, key) = pki.ca.issue("operator.internal", &[], true);
        let path = |p: PathBuf| p.to_str().unwrap().to_owned();
        Flags {
            server: format!("https://127.0.0.1:{}", app.addr.port()),
            files: vec![
                "--tls-domain".into(),
                "localhost".into(),
                "--cacert".into(),
                path(pki.write("ca.pem", &pki.ca.cert_pem)),
                "--cert".into(),
                path(pki.write("operator.pem", &cert)),
                "--key".into(),
                path(pki.write("operator.key", &key)),
            ],
        }
    }

    /// Runs `suppressd <args> --server … <TLS files>` with the API key in the environment.
    async fn run(&self, api_key: &str, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(args)
            .args(["--server", &self.server])
            .args(&self.files)
            .env("SUPPRESSD_API_KEY", api_key)
            .env_remove("SUPPRESSD_SERVER")
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

const CHECK: &[&str] = &[
    "check",
    "--email",
    "Ann@Example.com",
    "--channel",
    "email",
    "--topic",
    "news",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_opt_out_and_receipt_get_work_over_tls_mtls_and_a_key() {
    let pki = Pki::new();
    let app = pki.app(true).await;
    let flags = Flags::new(&pki, &app);

    let (code, out, err) = flags.run(ADMIN_KEY, CHECK).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SEND"), "{out}");

    let (code, out, err) = flags
        .run(
            ADMIN_KEY,
            &["opt-out", "--email", "ann@example.com", "--json"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let receipt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["state"], "DURABLE");
    let id = receipt["receipt_id"].as_str().unwrap().to_owned();

    let (code, out, err) = flags.run(ADMIN_KEY, &[CHECK, &["--json"]].concat()).await;
    assert_eq!(code, 1, "suppressed: {out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["decision"], "do_not_send");
    assert_eq!(answer["matched"]["receipt_id"], id.as_str());
    let (code, out, _) = flags.run(ADMIN_KEY, CHECK).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("DO NOT SEND (suppressed)") && out.contains(&id),
        "{out}"
    );

    let (code, out, err) = flags.run(ADMIN_KEY, &["receipt", "get", &id]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&id), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_unreachable_check_exits_3_and_never_echoes_the_key() {
    let pki = Pki::new();
    let app = pki.app(true).await;
    let flags = Flags::new(&pki, &app);
    let wrong = "sk_test_wrong_0000000000000000000000000000";

    let (code, out, err) = flags.run(wrong, CHECK).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("UNAUTHENTICATED") && out.contains("DO NOT SEND"),
        "{out}"
    );
    assert!(
        !out.contains(wrong) && !err.contains(wrong),
        "the key is never echoed"
    );

    let (code, _, err) = flags
        .run(wrong, &["opt-out", "--email", "ann@example.com"])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("UNAUTHENTICATED") && !err.contains(wrong),
        "{err}"
    );

    // Without a client certificate the handshake fails: no answer, do not send.
    let mut bare = Flags::new(&pki, &app);
    bare.files.truncate(4);
    let (code, out, _) = bare.run(ADMIN_KEY, CHECK).await;
    assert_eq!(code, 3, "{out}");
    assert!(!out.contains(ADMIN_KEY));
}

/// Every other client command reaches the same production-shaped server (TLS, mTLS, a key) through
/// the client crate's connection: each runs once and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_command_works_over_tls_mtls_and_a_key() {
    let pki = Pki::new();
    let app = pki.app(true).await;
    let flags = Flags::new(&pki, &app);
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let json = |out: String| -> serde_json::Value {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let ann = ["--email", "ann@example.com"];

    let halt = json(ok(flags
        .run(
            ADMIN_KEY,
            &[
                "halt",
                "--campaign",
                "spring",
                "--reason",
                "wrong list",
                "--json",
            ],
        )
        .await));
    let halt_id = halt["halt_id"].as_str().expect("a halt id").to_owned();
    ok(flags
        .run(ADMIN_KEY, &["resume", &halt_id, "--reason", "fixed"])
        .await);
    ok(flags
        .run(
            ADMIN_KEY,
            &[
                "mandatory",
                "declare",
                "--topic",
                "recall",
                "--channel",
                "email",
                "--legal-basis",
                "product safety law",
                "--approver",
                "legal",
                "--expires-in",
                "1d",
            ],
        )
        .await);
    ok(flags
        .run(
            ADMIN_KEY,
            &[
                "window",
                "set",
                "--start",
                "08:00",
                "--end",
                "20:00",
                "--time-zone",
                "UTC",
                "--reason",
                "quiet hours",
            ],
        )
        .await);
    ok(flags
        .run(
            ADMIN_KEY,
            &[
                "consent",
                "require",
                "--topic",
                "offers",
                "--reason",
                "opt-in list",
            ],
        )
        .await);
    ok(flags
        .run(
            ADMIN_KEY,
            &[
                "trigger",
                "set",
                "--campaign",
                "spring",
                "--window",
                "10m",
                "--max-opt-outs",
                "100",
                "--reason",
                "too many opt-outs",
            ],
        )
        .await);
    ok(flags.run(ADMIN_KEY, &["trigger", "list"]).await);
    let controls = ok(flags.run(ADMIN_KEY, &["controls", "list", "--all"]).await);
    assert!(
        controls.contains("recall") && controls.contains(&halt_id),
        "{controls}"
    );

    ok(flags
        .run(ADMIN_KEY, &[&["opt-out"][..], &ann].concat())
        .await);
    ok(flags
        .run(ADMIN_KEY, &[&["records"][..], &ann].concat())
        .await);
    // This server has no token key: the refusal is the server's own, so the call got through.
    let (code, _, err) = flags
        .run(ADMIN_KEY, &[&["opt-in-token"][..], &ann].concat())
        .await;
    assert!(code != 0 && err.contains("no token key"), "{err}");
    ok(flags
        .run(
            ADMIN_KEY,
            &[
                &["opt-in"][..],
                &ann,
                &["--reason", "asked by phone, ticket 42"],
            ]
            .concat(),
        )
        .await);

    let file = pki.write(
        "import.csv",
        "recipient_type,recipient,reason\nemail,bob@example.com,user_request\n",
    );
    let imported = ok(flags
        .run(ADMIN_KEY, &["import", file.to_str().unwrap()])
        .await);
    let listed = ok(flags.run(ADMIN_KEY, &["imports", "list"]).await);
    let batch = listed
        .split_whitespace()
        .find(|word| imported.contains(*word) && word.len() >= 32)
        .unwrap_or_else(|| panic!("the batch id of {imported} in {listed}"))
        .to_owned();
    ok(flags
        .run(ADMIN_KEY, &["rollback", &batch, "--reason", "wrong file"])
        .await);
}
