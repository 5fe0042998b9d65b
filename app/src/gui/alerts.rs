//! The console's side of alerts (issue 23): it runs the feed and the deliverer over its cache
//! (`convoy gui --alerts FILE`), shows the alerts of its desktop channel as notifications (a
//! toast in the window and, where `notify-send` exists, the desktop's own), and shows each
//! channel's health in the status bar.
//!
//! Not the alerts themselves: what is sent and how lives in `crate::alerts`.

use anyhow::Result;
use convoy_core::alerts::{Alert, Severity};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::alerts::AlertsConfig;
use crate::alerts::deliver::{self, AlertsHandle, AlertsStatus};

/// The alerts thread of a console and the desktop alerts it has not shown yet.
pub struct ConsoleAlerts {
    handle: AlertsHandle,
    inbox: Arc<Mutex<Vec<Alert>>>,
}

impl std::fmt::Debug for ConsoleAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAlerts").finish_non_exhaustive()
    }
}

impl ConsoleAlerts {
    /// Starts the alerts of `config` over the cache at `cache`.
    pub fn start(cache: PathBuf, config: AlertsConfig) -> Result<Self> {
        let inbox: Arc<Mutex<Vec<Alert>>> = Arc::default();
        let sink = Arc::clone(&inbox);
        let desktop: deliver::DesktopSink = Box::new(move |alert: &Alert| {
            notify_desktop(alert);
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(alert.clone());
            Ok(())
        });
        Ok(Self {
            handle: deliver::spawn(cache, config, Some(desktop))?,
            inbox,
        })
    }

    /// The desktop alerts delivered since the last call.
    pub fn take(&self) -> Vec<Alert> {
        std::mem::take(
            &mut *self
                .inbox
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn status(&self) -> AlertsStatus {
        self.handle.status()
    }
}

/// The desktop's own notification, where the freedesktop `notify-send` is installed; the
/// console's toast shows the alert either way.
fn notify_desktop(alert: &Alert) {
    let urgency = match alert.severity {
        Severity::Critical => "critical",
        Severity::Warning => "normal",
        Severity::Info => "low",
    };
    // Best effort: a desktop without a notification daemon still has the toast.
    let _ = std::process::Command::new("notify-send")
        .args([
            "--app-name=Convoy",
            "--urgency",
            urgency,
            &alert.title,
            &alert.summary,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|mut child| std::thread::spawn(move || child.wait()));
}

/// The status bar's words for `status`: channels, what waits, what fails.
pub fn status_words(status: &AlertsStatus) -> (String, bool) {
    if let Some(e) = &status.error {
        return (format!("Alerts: not running ({e})"), true);
    }
    let pending: u64 = status.channels.iter().map(|c| c.pending).sum();
    let failing: Vec<&str> = status
        .channels
        .iter()
        .filter(|c| c.pending > 0 && c.last_error.is_some())
        .map(|c| c.channel.as_str())
        .collect();
    if !failing.is_empty() {
        return (
            format!("Alerts: {} failing, {pending} waiting", failing.join(", ")),
            true,
        );
    }
    if status.passes == 0 {
        return ("Alerts: starting".to_owned(), false);
    }
    (format!("Alerts: ok, {pending} waiting"), false)
}
