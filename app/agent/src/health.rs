//! The health sources: what the agent reads on the device to judge a new slot and to send the
//! telemetry the rollout's gates judge. Each source is optional and configured in `[health]`.
//!
//! - units: the restart counter of named systemd units (`systemctl show -p NRestarts --value
//!   UNIT`, or a configured command printing a number); each new restart is a `crash` event
//!   naming the unit, and restarts within the health window fail it.
//! - core dumps: files in a directory (systemd-coredump's, or `kernel.core_pattern`'s); each new
//!   one is a `crash` event naming the file, and new ones within the health window fail it.
//! - the link's own reconnects: measured by `agent.rs` from the MQTT link (a `reconnect` event
//!   with the seconds offline).
//! - power supply: a `/sys/class/power_supply`-shaped directory: the first `type = Battery`
//!   supply's `capacity` (a `battery` event when it changes) and whether any `Mains` or `USB`
//!   supply is `online` (the status's `power`).
//! - storage: free bytes of a file system (`statvfs`), in the status.
//! - metrics: `NAME VALUE` lines from a file (read at every heartbeat) or a Unix socket (sent as
//!   they arrive), as `metric` events.
//!
//! Deliberately not here: decisions (the health window is `agent.rs`'s) and the clock.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::PowerState;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::config::{HealthConfig, UnitSource};

/// One reading of every configured source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Restart count per unit, in configuration order; `None` where the source could not be read.
    pub unit_restarts: Vec<Option<u64>>,
    /// Core dump file names present now (None if not configured or unreadable).
    pub core_dumps: Option<BTreeSet<String>>,
    pub battery_pct: Option<u8>,
    pub power: Option<PowerState>,
    pub free_storage_bytes: Option<u64>,
}

impl Reading {
    /// Restarts of all units together (units that could not be read count as none).
    pub fn total_restarts(&self) -> u64 {
        self.unit_restarts.iter().flatten().sum()
    }

    pub fn core_count(&self) -> u64 {
        self.core_dumps.as_ref().map_or(0, |c| c.len() as u64)
    }
}

/// Reads every configured source. Problems are returned beside the reading, one line each,
/// so one broken source never hides the others.
pub fn read(config: &HealthConfig) -> (Reading, Vec<String>) {
    let mut problems = Vec::new();
    let mut reading = Reading::default();
    for unit in &config.units {
        match unit_restarts(unit) {
            Ok(n) => reading.unit_restarts.push(Some(n)),
            Err(e) => {
                problems.push(format!("unit {}: {e:#}", unit.name));
                reading.unit_restarts.push(None);
            }
        }
    }
    if let Some(c) = &config.core_dumps {
        match core_dumps(&c.dir) {
            Ok(set) => reading.core_dumps = Some(set),
            Err(e) => problems.push(format!("core dumps: {e:#}")),
        }
    }
    if let Some(p) = &config.power_supply {
        match power_supply(&p.root) {
            Ok((battery, power)) => {
                reading.battery_pct = battery;
                reading.power = power;
            }
            Err(e) => problems.push(format!("power supply: {e:#}")),
        }
    }
    if let Some(s) = &config.storage {
        match free_bytes(&s.path) {
            Ok(n) => reading.free_storage_bytes = Some(n),
            Err(e) => problems.push(format!("storage: {e:#}")),
        }
    }
    (reading, problems)
}

/// The restart count of a unit.
pub fn unit_restarts(unit: &UnitSource) -> Result<u64> {
    let argv = unit.count_command.clone().unwrap_or_else(|| {
        vec![
            "systemctl".into(),
            "show".into(),
            "-p".into(),
            "NRestarts".into(),
            "--value".into(),
            unit.name.clone(),
        ]
    });
    let Some((program, args)) = argv.split_first() else {
        bail!("an empty count command");
    };
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{} exited with {}: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_count(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("the output of {}", argv.join(" ")))
}

/// `3`, `NRestarts=3` or `[not set]` (systemd's way of saying none yet).
fn parse_count(text: &str) -> Result<u64> {
    let t = text.trim();
    let t = t.strip_prefix("NRestarts=").unwrap_or(t);
    if t == "[not set]" || t.is_empty() {
        return Ok(0);
    }
    t.parse()
        .map_err(|_| anyhow::anyhow!("{t:?} is not a restart count"))
}

