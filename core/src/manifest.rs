//! Signed release manifests, the keys that may sign them, and the rules a device applies before
//! it installs one.
//!
//! A [`SignedManifest`] wraps a [`ReleaseSpec`] with the signing key's id (and, for an explicit
//! rollback, a signed reason) and an Ed25519 signature over the canonical JSON
//! ([`crate::canonical_json`]) of that body, so the same manifest has the same bytes to sign
//! whatever the field order in its file. [`verify`] is the only way to obtain a
//! [`VerifiedManifest`]: its fields are private and it has no public constructor, so the planner
//! and the link, which take only verified manifests, cannot be handed an unchecked one.
//!
//! Trust is a [`TrustedKeys`] set: keys that may sign and keys that are revoked for good. It is
//! built from a chain of signed key sets ([`SignedKeySet`]), where version 1 is self-signed (the
//! anchor an operator provisions) and every later version is signed by a key the version before
//! trusted: that is how keys rotate (the new set signed by the old key) and how they are revoked.
//!
//! [`DeviceMemory`] holds what a device remembers (hardware id, installed release counter, the
//! rollbacks it accepted) and applies the Uptane/TUF checks; each failure is a [`Rejection`]
//! naming the attack it stopped ([`Attack`]).
//!
//! This module deliberately does no I/O and draws no randomness: the caller reads files, hashes
//! artifacts (streaming them) and passes a [`SigningKey`] it generated or decrypted.

use crate::canonical_json::{self, CanonicalJsonError};
use crate::release::ReleaseSpec;
use crate::strict_json::{self, StrictJsonError};
use crate::time::Timestamp;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Largest manifest file a verifier parses: anything bigger is an endless-data attack.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest key-set file a verifier parses.
pub const MAX_KEYSET_BYTES: usize = 64 * 1024;
/// Most artifacts one release may carry.
pub const MAX_ARTIFACTS: usize = 64;
/// The `_type` of a manifest body.
pub const MANIFEST_TYPE: &str = "convoy-release";
/// The `_type` of a key-set body.
pub const KEYSET_TYPE: &str = "convoy-keyset";
/// The manifest format version this code writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// A key id: lowercase hex SHA-256 of the canonical JSON of the key's TUF form
/// (`{"keytype":"ed25519","keyval":{"public":HEX},"scheme":"ed25519"}`), as TUF computes it, so
/// one key has one id in manifests, key sets and TUF metadata alike.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id of an Ed25519 public key.
    pub fn of(key: &VerifyingKey) -> Self {
        PublicKey::ed25519(key).key_id()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key id as written in a file or on the command line: 64 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, KeySetError> {
        if text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeySetError::BadKeyId(text.to_owned()))
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `keyval` of a TUF key object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVal {
    /// Lowercase hex of the 32-byte Ed25519 public key.
    pub public: String,
}

/// A public key in TUF's key-object form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyVal,
}

impl PublicKey {
    pub fn ed25519(key: &VerifyingKey) -> Self {
        Self {
            keytype: "ed25519".to_owned(),
            scheme: "ed25519".to_owned(),
            keyval: KeyVal {
                public: hex::encode(key.as_bytes()),
            },
        }
    }

    /// Its key id (see [`KeyId`]).
    pub fn key_id(&self) -> KeyId {
        // A struct of strings always has a canonical form.
        let bytes = canonical_json::to_canonical_bytes(self).unwrap_or_default();
        KeyId(hex::encode(Sha256::digest(&bytes)))
    }

    /// The Ed25519 key it holds.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeySetError> {
        if self.keytype != "ed25519" || self.scheme != "ed25519" {
            return Err(KeySetError::UnsupportedKey {
                keytype: self.keytype.clone(),
                scheme: self.scheme.clone(),
            });
        }
        let bytes: [u8; 32] = hex::decode(&self.keyval.public)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KeySetError::BadPublicKey(self.keyval.public.clone()))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeySetError::BadPublicKey(self.keyval.public.clone()))
    }
}

/// One signature in a signed document (TUF's form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub keyid: KeyId,
    /// Lowercase hex of the 64-byte Ed25519 signature.
    pub sig: String,
}

impl SignatureEntry {
    /// Signs `message` (already canonical bytes) with `key`.
    pub fn create(key: &SigningKey, message: &[u8]) -> Self {
        Self {
            keyid: KeyId::of(&key.verifying_key()),
            sig: hex::encode(key.sign(message).to_bytes()),
        }
    }
}

/// Why an Ed25519 signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureCheckError {
    /// The public key is not 32 bytes or not a valid, non-weak curve point.
    #[error("the public key is malformed")]
    BadKey,
    /// The signature is not 64 bytes.
    #[error("the signature is not 64 bytes")]
    BadLength,
    /// The signature does not verify (wrong message, wrong key, or a non-canonical encoding).
    #[error("the signature does not verify")]
    Invalid,
}

/// The one Ed25519 check every signature in Convoy goes through (manifests, key sets, and the
/// Wycheproof vectors in the tests). It is strict: it rejects non-canonical scalars, small-order
/// keys and malleable signatures, which the lax RFC 8032 check lets through.
pub fn verify_ed25519(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureCheckError> {
    let key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| SignatureCheckError::BadKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SignatureCheckError::BadKey)?;
    let sig: [u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureCheckError::BadLength)?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| SignatureCheckError::Invalid)
}

/// An operator's signed decision to let devices install a lower release counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Why, recorded on every device that takes it.
    pub reason: String,
    /// The highest installed counter this rollback may replace (the counter of the bad
    /// release). A device beyond it refuses the manifest as a downgrade, so an old rollback
    /// cannot be replayed against devices that have moved on.
    pub from_counter_max: u64,
}

/// What a manifest signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// Always [`MANIFEST_TYPE`], so a manifest signature can never pass as a key-set one.
    #[serde(rename = "_type")]
    pub kind: String,
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    pub release: ReleaseSpec,
    /// The key that signs it.
    pub key_id: KeyId,
    /// Present only on an explicit, signed rollback to a lower counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

/// A manifest as stored in a file and sent to devices: the body and its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub signed: ManifestBody,
    pub signatures: Vec<SignatureEntry>,
}

/// Why a manifest cannot be signed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The body has no canonical JSON form.
    #[error("manifest body has no canonical form: {0}")]
    Canonical(#[from] CanonicalJsonError),
    /// The release id is not 1 to 128 of `A-Z a-z 0-9 - _ . :` (ids travel as MQTT topic levels).
    #[error("invalid release id {0:?}: use 1 to 128 letters, digits, '-', '_', '.' or ':'")]
    BadId(String),
    /// The release names no artifact.
    #[error("release {0} has no artifact")]
    NoArtifacts(String),
    /// The release has more than [`MAX_ARTIFACTS`] artifacts.
    #[error("release {id} has {count} artifacts, more than the limit of {MAX_ARTIFACTS}")]
    TooManyArtifacts { id: String, count: usize },
    /// The release names no hardware id.
    #[error("release {0} names no hardware id")]
    NoHardware(String),
    /// An artifact's hash is not 64 lowercase hex digits.
    #[error("artifact {artifact} of release {id} has a malformed sha256 {sha256:?}")]
    BadHash {
        id: String,
        artifact: String,
        sha256: String,
    },
    /// Two artifacts share a name.
    #[error("release {id} lists artifact {artifact} twice")]
    DuplicateArtifact { id: String, artifact: String },
    /// The signed file would exceed [`MAX_MANIFEST_BYTES`], so no device would accept it.
    #[error(
        "manifest for release {id} is {size_bytes} bytes, over the limit of {MAX_MANIFEST_BYTES}"
    )]
    TooLarge { id: String, size_bytes: usize },
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_spec(spec: &ReleaseSpec) -> Result<(), ManifestError> {
    let id = || spec.id.clone();
    if !crate::release::is_valid_id(&spec.id) {
        return Err(ManifestError::BadId(id()));
    }
    if spec.artifacts.is_empty() {
        return Err(ManifestError::NoArtifacts(id()));
    }
    if spec.artifacts.len() > MAX_ARTIFACTS {
        return Err(ManifestError::TooManyArtifacts {
            id: id(),
            count: spec.artifacts.len(),
        });
    }
    if spec.hardware.is_empty() {
        return Err(ManifestError::NoHardware(id()));
    }
    let mut names = BTreeSet::new();
    for a in &spec.artifacts {
        if !is_sha256_hex(&a.sha256) {
            return Err(ManifestError::BadHash {
                id: id(),
                artifact: a.name.clone(),
                sha256: a.sha256.clone(),
            });
        }
        if !names.insert(a.name.as_str()) {
            return Err(ManifestError::DuplicateArtifact {
                id: id(),
                artifact: a.name.clone(),
            });
        }
    }
    Ok(())
}

