//! The reports view: one rollout's record as a report. Its timeline exported as Markdown, CSV or
//! JSON (the same bytes as `convoy rollout timeline`), its metrics (time to remediate and to
//! recover, patch lead time, adoption by cohort, rollbacks) beside the means over the rollouts
//! the cache holds, and the communication drafts (internal, customer, regulator, and a support
//! decision tree) that `convoy rollout comms` writes.
//!
//! It draws only, and asks for the rest with a [`ReportCommand`] that the console applies
//! ([`ReportState::apply`]). The rollouts to pick from are the war room's board (read by
//! the history worker); a report is read on a `convoy-report` thread that opens the cache,
//! reads the timeline into a [`convoy_core::comms::RolloutStory`], writes the drafts with
//! [`convoy_core::comms`], and replays the engine's log into [`convoy_core::metrics`]. Exports
//! are written on a thread of their own, to a typed path or one picked with a save dialog
//! (rfd, also on its own thread: its dialogs block).
//!
//! Deliberately not here: any format of its own. The timeline's formats are the store's
//! [`write_timeline`], the drafts are the core's; the view adds no fact the record lacks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use anyhow::{Context, Result};
use convoy_core::comms::{self, Audience, Ending, RolloutStory};
use convoy_core::fleet::Fleet;
use convoy_core::metrics::{self, Adoption, RolloutMetrics, SummaryMetrics};
use egui::RichText;

use crate::gui::app::UiCommand;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};
use crate::store::Store;
use crate::store::events::{TimelineFormat, write_timeline};

/// Which draft the view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DraftTab {
    #[default]
    Internal,
    Customer,
    Regulator,
    Support,
}

impl DraftTab {
    pub const ALL: [DraftTab; 4] = [
        DraftTab::Internal,
        DraftTab::Customer,
        DraftTab::Regulator,
        DraftTab::Support,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DraftTab::Internal => "Internal",
            DraftTab::Customer => "Customer",
            DraftTab::Regulator => "Regulator",
            DraftTab::Support => "Support tree",
        }
    }

    /// The name a saved draft's file gets by default.
    fn file_word(self) -> &'static str {
        match self {
            DraftTab::Internal => "internal",
            DraftTab::Customer => "customer",
            DraftTab::Regulator => "regulator",
            DraftTab::Support => "support",
        }
    }
}

/// What the export button writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExportKind {
    #[default]
    TimelineMarkdown,
    TimelineCsv,
    TimelineJson,
    /// The draft shown, as Markdown.
    Draft,
}

impl ExportKind {
    pub const ALL: [ExportKind; 4] = [
        ExportKind::TimelineMarkdown,
        ExportKind::TimelineCsv,
        ExportKind::TimelineJson,
        ExportKind::Draft,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ExportKind::TimelineMarkdown => "Timeline as Markdown",
            ExportKind::TimelineCsv => "Timeline as CSV",
            ExportKind::TimelineJson => "Timeline as JSON",
            ExportKind::Draft => "Draft shown, as Markdown",
        }
    }

    fn timeline_format(self) -> Option<TimelineFormat> {
        match self {
            ExportKind::TimelineMarkdown => Some(TimelineFormat::Md),
            ExportKind::TimelineCsv => Some(TimelineFormat::Csv),
            ExportKind::TimelineJson => Some(TimelineFormat::Json),
            ExportKind::Draft => None,
        }
    }

    /// The file name a save dialog proposes.
    pub fn default_file_name(self, rollout_id: &str, tab: DraftTab) -> String {
        match self {
            ExportKind::TimelineMarkdown => format!("{rollout_id}-timeline.md"),
            ExportKind::TimelineCsv => format!("{rollout_id}-timeline.csv"),
            ExportKind::TimelineJson => format!("{rollout_id}-timeline.json"),
            ExportKind::Draft => format!("{rollout_id}-{}.md", tab.file_word()),
        }
    }
}

/// A rollout's metrics from the engine's log, or why there are none.
#[derive(Clone, Debug, PartialEq)]
pub enum LogMetrics {
    Computed {
        metrics: RolloutMetrics,
        /// Adoption by model, tier, region, network and power ([`metrics::COHORT_ATTRIBUTES`]).
        adoption: Vec<Adoption>,
    },
    /// No log, or one too large; the text says which.
    Missing(String),
}

