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
