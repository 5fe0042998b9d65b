//! The alert feed: new timeline entries and requests in the cache, turned into alert rows.
//!
//! One pass reads every rollout's timeline after its cursor (and the audit log's requests
//! after theirs), asks `convoy_core::alerts` which entries alert, and enqueues one row per
//! alert and interested channel together with the cursor's move. Any process may run a pass
//! (the engine, the server, the console, `convoy alerts run`): rows are unique per channel and
//! source, so two passes over the same entries enqueue them once.
//!
//! The first pass on a cache starts at its present: history does not page anyone.

use anyhow::Result;
use convoy_core::alerts::{self, Alert, AlertKind};
use convoy_core::time::Timestamp;

use super::AlertsConfig;
use crate::store::Store;
use crate::store::alerts::{Enqueued, NewAlert};

/// Timeline entries read per rollout per pass.
const BATCH: usize = 1_000;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedPass {
    pub entries_read: usize,
    pub alerts: usize,
    pub enqueued: Enqueued,
}

/// The cursor of the audit log's requests.
const REQUESTS: &str = "audit:requests";

/// One pass of the feed over `store` at wall time `now_ms`.
pub fn pass(store: &mut Store, config: &AlertsConfig, now_ms: i64) -> Result<FeedPass> {
    let first = !store.alert_feed_started()?;
    let mut out = FeedPass::default();
    if first {
        let head = store.audit_head_seq()?;
        store.enqueue_alerts(REQUESTS, head, &[], now_ms)?;
    }
    for (rollout_id, cursor) in store.alert_sources(first)? {
        let entries = store.timeline_after(&rollout_id, cursor, BATCH)?;
        let Some(last) = entries.last().map(|(seq, _)| *seq) else {
            continue;
        };
        out.entries_read += entries.len();
        let mut raised: Vec<(String, Alert)> = Vec::new();
        let mut silent = 0u64;
        let mut silent_at = Timestamp(0);
        for (seq, entry) in &entries {
            if entry.kind == "device.silent" {
                silent += 1;
                silent_at = entry.at;
            } else if let Some(alert) = alerts::alert_for(&rollout_id, entry) {
                raised.push((format!("{rollout_id}#{seq}"), alert));
            }
        }
        if silent > 0 {
            raised.push((
                format!("{rollout_id}#{last}.silent"),
                alerts::silent_alert(&rollout_id, "(this rollout)", silent, silent_at),
            ));
        }
        out.alerts += raised.len();
        let rows = rows_for(config, &raised)?;
        let done = store.enqueue_alerts(&rollout_id, last, &rows, now_ms)?;
        add(&mut out.enqueued, done);
    }
    // Requests waiting for approval, from the audit log.
    let after = store.alert_cursor(REQUESTS)?.unwrap_or(0);
    let (requests, newest) = store.audit_after(after, &["rollout.request"], BATCH)?;
    if newest > after {
        let raised: Vec<(String, Alert)> = requests
            .iter()
            .filter_map(|e| {
                let payload: serde_json::Value = serde_json::from_str(&e.payload).ok()?;
                let rollout = payload.get("rollout_id")?.as_str()?.to_owned();
                let release = payload
                    .get("release")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                Some((
                    format!("{rollout}#request"),
                    alerts::approval_alert(
                        &rollout,
                        &release,
                        &e.actor,
                        Timestamp::from_secs(e.time),
                    ),
                ))
            })
            .collect();
        out.alerts += raised.len();
        let rows = rows_for(config, &raised)?;
        let done = store.enqueue_alerts(REQUESTS, newest, &rows, now_ms)?;
        add(&mut out.enqueued, done);
    }
    if first {
        store.mark_alert_feed_started(now_ms)?;
    }
    Ok(out)
}

fn add(total: &mut Enqueued, more: Enqueued) {
    total.queued += more.queued;
    total.duplicates += more.duplicates;
    total.seen += more.seen;
}

/// One row per alert and channel that wants its kind.
fn rows_for(config: &AlertsConfig, raised: &[(String, Alert)]) -> Result<Vec<NewAlert>> {
    let mut rows = Vec::new();
    for (source, alert) in raised {
        let json = serde_json::to_string(alert)?;
        for channel in &config.channels {
            if channel.kinds.contains(&alert.kind) {
                rows.push(NewAlert {
                    channel: channel.name.clone(),
                    incident: alert.incident.clone(),
                    kind: alert.kind.as_str().to_owned(),
                    resolves: alert.resolves,
                    source: source.clone(),
                    alert: json.clone(),
                });
            }
        }
    }
    Ok(rows)
}

/// Enqueues `alert` (a test alert) to `channel` directly, with a unique source.
pub fn enqueue_test(store: &mut Store, channel: &str, alert: &Alert, now_ms: i64) -> Result<()> {
    debug_assert_eq!(alert.kind, AlertKind::Test);
    let row = NewAlert {
        channel: channel.to_owned(),
        incident: alert.incident.clone(),
        kind: alert.kind.as_str().to_owned(),
        resolves: true,
        source: format!("test#{now_ms}"),
        alert: serde_json::to_string(alert)?,
    };
    store.enqueue_alerts("test", 0, &[row], now_ms)?;
    Ok(())
}
