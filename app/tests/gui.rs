//! UI tests of the console: the real [`ConsoleApp`] on a fixture fleet, a fixed clock and no
//! network, driven through egui_kittest by accessible labels, as a user would.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    DEVICES, GateStop, NOW, fill, fixture, harness, settle, wait_for, wait_for_label,
    write_gate_stop,
};
use convoy::gui::{Backend, BackendEvent, ConsoleApp};
use convoy::link::protocol::{DeviceStatus, Inbound, UpdateState, UpdateStatus};
use convoy_core::fleet::Fleet;
use convoy_core::time::Timestamp;
use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// The accessible name of the map toolbar's MBTiles path field.
const MBTILES_FIELD: &str = "or its path:";

/// The search field: the text input that is not the map's MBTiles path.
fn search_field<'h>(h: &'h Harness<'static, ConsoleApp>) -> egui_kittest::Node<'h> {
    use egui_kittest::kittest::NodeT as _;
    h.query_all_by_role(egui::Role::TextInput)
        .find(|n| n.accesskit_node().label().as_deref() != Some(MBTILES_FIELD))
        .expect("the search field")
}

fn search(h: &mut Harness<'static, ConsoleApp>, text: &str) {
    search_field(h).focus();
    h.run_steps(1);
    search_field(h).type_text(text);
    settle(h);
}

/// A status message from device `d` at `ts` (Unix seconds), as the link delivers it.
fn status_message(d: &convoy_core::fleet::Device, update: UpdateStatus, ts: i64) -> BackendEvent {
    BackendEvent::Inbound(Inbound::Status(DeviceStatus {
        v: 1,
        device_id: d.id.clone(),
        ts: Timestamp::from_secs(ts),
        active_slot: d.active_slot,
        components: d.components.clone(),
        update,
        battery_pct: d.battery_pct,
        power: d.power,
        connectivity: d.connectivity,
        metered: d.metered,
        free_storage_bytes: d.free_storage_bytes,
        position: Some(d.position),
    }))
}

#[test]
fn the_fleet_loads_offline_and_the_status_bar_says_so() {
    let (h, _feed, _) = harness();
    assert_eq!(
        h.state()
            .model
            .as_ref()
            .map(convoy::gui::model::FleetModel::len),
        Some(DEVICES)
    );
    h.get_by_label("Link: offline (no broker)");
    h.get_by_label("Broker: none");
    h.get_by_label(&format!("{DEVICES} devices"));
    // The map is there with its legend counting every device as not yet reported.
    h.get_by_label("Fleet map");
    h.get_by_label_contains(&format!("no report yet {DEVICES}"));
}

#[test]
fn search_finds_a_device_in_the_virtualised_table_and_opens_it() {
    let (mut h, _feed, fleet) = harness();
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    // Rows are virtualised: the first device is laid out, one far down the list is not.
    h.get_by_label(&fleet.devices[0].id);
    let target = &fleet.devices[DEVICES - 77];
    assert!(
        h.query_by_label(&target.id).is_none(),
        "row {} should not be laid out",
        target.id
    );
    search(&mut h, &target.id);
    h.get_by_label("1 of 500 devices");
    h.get_by_label(&target.id).click();
    settle(&mut h);
    // The device view: its components with their versions, and its A/B slot.
    h.get_by_label("Components");
    let firmware = target.firmware().unwrap().to_string();
    h.get_by_label(&firmware);
    h.get_by_label_contains(&format!(
        "{} (updates go to {})",
        target.active_slot,
        target.active_slot.other()
    ));
}

#[test]
fn a_status_from_the_link_reaches_the_table_and_the_event_log() {
    let (mut h, feed, fleet) = harness();
    let d = &fleet.devices[42];
    let status = |state, ts| {
        status_message(
            d,
            UpdateStatus {
                state,
                release_id: Some("t300-fw-2.5.0".into()),
                command_id: None,
                progress_pct: None,
                reason: Some("crash loop in health window".into()),
            },
            ts,
        )
    };
    assert!(feed.send(status(UpdateState::Installing, NOW.secs() - 30)));
    assert!(feed.send(status(UpdateState::Reverted, NOW.secs() - 10)));
    settle(&mut h);
    h.get_by_label_contains("reverted 1");
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    search(&mut h, "reverted");
    h.get_by_label("1 of 500 devices");
    h.get_by_label(&d.id);
    h.get_by_label("reverted");
    // The war room shows it among the latest events.
    h.key_press(Key::F11);
    settle(&mut h);
    h.get_by_label_contains("reverted (t300-fw-2.5.0): crash loop in health window");
}

/// Issue 19: reports from devices whose clock runs ahead of the screen's (the demo's 60x
/// simulated fleet) are aged on the devices' clock in the status bar, and the bar says so; a
/// report on the screen's clock is aged on it with nothing more said.
#[test]
fn the_status_bar_ages_reports_on_one_clock_and_says_which() {
    let (mut h, feed, fleet) = harness();
    let status = |i: usize, ts: i64| {
        let d = &fleet.devices[i];
        BackendEvent::Inbound(Inbound::Status(DeviceStatus {
            v: 1,
            device_id: d.id.clone(),
            ts: Timestamp::from_secs(ts),
            active_slot: d.active_slot,
            components: d.components.clone(),
            update: UpdateStatus {
                state: UpdateState::Idle,
                release_id: None,
                command_id: None,
                progress_pct: None,
                reason: None,
            },
            battery_pct: d.battery_pct,
            power: d.power,
            connectivity: d.connectivity,
            metered: d.metered,
            free_storage_bytes: d.free_storage_bytes,
            position: Some(d.position),
        }))
    };
    assert!(feed.send(status(7, NOW.secs() - 30)));
    settle(&mut h);
    h.get_by_label_contains("last message 30 s ago");
    assert!(
        h.query_by_label_contains("clock)").is_none(),
        "nothing said of the clock when it is the screen's"
    );
    // Three hours ahead of the screen: before, "0 s ago" on the screen's clock, unsaid.
    assert!(feed.send(status(8, NOW.secs() + 3 * 3600 - 150)));
    assert!(feed.send(status(9, NOW.secs() + 3 * 3600)));
    settle(&mut h);
    h.get_by_label_contains("last message 0 s ago (on the devices' clock)");
}

#[test]
fn the_war_room_is_read_only_and_leaves_with_escape() {
    let (mut h, _feed, _) = harness();
    h.get_by_label("War room").click();
    settle(&mut h);
    h.get_by_label("CONVOY · WAR ROOM");
    // The fixture's cache file does not exist: the wall says why it has no rollouts.
    wait_for(
        &mut h,
        "Could not read the rollouts: no fleet cache at fixture.db",
    );
    // Nothing to edit or press on the wall.
    assert!(h.query_by_role(egui::Role::TextInput).is_none());
    assert!(h.query_by_role(egui::Role::Button).is_none());
    h.key_press(Key::Escape);
    settle(&mut h);
    h.get_by_label("Fleet map");
    search_field(&h);
}

#[test]
fn cohorts_summarise_the_fleet_by_model() {
    let (mut h, _feed, fleet) = harness();
    h.get_by_label("Cohorts").click();
    settle(&mut h);
    h.get_by_label("Model");
    h.get_by_label("Hardware revision");
    let (model, count) = fleet
        .count_by("model")
        .into_iter()
        .max_by_key(|(m, n)| (*n, std::cmp::Reverse(m.clone())))
        .unwrap();
    h.get_by_label(&model);
    h.get_by_label(&count.to_string());
}

#[test]
fn the_theme_toggles_and_persists_in_the_ui_state() {
    let (mut h, _feed, _) = harness();
    h.get_by_label("Light theme").click();
    settle(&mut h);
    assert_eq!(h.state().state.theme, convoy::gui::app::Theme::Light);
    h.get_by_label("Dark theme");
    let saved = serde_json::to_string(&h.state().state).unwrap();
    let back: convoy::gui::UiState = serde_json::from_str(&saved).unwrap();
    assert_eq!(back.theme, convoy::gui::app::Theme::Light);
}

#[test]
fn shift_drag_on_the_map_makes_a_cohort_of_the_devices_in_the_box() {
    use egui::{Event, Modifiers, PointerButton};
    let (mut h, _feed, fleet) = harness();
    let zoom = 5.0;
    h.state_mut().send(convoy::gui::UiCommand::FocusMap {
        lat: 50.0,
        lon: 8.0,
        zoom,
    });
    settle(&mut h);
    let rect = h.get_by_label("Fleet map").rect();
    let (p0, p1) = (
        rect.center() - egui::vec2(180.0, 120.0),
        rect.center() + egui::vec2(150.0, 110.0),
    );
    h.event(Event::ModifiersChanged(Modifiers::SHIFT));
    h.hover_at(p0);
    h.run_steps(1);
    h.event(Event::PointerButton {
        pos: p0,
        button: PointerButton::Primary,
        pressed: true,
        modifiers: Modifiers::SHIFT,
    });
    h.run_steps(1);
    for k in 1..=6 {
        h.hover_at(p0 + (p1 - p0) * (k as f32 / 6.0));
        h.run_steps(1);
    }
    h.event(Event::PointerButton {
        pos: p1,
        button: PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::SHIFT,
    });
    h.run_steps(1);
    h.event(Event::ModifiersChanged(Modifiers::NONE));
    settle(&mut h);

    let cohorts = &h.state().cohorts;
    assert_eq!(cohorts.len(), 1, "one cohort made");
    assert_eq!(cohorts[0].name, "Map selection 1");
    // Where each device lands on screen, by Web Mercator from the map's centre and zoom.
    let world_px = 256.0 * 2f64.powf(zoom);
    let [cx, cy] = convoy::gui::basemap::mercator(8.0, 50.0);
    let screen = |d: &convoy_core::fleet::Device| {
        let [x, y] = convoy::gui::basemap::mercator(d.position.lon, d.position.lat);
        egui::pos2(
            rect.center().x + ((x - cx) * world_px) as f32,
            rect.center().y + ((y - cy) * world_px) as f32,
        )
    };
    let sel = egui::Rect::from_two_pos(p0, p1);
    let members: std::collections::HashSet<u32> = cohorts[0].devices.iter().copied().collect();
    for (i, d) in fleet.devices.iter().enumerate() {
        let p = screen(d);
        if sel.shrink(1.0).contains(p) {
            assert!(
                members.contains(&(i as u32)),
                "{} inside the box but not selected",
                d.id
            );
        }
        if !sel.expand(1.0).contains(p) {
            assert!(
                !members.contains(&(i as u32)),
                "{} outside the box but selected",
                d.id
            );
        }
    }
    assert!(
        members.len() > 20 && members.len() < DEVICES,
        "{} selected",
        members.len()
    );
    h.get_by_label("Cohorts").click();
    settle(&mut h);
    h.get_by_label("Map selection 1");
    h.get_by_label(&format!("{} devices", members.len()));
}

