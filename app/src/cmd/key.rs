//! `convoy key`: generate signing keys, and keep a trust directory (the signed chain of key
//! sets) through rotations and revocations.
//!
//! The formats and the rules are in docs/SIGNING.md; the checks are in
//! `convoy_core::manifest`. This module only reads and writes files and asks for passphrases.

use anyhow::{Context, Result, bail};
use convoy_core::manifest::{KeyId, KeySetBody, RetireOld, SignedKeySet, TrustedKeys};
use std::path::{Path, PathBuf};

use crate::keys::{self, Confirm, FileMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate an Ed25519 key pair: the private key encrypted with a passphrase (mode 0600),
    /// the public key and key id in plain.
    Generate(GenerateArgs),
    /// Start a trust directory (keyset-1.json) trusting one key, signed by it.
    Trust(TrustArgs),
    /// Rotate: write the next key set, trusting the new key, signed by the old key.
    Rotate(RotateArgs),
    /// Revoke a key for good: write the next key set, signed by another trusted key.
    Revoke(RevokeArgs),
    /// List the keys a trust directory trusts and those it revoked.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Key directory to create (private.key.json and public.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Read the passphrase from this file (first line) instead of prompting.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TrustArgs {
    /// Key directories to trust (several keys may be trusted at once); the first signs
    /// keyset-1.json, the others' public keys are read.
    #[arg(long, required = true, num_args = 1..)]
    pub key: Vec<PathBuf>,
    /// Trust directory to create.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The key being replaced: it signs the new key set (its passphrase is asked).
    #[arg(long)]
    pub old: PathBuf,
    /// The replacement key (only its public key is read).
    #[arg(long)]
    pub new: PathBuf,
    /// The trust directory to extend with the next key set.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep the old key trusted too, for a transition period (by default it is retired).
    #[arg(long)]
    pub keep_old: bool,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The key to revoke: a key id, or a key directory.
    #[arg(long)]
    pub revoke: String,
    /// A trusted key that signs the new key set.
    #[arg(long)]
    pub key: PathBuf,
    /// The trust directory to extend.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// A trust directory or a key directory.
    #[arg(long)]
    pub trust: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        KeyCommand::Generate(a) => generate(a),
        KeyCommand::Trust(a) => trust(a),
        KeyCommand::Rotate(a) => rotate(a),
        KeyCommand::Revoke(a) => revoke(a),
        KeyCommand::List(a) => list(a),
    }
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let passphrase = keys::read_passphrase(
        args.passphrase_file.as_deref(),
        &format!("the new key in {}", args.out.display()),
        Confirm::Twice,
    )?;
    let id = keys::generate(&args.out, &passphrase)
        .with_context(|| format!("generating a key in {}", args.out.display()))?;
    println!("{id}");
    eprintln!("generated key {id} in {}", args.out.display());
    Ok(())
}

fn signing_key(dir: &Path, passphrase_file: Option<&Path>) -> Result<ed25519_dalek::SigningKey> {
    let passphrase = keys::read_passphrase(
        passphrase_file,
        &format!("the key in {}", dir.display()),
        Confirm::Once,
    )?;
    keys::load_signing_key(dir, &passphrase)
}

fn trust(args: &TrustArgs) -> Result<()> {
    if args.out.exists() && !keys::load_keyset_chain(&args.out)?.is_empty() {
        bail!(
            "{} already holds key sets: use `convoy key rotate` or `convoy key revoke` to change it",
            args.out.display()
        );
    }
    let (first, others) = args
        .key
        .split_first()
        .context("--key names no key directory")?;
    let key = signing_key(first, args.passphrase_file.as_deref())?;
    let mut trusted = vec![key.verifying_key()];
    for dir in others {
        trusted.push(keys::load_public(dir)?);
    }
    let set = SignedKeySet::sign(KeySetBody::initial(&trusted), &key)?;
    write_next(&args.out, &set)?;
    let ids: Vec<String> = trusted.iter().map(|k| KeyId::of(k).to_string()).collect();
    eprintln!(
        "started trust directory {} trusting {}",
        args.out.display(),
        ids.join(", ")
    );
    Ok(())
}

