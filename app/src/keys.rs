//! Signing keys and trust on disk: key directories, passphrases, and trust directories.
//!
//! A key directory holds `public.json` (the key id and the TUF key object, plain) and
//! `private.key.json` (mode 0600): the 32-byte Ed25519 secret encrypted with XChaCha20-Poly1305
//! under a key derived from the passphrase by argon2id (64 MiB, 3 passes), with the key id as
//! associated data, so a wrong passphrase or an altered file fails authentication instead of
//! yielding a wrong key. A trust directory holds `keyset-1.json`, `keyset-2.json`, ...: the
//! chain of signed key sets that `convoy_core::manifest::TrustedKeys::from_chain` verifies.
//!
//! Passphrases come from a file (`--passphrase-file`, for scripts and CI) or from a no-echo
//! prompt when stdin is a terminal; never from a command-line argument, where other users and
//! shell history could read them. This module is not a key server or an HSM interface.

use anyhow::{Context, Result, anyhow, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use convoy_core::manifest::{KeyId, PublicKey, SignedKeySet, TrustedKeys};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The encrypted private key's file name in a key directory.
pub const PRIVATE_FILE: &str = "private.key.json";
/// The public key's file name in a key directory.
pub const PUBLIC_FILE: &str = "public.json";
const PRIVATE_FORMAT: &str = "convoy-ed25519-private-v1";
/// argon2id cost: 64 MiB of memory, 3 passes, 1 lane (RFC 9106's second recommended setting,
/// with one lane so the cost is the same on a 2-core CI machine and a laptop).
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_PASSES: u32 = 3;
const KDF_LANES: u32 = 1;
/// Refuse absurd cost parameters from a file (a crafted key file must not exhaust memory).
const KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
const KDF_MAX_PASSES: u32 = 16;

/// `public.json`: a key id and the TUF key object.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    pub key_id: KeyId,
    pub key: PublicKey,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    algorithm: String,
    version: u32,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    salt: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherParams {
    algorithm: String,
    nonce: String,
}

/// `private.key.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateKeyFile {
    format: String,
    key_id: KeyId,
    kdf: KdfParams,
    cipher: CipherParams,
    /// Hex of the encrypted 32-byte secret and the 16-byte tag.
    ciphertext: String,
}

/// Where a command gets its passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// Ask twice on a terminal (a new key: a typo would lock the key forever).
    Twice,
    /// Ask once.
    Once,
}

/// Reads the passphrase from `file` (one trailing newline removed), or prompts without echo
/// when stdin is a terminal.
pub fn read_passphrase(
    file: Option<&Path>,
    purpose: &str,
    confirm: Confirm,
) -> Result<Zeroizing<String>> {
    let passphrase = if let Some(file) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the passphrase file {}", file.display()))?,
        );
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Zeroizing::new(trimmed.to_owned())
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("passphrase for {purpose}: "))
                .context("reading the passphrase from the terminal")?,
        );
        if confirm == Confirm::Twice {
            let again = Zeroizing::new(
                rpassword::prompt_password("repeat the passphrase: ")
                    .context("reading the passphrase from the terminal")?,
            );
            if *first != *again {
                bail!("the two passphrases differ");
            }
        }
        first
    } else {
        bail!(
            "no passphrase for {purpose}: stdin is not a terminal, so pass --passphrase-file FILE (passphrases are never taken from command-line arguments)"
        );
    };
    if passphrase.is_empty() {
        bail!("the passphrase for {purpose} is empty");
    }
    Ok(passphrase)
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| anyhow!("reading the system random source: {e}"))?;
    Ok(bytes)
}

fn derive_key(passphrase: &str, kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    if kdf.algorithm != "argon2id" || kdf.version != 0x13 {
        bail!(
            "unsupported key derivation {} version {}: expected argon2id version 19",
            kdf.algorithm,
            kdf.version
        );
    }
    if kdf.memory_kib > KDF_MAX_MEMORY_KIB || kdf.passes > KDF_MAX_PASSES || kdf.lanes > 16 {
        bail!(
            "key derivation cost out of range (memory {} KiB, {} passes, {} lanes)",
            kdf.memory_kib,
            kdf.passes,
            kdf.lanes
        );
    }
    let salt = hex::decode(&kdf.salt).context("the key file's salt is not hex")?;
    let params = Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(32))
        .map_err(|e| anyhow!("invalid key derivation parameters: {e}"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut())
        .map_err(|e| anyhow!("deriving the key encryption key: {e}"))?;
    Ok(out)
}