/// One rollout's report, as the `convoy-report` thread read it.
#[derive(Clone, Debug)]
pub struct Report {
    pub rollout_id: String,
    pub story: RolloutStory,
    /// Timeline entries read.
    pub entries: usize,
    /// The drafts in [`DraftTab::ALL`] order.
    pub drafts: [String; 4],
    pub metrics: LogMetrics,
    /// Means over the rollouts on the board with a readable log.
    pub summary: SummaryMetrics,
    /// Rollouts left out of the means, one line each saying why.
    pub summary_skipped: Vec<String>,
}

impl Report {
    pub fn draft(&self, tab: DraftTab) -> &str {
        let i = DraftTab::ALL.iter().position(|t| *t == tab).unwrap_or(0);
        &self.drafts[i]
    }
}

/// What the reports view asks the console for; each starts a thread of the view's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportCommand {
    /// Read this rollout's report.
    Open(String),
    /// Write the chosen export of the report shown to the export path.
    Export,
    /// Pick the export path with a save dialog proposing this file name.
    Browse(String),
}

/// What the view keeps between frames.
#[derive(Debug, Default)]
pub struct ReportState {
    /// The rollout id typed in the field (for rollouts beyond the board's newest).
    pub typed_id: String,
    /// The report shown, or why it could not be read.
    pub report: Option<Result<Report, String>>,
    /// The rollout being read.
    pub loading: Option<String>,
    load_rx: Option<Receiver<Result<Report, String>>>,
    pub tab: DraftTab,
    pub export_kind: ExportKind,
    /// Where the export goes: typed, or filled in by **Browse…**.
    pub export_path: String,
    /// What the last export did, or why it failed.
    pub export_note: Option<Result<String, String>>,
    export_rx: Option<Receiver<Result<String, String>>>,
    browse_rx: Option<Receiver<Option<PathBuf>>>,
}

impl ReportState {
    /// Does what the view asked for: `cache` is the fleet cache, `fleet` the workers' copy of
    /// the fleet (for adoption by cohort).
    pub fn apply(
        &mut self,
        ctx: &egui::Context,
        command: ReportCommand,
        cache: Option<PathBuf>,
        fleet: Option<Arc<Fleet>>,
    ) {
        match command {
            ReportCommand::Open(id) => self.open(ctx, cache, &id, fleet),
            ReportCommand::Export => self.export(ctx, cache),
            ReportCommand::Browse(name) => self.browse(ctx, name),
        }
    }

    /// Takes in what the worker threads answered. Called every frame.
    pub fn poll(&mut self) {
        if let Some(rx) = &self.load_rx {
            match rx.try_recv() {
                Ok(r) => {
                    self.report = Some(r);
                    self.loading = None;
                    self.load_rx = None;
                }
                Err(TryRecvError::Disconnected) => {
                    self.report = Some(Err("the report thread stopped without answering".into()));
                    self.loading = None;
                    self.load_rx = None;
                }
                Err(TryRecvError::Empty) => {}
            }
        }
        if let Some(rx) = &self.export_rx {
            match rx.try_recv() {
                Ok(r) => {
                    self.export_note = Some(r);
                    self.export_rx = None;
                }
                Err(TryRecvError::Disconnected) => {
                    self.export_note =
                        Some(Err("the export thread stopped without answering".into()));
                    self.export_rx = None;
                }
                Err(TryRecvError::Empty) => {}
            }
        }
        if let Some(rx) = &self.browse_rx {
            match rx.try_recv() {
                Ok(picked) => {
                    if let Some(p) = picked {
                        self.export_path = p.display().to_string();
                    }
                    self.browse_rx = None;
                }
                Err(TryRecvError::Disconnected) => self.browse_rx = None,
                Err(TryRecvError::Empty) => {}
            }
        }
    }

    /// Reads `rollout_id`'s report on a thread.
    pub fn open(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        rollout_id: &str,
        fleet: Option<Arc<Fleet>>,
    ) {
        let Some(cache) = cache else {
            self.report = Some(Err("No fleet cache is open: nothing to report on".into()));
            return;
        };
        let id = rollout_id.trim().to_owned();
        if id.is_empty() {
            self.report = Some(Err("Rollout id: required".into()));
            return;
        }
        self.export_note = None;
        let wanted = id.clone();
        match spawn(ctx, "convoy-report", move || {
            read_report(&cache, &wanted, fleet.as_deref()).map_err(|e| format!("{e:#}"))
        }) {
            Ok(rx) => {
                self.loading = Some(id);
                self.load_rx = Some(rx);
            }
            Err(why) => self.report = Some(Err(why)),
        }
    }

