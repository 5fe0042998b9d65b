//! Tests of the cache against real SQLite files in a temporary directory.

use super::audit::ChainProblem;
use super::*;
use convoy_core::fleet::Fleet;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::collections::BTreeMap;

const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn fleet(devices: usize, seed: u64) -> Fleet {
    generate(&SynthOptions {
        devices,
        seed,
        now: NOW,
    })
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("nested").join("cache.db")).expect("open");
    (dir, store)
}

fn entry(action: &str, n: i64) -> AuditEntry {
    AuditEntry {
        time: NOW.plus_secs(n),
        actor: "operator:alice".to_owned(),
        action: action.to_owned(),
        payload: serde_json::json!({ "n": n, "note": "wave 2 | \"quoted\"" }),
    }
}

#[test]
fn synthetic_fleet_round_trips_exactly() {
    let (_dir, mut store) = temp_store();
    let original = fleet(3_000, 11);
    let counts = store.replace_fleet(&original, None).expect("save");
    assert_eq!(counts.inserted, 3_000);
    let loaded = store.load_fleet().expect("load");
    assert_eq!(loaded, original);
    // Saving again updates in place: same fleet, no duplicates.
    let counts = store.replace_fleet(&original, None).expect("save again");
    assert_eq!((counts.inserted, counts.updated), (0, 3_000));
    assert_eq!(store.load_fleet().expect("reload"), original);
    assert_eq!(store.integrity_check().expect("check"), ["ok"]);
}

#[test]
fn load_works_while_another_connection_holds_the_write_lock() {
    let (_dir, mut store) = temp_store();
    let original = fleet(700, 12);
    store.replace_fleet(&original, None).expect("save");
    let writer = rusqlite::Connection::open(store.path()).expect("second connection");
    writer
        .execute_batch("BEGIN IMMEDIATE; UPDATE devices SET model = 'uncommitted' WHERE dev = 1;")
        .expect("long write");
    // Writers cannot be paused: the load falls back to one snapshot on one thread and does
    // not see the uncommitted change.
    assert_eq!(store.load_fleet().expect("load"), original);
    writer.execute_batch("ROLLBACK").expect("rollback");
    assert_eq!(store.load_fleet_sequentially().expect("load"), original);
}

#[test]
fn replace_fleet_removes_devices_not_in_the_new_fleet() {
    let (_dir, mut store) = temp_store();
    store.replace_fleet(&fleet(500, 2), None).expect("save 500");
    let smaller = fleet(200, 2);
    store.replace_fleet(&smaller, None).expect("save 200");
    assert_eq!(store.load_fleet().expect("load"), smaller);
    assert_eq!(store.load_fleet_sequentially().expect("rows"), smaller);
    assert_eq!(store.device_count().expect("count"), 200);
}

