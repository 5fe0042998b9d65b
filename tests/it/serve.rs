//! `convoy serve` against a real server on 127.0.0.1, called with reqwest: authentication and
//! roles, body and rate limits, JSON errors naming the field, the audit trail of a write, the
//! device query's filters, paging and order against the generated fleet, rollout timelines,
//! the live event stream, TLS with a certificate made in the test, and the token commands.

use convoy::serve::auth::{self, Role};
use convoy::serve::{ServeConfig, Server};
use convoy::store::Store;
use convoy_core::fleet::Fleet;
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use convoy_e2e::api::{get, post};
use convoy_e2e::{convoy, convoy_ok};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const DEVICES: usize = 400;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cache: PathBuf,
    fleet: Fleet,
    viewer: String,
    dispatcher: String,
}

/// A cache holding a generated fleet and two tokens (a viewer and a dispatcher).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache.db");
    let fleet = synth::generate(&SynthOptions {
        devices: DEVICES,
        seed: 9,
        now: Timestamp::from_secs(1_795_000_000),
    });
    let mut store = Store::open(&cache).expect("open the cache");
    store.replace_fleet(&fleet, None).expect("write the fleet");
    let now = Timestamp::from_secs(1_795_000_000);
    let viewer = auth::add_token(&store, "vera", Role::Viewer, "operator:test", now)
        .expect("viewer token")
        .token;
    let dispatcher = auth::add_token(&store, "dana", Role::Dispatcher, "operator:test", now)
        .expect("dispatcher token")
        .token;
    Fixture {
        dir: dir.path().to_owned(),
        cache,
        fleet,
        viewer,
        dispatcher,
        _dir: dir,
    }
}

fn config(cache: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(cache.to_owned(), "127.0.0.1:0".parse().expect("addr"));
    c.poll_interval = Duration::from_millis(100);
    // Tests make many requests quickly; the rate-limit test sets its own.
    c.rate_per_sec = 10_000.0;
    c.rate_burst = 10_000;
    c
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn finding_json() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/findings/t300-remote-rce.json"),
    )
    .expect("finding fixture")
}

#[test]
fn unauthenticated_requests_get_only_401() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let base = server.base_url();
        for path in [
            "/api/v1/fleet",
            "/api/v1/devices",
            "/nowhere",
            "/api/v1/nothing/here",
        ] {
            let (status, body) = get(&c, &format!("{base}{path}"), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            assert!(body.get("devices").is_none(), "{path} leaked data: {body}");
            let (status, _) = get(&c, &format!("{base}{path}"), Some("cvy_not_a_token")).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with a wrong token"
            );
        }
        let resp = c
            .post(format!("{base}/api/v1/findings"))
            .body(finding_json())
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key("www-authenticate"));
        // With a token, an unknown path is 404: the 401 above did not depend on the path.
        let (status, _) = get(&c, &format!("{base}/api/v1/nothing"), Some(&f.viewer)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, who) = get(&c, &format!("{base}/api/v1/whoami"), Some(&f.viewer)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(who["operator"], "vera");
        assert_eq!(who["role"], "viewer");
        assert_eq!(server.stats().unauthorized, 9);
        server.shutdown().await;
    });
}

#[test]
fn viewer_cannot_write_and_writes_are_audited_with_the_operator() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/findings", server.base_url());
        let audit_before = Store::open(&f.cache)
            .expect("open")
            .audit_entries(None)
            .expect("audit")
            .len();
        let (status, body) = post(&c, &url, &f.viewer, finding_json()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("vera") && e.contains("dispatcher")),
            "{body}"
        );
        // Nothing was stored and nothing audited.
        let store = Store::open(&f.cache).expect("open");
        assert_eq!(
            store.audit_entries(None).expect("audit").len(),
            audit_before
        );
        let n: i64 = rusqlite::Connection::open(store.path())
            .expect("a second connection to the cache")
            .query_row("SELECT count(*) FROM findings", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0);

        let (status, body) = post(&c, &url, &f.dispatcher, finding_json()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // The scorecard is the one convoy_core computes for this fleet (same `now` up to the
        // second, which does not change which of these devices are affected).
        let finding: convoy_core::risk::Finding =
            serde_json::from_slice(&finding_json()).expect("finding");
        let expected = convoy_core::risk::score(
            &finding,
            &f.fleet,
            &convoy_core::risk::ScoringPolicy::default(),
            convoy::now(),
        )
        .expect("score");
        assert_eq!(
            body["scorecard"]["affected_devices"].as_u64(),
            Some(expected.affected_devices as u64)
        );
        assert_eq!(
            body["scorecard"]["tier"],
            serde_json::to_value(expected.tier).expect("tier")
        );
        assert!(
            (body["scorecard"]["points"].as_f64().expect("points") - expected.points).abs() < 1e-9
        );
        let entries = store.audit_entries(None).expect("audit");
        let last = entries.last().expect("an entry");
        assert_eq!(last.seq, body["audit_seq"].as_i64().expect("seq"));
        assert_eq!(last.actor, "operator:dana");
        assert_eq!(last.action, "finding.score");
        assert!(last.payload.contains("SEC-2026-014"), "{}", last.payload);
        assert!(store.verify_audit().expect("verify").problem.is_none());

        // The same through the API: the stored finding, its score and the audit verification.
        let base = server.base_url();
        let (status, stored) = get(
            &c,
            &format!("{base}/api/v1/findings/SEC-2026-014"),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored["scores"].as_array().map(Vec::len), Some(1));
        assert_eq!(stored["scores"][0]["scorecard"], body["scorecard"]);
        let (_, verify) = get(&c, &format!("{base}/api/v1/audit/verify"), Some(&f.viewer)).await;
        assert_eq!(verify["ok"], true, "{verify}");
        assert_eq!(verify["entries"].as_u64(), Some(entries.len() as u64));
        let (_, log) = get(&c, &format!("{base}/api/v1/audit?limit=1"), Some(&f.viewer)).await;
        assert_eq!(log[0]["actor"], "operator:dana");
        server.shutdown().await;
    });
}

