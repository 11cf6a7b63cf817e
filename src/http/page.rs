//! The pages of the front: plain, accessible HTML (one heading, one sentence, one button), no
//! script, no external resources. Every value put into a page is escaped.

use crate::domain::{Channel, Scope};

/// What an opt-out scope means, in words a person reads: "emails about “marketing” from acme".
pub(crate) fn scope_in_words(scope: &Scope) -> String {
    let what = match scope.channel {
        None => "all messages",
        Some(Channel::Email) => "emails",
        Some(Channel::Sms) => "text messages",
        Some(Channel::Push) => "push notifications",
        Some(Channel::Voice) => "phone calls",
        Some(Channel::Postal) => "letters",
    };
    let mut words = what.to_owned();
    if !scope.topic.is_empty() {
        words.push_str(&format!(" about “{}”", scope.topic));
    }
    if !scope.campaign.is_empty() {
        words.push_str(&format!(" of the campaign “{}”", scope.campaign));
    }
    match scope.tenant.as_str() {
        "" => words.push_str(" from this sender"),
        tenant => words.push_str(&format!(" from {tenant}")),
    }
    words
}

/// The page a GET shows: what the person is about to leave, and the one button.
pub(crate) fn confirm(scope: &Scope) -> String {
    let words = escape(&scope_in_words(scope));
    layout(
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe</h1>\n\
             <p>Press the button to stop receiving {words}.</p>\n\
             <form method=\"post\">\n\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n\
             <input type=\"hidden\" name=\"via\" value=\"page\">\n\
             <button type=\"submit\">Unsubscribe</button>\n\
             </form>"
        ),
    )
}

/// The page after the opt-out was recorded.
pub(crate) fn done(scope: &Scope, receipt_id: &str) -> String {
    let words = escape(&scope_in_words(scope));
    let receipt = escape(receipt_id);
    layout(
        "You are unsubscribed",
        &format!(
            "<h1 id=\"done\">You are unsubscribed</h1>\n\
             <p>You will no longer receive {words}.</p>\n\
             <p>Your receipt: <code id=\"receipt\">{receipt}</code></p>"
        ),
    )
}

pub(crate) fn invalid_link() -> String {
    layout(
        "Link not valid",
        "<h1>This link is not valid</h1>\n\
         <p>The unsubscribe link is incomplete or has expired. Use the link in a recent message, \
         or reply to the sender.</p>",
    )
}

pub(crate) fn not_found() -> String {
    layout(
        "Not found",
        "<h1>Not found</h1>\n<p>There is no page here. Use the unsubscribe link in a message.</p>",
    )
}

pub(crate) fn too_large() -> String {
    layout(
        "Not understood",
        "<h1>Not understood</h1>\n<p>The request was too large. Use the button on the \
         unsubscribe page.</p>",
    )
}

pub(crate) fn missing_field() -> String {
    layout(
        "Not understood",
        "<h1>Not understood</h1>\n<p>Use the button on the unsubscribe page.</p>",
    )
}

pub(crate) fn try_again() -> String {
    layout(
        "Please try again",
        "<h1>Please try again</h1>\n\
         <p>Your request could not be recorded just now. Nothing was changed; please try again in a \
         minute.</p>",
    )
}

pub(crate) fn failed() -> String {
    layout(
        "Something went wrong",
        "<h1>Something went wrong</h1>\n<p>Your request could not be recorded. Please try again \
         later.</p>",
    )
}

fn layout(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:36em;margin:3em auto;padding:0 1em;\
         line-height:1.5}}button{{font-size:1.1em;padding:.5em 1.5em}}</style>\n\
         </head>\n<body>\n<main>\n{main}\n</main>\n</body>\n</html>\n"
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_sentences_and_are_escaped() {
        let s = Scope::parse("acme", Some(Channel::Email), "marketing", "").unwrap();
        assert_eq!(scope_in_words(&s), "emails about “marketing” from acme");
        let s = Scope::parse("", None, "", "").unwrap();
        assert_eq!(scope_in_words(&s), "all messages from this sender");
        let s = Scope::parse("<b>", Some(Channel::Sms), "", "RC-1").unwrap();
        let page = confirm(&s);
        assert!(page.contains("text messages of the campaign “RC-1” from &lt;b&gt;"));
        assert!(!page.contains("<b>"));
    }
}
