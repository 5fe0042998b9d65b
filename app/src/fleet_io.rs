//! Reading and writing whole fleets as files. The format follows the file's extension:
//! `.db` / `.sqlite` is the SQLite cache ([`crate::store`]), `.csv` and `.json` are
//! inventories.
//!
//! CSV inventories have a header; the columns Convoy understands are [`CSV_COLUMNS`] (of which
//! [`CSV_REQUIRED`] must be present), `component:NAME` columns carry further components, and
//! every other column becomes a tag (`tag:KEY` names a tag explicitly, for keys that collide
//! with a known column). JSON inventories are either a fleet object (`{"depots": [...],
//! "devices": [...]}`, what `fleet generate` and `fleet export --format json` write) or a bare
//! array; each device is either the fleet model's nested shape or a flat object with the CSV
//! columns. Bad rows are reported with their line and reason and do not stop good rows.
//!
//! An inventory is untrusted input. A device id must be one MQTT topic level as the protocol
//! defines it ([`convoy_core::release::is_valid_id`]); no field may hold a control character
//! (a newline or NUL would break every line-based tool downstream); and a file is bounded:
//! at most [`MAX_COLUMNS`] columns, [`MAX_FIELD_BYTES`] bytes a field, [`MAX_TAGS`] tags and
//! [`MAX_COMPONENTS`] components a device, [`MAX_LINE_BYTES`] a physical line. A row past a
//! per-row limit is rejected with its line and reason; a header or line past a file limit
//! refuses the whole file. CSV written here is safe to open in a spreadsheet
//! ([`crate::csv_safe`]), and reading undoes that marking, so export then import is the
//! identity.
//!
//! This module does not merge or deduplicate against a cache: the store upserts by id.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::{
    Connectivity, CustomerTier, Depot, Device, DeviceClass, Fleet, GeoPoint, Interner, PowerState,
    Redundancy, Slot, SmallMap, Sym, component,
};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::csv_safe;
use crate::store::Store;

/// The CSV columns Convoy reads and writes, in the order `fleet export` writes them.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "model",
    "hw_rev",
    "firmware",
    "bootloader",
    "modem",
    "region",
    "depot",
    "lat",
    "lon",
    "connectivity",
    "metered",
    "battery_pct",
    "power_state",
    "free_storage_bytes",
    "customer_tier",
    "device_class",
    "redundancy",
    "active_slot",
    "last_seen",
    "failed_update_attempts",
];

