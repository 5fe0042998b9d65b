//! `convoy release`: sign release manifests, verify them (with the device-side rules), and
//! export them as a TUF repository.
//!
//! Artifacts are hashed in a stream (1 MiB at a time), never read into memory whole. The
//! formats, the checks and the attacks each rejection names are in docs/SIGNING.md; the logic is
//! in `convoy_core::manifest` and `convoy_core::tuf`. This module does the files and the clock.

use anyhow::{Context, Result, anyhow, bail};
use convoy_core::fleet::SmallMap;
use convoy_core::manifest::{
    self, ArtifactDigest, DeviceState, MAX_MANIFEST_BYTES, Rollback, SignedManifest, TrustedKeys,
    VerifiedManifest,
};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::requirement::Requirement;
use convoy_core::time::Timestamp;
use convoy_core::tuf::{self, TufExpiry};
use convoy_core::version::Version;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::keys::{self, Confirm, FileMode};
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Hash the artifacts and write a signed release manifest.
    Create(Box<CreateArgs>),
    /// Verify a manifest (and artifacts) against a trust directory, as a device would.
    Verify(VerifyArgs),
    /// Write a TUF 1.0 repository (metadata/ and targets/) for verified releases.
    ExportTuf(ExportTufArgs),
    /// Verify a manifest against a trust directory and store it in the cache (audited), where
    /// the console lists it and `convoy serve` takes rollout requests for it.
    Store(StoreArgs),
}

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The manifest file.
    pub manifest: PathBuf,
    /// A trust directory (keyset-N.json) or a key directory.
    #[arg(long)]
    pub trust: PathBuf,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// An artifact file (repeatable); hashed in a stream.
    #[arg(long, required = true)]
    pub artifact: Vec<PathBuf>,
    /// Download URL or store path of each artifact, in --artifact order (default: its file name).
    #[arg(long)]
    pub url: Vec<String>,
    /// Human version, e.g. 2.5.0.
    #[arg(long)]
    pub version: Version,
    /// Monotonic release counter: devices never install a lower one without a signed rollback.
    #[arg(long)]
    pub counter: u64,
    /// Hardware ids (device models / SKUs) the release is for.
    #[arg(long, required = true, num_args = 1..)]
    pub hardware: Vec<String>,
    /// Prerequisites, e.g. `bootloader>=2.0`, `hw_rev in B,C` (repeatable).
    #[arg(long, num_args = 1..)]
    pub requires: Vec<Requirement>,
    /// What the release installs, COMPONENT=VERSION (repeatable; default firmware=<--version>).
    #[arg(long, value_parser = parse_provides)]
    pub provides: Vec<(String, Version)>,
    /// Release id (default: the hardware ids and version, e.g. `t300-2.5.0`).
    #[arg(long)]
    pub id: Option<String>,
    /// Expiry: RFC 3339 (`2027-01-01T00:00:00Z`) or relative to now (`30d`, `12h`, `90m`, `2w`).
    #[arg(long)]
    pub expires: String,
    /// Sign an explicit rollback: devices may install this lower counter, and record the reason.
    #[arg(long, requires = "rollback_from")]
    pub rollback: Option<String>,
    /// With --rollback: the highest installed counter it may replace (the bad release's
    /// counter); devices beyond it refuse the rollback.
    #[arg(long, requires = "rollback")]
    pub rollback_from: Option<u64>,
    /// The signing key directory.
    #[arg(long)]
    pub key: PathBuf,
    /// Read the key's passphrase from this file instead of prompting.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Where to write the manifest.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The manifest file.
    pub manifest: PathBuf,
    /// Artifact files to check against the signed length and hash (repeatable).
    #[arg(long)]
    pub artifact: Vec<PathBuf>,
    /// A trust directory (keyset-N.json) or a key directory.
    #[arg(long)]
    pub trust: PathBuf,
    /// Check as a device of this hardware id would (with --installed-counter).
    #[arg(long)]
    pub device_hardware: Option<String>,
    /// The release counter the device has installed (for the downgrade check).
    #[arg(long, default_value_t = 0)]
    pub installed_counter: u64,
    /// Verify as of this moment (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportTufArgs {
    /// The key that signs every TUF role.
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Repository directory (metadata/ and targets/ are written inside).
    #[arg(long)]
    pub out: PathBuf,
    /// Trust directory the manifests must verify against (default: the --key's public key).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Where the artifact files are (default: each manifest's directory); looked up by URL
    /// path, then by name.
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Release manifests to publish.
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        ReleaseCommand::Create(a) => create(a),
        ReleaseCommand::Verify(a) => verify(a),
        ReleaseCommand::ExportTuf(a) => export_tuf(a),
        ReleaseCommand::Store(a) => store_release(a),
    }
}

