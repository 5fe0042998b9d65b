//! The fleet map: the offline basemap from [`crate::gui::basemap`] (under an MBTiles file or an
//! online tile server from [`crate::gui::tiles`] when one is given), vehicles coloured by update
//! state, health or their state in a rollout (the one the rollout monitor shows, kept fresh by
//! [`crate::gui::monitor::sync`] while the map colours by it), clusters where vehicles do not fit, a legend that filters, hover and click
//! to a device, and Shift+drag box or lasso selection into a cohort (the lasso's
//! point-in-polygon test is plain code in [`crate::gui::aggregate`]).
//!
//! Per frame the map asks the [`Grid`] for the cells in view and draws those: one marker per
//! vehicle where a cell holds few, one cluster otherwise. The grid is built by the derive worker
//! when the filtered set, the colours or the zoom level change; the map keeps the previous one
//! until the new one arrives. walkers only draws; the aggregation is
//! plain code in [`crate::gui::aggregate`].

// Screen geometry reads best in single letters (corners a, b; points p, q).
#![allow(clippy::many_single_char_names)]

use egui::{Color32, Pos2, Rect, RichText, Shape, Stroke, Vec2};
use std::sync::Arc;
use walkers::{MapMemory, Projector, lon_lat};

use crate::gui::aggregate::{Grid, select_in_polygon};
use crate::gui::app::{Theme, UiCommand};
use crate::gui::basemap::{BasemapTiles, Outlines, inverse_mercator, mercator};
use crate::gui::tiles::{LayeredTiles, SourceTiles, TileSpec};
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};

/// The map's own state: walkers' memory, the tile sources and the grid.
#[derive(Default)]
pub struct MapState {
    pub memory: MapMemory,
    outlines: Option<Arc<Outlines>>,
    tiles_dark: Option<BasemapTiles>,
    tiles_light: Option<BasemapTiles>,
    basemap_error: Option<String>,
    /// Tiles drawn over the basemap, if the user gave a source; started on first draw.
    source_spec: Option<TileSpec>,
    pub source: Option<SourceTiles>,
    source_error: Option<String>,
    pub grid: Grid,
    grid_stamp: Option<(u64, u8)>,
    selection_start: Option<Pos2>,
    /// The lasso's outline so far, in screen points.
    lasso: Vec<Pos2>,
    pub tool: SelectTool,
    selections: usize,
    /// The MBTiles path typed in the map's toolbar (or filled by the file dialog).
    pub mbtiles_path: String,
    /// The file dialog's answer, while it is open (on its own thread).
    mbtiles_dialog: Option<std::sync::mpsc::Receiver<Option<std::path::PathBuf>>>,
    /// Why the last MBTiles file was not used, in words.
    pub mbtiles_note: Option<String>,
    /// No saved view: the map fits the fleet once it is loaded (issue 19: the default view
    /// left Tokyo, Singapore and Sydney off-screen).
    fit_pending: bool,
    /// Devices the map rings (a finding's affected devices), until cleared.
    pub highlight: Option<Highlight>,
    /// Highlighted devices per grid cell, for the grid and highlight they were counted for.
    highlight_cells: HighlightCells,
}

/// Devices the map rings in [`HIGHLIGHT`], with the legend line that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Highlight {
    /// What they are ("affected by CVE-2026-4242").
    pub name: String,
    /// Device indices, ascending.
    pub devices: Vec<u32>,
    /// `mask[i]`: whether device `i` is highlighted.
    mask: Vec<bool>,
    /// Changes with every new highlight, so that the per-cell counts are redone.
    generation: u64,
}

impl Highlight {
    fn contains(&self, i: u32) -> bool {
        self.mask.get(i as usize).copied().unwrap_or(false)
    }
}

#[derive(Debug, Default)]
struct HighlightCells {
    stamp: Option<((u64, u8), u64)>,
    by_cell: std::collections::HashMap<(u32, u32), u32>,
}

/// The ring of highlighted devices and clusters: a colour no state class uses.
pub const HIGHLIGHT: Color32 = Color32::from_rgb(0xFF, 0x2E, 0xD1);

/// What the map view asks the console for: work on the map's own state that opens files or
/// starts a thread, done before the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapCommand {
    /// Open a file dialog (on its own thread) for an MBTiles file.
    BrowseMbtiles,
    /// Draw the MBTiles file at this path over the basemap, if it is one.
    OpenMbtiles(std::path::PathBuf),
    /// Ring these devices (indices) on the map, named in the legend by `name`.
    Highlight { name: String, devices: Vec<u32> },
    /// Stop ringing them.
    ClearHighlight,
}

/// What Shift+drag on the map draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectTool {
    #[default]
    Box,
    Lasso,
}

/// A lasso point is recorded once the pointer has moved this far from the last one.
const LASSO_STEP_PX: f32 = 3.0;

impl std::fmt::Debug for MapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapState")
            .field("zoom", &self.memory.zoom())
            .field("cells", &self.grid.cells().len())
            .finish_non_exhaustive()
    }
}

/// Where the map opens when nothing is saved: over Europe and the Atlantic.
const HOME: (f64, f64, f64) = (45.0, -20.0, 3.0);