#[test]
fn replace_fleet_writes_the_snapshot_and_the_counts_of_the_new_fleet() {
    let (_dir, mut store) = temp_store();
    let first = fleet(1_200, 21);
    store.replace_fleet(&first, None).expect("save");
    // A device with an update state in its history, kept in the next fleet.
    let kept = first.devices[7].id.clone();
    store
        .append_device_events(&[events::NewDeviceEvent {
            device_id: kept.clone(),
            rollout_id: Some("r1".to_owned()),
            time: NOW,
            kind: "reverted".to_owned(),
            payload: serde_json::json!({}),
        }])
        .expect("event");
    // The next fleet: fewer devices, one of them changed, and new ones (above the bulk size).
    let mut next = fleet(1_500, 22);
    for d in &mut next.devices {
        d.id = format!("N{}", d.id);
    }
    next.devices.extend(first.devices[..300].iter().cloned());
    if let Some(changed) = next.devices.last_mut() {
        changed.hw_rev = "Q".into();
    }
    let next = Fleet::new(next.depots, next.devices);
    store.replace_fleet(&next, None).expect("replace");
    let (loaded, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("load");
    assert_eq!(source, devices::FleetSource::Snapshot, "no row load needed");
    assert_eq!(loaded, next);
    assert_eq!(store.load_fleet_sequentially().expect("rows"), next);
    assert!(
        summary::read(&store.conn).expect("read").is_some(),
        "the counts are valid without a rebuild"
    );
    let summary = query::fleet_summary(&store).expect("summary");
    assert_eq!(
        summary,
        query::fleet_summary_by_scans(&store).expect("scans")
    );
    assert_eq!(summary.devices, 1_800);
    assert_eq!(
        summary.by_state.get("reverted"),
        Some(&1),
        "{kept}'s state comes from its history: {:?}",
        summary.by_state
    );
}

#[test]
fn a_devices_components_column_reads_back_and_a_damaged_one_is_named() {
    let (_dir, mut store) = temp_store();
    let mut f = fleet(50, 23);
    f.devices[3]
        .components
        .insert("can \"gateway\"", "7.0.1".parse().expect("version"));
    store.replace_fleet(&f, None).expect("save");
    let d = &f.devices[3];
    let detail = query::device(&store, &d.id, 5)
        .expect("detail")
        .expect("the device");
    let expected: BTreeMap<String, String> = d
        .components
        .iter()
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect();
    assert_eq!(detail.components, expected);
    assert_eq!(store.load_fleet_sequentially().expect("rows"), f);
    // A column that is not a JSON object of versions: the reads name the device and refuse
    // it, without a panic. (While the summary's counts are kept, their trigger's
    // `json_extract` refuses malformed JSON in the write itself: they are set aside here to
    // put it there.)
    store
        .conn
        .execute("UPDATE fleet_counts_state SET valid = 0", [])
        .expect("counts aside");
    for bad in ["not json", "{\"firmware\": \"x.y\"}", "{\"firmware\": 3}"] {
        store
            .conn
            .execute(
                "UPDATE devices SET components = ?1 WHERE id = ?2",
                [bad, d.id.as_str()],
            )
            .expect("damage");
        let err = store.load_fleet_sequentially().expect_err(bad);
        assert!(
            format!("{err:#}").contains(&format!("components of device {}", d.id)),
            "{bad}: {err:#}"
        );
    }
    let err = query::device(&store, &d.id, 5).expect_err("not an object of strings");
    assert!(format!("{err:#}").contains(&d.id), "{err:#}");
}

#[test]
fn replacing_the_fleet_deletes_telemetry_of_removed_devices() {
    let (_dir, mut store) = temp_store();
    let big = fleet(20, 2);
    store.replace_fleet(&big, None).expect("save");
    let samples: Vec<Sample> = big
        .devices
        .iter()
        .map(|d| Sample {
            device: d.id.clone(),
            time: NOW,
            metric: "battery_pct".to_owned(),
            value: 1.0,
        })
        .collect();
    assert_eq!(store.ingest(&samples).expect("ingest").stored, 20);
    store.replace_fleet(&fleet(5, 2), None).expect("shrink");
    assert_eq!(store.sample_count().expect("count"), 5);
    let rollups: i64 = store
        .conn
        .query_row("SELECT count(*) FROM rollup_device", [], |r| r.get(0))
        .expect("rollups");
    assert_eq!(rollups, 5);
    // A device id that comes back later gets a fresh history, not a removed device's.
    store.replace_fleet(&big, None).expect("grow");
    assert_eq!(store.sample_count().expect("count"), 5);
}

#[test]
fn upsert_updates_known_devices_and_keeps_others() {
    let (_dir, mut store) = temp_store();
    let base = fleet(100, 5);
    store.replace_fleet(&base, None).expect("save");
    let mut changed = base.devices[10].clone();
    changed.hw_rev = "Z".into();
    changed.components.remove("modem");
    changed.tags.insert("owner", "depot-7".into());
    let mut new = base.devices[0].clone();
    new.id = "NEW-1".to_owned();
    let counts = store
        .upsert_fleet(
            &[],
            &[changed.clone(), new.clone()],
            Some(&entry("fleet.import", 1)),
        )
        .expect("upsert");
    assert_eq!((counts.inserted, counts.updated), (1, 1));
    let loaded = store.load_fleet().expect("load");
    assert_eq!(loaded.len(), 101);
    assert_eq!(loaded.device(&changed.id), Some(&changed));
    assert_eq!(loaded.device("NEW-1"), Some(&new));
    assert_eq!(loaded.device(&base.devices[11].id), Some(&base.devices[11]));
    assert_eq!(store.audit_entries(None).expect("audit").len(), 1);
}

#[test]
fn default_path_follows_the_environment_rules() {
    use std::ffi::OsString;
    use std::path::PathBuf;
    let os = |s: &str| Some(OsString::from(s));
    let check = |db, xdg, home, want: &str| {
        assert_eq!(
            default_path_from(db, xdg, home).expect("path"),
            PathBuf::from(want)
        );
    };
    check(os("/a/c.db"), os("/x"), os("/h"), "/a/c.db");
    check(None, os("/x"), os("/h"), "/x/convoy/convoy.db");
    check(os(""), os(""), os("/h"), "/h/.local/share/convoy/convoy.db");
    assert!(default_path_from(None, None, None).is_err());
    let p = resolve_path(Some(std::path::Path::new("/tmp/x.db"))).expect("explicit");
    assert_eq!(p, PathBuf::from("/tmp/x.db"));
}

#[test]
fn upgrades_a_populated_cache_from_every_earlier_version() {
    let zoned = fleet(300, 8);
    assert!(
        schema::MIGRATIONS[(schema::DEPOT_ZONES_VERSION - 1) as usize]
            .contains("depots ADD COLUMN time_zone"),
        "DEPOT_ZONES_VERSION names the step that adds the column"
    );
    for k in 0..schema::LATEST_VERSION {
        // Depots name their time zone only from the version that added the column.
        let mut original = zoned.clone();
        if k < schema::DEPOT_ZONES_VERSION {
            for d in &mut original.depots {
                d.time_zone = None;
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let mut old = Store::open_at_version(&path, k).expect("old schema");
            assert_eq!(old.schema_version().expect("version"), k);
            if k >= 1 {
                // Everything version 1 knows: the fleet, the audit log, the outbox, settings.
                old.replace_fleet(&original, Some(&entry("fleet.generate", 0)))
                    .expect("populate fleet");
                old.commit_decision(
                    &entry("dispatch.offer", 1),
                    &[OutboxCommand {
                        device_id: original.devices[0].id.clone(),
                        kind: "offer".to_owned(),
                        payload: serde_json::json!({"release": "r1"}),
                    }],
                )
                .expect("populate outbox");
                old.set_setting("map.tiles", "/srv/tiles.mbtiles")
                    .expect("setting");
            }
            if k >= 2 {
                let d = &original.devices[1];
                old.ingest(&[Sample {
                    device: d.id.clone(),
                    time: NOW,
                    metric: "battery_pct".to_owned(),
                    value: 50.0,
                }])
                .expect("populate telemetry");
            }
        }
        let mut store = Store::open(&path).expect("upgrade");
        assert_eq!(store.schema_version().expect("v"), schema::LATEST_VERSION);
        assert_eq!(store.integrity_check().expect("check"), ["ok"], "from v{k}");
        if k >= 1 {
            assert_eq!(store.load_fleet().expect("load"), original, "from v{k}");
            assert_eq!(store.verify_audit().expect("verify").problem, None);
            assert_eq!(store.pending(10).expect("pending").len(), 1);
            assert_eq!(
                store.setting("map.tiles").expect("get").as_deref(),
                Some("/srv/tiles.mbtiles")
            );
        }
        if k >= 2 {
            assert_eq!(store.sample_count().expect("samples"), 1);
        }
        // What the newer versions added works on the upgraded file.
        store
            .append_event(
                "r1",
                NOW,
                "wave.started",
                "operator:alice",
                &serde_json::json!({}),
            )
            .expect("v3 events");
        if k == 0 {
            store.replace_fleet(&original, None).expect("fleet");
        }
        let d = &original.devices[2];
        let report = store
            .ingest(&[Sample {
                device: d.id.clone(),
                time: NOW,
                metric: "crash_count".to_owned(),
                value: 1.0,
            }])
            .expect("v2 telemetry");
        assert_eq!(report.stored, 1);
    }
}

#[test]
fn refuses_a_cache_from_a_newer_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("set");
    }
    let err = Store::open(&path).expect_err("newer schema");
    assert!(format!("{err:#}").contains("99"), "{err:#}");
}

