//! Prerequisite chains delivered: devices of a wave that need other releases first (the
//! planner's `after-prerequisites-N` waves) install each release of their wave's chain, in
//! order, each confirmed before the next is offered, and then the rollout's target.
//!
//! The rollout sees such a device as `Offered` (in flight) from its wave's offer until the
//! target settles it: its wave runs until the device is done, and a device that stops at a
//! prerequisite counts as a failed device of its wave, judged by the wave's gates like any
//! failure. The chain's own record is four events ([`EventKind::ChainsSet`],
//! [`EventKind::PrerequisiteOffered`], [`EventKind::PrerequisiteConfirmed`],
//! [`EventKind::PrerequisiteFailed`], [`EventKind::ChainCompleted`]) folded here into
//! [`ChainState`], so a replayed log gives the same progress.
//!
//! The caller (the engine) carries the offers out: it asks [`Rollout::chain_offer`] which
//! release each device gets next, feeds the devices' reports about a prerequisite release to
//! [`Rollout::handle_prerequisite_report`], and offers the next step of the devices
//! [`Rollout::chain_due`] lists while the wave runs (not while it is paused).
//!
//! Deliberately not here: telemetry of a device between its prerequisites counts with the old
//! version (the baseline), as it does not run the target yet; a rollback does not undo a
//! confirmed prerequisite (each is a release in its own right, installed and confirmed).

use super::{Cause, DeviceState, EventKind, Phase, Rollout, RolloutError, RolloutEvent, WaveChain};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One device's progress along its wave's chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceChain {
    /// Prerequisites confirmed, from the start of the chain.
    pub confirmed: u16,
    /// The next prerequisite (`chain[confirmed]`) was offered and has not settled.
    pub in_progress: bool,
    /// The chain is done and the target was offered.
    pub target_offered: bool,
    /// The prerequisite it stopped at, when one failed.
    pub stopped_at: Option<String>,
}

/// The chains of a rollout and every chain device's progress: part of the event fold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    /// Per wave, the releases its devices install before the target (empty: none).
    pub wave_chains: Vec<Vec<String>>,
    /// Progress of the devices that started their chain, by device number.
    pub devices: BTreeMap<u32, DeviceChain>,
    /// Devices that confirmed a prerequisite and wait for their next offer.
    pub due: BTreeSet<u32>,
    /// Devices that went silent while installing a prerequisite, not yet stopped for it
    /// ([`Rollout::chain_silences`] looks at these only, not at every chain device).
    #[serde(default)]
    pub silent_installing: BTreeSet<u32>,
}

/// What the caller offers next: prerequisites by release (devices sorted by id), and the
/// devices whose chain is done, to be offered the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainOffers {
    pub prerequisites: Vec<(String, Vec<String>)>,
    pub target: Vec<String>,
}

/// What a device's report about a prerequisite release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainReport {
    /// Not about the prerequisite the device is installing (a repeat, another release).
    Ignored,
    /// Progress (downloading, installing, rebooting): nothing to record.
    Progress,
    /// Confirmed: the device's next step is due ([`Rollout::chain_due`]).
    Confirmed,
    /// Failed or reverted: the device stops at this prerequisite, counted as failed.
    Stopped,
}

/// Devices stopped at one prerequisite release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrerequisiteStop {
    pub release: String,
    /// Sorted.
    pub device_ids: Vec<String>,
}

fn wave_chain(chains: &[Vec<String>], wave: usize) -> &[String] {
    chains.get(wave).map_or(&[], Vec::as_slice)
}

impl ChainState {
    /// The chain of `wave` (empty when it has none).
    pub fn chain(&self, wave: usize) -> &[String] {
        wave_chain(&self.wave_chains, wave)
    }

    /// The fold's note that device `i` went silent.
    pub(super) fn note_silent(&mut self, i: u32) {
        if self.devices.get(&i).is_some_and(|c| c.in_progress) {
            self.silent_installing.insert(i);
        }
    }