impl MapState {
    /// Does what the view asked for.
    pub fn apply(&mut self, ctx: &egui::Context, command: MapCommand) {
        match command {
            MapCommand::BrowseMbtiles => self.browse_mbtiles(ctx),
            MapCommand::OpenMbtiles(path) => self.open_mbtiles(&path),
            MapCommand::Highlight { name, devices } => self.set_highlight(name, devices),
            MapCommand::ClearHighlight => self.highlight = None,
        }
    }

    /// Rings `devices` (indices) on the map, named `name` in the legend.
    pub fn set_highlight(&mut self, name: String, mut devices: Vec<u32>) {
        devices.sort_unstable();
        devices.dedup();
        let len = devices.last().map_or(0, |&i| i as usize + 1);
        let mut mask = vec![false; len];
        for &i in &devices {
            mask[i as usize] = true;
        }
        let generation = self.highlight.as_ref().map_or(1, |h| h.generation + 1);
        self.highlight = Some(Highlight {
            name,
            devices,
            mask,
            generation,
        });
    }

    /// Counts the highlighted devices of every grid cell, once per grid and highlight.
    fn count_highlighted(&mut self) {
        let Some(h) = &self.highlight else {
            self.highlight_cells = HighlightCells::default();
            return;
        };
        let stamp = self.grid_stamp.map(|g| (g, h.generation));
        if stamp.is_some() && self.highlight_cells.stamp == stamp {
            return;
        }
        let mut by_cell = std::collections::HashMap::new();
        for cell in self.grid.cells() {
            let n = self
                .grid
                .members(cell)
                .iter()
                .filter(|&&i| h.contains(i))
                .count() as u32;
            if n > 0 {
                by_cell.insert((cell.cx, cell.cy), n);
            }
        }
        self.highlight_cells = HighlightCells { stamp, by_cell };
    }

    /// What the console does before the map draws: takes the file dialog's answer, and starts
    /// the basemap's tile thread for the theme (`dark`) and the tile source's workers, once.
    pub fn prepare(&mut self, ctx: &egui::Context, dark: bool) {
        self.poll_dialog();
        // The tile source is created lazily; the map still draws vehicles without it.
        let _ = self.tiles(ctx, dark);
        self.start_source(ctx);
    }

    /// Restores a saved view.
    pub fn restore(&mut self, center: Option<(f64, f64)>, zoom: f64) {
        let (lat, lon) = center.unwrap_or((HOME.0, HOME.1));
        let zoom = if center.is_some() { zoom } else { HOME.2 };
        self.focus(lat, lon, zoom);
        self.fit_pending = center.is_none();
    }

    /// Centres the map on (lat, lon) at `zoom`.
    pub fn focus(&mut self, lat: f64, lon: f64, zoom: f64) {
        self.memory.center_at(lon_lat(lon, lat));
        let _ = self.memory.set_zoom(zoom.clamp(1.0, 18.0));
    }

    /// The current centre (lat, lon) and zoom, to save.
    pub fn view(&self) -> (Option<(f64, f64)>, f64) {
        (
            self.memory.detached().map(|p| (p.y(), p.x())),
            self.memory.zoom(),
        )
    }

    /// The zoom level the grid is binned at.
    pub fn level(&self) -> u8 {
        self.memory.zoom().floor().clamp(0.0, 24.0) as u8
    }

    /// Takes the derive worker's grid (`prebuilt`) when it is for this generation and the
    /// current zoom level. Until the worker has answered for a new level or new data, the
    /// previous grid stays on screen: the UI thread never bins the fleet.
    pub fn update_grid(&mut self, generation: u64, prebuilt: &mut Option<(u8, Grid)>) {
        let level = self.level();
        if self.grid_stamp == Some((generation, level)) {
            return;
        }
        if let Some((_, grid)) = prebuilt.take_if(|(l, _)| *l == level) {
            self.grid = grid;
            self.grid_stamp = Some((generation, level));
        }
    }

    /// Whether the grid on screen is the one for the current data and zoom level.
    pub fn grid_current(&self, generation: u64) -> bool {
        self.grid_stamp == Some((generation, self.level()))
    }

    /// Forgets the grid: its device indices belong to a fleet that has been replaced.
    pub fn clear_grid(&mut self) {
        self.grid = Grid::default();
        self.grid_stamp = None;
        // So do the highlighted devices' indices.
        self.highlight = None;
        self.highlight_cells = HighlightCells::default();
    }

    /// Basemap tiles drawn so far, and those asked for and not drawn yet, in both palettes
    /// (tests wait for them).
    pub fn basemap_tiles(&self) -> (usize, usize) {
        let count = |f: fn(&BasemapTiles) -> usize| {
            self.tiles_dark.as_ref().map_or(0, f) + self.tiles_light.as_ref().map_or(0, f)
        };
        (count(BasemapTiles::cached), count(BasemapTiles::pending))
    }

    /// Draws `spec`'s tiles over the basemap from the next frame on.
    pub fn set_tile_source(&mut self, spec: TileSpec) {
        self.source_spec = Some(spec);
        self.source = None;
        self.source_error = None;
    }

