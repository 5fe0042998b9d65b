//! The fleet model: what a rollout needs to know about every device.
//!
//! A [`Fleet`] is a list of [`Device`]s (sorted by id) and the [`Depot`]s they belong to.
//! A device is a fixed-size row: its low-cardinality text (model, revision, region, depot,
//! component names, tags) is [`Sym`]s and shared maps, one copy per distinct value across the
//! fleet ([`Interner`]), so a million devices cost a few hundred bytes each. The model is plain
//! data: loading it from SQLite, CSV, JSON or MQTT is the app's job, and nothing
//! here knows about those shapes. String enums ([`Connectivity`], [`DeviceClass`], ...) have one
//! canonical spelling, used by every file format and the CLI.

pub use crate::sym::{Interner, Sym};
use crate::time::Timestamp;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Well-known component names. Devices may carry others (e.g. `gnss`, `can_gateway`).
pub mod component {
    pub const FIRMWARE: &str = "firmware";
    pub const BOOTLOADER: &str = "bootloader";
    pub const MODEM: &str = "modem";
}

/// An unknown spelling for one of the fleet model's string enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: expected one of {expected}")]
pub struct EnumParseError {
    pub field: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares a fieldless enum with one canonical lowercase spelling per variant, used for
/// `Display`, `FromStr` and serde alike, plus `ALL` in declaration order.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = EnumParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($text) {
                    return Ok($name::$variant);
                })+
                Err(EnumParseError {
                    field: $field,
                    value: s.to_owned(),
                    expected: [$($text),+].join(", "),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum! {
    /// How a device reaches the network right now.
    Connectivity, "connectivity" {
        Ethernet => "ethernet",
        Wifi => "wifi",
        Cellular => "cellular",
        /// Cellular on a visited network: downloads cost the most and are usually forbidden.
        Roaming => "roaming",
    }
}

string_enum! {
    /// Where a device's power comes from right now.
    PowerState, "power_state" {
        /// Fixed installation on mains power.
        Mains => "mains",
        /// On battery but charging (vehicle ignition on, charger attached).
        Charging => "charging",
        /// Running on battery alone (vehicle parked with ignition off, handheld).
        Battery => "battery",
    }
}

string_enum! {
    /// The customer's contract tier: higher tiers tolerate less disruption.
    CustomerTier, "customer_tier" {
        Basic => "basic",
        Standard => "standard",
        Premium => "premium",
        Enterprise => "enterprise",
    }
}

string_enum! {
    /// What the device does for its owner; drives criticality and operating cycles.
    DeviceClass, "device_class" {
        DeliveryVan => "delivery_van",
        Truck => "truck",
        Bus => "bus",
        Pos => "pos",
        Kiosk => "kiosk",
        MedicalGateway => "medical_gateway",
        EvCharger => "ev_charger",
        Sensor => "sensor",
    }
}

string_enum! {
    /// Whether something else takes over while this device is down.
    Redundancy, "redundancy" {
        /// No standby: while it updates, its function is unavailable.
        None => "none",
        /// A paired standby unit takes over.
        Standby => "standby",
        /// One of a pool; the others absorb its load.
        Pooled => "pooled",
    }
}

string_enum! {
    /// The two banks of an A/B (dual-bank) device.
    Slot, "slot" {
        A => "a",
        B => "b",
    }
}

impl Slot {
    /// The inactive bank, into which an update is written.
    pub const fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// A small map with string keys kept sorted, serialised as a JSON object. Devices carry a
/// handful of components and tags each, and most devices share their whole map with many
/// others: the entries live in one reference-counted slice, shared by every device an
/// [`Interner`] gave it to, and a change copies the slice (copy on write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallMap<V>(Arc<[(Sym, V)]>);

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> SmallMap<V> {
    pub fn new() -> Self {
        Self(Arc::from(Vec::new()))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        // A device's maps hold a handful of entries: a scan that compares lengths first reads
        // the bytes of at most the one key that can match, where a binary search compares
        // (and so reads) every key it visits.
        if self.0.len() <= 8 {
            return self
                .0
                .iter()
                .find(|(k, _)| k.len() == key.len() && k.as_str() == key)
                .map(|(_, v)| v);
        }
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Sym, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both share one slice (maps an interner handed out are shared).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The address of the shared entries: an identity for groupings over one borrowed fleet.
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl<V: Clone> SmallMap<V> {
    /// Inserts or replaces `key`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<Sym>, value: V) -> Option<V> {
        let key = key.into();
        let mut entries = self.0.to_vec();
        let old = insert_sorted(&mut entries, key, value);
        self.0 = entries.into();
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.position(key).ok()?;
        let mut entries = self.0.to_vec();
        let (_, old) = entries.remove(i);
        self.0 = entries.into();
        Some(old)
    }
}

fn insert_sorted<V>(entries: &mut Vec<(Sym, V)>, key: Sym, value: V) -> Option<V> {
    match entries.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str())) {
        Ok(i) => Some(std::mem::replace(&mut entries[i].1, value)),
        Err(i) => {
            entries.insert(i, (key, value));
            None
        }
    }
}

impl<K: Into<Sym>, V> FromIterator<(K, V)> for SmallMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries = Vec::new();
        for (k, v) in iter {
            insert_sorted(&mut entries, k.into(), v);
        }
        Self(entries.into())
    }
}