fn aad(key_id: &KeyId) -> Vec<u8> {
    format!("{PRIVATE_FORMAT}:{key_id}").into_bytes()
}

/// Generates a key pair into `dir` (created if needed; an existing key there is never
/// overwritten) and returns its id.
pub fn generate(dir: &Path, passphrase: &str) -> Result<KeyId> {
    let private_path = dir.join(PRIVATE_FILE);
    if private_path.exists() || dir.join(PUBLIC_FILE).exists() {
        bail!(
            "{} already holds a key: refusing to overwrite it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = random_bytes::<32>()?;
    let signing = SigningKey::from_bytes(&secret);
    let public = PublicKey::ed25519(&signing.verifying_key());
    let key_id = public.key_id();

    let salt = random_bytes::<16>()?;
    let nonce = random_bytes::<24>()?;
    let kdf = KdfParams {
        algorithm: "argon2id".to_owned(),
        version: 0x13,
        memory_kib: KDF_MEMORY_KIB,
        passes: KDF_PASSES,
        lanes: KDF_LANES,
        salt: hex::encode(salt.as_ref()),
    };
    let kek = derive_key(passphrase, &kdf)?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(nonce.as_ref()),
            Payload {
                msg: secret.as_ref(),
                aad: &aad(&key_id),
            },
        )
        .map_err(|_| anyhow!("encrypting the private key"))?;
    let private = PrivateKeyFile {
        format: PRIVATE_FORMAT.to_owned(),
        key_id: key_id.clone(),
        kdf,
        cipher: CipherParams {
            algorithm: "xchacha20poly1305".to_owned(),
            nonce: hex::encode(nonce.as_ref()),
        },
        ciphertext: hex::encode(ciphertext),
    };
    // Never replaces a private key, even one created since the check above.
    write_new_file(&private_path, &json_bytes(&private)?, FileMode::OwnerOnly)?;
    write_public_file(dir, public)?;
    Ok(key_id)
}

/// Writes `key` as the public key of the key directory `dir` (created if needed), which then
/// serves as a `--trust` directory for that one key; returns its id. What a verifier needs of a
/// key it did not generate (the demo's seed-derived key, a key handed over out of band).
pub fn write_public(dir: &Path, key: &VerifyingKey) -> Result<KeyId> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_public_file(dir, PublicKey::ed25519(key))
}

fn write_public_file(dir: &Path, public: PublicKey) -> Result<KeyId> {
    let key_id = public.key_id();
    write_file(
        &dir.join(PUBLIC_FILE),
        &json_bytes(&PublicKeyFile {
            key_id: key_id.clone(),
            key: public,
        })?,
        FileMode::Public,
    )?;
    Ok(key_id)
}

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).context("encoding JSON")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Who may read a file Convoy writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// 0600: private keys.
    OwnerOnly,
    /// The umask's default.
    Public,
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename), creating the temporary
/// file with `mode` so a private key is never readable by others, not even for a moment.
pub fn write_file(path: &Path, bytes: &[u8], mode: FileMode) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if mode == FileMode::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Like [`write_file`], but fails if `path` already exists, even when another process creates
/// it between our check and our write: the finished temporary file is hard-linked into place,
/// which, unlike a rename, never replaces an existing file.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: FileMode) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    write_file(&tmp, bytes, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists already; it was not replaced", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn read_limited(path: &Path, limit_bytes: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > limit_bytes {
        bail!(
            "{} is {len} bytes, over the limit of {limit_bytes}",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The public key of a key directory, checked against its recorded id.
pub fn load_public(dir: &Path) -> Result<VerifyingKey> {
    let path = dir.join(PUBLIC_FILE);
    let file: PublicKeyFile =
        convoy_core::strict_json::from_slice(&read_limited(&path, 64 * 1024)?)
            .with_context(|| format!("parsing {}", path.display()))?;
    let key = file
        .key
        .verifying_key()
        .with_context(|| format!("in {}", path.display()))?;
    if KeyId::of(&key) != file.key_id {
        bail!(
            "{} says key id {} but its key has id {}",
            path.display(),
            file.key_id,
            KeyId::of(&key)
        );
    }
    Ok(key)
}

/// Decrypts the private key of a key directory. A wrong passphrase is an error naming the
/// directory, never a panic.
pub fn load_signing_key(dir: &Path, passphrase: &str) -> Result<SigningKey> {
    let path = dir.join(PRIVATE_FILE);
    let file: PrivateKeyFile =
        convoy_core::strict_json::from_slice(&read_limited(&path, 64 * 1024)?)
            .with_context(|| format!("parsing {}", path.display()))?;
    if file.format != PRIVATE_FORMAT || file.cipher.algorithm != "xchacha20poly1305" {
        bail!(
            "{} has format {:?} / cipher {:?}: expected {PRIVATE_FORMAT:?} / \"xchacha20poly1305\"",
            path.display(),
            file.format,
            file.cipher.algorithm
        );
    }
    let nonce: [u8; 24] = hex::decode(&file.cipher.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| anyhow!("{}: the nonce is not 24 hex-encoded bytes", path.display()))?;
    let ciphertext = hex::decode(&file.ciphertext)
        .with_context(|| format!("{}: the ciphertext is not hex", path.display()))?;
    let kek =
        derive_key(passphrase, &file.kdf).with_context(|| format!("in {}", path.display()))?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    let secret = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad(&file.key_id),
                },
            )
            .map_err(|_| {
                anyhow!(
                    "wrong passphrase for the key in {} (or the key file was altered)",
                    dir.display()
                )
            })?,
    );
    let secret: &[u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("{}: the decrypted key is not 32 bytes", path.display()))?;
    let key = SigningKey::from_bytes(secret);
    if KeyId::of(&key.verifying_key()) != file.key_id {
        bail!(
            "{}: the decrypted key does not have the recorded key id {}",
            path.display(),
            file.key_id
        );
    }
    Ok(key)
}

