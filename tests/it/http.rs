//! Artifacts over HTTP against the real server on 127.0.0.1: full and resumed downloads, a file
//! that changes between attempts, range edge cases on the wire, path traversal, a tampered
//! artifact, bounded connections, shutdown, and the `convoy artifacts` commands.

use convoy::link::http::{
    ArtifactServer, Content, FetchError, RetryPolicy, ServerConfig, Truncate, download_resumable,
    download_with_retries,
};
use convoy_e2e::{convoy, convoy_bin, pseudo_random_bytes};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::runtime::Runtime;

const LEN: usize = 1_000_003;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

struct Depot {
    _dir: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
    bytes: Vec<u8>,
}

/// A depot directory holding `fw.bin` (and `t300/modem.bin`), a secret file beside the root,
/// and an output directory.
fn depot() -> Depot {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("t300")).expect("mkdir");
    let bytes = pseudo_random_bytes(LEN, 7);
    std::fs::write(root.join("fw.bin"), &bytes).expect("write artifact");
    std::fs::write(root.join("t300/modem.bin"), b"modem image").expect("write artifact");
    std::fs::write(dir.path().join("secret.txt"), b"TOP SECRET").expect("write secret");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    Depot {
        root,
        out,
        bytes,
        _dir: dir,
    }
}

fn start(rt: &Runtime, root: &Path, config: ServerConfig) -> ArtifactServer {
    rt.block_on(ArtifactServer::start(Content::Dir(root.to_owned()), config))
        .expect("start the artifact server")
}

/// A response read off the wire.
struct Raw {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Sends `request_head` (request line and headers, without the final blank line) with
/// `Connection: close` and reads the whole response.
fn raw(addr: SocketAddr, request_head: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{request_head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read response");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> Raw {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = std::str::from_utf8(&bytes[..split]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

fn no_progress(_: convoy::link::http::Progress) {}

#[test]
fn a_full_download_lands_with_the_right_hash_and_head_describes_it() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let server = start(&rt, &d.root, ServerConfig::new(loopback()));
    let sha = sha256_hex(&d.bytes);
    let dest = d.out.join("fw.bin");
    let mut calls = 0u32;
    let report = rt
        .block_on(download_resumable(
            &server.url_of("fw.bin"),
            &dest,
            LEN as u64,
            &sha,
            &mut |p| {
                calls += 1;
                assert!(p.done_bytes <= p.total_bytes);
            },
        ))
        .expect("download");
    assert_eq!(std::fs::read(&dest).expect("read dest"), d.bytes);
    assert_eq!(report.sha256, sha);
    assert_eq!(report.resumed_from_bytes, 0);
    assert_eq!(report.fetched_bytes, LEN as u64);
    assert!(!report.restarted);
    assert!(calls > 2, "progress was reported {calls} times");
    assert!(!d.out.join("fw.bin.part").exists());
    assert!(!d.out.join("fw.bin.part.etag").exists());

    let head = raw(server.addr(), "HEAD /fw.bin HTTP/1.1");
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], LEN.to_string());
    assert_eq!(head.headers["accept-ranges"], "bytes");
    assert_eq!(head.headers["etag"], format!("\"{sha}\""));
    assert!(head.body.is_empty(), "HEAD sent {} bytes", head.body.len());

    let nested = raw(server.addr(), "GET /t300/modem.bin HTTP/1.1");
    assert_eq!(nested.status, 200);
    assert_eq!(nested.body, b"modem image");
    let stats = server.stats();
    assert_eq!(stats.full, 3, "two GETs and a HEAD of whole files");
    assert_eq!(stats.partial, 0);
    assert!(stats.body_bytes >= LEN as u64);
    rt.block_on(server.shutdown());
}

