//! Device detail: identity, component versions, A/B slot, link and power, update state and
//! progress, failures, the latest telemetry, this device's recent events in this session, and
//! its update history from the cache (`device_events`, newest first).
//!
//! It also plots the device's hourly telemetry rollups from the cache over the last week
//! (battery level, crashes and reconnects per hour) with egui_plot; [`plot_points`] turns
//! rollup buckets into plot points in plain, tested code.
//!
//! The history and the rollups are read by the backend's history worker, never here: the view
//! shows "loading…" until the answer arrives.

use egui::RichText;

use convoy_core::time::Timestamp;

use crate::gui::app::{HistoryState, TelemetryState, UiCommand, age};
use crate::gui::backend::{HISTORY_LIMIT, TELEMETRY_WINDOW_SECS, TelemetrySeries};
use crate::gui::model::state_name;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};
use crate::store::telemetry::RollupPoint;

/// Draws the device view.
pub fn device_ui(cx: &ViewContext<'_>, out: &mut Commands, ui: &mut egui::Ui) {
    let Some(model) = cx.model else {
        return;
    };
    let Some(i) = cx.selected.filter(|&i| i < model.len()) else {
        ui.add_space(20.0);
        ui.label("No device selected: click a vehicle on the map or a device in the table.");
        return;
    };
    // Ages on the clock the device's own times are on (a simulated fleet's runs ahead of the
    // screen's), said under the heading; the telemetry plots stay on the screen's clock, as the
    // rollups they plot are.
    let (now, clock_words) = crate::gui::warroom::fleet_now(
        cx.now,
        cx.clock_runs,
        model.last_message,
        cx.rollouts.and_then(|b| b.as_ref().ok()),
        crate::alerts::deliver::wall_ms(),
    );
    let d = &model.fleet.devices[i];
    let live = &model.live[i];
    let mut commands = Vec::new();
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading(RichText::new(&d.id).strong());
            if ui.button("Show on map").clicked() {
                commands.push(UiCommand::FocusMap {
                    lat: d.position.lat,
                    lon: d.position.lon,
                    zoom: 11.0,
                });
            }
        });
        ui.label(format!(
            "{} · hardware revision {} · {}",
            d.model, d.hw_rev, d.device_class
        ));
        ui.label(RichText::new(format!("Times: {clock_words}")).color(tokens::MUTED));
        ui.add_space(8.0);
        egui::Grid::new("device-facts")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                let fact = |ui: &mut egui::Ui, k: &str, v: String| {
                    ui.label(RichText::new(k).strong());
                    ui.label(v);
                    ui.end_row();
                };
                fact(ui, "Region / depot", format!("{} / {}", d.region, d.depot));
                fact(
                    ui,
                    "Position",
                    format!("{:.4}, {:.4}", d.position.lat, d.position.lon),
                );
                fact(
                    ui,
                    "Active slot (A/B)",
                    format!(
                        "{} (updates go to {})",
                        d.active_slot,
                        d.active_slot.other()
                    ),
                );
                fact(
                    ui,
                    "Last seen",
                    format!("{} ({})", d.last_seen, age(now.secs_since(d.last_seen))),
                );
                fact(
                    ui,
                    "Connectivity",
                    format!(
                        "{}{}",
                        d.connectivity,
                        if d.metered { ", metered" } else { "" }
                    ),
                );
                fact(
                    ui,
                    "Power / battery",
                    format!(
                        "{} / {}",
                        d.power,
                        d.battery_pct
                            .map_or("no battery".to_owned(), |b| format!("{b} %"))
                    ),
                );
                fact(
                    ui,
                    "Free storage",
                    format!("{:.1} MB", d.free_storage_bytes as f64 / 1e6),
                );
                fact(ui, "Customer tier", d.customer_tier.to_string());
                fact(ui, "Redundancy", d.redundancy.to_string());
                fact(
                    ui,
                    "Failed update attempts",
                    d.failed_update_attempts.to_string(),
                );
            });
        ui.add_space(10.0);
        ui.label(RichText::new("Components").strong());
        egui::Grid::new("device-components")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                for (name, version) in d.components.iter() {
                    ui.label(name.as_str());
                    ui.label(version.to_string());
                    ui.end_row();
                }
            });
        if !d.tags.is_empty() {
            ui.add_space(6.0);
            let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ui.label(format!("Tags: {}", tags.join(", ")));
        }
        ui.add_space(10.0);
        ui.label(RichText::new("Update").strong());
        match live.update_state {
            None => {
                ui.label("No status report from this device in this session.");
            }
            Some(s) => {
                ui.label(format!(
                    "State: {}{}",
                    state_name(s),
                    live.release_id
                        .as_ref()
                        .map_or(String::new(), |r| format!(" (release {r})"))
                ));
                if let Some(p) = live.progress_pct {
                    ui.add(
                        egui::ProgressBar::new(f32::from(p) / 100.0)
                            .text(format!("{p} %"))
                            .desired_width(300.0),
                    );
                }
                if let Some(r) = &live.reason {
                    ui.colored_label(tokens::BAD, format!("Reason: {r}"));
                }
            }
        }
        ui.label(format!("Crashes this session: {}", live.crashes));
        match &live.last_telemetry {
            Some((t, text)) => ui.label(format!(
                "Last telemetry: {text} ({})",
                age(now.secs_since(*t))
            )),
            None => ui.label("Last telemetry: none this session"),
        };
        ui.add_space(10.0);
        ui.label(RichText::new("Recent events").strong());
        let mut any = false;
        for e in model
            .events
            .iter()
            .rev()
            .filter(|e| e.device_id == d.id)
            .take(20)
        {
            any = true;
            ui.label(format!("{} {}", age(now.secs_since(e.at)), e.text));
        }
        if !any {
            ui.label(RichText::new("None in this session.").color(tokens::MUTED));
        }
        ui.add_space(10.0);
        ui.horizontal(|ui| {
            ui.label(RichText::new("Update history (cache)").strong());
            if ui
                .small_button("Reload history")
                .on_hover_text("Read this device's events from the cache again")
                .clicked()
            {
                commands.push(UiCommand::ReloadHistory);
            }
        });
        match cx.history.filter(|h| h.device_id == d.id) {
            None => {
                // Not asked for this device yet (e.g. the view was restored): ask now.
                commands.push(UiCommand::ReloadHistory);
                ui.label(RichText::new("loading…").color(tokens::MUTED));
            }
            Some(h) => match &h.state {
                HistoryState::Loading => {
                    ui.label(RichText::new("loading…").color(tokens::MUTED));
                }
                HistoryState::Failed(why) => {
                    ui.colored_label(tokens::BAD, format!("Could not read the history: {why}"));
                }
                HistoryState::Loaded(rows) if rows.is_empty() => {
                    ui.label(RichText::new("no history in the cache").color(tokens::MUTED));
                }
                HistoryState::Loaded(rows) => {
                    if rows.len() >= HISTORY_LIMIT {
                        ui.label(
                            RichText::new(format!("The newest {HISTORY_LIMIT} events:"))
                                .small()
                                .color(tokens::MUTED),
                        );
                    }
                    egui::Grid::new("device-history")
                        .num_columns(4)
                        .striped(true)
                        .show(ui, |ui| {
                            for title in ["Time", "Event", "Rollout", "Details"] {
                                ui.label(RichText::new(title).strong());
                            }
                            ui.end_row();
                            for e in rows {
                                ui.label(e.time.to_rfc3339())
                                    .on_hover_text(age(now.secs_since(e.time)));
                                ui.label(&e.kind);
                                ui.label(e.rollout_id.as_deref().unwrap_or("-"));
                                ui.label(payload_summary(&e.payload))
                                    .on_hover_text(&e.payload);
                                ui.end_row();
                            }
                        });
                }
            },
        }
        ui.add_space(10.0);
        ui.label(RichText::new("Telemetry (cache, last 7 days)").strong());
        match cx.telemetry.filter(|t| t.device_id == d.id) {
            None => {
                ui.label(RichText::new("loading…").color(tokens::MUTED));
            }
            Some(t) => match &t.state {
                TelemetryState::Loading => {
                    ui.label(RichText::new("loading…").color(tokens::MUTED));
                }
                TelemetryState::Failed(why) => {
                    ui.colored_label(tokens::BAD, format!("Could not read the telemetry: {why}"));
                }
                TelemetryState::Loaded(series) => {
                    for s in series {
                        telemetry_plot_ui(ui, s, cx.now);
                    }
                }
            },
        }
    });
    out.extend(commands);
}

