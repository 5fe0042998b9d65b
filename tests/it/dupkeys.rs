//! Issue 16, item 1: a signed document has exactly one reading.
//!
//! Each test performs the attack against the real binary, server or simulated device: a manifest
//! of the form `{"signed": EVIL, "signed": REAL, "signatures": [...]}` (serde_json keeps REAL, so
//! it verified before; a parser that keeps the first reads EVIL), the same with a key twice
//! nested inside `signed`, an escaped spelling of the same key, and a key twice in trust
//! material and policy files. Every attempt must be refused, naming the key and where it is.
//! The last test shows that what Convoy serves to devices over MQTT is the canonical form of the
//! verified manifest, not the file it was given.

use convoy::link::mqtt::{self, LinkConfig, LinkEvent, Role};
use convoy::link::protocol::Topics;
use convoy_e2e::{Mosquitto, SignedWorkspace, WorkspaceSpec, convoy, convoy_bin, convoy_ok};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> SignedWorkspace {
    SignedWorkspace::new(&WorkspaceSpec {
        devices: 40,
        seed: 16,
        artifact_bytes: 4096,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    })
}

fn read_json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// An object written key by key, so a key can appear twice (a `Value` cannot hold that).
fn obj(pairs: &[(String, String)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}

fn entries(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn replaced(mut pairs: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    for p in &mut pairs {
        if p.0 == key {
            value.clone_into(&mut p.1);
        }
    }
    pairs
}

#[allow(clippy::needless_pass_by_value)] // Called with numbers, values and strings alike.
fn pair(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

/// A forged manifest: its name, its text, and the key and path the refusal must name.
struct Forgery {
    name: &'static str,
    text: String,
    key: &'static str,
    path: &'static str,
}

/// The forgeries of a real signed manifest. In each, the genuine value comes last, so serde_json
/// alone (keeping the last) reads the genuine, validly signed manifest.
fn forgeries(real: &Value) -> Vec<Forgery> {
    let signed = &real["signed"];
    let sigs = real["signatures"].to_string();
    let mut evil = signed.clone();
    evil["release"]["counter"] = 999.into();
    evil["release"]["hardware"] = serde_json::json!(["T999"]);
    evil["release"]["artifacts"][0]["url"] = "http://evil.example/fw.img".into();
    let release = &signed["release"];
    let counter_twice = obj(&[vec![pair("counter", 999)], entries(release)].concat());
    let artifact = &release["artifacts"][0];
    let sha_twice = obj(&[
        vec![pair("sha256", "\"".to_owned() + &"f".repeat(64) + "\"")],
        entries(artifact),
    ]
    .concat());
    let signed_with =
        |release_text: String| obj(&replaced(entries(signed), "release", &release_text));
    let top = |signed_text: String| obj(&[pair("signed", signed_text), pair("signatures", &sigs)]);
    vec![
        Forgery {
            name: "signed twice, EVIL first",
            text: obj(&[
                pair("signed", &evil),
                pair("signed", signed),
                pair("signatures", &sigs),
            ]),
            key: "signed",
            path: "$.signed",
        },
        Forgery {
            name: "signed twice, the first spelt with an escape",
            text: obj(&[
                pair("\\u0073igned", &evil),
                pair("signed", signed),
                pair("signatures", &sigs),
            ]),
            key: "signed",
            path: "$.signed",
        },
        Forgery {
            name: "counter twice inside signed.release",
            text: top(signed_with(counter_twice)),
            key: "counter",
            path: "$.signed.release.counter",
        },
        Forgery {
            name: "sha256 twice in the first artifact",
            text: top(signed_with(obj(&replaced(
                entries(release),
                "artifacts",
                &format!("[{sha_twice}]"),
            )))),
            key: "sha256",
            path: "$.signed.release.artifacts[0].sha256",
        },
        Forgery {
            name: "signatures twice",
            text: obj(&[
                pair("signed", signed),
                pair("signatures", "[]"),
                pair("signatures", &sigs),
            ]),
            key: "signatures",
            path: "$.signatures",
        },
    ]
}

/// Checks the forgery is the attack: serde_json alone reads the genuine manifest from it.
fn check_is_the_attack(f: &Forgery, real: &Value) {
    let lax: Value = serde_json::from_str(&f.text).expect("serde_json reads the forgery");
    assert_eq!(
        &lax, real,
        "{}: the last reading is the genuine manifest",
        f.name
    );
}

/// Asserts a command failed, naming the duplicate key and its path; counts the refusal.
fn refused(out: &std::process::Output, f: &Forgery, what: &str, refusals: &mut usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} accepted {}: {stderr}",
        f.name
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let named = format!("duplicate key \"{}\" at {}", f.key, f.path);
    assert!(
        stderr.contains(&named),
        "{what} on {}: expected {named:?} in {stderr}",
        f.name
    );
    *refusals += 1;
}

/// `convoy release verify`, `release store` and `rollout run --release` on every forgery.
#[test]
fn cli_refuses_every_manifest_with_a_key_twice() {
    let _turn = convoy_e2e::shared();
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    let real = read_json(&p("release.json"));
    let (trust, db, artifact) = (p("trust"), p("cache.db"), p("fw.img"));
    let (mut attempts, mut refusals) = (0, 0);
    for (i, f) in forgeries(&real).iter().enumerate() {
        check_is_the_attack(f, &real);
        let file = p(&format!("forged-{i}.json"));
        std::fs::write(&file, &f.text).expect("write forgery");
        let runs: [(&str, Vec<&str>); 3] = [
            (
                "release verify",
                vec!["release", "verify", &file, "--trust", &trust],
            ),
            (
                "release store",
                vec!["release", "store", &file, "--trust", &trust, "--db", &db],
            ),
            (
                "rollout run",
                vec![
                    "rollout",
                    "run",
                    "--db",
                    &db,
                    "--broker",
                    "mqtt://127.0.0.1:9",
                    "--release",
                    &file,
                    "--artifact",
                    &artifact,
                    "--trust",
                    &trust,
                    "--max-wall-secs",
                    "5",
                ],
            ),
        ];
        for (what, args) in runs {
            attempts += 1;
            refused(&convoy(&args), f, what, &mut refusals);
        }
    }
    assert_eq!((attempts, refusals), (15, 15));
    // The genuine manifest still verifies and stores: nothing forged took its place.
    convoy_ok(&[
        "release",
        "verify",
        &p("release.json"),
        "--trust",
        &p("trust"),
    ]);
    convoy_ok(&[
        "release",
        "store",
        &p("release.json"),
        "--trust",
        &p("trust"),
        "--db",
        &p("cache.db"),
    ]);
    eprintln!("dupkeys cli: {attempts} attempts, {refusals} refused");
}

/// A trust directory whose key set lists a key id twice (an attacker's key first), a key
/// directory whose `public.json` names its key twice, a plan's release spec, a policy file, a
/// fault file and a JSON fleet with a key twice.
#[test]
fn trust_material_policy_fleet_and_fault_files_with_a_key_twice_are_refused() {
    let _turn = convoy_e2e::shared();
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    let (mut attempts, mut refusals) = (0, 0);
    let mut expect_refused = |args: &[&str], key: &str, path: &str| {
        attempts += 1;
        let out = convoy(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {stderr}");
        let named = format!("duplicate key \"{key}\" at {path}");
        assert!(
            stderr.contains(&named),
            "{args:?}: expected {named:?} in {stderr}"
        );
        refusals += 1;
    };

    // Key set: the trusted key's id mapped to the attacker's public key first, the real one last.
    convoy_ok(&[
        "key",
        "generate",
        "--out",
        &p("evil-key"),
        "--passphrase-file",
        &p("pass"),
    ]);
    let keyset = std::fs::read_to_string(p("trust/keyset-1.json")).expect("keyset");
    let set: Value = serde_json::from_str(&keyset).expect("keyset json");
    let (id, _) = set["signed"]["keys"]
        .as_object()
        .expect("keys")
        .iter()
        .next()
        .expect("a key");
    let evil_public = read_json(&p("evil-key/public.json"));
    let evil_entry = evil_public
        .get("key")
        .cloned()
        .unwrap_or_else(|| evil_public.clone());
    std::fs::create_dir(p("evil-trust")).expect("dir");
    let forged = keyset.replacen(
        "\"keys\": {",
        &format!("\"keys\": {{\"{id}\": {evil_entry},"),
        1,
    );
    assert_ne!(forged, keyset);
    std::fs::write(p("evil-trust/keyset-1.json"), &forged).expect("write");
    let key_path = format!("$.signed.keys[\"{id}\"]");
    let key_path = if id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        format!("$.signed.keys.{id}")
    } else {
        key_path
    };
    expect_refused(&["key", "list", "--trust", &p("evil-trust")], id, &key_path);
    expect_refused(
        &[
            "release",
            "verify",
            &p("release.json"),
            "--trust",
            &p("evil-trust"),
        ],
        id,
        &key_path,
    );

    // A key directory's public.json with a field twice.
    std::fs::create_dir(p("twice-key")).expect("dir");
    let public = std::fs::read_to_string(p("key/public.json")).expect("public.json");
    let first = public.find('"').expect("a key");
    let end = public[first + 1..].find('"').expect("key end") + first + 1;
    let field = public[first + 1..end].to_owned();
    let twice = format!("{{\"{field}\": null, {}", &public.trim_start()[1..]);
    std::fs::write(p("twice-key/public.json"), twice).expect("write");
    expect_refused(
        &["key", "list", "--trust", &p("twice-key")],
        &field,
        &format!("$.{field}"),
    );

    // `convoy plan --release SPEC`: the release spec with its counter twice.
    let real = read_json(&p("release.json"));
    let spec = obj(&[
        vec![pair("counter", 1)],
        entries(&real["signed"]["release"]),
    ]
    .concat());
    std::fs::write(p("spec.json"), spec).expect("spec");
    expect_refused(
        &[
            "plan",
            "--fleet",
            &p("fleet.json"),
            "--release",
            &p("spec.json"),
        ],
        "counter",
        "$.counter",
    );

    // A policy file with its planning section twice (a lenient one first).
    std::fs::write(
        p("policy.json"),
        r#"{"version": 1, "planning": {"default_operating_cycle_secs": 60}, "planning": {}}"#,
    )
    .expect("policy");
    let real_spec = p("real-spec.json");
    std::fs::write(&real_spec, real["signed"]["release"].to_string()).expect("spec");
    expect_refused(
        &[
            "plan",
            "--fleet",
            &p("fleet.json"),
            "--release",
            &real_spec,
            "--policy",
            &p("policy.json"),
        ],
        "planning",
        "$.planning",
    );
    std::fs::write(p("scoring.json"), r#"{"scoring": {}, "scoring": {}}"#).expect("policy");
    let finding = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/findings/t300-remote-rce.json"
    );
    expect_refused(
        &[
            "score",
            "finding",
            finding,
            "--fleet",
            &p("fleet.json"),
            "--policy",
            &p("scoring.json"),
        ],
        "scoring",
        "$.scoring",
    );

    // A JSON fleet whose first device names its hardware revision twice.
    let fleet = std::fs::read_to_string(p("fleet.json")).expect("fleet");
    let forged = fleet.replacen("\"hw_rev\":", "\"hw_rev\": \"Z\", \"hw_rev\":", 1);
    assert_ne!(forged, fleet);
    std::fs::write(p("fleet-twice.json"), forged).expect("fleet");
    expect_refused(
        &[
            "fleet",
            "import",
            &p("fleet-twice.json"),
            "--db",
            &p("other.db"),
        ],
        "hw_rev",
        "$.devices[0].hw_rev",
    );

    // A fault file whose match names an attribute twice.
    std::fs::write(
        p("faults.json"),
        r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C", "hw_rev": "A"}, "effect": "crash_loop"}]}"#,
    )
    .expect("faults");
    expect_refused(
        &[
            "sim",
            "--broker",
            "mqtt://127.0.0.1:9",
            "--fleet",
            &p("fleet.json"),
            "--faults",
            &p("faults.json"),
            "--duration-secs",
            "1",
        ],
        "hw_rev",
        "$.faults[0].match.hw_rev",
    );
    assert_eq!((attempts, refusals), (8, 8));
    eprintln!("dupkeys files: {attempts} attempts, {refusals} refused");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(convoy_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn convoy"),
    )
}

/// `POST /api/v1/releases` on the real `convoy serve`: 422 naming the key, nothing stored.
#[test]
fn the_server_refuses_a_manifest_with_a_key_twice_with_422() {
    let _turn = convoy_e2e::shared();
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    let token = convoy_ok(&[
        "serve",
        "token",
        "add",
        "--cache",
        &p("cache.db"),
        "--operator",
        "dana",
        "--role",
        "dispatcher",
    ])
    .trim()
    .to_owned();
    let port = convoy_e2e::free_port();
    let _server = spawn(&[
        "serve",
        "--cache",
        &p("cache.db"),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--trust",
        &p("trust"),
    ]);
    let url = format!("http://127.0.0.1:{port}/api/v1/releases");
    let real = read_json(&p("release.json"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let post = |body: String| {
            client
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        // The server is up when it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(&url).bearer_auth(&token).send().await.is_err() {
            assert!(Instant::now() < deadline, "convoy serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut attempts, mut refusals) = (0, 0);
        for f in forgeries(&real) {
            check_is_the_attack(&f, &real);
            attempts += 1;
            let response = post(f.text.clone()).await.expect("post");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            assert_eq!(status, 422, "{}: {body}", f.name);
            let named = format!("duplicate key \\\"{}\\\" at {}", f.key, f.path);
            assert!(
                body.contains(&named),
                "{}: expected {named:?} in {body}",
                f.name
            );
            refusals += 1;
        }
        assert_eq!((attempts, refusals), (5, 5));
        // Nothing was stored: the genuine manifest is new (201), not "already stored" or 409.
        let response = post(std::fs::read_to_string(p("release.json")).expect("real"))
            .await
            .expect("post");
        assert_eq!(
            response.status().as_u16(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        eprintln!("dupkeys api: {attempts} attempts, {refusals} refused");
    });
}

/// A T300 device of the workspace's fleet.
fn a_t300(ws: &SignedWorkspace) -> String {
    let fleet = read_json(&ws.path("fleet.json"));
    fleet["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["model"] == "T300")
        .and_then(|d| d["id"].as_str())
        .expect("a T300")
        .to_owned()
}

async fn listen(
    url: &str,
    filters: Vec<String>,
) -> (mqtt::LinkHandle, tokio::sync::mpsc::Receiver<LinkEvent>) {
    let (mut handle, rx) = mqtt::spawn(
        &LinkConfig::new(url, "dupkeys-observer"),
        Topics::default_prefix(),
        &Role::Filters(filters),
    )
    .expect("spawn link");
    handle
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connected");
    (handle, rx)
}

/// The next raw message on a topic that satisfies `want`, within `secs`.
async fn next_raw(
    rx: &mut tokio::sync::mpsc::Receiver<LinkEvent>,
    secs: u64,
    mut want: impl FnMut(&str, &[u8]) -> bool,
) -> Option<(String, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match rx.recv().await {
                Some(LinkEvent::Raw { topic, payload }) if want(&topic, &payload) => {
                    return Some((topic, payload));
                }
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// `convoy sim` over Mosquitto: an offer whose manifest names a key twice is answered with a
/// rejection ack naming it; the genuine one afterwards is accepted.
#[test]
fn the_simulated_device_rejects_an_offer_with_a_key_twice_with_an_ack() {
    let _turn = convoy_e2e::alone();
    if !Mosquitto::available() {
        eprintln!("skipped: mosquitto is not installed");
        return;
    }
    let broker = Mosquitto::start(None);
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    let device = a_t300(&ws);
    let topics = Topics::default_prefix();
    let real = read_json(&p("release.json"));
    let release_id = real["signed"]["release"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (link, mut rx) = listen(&broker.url(), vec![topics.acks(&device), topics.status(&device)]).await;
        let _sim = spawn(&[
            "sim", "--broker", &broker.url(), "--fleet", &p("fleet.json"), "--trust", &p("trust"), "--duration-secs", "120",
        ]);
        // The device is up (subscribed to its commands) once it has published its status.
        let status = topics.status(&device);
        next_raw(&mut rx, 60, |t, _| t == status).await.expect("the device's status");
        let offer = |command_id: &str, manifest: &str| {
            format!(
                r#"{{"v": 1, "command_id": "{command_id}", "device_id": "{device}", "issued_at": {}, "action": {{"kind": "offer", "release_id": "{release_id}", "manifest": {manifest}}}}}"#,
                convoy::now().secs()
            )
        };
        let (mut attempts, mut refusals) = (0, 0);
        let acks = topics.acks(&device);
        for (i, f) in forgeries(&real).iter().enumerate() {
            let id = format!("dup-{i}");
            attempts += 1;
            link.publish(topics.commands(&device), offer(&id, &f.text).into_bytes(), false).await.expect("publish");
            let (_, ack) = next_raw(&mut rx, 30, |t, payload| {
                t == acks && serde_json::from_slice::<Value>(payload).is_ok_and(|a| a["command_id"] == id.as_str())
            })
            .await
            .unwrap_or_else(|| panic!("no ack for {}", f.name));
            let ack: Value = serde_json::from_slice(&ack).expect("ack json");
            assert_eq!(ack["result"], "rejected", "{}: {ack}", f.name);
            let named = format!("duplicate key \"{}\" at {}", f.key, f.path);
            assert!(ack["reason"].as_str().is_some_and(|r| r.contains(&named)), "{}: {ack}", f.name);
            refusals += 1;
        }
        assert_eq!((attempts, refusals), (5, 5));
        let genuine = std::fs::read_to_string(p("release.json")).expect("real");
        link.publish(topics.commands(&device), offer("genuine", &genuine).into_bytes(), false).await.expect("publish");
        let (_, ack) = next_raw(&mut rx, 30, |t, payload| {
            t == acks && serde_json::from_slice::<Value>(payload).is_ok_and(|a| a["command_id"] == "genuine")
        })
        .await
        .expect("an ack for the genuine offer");
        let ack: Value = serde_json::from_slice(&ack).expect("ack json");
        assert_eq!(ack["result"], "accepted", "{ack}");
        eprintln!("dupkeys sim: {attempts} attempts, {refusals} refused");
    });
}

/// Keys reversed at every level, with extra whitespace: the same signed value, another file.
fn reversed(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| format!("\n  {} :  {}", Value::String(k.clone()), reversed(v)))
                .collect();
            format!("{{ {} }}", parts.join(" ,"))
        }
        Value::Array(a) => format!(
            "[ {} ]",
            a.iter().map(reversed).collect::<Vec<_>>().join(" , ")
        ),
        other => other.to_string(),
    }
}

/// What the engine publishes is the canonical form of the verified manifest: a manifest file
/// with other whitespace and key order (still validly signed) goes out canonical, as the
/// retained release manifest and inside every offer.
#[test]
fn the_engine_serves_the_canonical_manifest_not_the_file() {
    let _turn = convoy_e2e::alone();
    if !Mosquitto::available() {
        eprintln!("skipped: mosquitto is not installed");
        return;
    }
    let broker = Mosquitto::start(None);
    let ws = workspace();
    let p = |name: &str| ws.path(name);
    let real = read_json(&p("release.json"));
    let canonical = convoy_core::canonical_json::encode_text(&real).expect("canonical");
    let file = reversed(&real);
    assert_ne!(file.as_bytes(), canonical.as_slice());
    std::fs::write(p("reordered.json"), &file).expect("write");
    std::fs::write(
        p("policy.json"),
        r#"{"version": 1, "planning": {"operating_cycle_secs": {}, "default_operating_cycle_secs": 3600}}"#,
    )
    .expect("policy");
    let release_id = real["signed"]["release"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let topics = Topics::default_prefix();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (link, mut rx) = listen(
            &broker.url(),
            vec![
                topics.manifest(&release_id),
                format!("{}/devices/+/commands", topics.prefix()),
            ],
        )
        .await;
        // The subscription is in place once a probe on it comes back.
        let probe = topics.commands("dupkeys-probe");
        link.publish(probe.clone(), b"probe".to_vec(), false)
            .await
            .expect("probe");
        next_raw(&mut rx, 30, |t, _| t == probe)
            .await
            .expect("the probe");
        let _sim = spawn(&[
            "sim",
            "--broker",
            &broker.url(),
            "--fleet",
            &p("fleet.json"),
            "--trust",
            &p("trust"),
            "--time-scale",
            "2400",
            "--duration-secs",
            "120",
        ]);
        let _engine = spawn(&[
            "rollout",
            "run",
            "--db",
            &p("cache.db"),
            "--broker",
            &broker.url(),
            "--release",
            &p("reordered.json"),
            "--artifact",
            &p("fw.img"),
            "--trust",
            &p("trust"),
            "--policy",
            &p("policy.json"),
            "--time-scale",
            "2400",
            "--rollout-id",
            "canon",
            "--max-wall-secs",
            "60",
        ]);
        let manifest_topic = topics.manifest(&release_id);
        let (_, published) = next_raw(&mut rx, 60, |t, _| t == manifest_topic)
            .await
            .expect("the release manifest");
        assert_eq!(
            published, canonical,
            "the retained manifest is the canonical form"
        );
        let (_, offer) = next_raw(&mut rx, 60, |t, payload| {
            t != probe && t.ends_with("/commands") && payload.windows(7).any(|w| w == b"\"offer\"")
        })
        .await
        .expect("an offer");
        let inner = format!(
            "\"manifest\":{}",
            String::from_utf8(canonical.clone()).expect("utf-8")
        );
        let offer = String::from_utf8(offer).expect("utf-8");
        assert!(
            offer.contains(&inner),
            "the offer carries the canonical manifest: {offer}"
        );
    });
}
