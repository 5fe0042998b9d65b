//! Map tiles beyond the built-in basemap: a raster MBTiles file (`convoy gui --tiles FILE`) or
//! an online XYZ tile server (`convoy gui --tile-url URL`, off unless asked for), drawn over the
//! offline basemap.
//!
//! [`MbTiles`] reads one tile's bytes from an MBTiles file (rows are stored in TMS order, so
//! the row is flipped, `store::mbtiles::tms_row`); [`XyzClient`] fetches one from a tile server through a
//! small disk cache; [`decode`] turns PNG or JPEG bytes into pixels. [`SourceTiles`] runs these
//! on named worker threads: the UI thread only queues tile ids and uploads finished pixels,
//! and finished tiles are kept in a bounded cache. [`LayeredTiles`] is what the map draws: the
//! source's tile where it has one, its lower-zoom tile scaled up while the exact one is on its
//! way, and the offline basemap where the source has no tile, a tile that does not decode, or
//! a server that does not answer. Nothing here panics on a bad file or a bad answer.
//!
//! Deliberately not here: vector tiles (MBTiles `pbf`), a file dialog to open MBTiles (the
//! path is given on the command line), and honouring a server's cache headers (the disk cache
//! keeps a tile for [`DISK_CACHE_MAX_AGE`]).

use anyhow::{Context as _, Result, bail};
use egui::{ColorImage, Rect, TextureHandle, TextureOptions, pos2};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walkers::sources::Attribution;
use walkers::{Tile, TileId, TilePiece, Tiles};

use crate::gui::basemap::{BasemapTiles, TILE_PX, ancestor};
use crate::store::mbtiles;

/// How many decoded tiles the cache keeps (textures of up to 256 × 256 × 4 bytes: 64 MB).
pub const CACHE_TILES: usize = 256;
/// Tile ids waiting for the workers at most; the map asks again next frame when full.
const QUEUE: usize = 64;
/// Worker threads per source: a tile server answers several requests at once.
const WORKERS: usize = 2;
/// How long an online tile is kept on disk before it is fetched again.
pub const DISK_CACHE_MAX_AGE: Duration = Duration::from_hours(7 * 24);
/// How long one online tile may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest tile accepted, from a file or a server (a 256-pixel raster tile is far smaller).
const MAX_TILE_BYTES: usize = 4 << 20;

/// Where the map's tiles come from, besides the built-in basemap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TileSpec {
    /// A raster MBTiles file (PNG or JPEG tiles).
    MbTiles(PathBuf),
    /// An XYZ tile server: `url` holds `{z}`, `{x}` and `{y}`; tiles are kept in `cache_dir`.
    Xyz {
        url: String,
        attribution: String,
        cache_dir: Option<PathBuf>,
    },
}

impl TileSpec {
    /// An online source with the default disk cache and, unless given, an attribution naming
    /// the server.
    pub fn online(url: &str, attribution: Option<&str>) -> Result<Self> {
        check_template(url)?;
        let attribution = attribution.map_or_else(
            || format!("Tiles: {} (online)", host_of(url)),
            ToOwned::to_owned,
        );
        Ok(Self::Xyz {
            url: url.to_owned(),
            attribution,
            cache_dir: Some(default_disk_cache(url)),
        })
    }
}

/// A raster MBTiles file as the map reads it: the store's reader ([`crate::store::mbtiles`],
/// where its SQL lives) with the attribution the map shows.
#[derive(Debug)]
pub struct MbTiles(mbtiles::MbTiles);

impl MbTiles {
    /// Opens `path` and checks that it is a raster MBTiles file.
    pub fn open(path: &Path) -> Result<Self> {
        mbtiles::MbTiles::open(path).map(Self)
    }

    /// The attribution to show: the file's own, else its name.
    pub fn attribution(&self) -> String {
        match self.0.metadata("attribution") {
            Ok(Some(a)) if !a.trim().is_empty() => format!("Tiles: {}", strip_html(&a)),
            _ => {
                let path = self.0.path();
                format!(
                    "Tiles: {}",
                    path.file_name().map_or_else(
                        || path.display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    )
                )
            }
        }
    }

