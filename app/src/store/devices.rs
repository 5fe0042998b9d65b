//! Devices, their components and depots in the cache: bulk upsert and cold load.
//!
//! Writes go through cached prepared statements inside one transaction. A device is one row:
//! its tags and its components are JSON objects in two of its columns (schema v14; before,
//! components were one row each). The cold load reads the fleet snapshot when it is current
//! (`snapshot.rs`), else the device rows with one query per half of the keys, never one
//! query per device, and then stores a fresh snapshot. This module does not parse
//! inventories: that is `fleet_io`.

use super::audit::{AuditEntry, append_in};
use super::snapshot::{self, Unusable};
use super::{Store, to_i64};
use anyhow::{Context, Result, bail};
use convoy_core::fleet::{Depot, Device, Fleet, GeoPoint, Interner, SmallMap, Sym};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use rusqlite::{Connection, OpenFlags, Transaction, params};
use std::collections::{HashMap, HashSet};

/// How long a load waits for the write lock to store a fresh fleet snapshot: a snapshot is
/// never worth holding up the load behind someone else's long write.
const SNAPSHOT_WRITE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes of at least this many devices suspend the snapshot's per-row staleness triggers
/// (a schema change, which every connection notices, is worth it only for a bulk write).
const BULK_DEVICES: usize = 1_000;

/// Whether a row load arms the fleet snapshot's state (to store a snapshot afterwards).
#[derive(Clone, Copy)]
enum Arm {
    Yes,
    No,
}

/// Where [`Store::load_fleet_traced`] got the fleet from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetSource {
    /// The fleet snapshot, current and intact.
    Snapshot,
    /// The device rows, because the snapshot could not be used.
    Rows {
        unusable: Unusable,
        /// Whether a fresh snapshot was stored after the load.
        snapshot_written: bool,
    },
}

/// What an upsert of devices did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub inserted: usize,
    pub updated: usize,
}

/// What [`Store::import_fleet`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub counts: UpsertCounts,
    /// The cache held no devices before, so the import is the whole fleet: it was written
    /// without per-row conflict checks, and the fleet snapshot and the fleet summary's counts
    /// were written from it in the same transaction.
    pub whole_fleet: bool,
}

/// Device rows per multi-row `INSERT` of the bulk path (21 parameters each).
const DEVICE_ROWS_PER_INSERT: usize = 32;

impl Store {
    /// What `fleet import` does: inserts or updates `devices` (by id, which must be unique)
    /// and `depots`, and appends `audit` if given, in one transaction, like
    /// [`Store::upsert_fleet`]; `devices` are sorted by id first.
    ///
    /// Into a cache that holds no devices (a new cache), the devices are the whole fleet:
    /// they are written with multi-row inserts and keys given in id order (no per-row search
    /// for an existing id), and in the same transaction the fleet snapshot
    /// (`snapshot.rs`) and the fleet summary's counts (`summary.rs`) are written from them,
    /// so that neither the first load nor the first summary rebuilds them from the rows.
    pub fn import_fleet(
        &mut self,
        depots: &[Depot],
        devices: &mut [Device],
        audit: Option<&AuditEntry>,
    ) -> Result<ImportOutcome> {
        if !devices.is_sorted_by(|a, b| a.id < b.id) {
            devices.sort_by(|a, b| a.id.cmp(&b.id));
        }
        if let Some(mut writer) = self.begin_new_fleet()? {
            writer.write(devices)?;
            return writer.finish(depots, devices, audit);
        }
        self.ingest_cache.clear_devices();
        let tx = super::write_tx(&self.conn)?;
        let suspended = suspend_for(self.has_snapshot, &tx, devices.len())?;
        upsert_depots(&tx, depots)?;
        let counts = upsert_devices(&tx, devices)?;
        if let Some(entry) = audit {
            append_in(&tx, entry)?;
        }
        if let Some(suspended) = suspended {
            snapshot::restore_triggers(&tx, suspended)?;
        }
        tx.commit().context("committing the import")?;
        Ok(ImportOutcome {
            counts,
            whole_fleet: false,
        })
    }

