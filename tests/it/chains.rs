//! Prerequisite chains delivered (issue 20): T300 devices whose bootloader or modem is behind
//! the target's requirements are planned "after prerequisites" with the fixture catalog's
//! bootloader and modem releases (`fixtures/releases/catalog.json`, signed here with the
//! workspace's key), and `convoy rollout run --prerequisite-manifest` delivers them over the
//! embedded broker to `convoy sim`: each device gets its chain's releases in order, each
//! confirmed before the next, then the target, and ends on the versions they provide. A fault
//! that fails the bootloader's install on some devices stops them there, counted and named;
//! the log replays to the same stops. A tampered prerequisite manifest refuses the run.
//!
//! On the request path: a rollout request made over a real `convoy serve` with the
//! prerequisite releases stored in its cache freezes the prerequisite waves and their chains,
//! shows them to approvers, and once two operators approve, the server's dispatch delivers each
//! chain before the target; a chain wave naming a device not in the fleet, or a prerequisite
//! release not in the cache, is refused naming it.

use convoy::store::Store;
use convoy_core::fleet::Fleet;
use convoy_core::rollout::{DeviceState, EventKind, Rollout};
use convoy_e2e::{
    Proc, SignedWorkspace, WorkspaceSpec, convoy, convoy_ok, pseudo_random_bytes,
    start_broker_process, write_hour_cycle_policy,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

const SCALE: &str = "2400";
const BL: &str = "t300-bl-2.0.1";
const MODEM: &str = "t300-modem-1.3.0";
const TARGET: &str = "t300-2.5.0";
/// One rollout at a time (a rollout and its simulated fleet keep two cores busy).
static SERIAL: Mutex<()> = Mutex::new(());

/// The release specs of `fixtures/releases/catalog.json`.
fn fixture_catalog() -> Vec<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/releases/catalog.json"
        ))
        .expect("the fixture catalog"),
    )
    .expect("catalog JSON")
}

/// A workspace whose target needs `bootloader>=2.0` and a modem of 1.2.0 or 1.3.0 (as the
/// fixture release t300-fw-2.5.0 does), with the catalog's bootloader and modem releases signed
/// as `bl.json` and `modem.json`.
fn workspace() -> SignedWorkspace {
    let ws = SignedWorkspace::new(&WorkspaceSpec {
        devices: 160,
        seed: 11,
        artifact_bytes: 600_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &["bootloader>=2.0", "modem in 1.2.0,1.3.0"],
    });
    let catalog = fixture_catalog();
    for (id, out) in [(BL, "bl.json"), (MODEM, "modem.json")] {
        let spec = catalog
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} in the fixture catalog"));
        let artifact = ws.path(&format!("{id}.bin"));
        std::fs::write(&artifact, pseudo_random_bytes(200_000, 7)).expect("artifact");
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let mut args: Vec<String> = [
            "release",
            "create",
            "--artifact",
            &artifact,
            "--id",
            id,
            "--version",
            &text(&spec["version"]),
            "--counter",
            &spec["counter"].to_string(),
            "--hardware",
            "T300",
            "--expires",
            "30d",
            "--key",
            &ws.path("key"),
            "--passphrase-file",
            &ws.path("pass"),
            "--out",
            &ws.path(out),
        ]
        .map(str::to_owned)
        .to_vec();
        for (component, version) in spec["provides"].as_object().expect("provides") {
            args.push("--provides".into());
            args.push(format!("{component}={}", text(version)));
        }
        for r in spec["requires"].as_array().expect("requires") {
            args.push("--requires".into());
            args.push(text(r));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        convoy_ok(&args);
    }
    write_hour_cycle_policy(
        ws.path("policy.json"),
        Some("\"hold_extension_secs\": 1800"),
    );
    ws
}

/// The embedded broker and `convoy sim` (with `faults`, if any) for a workspace.
struct Rig {
    url: String,
    _broker: Proc,
    _sim: Proc,
}

fn rig(ws: &SignedWorkspace, faults: Option<&str>) -> Rig {
    let p = |name: &str| ws.path(name);
    let (broker, port) = start_broker_process(ws.dir.path());
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut sim_args = vec![
        "sim".to_owned(),
        "--broker".into(),
        url.clone(),
        "--fleet".into(),
        p("fleet.json"),
        "--trust".into(),
        p("trust"),
        "--time-scale".into(),
        SCALE.into(),
        "--duration-secs".into(),
        "400".into(),
    ];
    if let Some(f) = faults {
        std::fs::write(p("faults.json"), f).expect("faults");
        sim_args.extend(["--faults".into(), p("faults.json")]);
    }
    let sim = Proc::spawn(&sim_args, p("sim.log"));
    Rig {
        url,
        _broker: broker,
        _sim: sim,
    }
}