fn audit_store(n: i64) -> (tempfile::TempDir, Store) {
    let (dir, mut store) = temp_store();
    for i in 1..=n {
        store
            .append_audit(&entry("rollout.step", i))
            .expect("append");
    }
    (dir, store)
}

#[test]
fn audit_chain_verifies_when_untouched() {
    let (_dir, store) = audit_store(5);
    let report = store.verify_audit().expect("verify");
    assert_eq!(report.entries, 5);
    assert_eq!(report.problem, None);
    let entries = store.audit_entries(None).expect("entries");
    assert_eq!(entries[0].prev_hash, audit::GENESIS_HASH);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(store.audit_entries(Some(2)).expect("tail")[0].seq, 4);
}

#[test]
fn audit_detects_an_edited_entry() {
    let (_dir, store) = audit_store(5);
    store
        .conn
        .execute("UPDATE audit SET payload = '{\"n\":99}' WHERE seq = 3", [])
        .expect("tamper");
    assert_eq!(
        store.verify_audit().expect("verify").problem,
        Some(ChainProblem::Edited { seq: 3 })
    );
}

#[test]
fn audit_detects_an_edit_that_was_rehashed() {
    let (_dir, store) = audit_store(5);
    // A careful forger recomputes entry 2's hash; entry 3 no longer links to it.
    let e = &store.audit_entries(None).expect("entries")[1];
    let forged = audit::entry_hash(
        e.seq,
        e.time,
        "operator:mallory",
        &e.action,
        &e.payload,
        &e.prev_hash,
    );
    store
        .conn
        .execute(
            "UPDATE audit SET actor = 'operator:mallory', hash = ?1 WHERE seq = 2",
            [&forged],
        )
        .expect("tamper");
    assert_eq!(
        store.verify_audit().expect("verify").problem,
        Some(ChainProblem::Edited { seq: 2 })
    );
}

