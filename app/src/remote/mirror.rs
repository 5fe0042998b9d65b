//! The mirror: keeps the console's copy (a fleet cache like any other) in step with the
//! server, and wakes on the server's event stream.
//!
//! A sync pass reads the rollouts list (which also tells whether the server answers), sends the
//! queued pauses, fetches the fleet when due, then the timeline events and log pages the copy
//! lacks; every answer is checked whole before anything of it is written, so a bad answer
//! leaves the copy as it was and the error names the endpoint and the field.
//!
//! Deliberately not here: what the console reads from the copy (its observer does that when
//! told the copy changed), and device histories, telemetry and the audit trail, which are not
//! mirrored.

use anyhow::{Context, Result};
use convoy_core::fleet::Fleet;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::client::{Api, CALL_TIMEOUT, CallError, Endpoint, FLEET_TIMEOUT, parse_answer, segment};
use super::steer::RemoteSteer;
use super::{FLEET_REFRESH, MIN_PASS, RETRY, ROLLOUTS_COPIED, RemoteEvent, Shared, queue};
use crate::link::api_wire::{self as wire, PREFIX};
use crate::store::Store;

/// Log events asked for per page.
const LOG_PAGE: usize = 5_000;

/// The newest seq of `rollout_id`'s timeline in the copy (0 when none).
fn copy_timeline_seq(store: &Store, rollout_id: &str) -> Result<i64, String> {
    store
        .newest_timeline_seq(rollout_id)
        .map_err(|e| format!("the copy: {e:#}"))
}

/// The length of `rollout_id`'s log in the copy (its seqs run from 0 without gaps).
fn copy_log_len(store: &Store, rollout_id: &str) -> Result<i64, String> {
    store
        .rollout_log_len(rollout_id)
        .map_err(|e| format!("the copy: {e:#}"))
}

/// An answer about another rollout than the one asked for is malformed (naming the field).
fn the_rollout_asked_for(endpoint: &str, asked: &str, answered: &str) -> Result<(), CallError> {
    if answered == asked {
        return Ok(());
    }
    Err(CallError::Malformed(format!(
        "{endpoint}: field rollout_id is {answered:?}, not the rollout asked for ({asked})"
    )))
}

