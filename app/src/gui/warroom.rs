//! War-room mode: a read-only wall display, laid out for the screen it is on (1080p or 4K, the
//! sizes follow the screen's height) and readable across a room. At the top a colour band
//! with the state of the rollout on the wall and its verdict in words (an alarm is visible from
//! the door); under it the evidence in plain words ("6 crashes on 5 T300 rev C devices in
//! 4.6 min since wave canary started; normal is about 0"), the statistics after it; then its
//! waves, gate decisions and latest timeline entries, and beside them the fleet's state counts,
//! the rollout's cohort health against its baseline and the latest device events.
//!
//! The wall watches the active rollouts (not ended, or ended within [`RECENT_END_SECS`] on
//! their own clock), the one in trouble first, each in turn for [`CYCLE_SECS`] (only while the
//! clock runs: a fixed test clock stays on the first); with none, it says there is nothing to
//! watch. One clock per screen: a rollout run faster than wall time (the demo's 60x) is timed
//! on its own clock, and the wall's clock line says so. It has no control that changes
//! anything: F11, W or Esc leave it (F11 also makes the window full screen, `app.rs`).
//!
//! It draws only: the history worker reads the cache and the story of each rollout comes from
//! [`convoy_core::comms::story`]; beside it, the rollout's cohort health against its baseline
//! ([`convoy_core::rollout::series`], from the engine's log), re-read as the log grows. The
//! plot of one metric ([`metric_plot_ui`]) is shared with the rollout monitor, which plots
//! every gated metric with it.

use std::fmt::Write as _;

use convoy_core::comms::{Ending, FindingFigures, GateStop, RolloutStory};
use convoy_core::rollout::series::{HealthSeries, MetricSeries, SeriesPoint};
use convoy_core::time::Timestamp;
use egui::{Color32, RichText, Stroke};

use crate::gui::app::age;
use crate::gui::backend::{LinkStatus, RolloutBoard};
use crate::gui::model::Severity;
use crate::gui::tokens;
use crate::gui::view::ViewContext;

