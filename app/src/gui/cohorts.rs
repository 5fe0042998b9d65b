//! Cohorts: the fleet (or the filtered part of it) summarised by model, hardware revision,
//! region, depot, connectivity and customer tier, each group with its colour-class make-up,
//! the cohorts made on the map, and the saved cohorts. Summaries are computed by the derive
//! worker when the data changes or the view opens, never here; until the first answer the view
//! says "summarising…".
//!
//! Saved cohorts (issue 19) are named searches kept in the cache (`ops::cohorts`), shared with
//! `convoy cohort` and an engine's exclusions: the search box reads `cohort:NAME` as the saved
//! search, read again as the fleet changes, so the group picks up new devices. Saving, deleting
//! and listing run as jobs on a worker thread ([`SavedCohorts`]); the console copies the list
//! into the filter so the search box knows the names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use convoy_core::fleet::Fleet;
use egui::RichText;

use crate::gui::app::{Cohort, Derived, UiCommand};
use crate::gui::model::class_counts;
use crate::gui::query::SummaryRow;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};

/// Summaries cached against the data generation they were computed from.
#[derive(Debug, Default)]
pub struct CohortCache {
    generation: Option<u64>,
    pub tables: Vec<(&'static str, Vec<SummaryRow>)>,
    pub saved: SavedCohorts,
}

/// One saved cohort as the view lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedRow {
    pub name: String,
    pub query: String,
    pub created_by: String,
    /// Devices of the cache's fleet it matches now (by their cached attributes), or why the
    /// search does not read.
    pub devices: Result<usize, String>,
}

/// What the saved-cohorts section asks the console for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedCohortsCommand {
    /// Save `query` (the search box's text) as `name`.
    Save {
        name: String,
        query: String,
    },
    Delete(String),
    /// Put `cohort:NAME` in the search box.
    Apply(String),
}

type Listing = Result<Vec<SavedRow>, String>;
/// What a job answers: the save's or delete's outcome (if it did one), then the listing.
type JobAnswer = (Option<Result<String, String>>, Listing);

/// The saved cohorts: the last listing, the job under way, and the form.
#[derive(Debug, Default)]
pub struct SavedCohorts {
    /// `None` until the first listing arrives.
    pub list: Option<Listing>,
    /// The answer to the last save or delete (what was done, or why not).
    pub message: Option<Result<String, String>>,
    /// The name typed for saving the current search.
    pub name: String,
    requested: bool,
    job: Option<Receiver<JobAnswer>>,
}

impl SavedCohorts {
    /// Starts a listing the first time the console has a cache and a fleet.
    pub fn ensure_loaded(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        fleet: Option<Arc<Fleet>>,
    ) {
        if !self.requested
            && let (Some(cache), Some(fleet)) = (cache, fleet)
        {
            self.start(ctx, cache, fleet, None);
        }
    }

    /// Runs `op` (a save or a delete, or nothing) and then a listing, on a worker thread.
    pub fn start(
        &mut self,
        ctx: &egui::Context,
        cache: PathBuf,
        fleet: Arc<Fleet>,
        op: Option<SavedCohortsCommand>,
    ) {
        self.requested = true;
        let by = crate::store::audit::operator_actor();
        let job = move || {
            // Never creates a cache: a console pointed at a missing one says so elsewhere.
            let store = match crate::store::Store::open_existing(&cache) {
                Ok(s) => s,
                Err(e) => {
                    let why = format!("{e:#}");
                    return (op.map(|_| Err(why.clone())), Err(why));
                }
            };
            let now = crate::now();
            let done = op.map(|op| match op {
                SavedCohortsCommand::Save { name, query } => {
                    crate::ops::cohorts::save(&store, &name, &query, &by, now)
                        .map(|()| format!("Saved cohort \"{name}\": {query}"))
                        .map_err(|e| format!("{e:#}"))
                }
                SavedCohortsCommand::Delete(name) => {
                    crate::ops::cohorts::delete(&store, &name, &by, now)
                        .map(|()| format!("Deleted cohort \"{name}\""))
                        .map_err(|e| format!("{e:#}"))
                }
                SavedCohortsCommand::Apply(_) => Ok(String::new()),
            });
            (done, list(&store, &fleet))
        };
        match crate::gui::worker::spawn_job(ctx, "convoy-cohorts", job) {
            Ok(rx) => self.job = Some(rx),
            Err(e) => self.message = Some(Err(format!("could not start the cohorts thread: {e}"))),
        }
    }

