//! Crash safety: real processes doing fleet import, telemetry ingest and dispatch against one
//! cache file are killed with SIGKILL at random points, many times. After every kill the cache
//! must pass `PRAGMA integrity_check`, hold everything the process reported as committed, and
//! hold no command or sample twice.
//!
//! Kill points are drawn from a seeded generator over the duration of one uninterrupted run
//! measured first, so they fall across the whole run on fast and slow machines alike.

use convoy::fleet_io;
use convoy::store::{Sample, Store};
use convoy_core::fleet::Device;
use convoy_core::rng::SeededRng;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_e2e::convoy_bin;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many times each scenario is killed.
const KILLS: usize = 20;

/// What one run printed, and whether it was killed before it finished.
struct Run {
    killed: bool,
    /// Complete lines only: a line cut by the kill is dropped.
    lines: Vec<String>,
    elapsed: Duration,
}

/// Runs `cmd`, killing it (SIGKILL) after `kill_after` if it is still running.
fn run(cmd: &mut Command, kill_after: Option<Duration>) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("read stdout");
        text
    });
    let mut killed = false;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if kill_after.is_some_and(|k| started.elapsed() >= k) {
            // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no rollback runs.
            child.kill().expect("kill");
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().expect("wait");
    let text = reader.join().expect("reader");
    if !killed {
        assert!(status.success(), "run failed: {status}\n{text}");
    }
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if !text.ends_with('\n') {
        lines.pop();
    }
    Run {
        killed,
        lines,
        elapsed: started.elapsed(),
    }
}

fn kill_points(seed: u64, full: Duration) -> Vec<Duration> {
    let mut rng = SeededRng::derive(seed, 0);
    let full_ms = full.as_millis().max(20) as i64;
    (0..KILLS)
        .map(|_| Duration::from_millis(rng.range_inclusive(1, full_ms) as u64))
        .collect()
}