    /// Starts an import into a cache that holds no devices, in one write transaction that the
    /// returned writer holds until [`NewFleetWriter::finish`] commits it (dropping the writer
    /// rolls everything back). `None` (and nothing written) when the cache holds devices.
    /// The devices can be written batch by batch as they are read (`fleet_io` streams a CSV
    /// file into it while parsing the rest on another thread).
    pub fn begin_new_fleet(&mut self) -> Result<Option<NewFleetWriter<'_>>> {
        self.ingest_cache.clear_devices();
        let tx = super::write_tx(&self.conn)?;
        let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM devices)", [], |r| {
            r.get(0)
        })?;
        if !empty {
            return Ok(None);
        }
        // However many devices come, this is a bulk write: the per-row triggers are suspended
        // (the snapshot and the counts are written from the devices at the end).
        let suspended = if self.has_snapshot {
            Some(snapshot::suspend_triggers(&tx)?)
        } else {
            None
        };
        let rows = NewRows::new(&tx)?;
        Ok(Some(NewFleetWriter {
            tx,
            suspended,
            rows,
            has_snapshot: self.has_snapshot,
        }))
    }

    /// Inserts or updates `devices` (by id) and `depots`, and appends `audit` if given, in one
    /// transaction. Devices not named are left alone: this is what `fleet import` does.
    pub fn upsert_fleet(
        &mut self,
        depots: &[Depot],
        devices: &[Device],
        audit: Option<&AuditEntry>,
    ) -> Result<UpsertCounts> {
        self.ingest_cache.clear_devices();
        let tx = super::write_tx(&self.conn)?;
        let suspended = suspend_for(self.has_snapshot, &tx, devices.len())?;
        upsert_depots(&tx, depots)?;
        let counts = upsert_devices(&tx, devices)?;
        if let Some(entry) = audit {
            append_in(&tx, entry)?;
        }
        if let Some(suspended) = suspended {
            snapshot::restore_triggers(&tx, suspended)?;
        }
        tx.commit().context("committing the devices")?;
        Ok(counts)
    }

    /// Makes the cache hold exactly `fleet`: its devices and depots are upserted and every
    /// other device and depot is deleted (with their samples and rollups), in one
    /// transaction, with `audit` appended if given. The audit log, outbox and timelines are
    /// kept. The fleet snapshot and the fleet summary's counts are written from `fleet` in
    /// the same transaction.
    pub fn replace_fleet(
        &mut self,
        fleet: &Fleet,
        audit: Option<&AuditEntry>,
    ) -> Result<UpsertCounts> {
        self.ingest_cache.clear_devices();
        let tx = super::write_tx(&self.conn)?;
        let suspended = suspend_for(self.has_snapshot, &tx, fleet.devices.len())?;
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
        if !stale.is_empty() {
            // Telemetry has no foreign key to devices (see the schema): delete it explicitly.
            let mut find = tx.prepare_cached("SELECT dev FROM devices WHERE id = ?1")?;
            let mut del = tx.prepare_cached("DELETE FROM devices WHERE dev = ?1")?;
            // Caches being built at schema version 1 (in tests) have no telemetry tables.
            let telemetry = super::schema::version(&tx)? >= 2;
            let mut rollups = if telemetry {
                Some(tx.prepare_cached("DELETE FROM rollup_device WHERE dev = ?1")?)
            } else {
                None
            };
            for id in &stale {
                let dev: i64 = find.query_row([id], |r| r.get(0))?;
                if let Some(rollups) = &mut rollups {
                    rollups.execute([dev])?;
                }
                del.execute([dev])?;
            }
            if telemetry {
                // Samples are keyed time first (since schema version 4): one pass over them
                // all, rather than one per removed device.
                tx.execute(
                    "DELETE FROM samples WHERE dev NOT IN (SELECT dev FROM devices)",
                    [],
                )?;
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
        if let Some(suspended) = suspended {
            snapshot::restore_triggers(&tx, suspended)?;
        }
        // `fleet` is now exactly the cache's fleet: the snapshot and the summary's counts are
        // written from it, after the last write to devices, as an import into a new cache
        // does, so that neither the first load nor the first summary rebuilds them from the
        // rows (`fleet generate --out x.db` at a million devices left 8 s to the console).
        if fleet.devices.is_sorted_by(|a, b| a.id < b.id) {
            if self.has_snapshot {
                snapshot::store_in(&tx, &fleet.devices)?;
            }
            if super::summary::kept(&tx)? {
                super::summary::rebuild_from_devices(&tx, &fleet.devices)?;
            }
        }
        tx.commit().context("committing the fleet")?;
        Ok(counts)
    }

    /// Loads the whole fleet: devices sorted by id, depots sorted by id.
    ///
    /// From the fleet snapshot when it is current and intact (one query, decoded on up to four
    /// threads: `snapshot.rs`), else from the device rows, after which a fresh snapshot is
    /// stored for the next load. Both give the same fleet. A damaged snapshot is reported on
    /// stderr and the rows are used.
    pub fn load_fleet(&self) -> Result<Fleet> {
        let (fleet, source) = self.load_fleet_traced()?;
        if let FleetSource::Rows {
            unusable: Unusable::Damaged(why),
            ..
        } = &source
        {
            eprintln!(
                "warning: the fleet snapshot in {} is damaged ({why}): loaded the device rows \
                 instead",
                self.path.display()
            );
        }
        Ok(fleet)
    }

    /// [`Store::load_fleet`], also saying where the fleet came from.
    pub fn load_fleet_traced(&self) -> Result<(Fleet, FleetSource)> {
        if !self.has_snapshot {
            let (fleet, _) = self.load_fleet_from_rows(Arm::No)?;
            return Ok((
                fleet,
                FleetSource::Rows {
                    unusable: Unusable::Missing,
                    snapshot_written: false,
                },
            ));
        }
        let unusable = match self.load_fleet_from_snapshot()? {
            Ok(fleet) => return Ok((fleet, FleetSource::Snapshot)),
            Err(unusable) => unusable,
        };
        let (fleet, armed) = self.load_fleet_from_rows(Arm::Yes)?;
        let snapshot_written = match armed {
            Some(generation) => {
                match snapshot::store(&self.conn, generation, &fleet.devices, SNAPSHOT_WRITE_WAIT) {
                    Ok(written) => written,
                    Err(e) => {
                        // The fleet is loaded; only the shortcut for the next load is lost.
                        eprintln!(
                            "warning: could not store the fleet snapshot in {}: {e:#}",
                            self.path.display()
                        );
                        false
                    }
                }
            }
            None => false,
        };
        Ok((
            fleet,
            FleetSource::Rows {
                unusable,
                snapshot_written,
            },
        ))
    }

    /// The fleet from the snapshot, or why the snapshot cannot be used.
    fn load_fleet_from_snapshot(&self) -> Result<std::result::Result<Fleet, Unusable>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(4);
        // The parts are decoded as they are read, inside the read transaction.
        self.conn.execute_batch("BEGIN")?;
        let read = (|| -> Result<_> {
            let devices = snapshot::load(&self.conn, threads)?;
            let depots = if devices.is_ok() {
                self.load_depots()?
            } else {
                Vec::new()
            };
            Ok((devices, depots))
        })();
        let ended = self.conn.execute_batch("COMMIT");
        let (devices, depots) = read.context("reading the fleet snapshot")?;
        ended?;
        Ok(devices.map(|devices| {
            // Devices come out checked in strictly increasing id order; depots are read
            // `ORDER BY id`, which is byte order like `String`'s.
            if depots.is_sorted_by(|a, b| a.id < b.id) {
                Fleet { depots, devices }
            } else {
                Fleet::new(depots, devices)
            }
        }))
    }

    /// The fleet from the device rows; with [`Arm::Yes`], also the snapshot generation that
    /// the rows were read at (`None` when the load could not pause writers).
    ///
    /// The two halves of the device keys are read on two threads, each with its own
    /// connection, from the same snapshot: a third connection holds the write lock for the
    /// moment both readers start their read transactions, so no commit can fall between them
    /// (and arms the fleet snapshot's state in that moment). Each half is read with one query
    /// in `dev` order.
    ///
    /// If another process is in the middle of a long write (an import), writers cannot be
    /// paused; the load then reads everything on one thread from one snapshot instead, since
    /// in WAL mode a reader never waits for a writer.
    fn load_fleet_from_rows(&self, arm: Arm) -> Result<(Fleet, Option<i64>)> {
        let gate = open_reader(&self.path)?;
        gate.busy_timeout(std::time::Duration::from_millis(250))?;
        if gate.execute_batch("BEGIN IMMEDIATE").is_err() {
            return Ok((self.load_fleet_sequentially()?, None));
        }
        let generation = match arm {
            Arm::Yes => match snapshot::arm(&gate) {
                Ok(generation) => Some(generation),
                Err(e) => {
                    // The rows still load; only the snapshot for the next load is lost.
                    eprintln!(
                        "warning: cannot store a fleet snapshot in {}: {e:#}",
                        self.path.display()
                    );
                    None
                }
            },
            Arm::No => None,
        };
        let upper_reader = open_reader(&self.path)?;
        let snapshot = [&self.conn, &upper_reader]
            .into_iter()
            .try_for_each(|conn| -> Result<()> {
                conn.execute_batch("BEGIN")?;
                // A read transaction starts at its first read.
                conn.query_row("SELECT count(*) FROM depots", [], |_| Ok(()))?;
                Ok(())
            });
        gate.execute_batch(if generation.is_some() {
            "COMMIT"
        } else {
            "ROLLBACK"
        })?;
        let loaded = snapshot.and_then(|()| {
            // Devices are split in two key ranges, each read on its own thread.
            let max_dev: i64 =
                self.conn
                    .query_row("SELECT coalesce(max(dev), 0) FROM devices", [], |r| {
                        r.get(0)
                    })?;
            let mid = max_dev / 2;
            std::thread::scope(|scope| {
                let upper = std::thread::Builder::new()
                    .name("load-devices".to_owned())
                    .spawn_scoped(scope, move || {
                        let result = load_devices(&upper_reader, mid + 1, i64::MAX);
                        let _ = upper_reader.execute_batch("COMMIT");
                        result
                    })
                    .context("starting the device loader")?;
                let depots = self.load_depots();
                let lower = load_devices(&self.conn, i64::MIN, mid);
                let upper = upper
                    .join()
                    .map_err(|_| anyhow::anyhow!("the device loader panicked"))?;
                let mut devices = lower?;
                devices.extend(upper?);
                Ok((depots?, devices))
            })
        });
        let ended = self.conn.execute_batch("COMMIT");
        let (depots, devices) = loaded?;
        ended?;
        Ok((assemble(depots, devices), generation))
    }

    /// [`Store::load_fleet`] on this connection alone, in one read transaction.
    pub fn load_fleet_sequentially(&self) -> Result<Fleet> {
        self.conn.execute_batch("BEGIN")?;
        let loaded = (|| -> Result<_> {
            Ok((
                self.load_depots()?,
                load_devices(&self.conn, i64::MIN, i64::MAX)?,
            ))
        })();
        let ended = self.conn.execute_batch("COMMIT");
        let (depots, devices) = loaded?;
        ended?;
        Ok(assemble(depots, devices))
    }

    /// Depots sorted by id.
    pub fn load_depots(&self) -> Result<Vec<Depot>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, region, lat, lon, utc_offset_minutes, time_zone FROM depots ORDER BY id",
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
                time_zone: r.get(6)?,
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

/// For a write of at least [`BULK_DEVICES`] devices into a cache with the fleet snapshot, the
/// snapshot's staleness triggers are suspended for the transaction (the snapshot is marked
/// stale once instead of being checked once per row: `snapshot::suspend_triggers`).
fn suspend_for(
    has_snapshot: bool,
    tx: &Transaction<'_>,
    devices: usize,
) -> Result<Option<snapshot::SuspendedTriggers>> {
    if has_snapshot && devices >= BULK_DEVICES {
        snapshot::suspend_triggers(tx).map(Some)
    } else {
        Ok(None)
    }
}

/// Builds the fleet from the rows read, sharing equal values.
fn assemble(depots: Vec<Depot>, mut devices: Vec<Device>) -> Fleet {
    // Devices are usually stored in id order already; sorting is then skipped (and
    // `Fleet::new`'s sharing of equal values done here).
    if devices.is_sorted_by(|a, b| a.id < b.id) && depots.is_sorted_by(|a, b| a.id < b.id) {
        let mut interner = Interner::new();
        for d in &mut devices {
            interner.device(d);
        }
        Fleet { depots, devices }
    } else {
        Fleet::new(depots, devices)
    }
}

/// A second connection to the cache for parallel reads.
fn open_reader(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening a reader on {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA cache_size = -65536; PRAGMA mmap_size = 1073741824;")?;
    Ok(conn)
}

/// The device rows with `lo <= dev <= hi` in `dev` order.
fn load_devices(conn: &Connection, lo: i64, hi: i64) -> Result<Vec<Device>> {
    let capacity: i64 = conn.query_row(
        "SELECT count(*) FROM devices WHERE dev BETWEEN ?1 AND ?2",
        [lo, hi],
        |r| r.get(0),
    )?;
    let mut devices: Vec<Device> = Vec::with_capacity(capacity.max(0) as usize);
    let mut stmt = conn.prepare(
        "SELECT dev, id, model, hw_rev, active_slot, region, depot, lat, lon,
                connectivity, metered, battery_pct, power, free_storage_bytes,
                customer_tier, device_class, redundancy, last_seen,
                failed_update_attempts, tags, components
         FROM devices WHERE dev BETWEEN ?1 AND ?2 ORDER BY dev",
    )?;
    let mut rows = stmt.query([lo, hi])?;
    // Devices share their component maps: each distinct column text is parsed once.
    let mut parsed: HashMap<String, SmallMap<Version>> = HashMap::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(1)?;
        let mut device = device_from_row(r, id).context("reading a device from the cache")?;
        let text = r
            .get_ref(20)?
            .as_str()
            .with_context(|| format!("column components of device {}", device.id))?;
        device.components = if let Some(map) = parsed.get(text) {
            map.clone()
        } else {
            let map = parse_components(text)
                .with_context(|| format!("components of device {} in the cache", device.id))?;
            parsed.insert(text.to_owned(), map.clone());
            map
        };
        devices.push(device);
    }
    Ok(devices)
}

/// A JSON object of strings, as the pairs it holds (without building a serde `BTreeMap`,
/// which would allocate a tree node per device on the cold load).
fn parse_object(text: &str) -> Result<Vec<(String, String)>> {
    struct Pairs(Vec<(String, String)>);
    impl<'de> serde::Deserialize<'de> for Pairs {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Pairs;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object of strings")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Pairs, A::Error> {
                    let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2));
                    while let Some(pair) = map.next_entry::<String, String>()? {
                        pairs.push(pair);
                    }
                    Ok(Pairs(pairs))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    if text == "{}" {
        return Ok(Vec::new());
    }
    let Pairs(pairs) = serde_json::from_str(text)?;
    Ok(pairs)
}

