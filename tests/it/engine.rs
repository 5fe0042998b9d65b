//! The headless engine end to end: `convoy rollout run` against `convoy sim` over a real broker
//! on 127.0.0.1 (the embedded broker as its own `convoy broker` process, and Mosquitto), on a
//! real cache, with a really signed release.
//!
//! Simulated time runs `SCALE` times faster than wall time in both the engine and the simulated
//! fleet, so a rollout of several waves with hour-long soaks takes seconds. The tests run one at
//! a time (a rollout and a fleet of simulated devices keep two cores busy).

use convoy_e2e::{
    Mosquitto, Proc, SignedWorkspace, WorkspaceSpec, convoy_bin, convoy_ok, free_port, wait_for,
    wait_for_explained, wait_listening,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Simulated seconds per wall second.
const SCALE: &str = "2400";
/// One rollout at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A fleet in a cache, a key, a trust directory and a signed release for the T300.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(devices: usize) -> Self {
        let ws = SignedWorkspace::new(&WorkspaceSpec {
            devices,
            seed: 7,
            artifact_bytes: 2_000_000,
            version: "2.5.0",
            counter: 50,
            hardware: "T300",
            requires: &["bootloader>=1.6"],
        });
        let s = Self { dir: ws.dir };
        let p = |name: &str| s.path(name);
        // Soaks of one simulated hour, short holds: the gates' logic, on a test's time budget.
        std::fs::write(
            p("policy.json"),
            r#"{"version": 1,
                "planning": {"operating_cycle_secs": {}, "default_operating_cycle_secs": 3600},
                "gates": {"hold_extension_secs": 1800}}"#,
        )
        .expect("policy");
        std::fs::write(
            p("faults.json"),
            r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        )
        .expect("faults");
        s
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Starts the simulated fleet (killed on drop).
    fn sim(&self, url: &str, faults: bool) -> Proc {
        let mut args = vec![
            "sim".to_owned(),
            "--broker".into(),
            url.into(),
            "--fleet".into(),
            self.path("fleet.json"),
            "--trust".into(),
            self.path("trust"),
            "--time-scale".into(),
            SCALE.into(),
            "--duration-secs".into(),
            "300".into(),
        ];
        if faults {
            args.extend(["--faults".into(), self.path("faults.json")]);
        }
        Proc::spawn(&args, self.path("sim.log"))
    }

    /// `convoy rollout run` on this setup's files against `url`, plus `extra` arguments.
    fn rollout_command(&self, url: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(convoy_bin());
        cmd.args([
            "rollout",
            "run",
            "--db",
            &self.path("cache.db"),
            "--broker",
            url,
            "--release",
            &self.path("release.json"),
            "--trust",
            &self.path("trust"),
            "--policy",
            &self.path("policy.json"),
            "--time-scale",
            SCALE,
            "--rollout-id",
            "r1",
            "--operator",
            "alice",
            "--max-wall-secs",
            "150",
            "--json",
        ])
        .args(extra);
        cmd
    }

    /// Runs `convoy rollout run` to its end: (exit code, JSON report).
    fn run(&self, url: &str, extra: &[&str]) -> (i32, Value) {
        let artifact = self.path("fw.img");
        let mut args = vec!["--artifact", artifact.as_str()];
        args.extend_from_slice(extra);
        let out = self
            .rollout_command(url, &args)
            .output()
            .expect("running convoy rollout run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); status {}; stderr:\n{stderr}\nsim log:\n{}",
                out.status,
                std::fs::read_to_string(self.path("sim.log")).unwrap_or_default()
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// The fleet as first generated: id -> firmware.
    fn original_firmware(&self) -> BTreeMap<String, String> {
        firmware_by_id(&std::fs::read_to_string(self.path("fleet.json")).expect("fleet"))
    }

    /// The cache's fleet now, exported: id -> firmware.
    fn cached_firmware(&self) -> BTreeMap<String, String> {
        let out = self.path("export.json");
        convoy_ok(&[
            "fleet",
            "export",
            "--format",
            "json",
            "--db",
            &self.path("cache.db"),
            "--out",
            &out,
        ]);
        firmware_by_id(&std::fs::read_to_string(out).expect("export"))
    }

    /// Devices the rollout offered the release to (from the cache's device histories).
    fn offered(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.path("cache.db")).expect("open cache");
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT device_id FROM device_events
                 WHERE rollout_id = 'r1' AND kind = 'offer' ORDER BY device_id",
            )
            .expect("query");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<Vec<String>, _>>()
            .expect("ids")
    }
}