impl<V: std::hash::Hash> std::hash::Hash for SmallMap<V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<V: Serialize> Serialize for SmallMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SmallMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, V>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

/// A point on the map, in WGS 84 degrees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    /// Great-circle distance in kilometres (haversine, mean Earth radius).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = la2 - la1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().asin()
    }
}

/// A maintenance depot: where vehicles return, technicians work and devices can be reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Depot {
    pub id: String,
    /// The city it is in, for people.
    pub name: String,
    pub region: String,
    pub position: GeoPoint,
    /// Standard-time offset from UTC, in minutes: the depot's local time when it names no
    /// `time_zone` (files written before zones were kept).
    pub utc_offset_minutes: i32,
    /// The depot's time zone, a tz database name such as `Europe/Berlin`: local time with its
    /// daylight-saving changes, from the database bundled in the program (never the system's).
    /// Maintenance windows are local; `None` keeps the fixed `utc_offset_minutes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A time zone name the bundled tz database does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {name:?} (expected a tz database name such as Europe/Berlin)")]
pub struct UnknownZone {
    pub name: String,
}

/// A depot's local clock: a tz database zone, or a fixed offset.
#[derive(Clone, Debug)]
pub enum LocalClock {
    Zone(jiff::tz::TimeZone),
    Fixed { offset_secs: i64 },
}

impl LocalClock {
    /// The zone named `name` in the bundled tz database.
    pub fn zone(name: &str) -> Result<Self, UnknownZone> {
        jiff::tz::TimeZone::get(name)
            .map(Self::Zone)
            .map_err(|_| UnknownZone {
                name: name.to_owned(),
            })
    }

    /// The offset from UTC in force at `t`, in seconds (daylight-saving time included).
    pub fn offset_secs_at(&self, t: crate::time::Timestamp) -> i64 {
        match self {
            Self::Fixed { offset_secs } => *offset_secs,
            Self::Zone(tz) => match jiff::Timestamp::from_second(t.secs()) {
                Ok(ts) => i64::from(tz.to_offset(ts).seconds()),
                // Outside jiff's range (years beyond ±9999): the zone's offset now is moot.
                Err(_) => 0,
            },
        }
    }

    /// Seconds after local midnight at `t` (0..86400).
    pub fn local_second_of_day(&self, t: crate::time::Timestamp) -> i64 {
        (t.secs() + self.offset_secs_at(t)).rem_euclid(86_400)
    }
}

impl Depot {
    /// The depot's local clock: its zone when it names one, else its fixed offset.
    pub fn local_clock(&self) -> Result<LocalClock, UnknownZone> {
        match &self.time_zone {
            Some(name) => LocalClock::zone(name),
            None => Ok(LocalClock::Fixed {
                offset_secs: i64::from(self.utc_offset_minutes) * 60,
            }),
        }
    }
}

/// One device of the fleet, with everything a rollout decision reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    /// Model / SKU; also the hardware id a release manifest names.
    pub model: Sym,
    /// Hardware revision within the model (board spin), e.g. `A`, `B`, `C`.
    pub hw_rev: Sym,
    /// Installed version of each component (firmware, bootloader, modem, ...).
    pub components: SmallMap<Version>,
    /// The bank the device booted from.
    pub active_slot: Slot,
    pub region: Sym,
    /// Home depot id.
    pub depot: Sym,
    /// Last known position.
    pub position: GeoPoint,
    pub connectivity: Connectivity,
    /// Whether the current link is billed by volume.
    pub metered: bool,
    /// Battery charge; `None` for devices without a battery.
    pub battery_pct: Option<u8>,
    pub power: PowerState,
    pub free_storage_bytes: u64,
    pub customer_tier: CustomerTier,
    pub device_class: DeviceClass,
    pub redundancy: Redundancy,
    pub last_seen: Timestamp,
    /// Update attempts that failed since the last successful one.
    pub failed_update_attempts: u32,
    /// Free-form attributes (`battery_chem`, `carrier`, customer labels, ...).
    pub tags: SmallMap<Sym>,
}