    /// Uses the MBTiles file at `path` over the basemap, if it is an MBTiles file; else says
    /// why in [`Self::mbtiles_note`] and keeps the current source. Opening checks the file's
    /// tables and format (a few small reads); the tiles are read on the workers.
    pub fn open_mbtiles(&mut self, path: &std::path::Path) {
        match crate::gui::tiles::MbTiles::open(path) {
            Ok(_) => {
                self.mbtiles_note = None;
                self.set_tile_source(TileSpec::MbTiles(path.to_owned()));
            }
            Err(e) => self.mbtiles_note = Some(format!("{e:#}")),
        }
    }

    /// Opens a file dialog on its own thread; [`Self::poll_dialog`] uses what it picks.
    fn browse_mbtiles(&mut self, ctx: &egui::Context) {
        let started = crate::gui::worker::spawn_job(ctx, "convoy-file-dialog", || {
            rfd::FileDialog::new()
                .set_title("MBTiles file to draw over the basemap")
                .add_filter("MBTiles", &["mbtiles"])
                .pick_file()
        });
        match started {
            Ok(rx) => self.mbtiles_dialog = Some(rx),
            Err(e) => self.mbtiles_note = Some(format!("could not open a file dialog: {e}")),
        }
    }

    /// Takes the file dialog's answer, if it has come.
    fn poll_dialog(&mut self) {
        let Some(rx) = &self.mbtiles_dialog else {
            return;
        };
        match rx.try_recv() {
            Ok(Some(path)) => {
                self.mbtiles_dialog = None;
                self.mbtiles_path = path.display().to_string();
                self.open_mbtiles(&path);
            }
            Ok(None) => {
                self.mbtiles_dialog = None;
                self.mbtiles_note = Some(
                    "no file chosen (or no file dialog on this desktop): type the path instead"
                        .to_owned(),
                );
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => self.mbtiles_dialog = None,
        }
    }

    /// Starts the tile source's workers once; a source that cannot start is reported on the
    /// map and the basemap shows alone.
    fn start_source(&mut self, ctx: &egui::Context) {
        if self.source.is_some() || self.source_error.is_some() {
            return;
        }
        if let Some(spec) = &self.source_spec {
            match SourceTiles::start(ctx, spec) {
                Ok(s) => self.source = Some(s),
                Err(e) => self.source_error = Some(format!("{e:#}")),
            }
        }
    }

    /// The attribution line: every source that draws, and what failed.
    pub fn attribution(&self) -> String {
        let base = match &self.basemap_error {
            Some(e) => format!("Basemap unavailable: {e}"),
            None => "Basemap: Natural Earth (public domain), offline".to_owned(),
        };
        match (&self.source, &self.source_error) {
            (Some(s), _) if s.failures > 0 => format!(
                "{} · {base} where tiles are missing · {} tiles unreadable, latest: {}",
                s.attribution_text(),
                s.failures,
                s.last_failure.as_deref().unwrap_or("-")
            ),
            (Some(s), _) => format!("{} · {base} where tiles are missing", s.attribution_text()),
            (None, Some(e)) => format!("Tiles unavailable: {e} · {base}"),
            (None, None) => base,
        }
    }

    fn tiles(&mut self, ctx: &egui::Context, dark: bool) -> Option<&mut BasemapTiles> {
        if self.outlines.is_none() && self.basemap_error.is_none() {
            match Outlines::built_in() {
                Ok(o) => self.outlines = Some(Arc::new(o)),
                Err(e) => self.basemap_error = Some(e.to_string()),
            }
        }
        let outlines = Arc::clone(self.outlines.as_ref()?);
        let slot = if dark {
            &mut self.tiles_dark
        } else {
            &mut self.tiles_light
        };
        if slot.is_none() {
            match BasemapTiles::new(ctx, outlines, tokens::basemap_palette(dark)) {
                Ok(t) => *slot = Some(t),
                Err(e) => {
                    self.basemap_error = Some(format!("starting the tile thread: {e}"));
                    return None;
                }
            }
        }
        slot.as_mut()
    }
}

/// Compact counts: 950, 12.3k, 1.2M.
fn short_count(n: u32) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..10_000 => format!("{:.1}k", f64::from(n) / 1000.0),
        10_000..1_000_000 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", f64::from(n) / 1e6),
    }
}

fn to_screen(projector: &Projector, lat: f64, lon: f64) -> Pos2 {
    projector.project(lon_lat(lon, lat)).to_pos2()
}

