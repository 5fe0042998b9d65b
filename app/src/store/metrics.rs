//! Rollout metrics from the cache: each rollout's replayable log (`rollout_log`) replayed into
//! the core state machine and folded by [`convoy_core::metrics`] (time to remediate and to
//! recover, patch lead time, success, rollbacks, adoption by cohort). Nothing is stored: the
//! figures are recomputed from the record whenever they are asked for, so they always agree
//! with the timeline.

use anyhow::{Context, Result};
use convoy_core::fleet::Fleet;
use convoy_core::metrics::{
    self, Adoption, RemediatedFinding, RemediationReport, RolloutMetrics, SummaryMetrics,
};
use convoy_core::rollout::Rollout;
use convoy_core::time::Timestamp;
use serde::Serialize;

use super::Store;

/// The longest log replayed for metrics (a row per recorded event); a larger rollout is named
/// in [`CacheMetrics::skipped`] rather than replayed.
pub const MAX_METRICS_LOG_ROWS: i64 = 2_000_000;

/// The metrics of every rollout in the cache that has a log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CacheMetrics {
    /// Means over `rollouts`.
    pub summary: SummaryMetrics,
    /// By rollout id.
    pub rollouts: Vec<RolloutMetrics>,
    /// Rollouts left out, each with why (a log too large, unreadable, or that does not replay).
    pub skipped: Vec<Skipped>,
    /// Time to remediate from each finding's detection, for the rollouts whose request names
    /// the finding they remediate (issue 20), by classification, model and region.
    pub remediation: RemediationReport,
}

/// A rollout the metrics leave out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub rollout_id: String,
    pub reason: String,
}

impl Store {
    /// The ids of the rollouts with a replayable log, by id.
    fn logged_rollouts(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT rollout_id FROM rollout_log ORDER BY rollout_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()
            .context("listing the rollouts with a log")
    }

    /// `rollout_id` replayed from its log; `None` if it has no log. A log longer than
    /// [`MAX_METRICS_LOG_ROWS`] is refused rather than read.
    pub fn replay_rollout(&self, rollout_id: &str) -> Result<Option<Rollout>> {
        // The log's length from its last key (its seqs run from 0 without gaps).
        let rows: i64 = self.conn.query_row(
            "SELECT coalesce(max(seq) + 1, 0) FROM rollout_log WHERE rollout_id = ?1",
            [rollout_id],
            |r| r.get(0),
        )?;
        if rows == 0 {
            return Ok(None);
        }
        if rows > MAX_METRICS_LOG_ROWS {
            anyhow::bail!(
                "the log of rollout {rollout_id} has {rows} events, more than the {MAX_METRICS_LOG_ROWS} replayed for metrics"
            );
        }
        let log = self.rollout_log(rollout_id)?;
        Rollout::replay(log)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the log of rollout {rollout_id} does not replay: {e}"))
    }

    /// The metrics of one rollout and its adoption by cohort against `fleet`; `None` if it
    /// has no log.
    pub fn rollout_metrics(
        &self,
        rollout_id: &str,
        fleet: &Fleet,
    ) -> Result<Option<(RolloutMetrics, Vec<Adoption>)>> {
        Ok(self.replay_rollout(rollout_id)?.map(|r| {
            (
                metrics::rollout_metrics(&r),
                metrics::adoption_by_cohort(&r, fleet),
            )
        }))
    }

    /// The metrics of every logged rollout and their means. A rollout whose log cannot be
    /// read or replayed is skipped with its reason, never fatal to the others.
    pub fn cache_metrics(&self) -> Result<CacheMetrics> {
        let mut out = CacheMetrics::default();
        for id in self.logged_rollouts()? {
            match self.replay_rollout(&id) {
                Ok(Some(r)) => out.rollouts.push(metrics::rollout_metrics(&r)),
                Ok(None) => {}
                Err(e) => out.skipped.push(Skipped {
                    rollout_id: id,
                    reason: format!("{e:#}"),
                }),
            }
        }
        out.summary = metrics::summarize(&out.rollouts);
        out.remediation = self.remediation_metrics(&mut out.skipped)?;
        Ok(out)
    }