fn assert_sound(db: &Path) -> Store {
    let store = Store::open(db).expect("reopen after kill");
    assert_eq!(store.integrity_check().expect("integrity"), ["ok"]);
    let report = store.verify_audit().expect("verify");
    assert_eq!(report.problem, None, "audit chain after a kill");
    store
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn inventory(dir: &Path, seed: u64, devices: usize) -> (PathBuf, Vec<Device>) {
    let fleet = generate(&SynthOptions {
        devices,
        seed,
        now: Timestamp::from_secs(1_795_392_000),
    });
    let path = dir.join(format!("inventory-{seed}.csv"));
    fleet_io::save_fleet(&path, &fleet).expect("write inventory");
    (path, fleet.devices)
}

#[test]
fn killed_imports_leave_the_old_fleet_or_the_new_one() {
    let _turn = convoy_e2e::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    // Two inventories with the same ids and different contents: every import changes rows.
    let files = [
        inventory(dir.path(), 1, 4_000),
        inventory(dir.path(), 2, 4_000),
    ];
    let import = |db: &Path, file: &Path| {
        let mut cmd = Command::new(convoy_bin());
        cmd.args(["fleet", "import", s(file), "--db", s(db)]);
        cmd
    };
    let full = run(
        &mut import(&dir.path().join("scratch.db"), &files[0].0),
        None,
    )
    .elapsed;
    let db = dir.path().join("cache.db");
    let mut state: Option<usize> = None;
    let mut runs = 0;
    for (i, at) in kill_points(1, full).into_iter().enumerate() {
        let which = i % 2;
        let r = run(&mut import(&db, &files[which].0), Some(at));
        runs += 1;
        let store = assert_sound(&db);
        let loaded = store.load_fleet().expect("load").devices;
        let now_state = if loaded.is_empty() {
            None
        } else if loaded == files[0].1 {
            Some(0)
        } else if loaded == files[1].1 {
            Some(1)
        } else {
            panic!("after kill {i} the cache holds a mix of two imports");
        };
        if !r.killed || r.lines.iter().any(|l| l.starts_with("imported")) {
            assert_eq!(now_state, Some(which), "a reported import is in the cache");
        } else {
            assert!(
                now_state == state || now_state == Some(which),
                "an unfinished import left neither the old nor the new fleet"
            );
        }
        let imports = store
            .audit_entries(None)
            .expect("audit")
            .iter()
            .filter(|e| e.action == "fleet.import")
            .count();
        assert!(imports <= runs, "more import entries than imports");
        state = now_state;
    }
}

#[test]
fn killed_telemetry_ingest_loses_nothing_reported_and_counts_nothing_twice() {
    let _turn = convoy_e2e::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    let (inv, devices) = inventory(dir.path(), 3, 300);
    let mut samples = Vec::new();
    let mut text = String::new();
    for i in 0..8_000i64 {
        let s = Sample {
            device: devices[(i % 300) as usize].id.clone(),
            time: Timestamp::from_secs(1_795_392_000 + i / 3),
            metric: ["battery_pct", "crash_count", "rssi_dbm"][(i % 3) as usize].to_owned(),
            value: ((i * 37) % 1000) as f64 / 10.0,
        };
        text.push_str(&serde_json::to_string(&s).expect("json"));
        text.push('\n');
        samples.push(s);
    }
    let file = dir.path().join("samples.jsonl");
    std::fs::write(&file, text).expect("write samples");
    let ingest = |db: &Path| {
        let mut cmd = Command::new(convoy_bin());
        cmd.args([
            "telemetry",
            "ingest",
            s(&file),
            "--db",
            s(db),
            "--batch",
            "400",
        ]);
        cmd
    };
    for db in ["scratch.db", "cache.db"] {
        let mut cmd = Command::new(convoy_bin());
        cmd.args(["fleet", "import", s(&inv), "--db", s(&dir.path().join(db))]);
        assert!(cmd.status().expect("import").success());
    }
    let full = run(&mut ingest(&dir.path().join("scratch.db")), None).elapsed;
    let db = dir.path().join("cache.db");
    let mut reported: BTreeSet<usize> = BTreeSet::new();
    for at in kill_points(2, full) {
        let r = run(&mut ingest(&db), Some(at));
        for line in &r.lines {
            let Some(range) = line
                .strip_prefix("committed lines ")
                .and_then(|l| l.split(':').next())
            else {
                continue;
            };
            let (a, b) = range.split_once('-').expect("range");
            let (a, b): (usize, usize) = (a.parse().expect("a"), b.parse().expect("b"));
            reported.extend(a..=b);
        }
        let store = assert_sound(&db);
        for line in &reported {
            assert!(
                store.has_sample(&samples[line - 1]).expect("query"),
                "sample of reported line {line} is missing after a kill"
            );
        }
        check_rollups(&store);
    }
    // A last uninterrupted run completes the file; nothing is stored twice.
    run(&mut ingest(&db), None);
    let store = assert_sound(&db);
    assert_eq!(store.sample_count().expect("count"), samples.len() as u64);
    check_rollups(&store);
}

/// Every rollup row equals the aggregate of the raw samples it covers, so a batch replayed
/// after a crash was not counted twice.
fn check_rollups(store: &Store) {
    let conn = rusqlite::Connection::open(store.path()).expect("a second connection to the cache");
    let bad: i64 = conn
        .query_row(
            "SELECT count(*) FROM rollup_device r LEFT JOIN
               (SELECT dev, metric, time - time % 3600 AS bucket, count(*) AS c, sum(value) AS s
                FROM samples GROUP BY 1, 2, 3) a
             USING (dev, metric, bucket)
             WHERE a.c IS NULL OR a.c != r.count OR abs(a.s - r.sum) > 1e-6",
            [],
            |r| r.get(0),
        )
        .expect("compare device rollups");
    assert_eq!(bad, 0, "device rollups disagree with the samples");
    let (groups, rollups, cohort_total, samples): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM samples GROUP BY dev, metric, time - time % 3600)),
                    (SELECT count(*) FROM rollup_device),
                    (SELECT coalesce(sum(count), 0) FROM rollup_cohort),
                    (SELECT count(*) FROM samples)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("totals");
    assert_eq!(groups, rollups);
    assert_eq!(
        cohort_total, samples,
        "cohort rollups count every sample once"
    );
}

fn worker_bin() -> PathBuf {
    let bin = convoy_bin()
        .parent()
        .expect("profile dir")
        .join("examples")
        .join(format!(
            "store_crash_worker{}",
            std::env::consts::EXE_SUFFIX
        ));
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "convoy", "--example", "store_crash_worker"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building store_crash_worker failed");
    }
    bin
}

