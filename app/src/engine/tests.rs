//! The engine's driver state on a virtual clock: whole rollouts over a simulated fleet, with
//! no broker, no cache file and no sleeps.
//!
//! A [`Harness`] plays the shell's part. It advances simulated time in fixed steps (wall time
//! follows at the run's time scale), ticks the simulated devices of `crate::sim::SimFleet`,
//! hands what they publish to the state through the real protocol decoder, and carries out
//! what the state asks: decisions are "committed" by numbering their commands, and commands
//! reach the devices through the real command decoder, as `convoy sim` reads them from the
//! broker. It checks on every write that no command goes out that was not committed first.
//!
//! What these tests deliberately leave to `tests/it/engine.rs`: the broker, the cache's
//! transactions and the tokio loop, which the end-to-end tests run for real.

use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::fleet::Fleet;
use convoy_core::gates::GatePolicy;
use convoy_core::manifest::{self, ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::rollout::{ChangePath, DeviceState, Phase, Rollout, RolloutSpec, WaveSpec};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::time::Duration;

use super::FinalState;
use super::control::{ControlError, OperatorCommand};
use super::state::{EngineState, StateConfig, StoreWrite};
use crate::link::mqtt::LinkEvent;
use crate::link::protocol::{Inbound, Topics, decode_inbound};
use crate::sim::{SimFleet, decode_command};

const START: Timestamp = Timestamp::from_secs(1_795_392_000);
/// Simulated seconds per wall second, as the demo runs.
const SCALE: f64 = 60.0;
/// The virtual clock's step, in simulated seconds.
const STEP_SECS: i64 = 60;
const RELEASE: &str = "t300-fw-2.5.0";

/// A hundred T300 devices of a synthetic fleet (the release is for that model only), the
/// rare revision C among them: small enough that a whole rollout takes a fraction of a second.
fn t300_fleet() -> Fleet {
    let mut fleet = generate(&SynthOptions {
        devices: 600,
        seed: 7,
        now: START,
    });
    fleet.devices.retain(|d| d.model == "T300");
    let rare = fleet.devices.iter().filter(|d| d.hw_rev == "C").count();
    let mut others = 0;
    fleet.devices.retain(|d| {
        others += usize::from(d.hw_rev != "C");
        d.hw_rev == "C" || others <= 100 - rare
    });
    fleet
}

/// A canary of 30 with every rare revision C device in it (at least five, so the stratum is
/// judged on its own), an early wave of 30, then everyone else; one simulated hour of soak each.
fn waves(fleet: &Fleet) -> Vec<WaveSpec> {
    let (rare, others): (Vec<_>, Vec<_>) = fleet.devices.iter().partition(|d| d.hw_rev == "C");
    assert!(rare.len() >= 5, "the canary has the rare revision C");
    let mut canary: Vec<String> = rare.iter().map(|d| d.id.clone()).collect();
    let split = 30 - canary.len();
    canary.extend(others[..split].iter().map(|d| d.id.clone()));
    canary.sort();
    let ids = |range: &[&convoy_core::fleet::Device]| range.iter().map(|d| d.id.clone()).collect();
    vec![
        WaveSpec {
            name: "canary".into(),
            device_ids: canary,
            soak_secs: 3600,
        },
        WaveSpec {
            name: "early".into(),
            device_ids: ids(&others[split..split + 30]),
            soak_secs: 3600,
        },
        WaveSpec {
            name: "everyone".into(),
            device_ids: ids(&others[split + 30..]),
            soak_secs: 3600,
        },
    ]
}

/// The release, signed with a test key, and the key set the devices trust.
fn release() -> (manifest::VerifiedManifest, TrustedKeys) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let version = Version::new(2, 5, 0);
    let digest = ArtifactDigest::of_bytes("fw.img", b"convoy test firmware 2.5.0");
    let spec = ReleaseSpec {
        id: RELEASE.to_owned(),
        version,
        counter: 50,
        hardware: vec!["T300".into()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".into(),
            url: "fw.img".into(),
            length_bytes: 4_000_000,
            sha256: digest.sha256,
        }],
        expires: START.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, &key)
        .expect("sign")
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    let verified = manifest::verify(&bytes, &trust, START).expect("the test release verifies");
    (verified, trust)
}

const BL: &str = "t300-bl-2.0.1";

/// The bootloader release of the fixture catalog, signed with the test key.
fn bootloader() -> manifest::VerifiedManifest {
    let key = SigningKey::from_bytes(&[7; 32]);
    let version = Version::new(2, 0, 1);
    let digest = ArtifactDigest::of_bytes("bl.bin", b"convoy test bootloader 2.0.1");
    let spec = ReleaseSpec {
        id: BL.to_owned(),
        version,
        counter: 40,
        hardware: vec!["T300".into()],
        provides: [("bootloader", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "bl.bin".into(),
            url: "bl.bin".into(),
            length_bytes: 1_100_000,
            sha256: digest.sha256,
        }],
        expires: START.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, &key)
        .expect("sign")
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    manifest::verify(&bytes, &trust, START).expect("the bootloader verifies")
}

