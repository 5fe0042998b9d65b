//! The planning use cases: read the catalog and the policy's sections, the gate warnings, the
//! plan as JSON (what `convoy rollout run --plan` and a rollout request read), and the short
//! texts for sizes, durations and rates. `convoy plan`, the console's planner and `convoy serve`
//! all call these.
//!
//! Planning itself is `convoy_core::plan::plan`, not this module; saving and loading plans is
//! `store::plans`; the plan printed for people is `convoy plan`'s (`cmd::plan::render_text`).

use anyhow::{Context, Result, bail};
use convoy_core::gates::GatePolicy;
use convoy_core::plan::policy::{BootCritical, boot_critical};
use convoy_core::plan::{self, Plan, PlanningPolicy};
use convoy_core::release::ReleaseSpec;
use std::path::Path;

/// The policy file versions this build reads.
const POLICY_VERSION: u64 = 1;

/// Warnings about the gates the plan carries: a canary floor per stratum below the gates'
/// `min_stratum_devices` means a rare stratum in the canary cannot stop the rollout on its own.
pub fn gate_notes(policy: &PlanningPolicy, gates: &GatePolicy) -> Vec<String> {
    let mut notes = Vec::new();
    if (policy.canary.floor_per_stratum as u64) < u64::from(gates.min_stratum_devices) {
        notes.push(format!(
            "canary.floor_per_stratum is {} but the gates judge a stratum only from {} devices (gates.min_stratum_devices): a rare stratum in the canary cannot stop the rollout on its own",
            policy.canary.floor_per_stratum, gates.min_stratum_devices
        ));
    }
    notes
}

/// The planning policy and gates `release` is planned with: `planning` and `gates` as given,
/// or, for a release that installs a bootloader or modem, their stricter boot-critical
/// versions (`convoy_core::plan::policy::boot_critical`), with the reason and the changes.
pub fn for_release(
    release: &ReleaseSpec,
    planning: PlanningPolicy,
    gates: GatePolicy,
) -> (PlanningPolicy, GatePolicy, Option<BootCritical>) {
    match boot_critical(release, &planning, &gates) {
        Some(b) => (b.planning.clone(), b.gates.clone(), Some(b)),
        None => (planning, gates, None),
    }
}

/// The lines a plan shows for its boot-critical defaults: the reason first, then each default
/// made stricter.
pub fn boot_critical_lines(b: &BootCritical) -> Vec<String> {
    let mut out = vec![format!(
        "{}: stricter defaults for a release that installs a boot-critical component (docs/PLANNING.md)",
        b.reason
    )];
    out.extend(b.changes.iter().map(|c| format!("  {c}")));
    out
}

/// Adds `"boot_critical"` (the reason, the components and the changes) to a plan's JSON.
pub fn annotate_boot_critical(
    value: &mut serde_json::Value,
    b: Option<&BootCritical>,
) -> Result<()> {
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "boot_critical".into(),
            serde_json::to_value(b).context("serialising the boot-critical defaults")?,
        );
    }
    Ok(())
}

/// The plan as `convoy plan --json` prints it: the plan, its `gates`, its waves by device id
/// (`rollout_waves`, what `convoy rollout run --plan FILE` reads) and `gate_warnings`.
pub fn plan_json(
    plan: &Plan,
    fleet: &convoy_core::fleet::Fleet,
    gates: &GatePolicy,
    gate_notes: &[String],
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(plan).context("serialising the plan")?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "gates".into(),
            serde_json::to_value(gates).context("serialising the gates")?,
        );
        obj.insert(
            "rollout_waves".into(),
            serde_json::to_value(plan.rollout_waves(fleet)).context("serialising the waves")?,
        );
        obj.insert(
            "prerequisite_waves".into(),
            serde_json::to_value(prerequisite_waves(plan, fleet))
                .context("serialising the prerequisite waves")?,
        );
        obj.insert(
            "gate_warnings".into(),
            serde_json::to_value(gate_notes).context("serialising warnings")?,
        );
    }
    Ok(value)
}

/// One of a plan's waves of devices that need prerequisite releases first, as `convoy plan
/// --json` writes it (`prerequisite_waves`) and `convoy rollout run --plan FILE` reads it: the
/// wave, and the chain each of its devices installs, in order, before the target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrerequisiteWave {
    pub name: String,
    pub device_ids: Vec<String>,
    pub soak_secs: i64,
    pub prerequisites: Vec<String>,
}

