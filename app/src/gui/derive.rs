//! The derive worker: a thread that owns a replica of the fleet model and computes [`Derived`]
//! (colour classes, filter, sort, counts) off the UI thread.
//!
//! The UI thread forwards what changes the data (the loaded fleet, each inbound message) and the
//! query (colour mode, filter, sort, the clock's minute) as [`DeriveRequest`]s, in order, through
//! an unbounded channel; each costs the UI the size of one message, never the size of the fleet.
//! The worker applies them to its replica, which therefore holds the same devices at the same
//! indices as the UI's model, and answers with a whole new [`Derived`] through a channel bounded
//! to one result. It drains every request waiting before it computes, so only the newest state
//! is derived and stale ones are dropped unseen.
//!
//! Data-only changes are throttled (at most one result per throttle period while data streams
//! in); a changed query is derived at once.
//!
//! The worker keeps its last [`Derivation`] and a [`FleetIndex`] of the fleet (each field's
//! distinct values and a code per device): a search is matched against distinct values, a
//! sort sorts ranks, and a message that changes a few devices moves just those devices in the
//! filtered and sorted lists and adjusts the counts (issue 22). Everything is derived again
//! only when the query, the fleet or the rollout map changed, or when many devices changed.
//!
//! When the map is showing, the worker also bins the result into the map grid at the map's
//! zoom level, so that the frame which swaps the answer in does not rebuild the grid either.
//! Likewise, when the cohort view shows, the worker summarises the answer by attribute. A zoom
//! level change or the cohort view opening, with no data or query change, is answered too: the
//! worker bins or summarises its last derivation's classes, filter and order (no derivation),
//! so neither ever costs the UI thread a fleet-sized step.
//!
//! In [`ColorMode::RolloutState`] the classes come from the rollout the monitor last read
//! ([`RolloutMap`]), which the monitor publishes in the egui context's data
//! ([`publish_rollout_map`]); the worker takes it from there before each derivation and, while
//! that mode is on, looks for a newer one every [`ROLLOUT_MAP_POLL`] when idle, so a rollout that
//! moves on recolours the map without any other request.
//!
//! Deliberately not here: drawing, writing to the cache.

use convoy_core::fleet::Fleet;
use convoy_core::time::Timestamp;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use crate::gui::aggregate::{CLASSES, Grid, cell_size_for};
use crate::gui::model::{
    ColorMode, FleetModel, RolloutMap, class_counts, health_class, update_class,
};
use crate::gui::query::{
    Column, Filter, FleetIndex, SUMMARY_ATTRIBUTES, SummaryRow, device_passes, filter_indices,
    order_key, sort_indices,
};
use crate::link::protocol::Inbound;
use convoy_core::search::Query as SearchQuery;

/// How often an idle worker in [`ColorMode::RolloutState`] looks for a newer [`RolloutMap`].
pub const ROLLOUT_MAP_POLL: Duration = Duration::from_millis(500);

/// The key of the rollout map in the egui context's data.
fn rollout_map_id() -> egui::Id {
    egui::Id::unique("convoy-rollout-map")
}

/// Makes `map` the rollout the map colours by in [`ColorMode::RolloutState`] (the monitor
/// calls this with each new reading of its rollout).
pub fn publish_rollout_map(ctx: &egui::Context, map: std::sync::Arc<RolloutMap>) {
    ctx.data_mut(|d| d.insert_temp(rollout_map_id(), map));
}

/// The rollout the map colours by, if the monitor has published one.
pub fn rollout_map(ctx: &egui::Context) -> Option<std::sync::Arc<RolloutMap>> {
    ctx.data(|d| d.get_temp(rollout_map_id()))
}

/// What the derivation depends on besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub color_mode: ColorMode,
    pub filter: Filter,
    pub sort: Column,
    pub sort_descending: bool,
    /// Health classes age with the clock.
    pub now: Timestamp,
}

impl Query {
    /// Whether `self` and `other` derive the same result: health classes change with the
    /// minute, not the second.
    pub fn same_as(&self, other: &Query) -> bool {
        self.color_mode == other.color_mode
            && self.filter == other.filter
            && self.sort == other.sort
            && self.sort_descending == other.sort_descending
            && self.now.secs().div_euclid(60) == other.now.secs().div_euclid(60)
    }
}

