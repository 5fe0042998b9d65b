//! The release use cases: hash artifacts, make a release spec, sign it, write, read and verify
//! manifest files. `convoy release`, the console's release form and `convoy serve` all call these.
//!
//! This is not the command line (no clap, no printing, no prompts: the caller brings the
//! passphrase) and not the cache: storing and listing releases is `store::releases`. The rules
//! a manifest must pass are `convoy_core::manifest`'s; this module does the files.

use anyhow::{Context, Result, anyhow, bail};
use convoy_core::fleet::SmallMap;
use convoy_core::manifest::{
    self, ArtifactDigest, MAX_MANIFEST_BYTES, Rollback, SignedManifest, TrustedKeys,
    VerifiedManifest,
};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::requirement::Requirement;
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

use crate::keys::{self, FileMode};

/// Parses `--expires`: RFC 3339, or a positive count of s, m, h, d or w from `now`.
pub fn parse_expires(text: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    let unit_secs = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        _ => 0,
    };
    let count = text
        .get(..text.len().saturating_sub(1))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0);
    match count {
        Some(n) if unit_secs > 0 => Ok(now.plus_secs(n.saturating_mul(unit_secs))),
        _ => bail!(
            "--expires {text:?}: expected RFC 3339 (2027-01-01T00:00:00Z) or a duration from now (30d, 12h, 90m, 2w)"
        ),
    }
}

/// Hashes a file in 1 MiB chunks: its name, length and SHA-256, without holding it in memory.
pub fn hash_file(path: &Path) -> Result<ArtifactDigest> {
    hash_file_with_progress(path, &mut |_| {})
}