/// Position of `name` in [`CSV_COLUMNS`], at compile time (a typo fails the build).
const fn column_index(name: &str) -> usize {
    let mut i = 0;
    while i < CSV_COLUMNS.len() {
        let (a, b) = (CSV_COLUMNS[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a CSV column");
}

/// The index of a known column, computed at compile time.
macro_rules! col {
    ($name:literal) => {
        const { column_index($name) }
    };
}

/// Columns an inventory must have; the others take documented defaults when absent.
pub const CSV_REQUIRED: &[&str] = &[
    "id",
    "model",
    "hw_rev",
    "firmware",
    "region",
    "depot",
    "lat",
    "lon",
    "connectivity",
    "customer_tier",
    "device_class",
    "last_seen",
];

/// The most columns a CSV inventory may have: the known columns, `component:` and tag
/// columns together.
pub const MAX_COLUMNS: usize = 256;
/// The most bytes one field (a cell, a header, a tag key or value) may hold.
pub const MAX_FIELD_BYTES: usize = 1024;
/// The most tags one device may carry.
pub const MAX_TAGS: usize = 64;
/// The most components one device may carry (firmware, bootloader and modem included).
pub const MAX_COMPONENTS: usize = 64;
/// The longest physical line a CSV inventory may have; past it the file is refused whole
/// rather than read into memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A row that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// 1-based line in the file where the row starts.
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// An inventory as read from a file: the good devices (in file order), depots if the file
/// has them, and the rows that were rejected.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub depots: Vec<Depot>,
    pub devices: Vec<Device>,
    pub rejected: Vec<RejectedRow>,
}

/// What kind of fleet file a path is, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetFormat {
    Cache,
    Csv,
    Json,
}

impl FleetFormat {
    pub fn of(path: &Path) -> Result<Self> {
        Ok(match extension(path).as_str() {
            "db" | "sqlite" | "sqlite3" => Self::Cache,
            "csv" => Self::Csv,
            "json" => Self::Json,
            other => bail!(
                "unsupported fleet file extension {other:?} for {}: use .db (the cache), .csv or .json",
                path.display()
            ),
        })
    }
}

/// Loads a fleet from a cache file or an inventory. An inventory with bad rows is an error
/// here (naming the first few); `convoy fleet import` imports the good rows instead.
pub fn load_fleet(path: &Path) -> Result<Fleet> {
    if FleetFormat::of(path)? == FleetFormat::Cache {
        let store = Store::open_existing(path)?;
        return store
            .load_fleet()
            .with_context(|| format!("loading the fleet from {}", path.display()));
    }
    let inv = read_inventory(path)?;
    if !inv.rejected.is_empty() {
        let first: Vec<String> = inv
            .rejected
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        bail!(
            "{} bad rows in {}: {}{}",
            inv.rejected.len(),
            path.display(),
            first.join("; "),
            if inv.rejected.len() > 5 { "; ..." } else { "" }
        );
    }
    // Duplicate ids are among the rejected rows, so the devices here are unique.
    Ok(Fleet::new(inv.depots, inv.devices))
}

/// Writes a fleet. Inventories are written atomically: to a temporary file beside `path`, then
/// renamed over it, so a crash never leaves a half-written fleet behind. A cache is updated in
/// one transaction to hold exactly this fleet (its audit log, outbox and timelines are kept).
pub fn save_fleet(path: &Path, fleet: &Fleet) -> Result<()> {
    match FleetFormat::of(path)? {
        FleetFormat::Cache => {
            let mut store = Store::open(path)?;
            store.replace_fleet(fleet, None)?;
            Ok(())
        }
        FleetFormat::Json => write_atomically(path, |w| write_json(w, fleet)),
        FleetFormat::Csv => write_atomically(path, |w| write_csv(w, &fleet.devices)),
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Writes through `write` into `path` atomically ([`crate::files`]).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    crate::files::write_with(path, crate::files::FileMode::Public, write)
}

/// Reads a CSV or JSON inventory, keeping good rows and reporting bad ones.
pub fn read_inventory(path: &Path) -> Result<Inventory> {
    let format = FleetFormat::of(path)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = BufReader::new(file);
    match format {
        FleetFormat::Csv => {
            read_csv(reader).with_context(|| format!("reading CSV inventory {}", path.display()))
        }
        FleetFormat::Json => {
            let mut text = String::new();
            { reader }
                .read_to_string(&mut text)
                .with_context(|| format!("reading {}", path.display()))?;
            read_json(&text).with_context(|| format!("reading JSON inventory {}", path.display()))
        }
        FleetFormat::Cache => bail!(
            "{} is a cache, not an inventory: use it with --db or --fleet",
            path.display()
        ),
    }
}

/// Where a CSV column goes.
#[derive(Clone, Debug)]
enum Column {
    /// Index into [`CSV_COLUMNS`].
    Known(usize),
    Component(Sym),
    Tag(Sym),
}

fn classify(header: &str) -> Column {
    let h = header.trim();
    if let Some(known) = CSV_COLUMNS.iter().position(|c| *c == h) {
        Column::Known(known)
    } else if let Some(name) = h.strip_prefix("component:") {
        Column::Component(Sym::new(name))
    } else if let Some(key) = h.strip_prefix("tag:") {
        Column::Tag(Sym::new(key))
    } else {
        Column::Tag(Sym::new(h))
    }
}

/// Reads a CSV inventory.
pub fn read_csv(reader: impl Read) -> Result<Inventory> {
    let mut devices = Vec::new();
    let mut lines: Vec<u64> = Vec::new();
    let mut inv = read_csv_batches(reader, |batch| {
        devices.extend(batch.devices);
        lines.extend(batch.lines);
        Ok(())
    })?;
    inv.devices = devices;
    reject_duplicates(&mut inv, &lines);
    Ok(inv)
}

/// Good devices of a CSV inventory in file order, each with the line its row starts on.
#[derive(Default)]
pub struct Batch {
    pub devices: Vec<Device>,
    pub lines: Vec<u64>,
}

/// Devices per [`Batch`] of [`read_csv_batches`].
const BATCH_DEVICES: usize = 8_192;

/// Reads a CSV inventory, handing its good devices to `sink` batch by batch as they are read
/// (duplicate ids included: the caller rejects them, see [`reject_duplicates`]). Returns the
/// inventory's rejected rows (and no devices). An error from `sink` stops the read.
fn read_csv_batches(
    reader: impl Read,
    mut sink: impl FnMut(Batch) -> Result<()>,
) -> Result<Inventory> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(LineGuard::new(reader));
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(csv_error(e)).context("reading the header line"),
    };
    if headers.len() > MAX_COLUMNS {
        bail!(
            "the header has {} columns; an inventory may have at most {MAX_COLUMNS} (known, \
             component: and tag columns together)",
            headers.len()
        );
    }
    let mut names = Vec::with_capacity(headers.len());
    for (i, raw) in headers.iter().enumerate() {
        let name = csv_safe::restore(raw.trim());
        check_text(name).map_err(|why| anyhow::anyhow!("header column {}: {why}", i + 1))?;
        names.push(name);
    }
    let columns: Vec<Column> = names.iter().map(|h| classify(h)).collect();
    let missing: Vec<&str> = CSV_REQUIRED
        .iter()
        .filter(|r| !names.iter().any(|h| h == *r))
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!("the header lacks required columns: {}", missing.join(", "));
    }
    let mut inv = Inventory::default();
    let mut batch = Batch::default();
    let mut parts = Parts::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(csv_error(e)).with_context(|| format!("reading line {line}"));
            }
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                inv.rejected.push(RejectedRow {
                    line,
                    reason: format!("unreadable CSV row: {e}"),
                });
                continue;
            }
        }
        let line = record.position().map_or(line, csv::Position::line);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != columns.len() {
            inv.rejected.push(RejectedRow {
                line,
                reason: format!(
                    "{} fields, but the header has {} columns",
                    record.len(),
                    columns.len()
                ),
            });
            continue;
        }
        if let Some(reason) = names.iter().zip(record.iter()).find_map(|(name, raw)| {
            // Surrounding whitespace (a quoted trailing newline included) is trimmed
            // as it always was; what is left must be clean.
            check_text(raw.trim())
                .err()
                .map(|why| format!("{name}: {why}"))
        }) {
            inv.rejected.push(RejectedRow { line, reason });
            continue;
        }
        let fields = columns
            .iter()
            .zip(record.iter().map(|raw| csv_safe::restore(raw.trim())));
        match device_from_fields(fields, &mut parts).and_then(checked) {
            Ok(d) => {
                batch.devices.push(d);
                batch.lines.push(line);
                if batch.devices.len() == BATCH_DEVICES {
                    sink(std::mem::take(&mut batch))?;
                }
            }
            Err(reason) => inv.rejected.push(RejectedRow { line, reason }),
        }
    }
    if !batch.devices.is_empty() {
        sink(batch)?;
    }
    Ok(inv)
}

/// What [`import_csv`] did.
pub struct CsvImport {
    /// The inventory read: its good devices (sorted by id) and its rejected rows.
    pub inventory: Inventory,
    pub outcome: crate::store::devices::ImportOutcome,
}

/// `convoy fleet import` of a CSV inventory into `store`, with the audit entry `audit` makes
/// from the inventory read. Into a cache without devices, from a file that lists its devices
/// in increasing id order (as `fleet export` and `fleet generate` write them), the devices
/// read so far are written while a second thread parses the rest, in one transaction that
/// commits only once the whole file is read; any other file or cache is read first and then
/// imported ([`Store::import_fleet`]). Either way the cache ends the same, and a failure
/// leaves it as it was.
pub fn import_csv(
    path: &Path,
    store: &mut Store,
    audit: impl FnOnce(&Inventory) -> crate::store::AuditEntry,
) -> Result<CsvImport> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (send, receive) = std::sync::mpsc::sync_channel::<Batch>(4);
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("read-csv".to_owned())
            .spawn_scoped(scope, move || {
                read_csv_batches(BufReader::new(file), |batch| {
                    // The writer stopped (it failed): so does the read.
                    send.send(batch)
                        .map_err(|_| anyhow::anyhow!("the import stopped"))
                })
            })
            .context("starting the CSV reader")?;
        let mut writer = store.begin_new_fleet()?;
        let mut devices: Vec<Device> = Vec::new();
        let mut lines: Vec<u64> = Vec::new();
        let mut duplicates: Vec<RejectedRow> = Vec::new();
        // The line of the first row with the last device's id, while ids increase.
        let mut first_line = 0;
        let mut increasing = true;
        let mut write_error = None;
        for batch in receive {
            let start = devices.len();
            for (d, line) in batch.devices.into_iter().zip(batch.lines) {
                if increasing && let Some(last) = devices.last() {
                    if d.id == last.id {
                        // As `reject_duplicates` does: the first row with an id is kept.
                        duplicates.push(RejectedRow {
                            line,
                            reason: format!("duplicate id {} (first on line {first_line})", d.id),
                        });
                        continue;
                    }
                    if d.id < last.id {
                        // Not in id order: read it all, then import it the usual way.
                        increasing = false;
                        writer = None;
                    }
                }
                if increasing {
                    first_line = line;
                }
                devices.push(d);
                lines.push(line);
            }
            if let Some(w) = writer.as_mut()
                && let Err(e) = w.write(&devices[start..])
            {
                write_error = Some(e);
                break;
            }
        }
        let read = parser
            .join()
            .map_err(|_| anyhow::anyhow!("the CSV reader panicked"))?;
        if let Some(e) = write_error {
            return Err(e.context(format!("importing {}", path.display())));
        }
        let mut inventory =
            read.with_context(|| format!("reading CSV inventory {}", path.display()))?;
        inventory.devices = devices;
        if increasing {
            inventory.rejected.extend(duplicates);
            inventory.rejected.sort_by_key(|r| r.line);
        } else {
            // The duplicates already set apart were each the second of two adjacent rows
            // with one id: set apart again with the others, by the same rule.
            inventory.rejected.extend(duplicates);
            inventory.rejected.sort_by_key(|r| r.line);
            reject_duplicates(&mut inventory, &lines);
        }
        let entry = audit(&inventory);
        let outcome = if let Some(w) = writer {
            w.finish(&inventory.depots, &inventory.devices, Some(&entry))?
        } else {
            drop(writer);
            store.import_fleet(&inventory.depots, &mut inventory.devices, Some(&entry))?
        };
        Ok(CsvImport { inventory, outcome })
    })
}

