//! The fleet summary's counts, kept as devices change (issue 22): the number of devices per
//! model, region, firmware and state, which `GET /fleet` used to count with full scans of the
//! devices (a subquery into the history per device for its state).
//!
//! The schema (`schema.rs`, the `device_facets` migration) keeps one row of facets per device
//! and the counts per facet value with triggers, in the same transaction as each write of a
//! device, a component or a device event. A bulk write (an import of a thousand devices or more)
//! suspends the triggers with the fleet snapshot's and marks the counts invalid
//! ([`invalidate`]); the next summary rebuilds them in one pass ([`rebuild`]). A summary never
//! reads invalid counts: when the rebuild cannot take the write lock, it counts by full scans
//! as before ([`super::query::fleet_summary_by_scans`]).

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

use super::Store;
use super::query::{DEVICE_STATES, IDLE};

/// The devices per value of each facet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacetCounts {
    pub by_model: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    pub by_firmware: BTreeMap<String, u64>,
    pub by_state: BTreeMap<String, u64>,
}

impl FacetCounts {
    /// The number of devices (every device has exactly one model).
    pub fn devices(&self) -> u64 {
        self.by_model.values().sum()
    }
}

/// Whether this cache keeps the counts (schema version 13; older caches in
/// tests do not).
pub(crate) fn kept(conn: &Connection) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'fleet_counts_state'",
            [],
            |r| r.get(0),
        )
        .context("looking for the fleet counts")?;
    Ok(n > 0)
}

/// Marks the counts invalid, inside a bulk write's transaction that suspends their triggers
/// (`snapshot::suspend_triggers`): the next summary rebuilds them.
pub(crate) fn invalidate(tx: &Connection) -> Result<()> {
    if kept(tx)? {
        tx.execute("UPDATE fleet_counts_state SET valid = 0", [])
            .context("marking the fleet counts invalid")?;
    }
    Ok(())
}

/// Reads the counts, or `None` when they are invalid (or this cache does not keep them).
pub(crate) fn read(conn: &Connection) -> Result<Option<FacetCounts>> {
    if !kept(conn)? {
        return Ok(None);
    }
    let valid: Option<i64> = conn
        .query_row("SELECT valid FROM fleet_counts_state", [], |r| r.get(0))
        .optional()
        .context("reading whether the fleet counts are valid")?;
    if valid != Some(1) {
        return Ok(None);
    }
    let mut counts = FacetCounts::default();
    let mut stmt = conn.prepare_cached("SELECT dim, key, n FROM fleet_counts")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (dim, key, n) = row.context("reading the fleet counts")?;
        let map = match dim.as_str() {
            "model" => &mut counts.by_model,
            "region" => &mut counts.by_region,
            "firmware" => &mut counts.by_firmware,
            "state" => &mut counts.by_state,
            other => anyhow::bail!("the fleet counts hold an unknown facet {other:?}"),
        };
        map.insert(key, n.max(0) as u64);
    }
    Ok(Some(counts))
}

/// Drops the counts' own triggers on the facets (a million rows would run them a million
/// times) for a rebuild in the caller's transaction, and returns their SQL to restore them.
fn drop_facet_triggers(tx: &Connection) -> Result<Vec<String>> {
    let triggers: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT sql FROM sqlite_master
             WHERE type = 'trigger' AND tbl_name = 'device_facets' ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the fleet counts' triggers")?
    };
    anyhow::ensure!(
        triggers.len() == 3,
        "the fleet counts have {} triggers on their facets, not 3",
        triggers.len()
    );
    tx.execute_batch(
        "DROP TRIGGER device_facets_insert_counts;
         DROP TRIGGER device_facets_delete_counts;
         DROP TRIGGER device_facets_update_counts;",
    )
    .context("suspending the fleet counts' triggers")?;
    Ok(triggers)
}

