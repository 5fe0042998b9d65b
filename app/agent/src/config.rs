//! The agent's configuration file (TOML): who the device is, how it reaches the broker, whom it
//! trusts, where it keeps its state, how it installs, and which health sources it watches.
//!
//! Parsing is strict (unknown keys are refused, naming the key and the line), and
//! [`Config::load`] checks what can be checked without touching the device: ids, URLs, that
//! paths are absolute, that numbers are in range. It deliberately does not open certificates,
//! run commands or read health sources; `convoy-agent --check` does that (`main.rs`).
//! docs/AGENT.md documents every key; packaging/agent/agent.toml is a commented example.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::{Connectivity, GeoPoint, Slot};
use convoy_core::version::Version;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    pub broker: BrokerConfig,
    pub trust: TrustConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub update: UpdateConfig,
    pub installer: InstallerConfig,
    #[serde(default)]
    pub health: HealthConfig,
}

/// `[device]`: what the device is and reports about itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device id: its topics, its MQTT client id and (with certificates) its certificate's CN.
    pub id: String,
    /// The hardware id (model / SKU) a release must name to be installed here.
    pub hardware_id: String,
    /// Component versions before the agent's first install, e.g. `{ firmware = "2.4.0" }`.
    /// Afterwards the agent's state on disk is the truth.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// The slot running before the agent's first install (the `directory` installer reads its own).
    #[serde(default)]
    pub active_slot: Option<Slot>,
    /// The release counter installed before the agent's first install (anti-rollback floor).
    #[serde(default)]
    pub installed_counter: u64,
    #[serde(default = "default_connectivity")]
    pub connectivity: Connectivity,
    #[serde(default)]
    pub metered: bool,
    #[serde(default)]
    pub position: Option<GeoPoint>,
}

fn default_connectivity() -> Connectivity {
    Connectivity::Ethernet
}

/// `[broker]`: the MQTT connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `mqtts://host:8883` (TLS) or `mqtt://host:1883` (tests and closed networks only).
    pub url: String,
    /// The CA that signed the broker's certificate (PEM); required for `mqtts://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This device's client certificate and key (PEM), both or neither.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
}

fn default_prefix() -> String {
    "convoy/v1".to_owned()
}

fn default_keep_alive() -> u64 {
    30
}

/// `[trust]`: the keys releases must be signed with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// A trust directory (`keyset-1.json`, `keyset-2.json`, …) as `convoy key trust` writes it.
    pub dir: PathBuf,
}

/// `[state]`: where the agent keeps what must survive a restart.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Holds `state.json`, `outbox.json` and `downloads/`.
    pub dir: PathBuf,
    /// Messages kept on disk while the broker is unreachable; beyond it the oldest are dropped
    /// (and counted in the log).
    #[serde(default = "default_outbox_max")]
    pub outbox_max_messages: usize,
}

fn default_outbox_max() -> usize {
    1000
}

/// `[update]`: timings of an update.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Base URL for artifact URLs in manifests that are not `http://` URLs themselves.
    #[serde(default)]
    pub artifact_base_url: Option<String>,
    /// Download attempts (each resumes) before the update fails.
    #[serde(default = "default_attempts")]
    pub download_attempts: u32,
    /// After the (re)boot into the new slot, how long it must stay healthy before it is confirmed.
    #[serde(default = "default_health_window")]
    pub health_window_secs: u64,
    /// After the (re)boot, how long the broker may stay unreachable before the agent reverts.
    #[serde(default = "default_link_deadline")]
    pub link_deadline_secs: u64,
    /// Run after a successful install to boot the new slot (e.g. `["systemctl", "reboot"]`).
    /// Without it the agent treats the install as booted at once (the `directory` and `command`
    /// installers, where a restart of the software is the installer's business).
    #[serde(default)]
    pub reboot_command: Option<Vec<String>>,
}

fn default_attempts() -> u32 {
    5
}

fn default_health_window() -> u64 {
    600
}

fn default_link_deadline() -> u64 {
    300
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            artifact_base_url: None,
            download_attempts: default_attempts(),
            health_window_secs: default_health_window(),
            link_deadline_secs: default_link_deadline(),
            reboot_command: None,
        }
    }
}

/// `[installer]`: how a release gets onto the device. See `installer.rs` for what each runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InstallerConfig {
    /// Two slot directories `ROOT/a` and `ROOT/b` and a `ROOT/current` symlink (tests, demos).
    Directory { root: PathBuf },
    /// A script run as `SCRIPT install|confirm|revert ...` (docs/AGENT.md).
    Command { program: PathBuf },
    /// SWUpdate: `swupdate -i FILE`, then the bootloader's `ustate` handshake.
    Swupdate {
        #[serde(default = "default_swupdate")]
        program: PathBuf,
        /// `-k`: the certificate that signs `sw-description`.
        #[serde(default)]
        public_key: Option<PathBuf>,
        /// `-H board:revision`.
        #[serde(default)]
        hardware: Option<String>,
        #[serde(default)]
        extra_args: Vec<String>,
        /// Marks the running software good (default `fw_setenv ustate 0`).
        #[serde(default)]
        confirm_command: Option<Vec<String>>,
        /// Marks the update failed, so the bootloader boots the other copy (default
        /// `fw_setenv ustate 3`).
        #[serde(default)]
        revert_command: Option<Vec<String>>,
    },
    /// RAUC: `rauc install BUNDLE`, `rauc status mark-good`, `rauc status mark-bad`.
    Rauc {
        #[serde(default = "default_rauc")]
        program: PathBuf,
    },
}