#[test]
fn the_command_palette_runs_a_command_by_name() {
    let (mut h, _feed, _) = harness();
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::K);
    settle(&mut h);
    h.get_by_label("Command palette");
    h.get_by_label("Colour by health").click();
    settle(&mut h);
    assert_eq!(
        h.state().state.color_mode,
        convoy::gui::model::ColorMode::Health
    );
    assert!(
        h.query_by_label("Command palette").is_none(),
        "the palette closes after a command"
    );
    h.get_by_label_contains("healthy");
}

/// Issue 19: Enter in the palette did nothing; it runs the first command that matches.
#[test]
fn enter_in_the_command_palette_runs_the_first_match() {
    let (mut h, _feed, _) = harness();
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::K);
    settle(&mut h);
    h.get_by_label("Command palette");
    // The palette holds the keyboard focus: typing goes to it.
    h.event(egui::Event::Text("colour health".into()));
    settle(&mut h);
    // Typed: the list holds only the match.
    h.get_by_label("Colour by health");
    h.key_press(Key::Enter);
    settle(&mut h);
    assert_eq!(
        h.state().state.color_mode,
        convoy::gui::model::ColorMode::Health
    );
    assert!(h.query_by_label("Command palette").is_none());
}

/// Writes three rollout timelines into `cache` as the engine does: `ro-t300-canary`, paused by
/// the boot-failure gate on stratum T300/C in its canary after one hold; `ro-tcu-fleet`,
/// running and newer; `ro-old-done`, completed.
fn write_rollouts(cache: &std::path::Path) {
    use serde_json::json;
    let mut store = convoy::store::Store::open(cache).unwrap();
    let mut append = |id: &str, secs_ago: i64, kind: &str, cause: &str, payload| {
        store
            .append_event(
                id,
                Timestamp::from_secs(NOW.secs() - secs_ago),
                kind,
                cause,
                &payload,
            )
            .unwrap();
    };
    let created = |release: &str, waves| json!({"release": release, "requested_by": "alice", "path": "standard", "waves": waves});
    append(
        "ro-t300-canary",
        7200,
        "rollout.created",
        "alice: created",
        created(
            "t300-2.5.0",
            json!([{"name": "canary", "devices": 50, "soak_secs": 3600},
                   {"name": "fleet", "devices": 950, "soak_secs": 3600}]),
        ),
    );
    append(
        "ro-t300-canary",
        7100,
        "approval",
        "bob: ok",
        json!({"approval": {"operator": "bob"}}),
    );
    append(
        "ro-t300-canary",
        7100,
        "rollout.approved",
        "bob",
        json!("approved"),
    );
    append(
        "ro-t300-canary",
        7000,
        "wave.started",
        "timer",
        json!({"wave_started": {"wave": 0}}),
    );
    append(
        "ro-t300-canary",
        3000,
        "soak.extended",
        "gate",
        json!({"soak_extended": {"wave": 0}}),
    );
    append(
        "ro-t300-canary",
        1200,
        "gate.decision",
        "gate",
        json!({"wave": "canary", "outcome": "pause", "report": {"findings": [
            {"metric": "boot_failure", "stratum": "T300/C", "status": "fail", "observed": 0.4,
             "baseline": 0.005, "p_value": 1e-9, "sample": 10,
             "counts": {"updated_events": 4, "updated_device_hours": 10.0,
                        "baseline_events": 5, "baseline_device_hours": 1000.0}},
            {"metric": "crash", "stratum": null, "status": "pass", "observed": 1.0,
             "baseline": 1.0, "p_value": 0.5, "sample": 50}]}}),
    );
    append(
        "ro-t300-canary",
        1200,
        "rollout.paused",
        "gate",
        json!({"paused": {"reason": "boot_failure failed its gate"}}),
    );
    append(
        "ro-tcu-fleet",
        900,
        "rollout.created",
        "carol: created",
        created(
            "tcu-1.4.0",
            json!([{"name": "canary", "devices": 20}, {"name": "fleet", "devices": 400}]),
        ),
    );
    append(
        "ro-tcu-fleet",
        800,
        "wave.started",
        "timer",
        json!({"wave_started": {"wave": 0}}),
    );
    append(
        "ro-tcu-fleet",
        300,
        "wave.completed",
        "timer",
        json!({"wave_completed": {"wave": 0, "summary": {"healthy": 20, "failed": 0,
               "reverted": 0, "silent_device_ids": [], "not_judged": []}}}),
    );
    append(
        "ro-tcu-fleet",
        290,
        "wave.started",
        "timer",
        json!({"wave_started": {"wave": 1}}),
    );
    append(
        "ro-old-done",
        90_000,
        "rollout.created",
        "alice: created",
        created("hu-3.1.0", json!([{"name": "all", "devices": 30}])),
    );
    append(
        "ro-old-done",
        80_000,
        "rollout.completed",
        "timer",
        json!("completed"),
    );
}

#[test]
fn the_war_room_shows_the_paused_rollout_from_the_cache_with_its_gate_and_waves() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("rollouts.db");
    write_rollouts(&cache);
    let cache_again = cache.clone();
    let (backend, _feed) = Backend::fixture(fixture(), cache);
    let mut h = common::console(backend, [1400.0, 900.0]);
    settle(&mut h);
    h.key_press(Key::F11);
    settle(&mut h);
    // The paused one leads, though the running one is newer.
    wait_for_label(&mut h, "ro-t300-canary");
    h.get_by_label("PAUSED");
    // The completed one ended long ago: it is not watched.
    h.get_by_label("Rollout 1 of 2");
    h.get_by_label_contains(
        "release t300-2.5.0 · requested by alice · standard path · 50 of 1000 devices offered",
    );
    // The verdict in words on the band.
    h.get_by_label("Paused 20 min ago: boot_failure failed its gate; waiting for a decision");
    // Its waves, with their progress: the canary the gate stopped is not "in progress".
    h.get_by_label("canary (50 devices)");
    h.get_by_label("stopped by a gate 20 min ago: pause");
    h.get_by_label("fleet (950 devices)");
    h.get_by_label("not started");
    // The gate decision with its evidence: the failing finding, metric and stratum.
    h.get_by_label("Gate decisions · holds: 1");
    h.get_by_label("20 min ago · wave canary: pause");
    h.get_by_label_contains("boot_failure (stratum T300/C): 0.40 against a baseline of 0.01");
    h.get_by_label_contains("(4 events in 10.0 device-hours; baseline 5 in 1000.0)");
    assert!(h.query_by_label_contains("crash (whole wave)").is_none());
    // The latest timeline entries and the other rollouts.
    h.get_by_label_contains("paused: boot_failure failed its gate  (gate)");
    h.get_by_label("Also: ro-tcu-fleet running");
    h.get_by_label("Ended: ro-old-done completed");
    assert!(h.query_by_label("ro-tcu-fleet").is_none());
    // Still nothing to press.
    assert!(h.query_by_role(egui::Role::Button).is_none());

    // The worker reads the cache again every few seconds: a resume the engine records shows.
    convoy::store::Store::open(&cache_again)
        .unwrap()
        .append_event(
            "ro-t300-canary",
            Timestamp::from_secs(NOW.secs() - 60),
            "rollout.resumed",
            "bob: checked the boot logs",
            &serde_json::json!("resumed"),
        )
        .unwrap();
    for _ in 0..1000 {
        if h.query_by_label("RUNNING").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    h.get_by_label("RUNNING");
    // Running with a gate decision on record, it still leads the newer clean one.
    h.get_by_label("ro-t300-canary");
    h.get_by_label_contains("resumed (bob: checked the boot logs)");
    assert!(h.query_by_label("PAUSED").is_none());
}

#[test]
fn the_device_view_shows_the_update_history_from_the_cache_newest_first() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("history.db");
    let d = &fleet.devices[7];
    let other = &fleet.devices[8];
    {
        let mut store = convoy::store::Store::open(&cache).unwrap();
        let event = |device: &str, rollout: Option<&str>, secs: i64, kind: &str, payload| {
            convoy::store::events::NewDeviceEvent {
                device_id: device.to_owned(),
                rollout_id: rollout.map(str::to_owned),
                time: Timestamp::from_secs(NOW.secs() - secs),
                kind: kind.to_owned(),
                payload,
            }
        };
        store
            .append_device_events(&[
                event(
                    &d.id,
                    Some("ro-canary-1"),
                    3600,
                    "offered",
                    serde_json::json!({"release": "t300-fw-2.5.0"}),
                ),
                event(
                    &d.id,
                    Some("ro-canary-1"),
                    1800,
                    "installed",
                    serde_json::json!({"slot": "B", "took_secs": 95}),
                ),
                event(
                    &d.id,
                    None,
                    60,
                    "report.rejected",
                    serde_json::json!({"reason": "bad signature"}),
                ),
                // Another device's event must not show.
                event(
                    &other.id,
                    Some("ro-other-9"),
                    30,
                    "reverted",
                    serde_json::json!({}),
                ),
            ])
            .unwrap();
    }
    let (backend, _feed) = Backend::fixture(fleet.clone(), cache);
    let mut h = common::console(backend, [1400.0, 1400.0]);
    settle(&mut h);
    h.state_mut().send(convoy::gui::UiCommand::OpenDevice(7));
    h.run_steps(1);
    wait_for_label(&mut h, "report.rejected");
    // Each row: time, kind, rollout and a short payload summary.
    let times: Vec<String> = [60, 1800, 3600]
        .iter()
        .map(|s| Timestamp::from_secs(NOW.secs() - s).to_rfc3339())
        .collect();
    let rows = [
        (&times[0], "report.rejected", "-", "reason=bad signature"),
        (
            &times[1],
            "installed",
            "ro-canary-1",
            "slot=B, took_secs=95",
        ),
        (&times[2], "offered", "ro-canary-1", "release=t300-fw-2.5.0"),
    ];
    let mut last_y = f32::MIN;
    for (time, kind, _, summary) in rows {
        let y = h.get_by_label(time).rect().center().y;
        assert!(y > last_y, "{kind} should be below the newer rows");
        last_y = y;
        assert_eq!(h.get_by_label(kind).rect().center().y, y, "{kind}'s row");
        assert_eq!(h.get_by_label(summary).rect().center().y, y, "{kind}'s row");
    }
    assert_eq!(h.get_all_by_label("ro-canary-1").count(), 2);
    assert!(h.query_by_label("reverted").is_none());
    assert!(h.query_by_label("ro-other-9").is_none());
    assert!(h.query_by_label("loading…").is_none());

    // A device with no events in the cache says so.
    h.state_mut().send(convoy::gui::UiCommand::OpenDevice(9));
    h.run_steps(1);
    wait_for_label(&mut h, "no history in the cache");
    assert!(h.query_by_label("report.rejected").is_none());
}