    /// Whether any wave has a chain.
    pub fn any(&self) -> bool {
        self.wave_chains.iter().any(|c| !c.is_empty())
    }
}

/// The plan's waves as the rollout takes them, prerequisite waves included: the waves of
/// [`crate::plan::Plan::rollout_waves`], then each `after-prerequisites-N` wave with devices
/// (ids in id order), with the chain of each.
pub fn waves_with_chains(
    plan: &crate::plan::Plan,
    fleet: &crate::fleet::Fleet,
) -> (Vec<super::WaveSpec>, Vec<WaveChain>) {
    let mut waves = plan.rollout_waves(fleet);
    let mut chains = Vec::new();
    for w in plan
        .waves
        .iter()
        .filter(|w| !w.prerequisites.is_empty() && !w.devices.is_empty())
    {
        chains.push(WaveChain {
            wave: waves.len(),
            releases: w.prerequisites.clone(),
        });
        waves.push(super::WaveSpec {
            name: w.name.clone(),
            device_ids: w
                .devices
                .iter()
                .map(|&i| fleet.devices[i as usize].id.clone())
                .collect(),
            soak_secs: i64::try_from(w.soak_secs).unwrap_or(i64::MAX),
        });
    }
    (waves, chains)
}

fn not_allowed(command: &str, rollout: &Rollout, why: &str) -> RolloutError {
    RolloutError::NotAllowed {
        command: command.into(),
        phase: super::phase_name(rollout.phase()),
        why: why.into(),
    }
}

impl Rollout {
    /// Declares the prerequisite chains of the rollout's waves; only before the first wave,
    /// once. Each release id must be valid and differ from the target; an empty list records
    /// nothing.
    pub fn set_chains(
        &mut self,
        now: Timestamp,
        chains: Vec<WaveChain>,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        let chains: Vec<WaveChain> = chains
            .into_iter()
            .filter(|c| !c.releases.is_empty())
            .collect();
        if chains.is_empty() {
            return Ok(());
        }
        if !matches!(self.state.phase, Phase::Draft | Phase::Approved) || self.state.chain.any() {
            return Err(not_allowed(
                "set_chains",
                self,
                "prerequisite chains are set before the first wave, once",
            ));
        }
        let waves = self.state.spec.waves.len();
        let mut seen = BTreeSet::new();
        for c in &chains {
            if c.wave >= waves || !seen.insert(c.wave) {
                return Err(super::invalid(
                    "chains",
                    format!("wave {} is out of range or has two chains", c.wave),
                ));
            }
            if let Some(bad) = c.releases.iter().find(|r| !crate::release::is_valid_id(r)) {
                return Err(super::invalid(
                    "chains",
                    format!("invalid release id {bad:?}"),
                ));
            }
            if c.releases.contains(&self.state.spec.release_id) {
                return Err(super::invalid(
                    "chains",
                    format!(
                        "the target {} is its own prerequisite",
                        self.state.spec.release_id
                    ),
                ));
            }
        }
        self.timer(now, EventKind::ChainsSet { chains });
        Ok(())
    }

    /// The prerequisite chain of `wave` (empty when it has none).
    pub fn wave_chain(&self, wave: usize) -> &[String] {
        self.state.chain.chain(wave)
    }