#[test]
fn an_interrupted_download_resumes_from_the_part_file() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let mut config = ServerConfig::new(loopback());
    config.truncate = Some(Truncate {
        after_bytes: 300_000,
        connections: 1,
    });
    let server = start(&rt, &d.root, config);
    let sha = sha256_hex(&d.bytes);
    let dest = d.out.join("fw.bin");
    let url = server.url_of("fw.bin");

    let err = rt
        .block_on(download_resumable(
            &url,
            &dest,
            LEN as u64,
            &sha,
            &mut no_progress,
        ))
        .expect_err("the first response is cut short");
    let FetchError::Interrupted { done_bytes, .. } = err else {
        panic!("expected an interruption, got {err}");
    };
    assert!(err.is_retryable());
    assert!(
        done_bytes > 0 && done_bytes <= 300_000,
        "held {done_bytes} bytes"
    );
    let part = d.out.join("fw.bin.part");
    assert_eq!(
        std::fs::metadata(&part).expect("part file kept").len(),
        done_bytes
    );
    assert!(!dest.exists(), "an incomplete download was put in place");
    assert_eq!(
        std::fs::read_to_string(d.out.join("fw.bin.part.etag")).expect("etag kept"),
        format!("\"{sha}\"")
    );

    let mut first_progress = None;
    let report = rt
        .block_on(download_resumable(
            &url,
            &dest,
            LEN as u64,
            &sha,
            &mut |p| {
                first_progress.get_or_insert(p.resumed_from_bytes);
            },
        ))
        .expect("the second attempt resumes");
    assert_eq!(report.resumed_from_bytes, done_bytes);
    assert_eq!(report.fetched_bytes, LEN as u64 - done_bytes);
    assert_eq!(first_progress, Some(done_bytes));
    assert!(!report.restarted);
    assert_eq!(std::fs::read(&dest).expect("read dest"), d.bytes);
    assert!(!part.exists());
    let stats = server.stats();
    assert_eq!((stats.full, stats.partial, stats.truncated), (1, 1, 1));
    rt.block_on(server.shutdown());
}

#[test]
fn a_download_cut_many_times_completes_with_retries_without_refetching() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let mut config = ServerConfig::new(loopback());
    config.truncate = Some(Truncate {
        after_bytes: 200_000,
        connections: 1_000,
    });
    let server = start(&rt, &d.root, config);
    let sha = sha256_hex(&d.bytes);
    let dest = d.out.join("fw.bin");
    let mut retries = 0;
    let (report, attempts) = rt
        .block_on(download_with_retries(
            &server.url_of("fw.bin"),
            &dest,
            LEN as u64,
            &sha,
            RetryPolicy {
                attempts: 20,
                backoff: Duration::from_millis(1),
            },
            &mut no_progress,
            &mut |_| retries += 1,
        ))
        .expect("download with retries");
    assert_eq!(std::fs::read(&dest).expect("read dest"), d.bytes);
    assert!(attempts >= 6, "{attempts} attempts for 1 MB in 200 kB cuts");
    assert_eq!(retries + 1, attempts);
    assert!(report.resumed_from_bytes > 800_000);
    let stats = server.stats();
    assert_eq!(
        stats.full, 1,
        "only the first request asked for the whole file"
    );
    assert_eq!(stats.partial, u64::from(attempts) - 1);
    rt.block_on(server.shutdown());
}

#[test]
fn a_file_that_changed_on_the_server_restarts_from_zero() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let mut config = ServerConfig::new(loopback());
    config.truncate = Some(Truncate {
        after_bytes: 400_000,
        connections: 1,
    });
    let server = start(&rt, &d.root, config);
    let dest = d.out.join("fw.bin");
    let url = server.url_of("fw.bin");
    let v1_sha = sha256_hex(&d.bytes);
    rt.block_on(download_resumable(
        &url,
        &dest,
        LEN as u64,
        &v1_sha,
        &mut no_progress,
    ))
    .expect_err("cut short");

    // Version 2 replaces version 1 (same length), the way a release tool would: by rename.
    let v2 = pseudo_random_bytes(LEN, 99);
    let tmp = d.root.join("fw.bin.new");
    std::fs::write(&tmp, &v2).expect("write v2");
    std::fs::rename(&tmp, d.root.join("fw.bin")).expect("replace");
    let v2_sha = sha256_hex(&v2);

    let report = rt
        .block_on(download_resumable(
            &url,
            &dest,
            LEN as u64,
            &v2_sha,
            &mut no_progress,
        ))
        .expect("the new version downloads whole");
    assert!(report.restarted, "If-Range should have forced a restart");
    assert_eq!(report.fetched_bytes, LEN as u64);
    assert_eq!(std::fs::read(&dest).expect("read dest"), v2);
    let stats = server.stats();
    assert_eq!(
        (stats.full, stats.partial),
        (2, 0),
        "the stale range must not be served"
    );
    rt.block_on(server.shutdown());
}

