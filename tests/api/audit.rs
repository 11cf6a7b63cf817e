//! The audit trail: receipts that verify offline with the public key alone, a log whose tampering
//! `audit verify` detects and locates, and hashing that an independent verifier agrees with.

use crate::helpers::*;
use std::process::Command;
use suppressd::{
    audit::{
        AuditEntry,
        merkle::{Frontier, leaf_hash},
        note::{Checkpoint, NoteSigner, NoteVerifier},
        verify::LogReport,
    },
    cli::receipt::ReceiptFile,
    domain::Clock,
    proto::{self, Channel, ReceiptState},
    service::audit::{export, verify_log},
    store::Store,
};
use tonic::Code;

struct Keys {
    signer: String,
    verifier: String,
}

fn keys() -> Keys {
    let (signer, verifier) = NoteSigner::generate("audit.test").unwrap();
    Keys { signer, verifier }
}

async fn spawn_signed(backend: Backend, keys: &Keys) -> TestApp {
    let signer = keys.signer.clone();
    spawn_app_with(backend, Clock::System, move |s| {
        s.secrets.audit_signing_key = Some(signer);
        s.secrets.audit_origin = "audit.test/log".into();
    })
    .await
}

/// `n` DURABLE opt-outs, one after the other (so mostly one batch, and one checkpoint, each).
async fn record(app: &mut TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let receipt = app
            .opt_out(opt_out_request(
                email(&format!("a{i}@example.com")),
                scope("acme", Channel::Sms, "", ""),
            ))
            .await;
        assert_eq!(receipt.state, ReceiptState::Durable as i32);
        ids.push(receipt.receipt_id);
    }
    ids
}

async fn get_receipt(app: &mut TestApp, id: &str) -> proto::Receipt {
    app.client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `suppressd audit verify` on `app`'s store with `keys`' public key, and `extra` flags.
fn audit_verify(app: &TestApp, keys: &Keys, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "audit",
        "verify",
        "--store-url",
        &app.db.url,
        "--public-key",
        &keys.verifier,
    ];
    args.extend_from_slice(extra);
    suppressd(&args)
}

