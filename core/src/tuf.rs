//! TUF 1.0 repository metadata for verified releases, so any conforming TUF client can fetch
//! them from a static HTTP server.
//!
//! [`build_repository`] turns verified manifests into the four top-level roles (root, targets,
//! snapshot, timestamp), all signed by one Ed25519 key with threshold 1, with consistent
//! snapshots on: metadata is written as `N.root.json`, `N.targets.json`, `N.snapshot.json` and
//! `timestamp.json` (plus `root.json`, the copy a client bootstraps from), and each target file as
//! `<sha256>.<name>`. Each target's `custom` field carries the release's signed manifest under
//! `convoy_manifest`, so a device that fetched through TUF still applies Convoy's own checks.
//!
//! This module is pure: it returns file names and bytes and never touches the file system; it
//! does not do delegations, multiple keys per role, or root rotation.

use crate::canonical_json::{self, CanonicalJsonError};
use crate::manifest::{PublicKey, SignatureEntry, VerifiedManifest};
use crate::time::Timestamp;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The TUF specification version written into every role.
pub const SPEC_VERSION: &str = "1.0.31";

/// Why a repository cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TufError {
    /// Two releases ship different files under one target name.
    #[error("target name {name} is used by releases {first} and {second} with different contents")]
    DuplicateTarget {
        name: String,
        first: String,
        second: String,
    },
    /// A target name would escape `targets/` or is empty.
    #[error("target name {0:?} is not a plain file name")]
    BadTargetName(String),
    /// Metadata has no canonical form (never for metadata built here, but the encoder can fail).
    #[error("TUF metadata has no canonical form: {0}")]
    Canonical(#[from] CanonicalJsonError),
    /// No release was given.
    #[error("no release to export")]
    Empty,
}

/// One target file to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TufTarget {
    /// The target path clients ask for (the artifact's name).
    pub name: String,
    pub length_bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The release it belongs to.
    pub release_id: String,
    /// `custom` metadata: `{"convoy_manifest": <signed manifest>}`.
    pub custom: Value,
}

impl TufTarget {
    /// Where the file goes under `targets/` with consistent snapshots: `<sha256>.<name>`.
    pub fn stored_name(&self) -> String {
        format!("{}.{}", self.sha256, self.name)
    }
}

/// The targets of these releases: one per artifact, sorted by name.
pub fn targets_of(manifests: &[VerifiedManifest]) -> Result<Vec<TufTarget>, TufError> {
    let mut by_name: BTreeMap<String, TufTarget> = BTreeMap::new();
    for m in manifests {
        let custom = json!({ "convoy_manifest": m.signed_manifest() });
        for a in &m.spec().artifacts {
            if a.name.is_empty()
                || a.name.contains('/')
                || a.name.contains('\\')
                || a.name == "."
                || a.name == ".."
            {
                return Err(TufError::BadTargetName(a.name.clone()));
            }
            let target = TufTarget {
                name: a.name.clone(),
                length_bytes: a.length_bytes,
                sha256: a.sha256.clone(),
                release_id: m.release_id().to_owned(),
                custom: custom.clone(),
            };
            if let Some(first) = by_name.get(&a.name) {
                return Err(TufError::DuplicateTarget {
                    name: a.name.clone(),
                    first: first.release_id.clone(),
                    second: target.release_id,
                });
            }
            by_name.insert(a.name.clone(), target);
        }
    }
    if by_name.is_empty() {
        return Err(TufError::Empty);
    }
    Ok(by_name.into_values().collect())
}

/// When each role expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TufExpiry {
    pub root: Timestamp,
    pub targets: Timestamp,
    pub snapshot: Timestamp,
    pub timestamp: Timestamp,
}

impl TufExpiry {
    /// Common choices: root a year, targets and snapshot 90 days, timestamp 7 days from `now`.
    pub fn from_now(now: Timestamp) -> Self {
        const DAY_SECS: i64 = 86_400;
        Self {
            root: now.plus_secs(365 * DAY_SECS),
            targets: now.plus_secs(90 * DAY_SECS),
            snapshot: now.plus_secs(90 * DAY_SECS),
            timestamp: now.plus_secs(7 * DAY_SECS),
        }
    }
}

/// The metadata files of a repository, to write under `metadata/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TufMetadata {
    /// `(file name, bytes)`, in the order a careful writer should publish them: targets first,
    /// timestamp last, so a client never sees a timestamp pointing at missing files.
    pub files: Vec<(String, Vec<u8>)>,
}