    /// Time to remediate of the logged rollouts whose request names a finding, counted from the
    /// finding's `detected_at` (else from when it entered the cache). A rollout whose finding
    /// is no longer in the cache is added to `skipped` with why.
    fn remediation_metrics(&self, skipped: &mut Vec<Skipped>) -> Result<RemediationReport> {
        let pairs = self.remediating_requests()?;
        if pairs.is_empty() {
            return Ok(RemediationReport::default());
        }
        let mut found = Vec::new();
        for (rollout_id, finding_id) in pairs {
            let Ok(Some(rollout)) = self.replay_rollout(&rollout_id) else {
                // Not started (no log), or already named in `skipped` by the metrics above.
                continue;
            };
            let Some(record) = super::query::finding(self, &finding_id)? else {
                skipped.push(Skipped {
                    rollout_id,
                    reason: format!(
                        "its request names finding {finding_id}, which is no longer in the cache: no time to remediate"
                    ),
                });
                continue;
            };
            let text = |key: &str| {
                record
                    .finding
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            let detected = text("detected_at").and_then(|t| Timestamp::parse_rfc3339(&t).ok());
            found.push((
                rollout,
                RemediatedFinding {
                    finding_id,
                    classification: text("classification").unwrap_or_else(|| "-".to_owned()),
                    detected_at: detected.unwrap_or(Timestamp::from_secs(record.created)),
                    detected_from: if detected.is_some() {
                        "detected_at"
                    } else {
                        "recorded"
                    }
                    .to_owned(),
                },
            ));
        }
        let fleet = self.load_fleet()?;
        let refs: Vec<(&Rollout, &RemediatedFinding)> = found.iter().map(|(r, f)| (r, f)).collect();
        Ok(metrics::remediation(&refs, &fleet))
    }
}

/// What `GET /metrics` reads from the cache at each scrape (issue 23).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheGauges {
    /// Outbox commands by state (`pending`, `sent`, `acked`).
    pub commands: Vec<(String, u64)>,
    /// The oldest unacknowledged command's creation, on its rollout's clock (Unix seconds).
    pub oldest_unacked_created: Option<i64>,
    /// Gate decisions recorded in timelines (pauses, rollbacks), by outcome.
    pub gate_decisions: Vec<(String, u64)>,
    /// Rollouts by the kind of their newest timeline entry (`rollout.completed`, ...).
    pub rollouts_by_last_event: Vec<(String, u64)>,
}

