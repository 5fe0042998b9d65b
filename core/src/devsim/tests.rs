#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use super::*;
use crate::fleet::{CustomerTier, DeviceClass, Fleet, Redundancy};
use crate::manifest::{ArtifactDigest, SignedManifest};
use crate::release::{Artifact, ReleaseSpec};
use ed25519_dalek::SigningKey;

const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
const ARTIFACT_BYTES: u64 = 60_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn device(id: &str, hw_rev: &str, connectivity: Connectivity) -> Device {
    Device {
        id: id.to_owned(),
        model: "T300".into(),
        hw_rev: hw_rev.into(),
        components: [
            ("firmware", Version::new(2, 4, 0)),
            ("bootloader", Version::new(2, 0, 1)),
        ]
        .into_iter()
        .collect(),
        active_slot: Slot::A,
        region: "eu-central".into(),
        depot: "ber".into(),
        position: GeoPoint {
            lat: 52.5,
            lon: 13.4,
        },
        connectivity,
        metered: false,
        battery_pct: Some(80),
        power: PowerState::Mains,
        free_storage_bytes: 1_000_000_000,
        customer_tier: CustomerTier::Standard,
        device_class: DeviceClass::DeliveryVan,
        redundancy: Redundancy::None,
        last_seen: NOW,
        failed_update_attempts: 0,
        tags: SmallMap::new(),
    }
}

fn spec(id: &str, version: Version, counter: u64) -> ReleaseSpec {
    let digest = ArtifactDigest::of_bytes("fw.img", b"payload");
    ReleaseSpec {
        id: id.to_owned(),
        version,
        counter,
        hardware: vec!["T300".to_owned()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".to_owned(),
            url: "fw.img".to_owned(),
            length_bytes: ARTIFACT_BYTES,
            sha256: digest.sha256,
        }],
        expires: NOW.plus_secs(30 * 86_400),
    }
}

fn manifest_bytes(id: &str, version: Version, counter: u64) -> Vec<u8> {
    SignedManifest::sign(spec(id, version, counter), None, &key())
        .expect("sign")
        .to_json_bytes()
}

/// Noise off, so a test sees only what it provokes.
fn quiet() -> SimConfig {
    SimConfig {
        crash_per_hour: 0.0,
        reboot_per_hour: 0.0,
        outage_factor: 0.0,
        ..SimConfig::default()
    }
}

fn sim(device: Device, faults: Faults, config: SimConfig, seed: u64) -> SimDevice {
    let trust = Arc::new(TrustedKeys::from_keys([&key().verifying_key()]));
    SimDevice::new(device, 0, seed, trust, Arc::new(faults), config, NOW)
}

fn drain(sim: &mut SimDevice) -> Vec<SimMessage> {
    std::iter::from_fn(|| sim.poll_message()).collect()
}

fn phases(messages: &[SimMessage]) -> Vec<UpdatePhase> {
    let mut out: Vec<UpdatePhase> = Vec::new();
    for m in messages {
        if let SimMessage::Status { status, .. } = m
            && out.last() != Some(&status.update.phase)
        {
            out.push(status.update.phase);
        }
    }
    out
}

