//! What the console knows about the fleet: the devices from the cache, updated in place by the
//! status and telemetry that arrive over the link, plus what only the session sees (update
//! state, progress, recent crashes, the latest events).
//!
//! [`FleetModel`] is plain data with no egui: the app applies backend events to it once per
//! frame, and views read it. Every change bumps [`FleetModel::revision`]. Derived data (filter
//! results, sort orders, map grids, cohort summaries) is computed by the derive worker
//! (`gui::derive`) from its own replica, which the app keeps in step by forwarding each change;
//! nothing fleet-sized is recomputed on the UI thread per frame.
//!
//! The fleet as loaded is one immutable `Arc<Fleet>` shared by the UI's model, the worker's
//! replica, the planner and the scorer ([`SharedDevices`], issue 22); each model keeps only the
//! devices changed since the load beside it.
//!
//! Deliberately not here: writing to the cache (the console reads it; recording status is the
//! engine's job) and any decision (that is `convoy_core`'s).

use convoy_core::fleet::{Device, Fleet};
use convoy_core::time::Timestamp;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::gui::basemap::mercator;
use crate::link::protocol::{
    AckResult, CommandAck, DeviceStatus, Inbound, Telemetry, TelemetryEvent, UpdateState,
};

/// A device not heard from for this long is stale; for [`OFFLINE_SECS`], offline.
pub const STALE_SECS: i64 = 3600;
pub const OFFLINE_SECS: i64 = 24 * 3600;
/// A crash within this long makes a device "crashing" in the health view.
pub const CRASH_WINDOW_SECS: i64 = 3600;
/// Below this battery level a device on battery is flagged.
pub const LOW_BATTERY_PCT: u8 = 20;
/// How many recent events the model keeps (the event list, the war room).
pub const EVENT_LOG_LEN: usize = 200;

/// What the session has seen of one device beyond its cache record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// `None` until a status report arrives in this session.
    pub update_state: Option<UpdateState>,
    pub release_id: Option<String>,
    pub progress_pct: Option<u8>,
    /// Why the last update failed or reverted, in the device's words.
    pub reason: Option<String>,
    pub crashes: u32,
    pub last_crash: Option<Timestamp>,
    /// The latest telemetry, as a short line.
    pub last_telemetry: Option<(Timestamp, String)>,
    pub messages: u32,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub at: Timestamp,
    pub device_id: String,
    pub text: String,
    pub severity: Severity,
}

/// How loudly an event should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Problem,
}

/// What the map and the legend colour devices by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ColorMode {
    #[default]
    UpdateState,
    Health,
    /// Each device's state in one rollout, as the engine's log records it (the rollout the
    /// monitor shows; see [`RolloutMap`]).
    RolloutState,
}

impl ColorMode {
    pub const ALL: [ColorMode; 3] = [
        ColorMode::UpdateState,
        ColorMode::Health,
        ColorMode::RolloutState,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ColorMode::UpdateState => "Update state",
            ColorMode::Health => "Health",
            ColorMode::RolloutState => "Rollout state",
        }
    }

    /// The names of the classes, in class order.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            ColorMode::UpdateState => &[
                "no report yet",
                "idle",
                "offered / downloading",
                "installing / rebooting",
                "confirmed",
                "failed",
                "reverted",
            ],
            ColorMode::Health => &[
                "healthy",
                "stale (> 1 h)",
                "offline (> 1 day)",
                "low battery",
                "crashing / failed updates",
            ],
            ColorMode::RolloutState => &[
                "not in the rollout",
                "planned, not offered",
                "offered / downloading",
                "installing / rebooting",
                "confirmed",
                "failed",
                "reverted",
                "silent",
            ],
        }
    }
}

/// Every device of one rollout with its [`ColorMode::RolloutState`] class, from the rollout's
/// replayed log (the monitor's worker builds it; the derive worker joins it with the fleet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutMap {
    pub rollout_id: String,
    /// The rollout's devices, sorted by id.
    pub device_ids: Vec<String>,
    /// The class of each of `device_ids`, from 1 ([`rollout_class`]).
    pub classes: Vec<u8>,
}

/// The rollout-state class of a device in a rollout (index into
/// [`ColorMode::class_names`]): silence shows over a state the rollout still waits on.
pub fn rollout_class(state: convoy_core::rollout::DeviceState, silent: bool) -> u8 {
    use convoy_core::rollout::DeviceState as S;
    match state {
        _ if silent && !state.is_terminal() => 7,
        S::Pending => 1,
        S::Offered | S::Downloading | S::Verified => 2,
        S::Installing | S::Rebooting => 3,
        S::Healthy => 4,
        S::Failed => 5,
        S::Reverted => 6,
    }
}