fn sign_role(signed: &Value, key: &SigningKey) -> Result<Vec<u8>, TufError> {
    let bytes = canonical_json::encode(signed)?;
    let doc = json!({
        "signed": signed,
        "signatures": [SignatureEntry::create(key, &bytes)],
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    Ok(out)
}

fn meta_entry(version: u64, bytes: &[u8]) -> Value {
    json!({
        "version": version,
        "length": bytes.len(),
        "hashes": { "sha256": hex::encode(Sha256::digest(bytes)) },
    })
}

/// Builds and signs root (version 1), targets, snapshot and timestamp (all at `version`) for
/// `targets`, with `key` holding every role.
pub fn build_repository(
    targets: &[TufTarget],
    version: u64,
    expiry: TufExpiry,
    key: &SigningKey,
) -> Result<TufMetadata, TufError> {
    let public = PublicKey::ed25519(&key.verifying_key());
    let key_id = public.key_id();
    let role = json!({ "keyids": [key_id.as_str()], "threshold": 1 });
    let root = json!({
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "version": 1,
        "expires": expiry.root.to_rfc3339(),
        "consistent_snapshot": true,
        "keys": { key_id.as_str(): public },
        "roles": {
            "root": role,
            "targets": role,
            "snapshot": role,
            "timestamp": role,
        },
    });
    let root_bytes = sign_role(&root, key)?;

    let target_map: serde_json::Map<String, Value> = targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                json!({
                    "length": t.length_bytes,
                    "hashes": { "sha256": t.sha256 },
                    "custom": t.custom,
                }),
            )
        })
        .collect();
    let targets_doc = json!({
        "_type": "targets",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expiry.targets.to_rfc3339(),
        "targets": target_map,
    });
    let targets_bytes = sign_role(&targets_doc, key)?;

    let snapshot = json!({
        "_type": "snapshot",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expiry.snapshot.to_rfc3339(),
        "meta": { "targets.json": meta_entry(version, &targets_bytes) },
    });
    let snapshot_bytes = sign_role(&snapshot, key)?;

    let timestamp = json!({
        "_type": "timestamp",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expiry.timestamp.to_rfc3339(),
        "meta": { "snapshot.json": meta_entry(version, &snapshot_bytes) },
    });
    let timestamp_bytes = sign_role(&timestamp, key)?;

    Ok(TufMetadata {
        files: vec![
            (format!("{version}.targets.json"), targets_bytes),
            (format!("{version}.snapshot.json"), snapshot_bytes),
            ("1.root.json".to_owned(), root_bytes.clone()),
            ("root.json".to_owned(), root_bytes),
            ("timestamp.json".to_owned(), timestamp_bytes),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ArtifactDigest, SignedManifest, TrustedKeys, verify, verify_ed25519};
    use crate::release::{Artifact, ReleaseSpec};
    use crate::version::Version;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn manifest(id: &str, artifact: &str, payload: &[u8], key: &SigningKey) -> VerifiedManifest {
        let d = ArtifactDigest::of_bytes(artifact, payload);
        let spec = ReleaseSpec {
            id: id.to_owned(),
            version: Version::new(1, 0, 0),
            counter: 1,
            hardware: vec!["T300".to_owned()],
            provides: [("firmware", Version::new(1, 0, 0))].into_iter().collect(),
            requires: Vec::new(),
            artifacts: vec![Artifact {
                name: d.name,
                url: artifact.to_owned(),
                length_bytes: d.length_bytes,
                sha256: d.sha256,
            }],
            expires: NOW.plus_secs(1000),
        };
        let bytes = SignedManifest::sign(spec, None, key)
            .expect("sign")
            .to_json_bytes();
        verify(&bytes, &TrustedKeys::from_keys([&key.verifying_key()]), NOW).expect("verify")
    }

    fn file(meta: &TufMetadata, name: &str) -> Value {
        let bytes = &meta.files.iter().find(|(n, _)| n == name).expect(name).1;
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn roles_are_signed_and_chained_by_hash() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let ms = [
            manifest("a", "a.img", b"aaa", &key),
            manifest("b", "b.img", b"bbbb", &key),
        ];
        let targets = targets_of(&ms).expect("targets");
        assert_eq!(
            targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a.img", "b.img"]
        );
        let meta = build_repository(&targets, 1, TufExpiry::from_now(NOW), &key).expect("repo");
        let names: Vec<&str> = meta.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "1.targets.json",
                "1.snapshot.json",
                "1.root.json",
                "root.json",
                "timestamp.json"
            ]
        );
        for (name, bytes) in &meta.files {
            let doc: Value = serde_json::from_slice(bytes).expect("json");
            let signed = canonical_json::encode(&doc["signed"]).expect("canonical");
            let sig = hex::decode(doc["signatures"][0]["sig"].as_str().expect("sig")).expect("hex");
            verify_ed25519(key.verifying_key().as_bytes(), &signed, &sig)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // The timestamp pins the snapshot's bytes, and the snapshot pins the targets' bytes.
        let bytes_of = |n: &str| &meta.files.iter().find(|(f, _)| f == n).expect(n).1;
        let ts = file(&meta, "timestamp.json");
        assert_eq!(
            ts["signed"]["meta"]["snapshot.json"]["hashes"]["sha256"],
            hex::encode(Sha256::digest(bytes_of("1.snapshot.json")))
        );
        let snap = file(&meta, "1.snapshot.json");
        assert_eq!(
            snap["signed"]["meta"]["targets.json"]["length"],
            bytes_of("1.targets.json").len()
        );
        let t = file(&meta, "1.targets.json");
        let entry = &t["signed"]["targets"]["b.img"];
        assert_eq!(entry["length"], 4);
        assert_eq!(
            entry["hashes"]["sha256"],
            hex::encode(Sha256::digest(b"bbbb"))
        );
        assert_eq!(
            entry["custom"]["convoy_manifest"]["signed"]["release"]["id"],
            "b"
        );
        assert_eq!(
            targets[1].stored_name(),
            format!("{}.b.img", hex::encode(Sha256::digest(b"bbbb")))
        );
        let root = file(&meta, "root.json");
        assert_eq!(root["signed"]["consistent_snapshot"], true);
        assert_eq!(
            root["signed"]["expires"],
            NOW.plus_secs(365 * 86_400).to_rfc3339()
        );
    }

    #[test]
    fn duplicate_and_unsafe_target_names_are_refused() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let ms = [
            manifest("a", "x.img", b"1", &key),
            manifest("b", "x.img", b"2", &key),
        ];
        assert_eq!(
            targets_of(&ms),
            Err(TufError::DuplicateTarget {
                name: "x.img".into(),
                first: "a".into(),
                second: "b".into()
            })
        );
        let ms = [manifest("a", "../etc/passwd", b"1", &key)];
        assert!(matches!(targets_of(&ms), Err(TufError::BadTargetName(_))));
        assert_eq!(targets_of(&[]), Err(TufError::Empty));
    }
}
