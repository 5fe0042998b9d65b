//! The command palette (Ctrl+K): every console command by name, filtered as you type; Enter
//! runs the first match. It only queues [`UiCommand`]s, like every view.

use egui::{Key, RichText};

use crate::gui::app::{Theme, UiCommand, View};
use crate::gui::model::ColorMode;
use crate::gui::view::Commands;

/// Whether the palette is open and what has been typed.
#[derive(Debug, Default)]
pub struct PaletteState {
    pub open: bool,
    pub query: String,
}

/// Every command the palette offers, with its name.
pub fn entries() -> Vec<(&'static str, UiCommand)> {
    vec![
        ("Go to map", UiCommand::Show(View::Map)),
        ("Go to fleet table", UiCommand::Show(View::Table)),
        ("Go to device", UiCommand::Show(View::Device)),
        ("Go to cohorts", UiCommand::Show(View::Cohorts)),
        ("Go to findings", UiCommand::Show(View::Findings)),
        ("Go to releases", UiCommand::Show(View::Releases)),
        ("Go to planner", UiCommand::Show(View::Planner)),
        ("Go to approvals", UiCommand::Show(View::Approvals)),
        ("Go to rollout monitor", UiCommand::Show(View::Monitor)),
        ("Go to reports", UiCommand::Show(View::Reports)),
        ("War room (read-only wall)", UiCommand::ToggleWarRoom),
        (
            "Colour by update state",
            UiCommand::SetColorMode(ColorMode::UpdateState),
        ),
        (
            "Colour by health",
            UiCommand::SetColorMode(ColorMode::Health),
        ),
        (
            "Colour by rollout state",
            UiCommand::SetColorMode(ColorMode::RolloutState),
        ),
        ("Dark theme", UiCommand::SetTheme(Theme::Dark)),
        ("Light theme", UiCommand::SetTheme(Theme::Light)),
        ("Clear filter", UiCommand::ClearFilter),
        ("Show or hide the navigation", UiCommand::ToggleNav),
        ("UI scale up", UiCommand::ScaleUi(1.1)),
        ("UI scale down", UiCommand::ScaleUi(1.0 / 1.1)),
        ("UI scale reset", UiCommand::ResetUiScale),
    ]
}

/// The entries whose name contains every word of `query` (case-insensitive), in list order.
pub fn matching(query: &str) -> Vec<(&'static str, UiCommand)> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    entries()
        .into_iter()
        .filter(|(name, _)| {
            let name = name.to_lowercase();
            words.iter().all(|w| name.contains(w.as_str()))
        })
        .collect()
}

/// Draws the palette if it is open.
pub fn palette_ui(palette: &mut PaletteState, out: &mut Commands, ctx: &egui::Context) {
    if !palette.open {
        return;
    }
    let mut run = None;
    let mut open = true;
    egui::Window::new("Command palette")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_TOP, [0.0, 80.0])
        .open(&mut open)
        .show(ctx, |ui| {
            // Enter is taken before the text field sees it: a single-line field would take it
            // as "done editing" and the command would never run (issue 19).
            let enter = ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, Key::Enter));
            let edit = ui.add(
                egui::TextEdit::singleline(&mut palette.query)
                    .hint_text("Type a command")
                    .desired_width(360.0),
            );
            edit.request_focus();
            let found = matching(&palette.query);
            if enter {
                run = found.first().map(|(_, c)| c.clone());
            }
            for (name, command) in &found {
                if ui.button(*name).clicked() {
                    run = Some(command.clone());
                }
            }
            if found.is_empty() {
                ui.label(RichText::new("No command matches").weak());
            }
        });
    if let Some(command) = run {
        out.send(command);
        open = false;
    }
    if !open {
        *palette = PaletteState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_must_match() {
        let names: Vec<&str> = matching("colour HEALTH")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Colour by health"]);
        assert_eq!(matching("").len(), entries().len());
        assert!(matching("no such command").is_empty());
        let names: Vec<&str> = matching("rollout colour")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Colour by rollout state"]);
        let names: Vec<&str> = matching("go").into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Go to map",
                "Go to fleet table",
                "Go to device",
                "Go to cohorts",
                "Go to findings",
                "Go to releases",
                "Go to planner",
                "Go to approvals",
                "Go to rollout monitor",
                "Go to reports"
            ]
        );
    }
}
