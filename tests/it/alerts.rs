//! Alerts leave the machine (issue 23): a gate stop reaches a signed webhook on 127.0.0.1 and
//! a real SMTP server (Debian's python3-aiosmtpd, STARTTLS and a password); a receiver that is
//! down for a while, then failing, still gets every alert exactly once; a crash of the
//! deliverer loses nothing; a repeat of an incident is not sent twice; history does not page.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy::store::Store;
use convoy_e2e::{
    convoy_bin, convoy_ok, free_port, record_crash_looping_canary, wait_for_explained, write_secret,
};

/// One request a webhook receiver got, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

/// A webhook receiver on 127.0.0.1: answers 503 to its first `fail_first` requests, then 200.
pub struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start(port: u16, fail_first: usize) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(fail_first));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        if let Some(req) = serve_one(stream, &failures) {
                            r.lock().expect("lock").push(req);
                        }
                    }
                    // Polling the non-blocking listener, not synchronisation.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// The requests answered 200.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: std::net::TcpStream, failures: &AtomicUsize) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let fail = failures
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail { 503 } else { 200 };
    let mut out = stream;
    let reason = if fail { "Service Unavailable" } else { "OK" };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Some(Received {
        headers,
        body,
        status,
    })
}

/// A real SMTP server: aiosmtpd with STARTTLS required and one user.
pub struct Smtp {
    pub port: u16,
    pub out: PathBuf,
    child: Child,
}

impl Smtp {
    pub fn start(dir: &Path, user: &str, password: &str) -> (Self, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let (cert_path, key_path) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        let out = dir.join("mail");
        std::fs::create_dir_all(&out).expect("mail dir");
        let port = free_port();
        // Debian's aiosmtpd is installed for the system Python.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smtp_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(&cert_path)
            .arg(&key_path)
            .args([user, password])
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the SMTP server (python3-aiosmtpd)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("reading the SMTP server's readiness");
        assert_eq!(
            ready.trim(),
            "ready",
            "the SMTP server did not start (is python3-aiosmtpd installed?)"
        );
        (Self { port, out, child }, cert_path)
    }