/// Creates the triggers [`drop_facet_triggers`] dropped.
fn restore_facet_triggers(tx: &Connection, triggers: Vec<String>) -> Result<()> {
    for sql in triggers {
        tx.execute_batch(&sql)
            .with_context(|| format!("restoring a fleet counts trigger: {sql}"))?;
    }
    Ok(())
}

/// Rebuilds the facets and counts from the devices in one pass, in the caller's write
/// transaction, and marks them valid. The counts' own triggers on the facets are dropped for
/// the rebuild and the counts grouped once.
pub(crate) fn rebuild(tx: &Connection) -> Result<()> {
    let triggers = drop_facet_triggers(tx)?;
    let kinds: Vec<String> = DEVICE_STATES.iter().map(|k| format!("'{k}'")).collect();
    tx.execute_batch(&format!(
        "DELETE FROM device_facets;
         DELETE FROM fleet_counts;
         INSERT INTO device_facets(dev, model, region, firmware, state)
           SELECT d.dev, d.model, d.region,
             coalesce(json_extract(d.components, '$.firmware'), 'none'),
             coalesce((SELECT e.kind FROM device_events e
                       WHERE e.device_id = d.id AND e.kind IN ({})
                       ORDER BY e.seq DESC LIMIT 1), '{IDLE}')
           FROM devices d;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'model', model, count(*) FROM device_facets GROUP BY model;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'region', region, count(*) FROM device_facets GROUP BY region;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'firmware', firmware, count(*) FROM device_facets GROUP BY firmware;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'state', state, count(*) FROM device_facets GROUP BY state;
         UPDATE fleet_counts_state SET valid = 1;",
        kinds.join(", ")
    ))
    .context("rebuilding the fleet counts")?;
    restore_facet_triggers(tx, triggers)
}

/// [`rebuild`] from `devices` in memory when they are the cache's whole fleet (an import into
/// a cache without devices, in its transaction): `keys[i]` is the key of `devices[i]`. The
/// same facets and counts, without reading the devices and components back; states still
/// come from the device events (a device may have a history before it is imported).
pub(crate) fn rebuild_from_devices(
    tx: &Connection,
    keys: &[i64],
    devices: &[convoy_core::fleet::Device],
) -> Result<()> {
    use std::fmt::Write as _;
    const ROWS: usize = 128;
    anyhow::ensure!(
        keys.len() == devices.len(),
        "{} keys for {} devices",
        keys.len(),
        devices.len()
    );
    let kinds: Vec<String> = DEVICE_STATES.iter().map(|k| format!("'{k}'")).collect();
    let mut states: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT device_id, kind FROM device_events WHERE kind IN ({}) ORDER BY seq",
            kinds.join(", ")
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            states.insert(r.get(0)?, r.get(1)?);
        }
    }
    let triggers = drop_facet_triggers(tx)?;
    tx.execute_batch("DELETE FROM device_facets; DELETE FROM fleet_counts;")
        .context("clearing the fleet counts")?;
    let sql = |rows: usize| {
        let mut sql =
            String::from("INSERT INTO device_facets(dev, model, region, firmware, state) VALUES ");
        for row in 0..rows {
            let p = row * 5;
            let _ = write!(
                sql,
                "{}(?{}, ?{}, ?{}, ?{}, ?{})",
                if row == 0 { "" } else { ", " },
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            );
        }
        sql
    };
    // Firmware as the rows spell it, printed once per shared component map.
    let mut firmware: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let mut counts: [BTreeMap<String, u64>; 4] = Default::default();
    // The statement text of a full chunk, built once rather than for each chunk.
    let mut full = tx.prepare_cached(&sql(ROWS))?;
    let mut partial;
    for (chunk, chunk_keys) in devices.chunks(ROWS).zip(keys.chunks(ROWS)) {
        let stmt = if chunk.len() == ROWS {
            &mut full
        } else {
            partial = tx.prepare_cached(&sql(chunk.len()))?;
            &mut partial
        };
        for (row, (d, &dev)) in chunk.iter().zip(chunk_keys).enumerate() {
            let p = row * 5;
            let fw = firmware.entry(d.components.addr()).or_insert_with(|| {
                d.components
                    .get(convoy_core::fleet::component::FIRMWARE)
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            });
            let state = states.get(&d.id).map_or(IDLE, String::as_str);
            stmt.raw_bind_parameter(p + 1, dev)?;
            stmt.raw_bind_parameter(p + 2, d.model.as_str())?;
            stmt.raw_bind_parameter(p + 3, d.region.as_str())?;
            stmt.raw_bind_parameter(p + 4, fw.as_str())?;
            stmt.raw_bind_parameter(p + 5, state)?;
            for (map, key) in
                counts
                    .iter_mut()
                    .zip([d.model.as_str(), d.region.as_str(), fw.as_str(), state])
            {
                if let Some(n) = map.get_mut(key) {
                    *n += 1;
                } else {
                    map.insert(key.to_owned(), 1);
                }
            }
        }
        stmt.raw_execute().context("writing the fleet facets")?;
    }
    let mut insert = tx.prepare("INSERT INTO fleet_counts(dim, key, n) VALUES (?1, ?2, ?3)")?;
    for (dim, map) in ["model", "region", "firmware", "state"].iter().zip(&counts) {
        for (key, n) in map {
            insert.execute(rusqlite::params![dim, key, i64::try_from(*n)?])?;
        }
    }
    drop(insert);
    tx.execute("UPDATE fleet_counts_state SET valid = 1", [])
        .context("marking the fleet counts valid")?;
    restore_facet_triggers(tx, triggers)
}

