//! Issue 22's in-process figures at a million devices (docs/BENCHMARKS.md, "Issue 22: a million
//! devices"). `tools/bench-fleet.sh` runs it beside the whole-process figures of the `convoy`
//! binary; alone:
//!
//! ```sh
//! cargo run --release -p convoy --example bench_million -- core [DEVICES]
//! cargo run --release -p convoy --example bench_million -- console [DEVICES]
//! cargo run --release -p convoy --example bench_million -- serve [DEVICES]
//! cargo run --release -p convoy --example bench_million -- open [DEVICES]
//! cargo run --release -p convoy --example bench_million -- grid [DEVICES]
//! ```
//!
//! - `core`: the plan itself (`plan::plan`, the fixture release `t300-fw-2.5.0` with the
//!   fixture catalog and the default policy) and scoring itself (`risk::score`, the fixture
//!   finding `t300-remote-rce`, default policy), fleet generation not timed; best of three.
//! - `console`: the real `ConsoleApp` headless (`egui::Context::run_ui`, no renderer), its
//!   derive worker answering inside the frame (`DeriveMode::Wait`): from the backend's
//!   `FleetLoaded` (the fleet already in memory: the cache's load is in the store benchmark) to
//!   the first frame that shows it; the process's resident memory then, and after the planner's
//!   and findings' fleet (`ConsoleApp::shared_fleet`) was made; a search + sort and one status
//!   message, each the frames from the change to the worker's answer on screen (median of
//!   several), and opening the cohort view; then a stream of 10,000 status messages a second
//!   for four seconds with the worker in the background, as the console runs it: the UI frame
//!   times and the latency of searches typed during the stream.
//! - `serve`: the store's fleet summary on a cache holding the fleet: the first after the bulk
//!   write that stored it (which rebuilds the kept counts), by full scans (the code before),
//!   and from the kept counts; then `GET /api/v1/fleet` on a real `convoy serve` (median of 5
//!   after one warm-up).
//! - `open`: the console opening a cache end to end, as `convoy --db CACHE` does: the real
//!   `Backend::attach` (the cache thread opens the store and loads the fleet) and `ConsoleApp`
//!   headless, from the call to the first frame showing the fleet; on the first start after
//!   the fleet was written by `replace_fleet` (which writes the fleet snapshot with the rows
//!   since session 8; before, this start read the device rows and wrote the snapshot) and on
//!   the next three (a warm start), each in a fresh console. The operating system's file
//!   cache is warm in both (the cache was just written).
//! - `grid`: the map's grid of the whole fleet at zoom 2 and 9, the linear build against the
//!   sorted one (best of 3 each).
//!
//! Every line gives wall time and the process's CPU time (user + system, `/proc/self/stat`, in
//! 10 ms ticks) over the same interval.

use convoy::gui::app::{DeriveMode, View};
use convoy::gui::{Backend, BackendEvent, Clock, ConsoleApp};
use convoy::link::protocol::{DeviceStatus, Inbound, UpdateState, UpdateStatus};
use convoy_core::fleet::Fleet;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::path::PathBuf;
use std::time::Instant;

const NOW: Timestamp = Timestamp::from_secs(1_795_000_000);

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("error: {what}: {e}");
    std::process::exit(2);
}

/// The process's CPU seconds so far (user + system), from `/proc/self/stat`.
fn cpu_secs() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(close) = text.rfind(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `f` once, returning (wall s, process CPU s).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let cpu = cpu_secs();
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64(), cpu_secs() - cpu)
}

/// The best of `n` runs by wall time, with that run's CPU time.
fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..n)
        .map(|_| {
            let (_, w, c) = timed(&mut f);
            (w, c)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[0]
}

fn median(mut runs: Vec<(f64, f64)>) -> (f64, f64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

fn fixture(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&path.display().to_string(), e))
}

fn fleet(devices: usize) -> Fleet {
    generate(&SynthOptions {
        devices,
        seed: 1,
        now: NOW,
    })
}

fn row(what: &str, devices: usize, (wall, cpu): (f64, f64), note: &str) {
    println!(
        "| {what} | {devices} | {:.2} | {:.0} | {note} |",
        wall * 1000.0,
        cpu * 1000.0
    );
}

fn header() {
    println!("| measure | devices | wall (ms) | CPU (ms) | note |");
    println!("| --- | ---: | ---: | ---: | --- |");
}

