//! The cache through the real binary: import and export, the audit trail, telemetry ingest,
//! timelines, and the default cache location.

use convoy::fleet_io;
use convoy::store::Store;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_e2e::{convoy, convoy_bin, convoy_ok};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const NOW: &str = "2026-11-23T00:00:00Z";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/fleet")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn generate_db(dir: &Path, devices: usize) -> PathBuf {
    let db = dir.join("fleet.db");
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        &devices.to_string(),
        "--seed",
        "4",
        "--now",
        NOW,
        "--out",
        s(&db),
    ]);
    db
}

#[test]
fn generate_into_the_cache_loads_back_the_same_fleet() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = generate_db(dir.path(), 2_000);
    let expected = generate(&SynthOptions {
        devices: 2_000,
        seed: 4,
        now: Timestamp::parse_rfc3339(NOW).expect("now"),
    });
    assert_eq!(fleet_io::load_fleet(&db).expect("load"), expected);
    // A path that is not a cache is an error, not a new empty fleet.
    let err = fleet_io::load_fleet(&dir.path().join("typo.db")).expect_err("missing");
    assert!(format!("{err:#}").contains("typo.db"), "{err:#}");
}

#[test]
fn export_then_import_is_the_identity_for_csv_and_json() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = generate_db(dir.path(), 1_500);
    for format in ["csv", "json"] {
        let first = dir.path().join(format!("first.{format}"));
        convoy_ok(&[
            "fleet",
            "export",
            "--format",
            format,
            "--db",
            s(&db),
            "--out",
            s(&first),
        ]);
        let copy = dir.path().join(format!("copy-{format}.db"));
        let out = convoy_ok(&["fleet", "import", s(&first), "--db", s(&copy)]);
        assert!(
            out.contains("1500 new, 0 updated, 0 rows rejected"),
            "{out}"
        );
        let second = convoy_ok(&["fleet", "export", "--format", format, "--db", s(&copy)]);
        assert_eq!(
            std::fs::read_to_string(&first).expect("read"),
            second,
            "{format} export of the imported copy differs"
        );
        let original = fleet_io::load_fleet(&db).expect("original");
        let copied = fleet_io::load_fleet(&copy).expect("copy");
        assert_eq!(copied.devices, original.devices, "{format}");
        if format == "json" {
            assert_eq!(copied.depots, original.depots);
        }
        // Re-importing updates instead of duplicating.
        let out = convoy_ok(&["fleet", "import", s(&first), "--db", s(&copy)]);
        assert!(out.contains("0 new, 1500 updated"), "{out}");
        assert_eq!(fleet_io::load_fleet(&copy).expect("again").len(), 1_500);
    }
}

#[test]
fn bad_rows_are_reported_with_line_and_reason_and_good_rows_imported() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let run = convoy(&[
        "fleet",
        "import",
        s(&fixture("depot-bad-rows.csv")),
        "--db",
        s(&db),
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let reported: Vec<(u64, String)> = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(": line ")?.1;
            let (n, reason) = rest.split_once(": ")?;
            Some((n.parse().ok()?, reason.to_owned()))
        })
        .collect();
    let lines: Vec<u64> = reported.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 12], "{stderr}");
    for (n, needle) in [
        (3, "satellite"),
        (4, "two.four"),
        (5, "battery_pct 181"),
        (6, "last_seen"),
        (7, "12 fields"),
        (8, "duplicate id VAN-0001 (first on line 2)"),
        (9, "id is empty"),
        (12, "lat 95"),
    ] {
        let reason = &reported.iter().find(|(l, _)| *l == n).expect("line").1;
        assert!(reason.contains(needle), "line {n}: {reason}");
    }
    let fleet = fleet_io::load_fleet(&db).expect("load");
    let ids: Vec<&str> = fleet.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["VAN-0001", "VAN-0009", "VAN-0011"]);
    assert_eq!(fleet.device("VAN-0009").expect("9").position.lat, 48.2);
    assert_eq!(
        fleet.device("VAN-0001").expect("1").tag("carrier"),
        Some("telekom")
    );
    // The same file through --fleet is refused whole, naming the first bad line.
    let err = fleet_io::load_fleet(&fixture("depot-bad-rows.csv")).expect_err("bad rows");
    assert!(format!("{err:#}").contains("line 3"), "{err:#}");
}

#[test]
fn json_inventories_take_both_device_shapes() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let run = convoy(&[
        "fleet",
        "import",
        s(&fixture("depot-small.json")),
        "--db",
        s(&db),
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("line 11: device 2: invalid connectivity"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 22: device 4: hw_rev is missing"),
        "{stderr}"
    );
    let fleet = fleet_io::load_fleet(&db).expect("load");
    assert_eq!(fleet.len(), 2);
    assert_eq!(fleet.depots.len(), 1);
    let gw = fleet.device("GW-7001").expect("nested shape");
    assert_eq!(gw.free_storage_bytes, 2_147_483_648);
    assert_eq!(gw.tag("owner"), Some("st-anne-hospital"));
    let van = fleet.device("VAN-0001").expect("flat shape");
    assert_eq!(
        van.component("bootloader").map(|v| v.to_string()),
        Some("2.0.1".into())
    );
    // The CSV inventory of the same depot updates VAN-0001 and GW-7001 and adds the others.
    let out = convoy_ok(&[
        "fleet",
        "import",
        s(&fixture("depot-small.csv")),
        "--db",
        s(&db),
    ]);
    assert!(out.contains("2 new, 2 updated"), "{out}");
}

fn raw(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).expect("open raw")
}