impl Store {
    /// The counts, rebuilt first when a bulk write (or an upgrade) left them invalid; `None`
    /// when they are invalid and the write lock could not be had (another writer held it for
    /// longer than the cache's patience), or the cache does not keep them.
    pub fn fleet_counts(&self) -> Result<Option<FacetCounts>> {
        if let Some(counts) = read(&self.conn)? {
            return Ok(Some(counts));
        }
        if !kept(&self.conn)? {
            return Ok(None);
        }
        let Ok(tx) = super::write_tx(&self.conn) else {
            return Ok(None);
        };
        // Another connection may have rebuilt them while this one waited for the lock.
        if read(&tx)?.is_none() {
            rebuild(&tx)?;
        }
        let counts = read(&tx)?;
        tx.commit().context("committing the fleet counts")?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::NewDeviceEvent;
    use super::super::query::{fleet_summary, fleet_summary_by_scans};
    use super::*;
    use convoy_core::fleet::Fleet;
    use convoy_core::synth::{SynthOptions, generate};
    use convoy_core::time::Timestamp;
    use convoy_core::version::Version;

    const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

    fn fleet(devices: usize, seed: u64) -> Fleet {
        generate(&SynthOptions {
            devices,
            seed,
            now: NOW,
        })
    }

    /// The kept summary equals a full recount, and it came from the kept counts.
    fn assert_kept_equals_recount(store: &Store, step: &str) {
        assert!(
            read(&store.conn).expect("read").is_some(),
            "{step}: the counts were not kept through the change (a rebuild would hide it)"
        );
        assert_rebuilt_equals_recount(store, step);
    }

    /// The same after a bulk write, which leaves the counts to be rebuilt.
    fn assert_rebuilt_equals_recount(store: &Store, step: &str) {
        let counts = store.fleet_counts().expect("counts");
        assert!(counts.is_some(), "{step}: the counts were not kept");
        let kept = fleet_summary(store).expect("summary");
        let scanned = fleet_summary_by_scans(store).expect("scans");
        assert_eq!(
            kept, scanned,
            "{step}: the kept summary differs from a recount"
        );
        assert!(kept.devices > 0, "{step}: an empty fleet proves nothing");
    }

    fn event(id: &str, kind: &str, k: i64) -> NewDeviceEvent {
        NewDeviceEvent {
            device_id: id.to_owned(),
            rollout_id: Some("r1".into()),
            time: Timestamp::from_secs(NOW.secs() + k),
            kind: kind.to_owned(),
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn the_kept_summary_equals_a_full_recount_after_a_stream_of_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("cache.db")).expect("open");
        // A bulk write (2,000 devices) suspends the triggers; the first summary rebuilds.
        let mut f = fleet(2_000, 5);
        store
            .upsert_fleet(&f.depots, &f.devices, None)
            .expect("upsert");
        assert!(
            read(&store.conn).expect("read").is_none(),
            "bulk write invalidates"
        );
        assert_rebuilt_equals_recount(&store, "after the bulk write");
        assert!(
            read(&store.conn).expect("read").is_some(),
            "rebuilt and kept"
        );

        // Rollout progress: state events for known devices (some twice), other events, and
        // events for devices the cache does not hold.
        let ids: Vec<String> = f.devices.iter().map(|d| d.id.clone()).collect();
        let kinds = [
            "offered",
            "downloading",
            "installing",
            "confirmed",
            "failed",
        ];
        let mut events = Vec::new();
        for (k, id) in ids.iter().enumerate().step_by(7) {
            events.push(event(id, kinds[k % kinds.len()], k as i64));
            if k % 3 == 0 {
                events.push(event(id, "status.changed", k as i64));
                events.push(event(id, kinds[(k + 1) % kinds.len()], k as i64 + 1));
            }
        }
        events.push(event("not-in-the-cache", "confirmed", 0));
        store.append_device_events(&events).expect("events");
        assert_kept_equals_recount(&store, "after state events");

        // Small imports (below the bulk size, so row by row through the triggers): models,
        // regions and firmware change, a firmware component goes, new devices come.
        let firmware: Version = "9.9.9".parse().expect("version");
        let mut changed = Vec::new();
        for (k, d) in f.devices.iter_mut().enumerate().step_by(11).take(300) {
            match k % 4 {
                0 => d.model = format!("{}-x", d.model).into(),
                1 => d.region = "moon-1".into(),
                2 => {
                    d.components.insert("firmware", firmware);
                }
                _ => {
                    d.components.remove("firmware");
                }
            }
            changed.push(d.clone());
        }
        let extra = fleet(2_100, 9);
        for d in extra.devices.iter().skip(2_000) {
            let mut d = d.clone();
            d.id = format!("new-{}", d.id);
            changed.push(d);
        }
        store.upsert_fleet(&[], &changed, None).expect("upsert");
        assert_kept_equals_recount(&store, "after small imports");

        // A device that had events arrives later: its state comes from its history.
        let mut late = f.devices[3].clone();
        late.id = "not-in-the-cache".into();
        store.upsert_fleet(&[], &[late], None).expect("late device");
        assert_kept_equals_recount(&store, "after a device with a history arrives");

        // Devices go: replacing the fleet writes the counts of the new fleet in its own
        // transaction (they are valid at once).
        let mut fewer = f.clone();
        fewer.devices.truncate(900);
        store.replace_fleet(&fewer, None).expect("replace smaller");
        assert!(
            read(&store.conn).expect("read").is_some(),
            "replace_fleet writes the counts"
        );
        assert_kept_equals_recount(&store, "after devices were deleted");

        // Another bulk write, then more events: rebuilt, then kept again.
        let more = fleet(1_500, 6);
        store
            .upsert_fleet(&more.depots, &more.devices, None)
            .expect("bulk again");
        assert!(
            read(&store.conn).expect("read").is_none(),
            "bulk write invalidates"
        );
        assert_rebuilt_equals_recount(&store, "after a second bulk write");
        let ids: Vec<String> = fleet(1_500, 6)
            .devices
            .iter()
            .map(|d| d.id.clone())
            .collect();
        let events: Vec<_> = ids
            .iter()
            .take(50)
            .map(|id| event(id, "reverted", 1))
            .collect();
        store.append_device_events(&events).expect("events");
        assert_kept_equals_recount(&store, "after events following the rebuild");
    }
}
