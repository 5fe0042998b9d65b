//! `convoy release`: sign release manifests, verify them (with the device-side rules), and
//! export them as a TUF repository.
//!
//! Artifacts are hashed in a stream (1 MiB at a time), never read into memory whole. The
//! formats, the checks and the attacks each rejection names are in docs/SIGNING.md; the logic is
//! in `convoy_core::manifest` and `convoy_core::tuf`, the use cases (hashing, signing, reading
//! and verifying manifest files) in `ops::releases`. This module is the clap arguments, the
//! clock, the prompts and the printing.

use anyhow::{Context, Result, anyhow, bail};
use convoy_core::manifest::{DeviceMemory, Rollback, TrustedKeys};
use convoy_core::release::Artifact;
use convoy_core::requirement::Requirement;
use convoy_core::time::Timestamp;
use convoy_core::tuf::{self, TufExpiry};
use convoy_core::version::Version;
use std::path::{Path, PathBuf};

use crate::keys::{self, Confirm, FileMode};
use crate::ops::releases::{
    ReleaseFields, artifact_of, parse_expires, release_spec, sign_release, write_manifest,
};
use crate::store::Store;
use crate::store::releases::record_release;

use crate::ops::releases::{hash_file, verify_file};

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
        DeviceMemory::new(hw.clone(), args.installed_counter)
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