/// As [`hash_file`], calling `progress` with the bytes hashed so far after every chunk (the
/// console's progress bar).
pub fn hash_file_with_progress(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArtifactDigest> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no UTF-8 file name", path.display()))?
        .to_owned();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut length_bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length_bytes += n as u64;
        progress(length_bytes);
    }
    Ok(ArtifactDigest {
        name,
        length_bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The artifact a manifest lists for a hashed file, downloaded from `url` (default: its name).
pub fn artifact_of(digest: ArtifactDigest, url: Option<String>) -> Artifact {
    Artifact {
        url: url.unwrap_or_else(|| digest.name.clone()),
        name: digest.name,
        length_bytes: digest.length_bytes,
        sha256: digest.sha256,
    }
}

/// What a release says besides its artifacts: the fields of `convoy release create` and of the
/// console's release form.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseFields {
    /// Default: the hardware ids and the version, e.g. `t300-2.5.0`.
    pub id: Option<String>,
    pub version: Version,
    pub counter: u64,
    pub hardware: Vec<String>,
    pub requires: Vec<Requirement>,
    /// Default: `firmware` at [`Self::version`].
    pub provides: Vec<(String, Version)>,
    pub expires: Timestamp,
}

/// The release spec for `fields` and the hashed `artifacts`; refuses an expiry that is not
/// after `now`.
pub fn release_spec(
    fields: &ReleaseFields,
    artifacts: Vec<Artifact>,
    now: Timestamp,
) -> Result<ReleaseSpec> {
    if fields.expires <= now {
        bail!(
            "the expiry {} is not after now ({now}): a manifest must expire in the future",
            fields.expires
        );
    }
    let provides: SmallMap<Version> = if fields.provides.is_empty() {
        [("firmware", fields.version)].into_iter().collect()
    } else {
        fields
            .provides
            .iter()
            .map(|(c, v)| (c.clone(), *v))
            .collect()
    };
    Ok(ReleaseSpec {
        id: fields
            .id
            .clone()
            .unwrap_or_else(|| default_id(&fields.hardware, fields.version)),
        version: fields.version,
        counter: fields.counter,
        hardware: fields.hardware.clone(),
        provides,
        requires: fields.requires.clone(),
        artifacts,
        expires: fields.expires,
    })
}

/// Unlocks the key in `key_dir` with `passphrase`, signs `spec`, and verifies the result
/// against that key at `now` (as a device would) before anyone writes it.
pub fn sign_release(
    spec: ReleaseSpec,
    rollback: Option<Rollback>,
    key_dir: &Path,
    passphrase: &str,
    now: Timestamp,
) -> Result<SignedManifest> {
    let key = keys::load_signing_key(key_dir, passphrase)?;
    let id = spec.id.clone();
    let manifest = SignedManifest::sign(spec, rollback, &key)
        .with_context(|| format!("signing release {id}"))?;
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    manifest::verify(&manifest.to_json_bytes(), &trust, now).map_err(|rejection| {
        anyhow!(
            "the manifest just signed for release {id} does not verify ({}): {rejection}",
            rejection.attack()
        )
    })?;
    Ok(manifest)
}

fn default_id(hardware: &[String], version: Version) -> String {
    let hw: Vec<String> = hardware.iter().map(|h| h.to_ascii_lowercase()).collect();
    format!("{}-{version}", hw.join("_"))
}

/// Writes a signed manifest file (replacing one already there).
pub fn write_manifest(out: &Path, manifest: &SignedManifest) -> Result<()> {
    keys::write_file(out, &manifest.to_json_bytes(), FileMode::Public)
        .with_context(|| format!("writing the manifest to {}", out.display()))
}

/// Reads a manifest file, at most one byte over the size limit (so the core names an oversize
/// file as such instead of this reading it whole).
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    // Read one byte over the limit at most, so the core names an oversize file as such.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(len.min(MAX_MANIFEST_BYTES as u64 + 1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// Reads and verifies a manifest file against `trust` at `now`; the error names the file and
/// the attack the rejection stops.
pub(crate) fn verify_file(
    path: &Path,
    trust: &TrustedKeys,
    now: Timestamp,
) -> Result<VerifiedManifest> {
    let bytes = read_manifest(path)?;
    manifest::verify(&bytes, trust, now).map_err(|rejection| {
        anyhow!(
            "manifest {} rejected ({}): {rejection}",
            path.display(),
            rejection.attack()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::releases::{record_release, stored_manifests};

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn fields() -> ReleaseFields {
        ReleaseFields {
            id: None,
            version: "2.5.0".parse().expect("version"),
            counter: 25,
            hardware: vec!["T300".into(), "T500".into()],
            requires: Vec::new(),
            provides: Vec::new(),
            expires: NOW.plus_secs(86_400),
        }
    }

    fn artifact(bytes: &[u8]) -> Artifact {
        artifact_of(ArtifactDigest::of_bytes("fw.bin", bytes), None)
    }

    #[test]
    fn release_spec_defaults_the_id_and_provides_and_refuses_a_past_expiry() {
        let spec = release_spec(&fields(), vec![artifact(b"abc")], NOW).expect("spec");
        assert_eq!(spec.id, "t300_t500-2.5.0");
        assert_eq!(spec.artifacts[0].url, "fw.bin");
        assert_eq!(
            spec.provides
                .iter()
                .map(|(c, v)| (c.to_string(), *v))
                .collect::<Vec<_>>(),
            [("firmware".to_owned(), fields().version)]
        );
        let past = ReleaseFields {
            expires: NOW,
            ..fields()
        };
        let err = release_spec(&past, vec![artifact(b"abc")], NOW).expect_err("past");
        assert!(err.to_string().contains("is not after now"), "{err:#}");
    }

    #[test]
    fn hashing_reports_progress_per_chunk_and_matches_the_whole_file_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fw.bin");
        let bytes: Vec<u8> = (0..(2 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let mut seen = Vec::new();
        let digest = hash_file_with_progress(&path, &mut |done| seen.push(done)).expect("hash");
        assert_eq!(seen, [1 << 20, 2 << 20, (2 << 20) + 17]);
        assert_eq!(digest, ArtifactDigest::of_bytes("fw.bin", &bytes));
    }

    #[test]
    fn a_recorded_release_is_listed_by_id_and_a_new_signature_replaces_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = dir.path().join("key");
        keys::generate(&key_dir, "release test passphrase").expect("key");
        let store = Store::open(&dir.path().join("cache.db")).expect("cache");
        let sign = |id: &str, counter: u64| {
            let spec = release_spec(
                &ReleaseFields {
                    id: Some(id.into()),
                    counter,
                    ..fields()
                },
                vec![artifact(b"abc")],
                NOW,
            )
            .expect("spec");
            sign_release(spec, None, &key_dir, "release test passphrase", NOW).expect("signed")
        };
        for (id, counter) in [("b-rel", 2), ("a-rel", 1), ("b-rel", 3)] {
            record_release(&store, &sign(id, counter), "test", NOW).expect("recorded");
        }
        let stored = stored_manifests(&store).expect("listed");
        let ids: Vec<&str> = stored.iter().map(|m| m.release_id.as_str()).collect();
        assert_eq!(ids, ["a-rel", "b-rel"]);
        let trust = keys::load_trust(&key_dir).expect("trust");
        let b = manifest::verify(&stored[1].bytes, &trust, NOW).expect("verifies");
        assert_eq!(b.spec().counter, 3);
        let err = sign_release(
            release_spec(&fields(), vec![artifact(b"abc")], NOW).expect("spec"),
            None,
            &key_dir,
            "wrong",
            NOW,
        )
        .expect_err("wrong passphrase");
        assert!(format!("{err:#}").contains("wrong passphrase"), "{err:#}");
    }
}
