//! Text log lines that name the call they were logged in, as `tracing-subscriber`'s own format
//! would name an enclosing span: `2026-12-06T18:00:00.000000Z  WARN rpc{method=… principal=…}:
//! target: message`. The call is not a `tracing` span (see `telemetry::call`), so its fields are
//! written here, after the level, ahead of the spans the line was logged in.

use super::call::CallFields;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, Format, Full, Writer},
    },
    registry::LookupSpan,
};

/// `tracing-subscriber`'s full text format, plus the call's fields.
pub(crate) struct WithCall {
    /// The format with colour codes and without, picked by the writer's setting: a line in a call
    /// is written to a buffer first, and a buffer's writer has none and takes none.
    plain: Format<Full>,
    coloured: Format<Full>,
}

impl Default for WithCall {
    fn default() -> Self {
        Self {
            plain: format::format().with_ansi(false),
            coloured: format::format().with_ansi(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithCall
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let format = match writer.has_ansi_escapes() {
            true => &self.coloured,
            false => &self.plain,
        };
        CallFields::with_current(|call| {
            let Some(call) = call else {
                return format.format_event(ctx, writer.by_ref(), event);
            };
            let mut line = String::with_capacity(256);
            format.format_event(ctx, Writer::new(&mut line), event)?;
            let at = after_level(&line, event.metadata().level().as_str());
            let (head, tail) = line.split_at(at);
            writer.write_str(head)?;
            call.write_text(&mut writer)?;
            writer.write_str(": ")?;
            writer.write_str(tail)
        })
    }
}

/// Where a line of the full format continues after its level and the space that follows it
/// (colour codes included); the level is the line's first word that is one.
fn after_level(line: &str, level: &str) -> usize {
    let Some(at) = line.find(level) else {
        return 0;
    };
    let rest = &line[at + level.len()..];
    match rest.find(' ') {
        Some(space) => at + level.len() + space + 1,
        None => line.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_goes_after_the_level_with_or_without_colour() {
        let plain = "2026-12-06T18:00:00.000000Z  WARN suppressd::api: refused\n";
        let at = after_level(plain, "WARN");
        assert_eq!(&plain[at..], "suppressd::api: refused\n");
        let coloured =
            "\x1b[2m2026-12-06T18:00:00Z\x1b[0m \x1b[33m WARN\x1b[0m \x1b[2msuppressd\x1b[0m: x\n";
        let at = after_level(coloured, "WARN");
        assert_eq!(&coloured[at..], "\x1b[2msuppressd\x1b[0m: x\n");
    }
}