#[test]
fn killed_dispatch_never_loses_an_ack_or_duplicates_a_command() {
    const DECISIONS: usize = 40;
    let _turn = convoy_e2e::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = |db: &Path, inbox: &Path| {
        let mut cmd = Command::new(worker_bin());
        cmd.args([s(db), s(inbox), &DECISIONS.to_string()]);
        cmd
    };
    let full = run(
        &mut worker(
            &dir.path().join("scratch.db"),
            &dir.path().join("scratch.inbox"),
        ),
        None,
    )
    .elapsed;
    let (db, inbox) = (dir.path().join("cache.db"), dir.path().join("inbox"));
    let mut decided: HashMap<usize, Vec<String>> = HashMap::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut points = kill_points(3, full);
    points.push(Duration::from_hours(1)); // the last run completes
    for at in points {
        let r = run(&mut worker(&db, &inbox), Some(at));
        for line in &r.lines {
            let mut parts = line.split(' ');
            match parts.next() {
                Some("decided") => {
                    let n: usize = parts.next().expect("n").parse().expect("n");
                    let ids: Vec<String> = parts.map(str::to_owned).collect();
                    assert!(
                        decided.insert(n, ids).is_none(),
                        "decision {n} reported twice"
                    );
                }
                Some("acked") => {
                    let id = parts.next().expect("id").to_owned();
                    assert!(acked.insert(id.clone()), "command {id} acknowledged twice");
                }
                _ => {}
            }
        }
        let store = assert_sound(&db);
        check_dispatch(&store, &inbox, &decided, &acked);
    }
    let store = assert_sound(&db);
    // A decision committed just before a kill is in the cache but was never reported; the
    // restarted worker resumes after it rather than taking it again.
    let logged: i64 = rusqlite::Connection::open(store.path())
        .expect("a second connection to the cache")
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'dispatch.offer'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(logged as usize, DECISIONS);
    assert!(decided.len() <= DECISIONS && decided.len() >= DECISIONS / 2);
    assert!(store.pending(10).expect("pending").is_empty());
    let commands: i64 = rusqlite::Connection::open(store.path())
        .expect("a second connection to the cache")
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert_eq!(commands as usize, DECISIONS * 3);
}

fn check_dispatch(
    store: &Store,
    inbox: &Path,
    decided: &HashMap<usize, Vec<String>>,
    acked: &BTreeSet<String>,
) {
    let conn = rusqlite::Connection::open(store.path()).expect("a second connection to the cache");
    // Each reported decision is in the log once, with all its commands.
    for (n, ids) in decided {
        let entries: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit WHERE action = 'dispatch.offer' AND payload = ?1",
                [format!("{{\"decision\":{n}}}")],
                |r| r.get(0),
            )
            .expect("audit");
        assert_eq!(entries, 1, "decision {n}");
        for (part, id) in ids.iter().enumerate() {
            let cmd = store.command(id).expect("query").expect("reported command");
            assert_eq!(cmd.payload, format!("{{\"decision\":{n},\"part\":{part}}}"));
        }
    }
    for id in acked {
        let cmd = store.command(id).expect("query").expect("acked command");
        assert_eq!(cmd.state, convoy::store::CommandState::Acked, "{id}");
    }
    // No effect was enqueued twice under different ids, and no decision was taken twice.
    let dup: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT payload FROM outbox GROUP BY device_id, payload
             HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .expect("dups");
    assert_eq!(dup, 0, "a command was enqueued twice");
    let dup: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT payload FROM audit WHERE action = 'dispatch.offer'
             GROUP BY payload HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .expect("dups");
    assert_eq!(dup, 0, "a decision was taken twice");
    // What devices received: a repeated id always carries the same payload, and one effect
    // never arrives under two ids.
    let text = std::fs::read_to_string(inbox).unwrap_or_default();
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    let mut by_effect: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        let (id, effect) = line.split_once(' ').expect("inbox line");
        assert_eq!(
            *by_id.entry(id).or_insert(effect),
            effect,
            "id {id} resent differently"
        );
        assert_eq!(
            *by_effect.entry(effect).or_insert(id),
            id,
            "{effect} sent under two ids"
        );
        let cmd = store
            .command(id)
            .expect("query")
            .expect("delivered command exists");
        assert!(effect.ends_with(&cmd.payload));
    }
}
