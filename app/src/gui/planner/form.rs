//! The planner's form: the editable part of the planning policy as typed (waves, rate limit,
//! maintenance windows, bandwidth cap, data price, canary size and seed), made from a policy
//! ([`form_of`]) and checked back into one ([`apply_form`]), naming the first bad field.
//!
//! A wave takes the policy's own cohort, a saved cohort of the cache or a fleet search
//! ([`WaveChoice`]); the last two become a query wave (`Cohort::Query`) whose `cohort:NAME`
//! terms are filled with the saved cohorts' searches given to [`apply_form`] (issue 19), so the
//! core plans from the searches actually used. An unknown cohort names the wave and the name.
//!
//! Plain code with no egui: the view ([`super::view`]) draws these fields, and the planner's
//! state re-plans when they change. Deliberately not here: the fields the form does not show
//! (blackouts, exceptions, criticality, strata, the gates), which come from the base policy.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use convoy_core::plan::policy::{Cohort, LocalTime, MaintenanceWindow, RateLimit, WaveSpec};
use convoy_core::plan::{self, PlanningPolicy};
use convoy_core::search::{Query, QueryError};

/// What a wave takes, as the form offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaveChoice {
    /// The policy's own cohort ([`WaveForm::cohort`]: the canary, a depot or region, a share,
    /// an attribute filter or everyone left).
    Policy,
    /// The cache's saved cohort of this name (`cohort:"NAME"`).
    Saved(String),
    /// The fleet search typed in [`WaveForm::query`] (`model:T300 hw_rev:C`).
    Search,
}

/// The search that names the saved cohort `name` (a name has no double quotes).
pub fn cohort_term(name: &str) -> String {
    format!("cohort:\"{name}\"")
}

/// The saved cohort a search names when it is nothing but `cohort:NAME` (or `cohort:"NAME"`).
pub fn saved_name_of(query: &str) -> Option<String> {
    let rest = query.trim().strip_prefix("cohort:")?;
    let name = match rest.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None if rest.contains(char::is_whitespace) => return None,
        None => rest,
    };
    (!name.is_empty() && !name.contains('"')).then(|| name.to_owned())
}

/// One wave of the policy as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveForm {
    pub name: String,
    /// The policy's cohort for this wave (a query wave's saved searches from the policy file
    /// are kept here).
    pub cohort: Cohort,
    /// What the wave takes: the policy's cohort, a saved cohort or a search.
    pub choice: WaveChoice,
    /// The search, when [`WaveChoice::Search`].
    pub query: String,
    /// Empty: no limit.
    pub max_devices: String,
    /// For a percent cohort only.
    pub pct: String,
    /// Empty: one operating cycle.
    pub soak_hours: String,
}

/// The rate limit as typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateForm {
    pub exponential: bool,
    /// Constant rate, or the ramp's start.
    pub per_minute: String,
    pub factor: String,
    pub every_devices: String,
    pub max_per_minute: String,
}

/// The editable part of the planning policy, as typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyForm {
    pub canary_size: String,
    pub seed: String,
    pub waves: Vec<WaveForm>,
    pub rate: RateForm,
    /// `22:00-06:00` for every region, or `eu-central 01:00-05:00; * 22:00-06:00`; empty: any
    /// time.
    pub windows: String,
    /// GB (10^9 bytes) per UTC clock hour; empty: no cap.
    pub cap_gb_per_hour: String,
    pub price_per_gb: String,
}

fn number_text(x: f64) -> String {
    // Whole numbers without a fraction, others as short as they round-trip.
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The form for `policy` and `seed`.
pub fn form_of(policy: &PlanningPolicy, seed: u64) -> PolicyForm {
    let rate = match &policy.rate {
        RateLimit::Constant { per_minute } => RateForm {
            exponential: false,
            per_minute: per_minute.to_string(),
            factor: "2".into(),
            every_devices: "1000".into(),
            max_per_minute: per_minute.to_string(),
        },
        RateLimit::Exponential {
            start_per_minute,
            factor,
            every_devices,
            max_per_minute,
        } => RateForm {
            exponential: true,
            per_minute: start_per_minute.to_string(),
            factor: number_text(*factor),
            every_devices: every_devices.to_string(),
            max_per_minute: max_per_minute.to_string(),
        },
    };
    PolicyForm {
        canary_size: policy.canary.size.to_string(),
        seed: seed.to_string(),
        waves: policy
            .waves
            .iter()
            .map(|w| WaveForm {
                name: w.name.clone(),
                pct: match w.cohort {
                    Cohort::Percent { pct } => number_text(pct),
                    _ => String::new(),
                },
                choice: match &w.cohort {
                    Cohort::Query { query, .. } => {
                        saved_name_of(query).map_or(WaveChoice::Search, WaveChoice::Saved)
                    }
                    _ => WaveChoice::Policy,
                },
                query: match &w.cohort {
                    Cohort::Query { query, .. } => query.clone(),
                    _ => String::new(),
                },
                cohort: w.cohort.clone(),
                max_devices: w.max_devices.map(|n| n.to_string()).unwrap_or_default(),
                soak_hours: w
                    .soak_secs
                    .map(|s| number_text(s as f64 / 3600.0))
                    .unwrap_or_default(),
            })
            .collect(),
        rate,
        windows: policy
            .windows
            .iter()
            .map(|w| format!("{} {}-{}", w.region, w.start, w.end))
            .collect::<Vec<_>>()
            .join("; "),
        cap_gb_per_hour: policy
            .bandwidth_cap_bytes_per_hour
            .map(|b| number_text(b as f64 / 1e9))
            .unwrap_or_default(),
        price_per_gb: number_text(policy.data_price_per_gb),
    }
}

/// A field of the planner's form that cannot become part of the policy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    /// The field's name in the form (wave fields are named after their wave).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FormError {
    FormError {
        field: field.into(),
        message: message.into(),
    }
}

