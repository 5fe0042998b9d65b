//! The keys the device trusts: a trust directory as `convoy key trust` writes it
//! (`keyset-1.json`, `keyset-2.json`, …, each signed by a key of the one before), verified as a
//! chain by the core ([`TrustedKeys::from_chain`]).
//!
//! Deliberately not here: single-key directories (`public.json`) that `convoy --trust` also
//! accepts for one operator; a device is given a trust directory.

use anyhow::{Context, Result, bail};
use convoy_core::manifest::{SignedKeySet, TrustedKeys};
use std::path::Path;

/// A key-set file larger than this is refused unread.
const MAX_KEYSET_BYTES: u64 = 1024 * 1024;

/// Reads and verifies the key-set chain of a trust directory.
pub fn load(dir: &Path) -> Result<TrustedKeys> {
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
            if name != format!("keyset-{v}.json") {
                bail!("{}: unexpected key-set file name {name:?}", dir.display());
            }
            versions.push(v);
        }
    }
    if versions.is_empty() {
        bail!(
            "{} holds no key set (keyset-1.json, ...): give the trust directory `convoy key trust` wrote",
            dir.display()
        );
    }
    versions.sort_unstable();
    let mut chain = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if *v != i as u64 + 1 {
            bail!(
                "{}: key-set versions must run 1, 2, 3, ... but keyset-{}.json is missing",
                dir.display(),
                i + 1
            );
        }
        let path = dir.join(format!("keyset-{v}.json"));
        let len = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > MAX_KEYSET_BYTES {
            bail!(
                "{} is {len} bytes, over the limit of {MAX_KEYSET_BYTES}",
                path.display()
            );
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let set = SignedKeySet::parse(&bytes).with_context(|| format!("in {}", path.display()))?;
        if set.signed.version != *v {
            bail!("{} holds version {}", path.display(), set.signed.version);
        }
        chain.push(set);
    }
    TrustedKeys::from_chain(&chain)
        .with_context(|| format!("verifying the key sets in {}", dir.display()))
}