fn core(devices: usize) {
    use convoy_core::plan::{self, PlanInput, PlanningPolicy};
    use convoy_core::release::ReleaseSpec;
    use convoy_core::risk::{self, Finding, ScoringPolicy};
    let fleet = fleet(devices);
    let release: ReleaseSpec =
        serde_json::from_str(&fixture("fixtures/releases/t300-fw-2.5.0.json"))
            .unwrap_or_else(|e| fail("the release", e));
    let catalog: Vec<ReleaseSpec> =
        serde_json::from_str(&fixture("fixtures/releases/catalog.json"))
            .unwrap_or_else(|e| fail("the catalog", e));
    let policy = PlanningPolicy::default();
    let input = PlanInput {
        fleet: &fleet,
        release: &release,
        catalog: &catalog,
        now: NOW,
        seed: 1,
        policy: &policy,
    };
    header();
    let plan_time = best(3, || {
        plan::plan(&input).unwrap_or_else(|e| fail("planning", e))
    });
    row(
        "the plan itself (`plan::plan`)",
        devices,
        plan_time,
        "best of 3, one thread",
    );
    let finding: Finding =
        convoy_core::strict_json::from_str(&fixture("fixtures/findings/t300-remote-rce.json"))
            .unwrap_or_else(|e| fail("the finding", e));
    let scoring = ScoringPolicy::default();
    let score_time = best(3, || {
        risk::score(&finding, &fleet, &scoring, NOW).unwrap_or_else(|e| fail("scoring", e))
    });
    row(
        "scoring itself (`risk::score`, `t300-remote-rce`)",
        devices,
        score_time,
        "best of 3, one thread",
    );
}

fn frame(ctx: &egui::Context, app: &mut ConsoleApp) {
    let raw = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1600.0, 1000.0),
        )),
        ..egui::RawInput::default()
    };
    let mut out = ctx.run_ui(raw, |ui| {
        app.logic(ui.ctx());
        app.ui(ui);
    });
    // No renderer takes the textures.
    out.textures_delta.clear();
}

/// Frames until the derive worker's answer is on screen (a new generation), at most 10.
fn until_answer(ctx: &egui::Context, app: &mut ConsoleApp) {
    let before = app.derived.generation;
    for _ in 0..10 {
        frame(ctx, app);
        if app.derived.generation != before {
            return;
        }
    }
    fail(
        "the console",
        "the derive worker did not answer in 10 frames",
    );
}

fn status_of(app: &ConsoleApp, k: usize) -> BackendEvent {
    let Some(model) = app.model.as_ref() else {
        fail("the status message", "the fleet is not loaded")
    };
    status_of_model(model, k)
}

