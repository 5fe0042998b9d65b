//! The read queries behind the JSON API (`convoy serve`) and the console's findings view,
//! straight on the cache in SQL: fleet summary, device query with filters and keyset paging,
//! one device with its history, rollouts and their timelines, findings and their scores, and
//! storing a scored finding.
//!
//! They read the cache directly rather than loading the fleet into memory, so a query for one
//! page of a million-device fleet reads one page of rows. Every list has a defined order: devices
//! by id, rollouts by id, events by sequence, findings by id.
//!
//! Deliberately not here: the HTTP side (parameters, status codes: `serve/api.rs`) and
//! decisions.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::store::Store;
use crate::store::events::DeviceEvent;

/// The device states the engine writes to a device's history (`engine::state::state_name`, plus
/// `cancelled`); a device's state is the newest of these, or `idle` when it has none.
pub const DEVICE_STATES: &[&str] = &[
    "pending",
    "offered",
    "downloading",
    "verified",
    "installing",
    "rebooting",
    "confirmed",
    "failed",
    "reverted",
    "cancelled",
];

/// The state of a device with no update history.
pub const IDLE: &str = "idle";

/// The SQL expression for a device's state (`d` is the devices row).
fn state_sql() -> String {
    let kinds: Vec<String> = DEVICE_STATES.iter().map(|k| format!("'{k}'")).collect();
    format!(
        "coalesce((SELECT e.kind FROM device_events e WHERE e.device_id = d.id AND e.kind IN ({})
           ORDER BY e.seq DESC LIMIT 1), '{IDLE}')",
        kinds.join(", ")
    )
}

const FIRMWARE_SQL: &str = "json_extract(d.components, '$.firmware')";

/// Filters and paging of a device query; every filter is an exact match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub model: Option<String>,
    pub region: Option<String>,
    /// The firmware version, as the cache writes it (`2.4.1`).
    pub version: Option<String>,
    /// One of [`DEVICE_STATES`] or `idle`.
    pub state: Option<String>,
    /// Keyset paging: only devices whose id sorts after this one.
    pub after: Option<String>,
    pub limit: usize,
}

/// One device in a query's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRow {
    pub id: String,
    pub model: String,
    pub hw_rev: String,
    pub region: String,
    pub depot: String,
    pub lat: f64,
    pub lon: f64,
    pub connectivity: String,
    pub battery_pct: Option<i64>,
    pub power: String,
    pub customer_tier: String,
    pub device_class: String,
    /// Unix seconds.
    pub last_seen: i64,
    pub firmware: Option<String>,
    pub state: String,
}

/// A page of devices.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DevicePage {
    pub devices: Vec<DeviceRow>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

const DEVICE_COLUMNS: &str = "d.id, d.model, d.hw_rev, d.region, d.depot, d.lat, d.lon,
    d.connectivity, d.battery_pct, d.power, d.customer_tier, d.device_class, d.last_seen";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        model: r.get(1)?,
        hw_rev: r.get(2)?,
        region: r.get(3)?,
        depot: r.get(4)?,
        lat: r.get(5)?,
        lon: r.get(6)?,
        connectivity: r.get(7)?,
        battery_pct: r.get(8)?,
        power: r.get(9)?,
        customer_tier: r.get(10)?,
        device_class: r.get(11)?,
        last_seen: r.get(12)?,
        firmware: r.get(13)?,
        state: r.get(14)?,
    })
}

