//! Settings every front end resolves the same way: the trust directory (where the public keys
//! that releases must verify against live), and the DDI endpoint's token files.
//!
//! This is not a configuration file or a settings store: a setting is resolved from what the
//! caller passes (an argument, the cache's path) and the environment, every time it is asked.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The trust directory: `explicit` (a `--trust` argument, the server's configuration), else
/// `$CONVOY_TRUST`, else [`default_trust_dir`] beside the cache `db`.
pub fn trust_dir(explicit: Option<&Path>, db: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("CONVOY_TRUST").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_trust_dir(db)
}

/// `trust/` beside the cache `db`: where `convoy rollout run` and `convoy serve` look when
/// nothing else is said, where the demo writes its key, and what the console's forms propose.
pub fn default_trust_dir(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).join("trust")
}

/// A key someone is asked to trust, as the confirmation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyToTrust {
    /// The key id manifests name (64 hex digits).
    pub id: String,
    /// The Ed25519 public key itself in hex, in groups of four: what to compare with the key's
    /// owner over another channel.
    pub fingerprint: String,
    /// The key directory it was read from.
    pub key_dir: PathBuf,
}

/// Reads the public key of the key directory `key_dir` for a confirmation.
pub fn key_to_trust(key_dir: &Path) -> Result<KeyToTrust> {
    let key = crate::keys::load_public(key_dir)?;
    let hex = hex::encode(key.as_bytes());
    let groups: Vec<&str> = (0..hex.len())
        .step_by(4)
        .filter_map(|i| hex.get(i..(i + 4).min(hex.len())))
        .collect();
    Ok(KeyToTrust {
        id: convoy_core::manifest::KeyId::of(&key).to_string(),
        fingerprint: groups.join(" "),
        key_dir: key_dir.to_owned(),
    })
}

/// Trusts the key of `key_dir` in the trust directory `trust_dir` (see
/// [`crate::keys::trust_key`]), after checking that it is still the key `expected_id` the
/// operator confirmed; says what was written.
pub fn trust_key(trust_dir: &Path, key_dir: &Path, expected_id: &str) -> Result<String> {
    let key = crate::keys::load_public(key_dir)?;
    let id = convoy_core::manifest::KeyId::of(&key);
    if id.as_str() != expected_id {
        bail!(
            "the key in {} is now {id}, not the {expected_id} confirmed: nothing was trusted",
            key_dir.display()
        );
    }
    crate::keys::trust_key(trust_dir, &key)
}

/// Reads `controller_id,token` lines; `#` starts a comment. Errors name the line.
pub fn read_target_tokens(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let (id, token) = line
            .split_once(',')
            .ok_or_else(|| anyhow!("{}: expected `controller_id,token`", at()))?;
        let (id, token) = (id.trim(), token.trim());
        crate::link::ddi::hub::check_controller_id(id).map_err(|e| anyhow!("{}: {e}", at()))?;
        if token.len() < 16 {
            bail!("{}: the token of {id} is shorter than 16 characters", at());
        }
        if !seen.insert(id.to_owned()) {
            bail!("{}: controller {id} is listed twice", at());
        }
        out.push((id.to_owned(), token.to_owned()));
    }
    Ok(out)
}

/// Reads the gateway token file (one token of at least 16 characters).
pub fn read_gateway_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the gateway token from {}", path.display()))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        bail!(
            "{}: the gateway token is shorter than 16 characters",
            path.display()
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_trust_directory_is_beside_the_cache_and_an_explicit_one_wins() {
        let db = Path::new("/var/lib/convoy/convoy.db");
        assert_eq!(default_trust_dir(db), Path::new("/var/lib/convoy/trust"));
        assert_eq!(
            default_trust_dir(Path::new("convoy.db")),
            Path::new("trust")
        );
        assert_eq!(
            trust_dir(Some(Path::new("/etc/convoy/keys")), db),
            Path::new("/etc/convoy/keys")
        );
    }
}
