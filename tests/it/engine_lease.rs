//! Issue 16, item 7: one engine per rollout. `convoy rollout run` against `convoy sim` over
//! the embedded broker (each its own process, as in `engine.rs`); while it runs, second
//! engines for the same rollout (`--resume`, and a fresh start) are refused naming the running
//! one; after the first is killed with SIGKILL, its lease expires and a resume takes over.
//! The lease's lifetime is shortened with `CONVOY_ENGINE_LEASE_SECS`.

use convoy_e2e::{
    Proc, SignedWorkspace, WorkspaceSpec, convoy_bin, start_broker_process, write_hour_cycle_policy,
};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Simulated seconds per wall second: slow enough that the first run is still in its canary's
/// soak (an hour, a minute of wall time) while the test tries second engines.
const SCALE: &str = "60";
/// The lease's lifetime in the test (renewed every third of it).
const LEASE_SECS: &str = "6";

fn wall_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// The lease of rollout r1: (pid, host, expires_ms), if any.
fn lease(db: &str) -> Option<(u32, String, i64)> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        "SELECT pid, host, expires_ms FROM engine_leases WHERE rollout_id = 'r1'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

#[test]
fn a_second_engine_for_a_live_rollout_is_refused_and_a_killed_ones_lease_is_taken_over() {
    let _turn = convoy_e2e::alone();
    let ws = SignedWorkspace::new(&WorkspaceSpec {
        devices: 150,
        seed: 7,
        artifact_bytes: 50_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    });
    let p = |name: &str| ws.path(name);
    write_hour_cycle_policy(p("policy.json"), None);
    let (_broker, port) = start_broker_process(ws.dir.path());
    let url = format!("mqtt://127.0.0.1:{port}");
    let (fleet, trust) = (p("fleet.json"), p("trust"));
    let _sim = Proc::spawn(
        &[
            "sim",
            "--broker",
            &url,
            "--fleet",
            &fleet,
            "--trust",
            &trust,
            "--time-scale",
            SCALE,
            "--duration-secs",
            "300",
        ],
        ws.dir.path().join("sim.log"),
    );
    let db = p("cache.db");
    let (release, policy, artifact) = (p("release.json"), p("policy.json"), p("fw.img"));
    let engine = |extra: &[&str], max_wall: &str| -> Command {
        let mut cmd = Command::new(convoy_bin());
        cmd.env("CONVOY_ENGINE_LEASE_SECS", LEASE_SECS)
            .args([
                "rollout",
                "run",
                "--db",
                &db,
                "--broker",
                &url,
                "--release",
                &release,
                "--artifact",
                &artifact,
                "--trust",
                &trust,
                "--policy",
                &policy,
                "--time-scale",
                SCALE,
                "--rollout-id",
                "r1",
                "--operator",
                "alice",
                "--max-wall-secs",
                max_wall,
                "--json",
            ])
            .args(extra);
        cmd
    };
    let mut first = Proc(
        engine(&[], "120")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the first engine"),
    );
    let first_pid = first.0.id();
    // The first engine holds the lease once it has started.
    let started = Instant::now();
    while lease(&db).is_none_or(|(pid, _, _)| pid != first_pid) {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "the first engine never took its lease"
        );
        assert!(
            first.0.try_wait().expect("wait").is_none(),
            "the first engine ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, host, first_expiry_ms) = lease(&db).expect("the lease");

    // Second engines while the first runs: each refused, naming the running one. Three resumes
    // and a fresh start, the last one more than a lease lifetime after the first took it (so
    // the lease was renewed meanwhile).
    let mut attempts = 0;
    let mut refused = 0;
    let try_second =
        |extra: &[&str]| -> Output { engine(extra, "20").output().expect("a second engine") };
    let mut outputs = Vec::new();
    for extra in [&["--resume"][..], &[], &["--resume"]] {
        outputs.push(try_second(extra));
    }
    // Until the lease as first taken would have expired, and the first engine renewed it.
    convoy_e2e::wait_for(
        "the first engine's lease to outlive its first lifetime, renewed",
        Duration::from_secs(30),
        || {
            assert!(
                first.0.try_wait().expect("wait").is_none(),
                "the first engine ended"
            );
            wall_ms() > first_expiry_ms
                && lease(&db)
                    .is_some_and(|(pid, _, expires)| pid == first_pid && expires > wall_ms())
        },
    );
    outputs.push(try_second(&["--resume"]));
    for out in &outputs {
        attempts += 1;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("already being run by another engine")
                && err.contains(&format!("pid {first_pid}"))
                && err.contains(&format!("host {host}"))
                && err.contains("since "),
            "a second engine while the first runs: {}\n{err}",
            out.status
        );
        refused += 1;
    }
    assert!(
        first.0.try_wait().expect("wait").is_none(),
        "the first engine still runs"
    );

    // SIGKILL: no destructor runs, the lease stays until it expires.
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    let (_, _, expires_ms) = lease(&db).expect("a killed engine leaves its lease");
    if wall_ms() + 1_500 < expires_ms {
        attempts += 1;
        let out = try_second(&["--resume"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if wall_ms() < expires_ms {
            assert!(
                !out.status.success() && err.contains(&format!("pid {first_pid}")),
                "resumed before the killed engine's lease expired: {err}"
            );
            refused += 1;
        } else {
            // Slow machine: the attempt outlived the lease; it counts as neither.
            attempts -= 1;
        }
    }
    // Wait for the lease's expiry, then resume: it takes over.
    let started = Instant::now();
    while wall_ms() <= expires_ms {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = engine(&["--resume"], "3")
        .output()
        .expect("the resumed engine");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("took over the expired engine lease")
            && err.contains(&format!("pid {first_pid}")),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report from the resumed run ({e}): {err}"));
    assert!(
        report["notes"]
            .to_string()
            .contains("resumed from the cache"),
        "{report}"
    );
    // It released the lease when it ended.
    assert_eq!(lease(&db), None, "the resumed run released its lease");
    eprintln!(
        "one engine per rollout: {attempts} second engines tried while the lease was live, {refused} refused; the expired lease taken over"
    );
    assert_eq!(attempts, refused);
}
