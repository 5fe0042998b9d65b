//! The bodies of Convoy's fuzz targets: one function per parser, each taking arbitrary bytes.
//!
//! The cargo-fuzz project in `fuzz/` calls these from its `fuzz_targets/*.rs` (libFuzzer), and
//! the unit tests below run every one over its seeds, the committed crash reproducers in
//! `fuzz/regressions/<target>/`, the local corpus in `fuzz/corpus/<target>/` if there is one,
//! and thousands of inputs mutated from the seeds by a seeded generator, so `cargo test` exercises them on stable Rust without libFuzzer. `docs/FUZZING.md`
//! says how to run them.
//!
//! A body passes when the parser returns (an error is fine) and, for what it accepts, the
//! oracles hold: what is printed parses back to the same value, what the simulated device
//! publishes passes the console's validation, ranges lie inside the file, and so on. A failed
//! oracle panics on purpose, which is how libFuzzer and the tests see it. This module is test
//! support compiled into the library (so `fuzz/` can link it); nothing else calls it.

use convoy_core::cvss::Cvss;
use convoy_core::devsim::{Faults, SimConfig, SimDevice};
use convoy_core::fleet::Fleet;
use convoy_core::manifest::{
    self, DeviceMemory, KeySetBody, SignedKeySet, SignedManifest, TrustedKeys,
};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::requirement::Requirement;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::sync::{Arc, OnceLock};

use crate::link::http::range;
use crate::link::protocol::{Inbound, Topics, decode_inbound};

/// The fixed "now" of every target, so inputs reproduce.
pub const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

/// A fuzz target: its name (the file in `fuzz/fuzz_targets/` and the corpus directory), its
/// body, and its seed inputs.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "mqtt_inbound",
        run: mqtt_inbound,
        seeds: seeds_mqtt_inbound,
    },
    Target {
        name: "sim_command",
        run: sim_command,
        seeds: seeds_sim_command,
    },
    Target {
        name: "manifest",
        run: manifest,
        seeds: seeds_manifest,
    },
    Target {
        name: "canonical_json",
        run: canonical_json,
        seeds: seeds_canonical_json,
    },
    Target {
        name: "strict_json",
        run: strict_json,
        seeds: seeds_strict_json,
    },
    Target {
        name: "faults",
        run: faults,
        seeds: seeds_faults,
    },
    Target {
        name: "cvss",
        run: cvss,
        seeds: seeds_cvss,
    },
    Target {
        name: "fleet_csv",
        run: fleet_csv,
        seeds: seeds_fleet_csv,
    },
    Target {
        name: "fleet_json",
        run: fleet_json,
        seeds: seeds_fleet_json,
    },
    Target {
        name: "requirement",
        run: requirement,
        seeds: seeds_requirement,
    },
    Target {
        name: "version",
        run: version,
        seeds: seeds_version,
    },
    Target {
        name: "rfc3339",
        run: rfc3339,
        seeds: seeds_rfc3339,
    },
    Target {
        name: "http_range",
        run: http_range,
        seeds: seeds_http_range,
    },
    Target {
        name: "telemetry_line",
        run: telemetry_line,
        seeds: seeds_telemetry_line,
    },
    Target {
        name: "broker_url",
        run: broker_url,
        seeds: seeds_broker_url,
    },
    Target {
        name: "ddi_body",
        run: ddi_body,
        seeds: seeds_ddi_body,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Everything the targets share, built once: a small synthetic fleet, a signing key and the
/// trust that holds it.
struct Fixture {
    fleet: Fleet,
    key: SigningKey,
    trust: TrustedKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fleet = generate(&SynthOptions {
            devices: 4,
            seed: 11,
            now: NOW,
        });
        let key = SigningKey::from_bytes(&[7; 32]);
        let body = KeySetBody::initial([&key.verifying_key()]);
        let trust = SignedKeySet::sign(body, &key)
            .ok()
            .and_then(|set| TrustedKeys::from_chain(&[set]).ok())
            .unwrap_or_default();
        Fixture { fleet, key, trust }
    })
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Splits an input into (selector byte, rest).
fn split_selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// Splits `rest` at its first newline into a topic and a payload.
fn split_topic(rest: &[u8]) -> (String, &[u8]) {
    match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (text(&rest[..i]), &rest[i + 1..]),
        None => (String::new(), rest),
    }
}