#[test]
fn bad_json_names_the_field_and_big_bodies_get_413() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let mut cfg = config(&f.cache);
        cfg.max_body_bytes = 4096;
        let server = Server::start(cfg).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/findings", server.base_url());
        let mut finding: Value = serde_json::from_slice(&finding_json()).expect("json");
        let check = |body: Value, field: &str| {
            let c = c.clone();
            let url = url.clone();
            let token = f.dispatcher.clone();
            let field = field.to_owned();
            async move {
                let (status, answer) =
                    post(&c, &url, &token, serde_json::to_vec(&body).expect("encode")).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
                assert_eq!(answer["field"], field.as_str(), "{answer}");
                assert!(
                    answer["error"].as_str().is_some_and(|e| e.contains(&field)),
                    "{answer}"
                );
            }
        };
        finding["classification"] = Value::String("cosmic-rays".into());
        check(finding.clone(), "classification").await;
        finding["classification"] = Value::String("security".into());
        finding["exploitation"]["active"] = Value::String("yes".into());
        check(finding.clone(), "exploitation.active").await;
        finding["exploitation"]["active"] = Value::Bool(true);
        finding["affected"]["models"][0] = Value::from(300);
        check(finding.clone(), "affected.models[0]").await;
        finding["affected"]["models"][0] = Value::String("T300".into());
        finding["colour"] = Value::String("red".into());
        check(finding.clone(), "colour").await;
        let mut missing = finding.clone();
        missing.as_object_mut().expect("object").remove("colour");
        missing.as_object_mut().expect("object").remove("affected");
        check(missing, "affected").await;
        // A finding serde accepts but the scorer refuses names its field too.
        let mut empty_id = finding.clone();
        empty_id.as_object_mut().expect("object").remove("colour");
        empty_id["id"] = Value::String("  ".into());
        check(empty_id, "id").await;
        let (status, answer) = post(&c, &url, &f.dispatcher, b"{\"id\": ".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["field"].is_string(), "{answer}");

        // 413: declared by Content-Length, and streamed without one.
        let big = vec![b' '; 4097];
        let (status, answer) = post(&c, &url, &f.dispatcher, big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        let addr = server.addr();
        let token = f.dispatcher.clone();
        let status_line = tokio::task::spawn_blocking(move || chunked_post(addr, &token, 10, 1000))
            .await
            .expect("raw client");
        assert!(status_line.contains(" 413 "), "{status_line}");
        // Query parameters are named too.
        let (status, answer) = get(
            &c,
            &format!("{}/api/v1/devices?limit=lots", server.base_url()),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["field"], "limit");
        assert_eq!(server.stats().too_large, 2);
        server.shutdown().await;
    });
}

/// POSTs `chunks` chunks of `chunk_bytes` spaces with chunked transfer encoding (so with no
/// Content-Length) over a raw socket and returns the response's status line.
fn chunked_post(
    addr: std::net::SocketAddr,
    token: &str,
    chunks: usize,
    chunk_bytes: usize,
) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST /api/v1/findings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .expect("head");
    let chunk = " ".repeat(chunk_bytes);
    for _ in 0..chunks {
        // The server may answer and close before the last chunk; that is the point.
        if write!(s, "{chunk_bytes:x}\r\n{chunk}\r\n").is_err() {
            break;
        }
    }
    let _ = write!(s, "0\r\n\r\n");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("status line");
    line
}

#[test]
fn rate_limit_answers_429_per_token() {
    let _turn = convoy_e2e::alone();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let mut cfg = config(&f.cache);
        cfg.rate_per_sec = 0.5;
        cfg.rate_burst = 3;
        let server = Server::start(cfg).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/whoami", server.base_url());
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(get(&c, &url, Some(&f.viewer)).await.0);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        let resp = c
            .get(&url)
            .bearer_auth(&f.viewer)
            .send()
            .await
            .expect("get");
        assert!(resp.headers().contains_key("retry-after"));
        // Another operator's token has its own bucket.
        assert_eq!(get(&c, &url, Some(&f.dispatcher)).await.0, StatusCode::OK);
        assert_eq!(server.stats().rate_limited, 3);
        server.shutdown().await;
    });
}

