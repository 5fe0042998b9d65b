//! Telemetry in the cache: raw recent samples, and rollups per device and per cohort that plots
//! and health gates read.
//!
//! A sample is one value of one metric of one device at one second. On the wire and in files
//! it is one JSON object per line:
//! `{"device":"CV0000001","time":"2026-11-23T06:00:00Z","metric":"battery_pct","value":81.5}`
//! (`time` may also be Unix seconds). Ingest is idempotent: the raw table is keyed by
//! (time, device, metric), a repeated sample is ignored and not counted again, so replaying a
//! file after a crash is safe. A cohort is the device's model and firmware at ingest time
//! (`VAN-200/2.4.1`). Cohort rollups have one-minute buckets ([`COHORT_BUCKET_SECS`]), which
//! health gates compare against a baseline; device rollups have hourly buckets
//! ([`DEVICE_BUCKET_SECS`]): a million devices with per-minute rows would add billions of rows
//! a day, and recent per-device detail is in the raw samples.
//!
//! This module does not judge health: gates in `convoy_core` read the rollups.

use super::Store;
use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Length of a per-device rollup bucket.
pub const DEVICE_BUCKET_SECS: i64 = 3600;

/// Length of a per-cohort rollup bucket.
pub const COHORT_BUCKET_SECS: i64 = 60;

/// Rows per multi-row statement in ingest.
const ROWS: usize = 64;

const SAMPLES_SQL: &str = "INSERT INTO samples(dev, metric, time, value) VALUES ";
const SAMPLES_TAIL: &str = " ON CONFLICT DO NOTHING RETURNING dev, metric, time, value";
const DEVICE_ROLLUP_SQL: &str =
    "INSERT INTO rollup_device(dev, metric, bucket, count, sum, min, max) VALUES ";
const COHORT_ROLLUP_SQL: &str =
    "INSERT INTO rollup_cohort(cohort, metric, bucket, count, sum, min, max) VALUES ";
const ROLLUP_TAIL: &str = " ON CONFLICT DO UPDATE SET
    count = count + excluded.count, sum = sum + excluded.sum,
    min = min(min, excluded.min), max = max(max, excluded.max)";

/// `head` + `rows` groups of `columns` numbered placeholders + `tail`.
fn multi_row_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            let _ = write!(
                sql,
                "{}?{}",
                if c == 0 { "" } else { ", " },
                r * columns + c + 1
            );
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// A rollup row's first key column.
enum RollupKey<'a> {
    Dev(i64),
    Cohort(&'a str),
}

