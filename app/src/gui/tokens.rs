//! Design tokens: every colour and size the console uses, in one place, for both themes.
//!
//! Class colours are chosen to stay distinguishable for the common forms of colour blindness
//! (the Okabe–Ito palette) and are the same in both themes; the basemap is muted so that
//! vehicles stand out.

use egui::Color32;

use crate::gui::basemap::Palette;
use crate::gui::model::ColorMode;

/// Okabe–Ito colours.
const GREY: Color32 = Color32::from_rgb(0x99, 0x99, 0x99);
const SKY: Color32 = Color32::from_rgb(0x56, 0xB4, 0xE9);
const BLUE: Color32 = Color32::from_rgb(0x00, 0x72, 0xB2);
const ORANGE: Color32 = Color32::from_rgb(0xE6, 0x9F, 0x00);
const GREEN: Color32 = Color32::from_rgb(0x00, 0x9E, 0x73);
const VERMILION: Color32 = Color32::from_rgb(0xD5, 0x5E, 0x00);
const PURPLE: Color32 = Color32::from_rgb(0xCC, 0x79, 0xA7);
const YELLOW: Color32 = Color32::from_rgb(0xF0, 0xE4, 0x42);
/// Devices outside the rollout on the rollout-state map: darker than the "no report" grey.
const NOT_IN_ROLLOUT: Color32 = Color32::from_rgb(0x5a, 0x5a, 0x5a);

/// The colour of class `k` in `mode` (see `ColorMode::class_names`).
pub fn class_color(mode: ColorMode, k: usize) -> Color32 {
    let table: &[Color32] = match mode {
        ColorMode::UpdateState => &[GREY, BLUE, SKY, ORANGE, GREEN, VERMILION, PURPLE],
        ColorMode::Health => &[GREEN, YELLOW, GREY, ORANGE, VERMILION],
        // Outside the rollout recedes; planned is the update state's "idle" blue; silent is
        // the one colour the other modes do not use for a state.
        ColorMode::RolloutState => &[
            NOT_IN_ROLLOUT,
            BLUE,
            SKY,
            ORANGE,
            GREEN,
            VERMILION,
            PURPLE,
            YELLOW,
        ],
    };
    table.get(k).copied().unwrap_or(GREY)
}

/// Basemap colours for dark and light themes.
pub fn basemap_palette(dark: bool) -> Palette {
    if dark {
        Palette {
            water: Color32::from_rgb(0x14, 0x1c, 0x26),
            land: Color32::from_rgb(0x2b, 0x30, 0x36),
            coast: Color32::from_rgb(0x4a, 0x55, 0x60),
            border: Color32::from_rgb(0x55, 0x5c, 0x66),
        }
    } else {
        Palette {
            water: Color32::from_rgb(0xc9, 0xd9, 0xe6),
            land: Color32::from_rgb(0xf2, 0xf0, 0xea),
            coast: Color32::from_rgb(0x9a, 0xab, 0xba),
            border: Color32::from_rgb(0xb8, 0xb0, 0xa8),
        }
    }
}

/// Link state colours for the status bar.
pub const OK: Color32 = GREEN;
pub const WARN: Color32 = ORANGE;
pub const BAD: Color32 = VERMILION;
pub const MUTED: Color32 = GREY;

/// Marker radius of one vehicle, in points.
pub const MARKER_RADIUS: f32 = 4.0;
/// Grid square of the map aggregation, in screen points at the grid's zoom level.
pub const CLUSTER_CELL_PX: f64 = 64.0;
/// A grid square with at most this many vehicles shows them one by one.
pub const MARKERS_PER_CELL: u32 = 12;
/// Height of a table row, in points.
pub const ROW_HEIGHT: f32 = 20.0;
/// War-room type sizes.
pub const WALL_TITLE: f32 = 44.0;
pub const WALL_NUMBER: f32 = 64.0;
pub const WALL_TEXT: f32 = 24.0;

/// A small filled circle in `color`, laid out like a glyph (the default fonts have no bullet).
pub fn swatch(ui: &mut egui::Ui, color: Color32) -> egui::Response {
    let size = ui.text_style_height(&egui::TextStyle::Body);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(size * 0.8, size), egui::Sense::hover());
    ui.painter()
        .circle_filled(rect.center(), size * 0.32, color);
    response
}