/// The rollout-state class of every device of `fleet` (sorted by id): its class in `map`, or
/// 0 when it is not in the rollout (or no rollout is known). One merge of two sorted lists.
pub fn rollout_classes(fleet: &Fleet, map: Option<&RolloutMap>) -> Vec<u8> {
    let mut classes = vec![0; fleet.devices.len()];
    let Some(map) = map else {
        return classes;
    };
    let mut j = 0;
    for (i, d) in fleet.devices.iter().enumerate() {
        while j < map.device_ids.len() && map.device_ids[j].as_str() < d.id.as_str() {
            j += 1;
        }
        if map.device_ids.get(j).is_some_and(|id| *id == d.id) {
            classes[i] = map.classes.get(j).copied().unwrap_or(0);
        }
    }
    classes
}

/// The update-state class of a device (index into [`ColorMode::class_names`]).
pub fn update_class(state: Option<UpdateState>) -> u8 {
    match state {
        None => 0,
        Some(UpdateState::Idle) => 1,
        Some(UpdateState::Offered | UpdateState::Downloading | UpdateState::Verified) => 2,
        Some(UpdateState::Installing | UpdateState::Rebooting) => 3,
        Some(UpdateState::Confirmed) => 4,
        Some(UpdateState::Failed) => 5,
        Some(UpdateState::Reverted) => 6,
    }
}

/// The health class of a device at `now`: the worst of crashing, offline, stale, low battery.
pub fn health_class(device: &Device, live: &Live, now: Timestamp) -> u8 {
    let crashing = live
        .last_crash
        .is_some_and(|t| now.secs_since(t) <= CRASH_WINDOW_SECS)
        || device.failed_update_attempts > 0
        || matches!(
            live.update_state,
            Some(UpdateState::Failed | UpdateState::Reverted)
        );
    let silent = device.offline_secs(now);
    if crashing {
        4
    } else if silent > OFFLINE_SECS {
        2
    } else if silent > STALE_SECS {
        1
    } else if device.power == convoy_core::fleet::PowerState::Battery
        && device.battery_pct.is_some_and(|b| b < LOW_BATTERY_PCT)
    {
        3
    } else {
        0
    }
}

/// The devices of a [`FleetModel`]: the fleet as loaded, shared (an `Arc`, never copied: the
/// UI's model, the derive worker's replica, the planner and the scorer all hold the same one),
/// and the devices this model changed since, each copied once on its first change. Reads see
/// the changed copy when there is one. Indexed like the `Vec` it replaces, in the same order
/// (sorted by id; ids never change).
#[derive(Debug, Clone, Default)]
pub struct SharedDevices {
    base: Arc<Fleet>,
    /// Empty until the first change, then one slot per device.
    changed: Vec<Option<Box<Device>>>,
    changed_count: usize,
}

impl SharedDevices {
    pub fn new(base: Arc<Fleet>) -> Self {
        Self {
            base,
            changed: Vec::new(),
            changed_count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.base.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base.devices.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&Device> {
        match self.changed.get(i) {
            Some(Some(d)) => Some(d),
            _ => self.base.devices.get(i),
        }
    }

    /// Every device in order, the changed copy where there is one.
    pub fn iter(&self) -> impl Iterator<Item = &Device> + '_ {
        let changed = &self.changed;
        self.base
            .devices
            .iter()
            .enumerate()
            .map(move |(i, d)| match changed.get(i) {
                Some(Some(c)) => c,
                _ => d,
            })
    }

    /// The index of device `id`: ids never change, so the shared fleet's order holds.
    pub fn binary_search_by_id(&self, id: &str) -> Option<usize> {
        self.base
            .devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
    }

    /// Device `i`, to change: copied from the shared fleet on its first change.
    ///
    /// # Panics
    /// When `i` is out of range, as indexing a `Vec` does.
    pub fn make_mut(&mut self, i: usize) -> &mut Device {
        if self.changed.is_empty() {
            self.changed.resize_with(self.base.devices.len(), || None);
        }
        let slot = &mut self.changed[i];
        if slot.is_none() {
            self.changed_count += 1;
        }
        slot.get_or_insert_with(|| Box::new(self.base.devices[i].clone()))
    }

    /// How many devices this model changed since the load (each one copy of a device).
    pub fn changed_count(&self) -> usize {
        self.changed_count
    }

    /// The fleet as loaded, shared.
    pub fn base(&self) -> &Arc<Fleet> {
        &self.base
    }

    /// The fleet as this model sees it now: the shared one itself while nothing changed (no
    /// copy), else a copy with the changes applied (fleet-sized: made once, where asked).
    pub fn current(&self) -> Arc<Fleet> {
        if self.changed_count == 0 {
            return Arc::clone(&self.base);
        }
        let mut fleet = Fleet::clone(&self.base);
        for (d, c) in fleet.devices.iter_mut().zip(&self.changed) {
            if let Some(c) = c {
                d.clone_from(c);
            }
        }
        Arc::new(fleet)
    }
}

impl std::ops::Index<usize> for SharedDevices {
    type Output = Device;