    /// Writes the chosen export of the report shown to the export path, on a thread.
    pub fn export(&mut self, ctx: &egui::Context, cache: Option<PathBuf>) {
        let Some(Ok(report)) = &self.report else {
            self.export_note = Some(Err("Open a rollout's report first".into()));
            return;
        };
        let path = self.export_path.trim();
        if path.is_empty() {
            self.export_note = Some(Err("Export path: required (type a path or Browse…)".into()));
            return;
        }
        let path = PathBuf::from(path);
        let rollout_id = report.rollout_id.clone();
        let kind = self.export_kind;
        let draft = report.draft(self.tab).to_owned();
        let tab = self.tab;
        self.export_note = None;
        let job = move || -> Result<String, String> {
            match kind.timeline_format() {
                Some(format) => {
                    let cache = cache.ok_or("No fleet cache is open")?;
                    export_timeline(&cache, &rollout_id, format, &path)
                        .map(|n| {
                            format!(
                                "Wrote the timeline of {rollout_id} ({n} events) to {}",
                                path.display()
                            )
                        })
                        .map_err(|e| format!("Could not export the timeline: {e:#}"))
                }
                None => crate::fleet_io::write_atomically(&path, |w| {
                    w.write_all(draft.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))
                })
                .map(|()| {
                    format!(
                        "Wrote the {} draft of {rollout_id} to {}",
                        tab.label().to_lowercase(),
                        path.display()
                    )
                })
                .map_err(|e| format!("Could not save the draft: {e:#}")),
            }
        };
        match spawn(ctx, "convoy-report-export", job) {
            Ok(rx) => self.export_rx = Some(rx),
            Err(why) => self.export_note = Some(Err(why)),
        }
    }

    fn browse(&mut self, ctx: &egui::Context, default_name: String) {
        match spawn(ctx, "convoy-file-dialog", move || {
            rfd::FileDialog::new()
                .set_title("Export the report")
                .set_file_name(default_name)
                .save_file()
        }) {
            Ok(rx) => self.browse_rx = Some(rx),
            Err(why) => self.export_note = Some(Err(why)),
        }
    }
}

/// Runs `job` on a named thread; its answer arrives on the returned channel.
fn spawn<T: Send + 'static>(
    ctx: &egui::Context,
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<Receiver<T>, String> {
    crate::gui::worker::spawn_job(ctx, name, job)
        .map_err(|e| format!("could not start the {name} thread: {e}"))
}

/// Writes `rollout_id`'s timeline from `cache` to `path` in `format`, exactly as
/// `convoy rollout timeline` prints it; returns the number of events.
pub fn export_timeline(
    cache: &Path,
    rollout_id: &str,
    format: TimelineFormat,
    path: &Path,
) -> Result<usize> {
    let store = Store::open_existing(cache)
        .with_context(|| format!("opening the fleet cache {}", cache.display()))?;
    let events = store.timeline(rollout_id)?;
    if events.is_empty() {
        anyhow::bail!("no events for rollout {rollout_id} in {}", cache.display());
    }
    crate::fleet_io::write_atomically(path, |w| write_timeline(w, &events, format))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(events.len())
}

/// The story of `rollout_id` from `store`'s timeline (as `convoy rollout comms` reads it).
fn read_story(store: &Store, cache: &Path, rollout_id: &str) -> Result<(RolloutStory, usize)> {
    crate::ops::reports::read_story(store, rollout_id)
        .with_context(|| format!("in {}", cache.display()))
}