/// How a metric is plotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotKind {
    /// The hourly mean, as a line (a level, such as battery).
    Mean,
    /// The hourly total, as bars (counts, such as crashes).
    PerHour,
}

/// The title and kind of the plot of `metric`.
pub fn plot_style(metric: &str) -> (&'static str, PlotKind) {
    match metric {
        "battery_pct" => ("Battery (%), hourly mean", PlotKind::Mean),
        "crash_count" => ("Crashes per hour", PlotKind::PerHour),
        "reconnect_count" => ("Reconnects per hour", PlotKind::PerHour),
        _ => ("Telemetry", PlotKind::Mean),
    }
}

/// Plot points of hourly rollup buckets: x is the bucket's start in hours before `now`
/// (negative), y the bucket's mean, or its total (mean times count) for [`PlotKind::PerHour`].
pub fn plot_points(points: &[RollupPoint], now: Timestamp, kind: PlotKind) -> Vec<[f64; 2]> {
    points
        .iter()
        .map(|p| {
            let x = (p.bucket - now.secs()) as f64 / 3600.0;
            let y = match kind {
                PlotKind::Mean => p.mean,
                PlotKind::PerHour => (p.mean * p.count as f64 * 1e6).round() / 1e6,
            };
            [x, y]
        })
        .collect()
}

