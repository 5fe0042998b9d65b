//! War-room mode: a read-only wall display. Large type and high contrast: the rollouts the
//! engine (`convoy rollout run`) recorded in the cache, the one in trouble first, with its
//! state, its waves, its gate decisions with their evidence, its holds and its latest timeline
//! entries; beside them the fleet state counts, the link and the latest device events. With
//! several rollouts it shows each in turn for [`CYCLE_SECS`] (only while the clock runs: a
//! fixed test clock stays on the first). It has no control that changes anything: F11, W or
//! Esc leave it.
//!
//! It draws only: the history worker reads the cache and the story of each rollout comes from
//! [`convoy_core::comms::story`]; beside it, the rollout's cohort health against its baseline
//! ([`convoy_core::rollout::series`], from the engine's log), re-read as the log grows. The
//! plot of one metric ([`metric_plot_ui`]) is shared with the rollout monitor, which plots
//! every gated metric with it.

use std::fmt::Write as _;

use convoy_core::comms::{Ending, RolloutStory};
use convoy_core::rollout::series::{HealthSeries, MetricSeries, SeriesPoint};
use convoy_core::time::Timestamp;
use egui::{Color32, RichText, Stroke};

use crate::gui::app::age;
use crate::gui::backend::LinkStatus;
use crate::gui::model::Severity;
use crate::gui::tokens;
use crate::gui::view::ViewContext;

/// How long the wall shows each rollout before the next.
pub const CYCLE_SECS: i64 = 15;
/// Timeline entries shown for the rollout on the wall.
const LATEST_ENTRIES: usize = 6;
/// The longest timeline entry the wall shows whole.
const CLIP_CHARS: usize = 60;

/// Where a rollout stands, as its record tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WallState {
    /// Stopped by a gate or an operator, waiting for a human.
    Paused,
    /// Devices were asked to go back and the rollback has not finished.
    RollingBack,
    RolledBack,
    Aborted,
    Running,
    Completed,
}

impl WallState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Paused => "PAUSED",
            Self::RollingBack => "ROLLING BACK",
            Self::RolledBack => "ROLLED BACK",
            Self::Aborted => "ABORTED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
        }
    }

    pub fn color(self) -> Color32 {
        match self {
            Self::Paused => tokens::WARN,
            Self::RollingBack | Self::RolledBack | Self::Aborted => tokens::BAD,
            Self::Running => tokens::OK,
            Self::Completed => tokens::MUTED,
        }
    }
}

/// The state of the rollout `s` tells.
pub fn state_of(s: &RolloutStory) -> WallState {
    match &s.ending {
        Some(Ending::Completed(_)) => return WallState::Completed,
        Some(Ending::RolledBack(_)) => return WallState::RolledBack,
        Some(Ending::Aborted(..)) => return WallState::Aborted,
        None => {}
    }
    let last_line = |prefix: &str| {
        s.chronology
            .iter()
            .filter(|(_, line, _)| line.starts_with(prefix))
            .map(|(at, ..)| *at)
            .max()
    };
    let last_rollback = s.rollbacks.iter().map(|(at, ..)| *at).max();
    if last_rollback.is_some() && last_rollback > last_line("rollback finished") {
        return WallState::RollingBack;
    }
    // A wave rolled back leaves the rollout paused for a human, as a pause does (the state
    // machine records no separate pause for it).
    let last_pause = s.pauses.iter().map(|(at, _)| *at).max().max(last_rollback);
    let last_resume = last_line("resumed").max(s.overrides.iter().map(|(at, _)| *at).max());
    if last_pause.is_some() && last_pause > last_resume {
        WallState::Paused
    } else {
        WallState::Running
    }
}

/// When the record last said something about `s`.
pub fn last_activity(s: &RolloutStory) -> Timestamp {
    s.chronology.last().map_or(s.created_at, |(at, ..)| *at)
}

/// How urgently the wall shows a rollout: 0 in trouble (paused, rolling or rolled back,
/// aborted), 1 running with a gate decision on record, 2 running, 3 completed.
fn urgency(s: &RolloutStory) -> u8 {
    match state_of(s) {
        WallState::Paused | WallState::RollingBack | WallState::RolledBack | WallState::Aborted => {
            0
        }
        WallState::Running if !s.stops.is_empty() => 1,
        WallState::Running => 2,
        WallState::Completed => 3,
    }
}