/// The shell's part, on a virtual clock. See the module docs.
struct Harness {
    state: EngineState,
    devices: SimFleet,
    topics: Topics,
    now: Timestamp,
    /// Committed command ids, in order, and the device each goes to.
    committed: HashMap<String, String>,
    /// Every decision's audit action and its number of commands.
    decisions: Vec<(String, usize)>,
    audits: Vec<(String, String)>,
    /// Timeline events: (kind, actor).
    timeline: Vec<(String, String)>,
    /// Every command id put on the wire, with the wall time it went.
    transmitted: Vec<(String, Duration)>,
    /// The device whose acknowledgements are lost, from the first for two wall seconds.
    lose_acks_of: Option<String>,
    lose_until: Option<Duration>,
    lost: Vec<String>,
    /// Held by an operator: a paused rollout keeps running (`WhenPaused::Hold`).
    hold: bool,
    /// The step of the virtual clock, in simulated seconds.
    step_secs: i64,
    /// Report what was published only at the next step, as a sender task that lags behind.
    defer_sent: bool,
    deferred: Vec<String>,
    /// When the gates' evidence first asked for a stop (checked after every inbound message).
    decisive_at: Option<Timestamp>,
    /// The rollout's replayable log as the cache would hold it, from its `Log` and `Decision`
    /// writes (the state keeps only what is not written yet).
    log: Vec<convoy_core::rollout::RolloutEvent>,
}

impl Harness {
    fn new(faults: &str) -> Self {
        Self::with_schedule(faults, None)
    }

    /// A run whose offers follow `schedule` (paced, issue 20), when given.
    fn with_schedule(
        faults: &str,
        schedule: Option<convoy_core::plan::pacing::OfferSchedule>,
    ) -> Self {
        Self::with_options(faults, schedule, false)
    }

    /// A run whose last wave ("everyone") installs the bootloader release [`BL`] first, when
    /// `chain` (prerequisite chains, issue 20).
    fn with_options(
        faults: &str,
        schedule: Option<convoy_core::plan::pacing::OfferSchedule>,
        chain: bool,
    ) -> Self {
        let fleet = t300_fleet();
        let (verified, trust) = release();
        let faults = Faults::parse(faults, &fleet).expect("faults");
        let spec = RolloutSpec {
            id: "r1".into(),
            release_id: RELEASE.into(),
            requested_by: "alice".into(),
            waves: waves(&fleet),
            gates: GatePolicy {
                hold_extension_secs: 1800,
                ..GatePolicy::default()
            },
            path: ChangePath::SingleOperator,
        };
        let mut rollout = Rollout::new(START, spec, &fleet).expect("a valid rollout");
        rollout.approve(START, "alice").expect("alice approves");
        if let Some(schedule) = schedule {
            rollout.pace_offers(START, schedule).expect("paced");
        }
        let mut prerequisites = std::collections::BTreeMap::new();
        if chain {
            rollout
                .set_chains(
                    START,
                    vec![convoy_core::rollout::WaveChain {
                        wave: 2,
                        releases: vec![BL.into()],
                    }],
                )
                .expect("chains");
            prerequisites.insert(BL.to_owned(), bootloader().served_bytes().into());
        }
        let topics = Topics::default_prefix();
        let config = StateConfig {
            rollout_id: "r1".into(),
            release_id: RELEASE.into(),
            manifest_served: verified.served_bytes().into(),
            topics: topics.clone(),
            start: START,
            sample_period_secs: 900,
            max_report_gap_secs: super::health::DEFAULT_MAX_GAP_SECS,
            resend_after: Duration::from_secs(5),
            prerequisites,
        };
        let devices = SimFleet::new(
            &fleet,
            faults,
            trust,
            11,
            &SimConfig::default(),
            START,
            SCALE,
        );
        let mut state = EngineState::new(config, rollout, fleet, None, START);
        state.start_pacing(START);
        state.handle_link_event(START, LinkEvent::Connected);
        let mut h = Self {
            state,
            devices,
            topics,
            now: START,
            committed: HashMap::new(),
            decisions: Vec::new(),
            audits: Vec::new(),
            timeline: Vec::new(),
            transmitted: Vec::new(),
            lose_acks_of: None,
            lose_until: None,
            lost: Vec::new(),
            hold: false,
            step_secs: STEP_SECS,
            defer_sent: false,
            deferred: Vec::new(),
            decisive_at: None,
            log: Vec::new(),
        };
        h.drain();
        h
    }

    /// Wall time since the run began, at the run's time scale.
    fn wall(&self) -> Duration {
        Duration::from_secs_f64(self.now.secs_since(START) as f64 / SCALE)
    }