/// Reads the whole report of `rollout_id` from `cache`: story, drafts, metrics (adoption by
/// cohort against `fleet` when given) and the means over every rollout of the cache with an
/// engine log (`store::metrics`).
pub fn read_report(cache: &Path, rollout_id: &str, fleet: Option<&Fleet>) -> Result<Report> {
    let store = Store::open_existing(cache)
        .with_context(|| format!("opening the fleet cache {}", cache.display()))?;
    let (story, entries) = read_story(&store, cache, rollout_id)?;
    let drafts = [
        comms::draft(&story, Audience::Internal),
        comms::draft(&story, Audience::Customer),
        comms::draft(&story, Audience::Regulator),
        comms::support_tree(&story),
    ];
    let metrics = match store.replay_rollout(rollout_id) {
        Ok(Some(rollout)) => LogMetrics::Computed {
            adoption: fleet.map_or_else(Vec::new, |f| metrics::adoption_by_cohort(&rollout, f)),
            metrics: metrics::rollout_metrics(&rollout),
        },
        Ok(None) => LogMetrics::Missing(format!(
            "{rollout_id} has no engine log in the cache (recorded before schema v6, or not by the engine): its metrics cannot be computed"
        )),
        Err(e) => LogMetrics::Missing(format!("{e:#}")),
    };
    // Every rollout of the cache with an engine log, as `GET /api/v1/metrics` answers.
    let all = store.cache_metrics()?;
    Ok(Report {
        rollout_id: rollout_id.to_owned(),
        story,
        entries,
        drafts,
        metrics,
        summary: all.summary,
        summary_skipped: all
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.rollout_id, s.reason))
            .collect(),
    })
}

/// A duration in words: "45 s", "12 min", "3 h 05 min", "2 d 4 h".
pub fn duration_words(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

fn optional_secs(secs: Option<i64>, missing: &str) -> String {
    secs.map_or_else(|| missing.to_owned(), duration_words)
}

fn optional_mean(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".to_owned(), |s| duration_words(s.round() as i64))
}

/// Where a rollout stands, in the words of the list.
pub fn state_words(story: &RolloutStory) -> &'static str {
    match (
        &story.ending,
        story.stops.is_empty(),
        story.pauses.is_empty(),
    ) {
        (Some(Ending::Completed(_)), ..) => "completed",
        (Some(Ending::RolledBack(_)), ..) => "rolled back",
        (Some(Ending::Aborted(..)), ..) => "aborted",
        (None, false, _) => "stopped by a gate",
        (None, true, false) => "paused",
        (None, true, true) => "in progress",
    }
}

/// The lines of the metrics panel: one rollout's, from its log.
pub fn metric_lines(m: &RolloutMetrics) -> Vec<String> {
    let recover = if m.recoveries_secs.is_empty() {
        "no gate stop recovered from".to_owned()
    } else {
        m.recoveries_secs
            .iter()
            .map(|s| duration_words(*s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        format!(
            "Devices: {} targeted, {} healthy ({:.1} %), {} failed, {} reverted, {} silent",
            m.targeted,
            m.healthy,
            m.success_ratio * 100.0,
            m.failed,
            m.reverted,
            m.silent
        ),
        format!(
            "Time to remediate: {}",
            optional_secs(m.time_to_remediate_secs, "not completed")
        ),
        format!("Time to recover: {recover}"),
        format!(
            "Patch lead time (95 % healthy): {}",
            optional_secs(m.patch_lead_time_secs, "not reached")
        ),
        format!("Rollbacks: {}", m.rollback_count),
    ]
}

/// The lines of the means over several rollouts.
pub fn summary_lines(s: &SummaryMetrics) -> Vec<String> {
    vec![
        format!(
            "Over {} rollout(s) with an engine log: {} completed, {} rollback(s)",
            s.rollouts, s.completed, s.rollback_count
        ),
        format!(
            "Mean time to remediate: {}",
            optional_mean(s.mean_time_to_remediate_secs)
        ),
        format!(
            "Mean time to recover: {}",
            optional_mean(s.mean_time_to_recover_secs)
        ),
        format!(
            "Mean patch lead time: {}",
            optional_mean(s.mean_patch_lead_time_secs)
        ),
        format!(
            "Mean success: {}",
            s.mean_success_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1} %", r * 100.0))
        ),
    ]
}

/// Draws the view.
pub fn report_ui(
    state: &mut ReportState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    ui.heading("Reports");
    ui.label(
        "A rollout's record as a report: its timeline exported, its metrics, and drafts for \
         engineers, customers and regulators. Facts only: what the record cannot know is a \
         marked [to fill: ...] gap.",
    );
    let board: Vec<(String, String, &'static str)> = match cx.rollouts {
        Some(Ok(board)) => board
            .rollouts
            .iter()
            .map(|s| (s.rollout_id.clone(), s.release_id.clone(), state_words(s)))
            .collect(),
        _ => Vec::new(),
    };
    let mut open: Option<String> = None;
    ui.add_space(8.0);
    ui.horizontal_wrapped(|ui| {
        ui.strong("Rollouts in the cache:");
        match cx.rollouts {
            None => {
                ui.label("reading the cache…");
            }
            Some(Err(why)) => {
                ui.colored_label(tokens::BAD, format!("could not be read: {why}"));
            }
            Some(Ok(_)) if board.is_empty() => {
                ui.label("none recorded yet");
            }
            Some(Ok(_)) => {}
        }
        let shown = state.report.as_ref().and_then(|r| r.as_ref().ok());
        for (id, release, state) in &board {
            let selected = shown.is_some_and(|r| &r.rollout_id == id);
            if ui
                .selectable_label(selected, id)
                .on_hover_text(format!("release {release}, {state}"))
                .clicked()
            {
                open = Some(id.clone());
            }
        }
    });
    ui.horizontal(|ui| {
        let l = ui.label("Rollout id");
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut state.typed_id)
                    .hint_text("any rollout in the cache")
                    .desired_width(260.0),
            )
            .labelled_by(l.id);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Open report").clicked() || enter {
            open = Some(state.typed_id.clone());
        }
    });
    if let Some(id) = open {
        out.send(UiCommand::Report(ReportCommand::Open(id)));
    }
    if let Some(id) = &state.loading {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("reading the report of {id}…"));
        });
    }
    ui.separator();
    match &state.report {
        None => {
            ui.label("Pick a rollout above to see its report.");
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, why);
        }
        Some(Ok(_)) => report_body_ui(state, out, ui),
    }
}

