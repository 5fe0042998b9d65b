//! The offline basemap: Natural Earth land and country borders, shipped in
//! `assets/basemap.bin`, rasterised into 256-pixel Web Mercator tiles.
//!
//! [`Outlines::parse`] reads the file (format in `tools/basemap.py`), [`rasterise`] draws one
//! tile as plain RGBA pixels (pure, tested), and [`BasemapTiles`] implements walkers' `Tiles`
//! for the map: tiles are drawn on a named worker thread and kept in a bounded cache; the UI
//! thread only uploads finished pixels, and shows a lower-zoom tile scaled up until the exact
//! one is ready.
//!
//! Deliberately not here: MBTiles files and online tile servers (`gui::tiles`, drawn over this
//! basemap), labels, roads and rivers. The data is 1:50m, so detail stops growing beyond zoom 8 or so.

// Geometry reads best in the usual single letters (points a, b; coordinates x, y; parameter t).
#![allow(clippy::many_single_char_names)]

use egui::{Color32, ColorImage, Rect, TextureHandle, TextureOptions, pos2};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use walkers::sources::Attribution;
use walkers::{Tile, TileId, TilePiece, Tiles};

/// The basemap compiled into the binary, so the map works with no files and no network.
pub static BUILT_IN: &[u8] = include_bytes!("../../../assets/basemap.bin");

/// Side of a tile in pixels.
pub const TILE_PX: u32 = 256;

const MAGIC: &[u8; 8] = b"CVYMAP01";
/// Web Mercator stops here; Antarctica's ring goes down to -90.
const MAX_LAT_DEG: f64 = 85.051_128_78;
/// Sub-scanlines per pixel row: vertical anti-aliasing of coastlines.
const SUBSAMPLES: usize = 4;

/// Why a basemap file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasemapError {
    /// The file does not start with `CVYMAP01`.
    #[error("basemap: not a Convoy basemap file (bad magic)")]
    BadMagic,
    /// The file ends inside a header, a count or a line.
    #[error("basemap: truncated at byte {0}")]
    Truncated(usize),
}

/// A line in normalised Web Mercator coordinates (x and y from 0 to 1, y down), with its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Polyline {
    pub points: Vec<[f64; 2]>,
    /// min x, min y, max x, max y.
    pub bounds: [f64; 4],
}

/// Land rings (filled, even-odd) and border lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlines {
    pub land: Vec<Polyline>,
    pub borders: Vec<Polyline>,
}

/// Normalised Web Mercator coordinates of a point in degrees: x and y in 0..1, y growing south.
pub fn mercator(lon_deg: f64, lat_deg: f64) -> [f64; 2] {
    let lat = lat_deg.clamp(-MAX_LAT_DEG, MAX_LAT_DEG).to_radians();
    let x = (lon_deg + 180.0) / 360.0;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0;
    [x, y]
}

/// Longitude and latitude in degrees of normalised Web Mercator coordinates.
pub fn inverse_mercator(x: f64, y: f64) -> (f64, f64) {
    let lon = x * 360.0 - 180.0;
    let n = std::f64::consts::PI * (1.0 - 2.0 * y);
    let lat = n.sinh().atan().to_degrees();
    (lon, lat)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BasemapError> {
        let end = self.at + N;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(BasemapError::Truncated(self.at))?;
        self.at = end;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, BasemapError> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    fn line(&mut self) -> Result<Polyline, BasemapError> {
        let n = self.u32()? as usize;
        // Each point is 4 bytes: refuse a count the file cannot hold before allocating for it.
        if n.saturating_mul(4) > self.bytes.len().saturating_sub(self.at) {
            return Err(BasemapError::Truncated(self.at));
        }
        let mut points = Vec::with_capacity(n);
        let mut bounds = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for _ in 0..n {
            let qx = i16::from_le_bytes(self.take::<2>()?);
            let qy = i16::from_le_bytes(self.take::<2>()?);
            let p = mercator(
                f64::from(qx) * 180.0 / 32767.0,
                f64::from(qy) * 90.0 / 32767.0,
            );
            bounds = [
                bounds[0].min(p[0]),
                bounds[1].min(p[1]),
                bounds[2].max(p[0]),
                bounds[3].max(p[1]),
            ];
            points.push(p);
        }
        Ok(Polyline { points, bounds })
    }
}

impl Outlines {
    /// Reads a basemap file (see `tools/basemap.py`).
    pub fn parse(bytes: &[u8]) -> Result<Self, BasemapError> {
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(BasemapError::BadMagic);
        }
        let mut r = Reader { bytes, at: 8 };
        let rings = r.u32()?;
        let borders = r.u32()?;
        let land = (0..rings).map(|_| r.line()).collect::<Result<_, _>>()?;
        let borders = (0..borders).map(|_| r.line()).collect::<Result<_, _>>()?;
        Ok(Self { land, borders })
    }

    /// The built-in basemap.
    pub fn built_in() -> Result<Self, BasemapError> {
        Self::parse(BUILT_IN)
    }
}

