//! One engine per rollout (issue 16): the engine's side of `store::lease`. [`EngineLease::take`]
//! takes the rollout's lease in the cache before the run does anything, a thread of its own
//! renews it on the wall clock while the run lasts (every third of its lifetime), and dropping
//! it (the run ended, or failed) stops the renewals and releases the lease. A second engine for
//! the same rollout, in this process or another, is refused with a message naming the one that
//! runs it; once a killed engine's lease has expired, it is taken over.
//!
//! The lease lives `CONVOY_ENGINE_LEASE_SECS` seconds (default 30) from its last renewal; tests
//! shorten it. Not here: stopping a run whose lease was taken over while it stalled (it says so
//! on stderr).

use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::store::Store;
use crate::store::lease::{Holder, Lease, Taken};

/// How long a lease lives from its last renewal, unless `CONVOY_ENGINE_LEASE_SECS` says.
pub const DEFAULT_LEASE_SECS: u64 = 30;

/// A rollout's lease, held and renewed until dropped.
#[derive(Debug)]
pub struct EngineLease {
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    /// Set by the renewals when another engine has taken the lease over: this run must stop
    /// at once, writing nothing more (review of issue 16, F10).
    lost: Arc<AtomicBool>,
}

/// The lease's lifetime: `CONVOY_ENGINE_LEASE_SECS` (a positive number of seconds) or
/// [`DEFAULT_LEASE_SECS`].
pub fn lease_ttl() -> Result<Duration> {
    match std::env::var("CONVOY_ENGINE_LEASE_SECS") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_LEASE_SECS)),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 86_400.0 => {
                Ok(Duration::from_secs_f64(secs))
            }
            _ => bail!(
                "CONVOY_ENGINE_LEASE_SECS is {text:?}: give the engine lease's lifetime as a positive number of seconds"
            ),
        },
    }
}

/// Wall time in Unix milliseconds.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This machine's name, as the lease records it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The refusal a second engine gets, naming the running one.
pub fn held_message(lease: &Lease, ttl: Duration) -> String {
    let at = |ms: i64| Timestamp::from_secs(ms.div_euclid(1000)).to_rfc3339();
    format!(
        "rollout {} is already being run by another engine: host {}, pid {}, since {} (run {}); its lease is renewed while it runs and expires at {} if it stops without releasing it (a killed engine). Stop that engine, or wait for its lease to expire (about {} s after it died), then run with --resume",
        lease.rollout_id,
        lease.holder.host,
        lease.holder.pid,
        at(lease.since_ms),
        lease.holder.run_id,
        at(lease.expires_ms),
        ttl.as_secs().max(1),
    )
}

impl EngineLease {
    /// Takes the lease of `rollout_id` in the cache at `db`, or refuses with [`held_message`].
    pub fn take(db: &Path, rollout_id: &str) -> Result<Self> {
        Self::take_for(db, rollout_id, lease_ttl()?)
    }

    /// [`EngineLease::take`] with a lifetime of `ttl`.
    pub fn take_for(db: &Path, rollout_id: &str, ttl: Duration) -> Result<Self> {
        let mut run = [0u8; 8];
        getrandom::fill(&mut run)
            .map_err(|e| anyhow::anyhow!("reading random bytes for the run id: {e}"))?;
        let holder = Holder {
            host: host_name(),
            pid: std::process::id(),
            run_id: hex::encode(run),
        };
        let store = Store::open(db)?;
        match store.take_lease(rollout_id, &holder, wall_ms(), ms(ttl))? {
            Taken::HeldBy(lease) => bail!("{}", held_message(&lease, ttl)),
            Taken::Ours {
                replaced: Some(old),
            } => eprintln!(
                "rollout {rollout_id}: took over the expired engine lease of host {}, pid {} (run {})",
                old.holder.host, old.holder.pid, old.holder.run_id
            ),
            Taken::Ours { replaced: None } => {}
        }
        drop(store);
        // The renewals get a connection of their own, opened on their thread.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let rollout = rollout_id.to_owned();
        let run_id = holder.run_id;
        let db = db.to_owned();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_flag = Arc::clone(&lost);
        let renewer = std::thread::Builder::new()
            .name(format!("lease-{rollout_id}"))
            .spawn(move || match Store::open(&db) {
                Ok(store) => renew(&store, &rollout, &run_id, ttl, &stop_rx, &lost_flag),
                Err(e) => eprintln!(
                    "rollout {rollout}: opening the cache to renew the engine lease: {e:#}"
                ),
            })
            .context("starting the engine lease's renewal thread")?;
        Ok(Self {
            stop: Some(stop_tx),
            renewer: Some(renewer),
            lost,
        })
    }

    /// Whether another engine has taken this lease over (this one stalled past its lifetime):
    /// the run must stop.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Renews the lease every third of `ttl` until told to stop (or the lease is gone), then
/// releases it.
fn renew(
    store: &Store,
    rollout: &str,
    run_id: &str,
    ttl: Duration,
    stop: &mpsc::Receiver<()>,
    lost: &AtomicBool,
) {
    let every = ttl / 3;
    // Until stopped, or until the run's side is dropped: either way the run is over.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        match store.renew_lease(rollout, run_id, wall_ms(), ms(ttl)) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!(
                    "rollout {rollout}: this engine's lease expired and was taken over by another engine (this one stalled for longer than {} s); stopping",
                    ttl.as_secs_f64()
                );
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A busy cache: the next renewal tries again, well before the lease expires.
            Err(e) => eprintln!("rollout {rollout}: renewing the engine lease: {e:#}"),
        }
    }
    if let Err(e) = store.release_lease(rollout, run_id) {
        eprintln!("rollout {rollout}: releasing the engine lease: {e:#}");
    }
}

impl Drop for EngineLease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that stalls past its lease's lifetime and is taken over learns it at its
    /// next renewal, so its run stops (review of issue 16, F10).
    #[test]
    fn a_lease_taken_over_by_another_engine_is_reported_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("cache.db");
        drop(Store::open(&db).expect("cache"));
        let ttl = Duration::from_millis(300);
        let lease = EngineLease::take_for(&db, "r1", ttl).expect("first engine");
        assert!(!lease.lost());
        // A second engine, as if the first had stalled for an hour: the lease has expired by
        // its clock, so it takes it over.
        let other = Holder {
            host: "other".into(),
            pid: 1,
            run_id: "other-run".into(),
        };
        let store = Store::open(&db).expect("cache");
        let taken = store
            .take_lease("r1", &other, wall_ms() + 3_600_000, ms(ttl))
            .expect("take over");
        assert!(matches!(taken, Taken::Ours { .. }), "{taken:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lease.lost() {
            assert!(
                std::time::Instant::now() < deadline,
                "the first engine never learnt that its lease was taken over"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first engine's end must not release the lease it lost: a third engine is still
        // refused while the second holds it.
        drop(lease);
        let err = EngineLease::take_for(&db, "r1", ttl).expect_err("the second engine holds it");
        assert!(format!("{err:#}").contains("host other"), "{err:#}");
    }
}