fn acks(messages: &[SimMessage]) -> Vec<(String, AckOutcome)> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimMessage::Ack {
                command_id,
                outcome,
                ..
            } => Some((command_id.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

fn offer(id: &str, bytes: Vec<u8>) -> SimCommand {
    SimCommand::Offer {
        release_id: id.to_owned(),
        manifest_bytes: bytes,
    }
}

fn v241() -> Version {
    Version::new(2, 4, 1)
}

#[test]
fn good_offer_goes_all_the_way_to_confirmed() {
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(3600));
    let messages = drain(&mut s);
    assert_eq!(acks(&messages), [("c-1".to_owned(), AckOutcome::Accepted)]);
    assert_eq!(
        phases(&messages),
        [
            UpdatePhase::Idle,
            UpdatePhase::Offered,
            UpdatePhase::Downloading,
            UpdatePhase::Verified,
            UpdatePhase::Installing,
            UpdatePhase::Rebooting,
            UpdatePhase::Confirmed,
        ]
    );
    let status = s.status();
    assert_eq!(status.active_slot, Slot::B);
    assert_eq!(status.components.get("firmware"), Some(&v241()));
    assert_eq!(
        status.components.get("bootloader"),
        Some(&Version::new(2, 0, 1))
    );
    assert_eq!(s.installed_counter(), 3);
    // 60 MB at 3 MB/s is 20 s of download; then install, reboot, health window.
    let confirmed_at = messages
        .iter()
        .find_map(|m| match m {
            SimMessage::Status { ts, status } if status.update.phase == UpdatePhase::Confirmed => {
                Some(*ts)
            }
            _ => None,
        })
        .expect("confirmed");
    let c = quiet();
    let expected = 20 + c.install_secs + c.reboot_secs + c.health_window_secs;
    let took = confirmed_at.secs_since(NOW);
    assert!(
        (expected..=expected + 3 * c.max_step_secs).contains(&took),
        "took {took} s"
    );
    assert!(messages.iter().any(|m| matches!(
        m,
        SimMessage::Telemetry {
            event: SimEvent::Boot {
                slot: Slot::B,
                ok: true
            },
            ..
        }
    )));
}

fn crash_loop_faults(hw_rev: &str) -> Faults {
    let fleet = Fleet::new(Vec::new(), vec![device("CV1", hw_rev, Connectivity::Wifi)]);
    Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        &fleet,
    )
    .expect("faults")
}