/// Parses a tags column straight into a `SmallMap`.
fn parse_tags(text: &str) -> Result<SmallMap<Sym>> {
    Ok(parse_object(text)?
        .into_iter()
        .map(|(k, v)| (k, Sym::from(v)))
        .collect())
}

/// Parses a components column (`{"firmware": "2.4.1", ...}`) into a `SmallMap`, naming the
/// component whose version does not parse.
fn parse_components(text: &str) -> Result<SmallMap<Version>> {
    parse_object(text)?
        .into_iter()
        .map(|(name, version)| {
            let parsed = version
                .parse::<Version>()
                .with_context(|| format!("version {version:?} of component {name}"))?;
            Ok((name, parsed))
        })
        .collect()
}

/// A component map as its column holds it: a JSON object of version strings.
fn components_json(components: &SmallMap<Version>) -> Result<String> {
    serde_json::to_string(components).context("encoding components")
}

/// Whether the devices table has the `components` column (schema v14 on). Only the schema
/// tests write to a cache held at an older version: there, components are rows of their own.
fn has_components_column(tx: &Connection) -> bool {
    tx.prepare_cached("SELECT components FROM devices LIMIT 0")
        .is_ok()
}

/// For a cache before schema v14: `d`'s components as rows of `components` (after clearing
/// the device's old rows when `replace`).
fn write_component_rows(tx: &Connection, dev: i64, d: &Device, replace: bool) -> Result<()> {
    if replace {
        tx.prepare_cached("DELETE FROM components WHERE dev = ?1")?
            .execute([dev])?;
    }
    let mut insert =
        tx.prepare_cached("INSERT INTO components(dev, name, version) VALUES (?1, ?2, ?3)")?;
    for (name, version) in d.components.iter() {
        insert
            .execute(params![dev, name.as_str(), version.to_string()])
            .with_context(|| format!("writing component {name} of device {}", d.id))?;
    }
    Ok(())
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
    let tags =
        parse_tags(tags_json).with_context(|| format!("tags of device {id} in the cache"))?;
    Ok(Device {
        model: (text(2, "model")?).into(),
        hw_rev: (text(3, "hw_rev")?).into(),
        components: SmallMap::new(),
        active_slot: enum_col!(4, "active_slot"),
        region: (text(5, "region")?).into(),
        depot: (text(6, "depot")?).into(),
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
    // A cache held at a version before zones (only the schema tests open one) has no column
    // for them: its depots are written as that version knew them.
    if tx
        .prepare_cached("SELECT time_zone FROM depots LIMIT 0")
        .is_err()
    {
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
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO depots(id, name, region, lat, lon, utc_offset_minutes, time_zone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, region = excluded.region,
             lat = excluded.lat, lon = excluded.lon,
             utc_offset_minutes = excluded.utc_offset_minutes, time_zone = excluded.time_zone",
    )?;
    for d in depots {
        stmt.execute(params![
            d.id,
            d.name,
            d.region,
            d.position.lat,
            d.position.lon,
            d.utc_offset_minutes,
            d.time_zone
        ])
        .with_context(|| format!("writing depot {}", d.id))?;
    }
    Ok(())
}

/// Inserts or updates `devices` by id.
pub(crate) fn upsert_devices(tx: &Transaction<'_>, devices: &[Device]) -> Result<UpsertCounts> {
    let column = has_components_column(tx);
    // The components column only from schema v14 (`write_component_rows` before it).
    let (col, param, set) = if column {
        (", components", ", ?20", ", components = ?20")
    } else {
        ("", "", "")
    };
    let mut find = tx.prepare_cached("SELECT dev FROM devices WHERE id = ?1")?;
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO devices(id, model, hw_rev, active_slot, region, depot, lat, lon,
             connectivity, metered, battery_pct, power, free_storage_bytes, customer_tier,
             device_class, redundancy, last_seen, failed_update_attempts, tags{col})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19{param})"
    ))?;
    let mut update = tx.prepare_cached(&format!(
        "UPDATE devices SET model = ?2, hw_rev = ?3, active_slot = ?4, region = ?5,
             depot = ?6, lat = ?7, lon = ?8, connectivity = ?9, metered = ?10,
             battery_pct = ?11, power = ?12, free_storage_bytes = ?13, customer_tier = ?14,
             device_class = ?15, redundancy = ?16, last_seen = ?17,
             failed_update_attempts = ?18, tags = ?19{set}
         WHERE dev = ?21 AND id = ?1"
    ))?;
    let mut counts = UpsertCounts::default();
    // Into an empty cache (the first import) every device is new: skip one index search per
    // device. A repeated id then fails on the unique index instead of updating.
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM devices)", [], |r| {
        r.get(0)
    })?;
    for d in devices {
        let tags = serde_json::to_string(&d.tags).context("encoding tags")?;
        let components = components_json(&d.components)?;
        let free = to_i64(d.free_storage_bytes, "free_storage_bytes")?;
        let existing: Option<i64> = if empty {
            None
        } else {
            let mut rows = find.query([&d.id])?;
            rows.next()?.map(|r| r.get(0)).transpose()?
        };
        let stmt = if existing.is_some() {
            &mut update
        } else {
            &mut insert
        };
        stmt.raw_bind_parameter(1, d.id.as_str())?;
        stmt.raw_bind_parameter(2, d.model.as_str())?;
        stmt.raw_bind_parameter(3, d.hw_rev.as_str())?;
        stmt.raw_bind_parameter(4, d.active_slot.as_str())?;
        stmt.raw_bind_parameter(5, d.region.as_str())?;
        stmt.raw_bind_parameter(6, d.depot.as_str())?;
        stmt.raw_bind_parameter(7, d.position.lat)?;
        stmt.raw_bind_parameter(8, d.position.lon)?;
        stmt.raw_bind_parameter(9, d.connectivity.as_str())?;
        stmt.raw_bind_parameter(10, d.metered)?;
        stmt.raw_bind_parameter(11, d.battery_pct)?;
        stmt.raw_bind_parameter(12, d.power.as_str())?;
        stmt.raw_bind_parameter(13, free)?;
        stmt.raw_bind_parameter(14, d.customer_tier.as_str())?;
        stmt.raw_bind_parameter(15, d.device_class.as_str())?;
        stmt.raw_bind_parameter(16, d.redundancy.as_str())?;
        stmt.raw_bind_parameter(17, d.last_seen.secs())?;
        stmt.raw_bind_parameter(18, d.failed_update_attempts)?;
        stmt.raw_bind_parameter(19, tags.as_str())?;
        if column {
            stmt.raw_bind_parameter(20, components.as_str())?;
        }
        let dev = if let Some(dev) = existing {
            update.raw_bind_parameter(21, dev)?;
            update
                .raw_execute()
                .with_context(|| format!("updating device {}", d.id))?;
            counts.updated += 1;
            dev
        } else {
            insert
                .raw_execute()
                .with_context(|| format!("inserting device {}", d.id))?;
            counts.inserted += 1;
            tx.last_insert_rowid()
        };
        if !column {
            write_component_rows(tx, dev, d, existing.is_some())?;
        }
    }
    Ok(counts)
}

