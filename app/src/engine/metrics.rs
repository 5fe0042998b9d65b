//! The running engine in Prometheus's text format (issue 23): what `convoy rollout run
//! --metrics-listen ADDR` answers at `GET /metrics`, from the run's live report.
//!
//! Counters are the run's own since it started (a restarted engine starts again at zero, which
//! Prometheus's `rate` and `increase` handle). Not here: the HTTP server (the command's) or
//! anything the cache knows beyond this run (`convoy serve`'s `/metrics`).

use crate::prom::Exposition;

use super::EngineReport;

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The exposition of `report` (the run's live report).
pub fn exposition(report: &EngineReport) -> String {
    let mut out = Exposition::default();
    let rollout = pair("rollout", &report.rollout_id);
    let link = &report.link;
    out.family(
        "convoy_engine_messages_total",
        "Messages the engine took from devices, by kind.",
        "counter",
    );
    for (kind, n) in [
        ("status", link.status_messages),
        ("telemetry", link.telemetry_messages),
        ("ack", link.acks),
    ] {
        out.sample(
            "convoy_engine_messages_total",
            &[rollout.clone(), pair("kind", kind)],
            n as f64,
        );
    }
    out.family(
        "convoy_engine_messages_rejected_total",
        "Inbound messages refused by validation, by reason.",
        "counter",
    );
    for (reason, n) in &link.rejected {
        out.sample(
            "convoy_engine_messages_rejected_total",
            &[rollout.clone(), pair("reason", reason)],
            *n as f64,
        );
    }
    out.family(
        "convoy_engine_reports_refused_total",
        "Device reports the state machine refused (stale or impossible transitions), by kind.",
        "counter",
    );
    for (kind, n) in &link.reports_refused {
        out.sample(
            "convoy_engine_reports_refused_total",
            &[rollout.clone(), pair("kind", kind)],
            *n as f64,
        );
    }
    out.family(
        "convoy_engine_commands_total",
        "Commands to devices, by what happened to them.",
        "counter",
    );
    for (event, n) in [
        ("sent", link.commands_sent),
        ("resent", link.commands_resent),
        ("acked", link.commands_acked),
        ("rejected_by_device", link.commands_rejected_by_devices),
    ] {
        out.sample(
            "convoy_engine_commands_total",
            &[rollout.clone(), pair("event", event)],
            n as f64,
        );
    }
    out.family(
        "convoy_engine_link_disconnects_total",
        "Times the engine's broker connection dropped.",
        "counter",
    );
    out.sample(
        "convoy_engine_link_disconnects_total",
        std::slice::from_ref(&rollout),
        link.disconnects as f64,
    );
    out.family(
        "convoy_engine_gate_looks_passed_total",
        "Gate looks that let the rollout continue.",
        "counter",
    );
    out.sample(
        "convoy_engine_gate_looks_passed_total",
        std::slice::from_ref(&rollout),
        f64::from(report.gate_looks_passed),
    );
    out.family(
        "convoy_engine_gate_decisions_total",
        "Gate looks that held, paused or rolled back, by outcome.",
        "counter",
    );
    let mut by_outcome: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for d in &report.gate_decisions {
        let name = serde_json::to_value(d.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| d.outcome.words().to_owned());
        *by_outcome.entry(name).or_default() += 1;
    }
    for (outcome, n) in &by_outcome {
        out.sample(
            "convoy_engine_gate_decisions_total",
            &[rollout.clone(), pair("outcome", outcome)],
            *n as f64,
        );
    }
    out.family(
        "convoy_engine_devices",
        "Devices of the rollout by wave and state now.",
        "gauge",
    );
    for w in &report.waves {
        for (state, n) in [
            ("planned", w.devices),
            ("offered", w.offered),
            ("in_flight", w.in_flight),
            ("confirmed", w.confirmed),
            ("failed", w.failed),
            ("reverted", w.reverted),
            ("silent", w.silent),
        ] {
            out.sample(
                "convoy_engine_devices",
                &[rollout.clone(), pair("wave", &w.name), pair("state", state)],
                f64::from(n),
            );
        }
    }
    let phase = serde_json::to_value(&report.phase)
        .ok()
        .and_then(|v| match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Object(m) => m.keys().next().cloned(),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".to_owned());
    out.gauge(
        "convoy_engine_rollout_phase",
        "The rollout's phase now (1 for the phase it is in).",
        &[(
            &[
                ("rollout", report.rollout_id.as_str()),
                ("phase", phase.as_str()),
            ],
            1.0,
        )],
    );
    out.gauge(
        "convoy_engine_unsettled_devices",
        "Devices offered and not yet confirmed, failed nor reverted (or silent).",
        &[(
            &[("rollout", report.rollout_id.as_str())],
            report.unsettled.len() as f64,
        )],
    );
    if let Some(schedule) = &report.schedule {
        let labels: &[(&str, &str)] = &[("rollout", report.rollout_id.as_str())];
        out.gauge(
            "convoy_engine_schedule_waiting_devices",
            "Devices of the current wave waiting for their paced offer (window, rate or cap).",
            &[(labels, schedule.waiting as f64)],
        );
        out.gauge(
            "convoy_engine_schedule_rate_per_minute",
            "The offer rate in force, devices a minute (the plan's constant rate or ramp).",
            &[(labels, schedule.per_minute as f64)],
        );
        out.family(
            "convoy_engine_schedule_offered_total",
            "Devices offered under the schedule so far (what the rate ramp counts).",
            "counter",
        );
        out.sample(
            "convoy_engine_schedule_offered_total",
            std::slice::from_ref(&rollout),
            schedule.offered as f64,
        );
        // Absent when nothing waits: an alert on `time() > next offer` must not fire then.
        if let Some(at) = schedule.next_offer_at {
            out.gauge(
                "convoy_engine_schedule_next_offer_timestamp_seconds",
                "When the next paced offer is due, Unix seconds on the run's clock (scaled \
                 when --time-scale is not 1).",
                &[(labels, at.secs() as f64)],
            );
        }
    }
    if !report.prerequisite_stops.is_empty() {
        let rows: Vec<([(&str, &str); 2], f64)> = report
            .prerequisite_stops
            .iter()
            .map(|s| {
                (
                    [
                        ("rollout", report.rollout_id.as_str()),
                        ("release", s.release.as_str()),
                    ],
                    s.device_ids.len() as f64,
                )
            })
            .collect();
        let rows: Vec<(&[(&str, &str)], f64)> =
            rows.iter().map(|(l, n)| (l.as_slice(), *n)).collect();
        out.gauge(
            "convoy_engine_prerequisite_stopped_devices",
            "Devices stopped at a prerequisite release of their chain (failed, reverted, refused or silent).",
            &rows,
        );
    }
    out.gauge(
        "convoy_engine_uptime_seconds",
        "Wall time since the engine run started.",
        &[(&[("rollout", report.rollout_id.as_str())], report.wall_secs)],
    );
    out.finish()
}
