//! Helpers for Convoy's end-to-end tests: locate and run the real `convoy` binary, start
//! brokers, build signed workspaces, and wait for conditions. Not a test framework: no test
//! lives here, and nothing here sleeps for a fixed time hoping something has happened.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How often [`wait_for`] looks again: often enough that a test does not wait much past the
/// moment its condition holds, rarely enough not to steal the CPU the condition needs.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `condition` holds, looking every few tens of milliseconds; panics naming `what`
/// did not happen if it still does not hold after `deadline`. The way a test waits for
/// something to happen (a process started, a row written), instead of sleeping and hoping.
pub fn wait_for(what: &str, deadline: Duration, condition: impl FnMut() -> bool) {
    wait_for_explained(what, deadline, condition, String::new);
}

/// As [`wait_for`], adding `explain()` (what the test can see instead) to the failure message.
pub fn wait_for_explained(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "waited {deadline:?} for {what}, in vain. {}",
            explain()
        );
        // A poll interval, not synchronisation: the condition above is what is waited for.
        std::thread::sleep(POLL);
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (a broker or server the
/// test started, named `what`).
pub fn wait_listening(port: u16, what: &str, deadline: Duration) {
    wait_for(
        &format!("{what} to listen on 127.0.0.1:{port}"),
        deadline,
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// Publishes a probe on `topic`, which `link` subscribes to, and waits until the broker sends
/// it back: the broker has then handled everything `link` sent before it (a broker handles one
/// connection's packets in order), its subscriptions and publishes included. Events on `rx`
/// before the probe are dropped. Panics naming `what` after 20 s.
pub async fn hear_own_probe(
    link: &convoy::link::mqtt::LinkHandle,
    rx: &mut tokio::sync::mpsc::Receiver<convoy::link::mqtt::LinkEvent>,
    topic: &str,
    what: &str,
) {
    use convoy::link::mqtt::LinkEvent;
    link.publish(topic.to_owned(), b"probe".to_vec(), false)
        .await
        .expect("publishing a probe");
    // A console decodes the probe and rejects it (not JSON); a raw subscription passes it on.
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Some(LinkEvent::Raw { topic: t, .. }) if t == topic => return true,
                Some(LinkEvent::Rejected(r)) if r.topic == topic => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert!(
        matches!(heard, Ok(true)),
        "{what}: the link never heard its own probe on {topic} back from the broker"
    );
}

/// The end-to-end tests' turns: a test that runs simulated time against wall time (a rollout, a
/// simulated fleet, real agents with seconds-long soaks) or checks a wall-clock timeout runs
/// [`alone`]; every other test runs [`shared`], beside at most one other shared test when the
/// test binary runs two tests at a time (`RUST_TEST_THREADS=2`, as `.ci/run` does). With one
/// test at a time the turns change nothing. Every test of `tests/it` takes its turn as its first
/// statement (`tidy::every_end_to_end_test_takes_its_turn` checks it).
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A test's turn, held until the test ends (see [`alone`] and [`shared`]).
///
/// With `CONVOY_E2E_TIMES` set to a file, each turn appends a line to it when the test ends:
/// the test's name, `alone` or `shared`, the seconds it waited for its turn and the seconds it
/// held it (how docs/TESTING.md's per-test figures are measured).
#[must_use = "a turn lasts as long as it is held: `let _turn = ...;`"]
pub struct Turn {
    _guard: Guard,
    kind: &'static str,
    asked: Instant,
    got: Instant,
}

enum Guard {
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(path) = std::env::var_os("CONVOY_E2E_TIMES") else {
            return;
        };
        // libtest names each test's thread after the test.
        let name = std::thread::current()
            .name()
            .unwrap_or("(unnamed)")
            .to_owned();
        let line = format!(
            "{name}\t{}\t{:.2}\t{:.2}\n",
            self.kind,
            self.got.duration_since(self.asked).as_secs_f64(),
            self.got.elapsed().as_secs_f64()
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            use std::io::Write as _;
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// The turn of a time-sensitive test: no other end-to-end test runs while it is held, so two
/// rollouts running simulated time up to 2,400x wall time never starve each other's processes
/// (docs/ENGINE.md, known limits), and nothing else takes the CPU they need.
pub fn alone() -> Turn {
    let asked = Instant::now();
    let guard = TURNS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Turn {
        _guard: Guard::Alone(guard),
        kind: "alone",
        asked,
        got: Instant::now(),
    }
}

/// The turn of a test that neither runs simulated time nor checks a wall-clock timeout (commands
/// on files, servers answering requests, waits with generous deadlines): it may run beside
/// another such test, never beside one that runs [`alone`].
pub fn shared() -> Turn {
    let asked = Instant::now();
    let guard = TURNS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Turn {
        _guard: Guard::Shared(guard),
        kind: "shared",
        asked,
        got: Instant::now(),
    }
}

/// Where cargo puts this test binary's profile (`target/<profile>`), and the `cargo build`
/// arguments that build `bin` of `package` into it.
///
/// By default the package alone is built (`-p package`): what a targeted
/// `cargo test -p convoy_e2e --test e2e NAME` wants. Its dependencies are then compiled with the
/// features that package needs, which differ from those of `cargo test --workspace` (the
/// console's snapshot tests add wgpu, and more): under the workspace command that is a second
/// build of about 40 crates (53 s + 28 s for the agent in CI). With `CONVOY_E2E_WORKSPACE_BUILD`
/// set (`.ci/run` sets it, as it runs `cargo test --workspace`), the binary is built as
/// `cargo build --workspace --tests --bin NAME`, which resolves features exactly as
/// `cargo test --workspace` did: everything it needs is already compiled and up to date.
fn build_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<bin>
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile dir");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--locked"]);
    // Cargo gives this test process the variables it sets for a package being tested
    // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, `OUT_DIR`, ...). Build scripts ask to be rerun when
    // some of them change (ring's does), and cargo compares them with its own environment: left
    // in, they make this build rerun ring's build script and rebuild everything above it (and the
    // next `cargo test` rebuild it all back). Cargo's own settings (`CARGO_HOME`,
    // `CARGO_TARGET_DIR`, `CARGO_INCREMENTAL`, ...) stay.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            build.env_remove(name);
        }
    }
    if std::env::var_os("CONVOY_E2E_WORKSPACE_BUILD").is_some_and(|v| !v.is_empty()) {
        build.args(["--workspace", "--tests"]);
    } else {
        build.args(["-p", package]);
    }
    build.args(["--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "cargo build of {bin} ({package}) failed");
    profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// The `convoy` binary of this workspace's current profile, (re)built once per test process.
///
/// `cargo test` builds a package's binaries only for that package's own integration tests, so
/// this crate asks cargo to build it; when it is up to date that takes a fraction of a second,
/// and it is never a stale binary from an earlier build.
pub fn convoy_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_bin("convoy", "convoy")).clone()
}

/// Runs `convoy ARGS` and returns its output.
pub fn convoy(args: &[&str]) -> Output {
    Command::new(convoy_bin())
        .args(args)
        .output()
        .expect("running convoy")
}

/// Runs `convoy ARGS`, asserts it succeeded, and returns its stdout.
pub fn convoy_ok(args: &[&str]) -> String {
    let out = convoy(args);
    assert!(
        out.status.success(),
        "convoy {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Writes a secret (a passphrase file) readable by its owner only, as `convoy` asks of them:
/// it warns about a passphrase file others can read and refuses one others can write.
pub fn write_secret(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("writing a secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
}

/// A Mosquitto broker started for one test on 127.0.0.1, stopped (killed) on drop.
pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Whether the `mosquitto` binary is installed. CI installs it (`.ci/run`); a developer
    /// machine without it skips the Mosquitto tests, but under `CI` a missing broker fails.
    pub fn available() -> bool {
        let found = Command::new("mosquitto").arg("-h").output().is_ok()
            || std::path::Path::new("/usr/sbin/mosquitto").exists();
        assert!(
            found || std::env::var_os("CI").is_none(),
            "CI must install mosquitto (see .ci/run)"
        );
        if !found {
            eprintln!("skipping: mosquitto is not installed (apt-get install -y mosquitto)");
        }
        found
    }

    /// Starts Mosquitto on a free port (or `port` if given) and waits until it accepts
    /// connections.
    pub fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("write mosquitto.conf");
        let bin = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        wait_listening(port, "mosquitto", Duration::from_secs(10));
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and waits for it to exit.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    convoy::link::broker::pick_free_port([127, 0, 0, 1].into()).expect("free port")
}

/// Deterministic, incompressible-looking bytes (xorshift), different per odd `seed` (an even
/// seed gives the bytes of the odd one above it): artifacts for download and signing tests.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A workspace an operator would have before a rollout: a generated fleet imported into a
/// cache, a key (encrypted with a passphrase file), a trust directory, and a release for one
/// model signed with the key. Files: `fleet.json`, `cache.db`, `pass`, `key/`, `trust/`,
/// `fw.img`, `release.json`.
pub struct SignedWorkspace {
    pub dir: tempfile::TempDir,
}

/// What [`SignedWorkspace::new`] generates and signs.
pub struct WorkspaceSpec<'a> {
    pub devices: usize,
    pub seed: u64,
    pub artifact_bytes: usize,
    pub version: &'a str,
    pub counter: u64,
    pub hardware: &'a str,
    /// `--requires` constraints, e.g. `bootloader>=1.6`.
    pub requires: &'a [&'a str],
}

impl SignedWorkspace {
    pub fn new(spec: &WorkspaceSpec<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = Self { dir };
        let p = |name: &str| ws.path(name);
        write_secret(std::path::Path::new(&p("pass")), "e2e test passphrase\n");
        let devices = spec.devices.to_string();
        let seed = spec.seed.to_string();
        convoy_ok(&[
            "fleet",
            "generate",
            "--devices",
            &devices,
            "--seed",
            &seed,
            "--out",
            &p("fleet.json"),
        ]);
        convoy_ok(&["fleet", "import", &p("fleet.json"), "--db", &p("cache.db")]);
        convoy_ok(&[
            "key",
            "generate",
            "--out",
            &p("key"),
            "--passphrase-file",
            &p("pass"),
        ]);
        convoy_ok(&[
            "key",
            "trust",
            "--key",
            &p("key"),
            "--out",
            &p("trust"),
            "--passphrase-file",
            &p("pass"),
        ]);
        std::fs::write(
            p("fw.img"),
            pseudo_random_bytes(spec.artifact_bytes, spec.seed),
        )
        .expect("artifact");
        let counter = spec.counter.to_string();
        let mut args = vec![
            "release".to_owned(),
            "create".into(),
            "--artifact".into(),
            p("fw.img"),
            "--version".into(),
            spec.version.into(),
            "--counter".into(),
            counter,
            "--hardware".into(),
            spec.hardware.into(),
            "--expires".into(),
            "30d".into(),
            "--key".into(),
            p("key"),
            "--passphrase-file".into(),
            p("pass"),
            "--out".into(),
            p("release.json"),
        ];
        for r in spec.requires {
            args.push("--requires".into());
            args.push((*r).to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        convoy_ok(&args);
        ws
    }

    /// A file of the workspace, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A rollout of a crash-looping release, simulated by the core on its virtual clock: a 40-device
/// canary and a 160-device second wave of a 200-device fleet, stopped by the gates in the
/// canary and then (with `roll_back`) rolled back by operator dana. Its log and its timeline are
/// written to `store` as the engine writes them (through the core's one timeline mapping), as
/// rollout `rollout_id`.
pub fn record_crash_looping_canary(
    store: &mut convoy::store::Store,
    rollout_id: &str,
    roll_back: bool,
) -> convoy_core::rollout::Rollout {
    use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet};
    use convoy_core::rollout::{
        ChangePath, RollbackScope, Rollout, RolloutSpec, WaveSpec, timeline,
    };
    use convoy_core::synth::{SynthOptions, generate};
    use convoy_core::time::Timestamp;

    let start = Timestamp::from_secs(1_800_000_000);
    let fleet = generate(&SynthOptions {
        devices: 200,
        seed: 5,
        now: start,
    });
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let spec = RolloutSpec {
        id: rollout_id.into(),
        release_id: "t300-2.6.0".into(),
        requested_by: "alice".into(),
        waves: vec![
            WaveSpec {
                name: "canary".into(),
                device_ids: ids[..40].to_vec(),
                soak_secs: 3_600,
            },
            WaveSpec {
                name: "fleet".into(),
                device_ids: ids[40..].to_vec(),
                soak_secs: 3_600,
            },
        ],
        gates: convoy_core::gates::GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut rollout = Rollout::new(start, spec, &fleet).expect("a valid spec");
    rollout.approve(start, "bob").expect("approval");
    rollout.approve(start, "carol").expect("approval");
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(&fleet, &rollout, config, start);
    sim.run(&mut rollout, start, start.plus_secs(86_400));
    // dana rolls the canary back; if the gate already did, she rolls back everything (the
    // canary's devices are back, so that ends the rollout): an operator's rollback either way.
    let at = rollout.state().last_at;
    if roll_back {
        let scope = if rollout
            .permits(convoy_core::rollout::Command::RollBackWave, at)
            .is_ok()
        {
            RollbackScope::Wave(0)
        } else {
            RollbackScope::All
        };
        rollout
            .roll_back(at, "dana", scope, "crash loop on the canary")
            .expect("a stopped canary can be rolled back");
        sim.run(&mut rollout, at, at.plus_secs(86_400));
    }
    store
        .append_rollout_log(rollout_id, 0, rollout.events())
        .expect("the engine's log");
    let names = ["canary".to_owned(), "fleet".to_owned()];
    for e in timeline::record(rollout.events(), &names, &rollout.state().device_ids) {
        store
            .append_event(rollout_id, e.at, &e.kind, &e.cause, &e.payload)
            .expect("the timeline");
    }
    rollout
}

/// A child process a test started, killed and reaped when dropped, so that a test that fails
/// halfway leaves nothing running.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Starts `convoy ARGS`, its stdout discarded and its stderr written to the file `log`
    /// (read it when a test fails).
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], log: impl AsRef<std::path::Path>) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        Self(
            Command::new(convoy_bin())
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawning convoy"),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The embedded broker as its own process (`convoy broker`) on a free port of 127.0.0.1, its
/// log in `dir/broker.log`, once it accepts connections: (the process, its port).
pub fn start_broker_process(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let broker = Proc::spawn(
        &["broker", "--listen", &format!("127.0.0.1:{port}")],
        dir.join("broker.log"),
    );
    wait_listening(port, "the embedded broker", Duration::from_secs(20));
    (broker, port)
}

/// Writes the policy file the rollout tests share: soaks of one simulated operating cycle of an
/// hour, with `gates` (a JSON object's members, e.g. `"hold_extension_secs": 1800`) as its
/// gates section when given.
pub fn write_hour_cycle_policy(path: impl AsRef<std::path::Path>, gates: Option<&str>) {
    let gates = gates.map_or_else(String::new, |g| format!(",\n    \"gates\": {{{g}}}"));
    std::fs::write(
        path,
        format!(
            "{{\"version\": 1,\n    \"planning\": {{\"operating_cycle_secs\": {{}}, \
             \"default_operating_cycle_secs\": 3600}}{gates}}}"
        ),
    )
    .expect("policy");
}

/// Requests to `convoy serve`'s JSON API as a test makes them: the status and the body read as
/// JSON (a body that is not JSON comes back as a JSON string, so an assertion shows what the
/// server said).
pub mod api {
    use reqwest::StatusCode;
    use serde_json::Value;

    /// `GET url` with the bearer `token` (none: unauthenticated).
    pub async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = c.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req).await
    }

    /// `POST url` with the bearer `token` and a JSON `body`.
    pub async fn post(
        c: &reqwest::Client,
        url: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        answer(
            c.post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl SignedWorkspace {
    /// Verifies the workspace's release against its trust directory and stores it in its cache
    /// (`convoy release store`), as a server needs before it takes requests for it; returns
    /// what the command printed.
    pub fn store_release(&self) -> String {
        convoy_ok(&[
            "release",
            "store",
            &self.path("release.json"),
            "--trust",
            &self.path("trust"),
            "--db",
            &self.path("cache.db"),
        ])
    }
}

/// The `convoy-agent` binary (package `convoy_agent`) of this workspace's current profile,
/// (re)built once per test process, as [`convoy_bin`] does for `convoy`.
pub fn agent_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_bin("convoy_agent", "convoy-agent"))
        .clone()
}
