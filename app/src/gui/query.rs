//! Filters, sort orders and cohort summaries over the [`FleetModel`], shared by the map, the
//! table and the cohort view. Plain code with no egui, run by the derive worker only when the
//! data or the query changes.
//!
//! Results are device indices (into `fleet.devices`, which is sorted by id): a filter returns
//! them ascending, so by id; a sort is stable, so ties stay in id order.

use convoy_core::search::Query;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use crate::gui::aggregate::CLASSES;
use crate::gui::model::{FleetModel, Live, state_name};

/// What the user narrowed the fleet to; the same filter drives the map and the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Filter {
    /// A search query (`convoy_core::search`): bare words (found in the id, model, hardware
    /// revision, region, depot, link, tier, class, firmware or update state) and field terms
    /// (`model:T300 hw_rev:C firmware:<2.5 region:eu-*`); a device matches every term.
    pub text: String,
    /// Only devices of this colour class (in the current colour mode).
    pub class: Option<u8>,
    /// The cache's saved cohorts (name → search), which the text may name (`cohort:NAME`);
    /// read from the cache, never persisted with the UI state.
    #[serde(skip)]
    pub cohorts: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl Filter {
    /// The search text as a query, with the saved cohorts it names.
    pub fn query(&self) -> Result<Query, convoy_core::search::QueryError> {
        Query::parse_with(&self.text, &|n| self.cohorts.get(n).cloned())
    }

    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty() && self.class.is_none()
    }

    /// Why the search text is not a query, in words for the search box.
    pub fn error(&self) -> Option<String> {
        self.query().err().map(|e| e.to_string())
    }
}

/// The indices of the devices that pass `filter`, ascending. `classes` are the colour classes
/// of the current mode. The text is a search query (`convoy_core::search`: bare words and
/// field terms such as `model:T300 firmware:<2.5`); a query that does not parse matches no
/// device, and the search box says why ([`Filter::error`]).
pub fn filter_indices(model: &FleetModel, filter: &Filter, classes: &[u8]) -> Vec<u32> {
    let Ok(query) = filter.query() else {
        return Vec::new();
    };
    model
        .fleet
        .devices
        .iter()
        .zip(&model.live)
        .enumerate()
        .filter(|(i, (d, live))| {
            filter.class.is_none_or(|c| classes.get(*i) == Some(&c))
                && (query.is_empty() || query.matches(d, &|field| live_field(live, field)))
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// Whether device `i` passes `filter`, whose text parsed as `parsed` (`None`: it did not
/// parse, and nothing passes), with `classes` the current colour classes: the test
/// [`filter_indices`] makes, for one device.
pub fn device_passes(
    model: &FleetModel,
    filter: &Filter,
    parsed: Option<&Query>,
    classes: &[u8],
    i: usize,
) -> bool {
    if filter.is_empty() {
        return true;
    }
    let (Some(query), Some(d), Some(live)) =
        (parsed, model.fleet.devices.get(i), model.live.get(i))
    else {
        return false;
    };
    filter.class.is_none_or(|c| classes.get(i) == Some(&c))
        && (query.is_empty() || query.matches(d, &|field| live_field(live, field)))
}

/// The fields the console knows live and a device record does not: its update state.
fn live_field(live: &Live, field: &str) -> Option<Cow<'static, str>> {
    match field {
        "state" | "update" => live.update_state.map(|s| Cow::Borrowed(state_name(s))),
        _ => None,
    }
}

/// The table's columns, which are also its sort keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Column {
    #[default]
    Id,
    Model,
    HwRev,
    Firmware,
    Region,
    Depot,
    Connectivity,
    Tier,
    UpdateState,
    Battery,
    LastSeen,
}

impl Column {
    pub const ALL: [Column; 11] = [
        Column::Id,
        Column::Model,
        Column::HwRev,
        Column::Firmware,
        Column::Region,
        Column::Depot,
        Column::Connectivity,
        Column::Tier,
        Column::UpdateState,
        Column::Battery,
        Column::LastSeen,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Id => "Device",
            Column::Model => "Model",
            Column::HwRev => "HW rev",
            Column::Firmware => "Firmware",
            Column::Region => "Region",
            Column::Depot => "Depot",
            Column::Connectivity => "Link",
            Column::Tier => "Tier",
            Column::UpdateState => "Update",
            Column::Battery => "Battery",
            Column::LastSeen => "Last seen",
        }
    }
}

