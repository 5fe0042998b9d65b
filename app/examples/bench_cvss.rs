//! Benchmark: CVSS parsing and base scoring.
//!
//! `cargo run --release -p convoy --example bench_cvss`
//! Parses and scores every vector of the reference fixtures (fixtures/cvss/) repeatedly and
//! prints the time per vector for each version.

use convoy_core::cvss::Cvss;
use std::time::Instant;

const FIXTURES: [(&str, &str); 3] = [
    ("3.0", include_str!("../../fixtures/cvss/v3_0.csv")),
    ("3.1", include_str!("../../fixtures/cvss/v3_1.csv")),
    ("4.0", include_str!("../../fixtures/cvss/v4_0.csv")),
];

fn main() {
    println!("| version | vectors | rounds | parse + score (µs per vector) |");
    println!("| --- | ---: | ---: | ---: |");
    for (version, csv) in FIXTURES {
        let vectors: Vec<&str> = csv
            .lines()
            .filter_map(|l| l.split(',').next())
            .filter(|v| v.starts_with("CVSS:"))
            .collect();
        let rounds = 50;
        let mut checksum = 0.0;
        let started = Instant::now();
        for _ in 0..rounds {
            for v in &vectors {
                match Cvss::parse(v) {
                    Ok(c) => checksum += c.base_score(),
                    Err(e) => {
                        eprintln!("error: fixture vector does not parse: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / (rounds * vectors.len()) as f64;
        println!("| {version} | {} | {rounds} | {per:.2} |", vectors.len());
        // Keeps the optimiser from dropping the work.
        assert!(checksum > 0.0);
    }
}