    /// The messages received, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .expect("mail dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("a message"))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HMAC-SHA256 of `message` under `key`, by the `openssl` command: an independent check
/// of Convoy's signature.
fn openssl_hmac(key: &str, message: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write");
    let out = child.wait_with_output().expect("openssl ran");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Writes `dir/alerts.toml`: a signed webhook to 127.0.0.1:`hook_port` (key `hook-key-1`)
/// and e-mail through `smtp` as user `convoy` (password `s3cret`) trusting `ca`, with their
/// secret files beside it; returns its path.
pub fn write_config(dir: &Path, hook_port: u16, smtp: &Smtp, ca: &Path) -> PathBuf {
    write_secret(&dir.join("hook.secret"), "hook-key-1\n");
    write_secret(&dir.join("smtp.pass"), "s3cret\n");
    let config = dir.join("alerts.toml");
    std::fs::write(
        &config,
        format!(
            r#"
public_url = "https://convoy.example"
[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/convoy"
secret_file = "hook.secret"
[[channel]]
name = "mail"
kind = "smtp"
server = "127.0.0.1"
port = {}
ca_file = "{}"
username = "convoy"
password_file = "smtp.pass"
from = "Convoy <convoy@example.com>"
to = ["oncall@example.com"]
"#,
            smtp.port,
            ca.display()
        ),
    )
    .expect("config");
    config
}

/// Checks a request's signature with an independent HMAC (`openssl`) under `key`.
pub fn check_signature(r: &Received, key: &str) {
    let ts = &r.headers["x-convoy-timestamp"];
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    assert_eq!(
        r.headers["x-convoy-signature"],
        format!("sha256={}", openssl_hmac(key, &signed))
    );
}

/// `convoy alerts run` as a process.
struct Deliverer(Child);

impl Deliverer {
    fn start(config: &Path, db: &Path) -> Self {
        Self(
            Command::new(convoy_bin())
                .args(["alerts", "run", "--config"])
                .arg(config)
                .arg("--db")
                .arg(db)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("convoy alerts run"),
        )
    }

    /// Kills it as a crash would (SIGKILL: nothing is flushed or released).
    fn crash(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_gate_stop_reaches_a_signed_webhook_and_an_smtp_server_exactly_once_through_outage_and_crash() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let (smtp, ca) = Smtp::start(dir.path(), "convoy", "s3cret");
    // The webhook's port is chosen now and nothing listens on it yet: the receiver is down.
    let hook_port = free_port();
    let config = write_config(dir.path(), hook_port, &smtp, &ca);
    let checked = convoy_ok(&[
        "alerts",
        "check",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert!(
        checked.contains("hook: webhook") && checked.contains("signed"),
        "{checked}"
    );

    // An old rollout is in the cache before alerts start: history does not page anyone.
    let mut store = Store::open(&db).expect("cache");
    record_crash_looping_canary(&mut store, "ro-old", true);
    drop(store);
    let once = convoy_ok(&[
        "alerts",
        "run",
        "--once",
        "--config",
        config.to_str().expect("utf-8"),
        "--db",
        db.to_str().expect("utf-8"),
    ]);
    assert!(
        once.contains("0 alerts"),
        "the first pass starts at the present: {once}"
    );

    // Now a rollout stops in its canary (a gate pause, then dana rolls the canary back), and
    // the same gate decision is recorded a second time: one incident, two alerts, no repeat.
    let mut store = Store::open(&db).expect("cache");
    record_crash_looping_canary(&mut store, "ro-new", true);
    let timeline = store.timeline("ro-new").expect("timeline");
    let decision = timeline
        .iter()
        .find(|e| e.kind == "gate.decision")
        .expect("the gates stopped the canary");
    let payload: serde_json::Value = serde_json::from_str(&decision.payload).expect("json");
    store
        .append_event("ro-new", decision.time, "gate.decision", "gate", &payload)
        .expect("a repeat of the decision");
    drop(store);

    let deliverer = Deliverer::start(&config, &db);
    // E-mail goes out while the webhook is down.
    wait_for_explained(
        "two e-mails",
        Duration::from_mins(1),
        || smtp.messages().len() >= 2,
        || convoy_ok(&["alerts", "status", "--db", db.to_str().expect("utf-8")]),
    );
    let status = || convoy_ok(&["alerts", "status", "--db", db.to_str().expect("utf-8")]);
    wait_for_explained(
        "a failed webhook attempt",
        Duration::from_secs(30),
        || status().contains("could not connect"),
        status,
    );
    // The deliverer crashes with the webhook's alerts still pending.
    deliverer.crash();
    let pending = status();
    assert!(pending.contains("hook: 2 pending"), "{pending}");

    // The receiver comes up, failing its first two requests; a new deliverer takes over.
    let receiver = Receiver::start(hook_port, 2);
    let _deliverer = Deliverer::start(&config, &db);
    wait_for_explained(
        "both webhook alerts accepted",
        Duration::from_secs(90),
        || receiver.accepted().len() >= 2,
        || format!("{:?}\n{}", receiver.received().len(), status()),
    );

    // Exactly once each: two deliveries accepted, with distinct delivery ids.
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    let ids: std::collections::BTreeSet<&str> = accepted
        .iter()
        .map(|r| r.headers["x-convoy-delivery"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "no delivery accepted twice");
    assert!(
        receiver.received().len() >= 4,
        "the two failures were retried"
    );
    let mut kinds = Vec::new();
    for r in &accepted {
        // The signature checks out with an independent HMAC.
        check_signature(r, "hook-key-1");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(
            body["alert"]["rollout_id"], "ro-new",
            "no alert about history"
        );
        assert_eq!(body["thread"], "ro-new/stop#1");
        assert_eq!(
            body["open"],
            "https://convoy.example/api/v1/rollouts/ro-new/timeline"
        );
        kinds.push((
            body["update"].as_i64().expect("update"),
            body["alert"]["kind"].as_str().expect("kind").to_owned(),
            body["alert"]["summary"]
                .as_str()
                .expect("summary")
                .to_owned(),
        ));
    }
    kinds.sort();
    assert!(
        kinds[0].1.starts_with("gate_"),
        "the gate's stop opens the thread: {kinds:?}"
    );
    assert!(
        kinds[0].2.contains("devices") && kinds[0].2.contains("normal"),
        "plain words first: {}",
        kinds[0].2
    );
    assert_eq!((kinds[1].0, kinds[1].1.as_str()), (1, "rollback_started"));

    // The e-mails: one thread, the rollback a reply to the pause.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "one e-mail per alert, none repeated");
    assert!(
        mails[0].contains("Subject: [Convoy] Rollout ro-new ")
            && mails[0].contains(" by a health gate in wave canary"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Message-ID: <ro-new.stop.1.0@convoy>"),
        "{}",
        mails[0]
    );
    assert!(
        mails[1].contains("In-Reply-To: <ro-new.stop.1.0@convoy>"),
        "{}",
        mails[1]
    );

    // Every send and every failure is in the audit trail, and the chain holds.
    let audit = convoy_ok(&[
        "audit",
        "log",
        "--db",
        db.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(audit.matches("\"alert.sent\"").count(), 4, "{audit}");
    assert!(audit.matches("\"alert.failed\"").count() >= 3, "{audit}");
    convoy_ok(&["audit", "verify", "--db", db.to_str().expect("utf-8")]);
}

#[test]
fn a_bad_alerts_configuration_is_refused_naming_the_channel_and_field() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alerts.toml");
    std::fs::write(
        &config,
        "[[channel]]\nname = \"mail\"\nkind = \"smtp\"\nserver = \"smtp.example\"\ntls = \"none\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n",
    )
    .expect("config");
    let out = Command::new(convoy_bin())
        .args(["alerts", "check", "--config"])
        .arg(&config)
        .output()
        .expect("convoy");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("channel `mail`") && err.contains("only allowed for a server on this machine"),
        "{err}"
    );
    // A world-writable secret is refused before any alert needs it.
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "k\n").expect("secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    std::fs::write(
        &config,
        "[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_file = \"hook.secret\"\n",
    )
    .expect("config");
    let out = Command::new(convoy_bin())
        .args(["alerts", "check", "--config"])
        .arg(&config)
        .output()
        .expect("convoy");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("any user of this machine write it"), "{err}");
}
