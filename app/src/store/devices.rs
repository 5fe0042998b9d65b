//! Devices, their components and depots in the cache: bulk upsert and cold load.
//!
//! Writes go through cached prepared statements inside one transaction; the cold load reads
//! each table with one query (devices and components both in `dev` order, merged in one pass),
//! never one query per device. This module does not parse inventories: that is `fleet_io`.

use super::audit::{AuditEntry, append_in};
use super::{Store, to_i64};
use anyhow::{Context, Result, bail};
use convoy_core::fleet::{Depot, Device, Fleet, GeoPoint, SmallMap};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use rusqlite::{Transaction, params};
use std::collections::HashSet;

/// What an upsert of devices did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub inserted: usize,
    pub updated: usize,
}

impl Store {
    /// Inserts or updates `devices` (by id) and `depots`, and appends `audit` if given, in one
    /// transaction. Devices not named are left alone: this is what `fleet import` does.
    pub fn upsert_fleet(
        &mut self,
        depots: &[Depot],
        devices: &[Device],
        audit: Option<&AuditEntry>,
    ) -> Result<UpsertCounts> {
        self.ingest_cache.clear_devices();
        let tx = self.conn.transaction()?;
        upsert_depots(&tx, depots)?;
        let counts = upsert_devices(&tx, devices)?;
        if let Some(entry) = audit {
            append_in(&tx, entry)?;
        }
        tx.commit().context("committing the devices")?;
        Ok(counts)
    }

    /// Makes the cache hold exactly `fleet`: its devices and depots are upserted and every
    /// other device and depot is deleted (with their components, samples and rollups), in one
    /// transaction, with `audit` appended if given. The audit log, outbox and timelines are
    /// kept.
    pub fn replace_fleet(
        &mut self,
        fleet: &Fleet,
        audit: Option<&AuditEntry>,
    ) -> Result<UpsertCounts> {
        self.ingest_cache.clear_devices();
        let tx = self.conn.transaction()?;
        upsert_depots(&tx, &fleet.depots)?;
        let counts = upsert_devices(&tx, &fleet.devices)?;
        let keep: HashSet<&str> = fleet.devices.iter().map(|d| d.id.as_str()).collect();
        let stale = {
            let mut stmt = tx.prepare("SELECT id FROM devices")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut stale = Vec::new();
            for id in ids {
                let id = id?;
                if !keep.contains(id.as_str()) {
                    stale.push(id);
                }
            }
            stale
        };
        {
            let mut del = tx.prepare_cached("DELETE FROM devices WHERE id = ?1")?;
            for id in &stale {
                del.execute([id])?;
            }
        }
        let keep_depots: HashSet<&str> = fleet.depots.iter().map(|d| d.id.as_str()).collect();
        let stale_depots: Vec<String> = {
            let mut stmt = tx.prepare("SELECT id FROM depots")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            ids.filter_map(|id| match id {
                Ok(id) if keep_depots.contains(id.as_str()) => None,
                other => Some(other),
            })
            .collect::<rusqlite::Result<_>>()?
        };
        for id in &stale_depots {
            tx.execute("DELETE FROM depots WHERE id = ?1", [id])?;
        }
        if let Some(entry) = audit {
            append_in(&tx, entry)?;
        }
        tx.commit().context("committing the fleet")?;
        Ok(counts)
    }