/// The wall's order: the rollout in trouble first, else the newest running one; within the
/// same urgency, the newest activity first, ties by id.
pub fn wall_order(rollouts: &[RolloutStory]) -> Vec<&RolloutStory> {
    let mut order: Vec<&RolloutStory> = rollouts.iter().collect();
    order.sort_by(|a, b| {
        urgency(a)
            .cmp(&urgency(b))
            .then_with(|| last_activity(b).cmp(&last_activity(a)))
            .then_with(|| a.rollout_id.cmp(&b.rollout_id))
    });
    order
}

/// Which of `n` rollouts the wall shows `elapsed_secs` after it was entered.
pub fn cycle_index(n: usize, elapsed_secs: i64) -> usize {
    if n == 0 {
        return 0;
    }
    let turns = usize::try_from(elapsed_secs.max(0) / CYCLE_SECS).unwrap_or(0);
    turns % n
}

/// `line` cut to `max_chars` characters with an ellipsis: the chronology repeats a gate's
/// evidence, which the wall already shows in full under its decision.
fn clip(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The rollout's own clock now: its simulated time when it runs faster than wall time (the
/// demo's 60x), else the screen's; and the words that say which.
pub fn rollout_now(
    clock: Option<&crate::store::events::RunClock>,
    now: Timestamp,
    wall_ms: i64,
) -> (Timestamp, Option<String>) {
    match clock {
        Some(c) if (c.time_scale - 1.0).abs() > f64::EPSILON => {
            let elapsed = (wall_ms - c.wall_began_ms).max(0) as f64 / 1_000.0;
            let sim = c.clock_start.secs() + (elapsed * c.time_scale) as i64;
            (
                Timestamp::from_secs(sim),
                Some(format!(
                    "times on the rollout's clock: simulated at {}x",
                    c.time_scale
                )),
            )
        }
        _ => (now, None),
    }
}

/// One wave's progress as a line.
fn wave_line(
    w: &convoy_core::comms::WaveStory,
    story: &RolloutStory,
    now: Timestamp,
) -> (String, Color32) {
    match (w.started_at, w.completed_at) {
        (_, Some(done)) => {
            let mut line = format!(
                "completed {}: {} healthy, {} failed, {} reverted",
                age(now.secs_since(done)),
                w.healthy,
                w.failed,
                w.reverted
            );
            if w.silent > 0 {
                let _ = write!(line, ", {} silent", w.silent);
            }
            let color = if w.failed + w.reverted > 0 {
                tokens::BAD
            } else {
                tokens::OK
            };
            (line, color)
        }
        (Some(start), None) => match story.stops.iter().rev().find(|s| s.wave == w.name) {
            // A wave a gate stopped is not "in progress" (issue 19).
            Some(stop) => (
                format!(
                    "stopped by a gate {}: {}",
                    age(now.secs_since(stop.at)),
                    stop.outcome
                ),
                tokens::BAD,
            ),
            None if story.ending.is_some() => {
                ("ended before it completed".to_owned(), tokens::MUTED)
            }
            None => (
                format!("in progress, started {}", age(now.secs_since(start))),
                tokens::WARN,
            ),
        },
        (None, None) => ("not started".to_owned(), tokens::MUTED),
    }
}

/// Draws the wall.
pub fn warroom_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui) {
    let now = cx.now;
    if cx.clock_runs {
        // The clock and the rollout cycle move without input.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(1));
    }
    ui.horizontal(|ui| {
        ui.label(
            RichText::new("CONVOY · WAR ROOM")
                .size(tokens::WALL_TITLE)
                .strong(),
        );
        ui.add_space(30.0);
        let (text, color) = match cx.link {
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
    ui.columns(2, |cols| {
        let shown = rollouts_ui(cx, &mut cols[0], now);
        if let Some(id) = shown {
            health_ui(cx, &mut cols[1], &id);
            cols[1].add_space(16.0);
        }
        fleet_ui(cx, &mut cols[1], now);
    });
    ui.add_space(20.0);
    ui.label(
        RichText::new("Read-only display · F11, W or Esc to leave")
            .size(14.0)
            .color(tokens::MUTED),
    );
}

fn small(text: impl Into<String>) -> RichText {
    RichText::new(text).size(tokens::WALL_TEXT * 0.7)
}

/// The rollout on the wall now, from the cache; returns its id.
fn rollouts_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, now: Timestamp) -> Option<String> {
    let board = match cx.rollouts {
        None => {
            ui.label(RichText::new("Reading the rollouts in the cache").size(tokens::WALL_TEXT));
            return None;
        }
        Some(Err(why)) => {
            ui.label(
                RichText::new(format!("Could not read the rollouts: {why}"))
                    .size(tokens::WALL_TEXT * 0.8)
                    .color(tokens::WARN),
            );
            return None;
        }
        Some(Ok(board)) => board,
    };
    for line in &board.unreadable {
        ui.label(small(format!("Unreadable timeline: {line}")).color(tokens::WARN));
    }
    let order = wall_order(&board.rollouts);
    if order.is_empty() {
        ui.label(
            RichText::new("No rollouts recorded in the cache")
                .size(tokens::WALL_TEXT)
                .color(tokens::MUTED),
        );
        ui.label(small("`convoy rollout run` records them here.").color(tokens::MUTED));
        return None;
    }
    let index = if cx.clock_runs {
        cycle_index(order.len(), now.secs_since(cx.warroom_since))
    } else {
        0
    };
    let s = order[index];
    let state = state_of(s);
    // Ages on this rollout's own clock, said on the wall.
    let (now, clock_words) = if cx.clock_runs {
        rollout_now(
            cx.rollouts
                .as_ref()
                .and_then(|b| b.as_ref().ok())
                .and_then(|b| b.clocks.get(&s.rollout_id)),
            now,
            crate::alerts::deliver::wall_ms(),
        )
    } else {
        (now, None)
    };
    ui.label(small(format!("Rollout {} of {}", index + 1, order.len())).color(tokens::MUTED));
    ui.horizontal_wrapped(|ui| {
        ui.label(
            RichText::new(&s.rollout_id)
                .size(tokens::WALL_TEXT * 1.3)
                .strong(),
        );
        ui.label(
            RichText::new(state.label())
                .size(tokens::WALL_TEXT * 1.3)
                .strong()
                .color(state.color()),
        );
    });
    ui.label(small(format!(
        "release {} · requested by {} · {} path · {} of {} devices offered",
        s.release_id,
        s.requested_by,
        s.path,
        s.offered(),
        s.planned()
    )));
    if let Some(words) = &clock_words {
        ui.label(small(words.clone()).color(tokens::MUTED));
    }
    if let Some((at, why)) = s.pauses.last().filter(|_| state == WallState::Paused) {
        ui.label(small(format!("paused {}: {why}", age(now.secs_since(*at)))).color(tokens::WARN));
    }
    ui.add_space(8.0);
    ui.label(RichText::new("Waves").size(tokens::WALL_TEXT).strong());
    for w in &s.waves {
        let (line, color) = wave_line(w, s, now);
        ui.horizontal(|ui| {
            ui.label(small(format!("{} ({} devices)", w.name, w.devices)).strong());
            ui.label(small(line).color(color));
        });
    }
    ui.add_space(8.0);
    ui.label(
        RichText::new(format!("Gate decisions · holds: {}", s.holds))
            .size(tokens::WALL_TEXT)
            .strong(),
    );
    if s.stops.is_empty() {
        ui.label(small("No gate has stopped this rollout.").color(tokens::MUTED));
    }
    for stop in s.stops.iter().rev() {
        let color = if stop.outcome == "hold" {
            tokens::WARN
        } else {
            tokens::BAD
        };
        ui.label(
            small(format!(
                "{} · wave {}: {}",
                age(now.secs_since(stop.at)),
                stop.wave,
                stop.outcome
            ))
            .color(color)
            .strong(),
        );
        for finding in &stop.findings {
            ui.label(small(format!("  {finding}")));
        }
    }
    ui.add_space(8.0);
    ui.label(
        RichText::new("Latest entries")
            .size(tokens::WALL_TEXT)
            .strong(),
    );
    for (at, line, cause) in s.chronology.iter().rev().take(LATEST_ENTRIES) {
        ui.label(small(format!(
            "{:>10}  {}  ({cause})",
            age(now.secs_since(*at)),
            clip(line, CLIP_CHARS)
        )));
    }
    let others: Vec<String> = order
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, o)| format!("{} {}", o.rollout_id, state_of(o).label().to_lowercase()))
        .collect();
    if !others.is_empty() {
        ui.add_space(8.0);
        ui.label(small(format!("Also: {}", others.join(" · "))).color(tokens::MUTED));
    }
    Some(s.rollout_id.clone())
}