/// Data computed from the model and the query, replaced as a whole when either changes.
#[derive(Debug, Default)]
pub struct Derived {
    /// Colour class per device in the current mode.
    pub classes: Vec<u8>,
    /// Devices passing the filter, ascending.
    pub filtered: Vec<u32>,
    /// `filtered` in table order.
    pub order: Vec<u32>,
    /// Counts per class over the whole fleet and over the filtered devices.
    pub counts_all: [u32; CLASSES],
    pub counts_filtered: [u32; CLASSES],
    /// The newest `last_seen` in the fleet: how fresh the cache is.
    pub newest_last_seen: Option<Timestamp>,
    /// Differs between any two results: the map grid and the cohort summaries compare against
    /// it to know when to rebuild.
    pub generation: u64,
    /// The map grid of `filtered` at a zoom level, binned by the worker when the map shows;
    /// the map takes it if its level still matches.
    pub grid: Option<(u8, Grid)>,
    /// The cohort view's summaries of `filtered` (by [`SUMMARY_ATTRIBUTES`]), when it shows.
    pub summaries: Option<Vec<(&'static str, Vec<SummaryRow>)>>,
}

impl Derived {
    /// A copy of the classes, filter, order and counts under `generation`, without the grid
    /// and summaries: what the worker bins and summarises again when only the view changed.
    fn base_copy(&self, generation: u64) -> Self {
        Self {
            classes: self.classes.clone(),
            filtered: self.filtered.clone(),
            order: self.order.clone(),
            counts_all: self.counts_all,
            counts_filtered: self.counts_filtered,
            newest_last_seen: self.newest_last_seen,
            generation,
            grid: None,
            summaries: None,
        }
    }

    /// Derives everything from `model` and `query` (and `rollout` for
    /// [`ColorMode::RolloutState`]) the plain way, device by device: the reference the worker's
    /// [`Derivation`] (which answers the same through a [`FleetIndex`], and device by device
    /// for status messages) is tested against. Time proportional to the fleet.
    pub fn compute(
        model: &FleetModel,
        query: &Query,
        rollout: Option<&RolloutMap>,
        generation: u64,
    ) -> Self {
        let classes = model.classes(query.color_mode, query.now, rollout);
        let filtered: Vec<u32> = if query.filter.is_empty() {
            (0..model.len() as u32).collect()
        } else {
            filter_indices(model, &query.filter, &classes)
        };
        let mut order = filtered.clone();
        sort_indices(model, &mut order, query.sort, query.sort_descending);
        let counts_all = class_counts(&classes, 0..model.len());
        let counts_filtered = class_counts(&classes, filtered.iter().map(|&i| i as usize));
        Self {
            counts_all,
            counts_filtered,
            newest_last_seen: model.newest_last_seen(),
            classes,
            filtered,
            order,
            generation,
            grid: None,
            summaries: None,
        }
    }
}

/// At most this share of the fleet (1 in N) changed since the last result is updated device
/// by device; more is derived again from scratch (which then costs less).
const FULL_PASS_SHARE: usize = 32;

/// Up to this many changed devices move in the lists one by one (binary search, insert and
/// remove); more are merged in one pass over the lists.
const ONE_BY_ONE: usize = 8;

/// The worker's derivation, kept between results: the [`Derived`] lists and counts, each
/// device's sort value, and the column index they were computed through. A status message
/// that changes one device re-tests that device against the filter and moves it in the sorted
/// list ([`Derivation::apply_changes`]); the counts change by the difference. The result is
/// always the one [`Derived::compute`] gives.
#[derive(Debug)]
pub struct Derivation {
    /// Without grid and summaries.
    pub derived: Derived,
    /// Each device's sort value in table order ([`order_key`]); `order` ascends by
    /// `(keys[i], i)`. Meaningful for the devices in `filtered`.
    keys: Vec<u64>,
    /// The query derived for, and its search text parsed (`None`: it does not parse).
    query: Query,
    parsed: Option<SearchQuery>,
}

impl Derivation {
    /// Derives everything from scratch through `index` (built from `model`).
    pub fn full(
        model: &FleetModel,
        index: &mut FleetIndex,
        query: &Query,
        rollout: Option<&RolloutMap>,
    ) -> Self {
        let n = model.len();
        let classes = model.classes(query.color_mode, query.now, rollout);
        let parsed = query.filter.query().ok();
        let filtered: Vec<u32> = if query.filter.is_empty() {
            (0..n as u32).collect()
        } else {
            match &parsed {
                None => Vec::new(),
                Some(q) => {
                    let mask = (!q.is_empty()).then(|| index.matching(model, q));
                    (0..n)
                        .filter(|&i| {
                            query.filter.class.is_none_or(|c| classes[i] == c)
                                && mask.as_ref().is_none_or(|m| m[i])
                        })
                        .map(|i| i as u32)
                        .collect()
                }
            }
        };
        let mut keys = Vec::new();
        let order = index.sort(
            model,
            &filtered,
            query.sort,
            query.sort_descending,
            &mut keys,
        );
        let counts_all = class_counts(&classes, 0..n);
        let counts_filtered = class_counts(&classes, filtered.iter().map(|&i| i as usize));
        index.take_grown();
        Self {
            derived: Derived {
                counts_all,
                counts_filtered,
                newest_last_seen: model.newest_last_seen(),
                classes,
                filtered,
                order,
                generation: 0,
                grid: None,
                summaries: None,
            },
            keys,
            query: query.clone(),
            parsed,
        }
    }