/// An import into a cache without devices, holding its write transaction: see
/// [`Store::begin_new_fleet`].
pub struct NewFleetWriter<'s> {
    tx: Transaction<'s>,
    suspended: Option<snapshot::SuspendedTriggers>,
    rows: NewRows,
    has_snapshot: bool,
}

impl NewFleetWriter<'_> {
    /// Inserts `devices`, which must follow the devices written before in strictly
    /// increasing id order (an error otherwise: nothing is committed then).
    pub fn write(&mut self, devices: &[Device]) -> Result<()> {
        self.rows.insert(&self.tx, devices)
    }

    /// Writes `depots` and `audit`, then the fleet snapshot and the fleet summary's counts from
    /// `devices`, which must be exactly the devices written, in order; commits.
    pub fn finish(
        self,
        depots: &[Depot],
        devices: &[Device],
        audit: Option<&AuditEntry>,
    ) -> Result<ImportOutcome> {
        let Self {
            tx,
            suspended,
            rows,
            has_snapshot,
        } = self;
        anyhow::ensure!(
            rows.written == devices.len(),
            "{} devices written but {} named at the end of the import",
            rows.written,
            devices.len()
        );
        upsert_depots(&tx, depots)?;
        if let Some(entry) = audit {
            append_in(&tx, entry)?;
        }
        if let Some(suspended) = suspended {
            snapshot::restore_triggers(&tx, suspended)?;
        }
        // Every write to devices is done: the snapshot is armed after them. Its parts are
        // encoded on another thread while the summary's counts are written on this one.
        std::thread::scope(|scope| -> Result<()> {
            let parts = has_snapshot
                .then(|| {
                    std::thread::Builder::new()
                        .name("encode-snapshot".to_owned())
                        .spawn_scoped(scope, || snapshot::encode(devices))
                })
                .transpose()
                .context("starting the snapshot encoder")?;
            let counts = if super::summary::kept(&tx)? {
                super::summary::rebuild_from_devices(&tx, devices)
            } else {
                Ok(())
            };
            let parts = parts
                .map(|encoder| {
                    encoder
                        .join()
                        .map_err(|_| anyhow::anyhow!("the snapshot encoder panicked"))?
                })
                .transpose()?;
            counts?;
            if let Some(parts) = parts {
                snapshot::store_parts_in(&tx, &parts)?;
            }
            Ok(())
        })?;
        tx.commit().context("committing the import")?;
        Ok(ImportOutcome {
            counts: UpsertCounts {
                inserted: devices.len(),
                updated: 0,
            },
            whole_fleet: true,
        })
    }
}

