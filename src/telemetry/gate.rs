//! Makes "no layer wants it" mean "not created": a span or event that every per-layer filter rejects
//! is disabled for the whole subscriber, so it costs a few filter calls and nothing more.
//!
//! `tracing-subscriber`'s registry does this only at the callsite level. When each filter's
//! `Interest` in a callsite is `never`, the callsite is off; but once any filter answers `sometimes`
//! (our head-sampling filter must: its answer depends on the call), every span of that callsite is
//! created in the registry, entered and exited on every poll, and closed, even when each filter then
//! rejects it. (In 0.3.23 `FilterMap::any_enabled` is `bits != u64::MAX`, true with fewer than 64
//! filters.) So with traces on, every `#[instrument]` span of an unsampled call was still allocated.
//!
//! Each per-layer filter is wrapped in [`Noted`], which notes on this thread whether it enabled the
//! span or event being filtered (and what interest it took in a new callsite). [`Gate`], a layer
//! installed directly on the registry, is asked last (layers are asked outermost first) and
//! answers with what was noted: enabled if any filter enabled it, the sum of the filters' interests
//! for a new callsite, the largest of their level hints. It must see every per-layer filter of the
//! subscriber noted, or it would disable what an unnoted one wants. What a subscriber without a
//! gate leaves noted (only tests build one) can only make a later answer more permissive.

use std::cell::Cell;
use tracing::{
    Event, Metadata, Subscriber, level_filters::LevelFilter, span, subscriber::Interest,
};
use tracing_subscriber::layer::{self, Filter, Layer};

thread_local! {
    /// Whether a filter enabled the span or event whose filtering pass this thread is in.
    static WANTED: Cell<bool> = const { Cell::new(false) };
    /// The filters' interest in the callsite this thread is registering, summed.
    static INTEREST: Cell<Option<Sum>> = const { Cell::new(None) };
    /// The most verbose of the filters' level hints, while the subscriber's is computed (`None`
    /// inside: a filter without a hint, which may enable any level).
    static HINT: Cell<Option<Option<LevelFilter>>> = const { Cell::new(None) };
}

/// An `Interest` as the registry sums them: `Never` or `Always` only when every filter says so.
#[derive(Clone, Copy, PartialEq)]
enum Sum {
    Never,
    Sometimes,
    Always,
}

impl Sum {
    fn of(interest: &Interest) -> Sum {
        if interest.is_never() {
            Sum::Never
        } else if interest.is_always() {
            Sum::Always
        } else {
            Sum::Sometimes
        }
    }
}

/// A per-layer filter that notes its decisions for [`Gate`]; otherwise it is the filter it wraps.
pub(crate) struct Noted<F>(pub(crate) F);

impl<S, F: Filter<S>> Filter<S> for Noted<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &layer::Context<'_, S>) -> bool {
        let enabled = self.0.enabled(meta, cx);
        if enabled {
            WANTED.set(true);
        }
        enabled
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        let this = Sum::of(&interest);
        INTEREST.set(Some(match INTEREST.get() {
            Some(sum) if sum != this => Sum::Sometimes,
            _ => this,
        }));
        interest
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &layer::Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let hint = self.0.max_level_hint();
        HINT.set(Some(match HINT.get() {
            Some(noted) => noted.zip(hint).map(|(a, b)| a.max(b)),
            None => hint,
        }));
        hint
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: layer::Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: layer::Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

/// The subscriber's last word on a span or event: what the [`Noted`] filters above it decided.
/// Install it first (`registry().with(Gate)`), so that it is asked after every filter.
pub(crate) struct Gate;

impl<S: Subscriber> Layer<S> for Gate {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        match INTEREST.take() {
            Some(Sum::Never) => Interest::never(),
            Some(Sum::Sometimes) => Interest::sometimes(),
            // With no filter noted, the registry's own sum decides.
            Some(Sum::Always) | None => Interest::always(),
        }
    }

    fn enabled(&self, _: &Metadata<'_>, _: layer::Context<'_, S>) -> bool {
        // Read and reset, so the next pass starts clean.
        WANTED.replace(false)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // The filters' hints (it is asked after them): with none of its own the subscriber's
        // maximum level would be TRACE, and `Some(OFF)` would hide a filter that has no hint
        // (`Layered` takes the larger, and `None` sorts below `Some`).
        HINT.take().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::{layer::Identity, prelude::*};

    /// A filter that decides per span, as head sampling does: `sometimes` for every callsite.
    struct Wants(bool);

    impl<S> Filter<S> for Wants {
        fn enabled(&self, _: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
            self.0
        }

        fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }
    }

    /// Two layers that record nothing, each behind a noted filter that wants the span or not.
    fn layers<S>([a, b]: [bool; 2]) -> impl Layer<S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        Identity::new()
            .with_filter(Noted(Wants(a)))
            .and_then(Identity::new().with_filter(Noted(Wants(b))))
    }

    /// Whether a span is created under those filters, with the gate or without.
    fn span_with(filters: [bool; 2], gated: bool) -> bool {
        let dispatch: tracing::Dispatch = if gated {
            tracing_subscriber::registry()
                .with(Gate)
                .with(layers(filters))
                .into()
        } else {
            tracing_subscriber::registry().with(layers(filters)).into()
        };
        tracing::dispatcher::with_default(&dispatch, || {
            !tracing::info_span!("filtered").is_disabled()
        })
    }

    #[test]
    fn a_span_no_filter_wants_is_not_created() {
        // What the gate is for: without it, the registry creates the span all the same.
        assert!(span_with([false, false], false));
        assert!(!span_with([false, false], true));
    }

    #[test]
    fn a_span_any_filter_wants_is_created() {
        assert!(span_with([true, false], true));
        assert!(span_with([false, true], true));
    }
}