    /// Whether this derivation can follow `changed` devices one by one, rather than being
    /// derived again: the same query, few enough changes, and no new distinct value in a
    /// column (which moves the ranks the sort values were made of).
    pub fn can_follow(&self, model: &FleetModel, query: &Query, changed: usize) -> bool {
        self.query == *query
            && self.derived.classes.len() == model.len()
            && changed.saturating_mul(FULL_PASS_SHARE) <= model.len()
    }

    /// Brings the derivation up to date after the devices in `changed` (indices, any order,
    /// repeats allowed) changed in `model` (and in `index`, by
    /// [`FleetIndex::update_device`]). False if it could not (then derive again with
    /// [`Derivation::full`]).
    pub fn apply_changes(
        &mut self,
        model: &FleetModel,
        index: &mut FleetIndex,
        changed: &mut Vec<u32>,
    ) -> bool {
        if index.take_grown() {
            return false;
        }
        changed.sort_unstable();
        changed.dedup();
        let q = &self.query;
        let d = &mut self.derived;
        let last = CLASSES - 1;
        // (device, was in the filter, is in it now), with its new sort value in `new_keys`.
        let mut moves: Vec<(u32, bool, bool, u64)> = Vec::with_capacity(changed.len());
        for &i in changed.iter() {
            let iu = i as usize;
            let (Some(device), Some(live)) = (model.fleet.devices.get(iu), model.live.get(iu))
            else {
                return false;
            };
            let old = d.classes[iu];
            let new = match q.color_mode {
                ColorMode::UpdateState => update_class(live.update_state),
                ColorMode::Health => health_class(device, live, q.now),
                // The rollout's classes come from its map, which no message changes.
                ColorMode::RolloutState => old,
            };
            let was_in = d.filtered.binary_search(&i).is_ok();
            d.classes[iu] = new;
            let now_in = device_passes(model, &q.filter, self.parsed.as_ref(), &d.classes, iu);
            d.counts_all[usize::from(old).min(last)] -= 1;
            d.counts_all[usize::from(new).min(last)] += 1;
            if was_in {
                d.counts_filtered[usize::from(old).min(last)] -= 1;
            }
            if now_in {
                d.counts_filtered[usize::from(new).min(last)] += 1;
            }
            if d.newest_last_seen.is_none_or(|t| device.last_seen > t) {
                d.newest_last_seen = Some(device.last_seen);
            }
            let key = order_key(index.sort_value(model, q.sort, iu), q.sort_descending);
            moves.push((i, was_in, now_in, key));
        }
        let keys = &mut self.keys;
        if moves.len() <= ONE_BY_ONE {
            for &(i, was_in, now_in, key) in &moves {
                let iu = i as usize;
                if was_in {
                    let at = d
                        .order
                        .partition_point(|&j| (keys[j as usize], j) < (keys[iu], i));
                    if d.order.get(at) != Some(&i) {
                        return false;
                    }
                    d.order.remove(at);
                    if let Ok(at) = d.filtered.binary_search(&i) {
                        d.filtered.remove(at);
                    }
                }
                keys[iu] = key;
                if now_in {
                    if let Err(at) = d.filtered.binary_search(&i) {
                        d.filtered.insert(at, i);
                    }
                    let at = d
                        .order
                        .partition_point(|&j| (keys[j as usize], j) < (key, i));
                    d.order.insert(at, i);
                }
            }
            return true;
        }
        // Many: take the changed devices out of both lists in one pass, then merge back those
        // that pass, in index order and in table order.
        let mut marked = vec![false; model.len()];
        for &(i, ..) in &moves {
            marked[i as usize] = true;
        }
        d.filtered.retain(|&j| !marked[j as usize]);
        d.order.retain(|&j| !marked[j as usize]);
        let mut back: Vec<u32> = Vec::new();
        for &(i, _, now_in, key) in &moves {
            keys[i as usize] = key;
            if now_in {
                back.push(i);
            }
        }
        // `moves` follows `changed`, ascending.
        d.filtered = merge_by(&d.filtered, &back, |&j| j);
        back.sort_unstable_by_key(|&j| (keys[j as usize], j));
        d.order = merge_by(&d.order, &back, |&j| (keys[j as usize], j));
        true
    }
}

/// Two lists ascending by `key`, merged.
fn merge_by<K: Ord>(a: &[u32], b: &[u32], key: impl Fn(&u32) -> K) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut x, mut y) = (0, 0);
    while x < a.len() && y < b.len() {
        if key(&b[y]) < key(&a[x]) {
            out.push(b[y]);
            y += 1;
        } else {
            out.push(a[x]);
            x += 1;
        }
    }
    out.extend_from_slice(&a[x..]);
    out.extend_from_slice(&b[y..]);
    out
}