    /// Loads the whole fleet: devices sorted by id, depots sorted by id.
    pub fn load_fleet(&self) -> Result<Fleet> {
        let depots = self.load_depots()?;
        let mut devices: Vec<(i64, Device)> = Vec::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT dev, id, model, hw_rev, active_slot, region, depot, lat, lon,
                        connectivity, metered, battery_pct, power, free_storage_bytes,
                        customer_tier, device_class, redundancy, last_seen,
                        failed_update_attempts, tags
                 FROM devices ORDER BY dev",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let dev: i64 = r.get(0)?;
                let id: String = r.get(1)?;
                let device = device_from_row(r, id).context("reading a device from the cache")?;
                devices.push((dev, device));
            }
        }
        {
            // Components come in (dev, name) order, devices in dev order: merge in one pass.
            let mut stmt = self
                .conn
                .prepare("SELECT dev, name, version FROM components ORDER BY dev, name")?;
            let mut rows = stmt.query([])?;
            let mut i = 0;
            while let Some(r) = rows.next()? {
                let dev: i64 = r.get(0)?;
                while i < devices.len() && devices[i].0 < dev {
                    i += 1;
                }
                let Some((_, device)) = devices.get_mut(i).filter(|(d, _)| *d == dev) else {
                    bail!("component row for unknown device key {dev} in the cache");
                };
                let name: String = r.get(1)?;
                let text = r.get_ref(2)?.as_str()?;
                let version: Version = text.parse().with_context(|| {
                    format!("component {name} of device {} in the cache", device.id)
                })?;
                device.components.insert(name, version);
            }
        }
        Ok(Fleet::new(
            depots,
            devices.into_iter().map(|(_, d)| d).collect(),
        ))
    }

    /// Depots sorted by id.
    pub fn load_depots(&self) -> Result<Vec<Depot>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, region, lat, lon, utc_offset_minutes FROM depots ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Depot {
                id: r.get(0)?,
                name: r.get(1)?,
                region: r.get(2)?,
                position: GeoPoint {
                    lat: r.get(3)?,
                    lon: r.get(4)?,
                },
                utc_offset_minutes: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading depots from the cache")
    }

    /// Number of devices in the cache.
    pub fn device_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))?;
        Ok(n as usize)
    }
}

fn device_from_row(r: &rusqlite::Row<'_>, id: String) -> Result<Device> {
    let text = |i: usize, field: &str| -> Result<String> {
        r.get::<_, String>(i)
            .with_context(|| format!("column {field} of device {id}"))
    };
    let parse = |i: usize, field: &str| -> Result<&str> {
        r.get_ref(i)
            .and_then(|v| Ok(v.as_str()?))
            .with_context(|| format!("column {field} of device {id}"))
    };
    macro_rules! enum_col {
        ($i:expr, $field:literal) => {
            parse($i, $field)?
                .parse()
                .with_context(|| format!("column {} of device {id}", $field))?
        };
    }
    let battery: Option<i64> = r.get(11)?;
    let battery_pct = battery
        .map(|b| u8::try_from(b).with_context(|| format!("battery_pct {b} of device {id}")))
        .transpose()?;
    let free: i64 = r.get(13)?;
    let failed: i64 = r.get(18)?;
    let tags_json = parse(19, "tags")?;
    let tags: SmallMap<String> = serde_json::from_str(tags_json)
        .with_context(|| format!("tags of device {id} in the cache"))?;
    Ok(Device {
        model: text(2, "model")?,
        hw_rev: text(3, "hw_rev")?,
        components: SmallMap::new(),
        active_slot: enum_col!(4, "active_slot"),
        region: text(5, "region")?,
        depot: text(6, "depot")?,
        position: GeoPoint {
            lat: r.get(7)?,
            lon: r.get(8)?,
        },
        connectivity: enum_col!(9, "connectivity"),
        metered: r.get(10)?,
        battery_pct,
        power: enum_col!(12, "power"),
        free_storage_bytes: u64::try_from(free)
            .with_context(|| format!("free_storage_bytes {free} of device {id}"))?,
        customer_tier: enum_col!(14, "customer_tier"),
        device_class: enum_col!(15, "device_class"),
        redundancy: enum_col!(16, "redundancy"),
        last_seen: Timestamp::from_secs(r.get(17)?),
        failed_update_attempts: u32::try_from(failed)
            .with_context(|| format!("failed_update_attempts {failed} of device {id}"))?,
        tags,
        id,
    })
}

