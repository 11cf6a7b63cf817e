//! The append-only, tamper-evident audit log. Every change (today: each recorded opt-out) becomes one
//! [`AuditEntry`], appended by the worker in the same store transaction as the change. Entries are the
//! leaves of an RFC 9162 Merkle tree ([`merkle`]); after each appended batch the tree head is signed
//! as a C2SP checkpoint ([`note`]), so anyone holding the public key can check, offline, that an entry
//! is in the log (`verify::verify_receipt`) and that the log only ever grew (`verify::LogCheck`).
//!
//! This module owns the encoding and the cryptography; the SQL lives in `store::audit`.

pub(crate) mod block;
pub mod merkle;
pub mod note;
pub mod verify;

use crate::domain::{Millis, Suppression, scope::channel_code};
use note::{NoteError, NoteSigner, NoteVerifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a change did. The strings are part of the canonical encoding: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    OptOut,
    /// A system suppression (BOUNCE, OPERATOR) reached its `expires_at` and stopped suppressing.
    Expire,
    /// A person's own opt-out stopped suppressing on their verified opt-in (or an admin's, with
    /// written grounds in `detail`).
    OptIn,
    /// A record created by a bulk import (`detail`: the batch id).
    Import,
    /// A record of an import stopped suppressing because the import was rolled back.
    Rollback,
    /// An operator halted a campaign (`receipt`: the halt id; no subject).
    Halt,
    Resume,
    /// A topic was declared mandatory on some channels (`receipt`: the declaration id; no subject).
    DeclareMandatory,
    RevokeMandatory,
    /// A send window was set (`receipt`: the window id; `detail`: its hours, zone, reason, and the
    /// window it replaced, if any).
    SetSendWindow,
    RemoveSendWindow,
    /// The person was told of their opt-out (`receipt`: the opt-out's; subject and scope: the
    /// opt-out's; `detail`: how and when, see `service::confirmations`).
    Confirmation,
    /// A topic began to require consent (`receipt`: the requirement id; no subject; `detail`: the
    /// reason and channels).
    RequireConsent,
    DropConsentRequirement,
    /// A person's consent (`subject`, the scope; `receipt`: the consent id; `detail`: its evidence).
    RecordConsent,
    /// A halt trigger was set (`receipt`: the trigger id; `detail`: its window, thresholds, reason
    /// and the trigger it replaced, if any). The halts it makes are `halt` entries whose actor is
    /// `trigger:<id>` and whose `detail` holds the figures that fired it.
    SetHaltTrigger,
    RemoveHaltTrigger,
    /// A person's stored identifier and free text were erased (`ForgetPerson`; subject and tenant:
    /// the person's; `receipt`: the erasure's id; `detail`: an [`Erasure`] as JSON). The person's
    /// records, hashes and every other entry stay.
    Erasure,
}

impl Action {
    /// Every action, in the order of the enum: what a watcher may filter on.
    pub(crate) const ALL: [Action; 17] = [
        Action::OptOut,
        Action::Expire,
        Action::OptIn,
        Action::Import,
        Action::Rollback,
        Action::Halt,
        Action::Resume,
        Action::DeclareMandatory,
        Action::RevokeMandatory,
        Action::SetSendWindow,
        Action::RemoveSendWindow,
        Action::Confirmation,
        Action::RequireConsent,
        Action::DropConsentRequirement,
        Action::RecordConsent,
        Action::SetHaltTrigger,
        Action::RemoveHaltTrigger,
    ];

    /// The action of this name, as the log spells it.
    pub(crate) fn named(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::OptOut => "opt_out",
            Action::Expire => "expire",
            Action::OptIn => "opt_in",
            Action::Import => "import",
            Action::Rollback => "rollback",
            Action::Halt => "halt",
            Action::Resume => "resume",
            Action::DeclareMandatory => "declare_mandatory",
            Action::RevokeMandatory => "revoke_mandatory",
            Action::SetSendWindow => "set_send_window",
            Action::RemoveSendWindow => "remove_send_window",
            Action::Confirmation => "confirmation",
            Action::RequireConsent => "require_consent",
            Action::DropConsentRequirement => "drop_consent_requirement",
            Action::RecordConsent => "record_consent",
            Action::SetHaltTrigger => "set_halt_trigger",
            Action::RemoveHaltTrigger => "remove_halt_trigger",
            Action::Erasure => "erasure",
        }
    }
}

/// One change, as the log records it. Its canonical encoding is this struct as compact JSON, fields in
/// declaration order (serde keeps it), with `v` the encoding version: the leaf is the hash of exactly
/// those bytes, so a verifier in any language hashes the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub(crate) v: u8,
    pub seq: u64,
    pub(crate) time: Millis,
    pub(crate) actor: String,
    pub action: String,
    pub(crate) tenant: String,
    /// The keyed hash of the recipient (hex); never the raw identifier.
    pub(crate) subject: String,
    pub(crate) channel: u8,
    pub(crate) topic: String,
    pub(crate) campaign: String,
    pub(crate) reason: u8,
    pub(crate) source: u8,
    pub receipt: String,
    pub(crate) trace_id: String,
    pub(crate) expires_at: Option<Millis>,
    /// Particulars in free text (a halt's reason, an import's batch id). Left out of the encoding
    /// when absent, so entries without it keep the exact bytes of the first version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

