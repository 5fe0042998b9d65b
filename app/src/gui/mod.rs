//! The desktop console (egui, eframe with glow): a fleet map, a virtualised fleet table, device
//! detail, cohort summaries, the war-room wall; finding intake with its risk scorecard
//! ([`findings`]), signed releases ([`releases`]), rollout plans ([`planner`]), requests and
//! approvals to dispatch ([`approvals`]), the rollout monitor that steers a running rollout
//! ([`monitor`], through [`steer`]), reports ([`report`]), and the console attached to a
//! `convoy serve` ([`remote`]).
//!
//! Layout: [`app`] holds the state and the shell, applies commands once per frame and starts the
//! work they ask for; each view is a `*_ui` function over its own state, the narrow
//! [`view::ViewContext`] it reads and the [`view::Commands`] it sends (tests/it/tidy.rs checks
//! that no view takes the whole `ConsoleApp`, starts a thread or opens a file);
//! [`backend`] does everything slow or networked on other threads and reports through a bounded
//! channel; [`model`] is the fleet as the console knows it; [`query`] and [`aggregate`] compute
//! filters, sort orders, summaries and map grids in plain, tested code; [`basemap`] draws the
//! offline basemap tiles and [`tiles`] reads MBTiles files and online tile servers over it.
//!
//! Not yet as ARCHITECTURE.md wants it (issue 17): a view's work still runs on threads its own
//! state starts (the console calls them in response to a command), not through `ops/` rooms for
//! requests and runs; the scoring policy file is read and written on the UI thread.
//! `docs/CONSOLE.md` lists what the console does and what is not built.

pub mod aggregate;
pub mod alerts;
pub mod app;
pub mod approvals;
pub mod backend;
pub mod basemap;
pub mod cohorts;
pub mod demo;
pub mod derive;
pub mod device;
pub mod findings;
pub mod map;
pub mod model;
pub mod monitor;
pub mod palette;
pub mod planner;
pub mod query;
pub mod releases;
pub mod remote;
pub mod report;
pub mod steer;
pub mod table;
pub mod tiles;
pub mod tokens;
pub mod view;
pub mod warroom;
pub mod worker;

pub use app::{Clock, ConsoleApp, UiCommand, UiState, View};
pub use backend::{Backend, BackendEvent, DemoOptions, LinkStatus};

/// Whether a display server is reachable by name: `DISPLAY` (X11) or `WAYLAND_DISPLAY`.
pub fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Opens the console window on `backend` and runs until it is closed.
/// `start` overrides the view the last run saved (a wall display starts in the war room);
/// `tiles` draws an MBTiles file or a tile server over the offline basemap.
pub fn run_native(
    backend: Backend,
    start: Option<View>,
    tiles: Option<tiles::TileSpec>,
) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Convoy")
            .with_app_id("convoy")
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([800.0, 500.0]),
        renderer: eframe::Renderer::Glow,
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "convoy",
        options,
        Box::new(move |cc| {
            let mut app = ConsoleApp::new(&cc.egui_ctx, cc.storage, backend, Clock::System);
            if let Some(view) = start {
                app.send(UiCommand::Show(view));
            }
            if let Some(spec) = tiles {
                app.map.set_tile_source(spec);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the console window: {e}"))
}
