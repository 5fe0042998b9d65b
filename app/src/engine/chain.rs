//! Prerequisite chains carried out (docs/ENGINE.md, "Prerequisite chains"): a device of a
//! chain wave is offered its wave's first prerequisite release instead of the target; each
//! confirmation makes its next step due, offered while the wave runs; after the last one it is
//! offered the target. The decisions are the core's ([`convoy_core::rollout::chain`]); this
//! module turns them into offers (each with its own verified manifest, in canonical form),
//! routes a device's reports about a prerequisite release to the core, and stops a device
//! whose prerequisite is refused or that goes silent while installing one.
//!
//! [`Prerequisites`] is what a run is given: the verified manifests of the prerequisite
//! releases and, for a new rollout, the chains of its waves. A chain naming a release without
//! a verified manifest refuses to start ([`Prerequisites::check`]).
//!
//! DDI devices (docs/DDI.md) are not offered prerequisites: the DDI side serves one release
//! per run. A DDI device of a chain wave is never offered the target while behind: while its
//! wave waits it is excluded from the rollout (an `Excluded` event by `engine`, with the
//! reason, on the timeline and in its history as `ddi.not_offered`); one that is only known as
//! a DDI device once its wave has opened stops before its chain, counted as failed and named
//! in the report's prerequisite stops with the same reason; and no DDI deployment of the target
//! is assigned to a device whose chain is not done ([`EngineState::chain_holds_target`]).

use anyhow::{Result, bail};
use convoy_core::manifest::VerifiedManifest;
use convoy_core::rollout::chain::ChainReport;
use convoy_core::rollout::{DeviceState, WaveChain};
use convoy_core::time::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::{CmdKind, EngineState};
use crate::link::protocol::{CommandAction, DeviceStatus, UpdateState};

/// Why a DDI device of a chain wave is not offered anything.
const DDI_NO_CHAIN: &str = "a DDI device is not offered prerequisite releases (the DDI side serves one release per run), so it is left out of its chain wave rather than offered the target while behind";

/// The prerequisite releases a run may offer, and the chains of a new rollout's waves.
#[derive(Debug, Default)]
pub struct Prerequisites {
    /// Verified manifests of the prerequisite releases.
    pub manifests: Vec<VerifiedManifest>,
    /// The chain of each prerequisite wave (new rollouts; a resumed one has them in its log).
    pub chains: Vec<WaveChain>,
}

