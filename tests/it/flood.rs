//! Issue 16 item 6, "Servers stay up for everyone": the attacks that once locked clients out,
//! performed against the real `convoy serve` (plain and TLS), `convoy artifacts serve` and
//! `convoy ddi serve` binaries on 127.0.0.1.
//!
//! On loopback every client could share one address; the attacker's sockets are bound to
//! 127.0.0.2 (and 127.0.0.3 to .6 where several attackers are needed; Linux routes all of
//! 127/8 to `lo`), the normal client connects from 127.0.0.1. What each test shows:
//!
//! - per client: 300 half-sent requests from one address hold at most that address's share of
//!   the connections (a quarter by default), the rest are refused at once (a 503 naming
//!   `--max-connections-per-client`, or a closed socket), and a normal client from another
//!   address is served at once. These runs set a long header timeout, so that what keeps the
//!   normal client served is the per-client bound alone;
//! - header timeout: when half-sent requests from several addresses hold every slot, the normal
//!   client waits in the backlog only until the header timeout closes them;
//! - event streams: 260 streams on one viewer token get 4 open and 256 refused with 429 naming
//!   `--max-streams-per-token`, the admin is served, the 261st is refused too, and the slots come
//!   back when the streams close; past `--max-streams` in all, 503 names that limit;
//! - regular files only: 540 requests for a FIFO in the artifact directory are all refused at
//!   once with 404, as are a symbolic link to /dev/zero, a directory and a socket, and a normal
//!   file is still served;
//! - DDI: 20 probes without valid authentication get 401 each, whatever the path, and the links
//!   of a poll sent with `Host: evil.example` start with the configured public URL.

use convoy_e2e::{SignedWorkspace, WorkspaceSpec, convoy_bin, convoy_ok, free_port};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The half-sent requests of a slowloris: a request line and one header, never the blank line.
const HALF_HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";
/// The start of a TLS record that announces more bytes than ever come.
const HALF_TLS: &[u8] = b"\x16\x03\x01\x00\xf0\x01\x00\x00";
/// How many half-sent requests one attacker opens.
const FLOOD: usize = 300;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn attacker(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A `convoy` server process, killed when the test ends; its standard error goes to a file.
struct Proc {
    child: Child,
    first_line: String,
    log: std::path::PathBuf,
}

impl Proc {
    /// Starts `convoy ARGS` and waits for its first line on standard output.
    fn start(args: &[&str], log: &Path) -> Self {
        let mut child = Command::new(convoy_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start convoy");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let Some(Ok(first_line)) = lines.next() else {
            let _ = child.kill();
            panic!(
                "convoy {args:?} printed nothing: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        // Drain the rest, so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self {
            child,
            first_line,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Threads of the server process now (Linux).
    fn threads(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `http(s)://127.0.0.1:PORT` in a line such as `serving X on http://127.0.0.1:PORT (...)`.
fn url_in(line: &str) -> String {
    let start = line.find("http").expect("a URL in the line");
    line[start..]
        .split([' ', ';'])
        .next()
        .expect("URL")
        .trim_end_matches('/')
        .to_owned()
}

fn addr_of(url: &str) -> SocketAddr {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("host:port")
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Opens `n` connections from `from` and sends `partial` on each, never the rest.
async fn half_sent(from: IpAddr, to: SocketAddr, n: usize, partial: &[u8]) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect_from(from, to)
            .await
            .expect("the kernel accepts every connection into the backlog");
        // A connection already refused may be reset before or during this write.
        let _ = s.write_all(partial).await;
        out.push(s);
    }
    out
}

/// What became of the attacker's connections after `wait`.
struct Fates {
    /// Still open, the server waiting for the rest of the request.
    held: Vec<TcpStream>,
    /// Answered with a 503 (the first answer's text kept).
    answered: usize,
    first_answer: Option<String>,
    /// Closed by the server with no answer.
    closed: usize,
}

impl Fates {
    fn refused(&self) -> usize {
        self.answered + self.closed
    }
}

async fn fates(sockets: Vec<TcpStream>, wait: Duration) -> Fates {
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let read = tokio::time::timeout(wait, s.read_to_end(&mut buf)).await;
                (read.is_err(), buf, s)
            })
        })
        .collect();
    let mut f = Fates {
        held: Vec::new(),
        answered: 0,
        first_answer: None,
        closed: 0,
    };
    for t in tasks {
        let (timed_out, buf, s) = t.await.expect("reader task");
        if timed_out && buf.is_empty() {
            f.held.push(s);
        } else if buf.starts_with(b"HTTP/1.1 503") {
            f.answered += 1;
            f.first_answer
                .get_or_insert_with(|| String::from_utf8_lossy(&buf).into_owned());
        } else {
            assert!(buf.is_empty(), "an unexpected answer: {buf:?}");
            f.closed += 1;
        }
    }
    f
}

/// Asserts what a 300-request flood from one address left: `share` held, the rest refused, the
/// plain-HTTP answers naming the limit.
fn assert_flood(what: &str, f: &Fates, share: usize, tls: bool) {
    eprintln!(
        "{what}: {FLOOD} half-sent requests from one address: {} held, {} refused ({} answered 503, {} closed)",
        f.held.len(),
        f.refused(),
        f.answered,
        f.closed
    );
    assert_eq!(f.held.len(), share, "{what}: the address's share is held");
    assert_eq!(f.refused(), FLOOD - share, "{what}: every other is refused");
    if tls {
        assert_eq!(f.answered, 0, "{what}: no HTTP before a TLS handshake");
    } else {
        let answer = f.first_answer.as_deref().expect("at least one 503 answer");
        assert!(
            answer.contains("--max-connections-per-client") && answer.contains("at most"),
            "{what}: {answer}"
        );
    }
}

/// One whole request from 127.0.0.1 on a fresh connection; its status, head and body.
async fn request(to: SocketAddr, head: &str) -> (u16, String, String) {
    let mut s = connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), to)
        .await
        .expect("connect");
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (h, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = h
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, h.to_owned(), body.to_owned())
}

