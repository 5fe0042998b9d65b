//! The representative canary: a small set of eligible devices that covers the fleet's real
//! diversity, and a coverage report that says which strata it represents and which it misses,
//! and why.
//!
//! Method (stratified sampling with floors, greedy and deterministic):
//! 1. Strata are (attribute, value) pairs over the targeted fleet (devices whose model the
//!    release is built for), one family per `canary.strata` attribute; a stratum is meaningful
//!    when its share of the targeted fleet is at least `meaningful_share_pct`.
//! 2. Candidates are devices eligible now, not critical at their peak when their depot's first
//!    window opens, and (if set) in `canary.depot`. Candidates are ranked: online before
//!    offline, near their depot before far, then by a seeded random key per device.
//! 3. Floors first, rarest stratum first: each meaningful stratum takes its best-ranked
//!    candidates until it has `floor_per_stratum`, preferring (among its next few) the device
//!    that also fills the most other unmet floors.
//! 4. Remaining places go in rank order to devices whose strata are all below their
//!    proportional share of the canary, then to anyone.
//!
//! It deliberately covers each attribute's values (marginals), not every combination of them:
//! combinations explode, and a compound attribute (`model+hw_rev`) names any combination that
//! matters.

use crate::fleet::{Device, Fleet};
use crate::rng::SeededRng;
use crate::time::Timestamp;
use serde::Serialize;

use super::eligibility::{DeviceEligibility, Status};
use super::policy::PlanningPolicy;
use super::schedule::Calendar;

/// How many of a stratum's next candidates the floor step compares.
const LOOKAHEAD: usize = 32;

/// Whether a stratum made it into the canary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "why")]
pub enum Coverage {
    /// At least the floor.
    Represented,
    /// Some devices, fewer than the floor.
    BelowFloor(String),
    /// Meaningful but absent.
    Missing(String),
    /// Below the meaningful share; not required.
    NotRequired,
}

/// One stratum's row in the coverage report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StratumCoverage {
    pub attribute: String,
    pub value: String,
    /// Devices of the targeted fleet in this stratum.
    pub devices: usize,
    pub share_pct: f64,
    pub eligible_now: usize,
    pub candidates: usize,
    pub canary: usize,
    pub coverage: Coverage,
}

/// The canary and its coverage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CanaryReport {
    /// Indices into `fleet.devices`, ascending (so in id order).
    #[serde(skip)]
    pub devices: Vec<u32>,
    /// Device ids, in id order.
    pub device_ids: Vec<String>,
    pub target_size: usize,
    pub candidates: usize,
    /// Eligible-now devices left out because they are critical and at their peak.
    pub excluded_critical_at_peak: usize,
    /// Eligible-now devices left out because they are outside `canary.depot`.
    pub excluded_outside_depot: usize,
    /// Canary devices offline longer than the online threshold (picked only when needed).
    pub offline: usize,
    /// Canary devices farther from their depot than `near_depot_km`.
    pub far_from_depot: usize,
    /// Every stratum, by attribute (in policy order) then by descending size.
    pub strata: Vec<StratumCoverage>,
    /// One line per meaningful stratum that is missing or below its floor.
    pub flags: Vec<String>,
}

/// Inputs the canary needs beyond the fleet.
pub struct CanaryInput<'a> {
    pub fleet: &'a Fleet,
    pub eligibility: &'a [DeviceEligibility],
    /// Fleet indices of the targeted fleet (release supports the model), ascending.
    pub targeted: &'a [u32],
    pub policy: &'a PlanningPolicy,
    pub calendar: &'a Calendar,
    /// Per fleet index: the device's calendar group.
    pub group_of: &'a [u32],
    /// Per calendar group: local minute of day when it first opens (None: never opens).
    pub first_open_minute: &'a [Option<u16>],
    pub now: Timestamp,
    pub seed: u64,
}

/// One part of a stratum attribute, parsed once so the per-device loop compares no names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Model,
    HwRev,
    Region,
    Depot,
    Connectivity,
    Power,
    Tier,
    Class,
    Redundancy,
    Slot,
    Metered,
    /// A component's version if the device has one, else a tag of that name, else `(none)`.
    Other(String),
}

/// A parsed attribute (`model+hw_rev` is two fields, written joined by `/`).
#[derive(Clone, Debug)]
pub(super) struct Attribute(Vec<Field>);