#[test]
fn audit_detects_deleted_entries() {
    let (_dir, store) = audit_store(6);
    store
        .conn
        .execute("DELETE FROM audit WHERE seq IN (3, 4)", [])
        .expect("tamper");
    let problem = store.verify_audit().expect("verify").problem;
    assert_eq!(
        problem,
        Some(ChainProblem::Deleted {
            first_missing: 3,
            seq: 5
        })
    );
    assert_eq!(
        problem.expect("problem").to_string(),
        "entries 3 to 4 were deleted"
    );
}

#[test]
fn audit_detects_entries_deleted_from_the_end() {
    let (_dir, store) = audit_store(6);
    store
        .conn
        .execute("DELETE FROM audit WHERE seq >= 5", [])
        .expect("tamper");
    assert_eq!(
        store.verify_audit().expect("verify").problem,
        Some(ChainProblem::TruncatedEnd {
            last_seq: 4,
            head_seq: 6
        })
    );
}

#[test]
fn audit_detects_reordered_entries() {
    let (_dir, store) = audit_store(5);
    // Swap entries 2 and 4 by renumbering them.
    store
        .conn
        .execute_batch(
            "UPDATE audit SET seq = -2 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 4;
             UPDATE audit SET seq = 4 WHERE seq = -2;",
        )
        .expect("tamper");
    assert_eq!(
        store.verify_audit().expect("verify").problem,
        Some(ChainProblem::Reordered { seq: 2 })
    );
}

fn commands(devices: &[&str]) -> Vec<OutboxCommand> {
    devices
        .iter()
        .map(|d| OutboxCommand {
            device_id: (*d).to_owned(),
            kind: "offer".to_owned(),
            payload: serde_json::json!({"release": "fw-2.4.2", "manifest": "abc"}),
        })
        .collect()
}