impl SignedManifest {
    /// Signs a release with `key`. `rollback` is `Some` only for an explicit rollback to a lower
    /// counter.
    pub fn sign(
        release: ReleaseSpec,
        rollback: Option<Rollback>,
        key: &SigningKey,
    ) -> Result<Self, ManifestError> {
        check_spec(&release)?;
        let signed = ManifestBody {
            kind: MANIFEST_TYPE.to_owned(),
            format_version: MANIFEST_FORMAT_VERSION,
            release,
            key_id: KeyId::of(&key.verifying_key()),
            rollback,
        };
        let bytes = canonical_json::to_canonical_bytes(&signed)?;
        let manifest = Self {
            signatures: vec![SignatureEntry::create(key, &bytes)],
            signed,
        };
        let size_bytes = manifest.to_json_bytes().len();
        if size_bytes > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                id: manifest.signed.release.id.clone(),
                size_bytes,
            });
        }
        Ok(manifest)
    }

    /// The file form: indented JSON (any field order verifies; the signature is over the
    /// canonical form).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// The attack a rejection stopped (the names Uptane and TUF use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attack {
    /// Metadata or an artifact was changed after signing.
    Tampered,
    /// Signed by a key that is not trusted, or revoked.
    WrongKey,
    /// A freeze attack: metadata past its expiry.
    Expired,
    /// A rollback attack: an older release than the one installed.
    Downgrade,
    /// A release for another device model.
    WrongHardware,
    /// Pieces of different releases combined.
    MixAndMatch,
    /// An endless-data attack: metadata or an artifact larger than allowed.
    Oversize,
}

impl Attack {
    pub const ALL: [Attack; 7] = [
        Attack::Tampered,
        Attack::WrongKey,
        Attack::Expired,
        Attack::Downgrade,
        Attack::WrongHardware,
        Attack::MixAndMatch,
        Attack::Oversize,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Attack::Tampered => "tampered",
            Attack::WrongKey => "wrong key",
            Attack::Expired => "expired",
            Attack::Downgrade => "downgrade",
            Attack::WrongHardware => "wrong hardware",
            Attack::MixAndMatch => "mix-and-match",
            Attack::Oversize => "oversize",
        }
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verifier or device refused a manifest or an artifact. Each message starts with the
/// attack it stopped ([`Rejection::attack`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The manifest file is larger than [`MAX_MANIFEST_BYTES`].
    #[error("oversize: manifest is {size_bytes} bytes, over the limit of {limit_bytes}")]
    ManifestTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// The manifest does not parse, has the wrong shape, or does not re-encode to what was signed.
    #[error("tampered: manifest is malformed: {reason}")]
    Malformed { reason: String },
    /// The signature does not verify over the canonical body.
    #[error("tampered: signature by key {key_id} does not verify for manifest {release_id}")]
    BadSignature { release_id: String, key_id: KeyId },
    /// No signature, or the signature's key is not the key the body names.
    #[error("wrong key: manifest {release_id} names key {named} but is signed by {signed_by}")]
    KeyMismatch {
        release_id: String,
        named: KeyId,
        signed_by: String,
    },
    /// The signing key is not in the trusted set.
    #[error("wrong key: manifest {release_id} is signed by key {key_id}, which is not trusted")]
    UntrustedKey { release_id: String, key_id: KeyId },
    /// The signing key was revoked.
    #[error("wrong key: manifest {release_id} is signed by key {key_id}, which is revoked")]
    RevokedKey { release_id: String, key_id: KeyId },
    /// The manifest expired (a freeze attack replays old, once-valid metadata).
    #[error("expired: manifest {release_id} expired at {expires}, now is {now}")]
    Expired {
        release_id: String,
        expires: Timestamp,
        now: Timestamp,
    },
    /// The release counter is lower than the installed one, with no signed rollback that
    /// covers the installed counter.
    #[error(
        "downgrade: release {release_id} has counter {counter}, lower than the installed {installed_counter}, and is not a signed rollback from that counter"
    )]
    Downgrade {
        release_id: String,
        counter: u64,
        installed_counter: u64,
    },
    /// The release is not built for this device's hardware id.
    #[error(
        "wrong hardware: release {release_id} is for {supported:?}, this device is {hardware_id}"
    )]
    WrongHardware {
        release_id: String,
        hardware_id: String,
        supported: Vec<String>,
    },
    /// The offer and the manifest, or the artifacts and the manifest, belong to different releases.
    #[error("mix-and-match: {detail} (manifest {release_id})")]
    MixAndMatch { release_id: String, detail: String },
    /// An artifact's bytes do not have the signed hash or length.
    #[error("tampered: artifact {artifact} of release {release_id}: {detail}")]
    ArtifactMismatch {
        release_id: String,
        artifact: String,
        detail: String,
    },
    /// An artifact delivered more bytes than the manifest declares.
    #[error(
        "oversize: artifact {artifact} of release {release_id} delivered {length_bytes} bytes, more than the signed {declared_bytes}"
    )]
    ArtifactTooLong {
        release_id: String,
        artifact: String,
        length_bytes: u64,
        declared_bytes: u64,
    },
}

impl Rejection {
    /// The attack this rejection stopped.
    pub fn attack(&self) -> Attack {
        match self {
            Rejection::ManifestTooLarge { .. } | Rejection::ArtifactTooLong { .. } => {
                Attack::Oversize
            }
            Rejection::Malformed { .. }
            | Rejection::BadSignature { .. }
            | Rejection::ArtifactMismatch { .. } => Attack::Tampered,
            Rejection::KeyMismatch { .. }
            | Rejection::UntrustedKey { .. }
            | Rejection::RevokedKey { .. } => Attack::WrongKey,
            Rejection::Expired { .. } => Attack::Expired,
            Rejection::Downgrade { .. } => Attack::Downgrade,
            Rejection::WrongHardware { .. } => Attack::WrongHardware,
            Rejection::MixAndMatch { .. } => Attack::MixAndMatch,
        }
    }
}

/// A manifest whose signature, key and expiry were checked. Only [`verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    manifest: SignedManifest,
}

impl VerifiedManifest {
    pub fn spec(&self) -> &ReleaseSpec {
        &self.manifest.signed.release
    }

    pub fn release_id(&self) -> &str {
        &self.manifest.signed.release.id
    }