/// The bulk insert of new devices: keys 1, 2, ... past the largest key in use, in id order;
/// multi-row inserts, without the search for an existing id that [`upsert_devices`] does per
/// device; tags and components encoded once per shared map (the importer shares equal maps
/// between devices). Ids must increase strictly across every call: a repeated or earlier id
/// is an error (and the caller's transaction rolls back).
struct NewRows {
    /// How many devices were written.
    written: usize,
    next: i64,
    /// The id of the last device written: ids must increase strictly.
    last_id: Option<String>,
    /// Whether the devices table has the components column (schema v14 on).
    column: bool,
    tags_text: HashMap<usize, String>,
    components_text: HashMap<usize, String>,
    /// The statement text for a full chunk, built once (formatting its 672 parameters for
    /// each chunk took a tenth of a million-device import).
    full_sql: String,
}

impl NewRows {
    fn new(tx: &Transaction<'_>) -> Result<Self> {
        let next: i64 = tx.query_row("SELECT coalesce(max(dev), 0) + 1 FROM devices", [], |r| {
            r.get(0)
        })?;
        let mut rows = Self {
            written: 0,
            next,
            last_id: None,
            column: has_components_column(tx),
            tags_text: HashMap::new(),
            components_text: HashMap::new(),
            full_sql: String::new(),
        };
        rows.full_sql = rows.sql(DEVICE_ROWS_PER_INSERT);
        Ok(rows)
    }