fn parse_num<T: std::str::FromStr>(field: &str, text: &str, what: &str) -> Result<T, FormError> {
    text.trim()
        .parse()
        .map_err(|_| bad(field, format!("must be {what}, not {:?}", text.trim())))
}

fn parse_optional<T: std::str::FromStr>(
    field: &str,
    text: &str,
    what: &str,
) -> Result<Option<T>, FormError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_num(field, text, what).map(Some)
    }
}

/// Parses maintenance windows: entries separated by `;`, each `[REGION] HH:MM-HH:MM` (no region
/// means `*`, every region without its own).
pub fn parse_windows(text: &str) -> Result<Vec<MaintenanceWindow>, FormError> {
    const FIELD: &str = "Maintenance windows";
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (region, range) = match entry.rsplit_once(char::is_whitespace) {
                Some((region, range)) => (region.trim(), range),
                None => ("*", entry),
            };
            let (start, end) = range.split_once('-').ok_or_else(|| {
                bad(
                    FIELD,
                    format!("{entry:?} is not [REGION] HH:MM-HH:MM (e.g. 22:00-06:00)"),
                )
            })?;
            let time = |t: &str| t.parse::<LocalTime>().map_err(|e| bad(FIELD, e));
            Ok(MaintenanceWindow {
                region: region.to_owned(),
                start: time(start)?,
                end: time(end)?,
            })
        })
        .collect()
}

/// The query wave for `query` in wave `w`: its `cohort:NAME` terms read from the searches the
/// policy file gave the wave, else from `saved` (the cache's); only the names used are kept.
fn query_cohort(
    w: &WaveForm,
    query: &str,
    saved: &BTreeMap<String, String>,
) -> Result<Cohort, QueryError> {
    let empty = BTreeMap::new();
    let given = match &w.cohort {
        Cohort::Query { saved, .. } => saved,
        _ => &empty,
    };
    let find = |n: &str| given.get(n).or_else(|| saved.get(n)).cloned();
    let used = RefCell::new(BTreeSet::new());
    Query::parse_with(query, &|n| {
        used.borrow_mut().insert(n.to_owned());
        find(n)
    })?;
    Ok(Cohort::Query {
        query: query.to_owned(),
        saved: used
            .into_inner()
            .into_iter()
            .filter_map(|n| find(&n).map(|q| (n, q)))
            .collect(),
    })
}

