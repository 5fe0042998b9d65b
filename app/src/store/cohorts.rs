//! Saved cohorts in the cache: the `cohorts` table (a name and a fleet search), which the
//! console, the engine's exclusions and `convoy cohort` share. Rules about names and queries
//! are in `ops::cohorts`; this is storage only.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;

use super::Store;

/// One saved cohort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCohort {
    pub name: String,
    /// The fleet search (`model:T300 hw_rev:C`), as typed.
    pub query: String,
    pub created_by: String,
    pub created: Timestamp,
}

impl Store {
    /// Every saved cohort, by name.
    pub fn cohorts(&self) -> Result<Vec<SavedCohort>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, query, created_by, created FROM cohorts ORDER BY name COLLATE NOCASE",
            )
            .context("reading the saved cohorts")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SavedCohort {
                    name: r.get(0)?,
                    query: r.get(1)?,
                    created_by: r.get(2)?,
                    created: Timestamp::from_secs(r.get(3)?),
                })
            })
            .context("reading the saved cohorts")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .context("reading the saved cohorts")
    }

    /// Saves `cohort`, replacing one of the same name, with an audit entry (`cohort.save`), in
    /// one transaction.
    pub fn save_cohort(&self, cohort: &SavedCohort) -> Result<()> {
        let tx = super::write_tx(&self.conn)?;
        tx.execute(
            "INSERT OR REPLACE INTO cohorts(name, query, created_by, created)
             VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                cohort.name,
                cohort.query,
                cohort.created_by,
                cohort.created.secs()
            ],
        )
        .with_context(|| format!("saving cohort {:?}", cohort.name))?;
        super::audit::append_in(
            &tx,
            &super::audit::AuditEntry {
                time: cohort.created,
                actor: cohort.created_by.clone(),
                action: "cohort.save".into(),
                payload: serde_json::json!({"name": cohort.name, "query": cohort.query}),
            },
        )?;
        tx.commit().context("committing the saved cohort")
    }

    /// Deletes the cohort `name`, with an audit entry; `false` when there was none.
    pub fn delete_cohort(&self, name: &str, actor: &str, now: Timestamp) -> Result<bool> {
        let tx = super::write_tx(&self.conn)?;
        let n = tx
            .execute("DELETE FROM cohorts WHERE name = ?1", [name])
            .with_context(|| format!("deleting cohort {name:?}"))?;
        if n > 0 {
            super::audit::append_in(
                &tx,
                &super::audit::AuditEntry {
                    time: now,
                    actor: actor.to_owned(),
                    action: "cohort.delete".into(),
                    payload: serde_json::json!({"name": name}),
                },
            )?;
        }
        tx.commit().context("committing the deletion")?;
        Ok(n > 0)
    }
}
