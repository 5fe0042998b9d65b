//! Issue 9: consoles attached to a server (`convoy gui --server URL`), end to end: a real
//! `convoy serve` (in process) hosting a real engine run against a simulated fleet on the
//! embedded broker, and two real consoles ([`ConsoleApp`] in egui_kittest harnesses), each with
//! its own local copy.
//!
//! Waits are bounded (they fail with what was seen), never timing assertions.

use convoy::engine::control::OperatorCommand;
use convoy::gui::backend::LinkStatus;
use convoy::gui::warroom::{WallState, state_of};
use convoy::gui::{Backend, Clock, ConsoleApp, UiCommand, View};
use convoy::remote::{CopyState, RemoteCommands, RemoteOptions};
use convoy::serve::auth::{self, Role};
use convoy::serve::{ServeConfig, Server};
use convoy_core::comms::RolloutStory;
use convoy_e2e::{Proc, SignedWorkspace, WorkspaceSpec, write_hour_cycle_policy};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Simulated seconds per wall second: a canary soak of one simulated hour lasts a minute, so
/// the rollout is still running through the whole test.
const SCALE: &str = "60";

type Console = Harness<'static, ConsoleApp>;

/// A console attached to `server` with its own copy at `copy`, trusting the certificate `ca`
/// besides the system's when given, syncing at least every second.
fn console(server: &str, token: &str, copy: &Path, ca: Option<&Path>) -> (Console, RemoteCommands) {
    let mut options =
        RemoteOptions::new(server, token.to_owned(), copy.to_owned()).expect("options");
    options.ca_cert = ca.map(Path::to_owned);
    options.poll = Duration::from_secs(1);
    let (backend, commands) = Backend::remote_with_commands(&options).expect("a remote backend");
    let harness = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |cc| ConsoleApp::new(&cc.egui_ctx, None, backend, Clock::System));
    (harness, commands)
}