/// The metrics the wall plots, when the rollout's gates watch them.
const WALL_METRICS: [&str; 2] = ["crash", "reconnect_failure"];

/// Cohort health of the rollout on the wall against its baseline: for each plotted metric, the
/// updated cohort and the baseline (cumulative since the rollout started), the level the gate
/// tolerates (baseline × its ratio), and the gate decisions on the time axis.
fn health_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, rollout_id: &str) {
    ui.label(
        RichText::new("Cohort health against baseline")
            .size(tokens::WALL_TEXT)
            .strong(),
    );
    let series = cx
        .rollouts
        .and_then(|b| b.as_ref().ok())
        .and_then(|b| b.health.get(rollout_id));
    let Some(series) = series else {
        ui.label(
            small("No health log for this rollout (recorded before the engine kept one).")
                .color(tokens::MUTED),
        );
        return;
    };
    let style = PlotStyle {
        text_size: tokens::WALL_TEXT * 0.7,
        height: 130.0,
        id_salt: "warroom-health",
    };
    let mut any = false;
    for m in series
        .metrics
        .iter()
        .filter(|m| WALL_METRICS.contains(&m.metric.as_str()))
    {
        any |= metric_plot_ui(ui, series, m, &style);
    }
    if !any {
        ui.label(small("No health samples yet.").color(tokens::MUTED));
        return;
    }
    last_stop_ui(ui, series, style.text_size);
}