    pub fn key_id(&self) -> &KeyId {
        &self.manifest.signed.key_id
    }

    pub fn rollback(&self) -> Option<&Rollback> {
        self.manifest.signed.rollback.as_ref()
    }

    /// The signed manifest as verified (its typed value, not the file it was read from).
    pub fn signed_manifest(&self) -> &SignedManifest {
        &self.manifest
    }

    /// The bytes to serve to devices: the verified manifest re-serialised in canonical form
    /// (keys sorted, no whitespace, integers only; [`canonical_json::encode_text`]), never the
    /// file as it came in. Whitespace, key order and escapes of the original do not survive, and
    /// every device reads the one value that was verified.
    pub fn served_bytes(&self) -> Vec<u8> {
        // A verified manifest re-encodes canonically (`verify` checked it), so this cannot fail.
        serde_json::to_value(&self.manifest)
            .ok()
            .and_then(|v| canonical_json::encode_text(&v).ok())
            .unwrap_or_default()
    }

    /// Checks artifacts (hashed by the caller, streaming) against the signed list: every listed
    /// artifact present, none extra, each with the signed length and SHA-256. Run before a slot
    /// is switched.
    pub fn check_artifacts(&self, delivered: &[ArtifactDigest]) -> Result<(), Rejection> {
        for d in delivered {
            self.check_artifact(d)?;
        }
        let spec = self.spec();
        if let Some(missing) = spec
            .artifacts
            .iter()
            .find(|a| !delivered.iter().any(|d| d.name == a.name))
        {
            return Err(Rejection::MixAndMatch {
                release_id: self.release_id().to_owned(),
                detail: format!(
                    "artifact {} of this release was not delivered",
                    missing.name
                ),
            });
        }
        Ok(())
    }

    /// Checks one delivered artifact: part of this release, with the signed length and SHA-256.
    pub fn check_artifact(&self, d: &ArtifactDigest) -> Result<(), Rejection> {
        let release_id = || self.release_id().to_owned();
        let spec = self.spec();
        let Some(a) = spec.artifacts.iter().find(|a| a.name == d.name) else {
            return Err(Rejection::MixAndMatch {
                release_id: release_id(),
                detail: format!("artifact {} is not part of this release", d.name),
            });
        };
        if d.length_bytes > a.length_bytes {
            return Err(Rejection::ArtifactTooLong {
                release_id: release_id(),
                artifact: d.name.clone(),
                length_bytes: d.length_bytes,
                declared_bytes: a.length_bytes,
            });
        }
        if d.length_bytes != a.length_bytes {
            return Err(Rejection::ArtifactMismatch {
                release_id: release_id(),
                artifact: d.name.clone(),
                detail: format!(
                    "length is {} bytes, signed {}",
                    d.length_bytes, a.length_bytes
                ),
            });
        }
        if !d.sha256.eq_ignore_ascii_case(&a.sha256) {
            return Err(Rejection::ArtifactMismatch {
                release_id: release_id(),
                artifact: d.name.clone(),
                detail: format!("sha256 is {}, signed {}", d.sha256, a.sha256),
            });
        }
        Ok(())
    }
}

/// Verifies a manifest file: size, shape, a signature by a trusted and unrevoked key over the
/// canonical body, and expiry at `now`.
pub fn verify(
    bytes: &[u8],
    trust: &TrustedKeys,
    now: Timestamp,
) -> Result<VerifiedManifest, Rejection> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Rejection::ManifestTooLarge {
            size_bytes: bytes.len(),
            limit_bytes: MAX_MANIFEST_BYTES,
        });
    }
    let malformed = |reason: String| Rejection::Malformed { reason };
    // One reading only: a key twice anywhere (`{"signed": EVIL, "signed": REAL}`) is refused
    // before anything else looks at the document, since parsers disagree on which one counts.
    let value: Value = strict_json::value_from_slice(bytes).map_err(|e| match e {
        StrictJsonError::DuplicateKey { .. } => malformed(e.to_string()),
        StrictJsonError::Json(_) => malformed(format!("not JSON: {e}")),
    })?;
    let Value::Object(mut top) = value else {
        return Err(malformed("not a JSON object".to_owned()));
    };
    let signed_value = top
        .remove("signed")
        .ok_or_else(|| malformed("no `signed` field".to_owned()))?;
    let signatures: Vec<SignatureEntry> = serde_json::from_value(
        top.remove("signatures")
            .ok_or_else(|| malformed("no `signatures` field".to_owned()))?,
    )
    .map_err(|e| malformed(format!("signatures: {e}")))?;
    if let Some(extra) = top.keys().next() {
        return Err(malformed(format!("unknown top-level field `{extra}`")));
    }
    // The signature covers exactly the canonical form of what is in the file.
    let signed_bytes =
        canonical_json::encode(&signed_value).map_err(|e| malformed(e.to_string()))?;
    let body: ManifestBody =
        serde_json::from_value(signed_value).map_err(|e| malformed(format!("signed body: {e}")))?;
    let release_id = body.release.id.clone();
    if body.kind != MANIFEST_TYPE {
        return Err(malformed(format!(
            "`_type` is {:?}, expected {MANIFEST_TYPE:?}",
            body.kind
        )));
    }
    if body.format_version != MANIFEST_FORMAT_VERSION {
        return Err(malformed(format!(
            "format_version {} is not supported (expected {MANIFEST_FORMAT_VERSION})",
            body.format_version
        )));
    }
    // A body that does not re-encode to the signed bytes (say `2.05` read as `2.5`) would make
    // the device act on something other than what was signed.
    if canonical_json::to_canonical_bytes(&body).ok().as_deref() != Some(signed_bytes.as_slice()) {
        return Err(malformed(format!(
            "signed body of {release_id} does not re-encode to its signed bytes (non-canonical values or unknown fields)"
        )));
    }
    check_spec(&body.release).map_err(|e| malformed(e.to_string()))?;
    let [signature] = signatures.as_slice() else {
        return Err(Rejection::KeyMismatch {
            release_id,
            named: body.key_id,
            signed_by: format!("{} signatures (expected exactly one)", signatures.len()),
        });
    };
    if signature.keyid != body.key_id {
        return Err(Rejection::KeyMismatch {
            release_id,
            named: body.key_id,
            signed_by: signature.keyid.to_string(),
        });
    }
    if trust.is_revoked(&body.key_id) {
        return Err(Rejection::RevokedKey {
            release_id,
            key_id: body.key_id,
        });
    }
    let Some(key) = trust.key(&body.key_id) else {
        return Err(Rejection::UntrustedKey {
            release_id,
            key_id: body.key_id,
        });
    };
    let sig = hex::decode(&signature.sig).unwrap_or_default();
    if verify_ed25519(key.as_bytes(), &signed_bytes, &sig).is_err() {
        return Err(Rejection::BadSignature {
            release_id,
            key_id: body.key_id,
        });
    }
    if now >= body.release.expires {
        return Err(Rejection::Expired {
            release_id,
            expires: body.release.expires,
            now,
        });
    }
    Ok(VerifiedManifest {
        manifest: SignedManifest {
            signed: body,
            signatures,
        },
    })
}

/// An artifact as delivered to a device: its name and what the device measured while streaming
/// it into the inactive slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDigest {
    pub name: String,
    pub length_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes received.
    pub sha256: String,
}