impl Prerequisites {
    /// Refuses a chain release without a verified manifest, naming it.
    pub fn check<'a>(&self, releases: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for release in releases {
            if !self.manifests.iter().any(|m| m.release_id() == release) {
                bail!(
                    "prerequisite release {release} has no verified manifest: pass it with --prerequisite-manifest FILE (signed by a trusted key)"
                );
            }
        }
        Ok(())
    }

    /// Every release the chains name, sorted, without repeats.
    pub fn chain_releases(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .chains
            .iter()
            .flat_map(|c| c.releases.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The canonical bytes offers carry, by release id.
    pub fn served(&self) -> BTreeMap<String, Arc<[u8]>> {
        self.manifests
            .iter()
            .map(|m| (m.release_id().to_owned(), Arc::from(m.served_bytes())))
            .collect()
    }
}

/// A protocol update state as the core's device state, for a prerequisite's report.
fn state_of(state: UpdateState) -> Option<DeviceState> {
    Some(match state {
        UpdateState::Idle => return None,
        UpdateState::Offered => DeviceState::Offered,
        UpdateState::Downloading => DeviceState::Downloading,
        UpdateState::Verified => DeviceState::Verified,
        UpdateState::Installing => DeviceState::Installing,
        UpdateState::Rebooting => DeviceState::Rebooting,
        UpdateState::Confirmed => DeviceState::Healthy,
        UpdateState::Failed => DeviceState::Failed,
        UpdateState::Reverted => DeviceState::Reverted,
    })
}

impl EngineState {
    /// Offers `device_ids` of `wave` (just offered by the rollout, at its start or paced) what
    /// comes first for them: the target, or, in a chain wave, the first prerequisite (DDI
    /// devices get the target). `paced` goes into the audit entry.
    pub(super) fn offer_devices(
        &mut self,
        now: Timestamp,
        wave: usize,
        device_ids: &[String],
        paced: bool,
    ) -> Result<()> {
        if self.rollout.wave_chain(wave).is_empty() {
            return self.offer_target(now, wave, device_ids, paced, false);
        }
        let (chained, ddi) = self.split_ddi(device_ids);
        if !ddi.is_empty() {
            let behind: Vec<String> = ddi
                .iter()
                .map(|&i| self.fleet.devices[i].id.clone())
                .collect();
            self.stop_ddi_behind(now, &behind);
        }
        self.offer_chain_steps(now, wave, &chained)
    }

    /// DDI devices of a chain wave whose wave has opened: they stop before their chain (its
    /// first release recorded as offered and refused with the reason), never offered the
    /// target.
    fn stop_ddi_behind(&mut self, now: Timestamp, device_ids: &[String]) {
        if let Err(e) = self.rollout.chain_offer(now, device_ids) {
            self.notes
                .push(format!("{now}: DDI devices of a chain wave: {e}"));
            return;
        }
        for id in device_ids {
            let release = self
                .rollout
                .prerequisite_in_progress(id)
                .map(str::to_owned)
                .unwrap_or_default();
            self.rollout.prerequisite_refused(now, id, DDI_NO_CHAIN);
            self.device_event(
                id,
                now,
                "ddi.not_offered",
                serde_json::json!({"release": self.config.release_id, "prerequisite": release, "reason": DDI_NO_CHAIN}),
            );
        }
        self.notes.push(format!(
            "{now}: {} DDI device(s) of a chain wave stopped before their prerequisites: {DDI_NO_CHAIN}",
            device_ids.len()
        ));
    }

    /// Excludes from the rollout the DDI devices of chain waves that have not opened yet, with
    /// the reason (`Excluded` by `engine` in the log and on the timeline, `ddi.not_offered` in
    /// each device's history).
    fn exclude_ddi_behind(&mut self, now: Timestamp) {
        if self.ddi.is_none() {
            return;
        }
        let s = self.rollout.state();
        let mut behind: Vec<String> = Vec::new();
        for (w, chain) in s.chain.wave_chains.iter().enumerate() {
            if chain.is_empty() {
                continue;
            }
            let Some(wave) = s.spec.waves.get(w) else {
                continue;
            };
            for id in &wave.device_ids {
                let pending = s
                    .device_ids
                    .binary_search(id)
                    .ok()
                    .and_then(|r| s.devices.get(r))
                    .is_some_and(|d| d.state == DeviceState::Pending && !d.excluded);
                if pending && self.index(id).is_some_and(|i| self.ddi_device(i)) {
                    behind.push(id.clone());
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        let ids: Vec<&str> = behind.iter().map(String::as_str).collect();
        match self.rollout.exclude(
            now,
            "engine",
            DDI_NO_CHAIN,
            "DDI devices of prerequisite waves",
            &ids,
        ) {
            Ok(n) => {
                for id in &behind {
                    self.device_event(
                        id,
                        now,
                        "ddi.not_offered",
                        serde_json::json!({"release": self.config.release_id, "reason": DDI_NO_CHAIN}),
                    );
                }
                self.notes.push(format!(
                    "{now}: {n} DDI device(s) of prerequisite waves excluded: {DDI_NO_CHAIN}"
                ));
            }
            Err(e) => self
                .notes
                .push(format!("{now}: DDI devices of prerequisite waves: {e}")),
        }
    }

    /// Whether `device_id` is in a chain wave and has not finished its chain: the target must
    /// not reach it yet (over DDI, where chains are not delivered, never).
    pub(super) fn chain_holds_target(&self, device_id: &str) -> bool {
        let s = self.rollout.state();
        let Ok(i) = s.device_ids.binary_search_by(|d| d.as_str().cmp(device_id)) else {
            return false;
        };
        let Some(slot) = s.devices.get(i) else {
            return false;
        };
        if s.chain.chain(usize::from(slot.wave)).is_empty() {
            return false;
        }
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        !s.chain.devices.get(&i).is_some_and(|c| c.target_offered)
    }

    /// The offer of the target to `device_ids` of `wave`.
    fn offer_target(
        &mut self,
        now: Timestamp,
        wave: usize,
        device_ids: &[String],
        paced: bool,
        after_prerequisites: bool,
    ) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let action = self.offer_action()?;
        let name = self.wave_name(wave);
        let release_id = self.config.release_id.clone();
        let mut audit = serde_json::json!({"rollout": self.config.rollout_id, "release": release_id, "wave": name, "devices": device_ids.len()});
        if let Some(p) = audit.as_object_mut() {
            if paced {
                p.insert("paced".into(), true.into());
            }
            if after_prerequisites {
                p.insert("after_prerequisites".into(), true.into());
            }
        }
        self.dispatch(
            now,
            "rollout.offer",
            audit,
            device_ids,
            &action,
            CmdKind::Offer,
        );
        Ok(())
    }

    /// Records and sends the next step of `device_ids` (chain devices of `wave` waiting for
    /// one): a prerequisite with its own manifest, or the target once the chain is done.
    fn offer_chain_steps(
        &mut self,
        now: Timestamp,
        wave: usize,
        device_ids: &[String],
    ) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let offers = match self.rollout.chain_offer(now, device_ids) {
            Ok(o) => o,
            Err(e) => {
                self.notes
                    .push(format!("a prerequisite offer was refused: {e}"));
                return Ok(());
            }
        };
        for (release, ids) in offers.prerequisites {
            let Some(bytes) = self.config.prerequisites.get(&release).cloned() else {
                // Checked before the run started; a log naming another release is not ours.
                bail!(
                    "prerequisite release {release} has no verified manifest: pass it with --prerequisite-manifest FILE"
                );
            };
            let manifest = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| anyhow::anyhow!("encoding the manifest of {release}: {e}"))?;
            let action = CommandAction::Offer {
                release_id: release.clone(),
                manifest,
            };
            let name = self.wave_name(wave);
            self.dispatch(
                now,
                "rollout.offer_prerequisite",
                serde_json::json!({"rollout": self.config.rollout_id, "release": release, "target": self.config.release_id, "wave": name, "devices": ids.len()}),
                &ids,
                &action,
                CmdKind::Offer,
            );
        }
        self.offer_target(now, wave, &offers.target, false, true)
    }

    /// Stops devices that went silent while installing a prerequisite, and offers the next
    /// step of the devices whose prerequisite was confirmed (while their wave runs).
    pub(super) fn chain_tick(&mut self, now: Timestamp) -> Result<()> {
        if !self.rollout.state().chain.any() {
            return Ok(());
        }
        self.exclude_ddi_behind(now);
        self.rollout.chain_silences(now);
        let due = self.rollout.chain_due();
        let mut by_wave: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for id in due {
            if let Some(slot) = self
                .rollout
                .state()
                .device_ids
                .binary_search(&id)
                .ok()
                .and_then(|i| self.rollout.state().devices.get(i))
            {
                by_wave.entry(usize::from(slot.wave)).or_default().push(id);
            }
        }
        for (wave, ids) in by_wave {
            self.offer_chain_steps(now, wave, &ids)?;
        }
        Ok(())
    }

    /// A status about a release other than the target: if it is the prerequisite the device
    /// is installing, its progress, confirmation or failure goes to the rollout, and the
    /// device's history records a confirmation or a stop.
    pub(super) fn chain_status(&mut self, now: Timestamp, s: &DeviceStatus) {
        let Some(release) = s.update.release_id.as_deref() else {
            return;
        };
        let Some(state) = state_of(s.update.state) else {
            return;
        };
        match self.rollout.handle_prerequisite_report(
            now,
            &s.device_id,
            release,
            state,
            s.update.reason.as_deref(),
        ) {
            Ok(ChainReport::Confirmed) => self.device_event(
                &s.device_id,
                now,
                "prerequisite.confirmed",
                serde_json::json!({"release": release}),
            ),
            Ok(ChainReport::Stopped) => {
                if let Some(i) = self.index(&s.device_id) {
                    let d = &mut self.fleet.devices[i];
                    d.failed_update_attempts = d.failed_update_attempts.saturating_add(1);
                }
                self.device_event(
                    &s.device_id,
                    now,
                    "prerequisite.failed",
                    serde_json::json!({"release": release, "reason": s.update.reason}),
                );
            }
            // Not in the rollout (the caller checked): nothing to do.
            Ok(ChainReport::Ignored | ChainReport::Progress) | Err(_) => {}
        }
    }

    /// A device refused an offer: if it was a prerequisite's, the device stops there (true);
    /// otherwise the caller reports the refusal of the target.
    pub(super) fn chain_refused(&mut self, now: Timestamp, device_id: &str, reason: &str) -> bool {
        self.rollout.prerequisite_refused(now, device_id, reason)
    }

    /// Cancels the offers of `device_ids` (a rollback of devices not yet on the target): a
    /// device installing a prerequisite has that release's offer cancelled, the others the
    /// target's.
    pub(super) fn cancel_offers(&mut self, now: Timestamp, audit: &str, device_ids: &[String]) {
        let mut by_release: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in device_ids {
            let release = self
                .rollout
                .prerequisite_in_progress(id)
                .unwrap_or(&self.config.release_id)
                .to_owned();
            by_release.entry(release).or_default().push(id.clone());
        }
        for (release, ids) in by_release {
            let action = CommandAction::Cancel {
                release_id: release.clone(),
            };
            self.dispatch(
                now,
                audit,
                serde_json::json!({"rollout": self.config.rollout_id, "release": release, "devices": ids.len()}),
                &ids,
                &action,
                CmdKind::Cancel,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_release_without_a_verified_manifest_refuses_naming_it() {
        let p = Prerequisites {
            manifests: Vec::new(),
            chains: vec![WaveChain {
                wave: 2,
                releases: vec!["t300-bl-2.0.1".into(), "t300-modem-1.3.0".into()],
            }],
        };
        assert_eq!(p.chain_releases(), ["t300-bl-2.0.1", "t300-modem-1.3.0"]);
        let err = p
            .check(p.chain_releases())
            .expect_err("no manifests")
            .to_string();
        assert!(
            err.contains("t300-bl-2.0.1") && err.contains("--prerequisite-manifest"),
            "{err}"
        );
        Prerequisites::default()
            .check(Vec::<&str>::new())
            .expect("no chain, nothing needed");
    }
}