#[test]
fn a_tampered_artifact_is_refused_and_never_put_in_place() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let sha = sha256_hex(&d.bytes);
    let mut tampered = d.bytes.clone();
    tampered[123_456] ^= 0x01;
    std::fs::write(d.root.join("fw.bin"), &tampered).expect("tamper");
    let server = start(&rt, &d.root, ServerConfig::new(loopback()));
    let dest = d.out.join("fw.bin");
    let err = rt
        .block_on(download_resumable(
            &server.url_of("fw.bin"),
            &dest,
            LEN as u64,
            &sha,
            &mut no_progress,
        ))
        .expect_err("hash mismatch");
    let FetchError::HashMismatch {
        ref expected,
        ref got,
        ..
    } = err
    else {
        panic!("expected a hash mismatch, got {err}");
    };
    assert_eq!(expected, &sha);
    assert_eq!(got, &sha256_hex(&tampered));
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains(&sha) && message.contains(&sha256_hex(&tampered)),
        "{message}"
    );
    assert!(!dest.exists(), "a tampered artifact was renamed into place");
    assert!(!d.out.join("fw.bin.part").exists(), "tampered bytes kept");

    // A wrong expected length is caught from the response head, before any byte is written.
    let err = rt
        .block_on(download_resumable(
            &server.url_of("fw.bin"),
            &dest,
            LEN as u64 + 1,
            &sha,
            &mut no_progress,
        ))
        .expect_err("length mismatch");
    assert!(
        matches!(err, FetchError::LengthMismatch { expected, got, .. } if expected == LEN as u64 + 1 && got == LEN as u64),
        "{err}"
    );
    let err = rt
        .block_on(download_resumable(
            &server.url_of("nope.bin"),
            &dest,
            10,
            &sha,
            &mut no_progress,
        ))
        .expect_err("not found");
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    rt.block_on(server.shutdown());
}

#[test]
fn range_edge_cases_on_the_wire() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let server = start(&rt, &d.root, ServerConfig::new(loopback()));
    let addr = server.addr();
    let len = LEN as u64;
    let etag = format!("\"{}\"", sha256_hex(&d.bytes));
    let get = |range: &str| raw(addr, &format!("GET /fw.bin HTTP/1.1\r\n{range}"));

    let r = get("Range: bytes=0-9");
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], format!("bytes 0-9/{len}"));
    assert_eq!(r.body, &d.bytes[..10]);

    let r = get("Range: bytes=999990-");
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 999990-{}/{len}", len - 1)
    );
    assert_eq!(r.body, &d.bytes[999_990..]);

    let r = get("Range: bytes=-7");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &d.bytes[LEN - 7..]);

    let r = get(&format!("Range: bytes={}-{}", len - 2, len + 50));
    assert_eq!(r.status, 206, "an end past the file is clamped");
    assert_eq!(r.body, &d.bytes[LEN - 2..]);

    let r = get(&format!("Range: bytes={len}-"));
    assert_eq!(r.status, 416);
    assert_eq!(r.headers["content-range"], format!("bytes */{len}"));
    assert!(r.body.is_empty());

    let r = get("Range: bytes=-0");
    assert_eq!(r.status, 416);

    let r = get("Range: bytes=9-2");
    assert_eq!(r.status, 200, "an invalid range is ignored");
    assert_eq!(r.body.len(), LEN);

    let r = get(&format!("Range: bytes=10-19\r\nIf-Range: {etag}"));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &d.bytes[10..20]);

    let r = get("Range: bytes=10-19\r\nIf-Range: \"0000\"");
    assert_eq!(
        r.status, 200,
        "If-Range on another version gets the whole file"
    );
    assert_eq!(r.body.len(), LEN);

    let r = raw(addr, "POST /fw.bin HTTP/1.1\r\nContent-Length: 0");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");

    let r = raw(addr, "HEAD /fw.bin HTTP/1.1\r\nRange: bytes=0-99");
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-length"], "100");
    assert!(r.body.is_empty());

    std::fs::write(d.root.join("empty.bin"), b"").expect("empty file");
    let r = raw(addr, "GET /empty.bin HTTP/1.1\r\nRange: bytes=0-");
    assert_eq!(r.status, 416);
    assert_eq!(r.headers["content-range"], "bytes */0");
    let r = raw(addr, "GET /empty.bin HTTP/1.1");
    assert_eq!((r.status, r.body.len()), (200, 0));
    rt.block_on(server.shutdown());
}

