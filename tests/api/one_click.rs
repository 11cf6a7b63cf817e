//! The public HTTP front: RFC 8058 one-click over plain HTTP/1.1, and the page a person sees, driven
//! in a real headless Chromium through chromedriver. A GET never records anything.

use crate::{helpers::*, processes::free_port, tokens::issue};
use std::{net::SocketAddr, process::Stdio, time::Duration};
use suppressd::{
    domain::Clock,
    proto::{self, Channel},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn marketing() -> proto::Scope {
    scope("acme", Channel::Email, "marketing", "")
}

pub(crate) async fn app_with_front() -> TestApp {
    let app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.http_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert!(app.http_addr.is_some(), "the HTTP front is listening");
    app
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: String,
    pub(crate) body: String,
}

/// One HTTP/1.1 request over a fresh TCP connection, as a mail provider's one-click POST is.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) fn receipt_in(page: &str) -> &str {
    let start = page
        .find("<code id=\"receipt\">")
        .expect("the page shows a receipt")
        + 19;
    let len = page[start..].find('<').unwrap();
    &page[start..start + len]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_post_records_the_opt_out_and_get_never_does() {
    let mut app = app_with_front().await;
    let front = app.http_addr.unwrap();
    let token = issue(&mut app.client, "click@example.com", marketing(), 3600).await;
    let path = format!("/unsubscribe/{token}");

    // GET: the page with one button, and nothing recorded (scanners prefetch links).
    let page = http(front, "GET", &path, FORM, "").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("stop receiving emails about “marketing” from acme"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<button type=\"submit\">Unsubscribe</button>")
    );
    assert!(!page.body.contains("<script"));
    assert!(page.headers.contains("cache-control: no-store"));
    assert!(page.headers.contains("referrer-policy: no-referrer"));
    assert_eq!(app.rows(None).await, 0);
    assert!(
        !app.is_suppressed(email("click@example.com"), marketing())
            .await
    );

    // RFC 8058 one-click POST.
    let done = http(front, "POST", &path, FORM, "List-Unsubscribe=One-Click").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body
            .contains("You will no longer receive emails about “marketing” from acme")
    );
    let receipt = receipt_in(&done.body).to_owned();
    assert_eq!(app.rows(Some(&receipt)).await, 1);
    // The page is the confirmation: on the trail, as served.
    let told = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: receipt.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .confirmations;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].provider_message_id, "one-click confirmation page");
    assert_eq!(
        told[0].content_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&done.body))
    );
    assert_eq!(
        app.actor_and_source(&receipt).await,
        ("token:k1".to_owned(), proto::Source::OneClick as i64)
    );
    assert!(
        app.is_suppressed(email("click@example.com"), marketing())
            .await
    );

    // A retry is the same opt-out.
    let again = http(front, "POST", &path, FORM, "List-Unsubscribe=One-Click").await;
    assert_eq!(receipt_in(&again.body), receipt);
    assert_eq!(app.rows(None).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_one_click_is_understood_and_bad_requests_record_nothing() {
    let mut app = app_with_front().await;
    let front = app.http_addr.unwrap();
    let token = issue(&mut app.client, "multi@example.com", marketing(), 3600).await;
    let path = format!("/unsubscribe/{token}");

    // No field, the wrong value, an altered token, an unknown path: refused, nothing recorded.
    assert_eq!(http(front, "POST", &path, FORM, "").await.status, 400);
    assert_eq!(
        http(front, "POST", &path, FORM, "List-Unsubscribe=Yes")
            .await
            .status,
        400
    );
    // Another letter of the token's own alphabet: flipping a bit turned a `_` into a `^`, which
    // the HTTP server refuses in a path before any handler sees it.
    let mut altered = token.clone().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    let altered = format!("/unsubscribe/{}", String::from_utf8(altered).unwrap());
    let refused = http(front, "POST", &altered, FORM, "List-Unsubscribe=One-Click").await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("This link is not valid"));
    assert_eq!(http(front, "GET", &altered, FORM, "").await.status, 400);
    assert_eq!(app.rows(None).await, 0);

    // The multipart form some providers send (RFC 8058 §8.1).
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n\
                One-Click\r\n--XyZ--\r\n";
    let done = http(
        front,
        "POST",
        &path,
        "multipart/form-data; boundary=XyZ",
        body,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(app.rows(Some(receipt_in(&done.body))).await, 1);
    assert!(
        app.is_suppressed(email("multi@example.com"), marketing())
            .await
    );
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    port: u16,
    child: std::process::Child,
}

impl Driver {
    async fn start() -> Driver {
        for tool in ["chromium", "chromedriver"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{tool} is missing: this test needs Debian's chromium and chromium-driver \
                 (apt-get install -y chromium chromium-driver; .ci/run installs them)"
            );
        }
        let port = free_port();
        let mut child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Driver { port, child };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not listen");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every answer carries the security headers, also those the framework makes itself: a method the
/// front does not serve, an unknown path, a body over the limit, a token path that is not UTF-8
/// (which shows the "link is not valid" page, as any bad link does). Nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let app = app_with_front().await;
    let front = app.http_addr.unwrap();
    let big = format!("List-Unsubscribe=One-Click&pad={}", "x".repeat(64 * 1024));
    let answers = [
        (http(front, "PUT", "/unsubscribe/abc", FORM, "").await, 405),
        (
            http(front, "OPTIONS", "/unsubscribe/abc", FORM, "").await,
            405,
        ),
        (http(front, "GET", "/elsewhere", FORM, "").await, 404),
        (
            http(front, "POST", "/unsubscribe/abc", FORM, &big).await,
            413,
        ),
        (
            http(front, "GET", "/unsubscribe/%FF%FE", FORM, "").await,
            400,
        ),
    ];
    for (reply, status) in &answers {
        assert_eq!(reply.status, *status, "{}", reply.headers);
        for header in [
            "cache-control: no-store",
            "referrer-policy: no-referrer",
            "content-security-policy: default-src 'none'",
        ] {
            assert!(
                reply.headers.contains(header),
                "{status}: no {header} in {}",
                reply.headers
            );
        }
    }
    assert!(
        answers[4].0.body.contains("This link is not valid"),
        "{}",
        answers[4].0.body
    );
    assert_eq!(app.rows(None).await, 0);
}

/// With `SUPPRESSD_SCREENSHOT_DIR` set, saves what the person sees, to look at by eye.
async fn screenshot(browser: &fantoccini::Client, name: &str) {
    if let Some(dir) = std::env::var_os("SUPPRESSD_SCREENSHOT_DIR") {
        let png = browser.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_unsubscribes_in_a_real_browser() {
    use fantoccini::{ClientBuilder, Locator};
    let mut app = app_with_front().await;
    let front = app.http_addr.unwrap();
    let token = issue(&mut app.client, "browser@example.com", marketing(), 3600).await;
    let url = format!("http://{front}/unsubscribe/{token}");

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");

    let result = async {
        browser.goto(&url).await?;
        let text = browser.find(Locator::Css("main")).await?.text().await?;
        assert!(
            text.contains("stop receiving emails about “marketing” from acme"),
            "{text}"
        );
        // Opening the page recorded nothing.
        assert_eq!(app.rows(None).await, 0);
        screenshot(&browser, "unsubscribe-page.png").await;

        browser
            .find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Css("#done")).await?;
        let text = browser.find(Locator::Css("main")).await?.text().await?;
        let receipt = browser.find(Locator::Css("#receipt")).await?.text().await?;
        screenshot(&browser, "unsubscribe-done.png").await;
        Ok::<_, fantoccini::error::CmdError>((text, receipt))
    }
    .await;
    let _ = browser.close().await;
    let (text, receipt) = result.expect("the browser session");

    assert!(text.contains("You are unsubscribed"), "{text}");
    assert!(text.contains("You will no longer receive emails about “marketing” from acme"));
    assert_eq!(app.rows(Some(&receipt)).await, 1);
    // The button on the page is the person following the link: source LINK.
    assert_eq!(
        app.actor_and_source(&receipt).await,
        ("token:k1".to_owned(), proto::Source::Link as i64)
    );
    assert!(
        app.is_suppressed(email("browser@example.com"), marketing())
            .await
    );
}