fn compare(model: &FleetModel, key: Column, a: usize, b: usize) -> Ordering {
    let (da, db) = (&model.fleet.devices[a], &model.fleet.devices[b]);
    match key {
        Column::Id => da.id.cmp(&db.id),
        Column::Model => da.model.cmp(&db.model),
        Column::HwRev => da.hw_rev.cmp(&db.hw_rev),
        Column::Firmware => da.firmware().cmp(&db.firmware()),
        Column::Region => da.region.cmp(&db.region),
        Column::Depot => da.depot.cmp(&db.depot),
        Column::Connectivity => da.connectivity.cmp(&db.connectivity),
        Column::Tier => da.customer_tier.cmp(&db.customer_tier),
        Column::UpdateState => crate::gui::model::update_class(model.live[a].update_state)
            .cmp(&crate::gui::model::update_class(model.live[b].update_state)),
        Column::Battery => da.battery_pct.cmp(&db.battery_pct),
        Column::LastSeen => da.last_seen.cmp(&db.last_seen),
    }
}

/// Sorts `indices` by `key` (stable: ties keep their order, which is by id after a filter).
pub fn sort_indices(model: &FleetModel, indices: &mut [u32], key: Column, descending: bool) {
    if key == Column::Id && !descending {
        // Filter results are already by id.
        return;
    }
    indices.sort_by(|&a, &b| {
        let o = compare(model, key, a as usize, b as usize);
        if descending { o.reverse() } else { o }
    });
}

/// The attributes the cohort view summarises by.
pub const SUMMARY_ATTRIBUTES: [(&str, &str); 6] = [
    ("model", "Model"),
    ("hw_rev", "Hardware revision"),
    ("region", "Region"),
    ("depot", "Depot"),
    ("connectivity", "Connectivity"),
    ("customer_tier", "Customer tier"),
];

/// One value of an attribute and its devices' colour classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub value: String,
    pub count: u32,
    pub by_class: [u32; CLASSES],
}

/// Devices of `indices` grouped by `attribute` (a `Device::attribute` name), largest group
/// first, ties by value.
pub fn summarise(
    model: &FleetModel,
    attribute: &str,
    classes: &[u8],
    indices: &[u32],
) -> Vec<SummaryRow> {
    let mut groups: HashMap<String, SummaryRow> = HashMap::new();
    for &i in indices {
        let d = &model.fleet.devices[i as usize];
        let value = d
            .attribute(attribute)
            .unwrap_or_else(|| "(none)".to_owned());
        let row = groups.entry(value).or_insert_with_key(|v| SummaryRow {
            value: v.clone(),
            count: 0,
            by_class: [0; CLASSES],
        });
        row.count += 1;
        let k = usize::from(classes.get(i as usize).copied().unwrap_or(0)).min(CLASSES - 1);
        row.by_class[k] += 1;
    }
    let mut rows: Vec<SummaryRow> = groups.into_values().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    rows
}

// ---------------------------------------------------------------------------------------------
// The fleet index: each field's distinct values once, a code per device (issue 22).

/// The index's dictionaries (a few hundred keys, looked up once per device when a column is
/// built) hash with the core's fast hasher: the keys are the fleet's own values.
type FxBuild = convoy_core::fasthash::FastBuild;

/// A version as written: `2.0` and `2.0.0` are equal versions (and sort as equals) but read
/// differently as text, so the index keeps them apart.
#[derive(Debug, Clone, Copy)]
pub struct ExactVersion(pub convoy_core::version::Version);

impl PartialEq for ExactVersion {
    fn eq(&self, other: &Self) -> bool {
        self.0.parts() == other.0.parts()
    }
}

impl Eq for ExactVersion {}

impl std::hash::Hash for ExactVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.parts().hash(state);
    }
}

/// How a column's values sort: as the table's comparison sort compares them.
pub trait SortsAs {
    fn sorts_as(&self, other: &Self) -> Ordering;
}