/// `convoy rollout run` of rollout r1 over `rig`, with the prerequisite manifests when
/// `prerequisites`, plus `extra` arguments.
fn rollout_run(
    ws: &SignedWorkspace,
    rig: &Rig,
    prerequisites: bool,
    extra: &[&str],
) -> std::process::Output {
    let p = |name: &str| ws.path(name);
    let mut args: Vec<String> = [
        "rollout",
        "run",
        "--db",
        &p("cache.db"),
        "--broker",
        &rig.url,
        "--release",
        &p("release.json"),
        "--artifact",
        &p("fw.img"),
        "--trust",
        &p("trust"),
        "--policy",
        &p("policy.json"),
        "--time-scale",
        SCALE,
        "--rollout-id",
        "r1",
        "--operator",
        "alice",
        "--json",
    ]
    .map(str::to_owned)
    .to_vec();
    if prerequisites {
        for m in ["bl.json", "modem.json"] {
            args.extend(["--prerequisite-manifest".to_owned(), p(m)]);
        }
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    convoy(&args)
}

fn report_of(ws: &SignedWorkspace, out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}\nsim log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(ws.path("sim.log")).unwrap_or_default()
        )
    })
}

/// Runs the rollout against `convoy sim` (with `faults`, if any) on the embedded broker;
/// returns the JSON report.
fn run(ws: &SignedWorkspace, faults: Option<&str>) -> Value {
    let rig = rig(ws, faults);
    let out = rollout_run(ws, &rig, true, &["--max-wall-secs", "240"]);
    report_of(ws, &out)
}

/// The releases each device was offered, in order, from its history and the outbox.
fn offers(store: &Store, device_id: &str) -> Vec<String> {
    store
        .device_events(device_id)
        .expect("device history")
        .iter()
        .filter(|e| e.kind == "offer")
        .filter_map(|e| {
            let payload: Value = serde_json::from_str(&e.payload).ok()?;
            let command = store.command(payload["command_id"].as_str()?).ok()??;
            let body: Value = serde_json::from_str(&command.payload).ok()?;
            body["action"]["release_id"].as_str().map(str::to_owned)
        })
        .collect()
}

/// What each device of the prerequisite waves needs first, from the fleet before the run:
/// the bootloader when it is below 2.0, the modem when it is 1.1.x.
fn chains_needed(
    ws: &SignedWorkspace,
    log: &[convoy_core::rollout::RolloutEvent],
) -> BTreeMap<String, Vec<String>> {
    let fleet: Fleet =
        convoy::fleet_io::load_fleet(Path::new(&ws.path("fleet.json"))).expect("fleet");
    let rollout = Rollout::replay(log.to_vec()).expect("the log replays");
    let spec = rollout.spec();
    let mut needed = BTreeMap::new();
    for (w, wave) in spec.waves.iter().enumerate() {
        if rollout.wave_chain(w).is_empty() {
            assert!(
                !wave.name.starts_with("after-prerequisites"),
                "{}",
                wave.name
            );
            continue;
        }
        for id in &wave.device_ids {
            let d = fleet.device(id).expect("a fleet device");
            let mut chain = Vec::new();
            if d.component("bootloader")
                .is_some_and(|v| v < "2.0.0".parse().expect("version"))
            {
                chain.push(BL.to_owned());
            }
            if d.component("modem")
                .is_some_and(|v| v < "1.2.0".parse().expect("version"))
            {
                chain.push(MODEM.to_owned());
            }
            assert_eq!(
                chain,
                rollout.wave_chain(w),
                "{id}: the wave's chain is what it needs"
            );
            needed.insert(id.clone(), chain);
        }
    }
    needed
}

#[test]
fn devices_behind_get_their_prerequisites_in_order_then_the_target() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    let report = run(&ws, None);
    check_chains_delivered(&ws, &report, "r1");
}