    /// The stored bytes of tile `id` (XYZ numbering), `None` if the file has no such tile.
    pub fn tile_bytes(&self, id: TileId) -> Result<Option<Vec<u8>>> {
        self.0.tile_bytes(id.zoom, id.x, id.y)
    }
}

/// Metadata attributions are often HTML links; the map shows plain text.
fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&copy;", "©").replace("&amp;", "&")
}

fn check_template(url: &str) -> Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--tile-url must start with http:// or https://, got {url:?}");
    }
    for part in ["{z}", "{x}", "{y}"] {
        if !url.contains(part) {
            bail!("--tile-url must contain {part}, got {url:?}");
        }
    }
    Ok(())
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The URL of tile `id` from a template with `{z}`, `{x}` and `{y}`.
pub fn tile_url(template: &str, id: TileId) -> String {
    template
        .replace("{z}", &id.zoom.to_string())
        .replace("{x}", &id.x.to_string())
        .replace("{y}", &id.y.to_string())
}

/// `$XDG_CACHE_HOME/convoy/tiles/<hash of the URL template>` (else under `~/.cache`).
pub fn default_disk_cache(template: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    // FNV-1a: a stable name per server, so two servers never share tiles.
    let hash = template.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    base.join("convoy")
        .join("tiles")
        .join(format!("{hash:016x}"))
}

/// Fetches tiles from an XYZ server, one at a time, through a disk cache.
pub struct XyzClient {
    template: String,
    cache_dir: Option<PathBuf>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for XyzClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XyzClient")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl XyzClient {
    pub fn new(template: &str, cache_dir: Option<PathBuf>) -> Result<Self> {
        check_template(template)?;
        // reqwest is built without a TLS provider of its own; rustls brings aws-lc-rs. A second
        // install (another client, another thread) is refused harmlessly.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("convoy/", env!("CARGO_PKG_VERSION")))
            .timeout(HTTP_TIMEOUT)
            .build()
            .context("building the HTTP client for map tiles")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime for map tiles")?;
        Ok(Self {
            template: template.to_owned(),
            cache_dir,
            client,
            runtime,
        })
    }

    fn disk_path(&self, id: TileId) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| {
            d.join(id.zoom.to_string())
                .join(id.x.to_string())
                .join(format!("{}.tile", id.y))
        })
    }

    /// The bytes of tile `id`: from the disk cache if fresh, else from the server (and then
    /// kept on disk). `None` when the server has no such tile (404).
    pub fn tile_bytes(&self, id: TileId) -> Result<Option<Vec<u8>>> {
        let disk = self.disk_path(id);
        if let Some(path) = &disk {
            let fresh = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < DISK_CACHE_MAX_AGE);
            if fresh && let Ok(bytes) = std::fs::read(path) {
                return Ok(Some(bytes));
            }
        }
        let url = tile_url(&self.template, id);
        let bytes = self.runtime.block_on(async {
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("fetching {url}"))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                bail!("{url} answered {status}");
            }
            let body = response
                .bytes()
                .await
                .with_context(|| format!("reading {url}"))?;
            Ok(Some(body.to_vec()))
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        // Only what decodes is kept, so a bad answer is fetched again next time.
        if let (Some(path), Ok(_)) = (&disk, decode(&bytes)) {
            write_atomically(path, &bytes);
        }
        Ok(Some(bytes))
    }
}

/// Writes `bytes` next to `path` and renames it into place; a failure only costs the cache.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let _ = crate::files::write_file(path, bytes, crate::files::FileMode::Public);
}

/// Decodes a PNG or JPEG tile into pixels.
pub fn decode(bytes: &[u8]) -> Result<ColorImage> {
    if bytes.len() > MAX_TILE_BYTES {
        bail!("tile of {} bytes is too large", bytes.len());
    }
    let image = image::load_from_memory(bytes).context("decoding a tile image")?;
    let rgba = image.to_rgba8();
    let size = [rgba.width() as usize, rgba.height() as usize];
    Ok(ColorImage::from_rgba_unmultiplied(size, rgba.as_raw()))
}

/// What a worker found for one tile.
#[derive(Debug)]
pub enum TileOutcome {
    Image(ColorImage),
    /// The source has no such tile.
    Missing,
    /// The tile could not be read or decoded; the text says why.
    Failed(String),
}