impl Store {
    /// The cache's gauges for `GET /metrics`.
    pub fn cache_gauges(&self) -> Result<CacheGauges> {
        let pairs = |sql: &str| -> Result<Vec<(String, u64)>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()
                .context("reading the cache's gauges")
        };
        Ok(CacheGauges {
            commands: pairs("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state")?,
            oldest_unacked_created: self
                .conn
                .query_row(
                    "SELECT min(created) FROM outbox WHERE state != 'acked'",
                    [],
                    |r| r.get(0),
                )
                .context("reading the outbox's oldest command")?,
            gate_decisions: pairs(
                "SELECT coalesce(json_extract(payload, '$.outcome'), 'unknown'), count(*)
                 FROM rollout_events WHERE kind = 'gate.decision' AND json_valid(payload)
                 GROUP BY 1 ORDER BY 1",
            )?,
            rollouts_by_last_event: pairs(
                "SELECT kind, count(*) FROM rollout_events e
                 WHERE seq = (SELECT max(seq) FROM rollout_events m WHERE m.rollout_id = e.rollout_id)
                 GROUP BY kind ORDER BY kind",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use convoy_core::rollout::sim::{SimConfig, SimFleet};
    use convoy_core::rollout::{ChangePath, RolloutSpec, WaveSpec};
    use convoy_core::synth::{SynthOptions, generate};
    use convoy_core::time::Timestamp;

    #[test]
    fn metrics_come_from_the_replayed_log_and_a_broken_log_is_skipped_with_its_reason() {
        let start = Timestamp::from_secs(1_800_000_000);
        let fleet = generate(&SynthOptions {
            devices: 200,
            seed: 3,
            now: start,
        });
        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let spec = RolloutSpec {
            id: "ro-good".into(),
            release_id: "t300-2.6.0".into(),
            requested_by: "alice".into(),
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    device_ids: ids[..40].to_vec(),
                    soak_secs: 3_600,
                },
                WaveSpec {
                    name: "fleet".into(),
                    device_ids: ids[40..].to_vec(),
                    soak_secs: 3_600,
                },
            ],
            gates: convoy_core::gates::GatePolicy::default(),
            path: ChangePath::Standard,
        };
        let mut rollout = Rollout::new(start, spec, &fleet).unwrap();
        rollout.approve(start, "bob").unwrap();
        rollout.approve(start, "carol").unwrap();
        let mut sim = SimFleet::new(&fleet, &rollout, SimConfig::default(), start);
        sim.run(&mut rollout, start, start.plus_secs(10 * 86_400));
        let expected = metrics::rollout_metrics(&rollout);
        assert!(expected.completed, "{expected:?}");

        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        store
            .append_rollout_log("ro-good", 0, rollout.events())
            .unwrap();
        // A second rollout whose log does not replay (its first event is not a creation).
        store
            .append_rollout_log("ro-broken", 0, &rollout.events()[1..2])
            .unwrap();

        let all = store.cache_metrics().unwrap();
        assert_eq!(all.rollouts, vec![expected.clone()]);
        assert_eq!(
            all.summary,
            metrics::summarize(std::slice::from_ref(&expected))
        );
        assert_eq!(all.summary.completed, 1);
        assert_eq!(all.skipped.len(), 1);
        assert_eq!(all.skipped[0].rollout_id, "ro-broken");
        assert!(
            all.skipped[0].reason.contains("does not replay"),
            "{:?}",
            all.skipped
        );

        let (one, adoption) = store.rollout_metrics("ro-good", &fleet).unwrap().unwrap();
        assert_eq!(one, expected);
        let by_model: u64 = adoption
            .iter()
            .filter(|a| a.attribute == "model")
            .map(|a| a.targeted)
            .sum();
        assert_eq!(
            by_model, 200,
            "every targeted device counted once per attribute"
        );
        assert!(store.rollout_metrics("ro-none", &fleet).unwrap().is_none());
    }

    #[test]
    fn time_to_remediate_counts_from_detection_or_recording_and_names_a_missing_finding() {
        let start = Timestamp::from_secs(1_800_000_000);
        let fleet = generate(&SynthOptions {
            devices: 40,
            seed: 4,
            now: start,
        });
        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("r.db")).unwrap();
        store.replace_fleet(&fleet, None).unwrap();
        for (i, rollout_id) in ["ro-a", "ro-b", "ro-c"].into_iter().enumerate() {
            let spec = RolloutSpec {
                id: rollout_id.into(),
                release_id: "r".into(),
                requested_by: "alice".into(),
                waves: vec![WaveSpec {
                    name: "canary".into(),
                    device_ids: ids[i * 10..i * 10 + 10].to_vec(),
                    soak_secs: 3_600,
                }],
                gates: convoy_core::gates::GatePolicy::default(),
                path: ChangePath::Standard,
            };
            let mut rollout = Rollout::new(start, spec, &fleet).unwrap();
            rollout.approve(start, "bob").unwrap();
            rollout.approve(start, "carol").unwrap();
            let mut sim = SimFleet::new(&fleet, &rollout, SimConfig::default(), start);
            sim.run(&mut rollout, start, start.plus_secs(10 * 86_400));
            store
                .append_rollout_log(rollout_id, 0, rollout.events())
                .unwrap();
            let finding = ["F-DET", "F-REC", "F-GONE"][i];
            store
                .atomically(|tx| tx.insert_request_for(rollout_id, "r", Some(finding), start, "{}"))
                .unwrap();
        }
        // F-DET was detected a day before it was recorded; F-REC says nothing; F-GONE is absent.
        let detected = start.plus_secs(-86_400);
        for (id, finding) in [
            (
                "F-DET",
                serde_json::json!({"id": "F-DET", "classification": "security",
                                   "detected_at": detected.to_rfc3339()}),
            ),
            (
                "F-REC",
                serde_json::json!({"id": "F-REC", "classification": "stability"}),
            ),
        ] {
            super::super::query::record_finding(
                &store,
                &finding,
                id,
                &serde_json::json!({"tier": 2}),
                "t",
                start.plus_secs(-3_600),
            )
            .unwrap();
        }
        let all = store.cache_metrics().unwrap();
        let r = &all.remediation;
        assert_eq!(r.rollouts.len(), 2, "{r:?}");
        let own = |id: &str| {
            all.rollouts
                .iter()
                .find(|m| m.rollout_id == id)
                .and_then(|m| m.time_to_remediate_secs)
                .unwrap()
        };
        assert_eq!(r.rollouts[0].detected_from, "detected_at");
        assert_eq!(
            r.rollouts[0].time_to_remediate_secs,
            Some(own("ro-a") + 86_400)
        );
        assert_eq!(r.rollouts[1].detected_from, "recorded");
        assert_eq!(
            r.rollouts[1].time_to_remediate_secs,
            Some(own("ro-b") + 3_600)
        );
        assert_eq!(all.skipped.len(), 1, "{:?}", all.skipped);
        assert_eq!(all.skipped[0].rollout_id, "ro-c");
        assert!(
            all.skipped[0]
                .reason
                .contains("finding F-GONE, which is no longer in the cache"),
            "{:?}",
            all.skipped
        );
    }
}