/// One thing the worker must know, in the order the UI saw it.
#[derive(Debug)]
pub enum DeriveRequest {
    /// A new fleet replaces the old; indices into the old one mean nothing now. The fleet is
    /// the UI's own, shared: the worker's replica copies only the devices that change.
    Load(Arc<Fleet>),
    /// A validated message the UI applied to its model.
    Inbound(Box<Inbound>),
    Query(Query),
    /// The map's zoom level while it shows, `None` otherwise. A level is answered with a
    /// result carrying the grid at that level; `None` is not numbered and answers nothing.
    MapLevel(Option<u8>),
    /// Whether the cohort view shows. `true` is answered with a result carrying the summaries;
    /// `false` is not numbered and answers nothing.
    Summaries(bool),
}

impl DeriveRequest {
    /// Whether the request is numbered (see [`DeriveResult::seen`]): whether it asks for an
    /// answer.
    fn numbered(&self) -> bool {
        !matches!(
            self,
            DeriveRequest::MapLevel(None) | DeriveRequest::Summaries(false)
        )
    }

    /// Whether the request changes what is derived (rather than only what is binned or
    /// summarised from it).
    fn changes_data(&self) -> bool {
        matches!(
            self,
            DeriveRequest::Load(_) | DeriveRequest::Inbound(_) | DeriveRequest::Query(_)
        )
    }
}

/// A result and how many requests it reflects (the UI numbers what it sends the same way).
#[derive(Debug)]
pub struct DeriveResult {
    pub derived: Derived,
    /// Requests applied before this was computed, counted from 1.
    pub seen: u64,
    /// How long the derivation itself took on the worker.
    pub compute: Duration,
}

/// The UI's end of the worker.
#[derive(Debug)]
pub struct DeriveWorker {
    requests: Sender<DeriveRequest>,
    results: Receiver<DeriveResult>,
    /// Requests sent so far.
    pub sent: u64,
}

impl DeriveWorker {
    /// Starts the worker thread. `repaint` wakes the UI when a result is ready; data-only
    /// changes are derived at most once per `throttle`.
    pub fn spawn(repaint: Option<egui::Context>, throttle: Duration) -> std::io::Result<Self> {
        let (requests, rx) = std::sync::mpsc::channel();
        let (tx, results) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("convoy-derive".into())
            .spawn(move || run(&rx, &tx, repaint.as_ref(), throttle))?;
        Ok(Self {
            requests,
            results,
            sent: 0,
        })
    }

    /// Queues a request; O(size of the request). False if the worker is gone.
    pub fn send(&mut self, request: DeriveRequest) -> bool {
        if request.numbered() {
            self.sent += 1;
        }
        self.requests.send(request).is_ok()
    }

    /// The newest result waiting, if any (older ones waiting are dropped).
    pub fn try_result(&self) -> Option<DeriveResult> {
        let mut newest = None;
        while let Ok(r) = self.results.try_recv() {
            newest = Some(r);
        }
        newest
    }

    /// Blocks until a result reflecting every request sent so far arrives; `None` if the worker
    /// is gone. For a fixed clock (tests, benchmarks), where frames must be deterministic.
    pub fn wait_result(&self) -> Option<DeriveResult> {
        loop {
            let r = self.results.recv().ok()?;
            if r.seen >= self.sent {
                return Some(r);
            }
        }
    }
}

/// The worker's state: the replica, the query, what is pending.
struct Replica {
    model: Option<FleetModel>,
    query: Option<Query>,
    map_level: Option<u8>,
    summaries: bool,
    seen: u64,
    generation: u64,
    /// Something numbered arrived since the last result; `query_changed` if it must be
    /// answered at once (a query or a view change), `data_changed` if it changes what is
    /// derived.
    dirty: bool,
    query_changed: bool,
    data_changed: bool,
    /// The fleet's columns as codes, built for the loaded fleet and kept in step with the
    /// replica device by device.
    index: FleetIndex,
    /// The last derivation, kept to answer a view change without deriving again and to follow
    /// status messages device by device.
    last: Option<Derivation>,
    /// Devices changed by messages since the last derivation.
    changed: Vec<u32>,
    /// The rollout map the last derivation used.
    rollout: Option<std::sync::Arc<RolloutMap>>,
}

impl Replica {
    /// Whether the classes come from the rollout map.
    fn colours_by_rollout(&self) -> bool {
        self.query
            .as_ref()
            .is_some_and(|q| q.color_mode == ColorMode::RolloutState)
    }