#[test]
fn traversal_attempts_are_refused() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    // A symbolic link inside the root that leads out of it.
    std::os::unix::fs::symlink(
        d.root.parent().expect("parent").join("secret.txt"),
        d.root.join("link.txt"),
    )
    .expect("symlink");
    let server = start(&rt, &d.root, ServerConfig::new(loopback()));
    let addr = server.addr();
    for target in [
        "/../secret.txt",
        "/t300/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/t300/..%2f..%2fsecret.txt",
        "/t300%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "//etc/passwd",
        "/./fw.bin",
        "/fw.bin%00.txt",
        "http://127.0.0.1/../secret.txt",
    ] {
        let r = raw(addr, &format!("GET {target} HTTP/1.1"));
        assert_eq!(r.status, 400, "{target} answered {}", r.status);
        assert!(!String::from_utf8_lossy(&r.body).contains("TOP SECRET"));
    }
    let r = raw(addr, "GET /link.txt HTTP/1.1");
    assert_eq!(r.status, 404, "a link out of the root is not followed");
    assert!(!String::from_utf8_lossy(&r.body).contains("TOP SECRET"));
    let r = raw(addr, "GET /t300 HTTP/1.1");
    assert_eq!(r.status, 404, "a directory is not a file");
    let stats = server.stats();
    assert_eq!(stats.refused, 12);
    assert_eq!(stats.not_found, 2);
    rt.block_on(server.shutdown());
}

#[test]
fn an_explicit_file_set_serves_only_those_files() {
    let _turn = convoy_e2e::shared();
    let rt = runtime();
    let d = depot();
    let files = BTreeMap::from([("firmware.bin".to_owned(), d.root.join("fw.bin"))]);
    let server = rt
        .block_on(ArtifactServer::start(
            Content::Files(files),
            ServerConfig::new(loopback()),
        ))
        .expect("start");
    assert_eq!(
        raw(server.addr(), "GET /firmware.bin HTTP/1.1").body,
        d.bytes
    );
    assert_eq!(raw(server.addr(), "GET /fw.bin HTTP/1.1").status, 404);
    assert_eq!(
        raw(server.addr(), "GET /t300/modem.bin HTTP/1.1").status,
        404
    );
    let catalog = rt.block_on(server.catalog()).expect("catalog");
    assert_eq!(catalog.len(), 1);
    assert_eq!(catalog[0].sha256, sha256_hex(&d.bytes));
    rt.block_on(server.shutdown());
}

