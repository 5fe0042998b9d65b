//! The MQTT link against real brokers on 127.0.0.1: the embedded rumqttd and Mosquitto.

use convoy::link::broker::EmbeddedBroker;
use convoy::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, LinkState, Role};
use convoy::link::protocol::{Command, CommandAction, Inbound, RejectReason, Topics};
use convoy_core::time::Timestamp;
use convoy_e2e::{Mosquitto, hear_own_probe};
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(20);

fn status(device: &str) -> Vec<u8> {
    serde_json::json!({
        "v": 1, "device_id": device, "ts": convoy::now().secs(), "active_slot": "b",
        "components": {"firmware": "2.4.0", "bootloader": "2.0.1"},
        "update": {"state": "idle"},
        "power": "mains", "connectivity": "ethernet", "metered": false, "free_storage_bytes": 1_000_000
    })
    .to_string()
    .into_bytes()
}

async fn next_matching(
    rx: &mut Receiver<LinkEvent>,
    what: &str,
    pred: impl Fn(&LinkEvent) -> bool,
) -> LinkEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = rx.recv().await.expect("link task alive");
            if pred(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn connect(url: &str, id: &str, role: &Role) -> (LinkHandle, Receiver<LinkEvent>) {
    let (mut handle, rx) =
        mqtt::spawn(&LinkConfig::new(url, id), Topics::default_prefix(), role).expect("spawn link");
    handle.wait_connected(WAIT).await.expect("connected");
    (handle, rx)
}

/// A console and a device exchange status, a malformed message and a command.
async fn exchange(url: &str, tag: &str) {
    let topics = Topics::default_prefix();
    let (console, mut console_rx) = connect(url, &format!("console-{tag}"), &Role::Console).await;
    let device_id = format!("CV{tag}");
    let device_filters = topics.device_subscriptions(&device_id).to_vec();
    let (device, mut device_rx) = connect(
        url,
        &format!("device-{tag}"),
        &Role::Filters(device_filters),
    )
    .await;
    // Subscriptions are acknowledged asynchronously: each link hears its own probe back once
    // the broker has its subscriptions.
    hear_own_probe(
        &console,
        &mut console_rx,
        &topics.telemetry(&format!("{device_id}P")),
        "the console's subscriptions",
    )
    .await;
    hear_own_probe(
        &device,
        &mut device_rx,
        &topics.commands(&device_id),
        "the device's subscriptions",
    )
    .await;

    device
        .publish(topics.status(&device_id), status(&device_id), true)
        .await
        .expect("publish status");
    let event = next_matching(&mut console_rx, "the status", |e| {
        matches!(e, LinkEvent::Inbound(_))
    })
    .await;
    let LinkEvent::Inbound(Inbound::Status(s)) = event else {
        panic!("expected a status, got {event:?}")
    };
    assert_eq!(s.device_id, device_id);

    device
        .publish(topics.telemetry(&device_id), b"{\"v\":1,".to_vec(), false)
        .await
        .expect("publish junk");
    let event = next_matching(&mut console_rx, "the rejection", |e| {
        matches!(e, LinkEvent::Rejected(_))
    })
    .await;
    let LinkEvent::Rejected(r) = event else {
        unreachable!()
    };
    assert_eq!(r.reason, RejectReason::MalformedJson);
    assert_eq!(r.device_id.as_deref(), Some(device_id.as_str()));

    let command = Command {
        v: 1,
        command_id: format!("cmd-{tag}"),
        device_id: device_id.clone(),
        issued_at: Timestamp::from_secs(convoy::now().secs()),
        action: CommandAction::Cancel {
            release_id: "r-1".into(),
        },
    };
    console.send_command(&command).await.expect("send command");
    let event = next_matching(&mut device_rx, "the command", |e| {
        matches!(e, LinkEvent::Raw { .. })
    })
    .await;
    let LinkEvent::Raw { topic, payload } = event else {
        unreachable!()
    };
    assert_eq!(topic, topics.commands(&device_id));
    let received: Command = serde_json::from_slice(&payload).expect("command JSON");
    assert_eq!(received, command);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_over_embedded_broker() {
    let _turn = convoy_e2e::shared();
    let broker =
        EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).expect("embedded broker");
    exchange(&broker.url(), "E1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_over_mosquitto() {
    let _turn = convoy_e2e::shared();
    if !Mosquitto::available() {
        return;
    }
    let broker = Mosquitto::start(None);
    exchange(&broker.url(), "M1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_reconnects_and_resubscribes_after_a_broker_restart() {
    let _turn = convoy_e2e::shared();
    if !Mosquitto::available() {
        return;
    }
    let broker = Mosquitto::start(None);
    let url = broker.url();
    let topics = Topics::default_prefix();
    let (console, mut rx) = connect(&url, "console-R", &Role::Console).await;
    let port = broker.kill();
    next_matching(&mut rx, "the disconnect", |e| {
        matches!(e, LinkEvent::Disconnected(_))
    })
    .await;
    assert!(
        matches!(console.state(), LinkState::Reconnecting(_)),
        "{:?}",
        console.state()
    );

    // Same port, fresh broker with no stored session: the link must subscribe again by itself.
    let _broker = Mosquitto::start(Some(port));
    next_matching(&mut rx, "the reconnect", |e| {
        matches!(e, LinkEvent::Connected)
    })
    .await;
    hear_own_probe(
        &console,
        &mut rx,
        &topics.telemetry("CVRP"),
        "the console's subscriptions after the restart",
    )
    .await;
    let (device, _device_rx) = connect(&url, "device-R", &Role::Filters(vec![])).await;
    device
        .publish(topics.status("CVR"), status("CVR"), true)
        .await
        .expect("publish");
    let event = next_matching(&mut rx, "a status after the restart", |e| {
        matches!(e, LinkEvent::Inbound(_))
    })
    .await;
    assert!(matches!(event, LinkEvent::Inbound(Inbound::Status(_))));
}

#[test]
fn broker_command_serves_clients() {
    let _turn = convoy_e2e::shared();
    let port = convoy_e2e::free_port();
    let mut child = std::process::Command::new(convoy_e2e::convoy_bin())
        .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn convoy broker");
    convoy_e2e::wait_listening(port, "convoy broker", WAIT);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(exchange(&format!("mqtt://127.0.0.1:{port}"), "B1"));
    child.kill().expect("kill broker");
    let _ = child.wait();
}

/// Why a console cannot count on retained status alone (the resume stall of docs/ENGINE.md):
/// the embedded broker (rumqttd 0.20) hands a new QoS 1 subscription at most as many retained
/// messages as it has free in-flight slots (100 per connection) and drops the rest. A console that
/// subscribes after 300 devices published their status hears of at most 100 of them from the
/// broker; the others must publish again (docs/PROTOCOL.md, the status heartbeat).
///
/// If this fails because every device was heard, the broker no longer drops retained messages:
/// say so in docs/ENGINE.md and docs/PROTOCOL.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_hands_a_late_subscriber_only_part_of_the_retained_statuses() {
    const DEVICES: usize = 300;
    let _turn = convoy_e2e::alone();
    let broker =
        EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).expect("embedded broker");
    let url = broker.url();
    let topics = Topics::default_prefix();
    let (early, mut early_rx) = connect(&url, "console-early", &Role::Console).await;
    let (devices, _devices_rx) = connect(&url, "devices-L", &Role::Filters(vec![])).await;
    hear_own_probe(
        &early,
        &mut early_rx,
        &topics.telemetry("CVL-PROBE"),
        "the early console's subscriptions",
    )
    .await;
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("CVL{i:04}")).collect();
    for id in &ids {
        devices
            .publish(topics.status(id), status(id), true)
            .await
            .expect("publish status");
    }
    // The broker has every one of them: a console subscribed before heard them all.
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < DEVICES {
        if let LinkEvent::Inbound(Inbound::Status(s)) =
            next_matching(&mut early_rx, "the statuses, live", |e| {
                matches!(e, LinkEvent::Inbound(Inbound::Status(_)))
            })
            .await
        {
            heard.insert(s.device_id);
        }
    }

    let (_late, mut late_rx) = connect(&url, "console-late", &Role::Console).await;
    // The retained copies come first on the new subscription; a status published after the
    // subscription took effect comes after them, so the first marker ends the retained batch.
    let marker = "CVL-MARKER";
    let mut retained = std::collections::BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        loop {
            devices
                .publish(topics.status(marker), status(marker), false)
                .await
                .expect("publish marker");
            // A retry interval, not synchronisation: the marker's arrival is what is waited for.
            let pause = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    event = late_rx.recv() => {
                        if let Some(LinkEvent::Inbound(Inbound::Status(s))) = event {
                            if s.device_id == marker {
                                return;
                            }
                            retained.insert(s.device_id);
                        }
                    }
                }
            }
        }
    })
    .await
    .expect("the marker reached the late console");
    assert!(
        !retained.is_empty() && retained.len() < DEVICES,
        "a late subscriber got {} of {DEVICES} retained statuses",
        retained.len()
    );
}