/// Reads and decodes one tile: what the workers run for each request.
pub fn load(reader: &TileReader, id: TileId) -> TileOutcome {
    let bytes = match reader {
        TileReader::MbTiles(m) => m.tile_bytes(id),
        TileReader::Xyz(c) => c.tile_bytes(id),
    };
    match bytes {
        Ok(None) => TileOutcome::Missing,
        Ok(Some(b)) => match decode(&b) {
            Ok(image) => TileOutcome::Image(image),
            Err(e) => TileOutcome::Failed(format!("tile {}/{}/{}: {e:#}", id.zoom, id.x, id.y)),
        },
        Err(e) => TileOutcome::Failed(format!("{e:#}")),
    }
}

/// One worker's reader of a source.
#[derive(Debug)]
pub enum TileReader {
    MbTiles(MbTiles),
    Xyz(XyzClient),
}

impl TileReader {
    /// Opens `spec` (each worker thread opens its own).
    pub fn open(spec: &TileSpec) -> Result<Self> {
        match spec {
            TileSpec::MbTiles(path) => MbTiles::open(path).map(Self::MbTiles),
            TileSpec::Xyz { url, cache_dir, .. } => {
                XyzClient::new(url, cache_dir.clone()).map(Self::Xyz)
            }
        }
    }
}

/// A tile in the cache: drawn, or known to be absent (then the basemap shows).
enum Entry {
    Ready(TextureHandle),
    Absent,
}

/// A tile source read and decoded on worker threads, behind a bounded cache.
pub struct SourceTiles {
    ctx: egui::Context,
    requests: SyncSender<TileId>,
    results: Receiver<(TileId, TileOutcome)>,
    cache: HashMap<TileId, Entry>,
    order: VecDeque<TileId>,
    pending: std::collections::HashSet<TileId>,
    attribution: String,
    /// Tiles that could not be read or decoded, and the latest reason.
    pub failures: u64,
    pub last_failure: Option<String>,
}

impl std::fmt::Debug for SourceTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTiles")
            .field("attribution", &self.attribution)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl SourceTiles {
    /// Opens `spec` once here (so that a bad file is reported at once) and starts the workers,
    /// each with its own reader.
    pub fn start(ctx: &egui::Context, spec: &TileSpec) -> Result<Self> {
        let first = TileReader::open(spec)?;
        let attribution = match (&first, spec) {
            (TileReader::MbTiles(m), _) => m.attribution(),
            (_, TileSpec::Xyz { attribution, .. }) => attribution.clone(),
            (TileReader::Xyz(_), TileSpec::MbTiles(_)) => String::new(),
        };
        let (requests, jobs) = std::sync::mpsc::sync_channel::<TileId>(QUEUE);
        // Results never outnumber requests waiting plus those in hand, so a worker never
        // blocks on a UI that has stopped asking.
        let (done, results) = std::sync::mpsc::sync_channel(QUEUE + WORKERS + 1);
        let jobs = Arc::new(Mutex::new(jobs));
        let mut first = Some(first);
        for n in 0..WORKERS {
            let reader = match first.take() {
                Some(r) => r,
                None => TileReader::open(spec)?,
            };
            let jobs = Arc::clone(&jobs);
            let done = done.clone();
            let repaint = ctx.clone();
            std::thread::Builder::new()
                .name(format!("map-tiles-{n}"))
                .spawn(move || {
                    loop {
                        let id = match jobs.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(id) => id,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        let outcome = load(&reader, id);
                        if done.send((id, outcome)).is_err() {
                            return;
                        }
                        repaint.request_repaint();
                    }
                })
                .context("starting a map tile thread")?;
        }
        Ok(Self {
            ctx: ctx.clone(),
            requests,
            results,
            cache: HashMap::new(),
            order: VecDeque::new(),
            pending: std::collections::HashSet::new(),
            attribution,
            failures: 0,
            last_failure: None,
        })
    }

    /// The attribution line of this source.
    pub fn attribution_text(&self) -> &str {
        &self.attribution
    }

    /// Moves finished tiles into the cache (uploading pixels is all the UI thread does).
    pub fn receive(&mut self) {
        while let Ok((id, outcome)) = self.results.try_recv() {
            self.pending.remove(&id);
            let entry = match outcome {
                TileOutcome::Image(image) => Entry::Ready(self.ctx.load_texture(
                    format!("tile-{}-{}-{}", id.zoom, id.x, id.y),
                    image,
                    TextureOptions::LINEAR,
                )),
                TileOutcome::Missing => Entry::Absent,
                TileOutcome::Failed(why) => {
                    self.failures += 1;
                    self.last_failure = Some(why);
                    Entry::Absent
                }
            };
            if self.cache.insert(id, entry).is_none() {
                self.order.push_back(id);
            }
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
            // Busy: walkers asks again next frame.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// What the source knows of `id` now, asking the workers for it if nobody has.
    pub fn lookup(&mut self, id: TileId) -> TileState {
        self.receive();
        match self.cache.get(&id) {
            Some(Entry::Ready(t)) => TileState::Ready(t.clone()),
            Some(Entry::Absent) => TileState::Absent,
            None => {
                self.request(id);
                TileState::Pending
            }
        }
    }

    /// A drawn lower-zoom tile covering `id`, and the part of it that does.
    fn ancestor_piece(&self, id: TileId) -> Option<TilePiece> {
        (1..=id.zoom.min(8)).find_map(|levels| {
            let (parent, uv) = ancestor(id, levels);
            match self.cache.get(&parent) {
                Some(Entry::Ready(t)) => Some(TilePiece::new(Tile::Raster(t.clone()), uv)),
                _ => None,
            }
        })
    }

    /// Tiles in the cache, drawn or absent.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// What a source has for one tile.
#[derive(Clone)]
pub enum TileState {
    Ready(TextureHandle),
    /// Not in the source, or unreadable: the basemap shows there.
    Absent,
    /// Asked for; not there yet.
    Pending,
}

impl std::fmt::Debug for TileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TileState::Ready(_) => "Ready",
            TileState::Absent => "Absent",
            TileState::Pending => "Pending",
        })
    }
}