/// Moves every device whose id an earlier row already had into the rejected rows (naming the
/// first row's line), keeping the rejected rows in line order. `lines` holds each device's
/// line. The usual inventory, sorted by id (what `fleet export` writes), takes one pass.
fn reject_duplicates(inv: &mut Inventory, lines: &[u64]) {
    if inv.devices.windows(2).all(|w| w[0].id < w[1].id) {
        return;
    }
    let mut first: HashMap<&str, u64> = HashMap::with_capacity(inv.devices.len());
    let mut duplicates: Vec<(usize, RejectedRow)> = Vec::new();
    for (i, (d, &line)) in inv.devices.iter().zip(lines).enumerate() {
        match first.entry(d.id.as_str()) {
            std::collections::hash_map::Entry::Occupied(e) => duplicates.push((
                i,
                RejectedRow {
                    line,
                    reason: format!("duplicate id {} (first on line {})", d.id, e.get()),
                },
            )),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(line);
            }
        }
    }
    drop(first);
    if duplicates.is_empty() {
        return;
    }
    let mut next = duplicates.iter().map(|(i, _)| *i).peekable();
    let mut i = 0;
    inv.devices.retain(|_| {
        let keep = next.peek() != Some(&i);
        if !keep {
            next.next();
        }
        i += 1;
        keep
    });
    inv.rejected
        .extend(duplicates.into_iter().map(|(_, rejected)| rejected));
    // Stable: the rows of each kind were already in line order, and a line is rejected once.
    inv.rejected.sort_by_key(|r| r.line);
}

/// What one load of an inventory shares between its devices: one `Sym` per distinct string,
/// one map per distinct component or tag map ([`Interner`]), and the buffers a device's maps
/// are collected in before each is built once.
#[derive(Default)]
struct Parts {
    interner: Interner,
    components: Vec<(Sym, Version)>,
    tags: Vec<(Sym, Sym)>,
}

/// Builds a device from (column, text) pairs of one flat row; the error names the field.
/// Its strings and maps are shared through `parts` with the other devices of the load.
fn device_from_fields<'a>(
    fields: impl Iterator<Item = (&'a Column, &'a str)>,
    parts: &mut Parts,
) -> Result<Device, String> {
    let mut known: [Option<&str>; CSV_COLUMNS.len()] = [None; CSV_COLUMNS.len()];
    parts.components.clear();
    parts.tags.clear();
    for (col, raw) in fields {
        let value = raw.trim();
        match col {
            Column::Known(i) => known[*i] = Some(value),
            Column::Component(name) => {
                if !value.is_empty() {
                    let v: Version = value
                        .parse()
                        .map_err(|e| format!("component {name}: {e}"))?;
                    parts.components.push((name.clone(), v));
                }
            }
            Column::Tag(key) => {
                if !value.is_empty() {
                    let value = parts.interner.sym(value);
                    parts.tags.push((key.clone(), value));
                }
            }
        }
    }
    let get = |i: usize| known[i].filter(|v| !v.is_empty());
    let required = |i: usize| get(i).ok_or_else(|| format!("{} is empty", CSV_COLUMNS[i]));
    let id = required(col!("id"))?.to_owned();
    let mut firmware = false;
    for (name, i) in [
        (component::FIRMWARE, col!("firmware")),
        (component::BOOTLOADER, col!("bootloader")),
        (component::MODEM, col!("modem")),
    ] {
        if let Some(text) = get(i) {
            let v: Version = text.parse().map_err(|e| format!("{name}: {e}"))?;
            firmware |= name == component::FIRMWARE;
            // After the `component:` columns, so that these win over a `component:firmware`.
            parts.components.push((parts.interner.sym(name), v));
        }
    }
    if !firmware {
        return Err("firmware is empty".to_owned());
    }
    // Each map is built once (a later entry with the same key wins, as inserts did) and
    // shared with every device that has the same one.
    let components = parts
        .interner
        .components(parts.components.drain(..).collect());
    let tags = parts
        .interner
        .tags(&parts.tags.drain(..).collect::<SmallMap<Sym>>());
    let mut sym = |i: usize| required(i).map(|text| parts.interner.sym(text));
    let lat: f64 = parse("lat", required(col!("lat"))?)?;
    let lon: f64 = parse("lon", required(col!("lon"))?)?;
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("lat {lat} is outside -90..90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("lon {lon} is outside -180..180"));
    }
    let connectivity: Connectivity = parse_enum(required(col!("connectivity"))?)?;
    let battery_pct = match get(col!("battery_pct")) {
        None => None,
        Some(t) => {
            let pct: u8 = parse("battery_pct", t)?;
            if pct > 100 {
                return Err(format!("battery_pct {pct} is above 100"));
            }
            Some(pct)
        }
    };
    let metered = match get(col!("metered")) {
        None => matches!(connectivity, Connectivity::Cellular | Connectivity::Roaming),
        Some(t) => parse_bool("metered", t)?,
    };
    let power = match get(col!("power_state")) {
        None if battery_pct.is_some() => PowerState::Battery,
        None => PowerState::Mains,
        Some(t) => parse_enum(t)?,
    };
    let last_seen_text = required(col!("last_seen"))?;
    let last_seen = match last_seen_text.parse::<i64>() {
        Ok(secs) => Timestamp::from_secs(secs),
        Err(_) => Timestamp::parse_rfc3339(last_seen_text)
            .map_err(|e| format!("invalid last_seen: {e}"))?,
    };
    Ok(Device {
        model: sym(col!("model"))?,
        hw_rev: sym(col!("hw_rev"))?,
        components,
        active_slot: get(col!("active_slot")).map_or(Ok(Slot::A), parse_enum::<Slot>)?,
        region: sym(col!("region"))?,
        depot: sym(col!("depot"))?,
        position: GeoPoint { lat, lon },
        connectivity,
        metered,
        battery_pct,
        power,
        free_storage_bytes: get(col!("free_storage_bytes"))
            .map_or(Ok(0), |t| parse("free_storage_bytes", t))?,
        customer_tier: parse_enum::<CustomerTier>(required(col!("customer_tier"))?)?,
        device_class: parse_enum::<DeviceClass>(required(col!("device_class"))?)?,
        redundancy: get(col!("redundancy"))
            .map_or(Ok(Redundancy::None), parse_enum::<Redundancy>)?,
        last_seen,
        failed_update_attempts: get(col!("failed_update_attempts"))
            .map_or(Ok(0), |t| parse("failed_update_attempts", t))?,
        tags,
        id,
    })
}