#[test]
fn a_missing_cache_shows_why_the_history_is_missing() {
    let (mut h, _feed, _) = harness();
    h.state_mut().send(convoy::gui::UiCommand::OpenDevice(3));
    h.run_steps(1);
    // The history worker answers on its own thread: wait for it (a bound, not a timing).
    wait_for(&mut h, "Could not read the history");
    h.get_by_label_contains("Could not read the history: no fleet cache at fixture.db");
    h.get_by_label_contains("Could not read the telemetry: no fleet cache at fixture.db");
}

/// Issue 19, two clocks mixed: a simulated fleet's reports run hours ahead of the screen's
/// clock, and the table's "Last seen" read "0 s ago" for every device. The ages are now taken
/// on the devices' own clock, and the header says which clock that is.
#[test]
fn the_table_ages_devices_on_their_own_clock_when_it_runs_ahead_and_says_so() {
    let (mut h, feed, fleet) = harness();
    let ahead = NOW.secs() + 3 * 3600;
    let idle = UpdateStatus {
        state: UpdateState::Idle,
        release_id: None,
        command_id: None,
        progress_pct: None,
        reason: None,
    };
    assert!(feed.send(status_message(&fleet.devices[42], idle, ahead)));
    settle(&mut h);
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    h.get_by_label_contains(
        "last seen: ages before the newest report (the devices' clock is ahead of this screen's)",
    );
    // The first device, last seen before the fleet's clock ran ahead: its age counts from the
    // newest report, three hours more than on the screen's clock.
    let first = &fleet.devices[0];
    let on_fleet_clock =
        convoy::gui::app::age(Timestamp::from_secs(ahead).secs_since(first.last_seen));
    let on_screen_clock = convoy::gui::app::age(NOW.secs_since(first.last_seen));
    assert_ne!(on_fleet_clock, on_screen_clock);
    assert!(
        h.query_all_by_label(&on_fleet_clock).count() > 0,
        "{} last seen {on_fleet_clock}",
        first.id
    );
}

#[test]
fn a_hidden_table_column_disappears_and_the_others_stay() {
    use convoy::gui::query::Column;
    use egui_kittest::kittest::NodeT;
    let (mut h, _feed, fleet) = harness();
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    let header = |h: &Harness<'static, ConsoleApp>, c: Column| {
        h.query_by_role_and_label(egui::Role::Button, c.title())
            .is_some()
    };
    for c in Column::ALL {
        assert!(header(&h, c), "{} header before", c.title());
    }
    let percent_labels = |h: &Harness<'static, ConsoleApp>| {
        h.query_all_by_label_contains(" %")
            .filter(|n| n.accesskit_node().role() == egui::accesskit::Role::Label)
            .count()
    };
    assert!(percent_labels(&h) > 10, "battery levels are shown");
    h.get_by_label("Columns").click();
    settle(&mut h);
    // The device column cannot be hidden.
    assert!(
        h.get_by_role_and_label(egui::Role::CheckBox, Column::Id.title())
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_role_and_label(egui::Role::CheckBox, Column::Battery.title())
        .click();
    settle(&mut h);
    h.key_press(Key::Escape);
    settle(&mut h);
    assert!(
        h.query_by_role(egui::Role::CheckBox).is_none(),
        "the menu closed"
    );
    assert!(!header(&h, Column::Battery), "the battery header is gone");
    for c in Column::ALL.into_iter().filter(|&c| c != Column::Battery) {
        assert!(header(&h, c), "{} header after", c.title());
    }
    // No cell shows a battery level any more (the one "N %" left is the UI scale in the top
    // bar); the rows are still there.
    assert_eq!(
        percent_labels(&h),
        1,
        "only the UI scale is a percentage now"
    );
    h.get_by_label(&fleet.devices[0].id);
    assert_eq!(h.state().state.hidden_columns, [Column::Battery]);
    let saved = serde_json::to_string(&h.state().state).unwrap();
    let back: convoy::gui::UiState = serde_json::from_str(&saved).unwrap();
    assert_eq!(back.hidden_columns, [Column::Battery]);
}

