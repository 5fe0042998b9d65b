//! Console frame time, headless: the real `ConsoleApp` on synthetic fleets of 10,000, 100,000
//! and 1,000,000 devices, one UI pass per frame through `egui::Context::run_ui` (layout,
//! hit-testing and tessellation input; no renderer, no GPU).
//!
//! Run with `cargo run --release -p convoy --example bench_gui`. Prints a Markdown table:
//! steady frames (nothing changed: what a dispatcher's console does all day) for the map at
//! world zoom and zoomed in on a city, and for the table; then the one-off cost of a data
//! change (classes, filter, sort) and of a zoom-level change (map grid rebuild).

use convoy::gui::aggregate::{Grid, cell_size_for};
use convoy::gui::app::{Derived, View};
use convoy::gui::{Backend, Clock, ConsoleApp};
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
        let (backend, _feed) = Backend::fixture(fleet, "bench.db".into());
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

        // One-off costs: a data change (classes, filter with a search, sort by last seen) and a
        // zoom-level change (grid rebuild).
        let Some(model) = app.model.as_ref() else {
            continue;
        };
        let mut state = app.state.clone();
        state.filter.text = "eu".into();
        state.sort = convoy::gui::query::Column::LastSeen;
        let mut derived = Derived::default();
        let t = Instant::now();
        derived.refresh(model, &state, NOW);
        let refresh_ms = t.elapsed().as_secs_f64() * 1000.0;
        let all: Vec<u32> = (0..model.len() as u32).collect();
        let t = Instant::now();
        let grid = Grid::build(
            &model.map_x,
            &model.map_y,
            &derived.classes,
            &all,
            cell_size_for(8, 64.0),
        );
        let grid_ms = t.elapsed().as_secs_f64() * 1000.0;
        oneoff.push((
            n,
            refresh_ms,
            derived.filtered.len(),
            grid_ms,
            grid.cells().len(),
        ));
    }
    println!();
    println!(
        "| devices | data change: classes + search + sort | matching | zoom change: grid rebuild | cells |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (n, refresh_ms, matching, grid_ms, cells) in oneoff {
        println!("| {n} | {refresh_ms:.1} ms | {matching} | {grid_ms:.1} ms | {cells} |");
    }
}
