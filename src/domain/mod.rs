//! The vocabulary of suppressd, with no I/O: who a notice goes to ([`recipient`]), what it is and what an
//! opt-out covers (`scope`), what is recorded about an opt-out (`record`), a person's consent
//! (`consent`), the operator's controls that can overrule them (`control`), and the legal clocks
//! an opt-out runs against (`deadline`).
//!
//! Everything here is parsed, not validated: constructors return `Result` and carry their invariants,
//! so the layers above only ever see valid values. Nothing in this module knows about tonic, Redis or
//! SQL.

pub mod clock;
pub(crate) mod consent;
pub(crate) mod control;
pub mod deadline;
pub(crate) mod keyword;
pub mod recipient;
pub(crate) mod record;
pub(crate) mod scope;

pub use clock::Clock;
pub(crate) use clock::Millis;
pub(crate) use recipient::Subject;
pub use recipient::{Pepper, Recipient, RecipientKind, SubjectHash};
pub use record::{IdentifierVault, Reason, ReceiptId, SealedIdentifier, Source, Suppression};
pub(crate) use record::{Match, best_match, is_token_actor, token_actor};
pub use scope::{Channel, Notice, Scope};

/// A value that failed to parse: which field, and what was wrong with it. The field is a path as the
/// caller wrote it (`scope.topic`), so the message can be returned as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, for values nested in a request (`checks[3]` + `scope.topic`).
    pub(crate) fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}