/// A raster MBTiles file of zooms 0 to 4 in one colour (rows in TMS order), with the tiles of
/// zoom 3 row 2 corrupt.
fn fixture_mbtiles(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE metadata (name TEXT, value TEXT);
         CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
         INSERT INTO metadata VALUES ('format', 'png'), ('attribution', 'Fixture Maps');",
    )
    .unwrap();
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_pixel(8, 8, image::Rgba([200, 120, 40, 255]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    for zoom in 0..=4u32 {
        let n = 1u32 << zoom;
        for x in 0..n {
            for y in 0..n {
                let blob = if zoom == 3 && y == 2 {
                    b"garbage".to_vec()
                } else {
                    png.clone()
                };
                conn.execute(
                    "INSERT INTO tiles VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![zoom, x, n - 1 - y, blob],
                )
                .unwrap();
            }
        }
    }
}

#[test]
fn an_mbtiles_file_draws_over_the_basemap_and_its_attribution_shows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixture.mbtiles");
    fixture_mbtiles(&file);
    let (mut h, _feed, _) = harness();
    h.state_mut()
        .map
        .set_tile_source(convoy::gui::tiles::TileSpec::MbTiles(file));
    h.state_mut().send(convoy::gui::UiCommand::FocusMap {
        lat: 50.0,
        lon: 8.0,
        zoom: 3.0,
    });
    settle(&mut h);
    // The workers read and decode off the UI thread; frames go on meanwhile.
    for _ in 0..300 {
        let failures = h.state().map.source.as_ref().map_or(0, |s| s.failures);
        if failures > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    let map = &h.state().map;
    let source = map.source.as_ref().expect("the source started");
    assert!(source.cached() > 2, "{} tiles", source.cached());
    assert!(source.failures > 0, "the corrupt row was read");
    let attribution = map.attribution();
    assert!(
        attribution.starts_with("Tiles: Fixture Maps · Basemap: Natural Earth"),
        "{attribution}"
    );
    assert!(attribution.contains("unreadable"), "{attribution}");
    h.get_by_label("Fleet map");
}

#[test]
fn a_tile_source_that_cannot_open_leaves_the_basemap_and_says_why() {
    let (mut h, _feed, _) = harness();
    h.state_mut()
        .map
        .set_tile_source(convoy::gui::tiles::TileSpec::MbTiles(
            "/nonexistent/x.mbtiles".into(),
        ));
    settle(&mut h);
    let attribution = h.state().map.attribution();
    assert!(
        attribution.starts_with("Tiles unavailable: no MBTiles file at /nonexistent/x.mbtiles"),
        "{attribution}"
    );
    h.get_by_label("Fleet map");
}

/// Shift+drag through `path` on the map: pressed at the first point, moved along each leg in
/// a few steps, released at the last.
fn shift_drag(h: &mut Harness<'static, ConsoleApp>, path: &[egui::Pos2]) {
    use egui::{Event, Modifiers, PointerButton};
    h.event(Event::ModifiersChanged(Modifiers::SHIFT));
    h.hover_at(path[0]);
    h.run_steps(1);
    h.event(Event::PointerButton {
        pos: path[0],
        button: PointerButton::Primary,
        pressed: true,
        modifiers: Modifiers::SHIFT,
    });
    h.run_steps(1);
    for leg in path.windows(2) {
        for k in 1..=6 {
            h.hover_at(leg[0] + (leg[1] - leg[0]) * (k as f32 / 6.0));
            h.run_steps(1);
        }
    }
    let last = *path.last().unwrap();
    h.event(Event::PointerButton {
        pos: last,
        button: PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::SHIFT,
    });
    h.run_steps(1);
    h.event(Event::ModifiersChanged(Modifiers::NONE));
    settle(h);
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: egui::Pos2, a: egui::Pos2, b: egui::Pos2) -> f32 {
    let ab = b - a;
    let t = ((p - a).dot(ab) / ab.length_sq()).clamp(0.0, 1.0);
    p.distance(a + ab * t)
}

#[test]
fn a_lasso_on_the_map_makes_a_cohort_of_the_devices_inside_it() {
    use convoy::gui::aggregate::point_in_polygon;
    let (mut h, _feed, fleet) = harness();
    let zoom = 5.0;
    h.state_mut().send(convoy::gui::UiCommand::FocusMap {
        lat: 50.0,
        lon: 8.0,
        zoom,
    });
    settle(&mut h);
    h.get_by_label("Lasso select").click();
    settle(&mut h);
    let rect = h.get_by_label("Fleet map").rect();
    let mid = rect.center();
    // A triangle, closed by the lasso itself (the last leg is not drawn).
    let corners = [
        mid + egui::vec2(-200.0, 130.0),
        mid + egui::vec2(0.0, -150.0),
        mid + egui::vec2(190.0, 120.0),
    ];
    shift_drag(&mut h, &corners);

    let cohorts = &h.state().cohorts;
    assert_eq!(cohorts.len(), 1, "one cohort made");
    let world_px = 256.0 * 2f64.powf(zoom);
    let [cx, cy] = convoy::gui::basemap::mercator(8.0, 50.0);
    let poly: Vec<[f64; 2]> = corners
        .iter()
        .map(|p| [f64::from(p.x), f64::from(p.y)])
        .collect();
    let members: std::collections::HashSet<u32> = cohorts[0].devices.iter().copied().collect();
    let mut inside = 0;
    for (i, d) in fleet.devices.iter().enumerate() {
        let [x, y] = convoy::gui::basemap::mercator(d.position.lon, d.position.lat);
        let p = egui::pos2(
            mid.x + ((x - cx) * world_px) as f32,
            mid.y + ((y - cy) * world_px) as f32,
        );
        let near_edge = (0..3).any(|k| segment_distance(p, corners[k], corners[(k + 1) % 3]) < 1.5);
        if near_edge {
            continue;
        }
        let expected = point_in_polygon([f64::from(p.x), f64::from(p.y)], &poly);
        inside += usize::from(expected);
        assert_eq!(
            members.contains(&(i as u32)),
            expected,
            "{} at {p:?}: inside the lasso {expected}",
            d.id
        );
    }
    assert!(inside > 10 && inside < DEVICES, "{inside} inside");
    // A box over the same ground would have taken more: the lasso is not its bounding box.
    let bbox = egui::Rect::from_points(&corners);
    let in_box = fleet
        .devices
        .iter()
        .filter(|d| {
            let [x, y] = convoy::gui::basemap::mercator(d.position.lon, d.position.lat);
            bbox.contains(egui::pos2(
                mid.x + ((x - cx) * world_px) as f32,
                mid.y + ((y - cy) * world_px) as f32,
            ))
        })
        .count();
    assert!(
        in_box > members.len(),
        "{in_box} in the box, {} in the lasso",
        members.len()
    );
}

#[test]
fn the_device_view_plots_telemetry_rollups_from_the_cache() {
    use convoy::gui::app::TelemetryState;
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("telemetry.db");
    write_telemetry(&cache, &fleet, 11);
    let (backend, _feed) = Backend::fixture(fleet.clone(), cache);
    let mut h = common::console(backend, [1400.0, 2400.0]);
    settle(&mut h);
    h.state_mut().send(convoy::gui::UiCommand::OpenDevice(11));
    h.run_steps(1);
    wait_for_label(&mut h, "Battery (%), hourly mean plot");
    h.get_by_label("Crashes per hour plot");
    h.get_by_label("No reconnect_count samples in the cache in the last 7 days.");
    assert!(h.query_by_label("Reconnects per hour plot").is_none());
    let Some(TelemetryState::Loaded(series)) =
        h.state().telemetry.as_ref().map(|t| t.state.clone())
    else {
        panic!("telemetry loaded");
    };
    // Battery: six hourly buckets of six samples each, from -6 h; the mean of hour h is the
    // mean of its six values.
    let battery = convoy::gui::device::plot_points(
        &series[0].points,
        NOW,
        convoy::gui::device::PlotKind::Mean,
    );
    let expected: Vec<[f64; 2]> = (0..6)
        .map(|h| {
            let values: Vec<f64> = (0..6).map(|k| 90.0 - 2.0 * (h * 6 + k) as f64).collect();
            [(h - 6) as f64, values.iter().sum::<f64>() / 6.0]
        })
        .collect();
    assert_eq!(battery, expected);
    let crashes = convoy::gui::device::plot_points(
        &series[1].points,
        NOW,
        convoy::gui::device::PlotKind::PerHour,
    );
    assert_eq!(crashes, [[-3.0, 1.0], [-1.0, 2.0]]);
    assert!(series[2].points.is_empty());
}

#[test]
fn a_zoom_level_change_is_binned_by_the_derive_worker() {
    use convoy::gui::aggregate::{Grid, cell_size_for};
    let (mut h, _feed, _) = harness();
    for zoom in [3.0, 7.0, 4.5] {
        h.state_mut().send(convoy::gui::UiCommand::FocusMap {
            lat: 50.0,
            lon: 8.0,
            zoom,
        });
        settle(&mut h);
        let app = h.state();
        let level = app.map.level();
        assert_eq!(f64::from(level), f64::floor(zoom));
        assert!(app.map.grid_current(app.derived.generation));
        let model = app.model.as_ref().unwrap();
        let own = Grid::build(
            &model.map_x,
            &model.map_y,
            &app.derived.classes,
            &app.derived.filtered,
            cell_size_for(level, convoy::gui::tokens::CLUSTER_CELL_PX),
        );
        assert_eq!(app.map.grid.cell_size, own.cell_size, "zoom {zoom}");
        assert_eq!(app.map.grid.cells(), own.cells(), "zoom {zoom}");
    }
}

#[test]
fn without_the_derive_worker_the_console_says_why() {
    let (mut h, _feed, _) = harness();
    h.state_mut().without_derive_worker("out of threads");
    settle(&mut h);
    h.get_by_label_contains("could not start the derive worker thread: out of threads");
    // The rest of the console still runs.
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    h.get_by_label_contains("could not start the derive worker thread");
    h.get_by_label("Link: offline (no broker)");
}

/// Runs frames until the map's basemap tiles are all drawn: none waiting for the tile thread
/// and none new for 30 frames in a row.
fn wait_for_tiles(h: &mut Harness<'static, ConsoleApp>) {
    let (mut last, mut quiet) = (usize::MAX, 0);
    for _ in 0..3000 {
        let (drawn, waiting) = h.state().map.basemap_tiles();
        if drawn == last && drawn > 0 && waiting == 0 {
            quiet += 1;
            if quiet >= 30 {
                return;
            }
        } else {
            quiet = 0;
            last = drawn;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    panic!("the basemap tiles never settled");
}

/// Snapshot images of the main screens, rendered through wgpu (Mesa's lavapipe or llvmpipe
/// on a machine with no GPU) and compared with `app/tests/snapshots/*.png`; run with
/// `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change.
#[test]
fn snapshots_of_the_main_screens() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("snapshot.db");
    write_telemetry(&cache, &fleet, 42);
    write_rollouts(&cache);
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1280.0, 800.0]);
    settle(&mut h);
    h.state_mut().send(convoy::gui::UiCommand::FocusMap {
        lat: 50.0,
        lon: 8.0,
        zoom: 4.0,
    });
    settle(&mut h);
    wait_for_tiles(&mut h);
    let shots: [(&str, Option<convoy::gui::View>); 7] = [
        ("map", None),
        ("table", Some(convoy::gui::View::Table)),
        ("device", None),
        ("cohorts", Some(convoy::gui::View::Cohorts)),
        ("findings", Some(convoy::gui::View::Findings)),
        ("releases", Some(convoy::gui::View::Releases)),
        ("war_room", Some(convoy::gui::View::WarRoom)),
    ];
    for (name, view) in shots {
        if let Some(v) = view {
            h.state_mut().send(convoy::gui::UiCommand::Show(v));
            settle(&mut h);
        }
        // The device, findings and releases views are long.
        h.set_size(egui::vec2(
            1280.0,
            match name {
                "device" | "findings" => 1350.0,
                "releases" => 1000.0,
                _ => 800.0,
            },
        ));
        if name == "findings" {
            h.state_mut().findings.form = convoy::gui::findings::FindingForm {
                id: "CVE-2026-4242".into(),
                title: "telematics unit auth bypass".into(),
                cvss: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:L".into(),
                public_poc: true,
                models: "T300".into(),
                versions: "firmware>=1.0".into(),
                ..Default::default()
            };
            wait_for_label(&mut h, "None stored yet.");
            wait_for(&mut h, "Recommendation:");
        }
        if name == "releases" {
            h.state_mut().releases.form = convoy::gui::releases::ReleaseForm {
                artifact: "fw/t300-fw-2.5.0.bin".into(),
                version: "2.5.0".into(),
                counter: "25".into(),
                hardware: "T300".into(),
                requires: "bootloader>=1.0".into(),
                expires: "30d".into(),
                key_dir: "keys/release-2026".into(),
                ..Default::default()
            };
            wait_for_label(&mut h, "No manifests in the cache yet.");
            // The trust directory beside the cache is filled in (issue 19); the snapshot shows
            // it under a fixed name, not the temporary directory's.
            let trust = &h.state().releases.trust_dir;
            assert_eq!(
                std::path::Path::new(trust),
                convoy::ops::settings::default_trust_dir(&dir.path().join("snapshot.db"))
            );
            h.state_mut().releases.trust_dir = "/var/lib/convoy/trust".into();
        }
        if name == "device" {
            h.state_mut().send(convoy::gui::UiCommand::OpenDevice(42));
            h.run_steps(1);
            wait_for_label(&mut h, "Battery (%), hourly mean plot");
        }
        if name == "war_room" {
            wait_for_label(&mut h, "ro-t300-canary");
        }
        h.state_mut().dismiss_toasts();
        settle(&mut h);
        h.snapshot(name);
    }
}

/// A cache holding `fleet` and telemetry for device `i`: battery falling 2 points every 10
/// minutes over the 6 hours before NOW, 1 crash at -3 h and 2 at -1 h, no reconnects; and a
/// sample of another device and one older than a week, which must not show.
fn write_telemetry(cache: &std::path::Path, fleet: &Fleet, i: usize) {
    use convoy::store::telemetry::Sample;
    let d = &fleet.devices[i];
    // Hours are aligned to NOW, which is a whole hour.
    assert_eq!(NOW.secs() % 3600, 0);
    let mut samples = Vec::new();
    for k in 0..36 {
        samples.push(Sample {
            device: d.id.clone(),
            time: Timestamp::from_secs(NOW.secs() - 6 * 3600 + k * 600),
            metric: "battery_pct".into(),
            value: 90.0 - 2.0 * k as f64,
        });
    }
    for (secs_ago, n) in [(3 * 3600 - 60, 1.0), (3000, 1.0), (2000, 1.0)] {
        samples.push(Sample {
            device: d.id.clone(),
            time: Timestamp::from_secs(NOW.secs() - secs_ago),
            metric: "crash_count".into(),
            value: n,
        });
    }
    // Another device's samples must not show, nor samples older than the week.
    samples.push(Sample {
        device: fleet.devices[i + 1].id.clone(),
        time: Timestamp::from_secs(NOW.secs() - 100),
        metric: "crash_count".into(),
        value: 50.0,
    });
    samples.push(Sample {
        device: d.id.clone(),
        time: Timestamp::from_secs(NOW.secs() - 8 * 86_400),
        metric: "crash_count".into(),
        value: 50.0,
    });
    {
        let mut store = convoy::store::Store::open(cache).unwrap();
        store.replace_fleet(fleet, None).unwrap();
        let report = store.ingest(&samples).unwrap();
        assert_eq!(report.stored, samples.len(), "{report:?}");
    }
}

