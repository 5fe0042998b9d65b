//! The deliverer: sends due alert rows through their channels, retries, rate-limits, audits.
//!
//! One process at a time delivers a channel: it holds the channel's lease in the cache
//! (`engine_leases`, key `alerts:CHANNEL`, renewed every pass), so an engine, a server and a
//! console on one cache do not send an alert three times. A failed send is tried again after
//! 2, 4, 8, ... seconds, at most 5 minutes apart, until the channel accepts it; every send and
//! every failure is an audit entry. A channel sends at most its `max_per_minute`; the rest
//! wait their turn. The desktop channel is delivered only by a process that can show it (the
//! console).
//!
//! [`spawn`] runs the feed and the deliverer on a thread of their own, once a second or when
//! the next retry is due.

use anyhow::{Context, Result};
use convoy_core::alerts::Alert;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::webhook::Envelope;
use super::{AlertsConfig, Channel, Target, email, feed, webhook};
use crate::store::Store;
use crate::store::alerts::{AlertRow, ChannelHealth};
use crate::store::audit::AuditEntry;
use crate::store::lease::{Holder, Taken};

/// Shows an alert on the desktop (the console's notifications).
pub type DesktopSink = Box<dyn Fn(&Alert) -> Result<()> + Send>;

/// How long a channel's delivery lease lasts without renewal.
const LEASE_MS: i64 = 30_000;

/// The longest wait between two attempts at one alert.
const MAX_BACKOFF_MS: i64 = 5 * 60_000;

/// Rows sent per channel per pass.
const PASS_LIMIT: usize = 50;

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wait before attempt `attempts + 1` (after `attempts` failures).
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    2_000i64.saturating_mul(1i64 << exp).min(MAX_BACKOFF_MS)
}

/// What one delivery pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliverPass {
    pub sent: usize,
    pub failed: usize,
    pub deferred: usize,
}

/// Sends due alerts of the channels this process can and may deliver.
pub struct Deliverer {
    config: AlertsConfig,
    holder: Holder,
    desktop: Option<DesktopSink>,
    runtime: tokio::runtime::Runtime,
}

