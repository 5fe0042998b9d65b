//! Signing keys and trust on disk: key directories, passphrases, and trust directories.
//!
//! A key directory holds `public.json` (the key id and the TUF key object, plain) and
//! `private.key.json` (mode 0600): the 32-byte Ed25519 secret encrypted with XChaCha20-Poly1305
//! under a key derived from the passphrase by argon2id (64 MiB, 3 passes), with the key id as
//! associated data, so a wrong passphrase or an altered file fails authentication instead of
//! yielding a wrong key. A trust directory holds `keyset-1.json`, `keyset-2.json`, ...: the
//! chain of signed key sets that `convoy_core::manifest::TrustedKeys::from_chain` verifies.
//! A directory with no key sets trusts keys directly: its own `public.json`, and each
//! `trusted-KEYID.json` beside it (a key an operator chose to trust, [`trust_key`]).
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
use std::io::IsTerminal;
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
        check_secret_file(file, SecretFile::Passphrase)?;
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

/// The rule a new key's passphrase must meet, as the refusal states it.
pub const PASSPHRASE_RULE: &str = "a new key's passphrase has at least 12 characters, is not made of digits only, a few distinct characters or a keyboard or alphabet run, is not a common password (with digits or symbols around it), and does not contain the key's name";

/// The keys of a keyboard, row by row: a passphrase inside this (or its reverse) is a run.
const KEYBOARD: &str = "1234567890qwertyuiopasdfghjklzxcvbnm";

/// The shortest passphrase a new key accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Common passwords and their obvious stems, refused for new keys (a short built-in list, not a
/// breach corpus: it catches what people type first).
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "passphrase",
    "passwort",
    "motdepasse",
    "letmein",
    "welcome",
    "changeme",
    "iloveyou",
    "trustno",
    "trustnoone",
    "admin",
    "administrator",
    "root",
    "toor",
    "secret",
    "qwerty",
    "azerty",
    "abc",
    "abcd",
    "abcdef",
    "monkey",
    "dragon",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "master",
    "shadow",
    "superman",
    "batman",
    "starwars",
    "whatever",
    "default",
    "convoy",
    "signing",
    "signingkey",
    "privatekey",
    "test",
    "testing",
    "example",
    "correcthorsebatterystaple",
    "opensesame",
    "hunter",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "psswrd",
];

/// Why `passphrase` is too weak for a new key named `key_name` (the key directory's name), or
/// `None` if it meets [`PASSPHRASE_RULE`]. Unlocking an existing key never applies this.
pub fn weak_passphrase(passphrase: &str, key_name: &str) -> Option<String> {
    let chars: Vec<char> = passphrase.chars().collect();
    if chars.len() < MIN_PASSPHRASE_CHARS {
        return Some(format!(
            "it has {} character{}, fewer than {MIN_PASSPHRASE_CHARS}",
            chars.len(),
            if chars.len() == 1 { "" } else { "s" }
        ));
    }
    let lower = passphrase.to_lowercase();
    if chars.iter().all(char::is_ascii_digit) {
        return Some("it is made of digits only".to_owned());
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Some(format!(
            "it is made of only {} distinct characters",
            distinct.len()
        ));
    }
    let run = |step: i64| {
        chars
            .windows(2)
            .all(|w| i64::from(u32::from(w[1])) - i64::from(u32::from(w[0])) == step)
    };
    let reversed: String = KEYBOARD.chars().rev().collect();
    if run(1) || run(-1) || KEYBOARD.contains(&lower) || reversed.contains(&lower) {
        return Some("it is a keyboard or alphabet run".to_owned());
    }
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    // The letters alone: `Password1234!` and `letmein!letmein!` are a common word dressed up.
    let stem: String = compact.chars().filter(|c| c.is_alphabetic()).collect();
    let stem_repeated = |word: &str| {
        !stem.is_empty()
            && stem.len().is_multiple_of(word.len())
            && stem == word.repeat(stem.len() / word.len())
    };
    if let Some(word) = COMMON_PASSWORDS
        .iter()
        .find(|w| compact == **w || stem_repeated(w))
    {
        return Some(format!(
            "it is the common password {word:?} (with digits or symbols around it)"
        ));
    }
    let name = key_name.trim().to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Some(format!("it contains the key's name {key_name:?}"));
    }
    None
}