/// A device that passed [`check_device`], or the reason it did not.
fn checked(d: Device) -> Result<Device, String> {
    check_device(&d).map(|()| d)
}

/// The rules every imported device keeps beyond its fields' own syntax: an id that is one
/// protocol topic level, bounded text without control characters, bounded tags and
/// components. The error names the field.
pub fn check_device(d: &Device) -> Result<(), String> {
    if !convoy_core::release::is_valid_id(&d.id) {
        return Err(format!(
            "id {} is not a valid device id: an id is 1 to {} characters of letters, digits, \
             '-', '_', '.' and ':' (it travels as one MQTT topic level)",
            shown(&d.id),
            convoy_core::release::MAX_ID_LEN
        ));
    }
    for (name, text) in [
        ("model", &d.model),
        ("hw_rev", &d.hw_rev),
        ("region", &d.region),
        ("depot", &d.depot),
    ] {
        check_text(text).map_err(|why| format!("{name}: {why}"))?;
    }
    if d.tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags; a device may carry at most {MAX_TAGS}",
            d.tags.len()
        ));
    }
    if d.components.len() > MAX_COMPONENTS {
        return Err(format!(
            "{} components; a device may carry at most {MAX_COMPONENTS}",
            d.components.len()
        ));
    }
    for (key, value) in d.tags.iter() {
        check_text(key).map_err(|why| format!("tag key {}: {why}", shown(key)))?;
        check_text(value).map_err(|why| format!("tag {}: {why}", shown(key)))?;
    }
    for (name, _) in d.components.iter() {
        check_text(name).map_err(|why| format!("component name {}: {why}", shown(name)))?;
    }
    Ok(())
}

/// Depots of a JSON inventory: the same text rules as devices; a bad one refuses the file,
/// since devices refer to depots by id.
fn check_depots(depots: &[Depot]) -> Result<()> {
    for (i, depot) in depots.iter().enumerate() {
        let fields = serde_json::to_value(depot).unwrap_or_default();
        let serde_json::Value::Object(map) = fields else {
            continue;
        };
        for (name, value) in &map {
            if let serde_json::Value::String(text) = value {
                check_text(text)
                    .map_err(|why| anyhow::anyhow!("depot {} ({name}): {why}", i + 1))?;
            }
        }
        // A zone the bundled tz database does not know would put its windows at the wrong
        // hours: refused, naming the depot (files without the field keep their fixed offset).
        depot
            .local_clock()
            .map_err(|e| anyhow::anyhow!("depot {} ({}, time_zone): {e}", i + 1, depot.id))?;
    }
    Ok(())
}

/// A field's text: at most [`MAX_FIELD_BYTES`] bytes and no control characters.
fn check_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(format!(
            "{} bytes; a field may hold at most {MAX_FIELD_BYTES}",
            text.len()
        ));
    }
    // Most fields are short ASCII: one pass over the bytes clears them (a control character
    // in ASCII is below 0x20 or DEL; C1 controls are not ASCII and take the slow path).
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "control character U+{:04X} at byte {at} (newlines, NUL and other control \
             characters are not allowed in a field)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// `text` for an error message: quoted and escaped, and cut short when long.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}… ({} bytes)", text.len())
    }
}

/// A `csv` error as an `anyhow` error, keeping an I/O error's message (the line guard's).
fn csv_error(e: csv::Error) -> anyhow::Error {
    if !e.is_io_error() {
        return anyhow::Error::new(e);
    }
    match e.into_kind() {
        csv::ErrorKind::Io(io) => anyhow::Error::new(io),
        other => anyhow::anyhow!("unreadable CSV: {other:?}"),
    }
}

/// A reader that fails once a record grows past [`MAX_LINE_BYTES`], so that a file of one
/// enormous record (a million columns, a 10 GB field, quoted line breaks included) is refused
/// instead of read into memory by the CSV parser.
struct LineGuard<R> {
    inner: R,
    line: u64,
    /// Bytes since the last newline outside quotes: the size of the record being read.
    line_bytes: usize,
    /// Inside a quoted field, where a newline is part of the field, not the end of the record
    /// (a doubled `""` toggles twice, which is right).
    in_quotes: bool,
}

impl<R> LineGuard<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            line: 1,
            line_bytes: 0,
            in_quotes: false,
        }
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'"' {
                self.in_quotes = !self.in_quotes;
            }
            if b == b'\n' {
                self.line += 1;
            }
            if b == b'\n' && !self.in_quotes {
                self.line_bytes = 0;
            } else {
                self.line_bytes += 1;
                if self.line_bytes > MAX_LINE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {} is longer than {MAX_LINE_BYTES} bytes (quoted line breaks \
                             included): not an inventory",
                            self.line
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}

fn parse<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>()
        .map_err(|e| format!("invalid {name} {text:?}: {e}"))
}

/// Parses one of the fleet model's string enums; their errors already name the field, the
/// value and the accepted spellings.
fn parse_enum<T: std::str::FromStr<Err = convoy_core::fleet::EnumParseError>>(
    text: &str,
) -> Result<T, String> {
    text.parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(name: &str, text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("invalid {name} {text:?}: expected true or false")),
    }
}