/// The same from a saved plan: `convoy plan --json` with the fixture catalog writes the
/// prerequisite waves and their chains (`prerequisite_waves`), and `convoy rollout run --plan`
/// delivers them (before, a saved plan left the devices behind out of the rollout).
#[test]
fn a_saved_plan_carries_its_prerequisite_chains_to_the_engine() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    // The catalog's releases whose manifests the run is given (as when the engine plans).
    let fixture = fixture_catalog();
    let signed: Vec<&Value> = fixture
        .iter()
        .filter(|r| r["id"] == BL || r["id"] == MODEM)
        .collect();
    std::fs::write(
        ws.path("catalog.json"),
        serde_json::to_vec(&signed).expect("catalog"),
    )
    .expect("catalog file");
    let catalog = ws.path("catalog.json");
    // The planner takes the release's spec: the signed manifest's `signed.release`.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path("release.json")).expect("the manifest"),
    )
    .expect("manifest JSON");
    std::fs::write(
        ws.path("spec.json"),
        serde_json::to_vec(&manifest["signed"]["release"]).expect("spec"),
    )
    .expect("spec file");
    let plan = convoy_ok(&[
        "plan",
        "--fleet",
        &ws.path("fleet.json"),
        "--release",
        &ws.path("spec.json"),
        "--catalog",
        &catalog,
        "--policy",
        &ws.path("policy.json"),
        "--json",
    ]);
    let value: Value = serde_json::from_str(&plan).expect("the plan's JSON");
    let chained = value["prerequisite_waves"]
        .as_array()
        .expect("prerequisite_waves");
    assert!(
        chained
            .iter()
            .any(|w| w["prerequisites"].as_array().is_some_and(|p| !p.is_empty())),
        "{chained:?}"
    );
    std::fs::write(ws.path("plan.json"), &plan).expect("plan file");
    let rig = rig(&ws, None);
    let plan_file = ws.path("plan.json");
    let out = rollout_run(
        &ws,
        &rig,
        true,
        &["--plan", &plan_file, "--max-wall-secs", "240"],
    );
    check_chains_delivered(&ws, &report_of(&ws, &out), "r1");
}

/// Every device behind got its chain in order, each step confirmed before the next, then the
/// target, and ends on the versions they provide; the others got the target alone.
fn check_chains_delivered(ws: &SignedWorkspace, report: &Value, rollout_id: &str) {
    assert_eq!(report["final_state"], "completed", "{report:#}");
    let store = Store::open_existing(Path::new(&ws.path("cache.db"))).expect("cache");
    let log = store.rollout_log(rollout_id).expect("log");
    let needed = chains_needed(ws, &log);
    assert!(
        needed.values().any(|c| c == &[BL.to_owned()])
            && needed.values().any(|c| c.contains(&MODEM.to_owned())),
        "the fleet has devices behind on the bootloader and on the modem: {needed:?}"
    );
    let mut per_chain: BTreeMap<String, usize> = BTreeMap::new();
    for chain in needed.values() {
        *per_chain.entry(chain.join(" -> ")).or_default() += 1;
    }
    eprintln!(
        "devices per chain: {per_chain:?}; waves: {}",
        report["waves"]
    );
    let fleet = store.load_fleet().expect("fleet after the run");
    for (id, chain) in &needed {
        let mut expected = chain.clone();
        expected.push(TARGET.to_owned());
        assert_eq!(offers(&store, id), expected, "{id}: offers in chain order");
        let d = fleet.device(id).expect("device");
        if chain.contains(&BL.to_owned()) {
            assert_eq!(
                d.component("bootloader").map(|v| v.to_string()).as_deref(),
                Some("2.0.1"),
                "{id}"
            );
        }
        if chain.contains(&MODEM.to_owned()) {
            assert_eq!(
                d.component("modem").map(|v| v.to_string()).as_deref(),
                Some("1.3.0"),
                "{id}"
            );
        }
        assert_eq!(
            d.component("firmware").map(|v| v.to_string()).as_deref(),
            Some("2.5.0"),
            "{id}"
        );
    }
    // Devices of the other waves got the target alone.
    let rollout = Rollout::replay(log.clone()).expect("the log replays");
    for id in &rollout.state().device_ids {
        if !needed.contains_key(id) {
            assert_eq!(offers(&store, id), [TARGET.to_owned()], "{id}");
        }
        assert_eq!(rollout.device_state(id), Some(DeviceState::Healthy), "{id}");
    }
    // Each step was confirmed before the next was offered, in the log.
    let mut confirmed_at: BTreeMap<(u32, String), convoy_core::time::Timestamp> = BTreeMap::new();
    for e in &log {
        match &e.kind {
            EventKind::PrerequisiteConfirmed { device, release } => {
                confirmed_at.insert((*device, release.clone()), e.at);
            }
            EventKind::PrerequisiteOffered { devices, release } if release == MODEM => {
                for d in devices {
                    let id = &rollout.state().device_ids[*d as usize];
                    if needed[id].contains(&BL.to_owned()) {
                        assert!(
                            confirmed_at.contains_key(&(*d, BL.to_owned())),
                            "{id}: modem before bootloader confirmed"
                        );
                    }
                }
            }
            _ => {}
        }
    }
    assert!(report.get("prerequisite_stops").is_none(), "{report:#}");
}