/// How long the wall shows each rollout before the next.
pub const CYCLE_SECS: i64 = 15;
/// A rollout that ended this long ago (on its own clock) or less is still on the wall.
pub const RECENT_END_SECS: i64 = 3600;
/// Timeline entries shown for the rollout on the wall.
const LATEST_ENTRIES: usize = 6;
/// Device events shown on the wall.
const LATEST_EVENTS: usize = 8;
/// The longest timeline entry the wall shows whole.
const CLIP_CHARS: usize = 60;
/// A plot's y axis stops at this multiple of the highest baseline or tolerated level, so that
/// an outlier does not flatten them; what goes past is marked "off scale".
pub const OFF_SCALE_TIMES: f64 = 4.0;
/// ... but only when the line goes past this multiple of that level: below it, the levels
/// still read and cutting would hide more than it shows.
pub const CUT_WHEN_TIMES: f64 = 10.0;

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

    /// Whether the state needs a human (the band is an alarm).
    pub fn alarm(self) -> bool {
        matches!(
            self,
            Self::Paused | Self::RollingBack | Self::RolledBack | Self::Aborted
        )
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

/// When `s` ended, if it has.
fn ended_at(s: &RolloutStory) -> Option<Timestamp> {
    match &s.ending {
        Some(Ending::Completed(at) | Ending::RolledBack(at) | Ending::Aborted(at, _)) => Some(*at),
        None => None,
    }
}

/// Whether the wall watches `s` at `now` (its own clock): not ended, or ended within
/// [`RECENT_END_SECS`].
pub fn is_active(s: &RolloutStory, now: Timestamp) -> bool {
    ended_at(s).is_none_or(|at| now.secs_since(at) <= RECENT_END_SECS)
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
/// same urgency the newest created first, ties by id. Creation, not the last activity: the
/// board is read again every few seconds, and an order that moved with every new entry would
/// make the cycle show one rollout twice and skip another.
pub fn wall_order(rollouts: &[RolloutStory]) -> Vec<&RolloutStory> {
    let mut order: Vec<&RolloutStory> = rollouts.iter().collect();
    order.sort_by(|a, b| {
        urgency(a)
            .cmp(&urgency(b))
            .then_with(|| b.created_at.cmp(&a.created_at))
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

/// How far ahead of the screen's clock the newest device report may be before the console
/// takes the fleet to run on another clock (a simulated one).
const AHEAD_SECS: i64 = 60;

/// The clock the fleet's own times are on, and the words that say which: the screen's, unless
/// the newest report (`newest`) is more than a minute ahead of it, as a simulated fleet's is
/// (the demo's 60x). Then the sped-up rollout clock (of `board`) nearest to that report, or
/// failing one, the newest report itself. Device ages in the war room and the device view
/// use it (issue 19: a last-seen time hours in the future read "0 s ago").
pub fn fleet_now(
    screen_now: Timestamp,
    clock_runs: bool,
    newest: Option<Timestamp>,
    board: Option<&RolloutBoard>,
    wall_ms: i64,
) -> (Timestamp, String) {
    let screen = (screen_now, "ages on this screen's clock (UTC)".to_owned());
    let Some(newest) = newest.filter(|t| t.secs_since(screen_now) > AHEAD_SECS) else {
        return screen;
    };
    if !clock_runs {
        return (
            newest,
            "ages before the newest report (the devices' clock is ahead of this screen's)"
                .to_owned(),
        );
    }
    let nearest = board
        .into_iter()
        .flat_map(|b| b.clocks.values())
        .filter(|c| (c.time_scale - 1.0).abs() > f64::EPSILON)
        .map(|c| (rollout_now(Some(c), screen_now, wall_ms).0, c.time_scale))
        .min_by_key(|(t, _)| t.secs_since(newest).abs());
    match nearest {
        Some((t, scale)) if t.secs_since(newest).abs() < 3600 => (
            t,
            format!("ages on the simulated clock ({scale}x), as the devices report"),
        ),
        _ => (
            newest,
            "ages before the newest report (the devices' clock is ahead of this screen's)"
                .to_owned(),
        ),
    }
}

/// A duration in words: "45 s", "4.6 min", "3.2 h", "2.5 d".
pub fn span_words(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{:.1} min", s as f64 / 60.0)
    } else if s < 172_800 {
        format!("{:.1} h", s as f64 / 3600.0)
    } else {
        format!("{:.1} d", s as f64 / 86_400.0)
    }
}

/// The devices a finding is about: "T300 rev C devices" for the stratum `T300/C`, else
/// "devices".
fn devices_words(stratum: Option<&str>) -> String {
    match stratum.map(|s| s.split_once('/')) {
        Some(Some((model, rev))) => format!("{model} rev {rev} devices"),
        _ => match stratum {
            Some(s) => format!("{s} devices"),
            None => "devices".to_owned(),
        },
    }
}

/// The events a rate metric counts, in words (`n` of them).
fn events_words(metric: &str, n: u64) -> String {
    let (one, many) = match metric {
        "crash" => ("crash", "crashes"),
        "reconnect_failure" => ("failed reconnect", "failed reconnects"),
        "support_contacts" => ("support contact", "support contacts"),
        "boot_failure" => ("boot failure", "boot failures"),
        "install_failure" => ("failed install", "failed installs"),
        _ => ("", ""),
    };
    if one.is_empty() {
        format!("{n} {metric} events")
    } else {
        format!("{n} {}", if n == 1 { one } else { many })
    }
}

/// An expected count in words: "about 0", "about 2.4", "about 31".
fn about(x: f64) -> String {
    if x < 0.5 {
        "about 0".to_owned()
    } else if x < 10.0 {
        format!("about {x:.1}")
    } else {
        format!("about {x:.0}")
    }
}

/// One failing finding in plain words, before any statistics: what happened, to how many of
/// which devices, over how long (`span_secs`, since `wave` started, when known), and what
/// would be normal at the baseline's rate.
pub fn plain_evidence(f: &FindingFigures, span: Option<(i64, &str)>) -> String {
    let who = devices_words(f.stratum.as_deref());
    let when = span.map_or_else(String::new, |(secs, wave)| {
        format!(" in {} since wave {wave} started", span_words(secs))
    });
    match (f.counts, f.metric.as_str()) {
        (Some((events, hours, base_events, base_hours)), _) => {
            let normal = if base_hours > 0.0 {
                about(base_events as f64 / base_hours * hours)
            } else {
                "unknown (no baseline exposure yet)".to_owned()
            };
            format!(
                "{} on {} {who}{when}; normal is {normal}",
                events_words(&f.metric, events),
                f.sample
            )
        }
        (None, "boot_failure" | "install_failure" | "silent") => {
            let what = match f.metric.as_str() {
                "boot_failure" => "failed to boot",
                "install_failure" => "failed to install",
                _ => "went silent",
            };
            let k = (f.observed * f.sample as f64).round();
            format!(
                "{k} of {} {who} {what}{when} ({:.0}%); normal is about {}%",
                f.sample,
                f.observed * 100.0,
                trim_pct(f.baseline * 100.0)
            )
        }
        (None, metric) => format!(
            "{} averaged {:.2} on {} {who}{when}; normal is about {:.2}",
            metric.replace('_', " "),
            f.observed,
            f.sample,
            f.baseline
        ),
    }
}

/// A percentage with as few digits as it needs: 0.5, 2, 12.
fn trim_pct(p: f64) -> String {
    let s = format!("{p:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

/// How long after its wave started the stop came, on the record's own clock.
fn stop_span(s: &RolloutStory, stop: &GateStop) -> Option<(i64, String)> {
    let wave = s.waves.iter().find(|w| w.name == stop.wave)?;
    let started = wave.started_at?;
    Some((stop.at.secs_since(started), wave.name.clone()))
}

/// The verdict in words for the band, at `now` on the rollout's clock.
pub fn verdict(s: &RolloutStory, state: WallState, now: Timestamp) -> String {
    let ago = |t: Timestamp| age(now.secs_since(t));
    let last_stop = s.stops.last();
    match state {
        WallState::Completed => match ended_at(s) {
            Some(at) => format!("Completed {}: every wave done", ago(at)),
            None => "Completed".to_owned(),
        },
        WallState::Aborted => match &s.ending {
            Some(Ending::Aborted(at, why)) => format!("Aborted {}: {why}", ago(*at)),
            _ => "Aborted".to_owned(),
        },
        WallState::RolledBack => {
            let by = last_stop.map_or_else(String::new, |st| {
                format!(" after the health gate stopped wave {}", st.wave)
            });
            match ended_at(s) {
                Some(at) => format!("Rolled back {}{by}; the rollout is over", ago(at)),
                None => format!("Rolled back{by}"),
            }
        }
        WallState::RollingBack => match s.rollbacks.last() {
            Some((at, scope, n)) => format!(
                "Rolling back {scope}: {n} devices asked to go back {}",
                ago(*at)
            ),
            None => "Rolling back".to_owned(),
        },
        WallState::Paused => {
            let rollback = s.rollbacks.last();
            let pause = s.pauses.last();
            match (rollback, pause) {
                (Some((at, scope, n)), p) if p.is_none_or(|(pat, _)| pat <= at) => format!(
                    "{} rolled back {}{} ({n} devices asked to go back); waiting for a decision",
                    capitalise(scope),
                    ago(*at),
                    if s.stops.iter().any(|st| st.at == *at) {
                        " by the health gate"
                    } else {
                        ""
                    }
                ),
                (_, Some((at, why))) => {
                    format!("Paused {}: {why}; waiting for a decision", ago(*at))
                }
                _ => "Paused; waiting for a decision".to_owned(),
            }
        }
        WallState::Running => {
            let current = s
                .waves
                .iter()
                .rev()
                .find(|w| w.started_at.is_some() && w.completed_at.is_none());
            match current {
                Some(w) => format!(
                    "Wave {} in progress ({} devices), started {}",
                    w.name,
                    w.devices,
                    w.started_at.map_or_else(String::new, ago)
                ),
                None => "Running; no wave in progress".to_owned(),
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
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

/// The wall's type sizes, as shares of the screen's height: the same wall reads the same from
/// across a room on a 1080p and a 4K screen.
#[derive(Debug, Clone, Copy)]
pub struct WallScale {
    /// One hundredth of the screen's height, in points.
    pub unit: f32,
}

impl WallScale {
    /// For a screen `height_pts` points high (never below a 600-point screen's sizes).
    pub fn for_height(height_pts: f32) -> Self {
        Self {
            unit: (height_pts / 100.0).max(6.0),
        }
    }

    /// The state on the band: 8% of the height.
    pub fn headline(self) -> f32 {
        8.0 * self.unit
    }
    /// The counts of the state tiles: 5%.
    pub fn number(self) -> f32 {
        5.0 * self.unit
    }
    pub fn title(self) -> f32 {
        3.2 * self.unit
    }
    /// The verdict, the evidence and the section heads.
    pub fn text(self) -> f32 {
        2.6 * self.unit
    }
    /// Lines under a section head.
    pub fn small(self) -> f32 {
        1.9 * self.unit
    }
    pub fn tiny(self) -> f32 {
        1.5 * self.unit
    }
}

/// The rollouts the wall watches at `now` (each on its own clock when the clock runs), in the
/// wall's order; and those of the board that ended longer ago.
fn watched<'a>(
    cx: &ViewContext<'_>,
    board: &'a RolloutBoard,
    wall_ms: i64,
) -> (Vec<&'a RolloutStory>, Vec<&'a RolloutStory>) {
    let own_now = |s: &RolloutStory| {
        if cx.clock_runs {
            rollout_now(board.clocks.get(&s.rollout_id), cx.now, wall_ms).0
        } else {
            cx.now
        }
    };
    wall_order(&board.rollouts)
        .into_iter()
        .partition(|s| is_active(s, own_now(s)))
}

/// Draws the wall.
pub fn warroom_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui) {
    if cx.clock_runs {
        // The clock and the rollout cycle move without input.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(1));
    }
    let scale = WallScale::for_height(ui.ctx().content_rect().height());
    let wall_ms = crate::alerts::deliver::wall_ms();
    let board = cx.rollouts.and_then(|b| b.as_ref().ok());
    let (active, ended) = board.map_or((Vec::new(), Vec::new()), |b| watched(cx, b, wall_ms));
    let index = if cx.clock_runs {
        cycle_index(active.len(), cx.now.secs_since(cx.warroom_since))
    } else {
        0
    };
    let shown = active.get(index).copied();
    // One clock for the screen: the shown rollout's own when it runs sped up, else the
    // screen's.
    let (now, clock_words) = match shown {
        Some(s) if cx.clock_runs => rollout_now(
            board.and_then(|b| b.clocks.get(&s.rollout_id)),
            cx.now,
            wall_ms,
        ),
        _ => (cx.now, None),
    };
    header_ui(cx, ui, scale, now, clock_words.is_some());
    ui.add_space(scale.unit);
    match (cx.rollouts, shown) {
        (None, _) => band_ui(
            ui,
            scale,
            tokens::MUTED,
            "READING",
            "",
            "Reading the rollouts in the cache",
        ),
        (Some(Err(why)), _) => band_ui(
            ui,
            scale,
            tokens::WARN,
            "NO DATA",
            "",
            &format!("Could not read the rollouts: {why}"),
        ),
        (Some(Ok(_)), None) => {
            let last = ended.first().map_or_else(
                || {
                    "No rollouts recorded in the cache: `convoy rollout run` records them here."
                        .to_owned()
                },
                |s| {
                    format!(
                        "No rollout is running or waiting for a decision. Last: {} {} ({})",
                        s.rollout_id,
                        state_of(s).label().to_lowercase(),
                        verdict(s, state_of(s), cx.now).to_lowercase()
                    )
                },
            );
            band_ui(ui, scale, tokens::MUTED, "NOTHING TO WATCH", "", &last);
        }
        (Some(Ok(_)), Some(s)) => {
            let state = state_of(s);
            band_ui(
                ui,
                scale,
                state.color(),
                state.label(),
                &s.rollout_id,
                &verdict(s, state, now),
            );
        }
    }
    ui.add_space(scale.unit);
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            // The scroll bar floats over the content's right edge: keep the tiles clear of it.
            let bar = ui.spacing().scroll.bar_width + ui.spacing().scroll.bar_outer_margin * 2.0;
            ui.set_max_width((ui.available_width() - bar).max(1.0));
            ui.columns(2, |cols| {
                if let Some(s) = shown {
                    rollout_ui(
                        &mut cols[0],
                        scale,
                        s,
                        now,
                        clock_words.as_deref(),
                        (index, &active, &ended),
                    );
                } else if let Some(Ok(b)) = cx.rollouts {
                    for line in &b.unreadable {
                        cols[0].label(
                            RichText::new(format!("Unreadable timeline: {line}"))
                                .size(scale.small())
                                .color(tokens::WARN),
                        );
                    }
                }
                fleet_counts_ui(cx, &mut cols[1], scale);
                if let Some(s) = shown {
                    cols[1].add_space(scale.unit);
                    health_ui(cx, &mut cols[1], scale, &s.rollout_id);
                }
                cols[1].add_space(scale.unit);
                fleet_events_ui(cx, &mut cols[1], scale, wall_ms);
            });
            ui.add_space(scale.unit);
            ui.label(
                RichText::new("Read-only display · F11, W or Esc to leave")
                    .size(scale.tiny())
                    .color(tokens::MUTED),
            );
        });
}

/// The title, the link and the screen's one clock.
fn header_ui(
    cx: &ViewContext<'_>,
    ui: &mut egui::Ui,
    scale: WallScale,
    now: Timestamp,
    simulated: bool,
) {
    ui.horizontal_wrapped(|ui| {
        ui.label(
            RichText::new("CONVOY · WAR ROOM")
                .size(scale.title())
                .strong(),
        );
        ui.add_space(3.0 * scale.unit);
        let (text, color) = match cx.link {
            LinkStatus::Offline => ("LINK OFFLINE".to_owned(), tokens::MUTED),
            LinkStatus::Connecting => ("LINK CONNECTING".to_owned(), tokens::WARN),
            LinkStatus::Connected => ("LINK CONNECTED".to_owned(), tokens::OK),
            LinkStatus::Reconnecting(_) => ("LINK LOST, RECONNECTING".to_owned(), tokens::BAD),
        };
        ui.label(RichText::new(text).size(scale.text()).color(color).strong());
        ui.add_space(3.0 * scale.unit);
        let clock = if simulated {
            format!("{now} (the rollout's simulated clock)")
        } else {
            now.to_string()
        };
        ui.label(RichText::new(clock).size(scale.text()));
    });
}

/// The full-width colour band: the state in large type, the rollout's id, and the verdict in
/// words. Dark text on the state's colour (the colours are light enough for it).
fn band_ui(
    ui: &mut egui::Ui,
    scale: WallScale,
    color: Color32,
    state: &str,
    rollout_id: &str,
    verdict: &str,
) {
    let ink = Color32::from_rgb(0x10, 0x10, 0x10);
    egui::Frame::new()
        .fill(color)
        .corner_radius(scale.unit * 0.6)
        .inner_margin(egui::Margin::symmetric(
            (2.0 * scale.unit) as i8,
            (1.0 * scale.unit) as i8,
        ))
        .show(ui, |ui| {
            ui.set_min_width(ui.available_width());
            ui.horizontal_wrapped(|ui| {
                ui.label(
                    RichText::new(state)
                        .size(scale.headline())
                        .strong()
                        .color(ink),
                );
                if !rollout_id.is_empty() {
                    ui.add_space(2.0 * scale.unit);
                    ui.label(
                        RichText::new(rollout_id)
                            .size(scale.title())
                            .strong()
                            .color(ink),
                    );
                }
            });
            ui.label(RichText::new(verdict).size(scale.text()).color(ink));
        });
}

/// The rollout on the wall: who and what, the evidence in plain words then its statistics,
/// its waves, gate decisions and latest entries, and the other rollouts watched.
fn rollout_ui(
    ui: &mut egui::Ui,
    scale: WallScale,
    s: &RolloutStory,
    now: Timestamp,
    clock_words: Option<&str>,
    (index, active, ended): (usize, &[&RolloutStory], &[&RolloutStory]),
) {
    let small = |t: String| RichText::new(t).size(scale.small());
    let head = |t: &str| RichText::new(t).size(scale.text()).strong();
    ui.label(small(format!("Rollout {} of {}", index + 1, active.len())).color(tokens::MUTED));
    ui.label(small(format!(
        "release {} · requested by {} · {} path · {} of {} devices offered",
        s.release_id,
        s.requested_by,
        s.path,
        s.offered(),
        s.planned()
    )));
    if let Some(words) = clock_words {
        ui.label(small(words.to_owned()).color(tokens::MUTED));
    }
    if let Some(stop) = s.stops.last() {
        ui.add_space(scale.unit);
        ui.label(head("What the gate saw"));
        let span = stop_span(s, stop);
        for f in &stop.figures {
            let color = if stop.outcome == "hold" {
                tokens::WARN
            } else {
                tokens::BAD
            };
            ui.label(
                RichText::new(plain_evidence(
                    f,
                    span.as_ref().map(|(secs, w)| (*secs, w.as_str())),
                ))
                .size(scale.text())
                .color(color),
            );
        }
        for finding in &stop.findings {
            ui.label(
                RichText::new(format!("Statistics: {finding}"))
                    .size(scale.tiny())
                    .color(tokens::MUTED),
            );
        }
    }
    ui.add_space(scale.unit);
    ui.label(head("Waves"));
    for w in &s.waves {
        let (line, color) = wave_line(w, s, now);
        ui.horizontal_wrapped(|ui| {
            ui.label(small(format!("{} ({} devices)", w.name, w.devices)).strong());
            ui.label(small(line).color(color));
        });
    }
    ui.add_space(scale.unit);
    ui.label(head(&format!("Gate decisions · holds: {}", s.holds)));
    if s.stops.is_empty() {
        ui.label(small("No gate has stopped this rollout.".to_owned()).color(tokens::MUTED));
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
    }
    ui.add_space(scale.unit);
    ui.label(head("Latest entries"));
    for (at, line, cause) in s.chronology.iter().rev().take(LATEST_ENTRIES) {
        ui.label(small(format!(
            "{:>10}  {}  ({cause})",
            age(now.secs_since(*at)),
            clip(line, CLIP_CHARS)
        )));
    }
    let others: Vec<String> = active
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, o)| format!("{} {}", o.rollout_id, state_of(o).label().to_lowercase()))
        .collect();
    if !others.is_empty() {
        ui.add_space(scale.unit);
        ui.label(small(format!("Also: {}", others.join(" · "))).color(tokens::MUTED));
    }
    if !ended.is_empty() {
        let names: Vec<String> = ended
            .iter()
            .map(|o| format!("{} {}", o.rollout_id, state_of(o).label().to_lowercase()))
            .collect();
        ui.label(
            RichText::new(format!("Ended: {}", names.join(" · ")))
                .size(scale.tiny())
                .color(tokens::MUTED),
        );
    }
}

/// The metrics the wall plots, when the rollout's gates watch them.
const WALL_METRICS: [&str; 2] = ["crash", "reconnect_failure"];

/// Cohort health of the rollout on the wall against its baseline: for each plotted metric, the
/// updated cohort and the baseline (cumulative since the rollout started), the level the gate
/// tolerates (baseline × its ratio), and the gate decisions on the time axis.
fn health_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, scale: WallScale, rollout_id: &str) {
    ui.label(
        RichText::new("Cohort health against baseline")
            .size(scale.text())
            .strong(),
    );
    let series = cx
        .rollouts
        .and_then(|b| b.as_ref().ok())
        .and_then(|b| b.health.get(rollout_id));
    let Some(series) = series else {
        ui.label(
            RichText::new("No health log for this rollout (recorded before the engine kept one).")
                .size(scale.small())
                .color(tokens::MUTED),
        );
        return;
    };
    let style = PlotStyle {
        text_size: scale.small(),
        height: 13.0 * scale.unit,
        id_salt: "warroom-health",
    };
    let mut any = false;
    ui.scope(|ui| {
        // The plots' axis numbers and legend follow the wall's scale too (egui_plot draws them
        // in the style's text sizes, made for a desk at arm's length).
        let factor = (scale.unit / 10.8).max(1.0);
        for font in ui.style_mut().text_styles.values_mut() {
            font.size *= factor;
        }
        for m in series
            .metrics
            .iter()
            .filter(|m| WALL_METRICS.contains(&m.metric.as_str()))
        {
            any |= metric_plot_ui(ui, series, m, &style);
        }
    });
    if !any {
        ui.label(
            RichText::new("No health samples yet.")
                .size(scale.small())
                .color(tokens::MUTED),
        );
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
    // The level the gate tolerates now: the baseline's early points rest on few device-hours
    // and can be far above it, so the whole series' highest would keep an outlier on scale.
    let reference = tolerated
        .last()
        .map_or(0.0, |p| p[1])
        .max(baseline.last().map_or(0.0, |p| p[1]));
    let clipped = clip_to_scale(&updated, reference);
    // The baseline's and tolerated level's early points are cut at the same height.
    let (baseline, tolerated) = match clipped.cap {
        Some(cap) => (
            baseline.iter().map(|[x, y]| [*x, y.min(cap)]).collect(),
            tolerated.iter().map(|[x, y]| [*x, y.min(cap)]).collect(),
        ),
        None => (baseline, tolerated),
    };
    let mut line = format!(
        "{}: updated {} · baseline {} {} · tolerated ×{}",
        m.metric,
        fmt(last.updated),
        fmt(last.baseline),
        m.unit,
        m.max_ratio
    );
    if let Some(cap) = clipped.cap {
        let _ = write!(
            line,
            " · axis cut at {cap:.2}, {OFF_SCALE_TIMES}× the level tolerated now: updated peaks off scale at {:.2}",
            clipped.peak
        );
    }
    // Wrapped, never cut: the cut and the peak are the line's point.
    ui.add(
        egui::Label::new(RichText::new(line).size(style.text_size).color(if over {
            tokens::BAD
        } else {
            tokens::OK
        }))
        .wrap(),
    );
    let updated = clipped.points;
    let off_scale = clipped.off_scale;
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
            if !off_scale.is_empty() {
                plot_ui.points(
                    egui_plot::Points::new("off scale", egui_plot::PlotPoints::from(off_scale))
                        .shape(egui_plot::MarkerShape::Up)
                        .filled(true)
                        .radius(style.text_size * 0.35)
                        .color(tokens::BAD),
                );
            }
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

/// The updated cohort's line with its y axis cut at [`OFF_SCALE_TIMES`] × `reference` (the
/// highest baseline or tolerated level) when it goes past that, so that an outlier does not
/// flatten the levels that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct Clipped {
    /// The line, clamped to the cut.
    pub points: Vec<[f64; 2]>,
    /// Where the line is past the cut, at the cut (drawn as markers).
    pub off_scale: Vec<[f64; 2]>,
    /// The cut, when there is one.
    pub cap: Option<f64>,
    /// The highest value of the line.
    pub peak: f64,
}

/// See [`Clipped`]. No cut when `reference` is 0 (nothing to keep readable) or the line stays
/// under [`CUT_WHEN_TIMES`] × `reference`.
pub fn clip_to_scale(line: &[[f64; 2]], reference: f64) -> Clipped {
    let peak = line.iter().map(|p| p[1]).fold(0.0, f64::max);
    let cap = OFF_SCALE_TIMES * reference;
    if reference <= 0.0 || !cap.is_finite() || peak <= CUT_WHEN_TIMES * reference {
        return Clipped {
            points: line.to_vec(),
            off_scale: Vec::new(),
            cap: None,
            peak,
        };
    }
    Clipped {
        points: line.iter().map(|[x, y]| [*x, y.min(cap)]).collect(),
        off_scale: line
            .iter()
            .filter(|[_, y]| *y > cap)
            .map(|[x, _]| [*x, cap])
            .collect(),
        cap: Some(cap),
        peak,
    }
}

/// How many state tiles fit a row `width` points wide, and each tile's width: every tile
/// stays on screen, wrapping into more rows rather than running off the edge (issue 19:
/// "reverted", the number that matters, was cut off in the default window).
pub fn tile_layout(n: usize, width: f32, scale: WallScale) -> (usize, f32) {
    let gap = scale.unit;
    let min_width = 16.0 * scale.unit;
    let fit = (((width + gap) / (min_width + gap)).floor() as usize).clamp(1, n.max(1));
    // As many rows as needed, the tiles shared evenly between them (4 and 3, not 5 and 2).
    let rows = n.max(1).div_ceil(fit);
    let per_row = n.max(1).div_ceil(rows);
    let tile = (width - gap * (per_row as f32 - 1.0)) / per_row as f32;
    (per_row, tile.max(1.0))
}

/// The fleet's state counts as tiles, a large number over its name.
fn fleet_counts_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, scale: WallScale) {
    let mode = cx.state.color_mode;
    let Some(model) = cx.model else {
        ui.label(RichText::new("Loading the fleet").size(scale.text()));
        return;
    };
    ui.label(
        RichText::new(format!("{} devices · {}", model.len(), mode.label()))
            .size(scale.text())
            .strong(),
    );
    let names = mode.class_names();
    let (per_row, tile_w) = tile_layout(names.len(), ui.available_width(), scale);
    let tile_h = scale.number() * 1.2 + scale.small() * 2.4 + scale.unit * 0.8;
    let gap = scale.unit;
    for (r, row_names) in names.chunks(per_row).enumerate() {
        let (rect, _) = ui.allocate_exact_size(
            egui::vec2(ui.available_width(), tile_h),
            egui::Sense::hover(),
        );
        for (c, name) in row_names.iter().enumerate() {
            let k = r * per_row + c;
            let color = tokens::class_color(mode, k);
            let min = rect.min + egui::vec2(c as f32 * (tile_w + gap), 0.0);
            let tile = egui::Rect::from_min_size(min, egui::vec2(tile_w, tile_h));
            ui.painter().rect_stroke(
                tile,
                scale.unit * 0.5,
                Stroke::new((scale.unit * 0.3).max(2.0), color),
                egui::StrokeKind::Inside,
            );
            let inner = tile.shrink(scale.unit * 0.8);
            // A child that takes no room in the row: the row's rect is the room.
            let mut child = ui.new_child(
                egui::UiBuilder::new()
                    .max_rect(inner)
                    .layout(egui::Layout::top_down(egui::Align::Min)),
            );
            child.spacing_mut().item_spacing.y = 0.0;
            child.label(
                RichText::new(cx.derived.counts_all[k].to_string())
                    .size(scale.number())
                    .strong()
                    .color(color),
            );
            child.add(egui::Label::new(RichText::new(*name).size(scale.small())).wrap());
        }
        ui.add_space(gap);
    }
}

/// The latest device events, aged on the fleet's own clock (said above them).
fn fleet_events_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui, scale: WallScale, wall_ms: i64) {
    let Some(model) = cx.model else {
        return;
    };
    let (now, words) = fleet_now(
        cx.now,
        cx.clock_runs,
        model.last_message,
        cx.rollouts.and_then(|b| b.as_ref().ok()),
        wall_ms,
    );
    ui.label(RichText::new("Latest events").size(scale.text()).strong());
    ui.label(RichText::new(words).size(scale.tiny()).color(tokens::MUTED));
    let mut any = false;
    for e in model.events.iter().rev().take(LATEST_EVENTS) {
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
            .size(scale.small())
            .monospace()
            .color(color),
        );
    }
    if !any {
        ui.label(RichText::new("No events yet.").size(scale.small()));
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

#[cfg(test)]
mod wall_tests {
    use super::*;
    use convoy_core::comms::{RecordEntry, story};
    use serde_json::json;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    /// A canary stopped by the crash gate on stratum T300/C 276 s after it started, as the
    /// engine records it.
    fn crash_stop() -> RolloutStory {
        let entry = |secs: i64, kind: &str, payload: serde_json::Value| RecordEntry {
            at: T0.plus_secs(secs),
            kind: kind.into(),
            cause: "gate".into(),
            payload,
        };
        let entries = vec![
            entry(
                0,
                "rollout.created",
                json!({"release": "r", "requested_by": "demo", "path": "standard",
                       "waves": [{"name": "canary", "devices": 50}, {"name": "fleet", "devices": 950}]}),
            ),
            entry(10, "wave.started", json!({"wave_started": {"wave": 0}})),
            entry(
                286,
                "gate.decision",
                json!({"wave": "canary", "outcome": "roll_back_wave", "report": {"findings": [
                    {"metric": "crash", "stratum": "T300/C", "status": "fail", "observed": 36548.2,
                     "baseline": 0.0, "p_value": 3.7e-4, "sample": 5,
                     "counts": {"updated_events": 13, "updated_device_hours": 0.2,
                                "baseline_events": 0, "baseline_device_hours": 0.2}},
                    {"metric": "boot_failure", "stratum": null, "status": "fail", "observed": 0.4,
                     "baseline": 0.005, "p_value": 1e-9, "sample": 10}]}}),
            ),
            entry(
                286,
                "rollback.started",
                json!({"rollback_started": {"scope": {"wave": 0}, "devices": [1, 2, 3]}}),
            ),
            entry(300, "rollback.finished", json!({})),
        ];
        story("demo", &entries).expect("a story")
    }

    #[test]
    fn the_evidence_is_said_in_plain_words_before_the_statistics() {
        let s = crash_stop();
        let stop = s.stops.last().expect("a stop");
        let span = stop_span(&s, stop).expect("the canary started");
        assert_eq!(span, (276, "canary".to_owned()));
        let words: Vec<String> = stop
            .figures
            .iter()
            .map(|f| plain_evidence(f, Some((span.0, &span.1))))
            .collect();
        assert_eq!(
            words,
            [
                "13 crashes on 5 T300 rev C devices in 4.6 min since wave canary started; normal is about 0",
                "4 of 10 devices failed to boot in 4.6 min since wave canary started (40%); normal is about 0.5%",
            ]
        );
        // The statistics stay, second.
        assert!(
            stop.findings[0].contains("p = 3.70e-4"),
            "{:?}",
            stop.findings
        );
        let mean = FindingFigures {
            metric: "reconnect_time".into(),
            observed: 25.0,
            baseline: 8.0,
            sample: 12,
            ..FindingFigures::default()
        };
        assert_eq!(
            plain_evidence(&mean, None),
            "reconnect time averaged 25.00 on 12 devices; normal is about 8.00"
        );
    }

    #[test]
    fn the_verdict_says_what_happened_and_what_it_waits_for() {
        let s = crash_stop();
        let state = state_of(&s);
        assert_eq!(state, WallState::Paused);
        assert!(state.alarm());
        assert_eq!(
            verdict(&s, state, T0.plus_secs(300 + 150)),
            "Wave canary rolled back 2 min ago by the health gate (3 devices asked to go back); waiting for a decision"
        );
    }

    #[test]
    fn ended_rollouts_leave_the_wall_after_an_hour_on_their_clock() {
        let s = crash_stop();
        assert!(is_active(&s, T0.plus_secs(10 * 86_400)), "not ended: stays");
        let mut done = s.clone();
        done.ending = Some(Ending::Completed(T0.plus_secs(400)));
        assert!(is_active(&done, T0.plus_secs(400 + RECENT_END_SECS)));
        assert!(!is_active(&done, T0.plus_secs(401 + RECENT_END_SECS)));
    }

    #[test]
    fn an_outlier_is_cut_at_a_multiple_of_the_tolerated_level_and_marked() {
        let line = [[0.0, 0.0], [1.0, 30.0], [2.0, 4184.6], [3.0, 50.0]];
        let c = clip_to_scale(&line, 25.0);
        assert_eq!(c.cap, Some(100.0));
        assert_eq!(c.peak, 4184.6);
        assert_eq!(
            c.points,
            [[0.0, 0.0], [1.0, 30.0], [2.0, 100.0], [3.0, 50.0]]
        );
        assert_eq!(c.off_scale, [[2.0, 100.0]]);
        // Under ten times the level, or with nothing to keep readable, the line is drawn as
        // it is.
        assert_eq!(clip_to_scale(&line[..2], 25.0).cap, None);
        assert_eq!(clip_to_scale(&[[0.0, 249.0]], 25.0).cap, None);
        assert_eq!(clip_to_scale(&line, 0.0).points, line);
    }

    #[test]
    fn state_tiles_wrap_rather_than_run_off_the_screen() {
        let scale = WallScale::for_height(800.0);
        let (per_row, w) = tile_layout(7, 620.0, scale);
        assert!(per_row < 7, "{per_row}");
        assert!(per_row as f32 * w + (per_row as f32 - 1.0) * scale.unit <= 620.0 + 1e-3);
        assert_eq!(tile_layout(7, 10.0, scale).0, 1);
        // Sizes follow the screen's height: 4K doubles 1080p.
        let (hd, uhd) = (WallScale::for_height(1080.0), WallScale::for_height(2160.0));
        assert!((uhd.headline() - 2.0 * hd.headline()).abs() < 1e-3);
        assert!(hd.headline() >= 0.05 * 1080.0);
    }

    #[test]
    fn device_ages_use_the_fleet_s_clock_when_it_runs_ahead() {
        let now = T0;
        // Reports on the screen's clock: the screen's clock.
        let (t, words) = fleet_now(now, true, Some(now.plus_secs(-5)), None, 0);
        assert_eq!(t, now);
        assert!(words.contains("screen's clock"), "{words}");
        // A simulated fleet hours ahead, with its rollout clock known: that clock.
        let mut board = RolloutBoard::default();
        board.clocks.insert(
            "demo".into(),
            crate::store::events::RunClock {
                rollout_id: "demo".into(),
                release_id: "r".into(),
                clock_start: now,
                wall_began_ms: 0,
                time_scale: 60.0,
            },
        );
        // 150 wall seconds later the simulated clock is 2.5 h ahead.
        let newest = now.plus_secs(150 * 60 - 3);
        let (t, words) = fleet_now(
            now.plus_secs(150),
            true,
            Some(newest),
            Some(&board),
            150_000,
        );
        assert_eq!(t, now.plus_secs(150 * 60));
        assert!(words.contains("simulated clock (60x)"), "{words}");
        // Without a known clock: the newest report.
        let (t, _) = fleet_now(now.plus_secs(150), true, Some(newest), None, 150_000);
        assert_eq!(t, newest);
    }
}