/// The legend: one button per class with its count; clicking filters to that class.
/// While it colours by rollout state, the console keeps the monitor's reading fresh before the
/// map draws ([`crate::gui::monitor::sync`]).
fn legend_ui(cx: &ViewContext<'_>, out: &mut Commands, ui: &mut egui::Ui) {
    let mode = cx.state.color_mode;
    ui.horizontal_wrapped(|ui| {
        if mode == crate::gui::model::ColorMode::RolloutState {
            rollout_legend_title_ui(cx, ui);
        } else {
            ui.label(RichText::new(format!("{}:", mode.label())).strong());
        }
        for (k, name) in mode.class_names().iter().enumerate() {
            let count = cx.derived.counts_filtered[k];
            let selected = cx.state.filter.class == Some(k as u8);
            tokens::swatch(ui, tokens::class_color(mode, k));
            let text = RichText::new(format!("{name} {count}")).color(tokens::class_color(mode, k));
            let r = ui
                .add(egui::Button::selectable(selected, text))
                .on_hover_text("Show only this class on the map and in the table");
            if r.clicked() {
                out.send(UiCommand::SetClassFilter(if selected {
                    None
                } else {
                    Some(k as u8)
                }));
            }
        }
    });
}

/// Which rollout the map colours by, and where to choose another.
fn rollout_legend_title_ui(cx: &ViewContext<'_>, ui: &mut egui::Ui) {
    let shown = crate::gui::derive::rollout_map(ui.ctx());
    let text = match (&shown, &cx.rollout_target) {
        (Some(map), _) => format!("Rollout state of {}:", map.rollout_id),
        (None, Some(id)) => format!("Rollout state of {id} (reading its log):"),
        (None, None) => "Rollout state (no rollout recorded in the cache):".to_owned(),
    };
    ui.label(RichText::new(text).strong())
        .on_hover_text("Choose the rollout in the Rollout monitor");
}