impl Attribute {
    pub(super) fn parse(text: &str) -> Self {
        Self(
            text.split('+')
                .map(|part| match part.trim() {
                    "model" => Field::Model,
                    "hw_rev" => Field::HwRev,
                    "region" => Field::Region,
                    "depot" => Field::Depot,
                    "connectivity" => Field::Connectivity,
                    "power" | "power_state" => Field::Power,
                    "customer_tier" => Field::Tier,
                    "device_class" => Field::Class,
                    "redundancy" => Field::Redundancy,
                    "active_slot" => Field::Slot,
                    "metered" => Field::Metered,
                    other => Field::Other(other.to_owned()),
                })
                .collect(),
        )
    }

    /// Appends the device's value to `out` without allocating (versions are written digit by
    /// digit: `fmt` machinery is the hot spot of a million-device canary otherwise).
    pub(super) fn write(&self, d: &Device, out: &mut String) {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match field {
                Field::Model => out.push_str(&d.model),
                Field::HwRev => out.push_str(&d.hw_rev),
                Field::Region => out.push_str(&d.region),
                Field::Depot => out.push_str(&d.depot),
                Field::Connectivity => out.push_str(d.connectivity.as_str()),
                Field::Power => out.push_str(d.power.as_str()),
                Field::Tier => out.push_str(d.customer_tier.as_str()),
                Field::Class => out.push_str(d.device_class.as_str()),
                Field::Redundancy => out.push_str(d.redundancy.as_str()),
                Field::Slot => out.push_str(d.active_slot.as_str()),
                Field::Metered => out.push_str(if d.metered { "true" } else { "false" }),
                Field::Other(name) => {
                    if let Some(v) = super::component(d, name) {
                        for (k, part) in v.parts().iter().enumerate() {
                            if k > 0 {
                                out.push('.');
                            }
                            push_u32(out, *part);
                        }
                    } else if let Some(t) = d.tags.get(name) {
                        out.push_str(t);
                    } else {
                        out.push_str("(none)");
                    }
                }
            }
        }
    }
}

fn push_u32(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        out.push(char::from(d));
    }
}

/// A field's value as a hash key, without building its text: a shared string's address, an
/// enum's or flag's index, or a version by its parts as written (`2.0` and `2.0.0` are written
/// apart). Keys only group devices into combinations, whose stratum is then named by its text:
/// two equal strings at two addresses (a fleet not built through one `Interner`) make two
/// combinations with one stratum, so the canary is the same either way; the fleet is borrowed
/// for the whole selection, so no address is reused meanwhile.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum FieldKey {
    Shared(usize),
    Index(u8),
    Version([u32; 4], u8),
    Missing,
}

impl Field {
    fn key(&self, d: &Device) -> FieldKey {
        match self {
            Field::Model => FieldKey::Shared(d.model.addr()),
            Field::HwRev => FieldKey::Shared(d.hw_rev.addr()),
            Field::Region => FieldKey::Shared(d.region.addr()),
            Field::Depot => FieldKey::Shared(d.depot.addr()),
            Field::Connectivity => FieldKey::Index(d.connectivity as u8),
            Field::Power => FieldKey::Index(d.power as u8),
            Field::Tier => FieldKey::Index(d.customer_tier as u8),
            Field::Class => FieldKey::Index(d.device_class as u8),
            Field::Redundancy => FieldKey::Index(d.redundancy as u8),
            Field::Slot => FieldKey::Index(d.active_slot as u8),
            Field::Metered => FieldKey::Index(u8::from(d.metered)),
            Field::Other(name) => {
                if let Some(v) = super::component(d, name) {
                    let mut parts = [0u32; 4];
                    let written = v.parts();
                    parts[..written.len()].copy_from_slice(written);
                    FieldKey::Version(parts, written.len() as u8)
                } else if let Some(t) = d.tags.get(name) {
                    FieldKey::Shared(t.addr())
                } else {
                    FieldKey::Missing
                }
            }
        }
    }
}