#[test]
fn crash_loop_reverts_to_the_previous_slot() {
    let mut s = sim(
        device("CV1", "C", Connectivity::Wifi),
        crash_loop_faults("C"),
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(3600));
    let messages = drain(&mut s);
    let p = phases(&messages);
    assert_eq!(
        p[p.len() - 2..],
        [UpdatePhase::Rebooting, UpdatePhase::Reverted]
    );
    let status = s.status();
    assert_eq!(status.active_slot, Slot::A);
    assert_eq!(
        status.components.get("firmware"),
        Some(&Version::new(2, 4, 0))
    );
    assert_eq!(s.installed_counter(), 0);
    let reason = status.update.reason.expect("reason");
    assert!(
        reason.starts_with("crash loop: firmware crashed 3 times"),
        "{reason}"
    );
    let crashes = messages
        .iter()
        .filter(|m| {
            matches!(
                m,
                SimMessage::Telemetry {
                    event: SimEvent::Crash { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(crashes, 3);

    // The same fault does not touch a device of another hardware revision.
    let mut other = sim(
        device("CV1", "B", Connectivity::Wifi),
        crash_loop_faults("C"),
        quiet(),
        1,
    );
    other.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    other.handle_tick(NOW.plus_secs(3600));
    assert_eq!(other.phase(), UpdatePhase::Confirmed);
}

fn rejected_attack(s: &mut SimDevice) -> (Attack, String) {
    let messages = drain(s);
    match acks(&messages).pop() {
        Some((_, AckOutcome::Rejected { reason, attack })) => (attack.expect("attack"), reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn bad_manifests_are_rejected_with_the_attack_named() {
    // Unsigned.
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    let mut unsigned: serde_json::Value =
        serde_json::from_slice(&manifest_bytes("r1", v241(), 3)).expect("json");
    unsigned["signatures"] = serde_json::json!([]);
    s.handle_command(
        NOW,
        "c-1",
        offer("r1", serde_json::to_vec(&unsigned).expect("json")),
    );
    let (attack, reason) = rejected_attack(&mut s);
    assert_eq!(attack, Attack::WrongKey);
    assert!(reason.starts_with("wrong key"), "{reason}");

    // Tampered: the counter raised after signing.
    let mut tampered: serde_json::Value =
        serde_json::from_slice(&manifest_bytes("r1", v241(), 3)).expect("json");
    tampered["signed"]["release"]["counter"] = serde_json::json!(99);
    s.handle_command(
        NOW,
        "c-2",
        offer("r1", serde_json::to_vec(&tampered).expect("json")),
    );
    let (attack, reason) = rejected_attack(&mut s);
    assert_eq!(attack, Attack::Tampered);
    assert!(reason.starts_with("tampered"), "{reason}");

    // Downgrade: counter 3 offered to a device that installed counter 5.
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    )
    .with_installed_counter(5);
    s.handle_command(NOW, "c-3", offer("r1", manifest_bytes("r1", v241(), 3)));
    let (attack, reason) = rejected_attack(&mut s);
    assert_eq!(attack, Attack::Downgrade);
    assert!(reason.starts_with("downgrade"), "{reason}");

    // Nothing happened on the device.
    s.handle_tick(NOW.plus_secs(3600));
    assert_eq!(s.phase(), UpdatePhase::Idle);
    assert_eq!(s.status().active_slot, Slot::A);
}

#[test]
fn redelivered_command_is_a_duplicate_without_second_effect() {
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    let bytes = manifest_bytes("r1", v241(), 3);
    s.handle_command(NOW, "c-1", offer("r1", bytes.clone()));
    s.handle_tick(NOW.plus_secs(3600));
    assert_eq!(s.phase(), UpdatePhase::Confirmed);
    drain(&mut s);
    s.handle_command(NOW.plus_secs(3601), "c-1", offer("r1", bytes));
    s.handle_tick(NOW.plus_secs(7200));
    let messages = drain(&mut s);
    assert_eq!(acks(&messages), [("c-1".to_owned(), AckOutcome::Duplicate)]);
    // No status change: at most the status heartbeat repeating the finished update.
    assert!(
        phases(&messages)
            .iter()
            .all(|p| *p == UpdatePhase::Confirmed),
        "no status change: {messages:?}"
    );
    assert_eq!(s.status().active_slot, Slot::B);
}

#[test]
fn download_interrupted_by_a_tunnel_resumes_from_held_bytes() {
    let mut s = sim(
        device("CV1", "B", Connectivity::Cellular),
        Faults::default(),
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(50));
    let held = s.bytes_done().expect("downloading");
    // 600 kB/s for the 45 s after the first step.
    assert_eq!(held, 45 * bandwidth_bytes_per_sec(Connectivity::Cellular));
    s.go_offline(NOW.plus_secs(50), NOW.plus_secs(350));
    s.handle_tick(NOW.plus_secs(200));
    assert_eq!(s.bytes_done(), Some(held), "no progress in the tunnel");
    assert!(
        s.poll_message().is_none(),
        "nothing published while offline"
    );
    s.handle_tick(NOW.plus_secs(360));
    let after = s.bytes_done().expect("still downloading");
    assert!(after > held && after < ARTIFACT_BYTES, "resumed: {after}");
    // Back at 350 s; the steps ending at 355 and 360 download.
    assert_eq!(
        after - held,
        10 * bandwidth_bytes_per_sec(Connectivity::Cellular)
    );
    let messages = drain(&mut s);
    assert!(messages.iter().any(|m| matches!(
        m,
        SimMessage::Telemetry {
            event: SimEvent::Reconnect {
                offline_secs: 300,
                ok: true
            },
            ..
        }
    )));
    s.handle_tick(NOW.plus_secs(3600));
    assert_eq!(s.phase(), UpdatePhase::Confirmed);
}

#[test]
fn command_sent_while_offline_is_applied_on_reconnect() {
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    drain(&mut s);
    s.go_offline(NOW, NOW.plus_secs(100));
    s.handle_command(
        NOW.plus_secs(10),
        "c-1",
        offer("r1", manifest_bytes("r1", v241(), 3)),
    );
    assert!(s.poll_message().is_none());
    s.handle_tick(NOW.plus_secs(105));
    let messages = drain(&mut s);
    assert_eq!(acks(&messages), [("c-1".to_owned(), AckOutcome::Accepted)]);
}

/// A console that lost the device's messages (the broker restarted while the device was out of
/// reach) learns its whole state again from the status it publishes on every reconnect.
#[test]
fn reconnect_publishes_the_whole_status_again() {
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(6 * 3600));
    // Everything up to now went to a broker that lost it.
    drain(&mut s);
    s.go_offline(NOW.plus_secs(6 * 3600), NOW.plus_secs(6 * 3600 + 100));
    s.handle_tick(NOW.plus_secs(6 * 3600 + 200));
    let statuses: Vec<(UpdatePhase, Option<String>)> = drain(&mut s)
        .into_iter()
        .filter_map(|m| match m {
            SimMessage::Status { status, .. } => {
                Some((status.update.phase, status.update.release_id))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [(UpdatePhase::Confirmed, Some("r1".to_owned()))],
        "the finished update is reported again after the reconnect"
    );
}

/// The statuses of a finished update, of a device that stays online.
fn statuses_after_a_lost_confirmation(config: SimConfig) -> Vec<(UpdatePhase, Timestamp)> {
    let every = config.status_every_secs;
    let mut s = sim(
        device("CV1", "B", Connectivity::Ethernet),
        Faults::default(),
        config,
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(3600));
    assert_eq!(s.phase(), UpdatePhase::Confirmed);
    // Every status so far, `confirmed` included, was lost on the way (dropped while the broker
    // was away, or a retained copy the broker did not hand to a console that subscribed late).
    drain(&mut s);
    // Long enough for two repeats, or three hours with the heartbeat off.
    let horizon = if every > 0 { 2 * every + 60 } else { 3 * 3600 };
    s.handle_tick(NOW.plus_secs(3600 + horizon));
    drain(&mut s)
        .into_iter()
        .filter_map(|m| match m {
            SimMessage::Status { ts, status } => Some((status.update.phase, ts)),
            _ => None,
        })
        .collect()
}

/// The resume stall of docs/ENGINE.md: a device whose `confirmed` status was lost, and that has
/// nothing new to say, repeats its whole status within `status_every_secs` (the status
/// heartbeat); with the heartbeat off it never speaks of its update again, which is how the
/// engine waited for 27 finished canary devices for 100 simulated hours.
#[test]
fn regression_resume_stall_a_lost_status_is_repeated_by_the_status_heartbeat() {
    let config = quiet();
    let every = config.status_every_secs;
    assert!(every > 0, "the status heartbeat is on by default");
    let repeated = statuses_after_a_lost_confirmation(config);
    assert!(
        repeated.len() >= 2
            && repeated
                .iter()
                .all(|(phase, _)| *phase == UpdatePhase::Confirmed),
        "{repeated:?}"
    );
    // At most `every` apart while nothing changes, and not more often than that.
    for pair in repeated.windows(2) {
        assert_eq!(pair[1].1.secs_since(pair[0].1), every, "{repeated:?}");
    }
    let off = SimConfig {
        status_every_secs: 0,
        ..quiet()
    };
    assert_eq!(statuses_after_a_lost_confirmation(off), []);
}

fn fault_file(effect: &str, extra: &str) -> Faults {
    let fleet = Fleet::new(Vec::new(), vec![device("CV1", "B", Connectivity::Wifi)]);
    Faults::parse(
        &format!(
            r#"{{"faults": [{{"release_version": "2.4.1", "match": {{"model": "T300"}}, "effect": "{effect}"{extra}}}]}}"#
        ),
        &fleet,
    )
    .expect("faults")
}

fn run_with(faults: Faults) -> SimDevice {
    let mut s = sim(device("CV1", "B", Connectivity::Wifi), faults, quiet(), 1);
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    s.handle_tick(NOW.plus_secs(4 * 3600));
    s
}

#[test]
fn each_effect_changes_the_outcome() {
    let boot = run_with(fault_file("boot_failure", ""));
    assert_eq!(boot.phase(), UpdatePhase::Reverted);
    assert_eq!(boot.status().active_slot, Slot::A);
    assert!(
        boot.status()
            .update
            .reason
            .expect("reason")
            .starts_with("boot failure")
    );

    let install = run_with(fault_file("install_failure", ""));
    assert_eq!(install.phase(), UpdatePhase::Failed);
    assert_eq!(install.status().active_slot, Slot::A);
    assert_eq!(install.installed_counter(), 0);

    let stall = run_with(fault_file("download_stall", ""));
    assert_eq!(stall.phase(), UpdatePhase::Failed);
    let reason = stall.status().update.reason.expect("reason");
    assert!(
        reason.contains("download stalled, then tampered"),
        "{reason}"
    );
    assert_eq!(
        stall.status().components.get("firmware"),
        Some(&Version::new(2, 4, 0))
    );

    // Battery drain only shows on battery: compare the level after a day with and without.
    let on_battery = |faults: Faults| {
        let mut d = device("CV1", "B", Connectivity::Wifi);
        d.power = PowerState::Battery;
        d.battery_pct = Some(100);
        let mut s = sim(d, faults, quiet(), 1);
        s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
        s.handle_tick(NOW.plus_secs(10 * 3600));
        s.status().battery_pct.expect("battery")
    };
    let plain = on_battery(Faults::default());
    let drained = on_battery(fault_file("battery_drain", r#", "pct_per_hour": 4.0"#));
    // Baseline 1.5 %/h over 10 h; the fault adds 4 %/h for the ~9.8 h after confirmation.
    assert!((83..=87).contains(&plain), "{plain}");
    assert!((44..=48).contains(&drained), "{drained}");
}

fn transcript(seed: u64) -> Vec<SimMessage> {
    let mut d = device("CV1", "B", Connectivity::Cellular);
    d.power = PowerState::Battery;
    let mut s = sim(d, Faults::default(), SimConfig::default(), seed);
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    let mut out = Vec::new();
    for hour in 1..=48 {
        s.handle_tick(NOW.plus_secs(hour * 3600));
        out.extend(drain(&mut s));
    }
    out
}

#[test]
fn same_seed_same_events() {
    let a = transcript(42);
    assert_eq!(a, transcript(42));
    assert_ne!(a, transcript(43));
    // The noise is there: reconnects after outages and battery samples.
    assert!(a.iter().any(|m| matches!(
        m,
        SimMessage::Telemetry {
            event: SimEvent::Reconnect { .. },
            ..
        }
    )));
    assert!(a.iter().any(|m| matches!(
        m,
        SimMessage::Telemetry {
            event: SimEvent::Battery { .. },
            ..
        }
    )));
    // Sequence numbers are consecutive from 1.
    let seqs: Vec<u64> = a
        .iter()
        .filter_map(|m| match m {
            SimMessage::Telemetry { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn fault_files_are_strict() {
    let fleet = Fleet::new(Vec::new(), vec![device("CV1", "C", Connectivity::Cellular)]);
    let example = include_str!("../../../fixtures/faults/example.json");
    let faults = Faults::parse(example, &fleet).expect("example parses");
    assert_eq!(faults.faults.len(), 2);
    assert_eq!(faults.faults[0].effect, FaultEffect::CrashLoop);
    assert!((faults.faults[0].probability - 0.9).abs() < 1e-12);
    assert_eq!(
        faults.faults[1].effect,
        FaultEffect::BatteryDrain { pct_per_hour: 4.0 }
    );
    let d = &fleet.devices[0];
    assert_eq!(faults.for_device(&v241(), d).count(), 2);
    assert_eq!(faults.for_device(&Version::new(2, 4, 0), d).count(), 0);

    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "effect": "explode"}]}"#,
        &fleet,
    )
    .expect_err("unknown effect");
    assert!(
        err.to_string()
            .starts_with("fault 1: unknown effect \"explode\""),
        "{err}"
    );
    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "match": {"hw_revision": "C"}, "effect": "crash_loop"}]}"#,
        &fleet,
    )
    .expect_err("unknown attribute");
    assert!(err.to_string().contains("\"hw_revision\""), "{err}");
    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "effect": "crash_loop", "probabilty": 1}]}"#,
        &fleet,
    )
    .expect_err("unknown field");
    assert!(err.to_string().contains("probabilty"), "{err}");
    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "effect": "battery_drain"}]}"#,
        &fleet,
    )
    .expect_err("no rate");
    assert!(err.to_string().contains("pct_per_hour"), "{err}");
    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "effect": "crash_loop", "probability": 1.5}]}"#,
        &fleet,
    )
    .expect_err("probability");
    assert!(err.to_string().contains("probability 1.5"), "{err}");
    // A component counts as an attribute.
    assert!(
        Faults::parse(
            r#"{"faults": [{"release_version": "2.4.1", "match": {"bootloader": "2.0.1"}, "effect": "crash_loop"}]}"#,
            &fleet,
        )
        .is_ok()
    );
}

