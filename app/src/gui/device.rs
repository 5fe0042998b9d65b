//! Device detail: identity, component versions, A/B slot, link and power, update state and
//! progress, failures, the latest telemetry and this device's recent events.
//!
//! Not built yet: the device's update history and timeline from the cache (`device_events`)
//! and telemetry plots; the view says so.

use egui::RichText;

use crate::gui::app::{ConsoleApp, UiCommand, age};
use crate::gui::model::state_name;
use crate::gui::tokens;

/// Draws the device view.
pub fn device_ui(app: &mut ConsoleApp, ui: &mut egui::Ui) {
    let Some(model) = app.model.as_ref() else {
        return;
    };
    let Some(i) = app.selected.filter(|&i| i < model.len()) else {
        ui.add_space(20.0);
        ui.label("No device selected: click a vehicle on the map or a device in the table.");
        return;
    };
    let now = app.now();
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
                    ui.label(name);
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
        ui.label(
            RichText::new("Update history from the cache and telemetry plots: not built yet.")
                .small()
                .color(tokens::MUTED),
        );
    });
    for c in commands {
        app.send(c);
    }
}
