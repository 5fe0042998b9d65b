//! A dispatch loop against a cache file, for the crash test (`tests/it/crash.rs`) to kill.
//!
//! `cargo run -p convoy --example store_crash_worker -- DB INBOX DECISIONS`
//!
//! Each round commits one decision (an audit entry and three commands, in one transaction) and
//! prints `decided N ID ID ID`; then it drains the outbox like a sender whose link is up:
//! append the command to INBOX (the devices' side, which dedupes by id), `mark_sent`, then
//! `mark_acked` and print `acked ID`. Lines are printed only after the transaction that they
//! report has committed, so everything printed must survive a SIGKILL. On restart it resumes
//! from what the cache says, never from memory. It stops after DECISIONS decisions and an
//! empty outbox. This is a test driver, not a real sender.

use anyhow::{Context, Result, bail};
use convoy::store::{AuditEntry, OutboxCommand, QueuedCommand, Store};
use convoy_core::time::Timestamp;
use std::io::Write;
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// "Sends" a command: one line appended to the inbox in a single write, so a kill never
/// leaves half a line.
fn deliver(inbox: &mut std::fs::File, cmd: &QueuedCommand) -> Result<()> {
    let line = format!("{} {} {}\n", cmd.id, cmd.device_id, cmd.payload);
    inbox
        .write_all(line.as_bytes())
        .context("writing the inbox")
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, inbox, decisions] = &args[..] else {
        bail!("usage: store_crash_worker DB INBOX DECISIONS");
    };
    let decisions: i64 = decisions.parse().context("DECISIONS must be a number")?;
    let mut store = Store::open(&PathBuf::from(db))?;
    let mut inbox = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(inbox)
        .with_context(|| format!("opening {inbox}"))?;
    let stdout = std::io::stdout();
    // Resume after the last committed decision.
    let done: i64 = rusqlite::Connection::open(store.path())?.query_row(
        "SELECT count(*) FROM audit WHERE action = 'dispatch.offer'",
        [],
        |r| r.get(0),
    )?;
    let now = Timestamp::from_secs(1_795_392_000);
    for n in done + 1..=decisions + 1 {
        if n <= decisions {
            let commands: Vec<OutboxCommand> = (0..3)
                .map(|i| OutboxCommand {
                    device_id: format!("DEV-{:03}", (n * 7 + i) % 50),
                    kind: "offer".to_owned(),
                    payload: serde_json::json!({ "decision": n, "part": i }),
                })
                .collect();
            let decision = store.commit_decision(
                &AuditEntry {
                    time: now.plus_secs(n),
                    actor: "engine".to_owned(),
                    action: "dispatch.offer".to_owned(),
                    payload: serde_json::json!({ "decision": n }),
                },
                &commands,
            )?;
            writeln!(
                stdout.lock(),
                "decided {n} {}",
                decision.command_ids.join(" ")
            )?;
        }
        // The link is up: send what is not acknowledged yet, oldest first.
        for cmd in store.pending(4)? {
            deliver(&mut inbox, &cmd)?;
            store.mark_sent(&cmd.id, now.plus_secs(n))?;
            if store.mark_acked(&cmd.id, now.plus_secs(n))? {
                writeln!(stdout.lock(), "acked {}", cmd.id)?;
            }
        }
    }
    // Drain what is left.
    loop {
        let pending = store.pending(16)?;
        if pending.is_empty() {
            break;
        }
        for cmd in pending {
            deliver(&mut inbox, &cmd)?;
            store.mark_sent(&cmd.id, now)?;
            if store.mark_acked(&cmd.id, now)? {
                writeln!(stdout.lock(), "acked {}", cmd.id)?;
            }
        }
    }
    writeln!(stdout.lock(), "finished")?;
    Ok(())
}