/// A harness on `fleet` stored in a fresh cache in `dir` (findings and releases are saved
/// there), tall enough that the long forms are laid out whole.
fn cache_harness(
    dir: &std::path::Path,
    fleet: &Fleet,
) -> (Harness<'static, ConsoleApp>, std::path::PathBuf) {
    cache_harness_sized(dir, fleet, 1700.0)
}

/// As [`cache_harness`], `height` points tall (the planner is longer than the forms).
fn cache_harness_sized(
    dir: &std::path::Path,
    fleet: &Fleet,
    height: f32,
) -> (Harness<'static, ConsoleApp>, std::path::PathBuf) {
    let cache = dir.join("console.db");
    convoy::store::Store::open(&cache)
        .unwrap()
        .replace_fleet(fleet, None)
        .unwrap();
    let (backend, _feed) = Backend::fixture(fleet.clone(), cache.clone());
    let mut h = common::console(backend, [1400.0, height]);
    settle(&mut h);
    (h, cache)
}

#[test]
fn a_finding_is_scored_as_it_is_typed_saved_listed_and_shown_on_the_map() {
    use convoy_core::risk::{self, Finding, ScoringPolicy};
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, cache) = cache_harness(dir.path(), &fleet);
    h.get_by_label("Findings").click();
    settle(&mut h);
    wait_for_label(&mut h, "None stored yet.");
    fill(&mut h, "Finding id", "CVE-2026-4242");
    fill(&mut h, "Title", "telematics unit auth bypass");
    fill(&mut h, "Affected models", "T300");
    fill(&mut h, "Affected versions", "firmware>=1.0");
    h.get_by_label("Public proof of concept").click();
    settle(&mut h);
    let vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:L";
    fill(&mut h, "CVSS vector", vector);
    // The live score is the core's, with the per-metric explanation under it.
    let cvss = convoy_core::cvss::Cvss::parse(vector).unwrap();
    h.get_by_label(&format!(
        "CVSS 3.1 base score {:.1} ({})",
        cvss.base_score(),
        cvss.severity()
    ));
    for line in cvss.explain() {
        h.get_by_label(&line);
    }
    // The scorecard is what `convoy score finding` computes for the same finding as JSON.
    let finding: Finding = serde_json::from_value(serde_json::json!({
        "id": "CVE-2026-4242",
        "title": "telematics unit auth bypass",
        "classification": "security",
        "cvss": vector,
        "exploitation": {"public_poc": true},
        "affected": {"models": ["T300"], "requires": ["firmware>=1.0"]},
    }))
    .unwrap();
    let card = risk::score(&finding, &fleet, &ScoringPolicy::default(), NOW).unwrap();
    assert!(card.affected_devices > 0, "the fixture has T300s");
    // Scored on the scoring worker: it answers within a few frames.
    wait_for(&mut h, &format!("Total {:.1} points", card.points));
    h.get_by_label(&format!("Tier {}", card.tier));
    h.get_by_label(&format!("Recommendation: {}", card.recommendation));
    h.get_by_label_contains(&format!("Total {:.1} points", card.points));
    for line in &card.lines {
        assert!(
            h.query_all_by_label(&line.detail).count() >= 1,
            "{}",
            line.detail
        );
    }
    // One more character makes the last metric's value invalid; the error names it.
    h.get_by_label("CVSS vector").type_text("X");
    settle(&mut h);
    h.get_by_label_contains("Invalid CVSS vector: invalid value \"LX\" for metric \"A\"");
    wait_for(&mut h, "Cannot score yet: CVSS vector:");
    assert!(h.query_by_label("Save finding").is_none());
    h.key_press(Key::Backspace);
    settle(&mut h);
    wait_for_label(&mut h, &format!("Tier {}", card.tier));
    h.get_by_label("Save finding").click();
    wait_for_label(&mut h, "Saved finding CVE-2026-4242 with its scorecard");
    // Listed from the cache, with the points and tier stored.
    h.get_by_label("telematics unit auth bypass");
    h.get_by_label(&format!("{:.1}", card.points));
    let stored =
        convoy::store::query::findings(&convoy::store::Store::open(&cache).unwrap()).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, "CVE-2026-4242");
    assert_eq!(stored[0].points, Some(card.points));
    // A stored finding opens back into the form and scores the same.
    h.state_mut().findings.form = convoy::gui::findings::FindingForm::default();
    settle(&mut h);
    wait_for(&mut h, "Cannot score yet");
    h.get_by_label("Open CVE-2026-4242").click();
    wait_for_label(&mut h, "Opened finding CVE-2026-4242 from the cache");
    assert_eq!(h.state().findings.form.cvss, vector);
    assert_eq!(h.state().findings.form.models, "T300");
    wait_for_label(&mut h, &format!("Tier {}", card.tier));
    // The affected devices become a cohort, and the map shows.
    h.get_by_label("Show affected devices on map").click();
    settle(&mut h);
    let app = h.state();
    assert_eq!(app.state.view, convoy::gui::View::Map);
    let cohort = app.cohorts.last().unwrap();
    assert_eq!(cohort.name, "Affected by CVE-2026-4242");
    let matcher = finding.matcher();
    let expected: Vec<u32> = (0..fleet.devices.len() as u32)
        .filter(|&i| matcher.matches(&fleet.devices[i as usize]))
        .collect();
    assert_eq!(cohort.devices, expected);
    assert_eq!(cohort.devices.len(), card.affected_devices);
    // Issue 19: centring was not enough. They are ringed on the map, named in a legend line,
    // until cleared.
    let highlight = app.map.highlight.as_ref().unwrap();
    assert_eq!(highlight.devices, expected);
    let legend = format!(
        "{} devices affected by CVE-2026-4242 highlighted",
        convoy::gui::map::grouped(expected.len())
    );
    h.get_by_label(&legend);
    h.get_by_label("Clear highlight").click();
    settle(&mut h);
    assert!(h.state().map.highlight.is_none());
    assert!(h.query_by_label(&legend).is_none());
}

#[test]
fn the_scoring_policy_is_edited_in_the_findings_view_and_each_scorecard_records_its_digest() {
    use convoy_core::risk::{self, Finding, ScoringPolicy};
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, cache) = cache_harness(dir.path(), &fleet);
    h.get_by_label("Findings").click();
    settle(&mut h);
    fill(&mut h, "Finding id", "CVE-2026-5151");
    fill(&mut h, "Title", "remote unlock replay");
    fill(&mut h, "Affected models", "T300");
    let vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:L";
    fill(&mut h, "CVSS vector", vector);
    let finding: Finding = serde_json::from_value(serde_json::json!({
        "id": "CVE-2026-5151",
        "title": "remote unlock replay",
        "classification": "security",
        "cvss": vector,
        "affected": {"models": ["T300"]},
    }))
    .unwrap();
    let built_in = ScoringPolicy::default();
    let card = risk::score(&finding, &fleet, &built_in, NOW).unwrap();
    wait_for(
        &mut h,
        &format!("scoring policy {}, format 1, built-in", built_in.digest()),
    );
    h.get_by_label_contains(&format!("Total {:.1} points", card.points));
    h.get_by_label(&format!("Scoring policy: built-in ({})", built_in.digest()))
        .click();
    // With the editor open, buttons are pressed through AccessKit: egui_kittest 0.37 aims a
    // simulated pointer click by the accessibility rectangle, which below this opened header
    // does not match where the widget is drawn (the rendered frame shows them in place).
    h.run_steps(30);
    // A mistake names the field, and the policy in use stays.
    let mut wrong = serde_json::to_value(&built_in).unwrap();
    wrong["tiers"]["emergency_min_points"] = serde_json::json!("high");
    h.state_mut().findings.policy.text = wrong.to_string();
    h.state_mut().findings.policy.text = wrong.to_string();
    h.get_by_label("Apply policy").click_accesskit();
    settle(&mut h);
    h.get_by_label_contains("Not applied: tiers.emergency_min_points: invalid type");
    assert_eq!(h.state().findings.policy.policy.digest(), built_in.digest());
    // A heavier CVSS weight (as if pasted into the editor) changes the score and the digest.
    let mut edited = built_in.clone();
    edited.cvss_points_per_score += 2.0;
    h.state_mut().findings.policy.text = serde_json::to_string_pretty(&edited).unwrap();
    h.get_by_label("Apply policy").click_accesskit();
    settle(&mut h);
    h.get_by_label(&format!("Applied: policy {}", edited.digest()));
    let heavier = risk::score(&finding, &fleet, &edited, NOW).unwrap();
    assert!(
        heavier.points > card.points,
        "{} > {}",
        heavier.points,
        card.points
    );
    wait_for(&mut h, &format!("Total {:.1} points", heavier.points));
    h.get_by_label_contains(&format!(
        "scoring policy {}, format 1, edited in the console",
        edited.digest()
    ));
    // Saved: the stored scorecard names the policy that made it.
    h.get_by_label("Save finding").click_accesskit();
    wait_for_label(&mut h, "Saved finding CVE-2026-5151 with its scorecard");
    let stored: String = rusqlite::Connection::open(&cache)
        .unwrap()
        .query_row(
            "SELECT body FROM scores WHERE finding_id = 'CVE-2026-5151'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["policy_digest"], edited.digest().as_str());
    // Saved into a policy file, keeping the file's other sections; loaded back after a reset.
    let file = dir.path().join("policy.json");
    std::fs::write(&file, r#"{"planning": {"note": "kept"}}"#).unwrap();
    fill(&mut h, "Policy file:", file.to_str().unwrap());
    h.get_by_label("Save policy").click_accesskit();
    settle(&mut h);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["planning"]["note"], "kept");
    let reread: ScoringPolicy = serde_json::from_value(written["scoring"].clone()).unwrap();
    assert_eq!(reread.digest(), edited.digest());
    h.get_by_label("Reset to built-in").click_accesskit();
    settle(&mut h);
    assert_eq!(h.state().findings.policy.policy.digest(), built_in.digest());
    h.get_by_label("Load policy").click_accesskit();
    settle(&mut h);
    assert_eq!(h.state().findings.policy.policy.digest(), edited.digest());
    h.get_by_label_contains(&format!("Loaded {}", file.display()));
    wait_for(&mut h, &format!("Total {:.1} points", heavier.points));
}

