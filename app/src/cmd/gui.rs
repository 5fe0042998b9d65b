//! `convoy gui [--db PATH] [--broker URL | --server URL] [--tiles FILE | --tile-url URL]`, and `convoy` with no
//! arguments: the desktop console.
//!
//! With neither `--db` nor `--broker` the console opens on a live demo (embedded broker,
//! synthetic fleet in a demo cache, simulated devices). With `--db` it shows that cache, and
//! with `--broker` it also listens to the fleet on that broker. With `--server URL` it is
//! attached to a `convoy serve` (`crate::remote`), `--db` naming its local copy. Without a display it says so
//! and lists the headless commands instead of failing obscurely.

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::gui::tiles::{MbTiles, TileSpec};
use crate::gui::{Backend, DemoOptions, View};

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The fleet cache to show (default with --broker: the default cache, see docs/STORE.md).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The MQTT broker the fleet reports to, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, conflicts_with = "server")]
    pub broker: Option<String>,
    /// Attach to a `convoy serve` at this URL (e.g. https://fleet.example.org:8443) instead of
    /// a local cache: the views show a local copy of the server's fleet and rollouts (at --db,
    /// default $XDG_DATA_HOME/convoy/servers/HOST_PORT.db), and steering goes through its API.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: a file holding the API token (`convoy serve token add` prints one);
    /// default: $CONVOY_TOKEN. Never on the command line, where `ps` would show it.
    #[arg(long, value_name = "FILE", requires = "server")]
    pub token_file: Option<PathBuf>,
    /// With --server: a PEM certificate to trust besides the system's roots (a server with a
    /// self-signed certificate).
    #[arg(long, value_name = "PEM", requires = "server")]
    pub ca_cert: Option<PathBuf>,
    /// Topic prefix.
    #[arg(long, default_value = "convoy/v1")]
    pub prefix: String,
    #[command(flatten)]
    pub mqtt_auth: crate::ops::runs::MqttAuthArgs,
    /// Draw the tiles of this raster MBTiles file (PNG or JPEG) over the offline basemap.
    #[arg(long, value_name = "FILE.mbtiles", conflicts_with = "tile_url")]
    pub tiles: Option<PathBuf>,
    /// Draw tiles from this XYZ tile server over the offline basemap, e.g.
    /// https://tile.example.org/{z}/{x}/{y}.png (off unless given; kept in a disk cache).
    #[arg(long, value_name = "URL")]
    pub tile_url: Option<String>,
    /// The attribution the tile server asks for (default: its host name).
    #[arg(long, value_name = "TEXT", requires = "tile_url")]
    pub tile_attribution: Option<String>,
    /// Start in this view instead of the last one (e.g. war-room for a wall display).
    #[arg(long, value_enum)]
    pub view: Option<StartView>,
    /// Demo only: how many simulated devices.
    #[arg(long, default_value_t = 3000)]
    pub demo_devices: usize,
    /// Demo only: the fleet's seed.
    #[arg(long, default_value_t = 7)]
    pub demo_seed: u64,
    /// Demo only: simulated seconds per wall second (60: a simulated hour per minute, so that
    /// the demo rollout's waves and gates play out in minutes).
    #[arg(long, default_value_t = 60.0)]
    pub demo_time_scale: f64,
    /// Demo only: no demo rollout, just the simulated fleet.
    #[arg(long)]
    pub demo_no_rollout: bool,
    /// Deliver the cache's alerts through the channels of this file, show the desktop
    /// channel's alerts as notifications and each channel's health in the status bar
    /// (docs/ALERTS.md). Not with --server: the server delivers its own.
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    pub alerts: Option<PathBuf>,
}

/// The views the console can start in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartView {
    Map,
    Table,
    Cohorts,
    WarRoom,
}

impl From<StartView> for View {
    fn from(v: StartView) -> Self {
        match v {
            StartView::Map => View::Map,
            StartView::Table => View::Table,
            StartView::Cohorts => View::Cohorts,
            StartView::WarRoom => View::WarRoom,
        }
    }
}

/// The plain-text notice for a machine without a display.
pub fn no_display_notice(reason: &str) -> String {
    let mut text = format!(
        "convoy: no display ({reason}), so the desktop console cannot open.\n\
         Everything else works headless:\n\n"
    );
    let cli = crate::cli::Cli::command();
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "gui") {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(text, "  convoy {:<10} {about}", sub.get_name());
    }
    text.push_str("\nRun `convoy COMMAND --help` for details, or set DISPLAY / WAYLAND_DISPLAY to open the console.\n");
    text
}

/// The API token for `--server`: the `--token-file` (its first line), else `$CONVOY_TOKEN`.
fn token(args: &Args) -> Result<String> {
    let (token, from) = match &args.token_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?,
            format!("the token file {}", path.display()),
        ),
        None => (
            std::env::var("CONVOY_TOKEN").unwrap_or_default(),
            "$CONVOY_TOKEN".to_owned(),
        ),
    };
    let token = token.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!(
            "convoy gui --server needs an API token: put it in a file for --token-file FILE or \
             in $CONVOY_TOKEN (`convoy serve token add --operator NAME --role dispatcher` on \
             the server makes one); {from} holds none"
        );
    }
    Ok(token)
}