    /// Every release any chain names, sorted, without repeats.
    pub fn chain_releases(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .state
            .chain
            .wave_chains
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The prerequisite `device_id` is installing now, if any.
    pub fn prerequisite_in_progress(&self, device_id: &str) -> Option<&str> {
        let i = self.index(device_id)?;
        let c = self.state.chain.devices.get(&i).filter(|c| c.in_progress)?;
        let slot = &self.state.devices[i as usize];
        if !slot.state.is_in_flight() {
            // Cancelled by a rollback, or failed: nothing is being installed for the rollout.
            return None;
        }
        let wave = usize::from(slot.wave);
        self.state
            .chain
            .chain(wave)
            .get(usize::from(c.confirmed))
            .map(String::as_str)
    }

    /// Records the next offer of each of `device_ids` (offered devices of a chain wave that
    /// wait for their next step): the next prerequisite of its chain, or, once all are
    /// confirmed, the target. Returns what the caller must now offer to whom. A device that
    /// is not waiting for a step (not in a chain wave, installing, stopped, done, rolling
    /// back) is refused.
    pub fn chain_offer(
        &mut self,
        now: Timestamp,
        device_ids: &[String],
    ) -> Result<ChainOffers, RolloutError> {
        let now = self.clamp(now);
        let mut by_release: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut done: Vec<u32> = Vec::new();
        for id in device_ids {
            let i = self
                .index(id)
                .ok_or_else(|| RolloutError::UnknownDevice(id.clone()))?;
            let slot = self.state.devices[i as usize];
            let chain = self.state.chain.chain(usize::from(slot.wave));
            let progress = self
                .state
                .chain
                .devices
                .get(&i)
                .cloned()
                .unwrap_or_default();
            let waiting = slot.state == DeviceState::Offered
                && !slot.rollback_pending
                && !slot.excluded
                && !chain.is_empty()
                && !progress.in_progress
                && !progress.target_offered
                && progress.stopped_at.is_none();
            if !waiting {
                return Err(RolloutError::BadTransition {
                    from: slot.state,
                    to: DeviceState::Offered,
                    device: id.clone(),
                });
            }
            match chain.get(usize::from(progress.confirmed)) {
                Some(release) => by_release.entry(release.clone()).or_default().push(i),
                None => done.push(i),
            }
        }
        let ids = &self.state.device_ids;
        let mut offers = ChainOffers::default();
        for (release, devices) in &by_release {
            offers.prerequisites.push((
                release.clone(),
                devices.iter().map(|&i| ids[i as usize].clone()).collect(),
            ));
        }
        offers.target = done.iter().map(|&i| ids[i as usize].clone()).collect();
        for (release, mut devices) in by_release {
            devices.sort_unstable();
            self.timer(now, EventKind::PrerequisiteOffered { devices, release });
        }
        if !done.is_empty() {
            done.sort_unstable();
            self.timer(now, EventKind::ChainCompleted { devices: done });
        }
        for (_, list) in &mut offers.prerequisites {
            list.sort_unstable();
        }
        offers.target.sort_unstable();
        Ok(offers)
    }

    /// Devices whose next chain step may be offered now: they confirmed a prerequisite, their
    /// wave runs (not paused), and they are not rolling back. Sorted by id.
    pub fn chain_due(&self) -> Vec<String> {
        if !matches!(self.state.phase, Phase::Running { .. }) {
            return Vec::new();
        }
        let s = &self.state;
        s.chain
            .due
            .iter()
            .filter(|&&i| {
                let d = &s.devices[i as usize];
                d.state == DeviceState::Offered && !d.rollback_pending && !d.excluded
            })
            .map(|&i| s.device_ids[i as usize].clone())
            .collect()
    }

    /// A device reports `state` for the prerequisite `release` (with its reason for a failure).
    /// Confirmed (`Healthy`) records the step; `Failed` or `Reverted` stops the device there
    /// and marks it failed; other states are progress. Reports about anything but the
    /// prerequisite the device is installing are ignored (repeats of a confirmed one).
    pub fn handle_prerequisite_report(
        &mut self,
        now: Timestamp,
        device_id: &str,
        release: &str,
        state: DeviceState,
        reason: Option<&str>,
    ) -> Result<ChainReport, RolloutError> {
        let now = self.clamp(now);
        let i = self
            .index(device_id)
            .ok_or_else(|| RolloutError::UnknownDevice(device_id.to_owned()))?;
        if self.prerequisite_in_progress(device_id) != Some(release) {
            return Ok(ChainReport::Ignored);
        }
        let release = release.to_owned();
        match state {
            DeviceState::Healthy => {
                self.record(RolloutEvent {
                    at: now,
                    cause: Cause::Device(i),
                    kind: EventKind::PrerequisiteConfirmed { device: i, release },
                });
                Ok(ChainReport::Confirmed)
            }
            DeviceState::Failed | DeviceState::Reverted
                if self.state.devices[i as usize].rollback_pending =>
            {
                // A rollback cancelled it: the device is back where it was, not stopped by
                // its prerequisite.
                self.record(RolloutEvent {
                    at: now,
                    cause: Cause::Device(i),
                    kind: EventKind::Device {
                        device: i,
                        state: DeviceState::Reverted,
                    },
                });
                self.after_progress(now);
                Ok(ChainReport::Progress)
            }
            DeviceState::Failed | DeviceState::Reverted => {
                let why = reason.map_or_else(
                    || {
                        format!(
                            "prerequisite {release} {}",
                            if state == DeviceState::Failed {
                                "failed"
                            } else {
                                "reverted"
                            }
                        )
                    },
                    str::to_owned,
                );
                self.stop_at_prerequisite(now, i, release, why, Cause::Device(i));
                Ok(ChainReport::Stopped)
            }
            _ => Ok(ChainReport::Progress),
        }
    }

    /// The device refused the offer of its prerequisite (failed verification, busy, no space):
    /// it stops there. Returns whether the device was installing a prerequisite (else the
    /// refusal was of the target, and the caller reports it as any failure).
    pub fn prerequisite_refused(&mut self, now: Timestamp, device_id: &str, reason: &str) -> bool {
        let now = self.clamp(now);
        let Some(release) = self.prerequisite_in_progress(device_id).map(str::to_owned) else {
            return false;
        };
        let Some(i) = self.index(device_id) else {
            return false;
        };
        self.stop_at_prerequisite(
            now,
            i,
            release,
            format!("offer refused: {reason}"),
            Cause::Device(i),
        );
        true
    }

    /// Devices that went silent while installing a prerequisite stop there (a timeout):
    /// returns how many. Call it after [`Rollout::handle_timeout`].
    pub fn chain_silences(&mut self, now: Timestamp) -> u32 {
        let now = self.clamp(now);
        let chain = &self.state.chain;
        let silent: Vec<(u32, String)> = chain
            .silent_installing
            .iter()
            .filter(|&&i| self.state.devices[i as usize].silent)
            .filter_map(|&i| {
                let c = chain.devices.get(&i).filter(|c| c.in_progress)?;
                let wave = usize::from(self.state.devices[i as usize].wave);
                let release = chain.chain(wave).get(usize::from(c.confirmed))?;
                Some((i, release.clone()))
            })
            .collect();
        let window = self.state.spec.gates.silent_after_secs;
        for (i, release) in &silent {
            self.stop_at_prerequisite(
                now,
                *i,
                release.clone(),
                format!("timed out: no word within {window} s while installing {release}"),
                Cause::Timer,
            );
        }
        silent.len() as u32
    }

    /// Devices stopped at each prerequisite, in chain order of first appearance.
    pub fn prerequisite_stops(&self) -> Vec<PrerequisiteStop> {
        let mut stops: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, c) in &self.state.chain.devices {
            if let Some(r) = &c.stopped_at {
                stops
                    .entry(r.as_str())
                    .or_default()
                    .push(self.state.device_ids[*i as usize].clone());
            }
        }
        let order = self.chain_order();
        let mut out: Vec<PrerequisiteStop> = stops
            .into_iter()
            .map(|(release, mut device_ids)| {
                device_ids.sort_unstable();
                PrerequisiteStop {
                    release: release.to_owned(),
                    device_ids,
                }
            })
            .collect();
        out.sort_by_key(|s| {
            order
                .iter()
                .position(|r| *r == s.release)
                .unwrap_or(usize::MAX)
        });
        out
    }

