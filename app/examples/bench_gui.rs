//! Console frame time, headless: the real `ConsoleApp` on synthetic fleets of 10,000, 100,000
//! and 1,000,000 devices, one UI pass per frame through `egui::Context::run_ui` (layout,
//! hit-testing and tessellation input; no renderer, no GPU).
//!
//! Run with `cargo run --release -p convoy --example bench_gui`. Prints a Markdown table:
//! steady frames (nothing changed: what a dispatcher's console does all day) for the map at
//! world zoom and zoomed in on a city, and for the table; then what a data change and a query
//! change cost: the UI thread's frame in which it arrives, the frame in which the derive
//! worker's answer is swapped in, and the worker's time to that answer; and the same for a
//! zoom-level change on the map and for opening the cohort view, which the worker answers by
//! binning or summarising its last result.

use convoy::gui::app::{DeriveMode, View};
use convoy::gui::{Backend, BackendEvent, Clock, ConsoleApp};
use convoy::link::protocol::{DeviceStatus, Inbound, UpdateState, UpdateStatus};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::time::Instant;

const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
const FRAMES: usize = 60;

fn input(pointer: Option<egui::Pos2>) -> egui::RawInput {
    let mut raw = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1600.0, 1000.0),
        )),
        ..egui::RawInput::default()
    };
    if let Some(p) = pointer {
        raw.events.push(egui::Event::PointerMoved(p));
    }
    raw
}

fn frame(ctx: &egui::Context, app: &mut ConsoleApp, pointer: Option<egui::Pos2>) -> f64 {
    let start = Instant::now();
    let out = ctx.run_ui(input(pointer), |ui| {
        app.logic(ui.ctx());
        app.ui(ui);
    });
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(out);
    ms
}

/// Median and 95th percentile of `FRAMES` frames, after warm-up frames.
fn measure(ctx: &egui::Context, app: &mut ConsoleApp, pointer: Option<egui::Pos2>) -> (f64, f64) {
    for _ in 0..10 {
        frame(ctx, app, pointer);
    }
    // Give the basemap worker time to finish the visible tiles, then upload them.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for _ in 0..5 {
        frame(ctx, app, pointer);
    }
    let mut times: Vec<f64> = (0..FRAMES).map(|_| frame(ctx, app, pointer)).collect();
    times.sort_by(f64::total_cmp);
    (times[FRAMES / 2], times[FRAMES * 95 / 100])
}

fn main() {
    println!("| devices | view | median ms/frame | p95 ms/frame | shapes drawn from |");
    println!("| ---: | --- | ---: | ---: | --- |");
    let mut oneoff = Vec::new();
    for n in [10_000usize, 100_000, 1_000_000] {
        let fleet = generate(&SynthOptions {
            devices: n,
            seed: 7,
            now: NOW,
        });
        let (backend, feed) = Backend::fixture(fleet, "bench.db".into());
        let ctx = egui::Context::default();
        let mut app = ConsoleApp::new(&ctx, None, backend, Clock::Fixed(NOW));
        let center = Some(egui::pos2(800.0, 520.0));

        app.send(convoy::gui::UiCommand::FocusMap {
            lat: 45.0,
            lon: -30.0,
            zoom: 3.0,
        });
        let (med, p95) = measure(&ctx, &mut app, center);
        println!(
            "| {n} | map, world (zoom 3) | {med:.2} | {p95:.2} | {} grid cells |",
            app.map.grid.cells().len()
        );

        app.send(convoy::gui::UiCommand::FocusMap {
            lat: 52.52,
            lon: 13.405,
            zoom: 11.0,
        });
        let (med, p95) = measure(&ctx, &mut app, center);
        println!(
            "| {n} | map, Berlin (zoom 11) | {med:.2} | {p95:.2} | {} grid cells |",
            app.map.grid.cells().len()
        );

        app.send(convoy::gui::UiCommand::Show(View::Table));
        let (med, p95) = measure(&ctx, &mut app, center);
        println!(
            "| {n} | table | {med:.2} | {p95:.2} | {} rows, virtualised |",
            app.derived.order.len()
        );

        // A data change and a query change, with the worker in the background as on the system
        // clock. Both on the map at world zoom, where the answer also rebuilds the grid, and on
        // the table, where it does not.
        app.derive_mode = DeriveMode::Background;
        let mut rows = Vec::new();
        for (view, label) in [(View::Map, "map, world"), (View::Table, "table")] {
            if view == View::Map {
                app.send(convoy::gui::UiCommand::FocusMap {
                    lat: 45.0,
                    lon: -30.0,
                    zoom: 3.0,
                });
            } else {
                app.send(convoy::gui::UiCommand::Show(view));
            }
            frame(&ctx, &mut app, center);
            settle(&ctx, &mut app, center);
            let data = change(&ctx, &mut app, center, |app, k| {
                let status = status_of(app, k);
                assert!(feed.send(status), "the fixture feed takes the status");
            });
            let query = change(&ctx, &mut app, center, |app, _| {
                // Always a different query from the one shown.
                app.state.filter.text = if app.state.filter.text.is_empty() {
                    "eu".into()
                } else {
                    String::new()
                };
                app.state.sort = convoy::gui::query::Column::LastSeen;
            });
            rows.push((label, data, query));
        }
        // A zoom-level change (world zoom 3 and 5 in turn) and opening the cohort view (from
        // the table each time): the worker bins or summarises its last result.
        app.state.filter.text.clear();
        app.send(convoy::gui::UiCommand::FocusMap {
            lat: 45.0,
            lon: -30.0,
            zoom: 3.0,
        });
        frame(&ctx, &mut app, center);
        settle(&ctx, &mut app, center);
        let zoom = change(&ctx, &mut app, center, |app, k| {
            app.send(convoy::gui::UiCommand::FocusMap {
                lat: 45.0,
                lon: -30.0,
                zoom: if k % 2 == 0 { 5.0 } else { 3.0 },
            });
        });
        let cohorts = change_with(
            &ctx,
            &mut app,
            center,
            |ctx, app| {
                app.send(convoy::gui::UiCommand::Show(View::Table));
                frame(ctx, app, center);
                settle(ctx, app, center);
            },
            |app, _| app.send(convoy::gui::UiCommand::Show(View::Cohorts)),
        );
        oneoff.push((n, rows, zoom, cohorts));
    }
    println!();
    println!(
        "| devices | view | change | UI frame it arrives in, ms | UI frame the answer lands in, ms | worker compute, ms | to the answer on screen, ms |"
    );
    println!("| ---: | --- | --- | ---: | ---: | ---: | ---: |");
    for (n, rows, _, _) in &oneoff {
        for (label, data, query) in rows {
            for (what, c) in [("status message", data), ("search + sort", query)] {
                println!(
                    "| {n} | {label} | {what} | {:.2} | {:.2} | {:.1} | {:.1} |",
                    c.arrive_ms, c.land_ms, c.compute_ms, c.latency_ms
                );
            }
        }
    }
    println!();
    println!(
        "| devices | change | UI frame it arrives in, ms | UI frame the answer lands in, ms | worker compute, ms | to the answer on screen, ms |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: |");
    for (n, _, zoom, cohorts) in &oneoff {
        for (what, c) in [
            ("map zoom level (3 and 5 in turn)", zoom),
            ("open the cohort view", cohorts),
        ] {
            println!(
                "| {n} | {what} | {:.2} | {:.2} | {:.1} | {:.1} |",
                c.arrive_ms, c.land_ms, c.compute_ms, c.latency_ms
            );
        }
    }
}