/// Adds the events of a timeline answer (`GET /rollouts/{rollout_id}/timeline?after=SEQ`) to
/// the copy, in one transaction, after checking all of them: they must be this rollout's, follow
/// the copy's newest seq without a gap, and have readable times. Returns how many were added.
/// A bad answer changes nothing and the error names the endpoint and the field.
pub fn apply_timeline(
    store: &mut Store,
    rollout_id: &str,
    endpoint: &str,
    bytes: &[u8],
) -> Result<usize, CallError> {
    let answer: wire::Timeline = parse_answer(endpoint, bytes)?;
    let bad = |text: String| CallError::Malformed(format!("{endpoint}: {text}"));
    the_rollout_asked_for(endpoint, rollout_id, &answer.rollout_id)?;
    let newest = copy_timeline_seq(store, rollout_id).map_err(CallError::Malformed)?;
    let mut rows = Vec::new();
    for (i, e) in answer.events.iter().enumerate() {
        if e.seq <= newest {
            continue; // Already in the copy (an answer to an older `after`).
        }
        let expected = newest + 1 + i64::try_from(rows.len()).unwrap_or(i64::MAX);
        if e.seq != expected {
            return Err(bad(format!(
                "field events[{i}].seq is {}, but the copy expects {expected} (a gap)",
                e.seq
            )));
        }
        rows.push(e);
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let events: Vec<crate::store::Event> = rows
        .iter()
        .map(|e| crate::store::Event {
            rollout_id: rollout_id.to_owned(),
            seq: e.seq,
            time: e.time,
            kind: e.kind.clone(),
            cause: e.cause.clone(),
            payload: e.payload.clone(),
        })
        .collect();
    store
        .copy_timeline_events(rollout_id, &events)
        .map_err(|e| {
            CallError::Malformed(format!(
                "writing the timeline of {rollout_id} to the copy {}: {e:#}",
                store.path().display()
            ))
        })?;
    Ok(rows.len())
}

/// Adds one page of a log answer (`GET /rollouts/{rollout_id}/log?after=SEQ`) to the copy, in
/// one transaction, after checking that it is this rollout's and starts where the copy's log
/// ends. Returns (events added, whether more follow). A bad answer changes nothing.
pub fn apply_log(
    store: &mut Store,
    rollout_id: &str,
    endpoint: &str,
    bytes: &[u8],
) -> Result<(usize, bool), CallError> {
    let answer: wire::LogPageIn = parse_answer(endpoint, bytes)?;
    let bad = |text: String| CallError::Malformed(format!("{endpoint}: {text}"));
    the_rollout_asked_for(endpoint, rollout_id, &answer.rollout_id)?;
    let len = copy_log_len(store, rollout_id).map_err(CallError::Malformed)?;
    if answer.first_seq != len {
        return Err(bad(format!(
            "field first_seq is {}, but the copy's log of {rollout_id} ends before {len}",
            answer.first_seq
        )));
    }
    let first = usize::try_from(len).unwrap_or(0);
    store
        .append_rollout_log(rollout_id, first, &answer.events)
        .map_err(|e| {
            CallError::Malformed(format!(
                "writing the log of {rollout_id} to the copy {}: {e:#}",
                store.path().display()
            ))
        })?;
    Ok((answer.events.len(), answer.more))
}

/// Whether the copy's timeline of `rollout_id` has ended (completed, rolled back, aborted);
/// false when it cannot be read, so that its log is read again.
fn has_ended(store: &Store, rollout_id: &str) -> bool {
    store
        .rollout_record(rollout_id)
        .ok()
        .and_then(|entries| convoy_core::comms::story(rollout_id, &entries).ok())
        .is_some_and(|story| story.ending.is_some())
}

/// The mirror's memory between passes.
#[derive(Default)]
struct Mirror {
    /// A hash of the fleet the copy holds (as `GET /fleet/export` writes it).
    fleet_hash: Option<u64>,
    fleet_at: Option<Instant>,
    /// Rollouts whose log was read this session, and whether they had ended then.
    logs_read: HashMap<String, bool>,
    /// The last failure reported, so that a failure repeated every pass is reported once.
    last_failure: Option<String>,
    /// The rollouts the last pass could not copy, as reported.
    skipped: Option<String>,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The fleet the copy holds, and its hash as the server would write it.
fn copy_fleet(store: &Store) -> Result<(Fleet, u64)> {
    let fleet = store.load_fleet()?;
    let mut bytes = Vec::new();
    crate::fleet_io::write_json(&mut bytes, &fleet)?;
    Ok((fleet, hash_bytes(&bytes)))
}

/// One sync pass: the rollouts list (which tells whether the server answers), the queued
/// pauses, the fleet when due, the new timeline events and log pages. True if the copy changed.
fn sync_pass(
    api: &Api,
    shared: &Shared,
    store: &mut Store,
    mirror: &mut Mirror,
) -> Result<bool, CallError> {
    let list = api.get("/rollouts", CALL_TIMEOUT);
    shared.saw(&list);
    let list: Vec<wire::RolloutRow> =
        parse_answer(&Api::endpoint_name("GET", "/rollouts"), &list?)?;
    let unknown_who = shared.lock().who.is_none();
    if unknown_who
        && let Ok(bytes) = api.get("/whoami", CALL_TIMEOUT)
        && let Ok(w) = parse_answer::<wire::WhoAmI>(&Api::endpoint_name("GET", "/whoami"), &bytes)
    {
        shared.lock().who = Some(format!("{} ({})", w.operator, w.role));
        shared.report(RemoteEvent::Engine(shared.engine_note()));
    }
    queue::send_queued(api, shared)?;
    let mut changed = false;
    let fleet_due = mirror
        .fleet_at
        .is_none_or(|at| at.elapsed() >= FLEET_REFRESH);
    if fleet_due {
        let endpoint = &Api::endpoint_name("GET", "/fleet/export");
        let bytes = api.get("/fleet/export", FLEET_TIMEOUT);
        shared.saw(&bytes);
        let bytes = bytes?;
        let hash = hash_bytes(&bytes);
        if mirror.fleet_hash != Some(hash) {
            let fleet: Fleet = parse_answer(endpoint, &bytes)?;
            store.replace_fleet(&fleet, None).map_err(|e| {
                CallError::Malformed(format!(
                    "writing the server's fleet to the copy {}: {e:#}",
                    store.path().display()
                ))
            })?;
            mirror.fleet_hash = Some(hash);
            shared.report(RemoteEvent::FleetLoaded {
                fleet,
                copy: shared.copy.clone(),
            });
            shared.report(RemoteEvent::Stage(String::new()));
        }
        mirror.fleet_at = Some(Instant::now());
    }
    let mut newest = list;
    newest.sort_by(|a, b| {
        b.last_time
            .cmp(&a.last_time)
            .then(a.rollout_id.cmp(&b.rollout_id))
    });
    newest.truncate(ROLLOUTS_COPIED);
    // A rollout that cannot be copied is skipped with its reason; the others are copied, and
    // only an unreachable server ends the pass.
    let mut skipped: Vec<String> = Vec::new();
    for row in &newest {
        let id = &row.rollout_id;
        let copied = (|| -> Result<bool, CallError> {
            let have = copy_timeline_seq(store, id).map_err(CallError::Malformed)?;
            if i64::try_from(row.events).unwrap_or(i64::MAX) <= have {
                return Ok(false);
            }
            let path = format!("/rollouts/{}/timeline?after={have}", segment(id));
            let bytes = api.get(&path, CALL_TIMEOUT);
            shared.saw(&bytes);
            let added = apply_timeline(store, id, &Api::endpoint_name("GET", &path), &bytes?)?;
            Ok(added > 0)
        })();
        match copied {
            Ok(added) => changed |= added,
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => skipped.push(format!("the timeline of {id}: {e}")),
        }
    }
    // Logs: of every rollout still running, and once per session of one that ended (its last
    // samples may have come while this console was away).
    for row in &newest {
        let id = &row.rollout_id;
        let is_ended = has_ended(store, id);
        if mirror.logs_read.get(id) == Some(&true) {
            continue;
        }
        let copied = (|| -> Result<bool, CallError> {
            let mut changed = false;
            loop {
                let len = copy_log_len(store, id).map_err(CallError::Malformed)?;
                let path = if len == 0 {
                    format!("/rollouts/{}/log?limit={LOG_PAGE}", segment(id))
                } else {
                    format!(
                        "/rollouts/{}/log?after={}&limit={LOG_PAGE}",
                        segment(id),
                        len - 1
                    )
                };
                let bytes = api.get(&path, CALL_TIMEOUT);
                shared.saw(&bytes);
                let (added, more) = match bytes {
                    Ok(bytes) => apply_log(store, id, &Api::endpoint_name("GET", &path), &bytes)?,
                    // A rollout with no log on the server (recorded by hand, or before schema v6).
                    Err(CallError::Refused { status: 404, .. }) => (0, false),
                    Err(e) => return Err(e),
                };
                changed |= added > 0;
                if !more {
                    break;
                }
            }
            Ok(changed)
        })();
        match copied {
            Ok(added) => {
                changed |= added;
                mirror.logs_read.insert(id.clone(), is_ended);
            }
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => skipped.push(format!("the engine log of {id}: {e}")),
        }
    }
    if skipped.is_empty() {
        mirror.skipped = None;
    } else {
        let words = format!(
            "the copy of {} is not complete: {}",
            shared.endpoint.server,
            skipped.join("; ")
        );
        // Reported once, not at every pass.
        if mirror.skipped.as_deref() != Some(words.as_str()) {
            shared.report(RemoteEvent::Failed(words.clone()));
            mirror.skipped = Some(words);
        }
    }
    Ok(changed)
}

/// The mirror thread: the copy first (offline it is all there is), then sync passes, woken by
/// the event stream or the poll, until the console goes away.
pub(super) fn run_mirror(
    shared: &Arc<Shared>,
    owner: &Weak<RemoteSteer>,
    wake: &std::sync::mpsc::Receiver<()>,
    poll: Duration,
) -> Result<()> {
    let api = shared.endpoint.api()?;
    let mut store = Store::open(&shared.copy)?;
    let mut mirror = Mirror::default();
    let (fleet, hash) = copy_fleet(&store)
        .with_context(|| format!("loading the copy {}", shared.copy.display()))?;
    let synced = shared.lock().copy.synced_at.is_some();
    if synced || !fleet.devices.is_empty() {
        mirror.fleet_hash = Some(hash);
        shared.report(RemoteEvent::FleetLoaded {
            fleet,
            copy: shared.copy.clone(),
        });
        shared.report(RemoteEvent::Stage(String::new()));
        shared.copy_changed(&store);
    } else {
        shared.report(RemoteEvent::Stage(format!(
            "fetching the fleet from {}",
            shared.endpoint.server
        )));
    }
    loop {
        if owner.upgrade().is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = sync_pass(&api, shared, &mut store, &mut mirror);
        let up = match outcome {
            Ok(changed) => {
                mirror.last_failure = None;
                let now = crate::now().secs();
                // Saved when its minute changes: the status bar says HH:MM.
                let minute_changed = {
                    let mut s = shared.lock();
                    let before = s.copy.synced_at.replace(now);
                    before.is_none_or(|b| b / 60 != now / 60)
                };
                if minute_changed && let Err(e) = shared.save_copy_state() {
                    shared.report(RemoteEvent::Failed(format!("{e:#}")));
                }
                if changed && !shared.copy_changed(&store) {
                    return Ok(());
                }
                true
            }
            Err(CallError::Unreachable { .. }) => {
                // Reconnecting fetches the fleet again: it may have changed meanwhile.
                mirror.fleet_at = None;
                false
            }
            Err(e) => {
                let text = format!("syncing the copy from {}: {e}", shared.endpoint.server);
                if mirror.last_failure.as_ref() != Some(&text) {
                    mirror.last_failure = Some(text.clone());
                    if !shared.report(RemoteEvent::Failed(text)) {
                        return Ok(());
                    }
                }
                true
            }
        };
        let wait = if up { poll } else { RETRY };
        match wake.recv_timeout(wait) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        // A burst of events is one pass.
        std::thread::sleep(MIN_PASS.saturating_sub(started.elapsed()));
        while wake.try_recv().is_ok() {}
    }
}

/// Reads `GET /events` and wakes the mirror on every event (and on every (re)connection, so
/// that what happened while the stream was down is fetched), reconnecting after [`RETRY`].
pub(super) async fn follow_events(endpoint: Endpoint, shared: Weak<Shared>) {
    let Ok(client) = endpoint.client() else {
        return; // The mirror reports the same error and polls.
    };
    let url = format!("{}{PREFIX}/events", endpoint.server);
    loop {
        let Some(s) = shared.upgrade() else { return };
        drop(s);
        if let Ok(mut response) = client.get(&url).bearer_auth(&endpoint.token).send().await
            && response.status().is_success()
        {
            while let Ok(Some(chunk)) = response.chunk().await {
                let Some(s) = shared.upgrade() else { return };
                // Keep-alive comments alone are not news.
                let text = String::from_utf8_lossy(&chunk);
                if text.contains("event:") || text.contains(": connected") {
                    s.wake();
                }
            }
        }
        if let Some(s) = shared.upgrade() {
            s.wake();
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("copy.db")).expect("a new copy");
        (dir, store)
    }

    fn timeline_rows(store: &Store) -> Vec<(i64, String)> {
        store
            .timeline("r1")
            .expect("timeline")
            .into_iter()
            .map(|e| (e.seq, e.kind))
            .collect()
    }

    const EP: &str = "GET /api/v1/rollouts/r1/timeline?after=0";

    fn event(seq: i64, time: &str, kind: &str) -> serde_json::Value {
        serde_json::json!({"rollout_id": "r1", "seq": seq, "time": time, "kind": kind,
            "cause": "timer", "payload": "{}"})
    }

    #[test]
    fn a_timeline_is_added_in_order_and_a_repeated_answer_adds_nothing() {
        let (_dir, mut store) = copy();
        let body = serde_json::json!({"rollout_id": "r1", "events": [
            event(1, "2027-01-15T08:00:00Z", "rollout.created"),
            event(2, "2027-01-15T08:01:00Z", "wave.started"),
        ]})
        .to_string();
        assert_eq!(
            apply_timeline(&mut store, "r1", EP, body.as_bytes()).expect("applied"),
            2
        );
        assert_eq!(
            apply_timeline(&mut store, "r1", EP, body.as_bytes()).expect("again"),
            0
        );
        assert_eq!(
            timeline_rows(&store),
            vec![
                (1, "rollout.created".to_owned()),
                (2, "wave.started".to_owned())
            ]
        );
    }

    /// A malformed answer is an error naming the endpoint and the field, and the copy keeps
    /// what it had: nothing of the bad answer is written, not even its good events.
    #[test]
    fn a_malformed_answer_names_the_endpoint_and_field_and_leaves_the_copy_as_it_was() {
        let (_dir, mut store) = copy();
        let good = serde_json::json!({"rollout_id": "r1", "events": [
            event(1, "2027-01-15T08:00:00Z", "rollout.created"),
        ]})
        .to_string();
        apply_timeline(&mut store, "r1", EP, good.as_bytes()).expect("applied");
        let before = timeline_rows(&store);
        let check = |store: &mut Store, body: &str, words: &[&str]| {
            let err = apply_timeline(store, "r1", EP, body.as_bytes()).expect_err(body);
            let text = err.to_string();
            assert!(matches!(err, CallError::Malformed(_)), "{err:?}");
            for w in words {
                assert!(text.contains(w), "{w:?} in {text:?}");
            }
        };
        // A bad time after a good event: the good one is not written either.
        let bad_time = serde_json::json!({"rollout_id": "r1", "events": [
            event(2, "2027-01-15T08:01:00Z", "wave.started"),
            event(3, "yesterday", "wave.done"),
        ]})
        .to_string();
        check(&mut store, &bad_time, &[EP, "events[1].time"]);
        // A field of the wrong type, a missing field, a gap, another rollout, not JSON.
        check(
            &mut store,
            r#"{"rollout_id": "r1", "events": [{"seq": "two"}]}"#,
            &[EP, "events[0].seq"],
        );
        check(
            &mut store,
            r#"{"rollout_id": "r1", "events": [{"seq": 2, "time": "2027-01-15T08:01:00Z", "kind": "k", "cause": "c"}]}"#,
            &[EP, "events[0]", "payload"],
        );
        let gap = serde_json::json!({"rollout_id": "r1", "events": [
            event(4, "2027-01-15T08:01:00Z", "wave.started"),
        ]})
        .to_string();
        check(&mut store, &gap, &[EP, "events[0].seq", "gap"]);
        let other = serde_json::json!({"rollout_id": "r2", "events": []}).to_string();
        check(&mut store, &other, &[EP, "rollout_id"]);
        check(
            &mut store,
            "<html>502 Bad Gateway</html>",
            &[EP, "the answer"],
        );
        assert_eq!(timeline_rows(&store), before);

        // The log: a page that does not start where the copy's log ends, an event that is not
        // an engine event.
        let log_ep = "GET /api/v1/rollouts/r1/log";
        let err = apply_log(
            &mut store,
            "r1",
            log_ep,
            br#"{"rollout_id": "r1", "first_seq": 5, "events": [], "more": false}"#,
        )
        .expect_err("a gap");
        assert!(err.to_string().contains("first_seq"), "{err}");
        let err = apply_log(
            &mut store,
            "r1",
            log_ep,
            br#"{"rollout_id": "r1", "first_seq": 0, "events": [{"nonsense": 1}], "more": false}"#,
        )
        .expect_err("not an event");
        assert!(
            err.to_string().contains(log_ep) && err.to_string().contains("events[0]"),
            "{err}"
        );
        assert_eq!(copy_log_len(&store, "r1").expect("log"), 0);
    }
}