pub(crate) fn upsert_depots(tx: &Transaction<'_>, depots: &[Depot]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO depots(id, name, region, lat, lon, utc_offset_minutes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, region = excluded.region,
             lat = excluded.lat, lon = excluded.lon,
             utc_offset_minutes = excluded.utc_offset_minutes",
    )?;
    for d in depots {
        stmt.execute(params![
            d.id,
            d.name,
            d.region,
            d.position.lat,
            d.position.lon,
            d.utc_offset_minutes
        ])
        .with_context(|| format!("writing depot {}", d.id))?;
    }
    Ok(())
}

pub(crate) fn upsert_devices(tx: &Transaction<'_>, devices: &[Device]) -> Result<UpsertCounts> {
    let mut find = tx.prepare_cached("SELECT dev FROM devices WHERE id = ?1")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO devices(id, model, hw_rev, active_slot, region, depot, lat, lon,
             connectivity, metered, battery_pct, power, free_storage_bytes, customer_tier,
             device_class, redundancy, last_seen, failed_update_attempts, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19)",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE devices SET model = ?2, hw_rev = ?3, active_slot = ?4, region = ?5,
             depot = ?6, lat = ?7, lon = ?8, connectivity = ?9, metered = ?10,
             battery_pct = ?11, power = ?12, free_storage_bytes = ?13, customer_tier = ?14,
             device_class = ?15, redundancy = ?16, last_seen = ?17,
             failed_update_attempts = ?18, tags = ?19
         WHERE dev = ?1",
    )?;
    let mut clear_components = tx.prepare_cached("DELETE FROM components WHERE dev = ?1")?;
    let mut insert_component =
        tx.prepare_cached("INSERT INTO components(dev, name, version) VALUES (?1, ?2, ?3)")?;
    let mut counts = UpsertCounts::default();
    let mut version_text = String::new();
    for d in devices {
        let tags = serde_json::to_string(&d.tags).context("encoding tags")?;
        let free = to_i64(d.free_storage_bytes, "free_storage_bytes")?;
        let existing: Option<i64> = {
            let mut rows = find.query([&d.id])?;
            rows.next()?.map(|r| r.get(0)).transpose()?
        };
        let dev = if let Some(dev) = existing {
            update
                .execute(params![
                    dev,
                    d.model,
                    d.hw_rev,
                    d.active_slot.as_str(),
                    d.region,
                    d.depot,
                    d.position.lat,
                    d.position.lon,
                    d.connectivity.as_str(),
                    d.metered,
                    d.battery_pct,
                    d.power.as_str(),
                    free,
                    d.customer_tier.as_str(),
                    d.device_class.as_str(),
                    d.redundancy.as_str(),
                    d.last_seen.secs(),
                    d.failed_update_attempts,
                    tags
                ])
                .with_context(|| format!("updating device {}", d.id))?;
            clear_components.execute([dev])?;
            counts.updated += 1;
            dev
        } else {
            insert
                .execute(params![
                    d.id,
                    d.model,
                    d.hw_rev,
                    d.active_slot.as_str(),
                    d.region,
                    d.depot,
                    d.position.lat,
                    d.position.lon,
                    d.connectivity.as_str(),
                    d.metered,
                    d.battery_pct,
                    d.power.as_str(),
                    free,
                    d.customer_tier.as_str(),
                    d.device_class.as_str(),
                    d.redundancy.as_str(),
                    d.last_seen.secs(),
                    d.failed_update_attempts,
                    tags
                ])
                .with_context(|| format!("inserting device {}", d.id))?;
            counts.inserted += 1;
            tx.last_insert_rowid()
        };
        for (name, version) in d.components.iter() {
            use std::fmt::Write as _;
            version_text.clear();
            let _ = write!(version_text, "{version}");
            insert_component
                .execute(params![dev, name, version_text])
                .with_context(|| format!("writing component {name} of device {}", d.id))?;
        }
    }
    Ok(counts)
}
