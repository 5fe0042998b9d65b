//! `GET /metrics`: the server in Prometheus's text format (issue 23), next to (not instead of)
//! the JSON rollout metrics at `GET /api/v1/metrics`.
//!
//! API requests by route pattern and status with a latency histogram, refusals by reason,
//! connections, event streams, and the cache's gauges read at each scrape: outbox commands by
//! state, gate decisions by outcome, rollouts by their newest event, alert deliveries per
//! channel. The route label is the route's pattern, never the path sent, so a client cannot
//! grow the number of series. A scrape needs a token, as every other request does
//! (Prometheus's `authorization: {credentials_file: ...}`).

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::AppState;
use super::api::ApiError;
use crate::prom::{CONTENT_TYPE, Exposition};

/// Path segments that name a route (the rest are ids).
const ROUTE_WORDS: [&str; 33] = [
    "api", "v1", "whoami", "fleet", "export", "devices", "rollouts", "timeline", "log", "metrics",
    "health", "request", "dispatch", "approve", "reject", "pause", "resume", "rollback",
    "override", "abort", "events", "audit", "verify", "findings", "requests", "tokens", "releases",
    "plans", "score", "summary", "exclude", "continue", "signals",
];

/// The route pattern of `path` for labels: known words kept, other segments `{id}`, at most
/// six segments; a path outside the API is `other`.
pub(super) fn route_label(method: &Method, path: &str) -> String {
    if path == "/metrics" {
        return format!("{method} /metrics");
    }
    if !path.starts_with(super::api::PREFIX) {
        return format!("{method} other");
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() > 6 {
        return format!("{method} other");
    }
    let pattern: Vec<&str> = segs
        .iter()
        .map(|s| if ROUTE_WORDS.contains(s) { *s } else { "{id}" })
        .collect();
    format!("{method} /{}", pattern.join("/"))
}

/// Counts one answered request.
pub(super) fn record(app: &AppState, route: &str, status: StatusCode, secs: f64) {
    let code = status.as_u16().to_string();
    app.metrics.add(
        "convoy_api_requests_total",
        "API requests answered, by route pattern and status.",
        &[("route", route), ("status", &code)],
        1.0,
    );
    app.metrics.observe(
        "convoy_api_request_duration_seconds",
        "Time from a request's arrival to its answer, by route pattern.",
        &[("route", route)],
        secs,
    );
}

/// The text exposition.
pub(super) async fn render(app: &Arc<AppState>) -> Result<Response, ApiError> {
    let gauges = app
        .pool
        .run(|store| Ok((store.cache_gauges()?, store.alert_health()?)))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let (cache, alerts) = gauges;
    let mut out = Exposition::default();
    app.metrics.render(&mut out);
    let c = &app.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    out.family(
        "convoy_api_refused_total",
        "Requests refused before their route ran, by reason.",
        "counter",
    );
    for (reason, n) in [
        ("unauthorized", get(&c.unauthorized)),
        ("forbidden", get(&c.forbidden)),
        ("rate_limited", get(&c.rate_limited)),
        ("too_large", get(&c.too_large)),
        ("bad_request", get(&c.bad_request)),
        ("stream_refused", get(&c.streams_refused)),
    ] {
        out.sample(
            "convoy_api_refused_total",
            &[("reason".to_owned(), reason.to_owned())],
            n,
        );
    }
    out.gauge(
        "convoy_event_streams",
        "Event streams (GET /api/v1/events) open now.",
        &[(&[], get(&c.streams))],
    );
    out.family(
        "convoy_outbox_commands",
        "Device commands in the cache's outbox, by state.",
        "gauge",
    );
    for state in ["pending", "sent", "acked"] {
        let n = cache
            .commands
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        out.sample(
            "convoy_outbox_commands",
            &[("state".to_owned(), state.to_owned())],
            n as f64,
        );
    }
    if let Some(t) = cache.oldest_unacked_created {
        out.gauge(
            "convoy_outbox_oldest_unacked_created_timestamp_seconds",
            "When the oldest unacknowledged command was created, on its rollout's clock.",
            &[(&[], t as f64)],
        );
    }
    out.family(
        "convoy_gate_decisions",
        "Gate decisions that stopped a rollout (pause, roll back), by outcome, in the cache's timelines.",
        "gauge",
    );
    for (outcome, n) in &cache.gate_decisions {
        out.sample(
            "convoy_gate_decisions",
            &[("outcome".to_owned(), outcome.clone())],
            *n as f64,
        );
    }
    out.family(
        "convoy_rollouts",
        "Rollouts in the cache, by their newest timeline event.",
        "gauge",
    );
    for (kind, n) in &cache.rollouts_by_last_event {
        out.sample(
            "convoy_rollouts",
            &[("last_event".to_owned(), kind.clone())],
            *n as f64,
        );
    }
    let now = crate::alerts::deliver::wall_ms();
    out.family(
        "convoy_alert_outbox_pending",
        "Alerts waiting for delivery, by channel.",
        "gauge",
    );
    for h in &alerts {
        out.sample(
            "convoy_alert_outbox_pending",
            &[("channel".to_owned(), h.channel.clone())],
            h.pending as f64,
        );
    }
    out.family(
        "convoy_alert_outbox_oldest_pending_age_seconds",
        "Age of the oldest alert waiting for delivery, by channel (0 when none waits).",
        "gauge",
    );
    for h in &alerts {
        let age = h
            .oldest_pending_ms
            .map_or(0.0, |t| ((now - t).max(0) as f64) / 1_000.0);
        out.sample(
            "convoy_alert_outbox_oldest_pending_age_seconds",
            &[("channel".to_owned(), h.channel.clone())],
            age,
        );
    }
    out.family(
        "convoy_alerts_sent",
        "Alerts delivered, by channel, as the cache records them.",
        "gauge",
    );
    for h in &alerts {
        out.sample(
            "convoy_alerts_sent",
            &[("channel".to_owned(), h.channel.clone())],
            h.sent as f64,
        );
    }
    let mut response = out.finish().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_patterns_not_paths() {
        let get = Method::GET;
        assert_eq!(
            route_label(&get, "/api/v1/rollouts/r-17/timeline"),
            "GET /api/v1/rollouts/{id}/timeline"
        );
        assert_eq!(
            route_label(&get, "/api/v1/devices/CV0001"),
            "GET /api/v1/devices/{id}"
        );
        assert_eq!(route_label(&get, "/metrics"), "GET /metrics");
        assert_eq!(route_label(&get, "/etc/passwd"), "GET other");
        assert_eq!(
            route_label(&Method::POST, "/api/v1/a/b/c/d/e/f/g"),
            "POST other"
        );
    }
}
