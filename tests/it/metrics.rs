//! `GET /metrics` on the server (issue 23): Prometheus's text format, checked by Prometheus's
//! own `promtool check metrics`, with counters that move as requests arrive and the cache's
//! gauges (gate decisions, rollouts, outboxes) read at each scrape.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use convoy::serve::auth::{self, Role};
use convoy::store::Store;
use convoy_e2e::{Proc, free_port, record_crash_looping_canary, wait_listening};

/// Runs `promtool check metrics` on `text`: (passed, what it said).
pub fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ran");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[test]
fn the_server_s_metrics_pass_promtool_and_move_with_requests() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let token = {
        let mut store = Store::open(&db).expect("cache");
        record_crash_looping_canary(&mut store, "ro-1", true);
        auth::add_token(
            &store,
            "prometheus",
            Role::Viewer,
            "operator:test",
            convoy_core::time::Timestamp::from_secs(1_800_000_000),
        )
        .expect("token")
        .token
    };
    let port = free_port();
    let _server = Proc::spawn(
        &[
            "serve",
            "--cache",
            db.to_str().expect("utf-8"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path().join("serve.log"),
    );
    wait_listening(port, "convoy serve", Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        runtime.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (status, ctype, resp.text().await.expect("body"))
        })
    };
    assert_eq!(get("/api/v1/rollouts", Some(&token)).0, 200);
    assert_eq!(get("/api/v1/rollouts/ro-1/timeline", Some(&token)).0, 200);
    assert_eq!(get("/api/v1/whoami", None).0, 401);
    // The scrape needs a token like every request.
    assert_eq!(get("/metrics", None).0, 401);

    let (status, ctype, first) = get("/metrics", Some(&token));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let (ok, said) = promtool(&first);
    assert!(ok, "promtool check metrics: {said}\n{first}");
    let rollouts = "convoy_api_requests_total{route=\"GET /api/v1/rollouts\",status=\"200\"}";
    assert_eq!(sample(&first, rollouts), Some(1.0), "{first}");
    assert_eq!(
        sample(
            &first,
            "convoy_api_requests_total{route=\"GET /api/v1/rollouts/{id}/timeline\",status=\"200\"}"
        ),
        Some(1.0),
        "the id is not a label value: {first}"
    );
    assert!(
        sample(&first, "convoy_api_refused_total{reason=\"unauthorized\"}") >= Some(2.0),
        "{first}"
    );
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("convoy_gate_decisions{outcome=")),
        "the gate's decision in the cache is counted: {first}"
    );
    assert!(first.contains("convoy_rollouts{last_event="), "{first}");
    assert!(first.contains("convoy_api_request_duration_seconds_bucket{route=\"GET /api/v1/rollouts\",le=\"+Inf\"} 1"), "{first}");

    // Counters move with requests.
    assert_eq!(get("/api/v1/rollouts", Some(&token)).0, 200);
    let (_, _, second) = get("/metrics", Some(&token));
    assert_eq!(sample(&second, rollouts), Some(2.0), "{second}");
    assert_eq!(
        sample(
            &second,
            "convoy_api_requests_total{route=\"GET /metrics\",status=\"200\"}"
        ),
        Some(1.0),
        "the first scrape is counted: {second}"
    );
    assert!(promtool(&second).0);
}

/// The metric names an expression uses (`convoy_...`), without histogram suffixes.
fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("convoy_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        i = end;
    }
    out
}

#[test]
fn the_packaged_rules_and_dashboard_check_and_use_only_metrics_the_server_exposes() {
    let _turn = convoy_e2e::shared();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = root.join("packaging/prometheus/convoy-rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dashboard = std::fs::read_to_string(root.join("packaging/grafana/convoy-dashboard.json"))
        .expect("dashboard");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let exposed = [
        "convoy_api_requests_total",
        "convoy_api_request_duration_seconds",
        "convoy_api_refused_total",
        "convoy_event_streams",
        "convoy_outbox_commands",
        "convoy_outbox_oldest_unacked_created_timestamp_seconds",
        "convoy_gate_decisions",
        "convoy_rollouts",
        "convoy_alert_outbox_pending",
        "convoy_alert_outbox_oldest_pending_age_seconds",
        "convoy_alerts_sent",
    ];
    let source = std::fs::read_to_string(root.join("app/src/serve/metrics.rs")).expect("source");
    for name in &exposed {
        assert!(
            source.contains(name),
            "{name} is written by serve/metrics.rs"
        );
    }
    let rules_text = std::fs::read_to_string(&rules).expect("rules");
    for used in names_in(&dashboard).union(&names_in(&rules_text)) {
        assert!(
            exposed.contains(&used.as_str()),
            "{used} is used by the packaged rules or dashboard but the server does not expose it"
        );
    }
}