    fn index(&self, i: usize) -> &Device {
        match self.changed.get(i) {
            Some(Some(d)) => d,
            _ => &self.base.devices[i],
        }
    }
}

/// The fleet a [`FleetModel`] shows: `fleet.devices[i]` reads as it did when this was a
/// [`Fleet`] of its own.
#[derive(Debug, Clone, Default)]
pub struct ModelFleet {
    pub devices: SharedDevices,
}

/// The console's fleet: devices sorted by id, with live state and map coordinates alongside.
#[derive(Debug, Default)]
pub struct FleetModel {
    pub fleet: ModelFleet,
    pub live: Vec<Live>,
    /// Normalised Web Mercator position of each device (for the map grid).
    pub map_x: Vec<f32>,
    pub map_y: Vec<f32>,
    /// Bumped on every change.
    pub revision: u64,
    /// The latest events, newest last.
    pub events: VecDeque<EventLine>,
    /// When the latest message arrived (device time).
    pub last_message: Option<Timestamp>,
    pub messages: u64,
    /// Messages for devices that the cache does not hold.
    pub unknown_devices: u64,
    pub rejected: u64,
}

impl FleetModel {
    pub fn new(fleet: Fleet) -> Self {
        Self::shared(Arc::new(fleet))
    }

    /// The model of a fleet shared with others (the derive worker, the planner): nothing of
    /// the fleet is copied.
    pub fn shared(fleet: Arc<Fleet>) -> Self {
        let n = fleet.devices.len();
        let (map_x, map_y) = fleet
            .devices
            .iter()
            .map(|d| {
                let [x, y] = mercator(d.position.lon, d.position.lat);
                (x as f32, y as f32)
            })
            .unzip();
        Self {
            fleet: ModelFleet {
                devices: SharedDevices::new(fleet),
            },
            live: vec![Live::default(); n],
            map_x,
            map_y,
            revision: 1,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.fleet.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fleet.devices.is_empty()
    }

    /// The index of device `id` (devices are sorted by id).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.fleet.devices.binary_search_by_id(id)
    }

    /// The newest `last_seen` in the fleet: how fresh the cache is.
    pub fn newest_last_seen(&self) -> Option<Timestamp> {
        self.fleet.devices.iter().map(|d| d.last_seen).max()
    }

    /// Applies one validated inbound message.
    pub fn apply(&mut self, inbound: &Inbound) {
        self.messages += 1;
        let Some(i) = self.index_of(inbound.device_id()) else {
            self.unknown_devices += 1;
            return;
        };
        self.revision += 1;
        self.live[i].messages += 1;
        match inbound {
            Inbound::Status(s) => self.apply_status(i, s),
            Inbound::Telemetry(t) => self.apply_telemetry(i, t),
            Inbound::Ack(a) => self.apply_ack(a),
        }
    }

    fn seen(&mut self, i: usize, ts: Timestamp) {
        if ts > self.fleet.devices[i].last_seen {
            self.fleet.devices.make_mut(i).last_seen = ts;
        }
        if self.last_message.is_none_or(|t| ts > t) {
            self.last_message = Some(ts);
        }
    }

