//! Benchmark: synthetic fleet generation.
//!
//! `cargo run --release -p convoy --example bench_fleet [-- DEVICES]`
//! Prints the time to generate fleets of 10,000, 100,000 and 1,000,000 devices (or DEVICES).

use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::time::Instant;

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => vec![n],
        Some(Err(e)) => {
            eprintln!("error: DEVICES must be a number: {e}");
            std::process::exit(2);
        }
        None => vec![10_000, 100_000, 1_000_000],
    };
    let now = Timestamp::from_secs(1_795_392_000);
    println!("| devices | generate (s) | devices/s |");
    println!("| ---: | ---: | ---: |");
    for n in sizes {
        // Best of three, so one slow run on a shared machine does not stand for the code.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let fleet = generate(&SynthOptions {
                devices: n,
                seed: 1,
                now,
            });
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(fleet.len(), n);
            best = best.min(secs);
        }
        println!("| {n} | {best:.3} | {:.0} |", n as f64 / best);
    }
}