/// How [`metric_plot_ui`] draws: the wall's large type, or the monitor's.
#[derive(Debug, Clone, Copy)]
pub struct PlotStyle {
    /// The size of the line above each plot.
    pub text_size: f32,
    /// The height of each plot.
    pub height: f32,
    /// Keeps the plots of different views apart in egui's memory.
    pub id_salt: &'static str,
}

/// One metric of `series`: a line with its latest values (red when the updated cohort is past
/// what the gate tolerates), then the plot of the updated cohort, the baseline, the tolerated
/// level (baseline × the gate's ratio, dashed) and `series`' decisions as vertical lines (red
/// for a stop), hours since the rollout started on the x axis. The plot's accessible name is
/// "{metric} health plot". False, drawing nothing, when the metric has no point yet.
pub fn metric_plot_ui(
    ui: &mut egui::Ui,
    series: &HealthSeries,
    m: &MetricSeries,
    style: &PlotStyle,
) -> bool {
    let Some(last) = m.points.last() else {
        return false;
    };
    let start = series.started_at.secs();
    let hours = |t: Timestamp| (t.secs() - start) as f64 / 3600.0;
    let fmt = |v: Option<f64>| v.map_or_else(|| "no sample".to_owned(), |v| format!("{v:.2}"));
    let over = matches!((last.updated, last.baseline), (Some(u), Some(b)) if u > m.max_ratio * b);
    ui.label(
        RichText::new(format!(
            "{}: updated {} · baseline {} {} · tolerated ×{}",
            m.metric,
            fmt(last.updated),
            fmt(last.baseline),
            m.unit,
            m.max_ratio
        ))
        .size(style.text_size)
        .color(if over { tokens::BAD } else { tokens::OK }),
    );
    // A later value at the same moment replaces the earlier one (a series' last point can
    // fall on its last step): two points at one x would draw as a spike.
    let pick = |f: fn(&SeriesPoint) -> Option<f64>| {
        let mut out: Vec<[f64; 2]> = Vec::new();
        for p in &m.points {
            if let Some(v) = f(p) {
                let x = hours(p.at);
                if out.last().is_some_and(|last| last[0] == x) {
                    out.pop();
                }
                out.push([x, v]);
            }
        }
        out
    };
    let updated = pick(|p| p.updated);
    let baseline = pick(|p| p.baseline);
    let tolerated: Vec<[f64; 2]> = baseline
        .iter()
        .map(|[x, y]| [*x, y * m.max_ratio])
        .collect();
    let response = egui_plot::Plot::new((style.id_salt, m.metric.as_str()))
        .height(style.height)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .include_y(0.0)
        .x_axis_label("hours since the rollout started")
        .include_x(0.0)
        .include_x(hours(
            series.markers.last().map_or(last.at, |m| m.at.max(last.at)),
        ))
        .legend(egui_plot::Legend::default().position(egui_plot::Corner::LeftTop))
        .show(ui, |plot_ui| {
            plot_ui.line(
                egui_plot::Line::new("baseline", egui_plot::PlotPoints::from(baseline))
                    .color(tokens::MUTED)
                    .width(2.0),
            );
            plot_ui.line(
                egui_plot::Line::new("tolerated", egui_plot::PlotPoints::from(tolerated))
                    .color(tokens::WARN)
                    .style(egui_plot::LineStyle::dashed_loose()),
            );
            plot_ui.line(
                egui_plot::Line::new("updated", egui_plot::PlotPoints::from(updated))
                    .color(if over { tokens::BAD } else { tokens::OK })
                    .width(3.0),
            );
            // Unnamed, so that they stay out of the legend: the line under the plots names
            // the last stop.
            for marker in &series.markers {
                plot_ui.vline(
                    egui_plot::VLine::new("", hours(marker.at)).color(if marker.stop {
                        tokens::BAD
                    } else {
                        tokens::MUTED
                    }),
                );
            }
        });
    let label = format!("{} health plot", m.metric);
    response
        .response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &label));
    true
}

