//! Alerts (issue 23): what a gate stop, a rollback, an abort, a completion or a stopped engine
//! sends to the people on call, through the channels of one configuration file.
//!
//! The path of an alert: the engine writes the rollout's timeline to the cache as it always
//! has; the feed ([`feed`]) reads new timeline entries and pending requests, asks the core
//! which of them are alerts (`convoy_core::alerts`), and enqueues one row per alert and
//! channel in the cache's alert outbox, in the same transaction as its cursor; the deliverer
//! ([`deliver`]) sends due rows through their channel ([`webhook`], [`email`], the console's
//! desktop notifications), retries failures with backoff, keeps each channel under its rate
//! limit, and audits every send and failure. So an alert survives a crash of any process, is
//! enqueued once per channel however often the feed reads its entry, and one process at a
//! time delivers (a lease in the cache).
//!
//! What it deliberately is not: a paging service. It does not escalate, acknowledge or
//! schedule on-call rotations; it hands alerts to the tools that do (a webhook to them, or
//! e-mail), and says plainly in the console when a channel is failing.

pub mod deliver;
pub mod email;
pub mod feed;
pub mod webhook;

use anyhow::{Context, Result, bail};
use convoy_core::alerts::AlertKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The alerts configuration file, as written (TOML, `docs/ALERTS.md`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The server's public URL, for links in alerts (`https://convoy.example/`).
    public_url: Option<String>,
    #[serde(default, rename = "channel")]
    channels: Vec<FileChannel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChannel {
    name: Option<String>,
    kind: Option<String>,
    /// Alert kinds this channel gets (default: all but `approval_waiting`... see `docs`).
    events: Option<Vec<String>>,
    max_per_minute: Option<u32>,
    // webhook
    url: Option<String>,
    format: Option<String>,
    secret_file: Option<PathBuf>,
    // smtp
    server: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    to: Option<Vec<String>>,
}

/// The configuration, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsConfig {
    pub public_url: Option<String>,
    pub channels: Vec<Channel>,
}

/// One channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kinds: Vec<AlertKind>,
    /// At most this many sends a minute; more wait their turn.
    pub max_per_minute: u32,
    pub target: Target,
}

/// Where a channel sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Webhook(webhook::WebhookConfig),
    Email(email::EmailConfig),
    /// A notification on the desktop of the console that delivers it.
    Desktop,
}

impl Target {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Target::Webhook(_) => "webhook",
            Target::Email(_) => "smtp",
            Target::Desktop => "desktop",
        }
    }
}

/// The kinds a channel gets when its `events` are not given: every one but the test.
fn default_kinds() -> Vec<AlertKind> {
    AlertKind::ALL
        .into_iter()
        .filter(|k| *k != AlertKind::Test)
        .collect()
}

impl AlertsConfig {
    /// Reads and checks the file at `path`: every error names the channel and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the alerts configuration {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("in the alerts configuration {}", path.display()))
    }

    /// Reads a configuration; relative file names are under `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let file: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(url) = &file.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("public_url `{url}` is not an http:// or https:// URL");
        }
        let mut channels: Vec<Channel> = Vec::new();
        for (i, c) in file.channels.into_iter().enumerate() {
            let name = c
                .name
                .clone()
                .with_context(|| format!("channel {}: `name` is missing", i + 1))?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                bail!("channel `{name}`: a name is letters, digits, `-`, `_` and `.`");
            }
            if channels.iter().any(|o| o.name == name) {
                bail!("channel `{name}` is defined twice");
            }
            let channel = channel(&name, c, dir).with_context(|| format!("channel `{name}`"))?;
            channels.push(channel);
        }
        Ok(Self {
            public_url: file.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            channels,
        })
    }

    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// How to open `rollout_id`: the server's URL when it is known, else the command.
    pub fn open_link(&self, rollout_id: &str) -> String {
        match &self.public_url {
            Some(url) => format!("{url}/api/v1/rollouts/{rollout_id}/timeline"),
            None => format!("convoy rollout timeline --rollout {rollout_id} --format md"),
        }
    }
}

fn resolve(dir: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { dir.join(p) }
}

