//! Signals the gates count besides telemetry (issue 20): support tickets and customer reports
//! per device, from a support system (`POST /api/v1/signals`) or a file (`convoy signals
//! import`). An engine running a rollout counts each signal about one of its devices in the
//! support-contacts gate, in the device's health window, on the same footing as a crash in its
//! telemetry (docs/GATES.md).
//!
//! The JSON form is `{"signals": [{"device_id", "kind", "reference", "time"?, "note"?}]}`
//! (strict: unknown fields and duplicate keys refused); the CSV form has the header
//! `device_id,kind,reference,time,note` (`time` and `note` may be empty). `kind` is
//! `support_ticket` or `customer_report`; `time` is RFC 3339 (default: now). Every signal must
//! name a device of the cache; a bad one is refused naming its place and nothing is stored.

use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use serde::Deserialize;

use crate::store::Store;
use crate::store::signals::{Signal, Stored};

/// The most signals one request or file may carry.
pub const MAX_SIGNALS: usize = 10_000;
/// The longest reference, source and note.
const MAX_TEXT: usize = 500;
pub const KINDS: [&str; 2] = ["support_ticket", "customer_report"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    signals: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    device_id: String,
    kind: String,
    reference: String,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Reads the JSON form; `source` names where the signals come from.
pub fn from_json(bytes: &[u8], source: &str, now: Timestamp) -> Result<Vec<Signal>> {
    let body: Body = convoy_core::strict_json::from_slice(bytes).map_err(|e| {
        anyhow::anyhow!("the signals are not valid JSON of the expected shape: {e}")
    })?;
    check_count(body.signals.len())?;
    body.signals
        .into_iter()
        .enumerate()
        .map(|(i, it)| signal(it, source, now).with_context(|| format!("signals[{i}]")))
        .collect()
}

/// Reads the CSV form (a header row, then one signal per line).
pub fn from_csv(text: &str, source: &str, now: Timestamp) -> Result<Vec<Signal>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = rdr.headers().context("reading the CSV header")?.clone();
    let want = ["device_id", "kind", "reference", "time", "note"];
    if headers.iter().collect::<Vec<_>>() != want {
        bail!(
            "the CSV header must be {}, not {}",
            want.join(","),
            headers.iter().collect::<Vec<_>>().join(",")
        );
    }
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let line = i + 2;
        let row = row.with_context(|| format!("line {line}"))?;
        check_count(out.len() + 1)?;
        let cell = |k: usize| crate::csv_safe::restore(row.get(k).unwrap_or("")).to_owned();
        let opt = |k: usize| Some(cell(k)).filter(|v| !v.trim().is_empty());
        let item = Item {
            device_id: cell(0),
            kind: cell(1),
            reference: cell(2),
            time: opt(3),
            note: opt(4),
        };
        out.push(signal(item, source, now).with_context(|| format!("line {line}"))?);
    }
    Ok(out)
}

fn check_count(n: usize) -> Result<()> {
    if n > MAX_SIGNALS {
        bail!("at most {MAX_SIGNALS} signals at once");
    }
    Ok(())
}

fn signal(it: Item, source: &str, now: Timestamp) -> Result<Signal> {
    if !convoy_core::release::is_valid_id(&it.device_id) {
        bail!("device_id {:?} is not a device id", it.device_id);
    }
    if !KINDS.contains(&it.kind.as_str()) {
        bail!("kind {:?} is not one of {}", it.kind, KINDS.join(", "));
    }
    for (name, v) in [
        ("reference", it.reference.as_str()),
        ("source", source),
        ("note", it.note.as_deref().unwrap_or("")),
    ] {
        if v.len() > MAX_TEXT {
            bail!("{name} is longer than {MAX_TEXT} bytes");
        }
        if v.chars().any(char::is_control) {
            bail!("{name} holds a control character");
        }
    }
    if it.reference.trim().is_empty() {
        bail!("reference is empty: a signal needs its id in the system it comes from");
    }
    let time = match &it.time {
        None => now,
        Some(t) => Timestamp::parse_rfc3339(t)
            .map_err(|e| anyhow::anyhow!("time {t:?} is not an RFC 3339 time: {e}"))?,
    };
    if time > now.plus_secs(86_400) {
        bail!("time {time} is more than a day in the future");
    }
    Ok(Signal {
        device_id: it.device_id,
        time,
        kind: it.kind,
        source: source.to_owned(),
        reference: it.reference.trim().to_owned(),
        note: it.note.unwrap_or_default(),
    })
}

/// Stores `signals` once every one names a device of the cache (else nothing is stored and the
/// error names the unknown ones).
pub fn store(store: &Store, signals: &[Signal], actor: &str, now: Timestamp) -> Result<Stored> {
    let ids: Vec<&str> = signals.iter().map(|s| s.device_id.as_str()).collect();
    let unknown = store.unknown_devices(&ids)?;
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(10).map(String::as_str).collect();
        bail!(
            "{} device(s) are not in the cache: {}{}; nothing was stored",
            unknown.len(),
            shown.join(", "),
            if unknown.len() > 10 { ", …" } else { "" }
        );
    }
    store.add_signals(signals, actor, now)
}
