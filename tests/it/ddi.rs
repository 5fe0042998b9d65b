//! The hawkBit-compatible DDI endpoint against a real peer: the crates.io `hawkbit` client
//! (what Rust devices use to talk to Eclipse hawkBit) polls, uploads its attributes, fetches a
//! deployment, downloads the artifact from Convoy's artifact server with a resumed range
//! request, checks its SHA-256, and reports; a cancel goes the same way. Raw requests check
//! what a DDI client should never get away with: no token, someone else's token, a body that
//! contradicts the action, an oversized body, feedback on a closed action.

use convoy::link::ddi::wire::Execution as WireExecution;
use convoy::link::ddi::wire::{HandlingType, MaintenanceWindow};
use convoy::link::ddi::{
    ActionState, DdiArtifact, DdiConfig, DdiDeployment, DdiEvent, DdiHub, DdiServer, HubConfig,
    Outcome,
};
use convoy::link::http::{ArtifactServer, Content, ServerConfig};
use convoy_e2e::pseudo_random_bytes;
use hawkbit::ddi::{Client, ClientAuthorization, Execution, Finished};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const GATEWAY: &str = "depot-gateway-secret";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

struct Setup {
    hub: Arc<DdiHub>,
    events: mpsc::Receiver<DdiEvent>,
    ddi: DdiServer,
    artifacts: ArtifactServer,
    deployment: Arc<DdiDeployment>,
    bytes: Vec<u8>,
}

async fn setup(dir: &Path) -> Setup {
    let bytes = pseudo_random_bytes(300_001, 0x9e37_79b9_7f4a_7c15);
    let file = dir.join("app-2.1.0.bin");
    std::fs::write(&file, &bytes).expect("write artifact");
    let artifacts = ArtifactServer::start(
        Content::Files(BTreeMap::from([("app-2.1.0.bin".to_owned(), file.clone())])),
        ServerConfig::new(local()),
    )
    .await
    .expect("artifact server");
    let (hub, events) = DdiHub::new(HubConfig {
        sleep_secs: 60,
        gateway_token: Some(GATEWAY.into()),
        ..HubConfig::default()
    });
    let ddi = DdiServer::start(DdiConfig::new(local()), Arc::clone(&hub))
        .await
        .expect("ddi server");
    let artifact =
        DdiArtifact::from_file(&file, "app-2.1.0.bin", &artifacts.url_of("app-2.1.0.bin"))
            .expect("hash artifact");
    let deployment = Arc::new(DdiDeployment {
        release_id: "app-2.1.0".into(),
        part: "firmware".into(),
        name: "app".into(),
        version: "2.1.0".into(),
        artifacts: vec![artifact],
        metadata: vec![("convoy.release".into(), "app-2.1.0".into())],
        download: HandlingType::Forced,
        update: HandlingType::Attempt,
        maintenance_window: Some(MaintenanceWindow::Available),
    });
    Setup {
        hub,
        events,
        ddi,
        artifacts,
        deployment,
        bytes,
    }
}

fn client(base: &str, controller: &str, auth: ClientAuthorization) -> Client {
    Client::new(
        base,
        "DEFAULT",
        controller,
        auth,
        None,
        None,
        Some(Duration::from_secs(10)),
    )
    .expect("ddi client")
}