/// The first byte picks the topic (0 status, 1 telemetry, 2 acks of device `CV1`; anything
/// else: the text up to the first newline); the rest is the payload.
pub fn mqtt_inbound(data: &[u8]) {
    let topics = Topics::default_prefix();
    let (selector, rest) = split_selector(data);
    let (topic, payload) = match selector % 4 {
        0 => (topics.status("CV1"), rest),
        1 => (topics.telemetry("CV1"), rest),
        2 => (topics.acks("CV1"), rest),
        _ => split_topic(rest),
    };
    let _ = Topics::new(&topic);
    let Ok(inbound) = decode_inbound(&topics, &topic, payload, NOW) else {
        return;
    };
    // What the console accepts, re-encoded, is accepted again as the same message.
    let again = match &inbound {
        Inbound::Status(s) => serde_json::to_vec(s),
        Inbound::Telemetry(t) => serde_json::to_vec(t),
        Inbound::Ack(a) => serde_json::to_vec(a),
    };
    let Ok(again) = again else {
        panic!("an accepted message does not serialise: {inbound:?}");
    };
    match decode_inbound(&topics, &topic, &again, NOW) {
        Ok(back) => assert_eq!(back, inbound, "re-encoded message decodes differently"),
        Err(e) => panic!("re-encoded message rejected: {e}"),
    }
}

/// The device side: a command (selector even: on the first device's command topic; odd: on the
/// topic before the first newline) is decoded as `convoy sim` does, handed to a simulated device,
/// and everything the device then publishes must pass the console's validation.
pub fn sim_command(data: &[u8]) {
    let fx = fixture();
    let topics = Topics::default_prefix();
    let Some(device) = fx.fleet.devices.first() else {
        return;
    };
    let (selector, rest) = split_selector(data);
    let (topic, payload) = if selector % 2 == 0 {
        (topics.commands(&device.id), rest)
    } else {
        split_topic(rest)
    };
    let Ok((device_id, command_id, command)) = crate::sim::decode_command(&topics, &topic, payload)
    else {
        return;
    };
    if device_id != device.id {
        return;
    }
    let mut sim = SimDevice::new(
        device.clone(),
        0,
        u64::from(selector),
        Arc::new(fx.trust.clone()),
        Arc::new(Faults::default()),
        SimConfig::default(),
        NOW,
    );
    sim.handle_command(NOW, &command_id, command);
    let mut now = NOW;
    for _ in 0..40 {
        now = Timestamp::from_secs(now.secs() + 60);
        sim.handle_tick(now);
    }
    while let Some(message) = sim.poll_message() {
        let (topic, payload, _) = crate::sim::encode(&topics, &device_id, message);
        if let Err(e) = decode_inbound(&topics, &topic, &payload, now) {
            panic!("the console rejects what a simulated device published: {e}");
        }
    }
}

/// A signed manifest file, verified against a trust holding the fixture's key; also parsed as a
/// key-set file.
pub fn manifest(data: &[u8]) {
    let fx = fixture();
    if let Ok(verified) = manifest::verify(data, &fx.trust, NOW) {
        let id = verified.release_id().to_owned();
        assert!(convoy_core::release::is_valid_id(&id), "invalid id {id:?}");
        let bytes = verified.signed_manifest().to_json_bytes();
        match manifest::verify(&bytes, &fx.trust, NOW) {
            Ok(again) => assert_eq!(again.release_id(), id),
            Err(e) => panic!("a verified manifest, written back, no longer verifies: {e}"),
        }
        let state = DeviceMemory::new("T300", 0);
        let _ = state.check_offer(&id, data, &fx.trust, NOW);
    }
    if let Ok(set) = SignedKeySet::parse(data) {
        let _ = TrustedKeys::from_chain(&[set]);
    }
}

/// Canonical JSON of any JSON value: deterministic, and (when no string holds a control
/// character, which canonical JSON writes raw) parseable back to the same value.
pub fn canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(bytes) = convoy_core::canonical_json::encode(&value) else {
        return;
    };
    assert_eq!(
        convoy_core::canonical_json::encode(&value).ok(),
        Some(bytes.clone()),
        "canonical JSON is not deterministic"
    );
    assert!(std::str::from_utf8(&bytes).is_ok(), "not UTF-8");
    if !has_control_chars(&value) {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(back) => assert_eq!(back, value, "canonical JSON reads back differently"),
            Err(e) => panic!("canonical JSON does not parse: {e}"),
        }
    }
}