    /// Releases in the order chains name them (first appearance).
    fn chain_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::new();
        for r in self.state.chain.wave_chains.iter().flatten() {
            if !order.contains(&r.as_str()) {
                order.push(r);
            }
        }
        order
    }

    fn stop_at_prerequisite(
        &mut self,
        now: Timestamp,
        i: u32,
        release: String,
        reason: String,
        cause: Cause,
    ) {
        let device_id = self.state.device_ids[i as usize].clone();
        self.record(RolloutEvent {
            at: now,
            cause: cause.clone(),
            kind: EventKind::PrerequisiteFailed {
                device: i,
                device_id,
                release,
                reason,
            },
        });
        if self.state.devices[i as usize].state.is_in_flight() {
            self.record(RolloutEvent {
                at: now,
                cause,
                kind: EventKind::Device {
                    device: i,
                    state: DeviceState::Failed,
                },
            });
            self.evidence_moved(now);
            self.after_progress(now);
        }
    }
}

impl super::RolloutState {
    /// The fold of the chain events (called by the rollout's one fold).
    pub(super) fn apply_chain(&mut self, at: Timestamp, kind: &EventKind) -> Result<(), String> {
        match kind {
            EventKind::ChainsSet { chains } => {
                if !matches!(self.phase, Phase::Draft | Phase::Approved) {
                    return Err("chains set after a wave started".into());
                }
                if self.chain.any() {
                    return Err("chains set twice".into());
                }
                let mut wave_chains = vec![Vec::new(); self.spec.waves.len()];
                for c in chains {
                    let slot = wave_chains
                        .get_mut(c.wave)
                        .ok_or_else(|| format!("chain of wave {} out of range", c.wave))?;
                    slot.clone_from(&c.releases);
                }
                self.chain.wave_chains = wave_chains;
            }
            EventKind::PrerequisiteOffered { devices, release } => {
                for &i in devices {
                    let d = self.device(i)?;
                    let chain = wave_chain(&self.chain.wave_chains, usize::from(d.wave));
                    let c = self.chain.devices.entry(i).or_default();
                    if d.state != DeviceState::Offered
                        || c.in_progress
                        || c.target_offered
                        || c.stopped_at.is_some()
                        || chain.get(usize::from(c.confirmed)) != Some(release)
                    {
                        return Err(format!(
                            "device number {i} is not waiting for prerequisite {release}"
                        ));
                    }
                    c.in_progress = true;
                    self.chain.due.remove(&i);
                    self.heard(i, at);
                }
            }
            EventKind::PrerequisiteConfirmed { device, release } => {
                let d = self.device(*device)?;
                let chain = wave_chain(&self.chain.wave_chains, usize::from(d.wave));
                let c = self
                    .chain
                    .devices
                    .get_mut(device)
                    .filter(|c| {
                        c.in_progress && chain.get(usize::from(c.confirmed)) == Some(release)
                    })
                    .ok_or_else(|| format!("device number {device} is not installing {release}"))?;
                c.in_progress = false;
                c.confirmed += 1;
                self.chain.due.insert(*device);
                self.chain.silent_installing.remove(device);
                self.heard(*device, at);
            }
            EventKind::PrerequisiteFailed {
                device, release, ..
            } => {
                self.device(*device)?;
                let c = self.chain.devices.entry(*device).or_default();
                c.in_progress = false;
                c.stopped_at = Some(release.clone());
                self.chain.due.remove(device);
                self.chain.silent_installing.remove(device);
            }
            EventKind::ChainCompleted { devices } => {
                for &i in devices {
                    let d = self.device(i)?;
                    let len = self.chain.chain(usize::from(d.wave)).len();
                    let c = self.chain.devices.entry(i).or_default();
                    if c.in_progress || c.target_offered || usize::from(c.confirmed) != len {
                        return Err(format!("device number {i} has not finished its chain"));
                    }
                    c.target_offered = true;
                    self.chain.due.remove(&i);
                    self.heard(i, at);
                }
            }
            _ => return Err("not a chain event".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::rollout::{ChangePath, DeviceReport, RolloutAction, RolloutSpec, WaveSpec};
    use crate::synth::{SynthOptions, generate};

    const START: Timestamp = Timestamp(1_800_000_000);
    const BL: &str = "t300-bl-2.0.1";
    const MODEM: &str = "t300-modem-1.3.0";

    /// A 30-device fleet: 10 devices in a plain canary, 20 in a wave whose chain is the
    /// bootloader then the modem; approved, chains set.
    fn rollout() -> (Rollout, Fleet) {
        let fleet = generate(&SynthOptions {
            devices: 30,
            seed: 3,
            now: START,
        });
        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let spec = RolloutSpec {
            id: "r-chain".into(),
            release_id: "t300-fw-2.5.0".into(),
            requested_by: "alice".into(),
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    device_ids: ids[..10].to_vec(),
                    soak_secs: 0,
                },
                WaveSpec {
                    name: "after-prerequisites-1".into(),
                    device_ids: ids[10..].to_vec(),
                    soak_secs: 0,
                },
            ],
            gates: crate::gates::GatePolicy::default(),
            path: ChangePath::SingleOperator,
        };
        let mut r = Rollout::new(START, spec, &fleet).expect("spec");
        r.approve(START, "alice").expect("approve");
        r.set_chains(
            START,
            vec![WaveChain {
                wave: 1,
                releases: vec![BL.into(), MODEM.into()],
            }],
        )
        .expect("chains before the first wave");
        (r, fleet)
    }

    /// The log replays to the same state, compared field by field so a failure names it; the
    /// silence queue is left out: it is a lazy-deletion queue whose entries the original's
    /// timeouts already popped (a deadline that passed), which the log does not replay.
    fn assert_replays(r: &Rollout) -> Rollout {
        let replayed = Rollout::replay(r.events().to_vec()).expect("replay");
        let a = serde_json::to_value(r.state()).expect("json");
        let b = serde_json::to_value(replayed.state()).expect("json");
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            assert_eq!(a.len(), b.len());
            for (k, v) in a.iter().filter(|(k, _)| *k != "silence_queue") {
                assert_eq!(Some(v), b.get(k), "field {k} differs after replay");
            }
        } else {
            panic!("a state is a JSON object");
        }
        replayed
    }