fn drain(rx: &mut mpsc::Receiver<DdiEvent>) -> Vec<DdiEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn hawkbit_client_polls_downloads_with_a_resumed_range_and_reports() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = setup(dir.path()).await;
        let ddi = client(
            &s.ddi.base_url(),
            "van-0042",
            ClientAuthorization::GatewayToken(GATEWAY.into()),
        );

        // First contact: nothing to install, attributes asked for.
        let reply = ddi.poll().await.expect("first poll");
        assert_eq!(
            reply.polling_sleep().expect("sleep"),
            Duration::from_mins(1)
        );
        assert!(reply.update().is_none(), "nothing assigned yet");
        let config = reply
            .config_data_request()
            .expect("attributes are asked for");
        config
            .upload(
                Execution::Closed,
                Finished::Success,
                None,
                serde_json::json!({"HwRevision": "B2", "serial": "SN-42"}),
                vec![],
            )
            .await
            .expect("upload attributes");
        let view = s
            .hub
            .controller("van-0042")
            .expect("registered at first poll");
        assert_eq!(view.attributes["HwRevision"], "B2");
        assert!(
            ddi.poll()
                .await
                .expect("poll")
                .config_data_request()
                .is_none(),
            "attributes are asked for only until they arrive"
        );

        // A deployment: the client sees it, fetches it and reads what the hub assigned.
        let action = s
            .hub
            .assign("van-0042", Arc::clone(&s.deployment))
            .expect("assign");
        let reply = ddi.poll().await.expect("poll");
        let update = reply
            .update()
            .expect("deployment link")
            .fetch()
            .await
            .expect("deployment base");
        assert_eq!(update.action_id(), action.to_string());
        assert_eq!(update.download_type(), hawkbit::ddi::Type::Forced);
        assert_eq!(update.update_type(), hawkbit::ddi::Type::Attempt);
        let chunks: Vec<_> = update.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            (chunks[0].part(), chunks[0].name(), chunks[0].version()),
            ("firmware", "app", "2.1.0")
        );
        assert_eq!(
            chunks[0].metadata().collect::<Vec<_>>(),
            [("convoy.release", "app-2.1.0")]
        );
        let artifacts: Vec<_> = chunks[0].artifacts().collect();
        assert_eq!(artifacts[0].filename(), "app-2.1.0.bin");
        assert_eq!(artifacts[0].size() as usize, s.bytes.len());
        update
            .send_feedback(Execution::Proceeding, Finished::None, vec!["Downloading"])
            .await
            .expect("proceeding");

        // A download that broke off in a tunnel left a part file; the client resumes it with a
        // range request and the artifact server answers 206.
        let dest = dir.path().join("download");
        std::fs::create_dir_all(dest.join("app")).expect("mkdir");
        std::fs::write(dest.join("app/app-2.1.0.bin.part"), &s.bytes[..120_000]).expect("part");
        let downloaded = update.download(&dest).await.expect("download");
        assert_eq!(downloaded.len(), 1);
        downloaded[0].check_sha256().await.expect("sha256 matches");
        let got = std::fs::read(dest.join("app/app-2.1.0.bin")).expect("downloaded file");
        assert!(got == s.bytes, "the resumed file equals the artifact");
        let stats = s.artifacts.stats();
        assert_eq!((stats.partial, stats.full), (1, 0), "{stats:?}");

        update
            .send_feedback(Execution::Closed, Finished::Success, vec!["Installed"])
            .await
            .expect("closed");
        let after = ddi.poll().await.expect("poll after");
        assert!(
            after.update().is_none(),
            "a closed action is not offered again"
        );

        let view = s.hub.controller("van-0042").expect("known");
        assert_eq!(view.actions[0].state, ActionState::Closed(Outcome::Success));
        assert_eq!(view.actions[0].last_details, ["Installed"]);

        let events = drain(&mut s.events);
        let summary: Vec<String> = events
            .iter()
            .map(|e| match e {
                DdiEvent::Registered { controller } => format!("registered {controller}"),
                DdiEvent::ConfigData { data, .. } => format!("config {}", data["serial"]),
                DdiEvent::Feedback {
                    action_id,
                    release_id,
                    status,
                    closed,
                    ..
                } => format!(
                    "feedback {action_id} {release_id} {:?} {closed:?}",
                    status.execution
                ),
                other @ DdiEvent::CancelFeedback { .. } => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "registered van-0042".to_owned(),
                "config SN-42".to_owned(),
                format!("feedback {action} app-2.1.0 Proceeding None"),
                format!("feedback {action} app-2.1.0 Closed Some(Success)"),
            ]
        );
        let ddi_stats = s.ddi.stats();
        assert_eq!(ddi_stats.polls, 4, "{ddi_stats:?}");
        s.ddi.shutdown().await;
        s.artifacts.shutdown().await;
    });
}

#[test]
fn hawkbit_client_confirms_a_cancel_and_the_action_ends_canceled() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = setup(dir.path()).await;
        s.hub
            .register("van-7", Some("van-7-token"))
            .expect("register");
        let ddi = client(
            &s.ddi.base_url(),
            "van-7",
            ClientAuthorization::TargetToken("van-7-token".into()),
        );
        let action = s
            .hub
            .assign("van-7", Arc::clone(&s.deployment))
            .expect("assign");
        assert!(ddi.poll().await.expect("poll").update().is_some());
        let cancel_id = s.hub.cancel("van-7", action).expect("cancel");
        let reply = ddi.poll().await.expect("poll");
        assert!(
            reply.update().is_none(),
            "a canceling action is not offered"
        );
        let cancel = reply.cancel_action().expect("cancel link");
        assert_eq!(cancel.id().await.expect("stop id"), action.to_string());
        cancel
            .send_feedback(Execution::Closed, Finished::Success, vec!["Canceled"])
            .await
            .expect("confirm cancel");
        let view = s.hub.controller("van-7").expect("known");
        assert_eq!(
            view.actions[0].state,
            ActionState::Closed(Outcome::Canceled)
        );
        let stopped: Vec<_> = drain(&mut s.events)
            .into_iter()
            .filter_map(|e| match e {
                DdiEvent::CancelFeedback {
                    action_id,
                    cancel_id: c,
                    stopped,
                    ..
                } => Some((action_id, c, stopped)),
                _ => None,
            })
            .collect();
        assert_eq!(stopped, [(action, cancel_id, true)]);
        s.ddi.shutdown().await;
        s.artifacts.shutdown().await;
    });
}