impl SortsAs for String {
    fn sorts_as(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
}

impl SortsAs for ExactVersion {
    fn sorts_as(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// One field of every device as codes: the distinct values (code 0 is "no value"), a code per
/// device, and (on demand) each code's rank in the values' order (values that sort as equals
/// share a rank).
#[derive(Debug, Clone)]
pub struct Coded<V> {
    /// Code → value; `values[0]` is `None`.
    values: Vec<Option<V>>,
    lookup: HashMap<V, u32, FxBuild>,
    /// Per device.
    codes: Vec<u32>,
    /// Code → rank among the values (`None` first), valid while no value was added.
    ranks: Option<Vec<u32>>,
}

impl<V: std::hash::Hash + Eq + SortsAs + Clone> Coded<V> {
    fn build<'d, Q>(n: usize, value: impl Fn(usize) -> Option<Cow<'d, Q>>) -> Self
    where
        V: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized + ToOwned<Owned = V> + 'd,
    {
        let mut c = Self {
            values: vec![None],
            lookup: HashMap::default(),
            codes: Vec::with_capacity(n),
            ranks: None,
        };
        for i in 0..n {
            let code = c.code(value(i).as_deref());
            c.codes.push(code);
        }
        c
    }

    /// The code of `v`, added if new (which invalidates the ranks).
    fn code<Q>(&mut self, v: Option<&Q>) -> u32
    where
        V: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized + ToOwned<Owned = V>,
    {
        let Some(v) = v else { return 0 };
        if let Some(&c) = self.lookup.get(v) {
            return c;
        }
        let c = self.values.len() as u32;
        self.values.push(Some(v.to_owned()));
        self.lookup.insert(v.to_owned(), c);
        self.ranks = None;
        c
    }

    /// A table over the codes: `f` of each distinct value (`None` for code 0).
    fn table(&self, f: impl Fn(Option<&V>) -> bool) -> Vec<bool> {
        self.values.iter().map(|v| f(v.as_ref())).collect()
    }

    fn ensure_ranks(&mut self) {
        if self.ranks.is_some() {
            return;
        }
        // `None` first, as `Option` sorts.
        let cmp = |a: &Option<V>, b: &Option<V>| match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => a.sorts_as(b),
        };
        let mut by_value: Vec<u32> = (0..self.values.len() as u32).collect();
        by_value.sort_by(|&a, &b| cmp(&self.values[a as usize], &self.values[b as usize]));
        let mut ranks = vec![0; self.values.len()];
        let mut rank = 0;
        for (k, &code) in by_value.iter().enumerate() {
            if k > 0
                && cmp(
                    &self.values[by_value[k - 1] as usize],
                    &self.values[code as usize],
                ) != Ordering::Equal
            {
                rank += 1;
            }
            ranks[code as usize] = rank;
        }
        self.ranks = Some(ranks);
    }

    /// Device `i`'s rank (after [`Coded::ensure_ranks`]).
    fn rank(&self, i: usize) -> u64 {
        let code = self.codes.get(i).copied().unwrap_or(0) as usize;
        self.ranks
            .as_ref()
            .and_then(|r| r.get(code))
            .map_or(0, |&r| u64::from(r))
    }

    pub fn distinct(&self) -> usize {
        self.values.len() - 1
    }
}

/// The fleet's fields as codes, built on the derive worker once per fleet load (each column
/// when a query, sort or summary first needs it) and kept in step with the model device by
/// device ([`FleetIndex::update_device`]). A search word is matched once against each
/// column's distinct values, then devices are filtered by code; string sorts sort ranks.
#[derive(Debug, Default)]
pub struct FleetIndex {
    /// By canonical field name: [`convoy_core::search::field_text`] of every device.
    text: HashMap<String, Coded<String>>,
    /// By component name: the component's version of every device.
    versions: HashMap<String, Coded<ExactVersion>>,
    /// A dictionary grew since [`FleetIndex::take_grown`]: ranks kept elsewhere are stale.
    grown: bool,
}

/// The fields the console answers itself (the live update state) before the device's own.
fn is_live_field(field: &str) -> bool {
    matches!(field, "state" | "update")
}

impl FleetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of distinct values of a built text column (for tests and benchmarks).
    pub fn distinct(&self, field: &str) -> Option<usize> {
        self.text.get(field).map(Coded::distinct)
    }

    fn build_text(&mut self, model: &FleetModel, field: &str) {
        if self.text.contains_key(field) {
            return;
        }
        let devices = &model.fleet.devices;
        let col = Coded::<String>::build(model.len(), |i| {
            convoy_core::search::field_text(&devices[i], field)
        });
        self.text.insert(field.to_owned(), col);
    }

    fn build_version(&mut self, model: &FleetModel, component: &str) {
        if self.versions.contains_key(component) {
            return;
        }
        let devices = &model.fleet.devices;
        let col = Coded::<ExactVersion>::build(model.len(), |i| {
            devices[i]
                .component(component)
                .map(|v| Cow::<ExactVersion>::Owned(ExactVersion(v)))
        });
        self.versions.insert(component.to_owned(), col);
    }

    /// Builds every column `terms` needs.
    fn prepare(&mut self, model: &FleetModel, terms: &[convoy_core::search::Term]) {
        use convoy_core::search::{TermView, WORD_FIELDS};
        for t in terms {
            match t.view() {
                TermView::Word(_) => {
                    for f in WORD_FIELDS {
                        self.build_text(model, f);
                    }
                    self.build_version(model, convoy_core::fleet::component::FIRMWARE);
                }
                TermView::Field { field, test } => {
                    if test.compares_versions() {
                        self.build_version(model, field);
                    } else if field != "id" {
                        self.build_text(model, field);
                    }
                }
                TermView::Group(inner) => self.prepare(model, inner),
            }
        }
    }