    /// Does what the state asks: writes (decisions numbered as the cache would), then sends.
    fn drain(&mut self) {
        while let Some(write) = self.state.poll_write().expect("the state's own encoding") {
            match write {
                StoreWrite::Decision {
                    audit,
                    commands,
                    log,
                } => {
                    self.write_log(log);
                    let ids: Vec<String> = (0..commands.len())
                        .map(|i| format!("cmd-{}-{i}", self.decisions.len()))
                        .collect();
                    for (id, c) in ids.iter().zip(&commands) {
                        self.committed.insert(id.clone(), c.device_id.clone());
                    }
                    self.decisions.push((audit.action, commands.len()));
                    let wall = self.wall();
                    self.state.handle_committed(ids, wall);
                }
                StoreWrite::Audit(e) => self.audits.push((e.action, e.actor)),
                StoreWrite::Timeline { kind, actor, .. } => self.timeline.push((kind, actor)),
                StoreWrite::Log { range } => self.write_log(range),
                StoreWrite::DeviceEvents(_)
                | StoreWrite::Acked { .. }
                | StoreWrite::Sent { .. }
                | StoreWrite::Devices(_) => {}
            }
        }
        let wall = self.wall();
        while let Some(batch) = self.state.poll_transmit() {
            let mut sent = Vec::new();
            for wire in batch {
                assert!(
                    self.committed.contains_key(&wire.command_id),
                    "command {} went out before its decision was committed",
                    wire.command_id
                );
                let (device_id, command_id, command) =
                    decode_command(&self.topics, &wire.topic, &wire.payload)
                        .expect("the engine's commands decode");
                assert!(
                    self.devices
                        .command(self.now, &device_id, &command_id, command)
                );
                self.transmitted.push((command_id.clone(), wall));
                sent.push(command_id);
            }
            if self.defer_sent {
                self.deferred.extend(sent);
            } else {
                self.state.handle_sent(self.now, wall, sent);
                self.drain_writes_only();
            }
        }
    }

    /// Appends the log's events in `range` to the written log, in order, as the cache's
    /// sequence numbers would have them, and tells the state.
    fn write_log(&mut self, range: std::ops::Range<usize>) {
        assert_eq!(range.start, self.log.len(), "the log is written in order");
        let events = self
            .state
            .rollout()
            .logged(range.clone())
            .expect("the events to write are still in memory");
        self.log.extend_from_slice(events);
        self.state.log_written(range.end);
    }

    /// The `Sent` writes that reporting a batch gives.
    fn drain_writes_only(&mut self) {
        while let Some(write) = self.state.poll_write().expect("writes") {
            assert!(matches!(write, StoreWrite::Sent { .. }), "{write:?}");
        }
    }

    /// One step of the virtual clock: the devices act, the state hears them, time passes.
    fn step(&mut self) {
        self.now = self.now.plus_secs(self.step_secs);
        if !self.deferred.is_empty() {
            let sent = std::mem::take(&mut self.deferred);
            let wall = self.wall();
            self.state.handle_sent(self.now, wall, sent);
            self.drain();
        }
        self.devices.tick(self.now);
        let mut out = Vec::new();
        self.devices.drain(&self.topics, &mut out);
        for (topic, payload, _) in out {
            let event = match decode_inbound(&self.topics, &topic, &payload, self.now) {
                Ok(Inbound::Ack(a)) if self.lose(&a.device_id) => {
                    self.lost.push(a.command_id);
                    continue;
                }
                Ok(inbound) => LinkEvent::Inbound(inbound),
                Err(rejection) => LinkEvent::Rejected(rejection),
            };
            self.state.handle_link_event(self.now, event);
            self.drain();
            if self.decisive_at.is_none()
                && self
                    .state
                    .rollout()
                    .evaluate_gates()
                    .is_some_and(|r| r.outcome() > convoy_core::gates::GateOutcome::Hold)
            {
                self.decisive_at = Some(self.now);
            }
        }
        let wall = self.wall();
        self.state.handle_timeout(self.now, wall);
        self.drain();
    }

    fn lose(&mut self, device_id: &str) -> bool {
        if self.lose_acks_of.as_deref() != Some(device_id) {
            return false;
        }
        let wall = self.wall();
        wall < *self.lose_until.get_or_insert(wall + Duration::from_secs(2))
    }

    /// Steps until the run ends (as `poll_end` says) or `limit_secs` of simulated time pass.
    fn run(&mut self, limit_secs: i64) -> Option<FinalState> {
        let until = self.now.plus_secs(limit_secs);
        while self.now < until {
            self.step();
            if let Some(end) = self.state.poll_end(self.now, self.hold) {
                return Some(end);
            }
        }
        None
    }

