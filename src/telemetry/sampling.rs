//! Head sampling, decided before any span of a trace is built.
//!
//! `tracing-opentelemetry` fills in every span it is given (start time, attributes, a span builder)
//! and leaves the decision to the SDK's sampler when the span ends, so at 1 % sampling almost all
//! of that work was thrown away. Here the decision is made once, where a trace starts (a call, a
//! write-behind commit), by the sampler the standard variables name (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`); the spans of an unsampled trace never reach the OpenTelemetry layer,
//! and the SDK records everything it is given.
//!
//! The decision travels with the work that started the trace: [`Sampled`] holds it in a
//! thread-local for the length of each poll of that work's future, and [`HeadSampling`], the
//! OpenTelemetry layer's filter, reads it there. A span created outside any such work is recorded
//! only as part of a trace already recorded (its parent is).

use opentelemetry::trace::TraceContextExt as _;
use pin_project_lite::pin_project;
use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};
use tracing::{Metadata, Subscriber, level_filters::LevelFilter};
use tracing_subscriber::{
    layer::{self, Filter},
    registry::LookupSpan,
};

/// A sampler of the OpenTelemetry specification's environment configuration, applied at the head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HeadSampler {
    /// The share of new traces recorded (1 always on, 0 always off).
    ratio: f64,
    /// Whether a caller's decision (its `traceparent`'s sampled flag) wins over `ratio`.
    parent_based: bool,
}

impl HeadSampler {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
    pub(crate) fn from_env() -> Result<HeadSampler, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self::parse(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )
    }

    fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<HeadSampler, String> {
        let name = sampler.unwrap_or("parentbased_always_on").trim();
        let (parent_based, base) = match name.strip_prefix("parentbased_") {
            Some(base) => (true, base),
            None => (false, name),
        };
        let ratio = match base {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match arg {
                None => 1.0,
                Some(arg) => arg
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio between 0 and 1")
                    })?,
            },
            _ => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={name:?} is not supported: use always_on, always_off, \
                     traceidratio, or one of them prefixed with parentbased_"
                ));
            }
        };
        Ok(HeadSampler {
            ratio,
            parent_based,
        })
    }

    /// Whether a trace starting here is recorded; `parent` is the caller's decision, if it sent one.
    fn decide(&self, parent: Option<bool>) -> bool {
        match parent {
            Some(sampled) if self.parent_based => sampled,
            _ => self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio),
        }
    }
}

/// The sampler, once traces are exported ([`super::init`]); with none, nothing is decided.
static SAMPLER: OnceLock<HeadSampler> = OnceLock::new();

pub(super) fn install(sampler: HeadSampler) {
    let _ = SAMPLER.set(sampler);
}

/// The decision for a trace starting here, continuing the caller's `parent` context if it brought
/// one; `None` when traces are off.
pub(crate) fn decide(parent: Option<&opentelemetry::Context>) -> Option<bool> {
    let sampler = SAMPLER.get()?;
    let parent = parent.map(|cx| cx.span().span_context().is_sampled());
    Some(sampler.decide(parent))
}

thread_local! {
    /// The decision of the trace whose work this thread is running right now, if any.
    static TRACE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `f` as part of the trace with this decision (restoring whatever was current before).
pub(crate) fn within<R>(decision: Option<bool>, f: impl FnOnce() -> R) -> R {
    let Some(decision) = decision else {
        return f();
    };
    let outer = TRACE.replace(Some(decision));
    let result = f();
    TRACE.set(outer);
    result
}

pin_project! {
    /// A future whose every poll runs as part of one trace's decision (see the module comment).
    pub(crate) struct Sampled<F> {
        #[pin]
        inner: F,
        decision: Option<bool>,
    }
}

impl<F> Sampled<F> {
    pub(crate) fn new(inner: F, decision: Option<bool>) -> Self {
        Sampled { inner, decision }
    }
}

impl<F: Future> Future for Sampled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        within(*this.decision, || this.inner.poll(cx))
    }
}

/// The OpenTelemetry layer's filter: a span or event is recorded when the work running it belongs
/// to a sampled trace, or, outside any such work, when its parent is recorded.
pub(crate) struct HeadSampling;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for HeadSampling {
    fn enabled(&self, _: &Metadata<'_>, cx: &layer::Context<'_, S>) -> bool {
        match TRACE.get() {
            Some(decision) => decision,
            None => cx.lookup_current().is_some(),
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // It filters by trace, not by level. Without a hint, `ours.and(HeadSampling)` has none either,
        // the process's maximum level becomes TRACE, and every `log` record of every library (which
        // `tracing-log` turns into a filter pass) gets past `log`'s own level check.
        Some(LevelFilter::TRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_sampler_names_parse() {
        let parse = |s, a| HeadSampler::parse(s, a);
        assert_eq!(
            parse(None, None).unwrap(),
            HeadSampler {
                ratio: 1.0,
                parent_based: true
            }
        );
        let ratio = parse(Some("parentbased_traceidratio"), Some("0.01")).unwrap();
        assert_eq!((ratio.ratio, ratio.parent_based), (0.01, true));
        let off = parse(Some("always_off"), None).unwrap();
        assert_eq!((off.ratio, off.parent_based), (0.0, false));
        assert!(parse(Some("traceidratio"), Some("1.5")).is_err());
        assert!(parse(Some("traceidratio"), Some("a lot")).is_err());
        assert!(parse(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn a_callers_decision_wins_only_when_parent_based() {
        let never = HeadSampler::parse(Some("parentbased_always_off"), None).unwrap();
        assert!(never.decide(Some(true)));
        assert!(!never.decide(Some(false)) && !never.decide(None));
        let always = HeadSampler::parse(Some("always_on"), None).unwrap();
        assert!(always.decide(Some(false)));
    }

    #[test]
    fn a_ratio_samples_about_that_share() {
        let tenth = HeadSampler::parse(Some("traceidratio"), Some("0.1")).unwrap();
        let sampled = (0..100_000).filter(|_| tenth.decide(None)).count();
        // 10,000 expected; the standard deviation is ~95.
        assert!((9_000..11_000).contains(&sampled), "{sampled}");
    }
}