/// Gives every (attribute, value) of the targeted devices a stratum id, in order of first
/// appearance (device order, then attribute order), exactly as interning each value's text
/// would, but without writing and hashing the text per device.
///
/// Each distinct field is keyed once per device ([`FieldKey`], ids dense per field); an
/// attribute's combination of field ids is then a small integer key. Only a combination seen
/// for the first time writes its text, which is interned as before: two combinations that
/// read the same (`a/b`+`c` and `a`+`b/c`) share one stratum.
struct StrataInterner<'p> {
    attrs: &'p [Attribute],
    /// Distinct fields across all attributes.
    fields: Vec<&'p Field>,
    /// Per attribute, indices into `fields`.
    attr_fields: Vec<Vec<usize>>,
    field_ids: Vec<super::FastMap<FieldKey, u32>>,
    /// Per attribute: (combination so far, next field id) → combination id, for attributes
    /// of several fields.
    combos: Vec<super::FastMap<(u32, u32), u32>>,
    /// Per attribute, by combination id (or field id for one-field attributes): the stratum.
    stratum_of: Vec<Vec<u32>>,
    texts: Vec<super::FastMap<String, u32>>,
    /// (attribute index, value text) per stratum id.
    names: Vec<(usize, String)>,
    row: Vec<u32>,
    buf: String,
    /// Whole strata rows by the device's shape ([`ShapeKey`]): most devices share their
    /// shared values with thousands of others, so one lookup replaces a lookup per field and
    /// per combination. `None` when the attributes read more than the key holds.
    shapes: Option<super::FastMap<ShapeKey, u32>>,
    /// Rows of stratum ids, `attrs.len()` each: one per shape, or per device without one.
    rows: Vec<u32>,
}

/// The identities of every value a device's strata read: shared strings' and maps'
/// addresses and enum indices, in field order (a component or tag field reads the device's
/// component and tag maps, whose contents decide its value). Two devices with equal keys
/// have equal values in every field, as long as the fleet is borrowed (no address is reused).
type ShapeKey = [usize; SHAPE_WORDS];
const SHAPE_WORDS: usize = 10;
/// Beyond this many distinct shapes the cache stops growing (a fleet whose values are not
/// shared has a shape per device): the rest are computed field by field, as without it.
const MAX_SHAPES: usize = 1 << 16;

