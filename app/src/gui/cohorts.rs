//! Cohorts: the fleet (or the filtered part of it) summarised by model, hardware revision,
//! region, depot, connectivity and customer tier, each group with its colour-class make-up,
//! and the cohorts made on the map. Summaries are computed by the derive worker when the data
//! changes or the view opens, never here; until the first answer the view says "summarising…".

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