#[test]
fn device_query_filters_pages_in_id_order() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    // Reference: the generated fleet, filtered and sorted here, independently of the SQL.
    let firmware = |d: &convoy_core::fleet::Device| d.firmware().map(|v| v.to_string());
    let mut t300: Vec<&convoy_core::fleet::Device> = f
        .fleet
        .devices
        .iter()
        .filter(|d| d.model == "T300")
        .collect();
    t300.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(
        t300.len() > 20,
        "the fixture fleet has {} T300s",
        t300.len()
    );
    let version = firmware(t300[0]).expect("firmware");
    let region = t300[0].region.clone();
    let mut narrowed: Vec<&str> = t300
        .iter()
        .filter(|d| firmware(d).as_deref() == Some(&version) && d.region == region)
        .map(|d| d.id.as_str())
        .collect();
    narrowed.sort_unstable();
    // One device gets an update history: its state becomes `confirmed`.
    let confirmed_id = t300[1].id.clone();
    {
        let mut store = Store::open(&f.cache).expect("open");
        for kind in ["offered", "downloading", "confirmed", "report.rejected"] {
            store
                .append_device_event(
                    &confirmed_id,
                    Some("r-1"),
                    Timestamp::from_secs(1_795_000_100),
                    kind,
                    &serde_json::json!({}),
                )
                .expect("event");
        }
    }
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let base = server.base_url();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let url = match &after {
                Some(a) => format!("{base}/api/v1/devices?model=T300&limit=7&after={a}"),
                None => format!("{base}/api/v1/devices?model=T300&limit=7"),
            };
            let (status, page) = get(&c, &url, Some(&f.viewer)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let devices = page["devices"].as_array().expect("devices");
            assert!(devices.len() <= 7);
            seen.extend(
                devices
                    .iter()
                    .map(|d| d["id"].as_str().expect("id").to_owned()),
            );
            pages += 1;
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = t300.iter().map(|d| d.id.clone()).collect();
        assert_eq!(seen, expected);
        assert_eq!(pages, expected.len().div_ceil(7).max(1));

        let (_, page) = get(
            &c,
            &format!(
                "{base}/api/v1/devices?model=T300&version={version}&region={region}&limit=1000"
            ),
            Some(&f.viewer),
        )
        .await;
        let ids: Vec<&str> = page["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, narrowed);
        assert!(page["next_after"].is_null());

        let (_, page) = get(
            &c,
            &format!("{base}/api/v1/devices?state=confirmed"),
            Some(&f.viewer),
        )
        .await;
        let ids: Vec<&str> = page["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [confirmed_id.as_str()]);

        let (status, one) = get(
            &c,
            &format!("{base}/api/v1/devices/{confirmed_id}?history=2"),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["device"]["state"], "confirmed");
        assert_eq!(one["device"]["model"], "T300");
        let kinds: Vec<&str> = one["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(kinds, ["report.rejected", "confirmed"]);
        let (status, _) = get(
            &c,
            &format!("{base}/api/v1/devices/NO-SUCH"),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (_, summary) = get(&c, &format!("{base}/api/v1/fleet"), Some(&f.viewer)).await;
        assert_eq!(summary["devices"].as_u64(), Some(DEVICES as u64));
        assert_eq!(
            summary["by_model"]["T300"].as_u64(),
            Some(t300.len() as u64)
        );
        assert_eq!(summary["by_state"]["confirmed"].as_u64(), Some(1));
        assert_eq!(
            summary["by_state"]["idle"].as_u64(),
            Some(DEVICES as u64 - 1)
        );
        server.shutdown().await;
    });
}

/// Reads the SSE stream until `want` returns true for the text so far, or the deadline.
async fn read_stream_until(
    resp: &mut reqwest::Response,
    deadline: Instant,
    want: impl Fn(&str) -> bool,
) -> String {
    let mut text = String::new();
    while !want(&text) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "stream did not deliver in time; got:\n{text}"
        );
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => panic!("stream ended; got:\n{text}"),
            Ok(Err(e)) => panic!("stream failed: {e}; got:\n{text}"),
            Err(elapsed) => panic!("stream did not deliver in time ({elapsed}); got:\n{text}"),
        }
    }
    text
}

#[test]
fn event_stream_pushes_events_written_after_connecting() {
    let _turn = convoy_e2e::alone();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        // An event from before the server started is history, not news.
        Store::open(&f.cache)
            .expect("open")
            .append_event(
                "r-old",
                Timestamp::from_secs(1),
                "rollout.created",
                "old",
                &serde_json::json!({}),
            )
            .expect("event");
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let mut resp = c
            .get(format!("{}/api/v1/events", server.base_url()))
            .bearer_auth(&f.viewer)
            .send()
            .await
            .expect("subscribe");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        read_stream_until(&mut resp, Instant::now() + Duration::from_secs(5), |t| {
            t.contains(": connected")
        })
        .await;
        // Another writer (as `convoy rollout run` would be) appends to the cache.
        let written = Instant::now();
        tokio::task::spawn_blocking({
            let cache = f.cache.clone();
            move || {
                let mut store = Store::open(&cache).expect("open");
                store
                    .append_event(
                        "r-live",
                        Timestamp::from_secs(1_795_000_200),
                        "rollout.paused",
                        "operator:dana",
                        &serde_json::json!({"reason": "crash rate"}),
                    )
                    .expect("rollout event");
                store
                    .append_device_event(
                        "VAN-LIVE",
                        Some("r-live"),
                        Timestamp::from_secs(1_795_000_201),
                        "reverted",
                        &serde_json::json!({"slot": "a"}),
                    )
                    .expect("device event");
            }
        })
        .await
        .expect("writer");
        let text = read_stream_until(&mut resp, written + Duration::from_secs(5), |t| {
            t.contains("event: device")
        })
        .await;
        // Within a second of the write (the poll runs every 100 ms here).
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "{:?}",
            written.elapsed()
        );
        assert!(!text.contains("r-old"), "{text}");
        let rollout = text.find("event: rollout").expect("rollout event");
        let device = text.find("event: device").expect("device event");
        assert!(rollout < device, "{text}");
        let data: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("JSON data"))
            .collect();
        assert_eq!(data.len(), 2, "{text}");
        assert_eq!(data[0]["rollout_id"], "r-live");
        assert_eq!(data[0]["kind"], "rollout.paused");
        assert_eq!(data[0]["payload"]["reason"], "crash rate");
        assert_eq!(data[1]["device_id"], "VAN-LIVE");
        assert_eq!(data[1]["kind"], "reverted");

        // The timeline endpoint shows the same rollout.
        let (_, rollouts) = get(
            &c,
            &format!("{}/api/v1/rollouts", server.base_url()),
            Some(&f.viewer),
        )
        .await;
        let ids: Vec<&str> = rollouts
            .as_array()
            .expect("list")
            .iter()
            .map(|r| r["rollout_id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, ["r-live", "r-old"]);
        let (status, timeline) = get(
            &c,
            &format!("{}/api/v1/rollouts/r-live/timeline", server.base_url()),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(timeline["events"][0]["kind"], "rollout.paused");
        // Shutdown ends the stream instead of waiting for it.
        let stopped = Instant::now();
        server.shutdown().await;
        assert!(stopped.elapsed() < Duration::from_secs(4));
    });
}

