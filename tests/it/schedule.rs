//! The engine follows the plan's schedule (issue 20): `convoy plan` plans a rollout with
//! maintenance windows in each depot's local time (tz database zones with daylight-saving
//! time), a constant rate and an hourly bandwidth cap; `convoy rollout run --plan` runs it
//! against `convoy sim` over the embedded broker on a scaled clock; the replayed log shows no
//! offer outside a window, no simulated minute above the rate, no hour above the cap, and as
//! many offers per wave as the plan has devices. It prints the plan's offers per UTC hour next
//! to the engine's.

use convoy::store::Store;
use convoy_core::fleet::Fleet;
use convoy_core::plan::policy::{LocalRange, LocalTime};
use convoy_core::rollout::{EventKind, Rollout};
use convoy_e2e::{
    Proc, SignedWorkspace, WorkspaceSpec, convoy, convoy_bin, start_broker_process, wait_for,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Simulated seconds per wall second.
const SCALE: &str = "2400";
const PER_MINUTE: u64 = 2;
const ARTIFACT_BYTES: usize = 2_000_000;
const CAP_DEVICES_PER_HOUR: u64 = 25;
/// One rollout at a time (a rollout and its simulated fleet keep two cores busy).
static SERIAL: Mutex<()> = Mutex::new(());

/// A signed workspace, its plan (made with `convoy plan` now) and the simulated fleet on the
/// embedded broker.
struct Paced {
    ws: SignedWorkspace,
    plan: Value,
    url: String,
    _broker: Proc,
    _sim: Proc,
}

impl Paced {
    fn new() -> Self {
        let ws = SignedWorkspace::new(&WorkspaceSpec {
            devices: 120,
            seed: 11,
            artifact_bytes: ARTIFACT_BYTES,
            version: "2.5.0",
            counter: 50,
            hardware: "T300",
            requires: &["bootloader>=1.6"],
        });
        let p = |name: &str| ws.path(name);
        // Windows of 00:00-06:00 in each depot's local time, 2 a minute, 25 downloads an
        // hour; soaks of one simulated hour so the run fits a test's time.
        std::fs::write(
            p("policy.json"),
            format!(
                r#"{{"version": 1,
                    "planning": {{
                        "operating_cycle_secs": {{}}, "default_operating_cycle_secs": 3600,
                        "canary": {{"size": 12, "floor_per_stratum": 1}},
                        "waves": [{{"name": "canary", "cohort": {{"kind": "canary"}}}},
                                  {{"name": "rest", "cohort": {{"kind": "rest"}}}}],
                        "rate": {{"kind": "constant", "per_minute": {PER_MINUTE}}},
                        "windows": [{{"region": "*", "start": "00:00", "end": "06:00"}}],
                        "bandwidth_cap_bytes_per_hour": {}
                    }},
                    "gates": {{"hold_extension_secs": 1800}}}}"#,
                CAP_DEVICES_PER_HOUR * ARTIFACT_BYTES as u64
            ),
        )
        .expect("policy");
        // The release's unsigned body, for `convoy plan`.
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(p("release.json")).expect("manifest"))
                .expect("manifest JSON");
        std::fs::write(
            p("spec.json"),
            serde_json::to_string(&manifest["signed"]["release"]).expect("spec"),
        )
        .expect("spec");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let planned_at = convoy_core::time::Timestamp::from_secs(now as i64);
        let out = convoy(&[
            "plan",
            "--fleet",
            &p("fleet.json"),
            "--release",
            &p("spec.json"),
            "--policy",
            &p("policy.json"),
            "--now",
            &planned_at.to_rfc3339(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(p("plan.json"), &out.stdout).expect("plan file");
        let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        let (broker, port) = start_broker_process(ws.dir.path());
        let url = format!("mqtt://127.0.0.1:{port}");
        let sim = Proc::spawn(
            &[
                "sim",
                "--broker",
                &url,
                "--fleet",
                &p("fleet.json"),
                "--trust",
                &p("trust"),
                "--time-scale",
                SCALE,
                "--duration-secs",
                "500",
            ],
            p("sim.log"),
        );
        Self {
            ws,
            plan,
            url,
            _broker: broker,
            _sim: sim,
        }
    }

    fn path(&self, name: &str) -> String {
        self.ws.path(name)
    }

    /// `convoy rollout run` of the plan, plus `extra` arguments.
    fn command(&self, extra: &[&str]) -> Command {
        let p = |name: &str| self.path(name);
        let mut cmd = Command::new(convoy_bin());
        cmd.args([
            "rollout",
            "run",
            "--db",
            &p("cache.db"),
            "--broker",
            &self.url,
            "--release",
            &p("release.json"),
            "--artifact",
            &p("fw.img"),
            "--trust",
            &p("trust"),
            "--plan",
            &p("plan.json"),
            "--policy",
            &p("policy.json"),
            "--time-scale",
            SCALE,
            "--rollout-id",
            "r1",
            "--operator",
            "alice",
            "--max-wall-secs",
            "300",
            "--json",
        ])
        .args(extra);
        cmd
    }

    fn report(out: &std::process::Output) -> Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Devices per wave in the plan.
    fn planned_waves(&self) -> Vec<u64> {
        self.plan["rollout_waves"]
            .as_array()
            .expect("rollout_waves")
            .iter()
            .map(|w| w["device_ids"].as_array().map_or(0, Vec::len) as u64)
            .collect()
    }

    /// The rollout's log.
    fn log(&self) -> Vec<convoy_core::rollout::RolloutEvent> {
        Store::open_existing(std::path::Path::new(&self.path("cache.db")))
            .and_then(|s| s.rollout_log("r1"))
            .unwrap_or_default()
    }

    /// Checks the log against the schedule (windows, rate, cap), prints the plan's offers
    /// per hour next to the engine's, and returns the devices offered.
    fn check_schedule_kept(&self) -> u64 {
        let events = self.log();
        assert!(
            events
                .iter()
                .any(|e| matches!(e.kind, EventKind::OffersPaced { .. })),
            "the rollout's log fixes its schedule"
        );
        let rollout = Rollout::replay(events.clone()).expect("the log replays");
        let ids = &rollout.state().device_ids;
        let fleet: Fleet =
            convoy::fleet_io::load_fleet(std::path::Path::new(&self.path("fleet.json")))
                .expect("fleet");
        let window = LocalRange {
            start: LocalTime(0),
            end: LocalTime(6 * 60),
        };
        let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
        let mut per_hour: BTreeMap<i64, u64> = BTreeMap::new();
        let mut offered = 0u64;
        for e in &events {
            let EventKind::Offered { devices } = &e.kind else {
                continue;
            };
            for &i in devices {
                let id = &ids[i as usize];
                let device = fleet.device(id).expect("a fleet device");
                let depot = fleet.depot(&device.depot).expect("its depot");
                let clock = depot.local_clock().expect("a known zone");
                let minute = (clock.local_second_of_day(e.at) / 60) as u16;
                assert!(
                    window.contains(minute),
                    "{id} of {} ({:?}) offered at {} = {:02}:{:02} local, outside 00:00-06:00",
                    depot.id,
                    depot.time_zone,
                    e.at,
                    minute / 60,
                    minute % 60
                );
            }
            offered += devices.len() as u64;
            *per_minute.entry(e.at.secs().div_euclid(60)).or_default() += devices.len() as u64;
            *per_hour.entry(e.at.secs().div_euclid(3600)).or_default() += devices.len() as u64;
        }
        for (minute, n) in &per_minute {
            assert!(*n <= PER_MINUTE, "{n} offers in minute {minute}");
        }
        for (hour, n) in &per_hour {
            assert!(*n <= CAP_DEVICES_PER_HOUR, "{n} offers in hour {hour}");
        }
        // The plan's offers per UTC hour next to the engine's.
        let mut planned_hours: BTreeMap<i64, u64> = BTreeMap::new();
        for h in self.plan["schedule"]["hours"].as_array().expect("hours") {
            let start = h["start"].as_i64().expect("hour start");
            planned_hours.insert(start.div_euclid(3600), h["devices"].as_u64().unwrap_or(0));
        }
        let hours: std::collections::BTreeSet<i64> = per_hour
            .keys()
            .chain(planned_hours.keys())
            .copied()
            .collect();
        eprintln!("| hour (UTC) | plan | engine |\n| --- | --- | --- |");
        for hour in hours {
            let at = convoy_core::time::Timestamp::from_secs(hour * 3600);
            eprintln!(
                "| {at} | {} | {} |",
                planned_hours.get(&hour).copied().unwrap_or(0),
                per_hour.get(&hour).copied().unwrap_or(0)
            );
        }
        let planned_total: u64 = planned_hours.values().sum();
        eprintln!("| total | {planned_total} | {offered} |");
        assert_eq!(
            planned_total,
            self.planned_waves().iter().sum::<u64>(),
            "the plan schedules every device"
        );
        offered
    }

    /// The timeline says why offers waited, once per change, not once a minute.
    fn check_waits_recorded(&self) {
        let store =
            Store::open_existing(std::path::Path::new(&self.path("cache.db"))).expect("cache");
        let timeline = store.timeline("r1").expect("timeline");
        let waits: Vec<&str> = timeline
            .iter()
            .filter(|e| e.kind == "schedule.waiting")
            .map(|e| e.payload.as_str())
            .collect();
        assert!(
            waits.iter().any(|w| w.contains("window closed for")),
            "{waits:?}"
        );
        // A reason recorded every minute would give one entry per minute of waiting; the
        // rollout waits for most of its (simulated) hours.
        let minutes = match (timeline.first(), timeline.last()) {
            (Some(a), Some(b)) => b.time.secs_since(a.time) / 60,
            _ => 0,
        };
        eprintln!(
            "{} schedule.waiting entries over {minutes} simulated minutes",
            waits.len()
        );
        assert!(
            (waits.len() as i64) * 10 < minutes,
            "{} entries in {minutes} minutes: {waits:?}",
            waits.len()
        );
    }

    /// The run completed and offered each wave as many devices as the plan has.
    fn check_counts(&self, report: &Value, offered: u64) {
        assert_eq!(report["final_state"], "completed", "{report}");
        let engine_waves: Vec<u64> = report["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .map(|w| w["offered"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(engine_waves, self.planned_waves());
        assert_eq!(offered, self.planned_waves().iter().sum::<u64>());
        assert_eq!(report["schedule"]["waiting"], 0, "{}", report["schedule"]);
    }
}

#[test]
fn a_paced_rollout_keeps_to_its_windows_rate_and_cap_and_offers_what_was_planned() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Paced::new();
    assert!(
        setup.planned_waves().iter().sum::<u64>() > 40,
        "a rollout worth pacing: {:?}",
        setup.planned_waves()
    );
    let out = setup.command(&[]).output().expect("convoy rollout run");
    let report = Paced::report(&out);
    let offered = setup.check_schedule_kept();
    setup.check_waits_recorded();
    setup.check_counts(&report, offered);
}

/// A run stopped mid-rollout and resumed: the resumed run paces by the schedule in the log
/// (its ramp count, this hour's and this minute's offers taken up), so the windows, the rate
/// and the cap hold across the two runs and the counts still equal the plan's.
#[test]
fn a_paced_rollout_stopped_and_resumed_keeps_its_schedule() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Paced::new();
    let first = setup
        .command(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("convoy rollout run");
    let paced_offers = || {
        setup
            .log()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Offered { .. }))
            .count()
    };
    wait_for("a few paced offers", Duration::from_mins(2), || {
        paced_offers() >= 3
    });
    let status = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = first.wait_with_output().expect("the first run ends");
    let report = Paced::report(&out);
    assert_eq!(report["final_state"], "stopped", "{report}");
    let offered_first: u64 = report["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["offered"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        offered_first < setup.planned_waves().iter().sum::<u64>(),
        "stopped before the end: {report}"
    );

    let out = setup
        .command(&["--resume"])
        .output()
        .expect("convoy rollout run --resume");
    let report = Paced::report(&out);
    let offered = setup.check_schedule_kept();
    setup.check_counts(&report, offered);
}