fn status_of_model(model: &convoy::gui::model::FleetModel, k: usize) -> BackendEvent {
    let d = &model.fleet.devices[(k * 7919) % model.len()];
    BackendEvent::Inbound(Inbound::Status(DeviceStatus {
        v: 1,
        device_id: d.id.clone(),
        ts: NOW,
        active_slot: d.active_slot,
        components: d.components.clone(),
        update: UpdateStatus {
            state: [
                UpdateState::Downloading,
                UpdateState::Installing,
                UpdateState::Confirmed,
            ][k % 3],
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
        position: None,
    }))
}

fn console(devices: usize) {
    let fleet = fleet(devices);
    let (rss_fleet, _) = rss_mib();
    let (backend, feed) = Backend::fixture(fleet, "bench.db".into());
    let ctx = egui::Context::default();
    let mut app = ConsoleApp::new(&ctx, None, backend, Clock::Fixed(NOW));
    app.derive_mode = DeriveMode::Wait;
    header();
    let ((), wall, cpu) = timed(|| {
        // The fixture backend reports the fleet on the first frames; the frame that shows it
        // waits for the worker's first answer.
        for _ in 0..1000 {
            frame(&ctx, &mut app);
            if app.model.is_some() && !app.derived.order.is_empty() {
                break;
            }
        }
    });
    if app.derived.order.is_empty() {
        fail("the console", "the fleet never showed");
    }
    row(
        "console: fleet loaded to the fleet on screen",
        devices,
        (wall, cpu),
        "from `FleetLoaded` (fleet in memory) to the first frame showing it; map view",
    );
    let (rss, hwm) = rss_mib();
    println!(
        "| console: resident memory, fleet on screen | {devices} | | | {rss:.0} MiB (peak {hwm:.0} MiB; {rss_fleet:.0} MiB with only the generated fleet) |"
    );
    let shared = app.shared_fleet();
    let (rss, hwm) = rss_mib();
    println!(
        "| console: resident memory, with the planner's and findings' fleet | {devices} | | | {rss:.0} MiB (peak {hwm:.0} MiB) |"
    );
    drop(shared);

    app.send(convoy::gui::UiCommand::Show(View::Table));
    frame(&ctx, &mut app);
    let search: Vec<(f64, f64)> = (0..5)
        .map(|k| {
            let ((), w, c) = timed(|| {
                app.state.filter.text = if k % 2 == 0 {
                    "eu".into()
                } else {
                    String::new()
                };
                app.state.sort = if k % 2 == 0 {
                    convoy::gui::query::Column::LastSeen
                } else {
                    convoy::gui::query::Column::Id
                };
                until_answer(&ctx, &mut app);
            });
            (w, c)
        })
        .collect();
    row(
        "console: search + sort, answer on screen",
        devices,
        median(search),
        "median of 5 (`eu` by last seen, and back): the frames until the answer shows, table view",
    );
    let status: Vec<(f64, f64)> = (0..9)
        .map(|k| {
            let event = status_of(&app, k);
            let ((), w, c) = timed(|| {
                if !feed.send(event) {
                    fail("the status message", "the fixture feed refused it");
                }
                until_answer(&ctx, &mut app);
            });
            (w, c)
        })
        .collect();
    row(
        "console: one status message, answer on screen",
        devices,
        median(status),
        "median of 9: the frames until the answer shows, table view",
    );
    // The same over the whole fleet, sorted by last seen: a message moves its device in a
    // sorted list of a million, and the answer carries a million-row order.
    app.state.filter.text = String::new();
    app.state.sort = convoy::gui::query::Column::LastSeen;
    app.state.sort_descending = true;
    until_answer(&ctx, &mut app);
    let status_all: Vec<(f64, f64)> = (0..9)
        .map(|k| {
            let event = status_of(&app, k + 100);
            let ((), w, c) = timed(|| {
                if !feed.send(event) {
                    fail("the status message", "the fixture feed refused it");
                }
                until_answer(&ctx, &mut app);
            });
            (w, c)
        })
        .collect();
    row(
        "console: one status message, whole fleet by last seen, answer on screen",
        devices,
        median(status_all),
        "median of 9: no filter (a million rows), sorted by last seen, table view",
    );
    let search_all: Vec<(f64, f64)> = (0..4)
        .map(|k| {
            let ((), w, c) = timed(|| {
                app.state.filter.text = if k % 2 == 0 {
                    "region:eu-*".into()
                } else {
                    String::new()
                };
                app.state.sort = if k % 2 == 0 {
                    convoy::gui::query::Column::Region
                } else {
                    convoy::gui::query::Column::LastSeen
                };
                until_answer(&ctx, &mut app);
            });
            (w, c)
        })
        .collect();
    row(
        "console: search + sort, large answers, on screen",
        devices,
        median(search_all),
        "median of 4 (`region:eu-*` by region, and the whole fleet by last seen, in turn), table view",
    );
    // Opening the cohort view (over the whole fleet, the last search above): the frame that
    // shows it asks the worker for the summaries and (waiting) swaps in the answer that
    // carries them.
    let cohorts: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let ((), w, c) = timed(|| {
                app.send(convoy::gui::UiCommand::Show(View::Cohorts));
                until_answer(&ctx, &mut app);
            });
            app.send(convoy::gui::UiCommand::Show(View::Table));
            frame(&ctx, &mut app);
            (w, c)
        })
        .collect();
    row(
        "console: opening the cohort view, answer on screen",
        devices,
        median(cohorts),
        "median of 3: the frames until the summaries show (six attributes of the whole fleet)",
    );
    stream(&ctx, &mut app, &feed, devices);
}

/// Status messages per second in the stream benchmark, and for how long.
const STREAM_RATE: f64 = 10_000.0;
const STREAM_SECS: f64 = 4.0;

