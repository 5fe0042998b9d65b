//! Benchmark: where the time of `convoy fleet import` goes (issue 22), split into its steps.
//!
//! `cargo run --release -p convoy --example bench_import -- csv DEVICES FILE.csv` writes the
//! synthetic fleet (seed 1) as a CSV inventory; `... -- import FILE.csv CACHE.db` imports it
//! into the cache read first, then written (the cache is created if missing), then asks for
//! the fleet summary's counts and loads the fleet, and prints wall and CPU time per step;
//! `... -- stream FILE.csv CACHE.db` imports it as `convoy fleet import` does
//! (`fleet_io::import_csv`: into a new cache, the rows read so far are written while the rest
//! is parsed).

use anyhow::{Context, Result, bail};
use convoy::fleet_io;
use convoy::store::{AuditEntry, Store};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::path::Path;
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

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat` (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}

/// Runs `f`, printing its wall and CPU time.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let (wall, cpu) = (Instant::now(), cpu_secs());
    let out = f()?;
    println!(
        "| {what} | {:.2} | {:.2} |",
        wall.elapsed().as_secs_f64(),
        cpu_secs() - cpu
    );
    Ok(out)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["csv", n, out] => {
            let devices: usize = n.parse().context("DEVICES must be a number")?;
            let fleet = generate(&SynthOptions {
                devices,
                seed: 1,
                now: Timestamp::from_secs(1_795_392_000),
            });
            fleet_io::save_fleet(Path::new(out), &fleet)
        }
        ["import", csv, db] => {
            println!("| step | wall s | CPU s |");
            println!("| --- | ---: | ---: |");
            let total = (Instant::now(), cpu_secs());
            let mut inv = step("read the CSV", || fleet_io::read_inventory(Path::new(csv)))?;
            let mut store = step("open the cache", || Store::open(Path::new(db)))?;
            let outcome = step("import (one transaction)", || {
                store.import_fleet(&inv.depots, &mut inv.devices, None)
            })?;
            let counts = outcome.counts;
            println!(
                "| import total ({} new, {} updated) | {:.2} | {:.2} |",
                counts.inserted,
                counts.updated,
                total.0.elapsed().as_secs_f64(),
                cpu_secs() - total.1
            );
            drop(inv);
            step("first fleet summary counts", || store.fleet_counts())?;
            let (fleet, source) = step("first fleet load", || store.load_fleet_traced())?;
            println!("first load: {} devices from {source:?}", fleet.len());
            drop(fleet);
            let store = Store::open(Path::new(db))?;
            let (_, source) = step("second fleet load", || store.load_fleet_traced())?;
            println!("second load from {source:?}");
            Ok(())
        }
        ["stream", csv, db] => {
            println!("| step | wall s | CPU s |");
            println!("| --- | ---: | ---: |");
            let mut store = step("open the cache", || Store::open(Path::new(db)))?;
            let done = step(
                "import as `convoy fleet import` does (parse and writes overlapped, one transaction)",
                || {
                    fleet_io::import_csv(Path::new(csv), &mut store, |inv| AuditEntry {
                        time: Timestamp::from_secs(1_795_392_000),
                        actor: "operator:bench".to_owned(),
                        action: "fleet.import".to_owned(),
                        payload: serde_json::json!({ "devices": inv.devices.len() }),
                    })
                },
            )?;
            println!(
                "streamed: {} devices, whole fleet: {}, {} rows rejected",
                done.inventory.devices.len(),
                done.outcome.whole_fleet,
                done.inventory.rejected.len()
            );
            drop(done);
            let (fleet, source) = step("first fleet load", || store.load_fleet_traced())?;
            println!("first load: {} devices from {source:?}", fleet.len());
            Ok(())
        }
        _ => bail!(
            "usage: bench_import csv DEVICES FILE.csv | bench_import import FILE.csv CACHE.db \
             | bench_import stream FILE.csv CACHE.db"
        ),
    }
}