#[test]
fn audit_verify_passes_then_names_the_tampered_entry() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = generate_db(dir.path(), 50);
    for _ in 0..3 {
        convoy_ok(&[
            "fleet",
            "import",
            s(&fixture("depot-small.csv")),
            "--db",
            s(&db),
        ]);
    }
    let out = convoy_ok(&["audit", "verify", "--db", s(&db)]);
    assert!(out.contains("audit log ok: 4 entries"), "{out}");
    let log: serde_json::Value =
        serde_json::from_str(&convoy_ok(&["audit", "log", "--db", s(&db), "--json"]))
            .expect("json");
    assert_eq!(log[0]["action"], "fleet.generate");
    assert_eq!(log[3]["action"], "fleet.import");
    assert_eq!(log[3]["prev_hash"], log[2]["hash"]);

    let check = |needle: &str| {
        let run = convoy(&["audit", "verify", "--db", s(&db)]);
        assert!(!run.status.success(), "verify must fail: {needle}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(needle), "{err}");
    };
    raw(&db)
        .execute(
            "UPDATE audit SET actor = 'operator:mallory' WHERE seq = 2",
            [],
        )
        .expect("edit");
    check("broken at entry 2: entry 2 was edited");
    let conn = raw(&db);
    conn.execute(
        "UPDATE audit SET actor = ?1 WHERE seq = 2",
        [log[1]["actor"].as_str().expect("actor")],
    )
    .expect("undo");
    conn.execute("DELETE FROM audit WHERE seq = 3", [])
        .expect("delete");
    check("broken at entry 3: entry 3 was deleted");
}

#[test]
fn telemetry_ingest_reports_bad_lines_and_is_idempotent() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = generate_db(dir.path(), 20);
    let file = dir.path().join("samples.jsonl");
    let mut text = String::new();
    for i in 0..25 {
        writeln!(
            text,
            "{{\"device\":\"CV{:07}\",\"time\":{},\"metric\":\"battery_pct\",\"value\":{}}}",
            i % 5,
            1_795_392_000 + i * 10,
            50 + i
        )
        .expect("format");
    }
    text.push_str("{\"device\":\"CV0000001\",\"time\":\"soon\",\"metric\":\"x\",\"value\":1}\n");
    text.push_str("{\"device\":\"NOPE\",\"time\":1,\"metric\":\"x\",\"value\":1}\n");
    std::fs::write(&file, text).expect("write");
    let run = convoy(&[
        "telemetry",
        "ingest",
        s(&file),
        "--db",
        s(&db),
        "--batch",
        "10",
    ]);
    assert!(run.status.success());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stdout.starts_with("committed lines 1-10: 10 stored"),
        "{stdout}"
    );
    assert!(stderr.contains("line 26:"), "{stderr}");
    assert!(stderr.contains("line 27: unknown device NOPE"), "{stderr}");
    assert!(
        stderr.contains("25 stored, 0 duplicates, 2 rejected"),
        "{stderr}"
    );
    let run = convoy(&["telemetry", "ingest", s(&file), "--db", s(&db)]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("0 stored, 25 duplicates"), "{stderr}");
    let store = Store::open(&db).expect("open");
    assert_eq!(store.sample_count().expect("count"), 25);
}

#[test]
fn rollout_timeline_exports_markdown() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = generate_db(dir.path(), 5);
    {
        let mut store = Store::open(&db).expect("open");
        let t = Timestamp::parse_rfc3339(NOW).expect("t");
        store
            .append_event(
                "r-1",
                t,
                "wave.started",
                "operator:alice",
                &serde_json::json!({"wave": 1}),
            )
            .expect("event");
        store
            .append_event(
                "r-1",
                t.plus_secs(3600),
                "gate.hold",
                "crash_rate above baseline",
                &serde_json::json!({}),
            )
            .expect("event");
    }
    let md = convoy_ok(&[
        "rollout",
        "timeline",
        "--rollout",
        "r-1",
        "--format",
        "md",
        "--db",
        s(&db),
    ]);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(
        lines[2],
        "| 1 | 2026-11-23T00:00:00Z | wave.started | operator:alice | {\"wave\":1} |"
    );
    assert!(
        lines[3].contains("| gate.hold | crash_rate above baseline |"),
        "{md}"
    );
    let run = convoy(&[
        "rollout",
        "timeline",
        "--rollout",
        "nope",
        "--format",
        "csv",
        "--db",
        s(&db),
    ]);
    assert!(!run.status.success());
}

#[test]
fn the_default_cache_lives_under_xdg_data_home() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = Command::new(convoy_bin())
        .args(["fleet", "import", s(&fixture("depot-small.csv"))])
        .env_remove("CONVOY_DB")
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let db = dir.path().join("convoy").join("convoy.db");
    assert_eq!(fleet_io::load_fleet(&db).expect("default cache").len(), 4);
    let other = dir.path().join("elsewhere.db");
    let run = Command::new(convoy_bin())
        .args(["fleet", "import", s(&fixture("depot-small.csv"))])
        .env("CONVOY_DB", &other)
        .output()
        .expect("run");
    assert!(run.status.success());
    assert!(other.is_file());
}