#[test]
fn ddi_refuses_strangers_contradictions_and_oversized_bodies() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = setup(dir.path()).await;
        s.hub.register("van-1", Some("t-1")).expect("register");
        s.hub.register("van-2", Some("t-2")).expect("register");
        let action = s
            .hub
            .assign("van-1", Arc::clone(&s.deployment))
            .expect("assign");
        let http = reqwest::Client::new();
        let base = format!("{}/DEFAULT/controller/v1", s.ddi.base_url());

        let status = |r: reqwest::Response| r.status().as_u16();
        let poll = |token: Option<&str>, who: &str| {
            let mut rq = http.get(format!("{base}/{who}"));
            if let Some(t) = token {
                rq = rq.header("Authorization", t.to_owned());
            }
            rq.send()
        };
        assert_eq!(status(poll(None, "van-1").await.expect("send")), 401);
        assert_eq!(
            status(poll(Some("TargetToken t-2"), "van-1").await.expect("send")),
            401,
            "van-2's token does not open van-1"
        );
        assert_eq!(
            status(poll(Some("GatewayToken wrong"), "van-1").await.expect("send")),
            401
        );
        // Unauthenticated requests learn nothing, not even that a route does not exist.
        let r = http
            .get(format!("{}/OTHER/controller/v1/van-1/nothing", s.ddi.base_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(status(r), 401);
        assert_eq!(
            status(poll(Some("TargetToken t-1"), "van-1").await.expect("send")),
            200
        );

        let feedback_url = format!("{base}/van-1/deploymentBase/{action}/feedback");
        let post = |body: String| {
            http.post(&feedback_url)
                .header("Authorization", "TargetToken t-1")
                .header("Content-Type", "application/json")
                .body(body)
                .send()
        };
        let r = post(
            r#"{"status":{"execution":"installing","result":{"finished":"none"}}}"#.into(),
        )
        .await
        .expect("send");
        assert_eq!(r.status().as_u16(), 400);
        let body = r.text().await.expect("body");
        assert!(body.contains("status.execution"), "names the field: {body}");

        let r = post(
            r#"{"status":{"execution":"closed","result":{"finished":"none"}}}"#.into(),
        )
        .await
        .expect("send");
        assert_eq!(r.status().as_u16(), 400);
        assert!(r.text().await.expect("body").contains("status.result.finished"));

        let huge = format!(
            r#"{{"status":{{"execution":"proceeding","result":{{"finished":"none"}},"details":["{}"]}}}}"#,
            "x".repeat(100_000)
        );
        assert_eq!(status(post(huge).await.expect("send")), 413);

        let wrong_action = format!("{base}/van-1/deploymentBase/{}/feedback", action + 100);
        let r = http
            .post(wrong_action)
            .header("Authorization", "TargetToken t-1")
            .body(r#"{"status":{"execution":"proceeding","result":{"finished":"none"}}}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(status(r), 404);

        let done = r#"{"status":{"execution":"closed","result":{"finished":"failure"},"details":["flash write failed"]}}"#;
        assert_eq!(status(post(done.into()).await.expect("send")), 200);
        assert_eq!(status(post(done.into()).await.expect("send")), 410);
        let view = s.hub.controller("van-1").expect("known");
        assert_eq!(view.actions[0].state, ActionState::Closed(Outcome::Failure));
        assert_eq!(view.actions[0].last_execution, Some(WireExecution::Closed));

        let r = http
            .delete(format!("{base}/van-1"))
            .header("Authorization", "TargetToken t-1")
            .send()
            .await
            .expect("send");
        assert_eq!(status(r), 405);
        let st = s.ddi.stats();
        assert!(st.unauthorized >= 4 && st.bad_request >= 2, "{st:?}");
    });
}

