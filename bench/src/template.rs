//! The subset of ghz's call templates (Go `text/template` actions in the request data) that varies
//! recipients from one request to the next. A template is parsed once; rendering a request is then
//! string concatenation, so the load generator spends its time on calls, not on templating.
//!
//! Supported actions (anything else is refused when the run starts, never sent as literal text):
//! `{{.RequestNumber}}`, `{{.WorkerID}}`, `{{.UUID}}`, `{{.Timestamp}}`, `{{.TimestampUnix}}`,
//! `{{.TimestampUnixMilli}}`, `{{.TimestampUnixNano}}`, `{{.FullyQualifiedName}}`,
//! `{{.MethodName}}`, `{{.ServiceName}}`, `{{.InputName}}`, `{{.OutputName}}`, and the functions
//! `{{newUUID}}`, `{{randomString N}}` (N ≤ 0: a random length of 2 to 16) and
//! `{{randomInt MIN MAX}}` (MIN ≤ n < MAX; also spelled `randInt`, as sprig names it).

use rand::{Rng, distr::Alphanumeric};
use std::{fmt::Write, time::SystemTime};

/// What one request's template sees.
pub struct CallData<'a> {
    pub request_number: u64,
    pub worker_id: &'a str,
    /// `package.Service.Method`.
    pub method: &'a str,
    pub input: &'a str,
    pub output: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    RequestNumber,
    WorkerId,
    Uuid,
    Timestamp,
    TimestampUnix,
    TimestampUnixMilli,
    TimestampUnixNano,
    FullyQualifiedName,
    MethodName,
    ServiceName,
    InputName,
    OutputName,
    RandomString(i64),
    RandomInt(i64, i64),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed template action in {:?}", &rest[open..]))?;
            pieces.push(action(after[..close].trim())?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// True when the template has no actions: render once and reuse the result.
    pub fn is_constant(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    pub fn render(&self, data: &CallData<'_>) -> String {
        let mut out = String::new();
        let mut rng = rand::rng();
        let now = || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
        };
        let (service, method) = data.method.rsplit_once('.').unwrap_or(("", data.method));
        for piece in &self.pieces {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Text(t) => out.write_str(t),
                Piece::RequestNumber => write!(out, "{}", data.request_number),
                Piece::WorkerId => out.write_str(data.worker_id),
                Piece::Uuid => write!(out, "{}", uuid::Uuid::new_v4()),
                Piece::Timestamp => {
                    let seconds = now().as_secs() as i64;
                    write!(out, "{}", prost_types::Timestamp { seconds, nanos: 0 })
                }
                Piece::TimestampUnix => write!(out, "{}", now().as_secs()),
                Piece::TimestampUnixMilli => write!(out, "{}", now().as_millis()),
                Piece::TimestampUnixNano => write!(out, "{}", now().as_nanos()),
                Piece::FullyQualifiedName => out.write_str(data.method),
                Piece::MethodName => out.write_str(method),
                Piece::ServiceName => out.write_str(service.rsplit('.').next().unwrap_or("")),
                Piece::InputName => out.write_str(data.input),
                Piece::OutputName => out.write_str(data.output),
                Piece::RandomString(len) => {
                    let len = if *len > 0 {
                        *len as usize
                    } else {
                        rng.random_range(2..=16)
                    };
                    let s: String = (&mut rng)
                        .sample_iter(Alphanumeric)
                        .take(len)
                        .map(char::from)
                        .collect();
                    out.write_str(&s)
                }
                Piece::RandomInt(min, max) => write!(out, "{}", rng.random_range(*min..*max)),
            };
        }
        out
    }
}

fn action(body: &str) -> Result<Piece, String> {
    let words: Vec<&str> = body.split_whitespace().collect();
    let int = |w: &str| {
        w.parse::<i64>()
            .map_err(|_| format!("{{{{{body}}}}}: {w:?} is not an integer"))
    };
    Ok(match words.as_slice() {
        [".RequestNumber"] => Piece::RequestNumber,
        [".WorkerID"] => Piece::WorkerId,
        [".UUID"] => Piece::Uuid,
        [".Timestamp"] => Piece::Timestamp,
        [".TimestampUnix"] => Piece::TimestampUnix,
        [".TimestampUnixMilli"] => Piece::TimestampUnixMilli,
        [".TimestampUnixNano"] => Piece::TimestampUnixNano,
        [".FullyQualifiedName"] => Piece::FullyQualifiedName,
        [".MethodName"] => Piece::MethodName,
        [".ServiceName"] => Piece::ServiceName,
        [".InputName"] => Piece::InputName,
        [".OutputName"] => Piece::OutputName,
        ["newUUID"] => Piece::Uuid,
        ["randomString", n] => Piece::RandomString(int(n)?),
        ["randomInt" | "randInt", min, max] => {
            let (min, max) = (int(min)?, int(max)?);
            if min >= max {
                return Err(format!("{{{{{body}}}}}: MIN must be below MAX"));
            }
            Piece::RandomInt(min, max)
        }
        _ => {
            return Err(format!(
                "unsupported template action {{{{{body}}}}} (see `suppressd bench --help`)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> CallData<'static> {
        CallData {
            request_number: 42,
            worker_id: "c0w3",
            method: "suppress.v1.Suppression.CheckSuppressed",
            input: "CheckSuppressedRequest",
            output: "CheckSuppressedResponse",
        }
    }

    #[test]
    fn fields_and_functions_render() {
        let t = Template::parse(
            r#"{"e":"u{{.RequestNumber}}-{{ .WorkerID }}@x","m":"{{.MethodName}}","s":"{{.ServiceName}}"}"#,
        )
        .unwrap();
        assert_eq!(
            t.render(&data()),
            r#"{"e":"u42-c0w3@x","m":"CheckSuppressed","s":"Suppression"}"#
        );
        let r = Template::parse("{{randomInt 5 6}}/{{randomString 4}}")
            .unwrap()
            .render(&data());
        assert!(r.starts_with("5/") && r.len() == 6, "{r}");
        assert_eq!(
            Template::parse("{{newUUID}}")
                .unwrap()
                .render(&data())
                .len(),
            36
        );
    }

    #[test]
    fn unknown_actions_are_refused() {
        assert!(Template::parse("{{.Nope}}").is_err());
        assert!(Template::parse("{{randomInt 3 3}}").is_err());
        assert!(Template::parse("{{.RequestNumber").is_err());
        assert!(Template::parse("plain").unwrap().is_constant());
    }
}