    fn report(r: &mut Rollout, at: Timestamp, id: &str, state: DeviceState) {
        r.handle_report(
            at,
            DeviceReport {
                device_id: id.to_owned(),
                state,
            },
        )
        .expect("a valid report");
    }

    fn settle(r: &mut Rollout, at: Timestamp, ids: &[String]) {
        for id in ids {
            for s in [
                DeviceState::Downloading,
                DeviceState::Verified,
                DeviceState::Installing,
                DeviceState::Rebooting,
                DeviceState::Healthy,
            ] {
                report(r, at, id, s);
            }
        }
    }

    /// Runs the canary to completion and returns the chain wave's devices, offered.
    fn to_chain_wave(r: &mut Rollout) -> (Timestamp, Vec<String>) {
        r.handle_timeout(START);
        let Some(RolloutAction::Offer {
            wave: 0,
            device_ids,
        }) = r.poll_action()
        else {
            panic!("the canary starts");
        };
        settle(r, START.plus_secs(60), &device_ids);
        let mut at = START.plus_secs(60);
        for _ in 0..200 {
            at = at.plus_secs(600);
            r.handle_timeout(at);
            if matches!(r.phase(), Phase::Running { wave: 1 }) {
                break;
            }
        }
        assert_eq!(
            r.phase(),
            &Phase::Running { wave: 1 },
            "the chain wave starts"
        );
        let offered = std::iter::from_fn(|| r.poll_action())
            .find_map(|a| match a {
                RolloutAction::Offer {
                    wave: 1,
                    device_ids,
                } => Some(device_ids),
                _ => None,
            })
            .expect("the chain wave's offer");
        (at, offered)
    }