/// Draws the map view.
pub fn map_ui(map: &mut MapState, cx: &ViewContext<'_>, out: &mut Commands, ui: &mut egui::Ui) {
    if map.fit_pending && !cx.derived.filtered.is_empty() {
        map.fit_pending = false;
        fit(map, cx, ui.available_width().max(400.0));
    }
    legend_ui(cx, out, ui);
    if let Some(h) = &map.highlight {
        ui.horizontal(|ui| {
            tokens::swatch(ui, HIGHLIGHT);
            ui.label(
                RichText::new(format!(
                    "{} {} highlighted",
                    grouped(h.devices.len()),
                    h.name
                ))
                .color(HIGHLIGHT)
                .strong(),
            );
            if ui
                .button("Clear highlight")
                .on_hover_text("Stop ringing these devices on the map")
                .clicked()
            {
                out.send(UiCommand::Map(MapCommand::ClearHighlight));
            }
        });
    }
    ui.horizontal(|ui| {
        if ui.button("Zoom in").clicked() {
            let _ = map.memory.zoom_in();
        }
        if ui.button("Zoom out").clicked() {
            let _ = map.memory.zoom_out();
        }
        if ui.button("Fit fleet").on_hover_text("Fit the devices that pass the filter").clicked() {
            fit(map, cx, ui.available_width().max(400.0));
        }
        ui.separator();
        for (tool, label, hint) in [
            (SelectTool::Box, "Box select", "Shift+drag selects the devices in a box"),
            (SelectTool::Lasso, "Lasso select", "Shift+drag draws a lasso around the devices to select"),
        ] {
            if ui.add(egui::Button::selectable(map.tool == tool, label)).on_hover_text(hint).clicked() {
                map.tool = tool;
            }
        }
        ui.label(
            RichText::new("Shift+drag: select into a cohort · click a vehicle to open it · click a cluster to zoom")
                .small()
                .color(tokens::MUTED),
        );
    });
    ui.horizontal(|ui| {
        let browsing = map.mbtiles_dialog.is_some();
        if ui
            .add_enabled(!browsing, egui::Button::new("Open MBTiles…"))
            .on_hover_text("Draw a raster MBTiles file over the offline basemap")
            .clicked()
        {
            out.send(UiCommand::Map(MapCommand::BrowseMbtiles));
        }
        let label = ui.label("or its path:");
        let field = ui
            .add(
                egui::TextEdit::singleline(&mut map.mbtiles_path)
                    .hint_text("/path/to/tiles.mbtiles")
                    .desired_width(260.0),
            )
            .labelled_by(label.id);
        let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if (ui.button("Use tiles").clicked() || enter) && !map.mbtiles_path.trim().is_empty() {
            let path = std::path::PathBuf::from(map.mbtiles_path.trim());
            out.send(UiCommand::Map(MapCommand::OpenMbtiles(path)));
        }
        if let Some(note) = &map.mbtiles_note {
            ui.label(
                RichText::new(format!("Not used: {note}"))
                    .small()
                    .color(tokens::WARN),
            );
        }
    });
    let Some(model) = cx.model else {
        return;
    };
    let dark = cx.state.theme == Theme::Dark;
    // The console took the derive worker's grid before this frame ([`MapState::update_grid`]).
    let grid_current = map.grid_current(cx.derived.generation);
    let shift = ui.input(|i| i.modifiers.shift);
    let attribution = map.attribution();
    map.count_highlighted();
    let MapState {
        memory,
        tiles_dark,
        tiles_light,
        source,
        grid,
        selection_start,
        lasso,
        tool,
        selections,
        highlight,
        highlight_cells,
        ..
    } = map;
    let highlight = highlight.as_ref();
    let highlight_cells = &highlight_cells.by_cell;
    let tool = *tool;
    let base = if dark {
        tiles_dark.as_mut()
    } else {
        tiles_light.as_mut()
    };
    let mut layered = source
        .as_mut()
        .map(|source| LayeredTiles { source, base: None });
    let tiles: Option<&mut dyn walkers::Tiles> = match &mut layered {
        Some(l) => {
            l.base = base;
            Some(l as &mut dyn walkers::Tiles)
        }
        None => base.map(|t| t as &mut dyn walkers::Tiles),
    };
    let classes = &cx.derived.classes;
    let filtered = &cx.derived.filtered;
    let mode = cx.state.color_mode;
    let mut commands = Vec::new();
    let pans = if shift {
        egui::DragPanButtons::MIDDLE
    } else {
        egui::DragPanButtons::PRIMARY | egui::DragPanButtons::MIDDLE
    };
    let walkers_map = walkers::Map::new(tiles, memory, lon_lat(HOME.1, HOME.0))
        .drag_pan_buttons(pans)
        .zoom_with_ctrl(false);
    let panel_fill = ui.visuals().panel_fill;
    let text_color = ui.visuals().strong_text_color();
    let shown = walkers_map.show(ui, |ui, response, projector, _memory| {
        let rect = response.rect;
        let painter = ui.painter().with_clip_rect(rect);
        let corner = |p: Pos2| {
            let g = projector.unproject(p.to_vec2());
            mercator(g.x(), g.y())
        };
        let (a, b) = (corner(rect.min), corner(rect.max));
        let pointer = response.hover_pos();
        let mut hovered_device: Option<(usize, f32)> = None;
        let mut hovered_cluster: Option<(f64, f64, [u32; crate::gui::aggregate::CLASSES], u32)> =
            None;
        // Large clusters first, so that a small one beside a large one is drawn over it, never
        // under it (issue 19: 3 devices sat under New York's 174); single vehicles last.
        let mut visible: Vec<&crate::gui::aggregate::Cell> = grid
            .visible(
                [a[0].min(b[0]), a[1].min(b[1])],
                [a[0].max(b[0]), a[1].max(b[1])],
            )
            .collect();
        visible.sort_by_key(|cell| {
            (
                cell.count <= tokens::MARKERS_PER_CELL,
                std::cmp::Reverse(cell.count),
            )
        });
        // Nothing drawn overlaps what was drawn before it: a cluster that would is moved onto a
        // ring around the one in its way, and a few vehicles under a cluster become a small
        // cluster of their own there, each with a leader line to where they are.
        let mut placer = Placer::default();
        let leader = Stroke::new(1.5, text_color.gamma_multiply(0.7));
        for cell in visible {
            let small = cell.count <= tokens::MARKERS_PER_CELL;
            let under = small
                && grid.members(cell).iter().any(|&i| {
                    let d = &model.fleet.devices[i as usize];
                    let p = to_screen(projector, d.position.lat, d.position.lon);
                    placer.overlaps(p, tokens::MARKER_RADIUS)
                });
            if small && !under {
                for &i in grid.members(cell) {
                    let d = &model.fleet.devices[i as usize];
                    let p = to_screen(projector, d.position.lat, d.position.lon);
                    let color = tokens::class_color(mode, usize::from(classes[i as usize]));
                    placer.add(p, tokens::MARKER_RADIUS);
                    painter.circle(
                        p,
                        tokens::MARKER_RADIUS,
                        color,
                        Stroke::new(1.0, Color32::from_black_alpha(160)),
                    );
                    if highlight.is_some_and(|h| h.contains(i)) {
                        painter.circle_stroke(
                            p,
                            tokens::MARKER_RADIUS + 2.5,
                            Stroke::new(2.0, HIGHLIGHT),
                        );
                    }
                    if let Some(ptr) = pointer {
                        let dist = ptr.distance(p);
                        if dist <= tokens::MARKER_RADIUS + 3.0
                            && hovered_device.is_none_or(|(_, best)| dist < best)
                        {
                            hovered_device = Some((i as usize, dist));
                        }
                    }
                }
            } else {
                let (lon, lat) = inverse_mercator(cell.centroid[0], cell.centroid[1]);
                let at = to_screen(projector, lat, lon);
                // Grows with the count but stays inside its 64-point square.
                let radius = cluster_radius(cell.count);
                let p = placer.place(at, radius);
                if p != at {
                    painter.line_segment([at, p + (at - p).normalized() * radius], leader);
                    painter.circle_filled(at, 2.5, leader.color);
                }
                cluster_shape(
                    &painter,
                    p,
                    radius,
                    &cell.by_class,
                    cell.count,
                    mode,
                    panel_fill,
                    text_color,
                );
                if let Some(&n) = highlight_cells.get(&(cell.cx, cell.cy)) {
                    highlight_arc(&painter, p, radius + 3.0, n, cell.count);
                }
                if pointer.is_some_and(|ptr| ptr.distance(p) <= radius) {
                    hovered_cluster = Some((lat, lon, cell.by_class, cell.count));
                }
            }
        }
        // Box or lasso selection.
        if shift && response.drag_started() {
            // Where the button went down, not where the drag was recognised a few points later.
            *selection_start = ui
                .input(|i| i.pointer.press_origin())
                .or(response.interact_pointer_pos());
            lasso.clear();
            lasso.extend(*selection_start);
        }
        if let (Some(start), Some(now)) = (
            *selection_start,
            response.interact_pointer_pos().or(pointer),
        ) {
            let fill = Color32::from_rgba_unmultiplied(86, 180, 233, 40);
            let stroke = Stroke::new(1.5, Color32::from_rgb(86, 180, 233));
            let done = response.drag_stopped() || !ui.input(|i| i.pointer.primary_down());
            let inside = match tool {
                SelectTool::Box => {
                    let sel = Rect::from_two_pos(start, now);
                    painter.rect(sel, 0.0, fill, stroke, egui::StrokeKind::Inside);
                    done.then(|| {
                        let (p, q) = (corner(sel.min), corner(sel.max));
                        let (x0, x1) = (p[0].min(q[0]), p[0].max(q[0]));
                        let (y0, y1) = (p[1].min(q[1]), p[1].max(q[1]));
                        filtered
                            .iter()
                            .copied()
                            .filter(|&i| {
                                let (x, y) = (
                                    f64::from(model.map_x[i as usize]),
                                    f64::from(model.map_y[i as usize]),
                                );
                                x >= x0 && x <= x1 && y >= y0 && y <= y1
                            })
                            .collect::<Vec<u32>>()
                    })
                }
                SelectTool::Lasso => {
                    if lasso
                        .last()
                        .is_none_or(|last| last.distance(now) >= LASSO_STEP_PX)
                    {
                        lasso.push(now);
                    }
                    painter.add(Shape::closed_line(lasso.clone(), stroke));
                    done.then(|| {
                        let outline: Vec<[f64; 2]> = lasso.iter().map(|&p| corner(p)).collect();
                        select_in_polygon(&model.map_x, &model.map_y, filtered, &outline)
                    })
                }
            };
            if let Some(inside) = inside {
                *selection_start = None;
                lasso.clear();
                if !inside.is_empty() {
                    *selections += 1;
                    commands.push(UiCommand::CreateCohort {
                        name: format!("Map selection {selections}"),
                        devices: inside,
                    });
                }
            }
        }
        // Hover and click.
        if let Some((i, _)) = hovered_device {
            let d = &model.fleet.devices[i];
            let live = &model.live[i];
            let class = usize::from(classes[i]);
            let p = to_screen(projector, d.position.lat, d.position.lon);
            painter.circle_stroke(p, tokens::MARKER_RADIUS + 3.0, Stroke::new(2.0, text_color));
            response.clone().on_hover_ui_at_pointer(|ui| {
                ui.label(RichText::new(&d.id).strong());
                ui.label(format!("{} rev {} · {}", d.model, d.hw_rev, d.depot));
                ui.label(format!(
                    "firmware {}",
                    d.firmware().map_or("-".to_owned(), |v| v.to_string())
                ));
                ui.label(mode.class_names().get(class).copied().unwrap_or("-"));
                if let Some(s) = live.update_state {
                    ui.label(format!("update: {}", crate::gui::model::state_name(s)));
                }
            });
            if response.clicked() {
                commands.push(UiCommand::OpenDevice(i));
            }
        } else if let Some((lat, lon, by_class, count)) = hovered_cluster {
            response.clone().on_hover_ui_at_pointer(|ui| {
                ui.label(RichText::new(format!("{count} vehicles")).strong());
                for (k, n) in by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                    let name = mode.class_names().get(k).copied().unwrap_or("-");
                    ui.horizontal(|ui| {
                        tokens::swatch(ui, tokens::class_color(mode, k));
                        ui.label(format!("{name}: {n}"));
                    });
                }
                ui.label(RichText::new("Click to zoom in").small());
            });
            if response.clicked() {
                commands.push(UiCommand::FocusMap {
                    lat,
                    lon,
                    zoom: projector.zoom() + 2.0,
                });
            }
        }
        // Attribution, always shown.
        let galley =
            painter.layout_no_wrap(attribution, egui::FontId::proportional(11.0), text_color);
        let at = rect.right_bottom() - galley.size() - Vec2::splat(4.0);
        painter.rect_filled(
            Rect::from_min_size(at, galley.size()).expand(3.0),
            2.0,
            panel_fill.gamma_multiply(0.85),
        );
        painter.galley(at, galley, text_color);
        let count_text = format!(
            "{} vehicles in {} cells · zoom {:.1}{}",
            grid.device_count(),
            grid.cells().len(),
            projector.zoom(),
            if grid_current {
                ""
            } else {
                " · regrouping…"
            }
        );
        painter.text(
            rect.left_bottom() + Vec2::new(6.0, -6.0),
            egui::Align2::LEFT_BOTTOM,
            count_text,
            egui::FontId::proportional(11.0),
            text_color,
        );
    });
    shown
        .response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Fleet map"));
    out.extend(commands);
}

