//! War-room mode: a read-only wall display. Large type and high contrast; fleet state counts,
//! the link, and the latest events. It has no control that changes anything: F11, W or Esc
//! leave it.
//!
//! Not built yet: the rollout in trouble, its gates and cohort health against baseline need the
//! rollout engine, which is not attached in this build; the wall says so.

use egui::{RichText, Stroke};

use crate::gui::app::{ConsoleApp, age};
use crate::gui::backend::LinkStatus;
use crate::gui::model::Severity;
use crate::gui::tokens;

/// Draws the wall.
pub fn warroom_ui(app: &ConsoleApp, ui: &mut egui::Ui) {
    let now = app.now();
    let mode = app.state.color_mode;
    ui.horizontal(|ui| {
        ui.label(
            RichText::new("CONVOY · WAR ROOM")
                .size(tokens::WALL_TITLE)
                .strong(),
        );
        ui.add_space(30.0);
        let (text, color) = match app.link() {
            LinkStatus::Offline => ("LINK OFFLINE".to_owned(), tokens::MUTED),
            LinkStatus::Connecting => ("LINK CONNECTING".to_owned(), tokens::WARN),
            LinkStatus::Connected => ("LINK CONNECTED".to_owned(), tokens::OK),
            LinkStatus::Reconnecting(_) => ("LINK LOST, RECONNECTING".to_owned(), tokens::BAD),
        };
        ui.label(
            RichText::new(text)
                .size(tokens::WALL_TEXT)
                .color(color)
                .strong(),
        );
        ui.add_space(30.0);
        ui.label(RichText::new(now.to_string()).size(tokens::WALL_TEXT));
    });
    ui.add_space(16.0);
    let Some(model) = &app.model else {
        ui.label(RichText::new("Loading the fleet").size(tokens::WALL_TEXT));
        return;
    };
    ui.label(
        RichText::new(format!("{} devices · {}", model.len(), mode.label()))
            .size(tokens::WALL_TEXT),
    );
    ui.add_space(10.0);
    ui.horizontal_wrapped(|ui| {
        for (k, name) in mode.class_names().iter().enumerate() {
            let color = tokens::class_color(mode, k);
            egui::Frame::new()
                .stroke(Stroke::new(3.0, color))
                .inner_margin(14.0)
                .corner_radius(6.0)
                .show(ui, |ui| {
                    ui.set_min_width(200.0);
                    ui.vertical(|ui| {
                        ui.label(
                            RichText::new(app.derived.counts_all[k].to_string())
                                .size(tokens::WALL_NUMBER)
                                .strong()
                                .color(color),
                        );
                        ui.label(RichText::new(*name).size(tokens::WALL_TEXT));
                    });
                });
        }
    });
    ui.add_space(20.0);
    ui.label(
        RichText::new("Rollouts: engine not attached in this build; no gates or baseline to show.")
            .size(tokens::WALL_TEXT)
            .color(tokens::WARN),
    );
    ui.add_space(20.0);
    ui.label(
        RichText::new("Latest events")
            .size(tokens::WALL_TEXT)
            .strong(),
    );
    let mut any = false;
    for e in model.events.iter().rev().take(12) {
        any = true;
        let color = match e.severity {
            Severity::Info => ui.visuals().text_color(),
            Severity::Warning => tokens::WARN,
            Severity::Problem => tokens::BAD,
        };
        ui.label(
            RichText::new(format!(
                "{:>10}  {}  {}",
                age(now.secs_since(e.at)),
                e.device_id,
                e.text
            ))
            .size(tokens::WALL_TEXT * 0.8)
            .monospace()
            .color(color),
        );
    }
    if !any {
        ui.label(RichText::new("No events yet.").size(tokens::WALL_TEXT * 0.8));
    }
    ui.add_space(20.0);
    ui.label(
        RichText::new("Read-only display · F11, W or Esc to leave")
            .size(14.0)
            .color(tokens::MUTED),
    );
}
