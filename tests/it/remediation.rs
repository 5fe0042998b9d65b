//! Issue 20, from finding to rollout: a rollout request names the finding it remediates, over
//! a real `convoy serve` (HTTP on 127.0.0.1, the real cache) and the real `convoy` binary; the
//! finding's tier proposes the shape (tier 0 the emergency path, tier 3 deferred), the operator
//! may change it and the change is recorded; the pre-deployment checklist is required on the
//! emergency path and refused when hostile; time to remediate counts from the finding's
//! detection in `convoy metrics`, for two findings and two rollouts the server dispatched over
//! the embedded broker to a simulated fleet; a bootloader release is planned with stricter
//! defaults, and `convoy plan` says why.

use convoy::serve::{ServeConfig, Server};
use convoy_e2e::{Proc, api, convoy, convoy_ok, free_port, wait_listening};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::runtime::Runtime;

/// A workspace (fleet in a cache, trust, a stored signed T300 release), a server on it with
/// tokens, and what it takes to call it.
struct Bench {
    ws: convoy_e2e::SignedWorkspace,
    release_id: String,
    rt: Runtime,
    server: Option<Server>,
    api: String,
    http: reqwest::Client,
    tokens: std::collections::HashMap<&'static str, String>,
}

impl Bench {
    fn new(
        devices: usize,
        dispatch: Option<&dyn Fn(&convoy_e2e::SignedWorkspace) -> PathBuf>,
    ) -> Self {
        let ws = convoy_e2e::SignedWorkspace::new(&convoy_e2e::WorkspaceSpec {
            devices,
            seed: 20,
            artifact_bytes: 50_000,
            version: "2.5.0",
            counter: 50,
            hardware: "T300",
            requires: &[],
        });
        ws.store_release();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(ws.path("release.json")).expect("manifest"))
                .expect("manifest JSON");
        let release_id = manifest["signed"]["release"]["id"]
            .as_str()
            .expect("release id")
            .to_owned();
        let mut tokens = std::collections::HashMap::new();
        for (name, role) in [
            ("dana", "dispatcher"),
            ("alex", "approver"),
            ("sam", "approver"),
        ] {
            let token = convoy_ok(&[
                "serve",
                "token",
                "add",
                "--cache",
                &ws.path("cache.db"),
                "--operator",
                name,
                "--role",
                role,
            ]);
            tokens.insert(name, token.trim().to_owned());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut config = ServeConfig::new(
            PathBuf::from(ws.path("cache.db")),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.trust = Some(PathBuf::from(ws.path("trust")));
        config.rate_per_sec = 10_000.0;
        config.rate_burst = 10_000;
        if let Some(settings) = dispatch {
            let file = settings(&ws);
            config.dispatch =
                Some(convoy::serve::host::read_dispatch_args(&file).expect("dispatch settings"));
        }
        let server = rt.block_on(Server::start(config)).expect("server");
        let api = format!("{}/api/v1", server.base_url());
        Self {
            ws,
            release_id,
            rt,
            server: Some(server),
            api,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            tokens,
        }
    }

    fn post(&self, as_: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let url = format!("{}/{path}", self.api);
        self.rt.block_on(api::post(
            &self.http,
            &url,
            &self.tokens[as_],
            body.to_string(),
        ))
    }

    fn get(&self, as_: &str, path: &str) -> (StatusCode, Value) {
        let url = format!("{}/{path}", self.api);
        self.rt
            .block_on(api::get(&self.http, &url, Some(&self.tokens[as_])))
    }

    /// Scores `finding` on the server (`POST /findings`); its tier.
    fn score(&self, finding: &Value) -> u64 {
        let (status, body) = self.post("dana", "findings", finding);
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["scorecard"]["tier"].as_u64().expect("a tier")
    }

    fn db(&self) -> String {
        self.ws.path("cache.db")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

fn fixture(name: &str) -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/findings/{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON")
}

fn checklist() -> Value {
    json!({
        "owner": "dana (on call, +49 30 1234)",
        "regression_test": "CI run 4411: mqtt_parser_overflow",
        "rollback_readiness": "A/B revert tested on 3 bench units",
        "support_brief": "KB-77 sent to tier 1"
    })
}

/// A tier-0 finding proposes the emergency path: without authoriser, evidence and a complete
/// checklist the request is refused naming what is missing; with them it is made, canary first
/// with shortened soaks. A tier-3 finding is deferred and never dispatched until its shape is
/// changed, and the change (who, from what, to what) is in the request and the audit log. An
/// unknown finding, an unknown shape and hostile checklist items are refused with the field.
#[test]
fn a_request_names_its_finding_whose_tier_proposes_the_shape_and_the_emergency_path_needs_its_checklist()
 {
    let _turn = convoy_e2e::shared();
    let b = Bench::new(150, None);
    let rce = fixture("t300-remote-rce");
    assert_eq!(
        b.score(&rce),
        0,
        "an actively exploited remote RCE is tier 0"
    );
    let cosmetic = fixture("t500-cosmetic-units");
    assert_eq!(b.score(&cosmetic), 3, "a cosmetic defect is tier 3");
    let rce_id = rce["id"].as_str().expect("id");
    let cosmetic_id = cosmetic["id"].as_str().expect("id");
    let release = b.release_id.clone();

    // Hostile and unknown input, each refused with the field it is about.
    for (body, field, words) in [
        (
            json!({"release_id": release, "finding_id": "SEC-NOPE"}),
            "finding_id",
            "no finding \"SEC-NOPE\" in the cache",
        ),
        (
            json!({"release_id": release, "finding_id": "SEC\u{7}1"}),
            "finding_id",
            "without control characters",
        ),
        (
            json!({"release_id": release, "finding_id": cosmetic_id, "shape": "yolo"}),
            "shape",
            "unknown shape \"yolo\"",
        ),
        (
            json!({"release_id": release, "finding_id": cosmetic_id,
                   "checklist": {"owner": "dana\u{1b}[2J"}}),
            "checklist.owner",
            "U+001B",
        ),
        (
            json!({"release_id": release, "finding_id": cosmetic_id,
                   "checklist": {"support_brief": "x".repeat(1_001)}}),
            "checklist.support_brief",
            "more than the 1000",
        ),
        (
            json!({"release_id": release, "finding_id": cosmetic_id,
                   "checklist": {"support_brief": "see \u{202E}fdp.exe"}}),
            "checklist.support_brief",
            "bidirectional",
        ),
        // Tier 0: the emergency path, so the authoriser is asked for, with the reason.
        (
            json!({"release_id": release, "finding_id": rce_id}),
            "authoriser",
            "is tier 0",
        ),
        (
            json!({"release_id": release, "finding_id": rce_id, "authoriser": "alex",
                   "evidence": "exploited in the wild"}),
            "checklist.owner",
            "required on the emergency path",
        ),
        (
            json!({"release_id": release, "finding_id": rce_id, "authoriser": "alex",
                   "evidence": "exploited in the wild",
                   "checklist": {"owner": "dana", "regression_test": "CI 1", "rollback_readiness": "A/B"}}),
            "checklist.support_brief",
            "support_brief",
        ),
        (
            json!({"release_id": release, "finding_id": rce_id, "path": "standard", "shape": "emergency"}),
            "shape",
            "goes through the emergency path",
        ),
    ] {
        let (status, answer) = b.post("dana", "rollouts", &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(words),
            "{words:?} in {answer}"
        );
    }
    // An emergency request without a finding needs the checklist too.
    let (status, answer) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "path": "emergency", "authoriser": "alex", "evidence": "CVE"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "checklist.owner", "{answer}");
    assert_eq!(
        b.get("dana", "requests").1.as_array().map(Vec::len),
        Some(0),
        "nothing refused was recorded"
    );

    // A baseline: the same release planned without a finding (standard, no shape).
    let (status, plain) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "rollout_id": "plain"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["shape"], Value::Null);

    // Tier 0 with everything: the emergency path, canary first, soaks a quarter (>= 15 min).
    let (status, em) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "rollout_id": "em-rce", "finding_id": rce_id,
                "authoriser": "alex", "evidence": "exploited in the wild", "checklist": checklist()}),
    );
    assert_eq!(status, StatusCode::CREATED, "{em}");
    assert_eq!(em["path"], "emergency", "{em}");
    assert_eq!(em["finding_id"], rce_id);
    assert_eq!(em["finding_tier"], 0);
    assert_eq!(em["proposed_shape"], "emergency");
    assert_eq!(em["shape"], "emergency");
    assert_eq!(em["shape_changed_by"], Value::Null);
    assert_eq!(em["checklist"], checklist());
    assert_eq!(em["checklist_missing"], json!([]));
    assert_eq!(em["waves"][0]["name"], "canary", "{em}");
    for (w, p) in em["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .zip(plain["waves"].as_array().expect("waves"))
    {
        let (soak, planned) = (
            w["soak_secs"].as_i64().expect("soak"),
            p["soak_secs"].as_i64().expect("soak"),
        );
        assert_eq!(soak, (planned / 4).max(planned.min(900)), "{w} vs {p}");
        assert!(soak < planned, "shorter soaks: {w} vs {p}");
    }

    // The operator chooses the standard shape for the tier-0 finding: recorded as a change.
    let (status, std_rce) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "rollout_id": "std-rce", "finding_id": rce_id, "shape": "standard"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{std_rce}");
    assert_eq!(std_rce["path"], "standard");
    assert_eq!(std_rce["proposed_shape"], "emergency");
    assert_eq!(std_rce["shape"], "standard");
    assert_eq!(std_rce["shape_changed_by"], "dana");
    assert_eq!(std_rce["waves"], plain["waves"], "the plan as it is");

    // Tier 3: deferred; approved, and still not dispatched; dispatch refused naming why.
    let (status, deferred) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "rollout_id": "later", "finding_id": cosmetic_id}),
    );
    assert_eq!(status, StatusCode::CREATED, "{deferred}");
    assert_eq!(deferred["shape"], "deferred");
    assert!(
        deferred["deferred"]
            .as_str()
            .unwrap_or("")
            .contains("deferred to the next scheduled release"),
        "{deferred}"
    );
    // A second deferred one, whose shape the dispatcher changes before any decision.
    let (status, _) = b.post(
        "dana",
        "rollouts",
        &json!({"release_id": release, "rollout_id": "later-2", "finding_id": cosmetic_id}),
    );
    assert_eq!(status, StatusCode::CREATED);
    for who in ["alex", "sam"] {
        let (status, body) = b.post(who, "rollouts/later/approve", &json!({}));
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = b.get("dana", "rollouts/later/request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved", "{body}");
    let (status, body) = b.post("dana", "rollouts/later/dispatch", &json!({}));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("deferred"),
        "{body}"
    );
    // Its shape is what was approved: no change after decisions.
    let (status, body) = b.post(
        "dana",
        "rollouts/later/shape",
        &json!({"shape": "standard"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = b.post("dana", "rollouts/later-2/shape", &json!({"shape": "fast"}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "shape");
    let (status, body) = b.post(
        "alex",
        "rollouts/later-2/shape",
        &json!({"shape": "standard"}),
    );
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the requester reshapes: {body}"
    );
    assert!(
        body["error"].as_str().unwrap_or("").contains("only dana"),
        "{body}"
    );
    let (status, changed) = b.post(
        "dana",
        "rollouts/later-2/shape",
        &json!({"shape": "accelerated"}),
    );
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["proposed_shape"], "deferred");
    assert_eq!(changed["shape"], "accelerated");
    assert_eq!(changed["shape_changed_by"], "dana");
    assert_eq!(changed["deferred"], Value::Null);
    for (w, p) in changed["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .zip(plain["waves"].as_array().expect("waves"))
    {
        assert_eq!(
            w["soak_secs"].as_i64(),
            p["soak_secs"].as_i64().map(|s| s / 2)
        );
    }

    // The audit log holds the request's proposal and choice and the later change.
    let audit = convoy_ok(&["audit", "log", "--db", &b.db(), "--json"]);
    // Each entry's payload is the compact JSON text that was hashed.
    let entries: Vec<Value> = serde_json::from_str::<Vec<Value>>(&audit)
        .expect("audit JSON")
        .into_iter()
        .map(|mut e| {
            let payload: Value =
                serde_json::from_str(e["payload"].as_str().unwrap_or("null")).expect("payload");
            e["payload"] = payload;
            e
        })
        .collect();
    let action = |e: &Value| e["action"].as_str().unwrap_or("").to_owned();
    let std_entry = entries
        .iter()
        .find(|e| action(e) == "rollout.request" && e["payload"]["rollout_id"] == "std-rce")
        .unwrap_or_else(|| panic!("the request's audit entry in {audit}"));
    assert_eq!(std_entry["payload"]["proposed_shape"], "emergency");
    assert_eq!(std_entry["payload"]["shape"], "standard");
    assert_eq!(std_entry["payload"]["shape_changed_by"], "dana");
    let change = entries
        .iter()
        .find(|e| action(e) == "rollout.shape")
        .unwrap_or_else(|| panic!("the shape change's audit entry in {audit}"));
    assert_eq!(change["payload"]["from"], "deferred");
    assert_eq!(change["payload"]["to"], "accelerated");
    assert_eq!(change["payload"]["by"], "dana");
    convoy_ok(&["audit", "verify", "--db", &b.db()]);

    // The command line shows the same, and refuses what the API refuses.
    let shown = convoy_ok(&["request", "show", "em-rce", "--db", &b.db()]);
    let remediates = format!("Remediates finding {rce_id} (tier 0)");
    for needle in [
        remediates.as_str(),
        "Shape: emergency, as the finding's tier proposes",
        "owner: dana (on call, +49 30 1234)",
        "regression_test: CI run 4411: mqtt_parser_overflow",
    ] {
        assert!(shown.contains(needle), "{needle:?} in {shown}");
    }
    let listed = convoy_ok(&["request", "list", "--db", &b.db()]);
    assert!(
        listed.contains("std-rce") && listed.contains("checklist missing owner"),
        "{listed}"
    );
    let out = convoy(&[
        "request",
        "create",
        "--db",
        &b.db(),
        "--trust",
        &b.ws.path("trust"),
        "--release",
        &release,
        "--finding",
        rce_id,
        "--authoriser",
        "alex",
        "--evidence",
        "exploited",
        "--operator",
        "dana",
        "--owner",
        "dana",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checklist.regression_test") && err.contains("emergency path"),
        "{err}"
    );
    let made = convoy_ok(&[
        "request",
        "create",
        "--db",
        &b.db(),
        "--trust",
        &b.ws.path("trust"),
        "--release",
        &release,
        "--rollout-id",
        "cli-1",
        "--finding",
        cosmetic_id,
        "--shape",
        "standard",
        "--operator",
        "dana",
        "--json",
    ]);
    let made: Value = serde_json::from_str(&made).expect("JSON");
    assert_eq!(made["proposed_shape"], "deferred");
    assert_eq!(made["shape"], "standard");
    assert_eq!(made["shape_changed_by"], "dana");
}

/// Time to remediate counts from the finding's detection, not from the rollout's creation: two
/// findings (security, detected two days ago; stability, detected five hours ago), each named by
/// a request the server dispatched to its own devices over the embedded broker; `convoy metrics`
/// gives each rollout's time from detection and breaks it down by classification, model and
/// region; the regulator draft carries the finding and the checklist.
#[test]
fn time_to_remediate_counts_from_detection_in_convoy_metrics_for_two_findings_and_rollouts() {
    let _turn = convoy_e2e::alone();
    let port = free_port();
    let scale = "2400";
    let settings = |ws: &convoy_e2e::SignedWorkspace| -> PathBuf {
        convoy_e2e::write_hour_cycle_policy(ws.path("policy.json"), None);
        let file = PathBuf::from(ws.path("dispatch.args"));
        std::fs::write(
            &file,
            format!(
                "--broker\nmqtt://127.0.0.1:{port}\n--policy\n{}\n--time-scale\n{scale}\n--artifact\n{}\n",
                ws.path("policy.json"),
                ws.path("fw.img")
            ),
        )
        .expect("dispatch settings");
        file
    };
    let b = Bench::new(80, Some(&settings));
    let _broker = Proc::spawn(
        &[
            "broker".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        b.ws.path("broker.log"),
    );
    wait_listening(port, "the embedded broker", Duration::from_secs(20));
    let _sim = Proc::spawn(
        &[
            "sim".to_owned(),
            "--broker".into(),
            format!("mqtt://127.0.0.1:{port}"),
            "--fleet".into(),
            b.ws.path("fleet.json"),
            "--trust".into(),
            b.ws.path("trust"),
            "--time-scale".into(),
            scale.into(),
            "--duration-secs".into(),
            "400".into(),
        ],
        b.ws.path("sim.log"),
    );
    let now = convoy::now();
    let findings = [
        ("SEC-TTR-1", "security", 2 * 86_400),
        ("STA-TTR-2", "stability", 5 * 3_600),
    ];
    for (id, class, ago) in findings {
        b.score(&json!({
            "id": id,
            "classification": class,
            "affected": {"models": ["T300"]},
            "detected_at": now.plus_secs(-ago).to_rfc3339(),
        }));
    }
    // Two rollouts of the release to disjoint T300 devices, one per finding.
    let fleet: Value =
        serde_json::from_slice(&std::fs::read(b.ws.path("fleet.json")).expect("fleet"))
            .expect("fleet JSON");
    let mut t300: Vec<String> = fleet["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["model"] == "T300")
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    t300.sort();
    assert!(t300.len() >= 8, "enough T300s: {}", t300.len());
    let half = t300.len() / 2;
    let groups = [&t300[..half], &t300[half..]];
    for (i, (id, _, _)) in findings.iter().enumerate() {
        let rollout_id = format!("ttr-{i}");
        let (status, body) = b.post(
            "dana",
            "rollouts",
            &json!({"release_id": b.release_id, "rollout_id": rollout_id, "finding_id": id,
                    "shape": "standard",
                    "waves": [{"name": "canary", "device_ids": groups[i], "soak_secs": 1800}]}),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["finding_id"], *id);
        for who in ["alex", "sam"] {
            let (status, body) = b.post(who, &format!("rollouts/{rollout_id}/approve"), &json!({}));
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let runs = b.server.as_ref().expect("server").take_runs();
        assert_eq!(runs.len(), 1, "the server dispatched {rollout_id}");
        let report = runs
            .into_iter()
            .next()
            .expect("one run")
            .join()
            .expect("the dispatched run");
        assert_eq!(
            report.final_state,
            convoy::engine::FinalState::Completed,
            "{report:#?}\nsim log:\n{}",
            std::fs::read_to_string(b.ws.path("sim.log")).unwrap_or_default()
        );
    }

    let metrics: Value = serde_json::from_str(&convoy_ok(&["metrics", "--db", &b.db(), "--json"]))
        .expect("metrics JSON");
    let store = convoy::store::Store::open_existing(Path::new(&b.db())).expect("cache");
    let remediation = &metrics["remediation"];
    let rows = remediation["rollouts"].as_array().expect("rollouts");
    assert_eq!(rows.len(), 2, "{remediation}");
    for (i, (id, class, ago)) in findings.iter().enumerate() {
        let row = &rows[i];
        assert_eq!(row["rollout_id"], format!("ttr-{i}"));
        assert_eq!(row["finding_id"], *id);
        assert_eq!(row["classification"], *class);
        assert_eq!(row["detected_from"], "detected_at");
        let rollout = store
            .replay_rollout(&format!("ttr-{i}"))
            .expect("log")
            .expect("a log");
        let own = metrics["rollouts"]
            .as_array()
            .expect("rollouts")
            .iter()
            .find(|m| m["rollout_id"] == format!("ttr-{i}"))
            .expect("its metrics");
        let from_creation = own["time_to_remediate_secs"].as_i64().expect("completed");
        let detected = now.plus_secs(-ago);
        let from_detection = row["time_to_remediate_secs"].as_i64().expect("completed");
        // Not from the rollout's creation: from the detection, `ago` (and the time until the
        // request) earlier.
        assert_eq!(
            from_detection,
            from_creation + rollout.state().created_at.secs_since(detected),
            "{row}"
        );
        assert!(from_detection >= from_creation + ago, "{row}");
        assert_eq!(
            row["devices_remediated"].as_u64(),
            own["healthy"].as_u64(),
            "{row}"
        );
    }
    let by = remediation["by"].as_array().expect("by");
    let values = |attribute: &str| -> Vec<(String, u64)> {
        by.iter()
            .filter(|g| g["attribute"] == attribute)
            .map(|g| {
                (
                    g["value"].as_str().expect("value").to_owned(),
                    g["devices"].as_u64().expect("devices"),
                )
            })
            .collect()
    };
    let healthy: u64 = rows
        .iter()
        .map(|r| r["devices_remediated"].as_u64().expect("n"))
        .sum();
    let classes = values("classification");
    assert_eq!(
        classes.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
        ["security", "stability"]
    );
    assert_eq!(classes.iter().map(|(_, n)| n).sum::<u64>(), healthy);
    assert_eq!(values("model"), [("T300".to_owned(), healthy)]);
    assert_eq!(
        values("region").iter().map(|(_, n)| n).sum::<u64>(),
        healthy
    );
    let text = convoy_ok(&["metrics", "--db", &b.db()]);
    assert!(
        text.contains("Time to remediate from detection (2 rollouts naming a finding)")
            && text.contains("finding SEC-TTR-1 (security)"),
        "{text}"
    );
    // The regulator draft names the finding; this standard-path request had no checklist.
    let draft = convoy_ok(&[
        "rollout",
        "comms",
        "--rollout",
        "ttr-0",
        "--audience",
        "regulator",
        "--db",
        &b.db(),
    ]);
    assert!(
        draft.contains("- Remediates finding SEC-TTR-1")
            && draft.contains("Pre-deployment checklist: none recorded with the request."),
        "{draft}"
    );
}

/// A release that installs a bootloader is planned with a smaller canary, longer soaks and
/// tighter gates, and `convoy plan` says so with the reason; an application release is not.
#[test]
fn a_bootloader_release_is_planned_with_stricter_defaults_and_the_plan_says_why() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name).display().to_string();
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        "400",
        "--seed",
        "9",
        "--out",
        &p("fleet.json"),
    ]);
    let catalog: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases/catalog.json"),
        )
        .expect("catalog"),
    )
    .expect("catalog JSON");
    let bootloader = catalog
        .as_array()
        .expect("releases")
        .iter()
        .find(|r| r["id"] == "t300-bl-2.0.1")
        .expect("the bootloader release");
    std::fs::write(p("bl.json"), bootloader.to_string()).expect("release");
    let plan = |release: &str, json: bool| {
        let mut args = vec![
            "plan".to_owned(),
            "--fleet".into(),
            p("fleet.json"),
            "--release".into(),
            release.to_owned(),
            "--now".into(),
            "2026-12-07T00:00:00Z".into(),
        ];
        if json {
            args.push("--json".into());
        }
        convoy_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let text = plan(&p("bl.json"), false);
    for needle in [
        "boot-critical: bootloader: stricter defaults",
        "canary.size: 50 -> 25",
        "gates.boot_failure: max_ratio 2 -> 1.2",
        "silent_after_secs: 7200",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    let json: Value = serde_json::from_str(&plan(&p("bl.json"), true)).expect("plan JSON");
    assert_eq!(json["boot_critical"]["reason"], "boot-critical: bootloader");
    assert_eq!(json["boot_critical"]["components"], json!(["bootloader"]));
    assert_eq!(json["gates"]["boot_failure"]["max_ratio"], 1.2);
    assert_eq!(json["canary"]["target_size"], 25);
    assert!(
        json["canary"]["device_ids"]
            .as_array()
            .expect("canary")
            .len()
            <= 25
    );
    // The application release of the fixtures is planned with the defaults.
    let app = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/releases/t300-fw-2.5.0.json")
        .display()
        .to_string();
    let json: Value = serde_json::from_str(&plan(&app, true)).expect("plan JSON");
    assert_eq!(json["boot_critical"], Value::Null);
    assert_eq!(json["gates"]["boot_failure"]["max_ratio"], 2.0);
    assert!(!plan(&app, false).contains("boot-critical"));
}
