//! What a release is, before and apart from its signature: the body of a release manifest.
//!
//! A [`ReleaseSpec`] says what a release carries (artifacts), what it installs (`provides`:
//! component versions after a successful install), which hardware it is for, and what it needs
//! (`requires`, see [`crate::requirement`]). The planner reads it to decide eligibility and
//! prerequisite chains; signing (manifests) wraps it with a key id and a signature. Only a
//! verified manifest is ever dispatched; this type alone proves nothing about who made it.

use crate::fleet::{Device, SmallMap};
use crate::requirement::Requirement;
use crate::time::Timestamp;
use crate::version::Version;
use serde::{Deserialize, Serialize};

/// Longest accepted device, release or command id.
pub const MAX_ID_LEN: usize = 128;

/// Ids of devices, releases and commands: 1 to 128 of `A-Z a-z 0-9 - _ . :`. They travel as
/// MQTT topic levels and file names, so MQTT wildcards (`+`, `#`), `/` and whitespace never
/// appear in one.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Components whose update gets stricter defaults (see
/// [`ReleaseSpec::boot_critical_components`]).
pub const BOOT_CRITICAL_COMPONENTS: [&str; 2] = ["bootloader", "modem"];

/// One file a release delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name, e.g. `t300-fw-2.5.0.img`.
    pub name: String,
    /// Where devices download it from (`https://…`, or a path relative to the artifact store).
    pub url: String,
    pub length_bytes: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
}

/// The unsigned content of a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// Unique id, e.g. `t300-fw-2.5.0`.
    pub id: String,
    /// Human version, e.g. `2.5.0`.
    pub version: Version,
    /// Monotonic release counter: a device never installs a lower one than it has, except by an
    /// explicitly signed rollback.
    pub counter: u64,
    /// Hardware ids (device models / SKUs) this release is built for.
    pub hardware: Vec<String>,
    /// Component versions a device runs after installing it, e.g. `{"firmware": "2.5.0"}`.
    pub provides: SmallMap<Version>,
    /// Prerequisites a device must meet before it may be offered this release.
    #[serde(default)]
    pub requires: Vec<Requirement>,
    pub artifacts: Vec<Artifact>,
    /// After this moment the release must not be offered or installed.
    pub expires: Timestamp,
}

impl ReleaseSpec {
    /// Total bytes a device downloads for this release.
    pub fn download_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.length_bytes).sum()
    }

    /// Whether this release is built for the device's hardware.
    pub fn supports_hardware(&self, device: &Device) -> bool {
        self.hardware.iter().any(|h| *h == device.model)
    }

    /// The boot-critical components this release installs (`bootloader`, `modem`), in that
    /// order: a bad bootloader can leave a device that boots neither bank, a bad modem image
    /// cuts it off the network that would deliver the fix. Such releases get stricter plan
    /// and gate defaults (`plan::boot_critical`).
    pub fn boot_critical_components(&self) -> Vec<&'static str> {
        BOOT_CRITICAL_COMPONENTS
            .into_iter()
            .filter(|c| self.provides.iter().any(|(name, _)| name == *c))
            .collect()
    }

    /// Whether the device already runs everything this release provides.
    pub fn is_installed_on(&self, device: &Device) -> bool {
        !self.provides.is_empty()
            && self
                .provides
                .iter()
                .all(|(c, v)| device.component(c) == Some(*v))
    }
}