fn default_swupdate() -> PathBuf {
    PathBuf::from("swupdate")
}

fn default_rauc() -> PathBuf {
    PathBuf::from("rauc")
}

/// `[health]`: the sources the agent watches, each optional, and the limits of the health window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between two samples of the health sources.
    #[serde(default = "default_sample")]
    pub sample_secs: u64,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Seconds between two full status reports when nothing changes.
    #[serde(default = "default_status_every")]
    pub status_every_secs: u64,
    /// Restarts of the watched units (together) within the health window that fail it.
    #[serde(default = "default_max_restarts")]
    pub max_unit_restarts: u64,
    /// New core dumps within the health window that fail it.
    #[serde(default = "default_max_cores")]
    pub max_core_dumps: u64,
    #[serde(default)]
    pub units: Vec<UnitSource>,
    #[serde(default)]
    pub core_dumps: Option<CoreDumpSource>,
    #[serde(default)]
    pub power_supply: Option<PowerSupplySource>,
    #[serde(default)]
    pub storage: Option<StorageSource>,
    #[serde(default)]
    pub metrics: Option<MetricsSource>,
}

fn default_sample() -> u64 {
    10
}

fn default_heartbeat() -> u64 {
    300
}

fn default_status_every() -> u64 {
    3600
}

fn default_max_restarts() -> u64 {
    3
}

fn default_max_cores() -> u64 {
    1
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            sample_secs: default_sample(),
            heartbeat_secs: default_heartbeat(),
            status_every_secs: default_status_every(),
            max_unit_restarts: default_max_restarts(),
            max_core_dumps: default_max_cores(),
            units: Vec::new(),
            core_dumps: None,
            power_supply: None,
            storage: None,
            metrics: None,
        }
    }
}

/// `[[health.units]]`: a systemd unit whose restarts count as crashes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSource {
    pub name: String,
    /// Prints the unit's restart count instead of `systemctl show -p NRestarts --value UNIT`
    /// (for tests, and for supervisors other than systemd).
    #[serde(default)]
    pub count_command: Option<Vec<String>>,
}

/// `[health.core_dumps]`: a directory where new files are new core dumps.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreDumpSource {
    pub dir: PathBuf,
}

/// `[health.power_supply]`: a directory shaped like `/sys/class/power_supply`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSupplySource {
    #[serde(default = "default_power_root")]
    pub root: PathBuf,
}

fn default_power_root() -> PathBuf {
    PathBuf::from("/sys/class/power_supply")
}

/// `[health.storage]`: the file system whose free bytes the status reports.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSource {
    pub path: PathBuf,
}