/// The ids in an SSE text, in order.
fn sse_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_stream_resumed_with_last_event_id_gets_what_it_missed_once() {
    let _turn = convoy_e2e::alone();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/events", server.base_url());
        let write = |kind: &'static str, device: &'static str| {
            let cache = f.cache.clone();
            tokio::task::spawn_blocking(move || {
                let mut store = Store::open(&cache).expect("open");
                store
                    .append_event(
                        "r-resume",
                        Timestamp::from_secs(1_795_000_300),
                        kind,
                        "gate",
                        &serde_json::json!({}),
                    )
                    .expect("rollout event");
                store
                    .append_device_event(
                        device,
                        Some("r-resume"),
                        Timestamp::from_secs(1_795_000_301),
                        "offered",
                        &serde_json::json!({}),
                    )
                    .expect("device event");
            })
        };
        // A first connection sees two events; its last id is where it stopped.
        let mut first = c
            .get(&url)
            .bearer_auth(&f.viewer)
            .send()
            .await
            .expect("subscribe");
        read_stream_until(&mut first, Instant::now() + Duration::from_secs(5), |t| {
            t.contains(": connected")
        })
        .await;
        write("wave.started", "VAN-A").await.expect("writer");
        let text = read_stream_until(&mut first, Instant::now() + Duration::from_secs(5), |t| {
            t.contains("VAN-A")
        })
        .await;
        drop(first);
        let last = sse_ids(&text).pop().expect("an id");
        // Missed while disconnected.
        write("rollout.paused", "VAN-B").await.expect("writer");
        // Reconnected from its last id: the missed events first, then live ones, none twice.
        let mut again = c
            .get(&url)
            .bearer_auth(&f.viewer)
            .header("Last-Event-ID", &last)
            .send()
            .await
            .expect("resubscribe");
        assert_eq!(again.status(), StatusCode::OK);
        let replayed =
            read_stream_until(&mut again, Instant::now() + Duration::from_secs(5), |t| {
                t.contains("VAN-B")
            })
            .await;
        assert!(replayed.contains("rollout.paused"), "{replayed}");
        assert!(
            !replayed.contains("VAN-A") && !replayed.contains("wave.started"),
            "{replayed}"
        );
        write("rollout.resumed", "VAN-C").await.expect("writer");
        let live = read_stream_until(&mut again, Instant::now() + Duration::from_secs(5), |t| {
            t.contains("VAN-C")
        })
        .await;
        let text = replayed + &live;
        assert_eq!(text.matches("VAN-B").count(), 1, "{text}");
        assert_eq!(text.matches("rollout.paused").count(), 1, "{text}");
        let ids = sse_ids(&text);
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(ids.len(), 4, "two replayed, two live: {ids:?}");
        assert_eq!(sorted, ids, "no id twice");
        // An id this stream never sent is refused, naming the header.
        let resp = c
            .get(&url)
            .bearer_auth(&f.viewer)
            .header("Last-Event-ID", "yesterday")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["field"], "Last-Event-ID", "{body}");
        server.shutdown().await;
    });
}

#[test]
fn tls_with_a_self_signed_certificate() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_pem = cert.cert.pem();
    let cert_path = f.dir.join("cert.pem");
    let key_path = f.dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let rt = runtime();
    rt.block_on(async {
        let mut cfg = config(&f.cache);
        cfg.tls = Some((cert_path.clone(), key_path.clone()));
        let server = Server::start(cfg).await.expect("start with TLS");
        assert!(server.base_url().starts_with("https://"));
        let port = server.addr().port();
        let trusting = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("certificate"),
            )
            .resolve("localhost", server.addr())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let url = format!("https://localhost:{port}/api/v1/whoami");
        let (status, who) = get(&trusting, &url, Some(&f.dispatcher)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(who["operator"], "dana");
        let (status, _) = get(&trusting, &url, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A client that does not trust the certificate cannot talk to it at all.
        let plain = client();
        assert!(plain.get(&url).send().await.is_err());
        // Plain HTTP to the TLS port gets no answer either.
        assert!(
            plain
                .get(format!("http://127.0.0.1:{port}/api/v1/whoami"))
                .bearer_auth(&f.dispatcher)
                .send()
                .await
                .is_err()
        );
        server.shutdown().await;
    });
    // A key that does not fit the certificate is refused, naming both files.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("cert");
    std::fs::write(&key_path, other.signing_key.serialize_pem()).expect("write key");
    let mut cfg = config(&f.cache);
    cfg.tls = Some((cert_path, key_path));
    let err = rt
        .block_on(Server::start(cfg))
        .err()
        .expect("mismatched key refused");
    assert!(format!("{err:#}").contains("key.pem"), "{err:#}");
}