#[test]
fn a_release_is_hashed_signed_and_listed_as_valid_and_a_tampered_copy_as_tampered() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("key");
    let key_id = convoy::keys::generate(&key_dir, "correct horse").unwrap();
    let artifact = dir.path().join("t300-fw-2.5.0.bin");
    let artifact_bytes = (3 << 20) + 4321;
    std::fs::write(&artifact, vec![0x5a_u8; artifact_bytes]).unwrap();
    let (mut h, cache) = cache_harness(dir.path(), &fleet);
    h.get_by_label("Releases").click();
    settle(&mut h);
    wait_for_label(&mut h, "No manifests in the cache yet.");
    // No desktop portal here: the file dialog gives no path at once and the form says so.
    h.get_by_label("Browse…").click();
    wait_for(&mut h, "No file chosen");
    fill(&mut h, "Trust directory", &key_dir.display().to_string());
    fill(&mut h, "Artifact", &artifact.display().to_string());
    fill(&mut h, "Version", "2.5.0");
    fill(&mut h, "Counter", "25");
    fill(&mut h, "Hardware ids", "T300");
    fill(&mut h, "Requires", "bootloader>=1.0");
    fill(&mut h, "Expires", "30d");
    fill(&mut h, "Key directory", &key_dir.display().to_string());
    fill(&mut h, "Passphrase", "correct horse");
    h.get_by_label("Hash, sign and save").click();
    settle(&mut h);
    // The passphrase left the form when signing started.
    assert!(h.state().releases.form.passphrase.is_empty());
    wait_for(&mut h, "Signed release t300-2.5.0 with key");
    h.get_by_label("Hashed 3.0 MiB of 3.0 MiB");
    assert_eq!(
        h.state().releases.hashed_bytes,
        Some((artifact_bytes as u64, artifact_bytes as u64))
    );
    h.get_by_label("Stored in the cache.");
    let manifest = dir.path().join("t300-2.5.0.manifest.json");
    // The file verifies as `convoy release verify` checks it, artifact included.
    let trust = convoy::keys::load_trust(&key_dir).unwrap();
    let bytes = std::fs::read(&manifest).unwrap();
    let verified = convoy_core::manifest::verify(&bytes, &trust, NOW).unwrap();
    assert_eq!(verified.key_id(), &key_id);
    assert_eq!(
        verified.spec().artifacts[0].length_bytes,
        artifact_bytes as u64
    );
    verified
        .check_artifact(&convoy::ops::releases::hash_file(&artifact).unwrap())
        .unwrap();
    // Listed from the cache as valid.
    wait_for_label(&mut h, "valid");
    h.get_by_label("cache");
    assert_eq!(
        convoy::store::releases::stored_manifests(&convoy::store::Store::open(&cache).unwrap())
            .unwrap()
            .len(),
        1
    );
    // A copy with its counter raised after signing shows as tampered and is never offered.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    doc["signed"]["release"]["counter"] = 99.into();
    std::fs::write(
        manifests.join("raised.json"),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    fill(
        &mut h,
        "Manifest directory",
        &manifests.display().to_string(),
    );
    h.get_by_label("Check manifests").click();
    wait_for_label(&mut h, "tampered");
    h.get_by_label("valid");
    h.get_by_label_contains("is tampered and is never offered: tampered: signature by key");
    let rows = match &h.state().releases.list {
        Some(Ok(rows)) => rows.clone(),
        other => panic!("no list: {other:?}"),
    };
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.counter.as_str(), r.state.label()))
        .collect();
    assert_eq!(states, [("25", "valid"), ("99", "tampered")]);
}

#[test]
fn a_finding_that_cannot_be_saved_says_why_and_the_score_stays() {
    // The fixture's cache file does not exist.
    let (mut h, _feed, _) = harness();
    h.get_by_label("Findings").click();
    settle(&mut h);
    wait_for(
        &mut h,
        "Could not read the findings: opening the fleet cache fixture.db",
    );
    fill(&mut h, "Finding id", "BUG-7");
    fill(&mut h, "Affected models", "K20");
    wait_for(&mut h, "Recommendation:");
    h.get_by_label("Save finding").click();
    wait_for(&mut h, "Could not save: opening the fleet cache fixture.db");
    h.get_by_label_contains("Recommendation:");
    assert!(!std::path::Path::new("fixture.db").exists());
}

/// The fixture release `t300-fw-2.5.0`, signed with a key made in `trust` (a key directory is a
/// trust directory) and stored in `cache` as the releases view stores it; returns the release
/// and the manifest file's bytes.
fn signed_release(
    cache: &std::path::Path,
    trust: &std::path::Path,
) -> (convoy_core::release::ReleaseSpec, Vec<u8>) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/releases/t300-fw-2.5.0.json");
    let spec: convoy_core::release::ReleaseSpec =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    convoy::keys::generate(trust, "gui test passphrase").unwrap();
    let manifest =
        convoy::ops::releases::sign_release(spec.clone(), None, trust, "gui test passphrase", NOW)
            .unwrap();
    let store = convoy::store::Store::open(cache).unwrap();
    convoy::store::releases::record_release(&store, &manifest, "test", NOW).unwrap();
    (spec, manifest.to_json_bytes())
}

fn fixture_catalog() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases/catalog.json")
}

/// What `convoy plan` computes for the same inputs, to compare the view with.
fn core_plan(
    fleet: &Fleet,
    release: &convoy_core::release::ReleaseSpec,
    catalog: &[convoy_core::release::ReleaseSpec],
    policy: &convoy_core::plan::PlanningPolicy,
) -> convoy_core::plan::Plan {
    convoy_core::plan::plan(&convoy_core::plan::PlanInput {
        fleet,
        release,
        catalog,
        now: NOW,
        seed: 1,
        policy,
    })
    .unwrap()
}

/// Moves the pointer onto the widget named `label`, then clicks it: as a user's pointer would,
/// it leaves the tooltip of the button clicked before, which may cover the next one.
fn click(h: &mut Harness<'static, ConsoleApp>, label: &str) {
    h.get_by_label(label).hover();
    h.run_steps(1);
    h.get_by_label(label).click();
}

