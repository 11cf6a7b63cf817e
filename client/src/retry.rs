//! When a failed call is tried again, and after how long.
//!
//! Only two codes are retried: `UNAVAILABLE` (the server could not answer correctly now, or the
//! connection failed) and `RESOURCE_EXHAUSTED` (the call was shed before any work, or a rate limit).
//! Both mean nothing happened, so a check, a receipt read or a token is safe to repeat; an opt-out
//! is safe to repeat only with an idempotency key, which [`crate::Client::opt_out`] guarantees.
//! Every other code is final: repeating an `INVALID_ARGUMENT` or a `PERMISSION_DENIED` cannot help,
//! and a timeout of a write may have landed (it is not repeated without a key either).
//!
//! The wait is exponential backoff with full jitter (so that many senders shed at once do not come
//! back in step), and never shorter than the server's `RetryInfo`. No retry starts that could not
//! finish before the call's deadline.

use crate::ClientError;
use rand::Rng;
use std::time::Duration;
use tonic::Code;

/// Attempts and waits. The default: 3 attempts, waits from 50 ms doubling up to 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// The ceiling of the first wait (before jitter); it doubles on each retry.
    pub initial_backoff: Duration,
    /// The highest ceiling of a wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// How long to wait before attempt `attempt + 1` after `error` on attempt `attempt` (1-based),
    /// or `None` when the error is final or the attempts are spent.
    pub fn wait_after(&self, attempt: u32, error: &ClientError) -> Option<Duration> {
        if attempt >= self.max_attempts || !retryable(error) {
            return None;
        }
        let ceiling = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt - 1))
            .min(self.max_backoff);
        let jittered = rand::rng().random_range(Duration::ZERO..=ceiling);
        Some(match error.retry_after() {
            // At least what the server asked, spread by up to half of it again.
            Some(asked) => asked + rand::rng().random_range(Duration::ZERO..=asked / 2),
            None => jittered,
        })
    }
}

/// `UNAVAILABLE` (including a failed connection) and `RESOURCE_EXHAUSTED`: nothing was done.
pub fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Status(_) | ClientError::Connect(_) => {
            matches!(error.code(), Code::Unavailable | Code::ResourceExhausted)
        }
        ClientError::Timeout(_) | ClientError::Config(_) | ClientError::Unexpected(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn only_unavailable_and_resource_exhausted_are_retried() {
        let policy = RetryPolicy::default();
        for code in [Code::Unavailable, Code::ResourceExhausted] {
            let e = ClientError::Status(tonic::Status::new(code, "x"));
            let wait = policy.wait_after(1, &e).expect("retried");
            assert!(wait <= policy.initial_backoff);
            assert_eq!(policy.wait_after(3, &e), None, "attempts spent");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::Internal,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
        ] {
            let e = ClientError::Status(tonic::Status::new(code, "x"));
            assert_eq!(policy.wait_after(1, &e), None, "{code:?}");
        }
        assert_eq!(
            policy.wait_after(1, &ClientError::Timeout(Duration::from_secs(1))),
            None
        );
        assert!(
            policy
                .wait_after(1, &ClientError::Connect("refused".into()))
                .is_some()
        );
    }

    #[test]
    fn the_servers_retry_info_is_a_floor() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "rate limit",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        let wait = RetryPolicy::default()
            .wait_after(1, &ClientError::Status(status))
            .unwrap();
        assert!(
            wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
    }
}