/// The CSV column a tag is written under: its key, or `tag:KEY` when the key would be read
/// back as something else.
fn tag_column(key: &str) -> String {
    if CSV_COLUMNS.contains(&key) || key.starts_with("component:") || key.starts_with("tag:") {
        format!("tag:{key}")
    } else {
        key.to_owned()
    }
}

/// Writes devices as a CSV inventory: [`CSV_COLUMNS`], then `component:NAME` for components
/// beyond firmware, bootloader and modem, then one column per tag key (both sorted).
pub fn write_csv(out: &mut dyn Write, devices: &[Device]) -> Result<()> {
    let well_known = [component::FIRMWARE, component::BOOTLOADER, component::MODEM];
    let mut extra_components = BTreeSet::new();
    let mut tag_keys = BTreeSet::new();
    for d in devices {
        for (name, _) in d.components.iter() {
            if !well_known.contains(&name.as_str()) {
                extra_components.insert(name);
            }
        }
        for (key, _) in d.tags.iter() {
            tag_keys.insert(key);
        }
    }
    let mut w = csv::Writer::from_writer(out);
    let mut header: Vec<String> = CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    header.extend(extra_components.iter().map(|c| format!("component:{c}")));
    header.extend(tag_keys.iter().map(|k| tag_column(k)));
    w.write_record(header.iter().map(|c| csv_safe::neutralise(c).into_owned()))?;
    let mut row: Vec<String> = Vec::with_capacity(header.len());
    for d in devices {
        row.clear();
        let comp = |name: &str| d.component(name).map(|v| v.to_string()).unwrap_or_default();
        row.extend([
            d.id.clone(),
            d.model.to_string(),
            d.hw_rev.to_string(),
            comp(component::FIRMWARE),
            comp(component::BOOTLOADER),
            comp(component::MODEM),
            d.region.to_string(),
            d.depot.to_string(),
            d.position.lat.to_string(),
            d.position.lon.to_string(),
            d.connectivity.to_string(),
            d.metered.to_string(),
            d.battery_pct.map(|b| b.to_string()).unwrap_or_default(),
            d.power.to_string(),
            d.free_storage_bytes.to_string(),
            d.customer_tier.to_string(),
            d.device_class.to_string(),
            d.redundancy.to_string(),
            d.active_slot.to_string(),
            d.last_seen.to_rfc3339(),
            d.failed_update_attempts.to_string(),
        ]);
        row.extend(extra_components.iter().map(|c| comp(c)));
        row.extend(tag_keys.iter().map(|k| d.tag(k).unwrap_or("").to_owned()));
        w.write_record(row.iter().map(|c| csv_safe::neutralise(c).into_owned()))?;
    }
    w.flush()?;
    Ok(())
}

/// Writes a fleet as JSON (the fleet model's own shape: depots and nested devices).
pub fn write_json(out: &mut dyn Write, fleet: &Fleet) -> Result<()> {
    serde_json::to_writer(&mut *out, fleet)?;
    writeln!(out)?;
    Ok(())
}

/// Reads a JSON inventory. A well-formed fleet document takes the fast path; anything else is
/// read device by device so that one bad device is reported and skipped.
pub fn read_json(text: &str) -> Result<Inventory> {
    // A key twice in one object (a device's `hw_rev`, say) has two readings: refused, named.
    convoy_core::strict_json::check(text.as_bytes()).context("invalid JSON inventory")?;
    if let Ok(fleet) = serde_json::from_str::<Fleet>(text) {
        check_depots(&fleet.depots)?;
        let mut inv = Inventory {
            depots: fleet.depots,
            devices: Vec::new(),
            rejected: Vec::new(),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let lines = element_lines(text);
        for (i, d) in fleet.devices.into_iter().enumerate() {
            if let Err(reason) = check_device(&d) {
                inv.rejected.push(RejectedRow {
                    line: lines.get(i).copied().unwrap_or(0),
                    reason: format!("device {}: {reason}", i + 1),
                });
            } else if let Some(first) = seen.get(&d.id) {
                inv.rejected.push(RejectedRow {
                    line: lines.get(i).copied().unwrap_or(0),
                    reason: format!(
                        "duplicate id {} (first on line {})",
                        d.id,
                        lines.get(*first).copied().unwrap_or(0)
                    ),
                });
            } else {
                seen.insert(d.id.clone(), i);
                inv.devices.push(d);
            }
        }
        return Ok(inv);
    }
    let doc: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let (depots, devices) = match doc {
        serde_json::Value::Array(items) => (Vec::new(), items),
        serde_json::Value::Object(mut map) => {
            let depots = match map.remove("depots") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(v) => serde_json::from_value::<Vec<Depot>>(v).context("invalid depots")?,
            };
            check_depots(&depots)?;
            match map.remove("devices") {
                Some(serde_json::Value::Array(items)) => (depots, items),
                _ => bail!("expected a \"devices\" array"),
            }
        }
        _ => bail!("expected a fleet object or an array of devices"),
    };
    let lines = element_lines(text);
    let mut inv = Inventory {
        depots,
        ..Inventory::default()
    };
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut parts = Parts::default();
    for (i, item) in devices.into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        match device_from_json(item, &mut parts).and_then(checked) {
            Ok(d) => {
                if let Some(first) = first_line.get(&d.id) {
                    inv.rejected.push(RejectedRow {
                        line,
                        reason: format!("duplicate id {} (first on line {first})", d.id),
                    });
                } else {
                    first_line.insert(d.id.clone(), line);
                    inv.devices.push(d);
                }
            }
            Err(reason) => inv.rejected.push(RejectedRow {
                line,
                reason: format!("device {}: {reason}", i + 1),
            }),
        }
    }
    Ok(inv)
}

fn device_from_json(item: serde_json::Value, parts: &mut Parts) -> Result<Device, String> {
    let serde_json::Value::Object(map) = item else {
        return Err("not a JSON object".to_owned());
    };
    if map.contains_key("components") || map.contains_key("position") {
        return serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string());
    }
    let mut pairs: Vec<(Column, String)> = Vec::with_capacity(map.len());
    for (key, value) in map {
        let text = match value {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("field {key} is not a string, number or boolean")),
        };
        pairs.push((classify(&key), text));
    }
    for r in CSV_REQUIRED {
        if !pairs
            .iter()
            .any(|(c, _)| matches!(c, Column::Known(k) if CSV_COLUMNS[*k] == *r))
        {
            return Err(format!("{r} is missing"));
        }
    }
    device_from_fields(pairs.iter().map(|(c, t)| (c, t.as_str())), parts)
}