    /// Steps until `done` holds, at most `limit_secs` of simulated time.
    fn run_until(&mut self, limit_secs: i64, done: impl Fn(&Self) -> bool) {
        let until = self.now.plus_secs(limit_secs);
        while !done(self) {
            assert!(self.now < until, "not reached within {limit_secs} s");
            self.step();
        }
    }

    fn offers(&self) -> usize {
        self.decisions
            .iter()
            .filter(|(a, _)| a == "rollout.offer")
            .count()
    }

    fn devices_in(&self, state: DeviceState) -> usize {
        self.state.rollout().devices_in(state).len()
    }
}

const CRASH_LOOP_ON_C: &str = r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#;

#[test]
fn a_good_release_completes_over_a_simulated_fleet() {
    let mut h = Harness::new(r#"{"faults": []}"#);
    let end = h.run(2 * 86_400);
    assert_eq!(
        end,
        Some(FinalState::Completed),
        "{:?}",
        h.state.rollout().phase()
    );
    assert_eq!(
        h.offers(),
        3,
        "one offer decision per wave: {:?}",
        h.decisions
    );
    let total = h.state.rollout().state().device_ids.len();
    let confirmed = h.devices_in(DeviceState::Healthy);
    assert!(
        confirmed * 100 >= total * 95,
        "a good release is confirmed on nearly every device: {confirmed} of {total}"
    );
    let report = h
        .state
        .final_report(FinalState::Completed, h.now, h.wall(), 0, None);
    for w in &report.waves {
        assert_eq!(w.offered, w.devices, "every device offered: {w:?}");
        assert_eq!(w.confirmed + w.failed + w.reverted, w.offered, "{w:?}");
    }
    assert!(report.unsettled.is_empty(), "{:?}", report.unsettled);
    assert_eq!(report.link.commands_sent, report.link.commands_acked);
    assert!(h.timeline.iter().any(|(k, _)| k == "rollout.completed"));
}

#[test]
fn a_crash_looping_canary_is_rolled_back_and_no_later_wave_is_offered() {
    let mut h = Harness::new(CRASH_LOOP_ON_C);
    let end = h.run(2 * 86_400);
    assert_eq!(
        end,
        Some(FinalState::Paused),
        "{:?}",
        h.state.rollout().phase()
    );
    assert!(
        matches!(
            h.state.rollout().phase(),
            Phase::Paused {
                wave: 0,
                rolled_back: true,
                ..
            }
        ),
        "{:?}",
        h.state.rollout().phase()
    );
    assert_eq!(
        h.offers(),
        1,
        "only the canary was offered: {:?}",
        h.decisions
    );
    assert!(
        h.decisions
            .iter()
            .any(|(a, n)| a == "rollout.rollback" && *n > 0),
        "the canary's devices were told to roll back: {:?}",
        h.decisions
    );
    let report = h
        .state
        .final_report(FinalState::Paused, h.now, h.wall(), 0, None);
    let stop = report
        .gate_decisions
        .iter()
        .find(|d| d.outcome != convoy_core::gates::GateOutcome::Hold)
        .expect("a gate stopped the rollout");
    assert_eq!(stop.wave, "canary");
    assert_eq!(stop.outcome, convoy_core::gates::GateOutcome::RollBackWave);
    assert!(report.waves[1..].iter().all(|w| w.offered == 0));
    assert!(h.timeline.iter().any(|(k, _)| k == "gate.decision"));
}

#[test]
fn an_operator_pauses_and_resumes_and_nothing_is_offered_in_between() {
    let mut h = Harness::new(r#"{"faults": []}"#);
    h.hold = true;
    h.run_until(86_400, |h| {
        matches!(h.state.rollout().phase(), Phase::Soaking { wave: 0, .. })
    });
    let command = OperatorCommand::Pause {
        reason: "change freeze".into(),
    };
    h.state
        .handle_operator(h.now, "bob", &command)
        .expect("a soaking rollout can be paused");
    h.drain();
    assert!(matches!(h.state.rollout().phase(), Phase::Paused { .. }));
    // An override needs a reason, and an operator's pause needs a resume, not an override.
    let empty = OperatorCommand::Override {
        reason: String::new(),
    };
    assert!(matches!(
        h.state.handle_operator(h.now, "bob", &empty),
        Err(ControlError::MissingField { .. })
    ));
    let override_pause = OperatorCommand::Override {
        reason: "go on".into(),
    };
    assert!(matches!(
        h.state.handle_operator(h.now, "bob", &override_pause),
        Err(ControlError::Refused { .. })
    ));
    // Three canary soaks pass: held, the run goes on and the next wave is not offered.
    assert_eq!(h.run(3 * 3600), None, "a held pause does not end the run");
    assert_eq!(h.offers(), 1);
    let resume = OperatorCommand::Resume {
        reason: "freeze over".into(),
    };
    h.state
        .handle_operator(h.now, "bob", &resume)
        .expect("a paused rollout resumes");
    h.drain();
    assert_eq!(h.run(2 * 86_400), Some(FinalState::Completed));
    assert_eq!(h.offers(), 3);
    assert!(
        h.timeline
            .iter()
            .any(|(k, a)| k == "rollout.paused" && a == "bob: change freeze"),
        "{:?}",
        h.timeline
    );
    for action in ["operator.pause", "operator.resume"] {
        assert!(
            h.audits.iter().any(|(a, who)| a == action && who == "bob"),
            "{action} by bob: {:?}",
            h.audits
        );
    }
}

#[test]
fn a_lost_ack_is_resent_with_the_same_id_after_its_deadline() {
    let mut h = Harness::new(r#"{"faults": []}"#);
    let device = h.state.rollout().spec().waves[0].device_ids[0].clone();
    h.lose_acks_of = Some(device.clone());
    h.run_until(3600, |h| !h.lost.is_empty());
    let lost = h.lost[0].clone();
    assert_eq!(h.committed.get(&lost), Some(&device));
    let sends = |h: &Harness| -> Vec<Duration> {
        h.transmitted
            .iter()
            .filter(|(id, _)| *id == lost)
            .map(|(_, wall)| *wall)
            .collect()
    };
    // Sent once when committed; the resend pass counts its backoff from then.
    let before = sends(&h);
    assert_eq!(before.len(), 1, "{before:?}");
    h.run_until(3600, |h| sends(h).len() > before.len());
    let after = sends(&h);
    let gap = after[before.len()].saturating_sub(before[before.len() - 1]);
    assert!(
        gap >= Duration::from_secs(5),
        "resent after the first backoff, not before: {after:?}"
    );
    assert!(h.lost.iter().all(|id| *id == lost), "{:?}", h.lost);
    // The device acknowledges the repeat (it applies the command once) and takes the release.
    assert_eq!(h.run(2 * 86_400), Some(FinalState::Completed));
    assert_eq!(
        h.state.rollout().device_state(&device),
        Some(DeviceState::Healthy)
    );
    assert_eq!(
        h.committed.values().filter(|d| **d == device).count(),
        1,
        "one offer for the device, resent, never a second decision"
    );
    let report = h
        .state
        .final_report(FinalState::Completed, h.now, h.wall(), 0, None);
    assert!(report.link.commands_resent >= 1);
}

#[test]
fn a_command_is_not_queued_twice_while_the_sender_has_not_reported_it() {
    // The sender reports what it published a step (a wall second) later, as the tokio shell's
    // sender task does under load. The resend pass in between must not queue the command
    // again: it counts the backoff from when the command was queued.
    let mut h = Harness::new(r#"{"faults": []}"#);
    h.defer_sent = true;
    assert_eq!(h.run(2 * 86_400), Some(FinalState::Completed));
    let mut first: HashMap<&str, Duration> = HashMap::new();
    for (id, wall) in &h.transmitted {
        match first.get(id.as_str()) {
            Some(t0) => assert!(
                wall.saturating_sub(*t0) >= Duration::from_secs(5),
                "{id} queued again {:?} after its first send, within its backoff",
                wall.saturating_sub(*t0)
            ),
            None => {
                first.insert(id, *wall);
            }
        }
    }
    assert!(!first.is_empty());
}

#[test]
fn a_crash_loop_is_rolled_back_within_a_second_of_the_evidence_that_decides_it() {
    // Issue 18: an alarm (a crash, a failed boot) closes the device's health window at once and
    // a look follows within the debounce, instead of waiting for the 15-minute sample period
    // and the 15-minute look. On a one-second virtual clock from the first bad boot on, the
    // rollback commands go out in the step of the first telemetry that makes the evidence
    // decisive.
    let mut h = Harness::new(CRASH_LOOP_ON_C);
    h.run_until(86_400, |h| {
        h.state
            .rollout()
            .state()
            .devices
            .iter()
            .zip(&h.state.rollout().state().device_ids)
            .any(|(d, id)| {
                d.state.runs_new_version()
                    && h.state
                        .fleet()
                        .device(id)
                        .is_some_and(|dev| dev.hw_rev == "C")
            })
    });
    let first_bad_boot = h.now;
    h.step_secs = 1;
    h.run_until(6 * 3600, |h| {
        h.decisions
            .iter()
            .any(|(a, n)| a == "rollout.rollback" && *n > 0)
    });
    let decided = h.decisive_at.expect("the evidence became decisive");
    let rollback_sent = h
        .transmitted
        .iter()
        .find(|(id, _)| {
            h.decisions
                .iter()
                .position(|(a, _)| a == "rollout.rollback")
                .is_some_and(|k| id.starts_with(&format!("cmd-{k}-")))
        })
        .map(|(_, wall)| *wall)
        .expect("the rollback went out");
    let decided_wall = Duration::from_secs_f64(decided.secs_since(START) as f64 / SCALE);
    assert!(
        rollback_sent.saturating_sub(decided_wall) <= Duration::from_secs(1),
        "decisive at {decided_wall:?} of wall time, rollback on the wire at {rollback_sent:?}"
    );
    // The crashes of the first revision C devices decide it (about a minute and a half of
    // simulated time here), before a 900-second sample period would even have closed their
    // windows.
    assert!(
        decided.secs_since(first_bad_boot) < 900,
        "decided {} s after the first bad boot",
        decided.secs_since(first_bad_boot)
    );
}

/// The driver state's promise, checked on its source: no clock, no cache, no broker, no tokio.
#[test]
fn the_driver_state_reads_no_clock_and_does_no_io() {
    let source = include_str!("state.rs");
    for banned in [
        "Instant",
        "SystemTime",
        "tokio::",
        "crate::store::Store",
        "rusqlite",
        "LinkHandle",
        "mpsc",
    ] {
        assert!(
            !source.contains(banned),
            "engine/state.rs names {banned}: the shell's business"
        );
    }
}

/// Issue 23: a broker lost for over a minute of wall time is on the timeline (the alerts'
/// `link_lost`), once, and its return too; a short blip is not.
#[test]
fn a_broker_lost_for_a_minute_is_on_the_timeline_once_and_its_return_too() {
    let mut h = Harness::new(r#"{"faults": []}"#);
    let lost = |h: &Harness, kind: &str| h.timeline.iter().filter(|(k, _)| k == kind).count();
    let t0 = h.wall();
    h.state
        .handle_link_event(h.now, LinkEvent::Disconnected("broker restarted".into()));
    for secs in [0, 30, 59] {
        h.state
            .handle_timeout(h.now, t0 + Duration::from_secs(secs));
        h.drain();
    }
    assert_eq!(lost(&h, "link.lost"), 0, "under a minute is a blip");
    for secs in [61, 90, 300] {
        h.state
            .handle_timeout(h.now, t0 + Duration::from_secs(secs));
        h.drain();
    }
    assert_eq!(lost(&h, "link.lost"), 1, "recorded once");
    h.state.handle_link_event(h.now, LinkEvent::Connected);
    h.drain();
    assert_eq!(lost(&h, "link.restored"), 1);
    // A second blip after the return is not an alert.
    h.state
        .handle_link_event(h.now, LinkEvent::Disconnected("again".into()));
    h.state.handle_timeout(h.now, t0 + Duration::from_secs(310));
    h.state.handle_link_event(h.now, LinkEvent::Connected);
    h.drain();
    assert_eq!(lost(&h, "link.lost"), 1);
    assert_eq!(lost(&h, "link.restored"), 1);
}

/// Issue 20: a paced run offers at most the rate each minute, stops offering while an operator
/// holds it paused and goes on at the ramp's rate after the resume (no catch-up, no restart),
/// records why offers wait, and its log replays.
#[test]
fn paced_offers_keep_the_rate_stop_while_paused_and_continue_the_ramp() {
    use convoy_core::plan::pacing::OfferSchedule;
    use convoy_core::plan::policy::{PlanningPolicy, RateLimit};
    let policy = PlanningPolicy {
        rate: RateLimit::Exponential {
            start_per_minute: 2,
            factor: 2.0,
            every_devices: 20,
            max_per_minute: 16,
        },
        ..PlanningPolicy::default()
    };
    let schedule = OfferSchedule::from_policy(&policy, 1_000_000);
    let mut h = Harness::with_schedule(r#"{"faults": []}"#, Some(schedule));
    h.hold = true;
    // The canary's 30 go at 2 a minute, then 4 (after 20 offered).
    h.run_until(3600, |h| {
        h.devices_in(DeviceState::Pending) < h.state.rollout().state().device_ids.len() - 24
    });
    let before_pause = h.offers();
    let text = super::metrics::exposition(&h.state.final_report(
        FinalState::TimedOut,
        h.now,
        h.wall(),
        0,
        None,
    ));
    let next = h
        .state
        .next_offer_at()
        .map(convoy_core::time::Timestamp::secs);
    assert!(
        next.is_some_and(|t| t >= h.now.secs()),
        "{next:?} at {}",
        h.now.secs()
    );
    assert!(
        text.contains(&format!(
            "convoy_engine_schedule_next_offer_timestamp_seconds{{rollout=\"r1\"}} {}\n",
            next.unwrap_or_default()
        )),
        "the next offer time while running: {text}"
    );
    let paused_at = h.now;
    h.state
        .handle_operator(
            h.now,
            "bob",
            &OperatorCommand::Pause {
                reason: "shift change".into(),
            },
        )
        .expect("pause");
    h.drain();
    h.run(3 * 3600);
    assert_eq!(h.offers(), before_pause, "no offer while paused");
    assert!(
        h.state.schedule_report().is_some_and(
            |r| r.waiting_because.as_deref() == Some("paused: the schedule's clock is stopped")
        ),
        "{:?}",
        h.state.schedule_report()
    );
    // The schedule in the engine's Prometheus metrics: devices waiting, the rate, and no next
    // offer time while the clock is stopped.
    let text = super::metrics::exposition(&h.state.final_report(
        FinalState::Paused,
        h.now,
        h.wall(),
        0,
        None,
    ));
    let waiting = h.state.schedule_report().map_or(0, |r| r.waiting);
    assert!(waiting > 0);
    assert!(
        text.contains(&format!(
            "convoy_engine_schedule_waiting_devices{{rollout=\"r1\"}} {waiting}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("convoy_engine_schedule_rate_per_minute{"),
        "{text}"
    );
    assert!(
        !text.contains("convoy_engine_schedule_next_offer_timestamp_seconds{"),
        "no next offer while paused: {text}"
    );
    h.state
        .handle_operator(
            h.now,
            "bob",
            &OperatorCommand::Resume {
                reason: "back".into(),
            },
        )
        .expect("resume");
    h.drain();
    let resumed_at = h.now;
    let waiting_at_resume = h.state.rollout().awaiting_offer().len() as u64;
    assert!(
        waiting_at_resume > 0,
        "the canary still had devices to offer"
    );
    let end = h.run(3 * 86_400);
    assert_eq!(
        end,
        Some(FinalState::Completed),
        "{:?}",
        h.state.rollout().phase()
    );
    // Offer decisions by minute: none above the rate in force, none while paused, and the
    // first minute after the resume offers at the ramp's rate, not back at 2.
    let log = &h.log;
    let mut offered = 0u64;
    let mut first_after_resume = None;
    for e in log {
        if let convoy_core::rollout::EventKind::Offered { devices } = &e.kind {
            let rate = policy.rate.per_minute(offered);
            assert!(
                devices.len() as u64 <= rate,
                "{} > {rate} at {}",
                devices.len(),
                e.at
            );
            assert!(
                !(paused_at < e.at && e.at < resumed_at),
                "offered while paused at {}",
                e.at
            );
            if e.at >= resumed_at && first_after_resume.is_none() {
                first_after_resume = Some((devices.len(), rate));
            }
            offered += devices.len() as u64;
        }
    }
    let (n, rate) = first_after_resume.expect("offers after the resume");
    assert!(
        rate >= 4,
        "the ramp went on from {rate}, it did not start over at 2"
    );
    assert_eq!(
        n as u64,
        rate.min(waiting_at_resume),
        "the first minute after the resume"
    );
    assert_eq!(offered as usize, h.state.rollout().state().device_ids.len());
    assert!(
        h.timeline.iter().any(|(k, _)| k == "schedule.waiting"),
        "{:?}",
        h.timeline
    );
    let replayed = Rollout::replay(log.clone()).expect("replays");
    let a = serde_json::to_value(replayed.state()).expect("json");
    let b = serde_json::to_value(h.state.rollout().state()).expect("json");
    // All but the silence deadlines, a queue with lazy deletion that a live rollout also
    // pops on its timeouts (which leave no event), so it is not part of what replays equal.
    for (k, v) in a.as_object().expect("object") {
        if k != "silence_queue" {
            assert_eq!(Some(v), b.get(k), "{k} differs after replay");
        }
    }
}

/// Prerequisite chains on the virtual clock: the last wave's devices are offered the
/// bootloader, each confirmed before its target offer; nothing moves on while an operator
/// holds the rollout paused, and what became due goes out after the resume; every command was
/// committed first (the harness checks), and the log replays to the same chains.
#[test]
fn a_chain_wave_gets_its_prerequisite_confirmed_before_the_target_even_across_a_pause() {
    use convoy_core::rollout::EventKind;
    let mut h = Harness::with_options(r#"{"faults": []}"#, None, true);
    h.hold = true;
    h.run_until(3 * 86_400, |h| {
        h.decisions
            .iter()
            .any(|(a, _)| a == "rollout.offer_prerequisite")
    });
    // Pause as soon as a first confirmation comes in.
    h.run_until(86_400, |h| {
        h.log
            .iter()
            .any(|e| matches!(e.kind, EventKind::PrerequisiteConfirmed { .. }))
    });
    let offers_before = h.offers();
    h.state
        .handle_operator(
            h.now,
            "dana",
            &OperatorCommand::Pause {
                reason: "checking the bootloader".into(),
            },
        )
        .expect("pause");
    h.drain();
    for _ in 0..60 {
        h.step();
    }
    assert_eq!(h.offers(), offers_before, "no target offer while paused");
    h.state
        .handle_operator(
            h.now,
            "dana",
            &OperatorCommand::Resume {
                reason: "fine".into(),
            },
        )
        .expect("resume");
    h.drain();
    h.hold = false;
    let end = h.run(3 * 86_400);
    assert_eq!(
        end,
        Some(FinalState::Completed),
        "{:?}",
        h.state.rollout().phase()
    );
    let r = h.state.rollout();
    let wave = &r.spec().waves[2];
    let mut confirmed: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
    for e in &h.log {
        match &e.kind {
            EventKind::PrerequisiteConfirmed { device, .. } => {
                confirmed.insert(*device);
            }
            EventKind::ChainCompleted { devices } => {
                for d in devices {
                    assert!(
                        confirmed.contains(d),
                        "target before the bootloader's confirmation"
                    );
                }
            }
            _ => {}
        }
    }
    for id in &wave.device_ids {
        assert_eq!(r.device_state(id), Some(DeviceState::Healthy), "{id}");
        let d = h.state.fleet().device(id).expect("device");
        assert_eq!(
            d.component("bootloader"),
            Some(Version::new(2, 0, 1)),
            "{id}"
        );
        assert_eq!(d.component("firmware"), Some(Version::new(2, 5, 0)), "{id}");
    }
    assert!(r.prerequisite_stops().is_empty());
    let replayed = Rollout::replay(h.log.clone()).expect("replay");
    assert_eq!(replayed.state().chain, r.state().chain);
    assert_eq!(
        h.decisions
            .iter()
            .filter(|(a, _)| a == "rollout.offer_prerequisite")
            .map(|(_, n)| n)
            .sum::<usize>(),
        wave.device_ids.len()
    );
}

/// A bootloader that fails to install on revision B stops those devices at it: failed in
/// their wave, named in the report, never offered the target.
#[test]
fn a_failing_prerequisite_stops_its_devices_on_the_virtual_clock() {
    let mut h = Harness::with_options(
        r#"{"faults": [{"release_version": "2.0.1", "match": {"hw_rev": "B"}, "effect": "install_failure", "probability": 1.0}]}"#,
        None,
        true,
    );
    let end = h.run(4 * 86_400);
    assert!(end.is_some(), "{:?}", h.state.rollout().phase());
    let r = h.state.rollout();
    let stops = r.prerequisite_stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0].release, BL);
    assert!(!stops[0].device_ids.is_empty());
    for id in &stops[0].device_ids {
        assert_eq!(r.device_state(id), Some(DeviceState::Failed), "{id}");
        assert_eq!(
            h.state.fleet().device(id).map(|d| d.hw_rev.as_str()),
            Some("B")
        );
    }
    let report = h
        .state
        .final_report(end.unwrap_or(FinalState::Stopped), h.now, h.wall(), 0, None);
    assert_eq!(report.prerequisite_stops, stops);
    assert!(h.timeline.iter().any(|(k, _)| k == "prerequisite.failed"));
}

/// Issue 19: a rollout held after its gates stopped it (the demo's rolled-back canary) keeps
/// folding its devices' telemetry, an event per closed health window; the engine writes each to
/// the cache's log and keeps in memory only what is not written yet, and the written log still
/// replays to the live state.
#[test]
fn a_held_rollout_keeps_only_its_unwritten_events_in_memory_and_its_written_log_replays() {
    let mut h = Harness::new(CRASH_LOOP_ON_C);
    h.hold = true;
    let until = h.now.plus_secs(2 * 86_400);
    let mut most_kept = 0;
    while h.now < until {
        h.step();
        assert_eq!(h.state.poll_end(h.now, h.hold), None, "held, not ended");
        most_kept = most_kept.max(h.state.rollout().events().len());
    }
    assert!(
        matches!(
            h.state.rollout().phase(),
            Phase::Paused {
                rolled_back: true,
                ..
            }
        ),
        "{:?}",
        h.state.rollout().phase()
    );
    let rollout = h.state.rollout();
    let windows = h
        .log
        .iter()
        .filter(|e| matches!(e.kind, convoy_core::rollout::EventKind::Telemetry { .. }))
        .count();
    assert!(
        windows > 5_000,
        "thousands of health windows closed: {windows}"
    );
    assert_eq!(h.log.len(), rollout.event_count(), "every event written");
    assert!(
        most_kept <= 500,
        "at most {most_kept} of {} events kept in memory at once",
        rollout.event_count()
    );
    assert_eq!(
        rollout.first_kept_event() + rollout.events().len(),
        rollout.event_count()
    );
    let replayed = Rollout::replay(h.log.clone()).expect("the written log replays");
    let a = serde_json::to_value(replayed.state()).expect("json");
    let b = serde_json::to_value(rollout.state()).expect("json");
    for (k, v) in a.as_object().expect("object") {
        if k != "silence_queue" {
            assert_eq!(Some(v), b.get(k), "{k} differs after replay");
        }
    }
    assert_eq!(replayed.offer_schedule(), rollout.offer_schedule());
}