impl ArtifactDigest {
    /// Measures an artifact held in memory (the simulator's and tests' path; devices and the
    /// CLI hash files in a stream).
    pub fn of_bytes(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            length_bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// A rollback a device accepted, kept so that every downgrade is on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub release_id: String,
    pub from_counter: u64,
    pub to_counter: u64,
    pub reason: String,
    pub key_id: KeyId,
    pub at: Timestamp,
}

/// What a device remembers between updates, and the checks it applies to an offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// The device's model / SKU.
    pub hardware_id: String,
    /// The release counter of what is installed (0 before the first signed install).
    pub installed_counter: u64,
    /// Every signed rollback this device took, oldest first.
    #[serde(default)]
    pub rollbacks: Vec<RollbackRecord>,
}

impl DeviceMemory {
    pub fn new(hardware_id: impl Into<String>, installed_counter: u64) -> Self {
        Self {
            hardware_id: hardware_id.into(),
            installed_counter,
            rollbacks: Vec::new(),
        }
    }

    /// The full device-side check of an offer, before download: verifies the manifest bytes
    /// (size, key, signature, expiry), that it is the release the offer names, that it is for
    /// this hardware, and that it is no downgrade unless it is a signed rollback.
    pub fn check_offer(
        &self,
        offered_release_id: &str,
        manifest_bytes: &[u8],
        trust: &TrustedKeys,
        now: Timestamp,
    ) -> Result<VerifiedManifest, Rejection> {
        let manifest = verify(manifest_bytes, trust, now)?;
        if manifest.release_id() != offered_release_id {
            return Err(Rejection::MixAndMatch {
                release_id: manifest.release_id().to_owned(),
                detail: format!("the offer names release {offered_release_id}"),
            });
        }
        self.check_manifest(&manifest, now)?;
        Ok(manifest)
    }

    /// The device-specific rules on an already verified manifest: still unexpired at `now`,
    /// built for this hardware id, and no downgrade without a signed rollback.
    pub fn check_manifest(
        &self,
        manifest: &VerifiedManifest,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        let spec = manifest.spec();
        if now >= spec.expires {
            return Err(Rejection::Expired {
                release_id: spec.id.clone(),
                expires: spec.expires,
                now,
            });
        }
        if !spec.hardware.contains(&self.hardware_id) {
            return Err(Rejection::WrongHardware {
                release_id: spec.id.clone(),
                hardware_id: self.hardware_id.clone(),
                supported: spec.hardware.clone(),
            });
        }
        let rollback_allows = manifest
            .rollback()
            .is_some_and(|r| self.installed_counter <= r.from_counter_max);
        if spec.counter < self.installed_counter && !rollback_allows {
            return Err(Rejection::Downgrade {
                release_id: spec.id.clone(),
                counter: spec.counter,
                installed_counter: self.installed_counter,
            });
        }
        Ok(())
    }

    /// The last step before the slot switch: re-checks the manifest at `now`, checks the
    /// delivered artifacts, then records the new counter (and the rollback, if it is one).
    pub fn install(
        &mut self,
        manifest: &VerifiedManifest,
        delivered: &[ArtifactDigest],
        now: Timestamp,
    ) -> Result<(), Rejection> {
        self.check_manifest(manifest, now)?;
        manifest.check_artifacts(delivered)?;
        let counter = manifest.spec().counter;
        if counter < self.installed_counter
            && let Some(rollback) = manifest.rollback()
        {
            self.rollbacks.push(RollbackRecord {
                release_id: manifest.release_id().to_owned(),
                from_counter: self.installed_counter,
                to_counter: counter,
                reason: rollback.reason.clone(),
                key_id: manifest.key_id().clone(),
                at: now,
            });
        }
        self.installed_counter = counter;
        Ok(())
    }
}

/// What a key-set signature covers: which keys may sign, and which are revoked for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetBody {
    /// Always [`KEYSET_TYPE`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// 1 for the anchor, then one more for each rotation or revocation.
    pub version: u64,
    /// Keys that may sign manifests (and the next key set), by key id.
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// Keys that must never be trusted again, sorted.
    pub revoked: Vec<KeyId>,
}

impl KeySetBody {
    /// Version 1: the anchor, trusting `keys`.
    pub fn initial<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> Self {
        Self {
            kind: KEYSET_TYPE.to_owned(),
            version: 1,
            keys: keys
                .into_iter()
                .map(|k| (KeyId::of(k), PublicKey::ed25519(k)))
                .collect(),
            revoked: Vec::new(),
        }
    }

    /// The next version with `new` trusted and, when `retire` is set, `old` no longer trusted
    /// (retired, not revoked: manifests it signed stop verifying, and it may not come back
    /// silently, but it is not declared compromised).
    pub fn rotated(&self, old: &KeyId, new: &VerifyingKey, retire: RetireOld) -> Self {
        let mut next = self.clone();
        next.version += 1;
        next.keys.insert(KeyId::of(new), PublicKey::ed25519(new));
        if retire == RetireOld::Retire {
            next.keys.remove(old);
        }
        next
    }

    /// The next version with `key` revoked (and no longer trusted).
    pub fn revoked(&self, key: &KeyId) -> Self {
        let mut next = self.clone();
        next.version += 1;
        next.keys.remove(key);
        if !next.revoked.contains(key) {
            next.revoked.push(key.clone());
            next.revoked.sort();
        }
        next
    }
}

/// Whether a rotation keeps the old key trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireOld {
    /// The old key stops being trusted in the new version.
    Retire,
    /// Both keys stay trusted, for a transition period.
    Keep,
}

/// A key set as stored in a trust directory (`keyset-N.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedKeySet {
    pub signed: KeySetBody,
    pub signatures: Vec<SignatureEntry>,
}

impl SignedKeySet {
    /// Signs `body` with `key`: for version 1 a key the body trusts, for later versions a key
    /// the previous version trusts (the old key, on rotation).
    pub fn sign(body: KeySetBody, key: &SigningKey) -> Result<Self, KeySetError> {
        let bytes = canonical_json::to_canonical_bytes(&body)
            .map_err(|e| KeySetError::Malformed(e.to_string()))?;
        Ok(Self {
            signatures: vec![SignatureEntry::create(key, &bytes)],
            signed: body,
        })
    }