    #[test]
    fn chain_devices_get_each_prerequisite_confirmed_then_the_target_and_replay() {
        let (mut r, _) = rollout();
        assert!(
            r.set_chains(
                START,
                vec![WaveChain {
                    wave: 1,
                    releases: vec![BL.into()]
                }]
            )
            .is_err(),
            "chains are set once"
        );
        assert_eq!(r.wave_chain(1), [BL.to_owned(), MODEM.to_owned()]);
        assert!(r.wave_chain(0).is_empty());
        let (at, ids) = to_chain_wave(&mut r);
        assert_eq!(ids.len(), 20);

        let first = r.chain_offer(at, &ids).expect("first step");
        assert_eq!(first.prerequisites, vec![(BL.to_owned(), ids.clone())]);
        assert!(first.target.is_empty());
        assert!(
            r.chain_offer(at, &ids[..1]).is_err(),
            "installing: no second offer"
        );
        assert_eq!(r.prerequisite_in_progress(&ids[0]), Some(BL));
        // A report about the target or the next prerequisite before its turn is ignored.
        assert_eq!(
            r.handle_prerequisite_report(at, &ids[0], MODEM, DeviceState::Healthy, None)
                .expect("known device"),
            ChainReport::Ignored
        );
        for id in &ids {
            assert_eq!(
                r.handle_prerequisite_report(at, id, BL, DeviceState::Installing, None)
                    .expect("progress"),
                ChainReport::Progress
            );
            assert_eq!(
                r.handle_prerequisite_report(at, id, BL, DeviceState::Healthy, None)
                    .expect("confirmed"),
                ChainReport::Confirmed
            );
        }
        // A repeat of the confirmation (a status heartbeat) is ignored.
        assert_eq!(
            r.handle_prerequisite_report(at, &ids[0], BL, DeviceState::Healthy, None)
                .expect("repeat"),
            ChainReport::Ignored
        );
        assert_eq!(r.chain_due(), ids);
        let second = r.chain_offer(at, &r.chain_due()).expect("second step");
        assert_eq!(second.prerequisites, vec![(MODEM.to_owned(), ids.clone())]);
        assert!(r.chain_due().is_empty());
        for id in &ids {
            r.handle_prerequisite_report(at, id, MODEM, DeviceState::Healthy, None)
                .expect("confirmed");
        }
        let last = r.chain_offer(at, &r.chain_due()).expect("the target");
        assert!(last.prerequisites.is_empty());
        assert_eq!(last.target, ids);
        // Only now does the device take the target; its wave ran all along.
        assert_eq!(r.phase(), &Phase::Running { wave: 1 });
        assert_eq!(r.devices_in(DeviceState::Offered).len(), 20);
        settle(&mut r, at.plus_secs(60), &ids);
        assert_eq!(r.devices_in(DeviceState::Healthy).len(), 30);
        assert!(r.prerequisite_stops().is_empty());

        let order: Vec<&str> = r
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PrerequisiteOffered { release, .. } => Some(release.as_str()),
                EventKind::ChainCompleted { .. } => Some("target"),
                _ => None,
            })
            .collect();
        assert_eq!(order, [BL, MODEM, "target"]);
        assert_replays(&r);
    }

    #[test]
    fn a_device_whose_prerequisite_fails_stops_there_counted_failed_and_named() {
        let (mut r, _) = rollout();
        let (at, ids) = to_chain_wave(&mut r);
        r.chain_offer(at, &ids).expect("first step");
        // One reverts, one refuses the offer, one goes silent, the rest confirm.
        assert_eq!(
            r.handle_prerequisite_report(
                at,
                &ids[0],
                BL,
                DeviceState::Reverted,
                Some("boot failure: slot b failed its boot health check"),
            )
            .expect("report"),
            ChainReport::Stopped
        );
        assert!(r.prerequisite_refused(at, &ids[1], "no space"));
        for id in &ids[3..] {
            r.handle_prerequisite_report(at, id, BL, DeviceState::Healthy, None)
                .expect("confirmed");
        }
        let later = at.plus_secs(r.spec().gates.silent_after_secs + 1);
        r.handle_timeout(later);
        assert!(r.silent_devices().contains(&ids[2].as_str()), "silent");
        assert_eq!(r.chain_silences(later), 1);
        assert_eq!(r.chain_silences(later), 0, "once");

        for id in &ids[..3] {
            assert_eq!(r.device_state(id), Some(DeviceState::Failed), "{id}");
            assert!(r.prerequisite_in_progress(id).is_none());
        }
        assert!(
            r.chain_offer(later, &ids[..1]).is_err(),
            "a stopped device gets nothing more"
        );
        let stops = r.prerequisite_stops();
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].release, BL);
        assert_eq!(stops[0].device_ids, ids[..3].to_vec());
        let reasons: Vec<String> = r
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PrerequisiteFailed {
                    device_id, reason, ..
                } => Some(format!("{device_id}: {reason}")),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].contains("boot failure"), "{reasons:?}");
        assert!(
            reasons[1].contains("offer refused: no space"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("timed out"), "{reasons:?}");
        // The wave's outcomes count them as failed, for the gates.
        let failed: u32 = r.state().outcomes[1]
            .iter()
            .map(|o| o.install_failed + o.boot_failed)
            .sum();
        assert_eq!(failed, 3);
        let replayed = assert_replays(&r);
        assert_eq!(replayed.prerequisite_stops(), stops);
        assert_eq!(
            crate::metrics::rollout_metrics(&r).stopped_at_prerequisite,
            vec![(BL.to_owned(), 3)]
        );
    }

    #[test]
    fn no_next_step_while_paused_and_chains_refused_when_wrong() {
        let (mut r, fleet) = rollout();
        let (at, ids) = to_chain_wave(&mut r);
        r.chain_offer(at, &ids).expect("first step");
        r.handle_prerequisite_report(at, &ids[0], BL, DeviceState::Healthy, None)
            .expect("confirmed");
        assert_eq!(r.chain_due(), ids[..1].to_vec());
        r.pause(at, "alice", "looking").expect("pause");
        assert!(r.chain_due().is_empty(), "paused: nothing offered");
        r.resume(at, "alice", "fine").expect("resume");
        assert_eq!(r.chain_due(), ids[..1].to_vec());
        assert!(
            r.set_chains(
                at,
                vec![WaveChain {
                    wave: 0,
                    releases: vec![BL.into()]
                }]
            )
            .is_err(),
            "not after the first wave"
        );

        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let spec = RolloutSpec {
            id: "r2".into(),
            release_id: "t300-fw-2.5.0".into(),
            requested_by: "alice".into(),
            waves: vec![WaveSpec {
                name: "w".into(),
                device_ids: ids,
                soak_secs: 0,
            }],
            gates: crate::gates::GatePolicy::default(),
            path: ChangePath::SingleOperator,
        };
        let mut fresh = Rollout::new(START, spec, &fleet).expect("spec");
        let bad = |wave: usize, release: &str| {
            vec![WaveChain {
                wave,
                releases: vec![release.to_owned()],
            }]
        };
        assert!(fresh.set_chains(START, bad(1, BL)).is_err(), "no wave 1");
        assert!(
            fresh.set_chains(START, bad(0, "t300-fw-2.5.0")).is_err(),
            "the target"
        );
        assert!(fresh.set_chains(START, bad(0, "a/b")).is_err(), "not an id");
        fresh.set_chains(START, Vec::new()).expect("nothing to set");
        assert!(!fresh.state().chain.any());
    }
}
