//! `convoy metrics`: the rollout metrics of a cache (`Store::cache_metrics`, the same figures as
//! `GET /api/v1/metrics` and the console's Reports): means over every logged rollout, and time
//! to remediate counted from each finding's detection, broken down by the finding's
//! classification and the devices' model and region (issue 20).

use anyhow::Result;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::ops::plans::duration_text;
use crate::store::metrics::CacheMetrics;
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let store = Store::open_existing(&store::resolve_path(args.db.as_deref())?)?;
    let m = store.cache_metrics()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", text(&m));
    }
    Ok(())
}

fn secs_text(secs: f64) -> String {
    // Whole seconds: a mean is shown to the second.
    duration_text(secs.max(0.0).round() as u64)
}

/// The metrics for people.
pub fn text(m: &CacheMetrics) -> String {
    let mut s = String::new();
    let sum = &m.summary;
    let _ = writeln!(
        s,
        "Rollouts: {} ({} completed, {} rollbacks)",
        sum.rollouts, sum.completed, sum.rollback_count
    );
    let mean = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), secs_text);
    let _ = writeln!(
        s,
        "Mean time to remediate from rollout creation: {}",
        mean(sum.mean_time_to_remediate_secs)
    );
    let _ = writeln!(
        s,
        "Mean time to recover: {}; mean patch lead time: {}",
        mean(sum.mean_time_to_recover_secs),
        mean(sum.mean_patch_lead_time_secs)
    );
    let r = &m.remediation;
    let _ = writeln!(
        s,
        "\nTime to remediate from detection ({} rollouts naming a finding): mean {}",
        r.rollouts.len(),
        mean(r.mean_time_to_remediate_secs)
    );
    for x in &r.rollouts {
        let _ = writeln!(
            s,
            "  {:<24} finding {} ({}), detected {} (from {}): {}; {} devices remediated",
            x.rollout_id,
            x.finding_id,
            x.classification,
            x.detected_at,
            x.detected_from,
            x.time_to_remediate_secs
                .map_or_else(|| "not completed".to_owned(), |t| secs_text(t as f64)),
            x.devices_remediated
        );
    }
    if !r.by.is_empty() {
        let _ = writeln!(
            s,
            "  {:<15} {:<16} {:>8} {:>12} {:>12}",
            "by", "value", "devices", "mean", "max"
        );
    }
    for g in &r.by {
        let _ = writeln!(
            s,
            "  {:<15} {:<16} {:>8} {:>12} {:>12}",
            g.attribute,
            g.value,
            g.devices,
            secs_text(g.mean_secs),
            secs_text(g.max_secs as f64)
        );
    }
    for k in &m.skipped {
        let _ = writeln!(s, "skipped {}: {}", k.rollout_id, k.reason);
    }
    s
}