#[test]
fn a_failing_prerequisite_stops_its_devices_there_counted_and_named() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    // The bootloader's install fails on every T300 of revision B.
    let report = run(
        &ws,
        Some(
            r#"{"faults": [{"release_version": "2.0.1", "match": {"model": "T300", "hw_rev": "B"}, "effect": "install_failure", "probability": 1.0}]}"#,
        ),
    );
    let store = Store::open_existing(Path::new(&ws.path("cache.db"))).expect("cache");
    let log = store.rollout_log("r1").expect("log");
    let needed = chains_needed(&ws, &log);
    let fleet_before: Fleet =
        convoy::fleet_io::load_fleet(Path::new(&ws.path("fleet.json"))).expect("fleet");
    let rollout = Rollout::replay(log).expect("the log replays");
    // Revision B devices with the bootloader in their chain, in waves that started.
    let doomed: Vec<&String> = needed
        .iter()
        .filter(|(id, chain)| {
            chain.contains(&BL.to_owned())
                && fleet_before.device(id).is_some_and(|d| d.hw_rev == "B")
                && rollout.device_state(id) != Some(DeviceState::Pending)
        })
        .map(|(id, _)| id)
        .collect();
    assert!(
        !doomed.is_empty(),
        "some bootloader-chain devices are revision B: {needed:?}"
    );
    let stops = report["prerequisite_stops"]
        .as_array()
        .unwrap_or_else(|| panic!("stops in the report: {report:#}"));
    assert_eq!(stops.len(), 1, "{report:#}");
    assert_eq!(stops[0]["release"], BL);
    let named: Vec<&str> = stops[0]["device_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(named, doomed, "{report:#}");
    assert_eq!(
        serde_json::to_value(rollout.prerequisite_stops()).expect("json"),
        report["prerequisite_stops"]
    );
    for id in &doomed {
        // Stopped there: offered the bootloader only, failed, still on its old bootloader.
        assert_eq!(offers(&store, id), [BL.to_owned()], "{id}");
        assert_eq!(rollout.device_state(id), Some(DeviceState::Failed), "{id}");
    }
    // Counted as failed devices of their wave, for the gates and the report.
    let failed: u64 = report["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .filter(|w| {
            w["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("after-prerequisites"))
        })
        .map(|w| w["failed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(failed, doomed.len() as u64, "{report:#}");
    // The wave's gates judged the failures like any others: the install-failure gate
    // stopped the rollout in that wave, before the next chain wave started.
    assert_eq!(report["final_state"], "paused", "{report:#}");
    assert!(
        report["phase"].to_string().contains("install_failure"),
        "{}",
        report["phase"]
    );
    // Named on the timeline, with the device's reason.
    let timeline = store.timeline("r1").expect("timeline");
    let entries: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "prerequisite.failed")
        .map(|e| e.payload.as_str())
        .collect();
    assert_eq!(entries.len(), doomed.len(), "{entries:?}");
    for id in &doomed {
        assert!(
            entries
                .iter()
                .any(|p| p.contains(id.as_str()) && p.contains("install failed")),
            "{id}: {entries:?}"
        );
    }
}

#[test]
fn a_tampered_prerequisite_manifest_refuses_the_run() {
    let _turn = convoy_e2e::shared();
    let ws = workspace();
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("bl.json")).expect("bl"))
            .expect("json");
    manifest["signed"]["release"]["counter"] = Value::from(99);
    std::fs::write(ws.path("tampered.json"), manifest.to_string()).expect("write");
    let out = convoy(&[
        "rollout",
        "run",
        "--db",
        &ws.path("cache.db"),
        "--broker",
        "mqtt://127.0.0.1:9",
        "--release",
        &ws.path("release.json"),
        "--trust",
        &ws.path("trust"),
        "--prerequisite-manifest",
        &ws.path("tampered.json"),
        "--rollout-id",
        "r1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("prerequisite manifest") && stderr.contains("tampered.json"),
        "{stderr}"
    );
    let store = Store::open_existing(Path::new(&ws.path("cache.db"))).expect("cache");
    assert!(
        store.rollout_log("r1").expect("log").is_empty(),
        "nothing recorded"
    );
}

/// A run that stops before the chains are done resumes them: without the prerequisite
/// manifests the resume refuses, naming the release; with them it delivers every chain in
/// order and completes.
#[test]
fn a_resumed_rollout_needs_its_prerequisite_manifests_and_finishes_the_chains() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    let rig = rig(&ws, None);
    let first = report_of(
        &ws,
        &rollout_run(&ws, &rig, true, &["--max-wall-secs", "4"]),
    );
    assert_eq!(first["final_state"], "timed_out", "{first:#}");
    let chain_waves = |r: &Value, key: &str| -> u64 {
        r["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .filter(|w| {
                w["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("after-prerequisites"))
            })
            .map(|w| w[key].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(
        chain_waves(&first, "confirmed") < chain_waves(&first, "devices"),
        "stopped before the chains were done: {first:#}"
    );
    let refused = rollout_run(&ws, &rig, false, &["--resume"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("prerequisite release t300-bl-2.0.1 has no verified manifest"),
        "{stderr}"
    );
    let report = report_of(
        &ws,
        &rollout_run(&ws, &rig, true, &["--resume", "--max-wall-secs", "240"]),
    );
    assert_eq!(report["final_state"], "completed", "{report:#}");
    let store = Store::open_existing(Path::new(&ws.path("cache.db"))).expect("cache");
    let log = store.rollout_log("r1").expect("log");
    let needed = chains_needed(&ws, &log);
    assert!(!needed.is_empty());
    for (id, chain) in &needed {
        let mut expected = chain.clone();
        expected.push(TARGET.to_owned());
        assert_eq!(offers(&store, id), expected, "{id}: offers in chain order");
    }
}

/// Issue 20, stricter defaults for boot-critical releases: when the engine plans (no
/// `--plan`), a release that installs a bootloader runs with the stricter gates `convoy plan`
/// shows for it, recorded in the rollout's log (before, only a plan file carried them).
#[test]
fn an_engine_planned_bootloader_release_runs_with_the_stricter_gates() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    let rig = rig(&ws, None);
    let p = |name: &str| ws.path(name);
    let out = convoy(&[
        "rollout",
        "run",
        "--db",
        &p("cache.db"),
        "--broker",
        &rig.url,
        "--release",
        &p("bl.json"),
        "--artifact",
        &p(&format!("{BL}.bin")),
        "--trust",
        &p("trust"),
        "--policy",
        &p("policy.json"),
        "--time-scale",
        SCALE,
        "--rollout-id",
        "rb",
        "--operator",
        "alice",
        "--json",
        "--max-wall-secs",
        "20",
    ]);
    let store = Store::open_existing(Path::new(&p("cache.db"))).expect("cache");
    let log = store.rollout_log("rb").expect("log");
    let Some(EventKind::Created { spec, .. }) = log.first().map(|e| &e.kind) else {
        panic!(
            "no rollout recorded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let gates: convoy_core::gates::GatePolicy =
        convoy::ops::plans::read_section(Path::new(&p("policy.json")), "gates").expect("gates");
    let planning: convoy_core::plan::PlanningPolicy =
        convoy::ops::plans::read_section(Path::new(&p("policy.json")), "planning")
            .expect("planning");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(p("bl.json")).expect("manifest"))
            .expect("manifest JSON");
    let release: convoy_core::release::ReleaseSpec =
        serde_json::from_value(manifest["signed"]["release"].clone()).expect("spec");
    let (_, stricter, boot) = convoy::ops::plans::for_release(&release, planning, gates.clone());
    assert!(boot.is_some(), "the bootloader release is boot-critical");
    assert_ne!(stricter, gates, "the defaults are stricter");
    assert_eq!(
        spec.gates, stricter,
        "the rollout runs with the stricter gates"
    );
}

/// A `convoy serve` on the workspace's cache (HTTP on 127.0.0.1) that dispatches approved
/// requests to the embedded broker at `broker`, with a dispatcher's and two approvers' tokens.
struct Serve {
    rt: tokio::runtime::Runtime,
    server: Option<convoy::serve::Server>,
    api: String,
    http: reqwest::Client,
    tokens: BTreeMap<&'static str, String>,
}

impl Serve {
    fn start(ws: &SignedWorkspace, broker: &str) -> Self {
        let mut tokens = BTreeMap::new();
        for (name, role) in [
            ("dana", "dispatcher"),
            ("alex", "approver"),
            ("sam", "approver"),
        ] {
            let token = convoy_ok(&[
                "serve",
                "token",
                "add",
                "--cache",
                &ws.path("cache.db"),
                "--operator",
                name,
                "--role",
                role,
            ]);
            tokens.insert(name, token.trim().to_owned());
        }
        let args = ws.path("dispatch.args");
        std::fs::write(
            &args,
            format!(
                "--broker\n{broker}\n--policy\n{}\n--time-scale\n{SCALE}\n--artifact\n{}\n--max-wall-secs\n240\n",
                ws.path("policy.json"),
                ws.path("fw.img")
            ),
        )
        .expect("dispatch settings");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut config = convoy::serve::ServeConfig::new(
            ws.path("cache.db").into(),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.trust = Some(ws.path("trust").into());
        config.rate_per_sec = 10_000.0;
        config.rate_burst = 10_000;
        config.dispatch =
            Some(convoy::serve::host::read_dispatch_args(Path::new(&args)).expect("dispatch"));
        let server = rt
            .block_on(convoy::serve::Server::start(config))
            .expect("server");
        let api = format!("{}/api/v1", server.base_url());
        Self {
            rt,
            server: Some(server),
            api,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("client"),
            tokens,
        }
    }

    fn post(&self, as_: &str, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        let url = format!("{}/{path}", self.api);
        self.rt.block_on(convoy_e2e::api::post(
            &self.http,
            &url,
            &self.tokens[as_],
            body.to_string(),
        ))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// Stores the target and the two prerequisite releases in the cache (`convoy release store`).
fn store_releases(ws: &SignedWorkspace) {
    ws.store_release();
    for m in ["bl.json", "modem.json"] {
        convoy_ok(&[
            "release",
            "store",
            &ws.path(m),
            "--trust",
            &ws.path("trust"),
            "--db",
            &ws.path("cache.db"),
        ]);
    }
}

/// Issue 20 on the request path: a request planned by the server with the prerequisite
/// releases of its cache freezes the prerequisite waves and their chains (shown in the request
/// and `convoy request show`); approved by two operators, the server dispatches it and every
/// device behind gets its chain in order, then the target.
#[test]
fn an_approved_request_delivers_its_prerequisite_chains_when_dispatched() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    store_releases(&ws);
    let rig = rig(&ws, None);
    let server = Serve::start(&ws, &rig.url);
    let (status, body) = server.post(
        "dana",
        "rollouts",
        &serde_json::json!({"release_id": TARGET, "rollout_id": "cr1", "prerequisites": [BL, MODEM]}),
    );
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    assert_eq!(
        body["prerequisite_releases"],
        serde_json::json!([BL, MODEM])
    );
    let chained: Vec<&Value> = body["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .filter(|w| w.get("prerequisites").is_some())
        .collect();
    assert!(
        chained
            .iter()
            .any(|w| w["prerequisites"] == serde_json::json!([BL]))
            && chained.iter().all(|w| w["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("after-prerequisites"))),
        "{body:#}"
    );
    // What approvers see from the command line too.
    let shown = convoy_ok(&["request", "show", "cr1", "--db", &ws.path("cache.db")]);
    assert!(
        shown.contains(&format!("installs first: {BL}"))
            && shown.contains(&format!("Prerequisite releases (manifests pinned, dispatched with the rollout): {BL}, {MODEM}")),
        "{shown}"
    );
    for who in ["alex", "sam"] {
        let (status, body) = server.post(who, "rollouts/cr1/approve", &serde_json::json!({}));
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
    let runs = server.server.as_ref().expect("server").take_runs();
    assert_eq!(runs.len(), 1, "the server dispatched cr1");
    let report = runs
        .into_iter()
        .next()
        .expect("one run")
        .join()
        .expect("the dispatched run");
    let report = serde_json::to_value(&report).expect("report JSON");
    check_chains_delivered(&ws, &report, "cr1");
}

/// A request's chains are refused before anything is recorded: a prerequisite wave naming a
/// device not in the fleet, a prerequisite release not stored in the cache (planned here or
/// named by a wave), and prerequisite waves without the waves they follow. A shape applies to
/// the prerequisite waves' soaks as to the others'.
#[test]
fn a_request_with_an_unknown_chain_device_or_a_prerequisite_not_in_the_cache_is_refused_and_shapes_apply_to_chains()
 {
    let _turn = convoy_e2e::shared();
    let ws = workspace();
    ws.store_release();
    // Only the bootloader's manifest is stored: the modem's is not.
    convoy_ok(&[
        "release",
        "store",
        &ws.path("bl.json"),
        "--trust",
        &ws.path("trust"),
        "--db",
        &ws.path("cache.db"),
    ]);
    let server = Serve::start(&ws, "mqtt://127.0.0.1:9");
    let fleet: Fleet =
        convoy::fleet_io::load_fleet(Path::new(&ws.path("fleet.json"))).expect("fleet");
    let ids: Vec<&str> = fleet
        .devices
        .iter()
        .filter(|d| d.model.as_str() == "T300")
        .map(|d| d.id.as_str())
        .collect();
    let cases = [
        (
            serde_json::json!({"release_id": TARGET, "rollout_id": "x1",
                "waves": [{"name": "canary", "device_ids": [ids[0]], "soak_secs": 60}],
                "prerequisite_waves": [{"name": "after-prerequisites-1", "device_ids": [ids[1], "ghost-7"], "soak_secs": 60, "prerequisites": [BL]}]}),
            "prerequisite_waves[0].device_ids[1]",
            "no device ghost-7",
        ),
        (
            serde_json::json!({"release_id": TARGET, "rollout_id": "x2",
                "waves": [{"name": "canary", "device_ids": [ids[0]], "soak_secs": 60}],
                "prerequisite_waves": [{"name": "after-prerequisites-1", "device_ids": [ids[1]], "soak_secs": 60, "prerequisites": [BL, MODEM]}]}),
            "prerequisite_waves[0].prerequisites[1]",
            "prerequisite release t300-modem-1.3.0 has no manifest in the server's cache",
        ),
        (
            serde_json::json!({"release_id": TARGET, "rollout_id": "x3", "prerequisites": [BL, MODEM]}),
            "prerequisites[1]",
            "prerequisite release t300-modem-1.3.0 has no manifest in the server's cache",
        ),
        (
            serde_json::json!({"release_id": TARGET, "rollout_id": "x5",
                "waves": [{"name": "fleet", "device_ids": [ids[0]], "soak_secs": 60}],
                "prerequisite_waves": [{"name": "canary", "device_ids": [ids[1]], "soak_secs": 60, "prerequisites": [BL]}]}),
            "prerequisite_waves[0].name",
            "a prerequisite wave is not the canary",
        ),
        (
            serde_json::json!({"release_id": TARGET, "rollout_id": "x4",
                "prerequisite_waves": [{"name": "after-prerequisites-1", "device_ids": [ids[1]], "soak_secs": 60, "prerequisites": [BL]}]}),
            "prerequisite_waves",
            "give \"waves\" too",
        ),
    ];
    for (body, field, words) in cases {
        let (status, answer) = server.post("dana", "rollouts", &body);
        assert_eq!(
            status,
            reqwest::StatusCode::BAD_REQUEST,
            "{body} -> {answer}"
        );
        assert_eq!(answer["field"], field, "{answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(words),
            "{answer}"
        );
    }
    let store = Store::open_existing(Path::new(&ws.path("cache.db"))).expect("cache");
    assert!(
        convoy::ops::requests::list(&store)
            .expect("requests")
            .is_empty(),
        "nothing recorded"
    );
    // The command line: a prerequisite not in the cache is refused naming it; one that is
    // gives the request its chains.
    let cli = |rollout_id: &str, prerequisite: &str| {
        convoy(&[
            "request",
            "create",
            "--release",
            TARGET,
            "--rollout-id",
            rollout_id,
            "--prerequisite",
            prerequisite,
            "--operator",
            "dana",
            "--db",
            &ws.path("cache.db"),
            "--trust",
            &ws.path("trust"),
            "--json",
        ])
    };
    let refused = cli("cli-1", MODEM);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "refused: prerequisites[0]: prerequisite release t300-modem-1.3.0 has no manifest"
        ),
        "{stderr}"
    );
    let made = cli("cli-2", BL);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Value = serde_json::from_slice(&made.stdout).expect("the request's JSON");
    assert_eq!(
        made["prerequisite_releases"],
        serde_json::json!([BL]),
        "{made:#}"
    );
    // A shape applies to the prerequisite waves too: accelerated halves their soaks as it
    // halves the others'.
    let (status, plain) = server.post(
        "dana",
        "rollouts",
        &serde_json::json!({"release_id": TARGET, "rollout_id": "plain", "prerequisites": [BL]}),
    );
    assert_eq!(status, reqwest::StatusCode::CREATED, "{plain}");
    let (status, fast) = server.post(
        "dana",
        "rollouts",
        &serde_json::json!({"release_id": TARGET, "rollout_id": "fast", "prerequisites": [BL], "shape": "accelerated"}),
    );
    assert_eq!(status, reqwest::StatusCode::CREATED, "{fast}");
    let waves = |v: &Value| v["waves"].as_array().expect("waves").clone();
    assert_eq!(waves(&plain).len(), waves(&fast).len());
    let mut chain_waves = 0;
    for (p, f) in waves(&plain).iter().zip(&waves(&fast)) {
        assert_eq!(p["name"], f["name"]);
        assert_eq!(p["prerequisites"], f["prerequisites"]);
        let soak = p["soak_secs"].as_i64().expect("soak");
        assert_eq!(
            f["soak_secs"].as_i64(),
            Some(convoy_core::risk::Shape::Accelerated.soak(soak)),
            "{p} / {f}"
        );
        if p.get("prerequisites").is_some() {
            chain_waves += 1;
        }
    }
    assert!(chain_waves > 0, "{plain:#}");
}

/// Issue 20, DDI devices in chain waves: the DDI side serves one release per run, so a DDI
/// device (tagged `link=ddi`) whose bootloader or modem is behind is excluded from its chain
/// wave, with the reason on the timeline and in its history, and is never offered the target
/// (nor assigned it over DDI, though it polls the engine's DDI endpoint throughout); the
/// MQTT devices of the same waves get their chains, then the target, and the rollout completes.
#[test]
fn a_ddi_device_behind_is_excluded_from_its_chain_never_offered_the_target() {
    let _turn = convoy_e2e::alone();
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    // Three T300s whose bootloader is behind, tagged `link=ddi` in the cache.
    let mut fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(p("fleet.json")).expect("fleet"))
            .expect("fleet JSON");
    let before: Fleet = convoy::fleet_io::load_fleet(Path::new(&p("fleet.json"))).expect("fleet");
    let behind: Vec<String> = before
        .devices
        .iter()
        .filter(|d| {
            d.model.as_str() == "T300"
                && d.component("bootloader")
                    .is_some_and(|v| v < "2.0.0".parse().expect("version"))
        })
        .map(|d| d.id.as_str().to_owned())
        .take(3)
        .collect();
    assert_eq!(
        behind.len(),
        3,
        "the fleet has T300s behind on the bootloader"
    );
    for d in fleet["devices"].as_array_mut().expect("devices") {
        if behind.iter().any(|id| d["id"] == id.as_str()) {
            d["tags"]["link"] = "ddi".into();
        }
    }
    std::fs::write(p("tagged-fleet.json"), fleet.to_string()).expect("fleet");
    convoy_ok(&[
        "fleet",
        "import",
        &p("tagged-fleet.json"),
        "--db",
        &p("cache.db"),
    ]);
    std::fs::write(p("gateway"), "chain-gateway-secret\n").expect("gateway token");
    let ddi_port = convoy_e2e::free_port();
    let rig = rig(&ws, None);
    // One DDI device polls the engine's endpoint for as long as the run lasts.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let done = std::sync::Arc::clone(&done);
        let controller = behind[0].clone();
        std::thread::spawn(move || -> (u32, u32) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = hawkbit::ddi::Client::new(
                    &format!("http://127.0.0.1:{ddi_port}"),
                    "DEFAULT",
                    &controller,
                    hawkbit::ddi::ClientAuthorization::GatewayToken("chain-gateway-secret".into()),
                    None,
                    None,
                    Some(std::time::Duration::from_secs(10)),
                )
                .expect("ddi client");
                let (mut answered, mut offered) = (0, 0);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(reply) = client.poll().await {
                        answered += 1;
                        if reply.update().is_some() {
                            offered += 1;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                (answered, offered)
            })
        })
    };
    let listen = format!("127.0.0.1:{ddi_port}");
    let gateway = p("gateway");
    let out = rollout_run(
        &ws,
        &rig,
        true,
        &[
            "--max-wall-secs",
            "240",
            "--ddi-listen",
            &listen,
            "--ddi-gateway-token-file",
            &gateway,
            "--ddi-sleep-secs",
            "1",
        ],
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (answered, offered) = poller.join().expect("the poller");
    let report = report_of(&ws, &out);
    assert_eq!(report["final_state"], "completed", "{report:#}");
    assert!(answered > 0, "the DDI device reached the engine's endpoint");
    assert_eq!(offered, 0, "no deployment for a DDI device behind");
    let store = Store::open_existing(Path::new(&p("cache.db"))).expect("cache");
    let log = store.rollout_log("r1").expect("log");
    let rollout = Rollout::replay(log).expect("the log replays");
    let in_chain_wave = |id: &str| {
        rollout.spec().waves.iter().enumerate().any(|(w, wave)| {
            !rollout.wave_chain(w).is_empty() && wave.device_ids.iter().any(|d| d == id)
        })
    };
    let chained: Vec<&String> = behind.iter().filter(|id| in_chain_wave(id)).collect();
    assert!(!chained.is_empty(), "a tagged device is in a chain wave");
    for id in &chained {
        assert!(offers(&store, id).is_empty(), "{id}: offered nothing");
        let i = rollout
            .state()
            .device_ids
            .binary_search(id)
            .expect("in the rollout");
        assert!(rollout.state().devices[i].excluded, "{id}: excluded");
        let history: Vec<String> = store
            .device_events(id)
            .expect("history")
            .iter()
            .map(|e| e.kind.clone())
            .collect();
        assert!(
            history.iter().any(|k| k == "ddi.not_offered")
                && !history.iter().any(|k| k == "offer" || k == "ddi.assigned"),
            "{id}: {history:?}"
        );
    }
    let timeline = store.timeline("r1").expect("timeline");
    assert!(
        timeline.iter().any(|e| e.kind == "devices.excluded"
            && e.cause.starts_with("engine: ")
            && e.cause
                .contains("DDI device is not offered prerequisite releases")
            && e.payload.contains("DDI devices of prerequisite waves")),
        "the reason on the timeline: {:?}",
        timeline
            .iter()
            .filter(|e| e.kind == "devices.excluded")
            .collect::<Vec<_>>()
    );
    // The MQTT devices of the chain waves got their chains, then the target.
    let needed = chains_needed(&ws, &store.rollout_log("r1").expect("log"));
    let mut delivered = 0;
    for (id, chain) in &needed {
        if behind.contains(id) {
            continue;
        }
        let mut expected = chain.clone();
        expected.push(TARGET.to_owned());
        assert_eq!(offers(&store, id), expected, "{id}");
        delivered += 1;
    }
    assert!(delivered > 0);
}