impl Deliverer {
    pub fn new(config: AlertsConfig, desktop: Option<DesktopSink>) -> Result<Self> {
        let mut run = [0u8; 8];
        getrandom::fill(&mut run).map_err(|e| anyhow::anyhow!("reading the random source: {e}"))?;
        Ok(Self {
            config,
            holder: Holder {
                host: hostname(),
                pid: std::process::id(),
                run_id: format!("alerts-{}", hex::encode(run)),
            },
            desktop,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the alerts' HTTP runtime")?,
        })
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// The channels this process delivers now: those it can (the desktop only with a sink)
    /// and whose lease it holds or takes.
    fn my_channels(&self, store: &Store, now_ms: i64) -> Result<Vec<String>> {
        let mut mine = Vec::new();
        for c in &self.config.channels {
            if matches!(c.target, Target::Desktop) && self.desktop.is_none() {
                continue;
            }
            let key = format!("alerts:{}", c.name);
            if let Taken::Ours { .. } = store.take_lease(&key, &self.holder, now_ms, LEASE_MS)? {
                mine.push(c.name.clone());
            }
        }
        Ok(mine)
    }

    /// Releases this process's channel leases (another process may deliver at once).
    pub fn release(&self, store: &Store) {
        for c in &self.config.channels {
            let _ = store.release_lease(&format!("alerts:{}", c.name), &self.holder.run_id);
        }
    }

    /// One pass: every due row of my channels, within each channel's rate limit.
    pub fn pass(&self, store: &mut Store, now_ms: i64) -> Result<DeliverPass> {
        let mine = self.my_channels(store, now_ms)?;
        let mut out = DeliverPass::default();
        if mine.is_empty() {
            return Ok(out);
        }
        for row in store.due_alerts(now_ms, &mine, PASS_LIMIT)? {
            let Some(channel) = self.config.channel(&row.channel) else {
                continue;
            };
            let sent_last_minute = store.alerts_sent_since(&channel.name, now_ms - 60_000)?;
            if sent_last_minute >= u64::from(channel.max_per_minute) {
                store.defer_alert(row.id, now_ms + 5_000)?;
                out.deferred += 1;
                continue;
            }
            match self.send(channel, &row, now_ms) {
                Ok(()) => {
                    store.mark_alert_sent(
                        row.id,
                        now_ms,
                        &audit(&row, "alert.sent", now_ms, None),
                    )?;
                    out.sent += 1;
                }
                Err(err) => {
                    let error = format!("{err:#}");
                    let next = now_ms + backoff_ms(row.attempts);
                    store.mark_alert_failed(
                        row.id,
                        next,
                        &error,
                        &audit(&row, "alert.failed", now_ms, Some(&error)),
                    )?;
                    out.failed += 1;
                }
            }
        }
        Ok(out)
    }

    fn send(&self, channel: &Channel, row: &AlertRow, now_ms: i64) -> Result<()> {
        let alert: Alert =
            serde_json::from_str(&row.alert).context("the stored alert is not an alert")?;
        let envelope = Envelope {
            alert: &alert,
            thread: &row.thread,
            update_no: row.update_no,
            delivery: row.id.to_string(),
            open: self.config.open_link(&alert.rollout_id),
        };
        match &channel.target {
            Target::Webhook(w) => {
                self.runtime
                    .block_on(webhook::send(w, &envelope, now_ms / 1_000))
            }
            Target::Email(e) => email::send(e, &envelope),
            Target::Desktop => match &self.desktop {
                Some(show) => show(&alert),
                None => anyhow::bail!("no desktop to show it on"),
            },
        }
    }
}

fn audit(row: &AlertRow, action: &str, now_ms: i64, error: Option<&str>) -> AuditEntry {
    let rollout = serde_json::from_str::<serde_json::Value>(&row.alert)
        .ok()
        .and_then(|a| {
            a.get("rollout_id")
                .and_then(|r| r.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut payload = serde_json::json!({
        "channel": row.channel,
        "thread": row.thread,
        "update": row.update_no,
        "kind": row.kind,
        "rollout_id": rollout,
        "attempt": row.attempts + 1,
        "delivery": row.id,
    });
    if let Some(e) = error {
        payload["error"] = serde_json::Value::String(e.to_owned());
    }
    AuditEntry {
        time: convoy_core::time::Timestamp::from_secs(now_ms / 1_000),
        actor: "alerts".into(),
        action: action.into(),
        payload,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".to_owned(), |h| h.trim().to_owned())
}

/// What the alerts thread last saw, for the console and `convoy alerts status`.
#[derive(Clone, Debug, Default)]
pub struct AlertsStatus {
    pub channels: Vec<ChannelHealth>,
    /// The last error of a pass (the cache unreadable, ...), if the last pass failed.
    pub error: Option<String>,
    pub passes: u64,
}

/// The alerts thread of a process.
pub struct AlertsHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Mutex<AlertsStatus>>,
    idle: Arc<AtomicBool>,
}

impl AlertsHandle {
    pub fn status(&self) -> AlertsStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lets the thread finish what is due (the alerts of a run that just ended), up to
    /// `patience`, then stops it.
    pub fn finish(mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        // Wait for one full pass after this call, then until nothing is due.
        let passes = self.status().passes;
        while Instant::now() < deadline
            && (self.status().passes < passes + 2 || !self.idle.load(Ordering::Acquire))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AlertsHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs the feed and the deliverer over the cache at `cache` on a thread of their own.
pub fn spawn(
    cache: PathBuf,
    config: AlertsConfig,
    desktop: Option<DesktopSink>,
) -> Result<AlertsHandle> {
    let deliverer = Deliverer::new(config, desktop)?;
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Mutex::new(AlertsStatus::default()));
    let idle = Arc::new(AtomicBool::new(false));
    let (stop2, status2, idle2) = (stop.clone(), status.clone(), idle.clone());
    let thread = std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || run(&cache, &deliverer, &stop2, &status2, &idle2))
        .context("starting the alerts thread")?;
    Ok(AlertsHandle {
        stop,
        thread: Some(thread),
        status,
        idle,
    })
}

fn run(
    cache: &std::path::Path,
    deliverer: &Deliverer,
    stop: &AtomicBool,
    status: &Mutex<AlertsStatus>,
    idle: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let now = wall_ms();
        let result = (|| -> Result<(bool, Vec<ChannelHealth>)> {
            // Opened each pass (a few milliseconds): a cache replaced under the console (the
            // demo's, at start) is read as it is now, never through a deleted file.
            let mut store = Store::open_existing(cache)?;
            let s = &mut store;
            feed::pass(s, deliverer.config(), now)?;
            let done = deliverer.pass(s, now)?;
            let names: Vec<String> = deliverer
                .config()
                .channels
                .iter()
                .map(|c| c.name.clone())
                .collect();
            let due_now = s.next_alert_due(&names)?.is_some_and(|t| t <= wall_ms());
            Ok((done.sent + done.failed == 0 && !due_now, s.alert_health()?))
        })();
        {
            let mut st = status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.passes += 1;
            match result {
                Ok((quiet, health)) => {
                    st.channels = health;
                    st.error = None;
                    idle.store(quiet, Ordering::Release);
                }
                Err(e) => {
                    st.error = Some(format!("{e:#}"));
                    idle.store(true, Ordering::Release);
                }
            }
        }
        // A pass a second: alerts leave within about a second of their entry.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Ok(s) = Store::open_existing(cache) {
        deliverer.release(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let waits: Vec<i64> = (0..10).map(backoff_ms).collect();
        assert_eq!(&waits[..4], [2_000, 4_000, 8_000, 16_000]);
        assert_eq!(waits[9], MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(1_000), MAX_BACKOFF_MS);
    }
}