#[test]
fn decision_and_commands_commit_together_with_unique_ids() {
    let (_dir, mut store) = temp_store();
    let a = store
        .commit_decision(
            &entry("dispatch.offer", 1),
            &commands(&["CV1", "CV2", "CV3"]),
        )
        .expect("decide a");
    let b = store
        .commit_decision(&entry("dispatch.offer", 2), &commands(&["CV1"]))
        .expect("decide b");
    assert_eq!(a.command_ids.len(), 3);
    let mut all: Vec<&String> = a.command_ids.iter().chain(&b.command_ids).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "ids are unique across decisions");
    assert_eq!(a.command_ids[1], outbox::command_id(&a.audit.hash, 1));
    let pending = store.pending(10).expect("pending");
    let ids: Vec<&str> = pending.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            &a.command_ids[0],
            &a.command_ids[1],
            &a.command_ids[2],
            &b.command_ids[0]
        ]
    );
    assert!(pending.iter().all(|c| c.state == CommandState::Pending));
    assert_eq!(pending[3].audit_seq, b.audit.seq);
}

#[test]
fn a_failed_decision_leaves_neither_entry_nor_commands() {
    let (_dir, mut store) = temp_store();
    store
        .commit_decision(&entry("dispatch.offer", 1), &commands(&["CV1"]))
        .expect("first");
    // Make the second command's insert fail inside the transaction.
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.device_id = 'BAD'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
    let err = store
        .commit_decision(&entry("dispatch.offer", 2), &commands(&["CV2", "BAD"]))
        .expect_err("must fail");
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    assert_eq!(store.audit_entries(None).expect("audit").len(), 1);
    assert_eq!(store.pending(10).expect("pending").len(), 1);
    assert_eq!(store.verify_audit().expect("verify").problem, None);
}

#[test]
fn sent_commands_are_resent_until_acked_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    let ids = {
        let mut store = Store::open(&path).expect("open");
        let d = store
            .commit_decision(&entry("dispatch.offer", 1), &commands(&["CV1", "CV2"]))
            .expect("decide");
        store.mark_sent(&d.command_ids[0], NOW).expect("sent");
        store.mark_sent(&d.command_ids[1], NOW).expect("sent");
        assert!(store.mark_acked(&d.command_ids[0], NOW).expect("ack"));
        assert!(!store.mark_acked(&d.command_ids[0], NOW).expect("dup ack"));
        d.command_ids
    };
    let mut store = Store::open(&path).expect("reopen");
    let pending = store.pending(10).expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, ids[1]);
    assert_eq!(pending[0].state, CommandState::Sent);
    assert_eq!(pending[0].attempts, 1);
    let before = store
        .command(&ids[1])
        .expect("get")
        .expect("exists")
        .payload;
    store.mark_sent(&ids[1], NOW).expect("resend");
    let after = store.command(&ids[1]).expect("get").expect("exists");
    assert_eq!(after.payload, before, "a resend carries the same payload");
    assert_eq!(after.attempts, 2);
    store
        .mark_sent(&ids[0], NOW)
        .expect("late resend of an acked one");
    assert_eq!(
        store.command(&ids[0]).expect("get").expect("exists").state,
        CommandState::Acked
    );
    assert!(store.mark_acked("no-such-id", NOW).is_err());
}

/// Reference rollup computed the slow way, straight from the samples.
fn reference_rollup(
    samples: &[Sample],
    device: &str,
    metric: &str,
    bucket_secs: i64,
) -> Vec<(i64, u64, f64, f64, f64)> {
    let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for s in samples {
        if s.device == device && s.metric == metric && seen.insert(s.time) {
            let t = s.time.secs();
            buckets
                .entry(t - t.rem_euclid(bucket_secs))
                .or_default()
                .push(s.value);
        }
    }
    buckets
        .into_iter()
        .map(|(b, v)| {
            let sum: f64 = v.iter().sum();
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (b, v.len() as u64, sum / v.len() as f64, min, max)
        })
        .collect()
}