#[test]
fn a_plan_is_walked_from_a_verified_release_to_an_edited_wave_saved_and_exported() {
    use convoy::gui::planner::status_label;
    use convoy_core::plan::{PlanningPolicy, Status};
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    // Tall enough that the whole plan is laid out on screen and every button can be clicked.
    let (mut h, cache) = cache_harness_sized(dir.path(), &fleet, 4000.0);
    // The planner looks for trust/ beside the cache, as `convoy rollout run` does.
    let (release, bytes) = signed_release(&cache, &dir.path().join("trust"));
    // A copy with its counter raised after signing is listed but cannot be planned.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    doc["signed"]["release"]["counter"] = 99.into();
    std::fs::write(
        manifests.join("raised.json"),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();

    click(&mut h, "Planner");
    settle(&mut h);
    h.get_by_label_contains(
        "Nothing is dispatched from here: save the plan and request it in Approvals",
    );
    wait_for_label(&mut h, &format!("Plan {}", release.id));
    fill(
        &mut h,
        "Manifest directory",
        &manifests.display().to_string(),
    );
    click(&mut h, "Check releases");
    wait_for_label(&mut h, "tampered");
    h.get_by_label_contains("cannot be planned: tampered: signature by key");
    assert_eq!(
        h.query_all_by_label_contains("Plan t300-fw-2.5.0").count(),
        1
    );

    // Plan the valid one with the CLI's defaults: no catalog, the built-in policy.
    click(&mut h, &format!("Plan {}", release.id));
    wait_for(&mut h, "Canary: ");
    let expected = core_plan(&fleet, &release, &[], &PlanningPolicy::default());
    for c in &expected.eligibility.by_status {
        assert!(
            h.query_all_by_label(status_label(c.status)).count() >= 1,
            "{:?}",
            c.status
        );
    }
    let k = &expected.canary;
    h.get_by_label_contains(&format!(
        "Canary: {} of {} asked, from {} candidates",
        k.devices.len(),
        k.target_size,
        k.candidates
    ));
    // The coverage table: every meaningful stratum with its verdict, and the flag.
    let poor = k
        .strata
        .iter()
        .filter(|s| {
            matches!(
                s.coverage,
                convoy_core::plan::Coverage::Missing(_)
                    | convoy_core::plan::Coverage::BelowFloor(_)
            )
        })
        .count();
    assert!(
        poor > 0,
        "the synthetic fleet's old bootloaders cannot be in the canary"
    );
    h.get_by_label_contains(&format!("Coverage is poor: {poor} of"));
    for s in &k.strata {
        if let convoy_core::plan::Coverage::Missing(why) = &s.coverage {
            assert!(
                h.query_all_by_label(&format!("missing: {why}")).count() >= 1,
                "{why}"
            );
        }
    }
    for w in &expected.waves {
        h.get_by_label(&format!("Show wave {} on the map", w.name));
    }
    h.get_by_label("Plan timeline");
    h.get_by_label("Gates (read-only)");
    h.get_by_label("crash");

    // With the catalog, devices on old bootloaders get their prerequisite chain.
    fill(
        &mut h,
        "Catalog files",
        &fixture_catalog().display().to_string(),
    );
    click(&mut h, "Load catalog and policy");
    wait_for(&mut h, "5 catalog release(s) from");
    let catalog = convoy::ops::plans::read_catalog(&fixture_catalog()).unwrap();
    let with_catalog = core_plan(&fleet, &release, &catalog, &PlanningPolicy::default());
    assert!(!with_catalog.chains.is_empty());
    let chain = &with_catalog.chains[0];
    wait_for(
        &mut h,
        &format!(
            "{} devices: {} -> {}",
            chain.devices,
            chain.releases.join(" -> "),
            release.id
        ),
    );

    // A reason's devices become a cohort on the map.
    let never = with_catalog
        .eligibility
        .by_reason
        .iter()
        .find(|r| r.status == Status::Never)
        .unwrap();
    click(&mut h, &format!("Show on map: {}", never.reason));
    settle(&mut h);
    assert_eq!(h.state().state.view, convoy::gui::View::Map);
    let cohort = h.state().cohorts.last().unwrap();
    assert_eq!(cohort.devices.len(), never.devices);
    assert_eq!(cohort.name, format!("never: {}", never.reason));
    // Ctrl+8 goes back to the planner, which kept its plan.
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Num8);
    settle(&mut h);
    assert_eq!(h.state().state.view, convoy::gui::View::Planner);

    // Edit a wave: cap the 10% wave at 7 devices and soak it 72 hours; the plan follows.
    fill(&mut h, "fleet-10pct max devices", "7");
    fill(&mut h, "fleet-10pct soak hours", "72");
    let mut policy = PlanningPolicy::default();
    policy.waves[2].max_devices = Some(7);
    policy.waves[2].soak_secs = Some(72 * 3600);
    let edited = core_plan(&fleet, &release, &catalog, &policy);
    assert_eq!(edited.waves[2].size, 7);
    assert_eq!(edited.waves[2].soak_secs, 72 * 3600);
    for _ in 0..300 {
        if h.state().planner.plan_is_current() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    assert!(h.state().planner.plan_is_current());
    assert!(h.query_all_by_label("3d").count() >= 1);
    {
        let app = h.state();
        let Some((_, Ok(planned))) = &app.planner.planned else {
            panic!("no plan");
        };
        assert_eq!(planned.plan.waves, edited.waves);
        assert_eq!(planned.plan.eligibility, edited.eligibility);
    }
    // A bad edit names its field and keeps the last plan.
    fill(&mut h, "Canary size", "50x");
    h.get_by_label_contains("Not planned: Canary size: must be a whole number");
    h.key_press(Key::Backspace);
    settle(&mut h);
    assert!(h.query_by_label_contains("Not planned").is_none());

    // The canary on the map.
    click(&mut h, "Show the canary on the map");
    settle(&mut h);
    assert_eq!(
        h.state().cohorts.last().unwrap().devices,
        edited.canary.devices
    );
    click(&mut h, "Planner");
    settle(&mut h);

    // Saved in the cache with an audit entry; nothing dispatched.
    click(&mut h, "Save plan");
    let plan_id = convoy::gui::planner::plan_id(&release.id, NOW);
    wait_for(&mut h, &format!("Saved plan {plan_id} in the cache"));
    let store = convoy::store::Store::open(&cache).unwrap();
    let stored = convoy::store::plans::stored_plan(&store, &plan_id)
        .unwrap()
        .unwrap();
    let audit = store.audit_entries(None).unwrap();
    assert_eq!(audit.last().unwrap().action, "plan.save");
    assert!(store.verify_audit().unwrap().problem.is_none());
    assert_eq!(store.outbox_depth().unwrap(), 0);

    // Exported as the file `convoy rollout run --plan` reads. No portal here: Browse… says so.
    click(&mut h, "Browse…");
    wait_for(&mut h, "No file chosen");
    let file = dir.path().join("plan.json");
    fill(&mut h, "Plan file", &file.display().to_string());
    click(&mut h, "Export plan file");
    wait_for(&mut h, &format!("Wrote {}", file.display()));
    let (waves, gates) = convoy::cmd::rollout::read_plan(&file).unwrap();
    assert_eq!(waves, edited.rollout_waves(&fleet));
    assert_eq!(gates, Some(convoy_core::gates::GatePolicy::default()));
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(exported, stored);
}

/// The planner's snapshot image: the fixture release planned with the fixture catalog, on the
/// fixture fleet (its own test, so that the main screens' cache holds no release).
#[test]
fn snapshots_of_the_planner() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("snapshot.db");
    convoy::store::Store::open(&cache)
        .unwrap()
        .replace_fleet(&fleet, None)
        .unwrap();
    let (release, _) = signed_release(&cache, &dir.path().join("trust"));
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1280.0, 3010.0]);
    settle(&mut h);
    h.state_mut()
        .send(convoy::gui::UiCommand::Show(convoy::gui::View::Planner));
    settle(&mut h);
    wait_for_label(&mut h, &format!("Plan {}", release.id));
    // Relative to the package directory, where cargo runs tests: the same text on every machine.
    h.state_mut().planner.catalog = "../fixtures/releases/catalog.json".into();
    h.get_by_label("Load catalog and policy").click();
    wait_for(&mut h, "catalog release(s) from");
    h.get_by_label(&format!("Plan {}", release.id)).click();
    wait_for(&mut h, "Canary: ");
    for _ in 0..300 {
        if h.state().planner.plan_is_current() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    assert!(
        h.state().planner.plan_is_current(),
        "the plan never caught up with the form"
    );
    // Temporary paths would change the image from run to run.
    h.state_mut().planner.trust_dir = "trust".into();
    // The pointer rests on a plain label, so no button shows hovered.
    h.get_by_label("Eligibility").hover();
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("planner");
}

/// The war room plots the shown rollout's cohort health against its baseline from the
/// engine's replayable log: a release that crashes twenty times as often, stopped by a gate.
#[test]
fn the_war_room_plots_cohort_health_against_baseline_from_the_engine_log() {
    use convoy_core::rollout::sim::FaultKind;
    use egui_kittest::kittest::NodeT as _;
    let fleet = fixture();
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("health.db");
    let scenario = GateStop {
        rollout_id: "ro-crashy",
        release_id: "t300-2.6.0",
        device_ids: ids,
        start: Timestamp::from_secs(NOW.secs() - 20 * 86_400),
        fault: FaultKind::CrashRateTimes(20.0),
        telemetry_every_secs: 900,
        run_secs: 15 * 86_400,
    };
    write_gate_stop(&cache, &fleet, scenario);
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1400.0, 900.0]);
    settle(&mut h);
    h.key_press(Key::F11);
    settle(&mut h);
    wait_for_label(&mut h, "ro-crashy");
    h.get_by_label("Cohort health against baseline");
    let node = h.get_by_label_contains("crash: updated ");
    let node = node.accesskit_node();
    let line = node.label().or_else(|| node.value()).unwrap_or_default();
    assert!(
        line.contains("per 1,000 device-hours · tolerated ×"),
        "{line}"
    );
    // The updated cohort is far above what the gate tolerates, as the gate found.
    let number = |after: &str| -> f64 {
        line.split(after)
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(number("updated ") > 1.5 * number("· baseline "), "{line}");
    h.get_by_label("crash health plot");
    h.get_by_label("reconnect_failure health plot");
    let stop = h.get_by_label_contains("last stop: ");
    let stop = stop.accesskit_node();
    let stop = stop.label().or_else(|| stop.value()).unwrap_or_default();
    let at: f64 = stop
        .rsplit(" at ")
        .next()
        .unwrap()
        .trim_end_matches(" h")
        .parse()
        .unwrap();
    assert!(at > 0.0, "the stop came after the canary reported: {stop}");
    // The load's toast may or may not have gone by now: not part of the picture.
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("war_room_health");
    assert!(
        h.query_by_role(egui::Role::Button).is_none(),
        "still read-only"
    );
}

/// Issue 7: an MBTiles file the user opens from the map's toolbar (typed here: the test
/// machine has no file dialog) is drawn over the basemap; a file that is not MBTiles is refused
/// in words and the current tiles stay.
#[test]
fn an_mbtiles_file_opened_from_the_map_toolbar_is_drawn_over_the_basemap() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("fixture.mbtiles");
    fixture_mbtiles(&good);
    let bad = dir.path().join("notes.mbtiles");
    std::fs::write(&bad, "not a database").unwrap();
    let (mut h, _feed, _) = harness();
    h.state_mut().send(convoy::gui::UiCommand::FocusMap {
        lat: 50.0,
        lon: 8.0,
        zoom: 3.0,
    });
    settle(&mut h);
    let field = MBTILES_FIELD;
    h.get_by_role_and_label(egui::Role::TextInput, field)
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(egui::Role::TextInput, field)
        .type_text(&bad.display().to_string());
    settle(&mut h);
    h.get_by_label("Use tiles").click();
    settle(&mut h);
    h.get_by_label_contains("Not used: ");
    assert!(
        h.state().map.source.is_none(),
        "nothing drawn from a bad file"
    );
    h.state_mut().map.mbtiles_path = good.display().to_string();
    settle(&mut h);
    h.get_by_label("Use tiles").click();
    settle(&mut h);
    for _ in 0..300 {
        if h.state()
            .map
            .source
            .as_ref()
            .is_some_and(|s| s.cached() > 2)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    assert!(
        h.state()
            .map
            .source
            .as_ref()
            .is_some_and(|s| s.cached() > 2),
        "the tiles were never read"
    );
    assert!(h.query_by_label_contains("Not used: ").is_none());
    let attribution = h.state().map.attribution();
    assert!(
        attribution.starts_with("Tiles: Fixture Maps"),
        "{attribution}"
    );
}

/// Field queries (issue 19): "T300 C" once matched every "cellular" device; a field query
/// names exactly what it means, and a query that does not read says why on screen.
#[test]
fn field_queries_narrow_the_table_and_a_bad_query_says_why() {
    let (mut h, _feed, fleet) = harness();
    h.get_by_label("Fleet table").click();
    settle(&mut h);
    let model = fleet.devices[0].model.clone();
    let rev = fleet.devices[0].hw_rev.clone();
    let want = fleet
        .devices
        .iter()
        .filter(|d| d.model == model && d.hw_rev == rev)
        .count();
    assert!(want > 0 && want < DEVICES);
    search(&mut h, &format!("model:{model} hw_rev:{rev}"));
    h.get_by_label(&format!("{want} of {DEVICES} devices"));
    // The same two values as bare words: a one-letter revision matches whole values only.
    search_field(&h).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::A);
    search_field(&h).type_text(&format!("{model} {rev}"));
    settle(&mut h);
    assert_eq!(h.state().state.filter.text, format!("{model} {rev}"));
    h.get_by_label(&format!("{want} of {DEVICES} devices"));
    // A comparison that is not a version: nothing is shown, and the bar says which term.
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::A);
    search_field(&h).type_text("firmware:<two");
    settle(&mut h);
    assert_eq!(h.state().state.filter.text, "firmware:<two");
    h.get_by_label_contains("Search: `firmware:<two`: `two` is not a version");
    h.get_by_label(&format!("0 of {DEVICES} devices"));
}

