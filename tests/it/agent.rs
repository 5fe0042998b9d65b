//! Issue 21, end to end: the real `convoy-agent` binary as devices, over Mosquitto with TLS and a
//! client certificate per device (the configuration `convoy broker mosquitto-config --auth certs`
//! writes), taking a signed release from a rollout run by the real engine (`convoy rollout run`)
//! and served by `convoy artifacts serve`.
//!
//! Each device runs a real process under a small supervisor that restarts it from the device's
//! current slot and counts its failed exits; the agent reads that count as a unit's restarts. A
//! good release is installed through the `directory` and `command` installers, one device "reboots"
//! (its reboot command kills the agent, which the test starts again, as systemd would), and every
//! device confirms. A release whose program keeps failing is reverted on every device by the
//! health window, and the rollout stops at its boot-failure gate.

use convoy_e2e::{
    agent_bin, convoy_bin, convoy_ok, free_port, wait_for_explained, wait_listening, write_secret,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// One rollout at a time (each keeps a broker, an engine, an artifact server and agents busy).
static SERIAL: Mutex<()> = Mutex::new(());

/// A program that runs until its slot is switched away (then exits 0, so the supervisor starts
/// the new slot's program): a healthy release.
const GOOD_APP: &str = "me=$(readlink \"$ROOT/current\")\nwhile [ \"$(readlink \"$ROOT/current\")\" = \"$me\" ]; do sleep 0.2; done\n";
/// A program that fails at once, every time: a release that crash-loops.
const BAD_APP: &str = "echo 'cannot open /etc/app.conf' >&2\nexit 1\n";

/// The supervisor: runs `$ROOT/current/app.sh` again whenever it exits, and counts the exits that
/// failed in `$DIR/restarts` (written atomically), as systemd counts a unit's restarts.
const SUPERVISOR: &str = r#"n=0
echo 0 > "$DIR/restarts"
while :; do
  if ! sh "$ROOT/current/app.sh"; then
    n=$((n+1))
    echo $n > "$DIR/restarts.tmp" && mv "$DIR/restarts.tmp" "$DIR/restarts"
  fi
  sleep 0.2
done
"#;

/// The `command` installer's script: its own A/B directories, every call logged with its
/// arguments and environment.
const INSTALL_SCRIPT: &str = r#"#!/bin/sh
set -e
echo "$1 slot=$CONVOY_SLOT previous=$CONVOY_PREVIOUS_SLOT release=$CONVOY_RELEASE_ID version=$CONVOY_VERSION device=$CONVOY_DEVICE_ID" >> "$LOG"
case "$1" in
  install)
    rm -rf "$ROOT/$CONVOY_SLOT" && mkdir -p "$ROOT/$CONVOY_SLOT"
    shift
    cp "$@" "$ROOT/$CONVOY_SLOT/"
    ln -sfn "$CONVOY_SLOT" "$ROOT/current.new" && mv -T "$ROOT/current.new" "$ROOT/current"
    ;;
  confirm) echo "$CONVOY_SLOT" > "$ROOT/confirmed" ;;
  revert) ln -sfn "$CONVOY_PREVIOUS_SLOT" "$ROOT/current.new" && mv -T "$ROOT/current.new" "$ROOT/current" ;;
  *) echo "unknown operation $1" >&2; exit 2 ;;
esac
"#;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    Proc(child)
}

/// A CA, and certificates it signs (PEM files).
struct Pki {
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Convoy test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
        Self { ca_params, ca_key }
    }

    /// A certificate for `cn` (a device id, `convoy-engine`, or the broker with its addresses)
    /// written as `NAME.pem` and `NAME.key`.
    fn issue(&self, dir: &Path, name: &str, cn: &str, broker: bool) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if broker {
            params.subject_alt_names = vec![
                rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
                rcgen::SanType::DnsName("localhost".try_into().expect("dns name")),
            ];
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("cert");
        write_secret(&dir.join(format!("{name}.key")), &key.serialize_pem());
    }
}

/// How a device installs.
#[derive(Clone, Copy, PartialEq)]
enum Install {
    Directory,
    Command,
    /// Real SWUpdate (`swupdate -i`), with stand-ins for the bootloader's confirm and revert.
    Swupdate,
}