#[test]
fn ingest_builds_device_and_cohort_rollups() {
    let (_dir, mut store) = temp_store();
    let f = fleet(50, 3);
    store.replace_fleet(&f, None).expect("save");
    let mut rng = convoy_core::rng::SeededRng::derive(4, 0);
    let mut samples = Vec::new();
    for i in 0..2_000i64 {
        let d = &f.devices[(i % 7) as usize];
        samples.push(Sample {
            device: d.id.clone(),
            time: NOW.plus_secs(i * 13),
            metric: if i % 3 == 0 {
                "crash_count"
            } else {
                "battery_pct"
            }
            .to_owned(),
            value: (rng.range_inclusive(0, 1000) as f64) / 10.0,
        });
    }
    // Two batches, the second overlapping the first: overlapping samples are duplicates.
    let first = store.ingest(&samples[..1_200]).expect("batch 1");
    let second = store.ingest(&samples[1_000..]).expect("batch 2");
    assert_eq!(first.rejected, []);
    assert_eq!(
        first.stored + second.stored,
        store.sample_count().expect("count") as usize
    );
    assert_eq!(second.duplicates, 200 + (first.duplicates));
    let d0 = &f.devices[0].id;
    let got = store
        .device_series(d0, "battery_pct", NOW, NOW.plus_secs(100_000))
        .expect("series");
    let want = reference_rollup(&samples, d0, "battery_pct", 3600);
    assert!(want.len() >= 5, "the samples span several hours");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.bucket, g.count, g.min, g.max), (w.0, w.1, w.3, w.4));
        assert!((g.mean - w.2).abs() < 1e-9, "{g:?} vs {w:?}");
    }
    // The cohort of device 0 sums every device with the same model and firmware.
    let d = &f.devices[0];
    let cohort = format!("{}/{}", d.model, d.firmware().expect("firmware"));
    let members: Vec<&str> = f.devices[..7]
        .iter()
        .filter(|x| x.model == d.model && x.firmware() == d.firmware())
        .map(|x| x.id.as_str())
        .collect();
    let cohort_series = store
        .cohort_series(&cohort, "battery_pct", NOW, NOW.plus_secs(100_000))
        .expect("cohort");
    let mut expected: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for m in &members {
        for (bucket, count, mean, _, _) in reference_rollup(&samples, m, "battery_pct", 60) {
            let e = expected.entry(bucket).or_default();
            e.0 += count;
            e.1 += mean * count as f64;
        }
    }
    assert_eq!(cohort_series.len(), expected.len());
    for (p, (bucket, (count, sum))) in cohort_series.iter().zip(&expected) {
        assert_eq!((p.bucket, p.count), (*bucket, *count));
        assert!((p.mean * p.count as f64 - sum).abs() < 1e-6);
    }
}

#[test]
fn ingest_notices_a_fleet_replaced_by_another_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    let mut ingester = Store::open(&path).expect("open");
    let f = fleet(3, 1);
    ingester.replace_fleet(&f, None).expect("save");
    let sample = |device: &str, secs| Sample {
        device: device.to_owned(),
        time: NOW.plus_secs(secs),
        metric: "battery_pct".to_owned(),
        value: 1.0,
    };
    let last = f.devices[2].id.clone();
    assert_eq!(
        ingester.ingest(&[sample(&last, 0)]).expect("ingest").stored,
        1
    );
    // Another process drops the last device and adds a new one, which may reuse its key.
    let mut other = Store::open(&path).expect("second");
    let mut changed = f.clone();
    let mut newcomer = changed.devices.pop().expect("device");
    newcomer.id = "NEW-1".to_owned();
    changed.devices.push(newcomer);
    other.replace_fleet(&changed, None).expect("replace");
    let report = ingester
        .ingest(&[sample(&last, 60), sample("NEW-1", 60)])
        .expect("ingest");
    assert_eq!(report.rejected, [(0, format!("unknown device {last}"))]);
    assert_eq!(report.stored, 1);
}