/// A cluster's radius in points: grows with the count, at most 30 (inside its 64-point cell),
/// at least 11 so that the count of a few vehicles moved out from under a cluster fits inside
/// its ring.
fn cluster_radius(count: u32) -> f32 {
    (9.0 + 2.2 * (count.max(1) as f32).ln()).clamp(11.0, 30.0)
}

/// The space between drawn discs that the map keeps clear, in points.
const PLACE_GAP: f32 = 3.0;
/// Discs are bucketed by squares of this size for the overlap test, in points.
const PLACE_BUCKET: f32 = 64.0;

/// Places the map's discs (clusters and vehicle markers) one after another so that none
/// overlaps one placed before it: a disc in the way of an earlier one goes onto the nearest
/// free spot of a ring around the largest disc it overlapped, as close as it can to the
/// direction it lay in.
#[derive(Default)]
pub(crate) struct Placer {
    discs: Vec<(Pos2, f32)>,
    buckets: std::collections::HashMap<(i32, i32), Vec<u32>>,
    largest: f32,
}

impl Placer {
    fn bucket(p: Pos2) -> (i32, i32) {
        (
            (p.x / PLACE_BUCKET).floor() as i32,
            (p.y / PLACE_BUCKET).floor() as i32,
        )
    }

    /// The placed discs that a disc at `p` of radius `r` would come within [`PLACE_GAP`] of.
    fn in_the_way(&self, p: Pos2, r: f32) -> impl Iterator<Item = (Pos2, f32)> + '_ {
        let reach = ((r + self.largest + PLACE_GAP) / PLACE_BUCKET).ceil() as i32;
        let (bx, by) = Self::bucket(p);
        (bx - reach..=bx + reach)
            .flat_map(move |x| (by - reach..=by + reach).map(move |y| (x, y)))
            .filter_map(|b| self.buckets.get(&b))
            .flatten()
            .map(|&k| self.discs[k as usize])
            .filter(move |&(q, s)| p.distance(q) < r + s + PLACE_GAP)
    }

    pub(crate) fn overlaps(&self, p: Pos2, r: f32) -> bool {
        self.in_the_way(p, r).next().is_some()
    }

    /// Adds a disc where it is, whatever it overlaps (the vehicle markers of one cell).
    pub(crate) fn add(&mut self, p: Pos2, r: f32) {
        self.buckets
            .entry(Self::bucket(p))
            .or_default()
            .push(self.discs.len() as u32);
        self.discs.push((p, r));
        self.largest = self.largest.max(r);
    }

    /// Where a disc at `p` of radius `r` is drawn: at `p` if that is clear, else on a ring
    /// around the largest disc in the way (further rings if the first is full).
    pub(crate) fn place(&mut self, p: Pos2, r: f32) -> Pos2 {
        let Some((c, s)) = self.in_the_way(p, r).max_by(|a, b| a.1.total_cmp(&b.1)) else {
            self.add(p, r);
            return p;
        };
        let toward = p - c;
        let start = if toward.length() > 0.01 {
            toward.y.atan2(toward.x)
        } else {
            -std::f32::consts::FRAC_PI_2
        };
        let mut spot = None;
        'rings: for ring in 0..6 {
            let d = s + r + PLACE_GAP + ring as f32 * (2.0 * r + PLACE_GAP);
            // Steps of about one disc along the ring, alternating either side of `start`.
            let step = ((r + PLACE_GAP / 2.0) / d).min(1.0).asin() * 2.0;
            let steps = (std::f32::consts::TAU / step).floor().max(1.0) as i32;
            for k in 0..steps {
                let turn = if k % 2 == 0 { k / 2 } else { -(k + 1) / 2 };
                let a = start + turn as f32 * step;
                let q = c + Vec2::new(a.cos(), a.sin()) * d;
                if !self.overlaps(q, r) {
                    spot = Some(q);
                    break 'rings;
                }
            }
        }
        // Six full rings: the disc stays where it is (drawn over, as before).
        let q = spot.unwrap_or(p);
        self.add(q, r);
        q
    }
}