fn channel(name: &str, c: FileChannel, dir: &Path) -> Result<Channel> {
    let kinds = match &c.events {
        None => default_kinds(),
        Some(list) => list
            .iter()
            .map(|e| {
                AlertKind::parse(e).with_context(|| {
                    format!(
                        "`events`: unknown event `{e}`; known: {}",
                        AlertKind::ALL.map(AlertKind::as_str).join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    let max_per_minute = c.max_per_minute.unwrap_or(20);
    if max_per_minute == 0 {
        bail!("`max_per_minute` is 0: the channel could never send");
    }
    let kind = c
        .kind
        .as_deref()
        .context("`kind` is missing (webhook, smtp or desktop)")?;
    let unexpected = |fields: &[(&str, bool)]| -> Result<()> {
        if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
            bail!("`{field}` does not apply to a {kind} channel");
        }
        Ok(())
    };
    let target = match kind {
        "webhook" => {
            unexpected(&[
                ("server", c.server.is_some()),
                ("port", c.port.is_some()),
                ("tls", c.tls.is_some()),
                ("ca_file", c.ca_file.is_some()),
                ("username", c.username.is_some()),
                ("password_file", c.password_file.is_some()),
                ("from", c.from.is_some()),
                ("to", c.to.is_some()),
            ])?;
            Target::Webhook(webhook::WebhookConfig::new(
                c.url.context("`url` is missing")?,
                c.format.as_deref(),
                c.secret_file.map(|p| resolve(dir, p)),
            )?)
        }
        "smtp" => {
            unexpected(&[
                ("url", c.url.is_some()),
                ("format", c.format.is_some()),
                ("secret_file", c.secret_file.is_some()),
            ])?;
            Target::Email(email::EmailConfig::new(email::EmailFields {
                server: c.server.context("`server` is missing")?,
                port: c.port,
                tls: c.tls.as_deref(),
                ca_file: c.ca_file.map(|p| resolve(dir, p)),
                username: c.username,
                password_file: c.password_file.map(|p| resolve(dir, p)),
                from: c.from.context("`from` is missing")?,
                to: c.to.context("`to` is missing")?,
            })?)
        }
        "desktop" => {
            unexpected(&[
                ("url", c.url.is_some()),
                ("server", c.server.is_some()),
                ("to", c.to.is_some()),
            ])?;
            Target::Desktop
        }
        other => bail!("`kind` is `{other}`; it is webhook, smtp or desktop"),
    };
    Ok(Channel {
        name: name.to_owned(),
        kinds,
        max_per_minute,
        target,
    })
}

/// Reads a secret (a webhook key, an SMTP password) from the first line of `path`, which
/// must not be writable by others (and is warned about if readable by them).
pub(crate) fn read_secret(path: &Path) -> Result<String> {
    crate::keys::check_secret_file(path, crate::keys::SecretFile::Credential)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim_end();
    if line.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_with_every_channel_reads() {
        let c = AlertsConfig::parse(
            r#"
            public_url = "https://convoy.example/"
            [[channel]]
            name = "oncall"
            kind = "webhook"
            url = "https://hooks.example/convoy"
            secret_file = "hook.secret"
            [[channel]]
            name = "chat"
            kind = "webhook"
            format = "slack"
            url = "https://hooks.slack.com/services/T/B/X"
            events = ["gate_paused", "gate_rolled_back"]
            max_per_minute = 5
            [[channel]]
            name = "mail"
            kind = "smtp"
            server = "smtp.example"
            username = "convoy"
            password_file = "/etc/convoy/smtp.pass"
            from = "convoy@example.com"
            to = ["oncall@example.com"]
            [[channel]]
            name = "desk"
            kind = "desktop"
            "#,
            Path::new("/etc/convoy"),
        )
        .expect("valid");
        assert_eq!(c.channels.len(), 4);
        assert_eq!(
            c.open_link("r1"),
            "https://convoy.example/api/v1/rollouts/r1/timeline"
        );
        assert_eq!(c.channels[1].max_per_minute, 5);
        assert_eq!(c.channels[1].kinds.len(), 2);
        match &c.channels[0].target {
            Target::Webhook(w) => {
                assert_eq!(
                    w.secret_file.as_deref(),
                    Some(Path::new("/etc/convoy/hook.secret"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_name_the_channel_and_the_field() {
        let err = |text: &str| {
            format!(
                "{:#}",
                AlertsConfig::parse(text, Path::new(".")).expect_err("invalid")
            )
        };
        let e = err("[[channel]]\nname = \"a\"\nkind = \"pager\"\n");
        assert!(
            e.contains("channel `a`") && e.contains("`kind` is `pager`"),
            "{e}"
        );
        let e = err("[[channel]]\nname = \"a\"\nkind = \"webhook\"\n");
        assert!(e.contains("`url` is missing"), "{e}");
        let e = err("[[channel]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://x\"\n");
        assert!(e.contains("http"), "{e}");
        let e = err(
            "[[channel]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\nevents = [\"paused\"]\n",
        );
        assert!(e.contains("unknown event `paused`"), "{e}");
        let e = err(
            "[[channel]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\nto = [\"a@b\"]\n",
        );
        assert!(e.contains("`to` does not apply"), "{e}");
        let e = err(
            "[[channel]]\nname = \"a\"\nkind = \"desktop\"\n[[channel]]\nname = \"a\"\nkind = \"desktop\"\n",
        );
        assert!(e.contains("defined twice"), "{e}");
        let e = err("[[channel]]\nname = \"a\"\nkind = \"desktop\"\ncolour = 1\n");
        assert!(e.contains("colour"), "{e}");
    }
}