/// Devices matching `filter`, by id, at most `filter.limit`.
pub fn devices(store: &Store, filter: &DeviceFilter) -> Result<DevicePage> {
    // `d.id > ?5` stands alone (not `?5 IS NULL OR ...`) so SQLite seeks the id index to
    // `after` instead of reading every id before it: a page costs the same wherever it is.
    let sql = format!(
        "SELECT {DEVICE_COLUMNS}, {FIRMWARE_SQL} AS firmware, {} AS state FROM devices d
         WHERE (?1 IS NULL OR d.model = ?1) AND (?2 IS NULL OR d.region = ?2)
           AND (?3 IS NULL OR firmware = ?3) AND (?4 IS NULL OR state = ?4)
           AND d.id > ?5
         ORDER BY d.id LIMIT ?6",
        state_sql()
    );
    // One more than asked tells whether there is a next page.
    let fetch = i64::try_from(filter.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut stmt = store
        .conn
        .prepare_cached(&sql)
        .context("preparing the device query")?;
    let rows = stmt.query_map(
        params![
            filter.model,
            filter.region,
            filter.version,
            filter.state,
            // Every id sorts after the empty string.
            filter.after.as_deref().unwrap_or(""),
            fetch
        ],
        device_row,
    )?;
    let mut devices: Vec<DeviceRow> = rows
        .collect::<rusqlite::Result<_>>()
        .context("running the device query")?;
    let next_after = if devices.len() > filter.limit {
        devices.truncate(filter.limit);
        devices.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok(DevicePage {
        devices,
        next_after,
    })
}

/// One device with its components, tags and newest history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceDetail {
    pub device: DeviceRow,
    pub components: BTreeMap<String, String>,
    pub tags: serde_json::Value,
    /// Newest first, at most the `history` limit asked for.
    pub history: Vec<DeviceEvent>,
}

/// The device `id`, or `None` if the cache has no such device.
pub fn device(store: &Store, id: &str, history_limit: usize) -> Result<Option<DeviceDetail>> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS}, {FIRMWARE_SQL}, {} AS state, d.components, d.tags
         FROM devices d WHERE d.id = ?1",
        state_sql()
    );
    let found = store
        .conn
        .prepare_cached(&sql)?
        .query_row([id], |r| {
            Ok((
                device_row(r)?,
                r.get::<_, String>(15)?,
                r.get::<_, String>(16)?,
            ))
        })
        .optional()
        .with_context(|| format!("reading device {id}"))?;
    let Some((device, components, tags)) = found else {
        return Ok(None);
    };
    let components: BTreeMap<String, String> = serde_json::from_str(&components)
        .with_context(|| format!("reading the components of device {id}"))?;
    let tags = serde_json::from_str(&tags).unwrap_or(serde_json::Value::String(tags));
    let history = store.device_history_newest_first(id, history_limit)?;
    Ok(Some(DeviceDetail {
        device,
        components,
        tags,
        history,
    }))
}

/// Counts of the fleet by model, region, firmware and state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    pub devices: u64,
    pub depots: u64,
    pub by_model: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    /// Devices without a firmware component count under `none`.
    pub by_firmware: BTreeMap<String, u64>,
    pub by_state: BTreeMap<String, u64>,
    pub rollouts: u64,
    /// Commands in the outbox not yet acknowledged.
    pub outbox_unacked: u64,
    /// The audit chain's head: last seq and hash.
    pub audit_head: Option<(i64, String)>,
}

fn counts(store: &Store, sql: &str) -> Result<BTreeMap<String, u64>> {
    let mut stmt = store.conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (k, n) = row?;
        out.insert(k, n.max(0) as u64);
    }
    Ok(out)
}

