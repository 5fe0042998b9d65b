//! Saved cohorts: named fleet searches kept in the cache (`store::cohorts`), read again at
//! every use so they pick up devices that match later (dynamic groups). The console's search
//! box, an engine's exclusion (`exclude` with `cohort:NAME`) and `convoy cohort` all use them
//! through here, and so does a planner wave (`convoy_core::plan::policy::Cohort::Query`):
//! [`fill_policy`] copies the queries of the saved cohorts a wave names into the wave, so the
//! core plans from the queries actually used (it keeps no saved cohorts itself).
//!
//! The rules: a name is 1 to 64 characters of letters, digits, spaces, `-`, `_` and `.`, not
//! starting with `-`; a query must read ([`convoy_core::search::Query::parse_with`], with the
//! other saved cohorts) and must not name the cohort being saved.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use convoy_core::plan::PlanningPolicy;
use convoy_core::plan::policy::Cohort;
use convoy_core::search::Query;
use convoy_core::time::Timestamp;

use crate::store::Store;
use crate::store::cohorts::SavedCohort;

/// The longest cohort name.
pub const MAX_NAME: usize = 64;
/// The longest saved query.
pub const MAX_QUERY: usize = 2_000;

/// Why `name` cannot name a cohort, or `None` when it can.
pub fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("a cohort needs a name".to_owned());
    }
    if name.chars().count() > MAX_NAME {
        return Some(format!("a cohort name has at most {MAX_NAME} characters"));
    }
    if name.starts_with('-') || name != name.trim() {
        return Some(format!(
            "cohort name {name:?} starts with `-` or a space, or ends with one"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
    {
        return Some(format!(
            "cohort name {name:?} has {c:?}: use letters, digits, spaces, `-`, `_` and `.`"
        ));
    }
    None
}

/// Every saved cohort's query by name, for [`Query::parse_with`].
pub fn lookup_table(store: &Store) -> Result<BTreeMap<String, String>> {
    Ok(store
        .cohorts()?
        .into_iter()
        .map(|c| (c.name, c.query))
        .collect())
}

/// Reads `text` with the cache's saved cohorts.
pub fn parse(store: &Store, text: &str) -> Result<Query> {
    let table = lookup_table(store)?;
    Query::parse_with(text, &|n| table.get(n).cloned())
        .map_err(|e| anyhow::anyhow!("the search {text:?} does not read: {e}"))
}

/// Saves `query` as the cohort `name` (replacing one of that name), after checking both.
pub fn save(store: &Store, name: &str, query: &str, by: &str, now: Timestamp) -> Result<()> {
    if let Some(why) = name_problem(name) {
        bail!("{why}");
    }
    let query = query.trim();
    if query.is_empty() {
        bail!("cohort {name:?} needs a search (for example model:T300 hw_rev:C)");
    }
    if query.len() > MAX_QUERY {
        bail!("cohort {name:?}: a saved search has at most {MAX_QUERY} bytes");
    }
    let mut table = lookup_table(store)?;
    // Checked as it will be read: with itself in the table, so naming itself is a loop.
    table.insert(name.to_owned(), query.to_owned());
    Query::parse_with(query, &|n| table.get(n).cloned())
        .map_err(|e| anyhow::anyhow!("cohort {name:?}: the search does not read: {e}"))?;
    store.save_cohort(&SavedCohort {
        name: name.to_owned(),
        query: query.to_owned(),
        created_by: by.to_owned(),
        created: now,
    })
}

/// Whether a wave of `policy` names a saved cohort (`cohort:NAME`) its own `saved` queries do
/// not give, so planning it needs the cache's ([`fill_policy`]).
pub fn policy_needs_cache(policy: &PlanningPolicy) -> bool {
    policy.waves.iter().any(|w| match &w.cohort {
        Cohort::Query { query, saved } => {
            let missing = RefCell::new(false);
            // Every name answers an empty query here: only whether one is missing matters.
            let _ = Query::parse_with(query, &|n| {
                if !saved.contains_key(n) {
                    *missing.borrow_mut() = true;
                }
                Some(saved.get(n).cloned().unwrap_or_default())
            });
            missing.into_inner()
        }
        _ => false,
    })
}

/// Fills each query wave's `saved` with the queries of the saved cohorts it names (and those
/// they name), from `table` ([`lookup_table`]); queries the policy file already gives are
/// kept. An unknown cohort, or a query that does not read, is an error naming the wave.
pub fn fill_policy_from(
    table: &BTreeMap<String, String>,
    policy: &mut PlanningPolicy,
) -> Result<()> {
    for (i, w) in policy.waves.iter_mut().enumerate() {
        let Cohort::Query { query, saved } = &mut w.cohort else {
            continue;
        };
        let used = RefCell::new(BTreeSet::new());
        Query::parse_with(query, &|n| {
            used.borrow_mut().insert(n.to_owned());
            saved.get(n).or_else(|| table.get(n)).cloned()
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "invalid planning policy field waves[{i}].cohort.query: wave {:?}: {e}",
                w.name
            )
        })?;
        for n in used.into_inner() {
            if !saved.contains_key(&n)
                && let Some(q) = table.get(&n)
            {
                saved.insert(n, q.clone());
            }
        }
    }
    Ok(())
}

/// [`fill_policy_from`] with the cache's saved cohorts.
pub fn fill_policy(store: &Store, policy: &mut PlanningPolicy) -> Result<()> {
    fill_policy_from(&lookup_table(store)?, policy)
}

/// Deletes the cohort `name`; an error when there is none. A search that names it stops
/// reading (and says so) rather than silently matching something else.
pub fn delete(store: &Store, name: &str, by: &str, now: Timestamp) -> Result<()> {
    if !store.delete_cohort(name, by, now)? {
        bail!("there is no saved cohort named {name:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohorts_are_saved_checked_and_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("c.db")).expect("cache");
        let now = Timestamp::from_secs(1_800_000_000);
        save(&store, "rev C vans", "model:T300 hw_rev:C", "dana", now).expect("saved");
        save(
            &store,
            "eu rev C",
            "cohort:\"rev C vans\" region:eu-*",
            "dana",
            now,
        )
        .expect("a cohort may name another");
        for (name, query, why) in [
            ("", "model:T300", "needs a name"),
            ("-x", "model:T300", "starts with `-`"),
            ("a;b", "model:T300", "has ';'"),
            ("ok", "  ", "needs a search"),
            ("ok", "firmware:<", "does not read"),
            ("self", "cohort:self", "more than 8 deep"),
            ("ok", "cohort:nobody", "no saved cohort named"),
        ] {
            let err = save(&store, name, query, "dana", now).expect_err(name);
            assert!(err.to_string().contains(why), "{name}: {err}");
        }
        let names: Vec<String> = store
            .cohorts()
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["eu rev C", "rev C vans"]);
        assert!(parse(&store, "cohort:\"eu rev C\"").is_ok());
        delete(&store, "rev C vans", "dana", now).expect("deleted");
        let err = parse(&store, "cohort:\"eu rev C\"").expect_err("its cohort is gone");
        assert!(err.to_string().contains("no saved cohort"), "{err}");
        assert!(delete(&store, "rev C vans", "dana", now).is_err());
    }

    #[test]
    fn query_waves_get_the_saved_queries_they_name() {
        use convoy_core::plan::policy::WaveSpec;
        let table: BTreeMap<String, String> = [
            ("rev C".to_owned(), "model:T300 hw_rev:C".to_owned()),
            (
                "eu rev C".to_owned(),
                "cohort:\"rev C\" region:eu-*".to_owned(),
            ),
            ("unused".to_owned(), "model:T500".to_owned()),
        ]
        .into();
        let mut policy = PlanningPolicy {
            waves: vec![
                WaveSpec::new("canary", Cohort::Canary),
                WaveSpec::new("eu", Cohort::query("cohort:\"eu rev C\" -depot:x")),
                WaveSpec::new("plain", Cohort::query("model:T500")),
            ],
            ..PlanningPolicy::default()
        };
        assert!(policy_needs_cache(&policy));
        fill_policy_from(&table, &mut policy).expect("filled");
        assert!(!policy_needs_cache(&policy));
        let Cohort::Query { saved, .. } = &policy.waves[1].cohort else {
            panic!("still a query wave");
        };
        let names: Vec<&str> = saved.keys().map(String::as_str).collect();
        assert_eq!(names, ["eu rev C", "rev C"]);
        assert_eq!(policy.waves[2].cohort, Cohort::query("model:T500"));
        policy.validate().expect("a filled policy validates");

        let mut unknown = PlanningPolicy {
            waves: vec![WaveSpec::new("pilots", Cohort::query("cohort:pilots"))],
            ..PlanningPolicy::default()
        };
        let err = fill_policy_from(&table, &mut unknown).expect_err("unknown cohort");
        let text = err.to_string();
        assert!(text.contains("waves[0].cohort.query"), "{text}");
        assert!(text.contains("no saved cohort named \"pilots\""), "{text}");
    }
}
