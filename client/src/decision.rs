//! The one question a sender asks, answered so that it cannot fail open.
//!
//! [`Decision::from_answer`] is the only constructor of [`Decision::Send`], and it builds it from
//! exactly one shape: an `OK` answer with `suppressed = false`. Everything else (suppressed, any
//! error status, a timeout, a failed connection, an answer off contract) is
//! [`Decision::DoNotSend`] with the reason, which the sender logs and may retry later.

use crate::{ClientError, proto::CheckSuppressedResponse};
use std::fmt;

#[derive(Debug)]
pub enum Decision {
    /// The server positively knows nothing stops this notice now. The answer is kept for what it
    /// may add (a mandatory declaration that let it through, a confirmation it allows).
    Send(Box<CheckSuppressedResponse>),
    /// Do not send this notice now.
    DoNotSend(DoNotSend),
}

/// Why not.
#[derive(Debug)]
pub enum DoNotSend {
    /// The server answered `suppressed = true`; the answer says why (`matched`, `halt`, `window`
    /// and `not_before`, `consent_required`).
    Suppressed(Box<CheckSuppressedResponse>),
    /// There was no usable answer (an error status, a timeout, no connection, an answer that breaks
    /// the contract): the service could not say "send", so the notice does not go.
    NoAnswer(ClientError),
}

impl Decision {
    /// The decision an answer (or its absence) makes.
    pub fn from_answer(answer: Result<CheckSuppressedResponse, ClientError>) -> Decision {
        match answer {
            Ok(answer) if !answer.suppressed => Decision::Send(Box::new(answer)),
            Ok(answer) => Decision::DoNotSend(DoNotSend::Suppressed(Box::new(answer))),
            Err(error) => Decision::DoNotSend(DoNotSend::NoAnswer(error)),
        }
    }

    /// True only for [`Decision::Send`].
    pub fn may_send(&self) -> bool {
        matches!(self, Decision::Send(_))
    }
}

impl fmt::Display for Decision {
    /// One line for a log: `send`, or `do not send: …` with the reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Send(_) => f.write_str("send"),
            Decision::DoNotSend(DoNotSend::Suppressed(answer)) => {
                write!(f, "do not send: suppressed ({})", why(answer))
            }
            Decision::DoNotSend(DoNotSend::NoAnswer(error)) => {
                write!(f, "do not send: no answer ({error})")
            }
        }
    }
}

/// What stopped a suppressed notice, in a few words.
pub(crate) fn why(answer: &CheckSuppressedResponse) -> String {
    if let Some(halt) = &answer.halt {
        return format!("halted: {}", halt.halt_id);
    }
    if answer.window.is_some() {
        return "outside its send window".to_owned();
    }
    if answer.consent_required.is_some() {
        return "no consent recorded".to_owned();
    }
    match &answer.matched {
        Some(record) => format!("opt-out {}", record.receipt_id),
        None => "no reason given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const EVERY_CODE: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn only_an_ok_answer_saying_not_suppressed_is_send() {
        let send = Decision::from_answer(Ok(CheckSuppressedResponse::default()));
        assert!(send.may_send());
        assert_eq!(send.to_string(), "send");
        let suppressed = Decision::from_answer(Ok(CheckSuppressedResponse {
            suppressed: true,
            ..Default::default()
        }));
        assert!(!suppressed.may_send());
        assert!(
            suppressed
                .to_string()
                .starts_with("do not send: suppressed")
        );
    }

    #[test]
    fn every_status_code_is_do_not_send_with_its_reason() {
        // Even a status that claims OK: a status is never an answer.
        for code in EVERY_CODE {
            let status = tonic::Status::new(code, "what the server said");
            let decision = Decision::from_answer(Err(ClientError::Status(status)));
            assert!(!decision.may_send(), "{code:?}");
            assert!(
                decision.to_string().contains("what the server said"),
                "{decision}"
            );
        }
    }

    #[test]
    fn timeouts_failed_connections_and_odd_answers_are_do_not_send() {
        for error in [
            ClientError::Timeout(std::time::Duration::from_millis(5)),
            ClientError::Connect("connection refused".into()),
            ClientError::Config("bad CA".into()),
            ClientError::Unexpected("3 answers to 2 checks".into()),
        ] {
            assert!(!Decision::from_answer(Err(error)).may_send());
        }
    }
}