/// One metric's plot, or a line saying the cache has none.
fn telemetry_plot_ui(ui: &mut egui::Ui, series: &TelemetrySeries, now: Timestamp) {
    let (title, kind) = plot_style(series.metric);
    ui.label(title);
    if series.points.is_empty() {
        ui.label(
            RichText::new(format!(
                "No {} samples in the cache in the last 7 days.",
                series.metric
            ))
            .small()
            .color(tokens::MUTED),
        );
        return;
    }
    let points = plot_points(&series.points, now, kind);
    let window_hours = TELEMETRY_WINDOW_SECS as f64 / 3600.0;
    let plot = egui_plot::Plot::new(("telemetry", series.metric))
        .height(110.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .include_x(-window_hours)
        .include_x(0.0)
        .include_y(0.0)
        .x_axis_label("hours before now");
    let plot = if kind == PlotKind::Mean && series.metric == "battery_pct" {
        plot.include_y(100.0)
    } else {
        plot
    };
    let response = plot.show(ui, |plot_ui| match kind {
        PlotKind::Mean => plot_ui.line(
            egui_plot::Line::new(title, egui_plot::PlotPoints::from(points))
                .color(tokens::OK)
                .width(2.0),
        ),
        PlotKind::PerHour => {
            let bars = points
                .iter()
                .map(|p| egui_plot::Bar::new(p[0] + 0.5, p[1]).width(0.9))
                .collect();
            plot_ui.bar_chart(egui_plot::BarChart::new(title, bars).color(tokens::WARN));
        }
    });
    let label = format!("{title} plot");
    response
        .response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &label));
}

/// The longest payload summary shown in a history row; the full JSON is on hover.
const SUMMARY_CHARS: usize = 80;

/// A short, readable form of an event's JSON payload: an object's fields as `key=value`
/// (strings unquoted, nested values compact), anything else as its compact JSON, at most
/// [`SUMMARY_CHARS`] characters with an ellipsis. Text that is not JSON is shown as it is.
pub fn payload_summary(payload: &str) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(fields)) if fields.is_empty() => "-".to_owned(),
        Ok(serde_json::Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Ok(serde_json::Value::Null) => "-".to_owned(),
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => payload.to_owned(),
    };
    if text.chars().count() <= SUMMARY_CHARS {
        return text;
    }
    let mut short: String = text.chars().take(SUMMARY_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_summarise_as_fields() {
        assert_eq!(
            payload_summary(r#"{"release":"t300-fw-2.5.0","progress_pct":40}"#),
            // serde_json keeps keys sorted.
            "progress_pct=40, release=t300-fw-2.5.0"
        );
        assert_eq!(payload_summary("{}"), "-");
        assert_eq!(payload_summary("null"), "-");
        assert_eq!(payload_summary(r#"{"a":{"b":[1,2]}}"#), r#"a={"b":[1,2]}"#);
        assert_eq!(payload_summary("[1,2]"), "[1,2]");
        assert_eq!(payload_summary("not json"), "not json");
    }

    fn point(bucket: i64, count: u64, mean: f64) -> RollupPoint {
        RollupPoint {
            bucket,
            count,
            mean,
            min: mean,
            max: mean,
        }
    }

    #[test]
    fn rollups_plot_as_hours_before_now() {
        let now = Timestamp::from_secs(1_800_000_000);
        let hour = |h: i64| now.secs() - h * 3600;
        let rollups = [point(hour(5), 4, 80.5), point(hour(1), 2, 1.5)];
        assert_eq!(
            plot_points(&rollups, now, PlotKind::Mean),
            [[-5.0, 80.5], [-1.0, 1.5]]
        );
        // Per hour: the bucket's total, mean times count.
        assert_eq!(
            plot_points(&rollups, now, PlotKind::PerHour),
            [[-5.0, 322.0], [-1.0, 3.0]]
        );
        // A bucket that started 90 minutes ago.
        assert_eq!(
            plot_points(&[point(now.secs() - 5400, 1, 2.0)], now, PlotKind::Mean),
            [[-1.5, 2.0]]
        );
        assert!(plot_points(&[], now, PlotKind::Mean).is_empty());
        assert_eq!(plot_style("crash_count").1, PlotKind::PerHour);
        assert_eq!(plot_style("battery_pct").1, PlotKind::Mean);
    }

    #[test]
    fn long_payloads_are_cut_with_an_ellipsis() {
        let long = format!(r#"{{"reason":"{}"}}"#, "é".repeat(200));
        let s = payload_summary(&long);
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.starts_with("reason=éé"));
        assert!(s.ends_with('…'));
    }
}