impl PrerequisiteWave {
    /// The wave as the rollout state machine takes it.
    pub fn wave(&self) -> convoy_core::rollout::WaveSpec {
        convoy_core::rollout::WaveSpec {
            name: self.name.clone(),
            device_ids: self.device_ids.clone(),
            soak_secs: self.soak_secs,
        }
    }
}

/// The plan's prerequisite waves (the planner's `after-prerequisites-N`), after its other
/// waves, as the engine runs them.
pub fn prerequisite_waves(plan: &Plan, fleet: &convoy_core::fleet::Fleet) -> Vec<PrerequisiteWave> {
    let (waves, chains) = convoy_core::rollout::chain::waves_with_chains(plan, fleet);
    chains
        .into_iter()
        .filter_map(|c| {
            waves.get(c.wave).map(|w| PrerequisiteWave {
                name: w.name.clone(),
                device_ids: w.device_ids.clone(),
                soak_secs: w.soak_secs,
                prerequisites: c.releases,
            })
        })
        .collect()
}

/// Reads a JSON file strictly (a key twice is refused).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("opening {}", path.display()))?;
    // Policy, catalog and plan files change what is rolled out where: one reading only.
    convoy_core::strict_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One `ReleaseSpec` or an array of them.
pub fn read_catalog(path: &Path) -> Result<Vec<ReleaseSpec>> {
    let value: serde_json::Value = read_json(path)?;
    if value.is_array() {
        serde_json::from_value(value).context("parsing an array of releases")
    } else {
        Ok(vec![
            serde_json::from_value(value).context("parsing a release")?,
        ])
    }
}

/// Reads the `"planning"` section of a shared policy file; a missing section means defaults.
pub fn read_policy(path: &Path) -> Result<PlanningPolicy> {
    read_section(path, "planning")
}

/// Reads one section of a shared policy file (`"planning"`, `"gates"`, ...); a missing section
/// means that section's defaults.
pub fn read_section<T: serde::de::DeserializeOwned + Default>(path: &Path, key: &str) -> Result<T> {
    let value: serde_json::Value = read_json(path)?;
    let Some(obj) = value.as_object() else {
        bail!("the policy file must be a JSON object with \"version\" and \"planning\"");
    };
    match obj.get("version").and_then(serde_json::Value::as_u64) {
        Some(POLICY_VERSION) => {}
        Some(v) => {
            bail!("unsupported policy version {v}: this build reads version {POLICY_VERSION}")
        }
        None => {
            bail!("the policy file needs a numeric \"version\" (this build reads {POLICY_VERSION})")
        }
    }
    match obj.get(key) {
        Some(section) => serde_json::from_value(section.clone())
            .with_context(|| format!("parsing the \"{key}\" section")),
        None => Ok(T::default()),
    }
}

/// The fields of the `"planning"` section that make an offer schedule.
const SCHEDULE_FIELDS: [&str; 5] = [
    "rate",
    "windows",
    "blackouts",
    "exceptions",
    "bandwidth_cap_bytes_per_hour",
];

/// Whether a policy file's `"planning"` section sets a schedule of its own (a rate, windows,
/// blackouts, exceptions or a bandwidth cap): the engine then paces its offers by it. A policy
/// without one leaves the engine offering each wave at once, as before schedules ran.
pub fn names_a_schedule(path: &Path) -> Result<bool> {
    let value: serde_json::Value = read_json(path)?;
    Ok(value
        .get("planning")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|p| SCHEDULE_FIELDS.iter().any(|f| p.contains_key(*f))))
}

/// A byte count for people, in decimal units (`1.5 MB`).
pub fn bytes_text(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// A soak or a duration in the largest whole unit (`2d`, `6h`), else minutes rounded up.
pub fn duration_text(secs: u64) -> String {
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else {
        format!("{}m", secs.div_ceil(60))
    }
}

/// A rate limit in one line (`5 devices/min`, or how an exponential one grows).
pub fn rate_text(rate: &plan::policy::RateLimit) -> String {
    match rate {
        plan::policy::RateLimit::Constant { per_minute } => format!("{per_minute} devices/min"),
        plan::policy::RateLimit::Exponential {
            start_per_minute,
            factor,
            every_devices,
            max_per_minute,
        } => format!(
            "{start_per_minute} devices/min, x{factor} every {every_devices} offered, up to {max_per_minute}/min"
        ),
    }
}
