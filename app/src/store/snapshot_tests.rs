//! Tests of the fleet snapshot: it gives exactly the fleet the rows give, it is never used once
//! a write has touched the devices (their components included), and a damaged part makes the
//! load fall back to the rows instead of panicking or returning a wrong fleet.

use super::devices::FleetSource;
use super::snapshot::{self, Unusable};
use super::{AuditEntry, Store};
use convoy_core::fleet::{Fleet, SmallMap};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;

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
    let store = Store::open(&dir.path().join("cache.db")).expect("open");
    (dir, store)
}

/// Makes the cache hold `fleet` as rows only: `replace_fleet` writes the snapshot too, which
/// these tests of the row load and its snapshot forget at once.
fn save_rows(store: &mut Store, fleet: &Fleet) {
    store.replace_fleet(fleet, None).expect("save");
    store
        .conn
        .execute_batch(
            "DELETE FROM fleet_snapshot;
             UPDATE fleet_state SET generation = generation + 1, armed = 0;",
        )
        .expect("forget the snapshot");
}

fn rows(unusable: Unusable) -> FleetSource {
    FleetSource::Rows {
        unusable,
        snapshot_written: true,
    }
}

/// Loads twice from a fresh `Store` each time: the first from the rows (for `why`), writing
/// the snapshot, the second from the snapshot. Both must equal `expected` and the row-only
/// sequential load.
fn check_load(path: &std::path::Path, expected: &Fleet, why: Unusable) {
    let store = Store::open(path).expect("reopen");
    let (first, source) = store.load_fleet_traced().expect("load from rows");
    assert_eq!(source, rows(why));
    assert_eq!(&first, expected);
    let (second, source) = Store::open(path)
        .expect("reopen")
        .load_fleet_traced()
        .expect("load from the snapshot");
    assert_eq!(source, FleetSource::Snapshot);
    assert_eq!(&second, expected);
    assert_eq!(
        &store.load_fleet_sequentially().expect("row load"),
        expected
    );
}

#[test]
fn snapshot_load_equals_row_load_on_generated_fleets() {
    // Sizes around the test part size (700 devices): one part, exact parts, a short last part.
    for (devices, seed) in [(0, 1), (1, 2), (700, 3), (1_400, 4), (3_001, 5)] {
        let (_dir, mut store) = temp_store();
        let original = fleet(devices, seed);
        save_rows(&mut store, &original);
        check_load(store.path(), &original, Unusable::Missing);
        let parts: i64 = store
            .conn
            .query_row("SELECT count(*) FROM fleet_snapshot", [], |r| r.get(0))
            .expect("parts");
        assert_eq!(
            parts as usize,
            devices.div_ceil(700).max(1),
            "{devices} devices"
        );
    }
}

/// Every value of `fleet` that two devices share is one shared allocation: equal models,
/// regions, component maps and tag maps point at the same bytes.
fn assert_shared(fleet: &Fleet, how: &str) {
    let first = &fleet.devices[0];
    let mut same_model = 0;
    for d in &fleet.devices {
        if d.model == first.model {
            assert!(
                d.model.ptr_eq(&first.model),
                "{how}: model of {} not shared",
                d.id
            );
            same_model += 1;
        }
        if d.region == first.region {
            assert!(d.region.ptr_eq(&first.region), "{how}: region of {}", d.id);
        }
        if d.components == first.components
            && d.components
                .iter()
                .zip(first.components.iter())
                .all(|(a, b)| a.1.parts() == b.1.parts())
        {
            assert!(
                d.components.ptr_eq(&first.components),
                "{how}: components of {}",
                d.id
            );
        }
        if d.tags == first.tags {
            assert!(d.tags.ptr_eq(&first.tags), "{how}: tags of {}", d.id);
        }
    }
    assert!(
        same_model > 100,
        "{how}: too few devices share a model to tell"
    );
}

