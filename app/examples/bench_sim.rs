//! Benchmark: the simulated fleet without the network.
//!
//! `cargo run --release -p convoy --example bench_sim [-- DEVICES]`
//! Builds a synthetic fleet (10,000 and 100,000 devices, or DEVICES), offers every device a signed
//! release (each device verifies the manifest), then advances simulated time by 2 hours in
//! 60-second ticks (what `--time-scale 600` does with 100 ms ticks), encoding every message to its
//! wire JSON as `convoy sim` does before publishing. MQTT publishing is not included.

use convoy::link::protocol::Topics;
use convoy::sim::SimFleet;
use convoy_core::devsim::{Faults, SimCommand, SimConfig};
use convoy_core::manifest::{ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::time::Instant;

const SIM_SECS: i64 = 2 * 3600;
const TICK_SECS: i64 = 60;

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => vec![n],
        Some(Err(e)) => {
            eprintln!("error: DEVICES must be a number: {e}");
            std::process::exit(2);
        }
        None => vec![10_000, 100_000],
    };
    let now = Timestamp::from_secs(1_795_392_000);
    let key = SigningKey::from_bytes(&[1; 32]);
    let version = Version::new(9, 0, 0);
    let digest = ArtifactDigest::of_bytes("fw.img", b"bench");
    let spec = ReleaseSpec {
        id: "bench-9.0.0".to_owned(),
        version,
        counter: 1,
        hardware: ["T300", "T500", "K20", "C7", "S1", "M10"]
            .map(str::to_owned)
            .to_vec(),
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".to_owned(),
            url: "fw.img".to_owned(),
            length_bytes: 50_000_000,
            sha256: digest.sha256,
        }],
        expires: now.plus_secs(86_400),
    };
    let manifest = SignedManifest::sign(spec, None, &key)
        .expect("sign the bench manifest")
        .to_json_bytes();
    let topics = Topics::default_prefix();

    println!(
        "| devices | offer + verify (s) | simulate 2 h in 60 s ticks (s) | messages | messages/s | simulated device-seconds per wall second |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let fleet = generate(&SynthOptions {
            devices: n,
            seed: 1,
            now,
        });
        let mut sim = SimFleet::new(
            &fleet,
            Faults::default(),
            TrustedKeys::from_keys([&key.verifying_key()]),
            7,
            &SimConfig::default(),
            now,
            600.0,
        );
        let mut out = Vec::new();
        let mut messages = 0usize;
        sim.drain(&topics, &mut out);
        messages += out.len();
        out.clear();

        let started = Instant::now();
        for (i, d) in fleet.devices.iter().enumerate() {
            sim.command(
                now,
                &d.id,
                &format!("c-{i}"),
                SimCommand::Offer {
                    release_id: "bench-9.0.0".to_owned(),
                    manifest_bytes: manifest.clone(),
                },
            );
        }
        sim.drain(&topics, &mut out);
        messages += out.len();
        out.clear();
        let offer_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut t = now;
        while t.secs_since(now) < SIM_SECS {
            t = t.plus_secs(TICK_SECS);
            sim.tick(t);
            sim.drain(&topics, &mut out);
            messages += out.len();
            out.clear();
        }
        let sim_secs = started.elapsed().as_secs_f64();
        println!(
            "| {n} | {offer_secs:.2} | {sim_secs:.2} | {messages} | {:.0} | {:.0} |",
            messages as f64 / sim_secs,
            (n as f64 * SIM_SECS as f64) / sim_secs
        );
    }
}
