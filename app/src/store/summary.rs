//! The fleet summary's counts, kept as devices change (issue 22): the number of devices per
//! model, region, firmware and state, which `GET /fleet` used to count with full scans of the
//! devices (a subquery into the history per device for its state).
//!
//! The schema (`schema.rs`, steps 13 and 15) keeps the counts per value with triggers on the
//! devices and the device events, in the same transaction as each write of a device or a
//! device event. A bulk write (an import of a thousand devices or more)
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

/// Rebuilds the counts from the devices in one pass, in the caller's write transaction, and
/// marks them valid.
pub(crate) fn rebuild(tx: &Connection) -> Result<()> {
    let kinds: Vec<String> = DEVICE_STATES.iter().map(|k| format!("'{k}'")).collect();
    tx.execute_batch(&format!(
        "DELETE FROM fleet_counts;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'model', model, count(*) FROM devices GROUP BY model;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'region', region, count(*) FROM devices GROUP BY region;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'firmware', coalesce(json_extract(components, '$.firmware'), 'none') AS v,
                  count(*)
           FROM devices GROUP BY v;
         INSERT INTO fleet_counts(dim, key, n)
           SELECT 'state',
             coalesce((SELECT e.kind FROM device_events e
                       WHERE e.device_id = d.id AND e.kind IN ({})
                       ORDER BY e.seq DESC LIMIT 1), '{IDLE}') AS s,
             count(*)
           FROM devices d GROUP BY s;
         UPDATE fleet_counts_state SET valid = 1;",
        kinds.join(", ")
    ))
    .context("rebuilding the fleet counts")
}

/// [`rebuild`] from `devices` in memory when they are the cache's whole fleet (an import into
/// a cache without devices, or `replace_fleet`, in its transaction): the same counts, without
/// reading the devices back; states still come from the device events (a device may have a
/// history before it is imported). A cache held at schema step 13 or 14 (only the schema
/// tests write one) kept a facet row per device as well: its counts are left invalid, for the
/// first summary after the upgrade to rebuild.
pub(crate) fn rebuild_from_devices(
    tx: &Connection,
    devices: &[convoy_core::fleet::Device],
) -> Result<()> {
    let facets: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'device_facets'",
            [],
            |r| r.get(0),
        )
        .context("looking for the fleet facets")?;
    if facets > 0 {
        return invalidate(tx);
    }
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
    // Firmware as the rows spell it, printed once per shared component map.
    let mut firmware: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let mut counts: [BTreeMap<String, u64>; 4] = Default::default();
    for d in devices {
        let fw = firmware.entry(d.components.addr()).or_insert_with(|| {
            d.components
                .get(convoy_core::fleet::component::FIRMWARE)
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        });
        let state = states.get(&d.id).map_or(IDLE, String::as_str);
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
    tx.execute("DELETE FROM fleet_counts", [])
        .context("clearing the fleet counts")?;
    let mut insert = tx.prepare("INSERT INTO fleet_counts(dim, key, n) VALUES (?1, ?2, ?3)")?;
    for (dim, map) in ["model", "region", "firmware", "state"].iter().zip(&counts) {
        for (key, n) in map {
            insert
                .execute(rusqlite::params![dim, key, i64::try_from(*n)?])
                .context("writing the fleet counts")?;
        }
    }
    drop(insert);
    tx.execute("UPDATE fleet_counts_state SET valid = 1", [])
        .context("marking the fleet counts valid")?;
    Ok(())
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
    fn the_counts_follow_every_kind_of_write_by_plain_sql() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("cache.db")).expect("open");
        let f = fleet(300, 9);
        store
            .upsert_fleet(&f.depots, &f.devices, None)
            .expect("fleet");
        assert_rebuilt_equals_recount(&store, "a fresh cache's first summary");
        let ids: Vec<String> = f.devices.iter().map(|d| d.id.clone()).collect();
        // Three states for one device, one for another, and a kind that is not a state.
        let events = [
            event(&ids[0], "offered", 1),
            event(&ids[0], "installing", 2),
            event(&ids[0], "failed", 3),
            event(&ids[1], "confirmed", 4),
            event(&ids[2], "note", 5),
            event("not-a-device", "failed", 6),
        ];
        store.append_device_events(&events).expect("events");
        assert_kept_equals_recount(&store, "after events");
        let seq_of = |store: &Store, id: &str, kind: &str| -> i64 {
            store
                .conn
                .query_row(
                    "SELECT seq FROM device_events WHERE device_id = ?1 AND kind = ?2",
                    [id, kind],
                    |r| r.get(0),
                )
                .expect("seq")
        };
        let steps: Vec<(String, String)> = vec![
            (
                "an older event deleted (the state stays)".into(),
                format!(
                    "DELETE FROM device_events WHERE seq = {}",
                    seq_of(&store, &ids[0], "installing")
                ),
            ),
            (
                "the newest event deleted (the state goes back)".into(),
                format!(
                    "DELETE FROM device_events WHERE seq = {}",
                    seq_of(&store, &ids[0], "failed")
                ),
            ),
            (
                "the firmware changed in the components column".into(),
                "UPDATE devices SET components = json_set(components, '$.firmware', '9.9.9')
                 WHERE dev = 3"
                    .into(),
            ),
            (
                "the firmware removed".into(),
                "UPDATE devices SET components = json_remove(components, '$.firmware')
                 WHERE dev = 4"
                    .into(),
            ),
            (
                "a device renamed to an id with no history".into(),
                format!("UPDATE devices SET id = 'renamed' WHERE id = '{}'", ids[1]),
            ),
            (
                "a device with a history deleted".into(),
                format!("DELETE FROM devices WHERE id = '{}'", ids[0]),
            ),
            (
                "model and region changed".into(),
                "UPDATE devices SET model = 'X9', region = 'mars' WHERE dev = 7".into(),
            ),
            (
                "a device inserted whose id has a history".into(),
                "INSERT INTO devices(id, model, hw_rev, active_slot, region, depot, lat, lon,
                     connectivity, metered, battery_pct, power, free_storage_bytes,
                     customer_tier, device_class, redundancy, last_seen,
                     failed_update_attempts, tags, components)
                 VALUES ('not-a-device', 'T300', 'A', 'a', 'eu', 'eu-1', 0, 0, 'wifi', 0,
                     NULL, 'mains', 0, 'basic', 'kiosk', 'none', 0, 0, '{}',
                     '{\"firmware\":\"1.0.0\"}')"
                    .into(),
            ),
        ];
        for (step, sql) in &steps {
            store.conn.execute_batch(sql).expect(step);
            assert_kept_equals_recount(&store, step);
        }
        let summary = fleet_summary(&store).expect("summary");
        assert_eq!(summary.by_firmware.get("9.9.9"), Some(&1));
        assert_eq!(summary.by_state.get("failed"), Some(&1), "{summary:?}");
        assert_eq!(summary.by_state.get("confirmed"), None, "{summary:?}");
        assert_eq!(summary.by_model.get("X9"), Some(&1));
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