    fn apply_status(&mut self, i: usize, status: &DeviceStatus) {
        let s = status;
        self.seen(i, s.ts);
        let before = self.live[i].update_state;
        {
            s.apply_to(self.fleet.devices.make_mut(i));
            if let Some(p) = s.position {
                let [x, y] = mercator(p.lon, p.lat);
                self.map_x[i] = x as f32;
                self.map_y[i] = y as f32;
            }
        }
        let live = &mut self.live[i];
        live.update_state = Some(s.update.state);
        live.release_id.clone_from(&s.update.release_id);
        live.progress_pct = s.update.progress_pct;
        live.reason.clone_from(&s.update.reason);
        if before.is_some() && before != Some(s.update.state) {
            let severity = match s.update.state {
                UpdateState::Failed | UpdateState::Reverted => Severity::Problem,
                _ => Severity::Info,
            };
            let mut text = format!("update {}", state_name(s.update.state));
            if let Some(r) = &s.update.release_id {
                let _ = write!(text, " ({r})");
            }
            if let Some(r) = &s.update.reason {
                let _ = write!(text, ": {r}");
            }
            self.log(s.ts, &s.device_id, text, severity);
        }
    }

    fn apply_telemetry(&mut self, i: usize, t: &Telemetry) {
        self.seen(i, t.ts);
        let (text, severity) = match &t.event {
            TelemetryEvent::Heartbeat { uptime_secs } => {
                (format!("heartbeat, up {uptime_secs} s"), None)
            }
            TelemetryEvent::Crash { process } => {
                self.live[i].crashes += 1;
                self.live[i].last_crash = Some(t.ts);
                (format!("crash: {process}"), Some(Severity::Warning))
            }
            TelemetryEvent::Boot { slot, ok } => {
                let s = if *ok { None } else { Some(Severity::Problem) };
                (
                    format!("boot slot {slot}{}", if *ok { "" } else { " FAILED" }),
                    s,
                )
            }
            TelemetryEvent::Battery { pct } => {
                self.fleet.devices.make_mut(i).battery_pct = Some(*pct);
                (format!("battery {pct} %"), None)
            }
            TelemetryEvent::Reconnect { offline_secs, ok } => {
                let s = if *ok {
                    Severity::Info
                } else {
                    Severity::Warning
                };
                (
                    format!(
                        "reconnect after {offline_secs} s{}",
                        if *ok { "" } else { " (failed)" }
                    ),
                    Some(s),
                )
            }
            TelemetryEvent::UpdateProgress {
                release_id,
                state,
                bytes_done,
                bytes_total,
            } => {
                let pct = (bytes_done.saturating_mul(100))
                    .checked_div(*bytes_total)
                    .map_or(0, |p| p.min(100) as u8);
                self.live[i].progress_pct = Some(pct);
                (
                    format!("{release_id}: {} {pct} %", state_name(*state)),
                    None,
                )
            }
            TelemetryEvent::Metric { name, value } => (format!("{name} = {value}"), None),
        };
        if let Some(severity) = severity {
            self.log(t.ts, &t.device_id, text.clone(), severity);
        }
        self.live[i].last_telemetry = Some((t.ts, text));
    }

    fn apply_ack(&mut self, a: &CommandAck) {
        let (what, severity) = match a.result {
            AckResult::Accepted => ("accepted", Severity::Info),
            AckResult::Rejected => ("rejected", Severity::Warning),
            AckResult::Duplicate => ("ignored a duplicate of", Severity::Info),
        };
        let mut text = format!("{what} command {}", a.command_id);
        if let Some(r) = &a.reason {
            let _ = write!(text, ": {r}");
        }
        self.log(a.ts, &a.device_id, text, severity);
    }

    /// Adds a line to the event log (bounded).
    pub fn log(&mut self, at: Timestamp, device_id: &str, text: String, severity: Severity) {
        if self.events.len() >= EVENT_LOG_LEN {
            self.events.pop_front();
        }
        self.events.push_back(EventLine {
            at,
            device_id: device_id.to_owned(),
            text,
            severity,
        });
        self.revision += 1;
    }

    /// The colour class of every device in `mode` at `now`; `rollout` gives the classes of
    /// [`ColorMode::RolloutState`] (without it, every device is "not in the rollout").
    pub fn classes(
        &self,
        mode: ColorMode,
        now: Timestamp,
        rollout: Option<&RolloutMap>,
    ) -> Vec<u8> {
        match mode {
            ColorMode::RolloutState => rollout_classes(self.fleet.devices.base(), rollout),
            ColorMode::UpdateState => self
                .live
                .iter()
                .map(|l| update_class(l.update_state))
                .collect(),
            ColorMode::Health => self
                .fleet
                .devices
                .iter()
                .zip(&self.live)
                .map(|(d, l)| health_class(d, l, now))
                .collect(),
        }
    }
}

/// The protocol's name of an update state.
pub fn state_name(state: UpdateState) -> &'static str {
    match state {
        UpdateState::Idle => "idle",
        UpdateState::Offered => "offered",
        UpdateState::Downloading => "downloading",
        UpdateState::Verified => "verified",
        UpdateState::Installing => "installing",
        UpdateState::Rebooting => "rebooting",
        UpdateState::Confirmed => "confirmed",
        UpdateState::Failed => "failed",
        UpdateState::Reverted => "reverted",
    }
}

