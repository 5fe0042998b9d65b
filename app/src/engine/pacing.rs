//! The engine's side of paced offers: a rollout whose log fixes an offer schedule
//! ([`convoy_core::rollout::EventKind::OffersPaced`]) has its wave's devices offered as the
//! core's [`Pacer`] allows (windows in each depot's local time, blackouts and their exceptions,
//! the rate, the hourly bandwidth cap), not all at once.
//!
//! A wave's start gives the engine its devices to offer ([`EngineState::pace_wave`]); every
//! step asks the pacer which of them may go now ([`EngineState::pace`]), records them with
//! [`convoy_core::rollout::Rollout::offer`] and sends them as one offer decision; the timeline
//! records why the rest wait when the reason changes (`schedule.waiting`), and each exception
//! that let offers through a blackout (`schedule.exception`). The schedule's clock stops while
//! the rollout is not running (paused, soaking, rolling back) and continues after a resume.
//!
//! What it deliberately is not: a clock or I/O, like the rest of the driver state.

use convoy_core::plan::pacing::{Pace, Pacer, Wait};
use convoy_core::rollout::{DeviceState, EventKind, Phase};
use convoy_core::time::Timestamp;
use serde::Serialize;

use anyhow::{Context, Result};

use super::state::EngineState;
use crate::link::protocol::CommandAction;

/// The pacing of a run: the pacer, the devices waiting for their offer and the last reason
/// recorded.
#[derive(Debug)]
pub(super) struct Pacing {
    pacer: Pacer,
    /// The calendar group of each fleet device (its depot; the unknown-depot group otherwise).
    group_of: Vec<usize>,
    /// The wave being offered and its devices still waiting (fleet indices, by id).
    wave: usize,
    waiting: Vec<u32>,
    next_at: Option<Timestamp>,
    /// The reason last written to the timeline, in words.
    recorded: Option<String>,
    wait: Option<Wait>,
}

/// What the report says of the schedule (`convoy rollout run`, the live report, the monitor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduleReport {
    /// Devices offered so far under the schedule (the ramp's count).
    pub offered: u64,
    /// Devices of the current wave waiting for their offer.
    pub waiting: usize,
    /// When the next offer can happen (simulated time), if any device waits.
    pub next_offer_at: Option<Timestamp>,
    /// Why devices wait beyond the rate, in words ("window closed for 4 depots until 22:00
    /// local", "hourly bandwidth cap reached").
    pub waiting_because: Option<String>,
    /// The rate in force, devices a minute.
    pub per_minute: u64,
}

impl Pacing {
    /// The pacing of a rollout whose log fixes a schedule, taken up where the log left off.
    pub(super) fn from_state(state: &EngineState, now: Timestamp) -> Option<Self> {
        let rollout = state.rollout();
        let schedule = rollout.offer_schedule()?;
        let fleet = state.fleet();
        let mut pacer = schedule.pacer(fleet);
        let depot_group: std::collections::HashMap<&str, usize> = fleet
            .depots
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect();
        let unknown = pacer.calendar().unknown_depot_group();
        let group_of = fleet
            .devices
            .iter()
            .map(|d| {
                depot_group
                    .get(d.depot.as_str())
                    .copied()
                    .unwrap_or(unknown)
            })
            .collect();
        // A resumed run: the ramp counts every device offered so far, the hour's budget the
        // offers already made in this clock hour.
        // This runs as the run starts, before the engine lets any of the log go from memory
        // (`EngineState::log_written`), so the log read here is the whole replayed one.
        let s = rollout.state();
        let offered = s
            .devices
            .iter()
            .filter(|d| d.state != DeviceState::Pending)
            .count() as u64;
        let offered_since = |from: i64| -> u64 {
            rollout
                .events()
                .iter()
                .filter(|e| e.at.secs() >= from)
                .map(|e| match &e.kind {
                    EventKind::Offered { devices } => devices.len() as u64,
                    _ => 0,
                })
                .sum()
        };
        let in_hour = offered_since(now.secs() - now.secs().rem_euclid(3600));
        let in_minute = offered_since(now.secs() - now.secs().rem_euclid(60));
        pacer.restore(now, offered, in_hour, in_minute);
        let waiting = rollout
            .awaiting_offer()
            .into_iter()
            .filter_map(|id| state.index(id).map(|i| i as u32))
            .collect();
        let wave = match s.phase {
            Phase::Running { wave } | Phase::Paused { wave, .. } => wave,
            _ => 0,
        };
        Some(Self {
            pacer,
            group_of,
            wave,
            waiting,
            next_at: None,
            recorded: None,
            wait: None,
        })
    }
}

impl EngineState {
    /// Takes up the rollout's offer schedule, if its log fixes one (new or resumed run).
    pub fn start_pacing(&mut self, now: Timestamp) {
        self.pacing = Pacing::from_state(self, now);
    }

    /// Whether the run paces its offers.
    pub fn is_paced(&self) -> bool {
        self.pacing.is_some()
    }