impl<'p> StrataInterner<'p> {
    fn new(attrs: &'p [Attribute]) -> Self {
        let mut fields: Vec<&'p Field> = Vec::new();
        let attr_fields = attrs
            .iter()
            .map(|a| {
                a.0.iter()
                    .map(|f| {
                        fields.iter().position(|g| *g == f).unwrap_or_else(|| {
                            fields.push(f);
                            fields.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        let n_fields = fields.len();
        Self {
            attrs,
            fields,
            attr_fields,
            field_ids: vec![super::FastMap::default(); n_fields],
            combos: vec![super::FastMap::default(); attrs.len()],
            stratum_of: vec![Vec::new(); attrs.len()],
            texts: vec![super::FastMap::default(); attrs.len()],
            names: Vec::new(),
            row: vec![0; n_fields],
            buf: String::new(),
            shapes: None,
            rows: Vec::new(),
        }
        .with_shapes()
    }

    /// Turns on the shape cache if every field's identity fits in a [`ShapeKey`].
    fn with_shapes(mut self) -> Self {
        let words = self
            .fields
            .iter()
            .filter(|f| !matches!(f, Field::Other(_)))
            .count()
            + if self.fields.iter().any(|f| matches!(f, Field::Other(_))) {
                2
            } else {
                0
            };
        if words <= SHAPE_WORDS {
            self.shapes = Some(super::FastMap::default());
        }
        self
    }

    fn shape_key(&self, d: &Device) -> ShapeKey {
        let mut key = [usize::MAX; SHAPE_WORDS];
        let mut at = 0;
        let mut maps = false;
        for field in &self.fields {
            let word = match field {
                Field::Model => d.model.addr(),
                Field::HwRev => d.hw_rev.addr(),
                Field::Region => d.region.addr(),
                Field::Depot => d.depot.addr(),
                Field::Connectivity => d.connectivity as usize,
                Field::Power => d.power as usize,
                Field::Tier => d.customer_tier as usize,
                Field::Class => d.device_class as usize,
                Field::Redundancy => d.redundancy as usize,
                Field::Slot => d.active_slot as usize,
                Field::Metered => usize::from(d.metered),
                Field::Other(_) => {
                    maps = true;
                    continue;
                }
            };
            key[at] = word;
            at += 1;
        }
        if maps {
            key[at] = d.components.addr();
            key[at + 1] = d.tags.addr();
        }
        key
    }

    /// Numbers the device's stratum ids (one per attribute) as a row of [`Self::row`] and
    /// returns the row's index: the row of an earlier device of the same shape when there is
    /// one (its strata were then all numbered already, so ids still follow first appearance).
    fn push_device(&mut self, d: &Device) -> u32 {
        let n = self.attrs.len();
        let key = self.shapes.as_ref().map(|_| self.shape_key(d));
        if let (Some(shapes), Some(key)) = (&self.shapes, &key)
            && let Some(&row) = shapes.get(key)
        {
            return row;
        }
        let row = (self.rows.len() / n.max(1)) as u32;
        let mut rows = std::mem::take(&mut self.rows);
        self.push_fields(d, &mut rows);
        self.rows = rows;
        if let (Some(shapes), Some(key)) = (&mut self.shapes, key)
            && shapes.len() < MAX_SHAPES
        {
            shapes.insert(key, row);
        }
        row
    }

    /// The stratum ids of a row numbered by [`Self::push_device`].
    fn row(&self, row: u32) -> &[u32] {
        let n = self.attrs.len();
        &self.rows[row as usize * n..(row as usize + 1) * n]
    }

    /// Appends the device's stratum id for every attribute to `out`, field by field.
    fn push_fields(&mut self, d: &Device, out: &mut Vec<u32>) {
        for (f, field) in self.fields.iter().enumerate() {
            // An enum's or flag's index is its id already (a field's keys are all indices or
            // none are); other values are numbered as they come.
            self.row[f] = match field.key(d) {
                FieldKey::Index(i) => u32::from(i),
                key => {
                    let ids = &mut self.field_ids[f];
                    let next = ids.len() as u32;
                    *ids.entry(key).or_insert(next)
                }
            };
        }
        for a in 0..self.attrs.len() {
            let fields = &self.attr_fields[a];
            let mut combo = self.row[fields[0]];
            for &f in &fields[1..] {
                let map = &mut self.combos[a];
                let next = map.len() as u32;
                combo = *map.entry((combo, self.row[f])).or_insert(next);
            }
            let slots = &mut self.stratum_of[a];
            if slots.len() <= combo as usize {
                slots.resize(combo as usize + 1, u32::MAX);
            }
            if slots[combo as usize] == u32::MAX {
                self.buf.clear();
                self.attrs[a].write(d, &mut self.buf);
                let id = if let Some(&id) = self.texts[a].get(self.buf.as_str()) {
                    id
                } else {
                    let id = self.names.len() as u32;
                    self.names.push((a, self.buf.clone()));
                    self.texts[a].insert(self.buf.clone(), id);
                    id
                };
                self.stratum_of[a][combo as usize] = id;
            }
            out.push(self.stratum_of[a][combo as usize]);
        }
    }
}

/// Whether the policy treats the device as critical.
pub fn is_critical(d: &Device, policy: &PlanningPolicy) -> bool {
    let c = &policy.criticality;
    c.critical_classes.contains(&d.device_class)
        || (c.critical_tiers.contains(&d.customer_tier)
            && !c.covering_redundancy.contains(&d.redundancy))
}

/// Per-stratum counters, indexed by stratum id.
#[derive(Clone, Copy, Default)]
struct Counts {
    devices: usize,
    eligible_now: usize,
    after_prerequisites: usize,
    after_conditions: usize,
    never: usize,
    installed: usize,
    candidates: usize,
    critical_at_peak: usize,
    outside_depot: usize,
    canary: usize,
}

pub fn select(input: &CanaryInput<'_>) -> CanaryReport {
    let policy = &input.policy.canary;
    let fleet = input.fleet;
    let attrs = &policy.strata;
    let n = input.targeted.len();

    // 1. Strata: intern each (attribute, value) to an id; a row of ids per device shape.
    // 2. Candidates and their rank key: (offline, far, seeded random).
    // Both in one pass, so that each device is read from memory once.
    let parsed: Vec<Attribute> = attrs.iter().map(|a| Attribute::parse(a)).collect();
    let mut interner = StrataInterner::new(&parsed);
    // Counted per row of strata first (most devices share their row with many others), then
    // added to each of the row's strata.
    let mut row_counts: Vec<Counts> = Vec::new();
    // Calendar groups are depot indices (the last one: unknown depot).
    let depot_pos = |fi: u32| {
        fleet
            .depots
            .get(input.group_of[fi as usize] as usize)
            .map(|x| x.position)
    };
    // (tier, random, position in targeted, row of strata); positions are distinct, so the
    // row never decides the order.
    let mut ranked: Vec<(u8, u64, u32, u32)> = Vec::new();
    let mut excluded_peak = 0;
    let mut excluded_depot = 0;
    for (pos, &fi) in input.targeted.iter().enumerate() {
        let d = &fleet.devices[fi as usize];
        let row = interner.push_device(d);
        if row_counts.len() <= row as usize {
            row_counts.resize(row as usize + 1, Counts::default());
        }
        let c = &mut row_counts[row as usize];
        let v = input.eligibility[fi as usize];
        c.devices += 1;
        match v.status {
            Status::EligibleNow => c.eligible_now += 1,
            Status::AfterPrerequisites => c.after_prerequisites += 1,
            Status::AfterConditions => c.after_conditions += 1,
            Status::Never => c.never += 1,
            Status::Installed => c.installed += 1,
        }
        if v.status != Status::EligibleNow {
            continue;
        }
        if policy.depot.as_ref().is_some_and(|dep| *dep != d.depot) {
            excluded_depot += 1;
            c.outside_depot += 1;
            continue;
        }
        let group = input.group_of[fi as usize] as usize;
        let at_peak = is_critical(d, input.policy)
            && match input.first_open_minute[group] {
                Some(minute) => input
                    .policy
                    .criticality
                    .peak_hours
                    .get(&d.device_class)
                    .is_some_and(|r| r.contains(minute)),
                None => false,
            };
        if at_peak {
            excluded_peak += 1;
            c.critical_at_peak += 1;
            continue;
        }
        c.candidates += 1;
        let offline = !d.is_online(input.now, input.policy.online_threshold_secs);
        let far = depot_pos(fi).is_none_or(|p| p.distance_km(d.position) > policy.near_depot_km);
        let tier = (u8::from(offline) << 1) | u8::from(far);
        let random = SeededRng::derive(input.seed ^ 0xCA4A_4E11, u64::from(fi)).next_u64();
        ranked.push((tier, random, pos as u32, row));
    }
    ranked.sort_unstable();
    let names = std::mem::take(&mut interner.names);
    let n_strata = names.len();
    let mut counts = vec![Counts::default(); n_strata];
    for (row, rc) in row_counts.iter().enumerate() {
        for &s in interner.row(row as u32) {
            let c = &mut counts[s as usize];
            c.devices += rc.devices;
            c.eligible_now += rc.eligible_now;
            c.after_prerequisites += rc.after_prerequisites;
            c.after_conditions += rc.after_conditions;
            c.never += rc.never;
            c.installed += rc.installed;
            c.outside_depot += rc.outside_depot;
            c.critical_at_peak += rc.critical_at_peak;
            c.candidates += rc.candidates;
        }
    }
    let row_of = |r: u32| interner.row(ranked[r as usize].3);

    // Per-stratum candidate lists in rank order (counting sort into one flat array).
    let mut start = vec![0usize; n_strata + 1];
    for s in 0..n_strata {
        start[s + 1] = start[s] + counts[s].candidates;
    }
    let mut fill = start.clone();
    let mut lists = vec![0u32; start[n_strata]];
    for r in 0..ranked.len() as u32 {
        for &s in row_of(r) {
            lists[fill[s as usize]] = r;
            fill[s as usize] += 1;
        }
    }

    let total = n.max(1) as f64;
    let meaningful: Vec<bool> = counts
        .iter()
        .map(|c| c.devices as f64 * 100.0 / total >= policy.meaningful_share_pct && c.devices > 0)
        .collect();
    let mut need: Vec<usize> = meaningful
        .iter()
        .map(|&m| if m { policy.floor_per_stratum } else { 0 })
        .collect();
    let mut chosen = vec![false; ranked.len()];
    let mut picked: Vec<u32> = Vec::new(); // rank indices
    let take = |r: u32,
                chosen: &mut Vec<bool>,
                picked: &mut Vec<u32>,
                need: &mut Vec<usize>,
                counts: &mut Vec<Counts>| {
        chosen[r as usize] = true;
        picked.push(r);
        for &s in row_of(r) {
            need[s as usize] = need[s as usize].saturating_sub(1);
            counts[s as usize].canary += 1;
        }
    };

    // 3. Floors, rarest stratum first (ties by stratum id).
    let mut order: Vec<usize> = (0..n_strata).filter(|&s| meaningful[s]).collect();
    order.sort_by_key(|&s| (counts[s].candidates, s));
    let mut cursor = start.clone();
    for &s in &order {
        while need[s] > 0 && picked.len() < policy.size {
            let mut best: Option<(usize, u32)> = None; // (gain, rank)
            let mut seen = 0;
            let mut i = cursor[s];
            while i < start[s + 1] && seen < LOOKAHEAD {
                let r = lists[i];
                i += 1;
                if chosen[r as usize] {
                    if seen == 0 {
                        cursor[s] = i;
                    }
                    continue;
                }
                seen += 1;
                let gain = row_of(r).iter().filter(|&&x| need[x as usize] > 0).count();
                if best.is_none_or(|(g, _)| gain > g) {
                    best = Some((gain, r));
                }
            }
            let Some((_, r)) = best else { break };
            take(r, &mut chosen, &mut picked, &mut need, &mut counts);
        }
    }

    // 4. Fill: proportional first, then anyone, in rank order.
    let quota: Vec<usize> = counts
        .iter()
        .map(|c| {
            let fair = (c.devices as f64 / total * policy.size as f64).round() as usize;
            fair.max(policy.floor_per_stratum)
        })
        .collect();
    for pass in 0..2 {
        for r in 0..ranked.len() as u32 {
            if picked.len() >= policy.size {
                break;
            }
            if chosen[r as usize] {
                continue;
            }
            if pass == 0
                && row_of(r)
                    .iter()
                    .any(|&s| counts[s as usize].canary >= quota[s as usize])
            {
                continue;
            }
            take(r, &mut chosen, &mut picked, &mut need, &mut counts);
        }
    }

    // Report.
    let mut devices: Vec<u32> = picked
        .iter()
        .map(|&r| input.targeted[ranked[r as usize].2 as usize])
        .collect();
    devices.sort_unstable();
    let offline = picked
        .iter()
        .filter(|&&r| ranked[r as usize].0 & 2 != 0)
        .count();
    let far_from_depot = picked
        .iter()
        .filter(|&&r| ranked[r as usize].0 & 1 != 0)
        .count();
    let mut strata: Vec<(usize, usize, StratumCoverage)> = Vec::with_capacity(n_strata);
    let mut flags = Vec::new();
    for (s, (a, value)) in names.into_iter().enumerate() {
        let c = counts[s];
        let share_pct = c.devices as f64 * 100.0 / total;
        let coverage = if !meaningful[s] {
            Coverage::NotRequired
        } else if c.canary >= policy.floor_per_stratum {
            Coverage::Represented
        } else {
            let why = if c.eligible_now == 0 {
                format!(
                    "no device is eligible now ({} after prerequisites, {} after conditions, {} never, {} installed)",
                    c.after_prerequisites, c.after_conditions, c.never, c.installed
                )
            } else if c.candidates == 0 {
                format!(
                    "all {} eligible devices are excluded ({} critical at peak, {} outside the canary depot)",
                    c.eligible_now, c.critical_at_peak, c.outside_depot
                )
            } else if c.candidates < policy.floor_per_stratum && c.canary == c.candidates {
                format!(
                    "only {} candidate(s) for a floor of {}",
                    c.candidates, policy.floor_per_stratum
                )
            } else {
                format!(
                    "canary size {} too small for every floor ({} candidates)",
                    policy.size, c.candidates
                )
            };
            flags.push(format!(
                "{} {}={} ({share_pct:.2}% of targeted devices, {} in canary): {why}",
                if c.canary == 0 {
                    "missing"
                } else {
                    "below floor"
                },
                attrs[a],
                value,
                c.canary
            ));
            if c.canary == 0 {
                Coverage::Missing(why)
            } else {
                Coverage::BelowFloor(why)
            }
        };
        strata.push((
            a,
            usize::MAX - c.devices,
            StratumCoverage {
                attribute: attrs[a].clone(),
                value,
                devices: c.devices,
                share_pct,
                eligible_now: c.eligible_now,
                candidates: c.candidates,
                canary: c.canary,
                coverage,
            },
        ));
    }
    strata.sort_by(|x, y| (x.0, x.1, &x.2.value).cmp(&(y.0, y.1, &y.2.value)));
    flags.sort();
    CanaryReport {
        device_ids: devices
            .iter()
            .map(|&i| fleet.devices[i as usize].id.clone())
            .collect(),
        devices,
        target_size: policy.size,
        candidates: ranked.len(),
        excluded_critical_at_peak: excluded_peak,
        excluded_outside_depot: excluded_depot,
        offline,
        far_from_depot,
        strata: strata.into_iter().map(|(_, _, s)| s).collect(),
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthOptions, generate};
    use crate::version::Version;

    /// The plain method the interner replaces: write every (attribute, value) as text and
    /// intern the text, in device order then attribute order.
    fn strata_by_text(attrs: &[Attribute], devices: &[Device]) -> (Vec<u32>, Vec<(usize, String)>) {
        let mut ids: Vec<std::collections::HashMap<String, u32>> =
            vec![std::collections::HashMap::new(); attrs.len()];
        let mut names = Vec::new();
        let mut out = Vec::new();
        for d in devices {
            for (a, attr) in attrs.iter().enumerate() {
                let mut text = String::new();
                attr.write(d, &mut text);
                let id = *ids[a].entry(text.clone()).or_insert_with(|| {
                    names.push((a, text));
                    (names.len() - 1) as u32
                });
                out.push(id);
            }
        }
        (out, names)
    }

    #[test]
    fn interner_gives_the_strata_of_interning_the_text() {
        let mut fleet = generate(&SynthOptions {
            devices: 600,
            seed: 11,
            now: Timestamp::from_secs(1_800_000_000),
        });
        let short: Version = "2.0".parse().expect("a valid version");
        let long: Version = "2.0.0".parse().expect("a valid version");
        assert_eq!(short, long, "equal as versions, but written apart");
        for (i, d) in fleet.devices.iter_mut().enumerate() {
            match i % 7 {
                0 => {
                    d.components.insert("firmware", short);
                }
                1 => {
                    d.components.insert("firmware", long);
                }
                2 => {
                    // No bootloader component: the tag of that name stands in.
                    d.components.remove("bootloader");
                    d.tags.insert("bootloader", "rom".into());
                    d.tags.insert("carrier", "a/b".into());
                    d.hw_rev = "c".into();
                }
                3 => {
                    // Reads `a/b/c` too, through other field values.
                    d.tags.insert("carrier", "a".into());
                    d.hw_rev = "b/c".into();
                }
                4 => {
                    // Neither component nor tag: `(none)`.
                    d.components.remove("bootloader");
                    d.tags.remove("bootloader");
                    d.tags.remove("carrier");
                }
                _ => {
                    d.tags.remove("carrier");
                }
            }
        }
        let attrs: Vec<Attribute> = [
            "model",
            "model+hw_rev",
            "model+firmware",
            " firmware ",
            "bootloader",
            "carrier+hw_rev",
            "carrier",
            "model+model",
            "connectivity+metered+active_slot+power",
            "region+depot",
            "customer_tier",
            "device_class+redundancy",
        ]
        .iter()
        .map(|a| Attribute::parse(a))
        .collect();

        let mut interner = StrataInterner::new(&attrs);
        let mut got = Vec::new();
        for d in &fleet.devices {
            let row = interner.push_device(d);
            got.extend_from_slice(interner.row(row));
        }
        let (want, want_names) = strata_by_text(&attrs, &fleet.devices);
        assert!(
            got == want,
            "strata differ: {} ids against {}, first difference at {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(g, w)| g != w)
        );
        assert_eq!(interner.names, want_names);

        // The cases above really occurred, as distinct or shared strata as their text says.
        let has = |a: usize, v: &str| interner.names.iter().any(|(x, t)| *x == a && t == v);
        assert!(has(3, "2.0") && has(3, "2.0.0"));
        assert!(has(4, "rom") && has(4, "(none)"));
        assert!(has(6, "(none)") && has(6, "a/b") && has(6, "a"));
        let abc = interner
            .names
            .iter()
            .filter(|(x, t)| *x == 5 && t == "a/b/c")
            .count();
        assert_eq!(abc, 1, "`a/b`+`c` and `a`+`b/c` are one stratum");
        let abc_devices = fleet
            .devices
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 == 2 || i % 7 == 3)
            .count();
        let abc_id = interner
            .names
            .iter()
            .position(|(x, t)| *x == 5 && t == "a/b/c")
            .expect("the shared stratum") as u32;
        let n_attr = attrs.len();
        assert_eq!(
            got.chunks(n_attr).filter(|row| row[5] == abc_id).count(),
            abc_devices
        );
    }
}