/// `[health.metrics]`: custom metrics the device's software pushes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSource {
    /// A file of `NAME VALUE` lines, read at every heartbeat; each line is sent as a sample.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A Unix stream socket the agent listens on; each `NAME VALUE` line received is sent at once.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the configuration {}", path.display()))
    }

    /// Parses and checks a configuration's text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let d = &self.device;
        if !convoy_core::release::is_valid_id(&d.id) {
            bail!(
                "device.id {:?} is not a valid id (letters, digits, '-', '_', '.')",
                d.id
            );
        }
        if d.hardware_id.is_empty() {
            bail!("device.hardware_id is empty");
        }
        for (name, version) in &d.components {
            if !convoy_core::release::is_valid_id(name) {
                bail!("device.components: {name:?} is not a valid component name");
            }
            version
                .parse::<Version>()
                .map_err(|e| anyhow::anyhow!("device.components.{name}: {e}"))?;
        }
        convoy_devlink::mqtt::parse_broker_url(&self.broker.url).context("broker.url")?;
        if self.broker.client_cert_file.is_some() != self.broker.client_key_file.is_some() {
            bail!(
                "broker.client_cert_file and broker.client_key_file go together: give both or neither"
            );
        }
        convoy_devlink::protocol::Topics::new(&self.broker.prefix).context("broker.prefix")?;
        if !self.state.dir.is_absolute() {
            bail!(
                "state.dir {} must be an absolute path",
                self.state.dir.display()
            );
        }
        if self.state.outbox_max_messages == 0 {
            bail!("state.outbox_max_messages must be at least 1");
        }
        let u = &self.update;
        if let Some(base) = &u.artifact_base_url
            && !base.starts_with("http://")
        {
            bail!("update.artifact_base_url {base:?} must start with http://");
        }
        if u.download_attempts == 0 {
            bail!("update.download_attempts must be at least 1");
        }
        if u.link_deadline_secs == 0 {
            bail!("update.link_deadline_secs must be at least 1");
        }
        check_command("update.reboot_command", u.reboot_command.as_ref())?;
        match &self.installer {
            InstallerConfig::Directory { root } => absolute("installer.root", root)?,
            InstallerConfig::Command { program } => absolute("installer.program", program)?,
            InstallerConfig::Swupdate {
                confirm_command,
                revert_command,
                ..
            } => {
                check_command("installer.confirm_command", confirm_command.as_ref())?;
                check_command("installer.revert_command", revert_command.as_ref())?;
            }
            InstallerConfig::Rauc { .. } => {}
        }
        let h = &self.health;
        for (key, v) in [
            ("health.sample_secs", h.sample_secs),
            ("health.heartbeat_secs", h.heartbeat_secs),
            ("health.status_every_secs", h.status_every_secs),
        ] {
            if v == 0 {
                bail!("{key} must be at least 1");
            }
        }
        for (i, unit) in h.units.iter().enumerate() {
            if unit.name.is_empty() || unit.name.len() > convoy_core::release::MAX_ID_LEN {
                bail!("health.units[{i}].name must be 1 to 128 bytes");
            }
            check_command(
                &format!("health.units[{i}].count_command"),
                unit.count_command.as_ref(),
            )?;
        }
        if let Some(m) = &h.metrics
            && m.file.is_none()
            && m.socket.is_none()
        {
            bail!("health.metrics needs a file, a socket or both");
        }
        Ok(())
    }

    /// The component versions of `[device] components`, parsed.
    pub fn initial_components(&self) -> convoy_core::fleet::SmallMap<Version> {
        let mut map = convoy_core::fleet::SmallMap::new();
        for (name, version) in &self.device.components {
            // validate() parsed every version already.
            if let Ok(v) = version.parse::<Version>() {
                map.insert(name.clone(), v);
            }
        }
        map
    }
}

fn absolute(key: &str, path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        bail!("{key} {} must be an absolute path", path.display())
    }
}

fn check_command(key: &str, command: Option<&Vec<String>>) -> Result<()> {
    match command {
        Some(argv) if argv.is_empty() || argv[0].is_empty() => {
            bail!("{key} must name a program: [\"program\", \"arg\", ...]")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[device]
id = "CV0001"
hardware_id = "T300"
components = { firmware = "2.4.0" }

[broker]
url = "mqtts://broker.example:8883"
ca_file = "/etc/convoy-agent/ca.pem"
client_cert_file = "/etc/convoy-agent/device.pem"
client_key_file = "/etc/convoy-agent/device.key"

[trust]
dir = "/etc/convoy-agent/trust"

[state]
dir = "/var/lib/convoy-agent"

[installer]
kind = "directory"
root = "/var/lib/convoy-agent/slots"
"#;

    #[test]
    fn a_minimal_configuration_takes_the_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.update.health_window_secs, 600);
        assert_eq!(c.health.max_unit_restarts, 3);
        assert_eq!(c.broker.prefix, "convoy/v1");
        assert!(matches!(c.installer, InstallerConfig::Directory { .. }));
        assert_eq!(c.initial_components().len(), 1);
    }

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../../packaging/agent/agent.toml");
        Config::parse(text).expect("packaging/agent/agent.toml is valid");
    }

    /// Each bad configuration is refused with a message naming the key.
    #[test]
    fn bad_configurations_name_the_key() {
        let check = |edit: &dyn Fn(&str) -> String, needle: &str| {
            let text = edit(MINIMAL);
            let err = format!("{:#}", Config::parse(&text).expect_err(needle));
            assert!(err.contains(needle), "{needle:?} not in {err}");
        };
        check(&|t| t.replace("\"CV0001\"", "\"CV 1\""), "device.id");
        check(&|t| t.replace("2.4.0", "two"), "device.components.firmware");
        check(&|t| t.replace("mqtts://", "http://"), "broker.url");
        check(
            &|t| t.replace("client_key_file = \"/etc/convoy-agent/device.key\"\n", ""),
            "client_key_file",
        );
        check(
            &|t| t.replace("\"/var/lib/convoy-agent\"", "\"rel\""),
            "state.dir",
        );
        check(
            &|t| t.replace("kind = \"directory\"", "kind = \"floppy\""),
            "floppy",
        );
        check(
            &|t| format!("{t}\n[health]\nsurprise = 1\n"),
            "unknown field `surprise`",
        );
        check(
            &|t| format!("{t}\n[update]\nreboot_command = []\n"),
            "update.reboot_command",
        );
        check(&|t| format!("{t}\n[health.metrics]\n"), "health.metrics");
    }
}