    /// Takes a finished job's answer; returns the saved searches by name when a listing
    /// arrived (the console gives them to the filter).
    pub fn poll(&mut self) -> Option<Arc<BTreeMap<String, String>>> {
        let (done, listing) = self.job.as_ref()?.try_recv().ok()?;
        self.job = None;
        if let Some(done) = done {
            if done.is_ok() {
                self.name.clear();
            }
            self.message = Some(done);
        }
        let table = listing.as_ref().ok().map(|rows| {
            Arc::new(
                rows.iter()
                    .map(|r| (r.name.clone(), r.query.clone()))
                    .collect::<BTreeMap<_, _>>(),
            )
        });
        self.list = Some(listing);
        table
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }
}

/// Every saved cohort with how many devices of `fleet` it matches.
fn list(store: &crate::store::Store, fleet: &Fleet) -> Listing {
    let saved = store.cohorts().map_err(|e| format!("{e:#}"))?;
    let table: BTreeMap<String, String> = saved
        .iter()
        .map(|c| (c.name.clone(), c.query.clone()))
        .collect();
    Ok(saved
        .into_iter()
        .map(|c| {
            let devices =
                convoy_core::search::Query::parse_with(&c.query, &|n| table.get(n).cloned())
                    .map(|q| {
                        fleet
                            .devices
                            .iter()
                            .filter(|d| q.matches(d, &|_| None))
                            .count()
                    })
                    .map_err(|e| e.to_string());
            SavedRow {
                name: c.name,
                query: c.query,
                created_by: c.created_by,
                devices,
            }
        })
        .collect())
}

impl CohortCache {
    /// Takes the derive worker's summaries when they are newer than the ones kept. The console
    /// calls it before the view draws: the derive worker summarises while this view shows, and
    /// when it opens.
    pub fn take(&mut self, derived: &mut Derived) {
        if self.generation != Some(derived.generation)
            && let Some(tables) = derived.summaries.take()
        {
            self.tables = tables;
            self.generation = Some(derived.generation);
        }
    }
}

/// Draws the cohorts view.
pub fn cohorts_ui(
    cache: &CohortCache,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    if cx.model.is_none() {
        return;
    }
    let current = cache.generation == Some(cx.derived.generation);
    let mode = cx.state.color_mode;
    let mut commands = Vec::new();
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Cohorts");
        ui.label(
            RichText::new(format!(
                "{} devices pass the filter; bars show {} classes.",
                cx.derived.filtered.len(),
                mode.label().to_lowercase()
            ))
            .color(tokens::MUTED),
        );
        ui.add_space(6.0);
        ui.label(RichText::new("Selected cohorts").strong());
        if cx.cohorts.is_empty() {
            ui.label(
                RichText::new("None yet: Shift+drag a box or a lasso on the map to make one.")
                    .color(tokens::MUTED),
            );
        }
        for (n, Cohort { name, devices }) in cx.cohorts.iter().enumerate() {
            ui.horizontal(|ui| {
                let counts = class_counts(&cx.derived.classes, devices.iter().map(|&i| i as usize));
                ui.label(RichText::new(name).strong());
                ui.label(format!("{} devices", devices.len()));
                class_bar(ui, &counts, devices.len() as u32, mode);
                if ui.button(format!("Delete {name}")).clicked() {
                    commands.push(UiCommand::DeleteCohort(n));
                }
            });
        }
        ui.add_space(10.0);
        saved_ui(&cache.saved, cx, &mut commands, ui);
        ui.add_space(10.0);
        if !current {
            let text = if cache.tables.is_empty() {
                "summarising…"
            } else {
                "updating…"
            };
            ui.label(RichText::new(text).color(tokens::MUTED));
        }
        for (title, rows) in &cache.tables {
            egui::CollapsingHeader::new(RichText::new(*title).strong())
                .default_open(true)
                .show(ui, |ui| {
                    egui::Grid::new(*title)
                        .num_columns(3)
                        .striped(true)
                        .show(ui, |ui| {
                            for r in rows.iter().take(40) {
                                ui.label(&r.value);
                                ui.label(r.count.to_string());
                                class_bar(ui, &r.by_class, r.count, mode);
                                ui.end_row();
                            }
                        });
                    if rows.len() > 40 {
                        ui.label(format!("and {} more", rows.len() - 40));
                    }
                });
        }
    });
    out.extend(commands);
}