fn suppressd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn a_durable_receipt_verifies_offline_with_the_public_key(backend: Backend) {
    let keys = keys();
    let mut app = spawn_signed(backend, &keys).await;
    let ids = record(&mut app, 3).await;
    let receipt = get_receipt(&mut app, &ids[1]).await;
    let proof = receipt
        .proof
        .clone()
        .expect("a durable receipt carries its proof");
    let entry: AuditEntry = serde_json::from_slice(&proof.entry).unwrap();
    assert_eq!(entry.receipt, ids[1]);
    assert_eq!(entry.action, "opt_out");
    assert!(
        !String::from_utf8_lossy(&proof.entry).contains("a1@example.com"),
        "no raw identifier"
    );
    assert_eq!(proof.leaf_hash, leaf_hash(&proof.entry).to_vec());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(
        &file,
        serde_json::to_string(&ReceiptFile::from_proto(receipt.clone())).unwrap(),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, out) = suppressd(&["receipt", "verify", file, "--public-key", &keys.verifier]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("receipt {} is entry {}", ids[1], entry.seq)),
        "{out}"
    );
    // Later entries do not disturb it: the log only grew.
    record(&mut app, 2).await;
    let server = app.addr.to_string();
    let (ok, out) = suppressd(&[
        "receipt",
        "verify",
        file,
        "--public-key",
        &keys.verifier,
        "--server",
        &server,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("extends that checkpoint"), "{out}");
    // Another key, or an altered entry, does not verify.
    let (ok, _) = suppressd(&[
        "receipt",
        "verify",
        file,
        "--public-key",
        &self::keys().verifier,
    ]);
    assert!(!ok);
    let mut altered = ReceiptFile::from_proto(receipt);
    let mut bytes = proof.entry.clone();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    altered.proof.as_mut().unwrap().entry =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    std::fs::write(file, serde_json::to_string(&altered).unwrap()).unwrap();
    let (ok, out) = suppressd(&["receipt", "verify", file, "--public-key", &keys.verifier]);
    assert!(!ok && out.contains("INVALID"), "{out}");
    // An ACCEPTED receipt has no proof yet; an unknown size is refused.
    let status = app
        .client
        .get_consistency_proof(proto::GetConsistencyProofRequest {
            old_size: 1,
            new_size: 999,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn replays_and_redeliveries_never_add_a_second_entry(backend: Backend) {
    let keys = keys();
    let mut app = spawn_signed(backend, &keys).await;
    let mut req = opt_out_request(email("once@example.com"), scope("", Channel::Email, "", ""));
    req.idempotency_key = "k-1".into();
    for _ in 0..4 {
        app.opt_out(req.clone()).await;
    }
    app.flush_redis();
    app.restart().await;
    app.opt_out(req).await;
    let store = app.store().await;
    assert_eq!(store.audit_size().await.unwrap(), 1);
    assert_eq!(verified(&store, &keys, None).await.entries, 1);
}

async fn verified(store: &Store, keys: &Keys, trusted: Option<Checkpoint>) -> LogReport {
    verify_log(store, NoteVerifier::parse(&keys.verifier).unwrap(), trusted)
        .await
        .unwrap()
}

async fn an_independent_verifier_agrees_with_the_hashing(backend: Backend) {
    let keys = keys();
    let mut app = spawn_signed(backend, &keys).await;
    record(&mut app, 13).await;
    let store = app.store().await;
    let all = export(&store, None).await.unwrap();
    assert_eq!(all.entries.len(), 13);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, serde_json::to_string(&all).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/verify_audit.py"
        ))
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), all.root_hash);
    // One person's export, as a regulator gets it, checks the same way.
    let (ok, text) = suppressd(&[
        "audit",
        "export",
        "--store-url",
        &app.db.url,
        "--pepper",
        PEPPER,
        "--tenant",
        "acme",
        "--email",
        "A7@Example.com",
    ]);
    assert!(ok, "{text}");
    let one: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/verify_audit.py"
        ))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn expiries_are_on_the_record_once(backend: Backend) {
    let keys = keys();
    let start = 1_900_000_000_000;
    let clock = Clock::manual(start);
    let signer = keys.signer.clone();
    let mut app = spawn_app_with(backend, clock.clone(), move |s| {
        s.secrets.audit_signing_key = Some(signer);
        s.secrets.audit_origin = "audit.test/log".into();
    })
    .await;
    let hour = 3_600_000;
    let mut bounce = opt_out_request(email("b@example.com"), scope("", Channel::Email, "", ""));
    bounce.reason = proto::Reason::Bounce as i32;
    bounce.expires_at = Some(prost_types::Timestamp {
        seconds: (start + hour) / 1000,
        nanos: 0,
    });
    let bounced = app.opt_out(bounce).await;
    let own = app
        .opt_out(opt_out_request(
            email("b@example.com"),
            scope("", Channel::Sms, "", ""),
        ))
        .await;
    clock.advance(2 * hour);
    // The workers sweep every second; this sweep, after the clock moved, must leave exactly one entry.
    let store = app.store().await;
    let log = suppressd::audit::AuditLog::new("audit.test/log", Some(&keys.signer)).unwrap();
    let logged = store.log_expiries(clock.now(), &log).await.unwrap();
    assert!(logged <= 1);
    assert_eq!(
        store.log_expiries(clock.now(), &log).await.unwrap(),
        0,
        "never twice"
    );
    let rows = store.audit_rows(-1, 100).await.unwrap();
    let expired: Vec<_> = rows.iter().filter(|r| r.action == "expire").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].receipt_id, bounced.receipt_id);
    assert!(
        rows.iter()
            .all(|r| r.action != "expire" || r.receipt_id != own.receipt_id)
    );
    assert_eq!(verified(&store, &keys, None).await.problem, None);
}

on_both_stores!(
    expiries_are_on_the_record_once,
    a_durable_receipt_verifies_offline_with_the_public_key,
    replays_and_redeliveries_never_add_a_second_entry,
    an_independent_verifier_agrees_with_the_hashing,
);

in_audit_blocks!(
    expiries_are_on_the_record_once,
    a_durable_receipt_verifies_offline_with_the_public_key,
    replays_and_redeliveries_never_add_a_second_entry,
    an_independent_verifier_agrees_with_the_hashing,
);

// ---- Tampering (PostgreSQL: the attacker edits rows with SQL) ----

