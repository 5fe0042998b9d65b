//! The simulated fleet over a real (embedded) MQTT broker: a console sends signed offers and sees
//! acks, status progressing to confirmed, and a crash-loop fault reverting.

use convoy::link::broker::EmbeddedBroker;
use convoy::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Role};
use convoy::link::protocol::{
    AckResult, Command, CommandAction, Inbound, TelemetryEvent, Topics, UpdateState,
};
use convoy::sim::{SimOptions, SimSummary};
use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::fleet::{
    Connectivity, CustomerTier, Device, DeviceClass, Fleet, GeoPoint, PowerState, Redundancy, Slot,
    SmallMap,
};
use convoy_core::manifest::{ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(45);

fn device(id: &str, hw_rev: &str, now: Timestamp) -> Device {
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
        connectivity: Connectivity::Ethernet,
        metered: false,
        battery_pct: None,
        power: PowerState::Mains,
        free_storage_bytes: 1_000_000_000,
        customer_tier: CustomerTier::Standard,
        device_class: DeviceClass::Kiosk,
        redundancy: Redundancy::None,
        last_seen: now,
        failed_update_attempts: 0,
        tags: SmallMap::new(),
    }
}

fn manifest(key: &SigningKey, now: Timestamp) -> serde_json::Value {
    let version = Version::new(2, 4, 1);
    let digest = ArtifactDigest::of_bytes("fw.img", b"firmware 2.4.1");
    let spec = ReleaseSpec {
        id: "t300-fw-2.4.1".to_owned(),
        version,
        counter: 7,
        hardware: vec!["T300".to_owned()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".to_owned(),
            url: "fw.img".to_owned(),
            length_bytes: 24_000_000,
            sha256: digest.sha256,
        }],
        expires: now.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, key)
        .expect("sign")
        .to_json_bytes();
    serde_json::from_slice(&bytes).expect("manifest JSON")
}

fn offer(device_id: &str, command_id: &str, manifest: serde_json::Value) -> Command {
    Command {
        v: 1,
        command_id: command_id.to_owned(),
        device_id: device_id.to_owned(),
        issued_at: convoy::now(),
        action: CommandAction::Offer {
            release_id: "t300-fw-2.4.1".to_owned(),
            manifest,
        },
    }
}

async fn connect_console(url: &str) -> (LinkHandle, Receiver<LinkEvent>) {
    let (mut handle, rx) = mqtt::spawn(
        &LinkConfig::new(url, "sim-test-console"),
        Topics::default_prefix(),
        &Role::Console,
    )
    .expect("spawn console link");
    handle
        .wait_connected(WAIT)
        .await
        .expect("console connected");
    (handle, rx)
}

/// Everything the console saw from one device.
#[derive(Default, Debug)]
struct Seen {
    states: Vec<UpdateState>,
    acks: Vec<(String, AckResult, Option<String>)>,
    last_slot: Option<Slot>,
    last_firmware: Option<Version>,
    last_reason: Option<String>,
    crashes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_takes_an_offer_and_a_crash_loop_reverts() {
    let _turn = convoy_e2e::alone();
    let broker =
        EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).expect("embedded broker");
    let url = broker.url();
    let now = convoy::now();
    let fleet = Fleet::new(
        Vec::new(),
        vec![device("SIM-OK", "B", now), device("SIM-BAD", "C", now)],
    );
    let faults = Faults::parse(
        r#"{"faults": [{"release_version": "2.4.1", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        &fleet,
    )
    .expect("faults");
    let key = SigningKey::from_bytes(&[9; 32]);
    let options = SimOptions {
        broker_url: url.clone(),
        client_id: "sim-test-fleet".to_owned(),
        topics: Topics::default_prefix(),
        fleet,
        faults,
        trust: TrustedKeys::from_keys([&key.verifying_key()]),
        seed: 5,
        // About 800 simulated seconds per offer: a few wall seconds.
        time_scale: 300.0,
        tick: Duration::from_millis(20),
        config: SimConfig {
            crash_per_hour: 0.0,
            reboot_per_hour: 0.0,
            outage_factor: 0.0,
            ..SimConfig::default()
        },
        start: now,
    };