/// Refuses a weak passphrase for the new key in `dir`, with the reason and the rule.
pub fn check_new_passphrase(dir: &Path, passphrase: &str) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(why) = weak_passphrase(passphrase, &name) {
        bail!(
            "the passphrase for the new key in {} is too weak: {why}; {PASSPHRASE_RULE}",
            dir.display()
        );
    }
    Ok(())
}

/// Which secret file is being read, for the permission check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFile {
    /// A `--passphrase-file`: refused if anyone may write it, warned about if others may read it.
    Passphrase,
    /// A key directory's `private.key.json`: warned about if others may read or write it.
    PrivateKey,
    /// A credential another service gave (an alert channel's webhook secret or SMTP
    /// password): refused and warned about as a passphrase file is.
    Credential,
}

/// What the permission bits of a secret file mean: `Err` to refuse, `Ok(Some)` to warn.
pub fn secret_file_verdict(
    path: &Path,
    mode: u32,
    kind: SecretFile,
) -> std::result::Result<Option<String>, String> {
    let mode = mode & 0o777;
    let what = match kind {
        SecretFile::Passphrase => "passphrase file",
        SecretFile::PrivateKey => "private key file",
        SecretFile::Credential => "secret file",
    };
    let fix = format!("chmod 600 {}", path.display());
    if matches!(kind, SecretFile::Passphrase | SecretFile::Credential) && mode & 0o002 != 0 {
        return Err(format!(
            "refusing to read the {what} {}: its mode {mode:04o} lets any user of this machine write it (and so choose the passphrase); {fix}",
            path.display()
        ));
    }
    if mode & 0o077 != 0 {
        return Ok(Some(format!(
            "warning: the {what} {} has mode {mode:04o}: it is {} by its group or others; {fix}",
            path.display(),
            match (mode & 0o044 != 0, mode & 0o022 != 0) {
                (true, true) => "readable and writable",
                (true, false) => "readable",
                _ => "writable",
            }
        )));
    }
    Ok(None)
}

/// Checks a secret file's permissions: refuses (see [`secret_file_verdict`]) or warns on
/// stderr, once per file and process.
pub fn check_secret_file(path: &Path, kind: SecretFile) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        match secret_file_verdict(path, mode, kind) {
            Err(refusal) => bail!("{refusal}"),
            Ok(Some(warning)) => {
                let mut warned = WARNED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !warned.iter().any(|p| p == path) {
                    warned.push(path.to_owned());
                    eprintln!("{warning}");
                }
            }
            Ok(None) => {}
        }
    }
    #[cfg(not(unix))]
    let _ = (path, kind);
    Ok(())
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
/// overwritten) and returns its id. A passphrase that does not meet [`PASSPHRASE_RULE`] is
/// refused before anything is written.
pub fn generate(dir: &Path, passphrase: &str) -> Result<KeyId> {
    check_new_passphrase(dir, passphrase)?;
    write_new_key(dir, passphrase)
}

