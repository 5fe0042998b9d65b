//! The webhook channel: an HTTP POST of the alert as JSON, signed with HMAC-SHA256.
//!
//! Three bodies: `convoy` (the alert as data, for receivers that act on it), `slack` (Slack's
//! incoming-webhook `text` with mrkdwn) and `teams` (a Microsoft Teams `MessageCard`). With a
//! secret, every request carries `X-Convoy-Timestamp` (Unix seconds) and
//! `X-Convoy-Signature: sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY` under the secret, so a
//! receiver can check who sent it and refuse a replay (a timestamp far from its clock);
//! `X-Convoy-Delivery` names the delivery, the same on every retry, so a receiver that saw it
//! once can ignore it again (delivery is at least once).
//!
//! Not here: retries and rate limits ([`super::deliver`]), redirects (refused: a webhook URL
//! is configured, not discovered).

use anyhow::{Context, Result, bail};
use convoy_core::alerts::{Alert, Severity};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    Convoy,
    Slack,
    Teams,
}

/// A webhook channel's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
    pub secret_file: Option<PathBuf>,
}

impl WebhookConfig {
    pub fn new(url: String, format: Option<&str>, secret_file: Option<PathBuf>) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("`url` `{url}` is not an http:// or https:// URL");
        }
        let format = match format.unwrap_or("convoy") {
            "convoy" => WebhookFormat::Convoy,
            "slack" => WebhookFormat::Slack,
            "teams" => WebhookFormat::Teams,
            other => bail!("`format` is `{other}`; it is convoy, slack or teams"),
        };
        Ok(Self {
            url,
            format,
            secret_file,
        })
    }
}

/// What one delivery says besides the alert.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    pub alert: &'a Alert,
    /// The incident's thread on this channel and this alert's place in it (0 opens it).
    pub thread: &'a str,
    pub update_no: i64,
    /// The delivery's id, the same on every retry.
    pub delivery: String,
    /// How to open the rollout.
    pub open: String,
}

/// The alert as plain text: title, words, evidence, how to open it (e-mail and chat bodies).
pub fn plain_text(e: &Envelope<'_>) -> String {
    let a = e.alert;
    let mut out = String::new();
    if e.update_no > 0 {
        let _ = writeln!(out, "Update {} to {}", e.update_no, e.thread);
    }
    let _ = write!(out, "{}\n\n{}\n", a.title, a.summary);
    if !a.evidence.is_empty() {
        out.push_str("\nEvidence:\n");
        for line in &a.evidence {
            let _ = writeln!(out, "- {line}");
        }
    }
    let _ = write!(
        out,
        "
At {} (rollout clock). Open: {}
",
        a.at, e.open
    );
    out
}

/// The request body for `format`.
pub fn body(format: WebhookFormat, e: &Envelope<'_>) -> serde_json::Value {
    let a = e.alert;
    match format {
        WebhookFormat::Convoy => json!({
            "version": 1,
            "delivery": e.delivery,
            "thread": e.thread,
            "update": e.update_no,
            "open": e.open,
            "alert": a,
        }),
        WebhookFormat::Slack => {
            let icon = match a.severity {
                Severity::Critical => ":rotating_light:",
                Severity::Warning => ":warning:",
                Severity::Info => ":information_source:",
            };
            let mut text = format!("{icon} *{}*\n{}", a.title, a.summary);
            for line in &a.evidence {
                let _ = write!(text, "\n• `{line}`");
            }
            let _ = write!(text, "\n<{}|Open> · thread {}", e.open, e.thread);
            json!({ "text": text })
        }
        WebhookFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": a.title,
            "themeColor": match a.severity {
                Severity::Critical => "D13438",
                Severity::Warning => "FFB900",
                Severity::Info => "0078D7",
            },
            "title": a.title,
            "text": plain_text(e).replace('\n', "<br>"),
        }),
    }
}

/// `sha256=HEX` of the HMAC-SHA256 of `TIMESTAMP.BODY` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `e` to the webhook; `Err` says why it was not accepted (a status other than 2xx, a
/// timeout, a refused connection).
pub async fn send(config: &WebhookConfig, e: &Envelope<'_>, now_secs: i64) -> Result<()> {
    let body = serde_json::to_vec(&body(config.format, e)).context("encoding the alert")?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let mut request = client
        .post(&config.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("convoy/", env!("CARGO_PKG_VERSION")))
        .header("X-Convoy-Delivery", &e.delivery);
    if let Some(path) = &config.secret_file {
        let secret = super::read_secret(path)?;
        request = request
            .header("X-Convoy-Timestamp", now_secs.to_string())
            .header(
                "X-Convoy-Signature",
                signature(secret.as_bytes(), now_secs, &body),
            );
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("{}", without_url(&err)))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        bail!("the webhook answered {status}: {text}");
    }
    Ok(())
}

/// A request error in words, without its URL (a Slack webhook's URL is its secret).
fn without_url(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(err);
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        format!("the request {what}")
    } else {
        format!("the request {what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::alerts::AlertKind;
    use convoy_core::time::Timestamp;

    fn alert() -> Alert {
        Alert {
            incident: "r1/stop".into(),
            kind: AlertKind::GatePaused,
            severity: Severity::Critical,
            rollout_id: "r1".into(),
            at: Timestamp(1_800_000_000),
            title: "Rollout r1 paused by a health gate in wave canary".into(),
            summary:
                "13 crashes on 5 T300/C devices in 20.0 device-hours; normal would be about 0."
                    .into(),
            evidence: vec!["crash (stratum T300/C): p = 4.9e-16".into()],
            resolves: false,
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Checked against an independent implementation: the `openssl` command.
        assert_eq!(
            signature(b"Jefe", 1_800_000_000, b"{\"a\":1}"),
            format!("sha256={}", openssl_hmac("Jefe", "1800000000.{\"a\":1}"))
        );
        assert_ne!(
            signature(b"Jefe", 1_800_000_001, b"{}"),
            signature(b"Jefe", 1_800_000_000, b"{}")
        );
    }

    /// The HMAC as the `openssl` command computes it, for an independent check.
    fn openssl_hmac(key: &str, message: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", key, "-r"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(message.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("openssl ran");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.split_whitespace().next().expect("a digest").to_owned()
    }

    #[test]
    fn each_format_carries_the_words_and_the_link() {
        let a = alert();
        let e = Envelope {
            alert: &a,
            thread: "r1/stop#1",
            update_no: 0,
            delivery: "7".into(),
            open: "https://convoy.example/api/v1/rollouts/r1/timeline".into(),
        };
        let convoy = body(WebhookFormat::Convoy, &e);
        assert_eq!(convoy["alert"]["kind"], "gate_paused");
        assert_eq!(convoy["thread"], "r1/stop#1");
        let slack = body(WebhookFormat::Slack, &e)["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            slack.contains("*Rollout r1 paused") && slack.contains("13 crashes"),
            "{slack}"
        );
        assert!(slack.contains("<https://convoy.example/api/v1/rollouts/r1/timeline|Open>"));
        let teams = body(WebhookFormat::Teams, &e);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["themeColor"], "D13438");
    }
}