/// The strict reader (one reading per document): it agrees with serde_json on everything but
/// duplicate keys, and the canonical text of what it accepts reads back, strictly, to the same
/// value.
pub fn strict_json(data: &[u8]) {
    use convoy_core::strict_json::{StrictJsonError, value_from_slice};
    let lax = serde_json::from_slice::<serde_json::Value>(data);
    match (value_from_slice(data), &lax) {
        (Ok(strict), Ok(lax)) => {
            assert_eq!(&strict, lax, "the strict reading differs from serde_json's");
            if let Ok(text) = convoy_core::canonical_json::encode_text(&strict) {
                assert_eq!(
                    value_from_slice(&text).ok().as_ref(),
                    Some(&strict),
                    "the canonical text does not read back"
                );
            }
        }
        (Ok(_), Err(e)) => panic!("strict accepted what serde_json refuses: {e}"),
        (Err(StrictJsonError::Json(message)), Err(e)) => {
            assert_eq!(message, e.to_string(), "the syntax error changed");
        }
        (Err(StrictJsonError::Json(message)), Ok(_)) => {
            panic!("strict refused valid JSON with no duplicate: {message}");
        }
        (Err(StrictJsonError::DuplicateKey { path, .. }), _) => {
            assert!(
                path.starts_with('$'),
                "the path {path:?} is not a JSON path"
            );
            // Without duplicates serde_json's reading would keep every key.
            if let Ok(lax) = &lax {
                assert!(
                    count_keys_lax(data) > count_entries(lax),
                    "a duplicate was reported where serde_json kept every key"
                );
            }
        }
    }
}

/// Object entries of a value (each object's keys, all levels).
fn count_entries(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => items.iter().map(count_entries).sum(),
        serde_json::Value::Object(map) => {
            map.len() + map.values().map(count_entries).sum::<usize>()
        }
        _ => 0,
    }
}

/// Object keys as written (duplicates included), counted through serde's map access.
fn count_keys_lax(data: &[u8]) -> usize {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_str<E>(self, _: &str) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(k) = seq.next_element_seed(CountSeed)? {
                n += k;
            }
            Ok(n)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                n += 1 + map.next_value_seed(CountSeed)?;
            }
            Ok(n)
        }
    }
    struct CountSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for CountSeed {
        type Value = usize;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_any(Count)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    serde::de::DeserializeSeed::deserialize(CountSeed, &mut de).unwrap_or(0)
}

fn has_control_chars(value: &serde_json::Value) -> bool {
    let control = |s: &str| s.chars().any(|c| c < ' ');
    match value {
        serde_json::Value::String(s) => control(s),
        serde_json::Value::Array(items) => items.iter().any(has_control_chars),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| control(k) || has_control_chars(v))
        }
        _ => false,
    }
}

/// A fault file against the fixture fleet.
pub fn faults(data: &[u8]) {
    let fx = fixture();
    let Ok(faults) = Faults::parse(&text(data), &fx.fleet) else {
        return;
    };
    for fault in &faults.faults {
        assert!((0.0..=1.0).contains(&fault.probability));
        for device in &fx.fleet.devices {
            let _ = fault.matches_device(device);
        }
    }
}

/// A CVSS vector: an accepted vector has a score in 0..=10 and its printed form scores the same.
pub fn cvss(data: &[u8]) {
    let Ok(parsed) = Cvss::parse(&text(data)) else {
        return;
    };
    let score = parsed.base_score();
    assert!((0.0..=10.0).contains(&score), "score {score}");
    let _ = parsed.summary();
    let _ = parsed.explain();
    match Cvss::parse(&parsed.vector()) {
        Ok(again) => assert_eq!(again.base_score(), score, "{}", parsed.vector()),
        Err(e) => panic!("printed vector {} does not parse: {e}", parsed.vector()),
    }
}

/// A CSV inventory: the devices it accepts, written and read again, are the same devices.
pub fn fleet_csv(data: &[u8]) {
    let Ok(inventory) = crate::fleet_io::read_csv(data) else {
        return;
    };
    let mut out = Vec::new();
    if let Err(e) = crate::fleet_io::write_csv(&mut out, &inventory.devices) {
        panic!("accepted devices do not write as CSV: {e:#}");
    }
    match crate::fleet_io::read_csv(out.as_slice()) {
        Ok(back) => {
            assert!(
                back.rejected.is_empty(),
                "written CSV has bad rows: {:?}",
                back.rejected
            );
            assert_eq!(back.devices, inventory.devices, "CSV round trip differs");
        }
        Err(e) => panic!("written CSV does not read: {e:#}"),
    }
}

/// A JSON inventory: the fleet it accepts, written and read again, is the same fleet.
pub fn fleet_json(data: &[u8]) {
    let Ok(inventory) = crate::fleet_io::read_json(&text(data)) else {
        return;
    };
    let fleet = Fleet::new(inventory.depots, inventory.devices);
    let mut out = Vec::new();
    if let Err(e) = crate::fleet_io::write_json(&mut out, &fleet) {
        panic!("an accepted fleet does not write as JSON: {e:#}");
    }
    match crate::fleet_io::read_json(&text(&out)) {
        Ok(back) => {
            assert!(back.rejected.is_empty(), "{:?}", back.rejected);
            assert_eq!(
                Fleet::new(back.depots, back.devices),
                fleet,
                "JSON round trip differs"
            );
        }
        Err(e) => panic!("written JSON does not read: {e:#}"),
    }
}