/// The policy the form describes, on top of `base` (everything the form does not show comes
/// from it), and the seed; or the first bad field. `saved` is the cache's saved cohorts'
/// searches by name, for the waves that are a saved cohort or a search naming one.
pub fn apply_form(
    form: &PolicyForm,
    base: &PlanningPolicy,
    saved: &BTreeMap<String, String>,
) -> Result<(PlanningPolicy, u64), FormError> {
    let mut policy = base.clone();
    policy.canary.size = parse_num("Canary size", &form.canary_size, "a whole number")?;
    let seed = parse_num("Seed", &form.seed, "a whole number")?;
    let mut waves = Vec::with_capacity(form.waves.len());
    for w in &form.waves {
        let cohort = match (&w.choice, &w.cohort) {
            (WaveChoice::Saved(name), _) => query_cohort(w, &cohort_term(name), saved)
                .map_err(|e| bad(format!("{} saved cohort", w.name), e.why))?,
            (WaveChoice::Search, _) => {
                let field = format!("{} search", w.name);
                let query = w.query.trim();
                if query.is_empty() {
                    return Err(bad(
                        field,
                        "type a fleet search, for example model:T300 hw_rev:C",
                    ));
                }
                query_cohort(w, query, saved).map_err(|e| bad(field, e.to_string()))?
            }
            (WaveChoice::Policy, Cohort::Percent { .. }) => {
                let field = format!("{} percent", w.name);
                let pct: f64 = parse_num(&field, &w.pct, "a percentage")?;
                if !(pct > 0.0 && pct <= 100.0) {
                    return Err(bad(field, "must be above 0 and at most 100"));
                }
                Cohort::Percent { pct }
            }
            (WaveChoice::Policy, other) => other.clone(),
        };
        let soak_hours: Option<f64> = parse_optional(
            &format!("{} soak hours", w.name),
            &w.soak_hours,
            "a number of hours",
        )?;
        if let Some(h) = soak_hours
            && !(0.0..=8760.0).contains(&h)
        {
            return Err(bad(
                format!("{} soak hours", w.name),
                "must be between 0 and 8760 (a year)",
            ));
        }
        waves.push(WaveSpec {
            name: w.name.clone(),
            cohort,
            max_devices: parse_optional(
                &format!("{} max devices", w.name),
                &w.max_devices,
                "a whole number",
            )?,
            soak_secs: soak_hours.map(|h| (h * 3600.0).round() as u64),
        });
    }
    policy.waves = waves;
    let r = &form.rate;
    let per_minute: u32 = parse_num(
        if r.exponential {
            "Start per minute"
        } else {
            "Devices per minute"
        },
        &r.per_minute,
        "a whole number",
    )?;
    policy.rate = if r.exponential {
        RateLimit::Exponential {
            start_per_minute: per_minute,
            factor: parse_num("Ramp factor", &r.factor, "a number")?,
            every_devices: parse_num("Ramp every devices", &r.every_devices, "a whole number")?,
            max_per_minute: parse_num("Max per minute", &r.max_per_minute, "a whole number")?,
        }
    } else {
        RateLimit::Constant { per_minute }
    };
    policy.windows = parse_windows(&form.windows)?;
    policy.bandwidth_cap_bytes_per_hour = parse_optional::<f64>(
        "Bandwidth cap (GB per hour)",
        &form.cap_gb_per_hour,
        "a number",
    )?
    .map(|gb| {
        if gb > 0.0 {
            Ok((gb * 1e9).round() as u64)
        } else {
            Err(bad("Bandwidth cap (GB per hour)", "must be above 0"))
        }
    })
    .transpose()?;
    policy.data_price_per_gb =
        parse_optional::<f64>("Data price per GB", &form.price_per_gb, "a number")?.unwrap_or(0.0);
    policy.validate().map_err(|e| match e {
        plan::PlanError::Policy { field, why } => bad(field, why),
        other => bad("Policy", other.to_string()),
    })?;
    Ok((policy, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_form_gives_the_default_policy_back() {
        let policy = PlanningPolicy::default();
        let form = form_of(&policy, 7);
        let (back, seed) = apply_form(&form, &policy, &BTreeMap::new()).expect("valid");
        assert_eq!(back, policy);
        assert_eq!(seed, 7);
    }

    #[test]
    fn edits_reach_the_policy_and_bad_fields_are_named() {
        let policy = PlanningPolicy::default();
        let mut form = form_of(&policy, 1);
        form.canary_size = "30".into();
        form.waves[1].max_devices = "200".into();
        form.waves[1].soak_hours = "48".into();
        let pct = form
            .waves
            .iter()
            .position(|w| matches!(w.cohort, Cohort::Percent { .. }))
            .expect("a percent wave");
        form.waves[pct].pct = "25".into();
        form.windows = "22:00-06:00; eu-central 01:00-05:00".into();
        form.rate.exponential = false;
        form.rate.per_minute = "40".into();
        form.cap_gb_per_hour = "2.5".into();
        form.price_per_gb = "0.8".into();
        let (p, _) = apply_form(&form, &policy, &BTreeMap::new()).expect("valid");
        assert_eq!(p.canary.size, 30);
        assert_eq!(p.waves[1].max_devices, Some(200));
        assert_eq!(p.waves[1].soak_secs, Some(48 * 3600));
        assert_eq!(p.waves[pct].cohort, Cohort::Percent { pct: 25.0 });
        assert_eq!(p.rate, RateLimit::Constant { per_minute: 40 });
        assert_eq!(p.bandwidth_cap_bytes_per_hour, Some(2_500_000_000));
        assert_eq!(p.data_price_per_gb, 0.8);
        assert_eq!(p.windows.len(), 2);
        assert_eq!(p.windows[0].region, "*");
        assert_eq!(p.windows[1].region, "eu-central");
        assert_eq!(p.windows[1].start, LocalTime(60));
        // The form made from it reads the same.
        assert_eq!(
            form_of(&p, 1).windows,
            "* 22:00-06:00; eu-central 01:00-05:00"
        );
        let check = |edit: fn(&mut PolicyForm), field: &str| {
            let mut f = form_of(&policy, 1);
            edit(&mut f);
            let name = f.waves.get(1).map(|w| w.name.clone()).unwrap_or_default();
            let e = apply_form(&f, &policy, &BTreeMap::new()).expect_err(field);
            assert_eq!(e.field, field.replace("WAVE", &name), "{e}");
        };
        check(|f| f.canary_size = "many".into(), "Canary size");
        check(|f| f.waves[1].max_devices = "-3".into(), "WAVE max devices");
        check(|f| f.waves[1].soak_hours = "9999".into(), "WAVE soak hours");
        check(|f| f.windows = "22:00".into(), "Maintenance windows");
        check(|f| f.windows = "25:00-06:00".into(), "Maintenance windows");
        check(
            |f| f.cap_gb_per_hour = "0".into(),
            "Bandwidth cap (GB per hour)",
        );
        check(
            |f| {
                f.rate.exponential = false;
                f.rate.per_minute = "fast".into();
            },
            "Devices per minute",
        );
        check(|f| f.rate.per_minute = "fast".into(), "Start per minute");
    }

    #[test]
    fn a_wave_becomes_a_saved_cohort_or_a_search_and_an_unknown_name_is_named() {
        let policy = PlanningPolicy::default();
        let saved: BTreeMap<String, String> = [
            ("rev C vans".to_owned(), "model:T300 hw_rev:C".to_owned()),
            (
                "eu rev C".to_owned(),
                "cohort:\"rev C vans\" region:eu-*".to_owned(),
            ),
            ("unused".to_owned(), "model:T500".to_owned()),
        ]
        .into();
        let mut form = form_of(&policy, 1);
        form.waves[1].choice = WaveChoice::Saved("eu rev C".into());
        form.waves[2].choice = WaveChoice::Search;
        form.waves[2].query = " model:T500 -region:us-* ".into();
        let (p, _) = apply_form(&form, &policy, &saved).expect("valid");
        // Only the saved searches a wave uses go with it (the plan's wave text names them).
        assert_eq!(
            p.waves[1].cohort,
            Cohort::Query {
                query: "cohort:\"eu rev C\"".into(),
                saved: [
                    ("eu rev C".to_owned(), saved["eu rev C"].clone()),
                    ("rev C vans".to_owned(), saved["rev C vans"].clone()),
                ]
                .into(),
            }
        );
        assert_eq!(p.waves[2].cohort, Cohort::query("model:T500 -region:us-*"));
        // The other kinds are untouched, and the form made from the policy reads the same.
        assert_eq!(p.waves[0].cohort, Cohort::Canary);
        assert_eq!(p.waves[3].cohort, Cohort::Rest);
        let again = form_of(&p, 1);
        assert_eq!(again.waves[1].choice, WaveChoice::Saved("eu rev C".into()));
        assert_eq!(again.waves[2].choice, WaveChoice::Search);
        assert_eq!(apply_form(&again, &p, &BTreeMap::new()).expect("kept").0, p);

        let mut unknown = form_of(&policy, 1);
        unknown.waves[1].choice = WaveChoice::Saved("pilots".into());
        let e = apply_form(&unknown, &policy, &saved).expect_err("unknown");
        assert_eq!(e.field, "region saved cohort");
        assert_eq!(e.message, "there is no saved cohort named \"pilots\"");
        unknown.waves[1].choice = WaveChoice::Search;
        unknown.waves[1].query = "cohort:pilots".into();
        let e = apply_form(&unknown, &policy, &saved).expect_err("unknown");
        assert_eq!(e.field, "region search");
        assert!(
            e.message.contains("no saved cohort named \"pilots\""),
            "{e}"
        );
        unknown.waves[1].query = "  ".into();
        let e = apply_form(&unknown, &policy, &saved).expect_err("empty");
        assert!(e.message.contains("type a fleet search"), "{e}");

        assert_eq!(
            saved_name_of("cohort:\"rev C vans\""),
            Some("rev C vans".into())
        );
        assert_eq!(saved_name_of(" cohort:pilots "), Some("pilots".into()));
        assert_eq!(saved_name_of("cohort:pilots region:eu-*"), None);
        assert_eq!(saved_name_of("cohort:\"a\" -cohort:\"b\""), None);
        assert_eq!(saved_name_of("model:T300"), None);
        assert_eq!(
            saved_name_of(&cohort_term("rev C vans")),
            Some("rev C vans".into())
        );
    }
}