    /// Parses a key-set file (size-limited).
    pub fn parse(bytes: &[u8]) -> Result<Self, KeySetError> {
        if bytes.len() > MAX_KEYSET_BYTES {
            return Err(KeySetError::TooLarge(bytes.len()));
        }
        strict_json::from_slice(bytes).map_err(|e| KeySetError::Malformed(e.to_string()))
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Whether one of the signatures verifies by a key in `signers` (and not in `revoked`).
    fn signed_by_one_of(
        &self,
        signers: &BTreeMap<KeyId, PublicKey>,
        revoked: &[KeyId],
    ) -> Result<KeyId, KeySetError> {
        let bytes = canonical_json::to_canonical_bytes(&self.signed)
            .map_err(|e| KeySetError::Malformed(e.to_string()))?;
        for s in &self.signatures {
            if revoked.contains(&s.keyid) {
                continue;
            }
            let Some(public) = signers.get(&s.keyid) else {
                continue;
            };
            let key = public.verifying_key()?;
            let sig = hex::decode(&s.sig).unwrap_or_default();
            if verify_ed25519(key.as_bytes(), &bytes, &sig).is_ok() {
                return Ok(s.keyid.clone());
            }
        }
        Err(KeySetError::NotSigned {
            version: self.signed.version,
        })
    }
}

/// Why a key set is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// The file is larger than [`MAX_KEYSET_BYTES`].
    #[error("key set is {0} bytes, over the limit of {MAX_KEYSET_BYTES}")]
    TooLarge(usize),
    /// The file does not parse or has the wrong shape.
    #[error("key set is malformed: {0}")]
    Malformed(String),
    /// A key id is not 64 lowercase hex digits.
    #[error("malformed key id {0:?}: expected 64 lowercase hex digits")]
    BadKeyId(String),
    /// A key is not Ed25519.
    #[error("unsupported key type {keytype:?} / scheme {scheme:?}: only ed25519 is supported")]
    UnsupportedKey { keytype: String, scheme: String },
    /// A public key is not 32 hex-encoded bytes of a valid point.
    #[error("malformed ed25519 public key {0:?}")]
    BadPublicKey(String),
    /// A key is listed under an id that is not its own.
    #[error("key listed as {listed} has key id {actual}")]
    KeyIdMismatch { listed: KeyId, actual: KeyId },
    /// No signature by a key the previous version trusts (or, for version 1, by a key it lists).
    #[error("key set version {version} is not signed by a key the previous version trusts")]
    NotSigned { version: u64 },
    /// Versions must follow one another: 1, 2, 3, ...
    #[error("key set version {found} follows version {previous}: expected {}", previous + 1)]
    VersionGap { previous: u64, found: u64 },
    /// A later version un-revokes a key, or trusts a revoked key.
    #[error("key set version {version} trusts or un-revokes the revoked key {key_id}")]
    Unrevoked { version: u64, key_id: KeyId },
    /// The chain is empty.
    #[error("no key set: a trust directory needs at least keyset-1.json")]
    Empty,
    /// A key set that trusts no key: nobody could ever sign the next version.
    #[error(
        "key set version {version} trusts no key: nobody could sign the next version (keep or add a key)"
    )]
    NoKeys { version: u64 },
    /// The `_type` is wrong (say, a manifest offered as a key set).
    #[error("key set `_type` is {0:?}, expected \"convoy-keyset\"")]
    WrongType(String),
}

/// The keys a verifier trusts now, and those revoked for good.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    body: Option<KeySetBody>,
    keys: BTreeMap<KeyId, VerifyingKey>,
    revoked: BTreeSet<KeyId>,
}

impl TrustedKeys {
    /// Trusts these keys directly, with no key set (for one operator key on one machine).
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> Self {
        Self {
            body: None,
            keys: keys.into_iter().map(|k| (KeyId::of(k), *k)).collect(),
            revoked: BTreeSet::new(),
        }
    }

    /// Verifies a chain of key sets, version 1 first, and returns the trust of the last one.
    pub fn from_chain(chain: &[SignedKeySet]) -> Result<Self, KeySetError> {
        let (first, rest) = chain.split_first().ok_or(KeySetError::Empty)?;
        check_body(&first.signed)?;
        if first.signed.version != 1 {
            return Err(KeySetError::VersionGap {
                previous: 0,
                found: first.signed.version,
            });
        }
        first.signed_by_one_of(&first.signed.keys, &first.signed.revoked)?;
        let mut trust = Self::default();
        trust.adopt(first.signed.clone())?;
        for next in rest {
            trust.update(next)?;
        }
        Ok(trust)
    }

    /// Moves to the next key-set version: it must be version + 1, signed by a key trusted now,
    /// and keep every revocation.
    pub fn update(&mut self, next: &SignedKeySet) -> Result<(), KeySetError> {
        check_body(&next.signed)?;
        let Some(current) = &self.body else {
            return Err(KeySetError::Empty);
        };
        if next.signed.version != current.version + 1 {
            return Err(KeySetError::VersionGap {
                previous: current.version,
                found: next.signed.version,
            });
        }
        next.signed_by_one_of(&current.keys, &current.revoked)?;
        if let Some(lost) = current
            .revoked
            .iter()
            .find(|k| !next.signed.revoked.contains(k))
        {
            return Err(KeySetError::Unrevoked {
                version: next.signed.version,
                key_id: lost.clone(),
            });
        }
        self.adopt(next.signed.clone())
    }

    fn adopt(&mut self, body: KeySetBody) -> Result<(), KeySetError> {
        let mut keys = BTreeMap::new();
        for (id, public) in &body.keys {
            keys.insert(id.clone(), public.verifying_key()?);
        }
        self.keys = keys;
        self.revoked = body.revoked.iter().cloned().collect();
        self.body = Some(body);
        Ok(())
    }

    /// The key-set body trusted now (`None` when keys were trusted directly).
    pub fn body(&self) -> Option<&KeySetBody> {
        self.body.as_ref()
    }

    /// The key-set version trusted now (0 when keys were trusted directly).
    pub fn version(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.version)
    }

    /// A trusted, unrevoked key.
    pub fn key(&self, id: &KeyId) -> Option<&VerifyingKey> {
        if self.revoked.contains(id) {
            return None;
        }
        self.keys.get(id)
    }

    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// Trusted key ids, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Revoked key ids, sorted.
    pub fn revoked_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.revoked.iter()
    }
}