/// Whether `url`'s host is this machine (`localhost`, or a loopback address), where a plain
/// HTTP token stays on the machine.
fn is_loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// The console attached to `--server`.
fn remote_backend(args: &Args, server: &str) -> Result<Backend> {
    let server = crate::remote::normalise_server(server)?;
    let copy = args
        .db
        .clone()
        .unwrap_or_else(|| crate::remote::default_copy_path(&server));
    let mut options = crate::remote::RemoteOptions::new(&server, token(args)?, copy)?;
    options.ca_cert.clone_from(&args.ca_cert);
    if server.starts_with("http://") && !is_loopback(&server) {
        eprintln!(
            "warning: {server} is plain HTTP: the API token crosses the network in the clear \
                 (serve with --tls-cert/--tls-key, or through a TLS proxy)"
        );
    }
    Backend::remote(&options)
}

fn backend(args: &Args) -> Result<Backend> {
    if let Some(server) = &args.server {
        return remote_backend(args, server);
    }
    if args.db.is_none() && args.broker.is_none() {
        return Backend::demo(DemoOptions {
            devices: args.demo_devices,
            seed: args.demo_seed,
            time_scale: args.demo_time_scale,
            cache: crate::gui::backend::default_demo_cache(),
            rollout: !args.demo_no_rollout,
        });
    }
    let db = crate::store::resolve_path(args.db.as_deref())?;
    Backend::attach(
        db,
        args.broker.clone(),
        &args.prefix,
        args.mqtt_auth.auth()?,
    )
}

/// The tile source the flags ask for, checked before the window opens: a file that is not
/// raster MBTiles or a URL with no `{z}`, `{x}`, `{y}` fails here, with the reason.
fn tile_spec(args: &Args) -> Result<Option<TileSpec>> {
    if let Some(path) = &args.tiles {
        MbTiles::open(path)?;
        return Ok(Some(TileSpec::MbTiles(path.clone())));
    }
    args.tile_url
        .as_deref()
        .map(|url| TileSpec::online(url, args.tile_attribution.as_deref()))
        .transpose()
}

/// `convoy gui`: fails (non-zero exit) when there is no display.
pub fn run(args: &Args) -> Result<()> {
    if !crate::gui::display_available() {
        eprint!(
            "{}",
            no_display_notice("neither DISPLAY nor WAYLAND_DISPLAY is set")
        );
        bail!("no display for the console");
    }
    if !(args.demo_time_scale.is_finite() && args.demo_time_scale > 0.0) {
        bail!(
            "--demo-time-scale must be a positive number, got {}",
            args.demo_time_scale
        );
    }
    let tiles = tile_spec(args)?;
    let alerts = args
        .alerts
        .as_deref()
        .map(crate::alerts::AlertsConfig::load)
        .transpose()?;
    let mut backend = backend(args)?;
    if let Some(config) = alerts {
        let cache = if args.db.is_none() && args.broker.is_none() {
            crate::gui::backend::default_demo_cache()
        } else {
            crate::store::resolve_path(args.db.as_deref())?
        };
        backend.alerts = Some(crate::gui::alerts::ConsoleAlerts::start(cache, config)?);
    }
    if let Err(err) = crate::gui::run_native(backend, args.view.map(View::from), tiles) {
        eprint!("{}", no_display_notice(&format!("{err:#}")));
        return Err(err);
    }
    Ok(())
}

/// `convoy` with no arguments: the demo console, or, with no display, the notice and success
/// (nothing was asked for that failed).
pub fn run_default() -> Result<()> {
    if !crate::gui::display_available() {
        print!(
            "{}",
            no_display_notice("neither DISPLAY nor WAYLAND_DISPLAY is set")
        );
        return Ok(());
    }
    run(&Args {
        prefix: "convoy/v1".into(),
        demo_devices: 3000,
        demo_seed: 7,
        demo_time_scale: 60.0,
        demo_no_rollout: false,
        ..Args::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_counts_as_loopback_for_the_plain_http_warning() {
        for url in [
            "http://localhost:8443",
            "http://127.0.0.1:8443",
            "http://127.3.2.1",
            "http://[::1]:8443",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://localhost.evil.net:8443",
            "http://127.example.com",
            "http://10.0.0.5:8443",
            "http://[::2]",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn the_token_comes_from_the_first_line_of_its_file_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("token");
        std::fs::write(&path, "  cvy_abc123  \n# a note\n").expect("token file");
        let mut args = Args {
            server: Some("https://127.0.0.1:8443".into()),
            token_file: Some(path.clone()),
            ..Args::default()
        };
        assert_eq!(token(&args).expect("a token"), "cvy_abc123");
        std::fs::write(&path, "\n").expect("empty token file");
        let err = token(&args).expect_err("no token").to_string();
        assert!(
            err.contains("--token-file") && err.contains(&path.display().to_string()),
            "{err}"
        );
        args.token_file = Some(dir.path().join("missing"));
        let err = format!("{:#}", token(&args).expect_err("no file"));
        assert!(err.contains("missing"), "{err}");
    }
}