/// Counts per class.
pub fn class_counts(
    classes: &[u8],
    of: impl Iterator<Item = usize>,
) -> [u32; crate::gui::aggregate::CLASSES] {
    let mut counts = [0; crate::gui::aggregate::CLASSES];
    for i in of {
        let k = usize::from(classes.get(i).copied().unwrap_or(0)).min(counts.len() - 1);
        counts[k] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};

    fn model() -> FleetModel {
        FleetModel::new(generate(&SynthOptions {
            devices: 50,
            seed: 3,
            now: Timestamp::from_secs(1_800_000_000),
        }))
    }

    fn status(device: &Device, state: UpdateState, ts: i64) -> Inbound {
        Inbound::Status(DeviceStatus {
            v: 1,
            device_id: device.id.clone(),
            ts: Timestamp::from_secs(ts),
            active_slot: device.active_slot,
            components: device.components.clone(),
            update: crate::link::protocol::UpdateStatus {
                state,
                release_id: Some("fw-2.5.0".into()),
                command_id: None,
                progress_pct: None,
                reason: (state == UpdateState::Reverted)
                    .then(|| "health window: crash loop".into()),
            },
            battery_pct: Some(80),
            power: device.power,
            connectivity: device.connectivity,
            metered: false,
            free_storage_bytes: 1,
            position: Some(convoy_core::fleet::GeoPoint {
                lat: 10.0,
                lon: 20.0,
            }),
        })
    }

    #[test]
    fn the_fleet_is_shared_and_only_changed_devices_are_copied() {
        let fleet = Arc::new(generate(&SynthOptions {
            devices: 50,
            seed: 3,
            now: Timestamp::from_secs(1_800_000_000),
        }));
        let mut ui = FleetModel::shared(Arc::clone(&fleet));
        let worker = FleetModel::shared(Arc::clone(&fleet));
        // Nothing copied: both models and the planner's fleet are the loaded one.
        assert!(Arc::ptr_eq(ui.fleet.devices.base(), &fleet));
        assert!(Arc::ptr_eq(&ui.fleet.devices.current(), &fleet));
        assert_eq!(ui.fleet.devices.changed_count(), 0);

        let before = fleet.devices[7].clone();
        ui.apply(&status(&before, UpdateState::Downloading, 1_800_000_100));
        ui.apply(&status(&before, UpdateState::Installing, 1_800_000_200));
        assert_eq!(ui.fleet.devices.changed_count(), 1);
        // The change shows through every read of the model...
        let seen = Timestamp::from_secs(1_800_000_200);
        assert_eq!(ui.fleet.devices[7].last_seen, seen);
        assert_eq!(ui.fleet.devices.get(7).map(|d| d.last_seen), Some(seen));
        assert_eq!(
            ui.fleet.devices.iter().nth(7).map(|d| d.last_seen),
            Some(seen)
        );
        // ...and in the fleet handed to the planner, a copy with the change...
        let current = ui.fleet.devices.current();
        assert!(!Arc::ptr_eq(&current, &fleet));
        assert_eq!(current.devices[7].last_seen, seen);
        assert_eq!(current.devices[8], fleet.devices[8]);
        // ...while the shared fleet and the other model's view of it are untouched.
        assert_eq!(fleet.devices[7], before);
        assert_eq!(worker.fleet.devices[7], before);
        assert_eq!(ui.index_of(&before.id), Some(7));
    }

    #[test]
    fn status_updates_the_device_and_logs_state_changes() {
        let mut m = model();
        let dev = m.fleet.devices[7].clone();
        let rev = m.revision;
        m.apply(&status(&dev, UpdateState::Idle, 1_800_000_100));
        assert!(m.revision > rev);
        assert_eq!(m.live[7].update_state, Some(UpdateState::Idle));
        assert_eq!(
            m.fleet.devices[7].last_seen,
            Timestamp::from_secs(1_800_000_100)
        );
        assert_eq!(m.fleet.devices[7].battery_pct, Some(80));
        let [mx, my] = mercator(20.0, 10.0);
        assert_eq!((m.map_x[7], m.map_y[7]), (mx as f32, my as f32));
        // The first report is not a change; idle -> reverted is, and it is a problem.
        assert!(m.events.is_empty());
        m.apply(&status(&dev, UpdateState::Reverted, 1_800_000_200));
        let e = m.events.back().expect("logged");
        assert_eq!(e.device_id, dev.id);
        assert_eq!(e.severity, Severity::Problem);
        assert!(
            e.text
                .contains("reverted (fw-2.5.0): health window: crash loop"),
            "{}",
            e.text
        );
        let classes = m.classes(
            ColorMode::UpdateState,
            Timestamp::from_secs(1_800_000_300),
            None,
        );
        assert_eq!(classes[7], 6);
        assert_eq!(classes[8], 0);
    }

    #[test]
    fn crashes_make_a_device_unhealthy_for_an_hour() {
        let mut m = model();
        let i = (0..m.len())
            .find(|&i| m.fleet.devices[i].failed_update_attempts == 0)
            .expect("a device without failed attempts");
        let id = m.fleet.devices[i].id.clone();
        let t0 = 1_800_000_000;
        m.fleet.devices.make_mut(i).last_seen = Timestamp::from_secs(t0);
        m.fleet.devices.make_mut(i).power = convoy_core::fleet::PowerState::Mains;
        let now = Timestamp::from_secs(t0 + 10);
        assert_eq!(health_class(&m.fleet.devices[i], &m.live[i], now), 0);
        m.apply(&Inbound::Telemetry(Telemetry {
            v: 1,
            device_id: id,
            ts: now,
            seq: 1,
            event: TelemetryEvent::Crash {
                process: "telematics".into(),
            },
        }));
        assert_eq!(m.live[i].crashes, 1);
        assert_eq!(health_class(&m.fleet.devices[i], &m.live[i], now), 4);
        let later = Timestamp::from_secs(t0 + 10 + CRASH_WINDOW_SECS + 1);
        // An hour later the crash has aged out, and the device has been silent for an hour: stale.
        assert_eq!(health_class(&m.fleet.devices[i], &m.live[i], later), 1);
    }

    #[test]
    fn unknown_devices_are_counted_not_added() {
        let mut m = model();
        let mut d = m.fleet.devices[0].clone();
        d.id = "not-in-cache".into();
        m.apply(&status(&d, UpdateState::Idle, 1_800_000_100));
        assert_eq!((m.unknown_devices, m.len()), (1, 50));
    }

    #[test]
    fn the_event_log_is_bounded() {
        let mut m = model();
        for k in 0..(EVENT_LOG_LEN + 10) {
            m.log(
                Timestamp::from_secs(k as i64),
                "d",
                format!("e{k}"),
                Severity::Info,
            );
        }
        assert_eq!(m.events.len(), EVENT_LOG_LEN);
        assert_eq!(m.events.front().map(|e| e.text.as_str()), Some("e10"));
    }

    #[test]
    fn rollout_classes_join_the_rollout_with_the_fleet_by_id() {
        use convoy_core::rollout::DeviceState as S;
        let m = model();
        let ids: Vec<String> = m.fleet.devices.iter().map(|d| d.id.clone()).collect();
        // Devices 1, 3 and 4 are in the rollout, and one the fleet does not hold.
        let map = RolloutMap {
            rollout_id: "r".into(),
            device_ids: vec![
                ids[1].clone(),
                ids[3].clone(),
                ids[4].clone(),
                "zz-gone".into(),
            ],
            classes: vec![
                rollout_class(S::Healthy, false),
                rollout_class(S::Downloading, true),
                rollout_class(S::Reverted, true),
                rollout_class(S::Pending, false),
            ],
        };
        let classes = m.classes(ColorMode::RolloutState, Timestamp::from_secs(0), Some(&map));
        assert_eq!(&classes[..6], &[0, 4, 0, 7, 6, 0]);
        assert_eq!(classes.len(), m.len());
        assert!(
            m.classes(ColorMode::RolloutState, Timestamp::from_secs(0), None)
                .iter()
                .all(|&k| k == 0)
        );
        assert_eq!(
            ColorMode::RolloutState.class_names().len(),
            crate::gui::aggregate::CLASSES
        );
    }
}
