//! The console's read-only query for a device's update history: its `device_events` rows,
//! newest first, at most a given number.
//!
//! It exists beside [`Store::device_events`] (oldest first, all rows) because the console shows
//! the latest rows of a device that may have thousands. Nothing here writes; the console runs it
//! on its history worker, never on the UI thread.

use super::Store;
use super::events::DeviceEvent;
use anyhow::{Context, Result};

impl Store {
    /// The newest `limit` events of `device_id`, newest first (by append order, which is the
    /// order the engine wrote them in).
    pub fn device_history_newest_first(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<DeviceEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, device_id, rollout_id, time, kind, payload FROM device_events
                 WHERE device_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .context("preparing the device history query")?;
        let rows = stmt.query_map(
            rusqlite::params![device_id, limit],
            super::events::device_event_row,
        )?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the history of device {device_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::time::Timestamp;

    #[test]
    fn newest_first_limited_and_only_that_device() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("open");
        for (i, kind) in ["offered", "downloaded", "installed"].iter().enumerate() {
            store
                .append_device_event(
                    "dev-1",
                    Some("r1"),
                    Timestamp::from_secs(100 + i as i64),
                    kind,
                    &serde_json::json!({"step": i}),
                )
                .expect("append");
        }
        store
            .append_device_event(
                "dev-2",
                None,
                Timestamp::from_secs(50),
                "offered",
                &serde_json::json!({}),
            )
            .expect("append");
        let all = store
            .device_history_newest_first("dev-1", 10)
            .expect("read");
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["installed", "downloaded", "offered"]);
        let two = store.device_history_newest_first("dev-1", 2).expect("read");
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].kind, "installed");
        assert!(
            store
                .device_history_newest_first("dev-3", 10)
                .expect("read")
                .is_empty()
        );
    }
}
