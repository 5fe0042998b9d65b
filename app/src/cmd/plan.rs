//! `convoy plan`: plan a rollout of a release to a fleet and print it (text or JSON).
//!
//! Reads the fleet, the release (a JSON `ReleaseSpec` for now), an optional catalog of other
//! releases for prerequisite chains, and the `"planning"` section of an optional policy file;
//! reads the clock only when `--now` is not given; then hands everything to
//! `convoy_core::plan::plan`. The JSON carries the gates and the waves by device id
//! (`rollout_waves`), which `convoy rollout run --plan` takes. Reading the files and the plan's
//! JSON are use cases the console shares (`ops::plans`); this module is clap and printing.

use anyhow::{Context, Result};
use convoy_core::gates::GatePolicy;
use convoy_core::plan::{self, Coverage, Plan, PlanInput, PlanningPolicy, Status};
use convoy_core::release::ReleaseSpec;
use convoy_core::time::Timestamp;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::fleet_io;
use crate::ops::plans::{
    annotate_boot_critical, boot_critical_lines, bytes_text, duration_text, for_release,
    gate_notes, plan_json, rate_text, read_catalog, read_json,
};

use crate::ops::plans::read_section;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fleet file (`.json`).
    #[arg(long)]
    pub fleet: PathBuf,
    /// The release to plan: a JSON `ReleaseSpec` file.
    #[arg(long)]
    pub release: PathBuf,
    /// Other releases usable as prerequisites: JSON files, each one `ReleaseSpec` or an array
    /// of them. Repeatable.
    #[arg(long)]
    pub catalog: Vec<PathBuf>,
    /// Policy file (JSON with `"version"` and a `"planning"` section; other sections are
    /// ignored here).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The cache whose saved cohorts a query wave's `cohort:NAME` reads (default: $CONVOY_DB,
    /// else $XDG_DATA_HOME/convoy/convoy.db); opened only when a wave names one.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The moment the plan starts (RFC 3339); defaults to the clock.
    #[arg(long, value_parser = super::fleet::parse_time)]
    pub now: Option<Timestamp>,
    /// Seed for the canary and wave order: the same seed gives the same plan.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the plan as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let fleet = fleet_io::load_fleet(&args.fleet)
        .with_context(|| format!("loading the fleet {}", args.fleet.display()))?;
    let release: ReleaseSpec = read_json(&args.release)
        .with_context(|| format!("reading the release {}", args.release.display()))?;
    let mut catalog = Vec::new();
    for path in &args.catalog {
        catalog.extend(
            read_catalog(path)
                .with_context(|| format!("reading the catalog {}", path.display()))?,
        );
    }
    let (mut policy, gates): (PlanningPolicy, GatePolicy) = match &args.policy {
        Some(path) => (
            read_section(path, "planning")
                .with_context(|| format!("reading the policy {}", path.display()))?,
            read_section(path, "gates")
                .with_context(|| format!("reading the policy {}", path.display()))?,
        ),
        None => (PlanningPolicy::default(), GatePolicy::default()),
    };
    // A wave's `cohort:NAME` reads the saved cohort's query now: the plan is made from it.
    if crate::ops::cohorts::policy_needs_cache(&policy) {
        let path = crate::store::resolve_path(args.db.as_deref())?;
        let store = crate::store::Store::open_existing(&path).with_context(|| {
            format!(
                "a wave names a saved cohort: opening the cache {} for it",
                path.display()
            )
        })?;
        crate::ops::cohorts::fill_policy(&store, &mut policy).with_context(|| {
            format!("reading the policy's saved cohorts from {}", path.display())
        })?;
    }
    // A release that installs a bootloader or modem is planned with stricter defaults.
    let (policy, gates, boot) = for_release(&release, policy, gates);
    let now = args.now.unwrap_or_else(crate::now);
    let plan = plan::plan(&PlanInput {
        fleet: &fleet,
        release: &release,
        catalog: &catalog,
        now,
        seed: args.seed,
        policy: &policy,
    })
    .with_context(|| format!("planning release {}", release.id))?;
    let gate_notes = gate_notes(&policy, &gates);
    let out = if args.json {
        let mut value = plan_json(&plan, &fleet, &gates, &gate_notes)?;
        annotate_boot_critical(&mut value, boot.as_ref())?;
        let mut s = serde_json::to_string_pretty(&value).context("serialising the plan")?;
        s.push('\n');
        s
    } else {
        let mut text = render_text(&plan);
        if let Some(b) = &boot {
            text.push('\n');
            for line in boot_critical_lines(b) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text.push_str(&render_gates(&gates, &gate_notes)?);
        text
    };
    print!("{out}");
    Ok(())
}