/// Medians over `CHANGES` changes, in milliseconds.
#[allow(clippy::struct_field_names)]
struct Change {
    /// The UI frame in which the change arrives (and is sent to the worker).
    arrive_ms: f64,
    /// The UI frame in which the worker's answer is swapped in.
    land_ms: f64,
    /// The worker's derivation.
    compute_ms: f64,
    /// From the start of the arrival frame to the end of the frame that shows the answer.
    latency_ms: f64,
}

const CHANGES: usize = 9;

/// Frames until the worker has nothing left to answer.
fn settle(ctx: &egui::Context, app: &mut ConsoleApp, pointer: Option<egui::Pos2>) {
    let mut last = app.derived.generation;
    let mut quiet = 0;
    while quiet < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        frame(ctx, app, pointer);
        if app.derived.generation == last {
            quiet += 1;
        } else {
            last = app.derived.generation;
            quiet = 0;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Makes `CHANGES` changes with `make`, each followed by frames (as a 60 Hz UI polls, but
/// without waiting out the frame) until the answer is on screen.
fn change(
    ctx: &egui::Context,
    app: &mut ConsoleApp,
    pointer: Option<egui::Pos2>,
    make: impl Fn(&mut ConsoleApp, usize),
) -> Change {
    change_with(ctx, app, pointer, |_, _| {}, make)
}

/// [`change`], with `prepare` run (unmeasured) before each change.
fn change_with(
    ctx: &egui::Context,
    app: &mut ConsoleApp,
    pointer: Option<egui::Pos2>,
    prepare: impl Fn(&egui::Context, &mut ConsoleApp),
    make: impl Fn(&mut ConsoleApp, usize),
) -> Change {
    let (mut arrive, mut land, mut compute, mut latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..CHANGES {
        prepare(ctx, app);
        let generation = app.derived.generation;
        make(app, k);
        let start = Instant::now();
        arrive.push(frame(ctx, app, pointer));
        loop {
            if app.derived.generation != generation {
                // Answered within the arrival frame's own `logic` (a tiny fleet): count that
                // frame as the one it landed in.
                land.push(arrive[arrive.len() - 1]);
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
            let ms = frame(ctx, app, pointer);
            if app.derived.generation != generation {
                land.push(ms);
                break;
            }
        }
        latency.push(start.elapsed().as_secs_f64() * 1000.0);
        compute.push(app.derive_compute.as_secs_f64() * 1000.0);
        settle(ctx, app, pointer);
    }
    Change {
        arrive_ms: median(arrive),
        land_ms: median(land),
        compute_ms: median(compute),
        latency_ms: median(latency),
    }
}

/// A status report that moves device `k`'s update state on, as the link would deliver it.
fn status_of(app: &ConsoleApp, k: usize) -> BackendEvent {
    let model = app.model.as_ref().expect("the fleet is loaded");
    let d = &model.fleet.devices[(k * 7919) % model.len()];
    let state = [
        UpdateState::Downloading,
        UpdateState::Installing,
        UpdateState::Confirmed,
    ][k % 3];
    BackendEvent::Inbound(Inbound::Status(DeviceStatus {
        v: 1,
        device_id: d.id.clone(),
        ts: NOW,
        active_slot: d.active_slot,
        components: d.components.clone(),
        update: UpdateStatus {
            state,
            release_id: Some("fw-2.5.0".into()),
            command_id: None,
            progress_pct: None,
            reason: None,
        },
        battery_pct: d.battery_pct,
        power: d.power,
        connectivity: d.connectivity,
        metered: d.metered,
        free_storage_bytes: d.free_storage_bytes,
        position: Some(d.position),
    }))
}