/// The fleet summary: its counts by model, region, firmware and state from the counts the
/// cache keeps as devices change (`summary.rs`; a few hundred rows, whatever the fleet's size),
/// or, when those cannot be had, by full scans ([`fleet_summary_by_scans`]).
pub fn fleet_summary(store: &Store) -> Result<FleetSummary> {
    let Some(counts) = store.fleet_counts()? else {
        return fleet_summary_by_scans(store);
    };
    let count = |sql: &str| -> Result<u64> {
        let n: i64 = store.conn.query_row(sql, [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(FleetSummary {
        devices: counts.devices(),
        depots: count("SELECT count(*) FROM depots")?,
        by_model: counts.by_model,
        by_region: counts.by_region,
        by_firmware: counts.by_firmware,
        by_state: counts.by_state,
        rollouts: count("SELECT count(DISTINCT rollout_id) FROM rollout_events")?,
        outbox_unacked: count("SELECT count(*) FROM outbox WHERE state != 'acked'")?,
        audit_head: store.audit_head()?,
    })
}

/// The fleet summary counted by full scans of the devices (with a subquery into each device's
/// history for its state): the reference the kept counts are tested against, and the answer
/// when they cannot be had.
pub fn fleet_summary_by_scans(store: &Store) -> Result<FleetSummary> {
    let count = |sql: &str| -> Result<u64> {
        let n: i64 = store.conn.query_row(sql, [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(FleetSummary {
        devices: count("SELECT count(*) FROM devices")?,
        depots: count("SELECT count(*) FROM depots")?,
        by_model: counts(
            store,
            "SELECT model, count(*) FROM devices GROUP BY model ORDER BY model",
        )?,
        by_region: counts(
            store,
            "SELECT region, count(*) FROM devices GROUP BY region ORDER BY region",
        )?,
        by_firmware: counts(
            store,
            &format!(
                "SELECT coalesce({FIRMWARE_SQL}, 'none') AS v, count(*) FROM devices d GROUP BY v"
            ),
        )?,
        by_state: counts(
            store,
            &format!(
                "SELECT {} AS s, count(*) FROM devices d GROUP BY s",
                state_sql()
            ),
        )?,
        rollouts: count("SELECT count(DISTINCT rollout_id) FROM rollout_events")?,
        outbox_unacked: count("SELECT count(*) FROM outbox WHERE state != 'acked'")?,
        audit_head: store.audit_head()?,
    })
}

/// One rollout as the rollouts list shows it (the API writes it as `link::api_wire::RolloutRow`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRow {
    pub rollout_id: String,
    pub events: u64,
    /// Unix seconds of the first and the newest event (simulated time for sped-up runs).
    pub first_time: i64,
    pub last_time: i64,
    /// The newest event's kind, e.g. `rollout.completed` or `rollout.paused`.
    pub last_kind: String,
    pub release_id: Option<String>,
}

/// Every rollout with a timeline, by id.
pub fn rollouts(store: &Store) -> Result<Vec<RolloutRow>> {
    let mut stmt = store.conn.prepare_cached(
        "SELECT r.rollout_id, count(*), min(r.time), max(r.time),
           (SELECT k.kind FROM rollout_events k WHERE k.rollout_id = r.rollout_id
            ORDER BY k.seq DESC LIMIT 1),
           (SELECT p.release_id FROM rollout_plans p WHERE p.rollout_id = r.rollout_id)
         FROM rollout_events r GROUP BY r.rollout_id ORDER BY r.rollout_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RolloutRow {
            rollout_id: r.get(0)?,
            events: r.get::<_, i64>(1)?.max(0) as u64,
            first_time: r.get(2)?,
            last_time: r.get(3)?,
            last_kind: r.get(4)?,
            release_id: r.get(5)?,
        })
    })?;
    rows.collect::<rusqlite::Result<_>>()
        .context("listing the rollouts")
}

/// One stored finding with its scores, newest score first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FindingRecord {
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub finding: serde_json::Value,
    pub scores: Vec<ScoreRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreRecord {
    /// Unix seconds.
    pub scored_at: i64,
    pub scorecard: serde_json::Value,
}

/// A finding summary for the findings list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FindingRow {
    pub id: String,
    pub created: i64,
    pub title: String,
    /// The newest score's points and tier, if scored.
    pub points: Option<f64>,
    pub tier: Option<serde_json::Value>,
}

/// Every finding, by id, with its newest score.
pub fn findings(store: &Store) -> Result<Vec<FindingRow>> {
    let mut stmt = store.conn.prepare_cached(
        "SELECT f.id, f.created, f.body,
           (SELECT s.body FROM scores s WHERE s.finding_id = f.id ORDER BY s.scored_at DESC LIMIT 1)
         FROM findings f ORDER BY f.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, created, body, score) = row?;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let score: Option<serde_json::Value> = score.and_then(|s| serde_json::from_str(&s).ok());
        out.push(FindingRow {
            id,
            created,
            title: body
                .get("title")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            points: score
                .as_ref()
                .and_then(|s| s.get("points"))
                .and_then(serde_json::Value::as_f64),
            tier: score.as_ref().and_then(|s| s.get("tier")).cloned(),
        });
    }
    Ok(out)
}

/// The finding `id` with every score, newest first.
pub fn finding(store: &Store, id: &str) -> Result<Option<FindingRecord>> {
    let found: Option<(i64, String)> = store
        .conn
        .query_row(
            "SELECT created, body FROM findings WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .with_context(|| format!("reading finding {id}"))?;
    let Some((created, body)) = found else {
        return Ok(None);
    };
    let mut stmt = store.conn.prepare_cached(
        "SELECT scored_at, body FROM scores WHERE finding_id = ?1 ORDER BY scored_at DESC",
    )?;
    let scores = stmt
        .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .map(|row| {
            row.map(|(scored_at, body)| ScoreRecord {
                scored_at,
                scorecard: serde_json::from_str(&body).unwrap_or_default(),
            })
        })
        .collect::<rusqlite::Result<_>>()
        .with_context(|| format!("reading the scores of finding {id}"))?;
    Ok(Some(FindingRecord {
        id: id.to_owned(),
        created,
        finding: serde_json::from_str(&body).unwrap_or_default(),
        scores,
    }))
}

/// Stores a finding (replacing an earlier one with the same id) and its scorecard, and audits it,
/// in one transaction; returns the audit entry's seq.
pub fn record_finding(
    store: &Store,
    finding: &serde_json::Value,
    finding_id: &str,
    scorecard: &serde_json::Value,
    actor: &str,
    now: Timestamp,
) -> Result<i64> {
    let tx = super::write_tx(&store.conn)?;
    let body = serde_json::to_string(finding)?;
    tx.execute(
        "INSERT INTO findings(id, created, body) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET body = excluded.body",
        params![finding_id, now.secs(), body],
    )
    .with_context(|| format!("storing finding {finding_id}"))?;
    tx.execute(
        "INSERT OR REPLACE INTO scores(finding_id, scored_at, body) VALUES (?1, ?2, ?3)",
        params![finding_id, now.secs(), serde_json::to_string(scorecard)?],
    )
    .with_context(|| format!("storing the score of finding {finding_id}"))?;
    let entry = crate::store::audit::append_in(
        &tx,
        &crate::store::audit::AuditEntry {
            time: now,
            actor: actor.to_owned(),
            action: "finding.score".into(),
            payload: serde_json::json!({
                "finding": finding_id,
                "points": scorecard.get("points"),
                "tier": scorecard.get("tier"),
                "recommendation": scorecard.get("recommendation"),
            }),
        },
    )?;
    tx.commit().context("committing the finding")?;
    Ok(entry.seq)
}

/// One page of a rollout's replayable log (`rollout_log`): the events after a seq, in order
/// (the API writes it as `link::api_wire::LogPage`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogPage {
    pub rollout_id: String,
    /// The seq of the first event of the page (the log's seqs run from 0 without gaps).
    pub first_seq: i64,
    /// The engine's core events (`convoy_core::rollout::RolloutEvent`) as it logged them.
    pub events: Vec<serde_json::Value>,
    /// Whether events follow this page: ask again with `after` = the page's last seq.
    pub more: bool,
}

/// The events of `rollout_id`'s log after seq `after` (all when `None`), at most `limit`;
/// `None` when the rollout has neither a log nor a timeline.
pub fn rollout_log_page(
    store: &Store,
    rollout_id: &str,
    after: Option<i64>,
    limit: usize,
) -> Result<Option<LogPage>> {
    let from = after.map_or(0, |a| a.saturating_add(1).max(0));
    let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let mut stmt = store.conn.prepare_cached(
        "SELECT seq, event FROM rollout_log WHERE rollout_id = ?1 AND seq >= ?2
         ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![rollout_id, from, take], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut events = Vec::new();
    let mut more = false;
    for row in rows {
        let (seq, text) =
            row.with_context(|| format!("reading the log of rollout {rollout_id}"))?;
        if events.len() == limit {
            more = true;
            break;
        }
        let expected = from + i64::try_from(events.len()).unwrap_or(i64::MAX);
        if seq != expected {
            anyhow::bail!("the log of rollout {rollout_id} has a gap before event {seq}");
        }
        events.push(
            serde_json::from_str(&text)
                .with_context(|| format!("event {seq} of the log of rollout {rollout_id}"))?,
        );
    }
    if events.is_empty() {
        let known: bool = store.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM rollout_events WHERE rollout_id = ?1)
                 OR EXISTS(SELECT 1 FROM rollout_log WHERE rollout_id = ?1)",
            [rollout_id],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(None);
        }
    }
    Ok(Some(LogPage {
        rollout_id: rollout_id.to_owned(),
        first_seq: from,
        events,
        more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_log_comes_by_pages_after_a_seq() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = Store::open(&dir.path().join("c.db")).expect("a new cache");
        assert_eq!(
            rollout_log_page(&store, "r1", None, 10).expect("read"),
            None
        );
        store
            .append_event(
                "r1",
                Timestamp::from_secs(1_800_000_000),
                "rollout.created",
                "a",
                &serde_json::json!({}),
            )
            .expect("append");
        let empty = rollout_log_page(&store, "r1", None, 10)
            .expect("read")
            .expect("a known rollout");
        assert!(empty.events.is_empty() && !empty.more);
        for seq in 0..5 {
            store
                .conn
                .execute(
                    "INSERT INTO rollout_log(rollout_id, seq, event) VALUES ('r1', ?1, ?2)",
                    params![seq, format!("{{\"n\": {seq}}}")],
                )
                .expect("insert");
        }
        let first = rollout_log_page(&store, "r1", None, 2)
            .expect("read")
            .expect("a page");
        assert_eq!(
            (first.first_seq, first.events.len(), first.more),
            (0, 2, true)
        );
        let last = rollout_log_page(&store, "r1", Some(2), 10)
            .expect("read")
            .expect("a page");
        assert_eq!(
            (last.first_seq, last.events.len(), last.more),
            (3, 2, false)
        );
        assert_eq!(last.events[0]["n"], 3);
    }
}