/// The file name of key-set version `version` in a trust directory.
pub fn keyset_file_name(version: u64) -> String {
    format!("keyset-{version}.json")
}

/// The verified chain of key sets in a trust directory, version 1 first.
pub fn load_keyset_chain(dir: &Path) -> Result<Vec<SignedKeySet>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = name
            .strip_prefix("keyset-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|v| v.parse::<u64>().ok())
        {
            // `keyset-01.json` beside `keyset-1.json` would count one version twice.
            if name != keyset_file_name(v) {
                bail!(
                    "{}: unexpected key-set file name {name:?}, expected {}",
                    dir.display(),
                    keyset_file_name(v)
                );
            }
            versions.push(v);
        }
    }
    versions.sort_unstable();
    let mut chain = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if *v != i as u64 + 1 {
            bail!(
                "{}: key-set versions must run 1, 2, 3, ... but {} is missing",
                dir.display(),
                keyset_file_name(i as u64 + 1)
            );
        }
        let path = dir.join(keyset_file_name(*v));
        let set = SignedKeySet::parse(&read_limited(&path, 1024 * 1024)?)
            .with_context(|| format!("in {}", path.display()))?;
        if set.signed.version != *v {
            bail!("{} holds version {}", path.display(), set.signed.version);
        }
        chain.push(set);
    }
    Ok(chain)
}

/// What `--trust DIR` names: a trust directory (its key-set chain is verified) or, for a single
/// operator, a key directory whose public key is trusted directly.
pub fn load_trust(dir: &Path) -> Result<TrustedKeys> {
    let chain = load_keyset_chain(dir)?;
    if !chain.is_empty() {
        return TrustedKeys::from_chain(&chain)
            .with_context(|| format!("verifying the key sets in {}", dir.display()));
    }
    if dir.join(PUBLIC_FILE).exists() {
        return Ok(TrustedKeys::from_keys([&load_public(dir)?]));
    }
    bail!(
        "{} is neither a trust directory (keyset-1.json, ...) nor a key directory ({PUBLIC_FILE})",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_round_trips_and_wrong_passphrase_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = dir.path().join("k");
        let id = generate(&key_dir, "correct horse").expect("generate");
        let key = load_signing_key(&key_dir, "correct horse").expect("load");
        assert_eq!(KeyId::of(&key.verifying_key()), id);
        assert_eq!(load_public(&key_dir).expect("public"), key.verifying_key());
        let err = load_signing_key(&key_dir, "wrong horse").expect_err("wrong passphrase");
        assert!(err.to_string().contains("wrong passphrase"), "{err:#}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_dir.join(PRIVATE_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwrites an existing key.
        assert!(generate(&key_dir, "x").is_err());
        assert_eq!(load_public(&key_dir).expect("public"), key.verifying_key());
    }

    #[test]
    fn altered_key_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "pw").expect("generate");
        let path = dir.path().join(PRIVATE_FILE);
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let ct = file["ciphertext"].as_str().expect("ct").to_owned();
        let flipped = if ct.starts_with('0') { "1" } else { "0" };
        file["ciphertext"] = format!("{flipped}{}", &ct[1..]).into();
        std::fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
        assert!(load_signing_key(dir.path(), "pw").is_err());
    }
}