/// The gates the plan carries, as text: every threshold, judged against the baseline of devices
/// not yet updated (docs/GATES.md).
fn render_gates(gates: &GatePolicy, notes: &[String]) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::from(
        "\nGates (each judged against the not-yet-updated baseline; see docs/GATES.md):\n",
    );
    let value = serde_json::to_value(gates).context("serialising the gates")?;
    if let Some(obj) = value.as_object() {
        for (key, v) in obj {
            let _ = writeln!(out, "  {key}: {v}");
        }
    }
    for note in notes {
        let _ = writeln!(out, "  warning: {note}");
    }
    Ok(out)
}

fn time_text(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339)
}

/// The plan for people.
pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    let e = &plan.eligibility;
    let _ = writeln!(
        s,
        "Plan for {} at {} (seed {}), {} per device",
        plan.release,
        plan.now,
        plan.seed,
        bytes_text(plan.download_bytes)
    );
    let _ = writeln!(
        s,
        "\nEligibility: {} devices, {} of a model the release is built for",
        e.devices, e.targeted
    );
    for c in &e.by_status {
        let _ = writeln!(s, "  {:<20} {:>9}", c.status.as_str(), c.devices);
    }
    if e.eligible_now_offline > 0 {
        let _ = writeln!(
            s,
            "  ({} eligible now are offline; they are offered it when they return)",
            e.eligible_now_offline
        );
    }
    let _ = writeln!(s, "\nReasons:");
    for r in &e.by_reason {
        let _ = writeln!(
            s,
            "  {:<20} {:>9}  {}",
            r.status.as_str(),
            r.devices,
            r.reason
        );
    }
    let _ = writeln!(s, "\nPrerequisite chains:");
    if plan.chains.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for c in &plan.chains {
        let _ = writeln!(
            s,
            "  {:>9} devices: {} -> {} ({} per device)",
            c.devices,
            c.releases.join(" -> "),
            plan.release,
            bytes_text(c.bytes_per_device)
        );
    }
    let k = &plan.canary;
    let _ = writeln!(
        s,
        "\nCanary: {} of {} asked, from {} candidates ({} critical at peak excluded, {} outside the canary depot); {} offline, {} far from their depot",
        k.devices.len(),
        k.target_size,
        k.candidates,
        k.excluded_critical_at_peak,
        k.excluded_outside_depot,
        k.offline,
        k.far_from_depot
    );
    let _ = writeln!(
        s,
        "  {:<18} {:<14} {:>8} {:>7} {:>9} {:>6}  coverage",
        "stratum", "value", "devices", "share", "eligible", "canary"
    );
    let mut minor = 0;
    for st in &k.strata {
        if st.coverage == Coverage::NotRequired {
            minor += 1;
            continue;
        }
        let cov = match &st.coverage {
            Coverage::Represented => "represented".to_owned(),
            Coverage::BelowFloor(why) => format!("BELOW FLOOR: {why}"),
            Coverage::Missing(why) => format!("MISSING: {why}"),
            Coverage::NotRequired => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:<18} {:<14} {:>8} {:>6.2}% {:>9} {:>6}  {cov}",
            st.attribute, st.value, st.devices, st.share_pct, st.eligible_now, st.canary
        );
    }
    if minor > 0 {
        let _ = writeln!(
            s,
            "  ({minor} strata below the meaningful share are not required; see --json)"
        );
    }
    let _ = writeln!(s, "  devices: {}", k.device_ids.join(" "));
    let _ = writeln!(s, "\nWaves:");
    let _ = writeln!(
        s,
        "  {:<28} {:>8} {:>7} {:<22} {:<22} {:>10} {:>9}  cohort",
        "wave", "devices", "soak", "first offer", "last offer", "bytes", "cost"
    );
    for w in &plan.waves {
        let _ = writeln!(
            s,
            "  {:<28} {:>8} {:>7} {:<22} {:<22} {:>10} {:>9.2}  {}{}",
            w.name,
            w.size,
            duration_text(w.soak_secs),
            time_text(w.timing.first_offer),
            time_text(w.timing.last_offer),
            bytes_text(w.bytes),
            w.data_cost,
            w.cohort,
            if w.waiting_on_conditions > 0 {
                format!(" ({} wait on conditions)", w.waiting_on_conditions)
            } else {
                String::new()
            }
        );
    }
    let sch = &plan.schedule;
    let _ = writeln!(s, "\nSchedule:");
    let _ = writeln!(s, "  rate: {}", rate_text(&sch.rate));
    if sch.windows.is_empty() {
        let _ = writeln!(s, "  windows: any time");
    }
    for w in &sch.windows {
        let _ = writeln!(s, "  window: {} {}-{} local", w.region, w.start, w.end);
    }
    for b in &sch.blackouts {
        let _ = writeln!(
            s,
            "  blackout: {} {} to {} ({})",
            b.region, b.from, b.until, b.reason
        );
    }
    for x in &sch.exceptions {
        let _ = writeln!(
            s,
            "  exception: {} {} to {} ({}): {} devices offered under it",
            x.region, x.from, x.until, x.reason, x.devices
        );
    }
    let _ = writeln!(
        s,
        "  first offer {}, last offer {}",
        time_text(sch.first_offer),
        time_text(sch.last_offer)
    );
    let _ = writeln!(s, "\nBandwidth:");
    let _ = writeln!(
        s,
        "  total {}, on metered links {} (cost {:.2} at {:.2} per GB)",
        bytes_text(sch.total_bytes),
        bytes_text(sch.metered_bytes),
        sch.data_cost,
        sch.data_price_per_gb
    );
    let _ = writeln!(
        s,
        "  peak {} per hour (cap {})",
        bytes_text(sch.peak_bytes_per_hour),
        sch.bandwidth_cap_bytes_per_hour
            .map_or_else(|| "none".to_owned(), bytes_text)
    );
    if !plan.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    let never = plan
        .eligibility
        .by_status
        .iter()
        .find(|c| c.status == Status::Never)
        .map_or(0, |c| c.devices);
    let _ = writeln!(
        s,
        "\n{} waves, {} devices never eligible (reasons above).",
        plan.waves.len(),
        never
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plans::{record_plan, stored_plan};
    use convoy_core::synth::{SynthOptions, generate};
    use std::path::Path;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn fixture_release() -> ReleaseSpec {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases/t300-fw-2.5.0.json");
        read_json(&path).expect("fixture release")
    }

    #[test]
    fn a_stored_plan_is_the_json_rollout_run_reads_with_an_audit_entry() {
        let fleet = generate(&SynthOptions {
            devices: 300,
            seed: 3,
            now: NOW,
        });
        let release = fixture_release();
        let policy = PlanningPolicy::default();
        let plan = plan::plan(&PlanInput {
            fleet: &fleet,
            release: &release,
            catalog: &[],
            now: NOW,
            seed: 1,
            policy: &policy,
        })
        .expect("plans");
        let gates = GatePolicy {
            min_stratum_devices: 9,
            ..GatePolicy::default()
        };
        let notes = gate_notes(&policy, &gates);
        assert_eq!(notes.len(), 1, "floor 5 is below 9: {notes:?}");
        let value = plan_json(&plan, &fleet, &gates, &notes).expect("json");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("c.db")).expect("store");
        let seq = record_plan(&store, "p-1", &release.id, &value, "console", NOW).expect("stored");
        assert_eq!(
            stored_plan(&store, "p-1").expect("read"),
            Some(value.clone())
        );
        assert_eq!(stored_plan(&store, "p-2").expect("read"), None);
        let entries = store.audit_entries(None).expect("audit");
        let last = entries.last().expect("an entry");
        assert_eq!(last.seq, seq);
        assert_eq!(last.action, "plan.save");
        let payload: serde_json::Value = serde_json::from_str(&last.payload).expect("payload");
        let devices: usize = plan
            .rollout_waves(&fleet)
            .iter()
            .map(|w| w.device_ids.len())
            .sum();
        assert!(devices > 0);
        assert_eq!(payload["devices"], devices);
        assert!(store.verify_audit().expect("verify").problem.is_none());
        // `convoy rollout run --plan FILE` reads the same JSON back: waves and gates.
        let file = dir.path().join("plan.json");
        std::fs::write(&file, serde_json::to_vec(&value).expect("bytes")).expect("write");
        let (waves, read_gates) = super::super::rollout::read_plan(&file).expect("reads");
        assert_eq!(waves, plan.rollout_waves(&fleet));
        assert_eq!(read_gates, Some(gates));
    }
}
