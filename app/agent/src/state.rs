//! What the agent remembers across restarts and reboots, in `STATE_DIR/state.json`, and the one
//! atomic file write it uses for it (and for the outbox): a temporary file in the same
//! directory, written, fsynced, renamed over the old file, and the directory fsynced, so a power
//! cut leaves either the old state or the new one, never half of each.
//!
//! Deliberately not here: decisions. The state is data; `agent.rs` decides what to do with it.

use anyhow::{Context, Result};
use convoy_core::fleet::{Slot, SmallMap};
use convoy_core::manifest::{ArtifactDigest, DeviceMemory};
use convoy_core::release::Artifact;
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use convoy_devlink::protocol::{UpdateState, UpdateStatus};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Command ids remembered for deduplication (QoS 1 redelivers; the engine resends).
pub const SEEN_COMMANDS: usize = 256;

/// The persistent state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// The core's device memory: hardware id, installed counter, signed rollbacks taken.
    pub memory: DeviceMemory,
    pub active_slot: Slot,
    pub components: SmallMap<Version>,
    /// The last telemetry sequence number handed out (a restart continues above it).
    pub seq: u64,
    /// The most recent command ids, oldest first.
    pub seen_commands: VecDeque<String>,
    /// The update under way, if any.
    pub job: Option<Job>,
    /// The last update's outcome, reported while no job runs.
    pub last_update: UpdateStatus,
    /// What ran before the last slot switch, for a revert.
    pub previous: Option<SlotImage>,
}

/// What the other slot holds: the software that ran before the last switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotImage {
    pub slot: Slot,
    pub components: SmallMap<Version>,
    pub counter: u64,
}

/// Where an update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Offered,
    Downloading,
    Verified,
    Installing,
    /// Installed and switched; waiting for the boot of the new slot.
    Rebooting,
    /// Booted the new slot; inside the health window.
    Booted,
}

impl Phase {
    pub fn wire(self) -> UpdateState {
        match self {
            Phase::Offered => UpdateState::Offered,
            Phase::Downloading => UpdateState::Downloading,
            Phase::Verified => UpdateState::Verified,
            Phase::Installing => UpdateState::Installing,
            // The protocol's `rebooting` covers the reboot and the health window after it.
            Phase::Rebooting | Phase::Booted => UpdateState::Rebooting,
        }
    }
}

/// An update under way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub command_id: String,
    pub release_id: String,
    /// The signed manifest exactly as offered; re-verified after a restart before any download.
    pub manifest: String,
    pub version: Version,
    pub counter: u64,
    pub provides: SmallMap<Version>,
    pub artifacts: Vec<Artifact>,
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// When the new slot booted (the health window's start), once it has.
    pub booted_at: Option<Timestamp>,
    /// Restart counts and core dumps seen at boot: the health window counts what comes after.
    #[serde(default)]
    pub baseline_restarts: u64,
    #[serde(default)]
    pub baseline_cores: u64,
    /// What the download measured, kept for the install's last check.
    #[serde(default)]
    pub delivered: Vec<ArtifactDigest>,
}

impl Job {
    pub fn progress_pct(&self) -> u8 {
        if self.bytes_total == 0 {
            return 100;
        }
        u8::try_from(self.bytes_done.min(self.bytes_total) * 100 / self.bytes_total).unwrap_or(100)
    }
}

impl AgentState {
    /// A device the agent has never run on.
    pub fn fresh(memory: DeviceMemory, active_slot: Slot, components: SmallMap<Version>) -> Self {
        Self {
            memory,
            active_slot,
            components,
            seq: 0,
            seen_commands: VecDeque::new(),
            job: None,
            last_update: UpdateStatus {
                state: UpdateState::Idle,
                release_id: None,
                command_id: None,
                progress_pct: None,
                reason: None,
            },
            previous: None,
        }
    }

    /// Remembers a command id; false if it was seen before.
    pub fn remember_command(&mut self, id: &str) -> bool {
        if self.seen_commands.iter().any(|c| c == id) {
            return false;
        }
        self.seen_commands.push_back(id.to_owned());
        while self.seen_commands.len() > SEEN_COMMANDS {
            self.seen_commands.pop_front();
        }
        true
    }

    /// The update part of the status as it would be published now.
    pub fn update_status(&self) -> UpdateStatus {
        match &self.job {
            Some(job) => UpdateStatus {
                state: job.phase.wire(),
                release_id: Some(job.release_id.clone()),
                command_id: Some(job.command_id.clone()),
                progress_pct: Some(job.progress_pct()),
                reason: None,
            },
            None => self.last_update.clone(),
        }
    }
}

/// `STATE_DIR/state.json`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the state, or `None` when there is none yet. A damaged file is an error naming it:
/// guessing would risk installing twice or forgetting a revert.
pub fn load(dir: &Path) -> Result<Option<AgentState>> {
    let path = state_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing the agent state {}", path.display()))?;
    Ok(Some(state))
}

/// Writes the state atomically.
pub fn save(dir: &Path, state: &AgentState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).context("encoding the agent state")?;
    write_atomic(&state_path(dir), &bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory. The file is private to its owner (0600): it may name the device's paths and jobs.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The process id keeps two agents pointed at one directory by mistake from sharing a
    // temporary file; the rename is still atomic either way.
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        let mut components = SmallMap::new();
        components.insert("firmware", "2.4.0".parse::<Version>().expect("version"));
        AgentState::fresh(DeviceMemory::new("T300", 7), Slot::A, components)
    }

    #[test]
    fn the_state_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let mut s = state();
        s.seq = 41;
        assert!(s.remember_command("c-1"));
        assert!(!s.remember_command("c-1"), "a command id is applied once");
        save(dir.path(), &s).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(s));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["state.json".to_owned()]);
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(state_path(dir.path()), b"{\"memory\": ").expect("write");
        let err = format!("{:#}", load(dir.path()).expect_err("damaged"));
        assert!(err.contains("state.json"), "{err}");
    }

    #[test]
    fn seen_commands_are_bounded() {
        let mut s = state();
        for i in 0..(SEEN_COMMANDS + 10) {
            assert!(s.remember_command(&format!("c-{i}")));
        }
        assert_eq!(s.seen_commands.len(), SEEN_COMMANDS);
        // The oldest were forgotten, the newest are kept.
        assert!(s.remember_command("c-0"));
        assert!(!s.remember_command(&format!("c-{}", SEEN_COMMANDS + 9)));
    }
}