/// An arc outside a cluster for its highlighted share (`n` of `count`), from the top,
/// never shorter than a quarter turn so that a few highlighted devices still show.
fn highlight_arc(painter: &egui::Painter, center: Pos2, radius: f32, n: u32, count: u32) {
    let share = (n as f32 / count.max(1) as f32).clamp(0.25, 1.0);
    let sweep = std::f32::consts::TAU * share;
    let start = -std::f32::consts::FRAC_PI_2;
    let steps = ((sweep / 0.12).ceil() as usize).max(2);
    let points: Vec<Pos2> = (0..=steps)
        .map(|s| {
            let t = start + sweep * s as f32 / steps as f32;
            center + Vec2::new(t.cos(), t.sin()) * radius
        })
        .collect();
    painter.add(Shape::line(points, Stroke::new(3.0, HIGHLIGHT)));
}

/// A count with thousands separated: 1,171.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn cluster_shape(
    painter: &egui::Painter,
    center: Pos2,
    radius: f32,
    by_class: &[u32],
    count: u32,
    mode: crate::gui::model::ColorMode,
    fill: Color32,
    text: Color32,
) {
    painter.circle_filled(center, radius, fill.gamma_multiply(0.9));
    // A ring split by class share: the cluster's make-up at a glance.
    let total = count.max(1) as f32;
    let mut angle = -std::f32::consts::FRAC_PI_2;
    for (k, &n) in by_class.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let sweep = std::f32::consts::TAU * n as f32 / total;
        let steps = ((sweep / 0.15).ceil() as usize).max(2);
        let points: Vec<Pos2> = (0..=steps)
            .map(|s| {
                let t = angle + sweep * s as f32 / steps as f32;
                center + Vec2::new(t.cos(), t.sin()) * (radius - 2.5)
            })
            .collect();
        painter.add(Shape::line(
            points,
            Stroke::new(5.0, tokens::class_color(mode, k)),
        ));
        angle += sweep;
    }
    painter.text(
        center,
        egui::Align2::CENTER_CENTER,
        short_count(count),
        egui::FontId::proportional(12.0),
        text,
    );
}