    /// Takes the newest published rollout map; true if it differs from the one used last.
    fn refresh_rollout(&mut self, ctx: Option<&egui::Context>) -> bool {
        let newest = ctx.and_then(rollout_map);
        let same = match (&newest, &self.rollout) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.rollout = newest;
        !same
    }
}

impl Replica {
    fn apply(&mut self, request: DeriveRequest) {
        if request.numbered() {
            self.seen += 1;
            self.dirty = true;
        }
        if request.changes_data() {
            self.data_changed = true;
        }
        match request {
            DeriveRequest::MapLevel(level) => {
                self.map_level = level;
                self.query_changed |= level.is_some();
                return;
            }
            DeriveRequest::Summaries(on) => {
                self.summaries = on;
                self.query_changed |= on;
                return;
            }
            _ => {}
        }
        match request {
            DeriveRequest::Load(fleet) => {
                self.model = Some(FleetModel::shared(fleet));
                self.index = FleetIndex::new();
                self.last = None;
                self.changed.clear();
                self.query_changed = true;
            }
            DeriveRequest::Inbound(inbound) => {
                if let Some(m) = &mut self.model {
                    m.apply(&inbound);
                    if let Some(i) = m.index_of(inbound.device_id()) {
                        self.index.update_device(m, i);
                        // Past the share that is followed device by device, only "many"
                        // matters.
                        if self.changed.len() <= m.len() / FULL_PASS_SHARE {
                            self.changed.push(i as u32);
                        }
                    }
                }
            }
            DeriveRequest::Query(q) => {
                self.query = Some(q);
                self.query_changed = true;
            }
            DeriveRequest::MapLevel(_) | DeriveRequest::Summaries(_) => {}
        }
    }
}