fn parse_provides(text: &str) -> Result<(String, Version), String> {
    let (name, version) = text
        .split_once('=')
        .ok_or_else(|| format!("expected COMPONENT=VERSION, got {text:?}"))?;
    let version = version
        .parse()
        .map_err(|e| format!("in --provides {text:?}: {e}"))?;
    if name.is_empty() {
        return Err(format!("empty component name in --provides {text:?}"));
    }
    Ok((name.to_owned(), version))
}

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

fn create(args: &CreateArgs) -> Result<()> {
    let now = crate::now();
    let expires = parse_expires(&args.expires, now)?;
    if !args.url.is_empty() && args.url.len() != args.artifact.len() {
        bail!(
            "{} --url values for {} --artifact files: give one per artifact, in the same order, or none",
            args.url.len(),
            args.artifact.len()
        );
    }
    let fields = ReleaseFields {
        id: args.id.clone(),
        version: args.version,
        counter: args.counter,
        hardware: args.hardware.clone(),
        requires: args.requires.clone(),
        provides: args.provides.clone(),
        expires,
    };
    if expires <= now {
        bail!("--expires {} is in the past", args.expires);
    }
    let mut artifacts = Vec::new();
    for (i, path) in args.artifact.iter().enumerate() {
        artifacts.push(artifact_of(hash_file(path)?, args.url.get(i).cloned()));
    }
    let spec = release_spec(&fields, artifacts, now)?;
    let passphrase = keys::read_passphrase(
        args.passphrase_file.as_deref(),
        &format!("the key in {}", args.key.display()),
        Confirm::Once,
    )?;
    let rollback = args.rollback.clone().map(|reason| Rollback {
        reason,
        from_counter_max: args.rollback_from.unwrap_or(args.counter),
    });
    let id = spec.id.clone();
    let manifest = sign_release(spec, rollback, &args.key, &passphrase, now)?;
    write_manifest(&args.out, &manifest)?;
    eprintln!(
        "signed release {id} (version {}, counter {}, {} bytes of artifacts, expires {expires}) with key {}, written to {}",
        args.version,
        args.counter,
        manifest.signed.release.download_bytes(),
        manifest.signed.key_id,
        args.out.display()
    );
    Ok(())
}

/// Writes a signed manifest file (replacing one already there).
pub fn write_manifest(out: &Path, manifest: &SignedManifest) -> Result<()> {
    keys::write_file(out, &manifest.to_json_bytes(), FileMode::Public)
        .with_context(|| format!("writing the manifest to {}", out.display()))
}

pub use crate::store::releases::{StoredManifest, record_release, stored_manifests};

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

fn store_release(args: &StoreArgs) -> Result<()> {
    let now = crate::now();
    let trust = keys::load_trust(&args.trust)?;
    let m = verify_file(&args.manifest, &trust, now)?;
    let db = crate::store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let seq = record_release(
        &store,
        m.signed_manifest(),
        &crate::store::audit::operator_actor(),
        now,
    )?;
    println!(
        "stored release {} (version {}, counter {}) in {} (audit entry {seq})",
        m.release_id(),
        m.spec().version,
        m.spec().counter,
        db.display()
    );
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let now = match &args.now {
        Some(t) => Timestamp::parse_rfc3339(t).map_err(|e| anyhow!("--now: {e}"))?,
        None => crate::now(),
    };
    let trust = keys::load_trust(&args.trust)?;
    let m = verify_file(&args.manifest, &trust, now)?;
    let spec = m.spec();
    if let Some(hw) = &args.device_hardware {
        DeviceState::new(hw.clone(), args.installed_counter)
            .check_manifest(&m, now)
            .map_err(|r| {
                anyhow!(
                    "manifest {} rejected for a {hw} device at counter {} ({}): {r}",
                    args.manifest.display(),
                    args.installed_counter,
                    r.attack()
                )
            })?;
    }
    for path in &args.artifact {
        let mut digest = hash_file(path)?;
        // A single-artifact release accepts its file under any local name.
        if let [only] = spec.artifacts.as_slice() {
            digest.name.clone_from(&only.name);
        }
        m.check_artifact(&digest)
            .map_err(|r| anyhow!("artifact {} rejected ({}): {r}", path.display(), r.attack()))?;
    }
    println!(
        "verified: release {} version {} counter {} for {} signed by key {}{}, expires {}; {} artifact(s) checked",
        spec.id,
        spec.version,
        spec.counter,
        spec.hardware.join(","),
        m.key_id(),
        m.rollback()
            .map(|r| format!(" (signed rollback: {})", r.reason))
            .unwrap_or_default(),
        spec.expires,
        args.artifact.len()
    );
    Ok(())
}