fn firmware_by_id(json: &str) -> BTreeMap<String, String> {
    let v: Value = serde_json::from_str(json).expect("fleet JSON");
    let devices = v
        .get("devices")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .expect("devices array");
    devices
        .iter()
        .map(|d| {
            (
                d["id"].as_str().expect("id").to_owned(),
                d["components"]["firmware"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// The embedded broker as its own process (`convoy broker`), so a test can stop and restart it.
struct EmbeddedBroker {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
}

impl EmbeddedBroker {
    fn start(dir: &Path, port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let proc = Proc::spawn(
            &[
                "broker".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
            dir.join("broker.log"),
        );
        wait_listening(port, "the embedded broker", Duration::from_secs(20));
        Self {
            proc: Some(proc),
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

fn waves(report: &Value) -> Vec<&Value> {
    report["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .collect::<Vec<_>>()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// A good release reaches every device it is offered to, wave by wave, and the cache shows the
/// version each device now runs.
fn good_release_completes(url: &str, setup: &Setup) {
    let _sim = setup.sim(url, false);
    let (code, report) = setup.run(url, &[]);
    assert_eq!(report["final_state"], "completed", "{}", brief(&report));
    assert_eq!(code, 0);
    let ws = waves(&report);
    assert!(
        ws.len() >= 3,
        "canary, then wider waves: {}",
        brief(&report)
    );
    assert_eq!(ws[0]["name"], "canary");
    let mut confirmed = 0;
    for w in &ws {
        assert_eq!(
            n(w, "offered"),
            n(w, "devices"),
            "every device offered: {w}"
        );
        assert_eq!(
            n(w, "confirmed") + n(w, "failed") + n(w, "reverted"),
            n(w, "offered"),
            "every offered device settled: {w}"
        );
        confirmed += n(w, "confirmed");
    }
    let total: u64 = ws.iter().map(|w| n(w, "devices")).sum();
    assert!(
        confirmed * 100 >= total * 95,
        "a good release is confirmed on nearly every device: {confirmed} of {total}"
    );
    assert_eq!(report["unsettled"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["change_path"], "single_operator");
    assert_eq!(report["approvals"], serde_json::json!(["alice"]));

    // The cache reflects what the devices report.
    let now = setup.cached_firmware();
    let on_new = now.values().filter(|v| *v == "2.5.0").count() as u64;
    assert_eq!(on_new, confirmed, "devices on 2.5.0 in the cache");
    // The audit trail holds the decisions, and its chain verifies.
    let audit = convoy_ok(&["audit", "log", "--db", &setup.path("cache.db"), "--json"]);
    assert!(audit.contains("rollout.offer") && audit.contains("rollout.created"));
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
    let timeline = convoy_ok(&[
        "rollout",
        "timeline",
        "--rollout",
        "r1",
        "--format",
        "csv",
        "--db",
        &setup.path("cache.db"),
    ]);
    assert!(timeline.contains("rollout.completed"), "{timeline}");
}

/// A release that crash-loops the rare hardware revision C is stopped inside the canary, the
/// canary is rolled back, and no later wave is offered anything.
fn crash_loop_is_stopped_in_the_canary(url: &str, setup: &Setup, extra: &[&str]) {
    let _sim = setup.sim(url, true);
    let (code, report) = setup.run(url, extra);
    assert_eq!(report["final_state"], "paused", "{}", brief(&report));
    assert_eq!(code, 3, "stopped by a gate");
    assert_eq!(
        report["phase"]["paused"]["rolled_back"],
        true,
        "{}",
        brief(&report)
    );
    let ws = waves(&report);
    assert_eq!(ws[0]["name"], "canary");
    for w in &ws[1..] {
        assert_eq!(n(w, "offered"), 0, "no later wave started: {w}");
    }
    let decisions = report["gate_decisions"].as_array().expect("decisions");
    // Holds (a soak extended for want of a sample) may come first; the stop is what counts.
    let first = decisions
        .iter()
        .find(|d| d["outcome"] != "hold")
        .expect("a gate stopped the rollout");
    assert_eq!(first["wave"], "canary");
    assert_eq!(first["outcome"], "roll_back_wave");
    let failing: Vec<&Value> = first["evidence"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert!(
        failing.iter().any(|f| f["stratum"] == "T300/C"),
        "the rare revision's stratum is named in the evidence: {first:#}"
    );
    assert_eq!(n(ws[0], "confirmed"), 0, "nobody kept the bad release");

    // Every device that was offered it is back on the version it had.
    let offered = setup.offered();
    assert!(!offered.is_empty());
    let before = setup.original_firmware();
    let after = setup.cached_firmware();
    for id in &offered {
        assert_eq!(
            after.get(id),
            before.get(id),
            "{id} is back on its previous version"
        );
    }
    assert_eq!(
        report["unsettled"].as_array().map(Vec::len),
        Some(0),
        "{}",
        brief(&report)
    );

    // The communication drafts are written from this record.
    let db = setup.path("cache.db");
    let comms = |audience: &str| {
        convoy_ok(&[
            "rollout",
            "comms",
            "--db",
            &db,
            "--rollout",
            "r1",
            "--audience",
            audience,
        ])
    };
    let internal = comms("internal");
    assert!(
        internal.contains("(stopped by a health gate)") && internal.contains("(stratum T300/C)"),
        "{internal}"
    );
    let regulator = comms("regulator");
    assert!(
        regulator.contains("automatic health gate in stage canary decided: roll back wave"),
        "{regulator}"
    );
    assert!(
        regulator.contains("devices of wave canary instructed to return to their previous version"),
        "{regulator}"
    );
    let customer = comms("customer");
    assert!(customer.contains("reversed it"), "{customer}");
    let support = comms("support");
    assert!(support.contains("Is it restarting by itself"), "{support}");
}

#[test]
fn a_good_release_completes_over_the_embedded_broker() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    good_release_completes(&broker.url(), &setup);
}

#[test]
fn a_good_release_completes_over_mosquitto() {
    let _turn = convoy_e2e::alone();
    if !Mosquitto::available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = Mosquitto::start(None);
    good_release_completes(&broker.url(), &setup);
}

#[test]
fn a_crash_looping_rare_revision_is_rolled_back_in_the_canary_over_the_embedded_broker() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    // Issue 23: the engine sends the gate's stop to the people on call, a signed webhook and an
    // e-mail to real servers on 127.0.0.1, before it exits.
    let receiver = crate::alerts::Receiver::start(convoy_e2e::free_port(), 0);
    let (smtp, ca) = crate::alerts::Smtp::start(setup.dir.path(), "convoy", "s3cret");
    let config = crate::alerts::write_config(setup.dir.path(), receiver.port(), &smtp, &ca);
    crash_loop_is_stopped_in_the_canary(
        &broker.url(),
        &setup,
        &["--alerts", config.to_str().expect("utf-8")],
    );
    let accepted = receiver.accepted();
    let stops: Vec<serde_json::Value> = accepted
        .iter()
        .map(|r| {
            crate::alerts::check_signature(r, "hook-key-1");
            serde_json::from_slice::<serde_json::Value>(&r.body).expect("JSON body")
        })
        .filter(|b| b["alert"]["kind"] == "gate_rolled_back")
        .collect();
    assert_eq!(
        stops.len(),
        1,
        "one alert for the gate's stop: {accepted:?}"
    );
    assert_eq!(stops[0]["alert"]["rollout_id"], "r1");
    assert!(
        stops[0]["alert"]["title"]
            .as_str()
            .is_some_and(|t| t.contains("rolled back by a health gate in wave canary")),
        "{}",
        stops[0]
    );
    assert!(
        smtp.messages()
            .iter()
            .any(|m| m.contains("rolled back by a health gate in wave canary")),
        "the e-mail went out"
    );
}

#[test]
fn a_crash_looping_rare_revision_is_rolled_back_in_the_canary_over_mosquitto() {
    let _turn = convoy_e2e::alone();
    if !Mosquitto::available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = Mosquitto::start(None);
    crash_loop_is_stopped_in_the_canary(&broker.url(), &setup, &[]);
}

impl EmbeddedBroker {
    fn stop(&mut self) {
        self.proc = None;
    }

    fn restart(&mut self) {
        let again = Self::start(&self.dir, Some(self.port));
        self.proc = again.proc;
    }
}

impl Setup {
    /// Starts `convoy rollout run` in the background; `finish` waits for its report.
    fn spawn_run(&self, url: &str) -> Child {
        self.rollout_command(url, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning convoy rollout run")
    }

    fn finish(child: Child) -> (i32, Value) {
        let out = child.wait_with_output().expect("waiting for the rollout");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); status {}; stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// Waits until the rollout has offered the release to some devices.
    fn wait_for_offers(&self) {
        wait_for(
            "the rollout to offer the release to a device",
            Duration::from_mins(1),
            || self.offered_count() > 0,
        );
    }

    /// Waits until a device has acknowledged its offer: the canary is in flight, with commands
    /// answered and others not yet, when the test stops the engine.
    fn wait_for_an_acknowledged_offer(&self) {
        wait_for(
            "a device to acknowledge its offer",
            Duration::from_mins(1),
            || {
                self.count("SELECT count(*) FROM outbox WHERE kind = 'offer' AND state = 'acked'")
                    > 0
            },
        );
    }

    fn offered_count(&self) -> usize {
        let Ok(conn) = rusqlite::Connection::open(self.path("cache.db")) else {
            return 0;
        };
        conn.query_row(
            "SELECT count(*) FROM device_events WHERE rollout_id = 'r1' AND kind = 'offer'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_or(0, |n| n as usize)
    }

    /// The history of every device the report left unsettled, for a failure message.
    fn unsettled_histories(&self, report: &Value) -> String {
        use std::fmt::Write as _;
        let Ok(conn) = rusqlite::Connection::open(self.path("cache.db")) else {
            return "(cache unreadable)".into();
        };
        let mut out = String::new();
        for u in report["unsettled"].as_array().into_iter().flatten() {
            let id = u["device_id"].as_str().unwrap_or_default();
            let row = conn
                .query_row(
                    "SELECT last_seen, battery_pct, power, active_slot FROM devices WHERE id = ?1",
                    [id],
                    |r| {
                        Ok(format!(
                            "last_seen {} battery {:?} power {} slot {}",
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?
                        ))
                    },
                )
                .unwrap_or_default();
            let _ = writeln!(out, "{id}: {row}");
            let Ok(mut stmt) = conn.prepare(
                "SELECT time, kind, payload FROM device_events WHERE device_id = ?1 ORDER BY seq",
            ) else {
                continue;
            };
            let rows = stmt.query_map([id], |r| {
                Ok(format!(
                    "  {} {} {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2).unwrap_or_default()
                ))
            });
            for row in rows.into_iter().flatten().flatten() {
                out.push_str(&row);
                out.push('\n');
            }
        }
        let log = std::fs::read_to_string(self.path("sim.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        out.push_str("sim.log (last lines):\n");
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// A failed assertion's account of a run: how it ended and why first (CI logs keep only the
/// start of a long message), then the whole report.
fn brief(report: &Value) -> String {
    let mut link = report["link"].clone();
    if let Some(l) = link.as_object_mut() {
        l.remove("rejected_by_device");
    }
    format!(
        "final state: {}\nphase: {}\ngate decisions: {}\nwaves: {}\nnotes: {}\nlink: {}\nwhole report:\n{report:#}",
        report["final_state"],
        report["phase"],
        report["gate_decisions"],
        report["waves"],
        report["notes"],
        link,
    )
}

/// How long the broker stays down in the restart tests: one simulated hour at `SCALE`, in which
/// devices miss heartbeats and the engine's reconnect backoff runs. The outage is the scenario
/// under test, not synchronisation: nothing is waited for (the engine sees the broker go at
/// once, its socket closed).
const OUTAGE: Duration = Duration::from_millis(1500);

/// What a rollout that lived through a broker restart must show.
fn check_survived_restart(setup: &Setup, code: i32, report: &Value) {
    assert_eq!(
        report["final_state"],
        "completed",
        "{}\nunsettled devices' histories:\n{}",
        brief(report),
        setup.unsettled_histories(report)
    );
    assert_eq!(code, 0);
    assert!(
        n(&report["link"], "disconnects") >= 1,
        "the engine saw the broker go: {}",
        brief(report)
    );
    let notes = report["notes"].to_string();
    assert!(notes.contains("reconnected"), "{notes}");
    assert_eq!(
        report["unsettled"].as_array().map(Vec::len),
        Some(0),
        "{}",
        brief(report)
    );
    for w in waves(report) {
        assert_eq!(
            n(w, "confirmed") + n(w, "failed") + n(w, "reverted"),
            n(w, "devices"),
            "every device accounted for: {w}"
        );
    }
}

#[test]
fn a_rollout_survives_a_restart_of_the_embedded_broker() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(300);
    let mut broker = EmbeddedBroker::start(setup.dir.path(), None);
    let _sim = setup.sim(&broker.url(), false);
    let run = setup.spawn_run(&broker.url());
    setup.wait_for_offers();
    broker.stop();
    std::thread::sleep(OUTAGE);
    broker.restart();
    let (code, report) = Setup::finish(run);
    check_survived_restart(&setup, code, &report);
}

#[test]
fn a_rollout_survives_a_restart_of_mosquitto() {
    let _turn = convoy_e2e::alone();
    if !Mosquitto::available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(300);
    let broker = Mosquitto::start(None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let run = setup.spawn_run(&url);
    setup.wait_for_offers();
    let port = broker.kill();
    std::thread::sleep(OUTAGE);
    let _broker = Mosquitto::start(Some(port));
    let (code, report) = Setup::finish(run);
    check_survived_restart(&setup, code, &report);
}

/// Publishes `count` malformed messages of every kind on device topics.
async fn flood(url: &str, count: usize) {
    use convoy::link::mqtt::{self, LinkConfig, Role};
    use convoy::link::protocol::Topics;
    // The flooder hears only its own end-of-flood probe, outside the engine's topics.
    let done = "e2e/flood/done";
    let (mut link, mut rx) = mqtt::spawn(
        &LinkConfig::new(url, "flooder"),
        Topics::default_prefix(),
        &Role::Filters(vec![done.to_owned()]),
    )
    .expect("flood link");
    link.wait_connected(Duration::from_secs(20))
        .await
        .expect("flooder connects");
    let big = vec![b'x'; 70 * 1024];
    for i in 0..count {
        let device = format!("CV{:07}", i % 300);
        let (topic, payload): (String, Vec<u8>) = match i % 7 {
            0 => (format!("convoy/v1/devices/{device}/status"), b"{not json".to_vec()),
            1 => (format!("convoy/v1/devices/{device}/telemetry"), big.clone()),
            2 => (
                format!("convoy/v1/devices/{device}/telemetry"),
                br#"{"v": 9, "device_id": "X", "ts": 1, "seq": 1, "event": {"kind": "heartbeat", "uptime_secs": 1}}"#.to_vec(),
            ),
            // Missing fields.
            3 => (
                format!("convoy/v1/devices/{device}/status"),
                br#"{"v": 1, "device_id": "CV9999999", "ts": 1}"#.to_vec(),
            ),
            4 => (format!("convoy/v1/devices/{device}/acks"), vec![0xff, 0xfe, 0x00]),
            5 => (
                format!("convoy/v1/devices/{device}/telemetry"),
                format!(r#"{{"v": 1, "device_id": "{device}", "ts": 1, "seq": 1, "event": {{"kind": "battery", "pct": 250}}}}"#).into_bytes(),
            ),
            _ => (format!("convoy/v1/devices/{device}/nonsense"), b"{}".to_vec()),
        };
        link.publish(topic, payload, false).await.expect("publish");
    }
    // Every message has left the client's queue and reached the broker before the link is
    // dropped: the broker hands back the probe published after them.
    convoy_e2e::hear_own_probe(&link, &mut rx, done, "the end of the flood").await;
}

#[test]
fn a_flood_of_malformed_messages_leaves_the_engine_running_and_the_cache_intact() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(300);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let run = setup.spawn_run(&url);
    setup.wait_for_offers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(flood(&url, 7_000));
    let (code, report) = Setup::finish(run);
    assert_eq!(report["final_state"], "completed", "{}", brief(&report));
    assert_eq!(code, 0);
    let rejected = &report["link"]["rejected"];
    let total: u64 = rejected
        .as_object()
        .expect("rejections by reason")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(
        total >= 5_000,
        "the malformed messages were counted: {rejected}"
    );
    for reason in [
        "malformed_json",
        "oversize",
        "unknown_version",
        "invalid_shape",
        "invalid_value",
        "not_utf8",
    ] {
        assert!(n(rejected, reason) > 0, "{reason} counted: {rejected}");
    }
    // The cache is intact: integrity, the audit chain, and every device still there.
    let conn = rusqlite::Connection::open(setup.path("cache.db")).expect("open cache");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let devices: i64 = conn
        .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
        .expect("count");
    assert_eq!(devices, 300);
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

impl Setup {
    /// The arguments `convoy rollout run` gets in these tests, without the command words.
    fn run_args(&self, url: &str) -> Vec<String> {
        let cmd = self.rollout_command(url, &["--artifact", &self.path("fw.img")]);
        cmd.get_args()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// One number from the cache.
    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.path("cache.db")).expect("open cache");
        conn.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    /// The rollout's timeline: (kind, cause) in order.
    fn timeline(&self) -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(self.path("cache.db")).expect("open cache");
        let mut stmt = conn
            .prepare("SELECT kind, cause FROM rollout_events WHERE rollout_id = 'r1' ORDER BY seq")
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("timeline")
    }

    /// Waits until the timeline holds an event of `kind`.
    fn wait_for_event(&self, kind: &str) {
        let seen = || {
            rusqlite::Connection::open(self.path("cache.db"))
                .ok()
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM rollout_events WHERE rollout_id = 'r1' AND kind = ?1",
                        [kind],
                        |r| r.get::<_, i64>(0),
                    )
                    .ok()
                })
                .unwrap_or(0)
                > 0
        };
        wait_for_explained(
            &format!("{kind} in the timeline"),
            Duration::from_mins(1),
            seen,
            || format!("The timeline: {:?}", self.timeline()),
        );
    }

    /// Devices offered the release more than once under different command ids.
    fn devices_with_two_offers(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM (SELECT device_id FROM outbox WHERE kind = 'offer'
             GROUP BY device_id HAVING count(DISTINCT id) > 1)",
        )
    }
}

/// An operator pauses a good release once the canary soaks; the engine holds (no wave is offered
/// while it is paused, long past the canary's soak), refuses an override without a reason and a
/// resume of a pause it did not make by gate, resumes on the operator's word, and completes. The
/// timeline and the audit trail name the operator.
#[test]
fn an_operator_pauses_and_resumes_a_running_rollout_through_the_control_channel() {
    use convoy::engine::control::{ControlError, OperatorCommand, control_channel};
    use convoy::engine::{self, WhenPaused};
    use convoy_core::rollout::Phase;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let args = convoy::cmd::rollout::parse_run_args(setup.run_args(&url)).expect("run args");
    let (options, mut control) =
        convoy::cmd::rollout::engine_options(&args).expect("engine options");
    let total: usize = options.waves.iter().map(|w| w.device_ids.len()).sum();
    let (handle, commands) = control_channel("r1", 8);
    control.commands = Some(commands);
    control.when_paused = WhenPaused::Hold;
    // The engine's future holds the cache connection (not `Send`): it runs on its own thread,
    // as a host such as `convoy serve` runs it; this thread only sends commands.
    let run = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("engine runtime")
                .block_on(engine::run_with(options, control, None))
        })
        .expect("engine thread");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    setup.wait_for_event("soak.started");
    let phase = runtime
        .block_on(handle.send(
            "bob",
            OperatorCommand::Pause {
                reason: "change freeze for the depot visit".into(),
            },
        ))
        .expect("the pause is applied");
    let Phase::Paused {
        by_gate: false,
        wave,
        ..
    } = phase
    else {
        panic!("paused by the operator: {phase:?}");
    };
    let offers_at_pause = setup.count("SELECT count(*) FROM outbox WHERE kind = 'offer'");
    assert!(
        (offers_at_pause as usize) < total,
        "paused before the last wave (wave {wave}, {offers_at_pause} of {total} offered)"
    );
    // Four wall seconds are almost three simulated hours: three times the soak. Time passes on
    // purpose (nothing happening can only be seen over a while), not synchronisation.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        setup.count("SELECT count(*) FROM outbox WHERE kind = 'offer'"),
        offers_at_pause,
        "no offer while paused"
    );
    assert_eq!(
        setup
            .count("SELECT count(*) FROM device_events WHERE rollout_id = 'r1' AND kind = 'offer'"),
        offers_at_pause,
        "no device was offered the release while paused"
    );
    assert!(!run.is_finished(), "the engine holds while paused");

    let err = runtime
        .block_on(handle.send(
            "bob",
            OperatorCommand::Override {
                reason: String::new(),
            },
        ))
        .expect_err("an override needs a reason");
    assert_eq!(
        err,
        ControlError::MissingField {
            command: "override",
            field: "reason"
        }
    );
    assert_eq!(err.to_string(), "override needs a non-empty reason");
    let err = runtime
        .block_on(handle.send(
            "bob",
            OperatorCommand::Override {
                reason: "looks fine".into(),
            },
        ))
        .expect_err("no gate stopped it");
    assert!(
        matches!(err, ControlError::Refused { .. })
            && err.to_string().contains("override the gate is not allowed")
            && err.to_string().contains("not a gate: resume it"),
        "{err}"
    );

    let phase = runtime
        .block_on(handle.send(
            "bob",
            OperatorCommand::Resume {
                reason: "depot visit over".into(),
            },
        ))
        .expect("the resume is applied");
    assert!(
        matches!(phase, Phase::Running { .. } | Phase::Soaking { .. }),
        "{phase:?}"
    );
    let report = run
        .join()
        .expect("the engine thread finishes")
        .expect("engine run");
    let report = serde_json::to_value(&report).expect("report JSON");
    assert_eq!(report["final_state"], "completed", "{}", brief(&report));
    for w in waves(&report) {
        assert_eq!(
            n(w, "offered"),
            n(w, "devices"),
            "every device offered: {w}"
        );
    }
    assert_eq!(setup.devices_with_two_offers(), 0);

    let timeline = setup.timeline();
    let paused = timeline
        .iter()
        .position(|(k, c)| k == "rollout.paused" && c == "bob: change freeze for the depot visit")
        .unwrap_or_else(|| panic!("the pause names bob: {timeline:?}"));
    let resumed = timeline
        .iter()
        .position(|(k, c)| k == "rollout.resumed" && c == "bob: depot visit over")
        .unwrap_or_else(|| panic!("the resume names bob: {timeline:?}"));
    assert!(paused < resumed);
    assert_eq!(
        timeline.last().map(|(k, _)| k.as_str()),
        Some("rollout.completed")
    );
    let audit = convoy_ok(&["audit", "log", "--db", &setup.path("cache.db"), "--json"]);
    let audit: Value = serde_json::from_str(&audit).expect("audit JSON");
    let by_bob: Vec<&str> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == "bob")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        by_bob.contains(&"operator.pause") && by_bob.contains(&"operator.resume"),
        "{by_bob:?}"
    );
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// How long no engine runs between a stopped run and its resume: forty simulated minutes at
/// `SCALE`, in which the devices go on installing and reporting into the rollout's broker
/// session, so the resumed run must take back what it missed. Part of the scenario, not
/// synchronisation: the stopped run has ended (and released its lease) before this starts.
const ENGINE_DOWN: Duration = Duration::from_secs(1);

/// The engine is stopped (Ctrl-C: its stop channel) after the canary started, and a second run
/// with --resume rebuilds the rollout from the cache and completes it: no device is offered the
/// release twice, and the timeline shows the stop and the resume.
#[test]
fn a_stopped_rollout_resumes_from_the_cache_and_completes() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(300);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let first = setup.spawn_run(&url);
    setup.wait_for_an_acknowledged_offer();
    let status = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let (code, report) = Setup::finish(first);
    assert_eq!(report["final_state"], "stopped", "{}", brief(&report));
    assert_eq!(code, 4);
    let offered_first = setup.count("SELECT count(*) FROM outbox WHERE kind = 'offer'");
    assert!(offered_first > 0);
    // The log the stopped run left replays to the state it reported: per wave, the devices
    // offered and confirmed.
    {
        use convoy_core::rollout::{DeviceState, Rollout};
        let store =
            convoy::store::Store::open(Path::new(&setup.path("cache.db"))).expect("open cache");
        let replayed = Rollout::replay(store.rollout_log("r1").expect("the log")).expect("replay");
        let state = replayed.state();
        for (w, members) in state.wave_members.iter().enumerate() {
            let count = |f: &dyn Fn(DeviceState) -> bool| {
                members
                    .iter()
                    .filter(|&&i| f(state.devices[i as usize].state))
                    .count() as u64
            };
            let wave = waves(&report)[w];
            assert_eq!(
                count(&|s| s != DeviceState::Pending),
                n(wave, "offered"),
                "{wave}"
            );
            assert_eq!(
                count(&|s| s == DeviceState::Healthy),
                n(wave, "confirmed"),
                "{wave}"
            );
        }
        assert_eq!(
            serde_json::to_value(replayed.phase()).expect("phase"),
            report["phase"]
        );
    }
    std::thread::sleep(ENGINE_DOWN);

    let (code, report) = setup.run(&url, &["--resume"]);
    assert_eq!(
        report["final_state"],
        "completed",
        "{}\ntimeline: {:?}\nunsettled devices' histories:\n{}",
        brief(&report),
        setup.timeline(),
        setup.unsettled_histories(&report)
    );
    assert_eq!(code, 0);
    for w in waves(&report) {
        assert_eq!(
            n(w, "offered"),
            n(w, "devices"),
            "every device offered: {w}"
        );
        assert_eq!(
            n(w, "confirmed") + n(w, "failed") + n(w, "reverted"),
            n(w, "devices"),
            "every device accounted for: {w}"
        );
    }
    assert_eq!(
        setup.devices_with_two_offers(),
        0,
        "no device got two different offers"
    );
    assert_eq!(
        setup.count(
            "SELECT count(*) FROM (SELECT device_id FROM device_events
             WHERE rollout_id = 'r1' AND kind = 'offer' GROUP BY device_id HAVING count(*) > 1)"
        ),
        0,
        "no device history shows two offers"
    );
    let notes = report["notes"].to_string();
    assert!(notes.contains("resumed from the cache"), "{notes}");
    let kinds: Vec<String> = setup.timeline().into_iter().map(|(k, _)| k).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}"))
    };
    assert!(at("wave.started") < at("engine.stopped"));
    assert!(at("engine.stopped") < at("engine.resumed"));
    assert!(at("engine.resumed") < at("rollout.completed"));
    assert_eq!(
        kinds.iter().filter(|k| *k == "rollout.created").count(),
        1,
        "one rollout, not two: {kinds:?}"
    );
    // The cache agrees with the devices.
    let confirmed: u64 = waves(&report).iter().map(|w| n(w, "confirmed")).sum();
    let on_new = setup
        .cached_firmware()
        .values()
        .filter(|v| *v == "2.5.0")
        .count() as u64;
    assert_eq!(on_new, confirmed);
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// `convoy serve` hosting an engine run: a dispatcher pauses it over the API once the canary
/// soaks, the run holds, a viewer is refused (403), an override without a reason gets 400 naming
/// `reason`, an unknown rollout 404, the dispatcher resumes it and it completes; the timeline and
/// the audit trail name `operator:dana`, and a command after the run ended gets 409.
#[test]
fn rollout_control_over_the_api_reaches_an_engine_hosted_by_the_server() {
    use convoy::serve::auth::{self, Role};
    use reqwest::StatusCode;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let (viewer, dispatcher) = {
        let store = convoy::store::Store::open(Path::new(&setup.path("cache.db"))).expect("cache");
        let now = convoy::now();
        (
            auth::add_token(&store, "vera", Role::Viewer, "operator:test", now)
                .expect("viewer")
                .token,
            auth::add_token(&store, "dana", Role::Dispatcher, "operator:test", now)
                .expect("dispatcher")
                .token,
        )
    };
    let _sim = setup.sim(&url, false);
    let (served, run) = HostedBehindApi::start(&setup, &url);
    let call = |path: &str, token: &str, body: &str| served.post(path, token, body);

    setup.wait_for_event("soak.started");
    let (status, body) = call("r1/pause", &viewer, r#"{"reason": "look"}"#);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call("r1/override", &dispatcher, r#"{"reason": " "}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (status, body) = call("r1/override", &dispatcher, "{}");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (status, body) = call("r2/pause", &dispatcher, r#"{"reason": "wrong id"}"#);
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = call("r1/pause", &dispatcher, r#"{"reason": "war room hold"}"#);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["phase"]["paused"]["by_gate"], false, "{body}");
    let offers_at_pause = setup.count("SELECT count(*) FROM outbox WHERE kind = 'offer'");
    // Three wall seconds are two simulated hours, twice the soak. Time passes on purpose
    // (nothing happening can only be seen over a while), not synchronisation.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        setup.count("SELECT count(*) FROM outbox WHERE kind = 'offer'"),
        offers_at_pause,
        "no offer while paused"
    );
    assert!(!run.is_finished(), "the hosted run holds while paused");
    // An operator's pause is resumed, not overridden.
    let (status, body) = call("r1/override", &dispatcher, r#"{"reason": "fine"}"#);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = call("r1/resume", &dispatcher, r#"{"reason": "all clear"}"#);
    assert_eq!(status, StatusCode::OK, "{body}");

    let report = run.join().expect("the hosted run");
    assert_eq!(
        report.final_state,
        convoy::engine::FinalState::Completed,
        "{report:#?}"
    );
    let (status, body) = call("r1/pause", &dispatcher, r#"{"reason": "too late"}"#);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    served.shutdown();

    let timeline = setup.timeline();
    assert!(
        timeline
            .iter()
            .any(|(k, c)| k == "rollout.paused" && c == "operator:dana: war room hold"),
        "{timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|(k, c)| k == "rollout.resumed" && c == "operator:dana: all clear"),
        "{timeline:?}"
    );
    assert_eq!(
        setup.count(
            "SELECT count(*) FROM audit WHERE actor = 'operator:dana'
             AND action IN ('operator.pause', 'operator.resume')"
        ),
        2
    );
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// A setup with its release stored in the cache, tokens for a dispatcher (`dana`) and two
/// approvers (`alex`, `sam`), a broker, a simulated fleet, and a server configuration that
/// dispatches approved requests to them.
struct ServedSetup {
    setup: Setup,
    _broker: EmbeddedBroker,
    _sim: Proc,
    release_id: String,
    tokens: BTreeMap<&'static str, String>,
    config: convoy::serve::ServeConfig,
}

impl ServedSetup {
    fn new() -> Self {
        use convoy::serve::auth::{self, Role};
        let setup = Setup::new(400);
        let broker = EmbeddedBroker::start(setup.dir.path(), None);
        let url = broker.url();
        convoy_ok(&[
            "release",
            "store",
            &setup.path("release.json"),
            "--trust",
            &setup.path("trust"),
            "--db",
            &setup.path("cache.db"),
        ]);
        let release_id = {
            let m: Value = serde_json::from_slice(
                &std::fs::read(setup.path("release.json")).expect("manifest"),
            )
            .expect("manifest JSON");
            m["signed"]["release"]["id"]
                .as_str()
                .expect("release id")
                .to_owned()
        };
        let tokens: BTreeMap<&str, String> = {
            let store =
                convoy::store::Store::open(Path::new(&setup.path("cache.db"))).expect("cache");
            let now = convoy::now();
            [
                ("dana", Role::Dispatcher),
                ("alex", Role::Approver),
                ("sam", Role::Approver),
            ]
            .into_iter()
            .map(|(name, role)| {
                let t = auth::add_token(&store, name, role, "operator:test", now).expect("token");
                (name, t.token)
            })
            .collect()
        };
        let sim = setup.sim(&url, false);
        let settings = setup.path("dispatch.args");
        std::fs::write(
            &settings,
            format!(
                "# what every approved request runs with\n--broker\n{url}\n--policy\n{}\n--time-scale\n{SCALE}\n--artifact\n{}\n",
                setup.path("policy.json"),
                setup.path("fw.img")
            ),
        )
        .expect("dispatch settings");
        let mut config = convoy::serve::ServeConfig::new(
            PathBuf::from(setup.path("cache.db")),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.trust = Some(PathBuf::from(setup.path("trust")));
        config.dispatch =
            Some(convoy::serve::host::read_dispatch_args(Path::new(&settings)).expect("settings"));
        Self {
            setup,
            _broker: broker,
            _sim: sim,
            release_id,
            tokens,
            config,
        }
    }
}

/// A rollout of `setup` hosted in this process, as `convoy serve` hosts one, behind a real
/// server's JSON API on 127.0.0.1.
struct HostedBehindApi {
    runtime: tokio::runtime::Runtime,
    server: convoy::serve::Server,
    client: reqwest::Client,
    rollouts: String,
}

impl HostedBehindApi {
    /// Starts the run against the broker at `url` and a server steering it; the run is the
    /// caller's to join.
    fn start(setup: &Setup, url: &str) -> (Self, convoy::serve::host::HostedRun) {
        let args = convoy::cmd::rollout::parse_run_args(setup.run_args(url)).expect("run args");
        let run = convoy::serve::host::host_rollout(&args).expect("hosting the run");
        let mut config = convoy::serve::ServeConfig::new(
            PathBuf::from(setup.path("cache.db")),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.controls.push(run.control.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime
            .block_on(convoy::serve::Server::start(config))
            .expect("server");
        let rollouts = format!("{}/api/v1/rollouts", server.base_url());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let served = Self {
            runtime,
            server,
            client,
            rollouts,
        };
        (served, run)
    }

    /// POSTs `body` to `/api/v1/rollouts/PATH` with `token`.
    fn post(&self, path: &str, token: &str, body: &str) -> (reqwest::StatusCode, Value) {
        self.runtime.block_on(convoy_e2e::api::post(
            &self.client,
            &format!("{}/{path}", self.rollouts),
            token,
            body.to_owned(),
        ))
    }

    fn shutdown(self) {
        self.runtime.block_on(self.server.shutdown());
    }
}

/// POSTs `body` to `/api/v1/rollouts/PATH` (or `/api/v1/rollouts` for an empty path) as `who`.
fn rollouts_call(
    runtime: &tokio::runtime::Runtime,
    server: &convoy::serve::Server,
    s: &ServedSetup,
    path: &str,
    who: &str,
    body: &str,
) -> (reqwest::StatusCode, Value) {
    let api = format!("{}/api/v1/rollouts", server.base_url());
    let url = if path.is_empty() {
        api
    } else {
        format!("{api}/{path}")
    };
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    runtime.block_on(convoy_e2e::api::post(
        &c,
        &url,
        &s.tokens[who],
        body.to_owned(),
    ))
}

/// Issue 9: a rollout requested over the API is not dispatched until two operators other than
/// the requester approve it; then the server dispatches it itself (an engine run it hosts, with
/// the plan frozen at request time), the control endpoints steer it, and it completes.
#[test]
fn a_request_approved_over_the_api_is_dispatched_by_the_server_and_completes() {
    use convoy::serve::Server;
    use reqwest::StatusCode;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = ServedSetup::new();
    let setup = &s.setup;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(Server::start(s.config.clone()))
        .expect("server");
    let call =
        |path: &str, who: &str, body: &str| rollouts_call(&runtime, &server, &s, path, who, body);

    let (status, body) = call(
        "",
        "dana",
        &format!(
            r#"{{"release_id": "{}", "rollout_id": "r1"}}"#,
            s.release_id
        ),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let planned = body["devices"].as_i64().expect("devices");
    let (status, body) = call(
        "r1/approve",
        "alex",
        r#"{"comment": "canary covers T300/C"}"#,
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    // An approval dispatches (or not) before it is answered: had this one started a run, the
    // server would hold it now.
    assert!(
        server.take_runs().is_empty(),
        "one approval of two dispatches nothing"
    );
    assert_eq!(
        setup.count("SELECT count(*) FROM outbox"),
        0,
        "nothing is sent before the request is approved"
    );
    assert_eq!(
        setup.count("SELECT count(*) FROM rollout_events WHERE rollout_id = 'r1'"),
        0
    );
    let (status, body) = call("r1/approve", "sam", "{}");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    assert_eq!(body["hosted"], true, "{body}");
    assert!(
        body["dispatch"]
            .as_str()
            .unwrap_or("")
            .starts_with("dispatched"),
        "{body}"
    );
    let (status, body) = call("r1/dispatch", "dana", "{}");
    assert_eq!(status, StatusCode::CONFLICT, "never started twice: {body}");

    setup.wait_for_event("soak.started");
    let (status, body) = call("r1/pause", "dana", r#"{"reason": "look at the canary"}"#);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call("r1/resume", "dana", r#"{"reason": "canary fine"}"#);
    assert_eq!(status, StatusCode::OK, "{body}");
    let runs = server.take_runs();
    assert_eq!(runs.len(), 1);
    let report = runs
        .into_iter()
        .next()
        .expect("one run")
        .join()
        .expect("the dispatched run");
    // Cohort health over the API, from the run's log: what a war-room wall plots.
    let (status, health) = runtime.block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/rollouts/r1/health", server.base_url()))
            .bearer_auth(&s.tokens["dana"])
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json::<Value>().await.expect("JSON"))
    });
    assert_eq!(status, StatusCode::OK, "{health}");
    let crash = health["health"]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["metric"] == "crash")
        .expect("a crash series");
    assert!(
        !crash["points"].as_array().expect("points").is_empty(),
        "{crash}"
    );
    assert!(
        health["health"]["markers"]
            .as_array()
            .expect("markers")
            .iter()
            .any(|m| m["label"] == "wave 1 started"),
        "{health}"
    );
    runtime.block_on(server.shutdown());
    assert_eq!(
        report.final_state,
        convoy::engine::FinalState::Completed,
        "{report:#?}"
    );
    let devices: i64 = report.waves.iter().map(|w| i64::from(w.devices)).sum();
    assert_eq!(devices, planned, "the run has the frozen plan's devices");
    assert_eq!(report.requested_by, "dana");
    let mut approvals = report.approvals.clone();
    approvals.sort();
    assert_eq!(approvals, ["alex", "sam"]);
    let timeline = setup.timeline();
    for who in ["alex", "sam"] {
        assert!(
            timeline
                .iter()
                .any(|(k, c)| k.contains("approval") && c.contains(who)),
            "{who}'s approval in the timeline: {timeline:?}"
        );
    }
    assert_eq!(
        setup.count(
            "SELECT count(*) FROM audit WHERE action IN ('rollout.request', 'rollout.approve')"
        ),
        3
    );
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// Issue 9: the server stops in the middle of a rollout it dispatched; a new server on the same
/// cache continues it by itself (from the cache's log and outbox) and it completes, with no
/// device offered twice.
#[test]
fn a_server_restarted_mid_rollout_continues_the_rollout_it_dispatched() {
    use convoy::serve::Server;
    use reqwest::StatusCode;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = ServedSetup::new();
    let setup = &s.setup;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(Server::start(s.config.clone()))
        .expect("server");
    {
        let call = |path: &str, who: &str, body: &str| {
            rollouts_call(&runtime, &server, &s, path, who, body)
        };
        let (status, body) = call(
            "",
            "dana",
            &format!(
                r#"{{"release_id": "{}", "rollout_id": "r1"}}"#,
                s.release_id
            ),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for who in ["alex", "sam"] {
            let (status, body) = call("r1/approve", who, "{}");
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    setup.wait_for_an_acknowledged_offer();
    // The server stops (as on Ctrl-C): its runs stop resumably.
    let runs = server.take_runs();
    runtime.block_on(server.shutdown());
    for run in runs {
        let report = run.stop().expect("the stopped run");
        assert_eq!(
            report.final_state,
            convoy::engine::FinalState::Stopped,
            "{report:#?}"
        );
    }
    std::thread::sleep(ENGINE_DOWN);

    let server = runtime
        .block_on(Server::start(s.config.clone()))
        .expect("the restarted server");
    let runs = server.take_runs();
    assert_eq!(runs.len(), 1, "the restarted server continues r1 by itself");
    let report = runs
        .into_iter()
        .next()
        .expect("one run")
        .join()
        .expect("the continued run");
    runtime.block_on(server.shutdown());
    assert_eq!(
        report.final_state,
        convoy::engine::FinalState::Completed,
        "{report:#?}\ntimeline: {:?}",
        setup.timeline()
    );
    assert_eq!(
        setup.devices_with_two_offers(),
        0,
        "no device got two different offers"
    );
    let kinds: Vec<String> = setup.timeline().into_iter().map(|(k, _)| k).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}"))
    };
    assert!(at("engine.stopped") < at("engine.resumed"));
    assert!(at("engine.resumed") < at("rollout.completed"));
    // A third server finds nothing to continue.
    let server = runtime
        .block_on(Server::start(s.config.clone()))
        .expect("a third server");
    assert!(
        server.take_runs().is_empty(),
        "a completed rollout is not resumed"
    );
    runtime.block_on(server.shutdown());
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// `GET /metrics` on a running engine (`--metrics-listen`, issue 23): Prometheus's text format,
/// passing `promtool check metrics`, with counters that move as the rollout runs.
#[test]
fn the_engine_s_metrics_pass_promtool_and_move_as_the_rollout_runs() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let port = convoy_e2e::free_port();
    let listen = format!("127.0.0.1:{port}");
    let artifact = setup.path("fw.img");
    let mut engine = Proc(
        setup
            .rollout_command(
                &url,
                &["--artifact", &artifact, "--metrics-listen", &listen],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("convoy rollout run"),
    );
    let scrape = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    let status = "convoy_engine_messages_total{rollout=\"r1\",kind=\"status\"}";
    let mut first = String::new();
    convoy_e2e::wait_for(
        "the engine's first status messages in its metrics",
        Duration::from_mins(1),
        || {
            first = scrape().unwrap_or_default();
            crate::metrics::sample(&first, status).is_some_and(|n| n > 0.0)
        },
    );
    let (ok, said) = crate::metrics::promtool(&first);
    assert!(ok, "promtool check metrics: {said}\n{first}");
    let before = crate::metrics::sample(&first, status).unwrap_or(0.0);
    let mut later = String::new();
    convoy_e2e::wait_for("the counters to move", Duration::from_mins(1), || {
        later = scrape().unwrap_or_default();
        crate::metrics::sample(&later, status).is_some_and(|n| n > before)
    });
    assert!(
        later.contains("convoy_engine_devices{rollout=\"r1\",wave="),
        "{later}"
    );
    assert!(
        later.contains("convoy_engine_rollout_phase{rollout=\"r1\",phase="),
        "{later}"
    );
    assert!(crate::metrics::promtool(&later).0);
    let status = engine.0.wait().expect("the engine ends");
    assert!(status.success(), "the good release completes: {status}");
}

/// Issue 19: after the gates rolled the canary back, no command worked. Over the API of a
/// server hosting the run: resume and override are refused with words that name the way
/// forward; an exclusion with a bad selector gets 400 naming `selector`; excluding the failing
/// revision (`hw_rev:C`) and continuing runs the rest of the fleet to completion; no excluded
/// device is ever offered the release; the timeline and the audit trail name the operator.
#[test]
fn after_a_gate_rollback_an_operator_excludes_the_failing_revision_and_continues() {
    use convoy::serve::auth::{self, Role};
    use reqwest::StatusCode;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let dispatcher = {
        let store = convoy::store::Store::open(Path::new(&setup.path("cache.db"))).expect("cache");
        auth::add_token(
            &store,
            "dana",
            Role::Dispatcher,
            "operator:test",
            convoy::now(),
        )
        .expect("dispatcher")
        .token
    };
    let _sim = setup.sim(&url, true);
    let (served, run) = HostedBehindApi::start(&setup, &url);
    let call = |path: &str, body: &str| served.post(path, &dispatcher, body);

    setup.wait_for_event("rollback.finished");
    let (status, body) = call("r1/resume", r#"{"reason": "try again"}"#);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.to_string()
            .contains("exclude what failed and continue with the next wave"),
        "the refusal names the way forward: {body}"
    );
    let (status, body) = call("r1/override", r#"{"reason": "fine"}"#);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Hostile or careless input: refused, naming the field, changing nothing.
    let (status, body) = call("r1/exclude", r#"{"reason": "rev C"}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "selector", "{body}");
    let (status, body) = call(
        "r1/exclude",
        r#"{"reason": "rev C", "selector": "hw_rev:\"C"}"#,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "selector", "{body}");
    let (status, body) = call("r1/pause", r#"{"reason": "x", "selector": "hw_rev:C"}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call("r1/continue", r#"{"reason": " "}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");

    // A saved cohort (a dynamic group in the cache, saved with the CLI) names what to exclude.
    convoy_ok(&[
        "cohort",
        "save",
        "rev C vans",
        "hw_rev:C",
        "--db",
        &setup.path("cache.db"),
    ]);
    let (status, body) = call(
        "r1/exclude",
        r#"{"reason": "rev C", "selector": "cohort:nobody"}"#,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("no saved cohort"), "{body}");
    let (status, body) = call(
        "r1/exclude",
        r#"{"reason": "rev C crash-loops: held for a fix", "selector": "cohort:\"rev C vans\""}"#,
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        "r1/exclude",
        r#"{"reason": "again", "selector": "hw_rev:C"}"#,
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("nothing to exclude"), "{body}");
    let (status, body) = call(
        "r1/continue",
        r#"{"reason": "the other revisions are not affected"}"#,
    );
    assert_eq!(status, StatusCode::OK, "{body}");

    let report = run.join().expect("the hosted run");
    served.shutdown();
    assert_eq!(
        report.final_state,
        convoy::engine::FinalState::Completed,
        "{report:#?}"
    );
    // No rev C device outside the canary was offered the release.
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(setup.path("fleet.json")).expect("fleet"))
            .expect("fleet JSON");
    let rev_c: Vec<String> = fleet["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["hw_rev"] == "C")
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    let offered = setup.offered();
    let offered_rev_c = rev_c.iter().filter(|id| offered.contains(id)).count();
    assert!(
        rev_c.len() > offered_rev_c,
        "some rev C devices were past the canary"
    );
    // Every offered rev C device was offered before the exclusion (in the canary).
    let late_rev_c = rev_c
        .iter()
        .filter(|id| {
            setup.count(&format!(
                "SELECT count(*) FROM device_events WHERE rollout_id = 'r1' AND kind = 'offer'
                 AND device_id = '{id}' AND time >= (SELECT min(time) FROM rollout_events
                 WHERE rollout_id = 'r1' AND kind = 'devices.excluded')"
            )) > 0
        })
        .count();
    assert_eq!(late_rev_c, 0, "an excluded device was offered");
    let timeline = setup.timeline();
    assert!(
        timeline.iter().any(|(k, c)| k == "devices.excluded"
            && c == "operator:dana: rev C crash-loops: held for a fix"),
        "{timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|(k, c)| k == "rollout.continued" && c.starts_with("operator:dana")),
        "{timeline:?}"
    );
    assert_eq!(
        setup.count(
            "SELECT count(*) FROM audit WHERE actor = 'operator:dana'
             AND action IN ('operator.exclude', 'operator.continue')"
        ),
        2
    );
    convoy_ok(&["audit", "verify", "--db", &setup.path("cache.db")]);
}

/// Issue 20, the A/B rule over a real broker: a release after which the rare revision's modem
/// never registers. Those devices go quiet after their reboot, revert by themselves when their
/// health window ends, come back on the previous slot and say why; the cache ends with every
/// offered rev C device on the firmware it had.
#[test]
fn devices_that_lose_their_link_after_the_update_revert_by_themselves() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    std::fs::write(
        setup.path("faults.json"),
        r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "link_loss", "probability": 1.0}]}"#,
    )
    .expect("faults");
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, true);
    let (_code, report) = setup.run(&url, &[]);
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(setup.path("fleet.json")).expect("fleet"))
            .expect("fleet JSON");
    let rev_c: Vec<String> = fleet["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["hw_rev"] == "C")
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    let offered = setup.offered();
    let offered_rev_c: Vec<&String> = rev_c.iter().filter(|id| offered.contains(id)).collect();
    assert!(!offered_rev_c.is_empty(), "the canary holds rev C devices");
    let before = setup.original_firmware();
    let after = setup.cached_firmware();
    for id in &offered_rev_c {
        assert_eq!(
            after.get(*id),
            before.get(*id),
            "{id} is back: {}",
            brief(&report)
        );
    }
    let said_why = setup.count(
        "SELECT count(DISTINCT device_id) FROM device_events
         WHERE rollout_id = 'r1' AND payload LIKE '%link lost after the update%'",
    );
    assert!(
        said_why > 0,
        "the reverted devices say why: {}",
        brief(&report)
    );
}

/// Issue 20: the support-contacts gate was always fed zero. Support tickets about the canary's
/// devices, imported from a CSV while the canary soaks (`convoy signals import`), are counted in
/// their health windows and pause the rollout at the support-contacts gate; a file with a bad
/// row or an unknown device is refused naming it, and stores nothing.
#[test]
fn support_tickets_imported_during_the_soak_stop_the_rollout_at_their_gate() {
    use std::fmt::Write as _;
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(400);
    // Ten-hour soaks (15 wall seconds): time to import while the canary soaks.
    std::fs::write(
        setup.path("policy.json"),
        r#"{"version": 1,
            "planning": {"operating_cycle_secs": {}, "default_operating_cycle_secs": 36000},
            "gates": {"hold_extension_secs": 1800}}"#,
    )
    .expect("policy");
    let broker = EmbeddedBroker::start(setup.dir.path(), None);
    let url = broker.url();
    let _sim = setup.sim(&url, false);
    let artifact = setup.path("fw.img");
    let run = setup
        .rollout_command(&url, &["--artifact", &artifact])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("convoy rollout run");
    setup.wait_for_event("soak.started");
    let db = setup.path("cache.db");
    // Hostile or careless files first: refused, naming the line, nothing stored.
    let bad = setup.path("bad.csv");
    std::fs::write(
        &bad,
        "device_id,kind,reference,time,note\nCV0000001,support_ticket,T-1,,\nCV0000002,complaint,T-2,,\n",
    )
    .expect("bad csv");
    let out = convoy_e2e::convoy(&["signals", "import", &bad, "--db", &db]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("complaint"), "{err}");
    let unknown = setup.path("unknown.csv");
    std::fs::write(
        &unknown,
        "device_id,kind,reference,time,note\nNOPE0001,support_ticket,T-9,,\n",
    )
    .expect("csv");
    let out = convoy_e2e::convoy(&["signals", "import", &unknown, "--db", &db]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE0001"));
    assert_eq!(setup.count("SELECT count(*) FROM signals"), 0);

    // Three tickets about every device of the canary, which runs the new release now.
    let mut csv = String::from("device_id,kind,reference,time,note\n");
    for (n, id) in setup.offered().iter().enumerate() {
        for k in 0..3 {
            let _ = writeln!(
                csv,
                "{id},support_ticket,T-{n}-{k},,\"screen freezes, \"\"nav\"\" resets\""
            );
        }
    }
    let tickets = setup.path("tickets.csv");
    std::fs::write(&tickets, &csv).expect("tickets");
    let out = convoy_ok(&["signals", "import", &tickets, "--db", &db]);
    assert!(out.contains("signal(s) added, 0 already there"), "{out}");
    // The same file again adds nothing.
    let again = convoy_ok(&["signals", "import", &tickets, "--db", &db]);
    assert!(again.starts_with("0 signal(s) added"), "{again}");

    let out = run.wait_with_output().expect("the run ends");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["final_state"], "paused", "{}", brief(&report));
    let decisions = report["gate_decisions"].as_array().expect("decisions");
    let stop = decisions
        .iter()
        .find(|d| d["outcome"] != "hold")
        .expect("a gate stopped the rollout");
    let failing: Vec<&Value> = stop["evidence"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert!(
        failing.iter().any(|f| f["metric"] == "support_contacts"),
        "the support-contacts gate fired: {stop:#}"
    );
}