    /// Builds the columns the summaries and `sort` need.
    pub fn prepare_view(&mut self, model: &FleetModel, sort: Column, summaries: bool) {
        if let Some(field) = sort_text_field(sort) {
            self.build_text(model, field);
        }
        if sort == Column::Firmware {
            self.build_version(model, convoy_core::fleet::component::FIRMWARE);
        }
        if summaries {
            for (attr, _) in SUMMARY_ATTRIBUTES {
                self.build_text(model, attr);
            }
        }
    }

    /// Builds one more of the columns a bare word reads (which also serve the string sorts
    /// and the cohort view's summaries), if one is missing: the worker builds them one at a
    /// time while it has nothing else to do after a fleet loads. False when all are built.
    pub fn prewarm_step(&mut self, model: &FleetModel) -> bool {
        use convoy_core::fleet::component::FIRMWARE;
        if let Some(f) = convoy_core::search::WORD_FIELDS
            .iter()
            .find(|f| !self.text.contains_key(**f))
        {
            self.build_text(model, f);
            return true;
        }
        if !self.versions.contains_key(FIRMWARE) {
            self.build_version(model, FIRMWARE);
            return true;
        }
        false
    }

    /// Device `i` changed in `model`: its codes follow.
    pub fn update_device(&mut self, model: &FleetModel, i: usize) {
        let Some(d) = model.fleet.devices.get(i) else {
            return;
        };
        for (field, col) in &mut self.text {
            let before = col.values.len();
            let code = col.code(convoy_core::search::field_text(d, field).as_deref());
            if let Some(slot) = col.codes.get_mut(i) {
                *slot = code;
            }
            self.grown |= col.values.len() != before;
        }
        for (component, col) in &mut self.versions {
            let before = col.values.len();
            let code = col.code(d.component(component).map(ExactVersion).as_ref());
            if let Some(slot) = col.codes.get_mut(i) {
                *slot = code;
            }
            self.grown |= col.values.len() != before;
        }
    }

    /// Whether a dictionary gained a value since the last call (ranks kept elsewhere, such as
    /// sort values, are then stale).
    pub fn take_grown(&mut self) -> bool {
        std::mem::take(&mut self.grown)
    }

    /// Which devices match `query`, one flag per device: each term tested once per distinct
    /// value of the fields it reads, then every device by its codes. The same answer as
    /// [`Query::matches`] with the console's live fields, device by device.
    pub fn matching(&mut self, model: &FleetModel, query: &Query) -> Vec<bool> {
        self.prepare(model, query.terms());
        let mut out = vec![true; model.len()];
        self.and_terms(model, query.terms(), &mut out);
        out
    }

    fn and_terms(&self, model: &FleetModel, terms: &[convoy_core::search::Term], out: &mut [bool]) {
        for t in terms {
            let mask = self.term_mask(model, t);
            let neg = t.negated();
            for (o, m) in out.iter_mut().zip(mask) {
                *o &= m != neg;
            }
        }
    }

    fn term_mask(&self, model: &FleetModel, term: &convoy_core::search::Term) -> Vec<bool> {
        use convoy_core::search::{TermView, WORD_FIELDS, word_hits};
        let n = model.len();
        match term.view() {
            TermView::Group(inner) => {
                let mut out = vec![true; n];
                self.and_terms(model, inner, &mut out);
                out
            }
            TermView::Word(word) => {
                let hit = |v: &str| word_hits(word, v);
                // The id: one per device.
                let mut out: Vec<bool> = model
                    .fleet
                    .devices
                    .iter()
                    .map(|d| hit(d.id.as_str()))
                    .collect();
                for f in WORD_FIELDS {
                    if is_live_field(f) {
                        or_live(model, &mut out, &hit);
                    }
                    if let Some(col) = self.text.get(f) {
                        or_codes(
                            &mut out,
                            col,
                            &col.table(|v| v.is_some_and(|v| hit(v.as_str()))),
                        );
                    }
                }
                if let Some(col) = self.versions.get(convoy_core::fleet::component::FIRMWARE) {
                    let table = col.table(|v| v.is_some_and(|v| hit(v.0.to_string().as_str())));
                    or_codes(&mut out, col, &table);
                }
                out
            }
            TermView::Field { field, test } => {
                if test.compares_versions() {
                    let Some(col) = self.versions.get(field) else {
                        return vec![false; n];
                    };
                    let table = col.table(|v| v.is_some_and(|v| test.holds_for_version(v.0)));
                    return col.codes.iter().map(|&c| table[c as usize]).collect();
                }
                let live = is_live_field(field);
                if field == "id" {
                    // Distinct per device: tested device by device (the live value first, as
                    // the matcher does; the console has none for `id`).
                    return model
                        .fleet
                        .devices
                        .iter()
                        .map(|d| test.holds_for_text(&d.id))
                        .collect();
                }
                let Some(col) = self.text.get(field) else {
                    return vec![false; n];
                };
                let table = col.table(|v| v.is_some_and(|v| test.holds_for_text(v)));
                let mut memo = [None; 16];
                col.codes
                    .iter()
                    .zip(&model.live)
                    .map(|(&c, l)| match l.update_state.filter(|_| live) {
                        Some(s) => {
                            let slot = s as usize;
                            match memo.get_mut(slot) {
                                Some(m) => {
                                    *m.get_or_insert_with(|| test.holds_for_text(state_name(s)))
                                }
                                None => test.holds_for_text(state_name(s)),
                            }
                        }
                        None => table[c as usize],
                    })
                    .collect()
            }
        }
    }