/// Issue 16: a manifest whose JSON names a key twice has two readings; the device refuses it
/// with a rejection ack that names the key, whichever reading is the genuine one.
#[test]
fn issue_16_an_offer_whose_manifest_names_a_key_twice_is_rejected() {
    let real: serde_json::Value =
        serde_json::from_slice(&manifest_bytes("r1", v241(), 3)).expect("json");
    let mut evil = real["signed"].clone();
    evil["release"]["hardware"] = serde_json::json!(["X9"]);
    let twice = format!(
        r#"{{"signed": {evil}, "signed": {}, "signatures": {}}}"#,
        real["signed"], real["signatures"]
    );
    let mut s = sim(
        device("CV1", "B", Connectivity::Wifi),
        Faults::default(),
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", twice.into_bytes()));
    s.handle_tick(NOW.plus_secs(3600));
    let messages = drain(&mut s);
    let acks = acks(&messages);
    let [(id, AckOutcome::Rejected { reason, attack })] = acks.as_slice() else {
        panic!("expected one rejection, got {acks:?}");
    };
    assert_eq!(id, "c-1");
    assert_eq!(*attack, Some(Attack::Tampered));
    assert!(
        reason.contains("duplicate key \"signed\" at $.signed"),
        "{reason}"
    );
    assert_eq!(s.installed_counter(), 0, "nothing installed");
}

#[test]
fn issue_16_a_fault_file_with_a_key_twice_is_refused() {
    let fleet = Fleet::new(Vec::new(), vec![device("CV1", "C", Connectivity::Cellular)]);
    let err = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "match": {"hw_rev": "C", "hw_rev": "A"}, "effect": "crash_loop"}]}"#,
        &fleet,
    )
    .expect_err("two readings");
    assert!(
        err.to_string()
            .contains("duplicate key \"hw_rev\" at $.faults[0].match.hw_rev"),
        "{err}"
    );
}