#[test]
fn every_load_shares_equal_values_across_the_whole_fleet() {
    // 3,001 devices span five snapshot parts of 700: values are shared across parts too.
    let (_dir, mut store) = temp_store();
    let original = fleet(3_001, 9);
    assert_shared(&original, "generated");
    save_rows(&mut store, &original);
    let (from_rows, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("load");
    assert!(matches!(source, FleetSource::Rows { .. }), "{source:?}");
    assert_shared(&from_rows, "rows");
    let (from_snapshot, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("load");
    assert_eq!(source, FleetSource::Snapshot);
    assert_shared(&from_snapshot, "snapshot");
    assert_eq!(from_snapshot, original);
}

#[test]
fn snapshot_keeps_odd_values_exactly() {
    let (_dir, mut store) = temp_store();
    let mut original = fleet(50, 6);
    let d = &mut original.devices[3];
    // Equal versions with different spellings, no battery, extreme numbers, unicode, tags.
    d.components = SmallMap::new();
    d.components
        .insert("bootloader", "1.2".parse::<Version>().expect("v"));
    d.components
        .insert("firmware", "1.2.0".parse::<Version>().expect("v"));
    d.components
        .insert("modem", "7.0.0.12".parse::<Version>().expect("v"));
    d.battery_pct = None;
    d.free_storage_bytes = i64::MAX as u64;
    d.failed_update_attempts = u32::MAX;
    d.position.lat = -0.0;
    d.position.lon = f64::MIN_POSITIVE;
    d.last_seen = Timestamp::from_secs(-86_400);
    d.model = "Fahrzeug-Ω".into();
    d.tags.insert("note", "ünïcode \"quoted\" | pipe".into());
    d.tags.insert("empty", String::new().into());
    original.devices[4].battery_pct = Some(0);
    original.devices[5].battery_pct = Some(255);
    save_rows(&mut store, &original);
    check_load(store.path(), &original, Unusable::Missing);
    let loaded = Store::open(store.path())
        .expect("reopen")
        .load_fleet()
        .expect("load");
    let fw = |i: usize| {
        loaded.devices[3]
            .components
            .get(if i == 0 { "bootloader" } else { "firmware" })
            .map(ToString::to_string)
    };
    assert_eq!(
        (fw(0).as_deref(), fw(1).as_deref()),
        (Some("1.2"), Some("1.2.0"))
    );
    // SQLite stores -0.0 as 0; the snapshot, written from the rows, must say the same.
    let from_rows = store.load_fleet_sequentially().expect("rows");
    assert_eq!(
        loaded.devices[3].position.lat.to_bits(),
        from_rows.devices[3].position.lat.to_bits()
    );
}

#[test]
fn writes_make_the_snapshot_stale_until_the_next_row_load() {
    let (_dir, mut store) = temp_store();
    let mut expected = fleet(2_000, 7);
    save_rows(&mut store, &expected);
    check_load(store.path(), &expected, Unusable::Missing);

    // An import that updates some devices and adds one.
    let mut changed = vec![
        expected.devices[10].clone(),
        expected.devices[1_500].clone(),
    ];
    changed[0].model = "RENAMED".into();
    changed[1]
        .components
        .insert("firmware", Version::new(9, 9, 9));
    let mut added = expected.devices[0].clone();
    added.id = "ZZ-NEW".to_owned();
    changed.push(added.clone());
    let audit = AuditEntry {
        time: NOW,
        actor: "test".to_owned(),
        action: "fleet.import".to_owned(),
        payload: serde_json::json!({}),
    };
    store
        .upsert_fleet(&expected.depots, &changed, Some(&audit))
        .expect("import");
    expected.devices[10] = changed[0].clone();
    expected.devices[1_500] = changed[1].clone();
    expected.devices.push(added);
    check_load(store.path(), &expected, Unusable::Stale);

    // Replacing the fleet with a smaller one deletes devices, and writes the new fleet's
    // snapshot in the same transaction: the next load reads it, and the rows agree.
    let smaller = Fleet::new(expected.depots.clone(), expected.devices[..900].to_vec());
    store.replace_fleet(&smaller, None).expect("replace");
    let (loaded, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("load");
    assert_eq!(source, FleetSource::Snapshot);
    assert_eq!(loaded, smaller);
    assert_eq!(store.load_fleet_sequentially().expect("rows"), smaller);
    expected = smaller;

    // Writes through plain SQL by another connection, one table at a time.
    for sql in [
        "UPDATE devices SET components = json_set(components, '$.firmware', '0.0.1') WHERE dev = 5",
        "UPDATE devices SET components = json_remove(components, '$.firmware') WHERE dev = 6",
        "UPDATE devices SET components = json_set(components, '$.extra', '1.0') WHERE dev = 7",
        "UPDATE devices SET tags = '{\"k\":\"v\"}' WHERE dev = 8",
        "DELETE FROM devices WHERE dev = 9",
    ] {
        let other = rusqlite::Connection::open(store.path()).expect("other connection");
        other.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        assert_eq!(other.execute(sql, []).expect(sql), 1, "{sql}");
        drop(other);
        let from_rows = Store::open(store.path())
            .expect("reopen")
            .load_fleet_sequentially()
            .expect("rows");
        assert_ne!(from_rows, expected, "{sql} changed nothing");
        check_load(store.path(), &from_rows, Unusable::Stale);
        expected = from_rows;
    }
}

#[test]
fn a_write_between_arming_and_storing_keeps_the_snapshot_out() {
    let (_dir, mut store) = temp_store();
    let original = fleet(300, 8);
    save_rows(&mut store, &original);
    let generation = snapshot::arm(&store.conn).expect("arm");
    // A write after the rows were read at `generation`.
    store
        .conn
        .execute("UPDATE devices SET model = 'changed' WHERE dev = 1", [])
        .expect("write");
    let stored = snapshot::store(
        &store.conn,
        generation,
        &original.devices,
        std::time::Duration::from_millis(10),
    )
    .expect("store");
    assert!(!stored, "a snapshot of rows that changed since was stored");
    let (loaded, source) = store.load_fleet_traced().expect("load");
    assert_eq!(source, rows(Unusable::Missing));
    assert_eq!(loaded.devices[0].model, "changed");
}

type DamageFn = Box<dyn Fn(&mut Vec<u8>)>;

/// Overwrites snapshot part `part` with `damage(body)`.
fn damage_part(store: &Store, part: i64, damage: impl FnOnce(&mut Vec<u8>)) {
    let mut body: Vec<u8> = store
        .conn
        .query_row(
            "SELECT body FROM fleet_snapshot WHERE part = ?1",
            [part],
            |r| r.get(0),
        )
        .expect("part");
    damage(&mut body);
    store
        .conn
        .execute(
            "UPDATE fleet_snapshot SET body = ?2 WHERE part = ?1",
            rusqlite::params![part, body],
        )
        .expect("damage");
}

#[test]
fn damaged_snapshots_fall_back_to_the_rows() {
    let (_dir, mut store) = temp_store();
    let original = fleet(2_000, 9);
    save_rows(&mut store, &original);
    check_load(store.path(), &original, Unusable::Missing);
    let cases: Vec<(&str, i64, DamageFn)> = vec![
        (
            "truncated by 10 bytes",
            1,
            Box::new(|b| b.truncate(b.len() - 10)),
        ),
        ("cut to its header", 0, Box::new(|b| b.truncate(20))),
        ("emptied", 2, Box::new(Vec::clear)),
        (
            "one bit flipped mid-part",
            1,
            Box::new(|b| {
                let mid = b.len() / 2;
                b[mid] ^= 0x10;
            }),
        ),
        (
            "checksum flipped",
            0,
            Box::new(|b| {
                let last = b.len() - 1;
                b[last] ^= 1;
            }),
        ),
        (
            "bytes appended",
            2,
            Box::new(|b| b.extend_from_slice(&[0; 3])),
        ),
    ];
    for (what, part, damage) in cases {
        damage_part(&store, part, damage);
        let (loaded, source) = Store::open(store.path())
            .expect("reopen")
            .load_fleet_traced()
            .expect(what);
        match &source {
            FleetSource::Rows {
                unusable: Unusable::Damaged(why),
                snapshot_written: true,
            } => assert!(why.contains(&format!("part {part}")), "{what}: {why}"),
            other => panic!("{what}: loaded from {other:?}"),
        }
        assert_eq!(loaded, original, "{what}");
        // The fallback stored a fresh snapshot.
        let (again, source) = Store::open(store.path())
            .expect("reopen")
            .load_fleet_traced()
            .expect("reload");
        assert_eq!(source, FleetSource::Snapshot, "{what}");
        assert_eq!(again, original, "{what}");
    }
    // A missing part and a part that is not a BLOB.
    store
        .conn
        .execute("DELETE FROM fleet_snapshot WHERE part = 1", [])
        .expect("delete");
    let (loaded, source) = store.load_fleet_traced().expect("missing part");
    assert!(matches!(
        source,
        FleetSource::Rows {
            unusable: Unusable::Damaged(_),
            ..
        }
    ));
    assert_eq!(loaded, original);
    store
        .conn
        .execute("UPDATE fleet_snapshot SET body = 'text' WHERE part = 0", [])
        .expect("text");
    let (loaded, source) = store.load_fleet_traced().expect("text part");
    assert!(matches!(
        source,
        FleetSource::Rows {
            unusable: Unusable::Damaged(_),
            ..
        }
    ));
    assert_eq!(loaded, original);
}

#[test]
fn every_truncation_and_bit_flip_of_a_part_is_caught() {
    let original = fleet(12, 10);
    let parts = snapshot::encode(&original.devices).expect("encode");
    assert_eq!(parts.len(), 1);
    assert_eq!(
        snapshot::decode(&parts, 1).expect("intact part"),
        original.devices
    );
    let part = &parts[0];
    for len in 0..part.len() {
        let cut = vec![part[..len].to_vec()];
        assert!(
            matches!(snapshot::decode(&cut, 1), Err(Unusable::Damaged(_))),
            "truncated to {len} bytes"
        );
    }
    for byte in 0..part.len() {
        for bit in 0..8 {
            let mut flipped = part.clone();
            flipped[byte] ^= 1 << bit;
            assert!(
                matches!(snapshot::decode(&[flipped], 1), Err(Unusable::Damaged(_))),
                "bit {bit} of byte {byte} flipped"
            );
        }
    }
}

#[test]
fn garbage_with_a_valid_checksum_never_panics_or_breaks_order() {
    // The checksum stops real damage; this checks that the decoder itself is bounds-checked,
    // by re-sealing parts whose contents were scrambled.
    let original = fleet(40, 11);
    let parts = snapshot::encode(&original.devices).expect("encode");
    let part = &parts[0];
    let mut rng = convoy_core::rng::SeededRng::new(12);
    for round in 0..3_000 {
        let mut body = part[..part.len() - 8].to_vec();
        let flips = 1 + rng.below(4) as usize;
        for _ in 0..flips {
            let at = 29 + rng.below((body.len() - 29) as u64) as usize;
            body[at] = rng.below(256) as u8;
        }
        if round % 5 == 0 {
            let keep = 29 + rng.below((body.len() - 29) as u64) as usize;
            body.truncate(keep);
            let total = (body.len() + 8) as u64;
            body[21..29].copy_from_slice(&total.to_le_bytes());
        }
        let sealed = snapshot::seal_for_tests(body);
        if let Ok(devices) = snapshot::decode(&[sealed], 1) {
            assert!(devices.windows(2).all(|w| w[0].id < w[1].id));
        }
    }
}

fn trigger_count(store: &Store) -> i64 {
    store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_master
             WHERE type = 'trigger' AND name LIKE '%stales_snapshot'",
            [],
            |r| r.get(0),
        )
        .expect("triggers")
}

#[test]
fn bulk_writes_mark_the_snapshot_stale_and_keep_the_triggers() {
    let (_dir, mut store) = temp_store();
    let mut expected = fleet(1_500, 13);
    save_rows(&mut store, &expected);
    assert_eq!(trigger_count(&store), 3);
    check_load(store.path(), &expected, Unusable::Missing);
    // A bulk import (at least 1,000 devices) runs without the triggers and marks the snapshot
    // stale once.
    for d in &mut expected.devices[..1_200] {
        d.failed_update_attempts += 1;
    }
    store
        .upsert_fleet(&expected.depots, &expected.devices[..1_200], None)
        .expect("bulk import");
    assert_eq!(trigger_count(&store), 3);
    check_load(store.path(), &expected, Unusable::Stale);
    // A bulk write that fails (a repeated id) rolls back, triggers and all.
    let mut twice = expected.devices[..1_100].to_vec();
    twice.push(twice[0].clone());
    let empty = tempfile::tempdir().expect("tempdir");
    let mut fresh = Store::open(&empty.path().join("fresh.db")).expect("open");
    assert!(fresh.upsert_fleet(&[], &twice, None).is_err());
    assert_eq!(trigger_count(&fresh), 3);
    assert_eq!(fresh.device_count().expect("count"), 0);
    // The snapshot still goes stale on a small write afterwards.
    store
        .conn
        .execute("UPDATE devices SET hw_rev = 'Z' WHERE dev = 3", [])
        .expect("write");
    let from_rows = store.load_fleet_sequentially().expect("rows");
    check_load(store.path(), &from_rows, Unusable::Stale);
}

#[test]
fn a_cache_without_its_snapshot_state_still_loads_from_the_rows() {
    let (_dir, mut store) = temp_store();
    let original = fleet(800, 14);
    save_rows(&mut store, &original);
    check_load(store.path(), &original, Unusable::Missing);
    store
        .conn
        .execute("DELETE FROM fleet_state", [])
        .expect("delete the state");
    for _ in 0..2 {
        let (loaded, source) = store.load_fleet_traced().expect("load");
        assert_eq!(
            source,
            FleetSource::Rows {
                unusable: Unusable::Missing,
                snapshot_written: false
            }
        );
        assert_eq!(loaded, original);
    }
}

#[test]
fn every_thread_count_decodes_the_same_fleet() {
    // 3,001 devices in five parts of 700 (the last short): each thread count places every part
    // where it belongs, in one vector, with values shared across parts.
    let original = fleet(3_001, 15);
    let parts = snapshot::encode(&original.devices).expect("encode");
    assert_eq!(parts.len(), 5);
    for threads in 1..=6 {
        let devices = snapshot::decode(&parts, threads).expect("decode");
        assert_eq!(devices, original.devices, "{threads} threads");
        let decoded = Fleet {
            depots: original.depots.clone(),
            devices,
        };
        assert_shared(&decoded, &format!("{threads} threads"));
    }
    // One part, and an empty fleet (one empty part).
    for devices in [12, 0] {
        let small = fleet(devices, 16);
        let parts = snapshot::encode(&small.devices).expect("encode");
        assert_eq!(parts.len(), 1);
        for threads in 1..=3 {
            assert_eq!(
                snapshot::decode(&parts, threads).expect("decode"),
                small.devices,
                "{devices} devices, {threads} threads"
            );
        }
    }
}

/// The reason `decode` gives for `parts`, for each thread count from 1 to 5: the same for all.
fn same_damage_at_every_thread_count(parts: &[Vec<u8>], what: &str) -> String {
    let reasons: Vec<String> = (1..=5)
        .map(|threads| match snapshot::decode(parts, threads) {
            Err(Unusable::Damaged(why)) => why,
            other => panic!("{what}, {threads} threads: {other:?}"),
        })
        .collect();
    assert!(
        reasons.iter().all(|r| *r == reasons[0]),
        "{what}: {reasons:?}"
    );
    reasons[0].clone()
}

#[test]
fn a_damaged_part_in_the_middle_is_refused_by_every_thread_count() {
    let original = fleet(3_001, 17);
    let parts = snapshot::encode(&original.devices).expect("encode");
    assert_eq!(parts.len(), 5);
    // A flipped bit in part 2 (checksum), part 3 cut short (length), and part 2 scrambled
    // under a valid checksum (decoding), alone and together with later damage.
    let mut flipped = parts.clone();
    let mid = flipped[2].len() / 2;
    flipped[2][mid] ^= 0x04;
    let why = same_damage_at_every_thread_count(&flipped, "bit flipped in part 2");
    assert_eq!(
        why,
        format!("part 2: checksum mismatch at byte {}", parts[2].len() - 8)
    );

    let mut cut = parts.clone();
    let short = cut[3].len() - 1;
    cut[3].truncate(short);
    let why = same_damage_at_every_thread_count(&cut, "part 3 cut");
    assert!(
        why.starts_with("part 3: length in the header differs"),
        "{why}"
    );

    // Part 2's device count raised by one, resealed: it decodes until it runs out of bytes.
    let mut scrambled = parts.clone();
    let mut content = scrambled[2][..scrambled[2].len() - 8].to_vec();
    let devices = u32::from_le_bytes(content[13..17].try_into().expect("4 bytes"));
    content[13..17].copy_from_slice(&(devices + 1).to_le_bytes());
    scrambled[2] = snapshot::seal_for_tests(content);
    let why = same_damage_at_every_thread_count(&scrambled, "part 2 claims a device more");
    assert!(why.starts_with("part 2: truncated at byte"), "{why}");

    // With part 4 damaged too, the lowest damaged part is the one reported, at every thread
    // count, whichever thread decodes which.
    for (mut damaged, first) in [(flipped, 2), (scrambled, 2), (cut, 3)] {
        damaged[4].clear();
        let why = same_damage_at_every_thread_count(&damaged, "two damaged parts");
        assert!(why.starts_with(&format!("part {first}: ")), "{why}");
    }
    // A part that says it is another part, or of another count.
    let mut swapped = parts.clone();
    swapped.swap(1, 3);
    let why = same_damage_at_every_thread_count(&swapped, "parts 1 and 3 swapped");
    assert_eq!(why, "part 1 says it is part 3 of 5 (found 5)");
    let why = same_damage_at_every_thread_count(&parts[..4], "last part missing");
    assert_eq!(why, "part 0 says it is part 0 of 5 (found 4)");
}

#[test]
fn a_damaged_part_in_the_middle_of_the_cache_is_refused_with_the_same_reason() {
    // The load from the cache reads and decodes part by part: a damaged middle part is found
    // after the parts before it were decoded, and refused with the reason `decode` gives.
    let (_dir, mut store) = temp_store();
    let original = fleet(3_001, 18);
    save_rows(&mut store, &original);
    check_load(store.path(), &original, Unusable::Missing);
    let parts: Vec<Vec<u8>> = {
        let mut stmt = store
            .conn
            .prepare("SELECT body FROM fleet_snapshot ORDER BY part")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("parts")
            .collect::<rusqlite::Result<_>>()
            .expect("parts")
    };
    assert_eq!(parts.len(), 5);
    assert_eq!(
        snapshot::decode(&parts, 2).expect("intact"),
        original.devices
    );
    damage_part(&store, 2, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
    });
    let mut damaged = parts.clone();
    let mid = damaged[2].len() / 2;
    damaged[2][mid] ^= 0x40;
    let expected = same_damage_at_every_thread_count(&damaged, "part 2 flipped");
    let (loaded, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("load");
    assert_eq!(
        source,
        FleetSource::Rows {
            unusable: Unusable::Damaged(expected),
            snapshot_written: true
        }
    );
    assert_eq!(loaded, original);
    // The fresh snapshot is used again, and decodes to the same fleet.
    let (again, source) = Store::open(store.path())
        .expect("reopen")
        .load_fleet_traced()
        .expect("reload");
    assert_eq!(source, FleetSource::Snapshot);
    assert_eq!(again, original);
}

#[test]
fn the_load_reads_each_part_once_and_never_far_ahead() {
    // What keeps the load's memory to the fleet: each part is read once, and a part is read
    // no more than two rounds (two parts per thread) ahead of the part being placed.
    let original = fleet(7_000, 19);
    let parts = snapshot::encode(&original.devices).expect("encode");
    assert_eq!(parts.len(), 10);
    for threads in 1..=4 {
        let (devices, reads) = snapshot::decode_logged(&parts, threads);
        assert_eq!(devices.expect("decode"), original.devices, "{threads}");
        let mut sorted = reads.iter().map(|&(part, _)| part).collect::<Vec<_>>();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "{threads}: {reads:?}");
        for (k, &(part, placing)) in reads.iter().enumerate() {
            assert!(
                part < placing + 2 * threads,
                "{threads} threads: part {part} read while placing part {placing}: {reads:?}"
            );
            // Parts are placed in order: the log's `placing` never goes back.
            assert!(k == 0 || placing >= reads[k - 1].1, "{reads:?}");
        }
    }
}
