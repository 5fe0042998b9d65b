//! Saved rollout plans in the cache: the `rollout_plans` table.
//!
//! A plan is stored as the JSON `convoy plan --json` and the console's planner write; storing
//! one dispatches nothing. Requests (`ops::requests`) freeze a plan under the rollout's id.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use rusqlite::OptionalExtension;

use super::Store;

/// Stores a plan (the JSON of [`plan_json`]) in the cache's `rollout_plans` table under
/// `plan_id`, replacing an earlier plan of that id, with an audit entry (`plan.save`), in one
/// transaction. Returns the audit entry's seq. Storing a plan dispatches nothing.
pub fn record_plan(
    store: &Store,
    plan_id: &str,
    release_id: &str,
    plan: &serde_json::Value,
    actor: &str,
    now: Timestamp,
) -> Result<i64> {
    let tx = super::write_tx(&store.conn)?;
    tx.execute(
        "INSERT OR REPLACE INTO rollout_plans(rollout_id, release_id, created, body)
         VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            plan_id,
            release_id,
            now.secs(),
            serde_json::to_string(plan)?
        ],
    )
    .with_context(|| format!("storing plan {plan_id}"))?;
    let waves = plan
        .get("rollout_waves")
        .and_then(serde_json::Value::as_array);
    let entry = crate::store::audit::append_in(
        &tx,
        &crate::store::audit::AuditEntry {
            time: now,
            actor: actor.to_owned(),
            action: "plan.save".into(),
            payload: serde_json::json!({
                "plan": plan_id,
                "release": release_id,
                "waves": waves.map_or(0, Vec::len),
                "devices": waves.map_or(0, |w| w
                    .iter()
                    .filter_map(|w| w.get("device_ids").and_then(serde_json::Value::as_array))
                    .map(Vec::len)
                    .sum::<usize>()),
            }),
        },
    )?;
    tx.commit().context("committing the plan")?;
    Ok(entry.seq)
}

/// A stored plan's JSON, if the cache has one under `plan_id`.
pub fn stored_plan(store: &Store, plan_id: &str) -> Result<Option<serde_json::Value>> {
    let body: Option<String> = store
        .conn
        .prepare_cached("SELECT body FROM rollout_plans WHERE rollout_id = ?1")?
        .query_row([plan_id], |r| r.get(0))
        .optional()
        .with_context(|| format!("reading plan {plan_id}"))?;
    body.map(|b| {
        convoy_core::strict_json::from_str(&b)
            .with_context(|| format!("parsing stored plan {plan_id}"))
    })
    .transpose()
}