/// The saved cohorts: save the current search under a name, list, apply, delete.
fn saved_ui(
    saved: &SavedCohorts,
    cx: &ViewContext<'_>,
    commands: &mut Vec<UiCommand>,
    ui: &mut egui::Ui,
) {
    ui.label(RichText::new("Saved cohorts").strong());
    ui.label(
        RichText::new(
            "Named searches kept in the cache: they pick up devices that match later. Use one \
             in the search box as cohort:NAME, or to exclude devices from a rollout.",
        )
        .color(tokens::MUTED),
    );
    let query = cx.state.filter.text.trim().to_owned();
    ui.horizontal(|ui| {
        let label = ui.label("Save the current search as:");
        let mut name = saved.name.clone();
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut name)
                    .hint_text("a name, e.g. rev C vans")
                    .desired_width(200.0),
            )
            .labelled_by(label.id);
        if edit.changed() {
            commands.push(UiCommand::SavedCohortName(name.clone()));
        }
        let problem = if query.is_empty() {
            Some("Type a search in the search box first".to_owned())
        } else if let Some(e) = cx.state.filter.error() {
            Some(format!("The search does not read: {e}"))
        } else {
            crate::ops::cohorts::name_problem(&name)
        };
        let button = ui
            .add_enabled(
                problem.is_none() && !saved.busy(),
                egui::Button::new("Save cohort"),
            )
            .on_hover_text(format!("Save \"{query}\" under this name"));
        let button = match &problem {
            Some(p) => button.on_disabled_hover_text(p),
            None => button,
        };
        if button.clicked() {
            commands.push(UiCommand::SavedCohorts(SavedCohortsCommand::Save {
                name: name.trim().to_owned(),
                query: query.clone(),
            }));
        }
    });
    match &saved.message {
        Some(Ok(text)) if !text.is_empty() => {
            ui.label(RichText::new(text).color(tokens::OK));
        }
        Some(Err(why)) => {
            ui.label(RichText::new(format!("Not saved: {why}")).color(tokens::BAD));
        }
        _ => {}
    }
    match &saved.list {
        None => {
            ui.label(RichText::new("reading the saved cohorts…").color(tokens::MUTED));
        }
        Some(Err(why)) => {
            ui.label(
                RichText::new(format!("The saved cohorts could not be read: {why}"))
                    .color(tokens::BAD),
            );
        }
        Some(Ok(rows)) if rows.is_empty() => {
            ui.label(RichText::new("None saved yet.").color(tokens::MUTED));
        }
        Some(Ok(rows)) => {
            egui::Grid::new("saved-cohorts")
                .num_columns(5)
                .striped(true)
                .show(ui, |ui| {
                    for r in rows {
                        ui.label(RichText::new(&r.name).strong());
                        match &r.devices {
                            Ok(n) => ui.label(format!("{n} devices")),
                            Err(e) => ui.label(
                                RichText::new(format!("does not read: {e}")).color(tokens::BAD),
                            ),
                        };
                        ui.label(RichText::new(&r.query).monospace())
                            .on_hover_text(format!("saved by {}", r.created_by));
                        if ui
                            .button(format!("Show {}", r.name))
                            .on_hover_text("Search for this cohort (cohort:NAME)")
                            .clicked()
                        {
                            commands.push(UiCommand::SavedCohorts(SavedCohortsCommand::Apply(
                                r.name.clone(),
                            )));
                        }
                        if ui.button(format!("Delete saved {}", r.name)).clicked() {
                            commands.push(UiCommand::SavedCohorts(SavedCohortsCommand::Delete(
                                r.name.clone(),
                            )));
                        }
                        ui.end_row();
                    }
                });
        }
    }
}

/// A horizontal bar split by class share.
fn class_bar(ui: &mut egui::Ui, counts: &[u32], total: u32, mode: crate::gui::model::ColorMode) {
    let (rect, response) = ui.allocate_exact_size(egui::vec2(220.0, 12.0), egui::Sense::hover());
    let painter = ui.painter();
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let mut x = rect.left();
    let total = total.max(1) as f32;
    for (k, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let w = rect.width() * n as f32 / total;
        painter.rect_filled(
            egui::Rect::from_min_size(egui::pos2(x, rect.top()), egui::vec2(w, rect.height())),
            0.0,
            tokens::class_color(mode, k),
        );
        x += w;
    }
    response.on_hover_ui(|ui| {
        for (k, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = mode.class_names().get(k).copied().unwrap_or("-");
            ui.label(format!("{name}: {n}"));
        }
    });
}