/// The colours of a basemap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Palette {
    pub water: Color32,
    pub land: Color32,
    pub coast: Color32,
    pub border: Color32,
}

/// Where a tile lies, in normalised coordinates, and how to map them to its pixels.
#[derive(Debug, Clone, Copy)]
struct TileFrame {
    scale: f64,
    origin: [f64; 2],
    bounds: [f64; 4],
}

impl TileFrame {
    fn new(zoom: u8, x: u32, y: u32, size: u32) -> Self {
        let n = f64::from(1u32 << zoom.min(30));
        let x0 = f64::from(x) / n;
        let y0 = f64::from(y) / n;
        // A pixel of margin, so that lines just outside still touch the edge pixels.
        let margin = 2.0 / (n * f64::from(size));
        Self {
            scale: n * f64::from(size),
            origin: [x0, y0],
            bounds: [
                x0 - margin,
                y0 - margin,
                x0 + 1.0 / n + margin,
                y0 + 1.0 / n + margin,
            ],
        }
    }

    fn touches(&self, b: &[f64; 4]) -> bool {
        b[0] <= self.bounds[2]
            && b[2] >= self.bounds[0]
            && b[1] <= self.bounds[3]
            && b[3] >= self.bounds[1]
    }

    fn px(&self, p: [f64; 2]) -> [f64; 2] {
        [
            (p[0] - self.origin[0]) * self.scale,
            (p[1] - self.origin[1]) * self.scale,
        ]
    }
}

/// Draws tile `(zoom, x, y)` of `size` pixels: water, land filled with the even-odd rule and
/// anti-aliased, coastlines and borders as thin lines. Returns row-major pixels.
pub fn rasterise(
    outlines: &Outlines,
    zoom: u8,
    x: u32,
    y: u32,
    size: u32,
    palette: &Palette,
) -> Vec<Color32> {
    let frame = TileFrame::new(zoom, x, y, size);
    let side = size as usize;
    let rows = side * SUBSAMPLES;
    let mut crossings: Vec<Vec<f32>> = vec![Vec::new(); rows];
    let mut coast = vec![0.0f32; side * side];
    let mut borders = vec![0.0f32; side * side];
    for ring in outlines.land.iter().filter(|r| frame.touches(&r.bounds)) {
        let n = ring.points.len();
        for i in 0..n {
            let a = frame.px(ring.points[i]);
            let b = frame.px(ring.points[(i + 1) % n]);
            add_crossings(&mut crossings, a, b, side);
            stroke(&mut coast, side, a, b, 0.55);
        }
    }
    for line in outlines.borders.iter().filter(|l| frame.touches(&l.bounds)) {
        for w in line.points.windows(2) {
            stroke(&mut borders, side, frame.px(w[0]), frame.px(w[1]), 0.8);
        }
    }
    let mut cover = vec![0.0f32; side * side];
    for (sub_row, xs) in crossings.iter_mut().enumerate() {
        if xs.len() < 2 {
            continue;
        }
        xs.sort_unstable_by(f32::total_cmp);
        let row = &mut cover[(sub_row / SUBSAMPLES) * side..][..side];
        for pair in xs.chunks_exact(2) {
            fill_span(row, pair[0], pair[1], 1.0 / SUBSAMPLES as f32);
        }
    }
    cover
        .iter()
        .zip(&coast)
        .zip(&borders)
        .map(|((&c, &k), &b)| {
            let base = mix(palette.water, palette.land, c.min(1.0));
            let base = mix(base, palette.coast, k);
            mix(base, palette.border, b)
        })
        .collect()
}