fn check_body(body: &KeySetBody) -> Result<(), KeySetError> {
    if body.kind != KEYSET_TYPE {
        return Err(KeySetError::WrongType(body.kind.clone()));
    }
    if body.keys.is_empty() {
        return Err(KeySetError::NoKeys {
            version: body.version,
        });
    }
    for (listed, public) in &body.keys {
        KeyId::parse(listed.as_str())?;
        let actual = public.key_id();
        public.verifying_key()?;
        if &actual != listed {
            return Err(KeySetError::KeyIdMismatch {
                listed: listed.clone(),
                actual,
            });
        }
        if body.revoked.contains(listed) {
            return Err(KeySetError::Unrevoked {
                version: body.version,
                key_id: listed.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Artifact;
    use crate::version::Version;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn spec(id: &str, counter: u64, payload: &[u8]) -> ReleaseSpec {
        let digest = ArtifactDigest::of_bytes("fw.img", payload);
        ReleaseSpec {
            id: id.to_owned(),
            version: Version::new(2, 5, counter as u32),
            counter,
            hardware: vec!["T300".to_owned()],
            provides: [("firmware", Version::new(2, 5, counter as u32))]
                .into_iter()
                .collect(),
            requires: vec!["bootloader>=2.0".parse().expect("requirement")],
            artifacts: vec![Artifact {
                name: digest.name,
                url: "fw.img".to_owned(),
                length_bytes: digest.length_bytes,
                sha256: digest.sha256,
            }],
            expires: NOW.plus_secs(86_400),
        }
    }

    fn signed(id: &str, counter: u64, signer: &SigningKey) -> Vec<u8> {
        SignedManifest::sign(spec(id, counter, b"payload"), None, signer)
            .expect("sign")
            .to_json_bytes()
    }

    fn trust_one(k: &SigningKey) -> TrustedKeys {
        TrustedKeys::from_keys([&k.verifying_key()])
    }

    /// Re-signs a manifest file after `edit` changes its JSON (to build forged but validly
    /// signed inputs), or leaves the signature alone when `resign` is `None`.
    fn edited(bytes: &[u8], edit: impl FnOnce(&mut Value), resign: Option<&SigningKey>) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(bytes).expect("json");
        edit(&mut v);
        if let Some(k) = resign {
            let body = canonical_json::encode(&v["signed"]).expect("canonical");
            v["signatures"] =
                serde_json::to_value(vec![SignatureEntry::create(k, &body)]).expect("sig");
        }
        serde_json::to_vec(&v).expect("json")
    }

    fn check_rejects(result: Result<VerifiedManifest, Rejection>, attack: Attack) {
        let err = result.expect_err("must be rejected");
        assert_eq!(err.attack(), attack, "{err}");
        assert!(err.to_string().starts_with(attack.as_str()), "{err}");
    }

    #[test]
    fn round_trip_verifies_and_keeps_the_spec() {
        let k = key(1);
        let bytes = signed("r1", 5, &k);
        let v = verify(&bytes, &trust_one(&k), NOW).expect("verifies");
        assert_eq!(v.spec(), &spec("r1", 5, b"payload"));
        assert_eq!(v.key_id(), &KeyId::of(&k.verifying_key()));
        assert_eq!(v.signed_manifest().to_json_bytes(), bytes);
    }

    /// `{"signed": EVIL, "signed": REAL, "signatures": [..]}`: serde_json alone keeps REAL (it
    /// verified before issue 16), a parser that keeps the first reads EVIL.
    #[test]
    fn issue_16_a_manifest_with_a_key_twice_is_refused_naming_the_key_and_path() {
        let k = key(1);
        let real: Value = serde_json::from_slice(&signed("r1", 5, &k)).expect("json");
        let mut evil = real["signed"].clone();
        evil["release"]["counter"] = 999.into();
        let twice = format!(
            r#"{{"signed": {evil}, "signed": {}, "signatures": {}}}"#,
            real["signed"], real["signatures"]
        );
        let lax: Value = serde_json::from_str(&twice).expect("serde_json reads it");
        assert_eq!(
            lax["signed"], real["signed"],
            "the reading that used to verify"
        );
        let err = verify(twice.as_bytes(), &trust_one(&k), NOW).expect_err("two readings");
        assert_eq!(err.attack(), Attack::Tampered, "{err}");
        assert!(
            err.to_string()
                .contains(r#"duplicate key "signed" at $.signed"#),
            "{err}"
        );

        // Nested: the counter twice inside the signed body, the real value last.
        let body = real["signed"]["release"].to_string();
        let nested = format!(
            r#"{{"signed": {{"_type": "convoy-release", "format_version": 1, "key_id": {}, "release": {{"counter": 999, {}}}, "signatures": {}}}"#,
            real["signed"]["key_id"],
            &body[1..],
            real["signatures"]
        );
        let lax: Value = serde_json::from_str(&nested).expect("serde_json reads it");
        assert_eq!(lax["signed"], real["signed"], "{nested}");
        let err = verify(nested.as_bytes(), &trust_one(&k), NOW).expect_err("two readings");
        assert!(
            err.to_string()
                .contains(r#"duplicate key "counter" at $.signed.release.counter"#),
            "{err}"
        );
    }

    #[test]
    fn served_bytes_are_the_canonical_text_and_verify_again() {
        let k = key(1);
        let file = signed("r1", 5, &k);
        let v = verify(&file, &trust_one(&k), NOW).expect("verifies");
        let served = v.served_bytes();
        assert_ne!(served, file, "not the (indented) file");
        let value: Value = serde_json::from_slice(&file).expect("json");
        assert_eq!(
            served,
            canonical_json::encode_text(&value).expect("canonical")
        );
        assert!(!served.contains(&b' ') && !served.contains(&b'\n'));
        assert_eq!(verify(&served, &trust_one(&k), NOW).expect("again"), v);
    }

    #[test]
    fn a_key_set_with_a_key_twice_is_refused() {
        let k = key(1);
        let set = SignedKeySet::sign(KeySetBody::initial([&k.verifying_key()]), &k).expect("sign");
        let text = String::from_utf8(set.to_json_bytes()).expect("utf-8");
        SignedKeySet::parse(text.as_bytes()).expect("the file as written parses");
        let twice = text.replacen(r#""version": 1"#, r#""version": 9, "version": 1"#, 1);
        assert_ne!(twice, text);
        let err = SignedKeySet::parse(twice.as_bytes()).expect_err("two readings");
        assert!(
            err.to_string()
                .contains(r#"duplicate key "version" at $.signed.version"#),
            "{err}"
        );
    }

    #[test]
    fn field_order_in_the_file_does_not_matter() {
        // Re-serialise with every object's keys reversed: same canonical bytes, still verifies.
        fn reverse(v: &Value) -> String {
            match v {
                Value::Object(m) => {
                    let parts: Vec<String> = m
                        .iter()
                        .rev()
                        .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), reverse(v)))
                        .collect();
                    format!("{{ {} }}", parts.join(", "))
                }
                Value::Array(a) => {
                    format!("[{}]", a.iter().map(reverse).collect::<Vec<_>>().join(","))
                }
                other => other.to_string(),
            }
        }
        let k = key(1);
        let bytes = signed("r1", 5, &k);
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        let shuffled = reverse(&v);
        assert_ne!(shuffled.as_bytes(), bytes.as_slice());
        verify(shuffled.as_bytes(), &trust_one(&k), NOW).expect("order-independent");
    }

    #[test]
    fn tampered_body_is_rejected() {
        let k = key(1);
        let bytes = signed("r1", 5, &k);
        let forged = edited(
            &bytes,
            |v| v["signed"]["release"]["counter"] = 99.into(),
            None,
        );
        check_rejects(verify(&forged, &trust_one(&k), NOW), Attack::Tampered);
        let forged = edited(
            &bytes,
            |v| v["signed"]["release"]["artifacts"][0]["sha256"] = "0".repeat(64).into(),
            None,
        );
        check_rejects(verify(&forged, &trust_one(&k), NOW), Attack::Tampered);
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let k = key(1);
        let bytes = signed("r1", 5, &k);
        let forged = edited(
            &bytes,
            |v| {
                let sig = v["signatures"][0]["sig"].as_str().expect("sig").to_owned();
                let flipped = if sig.starts_with('0') { "1" } else { "0" };
                v["signatures"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
            },
            None,
        );
        check_rejects(verify(&forged, &trust_one(&k), NOW), Attack::Tampered);
        check_rejects(verify(b"{not json", &trust_one(&k), NOW), Attack::Tampered);
        let extra = edited(
            &bytes,
            |v| v["signed"]["release"]["note"] = "x".into(),
            Some(&k),
        );
        check_rejects(verify(&extra, &trust_one(&k), NOW), Attack::Tampered);
    }

    #[test]
    fn wrong_key_is_rejected() {
        let (k, other) = (key(1), key(2));
        let bytes = signed("r1", 5, &other);
        check_rejects(verify(&bytes, &trust_one(&k), NOW), Attack::WrongKey);
        // Claiming the trusted key's id while signing with another key.
        let claimed = KeyId::of(&k.verifying_key());
        let forged = edited(
            &bytes,
            |v| v["signed"]["key_id"] = claimed.as_str().into(),
            Some(&other),
        );
        check_rejects(verify(&forged, &trust_one(&k), NOW), Attack::WrongKey);
    }

    #[test]
    fn expired_is_rejected() {
        let k = key(1);
        let bytes = signed("r1", 5, &k);
        verify(&bytes, &trust_one(&k), NOW.plus_secs(86_399)).expect("just before expiry");
        check_rejects(
            verify(&bytes, &trust_one(&k), NOW.plus_secs(86_400)),
            Attack::Expired,
        );
    }

    #[test]
    fn oversize_metadata_is_rejected_before_parsing() {
        let k = key(1);
        let mut bytes = signed("r1", 5, &k);
        bytes.pop();
        bytes.extend(std::iter::repeat_n(b' ', MAX_MANIFEST_BYTES));
        check_rejects(verify(&bytes, &trust_one(&k), NOW), Attack::Oversize);
    }

    // (name, device, offered id, manifest bytes, delivered artifacts, now, expected)
    type Case<'a> = (
        &'a str,
        DeviceMemory,
        &'a str,
        Vec<u8>,
        Vec<ArtifactDigest>,
        Timestamp,
        Option<Attack>,
    );

    /// The corpus: one case per attack, each run through the whole device path (offer, then
    /// install with the delivered artifact), and every attack in [`Attack::ALL`] has a case.
    #[test]
    fn attack_corpus_covers_every_attack() {
        let k = key(1);
        let trust = trust_one(&k);
        let genuine = signed("r6", 6, &k);
        let good = ArtifactDigest::of_bytes("fw.img", b"payload");
        let tampered_body = edited(
            &genuine,
            |v| v["signed"]["release"]["counter"] = 60.into(),
            None,
        );
        let mut oversize = genuine.clone();
        oversize.extend(std::iter::repeat_n(b'\n', MAX_MANIFEST_BYTES));
        let cases: Vec<Case> = vec![
            (
                "genuine",
                DeviceMemory::new("T300", 5),
                "r6",
                genuine.clone(),
                vec![good.clone()],
                NOW,
                None,
            ),
            (
                "tampered body",
                DeviceMemory::new("T300", 5),
                "r6",
                tampered_body,
                vec![good.clone()],
                NOW,
                Some(Attack::Tampered),
            ),
            (
                "tampered artifact",
                DeviceMemory::new("T300", 5),
                "r6",
                genuine.clone(),
                vec![ArtifactDigest::of_bytes("fw.img", b"pAyload")],
                NOW,
                Some(Attack::Tampered),
            ),
            (
                "wrong key",
                DeviceMemory::new("T300", 5),
                "r6",
                signed("r6", 6, &key(9)),
                vec![good.clone()],
                NOW,
                Some(Attack::WrongKey),
            ),
            (
                "expired",
                DeviceMemory::new("T300", 5),
                "r6",
                genuine.clone(),
                vec![good.clone()],
                NOW.plus_secs(90_000),
                Some(Attack::Expired),
            ),
            (
                "downgrade",
                DeviceMemory::new("T300", 7),
                "r6",
                genuine.clone(),
                vec![good.clone()],
                NOW,
                Some(Attack::Downgrade),
            ),
            (
                "wrong hardware",
                DeviceMemory::new("T900", 5),
                "r6",
                genuine.clone(),
                vec![good.clone()],
                NOW,
                Some(Attack::WrongHardware),
            ),
            (
                "mix-and-match offer",
                DeviceMemory::new("T300", 5),
                "r7",
                genuine.clone(),
                vec![good.clone()],
                NOW,
                Some(Attack::MixAndMatch),
            ),
            (
                "mix-and-match artifact",
                DeviceMemory::new("T300", 5),
                "r6",
                genuine.clone(),
                vec![ArtifactDigest::of_bytes("r7.img", b"payload")],
                NOW,
                Some(Attack::MixAndMatch),
            ),
            (
                "oversize manifest",
                DeviceMemory::new("T300", 5),
                "r6",
                oversize,
                vec![good.clone()],
                NOW,
                Some(Attack::Oversize),
            ),
            (
                "oversize artifact",
                DeviceMemory::new("T300", 5),
                "r6",
                genuine,
                vec![ArtifactDigest::of_bytes("fw.img", b"payload+more")],
                NOW,
                Some(Attack::Oversize),
            ),
        ];
        let mut covered = BTreeSet::new();
        for (name, mut device, offered, bytes, delivered, now, expected) in cases {
            let before = device.clone();
            let result = device
                .check_offer(offered, &bytes, &trust, now)
                .and_then(|m| device.install(&m, &delivered, now));
            match expected {
                None => assert!(result.is_ok(), "{name}: {result:?}"),
                Some(attack) => {
                    let err = result.expect_err(name);
                    assert_eq!(err.attack(), attack, "{name}: {err}");
                    assert_eq!(
                        device, before,
                        "{name}: a rejection leaves the device unchanged"
                    );
                    covered.insert(attack);
                }
            }
        }
        assert_eq!(covered, Attack::ALL.into_iter().collect());
    }

    #[test]
    fn device_rules_name_each_attack() {
        let k = key(1);
        let trust = trust_one(&k);
        let device = DeviceMemory::new("T300", 5);
        let ok = signed("r6", 6, &k);
        device
            .check_offer("r6", &ok, &trust, NOW)
            .expect("newer release for T300");
        let same = signed("r5", 5, &k);
        device
            .check_offer("r5", &same, &trust, NOW)
            .expect("reinstall of the same counter");
        let old = signed("r4", 4, &k);
        let err = device
            .check_offer("r4", &old, &trust, NOW)
            .expect_err("downgrade");
        assert_eq!(err.attack(), Attack::Downgrade);
        let other_hw = DeviceMemory::new("T500", 1);
        let err = other_hw
            .check_offer("r6", &ok, &trust, NOW)
            .expect_err("hardware");
        assert_eq!(err.attack(), Attack::WrongHardware);
        let err = device
            .check_offer("r7", &ok, &trust, NOW)
            .expect_err("offer names another release");
        assert_eq!(err.attack(), Attack::MixAndMatch);
    }

    #[test]
    fn artifacts_are_checked_before_the_slot_switch() {
        let k = key(1);
        let trust = trust_one(&k);
        let mut device = DeviceMemory::new("T300", 5);
        let m = device
            .check_offer("r6", &signed("r6", 6, &k), &trust, NOW)
            .expect("offer");
        let good = ArtifactDigest::of_bytes("fw.img", b"payload");
        let cases = [
            (
                ArtifactDigest::of_bytes("fw.img", b"paylOad"),
                Attack::Tampered,
            ),
            (
                ArtifactDigest::of_bytes("fw.img", b"payloa"),
                Attack::Tampered,
            ),
            (
                ArtifactDigest::of_bytes("fw.img", b"payload and more"),
                Attack::Oversize,
            ),
            (
                ArtifactDigest::of_bytes("other.img", b"payload"),
                Attack::MixAndMatch,
            ),
        ];
        for (digest, attack) in cases {
            let err = device
                .install(&m, &[digest], NOW)
                .expect_err("bad artifact");
            assert_eq!(err.attack(), attack, "{err}");
            assert_eq!(
                device.installed_counter, 5,
                "a rejected install changes nothing"
            );
        }
        let err = device.install(&m, &[], NOW).expect_err("missing artifact");
        assert_eq!(err.attack(), Attack::MixAndMatch);
        device.install(&m, &[good], NOW).expect("install");
        assert_eq!(device.installed_counter, 6);
        assert!(device.rollbacks.is_empty());
    }

    #[test]
    fn a_signed_rollback_may_downgrade_and_is_recorded() {
        let k = key(1);
        let trust = trust_one(&k);
        let mut device = DeviceMemory::new("T300", 9);
        let bytes = SignedManifest::sign(
            spec("r4-rollback", 4, b"payload"),
            Some(Rollback {
                reason: "crash loop in r9".to_owned(),
                from_counter_max: 9,
            }),
            &k,
        )
        .expect("sign")
        .to_json_bytes();
        let m = device
            .check_offer("r4-rollback", &bytes, &trust, NOW)
            .expect("signed rollback");
        device
            .install(&m, &[ArtifactDigest::of_bytes("fw.img", b"payload")], NOW)
            .expect("install");
        assert_eq!(device.installed_counter, 4);
        assert_eq!(
            device.rollbacks,
            vec![RollbackRecord {
                release_id: "r4-rollback".to_owned(),
                from_counter: 9,
                to_counter: 4,
                reason: "crash loop in r9".to_owned(),
                key_id: KeyId::of(&k.verifying_key()),
                at: NOW,
            }]
        );
        // A device that has moved past the bad release refuses the old rollback.
        let err = DeviceMemory::new("T300", 10)
            .check_offer("r4-rollback", &bytes, &trust, NOW)
            .expect_err("replayed rollback");
        assert_eq!(err.attack(), Attack::Downgrade);
        // Stripping the rollback flag breaks the signature: it cannot be removed or added.
        let stripped = edited(
            &bytes,
            |v| {
                v["signed"].as_object_mut().expect("obj").remove("rollback");
            },
            None,
        );
        let err = device
            .check_offer("r4-rollback", &stripped, &trust, NOW)
            .expect_err("tampered");
        assert_eq!(err.attack(), Attack::Tampered);
    }

    #[test]
    fn key_rotation_trusts_the_new_key_and_retires_the_old() {
        let (old, new) = (key(1), key(2));
        let v1 = SignedKeySet::sign(KeySetBody::initial([&old.verifying_key()]), &old).expect("v1");
        let trust1 = TrustedKeys::from_chain(std::slice::from_ref(&v1)).expect("anchor");
        let body2 = trust1.body().expect("body").rotated(
            &KeyId::of(&old.verifying_key()),
            &new.verifying_key(),
            RetireOld::Retire,
        );
        let v2 = SignedKeySet::sign(body2.clone(), &old).expect("v2 signed by old");
        let trust2 = TrustedKeys::from_chain(&[v1.clone(), v2.clone()]).expect("chain");
        assert_eq!(trust2.version(), 2);
        verify(&signed("r1", 1, &new), &trust2, NOW).expect("new key trusted");
        check_rejects(
            verify(&signed("r1", 1, &old), &trust2, NOW),
            Attack::WrongKey,
        );
        check_rejects(
            verify(&signed("r1", 1, &new), &trust1, NOW),
            Attack::WrongKey,
        );
        // A new set signed by the key it introduces (not by the old one) is refused.
        let self_signed = SignedKeySet::sign(body2, &new).expect("sign");
        assert_eq!(
            TrustedKeys::from_chain(&[v1.clone(), self_signed]),
            Err(KeySetError::NotSigned { version: 2 })
        );
        // Versions must follow one another.
        assert!(matches!(
            TrustedKeys::from_chain(std::slice::from_ref(&v2)),
            Err(KeySetError::VersionGap {
                previous: 0,
                found: 2
            })
        ));
        let json = v2.to_json_bytes();
        assert_eq!(SignedKeySet::parse(&json).expect("parse"), v2);
    }

    #[test]
    fn revocation_is_permanent() {
        let (a, b) = (key(1), key(2));
        let (ida, idb) = (KeyId::of(&a.verifying_key()), KeyId::of(&b.verifying_key()));
        let v1 = SignedKeySet::sign(
            KeySetBody::initial([&a.verifying_key(), &b.verifying_key()]),
            &a,
        )
        .expect("v1");
        let trust1 = TrustedKeys::from_chain(std::slice::from_ref(&v1)).expect("v1");
        verify(&signed("r1", 1, &b), &trust1, NOW).expect("b trusted in v1");
        let v2 = SignedKeySet::sign(trust1.body().expect("body").revoked(&idb), &a).expect("v2");
        let trust2 = TrustedKeys::from_chain(&[v1.clone(), v2.clone()]).expect("v2");
        assert!(trust2.is_revoked(&idb));
        let err = verify(&signed("r1", 1, &b), &trust2, NOW).expect_err("revoked");
        assert_eq!(
            err,
            Rejection::RevokedKey {
                release_id: "r1".into(),
                key_id: idb.clone()
            }
        );
        assert_eq!(err.attack(), Attack::WrongKey);
        // A revoked key cannot sign the next set, and a next set cannot un-revoke.
        let mut v3_body = v2.signed.clone();
        v3_body.version = 3;
        let by_revoked = SignedKeySet::sign(v3_body.clone(), &b).expect("sign");
        assert_eq!(
            TrustedKeys::from_chain(&[v1.clone(), v2.clone(), by_revoked]),
            Err(KeySetError::NotSigned { version: 3 })
        );
        v3_body.revoked.clear();
        let unrevoke = SignedKeySet::sign(v3_body, &a).expect("sign");
        assert_eq!(
            TrustedKeys::from_chain(&[v1, v2, unrevoke]),
            Err(KeySetError::Unrevoked {
                version: 3,
                key_id: idb
            })
        );
        assert!(trust2.key(&ida).is_some());
    }

    #[test]
    fn a_key_set_that_trusts_no_key_is_refused() {
        let a = key(1);
        let ida = KeyId::of(&a.verifying_key());
        let v1 = SignedKeySet::sign(KeySetBody::initial([&a.verifying_key()]), &a).expect("v1");
        let trust1 = TrustedKeys::from_chain(std::slice::from_ref(&v1)).expect("v1");
        // Revoking the only key, and rotating a key to itself, both leave no key.
        let revoke_last =
            SignedKeySet::sign(trust1.body().expect("body").revoked(&ida), &a).expect("sign");
        assert_eq!(
            TrustedKeys::from_chain(&[v1.clone(), revoke_last]),
            Err(KeySetError::NoKeys { version: 2 })
        );
        let to_itself =
            trust1
                .body()
                .expect("body")
                .rotated(&ida, &a.verifying_key(), RetireOld::Retire);
        let to_itself = SignedKeySet::sign(to_itself, &a).expect("sign");
        assert_eq!(
            TrustedKeys::from_chain(&[v1, to_itself]),
            Err(KeySetError::NoKeys { version: 2 })
        );
    }

    #[test]
    fn release_ids_must_fit_a_topic_level() {
        for bad in ["t300+t310-2.5.0", "a/b", "has space", "", "#"] {
            let spec = spec(bad, 1, b"payload");
            assert!(
                matches!(
                    SignedManifest::sign(spec, None, &key(1)),
                    Err(ManifestError::BadId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_id_matches_tuf_definition() {
        // The id is SHA-256 over the canonical JSON of the TUF key object, computed here by hand.
        let k = key(7).verifying_key();
        let text = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
            hex::encode(k.as_bytes())
        );
        assert_eq!(
            KeyId::of(&k).as_str(),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
    }

    /// Every Wycheproof Ed25519 vector through the same check manifests use: valid ones must
    /// verify, invalid ones must not.
    #[test]
    fn wycheproof_ed25519_vectors() {
        let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
            .expect("wycheproof ed25519 vectors");
        let mut counted = (0, 0);
        for group in &set.test_groups {
            for test in &group.tests {
                let result = verify_ed25519(&group.key.pk, &test.msg, &test.sig);
                match test.result {
                    wycheproof::TestResult::Valid => {
                        assert!(
                            result.is_ok(),
                            "tc {} ({}) must verify",
                            test.tc_id,
                            test.comment
                        );
                        counted.0 += 1;
                    }
                    wycheproof::TestResult::Invalid => {
                        assert!(
                            result.is_err(),
                            "tc {} ({}) must not verify",
                            test.tc_id,
                            test.comment
                        );
                        counted.1 += 1;
                    }
                    wycheproof::TestResult::Acceptable => {}
                }
            }
        }
        assert_eq!(
            counted.0 + counted.1,
            set.number_of_tests,
            "every vector is valid or invalid"
        );
        assert!(counted.0 > 0 && counted.1 > 0);
    }
}