/// Finds an artifact's file for export: under `dir`, by its URL's path, then by its name.
fn find_artifact(dir: &Path, artifact: &Artifact) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if !artifact.url.contains("://") && !artifact.url.contains("..") {
        candidates.push(dir.join(artifact.url.trim_start_matches('/')));
    }
    candidates.push(dir.join(&artifact.name));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "artifact {} (url {}) not found in {}: pass --artifacts-dir",
            artifact.name,
            artifact.url,
            dir.display()
        )
    })
}

fn export_tuf(args: &ExportTufArgs) -> Result<()> {
    let now = crate::now();
    let passphrase = keys::read_passphrase(
        args.passphrase_file.as_deref(),
        &format!("the key in {}", args.key.display()),
        Confirm::Once,
    )?;
    let key = keys::load_signing_key(&args.key, &passphrase)?;
    let trust = match &args.trust {
        Some(dir) => keys::load_trust(dir)?,
        None => TrustedKeys::from_keys([&key.verifying_key()]),
    };
    let mut verified = Vec::new();
    let mut sources = Vec::new();
    for path in &args.manifests {
        let m = verify_file(path, &trust, now)?;
        let dir = match &args.artifacts_dir {
            Some(d) => d.clone(),
            None => path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        let mut digests = Vec::new();
        for a in &m.spec().artifacts {
            let file = find_artifact(&dir, a)?;
            let mut d = hash_file(&file)?;
            d.name.clone_from(&a.name);
            digests.push(d);
            sources.push((a.sha256.clone(), a.name.clone(), file));
        }
        m.check_artifacts(&digests).map_err(|r| {
            anyhow!(
                "artifacts of {} rejected ({}): {r}",
                path.display(),
                r.attack()
            )
        })?;
        verified.push(m);
    }
    let targets = tuf::targets_of(&verified)?;
    let metadata_dir = args.out.join("metadata");
    let targets_dir = args.out.join("targets");
    std::fs::create_dir_all(&metadata_dir)
        .with_context(|| format!("creating {}", metadata_dir.display()))?;
    std::fs::create_dir_all(&targets_dir)
        .with_context(|| format!("creating {}", targets_dir.display()))?;
    let version = previous_version(&metadata_dir)? + 1;
    for (sha256, name, file) in &sources {
        let dest = targets_dir.join(format!("{sha256}.{name}"));
        if !dest.exists() {
            crate::files::write_with(&dest, FileMode::Public, |w| {
                let mut source = std::fs::File::open(file)
                    .with_context(|| format!("opening {}", file.display()))?;
                std::io::copy(&mut source, w)
                    .with_context(|| format!("copying {} to {}", file.display(), dest.display()))?;
                Ok(())
            })?;
        }
    }
    let metadata = tuf::build_repository(&targets, version, TufExpiry::from_now(now), &key)?;
    // Targets first, timestamp last: a client reading mid-write never sees a timestamp that
    // points at files not there yet.
    for (name, bytes) in &metadata.files {
        keys::write_file(&metadata_dir.join(name), bytes, FileMode::Public)?;
    }
    eprintln!(
        "exported {} release(s), {} target(s) to the TUF repository {} (metadata version {version})",
        verified.len(),
        targets.len(),
        args.out.display()
    );
    Ok(())
}

/// The version of an existing repository's timestamp (0 for a new repository), so a re-export
/// publishes a higher version and clients accept it.
fn previous_version(metadata_dir: &Path) -> Result<u64> {
    let path = metadata_dir.join("timestamp.json");
    if !path.exists() {
        return Ok(0);
    }
    let doc: serde_json::Value = convoy_core::strict_json::value_from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    doc["signed"]["version"]
        .as_u64()
        .ok_or_else(|| anyhow!("{} has no signed.version", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .map(|(c, v)| (c.to_owned(), *v))
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
