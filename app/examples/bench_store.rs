//! Benchmark: the SQLite cache at fleet scale.
//!
//! `cargo run --release -p convoy --example bench_store [-- DEVICES]`
//!
//! For a synthetic fleet of DEVICES (default 1,000,000): import from a CSV inventory (parse
//! plus one upsert transaction), cold load of the whole fleet into memory from a freshly
//! opened cache (the first load from the rows, which stores the fleet snapshot, then the cold
//! loads from the snapshot), sustained telemetry ingest in batches of 10,000 with rollups, and the cache's
//! size per device. Prints a Markdown table. The OS page cache is warm for the cold load:
//! "cold" means a new process state (new connection, empty statement cache), as when the
//! console starts.

use anyhow::{Context, Result};
use convoy::fleet_io;
use convoy::store::{FleetSource, Sample, Store, Unusable};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::time::Instant;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (Linux);
/// zero where that file does not exist. On a machine shared with other jobs, wall time
/// includes waiting for a core, CPU time does not.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1-minute load average, to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn run() -> Result<()> {
    let devices: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("DEVICES must be a number")?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let now = Timestamp::from_secs(1_795_392_000);
    let fleet = generate(&SynthOptions {
        devices,
        seed: 1,
        now,
    });
    let csv = dir.path().join("fleet.csv");
    fleet_io::save_fleet(&csv, &fleet)?;
    let db = dir.path().join("cache.db");

    println!("| step | devices | wall (s) | CPU (s) | rate (wall) | note |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    eprintln!("load average at start: {}", load_average());

    let started = Instant::now();
    let cpu = cpu_secs();
    let inv = fleet_io::read_inventory(&csv)?;
    let parsed = started.elapsed().as_secs_f64();
    let mut store = Store::open(&db)?;
    let t = Instant::now();
    store.upsert_fleet(&inv.depots, &inv.devices, None)?;
    let written = t.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    println!(
        "| import CSV (parse + one transaction) | {devices} | {total:.2} | {:.2} | {:.0} devices/s | parse {parsed:.2} s, write {written:.2} s |",
        cpu_secs() - cpu,
        devices as f64 / total
    );
    drop(inv);

    // Re-import of the same devices: every row becomes an update.
    let t = Instant::now();
    let cpu = cpu_secs();
    store.upsert_fleet(&fleet.depots, &fleet.devices, None)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| re-import (update every device) | {devices} | {secs:.2} | {:.2} | {:.0} devices/s | write only |",
        cpu_secs() - cpu,
        devices as f64 / secs
    );
    rusqlite::Connection::open(store.path())?.query_row(
        "PRAGMA wal_checkpoint(TRUNCATE)",
        [],
        |_| Ok(()),
    )?;
    drop(store);
    let db_bytes = file_bytes(&db);

    // The first load after the import reads the rows and stores the fleet snapshot; the
    // loads after it read the snapshot.
    let t = Instant::now();
    let cpu = cpu_secs();
    let (loaded, source) = Store::open(&db)?.load_fleet_traced()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        source
            == FleetSource::Rows {
                unusable: Unusable::Missing,
                snapshot_written: true
            },
        "the first load came from {source:?}"
    );
    anyhow::ensure!(
        loaded == fleet,
        "the loaded fleet differs from the saved one"
    );
    drop(loaded);
    println!(
        "| first load after the import (open + rows + store the snapshot) | {devices} | {secs:.2} | {:.2} | {:.0} devices/s | row load on three threads, then the snapshot encoded and written |",
        cpu_secs() - cpu,
        devices as f64 / secs
    );

    let (mut best, mut best_cpu) = (f64::MAX, 0.0);
    for _ in 0..3 {
        let t = Instant::now();
        let cpu = cpu_secs();
        let store = Store::open(&db)?;
        let (loaded, source) = store.load_fleet_traced()?;
        let secs = t.elapsed().as_secs_f64();
        if secs < best {
            (best, best_cpu) = (secs, cpu_secs() - cpu);
        }
        anyhow::ensure!(source == FleetSource::Snapshot, "loaded from {source:?}");
        anyhow::ensure!(loaded.len() == devices, "loaded {} devices", loaded.len());
        anyhow::ensure!(
            loaded == fleet,
            "the loaded fleet differs from the saved one"
        );
    }
    println!(
        "| cold load of the whole fleet (open + load from the snapshot) | {devices} | {best:.2} | {best_cpu:.2} | {:.0} devices/s | best of 3, equal to the generated fleet |",
        devices as f64 / best
    );
    {
        let store = Store::open(&db)?;
        rusqlite::Connection::open(store.path())?.query_row(
            "PRAGMA wal_checkpoint(TRUNCATE)",
            [],
            |_| Ok(()),
        )?;
    }
    let with_snapshot = file_bytes(&db);

    // Telemetry: 50,000 active devices, 4 metrics, a report every 30 s.
    let mut store = Store::open(&db)?;
    let active = devices.min(50_000);
    let metrics = ["battery_pct", "crash_count", "rssi_dbm", "cpu_temp_c"];
    let rounds = 10;
    let mut stored_total = 0;
    // The same stream twice, an hour apart (so that nothing is a duplicate): in batches of
    // 10,000 samples, then of 50,000 (a fifth of the commits, each synced to disk).
    for (batch, offset_secs) in [(10_000, 0), (50_000, 3_600)] {
        let mut samples: Vec<Sample> = Vec::with_capacity(active * metrics.len() * rounds);
        for r in 0..rounds {
            for d in &fleet.devices[..active] {
                for (m, metric) in metrics.iter().enumerate() {
                    samples.push(Sample {
                        device: d.id.clone(),
                        time: now.plus_secs(offset_secs + r as i64 * 30),
                        metric: (*metric).to_owned(),
                        value: ((r * 7 + m * 13) % 100) as f64,
                    });
                }
            }
        }
        let t = Instant::now();
        let cpu = cpu_secs();
        let mut stored = 0;
        for chunk in samples.chunks(batch) {
            stored += store.ingest(chunk)?.stored;
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        anyhow::ensure!(
            stored == samples.len(),
            "stored {stored} of {}",
            samples.len()
        );
        println!(
            "| telemetry ingest, batches of {batch}, with device and cohort rollups | {active} | {secs:.2} | {cpu:.2} | {:.0} samples/s | {} samples, 4 metrics every 30 s; {:.0} samples per CPU-second |",
            stored as f64 / secs,
            stored,
            stored as f64 / cpu
        );
        stored_total += stored;
    }
    let stored = stored_total;
    rusqlite::Connection::open(store.path())?.query_row(
        "PRAGMA wal_checkpoint(TRUNCATE)",
        [],
        |_| Ok(()),
    )?;
    let with_telemetry = file_bytes(&db);
    println!(
        "| cache size, fleet only | {devices} | | | {:.0} bytes/device | {:.1} MiB file |",
        db_bytes as f64 / devices as f64,
        db_bytes as f64 / 1_048_576.0
    );
    println!(
        "| cache size, fleet and its snapshot | {devices} | | | {:.0} bytes/device | {:.1} MiB file |",
        with_snapshot as f64 / devices as f64,
        with_snapshot as f64 / 1_048_576.0
    );
    println!(
        "| cache size, with the telemetry above | {devices} | | | {:.0} bytes/sample | {:.1} MiB file |",
        (with_telemetry - with_snapshot) as f64 / stored as f64,
        with_telemetry as f64 / 1_048_576.0
    );
    eprintln!("load average at end: {}", load_average());
    Ok(())
}