impl AuditEntry {
    pub(crate) const VERSION: u8 = 1;

    pub(crate) fn opt_out(seq: u64, time: Millis, s: &Suppression, trace_id: &str) -> Self {
        Self::about(Action::OptOut, seq, time, s, trace_id)
    }

    /// A change of `action` to the record `s`, by the record's actor.
    pub(crate) fn about(
        action: Action,
        seq: u64,
        time: Millis,
        s: &Suppression,
        trace_id: &str,
    ) -> Self {
        AuditEntry {
            v: Self::VERSION,
            seq,
            time,
            actor: s.actor.clone(),
            action: action.as_str().to_owned(),
            tenant: s.scope.tenant.clone(),
            subject: s.subject.to_hex(),
            channel: channel_code(s.scope.channel),
            topic: s.scope.topic.clone(),
            campaign: s.scope.campaign.clone(),
            reason: s.reason.code(),
            source: s.source.code(),
            receipt: s.receipt.to_string(),
            trace_id: trace_id.to_owned(),
            expires_at: s.expires_at,
            detail: None,
        }
    }

    /// The same entry with particulars.
    pub(crate) fn with_detail(self, detail: impl Into<String>) -> Self {
        AuditEntry {
            detail: Some(detail.into()),
            ..self
        }
    }

    pub(crate) fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit entry always serializes")
    }

    pub fn leaf_hash(&self) -> merkle::Hash {
        merkle::leaf_hash(&self.canonical())
    }

    /// What stays checkable of this entry once its free text is erased: the SHA-256 of its
    /// canonical encoding without `detail`. An [`Erasure`] entry records it, so every other field of
    /// an erased entry stays as tamper-evident as before.
    pub(crate) fn remains_hash(&self) -> merkle::Hash {
        let remains = AuditEntry {
            detail: None,
            ..self.clone()
        };
        Sha256::digest(remains.canonical()).into()
    }
}

/// The `detail` of an `erasure` entry. Free text lives inside the hashed leaf of an entry (an admin's
/// grounds, a consent's evidence), so erasing it means the leaf can no longer be recomputed from
/// the row. The row keeps its stored leaf hash, which still builds the tree the checkpoints sign,
/// and this entry, itself in the log, vouches for what remains of each erased entry: verification
/// accepts an erased row only if a later erasure entry names its index with the hash of its
/// remaining fields ([`AuditEntry::remains_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Erasure {
    /// Sealed identifiers destroyed.
    pub(crate) identifiers: u64,
    /// The erased entries: log index and the hex SHA-256 of what remains.
    pub(crate) entries: Vec<(u64, String)>,
}

impl Erasure {
    pub(crate) fn detail(&self) -> String {
        serde_json::to_string(self).expect("an erasure always serializes")
    }

    pub(crate) fn parse(detail: &str) -> Option<Erasure> {
        serde_json::from_str(detail).ok()
    }
}

/// How this deployment signs its log: the checkpoint origin (the log's name) and the key.
#[derive(Clone, Debug)]
pub struct AuditLog {
    pub origin: String,
    pub signer: NoteSigner,
    /// The worker writes each committed batch of opt-outs as one block ([`block`]) instead of one
    /// row per entry (`--audit-blocks`). Every release from the one that added blocks reads both.
    pub blocks: bool,
    /// BENCHMARK BASELINE ONLY (feature `bench-baseline`, `suppressd-bench serve-unaudited`):
    /// commits write no audit entries, so the suite can measure what the log costs the write path.
    #[cfg(feature = "bench-baseline")]
    pub bench_unaudited: bool,
}

/// The name of the development key, so its checkpoints are recognisable as such.
const DEV_KEY_NAME: &str = "suppressd-development-key";

impl AuditLog {
    /// `key` is a C2SP note signer key (`PRIVATE+KEY+name+id+base64`), or `None` for the development
    /// key (derived from a public constant: anyone can forge its checkpoints).
    pub fn new(origin: &str, key: Option<&str>) -> Result<AuditLog, NoteError> {
        let signer = match key {
            Some(k) => NoteSigner::parse(k)?,
            None => Self::development_signer(),
        };
        Ok(AuditLog {
            origin: origin.to_owned(),
            signer,
            blocks: false,
            #[cfg(feature = "bench-baseline")]
            bench_unaudited: false,
        })
    }

    pub fn development() -> AuditLog {
        AuditLog {
            origin: "suppressd".into(),
            signer: Self::development_signer(),
            blocks: false,
            #[cfg(feature = "bench-baseline")]
            bench_unaudited: false,
        }
    }

    /// Whether commits skip the log: only ever in the benchmark's baseline build; a constant
    /// `false` (and the branches on it gone) in every other.
    pub(crate) fn unaudited(&self) -> bool {
        #[cfg(feature = "bench-baseline")]
        return self.bench_unaudited;
        #[cfg(not(feature = "bench-baseline"))]
        false
    }

    fn development_signer() -> NoteSigner {
        let seed: [u8; 32] = Sha256::digest(b"suppressd development audit key").into();
        NoteSigner::from_seed(DEV_KEY_NAME, seed)
    }

    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }
}
