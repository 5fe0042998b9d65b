//! What a view may read and what it may ask for: the narrow [`ViewContext`] the console builds
//! once per frame, and the [`Commands`] queue the views push [`UiCommand`]s into.
//!
//! A view draws from its own state (one struct per view, owned by
//! [`crate::gui::ConsoleApp`]), reads the rest of the console through a `ViewContext`, and asks
//! for every change outside its own state with a command, which the console applies once per
//! frame in [`crate::gui::ConsoleApp::logic`] (as rerun's `CommandSender` does). A view starts
//! no thread and opens no file or cache: the console does that work, through the view's state
//! or the backend, in response to a command (tests/it/tidy.rs checks both).
//!
//! This is not a message bus: commands are plain values applied in order on the UI thread, and
//! nothing here reads the cache, the network or the clock.

use std::path::Path;

use convoy_core::time::Timestamp;

use crate::gui::app::{
    Cohort, Derived, DeviceHistory, DeviceTelemetry, SteerAnswer, UiCommand, UiState,
};
use crate::gui::backend::{BrokerKind, LinkStatus, RolloutBoard};
use crate::gui::model::FleetModel;

/// What the views read of the console, borrowed for one frame.
pub struct ViewContext<'a> {
    /// The persisted UI state (view, theme, colour mode, filter, sort, hidden columns).
    pub state: &'a UiState,
    /// The fleet as the console knows it; `None` until the first load.
    pub model: Option<&'a FleetModel>,
    /// The derive worker's newest answer for the fleet and the query.
    pub derived: &'a Derived,
    /// The cohorts made this session.
    pub cohorts: &'a [Cohort],
    /// The device the device view shows.
    pub selected: Option<usize>,
    /// The selected device's update history, as far as the backend has answered.
    pub history: Option<&'a DeviceHistory>,
    /// The selected device's telemetry, as far as the backend has answered.
    pub telemetry: Option<&'a DeviceTelemetry>,
    /// The rollouts recorded in the cache; `None` until the history worker first answers.
    pub rollouts: Option<&'a Result<RolloutBoard, String>>,
    /// The rollout the monitor shows (and the map colours by in rollout-state mode).
    pub rollout_target: Option<String>,
    /// The console's time for this frame.
    pub now: Timestamp,
    /// Whether time runs (the system clock); a fixed test clock does not.
    pub clock_runs: bool,
    /// When the war room was last entered.
    pub warroom_since: Timestamp,
    /// The state of the link to the broker or server.
    pub link: &'a LinkStatus,
    /// The broker (or server) the console is attached to.
    pub broker: &'a BrokerKind,
    /// Whether this console can steer a rollout, or why not (a question to the backend; the
    /// command itself is [`crate::gui::UiCommand::Steer`]).
    pub can_steer: &'a dyn Fn(&str) -> Result<(), String>,
    /// The answers to the operator commands this console sent, oldest first (the newest kept).
    pub steered: &'a [SteerAnswer],
    /// How many answers have arrived in all.
    pub steered_total: u64,
    /// The fleet cache the console shows, once loaded.
    pub cache: Option<&'a Path>,
}

impl std::fmt::Debug for ViewContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewContext")
            .field("view", &self.state.view)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// The commands the views queued this frame, applied by the console in the next
/// [`crate::gui::ConsoleApp::logic`], in the order they were sent.
#[derive(Debug, Default)]
pub struct Commands {
    queue: Vec<UiCommand>,
}

impl Commands {
    /// Queues `command`.
    pub fn send(&mut self, command: UiCommand) {
        self.queue.push(command);
    }

    /// Queues every command of `commands`, in order.
    pub fn extend(&mut self, commands: impl IntoIterator<Item = UiCommand>) {
        self.queue.extend(commands);
    }

    /// Takes the queued commands, leaving the queue empty.
    pub fn take(&mut self) -> Vec<UiCommand> {
        std::mem::take(&mut self.queue)
    }
}

/// How wide a form's text field is unless the form says otherwise.
pub const FORM_FIELD_WIDTH: f32 = 420.0;

/// A labelled one-line text field in a two-column form grid, named for assistive technology
/// (and the UI tests) by its label: the one form row of the findings, releases and planner
/// forms.
pub fn text_row(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str) -> egui::Response {
    text_row_sized(ui, label, value, hint, FORM_FIELD_WIDTH)
}

/// [`text_row`] with a field `width` points wide.
pub fn text_row_sized(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    width: f32,
) -> egui::Response {
    labelled_row(
        ui,
        label,
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .desired_width(width),
    )
}

/// [`text_row`] for a secret (a passphrase): the text shows as dots.
pub fn secret_row(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
) -> egui::Response {
    labelled_row(
        ui,
        label,
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .password(true)
            .desired_width(FORM_FIELD_WIDTH),
    )
}

fn labelled_row(ui: &mut egui::Ui, label: &str, field: egui::TextEdit<'_>) -> egui::Response {
    let l = ui.label(label);
    let r = ui.add(field).labelled_by(l.id);
    ui.end_row();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::app::View;

    #[test]
    fn commands_come_out_in_the_order_sent_and_once() {
        let mut c = Commands::default();
        c.send(UiCommand::Show(View::Cohorts));
        c.extend([UiCommand::ToggleNav, UiCommand::OpenDevice(3)]);
        assert_eq!(
            c.take(),
            [
                UiCommand::Show(View::Cohorts),
                UiCommand::ToggleNav,
                UiCommand::OpenDevice(3)
            ]
        );
        assert!(c.take().is_empty());
    }
}