#[test]
fn token_commands_store_only_hashes_and_revoke() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let cache = f.cache.to_str().expect("utf-8 path");
    let out = convoy(&[
        "serve",
        "token",
        "add",
        "--cache",
        cache,
        "--operator",
        "olga",
        "--role",
        "admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(token.starts_with("cvy_"), "{token}");
    let store = Store::open(&f.cache).expect("open");
    let hashes: Vec<String> = rusqlite::Connection::open(store.path())
        .expect("a second connection to the cache")
        .prepare("SELECT sha256 FROM api_tokens ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(hashes.len(), 3);
    assert!(hashes.contains(&auth::token_hash(&token)));
    // The token itself is nowhere in the cache file.
    let bytes = std::fs::read(&f.cache).expect("read cache");
    let wal = std::fs::read(f.cache.with_extension("db-wal")).unwrap_or_default();
    let contains = |hay: &[u8]| hay.windows(token.len()).any(|w| w == token.as_bytes());
    assert!(!contains(&bytes) && !contains(&wal));

    let list = convoy_ok(&["serve", "token", "list", "--cache", cache, "--json"]);
    let list: Value = serde_json::from_str(&list).expect("json");
    let olga = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["operator"] == "olga")
        .expect("olga's token");
    assert_eq!(olga["role"], "admin");
    assert!(!list.to_string().contains(&token));
    let id = olga["id"].as_str().expect("id").to_owned();
    assert!(auth::lookup(&store, &token).expect("lookup").is_some());
    convoy_ok(&["serve", "token", "revoke", "--cache", cache, "--id", &id]);
    assert!(auth::lookup(&store, &token).expect("lookup").is_none());
    let again = convoy(&["serve", "token", "revoke", "--cache", cache, "--id", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&id));
    let bad = convoy(&[
        "serve",
        "token",
        "add",
        "--cache",
        cache,
        "--operator",
        "olga",
        "--role",
        "root",
    ]);
    assert!(!bad.status.success());
    let actions: Vec<String> = store
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "serve.token.add",
            "serve.token.add",
            "serve.token.add",
            "serve.token.revoke"
        ]
    );
}

#[test]
fn a_revoked_token_is_refused_by_the_running_server() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/whoami", server.base_url());
        assert_eq!(get(&c, &url, Some(&f.viewer)).await.0, StatusCode::OK);
        tokio::task::spawn_blocking({
            let cache = f.cache.clone();
            move || {
                let store = Store::open(&cache).expect("open");
                auth::revoke_tokens(
                    &store,
                    &auth::Revoke::Operator("vera"),
                    "operator:test",
                    Timestamp::from_secs(1_795_000_300),
                )
                .expect("revoke")
            }
        })
        .await
        .expect("revoker");
        let (status, body) = get(&c, &url, Some(&f.viewer)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(get(&c, &url, Some(&f.dispatcher)).await.0, StatusCode::OK);
        // A known path with the wrong method is 405, after authentication.
        let resp = c
            .delete(format!("{}/api/v1/devices", server.base_url()))
            .bearer_auth(&f.dispatcher)
            .send()
            .await
            .expect("delete");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        server.shutdown().await;
    });
}

