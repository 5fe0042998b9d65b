//! Benchmark: signing and verifying release manifests, and hashing + signing a large artifact.
//!
//! `cargo run --release -p convoy --example bench_sign [-- ARTIFACT_MB]`
//! Prints a Markdown table: manifest sign and verify throughput (canonical JSON + Ed25519, the
//! full `SignedManifest::sign` and `manifest::verify` paths), raw Ed25519 for comparison, the
//! passphrase KDF (argon2id, 64 MiB) that unlocks a key, and the time to hash (streamed, 1 MiB
//! at a time) and sign an artifact of ARTIFACT_MB megabytes (default 500), with the process's
//! peak resident memory to show the file is never held in memory.

use convoy::ops::releases::hash_file;
use convoy_core::manifest::{SignedManifest, TrustedKeys, verify, verify_ed25519};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::{Signer, SigningKey};
use std::io::Write;
use std::time::Instant;

const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn spec(counter: u64) -> ReleaseSpec {
    ReleaseSpec {
        id: format!("t300-fw-2.5.{counter}"),
        version: Version::new(2, 5, counter as u32),
        counter,
        hardware: vec!["T300".into(), "T310".into()],
        provides: [("firmware", Version::new(2, 5, counter as u32))]
            .into_iter()
            .collect(),
        requires: vec![
            "bootloader>=2.0".parse().expect("requirement"),
            "hw_rev in B,C".parse().expect("requirement"),
        ],
        artifacts: vec![Artifact {
            name: "t300-fw.img".into(),
            url: "https://updates.example.invalid/t300-fw.img".into(),
            length_bytes: 5_000_000,
            sha256: "ab".repeat(32),
        }],
        expires: NOW.plus_secs(30 * 86_400),
    }
}

/// Peak resident set size of this process so far, in MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let artifact_mb: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 500,
    };
    // A fixed benchmark key: nothing here is secret.
    let key = SigningKey::from_bytes(&[7; 32]);
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    let n = 20_000u64;

    let dir = tempfile::tempdir()?;
    // The artifact: written in 1 MiB chunks of varied bytes, then hashed from disk in a stream.
    let path = dir.path().join("big.img");
    let bytes = artifact_mb * 1_000_000;
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while written < bytes {
            for b in &mut chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let take = (bytes - written).min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..take])?;
            written += take as u64;
        }
        out.flush()?;
    }
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let digest = hash_file(&path)?;
    let hashed = started.elapsed().as_secs_f64();
    let mut s = spec(1);
    s.artifacts = vec![Artifact {
        url: digest.name.clone(),
        name: digest.name.clone(),
        length_bytes: digest.length_bytes,
        sha256: digest.sha256.clone(),
    }];
    let manifest = SignedManifest::sign(s, None, &key)?;
    let total = started.elapsed().as_secs_f64();
    assert_eq!(manifest.signed.release.artifacts[0].length_bytes, bytes);
    println!("| artifact | hash (s) | hash + sign (s) | MB/s | peak RSS before / after (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| {artifact_mb} MB, streamed from a file in the page cache | {hashed:.2} | {total:.2} | {:.0} | {rss_before:.1} / {:.1} |",
        bytes as f64 / 1e6 / total,
        peak_rss_mib()
    );
    println!();
    println!("| operation | count | total (s) | per second | per op (µs) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let row = |name: &str, count: u64, secs: f64| {
        println!(
            "| {name} | {count} | {secs:.3} | {:.0} | {:.1} |",
            count as f64 / secs,
            secs * 1e6 / count as f64
        );
    };

    let specs: Vec<ReleaseSpec> = (0..n).map(spec).collect();
    let started = Instant::now();
    let files: Vec<Vec<u8>> = specs
        .into_iter()
        .map(|s| {
            SignedManifest::sign(s, None, &key)
                .map(|m| m.to_json_bytes())
                .expect("sign")
        })
        .collect();
    row(
        "sign manifest (canonical JSON + Ed25519 + file bytes)",
        n,
        started.elapsed().as_secs_f64(),
    );

    let started = Instant::now();
    for f in &files {
        verify(f, &trust, NOW).expect("verify");
    }
    row(
        "verify manifest (parse + canonical JSON + strict Ed25519 + expiry)",
        n,
        started.elapsed().as_secs_f64(),
    );

    let message = [0x5au8; 600];
    let started = Instant::now();
    let sigs: Vec<_> = (0..n).map(|_| key.sign(&message)).collect();
    row(
        "raw Ed25519 sign (600-byte message)",
        n,
        started.elapsed().as_secs_f64(),
    );
    let public = key.verifying_key().to_bytes();
    let started = Instant::now();
    for s in &sigs {
        verify_ed25519(&public, &message, &s.to_bytes()).expect("verify");
    }
    row(
        "raw Ed25519 verify_strict (600-byte message)",
        n,
        started.elapsed().as_secs_f64(),
    );

    convoy::keys::generate(&dir.path().join("k"), "bench")?;
    let started = Instant::now();
    let unlocked = convoy::keys::load_signing_key(&dir.path().join("k"), "bench")?;
    assert_eq!(
        unlocked.verifying_key(),
        convoy::keys::load_public(&dir.path().join("k"))?
    );
    row(
        "unlock private key (argon2id 64 MiB, 3 passes)",
        1,
        started.elapsed().as_secs_f64(),
    );

    Ok(())
}