/// `convoy ddi serve` as an operator runs it: a fleet cache, a signed release, a gateway token
/// and per-device tokens; a DDI client of an eligible device installs and reports, an
/// ineligible one is offered nothing, and the cache records both.
#[test]
fn convoy_ddi_serve_offers_the_release_to_eligible_devices_and_records_feedback() {
    use convoy_e2e::{SignedWorkspace, WorkspaceSpec, convoy_bin, convoy_ok, free_port};
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let ws = SignedWorkspace::new(&WorkspaceSpec {
        devices: 300,
        seed: 11,
        artifact_bytes: 150_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    });
    let p = |name: &str| ws.path(name);
    let fleet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("fleet.json")).expect("fleet"))
            .expect("fleet json");
    let devices = fleet["devices"].as_array().expect("devices");
    let id_where = |t300: bool| {
        devices
            .iter()
            .find(|d| (d["model"] == "T300") == t300)
            .and_then(|d| d["id"].as_str())
            .expect("a device of that kind")
            .to_owned()
    };
    let (eligible, other) = (id_where(true), id_where(false));
    std::fs::write(p("gateway"), format!("{GATEWAY}\n")).expect("gateway token");
    std::fs::write(
        p("tokens.csv"),
        format!("# controller,token\n{eligible},eligible-device-token\n"),
    )
    .expect("tokens");

    let port = free_port();
    let mut child = Command::new(convoy_bin())
        .args([
            "ddi",
            "serve",
            "--db",
            &p("cache.db"),
            "--release",
            &p("release.json"),
            "--artifact",
            &p("fw.img"),
            "--trust",
            &p("trust"),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--gateway-token-file",
            &p("gateway"),
            "--target-tokens",
            &p("tokens.csv"),
            "--sleep-secs",
            "1",
            "--max-wall-secs",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn convoy ddi serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("utf-8");
    assert!(first.contains("serving release"), "{first}");

    let base = format!("http://127.0.0.1:{port}");
    runtime().block_on(async {
        let work = tempfile::tempdir().expect("download dir");
        let ddi = client(
            &base,
            &eligible,
            ClientAuthorization::TargetToken("eligible-device-token".into()),
        );
        let update = ddi
            .poll()
            .await
            .expect("poll")
            .update()
            .expect("the eligible device is offered the release")
            .fetch()
            .await
            .expect("deployment");
        let chunk = update.chunks().next().expect("one chunk");
        assert_eq!(chunk.version(), "2.5.0");
        let manifest_url = chunk
            .metadata()
            .find(|(k, _)| *k == "convoy.manifest_url")
            .map(|(_, v)| v.to_owned())
            .expect("the signed manifest's URL");
        let signed = reqwest::get(&manifest_url)
            .await
            .expect("get manifest")
            .bytes()
            .await
            .expect("manifest bytes");
        assert_eq!(
            signed.as_ref(),
            std::fs::read(p("release.json"))
                .expect("release")
                .as_slice()
        );
        let files = update.download(work.path()).await.expect("download");
        files[0].check_sha256().await.expect("sha256");
        update
            .send_feedback(
                Execution::Closed,
                Finished::Success,
                vec!["installed 2.5.0"],
            )
            .await
            .expect("feedback");

        let stranger = client(
            &base,
            &other,
            ClientAuthorization::GatewayToken(GATEWAY.into()),
        );
        stranger.poll().await.expect("first poll");
        // The offer (or not) is decided when the hub's event is handled; poll until it is.
        let mut offered = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            offered |= stranger.poll().await.expect("poll").update().is_some();
        }
        assert!(!offered, "a device of another model is offered nothing");
    });

    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}, output {rest:?}");
    let summary = rest.last().expect("a summary line");
    assert!(
        summary.contains("2 device(s) polled") && summary.contains("1 installed"),
        "{summary}"
    );

    let db = rusqlite::Connection::open(p("cache.db")).expect("cache");
    let kinds = |id: &str| -> Vec<String> {
        db.prepare("SELECT kind FROM device_events WHERE device_id = ?1 ORDER BY seq")
            .expect("prepare")
            .query_map([id], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(kinds(&eligible), ["offered", "installed"]);
    assert_eq!(kinds(&other), ["ddi.not_offered"]);
    drop(db);

    // Serving again: the device that reported the release installed is not offered it again.
    let again = convoy_ok(&[
        "ddi",
        "serve",
        "--db",
        &p("cache.db"),
        "--release",
        &p("release.json"),
        "--artifact",
        &p("fw.img"),
        "--trust",
        &p("trust"),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--target-tokens",
        &p("tokens.csv"),
        "--max-wall-secs",
        "1",
    ]);
    assert!(again.contains("0 offered"), "{again}");
    let db = rusqlite::Connection::open(p("cache.db")).expect("cache");
    let reason: String = db
        .query_row(
            "SELECT json_extract(payload, '$.reason') FROM device_events
             WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1",
            [&eligible],
            |r| r.get(0),
        )
        .expect("the last event");
    assert_eq!(reason, "already installed t300-2.5.0");
    convoy_ok(&["audit", "verify", "--db", &p("cache.db")]);
}