/// The names of the regular files in a core dump directory.
pub fn core_dumps(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            names.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// The process a core dump file names: systemd-coredump writes
/// `core.PROCESS.UID.BOOT.PID.TIME.zst`, `core_pattern` commonly `core.PROCESS.PID`; anything
/// else is named by the file. Cut to the protocol's 128 bytes.
pub fn core_process(file: &str) -> String {
    let name = file
        .strip_prefix("core.")
        .and_then(|rest| rest.split('.').next())
        .filter(|p| !p.is_empty())
        .unwrap_or(file);
    let mut end = name.len().min(convoy_core::release::MAX_ID_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The battery level and the power state from a `/sys/class/power_supply`-shaped directory.
pub fn power_supply(root: &Path) -> Result<(Option<u8>, Option<PowerState>)> {
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    let mut supplies: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    supplies.sort();
    let mut battery = None;
    let mut charging = false;
    let mut external = false;
    for supply in supplies {
        match read(&supply.join("type")).as_deref() {
            Ok("Battery") if battery.is_none() => {
                if let Ok(c) = read(&supply.join("capacity")) {
                    let pct: u8 = c.parse().with_context(|| {
                        format!(
                            "{}: {c:?} is not a percentage",
                            supply.join("capacity").display()
                        )
                    })?;
                    battery = Some(pct.min(100));
                }
                charging =
                    read(&supply.join("status")).is_ok_and(|s| s == "Charging" || s == "Full");
            }
            Ok("Mains" | "USB") => {
                external |= read(&supply.join("online")).is_ok_and(|s| s == "1");
            }
            _ => {}
        }
    }
    let power = match (battery.is_some(), external || charging) {
        (false, _) if !external => None,
        (false, _) => Some(PowerState::Mains),
        (true, true) => Some(PowerState::Charging),
        (true, false) => Some(PowerState::Battery),
    };
    Ok((battery, power))
}

/// Free bytes (available to unprivileged users) of the file system holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Parses `NAME VALUE` metric lines; bad lines are returned as problems naming the line.
pub fn parse_metrics(text: &str) -> (Vec<(String, f64)>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_metric(line) {
            Ok(m) => out.push(m),
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    (out, problems)
}

/// One `NAME VALUE` line.
pub fn parse_metric(line: &str) -> Result<(String, f64), String> {
    let mut parts = line.split_whitespace();
    let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{line:?} is not `NAME VALUE`"));
    };
    if !convoy_core::release::is_valid_id(name) {
        return Err(format!("metric name {name:?} is not a valid id"));
    }
    let value: f64 = value
        .parse()
        .map_err(|_| format!("metric {name}: {value:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("metric {name}: {value} is not finite"));
    }
    Ok((name.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_counts_parse_in_systemd_forms() {
        assert_eq!(parse_count("3\n").expect("plain"), 3);
        assert_eq!(parse_count("NRestarts=12").expect("key"), 12);
        assert_eq!(parse_count("[not set]").expect("unset"), 0);
        assert!(parse_count("lots").is_err());
    }

    #[test]
    fn a_count_command_is_read() {
        let unit = UnitSource {
            name: "app.service".into(),
            count_command: Some(vec!["echo".into(), "NRestarts=4".into()]),
        };
        assert_eq!(unit_restarts(&unit).expect("count"), 4);
        let broken = UnitSource {
            name: "app.service".into(),
            count_command: Some(vec!["false".into()]),
        };
        assert!(unit_restarts(&broken).is_err());
    }

    #[test]
    fn core_dump_files_name_their_process() {
        assert_eq!(core_process("core.gps.0.abc.123.1700000000.zst"), "gps");
        assert_eq!(core_process("core.app.4242"), "app");
        assert_eq!(core_process("dump-7"), "dump-7");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("core.ui.1"), b"").expect("core");
        std::fs::create_dir(dir.path().join("sub")).expect("subdir");
        let set = core_dumps(dir.path()).expect("read");
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["core.ui.1"]);
    }

    #[test]
    fn a_power_supply_directory_gives_battery_and_power() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |path: &str, text: &str| {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        put("BAT0/type", "Battery\n");
        put("BAT0/capacity", "57\n");
        put("BAT0/status", "Discharging\n");
        put("AC/type", "Mains\n");
        put("AC/online", "0\n");
        assert_eq!(
            power_supply(dir.path()).expect("read"),
            (Some(57), Some(PowerState::Battery))
        );
        put("AC/online", "1\n");
        assert_eq!(
            power_supply(dir.path()).expect("read"),
            (Some(57), Some(PowerState::Charging))
        );
        put("BAT0/capacity", "lots\n");
        let err = format!("{:#}", power_supply(dir.path()).expect_err("bad capacity"));
        assert!(err.contains("capacity") && err.contains("lots"), "{err}");
    }

    #[test]
    fn free_storage_is_read_with_statvfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn metric_lines_are_checked() {
        let (ok, bad) = parse_metrics("# a comment\nqueue_depth 12.5\n\nbad line here\nx NaN\n");
        assert_eq!(ok, vec![("queue_depth".to_owned(), 12.5)]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("line 4"), "{bad:?}");
    }
}