    /// When the next paced offer can happen (simulated time), if devices wait for one: what
    /// the monitor shows as the next offer time.
    pub fn next_offer_at(&self) -> Option<Timestamp> {
        self.pacing
            .as_ref()
            .filter(|p| !p.waiting.is_empty())
            .and_then(|p| p.next_at)
    }

    /// The schedule's part of the report, when offers are paced.
    pub fn schedule_report(&self) -> Option<ScheduleReport> {
        let p = self.pacing.as_ref()?;
        Some(ScheduleReport {
            offered: p.pacer.offered(),
            waiting: p.waiting.len(),
            next_offer_at: self.next_offer_at(),
            waiting_because: p.wait.as_ref().map(Wait::words),
            per_minute: p.pacer.per_minute(),
        })
    }

    /// After an exclusion: the devices still waiting are those the rollout still owes an offer
    /// (excluded ones drop out of the pacer's queue).
    pub(super) fn prune_waiting(&mut self) {
        let still: Vec<u32> = self
            .rollout
            .awaiting_offer()
            .into_iter()
            .filter_map(|id| self.index(id).map(|i| i as u32))
            .collect();
        if let Some(p) = self.pacing.as_mut() {
            p.waiting.retain(|i| still.binary_search(i).is_ok());
        }
    }

    /// A wave started: its devices (fleet ids) wait for the pacer. Returns false when the run
    /// does not pace its offers (the caller offers them at once).
    pub(super) fn pace_wave(&mut self, wave: usize, device_ids: &[String]) -> bool {
        let waiting: Vec<u32> = device_ids
            .iter()
            .filter(|id| self.rollout.device_state(id) == Some(DeviceState::Pending))
            .filter_map(|id| self.index(id).map(|i| i as u32))
            .collect();
        let Some(p) = self.pacing.as_mut() else {
            return false;
        };
        p.wave = wave;
        p.waiting = waiting;
        true
    }

    /// Offers what the schedule allows at `now`; records why the rest wait when that changes.
    pub(super) fn pace(&mut self, now: Timestamp) -> Result<()> {
        let running = matches!(self.rollout.phase(), Phase::Running { .. });
        let Some(p) = self.pacing.as_mut() else {
            return Ok(());
        };
        if running {
            p.pacer.resume(now);
        } else {
            p.pacer.pause(now);
        }
        if p.waiting.is_empty() {
            p.next_at = None;
            p.wait = None;
            return Ok(());
        }
        let groups: Vec<usize> = p.waiting.iter().map(|&i| p.group_of[i as usize]).collect();
        let Pace {
            offer,
            exceptions,
            next_at,
            wait,
        } = p.pacer.poll(now, &groups);
        p.next_at = next_at;
        let words = wait.as_ref().map(Wait::words);
        let changed = words.is_some() && words != p.recorded;
        let waiting_payload = wait.as_ref().map(|w| {
            serde_json::json!({
                "rollout": self.config.rollout_id,
                "why": words,
                "wait": w,
                "next_offer_at": next_at,
                "devices_waiting": p.waiting.len() - offer.len(),
            })
        });
        p.recorded.clone_from(&words);
        p.wait = wait;
        let wave = p.wave;
        let mut taken = Vec::with_capacity(offer.len());
        for &k in offer.iter().rev() {
            taken.push(p.waiting.remove(k));
        }
        taken.reverse();
        let ids: Vec<String> = taken
            .iter()
            .map(|&i| self.fleet.devices[i as usize].id.clone())
            .collect();
        if !ids.is_empty() {
            match self.rollout.offer(now, &ids) {
                // The target, or a chain wave's first prerequisite (`engine/chain.rs`).
                Ok(()) => self.offer_devices(now, wave, &ids, true)?,
                // The rollout refused (a device no longer waits): say so rather than send.
                Err(e) => self.notes.push(format!("a paced offer was refused: {e}")),
            }
        }
        for (e, devices) in exceptions {
            let reason = self
                .rollout
                .offer_schedule()
                .and_then(|s| s.exceptions.get(e))
                .map(|x| x.reason.clone())
                .unwrap_or_default();
            let payload = serde_json::json!({"rollout": self.config.rollout_id, "exception": e, "reason": reason, "devices": devices});
            self.timeline(now, "schedule.exception", payload);
        }
        if changed && let Some(payload) = waiting_payload {
            self.timeline(now, "schedule.waiting", payload);
        }
        Ok(())
    }

    /// The offer command every device of the rollout gets.
    pub(super) fn offer_action(&self) -> Result<CommandAction> {
        // The canonical form of what was verified, never the file as it came in; serde_json
        // writes this value back byte for byte (sorted keys, no whitespace).
        let manifest = serde_json::from_slice::<serde_json::Value>(&self.config.manifest_served)
            .context("encoding the manifest for the offer")?;
        Ok(CommandAction::Offer {
            release_id: self.config.release_id.clone(),
            manifest,
        })
    }
}