/// Adds `rows` into a rollup table, `ROWS` rows per statement.
fn upsert_rollups<'a>(
    tx: &rusqlite::Transaction<'_>,
    head: &str,
    rows: impl Iterator<Item = (RollupKey<'a>, i64, i64, Agg)>,
) -> Result<()> {
    let mut full = tx.prepare_cached(&multi_row_sql(head, 7, ROWS, ROLLUP_TAIL))?;
    let mut single = tx.prepare_cached(&multi_row_sql(head, 7, 1, ROLLUP_TAIL))?;
    let rows: Vec<_> = rows.collect();
    for chunk in rows.chunks(ROWS) {
        let groups: Vec<&[_]> = if chunk.len() == ROWS {
            vec![chunk]
        } else {
            chunk.chunks(1).collect()
        };
        for group in groups {
            let stmt = if group.len() == ROWS {
                &mut full
            } else {
                &mut single
            };
            for (k, (key, metric, bucket, a)) in group.iter().enumerate() {
                match key {
                    RollupKey::Dev(d) => stmt.raw_bind_parameter(7 * k + 1, d)?,
                    RollupKey::Cohort(c) => stmt.raw_bind_parameter(7 * k + 1, c)?,
                }
                stmt.raw_bind_parameter(7 * k + 2, metric)?;
                stmt.raw_bind_parameter(7 * k + 3, bucket)?;
                stmt.raw_bind_parameter(7 * k + 4, a.count)?;
                stmt.raw_bind_parameter(7 * k + 5, a.sum)?;
                stmt.raw_bind_parameter(7 * k + 6, a.min)?;
                stmt.raw_bind_parameter(7 * k + 7, a.max)?;
            }
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// One telemetry value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Device id.
    pub device: String,
    #[serde(with = "flexible_time")]
    pub time: Timestamp,
    /// Metric name: lowercase letters, digits, `_` and `.`.
    pub metric: String,
    pub value: f64,
}

mod flexible_time {
    use convoy_core::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(i64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Timestamp::from_secs(s)),
            Raw::Text(t) => Timestamp::parse_rfc3339(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Sample {
    /// Parses and checks one JSON line.
    pub fn parse_line(line: &str) -> Result<Self> {
        let s: Sample = serde_json::from_str(line).context("invalid sample JSON")?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        if self.device.is_empty() {
            bail!("empty device id");
        }
        if self.metric.is_empty()
            || !self
                .metric
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        {
            bail!(
                "invalid metric name {:?}: use lowercase letters, digits, _ and .",
                self.metric
            );
        }
        if !self.value.is_finite() {
            bail!("value of metric {} is not a finite number", self.metric);
        }
        Ok(())
    }
}

/// What one ingest call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestReport {
    /// Samples stored (and counted in the rollups).
    pub stored: usize,
    /// Samples already in the cache (same device, metric and time), ignored.
    pub duplicates: usize,
    /// Samples refused, with their index in the batch and the reason.
    pub rejected: Vec<(usize, String)>,
}

/// A rollup bucket as plots read it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RollupPoint {
    /// Bucket start.
    pub bucket: i64,
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Copy)]
struct Agg {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Agg {
    fn new(v: f64) -> Self {
        Self {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Per-connection lookups that ingest needs for every sample: device key and cohort, metric
/// key. Cleared whenever this store writes devices, and whenever another connection has
/// committed anything since the last batch (`PRAGMA data_version`), because another process
/// may have replaced the fleet.
#[derive(Default)]
pub(crate) struct IngestCache {
    devices: HashMap<String, Option<(i64, Rc<str>)>>,
    metrics: HashMap<String, i64>,
    data_version: Option<i64>,
}

impl IngestCache {
    pub(crate) fn clear_devices(&mut self) {
        self.devices.clear();
    }
}

impl Store {
    /// Stores a batch of samples and updates the rollups, in one transaction. Samples for
    /// unknown devices are rejected and reported; they do not stop the rest.
    pub fn ingest(&mut self, samples: &[Sample]) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        let cache = &mut self.ingest_cache;
        let data_version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if cache.data_version != Some(data_version) {
            cache.devices.clear();
            cache.data_version = Some(data_version);
        }
        let tx = super::write_tx(&self.conn)?;
        // Ordered maps, so that rollup upserts also go in key order.
        let mut by_device: BTreeMap<(i64, i64, i64), Agg> = BTreeMap::new();
        let mut by_cohort: BTreeMap<(Rc<str>, i64, i64), Agg> = BTreeMap::new();
        {
            // The firmware from the components column (schema v14 on); a cache held at an
            // older version (only the schema tests write to one) has a row per component.
            let mut find_device = tx
                .prepare_cached(
                    "SELECT d.dev, d.model, json_extract(d.components, '$.firmware')
                     FROM devices d WHERE d.id = ?1",
                )
                .or_else(|_| {
                    tx.prepare_cached(
                        "SELECT d.dev, d.model, c.version FROM devices d
                         LEFT JOIN components c ON c.dev = d.dev AND c.name = 'firmware'
                         WHERE d.id = ?1",
                    )
                })?;
            let mut find_metric =
                tx.prepare_cached("SELECT metric FROM metrics WHERE name = ?1")?;
            let mut add_metric = tx.prepare_cached("INSERT INTO metrics(name) VALUES (?1)")?;
            // Resolve ids first, then insert in key order: consecutive inserts land on the same
            // B-tree pages, which is most of the speed of a large batch.
            let mut resolved: Vec<(i64, i64, i64, f64, Rc<str>)> =
                Vec::with_capacity(samples.len());
            for (i, s) in samples.iter().enumerate() {
                if let Err(e) = s.check() {
                    report.rejected.push((i, format!("{e:#}")));
                    continue;
                }
                if !cache.devices.contains_key(&s.device) {
                    let found = find_device
                        .query_row([&s.device], |r| {
                            let model: String = r.get(1)?;
                            let fw: Option<String> = r.get(2)?;
                            Ok((
                                r.get::<_, i64>(0)?,
                                Rc::from(format!("{model}/{}", fw.as_deref().unwrap_or("-"))),
                            ))
                        })
                        .optional()?;
                    cache.devices.insert(s.device.clone(), found);
                }
                let Some(Some((dev, cohort))) = cache.devices.get(&s.device) else {
                    report
                        .rejected
                        .push((i, format!("unknown device {}", s.device)));
                    continue;
                };
                let metric = if let Some(m) = cache.metrics.get(&s.metric) {
                    *m
                } else {
                    let known = find_metric
                        .query_row([&s.metric], |r| r.get::<_, i64>(0))
                        .optional()?;
                    let m = if let Some(m) = known {
                        m
                    } else {
                        add_metric.execute([&s.metric])?;
                        tx.last_insert_rowid()
                    };
                    cache.metrics.insert(s.metric.clone(), m);
                    m
                };
                resolved.push((*dev, metric, s.time.secs(), s.value, Rc::clone(cohort)));
            }
            // In the samples table's key order (time, device, metric): a batch then appends
            // near the end of the tree. Stable: of two samples with the same key in one batch,
            // the first one is kept.
            resolved.sort_by_key(|r| (r.2, r.0, r.1));
            let mut cohorts: HashMap<i64, Rc<str>> = HashMap::new();
            for r in &resolved {
                cohorts.entry(r.0).or_insert_with(|| Rc::clone(&r.4));
            }
            // Multi-row statements: one statement per ROWS samples instead of one per sample.
            // RETURNING yields exactly the rows that were new, so duplicates are not counted.
            let mut inserted: Vec<(i64, i64, i64, f64)> = Vec::with_capacity(resolved.len());
            let full = tx.prepare_cached(&multi_row_sql(SAMPLES_SQL, 4, ROWS, SAMPLES_TAIL))?;
            let single = tx.prepare_cached(&multi_row_sql(SAMPLES_SQL, 4, 1, SAMPLES_TAIL))?;
            let mut statements = [full, single];
            for chunk in resolved.chunks(ROWS) {
                let stmt = &mut statements[usize::from(chunk.len() != ROWS)];
                let groups: Vec<&[_]> = if chunk.len() == ROWS {
                    vec![chunk]
                } else {
                    chunk.chunks(1).collect()
                };
                for group in groups {
                    for (k, (dev, metric, t, value, _)) in group.iter().enumerate() {
                        stmt.raw_bind_parameter(4 * k + 1, dev)?;
                        stmt.raw_bind_parameter(4 * k + 2, metric)?;
                        stmt.raw_bind_parameter(4 * k + 3, t)?;
                        stmt.raw_bind_parameter(4 * k + 4, value)?;
                    }
                    let mut rows = stmt.raw_query();
                    while let Some(r) = rows.next()? {
                        inserted.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
                    }
                }
            }
            report.stored = inserted.len();
            report.duplicates = resolved.len() - inserted.len();
            for (dev, metric, t, value) in inserted {
                let bucket = t - t.rem_euclid(DEVICE_BUCKET_SECS);
                by_device
                    .entry((dev, metric, bucket))
                    .and_modify(|a| a.add(value))
                    .or_insert_with(|| Agg::new(value));
                let Some(cohort) = cohorts.get(&dev) else {
                    bail!("inserted a sample for device key {dev} that was not in the batch");
                };
                let bucket = t - t.rem_euclid(COHORT_BUCKET_SECS);
                by_cohort
                    .entry((Rc::clone(cohort), metric, bucket))
                    .and_modify(|a| a.add(value))
                    .or_insert_with(|| Agg::new(value));
            }
            upsert_rollups(
                &tx,
                DEVICE_ROLLUP_SQL,
                by_device
                    .iter()
                    .map(|((d, m, b), a)| (RollupKey::Dev(*d), *m, *b, *a)),
            )?;
            upsert_rollups(
                &tx,
                COHORT_ROLLUP_SQL,
                by_cohort
                    .iter()
                    .map(|((c, m, b), a)| (RollupKey::Cohort(c), *m, *b, *a)),
            )?;
        }
        tx.commit().context("committing the telemetry batch")?;
        Ok(report)
    }

    /// Number of raw samples in the cache.
    pub fn sample_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Whether the cache holds this exact sample (device, metric, time and value).
    pub fn has_sample(&self, s: &Sample) -> Result<bool> {
        let v: Option<f64> = self
            .conn
            .query_row(
                "SELECT s.value FROM samples s JOIN devices d ON d.dev = s.dev
                 JOIN metrics m ON m.metric = s.metric
                 WHERE d.id = ?1 AND m.name = ?2 AND s.time = ?3",
                params![s.device, s.metric, s.time.secs()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v == Some(s.value))
    }

    /// Hourly rollup of one device's metric, buckets starting in `[from, to)`.
    pub fn device_series(
        &self,
        device: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupPoint>> {
        self.series(
            "SELECT r.bucket, r.count, r.sum, r.min, r.max FROM rollup_device r
             JOIN devices d ON d.dev = r.dev JOIN metrics m ON m.metric = r.metric
             WHERE d.id = ?1 AND m.name = ?2 AND r.bucket >= ?3 AND r.bucket < ?4
             ORDER BY r.bucket",
            device,
            metric,
            from,
            to,
        )
    }

    /// Per-minute rollup of one cohort's (`MODEL/FIRMWARE`) metric, buckets starting in
    /// `[from, to)`.
    pub fn cohort_series(
        &self,
        cohort: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupPoint>> {
        self.series(
            "SELECT r.bucket, r.count, r.sum, r.min, r.max FROM rollup_cohort r
             JOIN metrics m ON m.metric = r.metric
             WHERE r.cohort = ?1 AND m.name = ?2 AND r.bucket >= ?3 AND r.bucket < ?4
             ORDER BY r.bucket",
            cohort,
            metric,
            from,
            to,
        )
    }

    fn series(
        &self,
        sql: &str,
        key: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupPoint>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![key, metric, from.secs(), to.secs()], |r| {
            let count: i64 = r.get(1)?;
            let sum: f64 = r.get(2)?;
            Ok(RollupPoint {
                bucket: r.get(0)?,
                count: count as u64,
                mean: if count > 0 { sum / count as f64 } else { 0.0 },
                min: r.get(3)?,
                max: r.get(4)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the rollup of {metric} for {key}"))
    }

    /// Deletes raw samples older than `before`; rollups are kept. Returns how many went.
    pub fn prune_samples(&mut self, before: Timestamp) -> Result<usize> {
        super::patiently(|| {
            self.conn
                .execute("DELETE FROM samples WHERE time < ?1", [before.secs()])
        })
        .context("pruning old samples")
    }
}