#[test]
fn an_admin_manages_tokens_over_the_api_and_metrics_come_from_the_rollout_logs() {
    use convoy_core::rollout::sim::{SimConfig, SimFleet};
    use convoy_core::rollout::{ChangePath, Rollout, RolloutSpec, WaveSpec};
    let _turn = convoy_e2e::shared();
    let f = fixture();
    // A rollout played out by the core's simulated fleet, its log in the cache as the engine
    // writes it.
    let start = Timestamp::from_secs(1_795_000_000);
    let mut ids: Vec<String> = f.fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let spec = RolloutSpec {
        id: "ro-metrics".into(),
        release_id: "t300-2.6.0".into(),
        requested_by: "dana".into(),
        waves: vec![
            WaveSpec {
                name: "canary".into(),
                device_ids: ids[..50].to_vec(),
                soak_secs: 3_600,
            },
            WaveSpec {
                name: "fleet".into(),
                device_ids: ids[50..].to_vec(),
                soak_secs: 3_600,
            },
        ],
        gates: convoy_core::gates::GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut rollout = Rollout::new(start, spec, &f.fleet).expect("rollout");
    rollout.approve(start, "bob").expect("approve");
    rollout.approve(start, "carol").expect("approve");
    let mut sim = SimFleet::new(&f.fleet, &rollout, SimConfig::default(), start);
    sim.run(&mut rollout, start, start.plus_secs(10 * 86_400));
    let expected = convoy_core::metrics::rollout_metrics(&rollout);
    let admin = {
        let mut store = Store::open(&f.cache).expect("open");
        store
            .append_rollout_log("ro-metrics", 0, rollout.events())
            .expect("log");
        auth::add_token(&store, "ada", Role::Admin, "operator:test", start)
            .expect("admin token")
            .token
    };
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let base = format!("{}/api/v1", server.base_url());
        // Only an admin manages tokens.
        let (status, body) = get(&c, &format!("{base}/tokens"), Some(&f.dispatcher)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = post(
            &c,
            &format!("{base}/tokens"),
            &f.dispatcher,
            br#"{"operator": "mallory", "role": "admin"}"#.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // Bad bodies name the field.
        let (status, body) = post(
            &c,
            &format!("{base}/tokens"),
            &admin,
            br#"{"operator": "tom", "role": "overlord"}"#.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], "role", "{body}");
        // A new token works at once, and its secret is in the answer only.
        let (status, made) = post(
            &c,
            &format!("{base}/tokens"),
            &admin,
            br#"{"operator": "tom", "role": "approver"}"#.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        let token = made["token"].as_str().expect("token").to_owned();
        let id = made["id"].as_str().expect("id").to_owned();
        let (status, me) = get(&c, &format!("{base}/whoami"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["operator"], "tom");
        assert_eq!(me["role"], "approver");
        let (status, list) = get(&c, &format!("{base}/tokens"), Some(&admin)).await;
        assert_eq!(status, StatusCode::OK);
        let listed = list.as_array().expect("a list");
        assert!(
            listed
                .iter()
                .any(|t| t["id"] == id.as_str() && t["operator"] == "tom")
        );
        assert!(
            !list.to_string().contains(&token),
            "the list never shows a token"
        );
        // Revoked: refused on its next request; revoking it again is a 404.
        let (status, body) = post(
            &c,
            &format!("{base}/tokens/{id}/revoke"),
            &admin,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            get(&c, &format!("{base}/whoami"), Some(&token)).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = post(
            &c,
            &format!("{base}/tokens/{id}/revoke"),
            &admin,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        // The audit trail names the admin.
        let (_, audit) = get(&c, &format!("{base}/audit?limit=10"), Some(&f.viewer)).await;
        let actions: Vec<(String, String)> = audit
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["actor"].as_str().unwrap_or("").to_owned(),
                    e["action"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert!(
            actions.contains(&("operator:ada".into(), "serve.token.add".into())),
            "{actions:?}"
        );
        assert!(
            actions.contains(&("operator:ada".into(), "serve.token.revoke".into())),
            "{actions:?}"
        );
        // Metrics: the replayed log's figures, for any viewer.
        let (status, all) = get(&c, &format!("{base}/metrics"), Some(&f.viewer)).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        assert_eq!(all["summary"]["rollouts"], 1);
        assert_eq!(all["summary"]["completed"], u64::from(expected.completed));
        assert_eq!(all["rollouts"][0]["rollout_id"], "ro-metrics");
        assert_eq!(all["rollouts"][0]["healthy"], expected.healthy);
        assert_eq!(all["rollouts"][0]["targeted"], DEVICES as u64);
        let (status, one) = get(
            &c,
            &format!("{base}/rollouts/ro-metrics/metrics"),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(
            one["metrics"]["time_to_remediate_secs"],
            serde_json::json!(expected.time_to_remediate_secs)
        );
        let by_region: u64 = one["adoption"]
            .as_array()
            .expect("adoption")
            .iter()
            .filter(|a| a["attribute"] == "region")
            .map(|a| a["targeted"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(by_region, DEVICES as u64);
        let (status, _) = get(
            &c,
            &format!("{base}/rollouts/nope/metrics"),
            Some(&f.viewer),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        server.shutdown().await;
    });
}

/// A signed release stored in a cache with a generated fleet, and tokens for a viewer, a
/// dispatcher and three approvers.
struct RequestFixture {
    ws: convoy_e2e::SignedWorkspace,
    release_id: String,
    tokens: std::collections::HashMap<&'static str, String>,
}

fn request_fixture() -> RequestFixture {
    let ws = convoy_e2e::SignedWorkspace::new(&convoy_e2e::WorkspaceSpec {
        devices: 300,
        seed: 5,
        artifact_bytes: 10_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    });
    let out = ws.store_release();
    assert!(out.contains("stored release"), "{out}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ws.path("release.json")).expect("manifest"))
            .expect("manifest JSON");
    let release_id = manifest["signed"]["release"]["id"]
        .as_str()
        .expect("release id")
        .to_owned();
    let store = Store::open(Path::new(&ws.path("cache.db"))).expect("cache");
    let now = convoy::now();
    let mut tokens = std::collections::HashMap::new();
    for (name, role) in [
        ("vera", Role::Viewer),
        ("dana", Role::Dispatcher),
        ("alex", Role::Approver),
        ("sam", Role::Approver),
        ("erin", Role::Admin),
    ] {
        let t = auth::add_token(&store, name, role, "operator:test", now).expect("token");
        tokens.insert(name, t.token);
    }
    RequestFixture {
        ws,
        release_id,
        tokens,
    }
}

#[test]
fn a_release_posted_over_the_api_is_verified_before_it_is_stored() {
    let _turn = convoy_e2e::shared();
    let ws = convoy_e2e::SignedWorkspace::new(&convoy_e2e::WorkspaceSpec {
        devices: 50,
        seed: 3,
        artifact_bytes: 2_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    });
    let cache = PathBuf::from(ws.path("cache.db"));
    let (viewer, dispatcher) = {
        let store = Store::open(&cache).expect("cache");
        let now = convoy::now();
        (
            auth::add_token(&store, "vera", Role::Viewer, "operator:test", now)
                .expect("token")
                .token,
            auth::add_token(&store, "dana", Role::Dispatcher, "operator:test", now)
                .expect("token")
                .token,
        )
    };
    let manifest = std::fs::read(ws.path("release.json")).expect("manifest");
    // The same manifest with its version changed after signing.
    let tampered = String::from_utf8(manifest.clone())
        .expect("utf-8")
        .replacen("2.5.0", "2.5.1", 1)
        .into_bytes();
    assert_ne!(tampered, manifest);
    let rt = runtime();
    rt.block_on(async {
        let mut c = config(&cache);
        c.trust = Some(PathBuf::from(ws.path("trust")));
        let server = Server::start(c).await.expect("start");
        let http = client();
        let url = format!("{}/api/v1/releases", server.base_url());
        let (status, body) = post(&http, &url, &viewer, manifest.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = post(&http, &url, &dispatcher, tampered).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("tampered"),
            "{body}"
        );
        let (status, list) = get(&http, &url, Some(&viewer)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list, serde_json::json!([]), "nothing stored from a refusal");
        let (status, stored) = post(&http, &url, &dispatcher, manifest.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{stored}");
        assert_eq!(stored["version"], "2.5.0");
        assert_eq!(stored["counter"], 50);
        let release_id = stored["release_id"].as_str().expect("id").to_owned();
        let (_, list) = get(&http, &url, Some(&viewer)).await;
        assert_eq!(list[0]["release_id"], release_id.as_str(), "{list}");
        assert_eq!(list[0]["signature"], "valid", "{list}");
        assert_eq!(list[0]["hardware"], serde_json::json!(["T300"]));
        // The same manifest again changes nothing; another one under the same id is refused
        // (requests pin the manifest they were approved for).
        let (status, again) = post(&http, &url, &dispatcher, manifest.clone()).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["already_stored"], true);
        convoy_ok(&[
            "release",
            "create",
            "--artifact",
            &ws.path("fw.img"),
            "--version",
            "2.5.0",
            "--counter",
            "50",
            "--hardware",
            "T300",
            "--expires",
            "20d",
            "--key",
            &ws.path("key"),
            "--passphrase-file",
            &ws.path("pass"),
            "--out",
            &ws.path("other.json"),
        ]);
        let other = std::fs::read(ws.path("other.json")).expect("the other manifest");
        let (status, body) = post(&http, &url, &dispatcher, other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("already stored"),
            "{body}"
        );
        let (_, audit) = get(
            &http,
            &format!("{}/api/v1/audit?limit=5", server.base_url()),
            Some(&viewer),
        )
        .await;
        assert!(
            audit.as_array().expect("entries").iter().any(|e| {
                // The payload is the entry's JSON as text (what the hash covers).
                let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap_or("null"))
                    .unwrap_or_default();
                e["actor"] == "operator:dana"
                    && e["action"] == "release.create"
                    && payload["release"] == release_id.as_str()
            }),
            "{audit}"
        );
        server.shutdown().await;
    });
}

#[test]
fn rollout_requests_need_distinct_approvers_and_nobody_approves_their_own() {
    let _turn = convoy_e2e::shared();
    let f = request_fixture();
    let rt = runtime();
    let mut c = config(Path::new(&f.ws.path("cache.db")));
    c.trust = Some(PathBuf::from(f.ws.path("trust")));
    let server = rt.block_on(Server::start(c)).expect("server");
    let api = format!("{}/api/v1", server.base_url());
    let http = client();
    let t = |name: &str| f.tokens[name].clone();
    let post_as = |name: &str, path: &str, body: Value| {
        rt.block_on(post(
            &http,
            &format!("{api}/{path}"),
            &t(name),
            body.to_string().into_bytes(),
        ))
    };
    let outbox_offers = || -> i64 {
        let conn = rusqlite::Connection::open(f.ws.path("cache.db")).expect("cache");
        conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .expect("outbox")
    };

    // Who may request, and what a bad request is told.
    let (status, body) = post_as(
        "vera",
        "rollouts",
        serde_json::json!({"release_id": f.release_id}),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": "no-such"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "release_id", "{body}");
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "path": "emergency", "evidence": "CVE"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "authoriser", "{body}");
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "path": "emergency", "authoriser": "dana", "evidence": "CVE"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("own"),
        "{body}"
    );
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "rollout_id": "bad/id"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "rollout_id", "{body}");

    // Waves given by the requester: every device must exist and be of the release's hardware.
    let other_model = {
        let store = Store::open(Path::new(&f.ws.path("cache.db"))).expect("cache");
        store
            .load_fleet()
            .expect("fleet")
            .devices
            .iter()
            .find(|d| d.model != "T300")
            .expect("a device of another model")
            .id
            .clone()
    };
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "waves": [
            {"name": "canary", "device_ids": [other_model], "soak_secs": 3600}]}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "waves[0].device_ids[0]", "{body}");
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "waves": [
            {"name": "canary", "device_ids": ["no-such-device"], "soak_secs": 3600}]}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("no device"),
        "{body}"
    );

    // A standard request, planned by the server on its fleet.
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "rollout_id": "std-1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    assert_eq!(body["requested_by"], "dana", "{body}");
    let devices = body["devices"].as_u64().expect("devices");
    assert!(devices > 0, "{body}");
    let wave_sum: u64 = body["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["devices"].as_u64().expect("wave devices"))
        .sum();
    assert_eq!(wave_sum, devices, "{body}");
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "rollout_id": "std-1"}),
    );
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a second request with the same id: {body}"
    );

    // A dispatcher cannot approve; an approver approves once; two distinct approvers approve.
    let (status, body) = post_as("dana", "rollouts/std-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post_as(
        "alex",
        "rollouts/std-1/approve",
        serde_json::json!({"comment": "plan reviewed"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["status"], "awaiting_approval",
        "one approval is not enough: {body}"
    );
    assert!(
        body["needs"].as_str().unwrap_or("").contains("1 so far"),
        "{body}"
    );
    let (status, body) = post_as("alex", "rollouts/std-1/approve", serde_json::json!({}));
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the same approver twice: {body}"
    );
    let (status, body) = post_as(
        "sam",
        "rollouts/std-1/approve",
        serde_json::json!({"reason": "x"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (status, body) = post_as("sam", "rollouts/std-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    assert_eq!(body["hosted"], false, "{body}");
    assert!(
        body["dispatch"]
            .as_str()
            .unwrap_or("")
            .contains("not dispatched"),
        "a server without dispatch settings says so: {body}"
    );
    assert_eq!(outbox_offers(), 0, "nothing was sent");
    let (status, body) = post_as("vera", "rollouts/std-1/dispatch", serde_json::json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post_as("dana", "rollouts/std-1/dispatch", serde_json::json!({}));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("dispatch settings"),
        "{body}"
    );
    let (status, body) = post_as("erin", "rollouts/std-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::CONFLICT, "already approved: {body}");

    // Emergency: the requester (an approver) cannot approve their own request, the authoriser
    // must approve, and one more operator.
    let (status, body) = post_as(
        "alex",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "rollout_id": "em-1", "path": "emergency",
                           "authoriser": "erin", "evidence": "CVE-2026-0001 exploited in the wild",
                           "checklist": {"owner": "alex", "regression_test": "CI 1", "rollback_readiness": "A/B revert", "support_brief": "KB-1"}}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["path"], "emergency", "{body}");
    let (status, body) = post_as("alex", "rollouts/em-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("own request"),
        "{body}"
    );
    let (status, body) = post_as("sam", "rollouts/em-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["status"], "awaiting_approval",
        "the authoriser has not approved: {body}"
    );
    assert!(
        body["needs"].as_str().unwrap_or("").contains("erin"),
        "{body}"
    );
    let (status, body) = post_as(
        "erin",
        "rollouts/em-1/approve",
        serde_json::json!({"comment": "break glass"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");

    // A rejection needs a reason and ends the request.
    let (status, body) = post_as(
        "dana",
        "rollouts",
        serde_json::json!({"release_id": f.release_id, "rollout_id": "rej-1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post_as("sam", "rollouts/rej-1/reject", serde_json::json!({}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (status, body) = post_as(
        "sam",
        "rollouts/rej-1/reject",
        serde_json::json!({"reason": "wrong week"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected", "{body}");
    let (status, body) = post_as("alex", "rollouts/rej-1/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post_as("dana", "rollouts/rej-1/dispatch", serde_json::json!({}));
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a rejected request is not dispatched: {body}"
    );
    let (status, body) = post_as("alex", "rollouts/nope/approve", serde_json::json!({}));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Anyone may read them; the audit trail has every step under the operator's name.
    let (status, body) = rt.block_on(get(&http, &format!("{api}/requests"), Some(&t("vera"))));
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["rollout_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3, "{body}");
    for id in ["std-1", "em-1", "rej-1"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let (status, body) = rt.block_on(get(
        &http,
        &format!("{api}/rollouts/std-1/request"),
        Some(&t("vera")),
    ));
    assert_eq!(status, StatusCode::OK, "{body}");
    let decisions = body["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 2, "{body}");
    assert_eq!(decisions[0]["comment"], "plan reviewed", "{body}");
    rt.block_on(server.shutdown());
    let conn = rusqlite::Connection::open(f.ws.path("cache.db")).expect("cache");
    let audited = |actor: &str, action: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM audit WHERE actor = ?1 AND action = ?2",
            [actor, action],
            |r| r.get(0),
        )
        .expect("audit")
    };
    assert_eq!(audited("operator:dana", "rollout.request"), 2);
    assert_eq!(audited("operator:alex", "rollout.request"), 1);
    assert_eq!(audited("operator:alex", "rollout.approve"), 1);
    assert_eq!(audited("operator:sam", "rollout.approve"), 2);
    assert_eq!(audited("operator:erin", "rollout.approve"), 1);
    assert_eq!(audited("operator:sam", "rollout.reject"), 1);
    convoy_ok(&["audit", "verify", "--db", &f.ws.path("cache.db")]);
}

/// `POST /signals` (issue 20): support tickets stored once, audited, counted; a viewer is
/// refused; a wrong kind, an unknown field, a duplicate key or an unknown device is refused with
/// 400 naming it, and nothing of that request is stored.
#[test]
fn support_signals_are_stored_once_and_bad_ones_refused() {
    let _turn = convoy_e2e::shared();
    let f = fixture();
    let rt = runtime();
    rt.block_on(async {
        let server = Server::start(config(&f.cache)).await.expect("start");
        let c = client();
        let url = format!("{}/api/v1/signals", server.base_url());
        let id = f.fleet.devices[0].id.clone();
        let good = format!(
            r#"{{"signals": [{{"device_id": "{id}", "kind": "support_ticket", "reference": "ZD-1", "note": "nav resets"}},
                             {{"device_id": "{id}", "kind": "customer_report", "reference": "ZD-2", "time": "2026-12-01T10:00:00Z"}}]}}"#
        );
        let (status, body) = post(&c, &url, &f.viewer, good.clone().into_bytes()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = post(&c, &url, &f.dispatcher, good.clone().into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["added"], 2, "{body}");
        let (status, body) = post(&c, &url, &f.dispatcher, good.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!((body["added"].clone(), body["duplicates"].clone()), (0.into(), 2.into()));
        for (bad, says) in [
            (
                format!(r#"{{"signals": [{{"device_id": "{id}", "kind": "complaint", "reference": "X"}}]}}"#),
                "signals[0]",
            ),
            (
                format!(r#"{{"signals": [{{"device_id": "{id}", "kind": "support_ticket", "reference": "X", "mood": 1}}]}}"#),
                "mood",
            ),
            (
                format!(r#"{{"signals": [{{"device_id": "{id}", "device_id": "{id}", "kind": "support_ticket", "reference": "X"}}]}}"#),
                "device_id",
            ),
            (
                r#"{"signals": [{"device_id": "NOPE0001", "kind": "support_ticket", "reference": "Y"}]}"#.to_owned(),
                "NOPE0001",
            ),
            (
                format!(r#"{{"signals": [{{"device_id": "{id}", "kind": "support_ticket", "reference": "Z", "time": "yesterday"}}]}}"#),
                "yesterday",
            ),
        ] {
            let (status, body) = post(&c, &url, &f.dispatcher, bad.into_bytes()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.to_string().contains(says), "{says}: {body}");
        }
        server.shutdown().await;
    });
    let store = Store::open(&f.cache).expect("cache");
    assert_eq!(store.signals_after(0, 100).expect("signals").len(), 2);
}
