//! A simulated fleet on a virtual clock, for driving whole rollouts in tests and benchmarks.
//!
//! Each device follows a seeded behaviour model: offered → downloading → verified → installing
//! → rebooting → healthy, or an install failure, a boot failure with automatic revert, or
//! silence. Every device sends health telemetry each period with baseline noise (per-device
//! crash and reconnect-failure rates that differ between devices, normal reconnect times and
//! battery drain). Faults attach to devices by attribute (`hw_rev = C`) and change what the new
//! version does on them.
//!
//! It is deterministic (one `SeededRng` stream per device, events ordered by time then
//! sequence), sleeps never, and is not a network simulator: no MQTT, no partial downloads.

use super::{
    DeviceReport, DeviceState, HealthSample, Phase, Rollout, RolloutAction, TelemetryReport,
};
use crate::fleet::Fleet;
use crate::rng::SeededRng;
use crate::time::Timestamp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a faulty release does to matching devices.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The new version crashes in a loop: the device never confirms and reverts.
    CrashLoop,
    /// Crashes this many times as often on the new version.
    CrashRateTimes(f64),
    /// Installs fail with this probability.
    InstallFailure(f64),
    /// Extra battery drain in %/h on the new version.
    BatteryDrainPlus(f64),
    /// The device goes silent after rebooting into the new version, with this probability.
    SilentAfterReboot(f64),
}

/// A fault on devices whose `attribute` equals `value` (`None` attribute: every device).
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub attribute: Option<(String, String)>,
    pub kind: FaultKind,
}

/// Baseline behaviour and timing of the simulated fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub telemetry_every_secs: i64,
    pub crashes_per_hour: f64,
    pub reconnect_failures_per_hour: f64,
    pub support_contacts_per_hour: f64,
    /// Log-normal spread of per-device rates (0 = every device the same).
    pub rate_spread_sigma: f64,
    pub reconnect_secs_mean: f64,
    pub reconnect_secs_sd: f64,
    pub battery_pct_per_hour_mean: f64,
    pub battery_pct_per_hour_sd: f64,
    pub install_failure_ratio: f64,
    pub boot_failure_ratio: f64,
    /// Devices that drop off the network once offered and never report back.
    pub silent_ratio: f64,
    pub faults: Vec<Fault>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            telemetry_every_secs: 4 * 3600,
            crashes_per_hour: 0.002,
            reconnect_failures_per_hour: 0.01,
            support_contacts_per_hour: 0.000_5,
            rate_spread_sigma: 0.5,
            reconnect_secs_mean: 20.0,
            reconnect_secs_sd: 8.0,
            battery_pct_per_hour_mean: 1.0,
            battery_pct_per_hour_sd: 0.3,
            install_failure_ratio: 0.01,
            boot_failure_ratio: 0.002,
            silent_ratio: 0.004,
            faults: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct SimDevice {
    id: String,
    rng: SeededRng,
    crash_rate: f64,
    reconnect_rate: f64,
    faults: Vec<FaultKind>,
    /// Runs the new version (confirmed or not).
    on_new: bool,
    /// Never heard from again.
    gone: bool,
}

/// Scheduled device steps, ordered by (time, sequence) so ties resolve the same way each run.
type Step = Reverse<(i64, u64, u32, DeviceState)>;

/// A simulated fleet bound to one rollout's devices.
#[derive(Clone, Debug)]
pub struct SimFleet {
    config: SimConfig,
    devices: Vec<SimDevice>,
    queue: BinaryHeap<Step>,
    seq: u64,
    next_telemetry: Timestamp,
    /// Actions the rollout asked for, in order, for tests to inspect.
    pub actions: Vec<(Timestamp, RolloutAction)>,
}

/// How a simulated rollout ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    pub phase: Phase,
    pub ended_at: Timestamp,
    /// True when the rollout stopped itself (paused by a gate or rolled back).
    pub stopped_by_gate: bool,
    /// The wave it stopped in (if it stopped).
    pub stopped_in_wave: Option<usize>,
}

