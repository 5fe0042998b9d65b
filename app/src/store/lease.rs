//! Engine leases (issue 16): one engine per rollout. An engine takes its rollout's lease in
//! `engine_leases` before it does anything else, renews it while it runs and releases it when
//! it ends; a second engine finds it held and is refused, naming the holder. A lease that was
//! not renewed in time (its engine crashed or was killed) has expired and is taken over.
//!
//! Times are the wall clock in Unix milliseconds, whatever the engine's simulated time scale.
//! Taking, renewing and releasing are each one SQL statement, so two engines racing for a lease
//! cannot both win. Not here: leases across machines that do not share the cache file (SQLite's
//! locking is the arbiter).

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::Store;

/// Who holds (or wants) a rollout's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unique per engine run, so that a run never mistakes another's lease for its own.
    pub run_id: String,
}

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub rollout_id: String,
    pub holder: Holder,
    pub since_ms: i64,
    pub expires_ms: i64,
}

/// The answer to [`Store::take_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The lease is ours; `replaced` is the expired lease taken over, if there was one.
    Ours { replaced: Option<Lease> },
    /// Another engine holds a live lease.
    HeldBy(Lease),
}

impl Store {
    /// Takes `rollout_id`'s lease for `holder` until `now_ms + ttl_ms`, unless another holder's
    /// lease is live at `now_ms`.
    pub fn take_lease(
        &self,
        rollout_id: &str,
        holder: &Holder,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Taken> {
        let before = self.lease(rollout_id)?;
        // One statement: insert, or replace an expired lease (or our own); a live lease of
        // another run is left alone, and then no row changes.
        let changed = super::patiently(|| {
            self.conn.execute(
                "INSERT INTO engine_leases(rollout_id, host, pid, run_id, since_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(rollout_id) DO UPDATE SET
                     host = excluded.host, pid = excluded.pid, run_id = excluded.run_id,
                     since_ms = excluded.since_ms, expires_ms = excluded.expires_ms
                 WHERE engine_leases.expires_ms <= ?5 OR engine_leases.run_id = ?4",
                params![
                    rollout_id,
                    holder.host,
                    holder.pid,
                    holder.run_id,
                    now_ms,
                    now_ms.saturating_add(ttl_ms)
                ],
            )
        })
        .with_context(|| format!("taking the engine lease of rollout {rollout_id}"))?;
        if changed == 1 {
            return Ok(Taken::Ours {
                replaced: before.filter(|l| l.holder.run_id != holder.run_id),
            });
        }
        let held = self.lease(rollout_id)?.with_context(|| {
            format!("the engine lease of rollout {rollout_id} vanished while it was taken")
        })?;
        Ok(Taken::HeldBy(held))
    }

    /// Extends our lease to `now_ms + ttl_ms`; `false` if it is no longer ours (it expired and
    /// another engine took it over).
    pub fn renew_lease(
        &self,
        rollout_id: &str,
        run_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let changed = super::patiently(|| {
            self.conn.execute(
                "UPDATE engine_leases SET expires_ms = ?3 WHERE rollout_id = ?1 AND run_id = ?2",
                params![rollout_id, run_id, now_ms.saturating_add(ttl_ms)],
            )
        })
        .with_context(|| format!("renewing the engine lease of rollout {rollout_id}"))?;
        Ok(changed == 1)
    }

    /// Releases our lease (nothing if it is no longer ours).
    pub fn release_lease(&self, rollout_id: &str, run_id: &str) -> Result<()> {
        super::patiently(|| {
            self.conn.execute(
                "DELETE FROM engine_leases WHERE rollout_id = ?1 AND run_id = ?2",
                params![rollout_id, run_id],
            )
        })
        .with_context(|| format!("releasing the engine lease of rollout {rollout_id}"))?;
        Ok(())
    }

    /// The lease of `rollout_id`, live or expired, if any.
    pub fn lease(&self, rollout_id: &str) -> Result<Option<Lease>> {
        self.conn
            .query_row(
                "SELECT host, pid, run_id, since_ms, expires_ms FROM engine_leases
                 WHERE rollout_id = ?1",
                [rollout_id],
                |r| {
                    Ok(Lease {
                        rollout_id: rollout_id.to_owned(),
                        holder: Holder {
                            host: r.get(0)?,
                            pid: r.get(1)?,
                            run_id: r.get(2)?,
                        },
                        since_ms: r.get(3)?,
                        expires_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .with_context(|| format!("reading the engine lease of rollout {rollout_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str) -> Holder {
        Holder {
            host: "h1".into(),
            pid: 42,
            run_id: run.into(),
        }
    }

    #[test]
    fn a_live_lease_is_refused_an_expired_one_taken_over_and_a_released_one_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("c.db")).expect("open");
        let (a, b) = (holder("run-a"), holder("run-b"));
        assert_eq!(
            store.take_lease("ro", &a, 1_000, 30_000).expect("take"),
            Taken::Ours { replaced: None }
        );
        // Taking it again is a renewal for the same run.
        assert!(matches!(
            store.take_lease("ro", &a, 2_000, 30_000).expect("again"),
            Taken::Ours { replaced: None }
        ));
        // Another run is refused while it is live, and told who holds it.
        match store.take_lease("ro", &b, 20_000, 30_000).expect("refused") {
            Taken::HeldBy(l) => {
                assert_eq!(l.holder, a);
                assert_eq!(l.since_ms, 2_000);
                assert_eq!(l.expires_ms, 32_000);
            }
            other @ Taken::Ours { .. } => panic!("expected a refusal, got {other:?}"),
        }
        // Renewed, it stays live past its first expiry.
        assert!(
            store
                .renew_lease("ro", "run-a", 30_000, 30_000)
                .expect("renew")
        );
        assert!(matches!(
            store.take_lease("ro", &b, 40_000, 30_000).expect("refused"),
            Taken::HeldBy(_)
        ));
        // Not renewed (the engine died), it expires and is taken over.
        match store
            .take_lease("ro", &b, 60_000, 30_000)
            .expect("taken over")
        {
            Taken::Ours {
                replaced: Some(old),
            } => assert_eq!(old.holder, a),
            other => panic!("expected a takeover, got {other:?}"),
        }
        // The old run can neither renew nor release what is no longer its own.
        assert!(
            !store
                .renew_lease("ro", "run-a", 61_000, 30_000)
                .expect("renew")
        );
        store.release_lease("ro", "run-a").expect("release");
        assert_eq!(store.lease("ro").expect("read").map(|l| l.holder), Some(b));
        store.release_lease("ro", "run-b").expect("release");
        assert_eq!(store.lease("ro").expect("read"), None);
        // Another rollout's lease is independent.
        assert!(matches!(
            store.take_lease("other", &a, 61_000, 30_000).expect("take"),
            Taken::Ours { .. }
        ));
    }
}