/// A requirement: its printed form parses to the same requirement.
pub fn requirement(data: &[u8]) {
    let Ok(parsed) = text(data).parse::<Requirement>() else {
        return;
    };
    let printed = parsed.to_string();
    match printed.parse::<Requirement>() {
        Ok(again) => assert_eq!(again, parsed, "{printed}"),
        Err(e) => panic!("printed requirement {printed:?} does not parse: {e}"),
    }
    let _ = parsed.kind();
}

/// A version: its printed form parses to an equal version.
pub fn version(data: &[u8]) {
    let Ok(parsed) = text(data).parse::<Version>() else {
        return;
    };
    let printed = parsed.to_string();
    match printed.parse::<Version>() {
        Ok(again) => {
            assert_eq!(again, parsed, "{printed}");
            assert_eq!(again.cmp(&parsed), std::cmp::Ordering::Equal);
        }
        Err(e) => panic!("printed version {printed:?} does not parse: {e}"),
    }
}

/// An RFC 3339 timestamp: its printed form parses to the same instant.
pub fn rfc3339(data: &[u8]) {
    let Ok(parsed) = Timestamp::parse_rfc3339(&text(data)) else {
        return;
    };
    let printed = parsed.to_rfc3339();
    match Timestamp::parse_rfc3339(&printed) {
        Ok(again) => assert_eq!(again, parsed, "{printed}"),
        Err(e) => panic!("printed timestamp {printed:?} does not parse: {e}"),
    }
}

/// The HTTP rules: the first eight bytes are a file length, the rest a `Range` header, a
/// `Content-Range` header and a request path.
pub fn http_range(data: &[u8]) {
    let (len_bytes, rest) = data.split_at(data.len().min(8));
    let mut buf = [0u8; 8];
    buf[..len_bytes.len()].copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(buf);
    let header = text(rest);
    match range::resolve_range(Some(&header), len) {
        range::RangeAnswer::Partial { start, end } => {
            assert!(start <= end && end < len, "{start}-{end} of {len}");
        }
        range::RangeAnswer::Full | range::RangeAnswer::Unsatisfiable => {}
    }
    if let Some(spec) = range::parse_byte_range(&header) {
        assert_eq!(range::parse_byte_range(&spec.to_string()), Some(spec));
    }
    if let Some(range::ContentRange::Bytes { start, end, total }) =
        range::parse_content_range(&header)
    {
        assert!(start <= end && total.is_none_or(|t| end < t));
    }
    if let Ok(segments) = range::sanitize_path(&header) {
        for s in &segments {
            assert!(
                !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']),
                "{s:?}"
            );
        }
    }
}

/// One line of a telemetry samples file.
pub fn telemetry_line(data: &[u8]) {
    if let Ok(sample) = crate::store::telemetry::Sample::parse_line(&text(data)) {
        assert!(sample.value.is_finite());
    }
}

/// A broker URL, and a topic prefix.
pub fn broker_url(data: &[u8]) {
    let t = text(data);
    if let Ok(url) = crate::link::mqtt::parse_broker_url(&t) {
        assert!(!url.host.is_empty());
    }
    let _ = Topics::new(&t);
}