impl SimFleet {
    /// Builds the simulated devices of `rollout` from `fleet`, which must hold them.
    pub fn new(fleet: &Fleet, rollout: &Rollout, config: SimConfig, start: Timestamp) -> Self {
        let devices = rollout
            .state()
            .device_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut rng = SeededRng::derive(config.seed, i as u64);
                let spread = |rng: &mut SeededRng| {
                    let s = config.rate_spread_sigma;
                    (rng.normal(0.0, s) - s * s / 2.0).exp()
                };
                let crash_rate = config.crashes_per_hour * spread(&mut rng);
                let reconnect_rate = config.reconnect_failures_per_hour * spread(&mut rng);
                let faults = fleet
                    .device(id)
                    .map(|d| {
                        config
                            .faults
                            .iter()
                            .filter(|f| {
                                f.attribute
                                    .as_ref()
                                    .is_none_or(|(a, v)| d.attribute(a).as_deref() == Some(v))
                            })
                            .map(|f| f.kind.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                SimDevice {
                    id: id.clone(),
                    rng,
                    crash_rate,
                    reconnect_rate,
                    faults,
                    on_new: false,
                    gone: false,
                }
            })
            .collect();
        let next_telemetry = start.plus_secs(config.telemetry_every_secs);
        Self {
            config,
            devices,
            queue: BinaryHeap::new(),
            seq: 0,
            next_telemetry,
            actions: Vec::new(),
        }
    }

    fn schedule(&mut self, at: i64, device: u32, state: DeviceState) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, device, state)));
    }

    fn index(&self, id: &str) -> Option<u32> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| i as u32)
    }

    /// Plans one device's way through the update from `now`.
    fn offer(&mut self, now: Timestamp, i: u32) {
        let cfg = self.config.clone();
        let d = &mut self.devices[i as usize];
        if d.gone || d.rng.chance(cfg.silent_ratio) {
            d.gone = true;
            return;
        }
        let mut t = now.secs();
        let mut step = |rng: &mut SeededRng, lo: i64, hi: i64| {
            t += rng.range_inclusive(lo, hi);
            t
        };
        let install_fail = d
            .faults
            .iter()
            .fold(cfg.install_failure_ratio, |p, f| match f {
                FaultKind::InstallFailure(q) => p.max(*q),
                _ => p,
            });
        let crash_loop = d.faults.contains(&FaultKind::CrashLoop);
        let silent_after = d.faults.iter().fold(0.0, |p: f64, f| match f {
            FaultKind::SilentAfterReboot(q) => p.max(*q),
            _ => p,
        });
        let rng = &mut d.rng;
        let mut plan = vec![
            (step(rng, 60, 1800), DeviceState::Downloading),
            (step(rng, 300, 3600), DeviceState::Verified),
        ];
        if rng.chance(install_fail) {
            plan.push((step(rng, 60, 600), DeviceState::Failed));
        } else {
            plan.push((step(rng, 60, 600), DeviceState::Installing));
            plan.push((step(rng, 120, 900), DeviceState::Rebooting));
            if crash_loop || rng.chance(cfg.boot_failure_ratio) {
                plan.push((step(rng, 300, 900), DeviceState::Reverted));
            } else if rng.chance(silent_after) {
                // Bricked after reboot: heard from no more. Marked by a `Pending` step.
                plan.push((step(rng, 1, 1), DeviceState::Pending));
            } else {
                plan.push((step(rng, 300, 1200), DeviceState::Healthy));
            }
        }
        for (at, state) in plan {
            self.schedule(at, i, state);
        }
    }

    fn sample(&mut self, i: usize) -> HealthSample {
        let cfg = &self.config;
        let d = &mut self.devices[i];
        let hours = cfg.telemetry_every_secs as f64 / 3600.0;
        let mut crash_rate = d.crash_rate;
        let mut drain = cfg.battery_pct_per_hour_mean;
        if d.on_new {
            for f in &d.faults {
                match f {
                    FaultKind::CrashRateTimes(k) => crash_rate *= k,
                    FaultKind::CrashLoop => crash_rate = crash_rate.max(20.0),
                    FaultKind::BatteryDrainPlus(x) => drain += x,
                    _ => {}
                }
            }
        }
        let rng = &mut d.rng;
        HealthSample {
            period_secs: cfg.telemetry_every_secs as u32,
            crashes: poisson(rng, crash_rate * hours),
            reconnect_failures: poisson(rng, d.reconnect_rate * hours),
            support_contacts: poisson(rng, cfg.support_contacts_per_hour * hours),
            reconnect_secs: Some(
                rng.normal(cfg.reconnect_secs_mean, cfg.reconnect_secs_sd)
                    .max(1.0),
            ),
            battery_drain_pct_per_hour: Some(
                rng.normal(drain, cfg.battery_pct_per_hour_sd).max(0.0),
            ),
            custom: Vec::new(),
        }
    }

    fn drain_actions(&mut self, now: Timestamp, rollout: &mut Rollout) {
        while let Some(action) = rollout.poll_action() {
            match &action {
                RolloutAction::Offer { device_ids, .. } => {
                    for id in device_ids {
                        if let Some(i) = self.index(id) {
                            self.offer(now, i);
                        }
                    }
                }
                RolloutAction::RollBack { device_ids, .. } => {
                    for id in device_ids {
                        if let Some(i) = self.index(id) {
                            let d = &mut self.devices[i as usize];
                            if !d.gone {
                                let at = now.secs() + d.rng.range_inclusive(60, 1800);
                                self.schedule(at, i, DeviceState::Reverted);
                            }
                        }
                    }
                }
                RolloutAction::Pause(_) | RolloutAction::Notify(_) => {}
            }
            self.actions.push((now, action));
        }
    }

    /// Runs the rollout on the virtual clock from `now` until it completes, stops itself, or
    /// `until` passes. Reports the rollout rejects are counted, not fatal.
    pub fn run(
        &mut self,
        rollout: &mut Rollout,
        mut now: Timestamp,
        until: Timestamp,
    ) -> SimOutcome {
        loop {
            self.drain_actions(now, rollout);
            let phase = rollout.phase().clone();
            let stopped = match &phase {
                Phase::Paused { wave, .. } => Some(*wave),
                Phase::RolledBack | Phase::Completed | Phase::Aborted { .. } => None,
                _ => {
                    let next = [
                        rollout.poll_timeout().map(Timestamp::secs),
                        self.queue.peek().map(|Reverse((t, ..))| *t),
                        Some(self.next_telemetry.secs()),
                    ]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(until.secs());
                    now = Timestamp::from_secs(next.max(now.secs()));
                    if now > until {
                        return Self::outcome(rollout, now);
                    }
                    self.advance(rollout, now);
                    continue;
                }
            };
            let mut out = Self::outcome(rollout, now);
            out.stopped_in_wave = stopped.or(out.stopped_in_wave);
            return out;
        }
    }

    fn advance(&mut self, rollout: &mut Rollout, now: Timestamp) {
        while let Some(&Reverse((t, _, i, state))) = self.queue.peek() {
            if t > now.secs() {
                break;
            }
            self.queue.pop();
            let d = &mut self.devices[i as usize];
            if d.gone {
                continue;
            }
            if state == DeviceState::Pending {
                d.gone = true;
                continue;
            }
            match state {
                DeviceState::Rebooting | DeviceState::Healthy => d.on_new = true,
                DeviceState::Reverted => d.on_new = false,
                _ => {}
            }
            let report = DeviceReport {
                device_id: d.id.clone(),
                state,
            };
            // A rollback can race a device's own progress; the rollout rejects the stale step.
            let _ = rollout.handle_report(Timestamp::from_secs(t), report);
        }
        if now >= self.next_telemetry {
            for i in 0..self.devices.len() {
                if self.devices[i].gone {
                    continue;
                }
                let sample = self.sample(i);
                let report = TelemetryReport {
                    device_id: self.devices[i].id.clone(),
                    sample,
                };
                let _ = rollout.handle_telemetry(now, report);
            }
            self.next_telemetry = self
                .next_telemetry
                .plus_secs(self.config.telemetry_every_secs);
        }
        if rollout.poll_timeout().is_some_and(|t| t <= now) {
            rollout.handle_timeout(now);
        }
    }

    fn outcome(rollout: &Rollout, now: Timestamp) -> SimOutcome {
        let mut stopped_in_wave = None;
        let mut stopped_by_gate = false;
        for e in rollout.events() {
            if e.cause == super::Cause::Gate {
                match &e.kind {
                    super::EventKind::Paused { .. } => {
                        stopped_by_gate = true;
                        stopped_in_wave = stopped_in_wave.or(Some(wave_of(rollout, e.at)));
                    }
                    super::EventKind::RollbackStarted { scope, .. } => {
                        stopped_by_gate = true;
                        let w = match scope {
                            super::RollbackScope::Wave(w) => *w,
                            super::RollbackScope::All => wave_of(rollout, e.at),
                        };
                        stopped_in_wave = stopped_in_wave.or(Some(w));
                    }
                    _ => {}
                }
            }
        }
        SimOutcome {
            phase: rollout.phase().clone(),
            ended_at: now,
            stopped_by_gate,
            stopped_in_wave,
        }
    }
}

/// The last wave started at or before `at`.
fn wave_of(rollout: &Rollout, at: Timestamp) -> usize {
    rollout
        .events()
        .iter()
        .rev()
        .filter(|e| e.at <= at)
        .find_map(|e| match e.kind {
            super::EventKind::WaveStarted { wave } => Some(wave),
            _ => None,
        })
        .unwrap_or(0)
}

/// A Poisson draw by inversion (means here are small: a few events per period at most).
fn poisson(rng: &mut SeededRng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return rng.normal(mean, mean.sqrt()).round().max(0.0) as u32;
    }
    let u = rng.next_f64();
    let mut p = (-mean).exp();
    let mut cdf = p;
    let mut k = 0u32;
    while u > cdf && k < 1000 {
        k += 1;
        p *= mean / f64::from(k);
        cdf += p;
    }
    k
}