/// Records where edge `a`–`b` crosses each sub-scanline of the tile.
fn add_crossings(crossings: &mut [Vec<f32>], a: [f64; 2], b: [f64; 2], side: usize) {
    if a[1] == b[1] {
        return;
    }
    let sub = SUBSAMPLES as f64;
    let (lo, hi) = if a[1] < b[1] { (a, b) } else { (b, a) };
    // Sub-scanline k samples y = (k + 0.5) / SUBSAMPLES; the edge covers lo.y <= y < hi.y.
    let first = ((lo[1] * sub - 0.5).ceil()).max(0.0);
    let last = ((hi[1] * sub - 0.5).ceil() - 1.0).min((side * SUBSAMPLES) as f64 - 1.0);
    if first > last {
        return;
    }
    let slope = (hi[0] - lo[0]) / (hi[1] - lo[1]);
    let mut k = first;
    while k <= last {
        let y = (k + 0.5) / sub;
        let x = lo[0] + (y - lo[1]) * slope;
        // Crossings far outside only matter for parity: clamp them just outside the tile.
        crossings[k as usize].push(x.clamp(-1.0, side as f64 + 1.0) as f32);
        k += 1.0;
    }
}

/// Adds `weight` of coverage to the pixels of `row` between `x0` and `x1`, with partial
/// coverage at both ends.
fn fill_span(row: &mut [f32], x0: f32, x1: f32, weight: f32) {
    let width = row.len() as f32;
    let (x0, x1) = (x0.clamp(0.0, width), x1.clamp(0.0, width));
    if x1 <= x0 {
        return;
    }
    let (first, last) = (x0.floor() as usize, (x1.ceil() as usize).min(row.len()));
    for (i, px) in row.iter_mut().enumerate().take(last).skip(first) {
        let left = (i as f32).max(x0);
        let right = ((i + 1) as f32).min(x1);
        *px += (right - left).max(0.0) * weight;
    }
}

/// Marks the pixels along segment `a`–`b` with `alpha` (the strongest mark wins, so overlapping
/// samples do not darken a line).
fn stroke(buf: &mut [f32], side: usize, a: [f64; 2], b: [f64; 2], alpha: f32) {
    let limit = side as f64 + 1.0;
    if (a[0] < -1.0 && b[0] < -1.0)
        || (a[1] < -1.0 && b[1] < -1.0)
        || (a[0] > limit && b[0] > limit)
        || (a[1] > limit && b[1] > limit)
    {
        return;
    }
    let len = (b[0] - a[0]).hypot(b[1] - a[1]);
    // Very long segments only happen at deep zoom; cap the samples, the line is then off-tile.
    let steps = (len * 1.5).ceil().clamp(1.0, 4096.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let x = a[0] + (b[0] - a[0]) * t;
        let y = a[1] + (b[1] - a[1]) * t;
        if x >= 0.0 && y >= 0.0 && x < side as f64 && y < side as f64 {
            let i = y as usize * side + x as usize;
            buf[i] = buf[i].max(alpha);
        }
    }
}

fn mix(a: Color32, b: Color32, t: f32) -> Color32 {
    if t <= 0.0 {
        return a;
    }
    let t = t.min(1.0);
    let ch = |x: u8, y: u8| (f32::from(x) + (f32::from(y) - f32::from(x)) * t).round() as u8;
    Color32::from_rgb(ch(a.r(), b.r()), ch(a.g(), b.g()), ch(a.b(), b.b()))
}

/// How many tiles the cache keeps on the GPU (256 × 256 × 4 bytes each: 64 MB at most).
const CACHE_TILES: usize = 256;

/// walkers tiles drawn from [`Outlines`] on a worker thread.
pub struct BasemapTiles {
    ctx: egui::Context,
    requests: SyncSender<TileId>,
    results: Receiver<(TileId, Vec<Color32>)>,
    cache: HashMap<TileId, TextureHandle>,
    order: VecDeque<TileId>,
    pending: HashSet<TileId>,
}