/// The 1-based line on which each element of the devices array starts (the top-level array,
/// or the `devices` member of the top-level object). A small scanner over the text, because
/// parsed JSON values do not keep their positions.
fn element_lines(text: &str) -> Vec<u64> {
    let mut lines = Vec::new();
    let mut line = 1u64;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut last_key_at_depth1: Option<(usize, usize)> = None;
    let mut string_start = 0usize;
    let mut devices_depth: Option<usize> = None;
    let mut expect_value = false;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 1 {
                    last_key_at_depth1 = Some((string_start, i));
                }
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if devices_depth == Some(depth) && expect_value && b != b']' {
            lines.push(line);
            expect_value = false;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b'[' => {
                depth += 1;
                let is_devices = match (depth, last_key_at_depth1) {
                    (1, _) => true,
                    (2, Some((s, e))) => &text[s..e] == "devices",
                    _ => false,
                };
                if devices_depth.is_none() && is_devices {
                    devices_depth = Some(depth);
                    expect_value = true;
                }
            }
            b'{' => depth += 1,
            b']' | b'}' => {
                if devices_depth == Some(depth) {
                    devices_depth = Some(usize::MAX);
                }
                depth = depth.saturating_sub(1);
            }
            b',' if devices_depth == Some(depth) => expect_value = true,
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_lines_of_array_and_object() {
        let text = "[\n {\"a\": [1,\n2]},\n {\"b\": \"x]\"}\n]";
        assert_eq!(element_lines(text), [2, 4]);
        let text = "{\"depots\": [{}, {}],\n \"devices\": [\n  {\"id\": 1},\n  {\"id\": 2}, {\"id\": 3}\n]}";
        assert_eq!(element_lines(text), [3, 4, 4]);
    }

    fn synth(n: usize) -> Fleet {
        convoy_core::synth::generate(&convoy_core::synth::SynthOptions {
            devices: n,
            seed: 21,
            now: Timestamp::from_secs(1_795_392_000),
        })
    }

    #[test]
    fn csv_round_trips_every_field_including_awkward_tags_and_components() {
        let mut fleet = synth(400);
        let d = &mut fleet.devices[3];
        d.components
            .insert("can_gateway", "7.0.1.2".parse().expect("version"));
        d.tags.insert("model", "tag named like a column".into());
        d.tags.insert("tag:x", "a, \"quoted\" value".into());
        d.tags.insert("component:odd", "not a component".into());
        d.battery_pct = None;
        d.failed_update_attempts = 4;
        d.free_storage_bytes = u64::from(u32::MAX) * 3;
        let mut out = Vec::new();
        write_csv(&mut out, &fleet.devices).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let header = text.lines().next().expect("header");
        assert!(header.starts_with(&CSV_COLUMNS.join(",")), "{header}");
        assert!(header.contains("component:can_gateway"), "{header}");
        assert!(header.contains("tag:model"), "{header}");
        let inv = read_csv(text.as_bytes()).expect("read");
        assert_eq!(inv.rejected, []);
        assert_eq!(inv.devices, fleet.devices);
    }

    #[test]
    fn csv_defaults_for_absent_optional_columns() {
        let text = "id,model,hw_rev,firmware,region,depot,lat,lon,connectivity,customer_tier,device_class,last_seen,battery_pct\n\
                    A1,T300,B,2.4.1,eu-central,eu-central-muc,48.1,11.5,roaming,premium,truck,0,40\n\
                    A2,K20,A,5.7.1,eu-central,eu-central-ber,52.5,13.4,ethernet,basic,pos,2026-11-22,\n";
        let inv = read_csv(text.as_bytes()).expect("read");
        assert_eq!(inv.rejected, []);
        let [a1, a2] = &inv.devices[..] else {
            panic!("two devices expected, got {}", inv.devices.len())
        };
        assert!(a1.metered, "roaming is metered by default");
        assert_eq!(a1.power, PowerState::Battery);
        assert_eq!(a1.component("bootloader"), None);
        assert_eq!(a1.last_seen, Timestamp::from_secs(0));
        assert!(!a2.metered);
        assert_eq!(a2.power, PowerState::Mains);
        assert_eq!(a2.battery_pct, None);
        assert_eq!((a2.active_slot, a2.redundancy), (Slot::A, Redundancy::None));
    }

    const HEADER: &str = "id,model,hw_rev,firmware,region,depot,lat,lon,connectivity,customer_tier,device_class,last_seen";

    fn row(id: &str) -> String {
        format!("{id},T300,B,2.4.1,eu-central,eu-central-muc,48.1,-11.5,wifi,basic,truck,0")
    }

    #[test]
    fn ids_that_are_not_one_topic_level_are_refused_with_line_and_reason_issue_16() {
        let long = "E".repeat(5_000);
        let bad = [
            "EV/evil/x",
            "#",
            "EV+",
            long.as_str(),
            "\"EV\nX\"",
            "\"EV\u{0}X\"",
        ];
        let mut text = format!("{HEADER}\n{}\n", row("GOOD-1"));
        for id in bad {
            text.push_str(&row(id));
            text.push('\n');
        }
        let inv = read_csv(text.as_bytes()).expect("read");
        assert_eq!(inv.devices.len(), 1, "{:?}", inv.rejected);
        assert_eq!(inv.rejected.len(), bad.len(), "{:?}", inv.rejected);
        for r in &inv.rejected[..3] {
            assert!(r.reason.contains("not a valid device id"), "{r}");
        }
        assert!(
            inv.rejected[3].reason.starts_with("id: 5000 bytes"),
            "{}",
            inv.rejected[3]
        );
        // The embedded newline and NUL are control characters in the id field.
        for r in &inv.rejected[4..] {
            assert!(r.reason.starts_with("id: control character"), "{r}");
        }
        assert_eq!(inv.rejected[0].line, 3);
    }

    #[test]
    fn json_inventories_keep_the_same_id_and_text_rules_issue_16() {
        let mut fleet = synth(20);
        fleet.devices[2].id = "EV/evil/x".to_owned();
        fleet.devices[5].region = "eu\ncentral".into();
        let mut out = Vec::new();
        write_json(&mut out, &fleet).expect("write");
        let inv = read_json(std::str::from_utf8(&out).expect("utf-8")).expect("read");
        assert_eq!(inv.devices.len(), 18);
        assert!(
            inv.rejected[0].reason.contains("not a valid device id"),
            "{:?}",
            inv.rejected
        );
        assert!(
            inv.rejected[1]
                .reason
                .contains("region: control character U+000A"),
            "{:?}",
            inv.rejected
        );
    }

    #[test]
    fn depot_time_zones_round_trip_and_an_unknown_zone_is_refused_issue_20() {
        let depot = |zone: &str| {
            format!(
                r#"{{"depots": [{{"id": "eu-ber", "name": "Berlin", "region": "eu", "position": {{"lat": 52.5, "lon": 13.4}}, "utc_offset_minutes": 60{zone}}}], "devices": []}}"#
            )
        };
        // Written before zones: the fixed offset, no zone.
        let inv = read_json(&depot("")).expect("an old file still reads");
        assert_eq!(inv.depots[0].time_zone, None);
        let inv = read_json(&depot(r#", "time_zone": "Europe/Berlin""#)).expect("a known zone");
        assert_eq!(inv.depots[0].time_zone.as_deref(), Some("Europe/Berlin"));
        let mut out = Vec::new();
        write_json(&mut out, &Fleet::new(inv.depots.clone(), Vec::new())).expect("write");
        let back = read_json(std::str::from_utf8(&out).expect("utf-8")).expect("read back");
        assert_eq!(back.depots, inv.depots);
        let err =
            read_json(&depot(r#", "time_zone": "Europe/Atlantis""#)).expect_err("an unknown zone");
        let text = format!("{err:#}");
        assert!(
            text.contains("eu-ber") && text.contains("Europe/Atlantis"),
            "{text}"
        );
    }

    #[test]
    fn formula_cells_are_neutralised_on_export_and_restored_on_import_issue_16() {
        let mut fleet = synth(50);
        let d = &mut fleet.devices[7];
        d.tags.insert(
            "note",
            "=HYPERLINK(\"http://evil.example\",\"click\")".into(),
        );
        d.tags.insert("owner", "+1+1".into());
        d.tags.insert("@team", "@SUM(A1)".into());
        d.tags.insert("quote", "'already".into());
        d.model = "-2+3+cmd|' /C calc'!A0".into();
        let mut out = Vec::new();
        write_csv(&mut out, &fleet.devices).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        for line in text.lines() {
            for cell in line.split(',') {
                let cell = cell.trim_start_matches('"');
                let risky = cell.starts_with(['=', '+', '@'])
                    || (cell.starts_with('-') && cell.parse::<f64>().is_err());
                assert!(!risky, "a spreadsheet would evaluate {cell:?} in {line}");
            }
        }
        assert!(text.contains("'=HYPERLINK("), "{text}");
        assert!(
            text.contains(",'@team") || text.contains(",\"'@team"),
            "the header is marked too"
        );
        let inv = read_csv(text.as_bytes()).expect("read");
        assert_eq!(inv.rejected, []);
        assert_eq!(
            inv.devices, fleet.devices,
            "export then import is the identity"
        );
    }

    #[test]
    fn a_million_columns_a_huge_field_and_too_many_tags_are_refused_issue_16() {
        // A header past MAX_COLUMNS (short enough to pass the line guard) refuses the file.
        let wide: String = (12..312).fold(HEADER.to_owned(), |h, i| format!("{h},t{i}"));
        let err = read_csv(format!("{wide}\n").as_bytes()).expect_err("too many columns");
        assert!(
            format!("{err:#}").contains("312 columns; an inventory may have at most 256"),
            "{err:#}"
        );
        // A million columns is one line past the line guard.
        let huge_header = format!("{HEADER}{}", ",c".repeat(1_000_000));
        let err = read_csv(huge_header.as_bytes()).expect_err("a million columns");
        assert!(
            format!("{err:#}").contains("line 1 is longer than"),
            "{err:#}"
        );
        // A 10 MB field: the line guard refuses the file before the parser holds it.
        let text = format!("{HEADER},note\n{},{}\n", row("A1"), "x".repeat(10 << 20));
        let err = read_csv(text.as_bytes()).expect_err("10 MB field");
        assert!(
            format!("{err:#}").contains("line 2 is longer than 1048576 bytes"),
            "{err:#}"
        );
        // Quoted line breaks do not end a record: 2 MiB of 1 KiB lines in one quoted field
        // are refused like one long line (review of issue 16, F6).
        let lines = format!("{}\n", "z".repeat(1023)).repeat(2048);
        let text = format!("{HEADER},note\n{},\"{lines}\"\n", row("A9"));
        let err = read_csv(text.as_bytes()).expect_err("a quoted 2 MiB field");
        assert!(
            format!("{err:#}").contains("is longer than 1048576 bytes"),
            "{err:#}"
        );
        // A field past MAX_FIELD_BYTES but within a line: that row is rejected, naming the column.
        let text = format!(
            "{HEADER},note\n{},{}\n{},ok\n",
            row("A1"),
            "x".repeat(2_000),
            row("A2")
        );
        let inv = read_csv(text.as_bytes()).expect("read");
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.rejected.len(), 1);
        assert!(
            inv.rejected[0]
                .reason
                .starts_with("note: 2000 bytes; a field may hold at most 1024"),
            "{}",
            inv.rejected[0]
        );
        // Too many tags on one device (JSON, where tags are not columns).
        let mut fleet = synth(3);
        for i in 0..=MAX_TAGS {
            fleet.devices[1].tags.insert(format!("k{i}"), "v".into());
        }
        let mut out = Vec::new();
        write_json(&mut out, &fleet).expect("write");
        let inv = read_json(std::str::from_utf8(&out).expect("utf-8")).expect("read");
        assert_eq!(inv.devices.len(), 2);
        assert!(
            inv.rejected[0]
                .reason
                .contains("tags; a device may carry at most 64"),
            "{:?}",
            inv.rejected
        );
    }

    #[test]
    fn duplicate_ids_are_rejected_in_line_order_naming_the_first_line() {
        let text = format!(
            "{HEADER}\n{}\n{}\n{}\nB2,T300\n{}\n{}\n",
            row("B2"),
            row("A1"),
            row("B2"),
            row("A1"),
            row("C3")
        );
        let inv = read_csv(text.as_bytes()).expect("read");
        let ids: Vec<&str> = inv.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["B2", "A1", "C3"], "first occurrences, in file order");
        let rejected: Vec<String> = inv.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            rejected,
            [
                "line 4: duplicate id B2 (first on line 2)",
                "line 5: 2 fields, but the header has 12 columns",
                "line 6: duplicate id A1 (first on line 3)",
            ]
        );
    }

    fn import_entry(inv: &Inventory) -> crate::store::AuditEntry {
        crate::store::AuditEntry {
            time: Timestamp::from_secs(1_795_392_000),
            actor: "operator:test".to_owned(),
            action: "fleet.import".to_owned(),
            payload: serde_json::json!({
                "devices": inv.devices.len(),
                "rejected": inv.rejected.len(),
            }),
        }
    }

    /// The CSV of `fleet` as lines (header first).
    fn csv_lines(fleet: &Fleet) -> Vec<String> {
        let mut out = Vec::new();
        write_csv(&mut out, &fleet.devices).expect("write");
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Imports `lines` as a CSV file with [`import_csv`] and, into a second cache, read first
    /// then imported with [`Store::import_fleet`] (what the import did before it streamed),
    /// both caches holding `base` first; checks both end the same and returns the streamed
    /// import's result.
    fn import_both_ways(lines: &[String], base: Option<&Fleet>) -> CsvImport {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.csv");
        std::fs::write(&file, lines.join("\n") + "\n").expect("write csv");
        let open = |name: &str| {
            let mut store = Store::open(&dir.path().join(name)).expect("open");
            if let Some(base) = base {
                store.replace_fleet(base, None).expect("base fleet");
            }
            store
        };
        let mut streamed = open("streamed.db");
        let done = import_csv(&file, &mut streamed, import_entry).expect("streamed import");
        let mut classic = open("classic.db");
        let mut inv = read_inventory(&file).expect("read");
        let entry = import_entry(&inv);
        let outcome = classic
            .import_fleet(&inv.depots, &mut inv.devices, Some(&entry))
            .expect("classic import");
        assert_eq!(done.outcome, outcome);
        assert_eq!(done.inventory.devices, inv.devices);
        let shown =
            |i: &Inventory| -> Vec<String> { i.rejected.iter().map(ToString::to_string).collect() };
        assert_eq!(shown(&done.inventory), shown(&inv));
        let rows = streamed.load_fleet_sequentially().expect("rows");
        assert_eq!(rows, classic.load_fleet_sequentially().expect("rows"));
        let (loaded, source) = Store::open(streamed.path())
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        let (_, classic_source) = Store::open(classic.path())
            .expect("reopen")
            .load_fleet_traced()
            .expect("load");
        assert_eq!(loaded, rows);
        assert_eq!(source, classic_source);
        let summary = crate::store::query::fleet_summary(&streamed).expect("summary");
        assert_eq!(
            summary,
            crate::store::query::fleet_summary_by_scans(&streamed).expect("scans")
        );
        let last = |store: &Store| {
            let mut entries = store.audit_entries(Some(1)).expect("audit");
            let e = entries.pop().expect("an entry");
            (e.action, e.payload)
        };
        assert_eq!(last(&streamed), last(&classic));
        assert_eq!(streamed.verify_audit().expect("verify").problem, None);
        done
    }

    /// 20,000 devices: more than two batches, so the writer has rows written before the end.
    const STREAMED: usize = 20_000;

    #[test]
    fn a_sorted_csv_streams_into_a_new_cache_as_a_read_then_import_would() {
        let mut lines = csv_lines(&synth(STREAMED));
        // Two rows repeated right after themselves (in two batches), a bad row, an empty
        // line.
        let (a, b) = (lines[100].clone(), lines[15_000].clone());
        lines.insert(15_001, b.clone());
        lines.insert(15_001, b);
        lines.insert(101, a);
        lines.insert(9_000, "bad,row".to_owned());
        lines.insert(12_000, String::new());
        let done = import_both_ways(&lines, None);
        assert!(done.outcome.whole_fleet, "the streamed path");
        assert_eq!(done.inventory.devices.len(), STREAMED);
        let rejected: Vec<String> = done
            .inventory
            .rejected
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(rejected.len(), 4, "{rejected:?}");
        assert!(
            rejected[0].starts_with("line 102: duplicate id"),
            "{rejected:?}"
        );
        assert!(rejected[0].ends_with("(first on line 101)"), "{rejected:?}");
    }

    #[test]
    fn an_unsorted_csv_or_a_cache_with_devices_is_imported_as_before() {
        let fleet = synth(STREAMED);
        let mut lines = csv_lines(&fleet);
        // Out of order past the second batch: the rows written so far are rolled back and
        // the file is imported whole, duplicates set apart across the file.
        lines.swap(17_000, 17_500);
        lines.push(lines[5].clone());
        let done = import_both_ways(&lines, None);
        assert!(
            done.outcome.whole_fleet,
            "still a whole fleet, imported at the end"
        );
        assert_eq!(done.inventory.devices.len(), STREAMED);
        assert_eq!(done.inventory.rejected.len(), 1);
        // A cache that holds devices: updated by id, the others kept.
        let base = synth(300);
        let done = import_both_ways(&csv_lines(&fleet), Some(&base));
        assert!(!done.outcome.whole_fleet);
        assert_eq!(done.outcome.counts.updated, 300);
    }

    #[test]
    fn a_csv_refused_after_rows_were_streamed_leaves_the_new_cache_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.csv");
        let mut lines = csv_lines(&synth(STREAMED));
        // A line past the limit refuses the whole file, after two batches were written.
        lines.insert(19_000, "x".repeat(MAX_LINE_BYTES + 10));
        std::fs::write(&file, lines.join("\n")).expect("write csv");
        let mut store = Store::open(&dir.path().join("cache.db")).expect("open");
        let triggers = |store: &Store| store.integrity_check().expect("check");
        let Err(err) = import_csv(&file, &mut store, import_entry) else {
            panic!("a line past the limit was imported");
        };
        let message = format!("{err:#}");
        assert!(message.contains("line 19001"), "{message}");
        assert_eq!(store.device_count().expect("count"), 0);
        assert!(store.audit_entries(None).expect("audit").is_empty());
        assert_eq!(triggers(&store), ["ok"]);
        // The cache still takes the next import on the streamed path.
        lines.remove(19_000);
        std::fs::write(&file, lines.join("\n")).expect("write csv");
        let done = import_csv(&file, &mut store, import_entry).expect("import");
        assert!(done.outcome.whole_fleet);
        assert_eq!(store.device_count().expect("count"), STREAMED);
    }

    #[test]
    fn devices_read_from_csv_share_equal_values() {
        let fleet = synth(300);
        let mut out = Vec::new();
        write_csv(&mut out, &fleet.devices).expect("write");
        let inv = read_csv(out.as_slice()).expect("read");
        assert_eq!(inv.devices, fleet.devices);
        let (a, b) = (&inv.devices[0], &inv.devices[1..]);
        let same_model = b
            .iter()
            .find(|d| d.model == a.model)
            .expect("a second model");
        assert!(
            same_model.model.ptr_eq(&a.model),
            "one shared string per value"
        );
        let same_tags = b.iter().find(|d| d.tags == a.tags).expect("equal tags");
        assert!(same_tags.tags.ptr_eq(&a.tags), "one shared map per value");
        let same_components = b
            .iter()
            .find(|d| d.components == a.components)
            .expect("equal components");
        assert!(same_components.components.ptr_eq(&a.components));
    }

    #[test]
    fn csv_without_required_columns_is_refused_whole() {
        let err = read_csv("id,model\nA1,T300\n".as_bytes()).expect_err("missing columns");
        let msg = format!("{err:#}");
        assert!(msg.contains("hw_rev, firmware, region"), "{msg}");
    }
}
