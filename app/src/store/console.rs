//! Read-only queries the console's status bar needs and the rest of the store does not offer.
//! Nothing here writes.

use super::Store;
use anyhow::{Context, Result};

impl Store {
    /// Commands in the outbox not yet acknowledged by their device (pending or sent).
    pub fn outbox_depth(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state != 'acked'",
                [],
                |r| r.get(0),
            )
            .context("counting the outbox")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