/// [`generate`] without the passphrase rule (keys made before it, in tests).
fn write_new_key(dir: &Path, passphrase: &str) -> Result<KeyId> {
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

pub use crate::files::{FileMode, write_file, write_new_file};

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
    check_secret_file(&path, SecretFile::PrivateKey)?;
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
/// operator, a key directory whose public key is trusted directly, with the keys trusted
/// beside it ([`trust_key`]).
pub fn load_trust(dir: &Path) -> Result<TrustedKeys> {
    let chain = load_keyset_chain(dir)?;
    if !chain.is_empty() {
        return TrustedKeys::from_chain(&chain)
            .with_context(|| format!("verifying the key sets in {}", dir.display()));
    }
    let direct = direct_keys(dir)?;
    if !direct.is_empty() {
        return Ok(TrustedKeys::from_keys(direct.iter()));
    }
    bail!(
        "{} is neither a trust directory (keyset-1.json, ...) nor a key directory ({PUBLIC_FILE})",
        dir.display()
    )
}

/// The file of a key trusted directly beside a key directory's own.
pub fn trusted_key_file_name(id: &KeyId) -> String {
    format!("trusted-{id}.json")
}

/// The keys a directory with no key sets trusts directly: its `public.json`, then its
/// `trusted-KEYID.json` files in name order, each checked against its recorded id (and its file
/// name). A directory that does not exist trusts nothing.
fn direct_keys(dir: &Path) -> Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    if !dir.exists() {
        return Ok(keys);
    }
    if dir.join(PUBLIC_FILE).exists() {
        keys.push(load_public(dir)?);
    }
    let mut extra: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // The exact name (the key's own id, lower case) is checked once the key is read.
        if name
            .strip_prefix("trusted-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .is_some()
        {
            extra.push((name.to_owned(), entry.path()));
        }
    }
    extra.sort();
    for (name, path) in extra {
        let file: PublicKeyFile =
            convoy_core::strict_json::from_slice(&read_limited(&path, 64 * 1024)?)
                .with_context(|| format!("parsing {}", path.display()))?;
        let key = file
            .key
            .verifying_key()
            .with_context(|| format!("in {}", path.display()))?;
        let id = KeyId::of(&key);
        if id != file.key_id || name != trusted_key_file_name(&id) {
            bail!(
                "{} says key id {} but its key has id {id}",
                path.display(),
                file.key_id
            );
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Trusts `key` in the trust directory `dir` from now on, and says what was written. A
/// directory with no keys yet becomes a key directory for it (`public.json`); one that trusts
/// keys directly gets `trusted-KEYID.json` beside them (written atomically). A key-set chain is
/// refused: only a key set signed by a key it trusts may add one (`convoy key rotate
/// --keep-old`). So is a key it already trusts.
pub fn trust_key(dir: &Path, key: &VerifyingKey) -> Result<String> {
    let id = KeyId::of(key);
    if dir.exists() && !load_keyset_chain(dir)?.is_empty() {
        bail!(
            "{} is a chain of signed key sets: a key is added to it only by a key set signed by a key it trusts (`convoy key rotate --keep-old --old KEY_DIR --new NEW_KEY_DIR --out {}`)",
            dir.display(),
            dir.display()
        );
    }
    let direct = direct_keys(dir)?;
    if direct.iter().any(|k| KeyId::of(k) == id) {
        bail!("{} already trusts key {id}", dir.display());
    }
    if direct.is_empty() && !dir.join(PUBLIC_FILE).exists() {
        write_public(dir, key)?;
        return Ok(format!(
            "{} now trusts key {id} ({PUBLIC_FILE})",
            dir.display()
        ));
    }
    let path = dir.join(trusted_key_file_name(&id));
    write_file(
        &path,
        &json_bytes(&PublicKeyFile {
            key_id: id.clone(),
            key: PublicKey::ed25519(key),
        })?,
        FileMode::Public,
    )?;
    Ok(format!(
        "{} now also trusts key {id} ({})",
        dir.display(),
        trusted_key_file_name(&id)
    ))
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
        assert!(generate(&key_dir, "another strong passphrase").is_err());
        assert_eq!(load_public(&key_dir).expect("public"), key.verifying_key());
    }

    #[test]
    fn a_key_trusted_beside_a_key_directory_is_trusted_and_a_chain_refuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trust = dir.path().join("trust");
        let first = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let second = SigningKey::from_bytes(&[2; 32]).verifying_key();
        // An empty trust directory becomes a key directory for the first key.
        let said = trust_key(&trust, &first).expect("trusted");
        assert!(said.contains(PUBLIC_FILE), "{said}");
        assert!(
            load_trust(&trust)
                .expect("loads")
                .key(&KeyId::of(&first))
                .is_some()
        );
        // A second key goes beside it; both are trusted.
        let said = trust_key(&trust, &second).expect("trusted");
        assert!(said.contains("trusted-"), "{said}");
        let t = load_trust(&trust).expect("loads");
        assert!(t.key(&KeyId::of(&first)).is_some() && t.key(&KeyId::of(&second)).is_some());
        // Twice is refused, naming the key.
        let err = trust_key(&trust, &second).expect_err("already trusted");
        assert!(format!("{err:#}").contains(KeyId::of(&second).as_str()));
        // An edited file is refused on loading, naming it.
        let file = trust.join(trusted_key_file_name(&KeyId::of(&second)));
        let text = std::fs::read_to_string(&file).expect("read");
        let other = KeyId::of(&SigningKey::from_bytes(&[3; 32]).verifying_key());
        std::fs::write(
            &file,
            text.replace(KeyId::of(&second).as_str(), other.as_str()),
        )
        .expect("write");
        let err = load_trust(&trust).expect_err("refused");
        assert!(format!("{err:#}").contains("trusted-"), "{err:#}");
        // A chain of key sets is never extended this way.
        let chain = dir.path().join("chain");
        let signer = SigningKey::from_bytes(&[4; 32]);
        let set = SignedKeySet::sign(
            convoy_core::manifest::KeySetBody::initial(&[signer.verifying_key()]),
            &signer,
        )
        .expect("signs");
        std::fs::create_dir_all(&chain).expect("dir");
        std::fs::write(chain.join(keyset_file_name(1)), set.to_json_bytes()).expect("write");
        let err = trust_key(&chain, &first).expect_err("a chain");
        assert!(format!("{err:#}").contains("convoy key rotate"), "{err:#}");
        assert!(
            !chain
                .join(trusted_key_file_name(&KeyId::of(&first)))
                .exists()
        );
    }

    #[test]
    fn weak_passphrases_are_refused_for_new_keys_with_the_reason() {
        let check = |p: &str, name: &str, why: Option<&str>| {
            let got = weak_passphrase(p, name);
            match (why, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("{p:?} (key {name:?}): expected {why:?}, got {got:?}"),
            }
        };
        check("x", "k", Some("1 character, fewer than 12"));
        check("short pass", "k", Some("10 characters"));
        check("123456789012345", "k", Some("digits only"));
        check("aaaaaaaaaaaaaaaa", "k", Some("only 1 distinct"));
        check("abababababababab", "k", Some("only 2 distinct"));
        check("abcdefghijklmnop", "k", Some("run"));
        check("qwertyuiopasdf", "k", Some("run"));
        check("Password1234!", "k", Some("common password \"password\""));
        check("letmein!letmein!", "k", Some("common password \"letmein\""));
        check(
            "my fleet-signing key 7",
            "fleet-signing",
            Some("key's name"),
        );
        check("tempest over MUNICH 42", "munich", Some("key's name"));
        // Passphrases that meet the rule.
        check("correct horse battery", "k", None);
        check("e2e test passphrase", "release-key", None);
        check("Tr0ub4dor&3-convoy!x", "ab", None);
        let dir = tempfile::tempdir().expect("tempdir");
        let err = generate(&dir.path().join("k"), "pw").expect_err("weak");
        let text = format!("{err:#}");
        assert!(
            text.contains("too weak") && text.contains(PASSPHRASE_RULE),
            "{text}"
        );
        assert!(
            !dir.path().join("k").exists(),
            "nothing written for a refused key"
        );
    }

    #[test]
    fn an_existing_key_with_a_weak_passphrase_still_unlocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = write_new_key(dir.path(), "pw").expect("an old key");
        let key = load_signing_key(dir.path(), "pw").expect("unlocks");
        assert_eq!(KeyId::of(&key.verifying_key()), id);
    }

    #[test]
    fn secret_file_modes_are_warned_about_or_refused() {
        let p = Path::new("/k/pass");
        assert_eq!(
            secret_file_verdict(p, 0o100_600, SecretFile::Passphrase),
            Ok(None)
        );
        assert_eq!(
            secret_file_verdict(p, 0o400, SecretFile::PrivateKey),
            Ok(None)
        );
        let warn = secret_file_verdict(p, 0o644, SecretFile::Passphrase)
            .expect("not refused")
            .expect("a warning");
        assert!(
            warn.contains("/k/pass")
                && warn.contains("0644")
                && warn.contains("readable")
                && warn.contains("chmod 600 /k/pass"),
            "{warn}"
        );
        let warn = secret_file_verdict(p, 0o620, SecretFile::PrivateKey)
            .expect("not refused")
            .expect("a warning");
        assert!(
            warn.contains("writable") && warn.contains("private key"),
            "{warn}"
        );
        let refused = secret_file_verdict(p, 0o666, SecretFile::Passphrase).expect_err("refused");
        assert!(
            refused.contains("0666") && refused.contains("chmod 600"),
            "{refused}"
        );
        // A world-writable key file is warned about (it is authenticated when it is read).
        assert!(secret_file_verdict(p, 0o666, SecretFile::PrivateKey).is_ok());
    }

    #[test]
    fn altered_key_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "pw altered test").expect("generate");
        let path = dir.path().join(PRIVATE_FILE);
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let ct = file["ciphertext"].as_str().expect("ct").to_owned();
        let flipped = if ct.starts_with('0') { "1" } else { "0" };
        file["ciphertext"] = format!("{flipped}{}", &ct[1..]).into();
        std::fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
        assert!(load_signing_key(dir.path(), "pw altered test").is_err());
    }
}