/// The verified trust of a trust directory, with its current body.
fn current(dir: &Path) -> Result<(TrustedKeys, KeySetBody)> {
    let chain = keys::load_keyset_chain(dir)?;
    if chain.is_empty() {
        bail!(
            "{} has no keyset-1.json: start it with `convoy key trust --key DIR --out {}`",
            dir.display(),
            dir.display()
        );
    }
    let trust = TrustedKeys::from_chain(&chain)
        .with_context(|| format!("verifying the key sets in {}", dir.display()))?;
    let body = trust
        .body()
        .cloned()
        .context("a verified chain has a body")?;
    Ok((trust, body))
}

fn write_next(dir: &Path, set: &SignedKeySet) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(keys::keyset_file_name(set.signed.version));
    // Verify the extended chain before anything reaches the disk: a key set that would not
    // verify is never written, so it cannot break later loads of the directory.
    let mut chain = keys::load_keyset_chain(dir)?;
    chain.push(set.clone());
    TrustedKeys::from_chain(&chain)
        .with_context(|| format!("the next key set for {} does not verify", dir.display()))?;
    // Never replaces a file: two concurrent rotations cannot both write version N.
    keys::write_new_file(&path, &set.to_json_bytes(), FileMode::Public)
}

fn rotate(args: &RotateArgs) -> Result<()> {
    let (trust, body) = current(&args.out)?;
    let new = keys::load_public(&args.new)?;
    let old = signing_key(&args.old, args.passphrase_file.as_deref())?;
    let old_id = KeyId::of(&old.verifying_key());
    if KeyId::of(&new) == old_id {
        bail!(
            "--old and --new are the same key {old_id}: rotating a key to itself would retire it and leave no key"
        );
    }
    if trust.key(&old_id).is_none() {
        bail!(
            "the old key {old_id} in {} is not trusted by {}: only a trusted key can sign the next key set",
            args.old.display(),
            args.out.display()
        );
    }
    let new_id = KeyId::of(&new);
    if trust.is_revoked(&new_id) {
        bail!("the new key {new_id} was revoked and can never be trusted again");
    }
    let retire = if args.keep_old {
        RetireOld::Keep
    } else {
        RetireOld::Retire
    };
    let next = SignedKeySet::sign(body.rotated(&old_id, &new, retire), &old)?;
    write_next(&args.out, &next)?;
    eprintln!(
        "key set version {} in {}: trusts {new_id}{}, signed by {old_id}",
        next.signed.version,
        args.out.display(),
        if args.keep_old {
            " and keeps the old key"
        } else {
            " instead of the old key"
        }
    );
    Ok(())
}

fn revoke(args: &RevokeArgs) -> Result<()> {
    let (trust, body) = current(&args.out)?;
    let revoked = if Path::new(&args.revoke).join(keys::PUBLIC_FILE).exists() {
        KeyId::of(&keys::load_public(Path::new(&args.revoke))?)
    } else {
        KeyId::parse(&args.revoke).with_context(|| {
            format!(
                "--revoke {}: neither a key directory nor a key id",
                args.revoke
            )
        })?
    };
    if trust.is_revoked(&revoked) {
        bail!("key {revoked} is already revoked in {}", args.out.display());
    }
    let signer = signing_key(&args.key, args.passphrase_file.as_deref())?;
    let signer_id = KeyId::of(&signer.verifying_key());
    if trust.key(&signer_id).is_none() {
        bail!(
            "the signing key {signer_id} in {} is not trusted by {}",
            args.key.display(),
            args.out.display()
        );
    }
    let next = SignedKeySet::sign(body.revoked(&revoked), &signer)?;
    write_next(&args.out, &next)?;
    eprintln!(
        "key set version {} in {}: revoked {revoked}, signed by {signer_id}",
        next.signed.version,
        args.out.display()
    );
    Ok(())
}

fn list(args: &ListArgs) -> Result<()> {
    let trust = keys::load_trust(&args.trust)?;
    println!("version {}", trust.version());
    for id in trust.key_ids() {
        println!("trusted {id}");
    }
    for id in trust.revoked_ids() {
        println!("revoked {id}");
    }
    Ok(())
}
