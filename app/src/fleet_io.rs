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
//! This module does not merge or deduplicate against a cache: the store upserts by id.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::{
    Connectivity, CustomerTier, Depot, Device, DeviceClass, Fleet, GeoPoint, PowerState,
    Redundancy, Slot, SmallMap, component,
};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

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

/// Writes through `write` into `path.tmp`, syncs, and renames over `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    let file = out.into_inner().context("flushing")?;
    file.sync_all().context("syncing")?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
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
    Component(String),
    Tag(String),
}

fn classify(header: &str) -> Column {
    let h = header.trim();
    if let Some(known) = CSV_COLUMNS.iter().position(|c| *c == h) {
        Column::Known(known)
    } else if let Some(name) = h.strip_prefix("component:") {
        Column::Component(name.to_owned())
    } else if let Some(key) = h.strip_prefix("tag:") {
        Column::Tag(key.to_owned())
    } else {
        Column::Tag(h.to_owned())
    }
}

/// Reads a CSV inventory.
pub fn read_csv(reader: impl Read) -> Result<Inventory> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = rdr.headers().context("reading the header line")?.clone();
    let columns: Vec<Column> = headers.iter().map(classify).collect();
    let missing: Vec<&str> = CSV_REQUIRED
        .iter()
        .filter(|r| !headers.iter().any(|h| h.trim() == **r))
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!("the header lacks required columns: {}", missing.join(", "));
    }
    let mut inv = Inventory::default();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
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
        let fields = columns.iter().zip(record.iter());
        match device_from_fields(fields) {
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
            Err(reason) => inv.rejected.push(RejectedRow { line, reason }),
        }
    }
    Ok(inv)
}

/// Builds a device from (column, text) pairs of one flat row; the error names the field.
fn device_from_fields<'a>(
    fields: impl Iterator<Item = (&'a Column, &'a str)>,
) -> Result<Device, String> {
    let mut known: [Option<&str>; CSV_COLUMNS.len()] = [None; CSV_COLUMNS.len()];
    let mut components = SmallMap::new();
    let mut tags = SmallMap::new();
    for (col, raw) in fields {
        let value = raw.trim();
        match col {
            Column::Known(i) => known[*i] = Some(value),
            Column::Component(name) => {
                if !value.is_empty() {
                    let v: Version = value
                        .parse()
                        .map_err(|e| format!("component {name}: {e}"))?;
                    components.insert(name.clone(), v);
                }
            }
            Column::Tag(key) => {
                if !value.is_empty() {
                    tags.insert(key.clone(), value.to_owned());
                }
            }
        }
    }
    let get = |i: usize| known[i].filter(|v| !v.is_empty());
    let required = |i: usize| get(i).ok_or_else(|| format!("{} is empty", CSV_COLUMNS[i]));
    let id = required(col!("id"))?.to_owned();
    for (name, i) in [
        (component::FIRMWARE, col!("firmware")),
        (component::BOOTLOADER, col!("bootloader")),
        (component::MODEM, col!("modem")),
    ] {
        if let Some(text) = get(i) {
            let v: Version = text.parse().map_err(|e| format!("{name}: {e}"))?;
            components.insert(name, v);
        }
    }
    if components.get(component::FIRMWARE).is_none() {
        return Err("firmware is empty".to_owned());
    }
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
        model: required(col!("model"))?.to_owned(),
        hw_rev: required(col!("hw_rev"))?.to_owned(),
        components,
        active_slot: get(col!("active_slot")).map_or(Ok(Slot::A), parse_enum::<Slot>)?,
        region: required(col!("region"))?.to_owned(),
        depot: required(col!("depot"))?.to_owned(),
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
            if !well_known.contains(&name) {
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
    w.write_record(&header)?;
    let mut row: Vec<String> = Vec::with_capacity(header.len());
    for d in devices {
        row.clear();
        let comp = |name: &str| d.component(name).map(|v| v.to_string()).unwrap_or_default();
        row.extend([
            d.id.clone(),
            d.model.clone(),
            d.hw_rev.clone(),
            comp(component::FIRMWARE),
            comp(component::BOOTLOADER),
            comp(component::MODEM),
            d.region.clone(),
            d.depot.clone(),
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
        w.write_record(&row)?;
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
        let mut inv = Inventory {
            depots: fleet.depots,
            devices: Vec::new(),
            rejected: Vec::new(),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let lines = element_lines(text);
        for (i, d) in fleet.devices.into_iter().enumerate() {
            if let Some(first) = seen.get(&d.id) {
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
    for (i, item) in devices.into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        match device_from_json(item) {
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

fn device_from_json(item: serde_json::Value) -> Result<Device, String> {
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
    device_from_fields(pairs.iter().map(|(c, t)| (c, t.as_str())))
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
        d.tags.insert("model", "tag named like a column".to_owned());
        d.tags.insert("tag:x", "a, \"quoted\" value".to_owned());
        d.tags.insert("component:odd", "not a component".to_owned());
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

    #[test]
    fn csv_without_required_columns_is_refused_whole() {
        let err = read_csv("id,model\nA1,T300\n".as_bytes()).expect_err("missing columns");
        let msg = format!("{err:#}");
        assert!(msg.contains("hw_rev, firmware, region"), "{msg}");
    }
}
