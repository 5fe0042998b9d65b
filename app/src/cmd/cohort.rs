//! `convoy cohort`: saved cohorts, named fleet searches kept in the cache (`ops::cohorts`).
//! A saved cohort is read again at every use, so it picks up devices that match it later: use
//! it in the console's search box and in an exclusion as `cohort:NAME`.

use anyhow::Result;
use std::path::PathBuf;

use crate::ops::cohorts;
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: CohortCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CohortCommand {
    /// Save a fleet search under a name (replacing one of that name).
    Save {
        /// The cohort's name (letters, digits, spaces, `-`, `_`, `.`).
        name: String,
        /// The fleet search, as in the console (`model:T300 hw_rev:C region:eu-*`).
        query: String,
        /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// List the saved cohorts with how many devices of the cache match each now.
    List {
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a saved cohort.
    Delete {
        name: String,
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

pub fn run(args: &Args) -> Result<()> {
    let actor = store::audit::operator_actor();
    match &args.command {
        CohortCommand::Save { name, query, db } => {
            let store = Store::open(&store::resolve_path(db.as_deref())?)?;
            cohorts::save(&store, name, query, &actor, crate::now())?;
            let q = cohorts::parse(&store, &format!("cohort:\"{name}\""))?;
            let fleet = store.load_fleet()?;
            let n = fleet
                .devices
                .iter()
                .filter(|d| q.matches(d, &|_| None))
                .count();
            println!("saved cohort {name:?}: {query} ({n} devices match now)");
        }
        CohortCommand::List { db, json } => {
            let store = Store::open_existing(&store::resolve_path(db.as_deref())?)?;
            let fleet = store.load_fleet()?;
            let mut rows = Vec::new();
            for c in store.cohorts()? {
                let matching = cohorts::parse(&store, &c.query).map(|q| {
                    fleet
                        .devices
                        .iter()
                        .filter(|d| q.matches(d, &|_| None))
                        .count()
                });
                rows.push((c, matching));
            }
            if *json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(c, n)| {
                        serde_json::json!({
                            "name": c.name, "query": c.query, "created_by": c.created_by,
                            "created": c.created.to_string(),
                            "devices": n.as_ref().ok(),
                            "error": n.as_ref().err().map(|e| format!("{e:#}")),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                println!("no saved cohorts");
            } else {
                for (c, n) in rows {
                    let n = n.map_or_else(|e| format!("does not read: {e:#}"), |n| n.to_string());
                    println!("{:<24} {:>9}  {}", c.name, n, c.query);
                }
            }
        }
        CohortCommand::Delete { name, db } => {
            let store = Store::open_existing(&store::resolve_path(db.as_deref())?)?;
            cohorts::delete(&store, name, &actor, crate::now())?;
            println!("deleted cohort {name:?}");
        }
    }
    Ok(())
}