    /// Device `i`'s sort value for `key` (ranks for text and version columns; built by
    /// [`FleetIndex::prepare_view`]), ascending as [`sort_indices`] orders.
    pub fn sort_value(&mut self, model: &FleetModel, key: Column, i: usize) -> u64 {
        if let Some(field) = sort_text_field(key) {
            return match self.text.get_mut(field) {
                Some(col) => {
                    col.ensure_ranks();
                    col.rank(i)
                }
                None => 0,
            };
        }
        let d = &model.fleet.devices[i];
        match key {
            Column::Firmware => match self
                .versions
                .get_mut(convoy_core::fleet::component::FIRMWARE)
            {
                Some(col) => {
                    col.ensure_ranks();
                    col.rank(i)
                }
                None => 0,
            },
            Column::Connectivity => d.connectivity as u64,
            Column::Tier => d.customer_tier as u64,
            Column::UpdateState => u64::from(crate::gui::model::update_class(
                model.live.get(i).and_then(|l| l.update_state),
            )),
            Column::Battery => d.battery_pct.map_or(0, |b| u64::from(b) + 1),
            Column::LastSeen => (d.last_seen.secs() as u64) ^ (1 << 63),
            // Devices are sorted by id: the index is the id's rank.
            Column::Id | Column::Model | Column::HwRev | Column::Region | Column::Depot => i as u64,
        }
    }

    /// `filtered` (ascending) sorted by `key` as [`sort_indices`] sorts it, with each device's
    /// sort value (descending already folded in: [`order_key`]) written into `keys`.
    pub fn sort(
        &mut self,
        model: &FleetModel,
        filtered: &[u32],
        key: Column,
        descending: bool,
        keys: &mut Vec<u64>,
    ) -> Vec<u32> {
        if key == Column::Id && !descending {
            // Filter results are already by id: each index is its own sort value.
            keys.clear();
            keys.extend(0..model.len() as u64);
            return filtered.to_vec();
        }
        self.prepare_view(model, key, false);
        keys.clear();
        keys.resize(model.len(), 0);
        for &i in filtered {
            keys[i as usize] = order_key(self.sort_value(model, key, i as usize), descending);
        }
        radix_sort_by_key(filtered, keys)
    }

    /// The cohort view's summary of `indices` by `attribute` (a [`SUMMARY_ATTRIBUTES`] name):
    /// counted per code, then named; the same rows as [`summarise`].
    pub fn summarise(
        &mut self,
        model: &FleetModel,
        attribute: &str,
        classes: &[u8],
        indices: &[u32],
    ) -> Vec<SummaryRow> {
        self.build_text(model, attribute);
        let Some(col) = self.text.get(attribute) else {
            return Vec::new();
        };
        let mut per_code = vec![[0u32; CLASSES]; col.values.len()];
        for &i in indices {
            let code = col.codes.get(i as usize).copied().unwrap_or(0) as usize;
            let k = usize::from(classes.get(i as usize).copied().unwrap_or(0)).min(CLASSES - 1);
            per_code[code][k] += 1;
        }
        let mut groups: HashMap<&str, SummaryRow> = HashMap::new();
        for (code, by_class) in per_code.iter().enumerate() {
            let count: u32 = by_class.iter().sum();
            if count == 0 {
                continue;
            }
            let name = col.values[code].as_deref().unwrap_or("(none)");
            let row = groups.entry(name).or_insert_with(|| SummaryRow {
                value: name.to_owned(),
                count: 0,
                by_class: [0; CLASSES],
            });
            row.count += count;
            for (a, b) in row.by_class.iter_mut().zip(by_class) {
                *a += b;
            }
        }
        let mut rows: Vec<SummaryRow> = groups.into_values().collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        rows
    }
}

