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
}