/// The console while a rollout streams status into it: `STREAM_RATE` messages a second for
/// `STREAM_SECS`, frames at up to 60 a second with the worker in the background (as the real
/// console runs it); the UI frame times, and a search's latency (typed in the middle of the
/// stream) until its answer shows.
fn stream(
    ctx: &egui::Context,
    app: &mut ConsoleApp,
    feed: &convoy::gui::backend::FixtureFeed,
    n: usize,
) {
    app.derive_mode = DeriveMode::Background;
    app.state.filter.text = String::new();
    app.state.sort = convoy::gui::query::Column::LastSeen;
    app.state.sort_descending = true;
    frame(ctx, app);
    let Some(model) = app.model.as_ref() else {
        fail("the stream", "the fleet is not loaded")
    };
    // Messages made beforehand, so that the stream's pace is the feed's, not their making.
    let total = (STREAM_RATE * STREAM_SECS) as usize;
    let mut messages: Vec<BackendEvent> = Vec::with_capacity(total);
    for k in 0..total {
        messages.push(status_of_model(model, k));
    }
    let mut messages = messages.into_iter();
    let mut frames: Vec<f64> = Vec::new();
    let mut searches: Vec<f64> = Vec::new();
    let mut search_at: Option<(Instant, bool)> = None;
    let mut sent = 0usize;
    let mut refused = 0usize;
    let cpu = cpu_secs();
    let started = Instant::now();
    let mut next_search = 1.0;
    while started.elapsed().as_secs_f64() < STREAM_SECS {
        let due = ((started.elapsed().as_secs_f64() * STREAM_RATE) as usize).min(total);
        while sent < due {
            if let Some(m) = messages.next()
                && !feed.send(m)
            {
                refused += 1;
            }
            sent += 1;
        }
        let t = started.elapsed().as_secs_f64();
        if search_at.is_none() && t >= next_search {
            // A search typed mid-stream: `eu-` regions only, or back to everything.
            let narrow = app.state.filter.text.is_empty();
            app.state.filter.text = if narrow {
                "region:eu-*".into()
            } else {
                String::new()
            };
            search_at = Some((Instant::now(), narrow));
            next_search += 1.0;
        }
        let f0 = Instant::now();
        frame(ctx, app);
        frames.push(f0.elapsed().as_secs_f64());
        if let Some((at, narrow)) = search_at {
            let shown = if narrow {
                let f = &app.derived.filtered;
                !f.is_empty()
                    && f.len() < n
                    && app
                        .model
                        .as_ref()
                        .and_then(|m| m.fleet.devices.get(f[0] as usize))
                        .is_some_and(|d| d.region.starts_with("eu-"))
            } else {
                app.derived.filtered.len() == n
            };
            if shown {
                searches.push(at.elapsed().as_secs_f64());
                search_at = None;
            }
        }
        // Up to 60 frames a second.
        let spent = f0.elapsed().as_secs_f64();
        if spent < 1.0 / 60.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(1.0 / 60.0 - spent));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    frames.sort_by(f64::total_cmp);
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p) as usize] * 1000.0;
    println!(
        "| console: UI frame under {STREAM_RATE:.0} status messages a second | {n} | {:.2} (p95 {:.2}, max {:.2}) | | {} frames in {wall:.1} s ({:.0} a second), {sent} messages ({refused} refused by the full channel); process CPU {:.0} % of one core over the stream |",
        pct(0.5),
        pct(0.95),
        pct(1.0),
        frames.len(),
        frames.len() as f64 / wall,
        cpu / wall * 100.0
    );
    searches.sort_by(f64::total_cmp);
    let list: Vec<String> = searches
        .iter()
        .map(|s| format!("{:.0}", s * 1000.0))
        .collect();
    println!(
        "| console: search answer on screen under the stream | {n} | {} | | each search typed mid-stream until its answer showed: {} ms |",
        searches
            .get(searches.len() / 2)
            .map_or("not answered".to_owned(), |s| format!("{:.1}", s * 1000.0)),
        list.join(", ")
    );
}