#[test]
fn ingest_rejects_unknown_devices_and_bad_metrics_but_keeps_the_rest() {
    let (_dir, mut store) = temp_store();
    let f = fleet(5, 3);
    store.replace_fleet(&f, None).expect("save");
    let ok = Sample {
        device: f.devices[0].id.clone(),
        time: NOW,
        metric: "battery_pct".to_owned(),
        value: 3.0,
    };
    let ghost = Sample {
        device: "GHOST".to_owned(),
        ..ok.clone()
    };
    let bad_metric = Sample {
        metric: "Battery %".to_owned(),
        ..ok.clone()
    };
    let report = store
        .ingest(&[ghost, ok.clone(), bad_metric])
        .expect("ingest");
    assert_eq!(report.stored, 1);
    assert_eq!(report.rejected.len(), 2);
    assert_eq!(report.rejected[0], (0, "unknown device GHOST".to_owned()));
    assert_eq!(report.rejected[1].0, 2);
    assert!(store.has_sample(&ok).expect("has"));
    assert_eq!(store.prune_samples(NOW.plus_secs(1)).expect("prune"), 1);
    assert_eq!(store.sample_count().expect("count"), 0);
    assert_eq!(
        store
            .device_series(&ok.device, "battery_pct", NOW, NOW.plus_secs(60))
            .expect("series")
            .len(),
        1,
        "rollups outlive pruned samples"
    );
}

#[test]
fn sample_lines_parse_both_time_forms_and_reject_bad_ones() {
    let a = Sample::parse_line(
        r#"{"device":"CV1","time":"2026-11-23T06:00:00Z","metric":"battery_pct","value":81.5}"#,
    )
    .expect("rfc3339");
    let b = Sample::parse_line(
        r#"{"device":"CV1","time":1795413600,"metric":"battery_pct","value":81.5}"#,
    )
    .expect("secs");
    assert_eq!(a, b);
    assert_eq!(
        a.time,
        Timestamp::parse_rfc3339("2026-11-23T06:00:00Z").expect("t")
    );
    for bad in [
        r#"{"device":"CV1","time":"yesterday","metric":"x","value":1}"#,
        r#"{"device":"","time":1,"metric":"x","value":1}"#,
        r#"{"device":"CV1","time":1,"metric":"x","value":"high"}"#,
        r#"{"device":"CV1","time":1,"metric":"X Y","value":1}"#,
        "not json",
    ] {
        assert!(Sample::parse_line(bad).is_err(), "{bad}");
    }
}

#[test]
fn timelines_keep_order_and_export_in_three_formats() {
    let (_dir, mut store) = temp_store();
    for (i, (kind, cause)) in [
        ("wave.started", "operator:alice"),
        ("gate.hold", "crash_rate 2.1x baseline | cohort T300/2.4.1"),
        ("rollout.paused", "gate"),
    ]
    .iter()
    .enumerate()
    {
        let seq = store
            .append_event(
                "r-7",
                NOW.plus_secs(i as i64 * 60),
                kind,
                cause,
                &serde_json::json!({"wave": 1}),
            )
            .expect("append");
        assert_eq!(seq, i as i64 + 1);
    }
    store
        .append_event("other", NOW, "wave.started", "x", &serde_json::json!(null))
        .expect("other rollout");
    let events = store.timeline("r-7").expect("timeline");
    assert_eq!(events.len(), 3);
    let render = |f| {
        let mut out = Vec::new();
        events::write_timeline(&mut out, &events, f).expect("write");
        String::from_utf8(out).expect("utf-8")
    };
    let csv = render(events::TimelineFormat::Csv);
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[1][4], "crash_rate 2.1x baseline | cohort T300/2.4.1");
    assert_eq!(&rows[2][2], "2026-11-23T00:02:00Z");
    let json: serde_json::Value =
        serde_json::from_str(&render(events::TimelineFormat::Json)).expect("json");
    assert_eq!(json[1]["kind"], "gate.hold");
    assert_eq!(json[1]["payload"]["wave"], 1);
    let md = render(events::TimelineFormat::Md);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[3].contains("baseline \\| cohort"), "{}", lines[3]);
}