/// The map's tiles for one frame: `source` over `base`.
pub struct LayeredTiles<'a> {
    pub source: &'a mut SourceTiles,
    pub base: Option<&'a mut BasemapTiles>,
}

impl Tiles for LayeredTiles<'_> {
    fn at(&mut self, tile_id: TileId) -> Option<TilePiece> {
        let base = |b: &mut Option<&mut BasemapTiles>| b.as_mut().and_then(|b| b.at(tile_id));
        match self.source.lookup(tile_id) {
            TileState::Ready(t) => Some(TilePiece::new(
                Tile::Raster(t),
                Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
            )),
            TileState::Absent => base(&mut self.base),
            TileState::Pending => self
                .source
                .ancestor_piece(tile_id)
                .or_else(|| base(&mut self.base)),
        }
    }

    fn attribution(&self) -> Attribution {
        // The map draws the attribution itself (this text is static in walkers).
        Attribution {
            text: "",
            url: "",
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
    use std::io::{Read, Write};

    fn id(zoom: u8, x: u32, y: u32) -> TileId {
        TileId { x, y, zoom }
    }

    /// A one-colour PNG tile.
    fn png(color: [u8; 3]) -> Vec<u8> {
        let img =
            image::RgbaImage::from_pixel(16, 16, image::Rgba([color[0], color[1], color[2], 255]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode a test tile");
        out.into_inner()
    }

    /// A colour that names the tile, so a lookup of the wrong row shows.
    fn color_of(zoom: u8, x: u32, y: u32) -> [u8; 3] {
        [zoom * 40, (x * 50) as u8, (y * 60) as u8 + 10]
    }

    /// An MBTiles file with every tile of zooms 0 to 2 (stored by TMS row), one corrupt blob
    /// at 2/3/0, and 2/0/3 left out.
    fn mbtiles(dir: &Path) -> PathBuf {
        let path = dir.join("fixture.mbtiles");
        let mut tiles = Vec::new();
        for zoom in 0..=2u8 {
            let n = 1u32 << zoom;
            for x in 0..n {
                for y in 0..n {
                    if (zoom, x, y) == (2, 0, 3) {
                        continue;
                    }
                    let blob = if (zoom, x, y) == (2, 3, 0) {
                        b"\x89PNG\r\n\x1a\nthis is not a picture".to_vec()
                    } else {
                        png(color_of(zoom, x, y))
                    };
                    tiles.push((zoom, x, y, blob));
                }
            }
        }
        mbtiles::write(
            &path,
            &[
                ("format", "png"),
                ("name", "fixture"),
                (
                    "attribution",
                    "<a href=\"https://example.invalid\">&copy; Fixture Maps</a>",
                ),
            ],
            tiles,
        )
        .expect("write the fixture");
        path
    }

    fn color_at_origin(outcome: &TileOutcome) -> [u8; 3] {
        match outcome {
            TileOutcome::Image(img) => {
                let c = img.pixels[0];
                [c.r(), c.g(), c.b()]
            }
            other => panic!("expected an image, got {other:?}"),
        }
    }

    #[test]
    fn mbtiles_tiles_are_found_by_xyz_id_with_the_row_flipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reader = TileReader::open(&TileSpec::MbTiles(mbtiles(dir.path()))).expect("opens");
        for (zoom, x, y) in [
            (0, 0, 0),
            (1, 0, 0),
            (1, 1, 0),
            (1, 0, 1),
            (2, 1, 2),
            (2, 3, 3),
        ] {
            assert_eq!(
                color_at_origin(&load(&reader, id(zoom, x, y))),
                color_of(zoom, x, y),
                "tile {zoom}/{x}/{y}"
            );
        }
        assert!(matches!(load(&reader, id(2, 0, 3)), TileOutcome::Missing));
        assert!(matches!(load(&reader, id(5, 0, 0)), TileOutcome::Missing));
        let TileReader::MbTiles(m) = &reader else {
            panic!("an MBTiles reader");
        };
        assert_eq!(m.attribution(), "Tiles: © Fixture Maps");
    }

    #[test]
    fn a_corrupt_tile_blob_is_a_failure_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reader = TileReader::open(&TileSpec::MbTiles(mbtiles(dir.path()))).expect("opens");
        match load(&reader, id(2, 3, 0)) {
            TileOutcome::Failed(why) => assert!(why.contains("tile 2/3/0"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn tile_urls_fill_the_template() {
        assert_eq!(
            tile_url("https://t.example/{z}/{x}/{y}.png", id(7, 68, 42)),
            "https://t.example/7/68/42.png"
        );
        assert!(TileSpec::online("https://t.example/{z}/{x}.png", None).is_err());
        assert!(TileSpec::online("ftp://t.example/{z}/{x}/{y}.png", None).is_err());
        let TileSpec::Xyz { attribution, .. } =
            TileSpec::online("https://t.example/{z}/{x}/{y}.png", None).expect("valid")
        else {
            panic!("an online spec");
        };
        assert_eq!(attribution, "Tiles: t.example (online)");
    }

    /// A tile server on 127.0.0.1: `/z/x/y.png` answers the tile's colour, `/…/bad.png` a
    /// corrupt body, anything else 404. Counts requests.
    fn serve() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let parts: Vec<u32> = path
                    .trim_start_matches('/')
                    .trim_end_matches(".png")
                    .split('/')
                    .filter_map(|p| p.parse().ok())
                    .collect();
                let (status, body) = if path.ends_with("/9.png") {
                    ("200 OK", b"not an image".to_vec())
                } else if parts.len() == 3 && parts[0] <= 3 {
                    ("200 OK", png(color_of(parts[0] as u8, parts[1], parts[2])))
                } else {
                    ("404 Not Found", Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (format!("http://{addr}/{{z}}/{{x}}/{{y}}.png"), hits)
    }

    #[test]
    fn online_tiles_come_from_the_server_then_from_the_disk_cache() {
        let (url, hits) = serve();
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TileSpec::Xyz {
            url,
            attribution: "Tiles: test server".into(),
            cache_dir: Some(dir.path().join("cache")),
        };
        let reader = TileReader::open(&spec).expect("client");
        assert_eq!(
            color_at_origin(&load(&reader, id(3, 2, 5))),
            color_of(3, 2, 5)
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Again: from the disk cache, the server is not asked.
        assert_eq!(
            color_at_origin(&load(&reader, id(3, 2, 5))),
            color_of(3, 2, 5)
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(dir.path().join("cache/3/2/5.tile").is_file());
        // 404 is a missing tile; a body that is not an image is a failure, and is not cached.
        assert!(matches!(load(&reader, id(9, 0, 0)), TileOutcome::Missing));
        assert!(matches!(load(&reader, id(3, 1, 9)), TileOutcome::Failed(_)));
        assert!(!dir.path().join("cache/3/1/9.tile").exists());
    }

    #[test]
    fn a_server_that_is_not_there_is_a_failure_not_a_panic() {
        // Bind and drop: nothing listens on that port now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let spec = TileSpec::Xyz {
            url: format!("http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"),
            attribution: String::new(),
            cache_dir: None,
        };
        let reader = TileReader::open(&spec).expect("client");
        assert!(matches!(load(&reader, id(1, 0, 0)), TileOutcome::Failed(_)));
    }

    /// Runs `lookup` until the workers have answered for `tile`.
    fn settled(tiles: &mut SourceTiles, tile: TileId) -> TileState {
        for _ in 0..500 {
            match tiles.lookup(tile) {
                TileState::Pending => std::thread::sleep(Duration::from_millis(5)),
                done => return done,
            }
        }
        panic!("tile {tile:?} never arrived");
    }

    #[test]
    fn the_layered_source_falls_back_to_the_basemap_where_it_has_no_good_tile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = egui::Context::default();
        let mut source =
            SourceTiles::start(&ctx, &TileSpec::MbTiles(mbtiles(dir.path()))).expect("starts");
        assert_eq!(source.attribution_text(), "Tiles: © Fixture Maps");
        let good = id(2, 1, 2);
        assert!(matches!(settled(&mut source, good), TileState::Ready(_)));
        assert!(matches!(
            settled(&mut source, id(2, 0, 3)),
            TileState::Absent
        ));
        assert!(matches!(
            settled(&mut source, id(2, 3, 0)),
            TileState::Absent
        ));
        assert_eq!(source.failures, 1, "the corrupt tile counts as a failure");
        assert!(
            source
                .last_failure
                .as_deref()
                .is_some_and(|w| w.contains("2/3/0")),
            "{:?}",
            source.last_failure
        );
        let outlines = Arc::new(crate::gui::basemap::Outlines::built_in().expect("basemap"));
        let mut base = BasemapTiles::new(&ctx, outlines, crate::gui::tokens::basemap_palette(true))
            .expect("basemap thread");
        let mut layered = LayeredTiles {
            source: &mut source,
            base: Some(&mut base),
        };
        // The good tile is the source's own, whole.
        let piece = layered.at(good).expect("a piece");
        assert_eq!(piece.uv, Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)));
        // The corrupt one is the basemap's: it arrives from the basemap's thread.
        let mut fallback = None;
        for _ in 0..500 {
            fallback = layered.at(id(2, 3, 0));
            if fallback.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let fallback = fallback.expect("the basemap's tile");
        assert_eq!(base_tiles(&mut layered), 1);
        drop(fallback);
        // A deeper tile not asked for yet shows the source's zoom-2 tile scaled up meanwhile.
        let deeper = layered.at(id(3, 2, 4)).expect("an ancestor piece");
        assert_eq!(
            deeper.uv,
            Rect::from_min_max(pos2(0.0, 0.0), pos2(0.5, 0.5))
        );
    }

    fn base_tiles(l: &mut LayeredTiles<'_>) -> usize {
        l.base.as_ref().map_or(0, |b| b.cached())
    }

    #[test]
    fn the_cache_is_bounded() {
        let (url, _) = serve();
        let ctx = egui::Context::default();
        let spec = TileSpec::Xyz {
            url,
            attribution: String::new(),
            cache_dir: None,
        };
        let mut source = SourceTiles::start(&ctx, &spec).expect("starts");
        // 2 × 160 tiles at zoom 10 (all 404 from the test server), more than the cache holds.
        for x in 0..(CACHE_TILES as u32 + 64) {
            let _ = settled(&mut source, id(10, x, 0));
        }
        assert_eq!(source.cached(), CACHE_TILES);
    }
}