fn serve(devices: usize) -> anyhow::Result<()> {
    use convoy::serve::auth::{self, Role};
    use convoy::serve::{ServeConfig, Server};
    use convoy::store::Store;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("bench.db");
    {
        let mut store = Store::open(&cache)?;
        store.replace_fleet(&fleet(devices), None)?;
    }
    let store = Store::open(&cache)?;
    let token = auth::add_token(&store, "bench", Role::Viewer, "operator:bench", NOW)?.token;
    header();
    // A bulk write leaves the kept counts to be rebuilt: the first summary pays for it.
    let (r, w, c) = timed(|| convoy::store::query::fleet_summary(&store));
    r?;
    row(
        "store: first summary after a bulk write (rebuilds the kept counts)",
        devices,
        (w, c),
        "once",
    );
    let scans: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (r, w, c) = timed(|| convoy::store::query::fleet_summary_by_scans(&store));
            if let Err(e) = r {
                fail("the fleet summary by scans", e);
            }
            (w, c)
        })
        .collect();
    row(
        "store: summary by full scans (the code before)",
        devices,
        median(scans),
        "median of 3",
    );
    let direct: Vec<(f64, f64)> = (0..5)
        .map(|_| {
            let (r, w, c) = timed(|| convoy::store::query::fleet_summary(&store));
            if let Err(e) = r {
                fail("the fleet summary", e);
            }
            (w, c)
        })
        .collect();
    row(
        "store: summary from the kept counts",
        devices,
        median(direct),
        "median of 5",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut config = ServeConfig::new(cache.clone(), "127.0.0.1:0".parse()?);
    config.rate_per_sec = 1e9;
    config.rate_burst = u32::MAX;
    let server = rt.block_on(Server::start(config))?;
    let url = format!("{}/api/v1/fleet", server.base_url());
    let http = reqwest::Client::new();
    let get = || {
        rt.block_on(async {
            let resp = http.get(&url).bearer_auth(&token).send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            anyhow::ensure!(status.is_success(), "GET /fleet: {status}: {body}");
            anyhow::Ok(body)
        })
    };
    let body = get()?;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(
        value["devices"].as_u64() == Some(devices as u64),
        "GET /fleet counted {} devices, not {devices}",
        value["devices"]
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        let (r, w, c) = timed(get);
        r?;
        runs.push((w, c));
    }
    row(
        "server: `GET /api/v1/fleet` summary",
        devices,
        median(runs),
        "median of 5 after one warm-up, one client, the server in this process",
    );
    drop(server);
    Ok(())
}

/// The console opening a cache: `Backend::attach` to the first frame showing the fleet.
fn open(devices: usize) -> anyhow::Result<()> {
    use convoy::store::Store;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("bench.db");
    {
        let mut store = Store::open(&cache)?;
        store.replace_fleet(&fleet(devices), None)?;
    }
    header();
    for run in 0..4 {
        let ctx = egui::Context::default();
        let (app, wall, cpu) = timed(|| {
            let backend = Backend::attach(
                cache.clone(),
                None,
                "convoy",
                convoy::link::mqtt::MqttAuth::default(),
            )
            .unwrap_or_else(|e| fail("opening the cache", format!("{e:#}")));
            let mut app = ConsoleApp::new(&ctx, None, backend, Clock::Fixed(NOW));
            app.derive_mode = DeriveMode::Wait;
            let deadline = Instant::now() + std::time::Duration::from_mins(2);
            while app.derived.order.is_empty() {
                if Instant::now() > deadline {
                    fail("the console", "the fleet never showed in 120 s");
                }
                frame(&ctx, &mut app);
                if app.model.is_none() {
                    // Waiting for the cache thread, as the window would between events.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            app
        });
        let what = if run == 0 {
            "console: cache opened to the fleet on screen, first start after the write"
        } else {
            "console: cache opened to the fleet on screen, warm start"
        };
        row(
            what,
            devices,
            (wall, cpu),
            "`Backend::attach` to the first frame showing the fleet",
        );
        drop(app);
    }
    Ok(())
}

/// The map's grid of the whole fleet at the world view (zoom 2) and at a city's (zoom 9): the
/// linear build the derive worker uses against the sorted build it replaced.
fn grid(devices: usize) {
    use convoy::gui::aggregate::{Grid, cell_size_for};
    let model = convoy::gui::model::FleetModel::new(fleet(devices));
    let classes = vec![0u8; model.len()];
    let all: Vec<u32> = (0..model.len() as u32).collect();
    header();
    for zoom in [2u8, 9] {
        let cell = cell_size_for(zoom, 60.0);
        let linear = best(3, || {
            Grid::build(&model.map_x, &model.map_y, &classes, &all, cell).device_count()
        });
        let sorted = best(3, || {
            Grid::build_sorted(&model.map_x, &model.map_y, &classes, &all, cell).device_count()
        });
        row(
            &format!("map grid of the whole fleet, zoom {zoom}: linear build"),
            devices,
            linear,
            "best of 3; the derive worker's build while the map shows",
        );
        row(
            &format!("map grid of the whole fleet, zoom {zoom}: sorted build (before)"),
            devices,
            sorted,
            "best of 3; the same grid by sorting (cell, device)",
        );
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "core".into());
    let devices: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "bench_million {mode} {devices}: load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match mode.as_str() {
        "core" => core(devices),
        "console" => console(devices),
        "serve" => serve(devices)?,
        "open" => open(devices)?,
        "grid" => grid(devices),
        other => fail(
            "the mode",
            format!("{other:?} is not core, console, serve, open or grid"),
        ),
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
