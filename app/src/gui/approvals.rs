//! The approvals view: Rollout requests, their approvals by distinct named operators (standard and emergency paths) and dispatch.
//!
//! Not built yet: this view says so.

use crate::gui::app::ConsoleApp;

/// What the approvals view keeps between frames.
#[derive(Debug, Default)]
pub struct ApprovalsState {}

/// Draws the view.
pub fn approvals_ui(_app: &mut ConsoleApp, ui: &mut egui::Ui) {
    ui.heading("Approvals");
    ui.label("Not built yet: Rollout requests, their approvals by distinct named operators (standard and emergency paths) and dispatch.");
}