async fn sql(store: &Store, statement: &str) {
    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

async fn first_bad(store: &Store, keys: &Keys) -> Option<(u64, String)> {
    verified(store, keys, None)
        .await
        .problem
        .map(|p| (p.index, p.what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_located() {
    let keys = keys();
    let mut app = spawn_signed(Backend::Postgres, &keys).await;
    let ids = record(&mut app, 12).await;
    let store = app.store().await;
    assert_eq!(first_bad(&store, &keys).await, None);
    let (ok, out) = audit_verify(&app, &keys, &[]);
    assert!(ok && out.contains("OK: 12 entries"), "{out}");

    // Each tampering is applied to the live tables, checked, then undone from a saved copy.
    sql(
        &store,
        "CREATE TABLE saved_log AS SELECT * FROM audit_log; \
                 CREATE TABLE saved_checkpoints AS SELECT * FROM audit_checkpoints",
    )
    .await;
    let restore = "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM saved_log; \
                   DELETE FROM audit_checkpoints; INSERT INTO audit_checkpoints SELECT * FROM saved_checkpoints";

    // Change any field of a row: each is caught at that row.
    let fields = [
        "recorded_at = recorded_at + 1",
        "actor = 'someone-else'",
        "action = 'opt_in'",
        "tenant = 'globex'",
        "subject = '\\x00'",
        "channel = 3",
        "topic = 'x'",
        "campaign = 'y'",
        "reason = 5",
        "source = 6",
        "receipt_id = 'forged'",
        "trace_id = 'abc'",
        "expires_at = 1",
    ];
    for change in fields {
        sql(
            &store,
            &format!("UPDATE audit_log SET {change} WHERE seq = 7"),
        )
        .await;
        let found = first_bad(&store, &keys).await;
        assert_eq!(found.as_ref().map(|p| p.0), Some(7), "{change}: {found:?}");
        sql(&store, restore).await;
    }
    assert_eq!(first_bad(&store, &keys).await, None, "all restored");

    // Delete a row; swap two rows; insert a row.
    let cases = [
        ("DELETE FROM audit_log WHERE seq = 4", 4),
        (
            "UPDATE audit_log a SET actor = b.actor, receipt_id = b.receipt_id, subject = b.subject, \
             recorded_at = b.recorded_at FROM saved_log b WHERE (a.seq, b.seq) IN ((3, 9), (9, 3))",
            3,
        ),
        (
            "UPDATE audit_log SET seq = -seq - 1 WHERE seq >= 5; \
             UPDATE audit_log SET seq = -seq WHERE seq < 0; \
             INSERT INTO audit_log SELECT 5, recorded_at, 'forger', action, tenant, subject, channel, \
             topic, campaign, reason, source, 'inserted', trace_id, expires_at, hashes FROM saved_log \
             WHERE seq = 4",
            5,
        ),
    ];
    for (tamper, index) in cases {
        sql(&store, tamper).await;
        let found = first_bad(&store, &keys).await;
        assert_eq!(
            found.as_ref().map(|p| p.0),
            Some(index),
            "{tamper}: {found:?}"
        );
        sql(&store, restore).await;
    }
    let (ok, _) = audit_verify(&app, &keys, &[]);
    assert!(ok, "restored");

    // Replace a checkpoint with one signed by another key.
    let impostor = NoteSigner::parse(&self::keys().signer).unwrap();
    let row = store
        .checkpoint_of_size(6)
        .await
        .unwrap()
        .expect("a checkpoint per batch");
    let forged = impostor.sign(&Checkpoint {
        origin: "audit.test/log".into(),
        size: 6,
        root: row.root.clone().try_into().unwrap(),
    });
    sql(
        &store,
        &format!("UPDATE audit_checkpoints SET note = '{forged}' WHERE size = 6"),
    )
    .await;
    let found = first_bad(&store, &keys)
        .await
        .expect("a forged checkpoint is caught");
    assert!(
        found.1.contains("checkpoint of size 6") && found.0 < 6,
        "{found:?}"
    );
    let (ok, out) = audit_verify(&app, &keys, &[]);
    assert!(!ok && out.contains("TAMPERED at index"), "{out}");
    sql(&store, restore).await;

    // Save a checkpoint and a receipt, then rewrite history and re-sign it all with the right key.
    let trusted_note = store.latest_checkpoint().await.unwrap().unwrap().note;
    let trusted = NoteVerifier::parse(&keys.verifier)
        .unwrap()
        .verify(&trusted_note)
        .unwrap();
    let saved = ReceiptFile::from_proto(get_receipt(&mut app, &ids[5]).await);
    sql(
        &store,
        "UPDATE audit_log SET actor = 'rewritten' WHERE seq = 2",
    )
    .await;
    resign_everything(&store, &NoteSigner::parse(&keys.signer).unwrap()).await;
    assert_eq!(
        first_bad(&store, &keys).await,
        None,
        "a re-signed rewrite fools a check without history"
    );
    let caught = verified(&store, &keys, Some(trusted))
        .await
        .problem
        .expect("caught by the saved checkpoint");
    assert!(caught.what.contains("trusted checkpoint"), "{caught:?}");
    let dir = tempfile::tempdir().unwrap();
    let note_file = dir.path().join("checkpoint");
    std::fs::write(&note_file, &trusted_note).unwrap();
    let (ok, out) = audit_verify(
        &app,
        &keys,
        &["--trusted-checkpoint", note_file.to_str().unwrap()],
    );
    assert!(!ok && out.contains("TAMPERED at index"), "{out}");
    // The receipt saved before the rewrite no longer fits the log.
    let receipt_file = dir.path().join("receipt.json");
    std::fs::write(&receipt_file, serde_json::to_string(&saved).unwrap()).unwrap();
    let server = app.addr.to_string();
    let (ok, out) = suppressd(&[
        "receipt",
        "verify",
        receipt_file.to_str().unwrap(),
        "--public-key",
        &keys.verifier,
        "--server",
        &server,
    ]);
    assert!(!ok && out.contains("INVALID"), "{out}");
}

/// What an attacker with the signing key does after rewriting rows: recompute every hash and
/// checkpoint so the log is self-consistent again.
async fn resign_everything(store: &Store, signer: &NoteSigner) {
    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    let rows = store.audit_rows(-1, 1_000_000).await.unwrap();
    let mut frontier = Frontier::default();
    for row in &rows {
        let hashes: Vec<u8> = frontier
            .push(row.entry().unwrap().leaf_hash())
            .into_iter()
            .flat_map(|(_, _, h)| h)
            .collect();
        sqlx::query("UPDATE audit_log SET hashes = $1 WHERE seq = $2")
            .bind(hashes)
            .bind(row.seq)
            .execute(pool)
            .await
            .unwrap();
    }
    sql(store, "DELETE FROM audit_checkpoints").await;
    let cp = Checkpoint {
        origin: "audit.test/log".into(),
        size: frontier.size(),
        root: frontier.root(),
    };
    sqlx::query(
        "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, 0)",
    )
    .bind(cp.size as i64)
    .bind(cp.root.to_vec())
    .bind(signer.sign(&cp))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE audit_head SET frontier = $1")
        .bind(frontier.to_bytes())
        .execute(pool)
        .await
        .unwrap();
}

// ---- Audit blocks (`--audit-blocks`): the same guarantees when a batch is one row ----

/// The rows of `audit_log` and the blocks of `audit_blocks`, with the entries the blocks hold.
async fn shapes(store: &Store) -> (i64, i64, i64) {
    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM audit_blocks), \
         (SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint FROM audit_blocks)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Rewrites entry `seq` inside the block that holds it with `edit` (on its JSON line), leaving the
/// block's stored hashes as they were: what an attacker with SQL access does.
async fn edit_block_entry(store: &Store, seq: i64, edit: impl Fn(&mut serde_json::Value)) {
    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    let (last, first, entries): (i64, i64, Vec<u8>) = sqlx::query_as(
        "SELECT last_seq, first_seq, entries FROM audit_blocks WHERE last_seq >= $1 \
         ORDER BY last_seq LIMIT 1",
    )
    .bind(seq)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(first <= seq);
    let mut lines: Vec<Vec<u8>> = entries
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let at = (seq - first) as usize;
    let mut value: serde_json::Value = serde_json::from_slice(&lines[at]).unwrap();
    edit(&mut value);
    lines[at] = serde_json::to_vec(&value).unwrap();
    let mut rewritten = lines.join(&b'\n');
    rewritten.push(b'\n');
    sqlx::query("UPDATE audit_blocks SET entries = $1 WHERE last_seq = $2")
        .bind(rewritten)
        .bind(last)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stored_as_blocks_verify_and_their_tampering_is_located() {
    let keys = keys();
    let signer = keys.signer.clone();
    let mut app = spawn_app_with(Backend::Postgres, Clock::System, move |s| {
        s.secrets.audit_signing_key = Some(signer);
        s.secrets.audit_origin = "audit.test/log".into();
        s.audit_blocks = true;
    })
    .await;
    // Twenty opt-outs at once (batches of several), then four one by one (a block each).
    let calls = (0..20).map(|i| {
        let mut client = app.client.clone();
        async move {
            let req = opt_out_request(
                email(&format!("b{i}@example.com")),
                scope("acme", Channel::Sms, "", ""),
            );
            client
                .opt_out(req)
                .await
                .unwrap()
                .into_inner()
                .receipt
                .unwrap()
        }
    });
    let mut ids: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r.state, ReceiptState::Durable as i32);
            r.receipt_id
        })
        .collect();
    ids.extend(record(&mut app, 4).await);
    let store = app.store().await;
    let (rows, blocks, in_blocks) = shapes(&store).await;
    assert_eq!((rows, in_blocks), (0, 24), "every entry is in a block");
    assert!(
        blocks < 24,
        "some batch of the concurrent opt-outs held several ({blocks} blocks)"
    );
    assert_eq!(first_bad(&store, &keys).await, None);
    // Every receipt's entry is found through its record and proved.
    for id in &ids {
        let proof = get_receipt(&mut app, id).await.proof.expect("a proof");
        let entry: AuditEntry = serde_json::from_slice(&proof.entry).unwrap();
        assert_eq!(&entry.receipt, id);
    }

    // Each tampering is applied to the live table, checked, then undone from a saved copy.
    sql(
        &store,
        "CREATE TABLE saved_blocks AS SELECT * FROM audit_blocks",
    )
    .await;
    let restore = "DELETE FROM audit_blocks; INSERT INTO audit_blocks SELECT * FROM saved_blocks";
    // A block's line is the entry's fields as an array, in the canonical encoding's order.
    for (field, at, value) in [
        ("time", 2, serde_json::json!(1)),
        ("actor", 3, serde_json::json!("someone-else")),
        ("tenant", 5, serde_json::json!("globex")),
        ("subject", 6, serde_json::json!("00")),
        ("channel", 7, serde_json::json!(3)),
        ("receipt", 12, serde_json::json!("forged")),
        ("expires_at", 14, serde_json::json!(1)),
    ] {
        edit_block_entry(&store, 7, |e| e[at] = value.clone()).await;
        let found = first_bad(&store, &keys).await;
        assert_eq!(found.as_ref().map(|p| p.0), Some(7), "{field}: {found:?}");
        sql(&store, restore).await;
    }
    // A stored leaf hash changed, a whole block deleted.
    sql(
        &store,
        "UPDATE audit_blocks SET hashes = set_byte(hashes, 5, get_byte(hashes, 5) # 1) \
         WHERE first_seq = 20",
    )
    .await;
    assert_eq!(first_bad(&store, &keys).await.map(|p| p.0), Some(20));
    sql(&store, restore).await;
    sql(&store, "DELETE FROM audit_blocks WHERE first_seq = 21").await;
    let found = first_bad(&store, &keys)
        .await
        .expect("a deleted block is caught");
    assert!(found.0 == 21 && found.1.contains("missing"), "{found:?}");
    sql(&store, restore).await;
    // A block that is no block at all is a store error naming it, not a quiet pass.
    sql(
        &store,
        "UPDATE audit_blocks SET entries = '\\x7b6e6f7420736f7d0a'::bytea WHERE first_seq = 22",
    )
    .await;
    let err = verify_log(&store, NoteVerifier::parse(&keys.verifier).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("audit block from entry 22"),
        "{err}"
    );
    let (ok, out) = audit_verify(&app, &keys, &[]);
    assert!(!ok && out.contains("audit block from entry 22"), "{out}");
    sql(&store, restore).await;
    assert_eq!(first_bad(&store, &keys).await, None, "all restored");
}
