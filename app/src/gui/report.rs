//! The reports view: A rollout's timeline exported as Markdown, CSV or JSON, fleet metrics (time to remediate and recover, lead time, adoption, rollbacks) and communication drafts.
//!
//! Not built yet: this view says so.

use crate::gui::app::ConsoleApp;

/// What the reports view keeps between frames.
#[derive(Debug, Default)]
pub struct ReportState {}

/// Draws the view.
pub fn report_ui(_app: &mut ConsoleApp, ui: &mut egui::Ui) {
    ui.heading("Reports");
    ui.label("Not built yet: A rollout's timeline exported as Markdown, CSV or JSON, fleet metrics (time to remediate and recover, lead time, adoption, rollbacks) and communication drafts.");
}