/// The cache and tokens of a `convoy serve`: an admin, and viewers `v0`, `v1`, ...
struct ServeCache {
    dir: tempfile::TempDir,
    admin: String,
    viewers: Vec<String>,
}

impl ServeCache {
    fn new(viewers: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache.db").display().to_string();
        convoy_ok(&[
            "fleet",
            "generate",
            "--devices",
            "20",
            "--seed",
            "3",
            "--out",
            &cache,
        ]);
        let token = |operator: &str, role: &str| {
            convoy_ok(&[
                "serve",
                "token",
                "add",
                "--cache",
                &cache,
                "--operator",
                operator,
                "--role",
                role,
            ])
            .trim()
            .to_owned()
        };
        let admin = token("ada", "admin");
        let viewers = (0..viewers)
            .map(|i| token(&format!("viewer{i}"), "viewer"))
            .collect();
        Self {
            dir,
            admin,
            viewers,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn serve(&self, extra: &[&str]) -> Proc {
        let cache = self.path("cache.db");
        let mut args = vec!["serve", "--cache", &cache, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Proc::start(&args, &self.dir.path().join("serve.log"))
    }
}

async fn whoami(base: &str, token: &str) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let began = Instant::now();
    let status = client
        .get(format!("{base}/api/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the normal client is answered")
        .status()
        .as_u16();
    (status, began.elapsed())
}

#[test]
fn a_slowloris_from_one_address_leaves_convoy_serve_to_everyone_else() {
    let _turn = convoy_e2e::alone();
    let c = ServeCache::new(0);
    // A long header timeout: the normal client below is served because of the per-client
    // bound alone (256 connections, 64 per address by default).
    let server = c.serve(&["--header-timeout-secs", "120"]);
    let base = url_in(&server.first_line);
    let addr = addr_of(&base);
    runtime().block_on(async {
        let sockets = half_sent(attacker(2), addr, FLOOD, HALF_HTTP).await;
        let (status, took) = whoami(&base, &c.admin).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(5), "served after {took:?}");
        let f = fates(sockets, Duration::from_secs(3)).await;
        assert_flood("convoy serve", &f, 64, false);
        // Still served with the attacker's share held.
        assert_eq!(whoami(&base, &c.admin).await.0, 200);
        drop(f);
    });
    assert!(
        server.log().contains("--max-connections-per-client"),
        "the refusals are logged: {}",
        server.log()
    );
}

#[test]
fn a_slowloris_of_tls_handshakes_leaves_convoy_serve_to_everyone_else() {
    let _turn = convoy_e2e::alone();
    let c = ServeCache::new(0);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_pem = cert.cert.pem();
    std::fs::write(c.path("cert.pem"), &cert_pem).expect("cert");
    std::fs::write(c.path("key.pem"), cert.signing_key.serialize_pem()).expect("key");
    let (cert_path, key_path) = (c.path("cert.pem"), c.path("key.pem"));
    let server = c.serve(&[
        "--tls-cert",
        &cert_path,
        "--tls-key",
        &key_path,
        "--tls-handshake-timeout-secs",
        "120",
        "--header-timeout-secs",
        "120",
    ]);
    let base = url_in(&server.first_line);
    assert!(base.starts_with("https://"), "{base}");
    let addr = addr_of(&base);
    runtime().block_on(async {
        let sockets = half_sent(attacker(2), addr, FLOOD, HALF_TLS).await;
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("certificate"),
            )
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let began = Instant::now();
        let status = client
            .get(format!("https://localhost:{}/api/v1/whoami", addr.port()))
            .bearer_auth(&c.admin)
            .send()
            .await
            .expect("the normal client is answered over TLS")
            .status();
        assert_eq!(status, 200);
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        let f = fates(sockets, Duration::from_secs(3)).await;
        assert_flood("convoy serve (TLS)", &f, 64, true);
    });
}

#[test]
fn half_sent_requests_that_hold_every_slot_are_cut_off_by_the_header_timeout() {
    let _turn = convoy_e2e::alone();
    let c = ServeCache::new(0);
    let server = c.serve(&[
        "--max-connections",
        "8",
        "--max-connections-per-client",
        "2",
        "--header-timeout-secs",
        "2",
        "--max-streams",
        "4",
    ]);
    let base = url_in(&server.first_line);
    let addr = addr_of(&base);
    runtime().block_on(async {
        // Four addresses, two each: every one of the 8 slots holds a half-sent request.
        let mut held = Vec::new();
        for a in 2..=5 {
            held.extend(half_sent(attacker(a), addr, 2, HALF_HTTP).await);
        }
        let (status, took) = whoami(&base, &c.admin).await;
        assert_eq!(status, 200);
        eprintln!("with every slot held, the normal client was served after {took:?}");
        // It waited in the backlog for the header timeout (2 s), not longer than a few seconds
        // past it.
        assert!(
            took >= Duration::from_secs(1),
            "served after {took:?}: no slot was held?"
        );
        assert!(took < Duration::from_secs(8), "served after {took:?}");
        // The server closed every half-sent request.
        let f = fates(held, Duration::from_secs(5)).await;
        assert!(f.held.is_empty(), "{} still held", f.held.len());
        assert_eq!(f.closed + f.answered, 8);
    });
}

#[test]
fn event_streams_are_bounded_per_token_and_in_all_and_the_admin_is_served() {
    let _turn = convoy_e2e::alone();
    let c = ServeCache::new(17);
    // A burst allowance above 261 requests, so that the rate limit does not hide the stream
    // bound; a long header timeout, so that idle refused connections stay until closed here.
    let server = c.serve(&["--rate-burst", "2000", "--header-timeout-secs", "120"]);
    let base = url_in(&server.first_line);
    let addr = addr_of(&base);
    let events_from = |from: IpAddr, token: String| async move {
        let mut s = connect_from(from, addr).await.expect("connect");
        s.write_all(
            format!(
                "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut byte))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n == 1, "closed before an answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut body = String::new();
        if status != 200 {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            let mut b = vec![0u8; len];
            s.read_exact(&mut b).await.expect("body");
            body = String::from_utf8_lossy(&b).into_owned();
        }
        (status, body, s)
    };
    let viewer = c.viewers[0].clone();
    runtime().block_on(async {
        let (mut open, mut refused) = (Vec::new(), 0usize);
        let mut refusal = String::new();
        // 260 streams on one viewer token, from five addresses (52 each, within the per-address
        // share), so that it is the stream bound that answers.
        for i in 0..260usize {
            let from = attacker(2 + u8::try_from(i % 5).expect("small"));
            let (status, body, s) = events_from(from, viewer.clone()).await;
            match status {
                200 => open.push(s),
                429 => {
                    refused += 1;
                    refusal = body;
                }
                other => panic!("stream {i}: {other} {body}"),
            }
        }
        eprintln!(
            "260 streams on one token: {} open, {refused} refused ({refusal})",
            open.len()
        );
        assert_eq!(open.len(), 4);
        assert_eq!(refused, 256);
        assert!(refusal.contains("--max-streams-per-token 4"), "{refusal}");

        // The admin is served meanwhile.
        let (status, _, body) = request(
            addr,
            &format!(
                "GET /api/v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}",
                c.admin
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // The 261st is refused too, naming the limit.
        let (status, body, _) = events_from(attacker(2), viewer.clone()).await;
        assert_eq!(status, 429);
        assert!(body.contains("--max-streams-per-token"), "{body}");

        // Closed streams give their slots back.
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(10);
        let again = loop {
            let (status, _, s) = events_from(attacker(3), viewer.clone()).await;
            if status == 200 {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the slots of closed streams never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(again);

        // In all: 64 streams (4 on each of 16 tokens), then another token's is refused with
        // 503. The viewer's last stream may take a moment to be seen closed: until then the
        // 64th waits for its slot.
        let mut all = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        for (t, token) in c.viewers[1..].iter().enumerate() {
            for k in 0..4 {
                let from = attacker(2 + u8::try_from((t * 4 + k) % 5).expect("small"));
                loop {
                    let (status, body, s) = events_from(from, token.clone()).await;
                    if status == 200 {
                        all.push(s);
                        break;
                    }
                    assert_eq!(status, 503, "stream {k} of token {t}: {body}");
                    assert!(Instant::now() < deadline, "stream {k} of token {t}: {body}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert_eq!(all.len(), 64);
        let (status, body, _) = events_from(attacker(4), viewer.clone()).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("--max-streams 64"), "{body}");
        let (status, _, _) = request(
            addr,
            &format!(
                "GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}",
                c.admin
            ),
        )
        .await;
        assert_eq!(
            status, 200,
            "the admin is served with every stream slot taken"
        );
    });
}

/// An artifact directory with a normal file, a FIFO, a symbolic link to /dev/zero, a directory
/// and a Unix socket (whose listener the caller keeps).
fn hostile_depot(root: &Path) -> std::os::unix::net::UnixListener {
    std::fs::create_dir_all(root.join("dir")).expect("mkdir");
    std::fs::write(root.join("fw.bin"), b"firmware bytes").expect("artifact");
    let status = Command::new("mkfifo")
        .arg(root.join("pipe.bin"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    std::os::unix::fs::symlink("/dev/zero", root.join("zero.bin")).expect("symlink");
    std::os::unix::net::UnixListener::bind(root.join("sock.bin")).expect("socket")
}

#[test]
fn artifacts_serve_refuses_a_fifo_540_times_at_once_and_survives_a_slowloris() {
    let _turn = convoy_e2e::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("depot");
    let _socket = hostile_depot(&root);
    let root_arg = root.display().to_string();
    let server = Proc::start(
        &[
            "artifacts",
            "serve",
            "--dir",
            &root_arg,
            "--listen",
            "127.0.0.1:0",
            "--header-timeout-secs",
            "120",
        ],
        &dir.path().join("artifacts.log"),
    );
    let base = url_in(&server.first_line);
    let addr = addr_of(&base);
    let threads_before = server.threads();
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        // 540 requests for the FIFO on 9 connections at once: every one a quick 404.
        let began = Instant::now();
        let tasks: Vec<_> = (0..9)
            .map(|_| {
                let (client, url) = (client.clone(), format!("{base}/pipe.bin"));
                tokio::spawn(async move {
                    let mut refused = 0;
                    for _ in 0..60 {
                        let r = client
                            .get(&url)
                            .send()
                            .await
                            .expect("an answer, not a hang");
                        if r.status() == 404 {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            refused += t.await.expect("task");
        }
        eprintln!(
            "540 requests for a FIFO: {refused} refused in {:?}",
            began.elapsed()
        );
        assert_eq!(refused, 540);
        assert!(
            began.elapsed() < Duration::from_mins(1),
            "{:?}",
            began.elapsed()
        );
        for other in ["zero.bin", "dir", "sock.bin"] {
            let r = client
                .get(format!("{base}/{other}"))
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status(), 404, "{other}");
        }
        let r = client
            .get(format!("{base}/fw.bin"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body").as_ref(), b"firmware bytes");

        // A slowloris from one address holds its share (a quarter of 64), no more.
        let sockets = half_sent(attacker(2), addr, FLOOD, HALF_HTTP).await;
        let began = Instant::now();
        let r = client
            .get(format!("{base}/fw.bin"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        let f = fates(sockets, Duration::from_secs(3)).await;
        assert_flood("convoy artifacts serve", &f, 16, false);
    });
    let threads_after = server.threads();
    eprintln!("server threads: {threads_before} before, {threads_after} after");
    assert!(
        threads_after < threads_before + 64,
        "threads grew from {threads_before} to {threads_after}"
    );
    let log = server.log();
    for kind in ["a FIFO", "a directory", "a socket"] {
        assert!(
            log.contains(&format!("{kind}, not a regular file")),
            "{kind}: {log}"
        );
    }
}

const GATEWAY: &str = "depot-gateway-secret";
const DEVICE_TOKEN: &str = "eligible-device-token";

/// A signed workspace for `convoy ddi serve`, with a gateway token and a target token for one
/// device that is eligible for the release.
fn ddi_workspace() -> (SignedWorkspace, String) {
    let ws = SignedWorkspace::new(&WorkspaceSpec {
        devices: 300,
        seed: 11,
        artifact_bytes: 10_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &[],
    });
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("fleet.json")).expect("fleet"))
            .expect("fleet json");
    let device = fleet["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["model"] == "T300")
        .and_then(|d| d["id"].as_str())
        .expect("a T300")
        .to_owned();
    std::fs::write(ws.path("gateway"), GATEWAY).expect("gateway");
    std::fs::write(ws.path("tokens.csv"), format!("{device},{DEVICE_TOKEN}\n")).expect("tokens");
    (ws, device)
}

fn ddi_args(ws: &SignedWorkspace, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "ddi",
        "serve",
        "--db",
        &ws.path("cache.db"),
        "--release",
        &ws.path("release.json"),
        "--artifact",
        &ws.path("fw.img"),
        "--trust",
        &ws.path("trust"),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--gateway-token-file",
        &ws.path("gateway"),
        "--target-tokens",
        &ws.path("tokens.csv"),
        "--max-wall-secs",
        "300",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn start_ddi(ws: &SignedWorkspace, port: u16, extra: &[&str]) -> Proc {
    let args = ddi_args(ws, port, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(&args, &ws.dir.path().join(format!("ddi-{port}.log")))
}

/// A poll of `device` with its target token and a forged Host header; the deploymentBase link.
async fn poll_links(addr: SocketAddr, device: &str) -> String {
    let (status, _, body) = request(
        addr,
        &format!(
            "GET /DEFAULT/controller/v1/{device} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: TargetToken {DEVICE_TOKEN}"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("poll JSON");
    reply["_links"]["deploymentBase"]["href"]
        .as_str()
        .expect("the device is offered the release")
        .to_owned()
}

#[test]
fn the_ddi_endpoint_answers_401_first_and_never_echoes_the_host_header() {
    let _turn = convoy_e2e::alone();
    let (ws, device) = ddi_workspace();
    let port = free_port();
    let ddi = start_ddi(&ws, port, &["--header-timeout-secs", "120"]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        ddi.first_line
            .contains(&format!("http://127.0.0.1:{port}/DEFAULT")),
        "{}",
        ddi.first_line
    );
    runtime().block_on(async {
        // 20 probes without valid authentication: every one 401, whatever it names.
        let c = format!("/DEFAULT/controller/v1/{device}");
        let probes: Vec<(String, &str)> = vec![
            ("GET /".into(), ""),
            ("GET /nothing-here".into(), ""),
            ("GET /DEFAULT".into(), ""),
            ("GET /DEFAULT/controller/v1".into(), ""),
            ("GET /rest/v1/targets".into(), ""),
            ("GET /actuator/health".into(), ""),
            ("GET /../../etc/passwd".into(), ""),
            ("GET /%2e%2e/%2e%2e/etc/passwd".into(), ""),
            ("GET /OTHER/controller/v1/van-1".into(), ""),
            ("GET /DEFAULT/controller/v1/no-such-device".into(), ""),
            (format!("GET {c}"), ""),
            (format!("GET {c}/deploymentBase/1"), ""),
            (format!("POST {c}/deploymentBase/1/feedback"), ""),
            (format!("GET {c}/cancelAction/1"), ""),
            (format!("PUT {c}/configData"), ""),
            (format!("GET {c}/installedBase/1"), ""),
            (format!("DELETE {c}"), ""),
            (
                format!("GET {c}"),
                "Authorization: GatewayToken wrong-gateway-token\r\n",
            ),
            (
                format!("GET {c}"),
                "Authorization: TargetToken wrong-device-token\r\n",
            ),
            (
                "GET /nothing-here".into(),
                "Authorization: TargetToken eligible-device-token\r\n",
            ),
        ];
        assert_eq!(probes.len(), 20);
        let mut unauthorized = 0;
        for (line, auth) in &probes {
            let (status, head, body) = request(
                addr,
                &format!("{line} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0"),
            )
            .await;
            assert_eq!(status, 401, "{line} {auth}: {head}\n{body}");
            unauthorized += 1;
        }
        eprintln!(
            "DDI: {} unauthenticated probes, {unauthorized} answered 401",
            probes.len()
        );
        // With the gateway token, the same stray path is what it is: not found.
        let (status, _, _) = request(
            addr,
            &format!(
                "GET /nothing-here HTTP/1.1\r\nHost: x\r\nAuthorization: GatewayToken {GATEWAY}"
            ),
        )
        .await;
        assert_eq!(status, 404);

        // Without --public-url, the links name the listen address, never the Host header.
        let link = poll_links(addr, &device).await;
        assert!(
            link.starts_with(&format!(
                "http://127.0.0.1:{port}/DEFAULT/controller/v1/{device}/deploymentBase/"
            )),
            "{link}"
        );

        // A slowloris from one address holds its share (a quarter of 1024), no more.
        let sockets = half_sent(attacker(2), addr, FLOOD, HALF_HTTP).await;
        let began = Instant::now();
        let link = poll_links(addr, &device).await;
        assert!(!link.contains("evil"), "{link}");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        let f = fates(sockets, Duration::from_secs(3)).await;
        assert_flood("convoy ddi serve", &f, 256, false);
    });
    drop(ddi);

    // With --public-url, the links start with it.
    let port = free_port();
    let ddi = start_ddi(
        &ws,
        port,
        &["--public-url", "https://ddi.example.test/hawkbit/"],
    );
    assert!(
        ddi.first_line
            .contains("https://ddi.example.test/hawkbit/DEFAULT"),
        "{}",
        ddi.first_line
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let link = runtime().block_on(poll_links(addr, &device));
    assert!(
        link.starts_with(&format!(
            "https://ddi.example.test/hawkbit/DEFAULT/controller/v1/{device}/deploymentBase/"
        )),
        "{link}"
    );
    drop(ddi);

    // A public URL that cannot be one, or none on a wildcard address, is refused.
    for (extra, listen) in [
        (
            vec!["--public-url", "ftp://ddi.example.test"],
            "127.0.0.1:0",
        ),
        (
            vec!["--public-url", "https://ddi.example.test/?x=1"],
            "127.0.0.1:0",
        ),
        (vec!["--artifact-url", "http://127.0.0.1:9"], "0.0.0.0:0"),
    ] {
        let mut args = ddi_args(&ws, 0, &extra);
        let at = args.iter().position(|a| a == "--listen").expect("--listen") + 1;
        args[at] = listen.to_owned();
        let out = Command::new(convoy_bin())
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{extra:?} {listen}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--public-url"), "{extra:?} {listen}: {err}");
    }
}