fn run(
    rx: &Receiver<DeriveRequest>,
    tx: &SyncSender<DeriveResult>,
    repaint: Option<&egui::Context>,
    throttle: Duration,
) {
    let mut r = Replica {
        model: None,
        query: None,
        map_level: None,
        summaries: false,
        seen: 0,
        generation: 0,
        dirty: false,
        query_changed: false,
        data_changed: false,
        index: FleetIndex::new(),
        last: None,
        changed: Vec::new(),
        rollout: None,
    };
    let mut last_result: Option<Instant> = None;
    loop {
        if !r.dirty && r.colours_by_rollout() && repaint.is_some() {
            match rx.recv_timeout(ROLLOUT_MAP_POLL) {
                Ok(req) => r.apply(req),
                Err(RecvTimeoutError::Timeout) => {
                    if r.refresh_rollout(repaint) {
                        // A newer reading of the rollout: derive again, answering at once.
                        r.dirty = true;
                        r.data_changed = true;
                        r.query_changed = true;
                        r.last = None;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else if !r.dirty {
            match rx.recv() {
                Ok(req) => r.apply(req),
                Err(_) => return,
            }
        }
        // Only the newest state matters: take everything waiting before deriving.
        loop {
            match rx.try_recv() {
                Ok(req) => r.apply(req),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if !r.dirty {
            // Only unnumbered requests (map or cohort view hidden): nothing to answer.
            continue;
        }
        let wait = last_result
            .filter(|_| !r.query_changed)
            .map_or(Duration::ZERO, |t| throttle.saturating_sub(t.elapsed()));
        if !wait.is_zero() {
            // Data streams in: keep applying it until the throttle period is over (or the query
            // changes, which derives at once).
            match rx.recv_timeout(wait) {
                Ok(req) => r.apply(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        if r.colours_by_rollout() && r.refresh_rollout(repaint) {
            r.data_changed = true;
            r.last = None;
        }
        let (Some(model), Some(query)) = (&r.model, &r.query) else {
            // Nothing to derive from yet; the next request makes the state complete.
            r.dirty = false;
            continue;
        };
        let start = Instant::now();
        r.generation += 1;
        // Follow the changed devices one by one where the last derivation allows it (only
        // the view changed: nothing to follow); else derive again.
        let followed = match r.last.as_mut() {
            Some(last) if last.can_follow(model, query, r.changed.len()) => {
                r.changed.is_empty() || last.apply_changes(model, &mut r.index, &mut r.changed)
            }
            _ => false,
        };
        r.changed.clear();
        if !followed {
            r.last = Some(Derivation::full(
                model,
                &mut r.index,
                query,
                r.rollout.as_deref(),
            ));
        }
        let Some(last) = r.last.as_ref() else {
            r.dirty = false;
            continue;
        };
        let mut derived = last.derived.base_copy(r.generation);
        derived.grid = r.map_level.map(|level| {
            let cell = cell_size_for(level, crate::gui::tokens::CLUSTER_CELL_PX);
            let grid = Grid::build(
                &model.map_x,
                &model.map_y,
                &derived.classes,
                &derived.filtered,
                cell,
            );
            (level, grid)
        });
        derived.summaries = r.summaries.then(|| {
            SUMMARY_ATTRIBUTES
                .iter()
                .map(|(attr, title)| {
                    let rows = r
                        .index
                        .summarise(model, attr, &derived.classes, &derived.filtered);
                    (*title, rows)
                })
                .collect()
        });
        let compute = start.elapsed();
        let result = DeriveResult {
            derived,
            seen: r.seen,
            compute,
        };
        // A query or view change is the user's: its answer shows at once. A data-only result
        // shows with the next coalesced data repaint (issue 19: a repaint per result kept the
        // console drawing while the fleet streamed in).
        let answers_user = r.query_changed;
        r.dirty = false;
        r.query_changed = false;
        r.data_changed = false;
        last_result = Some(Instant::now());
        if tx.send(result).is_err() {
            return;
        }
        if let Some(ctx) = repaint {
            if answers_user {
                ctx.request_repaint();
            } else {
                crate::gui::backend::request_data_repaint(ctx);
            }
        }
        // Idle after a load: build the index's columns for searches one at a time, until a
        // request arrives.
        loop {
            match rx.try_recv() {
                Ok(req) => {
                    r.apply(req);
                    break;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
            let Some(model) = r.model.as_ref() else {
                break;
            };
            if !r.index.prewarm_step(model) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::query::summarise;
    use convoy_core::rng::SeededRng;
    use convoy_core::synth::{SynthOptions, generate};

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn fleet() -> Fleet {
        generate(&SynthOptions {
            devices: 300,
            seed: 5,
            now: NOW,
        })
    }

    fn query(text: &str) -> Query {
        Query {
            color_mode: ColorMode::Health,
            filter: Filter {
                text: text.into(),
                class: None,
                ..Filter::default()
            },
            sort: Column::LastSeen,
            sort_descending: true,
            now: NOW,
        }
    }

    #[test]
    fn the_worker_answers_with_what_the_ui_thread_would_compute() {
        let mut w = DeriveWorker::spawn(None, Duration::ZERO).expect("thread starts");
        assert!(w.send(DeriveRequest::Load(Arc::new(fleet()))));
        assert!(w.send(DeriveRequest::Query(query("eu-"))));
        let r = w.wait_result().expect("an answer");
        assert_eq!(r.seen, 2);
        let reference = Derived::compute(&FleetModel::new(fleet()), &query("eu-"), None, 0);
        assert!(!reference.filtered.is_empty());
        assert!(reference.filtered.len() < 300);
        assert_eq!(r.derived.classes, reference.classes);
        assert_eq!(r.derived.filtered, reference.filtered);
        assert_eq!(r.derived.order, reference.order);
        assert_eq!(r.derived.counts_filtered, reference.counts_filtered);
        // A newer query gives a newer generation and the newer result.
        assert!(w.send(DeriveRequest::Query(query(""))));
        let r2 = w.wait_result().expect("an answer");
        assert!(r2.derived.generation > r.derived.generation);
        assert_eq!(r2.derived.filtered.len(), 300);
        assert!(r2.derived.grid.is_none(), "no map level, no grid");
        // With the map showing, the answer carries the grid the map would build itself.
        assert!(w.send(DeriveRequest::MapLevel(Some(6))));
        assert!(w.send(DeriveRequest::Query(query("eu-"))));
        let r3 = w.wait_result().expect("an answer");
        let (level, grid) = r3.derived.grid.expect("a grid for the map");
        let m = FleetModel::new(fleet());
        let own = Grid::build(
            &m.map_x,
            &m.map_y,
            &reference.classes,
            &reference.filtered,
            cell_size_for(6, crate::gui::tokens::CLUSTER_CELL_PX),
        );
        assert_eq!(level, 6);
        assert_eq!(grid.cells(), own.cells());
        assert_eq!(grid.device_count(), reference.filtered.len());
        assert!(
            r3.derived.summaries.is_none(),
            "no cohort view, no summaries"
        );
        // With the cohort view showing, the answer carries its summaries.
        assert!(w.send(DeriveRequest::Summaries(true)));
        assert!(w.send(DeriveRequest::Query(query("eu-"))));
        let r4 = w.wait_result().expect("an answer");
        let summaries = r4.derived.summaries.expect("summaries for the cohort view");
        assert_eq!(summaries.len(), SUMMARY_ATTRIBUTES.len());
        assert_eq!(summaries[0].0, "Model");
        assert_eq!(
            summaries[0].1,
            summarise(&m, "model", &reference.classes, &reference.filtered)
        );
    }

    #[test]
    fn a_zoom_level_or_the_cohort_view_alone_is_answered_from_the_last_result() {
        let mut w = DeriveWorker::spawn(None, Duration::ZERO).expect("thread starts");
        assert!(w.send(DeriveRequest::Load(Arc::new(fleet()))));
        assert!(w.send(DeriveRequest::Query(query("eu-"))));
        let first = w.wait_result().expect("an answer");
        assert!(first.derived.grid.is_none());
        let m = FleetModel::new(fleet());
        for level in [4u8, 9] {
            // The map shows (or zooms to another level): answered with a grid, no new query.
            assert!(w.send(DeriveRequest::MapLevel(Some(level))));
            let r = w.wait_result().expect("an answer to the level alone");
            assert_eq!(r.seen, w.sent);
            assert!(r.derived.generation > first.derived.generation);
            assert_eq!(r.derived.filtered, first.derived.filtered);
            assert_eq!(r.derived.order, first.derived.order);
            let (got_level, grid) = r.derived.grid.expect("a grid");
            let own = Grid::build(
                &m.map_x,
                &m.map_y,
                &first.derived.classes,
                &first.derived.filtered,
                cell_size_for(level, crate::gui::tokens::CLUSTER_CELL_PX),
            );
            assert_eq!(got_level, level);
            assert_eq!(grid.cells(), own.cells());
        }
        // Leaving the map asks for nothing.
        let sent = w.sent;
        assert!(w.send(DeriveRequest::MapLevel(None)));
        assert_eq!(w.sent, sent, "not numbered");
        // Opening the cohort view alone: answered with the summaries.
        assert!(w.send(DeriveRequest::Summaries(true)));
        let r = w.wait_result().expect("an answer to the cohort view");
        let summaries = r.derived.summaries.expect("summaries");
        assert_eq!(
            summaries[0].1,
            summarise(&m, "model", &first.derived.classes, &first.derived.filtered)
        );
        assert!(r.derived.grid.is_none(), "the map is not showing");
    }

    #[test]
    fn nothing_is_derived_before_both_a_fleet_and_a_query_arrived() {
        let mut w = DeriveWorker::spawn(None, Duration::ZERO).expect("thread starts");
        assert!(w.send(DeriveRequest::Query(query(""))));
        // Time passes on purpose, not synchronisation: that nothing is derived can only be seen
        // over a while (the worker says nothing when it has nothing to say).
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.try_result().is_none());
        assert!(w.send(DeriveRequest::Load(Arc::new(fleet()))));
        assert_eq!(w.wait_result().expect("an answer").derived.order.len(), 300);
    }

    #[test]
    fn a_published_rollout_map_recolours_without_another_request() {
        let ctx = egui::Context::default();
        let mut w = DeriveWorker::spawn(Some(ctx.clone()), Duration::ZERO).expect("thread starts");
        let fleet = fleet();
        let ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        assert!(w.send(DeriveRequest::Load(Arc::new(fleet))));
        let rollout_query = Query {
            color_mode: ColorMode::RolloutState,
            ..query("")
        };
        assert!(w.send(DeriveRequest::Query(rollout_query)));
        let r = w.wait_result().expect("an answer");
        assert_eq!(r.derived.counts_all[0], 300, "no rollout yet: none in one");
        // The monitor publishes a reading: ten devices confirmed.
        publish_rollout_map(
            &ctx,
            std::sync::Arc::new(RolloutMap {
                rollout_id: "r".into(),
                device_ids: ids[..10].to_vec(),
                classes: vec![4; 10],
            }),
        );
        // No request: the idle worker finds the map by itself (within a few polls).
        let started = Instant::now();
        let r2 = loop {
            if let Some(r) = w.try_result() {
                break r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the worker never recoloured"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(r2.seen, r.seen, "an answer to no new request");
        assert_eq!(r2.derived.counts_all[4], 10);
        assert_eq!(r2.derived.counts_all[0], 290);
    }

    /// The property test's draws: the core's seeded generator, an index below `n`.
    fn pick(rng: &mut SeededRng, n: usize) -> usize {
        rng.below(n as u64) as usize
    }

    /// A random message for a random device: a status (update state, battery, link, maybe a
    /// new firmware version, last seen moving on), a crash, or a battery reading.
    fn random_message(rng: &mut SeededRng, model: &FleetModel, step: i64) -> Inbound {
        use crate::link::protocol::{
            DeviceStatus, Telemetry, TelemetryEvent, UpdateState, UpdateStatus,
        };
        use convoy_core::fleet::Connectivity;
        let d = &model.fleet.devices[pick(rng, model.len())];
        let ts = Timestamp::from_secs(NOW.secs() - 7200 + step * 13 + pick(rng, 600) as i64);
        match pick(rng, 5) {
            0 => Inbound::Telemetry(Telemetry {
                v: 1,
                device_id: d.id.clone(),
                ts,
                seq: 1,
                event: TelemetryEvent::Crash {
                    process: "app".into(),
                },
            }),
            1 => Inbound::Telemetry(Telemetry {
                v: 1,
                device_id: d.id.clone(),
                ts,
                seq: 2,
                event: TelemetryEvent::Battery {
                    pct: pick(rng, 101) as u8,
                },
            }),
            _ => {
                let states = [
                    UpdateState::Idle,
                    UpdateState::Downloading,
                    UpdateState::Installing,
                    UpdateState::Confirmed,
                    UpdateState::Failed,
                    UpdateState::Reverted,
                ];
                let mut components = d.components.clone();
                if pick(rng, 4) == 0 {
                    // Sometimes a version the fleet has, sometimes a new one.
                    let v = ["2.5.0", "2.4.1", "2.5", "9.9.7"][pick(rng, 4)];
                    if let Ok(v) = v.parse() {
                        components.insert(convoy_core::fleet::component::FIRMWARE, v);
                    }
                }
                let links = Connectivity::ALL;
                Inbound::Status(DeviceStatus {
                    v: 1,
                    device_id: d.id.clone(),
                    ts,
                    active_slot: d.active_slot,
                    components,
                    update: UpdateStatus {
                        state: states[pick(rng, states.len())],
                        release_id: Some("fw-2.5.0".into()),
                        command_id: None,
                        progress_pct: None,
                        reason: None,
                    },
                    battery_pct: Some(pick(rng, 101) as u8),
                    power: d.power,
                    connectivity: links[pick(rng, links.len())],
                    metered: false,
                    free_storage_bytes: 1,
                    position: None,
                })
            }
        }
    }

    #[test]
    fn changes_followed_device_by_device_equal_a_full_recompute() {
        let fleet = Arc::new(generate(&SynthOptions {
            devices: 1500,
            seed: 9,
            now: NOW,
        }));
        let cases: [(ColorMode, &str, Option<u8>, Column, bool); 8] = [
            (ColorMode::UpdateState, "", None, Column::LastSeen, true),
            (
                ColorMode::UpdateState,
                "eu",
                None,
                Column::UpdateState,
                false,
            ),
            (
                ColorMode::Health,
                "state:failed",
                None,
                Column::Region,
                true,
            ),
            (ColorMode::Health, "", Some(4), Column::Battery, false),
            (
                ColorMode::UpdateState,
                "-state:idle fw:>=2.4",
                None,
                Column::Firmware,
                false,
            ),
            (
                ColorMode::Health,
                "cellular down",
                None,
                Column::Connectivity,
                true,
            ),
            (ColorMode::UpdateState, "t300", Some(5), Column::Id, true),
            (
                ColorMode::RolloutState,
                "region:eu-*",
                None,
                Column::Id,
                false,
            ),
        ];
        let mut rng = SeededRng::new(22);
        let mut incremental = 0;
        for (case, &(mode, text, class, sort, descending)) in cases.iter().enumerate() {
            let mut model = FleetModel::shared(Arc::clone(&fleet));
            let mut index = FleetIndex::new();
            let q = Query {
                color_mode: mode,
                filter: Filter {
                    text: text.into(),
                    class,
                    ..Filter::default()
                },
                sort,
                sort_descending: descending,
                now: NOW,
            };
            let mut d = Derivation::full(&model, &mut index, &q, None);
            for round in 0..30 {
                let batch = [1, 1, 2, 3, 8, 9, 40, 200][pick(&mut rng, 8)];
                let mut changed = Vec::new();
                for k in 0..batch {
                    let m = random_message(&mut rng, &model, (round * 300 + k) as i64);
                    model.apply(&m);
                    if let Some(i) = model.index_of(m.device_id()) {
                        index.update_device(&model, i);
                        changed.push(i as u32);
                    }
                }
                if d.apply_changes(&model, &mut index, &mut changed) {
                    incremental += 1;
                } else {
                    d = Derivation::full(&model, &mut index, &q, None);
                }
                let want = Derived::compute(&model, &q, None, 0);
                let got = &d.derived;
                let at = format!("case {case} ({text:?} by {sort:?}), round {round}");
                assert_eq!(got.classes, want.classes, "{at}");
                assert_eq!(got.filtered, want.filtered, "{at}");
                assert_eq!(got.order, want.order, "{at}");
                assert_eq!(got.counts_all, want.counts_all, "{at}");
                assert_eq!(got.counts_filtered, want.counts_filtered, "{at}");
                assert_eq!(got.newest_last_seen, want.newest_last_seen, "{at}");
            }
        }
        // Most rounds were followed device by device (a new firmware version forces a full
        // pass now and then).
        assert!(incremental > 100, "{incremental} of 240 rounds incremental");
    }
}