#[test]
fn device_events_are_kept_per_device_in_order() {
    let (_dir, mut store) = temp_store();
    for (device, kind) in [
        ("CV1", "offered"),
        ("CV2", "offered"),
        ("CV1", "installed"),
        ("CV1", "reverted"),
    ] {
        store
            .append_device_event(device, Some("r-1"), NOW, kind, &serde_json::json!({}))
            .expect("append");
    }
    store
        .append_device_event(
            "CV1",
            None,
            NOW.plus_secs(5),
            "report.rejected",
            &serde_json::json!({"why": "bad signature"}),
        )
        .expect("append");
    let events = store.device_events("CV1").expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["offered", "installed", "reverted", "report.rejected"]
    );
    assert_eq!(events[3].rollout_id, None);
    assert_eq!(events[3].payload, r#"{"why":"bad signature"}"#);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.device_events("CV2").expect("events").len(), 1);
}

/// A writer that finds the write lock taken for longer than its busy handler waits tries again
/// rather than fail (issue 19: the demo's engine died of "database is locked" while another
/// writer held the cache).
#[test]
fn a_write_outlasts_another_connection_holding_the_lock_longer_than_the_busy_timeout() {
    let (_dir, mut store) = temp_store();
    store.replace_fleet(&fleet(50, 3), None).expect("save");
    // Shorter than the other writer's hold, so the first attempts fail with SQLITE_BUSY.
    store
        .conn
        .busy_timeout(Duration::from_millis(50))
        .expect("busy timeout");
    let path = store.path().to_path_buf();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let other = rusqlite::Connection::open(&path).expect("second connection");
        other
            .execute_batch("BEGIN IMMEDIATE; UPDATE devices SET model = 'held' WHERE dev = 1;")
            .expect("take the write lock");
        locked_tx.send(()).expect("tell the test");
        // The fault under test: a long write (an import) holding the lock for a while.
        std::thread::sleep(Duration::from_millis(600));
        other.execute_batch("COMMIT").expect("commit");
    });
    locked_rx.recv().expect("the lock is held");
    let began = std::time::Instant::now();
    store
        .append_event(
            "ro-1",
            NOW,
            "rollout.created",
            "alice",
            &serde_json::json!({}),
        )
        .expect("the write waits its turn instead of failing");
    assert!(
        began.elapsed() >= Duration::from_millis(100),
        "the write had to wait for the other writer"
    );
    holder.join().expect("holder");
    assert_eq!(store.timeline_len("ro-1").expect("timeline"), 1);
    let held: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM devices WHERE model = 'held'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(held, 1, "the other writer's change is kept");
}

/// Three writers on one cache at once (two engines and a console, each with its own
/// connection and a short busy handler) all finish every write.
#[test]
fn concurrent_writers_on_one_cache_all_finish() {
    let (_dir, mut store) = temp_store();
    let base = fleet(200, 4);
    store.replace_fleet(&base, None).expect("save");
    let path = store.path().to_path_buf();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = path.clone();
            let devices = base.devices.clone();
            std::thread::spawn(move || {
                let mut s = Store::open(&path).expect("open");
                s.conn
                    .busy_timeout(Duration::from_millis(5))
                    .expect("busy timeout");
                for i in 0..40 {
                    let batch: Vec<_> = devices
                        .iter()
                        .skip(i * 5)
                        .take(5)
                        .cloned()
                        .map(|mut d| {
                            d.battery_pct = Some(u8::try_from(w * 10 + 1).expect("small"));
                            d
                        })
                        .collect();
                    s.upsert_fleet(&[], &batch, None).expect("devices written");
                    s.append_event(
                        &format!("ro-{w}"),
                        NOW.plus_secs(i64::try_from(i).expect("small")),
                        "device",
                        "engine",
                        &serde_json::json!({ "i": i }),
                    )
                    .expect("timeline written");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer died");
    }
    for w in 0..3 {
        assert_eq!(store.timeline_len(&format!("ro-{w}")).expect("len"), 40);
    }
    assert_eq!(store.integrity_check().expect("check"), ["ok"]);
}