    let (console, mut rx) = connect_console(&url).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sim = tokio::spawn(convoy::sim::run(options, Some(stop_rx)));

    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut offered = false;
    let good = manifest(&key, now);
    let mut tampered = good.clone();
    tampered["signed"]["release"]["counter"] = serde_json::json!(8);
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let event = rx.recv().await.expect("console link alive");
            let LinkEvent::Inbound(inbound) = event else {
                continue;
            };
            let s = seen.entry(inbound.device_id().to_owned()).or_default();
            match inbound {
                Inbound::Status(st) => {
                    if s.states.last() != Some(&st.update.state) {
                        s.states.push(st.update.state);
                    }
                    s.last_slot = Some(st.active_slot);
                    s.last_firmware = st.components.get("firmware").copied();
                    s.last_reason = st.update.reason;
                }
                Inbound::Ack(a) => s.acks.push((a.command_id, a.result, a.reason)),
                Inbound::Telemetry(t) => {
                    if let TelemetryEvent::Crash { process } = t.event {
                        assert_eq!(process, "firmware", "no baseline noise in this test");
                        s.crashes += 1;
                    }
                }
            }
            // Both devices announced themselves: send the offers (a tampered one first, and the
            // good one twice, as a QoS 1 redelivery would).
            if !offered && seen.len() == 2 {
                offered = true;
                for cmd in [
                    offer("SIM-OK", "c-0", tampered.clone()),
                    offer("SIM-OK", "c-1", good.clone()),
                    offer("SIM-OK", "c-1", good.clone()),
                    offer("SIM-BAD", "c-2", good.clone()),
                ] {
                    console.send_command(&cmd).await.expect("send command");
                }
            }
            // Done when each device reached its end state and answered every command it got.
            let finished = |id: &str, state: UpdateState, acks: usize| {
                seen.get(id)
                    .is_some_and(|s| s.states.last() == Some(&state) && s.acks.len() >= acks)
            };
            if finished("SIM-OK", UpdateState::Confirmed, 3)
                && finished("SIM-BAD", UpdateState::Reverted, 1)
            {
                break;
            }
        }
    })
    .await;
    let _ = stop_tx.send(());
    let summary: SimSummary = sim.await.expect("sim task").expect("sim run");
    assert!(done.is_ok(), "timed out; seen so far: {seen:#?}");

    let ok = &seen["SIM-OK"];
    assert_eq!(ok.acks[0].0, "c-0");
    assert_eq!(ok.acks[0].1, AckResult::Rejected);
    let reason = ok.acks[0].2.as_deref().expect("rejection reason");
    assert!(reason.starts_with("tampered"), "{reason}");
    assert_eq!(
        ok.acks[1..]
            .iter()
            .map(|(id, r, _)| (id.as_str(), *r))
            .collect::<Vec<_>>(),
        [("c-1", AckResult::Accepted), ("c-1", AckResult::Duplicate)]
    );
    assert_eq!(
        ok.states,
        [
            UpdateState::Idle,
            UpdateState::Offered,
            UpdateState::Downloading,
            UpdateState::Verified,
            UpdateState::Installing,
            UpdateState::Rebooting,
            UpdateState::Confirmed,
        ]
    );
    assert_eq!(ok.last_slot, Some(Slot::B));
    assert_eq!(ok.last_firmware, Some(Version::new(2, 4, 1)));

    let bad = &seen["SIM-BAD"];
    assert_eq!(bad.acks.len(), 1);
    assert_eq!(bad.acks[0].1, AckResult::Accepted);
    assert_eq!(bad.states.last(), Some(&UpdateState::Reverted));
    assert!(bad.states.contains(&UpdateState::Rebooting));
    assert_eq!(bad.last_slot, Some(Slot::A));
    assert_eq!(bad.last_firmware, Some(Version::new(2, 4, 0)));
    assert_eq!(bad.crashes, 3);
    let reason = bad.last_reason.as_deref().expect("revert reason");
    assert!(reason.starts_with("crash loop"), "{reason}");

    assert_eq!(summary.devices, 2);
    assert_eq!(summary.commands, 4);
    assert_eq!(summary.bad_commands, 0);
}

/// Regression for the resume stall of docs/ENGINE.md: a console that connects after the fleet
/// has published its statuses gets only part of them from the embedded broker (see
/// `mqtt::the_embedded_broker_hands_a_late_subscriber_only_part_of_the_retained_statuses`), and a
/// device with nothing new to say never published its status again, so the engine waited for
/// ever on devices that had long finished. With the status heartbeat every device is heard
/// again within `status_every_secs` of simulated time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_resume_stall_a_late_console_hears_every_device_of_a_large_fleet() {
    const DEVICES: usize = 300;
    let _turn = convoy_e2e::alone();
    let broker =
        EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).expect("embedded broker");
    let url = broker.url();
    let now = convoy::now();
    let fleet = Fleet::new(
        Vec::new(),
        (0..DEVICES)
            .map(|i| device(&format!("SIM-{i:04}"), "B", now))
            .collect(),
    );
    let key = SigningKey::from_bytes(&[9; 32]);
    let options = SimOptions {
        broker_url: url.clone(),
        client_id: "sim-test-late".to_owned(),
        topics: Topics::default_prefix(),
        fleet,
        faults: Faults::default(),
        trust: TrustedKeys::from_keys([&key.verifying_key()]),
        seed: 5,
        time_scale: 2400.0,
        tick: Duration::from_millis(20),
        // No outages: a reconnect would republish a device's status and hide what is tested.
        config: SimConfig {
            crash_per_hour: 0.0,
            reboot_per_hour: 0.0,
            outage_factor: 0.0,
            ..SimConfig::default()
        },
        start: now,
    };
    // A console subscribed from the start sees every device publish its first status, so the
    // broker holds all of them retained before the late console subscribes.
    let (mut probe, mut probe_rx) = mqtt::spawn(
        &LinkConfig::new(&url, "sim-test-probe"),
        Topics::default_prefix(),
        &Role::Console,
    )
    .expect("spawn probe link");
    probe.wait_connected(WAIT).await.expect("probe connected");
    convoy_e2e::hear_own_probe(
        &probe,
        &mut probe_rx,
        &Topics::default_prefix().telemetry("SIM-PROBE"),
        "the probe console's subscriptions",
    )
    .await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sim = tokio::spawn(convoy::sim::run(options, Some(stop_rx)));
    let mut first = std::collections::BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while first.len() < DEVICES {
            if let Some(LinkEvent::Inbound(Inbound::Status(s))) = probe_rx.recv().await {
                first.insert(s.device_id);
            }
        }
    })
    .await
    .expect("every device published its status");

    let (_console, mut rx) = connect_console(&url).await;
    let mut heard = std::collections::BTreeSet::new();
    let all = tokio::time::timeout(WAIT, async {
        while heard.len() < DEVICES {
            match rx.recv().await {
                Some(LinkEvent::Inbound(Inbound::Status(s))) => {
                    heard.insert(s.device_id);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    let _ = stop_tx.send(());
    let summary = sim.await.expect("sim task").expect("sim run");
    assert!(
        all.is_ok() && heard.len() == DEVICES,
        "the late console heard {} of {DEVICES} devices",
        heard.len()
    );
    assert_eq!(summary.devices, DEVICES);
}
