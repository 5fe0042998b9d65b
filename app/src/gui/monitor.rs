//! The rollout monitor view: One rollout: per-wave device counts, adoption by cohort, cohort health against baseline with the gate decisions, and pause, resume, roll back and override.
//!
//! Not built yet: this view says so.

use crate::gui::app::ConsoleApp;

/// What the rollout monitor view keeps between frames.
#[derive(Debug, Default)]
pub struct MonitorState {}

/// Draws the view.
pub fn monitor_ui(_app: &mut ConsoleApp, ui: &mut egui::Ui) {
    ui.heading("Rollout monitor");
    ui.label("Not built yet: One rollout: per-wave device counts, adoption by cohort, cohort health against baseline with the gate decisions, and pause, resume, roll back and override.");
}
