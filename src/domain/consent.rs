//! A person's consent to a scope, with the evidence of how it was given. Consent matters only where
//! a consent requirement ([`crate::domain::control::ConsentRequirement`]) applies; there a check
//! says "send" only if a consent covers the notice (as an opt-out covers one: tenant equal, channel,
//! topic and campaign each a wildcard or equal) and nothing suppresses it.
//!
//! An opt-out always wins. It also revokes: a consent counts only if the person recorded no opt-out
//! of their own (`USER_REQUEST`, `COMPLAINT`, `LEGAL`) covering the notice at or after the consent,
//! whether that opt-out still holds or was later ended by an opt-in. So an opt-in ends an opt-out
//! but never brings an old consent back; the person consents again. That rule is a query over the
//! stored records (`store::consents`), so nothing needs rewriting when an opt-out arrives.

use super::{Invalid, Millis, ReceiptId, Scope, SubjectHash, control::required_text};

/// How a consent was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// Where it was given, e.g. `signup-form`.
    pub(crate) source: String,
    /// A free-text reference or a hash of what the person agreed to (never personal data).
    pub(crate) proof: String,
    /// Who obtained it: a system or an agent.
    pub(crate) actor: String,
}

impl Evidence {
    /// Every part required and bounded; field paths as a `RecordConsent` names them.
    pub(crate) fn parse(source: &str, proof: &str, actor: &str) -> Result<Evidence, Invalid> {
        let field =
            |name: &str, value: &str| required_text(name, value).map_err(|e| e.within("evidence"));
        Ok(Evidence {
            source: field("source", source)?,
            proof: field("proof", proof)?,
            actor: field("actor", actor)?,
        })
    }
}

/// One recorded consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Consent {
    pub(crate) id: ReceiptId,
    pub(crate) subject: SubjectHash,
    pub(crate) scope: Scope,
    pub(crate) evidence: Evidence,
    /// The authenticated caller that recorded it.
    pub(crate) recorded_by: String,
    pub(crate) at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_needs_every_part_and_names_its_path() {
        assert!(Evidence::parse("form", "ref-1", "crm").is_ok());
        assert_eq!(
            Evidence::parse(" ", "p", "a").unwrap_err().field,
            "evidence.source"
        );
        assert_eq!(
            Evidence::parse("s", "", "a").unwrap_err().field,
            "evidence.proof"
        );
        let long = "x".repeat(1_001);
        assert_eq!(
            Evidence::parse("s", "p", &long).unwrap_err().field,
            "evidence.actor"
        );
    }
}
