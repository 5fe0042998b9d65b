//! Settings every front end resolves the same way: today the trust directory (where the public
//! keys that releases must verify against live).
//!
//! This is not a configuration file or a settings store: a setting is resolved from what the
//! caller passes (an argument, the cache's path) and the environment, every time it is asked.

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