/// Centres and zooms the map on the devices that pass the filter.
fn fit(map: &mut MapState, cx: &ViewContext<'_>, width_px: f32) {
    let Some(model) = cx.model else {
        return;
    };
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for &i in &cx.derived.filtered {
        let (x, y) = (
            f64::from(model.map_x[i as usize]),
            f64::from(model.map_y[i as usize]),
        );
        b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    if b[0] > b[2] {
        return;
    }
    let span = (b[2] - b[0]).max(b[3] - b[1]).max(1e-6);
    // The whole world is 256 * 2^zoom points wide.
    let zoom = (f64::from(width_px) / (256.0 * span)).log2() - 0.3;
    let (lon, lat) = inverse_mercator(f64::midpoint(b[0], b[2]), f64::midpoint(b[1], b[3]));
    map.focus(lat, lon, zoom);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: 3 devices sat under New York's cluster of 174. Whatever the layout, no two
    /// placed discs overlap, and one that was in the way lands next to the one it was under.
    #[test]
    fn placed_clusters_never_overlap_and_a_small_one_lands_beside_the_large_one() {
        let mut placer = Placer::default();
        let big = Pos2::new(400.0, 300.0);
        let r_big = cluster_radius(174);
        assert_eq!(placer.place(big, r_big), big, "the first disc stays");
        // A small cluster right under the big one, and many more piled on the same spot.
        let r_small = cluster_radius(3);
        let small = placer.place(big + Vec2::new(5.0, 2.0), r_small);
        assert_ne!(small, big + Vec2::new(5.0, 2.0), "moved out from under");
        let d = small.distance(big);
        assert!(
            d >= r_big + r_small + PLACE_GAP - 0.01 && d <= r_big + r_small + PLACE_GAP + 0.01,
            "on the ring just outside the big one: {d}"
        );
        assert!(small.x > big.x, "on the side it lay: {small:?}");
        // Another large cluster whose centroid is close to the first one's, then a crowd of
        // small ones and markers at pseudo-random spots around them.
        placer.place(big + Vec2::new(-40.0, 10.0), cluster_radius(90));
        let mut seed = 17u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((seed >> 8) % 200) as f32 - 100.0
        };
        for k in 0..120 {
            let at = big + Vec2::new(next(), next());
            if k % 3 == 0 {
                placer.place(at, tokens::MARKER_RADIUS);
            } else {
                placer.place(at, cluster_radius(2 + k));
            }
        }
        for (i, &(p, r)) in placer.discs.iter().enumerate() {
            for &(q, s) in &placer.discs[..i] {
                assert!(
                    p.distance(q) >= r + s + PLACE_GAP - 0.01,
                    "{p:?} r {r} overlaps {q:?} r {s}"
                );
            }
        }
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(short_count(950), "950");
        assert_eq!(short_count(12_345), "12k");
        assert_eq!(short_count(4_500), "4.5k");
        assert_eq!(short_count(1_200_000), "1.2M");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(7), "7");
        assert_eq!(grouped(1_171), "1,171");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }

    #[test]
    fn a_highlight_marks_exactly_its_devices_and_clears() {
        let mut m = MapState::default();
        m.set_highlight("affected".into(), vec![9, 3, 3]);
        let h = m.highlight.as_ref().expect("set");
        assert_eq!(h.devices, [3, 9]);
        assert!(h.contains(3) && h.contains(9));
        assert!(!h.contains(4) && !h.contains(1_000));
        m.apply(&egui::Context::default(), MapCommand::ClearHighlight);
        assert!(m.highlight.is_none());
    }

    #[test]
    fn saved_views_restore() {
        let mut m = MapState::default();
        m.restore(Some((52.5, 13.4)), 7.0);
        let (center, zoom) = m.view();
        let (lat, lon) = center.expect("detached at the saved centre");
        assert!((lat - 52.5).abs() < 1e-9 && (lon - 13.4).abs() < 1e-9);
        assert_eq!(zoom, 7.0);
        assert!(!m.fit_pending, "a saved view is kept");
        m.restore(None, 12.0);
        assert_eq!(m.view().1, HOME.2);
        assert!(
            m.fit_pending,
            "no saved view: the fleet is fitted once loaded"
        );
    }
}
