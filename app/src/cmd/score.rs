//! `convoy score`: CVSS base scores, risk scorecards for findings, the default scoring policy,
//! and a fleet's shared-fate clusters.
//!
//! All scoring happens in `convoy_core::{cvss, risk, cluster}`; reading the scoring policy and
//! the one-line summaries the console shares are `ops::findings`. This module reads files,
//! reads the clock when `--now` is not given, and prints.

use anyhow::{Context, Result};
use convoy_core::cluster::{self, ClusterOptions};
use convoy_core::cvss::Cvss;
use convoy_core::risk::{self, Finding, Scorecard, ScoringPolicy};
use convoy_core::time::Timestamp;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cmd::fleet::parse_time;
use crate::fleet_io;
use crate::ops::findings::{blast_radius_summary, cvss_headline, load_policy};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ScoreCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ScoreCommand {
    /// Base score and severity of a CVSS v3.0, v3.1 or v4.0 vector.
    Cvss(CvssArgs),
    /// Score a finding (JSON, see docs/RISK.md) against a fleet: points line by line, tier and
    /// recommendation.
    Finding(FindingArgs),
    /// Print the built-in scoring policy as a policy file, to copy and edit.
    Policy,
    /// List a fleet's shared-fate clusters (same model, firmware build, hw_rev, battery
    /// chemistry, link and carrier), largest first.
    Clusters(ClustersArgs),
}

#[derive(clap::Args, Debug)]
pub struct CvssArgs {
    /// The vector, e.g. `CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`.
    pub vector: String,
    /// Print `{"version", "base_score", "severity"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FindingArgs {
    /// The finding, as JSON.
    pub file: PathBuf,
    /// The fleet file to score against.
    #[arg(long)]
    pub fleet: PathBuf,
    /// A policy file; its `scoring` section replaces the built-in weights (missing keys keep
    /// their defaults).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The moment to judge reachability at (RFC 3339); defaults to the clock.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<Timestamp>,
    /// Print the whole scorecard as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ClustersArgs {
    /// The fleet file.
    #[arg(long)]
    pub fleet: PathBuf,
    /// Leave out clusters smaller than this.
    #[arg(long, default_value_t = 1)]
    pub min_devices: usize,
    /// Print at most this many clusters (0: all).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print the clusters as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match &args.command {
        ScoreCommand::Cvss(a) => cvss(a, &mut out),
        ScoreCommand::Finding(a) => finding(a, &mut out),
        ScoreCommand::Policy => {
            // A struct rather than `json!`, so that fields keep their documented order.
            #[derive(serde::Serialize)]
            struct PolicyFile {
                scoring: ScoringPolicy,
            }
            let file = PolicyFile {
                scoring: ScoringPolicy::default(),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&file)?)?;
            Ok(())
        }
        ScoreCommand::Clusters(a) => clusters(a, &mut out),
    }
}

fn cvss(args: &CvssArgs, out: &mut dyn Write) -> Result<()> {
    let cvss = Cvss::parse(&args.vector)
        .with_context(|| format!("scoring CVSS vector {:?}", args.vector))?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&cvss.summary())?)?;
    } else {
        writeln!(out, "{}", cvss_headline(&cvss))?;
        writeln!(out, "vector: {}", cvss.vector())?;
        for line in cvss.explain() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

fn load_finding(path: &Path) -> Result<Finding> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let finding: Finding = convoy_core::strict_json::from_str(&text)
        .with_context(|| format!("parsing finding JSON {}", path.display()))?;
    Ok(finding)
}

fn finding(args: &FindingArgs, out: &mut dyn Write) -> Result<()> {
    let finding = load_finding(&args.file)?;
    let policy = match &args.policy {
        Some(p) => load_policy(p)?,
        None => ScoringPolicy::default(),
    };
    let fleet = fleet_io::load_fleet(&args.fleet)
        .with_context(|| format!("loading the fleet {}", args.fleet.display()))?;
    let now = args.now.unwrap_or_else(crate::now);
    let card = risk::score(&finding, &fleet, &policy, now)
        .with_context(|| format!("scoring {}", args.file.display()))?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&card)?)?;
    } else {
        print_scorecard(
            out,
            &finding,
            &card,
            &args.fleet,
            args.policy.as_deref(),
            now,
        )?;
    }
    Ok(())
}

fn print_scorecard(
    out: &mut dyn Write,
    finding: &Finding,
    card: &Scorecard,
    fleet: &Path,
    policy: Option<&Path>,
    now: Timestamp,
) -> Result<()> {
    let br = &card.blast_radius;
    writeln!(out, "finding {}: {}", card.finding, finding.title)?;
    writeln!(
        out,
        "fleet {} ({} devices) at {now}, scoring policy {} format {} ({})",
        fleet.display(),
        br.fleet_devices,
        card.policy_digest,
        card.policy_version,
        policy.map_or_else(
            || "built-in default".to_owned(),
            |p| p.display().to_string()
        )
    )?;
    writeln!(out)?;
    writeln!(out, "{:>8}  {:<14}  detail", "points", "source")?;
    for line in &card.lines {
        writeln!(
            out,
            "{:>8.1}  {:<14}  {}",
            line.points, line.source, line.detail
        )?;
    }
    writeln!(out, "{:>8}", "--------")?;
    writeln!(
        out,
        "{:>8.1}  total = severity {:.1} × exposure {:.3}",
        card.points, card.severity_points, card.exposure_multiplier
    )?;
    writeln!(out)?;
    writeln!(out, "tier:           {}", card.tier)?;
    writeln!(out, "recommendation: {}", card.recommendation)?;
    writeln!(out, "reason:         {}", card.reason)?;
    writeln!(out)?;
    writeln!(out, "{}", blast_radius_summary(br))?;
    if !br.by_class.is_empty() {
        let classes: Vec<String> = br
            .by_class
            .iter()
            .map(|c| format!("{} {}", c.class, c.devices))
            .collect();
        writeln!(out, "by class: {}", classes.join(", "))?;
    }
    if !br.clusters.is_empty() {
        writeln!(
            out,
            "shared-fate clusters it concentrates in (affected / size, share of affected):"
        )?;
        for c in &br.clusters {
            writeln!(
                out,
                "  {:>6} / {:<6} {:>6.1}%  {}",
                c.affected,
                c.devices,
                c.share_of_affected * 100.0,
                c.key
            )?;
        }
    }
    Ok(())
}

fn clusters(args: &ClustersArgs, out: &mut dyn Write) -> Result<()> {
    let fleet = fleet_io::load_fleet(&args.fleet)
        .with_context(|| format!("loading the fleet {}", args.fleet.display()))?;
    let mut all = cluster::clusters(
        &fleet,
        &ClusterOptions {
            min_devices: args.min_devices,
        },
    );
    let total = all.len();
    if args.top > 0 {
        all.truncate(args.top);
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    } else {
        writeln!(
            out,
            "{total} shared-fate clusters of at least {} devices in {} devices; largest {}:",
            args.min_devices,
            fleet.len(),
            all.len()
        )?;
        for c in &all {
            writeln!(
                out,
                "  {:>7} {:>6.2}%  {}",
                c.devices,
                c.share * 100.0,
                c.key
            )?;
        }
    }
    Ok(())
}
