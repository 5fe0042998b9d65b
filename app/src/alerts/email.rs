//! The e-mail channel: SMTP with STARTTLS (or implicit TLS) and authentication, through
//! `lettre`.
//!
//! An incident's alerts are one thread in a mail reader: the first alert's `Message-ID` is
//! `<THREAD.0@convoy>`, and each update carries `In-Reply-To` and `References` to it.
//! `tls = "none"` is refused for any server but the loopback: a password or an alert must not
//! cross a network in clear text.
//!
//! Not here: retries and rate limits ([`super::deliver`]).

use anyhow::{Context, Result, bail};
use lettre::Transport;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use std::path::PathBuf;
use std::time::Duration;

use super::webhook::{Envelope, plain_text};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (the default; port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only to a server on the loopback.
    None,
}

/// An e-mail channel's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailConfig {
    pub server: String,
    pub port: u16,
    pub tls: EmailTls,
    /// Extra root certificate (PEM) for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
}

/// The fields of an e-mail channel as the file gives them.
pub struct EmailFields<'a> {
    pub server: String,
    pub port: Option<u16>,
    pub tls: Option<&'a str>,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl EmailConfig {
    pub fn new(f: EmailFields<'_>) -> Result<Self> {
        let tls = match f.tls.unwrap_or("starttls") {
            "starttls" => EmailTls::StartTls,
            "tls" => EmailTls::Implicit,
            "none" => EmailTls::None,
            other => bail!("`tls` is `{other}`; it is starttls, tls or none"),
        };
        if tls == EmailTls::None && !is_loopback(&f.server) {
            bail!(
                "`tls = \"none\"` is only allowed for a server on this machine (127.0.0.1, ::1, localhost), not `{}`",
                f.server
            );
        }
        if f.username.is_some() != f.password_file.is_some() {
            bail!("`username` and `password_file` go together");
        }
        let from: Mailbox = f
            .from
            .parse()
            .with_context(|| format!("`from` `{}` is not an e-mail address", f.from))?;
        if f.to.is_empty() {
            bail!("`to` is empty");
        }
        let to =
            f.to.iter()
                .map(|t| {
                    t.parse::<Mailbox>()
                        .with_context(|| format!("`to` `{t}` is not an e-mail address"))
                })
                .collect::<Result<_>>()?;
        let port = f.port.unwrap_or(match tls {
            EmailTls::StartTls => 587,
            EmailTls::Implicit => 465,
            EmailTls::None => 25,
        });
        Ok(Self {
            server: f.server,
            port,
            tls,
            ca_file: f.ca_file,
            username: f.username,
            password_file: f.password_file,
            from,
            to,
        })
    }
}

/// The message-id of `thread`'s alert number `n` (without the angle brackets).
fn message_id(thread: &str, n: i64) -> String {
    // A message-id's left part may not hold `/` or `#` unquoted in every reader: keep it plain.
    let clean: String = thread
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("{clean}.{n}@convoy")
}

/// The message for `e`.
pub fn message(config: &EmailConfig, e: &Envelope<'_>) -> Result<Message> {
    let subject = if e.update_no > 0 {
        format!("Re: [Convoy] {}", e.alert.title)
    } else {
        format!("[Convoy] {}", e.alert.title)
    };
    let mut builder = Message::builder()
        .from(config.from.clone())
        .subject(subject)
        .message_id(Some(format!("<{}>", message_id(e.thread, e.update_no))))
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(to.clone());
    }
    if e.update_no > 0 {
        let first = format!("<{}>", message_id(e.thread, 0));
        builder = builder.in_reply_to(first.clone()).references(first);
    }
    builder.body(plain_text(e)).context("building the e-mail")
}

/// How long the SMTP conversation may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `e` by e-mail (blocking: the deliverer runs it on its own thread).
pub fn send(config: &EmailConfig, e: &Envelope<'_>) -> Result<()> {
    let email = message(config, e)?;
    let tls_parameters = || -> Result<TlsParameters> {
        let mut b = TlsParameters::builder(config.server.clone());
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading the CA file {}", ca.display()))?;
            b = b.add_root_certificate(
                Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
            );
        }
        b.build_rustls().context("setting up TLS")
    };
    let tls = match config.tls {
        EmailTls::StartTls => Tls::Required(tls_parameters()?),
        EmailTls::Implicit => Tls::Wrapper(tls_parameters()?),
        EmailTls::None => Tls::None,
    };
    let mut transport = SmtpTransport::builder_dangerous(config.server.clone())
        .port(config.port)
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if let (Some(user), Some(path)) = (&config.username, &config.password_file) {
        let password = super::read_secret(path)?;
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport.build().send(&email).map_err(|err| {
        anyhow::anyhow!(
            "the SMTP server {}:{} refused or failed: {err}",
            config.server,
            config.port
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::alerts::{Alert, AlertKind, Severity};
    use convoy_core::time::Timestamp;

    fn fields(server: &str, tls: Option<&'static str>) -> EmailFields<'static> {
        EmailFields {
            server: server.into(),
            port: None,
            tls,
            ca_file: None,
            username: None,
            password_file: None,
            from: "Convoy <convoy@example.com>".into(),
            to: vec!["oncall@example.com".into()],
        }
    }

    #[test]
    fn clear_text_is_for_the_loopback_only() {
        assert!(EmailConfig::new(fields("127.0.0.1", Some("none"))).is_ok());
        let e = EmailConfig::new(fields("smtp.example", Some("none"))).expect_err("refused");
        assert!(format!("{e}").contains("only allowed for a server on this machine"));
        assert_eq!(
            EmailConfig::new(fields("smtp.example", None))
                .map(|c| c.port)
                .ok(),
            Some(587)
        );
    }

    #[test]
    fn updates_are_threaded_to_the_first_alert() {
        let config = EmailConfig::new(fields("smtp.example", None)).expect("valid");
        let alert = Alert {
            incident: "r1/stop".into(),
            kind: AlertKind::Resumed,
            severity: Severity::Info,
            rollout_id: "r1".into(),
            at: Timestamp(1_800_000_000),
            title: "Rollout r1 resumed by dana".into(),
            summary: "dana resumed it.".into(),
            evidence: Vec::new(),
            resolves: true,
        };
        let e = Envelope {
            alert: &alert,
            thread: "r1/stop#1",
            update_no: 2,
            delivery: "9".into(),
            open: "convoy rollout timeline --rollout r1 --format md".into(),
        };
        let text =
            String::from_utf8(message(&config, &e).expect("a message").formatted()).expect("utf-8");
        assert!(text.contains("Message-ID: <r1.stop.1.2@convoy>"), "{text}");
        assert!(text.contains("In-Reply-To: <r1.stop.1.0@convoy>"), "{text}");
        assert!(
            text.contains("Subject: Re: [Convoy] Rollout r1 resumed by dana"),
            "{text}"
        );
    }
}