fn report_body_ui(state: &mut ReportState, out: &mut Commands, ui: &mut egui::Ui) {
    let Some(Ok(report)) = &state.report else {
        return;
    };
    let s = &report.story;
    ui.heading(format!("Report of {}", report.rollout_id));
    ui.label(format!(
        "Release {} · requested by {} · {} path · {} · {} timeline events",
        s.release_id,
        if s.requested_by.is_empty() {
            "-"
        } else {
            &s.requested_by
        },
        if s.path.is_empty() { "-" } else { &s.path },
        state_words(s),
        report.entries
    ));
    ui.add_space(8.0);
    let mut export = false;
    let mut browse = None;
    ui.columns(2, |cols| {
        let ui = &mut cols[0];
        ui.strong("Metrics of this rollout");
        match &report.metrics {
            LogMetrics::Computed { metrics, adoption } => {
                for line in metric_lines(metrics) {
                    ui.label(line);
                }
                if adoption.is_empty() {
                    ui.label("Adoption by cohort: the fleet has not loaded");
                } else {
                    egui::CollapsingHeader::new("Adoption by cohort")
                        .default_open(false)
                        .show(ui, |ui| {
                            egui::Grid::new("report-adoption")
                                .striped(true)
                                .show(ui, |ui| {
                                    ui.strong("attribute");
                                    ui.strong("value");
                                    ui.strong("healthy / targeted");
                                    ui.end_row();
                                    for a in adoption {
                                        ui.label(&a.attribute);
                                        ui.label(&a.value);
                                        ui.label(format!(
                                            "{} / {} ({:.0} %)",
                                            a.healthy,
                                            a.targeted,
                                            a.adoption_ratio * 100.0
                                        ));
                                        ui.end_row();
                                    }
                                });
                        });
                }
            }
            LogMetrics::Missing(why) => {
                ui.colored_label(tokens::WARN, why);
                ui.label(format!("Rollbacks in the timeline: {}", s.rollbacks.len()));
            }
        }
        ui.add_space(8.0);
        ui.strong("Across the cache's rollouts");
        for line in summary_lines(&report.summary) {
            ui.label(line);
        }
        if !report.summary_skipped.is_empty() {
            ui.label(
                RichText::new(format!("Left out: {}", report.summary_skipped.join("; "))).small(),
            );
        }

        let ui = &mut cols[1];
        ui.strong("Export");
        ui.horizontal_wrapped(|ui| {
            for kind in ExportKind::ALL {
                ui.selectable_value(&mut state.export_kind, kind, kind.label());
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Export path");
            ui.add(
                egui::TextEdit::singleline(&mut state.export_path)
                    .hint_text("a file to write")
                    .desired_width(280.0),
            )
            .labelled_by(l.id);
            if ui
                .add_enabled(state.browse_rx.is_none(), egui::Button::new("Browse…"))
                .on_hover_text("Pick the file with a save dialog")
                .clicked()
            {
                browse = Some(
                    state
                        .export_kind
                        .default_file_name(&report.rollout_id, state.tab),
                );
            }
        });
        if ui
            .add_enabled(
                state.export_rx.is_none(),
                egui::Button::new("Write the export"),
            )
            .clicked()
        {
            export = true;
        }
        match &state.export_note {
            Some(Ok(note)) => {
                ui.colored_label(tokens::OK, note);
            }
            Some(Err(why)) => {
                ui.colored_label(tokens::BAD, why);
            }
            None => {}
        }
    });
    if let Some(name) = browse {
        out.send(UiCommand::Report(ReportCommand::Browse(name)));
    }
    if export {
        out.send(UiCommand::Report(ReportCommand::Export));
    }
    let Some(Ok(report)) = &state.report else {
        return;
    };
    ui.separator();
    ui.horizontal(|ui| {
        ui.strong("Drafts:");
        for tab in DraftTab::ALL {
            ui.selectable_value(&mut state.tab, tab, tab.label());
        }
        if ui.button("Copy draft").clicked() {
            ui.ctx().copy_text(report.draft(state.tab).to_owned());
        }
    });
    egui::ScrollArea::vertical()
        .id_salt("report-draft")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.label(RichText::new(report.draft(state.tab)).monospace());
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_units_that_fit() {
        for (secs, words) in [
            (-5, "0 s"),
            (45, "45 s"),
            (60, "1 min"),
            (3599, "59 min"),
            (3600, "1 h 00 min"),
            (3 * 3600 + 5 * 60 + 9, "3 h 05 min"),
            (2 * 86_400 + 4 * 3600, "2 d 4 h"),
        ] {
            assert_eq!(duration_words(secs), words, "{secs}");
        }
    }

    #[test]
    fn export_names_say_what_they_hold() {
        assert_eq!(
            ExportKind::TimelineCsv.default_file_name("ro-1", DraftTab::Internal),
            "ro-1-timeline.csv"
        );
        assert_eq!(
            ExportKind::Draft.default_file_name("ro-1", DraftTab::Regulator),
            "ro-1-regulator.md"
        );
        assert_eq!(
            ExportKind::TimelineMarkdown.timeline_format(),
            Some(TimelineFormat::Md)
        );
        assert_eq!(ExportKind::Draft.timeline_format(), None);
    }

    #[test]
    fn a_cache_without_the_rollout_says_so_and_one_without_a_log_has_no_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("c.db");
        let mut store = Store::open(&cache).expect("open");
        let at = convoy_core::time::Timestamp::from_secs(1_000);
        store
            .append_event(
                "ro-1",
                at,
                "rollout.created",
                "alice: created",
                &serde_json::json!({"release": "r-1", "requested_by": "alice", "path": "standard",
                    "waves": [{"name": "all", "devices": 3}]}),
            )
            .expect("append");
        store
            .append_event(
                "ro-1",
                at.plus_secs(7200),
                "rollout.completed",
                "timer",
                &serde_json::json!("completed"),
            )
            .expect("append");
        drop(store);
        let err = read_report(&cache, "ro-none", None).expect_err("no such rollout");
        assert!(
            format!("{err:#}").contains("ro-none has no recorded events"),
            "{err:#}"
        );
        let report = read_report(&cache, "ro-1", None).expect("report");
        assert_eq!(report.entries, 2);
        assert_eq!(report.story.release_id, "r-1");
        assert!(report.drafts[0].contains("r-1"), "{}", report.drafts[0]);
        match &report.metrics {
            LogMetrics::Missing(why) => assert!(why.contains("no engine log"), "{why}"),
            LogMetrics::Computed { .. } => panic!("no log was written"),
        }
        assert_eq!(report.summary.rollouts, 0);
        assert!(
            report.summary_skipped.is_empty(),
            "a rollout without a log is not in the means: {:?}",
            report.summary_skipped
        );
        let out = dir.path().join("t.csv");
        let n = export_timeline(&cache, "ro-1", TimelineFormat::Csv, &out).expect("export");
        assert_eq!(n, 2);
        let text = std::fs::read_to_string(&out).expect("read");
        assert!(
            text.starts_with("rollout_id,seq,time,kind,cause,payload\n"),
            "{text}"
        );
        let missing = export_timeline(&cache, "ro-none", TimelineFormat::Csv, &out)
            .expect_err("nothing to export");
        assert!(format!("{missing:#}").contains("no events for rollout ro-none"));
    }
}