/// The text column a string sort key reads (its ranks are the sort values).
fn sort_text_field(key: Column) -> Option<&'static str> {
    match key {
        Column::Model => Some("model"),
        Column::HwRev => Some("hw_rev"),
        Column::Region => Some("region"),
        Column::Depot => Some("depot"),
        _ => None,
    }
}

/// A sort value in table order: ascending, or reversed for a descending sort (ties stay by
/// index either way, as the stable sort keeps them).
pub fn order_key(value: u64, descending: bool) -> u64 {
    if descending { !value } else { value }
}

fn or_codes(out: &mut [bool], col: &Coded<impl Sized>, table: &[bool]) {
    if !table.iter().any(|&t| t) {
        return;
    }
    for (o, &c) in out.iter_mut().zip(&col.codes) {
        *o |= table.get(c as usize).copied().unwrap_or(false);
    }
}

/// ORs in the word's hit on the live update state (where the console knows one).
fn or_live(model: &FleetModel, out: &mut [bool], hit: &dyn Fn(&str) -> bool) {
    let mut memo = [None; 16];
    for (o, l) in out.iter_mut().zip(&model.live) {
        if let Some(s) = l.update_state {
            let h = match memo.get_mut(s as usize) {
                Some(m) => *m.get_or_insert_with(|| hit(state_name(s))),
                None => hit(state_name(s)),
            };
            *o |= h;
        }
    }
}