/// The line naming `series`' last stop (a pause, rollback or abort) and when, if any.
pub fn last_stop_ui(ui: &mut egui::Ui, series: &HealthSeries, text_size: f32) {
    if let Some(stop) = series.markers.iter().rev().find(|m| m.stop) {
        ui.label(
            RichText::new(format!(
                "last stop: {} at {:.1} h",
                stop.label,
                (stop.at.secs() - series.started_at.secs()) as f64 / 3600.0
            ))
            .size(text_size)
            .color(tokens::BAD),
        );
    }
}

/// The fleet's state counts and its latest device events.
fn fleet_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, now: Timestamp) {
    let mode = cx.state.color_mode;
    let Some(model) = cx.model else {
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
                .inner_margin(10.0)
                .corner_radius(6.0)
                .show(ui, |ui| {
                    ui.set_min_width(120.0);
                    ui.vertical(|ui| {
                        ui.label(
                            RichText::new(cx.derived.counts_all[k].to_string())
                                .size(tokens::WALL_NUMBER * 0.7)
                                .strong()
                                .color(color),
                        );
                        ui.label(small(*name));
                    });
                });
        }
    });
    ui.add_space(20.0);
    ui.label(
        RichText::new("Latest events")
            .size(tokens::WALL_TEXT)
            .strong(),
    );
    let mut any = false;
    for e in model.events.iter().rev().take(10) {
        any = true;
        let color = match e.severity {
            Severity::Info => ui.visuals().text_color(),
            Severity::Warning => tokens::WARN,
            Severity::Problem => tokens::BAD,
        };
        ui.label(
            small(format!(
                "{:>10}  {}  {}",
                age(now.secs_since(e.at)),
                e.device_id,
                e.text
            ))
            .monospace()
            .color(color),
        );
    }
    if !any {
        ui.label(small("No events yet."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::comms::{RecordEntry, story};
    use serde_json::json;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn entry(secs: i64, kind: &str, payload: serde_json::Value) -> RecordEntry {
        RecordEntry {
            at: T0.plus_secs(secs),
            kind: kind.into(),
            cause: "timer".into(),
            payload,
        }
    }

    fn record(id: &str, start: i64, tail: &[(i64, &str, serde_json::Value)]) -> RolloutStory {
        let mut e = vec![
            entry(
                start,
                "rollout.created",
                json!({"release": "r", "requested_by": "a", "path": "standard",
                       "waves": [{"name": "canary", "devices": 10}]}),
            ),
            entry(
                start + 1,
                "wave.started",
                json!({"wave_started": {"wave": 0}}),
            ),
        ];
        e.extend(tail.iter().map(|(s, k, p)| entry(start + s, k, p.clone())));
        story(id, &e).expect("a record that starts with its creation")
    }

    #[test]
    fn the_state_follows_pauses_resumes_rollbacks_and_endings() {
        let running = record("a", 0, &[]);
        assert_eq!(state_of(&running), WallState::Running);
        let paused = record(
            "b",
            0,
            &[(5, "rollout.paused", json!({"paused": {"reason": "gate"}}))],
        );
        assert_eq!(state_of(&paused), WallState::Paused);
        let resumed = record(
            "c",
            0,
            &[
                (5, "rollout.paused", json!({"paused": {"reason": "gate"}})),
                (9, "rollout.resumed", json!("resumed")),
            ],
        );
        assert_eq!(state_of(&resumed), WallState::Running);
        let back = json!({"rollback_started": {"scope": {"wave": 0}, "devices": [1, 2]}});
        let rolling = record("d", 0, &[(5, "rollback.started", back.clone())]);
        assert_eq!(state_of(&rolling), WallState::RollingBack);
        let rolled = record(
            "e",
            0,
            &[
                (5, "rollback.started", back),
                (8, "rollback.finished", json!({})),
            ],
        );
        // A wave rolled back waits for a human, until someone resumes.
        assert_eq!(state_of(&rolled), WallState::Paused);
        let back = json!({"rollback_started": {"scope": {"wave": 0}, "devices": [1, 2]}});
        let rolled_and_resumed = record(
            "g",
            0,
            &[
                (5, "rollback.started", back),
                (8, "rollback.finished", json!({})),
                (9, "rollout.resumed", json!("resumed")),
            ],
        );
        assert_eq!(state_of(&rolled_and_resumed), WallState::Running);
        let done = record("f", 0, &[(9, "rollout.completed", json!("completed"))]);
        assert_eq!(state_of(&done), WallState::Completed);
    }

    #[test]
    fn the_wall_shows_the_rollout_in_trouble_first_then_the_newest_running() {
        let old_running = record("old", 0, &[]);
        let new_running = record("new", 100, &[]);
        let done = record("done", 200, &[(1, "rollout.completed", json!("completed"))]);
        let paused = record(
            "stuck",
            0,
            &[(5, "rollout.paused", json!({"paused": {"reason": "gate"}}))],
        );
        let all = vec![old_running, done, new_running, paused];
        let ids: Vec<&str> = wall_order(&all)
            .iter()
            .map(|s| s.rollout_id.as_str())
            .collect();
        assert_eq!(ids, vec!["stuck", "new", "old", "done"]);
        // Without trouble, the newest running one leads.
        let ids: Vec<&str> = wall_order(&all[..3])
            .iter()
            .map(|s| s.rollout_id.as_str())
            .collect();
        assert_eq!(ids[0], "new");
    }

    #[test]
    fn long_entries_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("wave ünïcode started", 7), "wave ün…");
    }

    #[test]
    fn the_cycle_turns_every_cycle_secs_and_wraps() {
        assert_eq!(cycle_index(3, 0), 0);
        assert_eq!(cycle_index(3, CYCLE_SECS - 1), 0);
        assert_eq!(cycle_index(3, CYCLE_SECS), 1);
        assert_eq!(cycle_index(3, 3 * CYCLE_SECS), 0);
        assert_eq!(cycle_index(0, 99), 0);
        assert_eq!(cycle_index(2, -5), 0);
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_sped_up_rollout_is_timed_on_its_own_clock_and_says_so() {
        let clock = crate::store::events::RunClock {
            rollout_id: "demo".into(),
            release_id: "r".into(),
            clock_start: Timestamp::from_secs(1_000),
            wall_began_ms: 10_000,
            time_scale: 60.0,
        };
        // 2.5 wall seconds later at 60x: 150 simulated seconds after the start.
        let (now, words) = rollout_now(Some(&clock), Timestamp::from_secs(99), 12_500);
        assert_eq!(now, Timestamp::from_secs(1_150));
        assert_eq!(
            words.as_deref(),
            Some("times on the rollout's clock: simulated at 60x")
        );
        // At real time the screen's clock is the rollout's.
        let real = crate::store::events::RunClock {
            time_scale: 1.0,
            ..clock
        };
        assert_eq!(
            rollout_now(Some(&real), Timestamp::from_secs(99), 12_500),
            (Timestamp::from_secs(99), None)
        );
        assert_eq!(
            rollout_now(None, Timestamp::from_secs(7), 0).0,
            Timestamp::from_secs(7)
        );
    }
}