/// The console delivers its desktop channel's alerts (issue 23): a gate stop written to its
/// cache by an engine shows as a notification, and the status bar says the channel is well.
#[test]
fn a_gate_stop_in_the_cache_shows_as_a_desktop_alert_and_the_channel_s_health() {
    use convoy::alerts::AlertsConfig;
    use convoy::gui::alerts::ConsoleAlerts;
    use convoy::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cache.db");
    let mut store = Store::open(&db).unwrap();
    let config = AlertsConfig::parse(
        "[[channel]]\nname = \"desk\"\nkind = \"desktop\"\n",
        dir.path(),
    )
    .unwrap();
    let (mut backend, _feed) = Backend::fixture(fixture(), db.clone());
    backend.alerts = Some(ConsoleAlerts::start(db, config).unwrap());
    let mut h = common::console(backend, [1400.0, 900.0]);
    // The first pass starts at the cache's present.
    wait_for(&mut h, "Alerts: ok, 0 waiting");
    store
        .append_event(
            "r1",
            NOW,
            "rollout.created",
            "alice",
            &serde_json::json!({}),
        )
        .unwrap();
    store
        .append_event(
            "r1",
            NOW,
            "gate.decision",
            "gate",
            &serde_json::json!({"wave": "canary", "outcome": "pause", "report": {"findings": [
                {"metric": "crash", "stratum": "T300/C", "status": "fail", "observed": 650.0,
                 "baseline": 0.9, "p_value": 4.9e-16, "sample": 5,
                 "counts": {"updated_events": 13, "updated_device_hours": 20.0,
                            "baseline_events": 3, "baseline_device_hours": 3300.0}}]}}),
        )
        .unwrap();
    wait_for(
        &mut h,
        "Rollout r1 paused by a health gate in wave canary: 13 crashes on 5 T300/C devices",
    );
    wait_for(&mut h, "Alerts: ok, 0 waiting");
    let sent = store.alert_health().unwrap();
    assert_eq!((sent[0].channel.as_str(), sent[0].sent), ("desk", 1));
}

/// Issue 19: the default map left part of the fleet off-screen; with no saved view it opens
/// fitted to the fleet.
#[test]
fn the_map_opens_fitted_to_the_fleet() {
    let (mut h, _feed, _fleet) = harness();
    settle(&mut h);
    let (center, zoom) = h.state().map.view();
    assert!(center.is_some(), "the map was moved to the fleet");
    assert!(zoom < 3.0, "the whole fleet spans continents: zoom {zoom}");
}

/// Whether the console asked for full screen (`on`) in the frames it runs, up to `frames`.
fn asks_fullscreen(h: &mut Harness<'static, ConsoleApp>, on: bool, frames: usize) -> bool {
    for _ in 0..frames {
        h.run_steps(1);
        let asked = h.output().viewport_output.values().any(|v| {
            v.commands
                .iter()
                .any(|c| *c == egui::ViewportCommand::Fullscreen(on))
        });
        if asked {
            return true;
        }
    }
    false
}

/// Issue 19: the war room is a wall. F11 makes the window full screen (and Esc leaves it);
/// at 1920x1080 and 3840x2160 the state is on a colour band at several percent of the screen's
/// height, every state tile (with "reverted") is on screen, and the gate's evidence is said in
/// plain words before its statistics. Snapshots for the README.
#[test]
fn the_war_room_fills_1080p_and_4k_and_says_the_evidence_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wall.db");
    write_rollouts(&cache);
    let mut snapshots = egui_kittest::SnapshotResults::new();
    for (name, size) in [
        ("war_room_1080p", [1920.0, 1080.0]),
        ("war_room_4k", [3840.0, 2160.0]),
    ] {
        let (backend, _feed) = Backend::fixture(fixture(), cache.clone());
        let mut h = common::console(backend, size);
        settle(&mut h);
        h.key_press(Key::F11);
        assert!(asks_fullscreen(&mut h, true, 4), "F11 asks for full screen");
        wait_for_label(&mut h, "ro-t300-canary");
        let height = size[1];
        let headline = h.get_by_label("PAUSED").rect();
        assert!(
            headline.height() >= 0.05 * height,
            "{name}: the state is {} points high on a {height}-point screen",
            headline.height()
        );
        // Every tile is on screen, the one that matters included.
        for tile in ["no report yet", "confirmed", "failed", "reverted"] {
            let r = h.get_by_label(tile).rect();
            assert!(
                r.max.x <= size[0] && r.max.y <= size[1] && r.min.x >= 0.0,
                "{name}: the {tile} tile at {r:?} is off screen"
            );
        }
        // Plain words first, the statistics after.
        let plain = h
            .get_by_label_contains("4 boot failures on 10 T300 rev C devices")
            .rect();
        let stats = h
            .get_by_label_contains("Statistics: boot_failure (stratum T300/C)")
            .rect();
        assert!(
            plain.max.y <= stats.min.y,
            "the words come before the statistics"
        );
        h.get_by_label(
            "4 boot failures on 10 T300 rev C devices in 96.7 min since wave canary started; normal is about 0",
        );
        h.state_mut().dismiss_toasts();
        settle(&mut h);
        h.snapshot(name);
        h.key_press(Key::Escape);
        assert!(
            asks_fullscreen(&mut h, false, 4),
            "leaving leaves full screen"
        );
        h.get_by_label("Fleet map");
        snapshots.extend_harness(&mut h);
    }
}

/// In the console's default window (1440x900), "reverted" is on screen too.
#[test]
fn the_reverted_tile_is_on_screen_in_the_default_window() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wall.db");
    write_rollouts(&cache);
    let (backend, _feed) = Backend::fixture(fixture(), cache);
    let mut h = common::console(backend, [1440.0, 900.0]);
    settle(&mut h);
    h.key_press(Key::F11);
    settle(&mut h);
    wait_for_label(&mut h, "ro-t300-canary");
    let r = h.get_by_label("reverted").rect();
    assert!(r.max.x <= 1440.0 && r.max.y <= 900.0, "{r:?}");
}

/// With only rollouts that ended long ago, the wall says there is nothing to watch, and which
/// was the last.
#[test]
fn the_war_room_says_when_there_is_nothing_to_watch() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("quiet.db");
    {
        let mut store = convoy::store::Store::open(&cache).unwrap();
        for (secs_ago, kind, payload) in [
            (
                90_000,
                "rollout.created",
                json!({"release": "hu-3.1.0", "requested_by": "alice", "path": "standard",
                       "waves": [{"name": "all", "devices": 30}]}),
            ),
            (80_000, "rollout.completed", json!("completed")),
        ] {
            store
                .append_event(
                    "ro-old-done",
                    Timestamp::from_secs(NOW.secs() - secs_ago),
                    kind,
                    "timer",
                    &payload,
                )
                .unwrap();
        }
    }
    let (backend, _feed) = Backend::fixture(fixture(), cache);
    let mut h = common::console(backend, [1920.0, 1080.0]);
    settle(&mut h);
    h.key_press(Key::F11);
    settle(&mut h);
    wait_for_label(&mut h, "NOTHING TO WATCH");
    h.get_by_label_contains(
        "No rollout is running or waiting for a decision. Last: ro-old-done completed",
    );
    assert!(h.query_by_label("Waves").is_none());
}

/// Issue 19: a first-run user who signs a release with their own key sees "untrusted key",
/// and can trust the key after confirming its id and fingerprint; the key is written into the
/// trust directory and the release checked again, valid.
#[test]
fn an_untrusted_key_is_trusted_after_its_fingerprint_is_confirmed() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, cache) = cache_harness(dir.path(), &fleet);
    // The trust directory beside the cache trusts another key (as the demo's does).
    let trust = convoy::ops::settings::default_trust_dir(&cache);
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    convoy::keys::write_public(&trust, &other).unwrap();
    let own = dir.path().join("my-key");
    let (spec, _) = signed_release(&cache, &own);
    let own_id = convoy_core::manifest::KeyId::of(&convoy::keys::load_public(&own).unwrap());
    // The planner refuses it, and points to where the key is trusted.
    h.get_by_label("Planner").click();
    settle(&mut h);
    wait_for_label(&mut h, "Trust its key in Releases…");
    click(&mut h, "Trust its key in Releases…");
    settle(&mut h);
    assert_eq!(h.state().state.view, convoy::gui::View::Releases);
    wait_for_label(&mut h, "untrusted key");
    assert_eq!(
        std::path::Path::new(&h.state().releases.trust_dir),
        trust.as_path()
    );
    h.get_by_label("Trust this key…").click();
    settle(&mut h);
    fill(&mut h, "Key directory to trust", &own.display().to_string());
    h.get_by_label("Read key").click();
    wait_for(&mut h, "Fingerprint (Ed25519 public key): ");
    h.get_by_label(&format!("Key id: {own_id}"));
    // Nothing is written before the confirmation.
    assert!(
        convoy::keys::load_trust(&trust)
            .unwrap()
            .key(&own_id)
            .is_none()
    );
    h.get_by_label("Trust this key").click();
    wait_for(&mut h, "now also trusts key");
    wait_for_label(&mut h, "valid");
    assert!(h.query_by_label("untrusted key").is_none());
    // Written through ops into the trust directory: the planner and the engine see it too.
    let trusted = convoy::keys::load_trust(&trust).unwrap();
    assert!(
        trusted.key(&own_id).is_some()
            && trusted
                .key(&convoy_core::manifest::KeyId::of(&other))
                .is_some()
    );
    let rows = convoy::gui::releases::list_with_releases(
        &convoy::gui::releases::ListSources {
            cache: Some(cache.clone()),
            trust_dir: Some(trust.clone()),
            manifest_dir: None,
        },
        NOW,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1.as_ref().map(|r| r.id.clone()),
        Some(spec.id.clone())
    );
    // The planner, checking again, may plan it now.
    h.get_by_label("Planner").click();
    settle(&mut h);
    h.get_by_label("Check releases").click();
    wait_for_label(&mut h, &format!("Plan {}", spec.id));
}