/// One device: its directory, its configuration, its supervised program and its agent.
struct Device {
    id: String,
    dir: PathBuf,
    install: Install,
    agent: Option<Proc>,
    _supervisor: Proc,
    starts: u32,
}

impl Device {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn start_agent(&mut self) {
        self.starts += 1;
        let log = self.path(&format!("agent-{}.log", self.starts));
        let child = Command::new(agent_bin())
            .arg("--config")
            .arg(self.path("agent.toml"))
            // SWUpdate puts its control sockets in $TMPDIR: one directory per device.
            .env("TMPDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting convoy-agent");
        self.agent = Some(Proc(child));
    }

    fn state(&self) -> Value {
        std::fs::read(self.path("state/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    fn current_slot(&self) -> String {
        let root = match self.install {
            Install::Directory => self.path("slots"),
            Install::Command => self.path("cmdslots"),
            Install::Swupdate => self.path("swroot"),
        };
        std::fs::read_link(root.join("current"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    fn restarts(&self) -> u64 {
        std::fs::read_to_string(self.path("restarts"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                format!(
                    "--- {} agent run {n}:\n{}",
                    self.id,
                    std::fs::read_to_string(self.path(&format!("agent-{n}.log")))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A fleet of agent devices, their broker, an artifact server, and a signing key.
struct Lab {
    dir: tempfile::TempDir,
    devices: Vec<Device>,
    broker_port: u16,
    artifact_port: u16,
    broker: Option<Proc>,
    _artifacts: Proc,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `installs[i]` is device `i`'s installer; `reboot[i]` whether its install "reboots" (its
    /// reboot command kills the agent). `window_secs` is the health window.
    fn new(installs: &[Install], reboot: &[bool], window_secs: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let p = |name: &str| root.join(name).display().to_string();
        write_secret(&root.join("pass"), "agent e2e test passphrase\n");
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
        // A fleet of exactly these devices: T300s on firmware 2.4.0.
        let n = installs.len().to_string();
        convoy_ok(&[
            "fleet",
            "generate",
            "--devices",
            &n,
            "--seed",
            "21",
            "--out",
            &p("generated.json"),
        ]);
        let mut fleet: Value =
            serde_json::from_slice(&std::fs::read(root.join("generated.json")).expect("fleet"))
                .expect("json");
        for d in fleet["devices"].as_array_mut().expect("devices") {
            d["model"] = "T300".into();
            d["hw_rev"] = "A".into();
            d["components"]["firmware"] = "2.4.0".into();
        }
        std::fs::write(root.join("fleet.json"), fleet.to_string()).expect("fleet");
        convoy_ok(&["fleet", "import", &p("fleet.json"), "--db", &p("cache.db")]);
        let ids: Vec<String> = fleet["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["id"].as_str().expect("id").to_owned())
            .collect();

        // Certificates: the broker's, the engine's, one per device.
        let pki_dir = root.join("pki");
        std::fs::create_dir_all(&pki_dir).expect("pki dir");
        let pki = Pki::new(&pki_dir);
        pki.issue(&pki_dir, "broker", "127.0.0.1", true);
        pki.issue(&pki_dir, "engine", "convoy-engine", false);
        for id in &ids {
            pki.issue(&pki_dir, id, id, false);
        }
        let broker_port = free_port();
        convoy_ok(&[
            "broker",
            "mosquitto-config",
            "--fleet",
            &p("cache.db"),
            "--out",
            &p("broker"),
            "--auth",
            "certs",
            "--cafile",
            &p("pki/ca.pem"),
            "--certfile",
            &p("pki/broker.pem"),
            "--keyfile",
            &p("pki/broker.key"),
            "--listen",
            &format!("127.0.0.1:{broker_port}"),
        ]);
        let mut conf = std::fs::read_to_string(root.join("broker/mosquitto.conf")).expect("conf");
        // Tests run as root in CI containers, where Mosquitto would switch to its own user and
        // lose the private key files.
        conf.push_str("user root\n");
        std::fs::write(root.join("broker/test.conf"), conf).expect("conf");
        let broker = start_mosquitto(&root, broker_port);

        std::fs::create_dir_all(root.join("art")).expect("art");
        let artifact_port = free_port();
        let artifacts = spawn(
            &convoy_bin(),
            &[
                "artifacts",
                "serve",
                "--dir",
                &p("art"),
                "--listen",
                &format!("127.0.0.1:{artifact_port}"),
            ],
            &root.join("artifacts.log"),
        );
        wait_listening(
            artifact_port,
            "the artifact server",
            Duration::from_secs(20),
        );

        let devices = ids
            .iter()
            .enumerate()
            .map(|(i, id)| device(&root, id, installs[i], reboot[i], broker_port, window_secs))
            .collect();
        Self {
            dir,
            devices,
            broker_port,
            artifact_port,
            broker: Some(broker),
            _artifacts: artifacts,
        }
    }

    /// Signs release `version` whose one artifact is `app.sh` with `app`'s text, served by the
    /// artifact server. Returns the manifest's path.
    fn release(&self, version: &str, counter: u64, app: &str) -> String {
        self.release_file(
            version,
            counter,
            "app.sh",
            format!("# app {version}\n{app}").as_bytes(),
        )
    }

    /// Signs release `version` whose one artifact is `name` with `bytes`, served by the artifact
    /// server at `/VERSION/NAME`. Returns the manifest's path.
    fn release_file(&self, version: &str, counter: u64, name: &str, bytes: &[u8]) -> String {
        let art = self.path(&format!("art/{version}"));
        std::fs::create_dir_all(&art).expect("art dir");
        std::fs::write(art.join(name), bytes).expect("artifact");
        let manifest = self.p(&format!("release-{version}.json"));
        convoy_ok(&[
            "release",
            "create",
            "--artifact",
            art.join(name).to_str().expect("utf-8"),
            "--url",
            &format!("http://127.0.0.1:{}/{version}/{name}", self.artifact_port),
            "--version",
            version,
            "--counter",
            &counter.to_string(),
            "--hardware",
            "T300",
            "--expires",
            "1d",
            "--key",
            &self.p("key"),
            "--passphrase-file",
            &self.p("pass"),
            "--out",
            &manifest,
        ]);
        manifest
    }

    /// Starts `convoy rollout run` of `manifest` over the devices in one wave.
    fn rollout(&self, rollout_id: &str, manifest: &str, artifact: &str) -> Child {
        let ids: Vec<&str> = self.devices.iter().map(|d| d.id.as_str()).collect();
        let plan = serde_json::json!({
            "waves": [{"name": "canary", "device_ids": ids, "soak_secs": 4}],
            // A handful of real devices: judge every gate from the first device on, every second.
            "gates": {
                "min_devices": 1, "min_stratum_devices": 1, "min_exposure_device_hours": 0.0,
                "evaluate_every_secs": 1, "hold_extension_secs": 5, "silent_after_secs": 300
            }
        });
        let plan_path = self.path(&format!("plan-{rollout_id}.json"));
        std::fs::write(&plan_path, plan.to_string()).expect("plan");
        let artifact = self.p(&format!("art/{artifact}"));
        Command::new(convoy_bin())
            .args([
                "rollout",
                "run",
                "--db",
                &self.p("cache.db"),
                "--broker",
                &format!("mqtts://127.0.0.1:{}", self.broker_port),
                "--ca-file",
                &self.p("pki/ca.pem"),
                "--client-cert",
                &self.p("pki/engine.pem"),
                "--client-key",
                &self.p("pki/engine.key"),
                "--release",
                manifest,
                "--artifact",
                &artifact,
                "--trust",
                &self.p("trust"),
                "--plan",
                plan_path.to_str().expect("utf-8"),
                "--rollout-id",
                rollout_id,
                "--operator",
                "alice",
                "--max-wall-secs",
                "150",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(self.path(&format!("engine-{rollout_id}.log"))).expect("log"),
            )
            .spawn()
            .expect("starting convoy rollout run")
    }

    /// Waits for the engine to end: (exit code, JSON report).
    fn finish(&self, engine: Child, rollout_id: &str) -> (i32, Value) {
        let out = engine.wait_with_output().expect("engine output");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); status {}; engine log:\n{}\n{}",
                out.status,
                std::fs::read_to_string(self.path(&format!("engine-{rollout_id}.log")))
                    .unwrap_or_default(),
                self.all_logs()
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    fn all_logs(&self) -> String {
        self.devices
            .iter()
            .map(Device::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The cache's firmware version of every device.
    fn cached_firmware(&self) -> Vec<String> {
        let out = self.p("export.json");
        convoy_ok(&[
            "fleet",
            "export",
            "--format",
            "json",
            "--db",
            &self.p("cache.db"),
            "--out",
            &out,
        ]);
        let v: Value = serde_json::from_slice(&std::fs::read(&out).expect("export")).expect("json");
        let devices = v
            .get("devices")
            .and_then(Value::as_array)
            .or_else(|| v.as_array())
            .expect("devices");
        devices
            .iter()
            .map(|d| {
                d["components"]["firmware"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

/// Mosquitto on the configuration in `ROOT/broker/test.conf`, listening on `port`.
fn start_mosquitto(root: &Path, port: u16) -> Proc {
    let mosquitto = if Path::new("/usr/sbin/mosquitto").exists() {
        PathBuf::from("/usr/sbin/mosquitto")
    } else {
        PathBuf::from("mosquitto")
    };
    let conf = root.join("broker/test.conf");
    let broker = spawn(
        &mosquitto,
        &["-c", conf.to_str().expect("utf-8")],
        &root.join("mosquitto.log"),
    );
    wait_listening(port, "mosquitto", Duration::from_secs(20));
    broker
}

/// Sets up one device: slots holding the running release (2.4.0, a good program), the supervisor
/// running it, and the agent's configuration (not started yet).
fn device(
    root: &Path,
    id: &str,
    install: Install,
    reboot: bool,
    broker_port: u16,
    window_secs: u64,
) -> Device {
    let dir = root.join(format!("dev-{id}"));
    let slots = match install {
        Install::Directory => dir.join("slots"),
        Install::Command => dir.join("cmdslots"),
        Install::Swupdate => dir.join("swroot"),
    };
    std::fs::create_dir_all(slots.join("a")).expect("slot a");
    std::fs::create_dir_all(slots.join("b")).expect("slot b");
    std::fs::write(slots.join("a/app.sh"), format!("# app 2.4.0\n{GOOD_APP}")).expect("app");
    #[cfg(unix)]
    std::os::unix::fs::symlink("a", slots.join("current")).expect("current");
    std::fs::write(dir.join("restarts"), "0\n").expect("restarts");
    // As systemd's StateDirectory= makes it before the agent starts.
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    let supervisor = Command::new("sh")
        .args(["-c", SUPERVISOR])
        .env("ROOT", &slots)
        .env("DIR", &dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("supervisor.log")).expect("log"))
        .spawn()
        .expect("starting the supervisor");
    let installer = match install {
        Install::Directory => format!("kind = \"directory\"\nroot = \"{}\"\n", slots.display()),
        Install::Command => {
            let script = dir.join("install.sh");
            std::fs::write(&script, INSTALL_SCRIPT).expect("script");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            // The script's own settings come through a wrapper, as a device's image would set them.
            let wrapper = dir.join("installer");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nROOT='{}' LOG='{}' exec '{}' \"$@\"\n",
                    slots.display(),
                    dir.join("install.log").display(),
                    script.display()
                ),
            )
            .expect("wrapper");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            format!("kind = \"command\"\nprogram = \"{}\"\n", wrapper.display())
        }
        // The bootloader's `ustate` handshake has no bootloader here: the stand-ins log the call.
        Install::Swupdate => format!(
            "kind = \"swupdate\"\npublic_key = \"{cert}\"\nhardware = \"t300:1.0\"\n\
             confirm_command = [\"sh\", \"-c\", \"echo confirm >> {log}\"]\n\
             revert_command = [\"sh\", \"-c\", \"echo revert >> {log}\"]\n",
            cert = root.join("pki/swu-cert.pem").display(),
            log = dir.join("bootloader.log").display(),
        ),
    };
    // A "reboot" that takes the agent down at once, as a real reboot would: the test starts it
    // again, as systemd would at boot.
    let reboot = if reboot {
        "reboot_command = [\"/bin/sh\", \"-c\", \"kill -KILL $PPID\"]\n"
    } else {
        ""
    };
    let pki = root.join("pki");
    let config = format!(
        r#"[device]
id = "{id}"
hardware_id = "T300"
components = {{ firmware = "2.4.0", bootloader = "2.2.0" }}

[broker]
url = "mqtts://127.0.0.1:{broker_port}"
ca_file = "{ca}"
client_cert_file = "{cert}"
client_key_file = "{key}"
keep_alive_secs = 5

[trust]
dir = "{trust}"

[state]
dir = "{state}"

[update]
health_window_secs = {window_secs}
link_deadline_secs = 30
{reboot}
[installer]
{installer}
[health]
sample_secs = 1
heartbeat_secs = 2
status_every_secs = 30
max_unit_restarts = 3

[[health.units]]
name = "app.service"
count_command = ["cat", "{restarts}"]

[health.storage]
path = "{state}"
"#,
        ca = pki.join("ca.pem").display(),
        cert = pki.join(format!("{id}.pem")).display(),
        key = pki.join(format!("{id}.key")).display(),
        trust = root.join("trust").display(),
        state = dir.join("state").display(),
        restarts = dir.join("restarts").display(),
    );
    std::fs::write(dir.join("agent.toml"), config).expect("config");
    Device {
        id: id.to_owned(),
        dir,
        install,
        agent: None,
        _supervisor: Proc(supervisor),
        starts: 0,
    }
}

fn mosquitto_available() -> bool {
    convoy_e2e::Mosquitto::available()
}

#[test]
fn agents_take_a_good_release_through_directory_and_command_installers_and_a_reboot() {
    let _turn = convoy_e2e::alone();
    if !mosquitto_available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(
        &[Install::Directory, Install::Directory, Install::Command],
        &[true, false, false],
        3,
    );
    for d in &mut lab.devices {
        let out = Command::new(agent_bin())
            .args([
                "--check",
                "--config",
                d.path("agent.toml").to_str().expect("utf-8"),
            ])
            .output()
            .expect("convoy-agent --check");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "--check failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("health: unit app.service: 0 restart(s)"),
            "{text}"
        );
        assert!(text.contains("trust: 1 key(s)"), "{text}");
        d.start_agent();
    }
    let manifest = lab.release("2.5.0", 51, GOOD_APP);
    let engine = lab.rollout("r-good", &manifest, "2.5.0/app.sh");

    // The first device "reboots" after its install: its agent is gone mid-update, with the
    // state on disk saying so; it is started again, as at boot.
    {
        let first = &mut lab.devices[0];
        let log = first.path("agent-1.log");
        let agent = first.agent.as_mut().expect("agent");
        wait_for_explained(
            "the first agent to go down for its reboot",
            Duration::from_mins(1),
            || agent.0.try_wait().ok().flatten().is_some(),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }
    let first = &mut lab.devices[0];
    assert_eq!(
        first.state()["job"]["phase"],
        "rebooting",
        "{}",
        first.state()
    );
    assert_eq!(
        first.current_slot(),
        "b",
        "installed into the other slot before the reboot"
    );
    first.start_agent();

    let (code, report) = lab.finish(engine, "r-good");
    assert_eq!(
        report["final_state"],
        "completed",
        "{report:#}\n{}",
        lab.all_logs()
    );
    assert_eq!(code, 0);
    let wave = &report["waves"][0];
    assert_eq!(wave["confirmed"], 3, "{wave}");
    for d in &lab.devices {
        let state = d.state();
        assert_eq!(
            state["last_update"]["state"],
            "confirmed",
            "{}: {state}\n{}",
            d.id,
            d.logs()
        );
        assert_eq!(state["components"]["firmware"], "2.5.0");
        assert_eq!(state["active_slot"], "b");
        assert_eq!(state["memory"]["installed_counter"], 51);
        assert_eq!(d.current_slot(), "b");
        assert_eq!(d.restarts(), 0, "the good release never failed");
    }
    assert_eq!(
        std::fs::read_to_string(lab.devices[0].path("slots/confirmed")).expect("confirmed"),
        "b\n"
    );
    let log = std::fs::read_to_string(lab.devices[2].path("install.log")).expect("install log");
    let id = &lab.devices[2].id;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            format!(
                "install slot=b previous=a release={} version=2.5.0 device={id}",
                release_id(&manifest)
            ),
            format!(
                "confirm slot=b previous=a release={} version=2.5.0 device={id}",
                release_id(&manifest)
            ),
        ],
        "the command installer's calls and environment"
    );
    assert_eq!(
        lab.cached_firmware(),
        ["2.5.0", "2.5.0", "2.5.0"],
        "the cache shows what the devices report"
    );
    assert_eq!(lab.devices[0].starts, 2);
}

#[test]
fn a_release_that_keeps_a_unit_restarting_is_reverted_and_stops_the_rollout_at_its_gate() {
    let _turn = convoy_e2e::alone();
    if !mosquitto_available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(
        &[Install::Directory, Install::Directory, Install::Command],
        &[false, false, false],
        60,
    );
    for d in &mut lab.devices {
        d.start_agent();
    }
    let manifest = lab.release("2.5.1", 52, BAD_APP);
    let engine = lab.rollout("r-bad", &manifest, "2.5.1/app.sh");
    let (code, report) = lab.finish(engine, "r-bad");
    assert_eq!(
        report["final_state"],
        "paused",
        "{report:#}\n{}",
        lab.all_logs()
    );
    assert_eq!(code, 3, "stopped by a gate");
    let decision = report["gate_decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["outcome"] != "hold")
        .expect("a gate stopped the rollout")
        .clone();
    assert_eq!(decision["outcome"], "roll_back_wave", "{decision:#}");
    let failing: Vec<&Value> = decision["evidence"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert!(
        failing.iter().any(|f| f["metric"] == "boot_failure"),
        "the boot-failure gate failed: {decision:#}"
    );
    for d in &lab.devices {
        let state = d.state();
        assert_eq!(
            state["last_update"]["state"],
            "reverted",
            "{}: {state}\n{}",
            d.id,
            d.logs()
        );
        let reason = state["last_update"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("unit restarts: app.service restarted"),
            "{reason}"
        );
        assert_eq!(state["components"]["firmware"], "2.4.0");
        assert_eq!(state["active_slot"], "a");
        assert_eq!(
            state["memory"]["installed_counter"], 0,
            "the anti-rollback floor went back too"
        );
        assert_eq!(d.current_slot(), "a", "{}: back on the previous slot", d.id);
        // The failed starts the health window counted.
        let settled = d.restarts();
        assert!(settled >= 3, "{}: {settled} failed starts", d.id);
    }
    let log = std::fs::read_to_string(lab.devices[2].path("install.log")).expect("install log");
    assert!(
        log.lines()
            .any(|l| l.starts_with("revert slot=b previous=a")),
        "the command installer reverted: {log}"
    );
    assert_eq!(lab.cached_firmware(), ["2.4.0", "2.4.0", "2.4.0"]);
}

/// The release id `convoy release create` wrote into a manifest.
fn release_id(manifest: &str) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("json");
    v["signed"]["release"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Whether SWUpdate and OpenSSL (which signs `sw-description`) are installed. CI installs them
/// (`.ci/run`); elsewhere the SWUpdate test is skipped, and under `CI` a missing one fails.
fn swupdate_available() -> bool {
    let found = ["swupdate", "openssl"].iter().all(|p| {
        Command::new(p)
            .arg(if *p == "openssl" { "version" } else { "-h" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    assert!(
        found || std::env::var_os("CI").is_none(),
        "CI must install swupdate and openssl (see .ci/run)"
    );
    if !found {
        eprintln!(
            "skipping: swupdate or openssl is not installed (apt-get install -y swupdate openssl)"
        );
    }
    found
}

/// A `.swu` whose `sw-description` (signed with CMS by `pki/swu-cert.pem`, as SWUpdate requires)
/// has SWUpdate's `rawfile` handler write `payload` to `target`.
fn swu(root: &Path, target: &Path, version: &str, payload: &[u8]) -> Vec<u8> {
    let work = root.join(format!("swu-{version}"));
    std::fs::create_dir_all(&work).expect("swu dir");
    let cert = root.join("pki/swu-cert.pem");
    let key = root.join("pki/swu-key.pem");
    if !cert.exists() {
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=convoy-swu-test",
            ])
            .args(["-addext", "extendedKeyUsage=emailProtection", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload));
    let description = format!(
        "software =\n{{\n\tversion = \"{version}\";\n\thardware-compatibility: [ \"1.0\" ];\n\
         \tfiles: (\n\t\t{{\n\t\t\tfilename = \"app.sh\";\n\t\t\tpath = \"{}\";\n\
         \t\t\tsha256 = \"{sha}\";\n\t\t}}\n\t);\n}}\n",
        target.display()
    );
    std::fs::write(work.join("sw-description"), &description).expect("sw-description");
    let out = Command::new("openssl")
        .args([
            "cms",
            "-sign",
            "-outform",
            "DER",
            "-nosmimecap",
            "-binary",
            "-in",
        ])
        .arg(work.join("sw-description"))
        .arg("-out")
        .arg(work.join("sw-description.sig"))
        .arg("-signer")
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .output()
        .expect("openssl cms");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = std::fs::read(work.join("sw-description.sig")).expect("signature");
    cpio_crc(&[
        ("sw-description", description.as_bytes()),
        ("sw-description.sig", &sig),
        ("app.sh", payload),
    ])
}

/// A cpio archive in the "new ASCII with CRC" format (`cpio -o -H crc`), which SWUpdate reads.
fn cpio_crc(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let mut entry = |ino: usize, name: &str, data: &[u8], mode: u32| {
        let check = data.iter().fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
        let fields = [
            ino as u32,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            check,
        ];
        out.extend_from_slice(b"070702");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    };
    for (i, (name, data)) in files.iter().enumerate() {
        entry(i + 1, name, data, 0o100_644);
    }
    entry(0, "TRAILER!!!", &[], 0);
    out
}

#[test]
fn an_agent_installs_a_signed_swu_through_real_swupdate() {
    let _turn = convoy_e2e::alone();
    if !mosquitto_available() || !swupdate_available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(&[Install::Swupdate], &[false], 2);
    lab.devices[0].start_agent();
    let target = lab.devices[0].path("installed-by-swupdate.sh");
    let payload = b"# app 2.6.0, written by SWUpdate's rawfile handler\n".to_vec();
    let image = swu(lab.dir.path(), &target, "2.6.0", &payload);
    let manifest = lab.release_file("2.6.0", 60, "update.swu", &image);
    let engine = lab.rollout("r-swu", &manifest, "2.6.0/update.swu");
    let (code, report) = lab.finish(engine, "r-swu");
    assert_eq!(
        report["final_state"],
        "completed",
        "{report:#}\n{}",
        lab.all_logs()
    );
    assert_eq!(code, 0);
    let d = &lab.devices[0];
    let state = d.state();
    assert_eq!(
        state["last_update"]["state"],
        "confirmed",
        "{state}\n{}",
        d.logs()
    );
    assert_eq!(
        std::fs::read(&target).expect("the file SWUpdate wrote"),
        payload
    );
    assert_eq!(
        std::fs::read_to_string(d.path("bootloader.log")).expect("bootloader log"),
        "confirm\n",
        "confirmed once, never reverted"
    );
}

/// A device that "reboots" into the new release while the broker is away reverts when the link
/// has not come back by its deadline, keeps what it has to say on disk, and says it once the
/// broker is back: the engine sees the revert.
#[test]
fn a_device_whose_link_stays_away_after_its_reboot_reverts_and_reports_it_when_back() {
    let _turn = convoy_e2e::alone();
    if !mosquitto_available() {
        return;
    }
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(&[Install::Directory], &[true], 60);
    let config = lab.devices[0].path("agent.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("link_deadline_secs = 30", "link_deadline_secs = 3"),
    )
    .expect("config");
    lab.devices[0].start_agent();
    let manifest = lab.release("2.5.2", 53, GOOD_APP);
    let engine = lab.rollout("r-offline", &manifest, "2.5.2/app.sh");
    {
        let d = &mut lab.devices[0];
        let log = d.path("agent-1.log");
        let agent = d.agent.as_mut().expect("agent");
        wait_for_explained(
            "the agent to go down for its reboot",
            Duration::from_mins(1),
            || agent.0.try_wait().ok().flatten().is_some(),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }
    // The broker goes away during the reboot, and stays away past the link deadline.
    lab.broker = None;
    lab.devices[0].start_agent();
    let d = &lab.devices[0];
    wait_for_explained(
        "the agent to revert for want of a link",
        Duration::from_secs(30),
        || d.state()["last_update"]["state"] == "reverted",
        || d.logs(),
    );
    let reason = d.state()["last_update"]["reason"].clone();
    assert_eq!(
        reason,
        "the link did not come back within 3 s of the boot",
        "{}",
        d.logs()
    );
    assert_eq!(d.current_slot(), "a", "back on the previous slot");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(d.path("state/outbox.json")).expect("outbox"))
            .expect("outbox JSON");
    let kinds: Vec<&str> = kept
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"status") && kinds.contains(&"telemetry"),
        "the revert's status and its boot event wait on disk: {kinds:?}"
    );
    lab.broker = Some(start_mosquitto(lab.dir.path(), lab.broker_port));
    let (_, report) = lab.finish(engine, "r-offline");
    assert_eq!(
        report["waves"][0]["reverted"],
        1,
        "the engine heard of the revert once the link was back: {report:#}\n{}",
        lab.all_logs()
    );
    let d = &lab.devices[0];
    wait_for_explained(
        "the outbox to be sent",
        Duration::from_secs(30),
        || {
            std::fs::read(d.path("state/outbox.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v.as_array().is_some_and(Vec::is_empty))
        },
        || d.logs(),
    );
    assert_eq!(lab.cached_firmware(), ["2.4.0"]);
    // The failed connection attempts after the reboot reached the engine's health samples.
    let conn = rusqlite::Connection::open(lab.path("cache.db")).expect("cache");
    let events: Vec<String> = conn
        .prepare("SELECT event FROM rollout_log WHERE rollout_id = 'r-offline' ORDER BY seq")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("events");
    let failures: u64 = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|e| find_u64(&e, "reconnect_failures"))
        .sum();
    assert!(
        failures > 0,
        "no reconnect failures in the engine's log:\n{}",
        events.join("\n")
    );
}

/// The sum of every `key` number anywhere in `v`.
fn find_u64(v: &Value, key: &str) -> u64 {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, x)| {
                if k == key {
                    x.as_u64().unwrap_or(0)
                } else {
                    find_u64(x, key)
                }
            })
            .sum(),
        Value::Array(items) => items.iter().map(|x| find_u64(x, key)).sum(),
        _ => 0,
    }
}

/// `--check` says what is wrong and where, and exits non-zero; a configuration error names the
/// key. No broker is needed: the check never connects.
#[test]
fn check_names_what_is_wrong_without_connecting() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("state")).expect("state");
    let config = |extra: &str| {
        format!(
            r#"[device]
id = "CV1"
hardware_id = "T300"
[broker]
url = "mqtt://127.0.0.1:1"
[trust]
dir = "{trust}"
[state]
dir = "{state}"
[installer]
kind = "command"
program = "{missing}"
[[health.units]]
name = "app.service"
count_command = ["sh", "-c", "echo lots"]
[health.power_supply]
root = "{power}"
{extra}"#,
            trust = root.join("no-trust").display(),
            state = root.join("state").display(),
            missing = root.join("no-installer").display(),
            power = root.join("power").display(),
        )
    };
    std::fs::create_dir_all(root.join("power/BAT0")).expect("power");
    std::fs::write(root.join("power/BAT0/type"), "Battery\n").expect("type");
    std::fs::write(root.join("power/BAT0/capacity"), "64\n").expect("capacity");
    let path = root.join("agent.toml");
    std::fs::write(&path, config("")).expect("config");
    let out = Command::new(agent_bin())
        .args(["--check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("convoy-agent --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "PROBLEM trust:",
        "no-trust",
        "PROBLEM installer: command program",
        "PROBLEM health: unit app.service:",
        "\"lots\" is not a restart count",
        "battery 64%, power battery",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    std::fs::write(&path, config("[health.surprise]\n")).expect("config");
    let out = Command::new(agent_bin())
        .args(["--check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("convoy-agent --check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("agent.toml") && err.contains("surprise"),
        "the key and the file are named: {err}"
    );
}