/// Steps every console until `done` holds for each, or fails after a minute with `what` and
/// what each console shows.
fn wait_all(consoles: &mut [&mut Console], what: &str, done: impl Fn(&ConsoleApp) -> bool) {
    let started = Instant::now();
    loop {
        for h in consoles.iter_mut() {
            h.step();
        }
        if consoles.iter().all(|h| done(h.state())) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "waited a minute for {what}; the consoles show: {:#?}",
            consoles
                .iter()
                .map(|h| describe(h.state()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(app: &ConsoleApp) -> String {
    format!(
        "link {:?}; devices {:?}; rollouts {:?}; steered {:?}; failures {:?}",
        app.link(),
        app.model.as_ref().map(convoy::gui::model::FleetModel::len),
        app.rollouts.as_ref().map(|b| b.as_ref().map(|b| b
            .rollouts
            .iter()
            .map(|s| format!("{} {:?}", s.rollout_id, state_of(s)))
            .collect::<Vec<_>>())),
        app.steered
            .iter()
            .map(|a| format!("{} {}: {:?}", a.command.name(), a.rollout_id, a.result))
            .collect::<Vec<_>>(),
        app.failures(),
    )
}

fn r1(app: &ConsoleApp) -> Option<&RolloutStory> {
    app.rollouts
        .as_ref()?
        .as_ref()
        .ok()?
        .rollouts
        .iter()
        .find(|s| s.rollout_id == "r1")
}

fn paused_by(app: &ConsoleApp, words: &str) -> bool {
    r1(app).is_some_and(|s| {
        state_of(s) == WallState::Paused && s.pauses.iter().any(|(_, why)| why.contains(words))
    })
}

/// The timeline of r1 in a cache: (kind, cause).
fn timeline(cache: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(cache).expect("open cache");
    let mut stmt = conn
        .prepare("SELECT kind, cause FROM rollout_events WHERE rollout_id = 'r1' ORDER BY seq")
        .expect("query");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("timeline")
}

/// Issue 9's done-when: two consoles attached to one server see the same rollout, a pause made
/// from one appears on the other (its board and its war-room wall); the server stops, the
/// console says it is unreachable and keeps showing the rollout from its copy, refuses a resume
/// and queues a pause, which is sent when the server is back.
#[test]
#[allow(clippy::too_many_lines)] // One story, told in order.
fn two_consoles_on_one_server_see_a_pause_and_one_queues_a_pause_while_it_is_down() {
    let _turn = convoy_e2e::alone();
    let ws = SignedWorkspace::new(&WorkspaceSpec {
        devices: 120,
        seed: 7,
        artifact_bytes: 200_000,
        version: "2.5.0",
        counter: 50,
        hardware: "T300",
        requires: &["bootloader>=1.6"],
    });
    let p = |name: &str| ws.path(name);
    write_hour_cycle_policy(p("policy.json"), Some(r#""hold_extension_secs": 1800"#));
    let cache = PathBuf::from(p("cache.db"));
    let (dana, sam) = {
        let store = convoy::store::Store::open(&cache).expect("cache");
        let now = convoy::now();
        let token = |name: &str| {
            auth::add_token(&store, name, Role::Dispatcher, "operator:test", now)
                .expect("token")
                .token
        };
        (token("dana"), token("sam"))
    };

    // The fleet: the embedded broker and `convoy sim`; the engine run the server hosts.
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let port = convoy::link::broker::pick_free_port(ip).expect("a free port");
    let broker = convoy::link::broker::EmbeddedBroker::start(std::net::SocketAddr::new(ip, port))
        .expect("the embedded broker");
    let url = broker.url();
    let _sim = Proc::spawn(
        &[
            "sim",
            "--broker",
            &url,
            "--fleet",
            &p("fleet.json"),
            "--trust",
            &p("trust"),
            "--time-scale",
            SCALE,
            "--duration-secs",
            "600",
        ],
        p("sim.log"),
    );
    let args = convoy::cmd::rollout::parse_run_args([
        "--db",
        &p("cache.db"),
        "--broker",
        &url,
        "--release",
        &p("release.json"),
        "--trust",
        &p("trust"),
        "--policy",
        &p("policy.json"),
        "--time-scale",
        SCALE,
        "--rollout-id",
        "r1",
        "--operator",
        "alice",
        "--max-wall-secs",
        "400",
        "--artifact",
        &p("fw.img"),
    ])
    .expect("run args");
    let run = convoy::serve::host::host_rollout(&args).expect("hosting the run");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ServeConfig::new(cache.clone(), "127.0.0.1:0".parse().expect("addr"));
    config.controls.push(run.control.clone());
    let server = runtime
        .block_on(Server::start(config.clone()))
        .expect("server");
    let base = server.base_url();

    // Two consoles, each with its own copy.
    let copies = tempfile::tempdir().expect("a directory for the copies");
    let (copy_a, copy_b) = (copies.path().join("a.db"), copies.path().join("b.db"));
    let (mut a, steer_a) = console(&base, &dana, &copy_a, None);
    let (mut b, steer_b) = console(&base, &sam, &copy_b, None);

    // Both see the server's fleet and the rollout, started.
    wait_all(
        &mut [&mut a, &mut b],
        "the fleet and r1's first wave on both consoles",
        |app| {
            *app.link() == LinkStatus::Connected
                && app.model.as_ref().is_some_and(|m| m.len() == 120)
                && r1(app).is_some_and(|s| s.waves.first().is_some_and(|w| w.started_at.is_some()))
        },
    );

    // The nav says whose server it is and as whom the console acts.
    wait_all(
        &mut [&mut a],
        "A's note on the server and operator",
        |app| {
            app.engine_note
                .as_deref()
                .is_some_and(|n| n.contains(&base) && n.contains("as dana (dispatcher)"))
        },
    );

    // A pauses it from its rollout monitor, as an operator does: a reason, then Pause. B shows
    // it paused: on its board and on its war-room wall.
    a.state_mut().monitor.selected = Some("r1".into());
    a.state_mut().send(UiCommand::Show(View::Monitor));
    wait_all(&mut [&mut a], "A's monitor on r1", |app| {
        app.backend().can_steer("r1").is_ok()
    });
    a.run_steps(2);
    a.get_by_label(&format!("Server: {base}"));
    a.get_by_label("Reason:").focus();
    a.run_steps(1);
    a.get_by_label("Reason:").type_text("war room hold");
    a.run_steps(2);
    a.get_by_label("Pause").click();
    wait_all(&mut [&mut a], "the server's answer to A's pause", |app| {
        app.steered.iter().any(|s| s.rollout_id == "r1")
    });
    let answer = &a.state().steered.last().expect("an answer").result;
    assert!(
        answer.as_deref().is_ok_and(|a| a.contains("paused")),
        "{answer:?}"
    );
    b.state_mut().send(UiCommand::Show(View::WarRoom));
    wait_all(&mut [&mut b], "r1 paused on console B", |app| {
        paused_by(app, "war room hold")
    });
    b.run_steps(2);
    assert!(
        b.query_all_by_label_contains("war room hold")
            .next()
            .is_some(),
        "B's wall names the pause"
    );
    assert!(
        b.query_all_by_label_contains("PAUSED").next().is_some(),
        "B's wall says PAUSED"
    );

    // The health plots read the engine's log, mirrored page by page.
    wait_all(&mut [&mut a, &mut b], "r1's health series on both", |app| {
        app.rollouts
            .as_ref()
            .and_then(|b| b.as_ref().ok())
            .is_some_and(|b| b.health.contains_key("r1"))
    });

    // A resumes it, while the server is up.
    let answer = steer_a.steer(
        "r1",
        "dana",
        OperatorCommand::Resume {
            reason: "canary fine".into(),
        },
    );
    assert!(answer.is_ok(), "{answer:?}");
    wait_all(&mut [&mut a, &mut b], "r1 running again on both", |app| {
        r1(app).is_some_and(|s| state_of(s) == WallState::Running)
    });

    // The server stops: B says so, and keeps showing r1 from its copy.
    let addr = server.addr();
    runtime.block_on(server.shutdown());
    wait_all(&mut [&mut b], "console B to see the server gone", |app| {
        matches!(app.link(), LinkStatus::Reconnecting(why)
            if why.contains("unreachable") && why.contains("showing the copy of"))
    });
    assert!(r1(b.state()).is_some(), "{}", describe(b.state()));
    b.run_steps(2);
    assert!(
        b.query_all_by_label_contains("r1").next().is_some(),
        "B's wall still shows r1"
    );

    // A console started while the server is down opens on its copy: A's, restarted.
    drop((a, steer_a));
    let (mut a, _) = console(&base, &dana, &copy_a, None);
    wait_all(
        &mut [&mut a],
        "console A, restarted offline, on its copy",
        |app| {
            matches!(app.link(), LinkStatus::Reconnecting(why) if why.contains("showing the copy of"))
                && app.model.as_ref().is_some_and(|m| m.len() == 120)
                && r1(app).is_some()
        },
    );

    // Offline: a resume is refused (it is never queued), a pause is queued and kept on disk.
    let refused = steer_b.steer(
        "r1",
        "sam",
        OperatorCommand::Resume {
            reason: "looks fine".into(),
        },
    );
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("unreachable") && e.contains("not queued")),
        "{refused:?}"
    );
    let queued = steer_b.steer(
        "r1",
        "sam",
        OperatorCommand::Pause {
            reason: "depot reports bricks".into(),
        },
    );
    assert!(
        queued.as_deref().is_ok_and(|q| q.starts_with("queued")),
        "{queued:?}"
    );
    let state = CopyState::load(&copy_b, &base).expect("B's copy state");
    assert_eq!(state.queued.len(), 1, "{state:?}");
    wait_all(
        &mut [&mut b],
        "B's status bar to show the queued pause",
        |app| matches!(app.link(), LinkStatus::Reconnecting(why) if why.contains("1 pause queued (r1)")),
    );

    // The server is back on the same address: B sends the queued pause, and both see it.
    config.listen = addr;
    let server = runtime
        .block_on(Server::start(config))
        .expect("the server again");
    wait_all(
        &mut [&mut a, &mut b],
        "the queued pause sent and r1 paused by it on both",
        |app| *app.link() == LinkStatus::Connected && paused_by(app, "depot reports bricks"),
    );
    let sent = b
        .state()
        .steered
        .iter()
        .rev()
        .find(|s| s.command.reason().contains("depot reports bricks"))
        .map(|s| s.result.clone());
    assert!(
        sent.as_ref().is_some_and(|r| r
            .as_ref()
            .is_ok_and(|w| w.starts_with("sent after the link returned"))),
        "{sent:?}"
    );
    assert!(
        CopyState::load(&copy_b, &base)
            .expect("B's copy state")
            .queued
            .is_empty()
    );
    // The server's record names who paused and that it was queued.
    assert!(
        timeline(&cache).iter().any(|(k, c)| k == "rollout.paused"
            && c.starts_with("operator:sam: depot reports bricks (queued offline at")),
        "{:?}",
        timeline(&cache)
    );

    drop(a);
    drop(b);
    let report = run.stop().expect("the hosted run");
    assert_ne!(
        report.final_state,
        convoy::engine::FinalState::Completed,
        "the run was held by the pause"
    );
    runtime.block_on(server.shutdown());
}

/// `--ca-cert`: a console trusts a server with a self-signed certificate when given it, and
/// without it says the server is unreachable and why; a console with an unknown token says so.
#[test]
fn a_console_trusts_a_self_signed_server_with_its_certificate_and_names_a_bad_token() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = dir.path().join("cache.db");
    let token = {
        let mut store = convoy::store::Store::open(&cache).expect("cache");
        let now = convoy::now();
        let fleet = convoy_core::synth::generate(&convoy_core::synth::SynthOptions {
            devices: 50,
            seed: 3,
            now,
        });
        store.replace_fleet(&fleet, None).expect("fleet");
        auth::add_token(&store, "vera", Role::Viewer, "operator:test", now)
            .expect("token")
            .token
    };
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ServeConfig::new(cache, "127.0.0.1:0".parse().expect("addr"));
    config.tls = Some((cert_path.clone(), key_path));
    let server = runtime.block_on(Server::start(config)).expect("server");
    let url = format!("https://localhost:{}", server.addr().port());

    let start = |token: &str, copy: &str, ca: Option<&Path>| {
        console(&url, token, &dir.path().join(copy), ca).0
    };
    let mut trusting = start(&token, "trusting.db", Some(&cert_path));
    let mut untrusting = start(&token, "untrusting.db", None);
    let mut bad_token = start("not-a-token", "bad.db", Some(&cert_path));
    wait_all(&mut [&mut trusting], "the fleet over TLS", |app| {
        *app.link() == LinkStatus::Connected && app.model.as_ref().is_some_and(|m| m.len() == 50)
    });
    wait_all(
        &mut [&mut untrusting],
        "an untrusted certificate reported",
        |app| {
            matches!(app.link(), LinkStatus::Reconnecting(why)
                if why.contains("unreachable") && why.to_lowercase().contains("certificate"))
        },
    );
    assert!(
        untrusting.state().model.is_none(),
        "nothing shown from an untrusted server"
    );
    wait_all(&mut [&mut bad_token], "an unknown token reported", |app| {
        app.failures()
            .iter()
            .any(|f| f.contains("unknown or revoked") && f.contains("HTTP 401"))
    });
    runtime.block_on(server.shutdown());
}
