//! Saved cohorts: named fleet searches kept in the cache (`store::cohorts`), read again at
//! every use so they pick up devices that match later (dynamic groups). The console's search
//! box, an engine's exclusion (`exclude` with `cohort:NAME`) and `convoy cohort` all use them
//! through here.
//!
//! The rules: a name is 1 to 64 characters of letters, digits, spaces, `-`, `_` and `.`, not
//! starting with `-`; a query must read ([`convoy_core::search::Query::parse_with`], with the
//! other saved cohorts) and must not name the cohort being saved.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
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
}