impl Device {
    /// The installed version of `component`, if the device has it.
    pub fn component(&self, component: &str) -> Option<Version> {
        self.components.get(component).copied()
    }

    /// Application firmware version, the one most rollouts change.
    pub fn firmware(&self) -> Option<Version> {
        self.component(component::FIRMWARE)
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(Sym::as_str)
    }

    /// Seconds since the device was last heard from.
    pub fn offline_secs(&self, now: Timestamp) -> i64 {
        now.secs_since(self.last_seen).max(0)
    }

    /// Whether the device was heard from within `threshold_secs` of `now`.
    pub fn is_online(&self, now: Timestamp, threshold_secs: i64) -> bool {
        self.offline_secs(now) <= threshold_secs
    }

    /// The value of a named attribute as text, so filters, fault matches and strata can address
    /// any field uniformly: model, `hw_rev`, region, depot, connectivity, `power_state`,
    /// `customer_tier`, `device_class`, redundancy, `active_slot`, metered, a component name
    /// (its version), or a tag key.
    pub fn attribute(&self, name: &str) -> Option<String> {
        Some(match name {
            "id" => self.id.clone(),
            "model" => self.model.to_string(),
            "hw_rev" => self.hw_rev.to_string(),
            "region" => self.region.to_string(),
            "depot" => self.depot.to_string(),
            "connectivity" => self.connectivity.to_string(),
            "power" | "power_state" => self.power.to_string(),
            "customer_tier" => self.customer_tier.to_string(),
            "device_class" => self.device_class.to_string(),
            "redundancy" => self.redundancy.to_string(),
            "active_slot" => self.active_slot.to_string(),
            "metered" => self.metered.to_string(),
            other => {
                if let Some(v) = self.components.get(other) {
                    v.to_string()
                } else {
                    return self.tags.get(other).map(ToString::to_string);
                }
            }
        })
    }
}

/// A fleet: devices sorted by id, and their depots sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub depots: Vec<Depot>,
    pub devices: Vec<Device>,
}

impl Fleet {
    /// Builds a fleet, sorting devices and depots by id so that every derived list has a
    /// defined order, and sharing equal strings and maps between devices ([`Interner`]).
    pub fn new(mut depots: Vec<Depot>, mut devices: Vec<Device>) -> Self {
        depots.sort_by(|a, b| a.id.cmp(&b.id));
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let mut interner = Interner::new();
        for d in &mut devices {
            interner.device(d);
        }
        Self { depots, devices }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Looks a device up by id (binary search: devices are sorted by id).
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.devices[i])
    }

    pub fn depot(&self, id: &str) -> Option<&Depot> {
        self.depots
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.depots[i])
    }

    /// Device counts per value of `attribute`, sorted by value.
    pub fn count_by(&self, attribute: &str) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for d in &self.devices {
            let key = d
                .attribute(attribute)
                .unwrap_or_else(|| "(none)".to_owned());
            *counts.entry(key).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_enums_round_trip() {
        for c in Connectivity::ALL {
            assert_eq!(c.as_str().parse::<Connectivity>(), Ok(*c));
        }
        for c in DeviceClass::ALL {
            assert_eq!(c.to_string().parse::<DeviceClass>(), Ok(*c));
        }
        let err = "satellite".parse::<Connectivity>().expect_err("unknown");
        assert!(err.to_string().contains("connectivity"), "{err}");
        assert!(
            err.to_string()
                .contains("ethernet, wifi, cellular, roaming"),
            "{err}"
        );
    }

    #[test]
    fn small_map_keeps_order_and_replaces() {
        let mut m: SmallMap<u32> = [("modem", 1), ("bootloader", 2)].into_iter().collect();
        assert_eq!(m.insert("firmware", 3), None);
        assert_eq!(m.insert("modem", 4), Some(1));
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bootloader", "firmware", "modem"]);
        let json = serde_json::to_string(&m).expect("serialise");
        assert_eq!(json, r#"{"bootloader":2,"firmware":3,"modem":4}"#);
        let back: SmallMap<u32> = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn distance_between_cities() {
        let berlin = GeoPoint {
            lat: 52.52,
            lon: 13.405,
        };
        let paris = GeoPoint {
            lat: 48.8566,
            lon: 2.3522,
        };
        let km = berlin.distance_km(paris);
        assert!((870.0..890.0).contains(&km), "{km}");
    }
}