#[test]
fn connections_are_bounded_and_shutdown_is_clean() {
    let _turn = convoy_e2e::alone();
    let rt = runtime();
    let d = depot();
    let mut config = ServerConfig::new(loopback());
    config.max_connections = 1;
    let server = start(&rt, &d.root, config);
    let addr = server.addr();

    // The first client holds the only slot with a request it has not finished sending.
    let mut first = TcpStream::connect(addr).expect("connect");
    first
        .write_all(b"GET /t300/modem.bin HTTP/1.1\r\n")
        .expect("send");
    convoy_e2e::wait_for(
        "the server to accept the first client into its only slot",
        Duration::from_secs(10),
        || server.stats().connections == 1,
    );

    let mut second = TcpStream::connect(addr).expect("the kernel accepts into the backlog");
    second
        .write_all(b"GET /t300/modem.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let waited = second.read(&mut byte);
    assert!(
        waited.is_err(),
        "the second client was served while the only slot was taken"
    );

    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut response = Vec::new();
    second
        .read_to_end(&mut response)
        .expect("served once the slot is free");
    let r = parse_response(&response);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"modem image");
    assert_eq!(server.stats().peak_connections, 1);

    // An idle keep-alive connection does not hold shutdown up.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(b"GET /t300/modem.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut reader = BufReader::new(idle.try_clone().expect("clone"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let began = std::time::Instant::now();
    rt.block_on(server.shutdown());
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        began.elapsed()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

/// Kills a child process when the test ends, passed or not.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn convoy_artifacts_serve_and_fetch() {
    let _turn = convoy_e2e::shared();
    let d = depot();
    let mut child = std::process::Command::new(convoy_bin())
        .args(["artifacts", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&d.root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start convoy artifacts serve");
    let stdout = child.stdout.take().expect("stdout");
    let _guard = Kill(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let base = first
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    let listing: Vec<String> = lines.take(3).map(|l| l.expect("line")).collect();
    let sha = sha256_hex(&d.bytes);
    assert!(listing[0].contains("2 artifacts"), "{listing:?}");
    assert!(
        listing
            .iter()
            .any(|l| l.contains("fw.bin") && l.contains(&sha)),
        "{listing:?}"
    );

    let dest = d.out.join("fw.bin");
    let url = format!("{base}fw.bin");
    let ok = convoy(&[
        "artifacts",
        "fetch",
        &url,
        "--out",
        dest.to_str().expect("path"),
        "--sha256",
        &sha,
        "--length",
        &LEN.to_string(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("verified"));
    assert_eq!(std::fs::read(&dest).expect("fetched"), d.bytes);

    let wrong = "0".repeat(64);
    let bad = convoy(&[
        "artifacts",
        "fetch",
        &url,
        "--out",
        d.out.join("bad.bin").to_str().expect("path"),
        "--sha256",
        &wrong,
        "--length",
        &LEN.to_string(),
    ]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("hash mismatch") && stderr.contains(&wrong) && stderr.contains(&sha),
        "{stderr}"
    );
    assert!(!d.out.join("bad.bin").exists());
}

fn sim_device(id: &str, now: convoy_core::time::Timestamp) -> convoy_core::fleet::Device {
    use convoy_core::fleet::{
        Connectivity, CustomerTier, Device, DeviceClass, GeoPoint, PowerState, Redundancy, Slot,
        SmallMap,
    };
    use convoy_core::version::Version;
    Device {
        id: id.to_owned(),
        model: "T300".into(),
        hw_rev: "B".into(),
        components: [("firmware", Version::new(2, 4, 0))].into_iter().collect(),
        active_slot: Slot::A,
        region: "eu-central".into(),
        depot: "ber".into(),
        position: GeoPoint {
            lat: 52.5,
            lon: 13.4,
        },
        connectivity: Connectivity::Ethernet,
        metered: false,
        battery_pct: None,
        power: PowerState::Mains,
        free_storage_bytes: 1_000_000_000,
        customer_tier: CustomerTier::Standard,
        device_class: DeviceClass::Kiosk,
        redundancy: Redundancy::None,
        last_seen: now,
        failed_update_attempts: 0,
        tags: SmallMap::new(),
    }
}

/// A signed offer of release `id` (firmware `version`, `counter`) whose one artifact `name` has
/// the given signed bytes and a relative URL.
fn sim_offer(
    key: &ed25519_dalek::SigningKey,
    now: convoy_core::time::Timestamp,
    (id, version, counter): (&str, convoy_core::version::Version, u64),
    (name, bytes): (&str, &[u8]),
    command_id: &str,
) -> convoy::link::protocol::Command {
    use convoy::link::protocol::{Command, CommandAction};
    use convoy_core::manifest::SignedManifest;
    use convoy_core::release::{Artifact, ReleaseSpec};
    let spec = ReleaseSpec {
        id: id.to_owned(),
        version,
        counter,
        hardware: vec!["T300".to_owned()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: name.to_owned(),
            url: name.to_owned(),
            length_bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }],
        expires: now.plus_secs(30 * 86_400),
    };
    let manifest = SignedManifest::sign(spec, None, key)
        .expect("sign")
        .to_json_bytes();
    Command {
        v: 1,
        command_id: command_id.to_owned(),
        device_id: "SIM-1".to_owned(),
        issued_at: now,
        action: CommandAction::Offer {
            release_id: id.to_owned(),
            manifest: serde_json::from_slice(&manifest).expect("manifest JSON"),
        },
    }
}

/// `convoy sim --fetch-artifacts`: the simulator fetches a release's artifact over HTTP once
/// (resuming after a cut), and only then hands the offer to the device; a release whose served
/// artifact does not match its signed hash is rejected with the hash mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_fetches_artifacts_before_devices_install() {
    use convoy::link::broker::EmbeddedBroker;
    use convoy::link::mqtt::{self, LinkConfig, LinkEvent, Role};
    use convoy::link::protocol::{AckResult, Inbound, Topics, UpdateState};
    use convoy::sim::{ArtifactFetch, SimOptions};
    use convoy_core::devsim::{Faults, SimConfig};
    use convoy_core::fleet::Fleet;
    use convoy_core::manifest::TrustedKeys;
    use convoy_core::version::Version;
    let _turn = convoy_e2e::alone();

    let dir = tempfile::tempdir().expect("tempdir");
    let good = pseudo_random_bytes(300_000, 3);
    let signed_bad = pseudo_random_bytes(1_000, 4);
    let served_bad = pseudo_random_bytes(1_000, 8);
    std::fs::write(dir.path().join("fw.img"), &good).expect("write");
    std::fs::write(dir.path().join("fw2.img"), &served_bad).expect("write");
    let mut config = ServerConfig::new(loopback());
    config.truncate = Some(Truncate {
        after_bytes: 100_000,
        connections: 1,
    });
    let server = ArtifactServer::start(Content::Dir(dir.path().to_owned()), config)
        .await
        .expect("artifact server");
    let base = format!("http://{}/", server.addr());

    let broker = EmbeddedBroker::start(loopback()).expect("embedded broker");
    let now = convoy::now();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let options = SimOptions {
        broker_url: broker.url(),
        client_id: "sim-fetch-fleet".to_owned(),
        topics: Topics::default_prefix(),
        fleet: Fleet::new(Vec::new(), vec![sim_device("SIM-1", now)]),
        faults: Faults::default(),
        trust: TrustedKeys::from_keys([&key.verifying_key()]),
        seed: 1,
        time_scale: 300.0,
        tick: Duration::from_millis(20),
        config: SimConfig {
            crash_per_hour: 0.0,
            reboot_per_hour: 0.0,
            outage_factor: 0.0,
            ..SimConfig::default()
        },
        start: now,
    };
    let cache = dir.path().join("cache");
    let fetch = ArtifactFetch {
        dir: cache.clone(),
        base_url: Some(base),
        retry: RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(10),
        },
    };
    let (mut console, mut rx) = mqtt::spawn(
        &LinkConfig::new(&broker.url(), "sim-fetch-console"),
        Topics::default_prefix(),
        &Role::Console,
    )
    .expect("console link");
    console
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connected");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sim = tokio::spawn(convoy::sim::run_with_fetch(
        options,
        Some(fetch),
        Some(stop_rx),
    ));

    let mut acks = Vec::new();
    let mut states = Vec::new();
    let mut sent_first = false;
    let mut sent_second = false;
    let done = tokio::time::timeout(Duration::from_secs(45), async {
        loop {
            let Some(LinkEvent::Inbound(inbound)) = rx.recv().await else {
                continue;
            };
            match inbound {
                Inbound::Status(s) => {
                    if states.last() != Some(&s.update.state) {
                        states.push(s.update.state);
                    }
                }
                Inbound::Ack(a) => acks.push((a.command_id, a.result, a.reason)),
                Inbound::Telemetry(_) => {}
            }
            if !sent_first && !states.is_empty() {
                sent_first = true;
                let offer = sim_offer(
                    &key,
                    now,
                    ("t300-fw-2.4.1", Version::new(2, 4, 1), 7),
                    ("fw.img", &good),
                    "c-1",
                );
                console.send_command(&offer).await.expect("send");
            }
            if !sent_second && states.last() == Some(&UpdateState::Confirmed) {
                sent_second = true;
                let offer = sim_offer(
                    &key,
                    now,
                    ("t300-fw-2.4.2", Version::new(2, 4, 2), 8),
                    ("fw2.img", &signed_bad),
                    "c-2",
                );
                console.send_command(&offer).await.expect("send");
            }
            if acks.len() >= 2 {
                break;
            }
        }
    })
    .await;
    let _ = stop_tx.send(());
    let (_, fetched) = sim.await.expect("sim task").expect("sim run");
    assert!(
        done.is_ok(),
        "timed out; states {states:?}, acks {acks:?}, server {:?}",
        server.stats()
    );
    assert_eq!(acks[0].0, "c-1");
    assert_eq!(acks[0].1, AckResult::Accepted);
    assert!(states.contains(&UpdateState::Confirmed), "{states:?}");
    assert_eq!(
        std::fs::read(cache.join("t300-fw-2.4.1/fw.img")).expect("fetched artifact"),
        good
    );
    assert_eq!(acks[1].0, "c-2");
    assert_eq!(
        acks[1].1,
        AckResult::Rejected,
        "{acks:?} {fetched:?} {:?}",
        server.stats()
    );
    let reason = acks[1].2.as_deref().expect("reason");
    assert!(
        reason.contains("hash mismatch") && reason.contains(&sha256_hex(&signed_bad)),
        "{reason}"
    );
    assert!(!cache.join("t300-fw-2.4.2/fw2.img").exists());
    assert_eq!(fetched.releases_fetched, 1);
    assert_eq!(fetched.releases_failed, 1);
    assert_eq!(fetched.bytes_fetched, good.len() as u64);
    assert_eq!(fetched.offers_held, 2);
    assert_eq!(fetched.offers_refused, 1);
    let stats = server.stats();
    assert_eq!(stats.truncated, 1, "the first fetch was cut");
    assert_eq!(stats.partial, 1, "and resumed with a range");
    server.shutdown().await;
}