impl BasemapTiles {
    /// Starts the worker thread that rasterises tiles in `palette`.
    pub fn new(
        ctx: &egui::Context,
        outlines: Arc<Outlines>,
        palette: Palette,
    ) -> std::io::Result<Self> {
        let (requests, jobs) = mpsc::sync_channel::<TileId>(64);
        let (done, results) = mpsc::sync_channel(64);
        let repaint = ctx.clone();
        std::thread::Builder::new()
            .name("basemap-tiles".into())
            .spawn(move || {
                while let Ok(id) = jobs.recv() {
                    let pixels = rasterise(&outlines, id.zoom, id.x, id.y, TILE_PX, &palette);
                    if done.send((id, pixels)).is_err() {
                        return;
                    }
                    repaint.request_repaint();
                }
            })?;
        Ok(Self {
            ctx: ctx.clone(),
            requests,
            results,
            cache: HashMap::new(),
            order: VecDeque::new(),
            pending: HashSet::new(),
        })
    }

    /// Moves finished tiles into the texture cache.
    fn receive(&mut self) {
        while let Ok((id, pixels)) = self.results.try_recv() {
            self.pending.remove(&id);
            let side = TILE_PX as usize;
            let image = ColorImage::new([side, side], pixels);
            let texture = self.ctx.load_texture(
                format!("basemap-{}-{}-{}", id.zoom, id.x, id.y),
                image,
                TextureOptions::LINEAR,
            );
            self.cache.insert(id, texture);
            self.order.push_back(id);
            while self.order.len() > CACHE_TILES {
                if let Some(old) = self.order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
    }

    fn request(&mut self, id: TileId) {
        if self.pending.contains(&id) {
            return;
        }
        match self.requests.try_send(id) {
            Ok(()) => {
                self.pending.insert(id);
            }
            // The worker is busy: ask again next frame (walkers asks every frame).
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// Tiles drawn or being drawn (for tests and the status line).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Tiles asked of the worker and not yet received.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// A lower-zoom tile and the part of it that covers `id`.
pub(crate) fn ancestor(id: TileId, levels: u8) -> (TileId, Rect) {
    let d = 1u32 << levels;
    let parent = TileId {
        x: id.x / d,
        y: id.y / d,
        zoom: id.zoom - levels,
    };
    let f = 1.0 / d as f32;
    let (ux, uy) = ((id.x % d) as f32 * f, (id.y % d) as f32 * f);
    (
        parent,
        Rect::from_min_max(pos2(ux, uy), pos2(ux + f, uy + f)),
    )
}

impl Tiles for BasemapTiles {
    fn at(&mut self, tile_id: TileId) -> Option<TilePiece> {
        self.receive();
        if let Some(t) = self.cache.get(&tile_id) {
            return Some(TilePiece::new(
                Tile::Raster(t.clone()),
                Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
            ));
        }
        self.request(tile_id);
        (1..=tile_id.zoom.min(8)).find_map(|levels| {
            let (parent, uv) = ancestor(tile_id, levels);
            self.cache
                .get(&parent)
                .map(|t| TilePiece::new(Tile::Raster(t.clone()), uv))
        })
    }

    fn attribution(&self) -> Attribution {
        Attribution {
            text: "Natural Earth (public domain)",
            url: "https://www.naturalearthdata.com",
            logo_light: None,
            logo_dark: None,
        }
    }

    fn tile_size(&self) -> u32 {
        TILE_PX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PALETTE: Palette = Palette {
        water: Color32::from_rgb(0, 0, 255),
        land: Color32::from_rgb(0, 255, 0),
        coast: Color32::from_rgb(0, 0, 0),
        border: Color32::from_rgb(255, 0, 0),
    };

    fn pixel_at(outlines: &Outlines, zoom: u8, lon: f64, lat: f64) -> Color32 {
        let [x, y] = mercator(lon, lat);
        let n = f64::from(1u32 << zoom);
        let (tx, ty) = ((x * n) as u32, (y * n) as u32);
        let pixels = rasterise(outlines, zoom, tx, ty, TILE_PX, &PALETTE);
        let px = ((x * n - f64::from(tx)) * f64::from(TILE_PX)) as usize;
        let py = ((y * n - f64::from(ty)) * f64::from(TILE_PX)) as usize;
        pixels[py * TILE_PX as usize + px]
    }

    #[test]
    fn built_in_basemap_parses() {
        let o = Outlines::built_in().expect("the shipped basemap parses");
        assert!(o.land.len() > 1000, "{} land rings", o.land.len());
        assert!(o.borders.len() > 300, "{} borders", o.borders.len());
        assert!(o.land.iter().all(|r| r.points.len() >= 3));
    }

    #[test]
    fn bad_files_are_refused_not_panicked_on() {
        assert_eq!(Outlines::parse(b"nope"), Err(BasemapError::BadMagic));
        assert_eq!(
            Outlines::parse(b"CVYMAP01\x01\0\0"),
            Err(BasemapError::Truncated(8))
        );
        // One ring claiming a billion points in a 20-byte file.
        let mut f = b"CVYMAP01".to_vec();
        f.extend(1u32.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(1_000_000_000u32.to_le_bytes());
        assert_eq!(Outlines::parse(&f), Err(BasemapError::Truncated(20)));
        let cut = &BUILT_IN[..BUILT_IN.len() - 3];
        assert!(matches!(
            Outlines::parse(cut),
            Err(BasemapError::Truncated(_))
        ));
    }

    #[test]
    fn mercator_round_trips() {
        for (lon, lat) in [(13.4, 52.5), (-74.0, 40.7), (151.2, -33.9), (0.0, 0.0)] {
            let [x, y] = mercator(lon, lat);
            let (lon2, lat2) = inverse_mercator(x, y);
            assert!(
                (lon - lon2).abs() < 1e-9 && (lat - lat2).abs() < 1e-9,
                "{lon},{lat}"
            );
        }
        assert_eq!(mercator(-180.0, 0.0), [0.0, 0.5]);
    }

    #[test]
    fn cities_are_on_land_and_oceans_are_water() {
        let o = Outlines::built_in().expect("basemap");
        // Inland cities, several zoom levels.
        for zoom in [2, 5, 8] {
            assert_eq!(
                pixel_at(&o, zoom, 13.405, 52.52),
                PALETTE.land,
                "Berlin z{zoom}"
            );
            assert_eq!(
                pixel_at(&o, zoom, -87.63 - 1.0, 41.878 + 0.5),
                PALETTE.land,
                "Illinois z{zoom}"
            );
            assert_eq!(
                pixel_at(&o, zoom, 133.0, -25.0),
                PALETTE.land,
                "Australia z{zoom}"
            );
        }
        assert_eq!(pixel_at(&o, 3, -30.0, 30.0), PALETTE.water, "mid-Atlantic");
        assert_eq!(pixel_at(&o, 3, -140.0, 0.0), PALETTE.water, "Pacific");
        // Chukotka crosses the antimeridian: it is land on its side, and the seas at its
        // latitude elsewhere stay water (once, a ring jumping +180 to -180 painted a band).
        assert_eq!(pixel_at(&o, 4, 175.0, 67.0), PALETTE.land, "Chukotka");
        assert_eq!(pixel_at(&o, 3, -5.0, 70.0), PALETTE.water, "Greenland Sea");
        assert_eq!(pixel_at(&o, 3, -60.0, 68.0), PALETTE.water, "Baffin Bay");
        // The Caspian Sea is a hole in Eurasia: even-odd fill leaves it water.
        assert_eq!(pixel_at(&o, 5, 51.0, 42.0), PALETTE.water, "Caspian");
    }

    #[test]
    fn borders_are_drawn_between_countries() {
        let o = Outlines::built_in().expect("basemap");
        // The tile holding Germany at zoom 5 has border pixels; one in the open ocean has none.
        let [x, y] = mercator(10.0, 51.0);
        let pixels = rasterise(
            &o,
            5,
            (x * 32.0) as u32,
            (y * 32.0) as u32,
            TILE_PX,
            &PALETTE,
        );
        let reddish = pixels.iter().filter(|p| p.r() > 150 && p.g() < 120).count();
        assert!(reddish > 200, "{reddish} border pixels");
        let [x, y] = mercator(-35.0, 25.0);
        let pixels = rasterise(
            &o,
            5,
            (x * 32.0) as u32,
            (y * 32.0) as u32,
            TILE_PX,
            &PALETTE,
        );
        assert!(pixels.iter().all(|p| *p == PALETTE.water));
    }

    #[test]
    fn ancestors_cover_the_right_quarter() {
        let id = TileId {
            x: 5,
            y: 2,
            zoom: 3,
        };
        let (parent, uv) = ancestor(id, 1);
        assert_eq!(
            parent,
            TileId {
                x: 2,
                y: 1,
                zoom: 2
            }
        );
        assert_eq!(uv, Rect::from_min_max(pos2(0.5, 0.0), pos2(1.0, 0.5)));
    }
}
