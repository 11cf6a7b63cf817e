//! What a person texts to a number: the keywords of the CTIA's messaging principles and the FCC's
//! 2025 consent-revocation rule.
//!
//! The rule: the whole message, with surrounding white space and trailing punctuation (`.`, `!`)
//! removed, compared case-insensitively. "STOP", " stop ", "Stop." and "STOP!" are STOP; "stop
//! please" and "STOP ALL" are not keywords, and are ignored (the provider's own keyword handling
//! and a human reading replies are where free text is judged).

/// A keyword, by what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT: no more texts from the tenant.
    Stop,
    /// START, UNSTOP, YES: the person's own opt-in for exactly what their STOP covered.
    Start,
    /// HELP, INFO: who is texting and how to stop.
    Help,
}

impl Keyword {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }
}

/// The keyword a message is, if it is one.
pub(crate) fn keyword(message: &str) -> Option<Keyword> {
    let word = message
        .trim()
        .trim_end_matches(['.', '!'])
        .trim_end()
        .to_ascii_uppercase();
    match word.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => {
            Some(Keyword::Stop)
        }
        "START" | "UNSTOP" | "YES" => Some(Keyword::Start),
        "HELP" | "INFO" => Some(Keyword::Help),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyword_and_the_near_misses() {
        for word in [
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "REVOKE",
            "OPTOUT",
        ] {
            for text in [
                word.to_owned(),
                word.to_lowercase(),
                format!("  {word}\n"),
                format!("{word}."),
                format!("{word}!"),
            ] {
                assert_eq!(keyword(&text), Some(Keyword::Stop), "{text:?}");
            }
        }
        for word in ["START", "unstop", "Yes"] {
            assert_eq!(keyword(word), Some(Keyword::Start), "{word}");
        }
        for word in ["HELP", "info"] {
            assert_eq!(keyword(word), Some(Keyword::Help), "{word}");
        }
        for text in [
            "stop please",
            "STOP ALL",
            "stopp",
            "",
            "  ",
            "no",
            "STOP?",
            ".",
        ] {
            assert_eq!(keyword(text), None, "{text:?}");
        }
    }
}