/// `indices` stably sorted by `keys[i]` (a key per device): least significant byte first,
/// skipping the bytes in which every key agrees (ranks of a few hundred values take one or
/// two passes). Ties keep the order given.
pub fn radix_sort_by_key(indices: &[u32], keys: &[u64]) -> Vec<u32> {
    let key = |i: u32| keys.get(i as usize).copied().unwrap_or(0);
    let Some(&first) = indices.first() else {
        return Vec::new();
    };
    let first = key(first);
    let differ = indices.iter().fold(0u64, |acc, &i| acc | (key(i) ^ first));
    let mut a: Vec<u32> = indices.to_vec();
    let mut b: Vec<u32> = vec![0; a.len()];
    for byte in 0..8 {
        let shift = 8 * byte;
        if (differ >> shift).trailing_zeros() >= 8 {
            continue;
        }
        let mut counts = [0usize; 256];
        for &i in &a {
            counts[((key(i) >> shift) & 0xff) as usize] += 1;
        }
        let mut at = 0;
        for c in &mut counts {
            let n = *c;
            *c = at;
            at += n;
        }
        for &i in &a {
            let d = ((key(i) >> shift) & 0xff) as usize;
            b[counts[d]] = i;
            counts[d] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};
    use convoy_core::time::Timestamp;

    fn model() -> FleetModel {
        FleetModel::new(generate(&SynthOptions {
            devices: 400,
            seed: 11,
            now: Timestamp::from_secs(1_800_000_000),
        }))
    }

    #[test]
    fn search_matches_every_word_and_keeps_id_order() {
        let m = model();
        let classes = vec![0; m.len()];
        let target = &m.fleet.devices[123];
        let hits = filter_indices(
            &m,
            &Filter {
                text: target.id.to_uppercase(),
                class: None,
                ..Filter::default()
            },
            &classes,
        );
        assert_eq!(hits, [123]);
        let words = format!("{} {}", target.model, target.region);
        let hits = filter_indices(
            &m,
            &Filter {
                text: words,
                class: None,
                ..Filter::default()
            },
            &classes,
        );
        let expected: Vec<u32> = (0..m.len() as u32)
            .filter(|&i| {
                let d = &m.fleet.devices[i as usize];
                d.model
                    .to_ascii_lowercase()
                    .contains(&target.model.to_ascii_lowercase())
                    && d.region.contains(target.region.as_str())
            })
            .collect();
        assert!(hits.contains(&123));
        assert_eq!(hits, expected);
        assert!(
            filter_indices(
                &m,
                &Filter {
                    text: "no-such-thing".into(),
                    class: None,
                    ..Filter::default()
                },
                &classes
            )
            .is_empty()
        );
    }

    #[test]
    fn class_filter_uses_the_current_classes() {
        let m = model();
        let classes: Vec<u8> = (0..m.len()).map(|i| (i % 3) as u8).collect();
        let hits = filter_indices(
            &m,
            &Filter {
                text: String::new(),
                class: Some(2),
                ..Filter::default()
            },
            &classes,
        );
        assert_eq!(hits.len(), (0..m.len()).filter(|i| i % 3 == 2).count());
        assert!(hits.iter().all(|&i| i % 3 == 2));
    }

    #[test]
    fn sorting_is_stable_and_reversible() {
        let m = model();
        let mut idx: Vec<u32> = (0..m.len() as u32).collect();
        sort_indices(&m, &mut idx, Column::Region, false);
        for w in idx.windows(2) {
            let (a, b) = (
                &m.fleet.devices[w[0] as usize],
                &m.fleet.devices[w[1] as usize],
            );
            assert!(a.region < b.region || (a.region == b.region && a.id < b.id));
        }
        sort_indices(&m, &mut idx, Column::LastSeen, true);
        for w in idx.windows(2) {
            assert!(
                m.fleet.devices[w[0] as usize].last_seen
                    >= m.fleet.devices[w[1] as usize].last_seen
            );
        }
    }

    #[test]
    fn summaries_add_up_to_the_fleet() {
        let m = model();
        let classes: Vec<u8> = (0..m.len()).map(|i| (i % 2) as u8).collect();
        let all: Vec<u32> = (0..m.len() as u32).collect();
        let rows = summarise(&m, "model", &classes, &all);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u32>(), 400);
        assert!(rows.windows(2).all(|w| w[0].count >= w[1].count));
        let expected: std::collections::BTreeMap<String, usize> = m
            .fleet
            .devices
            .base()
            .count_by("model")
            .into_iter()
            .collect();
        for r in &rows {
            assert_eq!(expected[&r.value], r.count as usize, "{}", r.value);
            assert_eq!(r.by_class.iter().sum::<u32>(), r.count);
        }
    }

    /// A model where some devices reported live state (and some a firmware version no other
    /// device has, or one written shorter), so the live fields and changed devices are part of every comparison.
    fn model_with_live_state() -> FleetModel {
        use crate::link::protocol::{DeviceStatus, Inbound, UpdateState, UpdateStatus};
        let mut m = FleetModel::new(generate(&SynthOptions {
            devices: 3000,
            seed: 4,
            now: Timestamp::from_secs(1_800_000_000),
        }));
        let states = [
            UpdateState::Idle,
            UpdateState::Downloading,
            UpdateState::Confirmed,
            UpdateState::Failed,
        ];
        for k in 0..400 {
            let d = m.fleet.devices[(k * 37) % m.len()].clone();
            let mut components = d.components.clone();
            // A version no other device has, and one equal to a common one but written
            // shorter (`2.5` sorts as `2.5.0` and reads differently).
            let new_version = match k {
                7 => Some("7.7.7"),
                11 | 12 => Some("2.5"),
                _ => None,
            };
            if let Some(v) = new_version.and_then(|v| v.parse().ok()) {
                components.insert(convoy_core::fleet::component::FIRMWARE, v);
            }
            m.apply(&Inbound::Status(DeviceStatus {
                v: 1,
                device_id: d.id.clone(),
                ts: Timestamp::from_secs(1_800_000_000 + k as i64),
                active_slot: d.active_slot,
                components,
                update: UpdateStatus {
                    state: states[k % states.len()],
                    release_id: None,
                    command_id: None,
                    progress_pct: None,
                    reason: None,
                },
                battery_pct: d.battery_pct,
                power: d.power,
                connectivity: d.connectivity,
                metered: d.metered,
                free_storage_bytes: 1,
                position: None,
            }));
        }
        m
    }

    #[test]
    fn the_index_finds_what_the_plain_search_finds() {
        let m = model_with_live_state();
        let classes: Vec<u8> = (0..m.len()).map(|i| (i % 5) as u8).collect();
        let d0 = m.fleet.devices[42].clone();
        let cohorts: std::collections::BTreeMap<String, String> = [
            ("rev C vans".to_owned(), "model:T300 hw_rev:C".to_owned()),
            (
                "eu failed".to_owned(),
                "region:eu-* state:failed".to_owned(),
            ),
        ]
        .into();
        let cohorts = std::sync::Arc::new(cohorts);
        let queries = [
            "eu".to_owned(),
            "EU-".to_owned(),
            "t300".to_owned(),
            "T300 C".to_owned(),
            "model:T300".to_owned(),
            "model:t3*".to_owned(),
            "model:=t300".to_owned(),
            "model:!=T300".to_owned(),
            "hw:c".to_owned(),
            "-hw:c".to_owned(),
            "region:eu-*".to_owned(),
            "region:*-*".to_owned(),
            "depot:*north*".to_owned(),
            "firmware:<2.5".to_owned(),
            "fw:>=2.4.1".to_owned(),
            "fw:7.7.7".to_owned(),
            "firmware:>7".to_owned(),
            "bootloader:>=1.0".to_owned(),
            "modem:!=3.1.0".to_owned(),
            "battery:<20".to_owned(),
            "battery:>=50 -tier:gold".to_owned(),
            "failed_attempts:>=1".to_owned(),
            "state:downloading".to_owned(),
            "update:confirmed".to_owned(),
            "-state:idle".to_owned(),
            "state:*".to_owned(),
            "link:cellular".to_owned(),
            "tier:gold".to_owned(),
            "class:*".to_owned(),
            "confirmed".to_owned(),
            "down".to_owned(),
            "fail".to_owned(),
            "cellular".to_owned(),
            "2.4".to_owned(),
            "2.4.1".to_owned(),
            "7.7.7".to_owned(),
            "2.5".to_owned(),
            "fw:2.5".to_owned(),
            "fw:=2.5.0".to_owned(),
            "fw:2.5.*".to_owned(),
            "id:".to_owned() + &d0.id,
            d0.id.to_lowercase(),
            d0.id[..4].to_owned(),
            "power:battery".to_owned(),
            "metered:true".to_owned(),
            "slot:a".to_owned(),
            "redundancy:*".to_owned(),
            "carrier:*".to_owned(),
            "-carrier:*".to_owned(),
            "battery_chem:*i*".to_owned(),
            "nonexistent:x".to_owned(),
            "-nonexistent:x".to_owned(),
            "cohort:\"rev C vans\"".to_owned(),
            "-cohort:\"eu failed\" t300".to_owned(),
            format!("{} {}", d0.model, d0.region),
            format!("depot:\"{}\"", d0.depot),
            "no-such-thing".to_owned(),
            "firmware:<".to_owned(),
        ];
        let mut index = FleetIndex::new();
        let mut matched_some = 0;
        for text in &queries {
            for class in [None, Some(3)] {
                let filter = Filter {
                    text: text.clone(),
                    class,
                    cohorts: std::sync::Arc::clone(&cohorts),
                };
                let want = filter_indices(&m, &filter, &classes);
                // One device at a time, as the worker re-tests a device that changed.
                let parsed = filter.query().ok();
                let one_by_one: Vec<u32> = (0..m.len())
                    .filter(|&i| device_passes(&m, &filter, parsed.as_ref(), &classes, i))
                    .map(|i| i as u32)
                    .collect();
                // Column-wise: each term against each field's distinct values, then by code.
                let by_codes: Vec<u32> = match filter.query() {
                    Err(_) => Vec::new(),
                    Ok(q) => {
                        let mask = index.matching(&m, &q);
                        (0..m.len())
                            .filter(|&i| class.is_none_or(|c| classes[i] == c) && mask[i])
                            .map(|i| i as u32)
                            .collect()
                    }
                };
                assert_eq!(by_codes, want, "{text:?} class {class:?}");
                assert_eq!(one_by_one, want, "{text:?} class {class:?}");
                if !want.is_empty() && want.len() < m.len() {
                    matched_some += 1;
                }
            }
        }
        assert!(
            matched_some > 60,
            "queries that narrow the fleet: {matched_some}"
        );
        assert!(index.distinct("region").is_some_and(|n| n > 3 && n < 100));
    }

    #[test]
    fn rank_sorts_give_the_comparison_sort_s_order() {
        let m = model_with_live_state();
        let mut index = FleetIndex::new();
        let some: Vec<u32> = (0..m.len() as u32).filter(|i| i % 3 != 1).collect();
        let mut keys = Vec::new();
        for key in Column::ALL {
            for descending in [false, true] {
                let mut want = some.clone();
                sort_indices(&m, &mut want, key, descending);
                let got = index.sort(&m, &some, key, descending, &mut keys);
                assert_eq!(got, want, "{key:?} descending {descending}");
            }
        }
        assert!(radix_sort_by_key(&[], &keys).is_empty());
    }

    #[test]
    fn summaries_by_code_equal_summaries_by_string() {
        let m = model_with_live_state();
        let classes: Vec<u8> = (0..m.len()).map(|i| (i % 7) as u8).collect();
        let some: Vec<u32> = (0..m.len() as u32).filter(|i| i % 4 != 0).collect();
        let mut index = FleetIndex::new();
        for (attr, _) in SUMMARY_ATTRIBUTES {
            assert_eq!(
                index.summarise(&m, attr, &classes, &some),
                summarise(&m, attr, &classes, &some),
                "{attr}"
            );
        }
    }
}