fn with_selector(selector: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(payload);
    v
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn seeds_mqtt_inbound() -> Vec<Vec<u8>> {
    let ts = NOW.secs() - 5;
    let status = serde_json::json!({
        "v": 1, "device_id": "CV1", "ts": ts, "active_slot": "a",
        "components": {"firmware": "2.4.0", "bootloader": "2.0.1"},
        "update": {"state": "downloading", "release_id": "t300-fw-2.5.0", "command_id": "c-1", "progress_pct": 40},
        "battery_pct": 81, "power": "charging", "connectivity": "cellular", "metered": true,
        "free_storage_bytes": 500_000_000_u64, "position": {"lat": 52.5, "lon": 13.4}
    });
    let events = [
        serde_json::json!({"kind": "heartbeat", "uptime_secs": 300}),
        serde_json::json!({"kind": "crash", "process": "nav"}),
        serde_json::json!({"kind": "boot", "slot": "b", "ok": false}),
        serde_json::json!({"kind": "battery", "pct": 19}),
        serde_json::json!({"kind": "reconnect", "offline_secs": 120, "ok": true}),
        serde_json::json!({"kind": "update_progress", "release_id": "r-1", "state": "downloading", "bytes_done": 10, "bytes_total": 20}),
        serde_json::json!({"kind": "metric", "name": "cpu.temp", "value": 71.5}),
    ];
    let mut seeds = vec![with_selector(0, &json_bytes(&status))];
    for (seq, event) in events.into_iter().enumerate() {
        let t =
            serde_json::json!({"v": 1, "device_id": "CV1", "ts": ts, "seq": seq, "event": event});
        seeds.push(with_selector(1, &json_bytes(&t)));
    }
    let ack = serde_json::json!({"v": 1, "device_id": "CV1", "command_id": "c-7", "ts": ts, "result": "rejected", "reason": "tampered"});
    seeds.push(with_selector(2, &json_bytes(&ack)));
    let mut custom = b"convoy/v1/devices/CV2/status\n".to_vec();
    custom.extend_from_slice(&json_bytes(&status));
    seeds.push(with_selector(3, &custom));
    seeds
}

/// A signed manifest for the fixture fleet's first model, valid at [`NOW`].
fn signed_manifest_bytes() -> Vec<u8> {
    let fx = fixture();
    let model = fx
        .fleet
        .devices
        .first()
        .map_or_else(|| "T300".to_owned(), |d| d.model.to_string());
    let artifact = b"firmware image";
    let spec = ReleaseSpec {
        id: "fw-9.0.0".to_owned(),
        version: Version::new(9, 0, 0),
        counter: 90,
        hardware: vec![model, "T300".to_owned()],
        provides: [("firmware", Version::new(9, 0, 0))].into_iter().collect(),
        requires: vec![],
        artifacts: vec![Artifact {
            name: "fw.bin".to_owned(),
            url: "http://127.0.0.1:8080/fw.bin".to_owned(),
            length_bytes: artifact.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(artifact)),
        }],
        expires: Timestamp::from_secs(NOW.secs() + 30 * 86_400),
    };
    SignedManifest::sign(spec, None, &fx.key)
        .map(|m| m.to_json_bytes())
        .unwrap_or_default()
}

fn seeds_sim_command() -> Vec<Vec<u8>> {
    let fx = fixture();
    let id = fx
        .fleet
        .devices
        .first()
        .map_or_else(String::new, |d| d.id.clone());
    let manifest: serde_json::Value =
        serde_json::from_slice(&signed_manifest_bytes()).unwrap_or_default();
    let command = |command_id: &str, action: serde_json::Value| {
        json_bytes(&serde_json::json!({
            "v": 1, "command_id": command_id, "device_id": id, "issued_at": NOW.secs(), "action": action
        }))
    };
    let offer = command(
        "c-1",
        serde_json::json!({"kind": "offer", "release_id": "fw-9.0.0", "manifest": manifest}),
    );
    let mut custom = format!("convoy/v1/devices/{id}/commands\n").into_bytes();
    custom.extend_from_slice(&offer);
    vec![
        with_selector(0, &offer),
        with_selector(
            0,
            &command(
                "c-2",
                serde_json::json!({"kind": "roll_back", "release_id": "fw-9.0.0", "reason": "gate"}),
            ),
        ),
        with_selector(
            0,
            &command(
                "c-3",
                serde_json::json!({"kind": "cancel", "release_id": "fw-9.0.0"}),
            ),
        ),
        with_selector(1, &custom),
    ]
}

fn seeds_manifest() -> Vec<Vec<u8>> {
    let fx = fixture();
    let body = KeySetBody::initial([&fx.key.verifying_key()]);
    let keyset = SignedKeySet::sign(body, &fx.key)
        .map(|s| s.to_json_bytes())
        .unwrap_or_default();
    vec![signed_manifest_bytes(), keyset]
}