    fn columns(&self) -> usize {
        if self.column { 21 } else { 20 }
    }

    fn sql(&self, rows: usize) -> String {
        use std::fmt::Write as _;
        let columns = self.columns();
        let mut sql = String::from(
            "INSERT INTO devices(dev, id, model, hw_rev, active_slot, region, depot, lat, lon,
                 connectivity, metered, battery_pct, power, free_storage_bytes, customer_tier,
                 device_class, redundancy, last_seen, failed_update_attempts, tags",
        );
        sql.push_str(if self.column {
            ", components) VALUES "
        } else {
            ") VALUES "
        });
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..columns {
                let _ = write!(
                    sql,
                    "{}?{}",
                    if col == 0 { "" } else { ", " },
                    row * columns + col + 1
                );
            }
            sql.push(')');
        }
        sql
    }

    fn insert(&mut self, tx: &Transaction<'_>, devices: &[Device]) -> Result<()> {
        let mut previous = self.last_id.as_deref();
        for d in devices {
            if let Some(previous) = previous
                && previous >= d.id.as_str()
            {
                bail!(
                    "device {} follows device {previous}: a new fleet is written in strictly \
                     increasing id order",
                    d.id
                );
            }
            previous = Some(d.id.as_str());
        }
        let columns = self.columns();
        let mut full = tx.prepare_cached(&self.full_sql)?;
        let mut partial;
        for chunk in devices.chunks(DEVICE_ROWS_PER_INSERT) {
            for d in chunk {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    self.tags_text.entry(d.tags.addr())
                {
                    e.insert(serde_json::to_string(&d.tags).context("encoding tags")?);
                }
                if let std::collections::hash_map::Entry::Vacant(e) =
                    self.components_text.entry(d.components.addr())
                {
                    e.insert(components_json(&d.components)?);
                }
            }
            let first = self.next;
            let stmt = if chunk.len() == DEVICE_ROWS_PER_INSERT {
                &mut full
            } else {
                partial = tx.prepare_cached(&self.sql(chunk.len()))?;
                &mut partial
            };
            for (row, d) in chunk.iter().enumerate() {
                let p = row * columns;
                let dev = first + row as i64;
                let free = to_i64(d.free_storage_bytes, "free_storage_bytes")
                    .with_context(|| format!("device {}", d.id))?;
                let tags = self
                    .tags_text
                    .get(&d.tags.addr())
                    .context("tags were not encoded")?;
                stmt.raw_bind_parameter(p + 1, dev)?;
                stmt.raw_bind_parameter(p + 2, d.id.as_str())?;
                stmt.raw_bind_parameter(p + 3, d.model.as_str())?;
                stmt.raw_bind_parameter(p + 4, d.hw_rev.as_str())?;
                stmt.raw_bind_parameter(p + 5, d.active_slot.as_str())?;
                stmt.raw_bind_parameter(p + 6, d.region.as_str())?;
                stmt.raw_bind_parameter(p + 7, d.depot.as_str())?;
                stmt.raw_bind_parameter(p + 8, d.position.lat)?;
                stmt.raw_bind_parameter(p + 9, d.position.lon)?;
                stmt.raw_bind_parameter(p + 10, d.connectivity.as_str())?;
                stmt.raw_bind_parameter(p + 11, d.metered)?;
                stmt.raw_bind_parameter(p + 12, d.battery_pct)?;
                stmt.raw_bind_parameter(p + 13, d.power.as_str())?;
                stmt.raw_bind_parameter(p + 14, free)?;
                stmt.raw_bind_parameter(p + 15, d.customer_tier.as_str())?;
                stmt.raw_bind_parameter(p + 16, d.device_class.as_str())?;
                stmt.raw_bind_parameter(p + 17, d.redundancy.as_str())?;
                stmt.raw_bind_parameter(p + 18, d.last_seen.secs())?;
                stmt.raw_bind_parameter(p + 19, d.failed_update_attempts)?;
                stmt.raw_bind_parameter(p + 20, tags.as_str())?;
                if self.column {
                    let components = self
                        .components_text
                        .get(&d.components.addr())
                        .context("components were not encoded")?;
                    stmt.raw_bind_parameter(p + 21, components.as_str())?;
                }
            }
            stmt.raw_execute().with_context(|| {
                format!(
                    "inserting devices {} to {}",
                    chunk[0].id,
                    chunk[chunk.len() - 1].id
                )
            })?;
            if !self.column {
                for (row, d) in chunk.iter().enumerate() {
                    write_component_rows(tx, first + row as i64, d, false)?;
                }
            }
            self.written += chunk.len();
            self.next = first + chunk.len() as i64;
        }
        if let Some(last) = devices.last() {
            self.last_id = Some(last.id.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod import_tests {
    //! `Store::import_fleet`: the bulk path into a cache without devices (with the snapshot
    //! and the summary's counts written from memory) and the upsert path into one with
    //! devices, both atomic.

    use super::super::events::NewDeviceEvent;
    use super::super::query::{fleet_summary, fleet_summary_by_scans};
    use super::super::{schema, summary};
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};

    const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

    fn fleet(devices: usize, seed: u64) -> Fleet {
        generate(&SynthOptions {
            devices,
            seed,
            now: NOW,
        })
    }

    fn audit() -> AuditEntry {
        AuditEntry {
            time: NOW,
            actor: "test".to_owned(),
            action: "fleet.import".to_owned(),
            payload: serde_json::json!({}),
        }
    }

    /// Triggers the bulk path suspends (snapshot staleness, kept counts) and the counts'
    /// own: all must be back after any import, failed or not.
    fn trigger_names(store: &Store) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .expect("prepare");
        let rows = stmt.query_map([], |r| r.get(0)).expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("triggers")
    }

    /// Everything a reader can see of the fleet: the row load, the snapshot's parts (part,
    /// generation, body), its state (generation, armed) and the kept counts (when valid).
    type State = (
        Fleet,
        Vec<(i64, i64, Vec<u8>)>,
        Option<(i64, bool)>,
        Option<summary::FacetCounts>,
    );

    fn state(store: &Store) -> State {
        let fleet = store.load_fleet_sequentially().expect("rows");
        let mut stmt = store
            .conn
            .prepare("SELECT part, generation, body FROM fleet_snapshot ORDER BY part")
            .expect("prepare");
        let parts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("parts")
            .collect::<rusqlite::Result<_>>()
            .expect("parts");
        let fleet_state = store
            .conn
            .query_row("SELECT generation, armed FROM fleet_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok();
        let counts = summary::read(&store.conn).expect("counts");
        (fleet, parts, fleet_state, counts)
    }

    #[test]
    fn an_import_into_a_new_cache_writes_the_snapshot_and_counts_a_rebuild_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.db");
        let mut store = Store::open(&path).expect("open");
        let expected = fleet(3_001, 31);
        // A device with a rollout history before it is in the cache, and a file in another
        // order than by id.
        let mut events = Vec::new();
        for (i, kind) in [(7, "confirmed"), (7, "status.changed"), (11, "failed")] {
            events.push(NewDeviceEvent {
                device_id: expected.devices[i].id.clone(),
                rollout_id: Some("r1".into()),
                time: NOW,
                kind: kind.to_owned(),
                payload: serde_json::json!({}),
            });
        }
        store.append_device_events(&events).expect("events");
        let mut devices = expected.devices.clone();
        devices.reverse();
        let outcome = store
            .import_fleet(&expected.depots, &mut devices, Some(&audit()))
            .expect("import");
        assert_eq!(
            outcome,
            ImportOutcome {
                counts: UpsertCounts {
                    inserted: 3_001,
                    updated: 0
                },
                whole_fleet: true
            }
        );
        // The first load of a fresh process uses the snapshot and gives the rows' fleet.
        let fresh = Store::open(&path).expect("reopen");
        let (loaded, source) = fresh.load_fleet_traced().expect("load");
        assert_eq!(source, FleetSource::Snapshot);
        assert_eq!(loaded, expected);
        assert_eq!(fresh.load_fleet_sequentially().expect("rows"), expected);
        // The counts are valid without a rebuild, equal a recount, and equal a rebuild.
        let kept = summary::read(&fresh.conn)
            .expect("read")
            .expect("valid counts");
        assert_eq!(kept.devices(), 3_001);
        assert_eq!(kept.by_state.get("confirmed"), Some(&1), "{kept:?}");
        assert_eq!(kept.by_state.get("failed"), Some(&1), "{kept:?}");
        assert_eq!(
            fleet_summary(&fresh).expect("summary"),
            fleet_summary_by_scans(&fresh).expect("scans")
        );
        let tx = super::super::write_tx(&fresh.conn).expect("tx");
        summary::rebuild(&tx).expect("rebuild");
        tx.commit().expect("commit");
        assert_eq!(summary::read(&fresh.conn).expect("read"), Some(kept));
        // Later writes keep the counts and stale the snapshot as before.
        assert_eq!(trigger_names(&fresh), trigger_names(&store));
        let mut changed = expected.devices[5].clone();
        changed.model = "RENAMED".into();
        store
            .upsert_fleet(&[], &[changed], None)
            .expect("small write");
        assert!(summary::read(&store.conn).expect("read").is_some());
        assert_eq!(
            fleet_summary(&store).expect("summary"),
            fleet_summary_by_scans(&store).expect("scans")
        );
        let (_, source) = Store::open(&path)
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        assert_eq!(
            source,
            FleetSource::Rows {
                unusable: Unusable::Stale,
                snapshot_written: true
            }
        );
    }

    #[test]
    fn an_import_into_a_cache_with_devices_updates_them_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.db");
        let mut store = Store::open(&path).expect("open");
        let base = fleet(1_500, 32);
        store.replace_fleet(&base, None).expect("save");
        let (_, source) = store
            .load_fleet_traced()
            .expect("replace_fleet stored a snapshot");
        assert_eq!(source, FleetSource::Snapshot);
        // 1,200 known devices changed and 300 new ones: a bulk write.
        let mut expected = base.clone();
        for d in &mut expected.devices[..1_200] {
            d.failed_update_attempts += 2;
            d.hw_rev = "Z".into();
        }
        let extra = fleet(300, 33);
        let mut import: Vec<Device> = expected.devices[..1_200].to_vec();
        for d in &extra.devices {
            let mut d = d.clone();
            d.id = format!("NEW-{}", d.id);
            import.push(d.clone());
            expected.devices.push(d);
        }
        let expected = Fleet::new(expected.depots, expected.devices);
        let outcome = store
            .import_fleet(&base.depots, &mut import, None)
            .expect("import");
        assert_eq!(
            outcome,
            ImportOutcome {
                counts: UpsertCounts {
                    inserted: 300,
                    updated: 1_200
                },
                whole_fleet: false
            }
        );
        let (loaded, source) = Store::open(&path)
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        assert_eq!(
            source,
            FleetSource::Rows {
                unusable: Unusable::Stale,
                snapshot_written: true
            }
        );
        assert_eq!(loaded, expected);
        assert_eq!(
            fleet_summary(&store).expect("summary"),
            fleet_summary_by_scans(&store).expect("scans")
        );
        // Importing the same again updates everything and adds nothing.
        let outcome = store
            .import_fleet(&base.depots, &mut import, None)
            .expect("again");
        assert_eq!(
            outcome.counts,
            UpsertCounts {
                inserted: 0,
                updated: 1_500
            }
        );
        assert_eq!(store.load_fleet().expect("load"), expected);
    }

    #[test]
    fn an_import_that_fails_midway_leaves_the_cache_as_it_was() {
        // A device whose free storage does not fit the cache's integer, in the middle: the
        // rows before it are written, then the import fails and all of it rolls back.
        let mut bad = fleet(2_500, 34).devices;
        bad[1_700].free_storage_bytes = u64::MAX;
        let mut twice = fleet(1_200, 35).devices;
        twice.push(twice[600].clone());

        // Into a new cache (the bulk path), and into a new cache below the bulk size.
        for devices in [&bad, &twice, &bad[1_650..1_750].to_vec()] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut store = Store::open(&dir.path().join("new.db")).expect("open");
            let triggers = trigger_names(&store);
            let before = state(&store);
            let counts_before = summary::read(&store.conn).expect("read");
            let mut devices = devices.clone();
            let err = store
                .import_fleet(&[], &mut devices, Some(&audit()))
                .expect_err("a bad device fails the import");
            assert!(
                format!("{err:#}").contains("free_storage_bytes")
                    || format!("{err:#}").contains("strictly increasing id order"),
                "{err:#}"
            );
            assert_eq!(trigger_names(&store), triggers);
            assert_eq!(state(&store), before);
            assert_eq!(summary::read(&store.conn).expect("read"), counts_before);
            assert_eq!(store.device_count().expect("count"), 0);
            assert_eq!(store.audit_entries(None).expect("audit").len(), 0);
        }

        // Into a cache with devices and a current snapshot (the upsert path).
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full.db");
        let mut store = Store::open(&path).expect("open");
        let original = fleet(1_500, 36);
        store.replace_fleet(&original, None).expect("save");
        store.load_fleet().expect("stores the snapshot");
        store.fleet_counts().expect("rebuilds the counts");
        let triggers = trigger_names(&store);
        let before = state(&store);
        let counts_before = summary::read(&store.conn).expect("read");
        assert!(counts_before.is_some());
        let mut devices = original.devices.clone();
        devices[1_100].free_storage_bytes = u64::MAX;
        store
            .import_fleet(&original.depots, &mut devices, None)
            .expect_err("fails");
        assert_eq!(trigger_names(&store), triggers);
        assert_eq!(state(&store), before);
        assert_eq!(summary::read(&store.conn).expect("read"), counts_before);
        let (loaded, source) = Store::open(&path)
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        assert_eq!(
            source,
            FleetSource::Snapshot,
            "the snapshot is still current"
        );
        assert_eq!(loaded, original);
    }

    #[test]
    fn an_import_into_a_cache_from_every_earlier_version_then_upgraded() {
        let expected = fleet(1_100, 37);
        for version in 1..=schema::LATEST_VERSION {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("old.db");
            let mut original = expected.clone();
            if version < schema::DEPOT_ZONES_VERSION {
                for d in &mut original.depots {
                    d.time_zone = None;
                }
            }
            {
                let mut old = Store::open_at_version(&path, version).expect("old schema");
                let mut devices = original.devices.clone();
                let outcome = old
                    .import_fleet(&original.depots, &mut devices, Some(&audit()))
                    .unwrap_or_else(|e| panic!("import at version {version}: {e:#}"));
                assert!(outcome.whole_fleet);
                // (Loads read every column of the latest version: they come after the upgrade.)
                assert_eq!(
                    old.device_count().expect("count"),
                    1_100,
                    "version {version}"
                );
            }
            // Opening it now upgrades it; the fleet (from the rows and as loaded) and the
            // summary are right.
            let store = Store::open(&path).expect("upgrade");
            assert_eq!(
                store.load_fleet_sequentially().expect("rows"),
                original,
                "version {version}: the rows after the upgrade"
            );
            let (loaded, source) = store.load_fleet_traced().expect("load");
            assert_eq!(loaded, original, "version {version}");
            if version + 1 == schema::COMPONENTS_COLUMN_VERSION {
                // Folding the component rows into their column leaves the fleet as it was:
                // the snapshot the import wrote is still current.
                assert_eq!(source, FleetSource::Snapshot, "version {version}");
            }
            assert_eq!(
                fleet_summary(&store).expect("summary"),
                fleet_summary_by_scans(&store).expect("scans"),
                "version {version}"
            );
        }
        // And a cache upgraded first, then imported into, takes the bulk path in full.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upgraded.db");
        drop(Store::open_at_version(&path, schema::LATEST_VERSION - 1).expect("old"));
        let mut store = Store::open(&path).expect("upgrade");
        let mut devices = expected.devices.clone();
        store
            .import_fleet(&expected.depots, &mut devices, None)
            .expect("import");
        assert!(summary::read(&store.conn).expect("read").is_some());
        let (loaded, source) = Store::open(&path)
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        assert_eq!(source, FleetSource::Snapshot);
        assert_eq!(loaded, expected);
    }
}