/// Issue 20, the A/B rule: an update after which the device has no link cannot be confirmed.
/// With `link_loss` the new slot's modem never registers: the device is offline from the boot,
/// reverts by itself when its health window ends, and reconnects on the previous slot to say
/// so, with the reason.
#[test]
fn a_device_that_loses_its_link_after_the_update_reverts_at_the_end_of_its_health_window() {
    let fleet = Fleet::new(Vec::new(), vec![device("CV1", "C", Connectivity::Cellular)]);
    let faults = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "match": {"hw_rev": "C"}, "effect": "link_loss", "probability": 1.0}]}"#,
        &fleet,
    )
    .expect("faults");
    let mut s = sim(
        device("CV1", "C", Connectivity::Cellular),
        faults,
        quiet(),
        1,
    );
    s.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    // Installed and booted, within the health window: no link, nothing gets out.
    let mut t = NOW;
    while s.phase() != UpdatePhase::Rebooting || s.is_online() {
        t = t.plus_secs(10);
        s.handle_tick(t);
        assert!(t < NOW.plus_secs(3600), "never booted the new slot offline");
    }
    drain(&mut s);
    s.handle_tick(t.plus_secs(300));
    assert!(!s.is_online(), "the new slot's modem does not register");
    assert!(
        drain(&mut s).is_empty(),
        "an offline device publishes nothing"
    );
    // After the window: reverted, back online on the old slot, and the status says why.
    s.handle_tick(t.plus_secs(3600));
    assert!(s.is_online(), "the previous slot's modem registers");
    assert_eq!(s.phase(), UpdatePhase::Reverted);
    let status = s.status();
    assert_eq!(status.active_slot, Slot::A);
    assert_eq!(s.installed_counter(), 0);
    let reason = status.update.reason.expect("reason");
    assert!(
        reason.starts_with("link lost after the update: no connection within the 600 s"),
        "{reason}"
    );
    let p = phases(&drain(&mut s));
    assert_eq!(p.last(), Some(&UpdatePhase::Reverted), "{p:?}");

    // A device whose link stays up through the window confirms as before.
    let mut other = sim(
        device("CV1", "B", Connectivity::Cellular),
        crash_loop_faults("C"),
        quiet(),
        1,
    );
    other.handle_command(NOW, "c-1", offer("r1", manifest_bytes("r1", v241(), 3)));
    other.handle_tick(NOW.plus_secs(3600));
    assert_eq!(other.phase(), UpdatePhase::Confirmed);
}