fn seeds_canonical_json() -> Vec<Vec<u8>> {
    [
        r#"{"b":1,"a":[true,false,null],"c":{"z":"x\"y\\z","é":-12}}"#,
        r#"[1,2,{"signed":{"_type":"targets","version":3}}]"#,
        r#""text with \n newline""#,
        "18446744073709551615",
        "-9223372036854775808",
        "1.5",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn seeds_strict_json() -> Vec<Vec<u8>> {
    [
        r#"{"signed": {"release": {"counter": 1}}, "signed": {"release": {"counter": 2}}, "signatures": []}"#,
        r#"{"signed": {"release": {"artifacts": [{"sha256": "aa", "sha256": "bb"}]}}}"#,
        r#"{"a": 1, "\u0061": 2}"#,
        r#"{"a": {"b": [1, {"c": null}]}, "d": "e\nf", "g": 18446744073709551615}"#,
        r#"[{"k": 1}, {"k": 2}, {"k": 3, "j": {"k": 4}}]"#,
        "{\"a\": 1,",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn seeds_faults() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../fixtures/faults/example.json").to_vec(),
        br#"{"faults": [{"release_version": "2.4.1", "match": {"carrier": "telekom"}, "effect": "download_stall"}]}"#.to_vec(),
    ]
}

fn seeds_cvss() -> Vec<Vec<u8>> {
    [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.0/AV:A/AC:H/PR:L/UI:R/S:C/C:L/I:N/A:L/E:P/RL:O/RC:C",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        "CVSS:4.0/AV:P/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:H/SI:H/SA:H/E:U",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn seeds_fleet_csv() -> Vec<Vec<u8>> {
    let fx = fixture();
    let mut out = Vec::new();
    let _ = crate::fleet_io::write_csv(&mut out, &fx.fleet.devices);
    vec![
        out,
        include_bytes!("../../fixtures/fleet/depot-small.csv").to_vec(),
        include_bytes!("../../fixtures/fleet/depot-bad-rows.csv").to_vec(),
    ]
}

fn seeds_fleet_json() -> Vec<Vec<u8>> {
    let fx = fixture();
    let mut out = Vec::new();
    let _ = crate::fleet_io::write_json(&mut out, &fx.fleet);
    vec![
        out,
        include_bytes!("../../fixtures/fleet/depot-small.json").to_vec(),
    ]
}

fn seeds_requirement() -> Vec<Vec<u8>> {
    [
        "bootloader>=2.0",
        "modem in 1.2.0,1.3.0",
        "hw_rev in B,C",
        "free_storage>=64MiB",
        "battery>=30%",
        "power in mains,charging",
        "no_roaming",
        "metered_max<=50MB",
        "firmware!=2.4.1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn seeds_version() -> Vec<Vec<u8>> {
    ["2.10.0", "1", "0.0.1", "4294967295.0.7", "01.2"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn seeds_rfc3339() -> Vec<Vec<u8>> {
    [
        "2026-11-23T06:51:00Z",
        "2026-11-23T08:51:00+02:00",
        "2026-11-23",
        "1970-01-01t00:00:00.123456z",
        "2016-12-31 23:59:60-00:30",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn seeds_http_range() -> Vec<Vec<u8>> {
    let with_len = |len: u64, header: &str| {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v
    };
    vec![
        with_len(100, "bytes=0-9"),
        with_len(100, "bytes=90-"),
        with_len(100, "bytes=-10"),
        with_len(0, "bytes=0-"),
        with_len(1_000_003, "bytes 5-9/1000003"),
        with_len(10, "bytes */10"),
        with_len(10, "/t300/fw%202.5.0.bin"),
        with_len(10, "/%2e%2e/secret"),
    ]
}

/// A DDI device's body, as the endpoint parses it: feedback (for a deployment and for a cancel)
/// and configuration data. Oracles: what parses serializes and parses back to the same value,
/// and feeding it to a hub with an open action either changes the action as the feedback says
/// or is refused, never panics.
pub fn ddi_body(data: &[u8]) {
    use crate::link::ddi::wire::{ConfigData, Execution, Feedback, Finished, HandlingType};
    use crate::link::ddi::{ActionState, DdiArtifact, DdiDeployment, DdiHub, HubConfig};
    if let Ok(fb) = crate::link::http::json::parse_json::<Feedback>(data) {
        let again = serde_json::to_vec(&fb).expect("feedback serializes");
        assert_eq!(
            crate::link::http::json::parse_json::<Feedback>(&again).ok(),
            Some(fb.clone())
        );
        let (hub, _rx) = DdiHub::new(HubConfig::default());
        hub.poll("fuzz-1").expect("a valid controller id polls");
        let d = DdiDeployment {
            release_id: "r".into(),
            part: "firmware".into(),
            name: "n".into(),
            version: "1".into(),
            artifacts: vec![DdiArtifact {
                filename: "a".into(),
                size_bytes: 1,
                sha1_hex: String::new(),
                md5_hex: String::new(),
                sha256_hex: String::new(),
                url: "http://127.0.0.1:1/a".into(),
            }],
            metadata: vec![],
            download: HandlingType::Forced,
            update: HandlingType::Forced,
            maintenance_window: None,
        };
        let id = hub.assign("fuzz-1", Arc::new(d)).expect("assign");
        let closes = matches!(
            (fb.status.execution, fb.status.result.finished),
            (Execution::Closed, Finished::Success | Finished::Failure)
                | (Execution::Canceled | Execution::Rejected, _)
        );
        let accepted = hub.feedback("fuzz-1", id, fb).is_ok();
        let state = hub.controller("fuzz-1").expect("known").actions[0].state;
        assert_eq!(
            matches!(state, ActionState::Closed(_)),
            accepted && closes,
            "{state:?}"
        );
    }
    if let Ok(cd) = crate::link::http::json::parse_json::<ConfigData>(data) {
        let again = serde_json::to_vec(&cd).expect("config data serializes");
        assert_eq!(
            crate::link::http::json::parse_json::<ConfigData>(&again).ok(),
            Some(cd)
        );
    }
    ddi_telemetry_body(data);
}

/// The telemetry route's body: what parses serializes and parses back the same; a refused
/// upload reaches the consumer not at all, an accepted one whole, as consecutive messages of
/// the controller the path names.
fn ddi_telemetry_body(data: &[u8]) {
    use crate::link::ddi::wire::TelemetryUpload;
    use crate::link::ddi::{DdiEvent, DdiHub, HubConfig};
    let Ok(upload) = crate::link::http::json::parse_json::<TelemetryUpload>(data) else {
        return;
    };
    let again = serde_json::to_vec(&upload).expect("a telemetry upload serializes");
    assert_eq!(
        crate::link::http::json::parse_json::<TelemetryUpload>(&again).ok(),
        Some(upload.clone())
    );
    let (hub, mut rx) = DdiHub::new(HubConfig {
        telemetry: true,
        ..HubConfig::default()
    });
    hub.poll("fuzz-1").expect("a valid controller id polls");
    while rx.try_recv().is_ok() {}
    let n = upload.events.len();
    match hub.telemetry("fuzz-1", upload) {
        Ok(taken) => {
            assert_eq!(taken, n);
            let Ok(DdiEvent::Telemetry {
                controller,
                messages,
            }) = rx.try_recv()
            else {
                panic!("an accepted upload reaches the consumer");
            };
            assert_eq!(controller, "fuzz-1");
            assert_eq!(messages.len(), n);
            for (k, m) in messages.iter().enumerate() {
                assert_eq!(m.device_id, "fuzz-1");
                assert_eq!(m.seq, k as u64);
            }
        }
        Err(_) => assert!(
            rx.try_recv().is_err(),
            "a refused upload reached the consumer"
        ),
    }
}

fn seeds_ddi_body() -> Vec<Vec<u8>> {
    vec![
        br#"{"id":"1","status":{"execution":"proceeding","result":{"finished":"none","progress":{"cnt":1,"of":3}},"details":["Downloading"]}}"#.to_vec(),
        br#"{"status":{"execution":"closed","result":{"finished":"success"},"details":[]}}"#.to_vec(),
        br#"{"status":{"execution":"closed","result":{"finished":"none"}}}"#.to_vec(),
        br#"{"id":"9","time":"20261123T065100","status":{"execution":"rejected","result":{"finished":"failure"},"code":7}}"#.to_vec(),
        br#"{"mode":"merge","data":{"HwRevision":"B2","serial":"SN-42"}}"#.to_vec(),
        br#"{"status":{"execution":"closed","result":{"finished":"success"},"details":[]},"mode":null,"data":{}}"#.to_vec(),
        br#"{"events":[{"ts":1795392000,"event":{"kind":"crash","process":"navd"}}]}"#.to_vec(),
        br#"{"events":[{"ts":1795392000,"event":{"kind":"battery","pct":140}}]}"#.to_vec(),
        br#"{"events":[]}"#.to_vec(),
    ]
}

fn seeds_telemetry_line() -> Vec<Vec<u8>> {
    vec![
        br#"{"device":"CV1","time":"2026-11-23T06:51:00Z","metric":"crash_count","value":1}"#
            .to_vec(),
        br#"{"device":"CV1","time":1795392000,"metric":"cpu.temp","value":71.5}"#.to_vec(),
    ]
}

fn seeds_broker_url() -> Vec<Vec<u8>> {
    [
        "mqtt://127.0.0.1:1883",
        "mqtts://user:pa:ss@broker.example:8883/",
        "mqtt://[::1]:1883",
        "convoy/v1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::rng::SeededRng;
    use std::path::PathBuf;

    /// Mutated inputs per target in `cargo test`; libFuzzer goes much further.
    const MUTATIONS: u64 = 3_000;

    const TOKENS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"-",
        b"0",
        b"-1",
        b"18446744073709551616",
        b"9223372036854775807",
        b"1e308",
        b"NaN",
        b"null",
        b"..",
        b"/",
        b"%",
        b"%2e",
        b"\n",
        b"\r\n",
        b"\0",
        "é".as_bytes(),
        b"\xff",
        b"=",
        b"bytes=",
        b"T",
        b"Z",
        b"+",
    ];

    fn mutate(rng: &mut SeededRng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let pick = |rng: &mut SeededRng| seeds[rng.below(seeds.len() as u64) as usize].clone();
        let mut v = pick(rng);
        for _ in 0..=rng.below(6) {
            let len = v.len() as u64;
            let at = rng.below(len + 1) as usize;
            match rng.below(7) {
                0 if !v.is_empty() => {
                    let i = rng.below(len) as usize;
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = rng.below(len) as usize;
                    v[i] = rng.below(256) as u8;
                }
                2 => {
                    let token = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                    v.splice(at..at, token.iter().copied());
                }
                3 if !v.is_empty() => {
                    let end = (at + 1 + rng.below(16) as usize).min(v.len());
                    let start = at.min(end);
                    v.drain(start..end);
                }
                4 if at < v.len() => {
                    let end = (at + 1 + rng.below(32) as usize).min(v.len());
                    let copy = v[at..end].to_vec();
                    v.splice(at..at, copy);
                }
                5 => {
                    let other = pick(rng);
                    let from = rng.below(other.len() as u64 + 1) as usize;
                    v.truncate(at);
                    v.extend_from_slice(&other[from..]);
                }
                _ => v.truncate(at),
            }
        }
        v
    }

    /// The committed reproducers (`fuzz/regressions/<target>/`) and, when present, the local
    /// corpus cargo fuzz grows (`fuzz/corpus/<target>/`, not committed).
    fn corpus_files(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files = Vec::new();
        for dir in [
            fuzz.join("regressions").join(name),
            fuzz.join("corpus").join(name),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            files.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes))),
            );
        }
        files.sort();
        files
    }

    fn run_one(target: &Target, input: &[u8], origin: &str) {
        let result = std::panic::catch_unwind(|| (target.run)(input));
        assert!(
            result.is_ok(),
            "fuzz target {} failed on {origin}: input (hex) {}",
            target.name,
            hex::encode(input)
        );
    }

    #[test]
    fn every_target_has_a_fuzz_binary_and_seeds_that_reach_the_oracles() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
        for target in TARGETS {
            let file = dir.join(format!("{}.rs", target.name));
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                source.contains(&format!("fuzz_targets::{}(", target.name)),
                "{} does not call its body",
                file.display()
            );
            assert!((target.seeds)().len() >= 2, "{} needs seeds", target.name);
        }
        // Seeds that the parsers accept, so mutations start deep inside them.
        let fx = fixture();
        assert!(manifest::verify(&signed_manifest_bytes(), &fx.trust, NOW).is_ok());
        let topics = Topics::default_prefix();
        for seed in seeds_mqtt_inbound().iter().take(9) {
            let (selector, rest) = split_selector(seed);
            let topic = match selector {
                0 => topics.status("CV1"),
                1 => topics.telemetry("CV1"),
                _ => topics.acks("CV1"),
            };
            assert!(decode_inbound(&topics, &topic, rest, NOW).is_ok());
        }
        for seed in seeds_sim_command().iter().take(3) {
            let (_, rest) = split_selector(seed);
            let id = &fx.fleet.devices[0].id;
            assert!(crate::sim::decode_command(&topics, &topics.commands(id), rest).is_ok());
        }
    }

    /// Writes every target's seeds into `fuzz/corpus/<target>/seed-N`, the corpus cargo fuzz
    /// starts from. Run on purpose only (docs/FUZZING.md): it writes into the source tree.
    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus; run it before cargo fuzz"]
    fn write_seed_corpus() {
        let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for target in TARGETS {
            let dir = corpus.join(target.name);
            std::fs::create_dir_all(&dir).expect("create the corpus directory");
            for (i, seed) in (target.seeds)().iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write a seed");
            }
        }
    }

    #[test]
    fn every_target_survives_its_corpus_and_seeded_mutations() {
        for (index, target) in TARGETS.iter().enumerate() {
            let seeds = (target.seeds)();
            for (i, seed) in seeds.iter().enumerate() {
                run_one(target, seed, &format!("seed {i}"));
            }
            for (path, bytes) in corpus_files(target.name) {
                run_one(target, &bytes, &path.display().to_string());
            }
            let mut rng = SeededRng::derive(0xF022, index as u64);
            for i in 0..MUTATIONS {
                let input = mutate(&mut rng, &seeds);
                run_one(target, &input, &format!("mutation {i}"));
            }
        }
    }
}
