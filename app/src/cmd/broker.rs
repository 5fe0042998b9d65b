//! `convoy broker --listen ADDR [--acl-from DIR]`: run the embedded MQTT broker in the
//! foreground, open (demo) or behind the ACL of a generated configuration; and `convoy broker
//! mosquitto-config`: write a Mosquitto configuration for a fleet (per-device identities, the
//! topic ACL, size and session limits). docs/PROTOCOL.md, "Identities and the broker ACL".

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::link::acl::{self, AclSpec};
use crate::link::acl_proxy::ProxyRules;
use crate::link::broker::EmbeddedBroker;
use crate::link::protocol::Topics;

/// The largest payload the generated configuration lets through (`message_size_limit`), and the
/// embedded broker's: above the protocol's 64 KiB limit (a device on a newer protocol may send
/// more, and the engine counts it as `oversize`), below the link's 1 MiB packet limit (over
/// which a client would drop its connection).
pub const BROKER_MESSAGE_SIZE_LIMIT: usize = 128 * 1024;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<BrokerCommand>,
    /// Address to listen on, e.g. 127.0.0.1:1883 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
    /// Enforce the identities and ACL of a directory written by `convoy broker
    /// mosquitto-config --auth passwords` (its `password_file` and `acl_file`): clients must log
    /// in, and a device publishes only under its own topics. Without it the broker is open to
    /// anyone who can reach it (demos only).
    #[arg(long, value_name = "DIR")]
    pub acl_from: Option<PathBuf>,
    /// With --acl-from: connections open at once, in all (more wait to be accepted).
    #[arg(long, default_value_t = crate::link::acl_proxy::DEFAULT_MAX_CONNECTIONS, requires = "acl_from")]
    pub max_connections: usize,
    /// With --acl-from: connections open at once from one address (IPv6: one /64); more are
    /// closed at once.
    #[arg(long, default_value_t = crate::link::acl_proxy::DEFAULT_MAX_PER_CLIENT, requires = "acl_from")]
    pub max_per_client: usize,
}

#[derive(clap::Subcommand, Debug)]
pub enum BrokerCommand {
    /// Write a Mosquitto configuration for a fleet: `mosquitto.conf`, `acl_file` (a device
    /// publishes only under its own topic level and reads only its own commands; the engine and
    /// console identities alone publish commands), and with `--auth passwords` a
    /// `password_file` with the devices' credentials beside it.
    MosquittoConfig(MosquittoConfigArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Each device logs in with its id as username and a generated password.
    Passwords,
    /// Each device presents a client certificate whose Common Name is its id (TLS).
    Certs,
}

#[derive(clap::Args, Debug)]
pub struct MosquittoConfigArgs {
    /// The fleet (a cache `.db`, or a JSON or CSV inventory): every device gets an identity.
    #[arg(long)]
    pub fleet: PathBuf,
    /// The directory to write into (created; existing files are not overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Topic prefix.
    #[arg(long, default_value = "convoy/v1")]
    pub prefix: String,
    #[arg(long, value_enum, default_value = "passwords")]
    pub auth: AuthMode,
    /// Mosquitto's listener (`listener PORT ADDR`).
    #[arg(long, default_value = "0.0.0.0:1883")]
    pub listen: SocketAddr,
    /// TLS: the CA that signs client (and broker) certificates; required with --auth certs.
    #[arg(long, value_name = "PEM")]
    pub cafile: Option<PathBuf>,
    /// TLS: the broker's certificate; required with --auth certs.
    #[arg(long, value_name = "PEM")]
    pub certfile: Option<PathBuf>,
    /// TLS: the broker's private key; required with --auth certs.
    #[arg(long, value_name = "PEM")]
    pub keyfile: Option<PathBuf>,
    /// Also create the fleet simulator's identity (`convoy-fleet-sim`), which may speak for every
    /// device: for tests and demos with `convoy sim`, never in production.
    #[arg(long)]
    pub sim_identity: bool,
    /// How long Mosquitto keeps the session of a client that has gone away (Mosquitto's
    /// `persistent_client_expiration`, e.g. 7d, 12h).
    #[arg(long, default_value = "7d")]
    pub persistent_client_expiration: String,
    /// With --auth passwords and no --certfile/--keyfile: accept a listener on a non-loopback
    /// address without TLS, where every password crosses the network in clear (a trusted
    /// network only).
    #[arg(long, conflicts_with_all = ["certfile", "keyfile", "cafile"])]
    pub plaintext: bool,
}

pub use crate::ops::runs::MqttAuthArgs;

pub fn run(args: &Args) -> Result<()> {
    if let Some(BrokerCommand::MosquittoConfig(config)) = &args.command {
        return mosquitto_config(config);
    }
    // The broker runs on its own threads until the process is stopped; keep its handle.
    let _running: EmbeddedBroker = if let Some(dir) = &args.acl_from {
        if args.max_connections == 0 || args.max_per_client == 0 {
            bail!("--max-connections and --max-per-client must be at least 1");
        }
        let mut rules = load_rules(dir)?;
        rules.max_connections = args.max_connections;
        rules.max_per_client = args.max_per_client;
        let users = rules.passwords.len();
        let (broker, _stats) = EmbeddedBroker::start_with_acl(args.listen, rules)
            .context("starting the embedded MQTT broker")?;
        eprintln!(
            "embedded MQTT broker listening on {} with the ACL of {} ({users} identities): clients log in, devices speak only for themselves (the broker itself is on {}, for the proxy's login only)",
            broker.addr(),
            dir.display(),
            broker
                .inner_addr()
                .map_or_else(|| "?".to_owned(), |a| a.to_string())
        );
        broker
    } else {
        let broker =
            EmbeddedBroker::start(args.listen).context("starting the embedded MQTT broker")?;
        eprintln!(
            "embedded MQTT broker listening on {} (connect with --broker {}); OPEN: no login, any client may publish as any device (demo only; --acl-from DIR enforces a generated ACL)",
            broker.addr(),
            broker.url()
        );
        broker
    };
    eprintln!("stop with Ctrl-C");
    loop {
        std::thread::park();
    }
}

/// Reads `DIR/password_file` and `DIR/acl_file`.
pub fn load_rules(dir: &Path) -> Result<ProxyRules> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let (passwords, skipped) = acl::PasswordFile::parse(&read("password_file")?);
    for bad in &skipped {
        // One bad line costs its identity, not the whole broker.
        eprintln!(
            "warning: {} {bad}: skipped (that identity cannot log in)",
            dir.join("password_file").display()
        );
    }
    if passwords.is_empty() {
        bail!(
            "{} holds no identity: nobody could log in",
            dir.join("password_file").display()
        );
    }
    let acl = acl::Acl::parse(&read("acl_file")?)
        .with_context(|| format!("in {}", dir.join("acl_file").display()))?;
    Ok(ProxyRules {
        acl,
        passwords,
        max_packet_bytes: BROKER_MESSAGE_SIZE_LIMIT + 1024,
        max_connections: crate::link::acl_proxy::DEFAULT_MAX_CONNECTIONS,
        max_per_client: crate::link::acl_proxy::DEFAULT_MAX_PER_CLIENT,
        connect_timeout: crate::link::acl_proxy::DEFAULT_CONNECT_TIMEOUT,
    })
}

fn mosquitto_config(args: &MosquittoConfigArgs) -> Result<()> {
    let topics =
        Topics::new(&args.prefix).map_err(|e| anyhow::anyhow!("invalid topic prefix {:?}", e.0))?;
    let fleet = crate::fleet_io::load_fleet(&args.fleet)?;
    check_device_users(fleet.devices.iter().map(|d| d.id.as_str()), args.auth)?;
    let expiration = &args.persistent_client_expiration;
    if !valid_expiration(expiration) {
        bail!(
            "--persistent-client-expiration {expiration:?}: use a number and one of h, d, w, m, y (e.g. 7d)"
        );
    }
    let tls = listener_tls(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = absolute(&args.out)?;
    let spec = AclSpec {
        topics,
        sim_identity: args.sim_identity,
    };
    let mut conf = String::new();
    let _ = writeln!(
        conf,
        "# Mosquitto 2 configuration for a Convoy fleet of {} devices, topic prefix {}.\n\
         # Written by `convoy broker mosquitto-config`; docs/PROTOCOL.md explains every line.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         listener {} {}",
        fleet.devices.len(),
        args.prefix,
        args.listen.port(),
        args.listen.ip()
    );
    if let Some(tls) = &tls {
        if let Some(ca) = &tls.ca {
            let _ = writeln!(conf, "cafile {}", ca.display());
        }
        let _ = writeln!(
            conf,
            "certfile {}\nkeyfile {}",
            tls.cert.display(),
            tls.key.display()
        );
    }
    match args.auth {
        AuthMode::Certs => {
            let _ = writeln!(
                conf,
                "# Every client presents a certificate; its Common Name is its username (a device's\n\
                 # id, or convoy-engine / convoy-console).\n\
                 require_certificate true\nuse_identity_as_username true"
            );
        }
        AuthMode::Passwords => {
            let _ = writeln!(
                conf,
                "password_file {}",
                out.join("password_file").display()
            );
        }
    }
    let _ = writeln!(
        conf,
        "acl_file {}\n\
         # Payloads over this are not accepted (Convoy's own limit is 64 KiB; its clients read up to\n\
         # 1 MiB, so one oversized message is one rejection, never a dropped connection).\n\
         message_size_limit {BROKER_MESSAGE_SIZE_LIMIT}\n\
         # Sessions of clients that went away (dead engine runs, retired devices) and their\n\
         # queued messages are dropped after this.\n\
         persistent_client_expiration {expiration}\n\
         max_queued_messages 1000",
        out.join("acl_file").display()
    );
    let mut files: Vec<(PathBuf, String, bool)> = vec![
        (out.join("mosquitto.conf"), conf, false),
        (out.join("acl_file"), spec.render(), false),
    ];
    let mut identities = 0usize;
    if args.auth == AuthMode::Passwords {
        let mut password_file = String::new();
        let mut devices_csv = String::from("device_id,username,password\n");
        let mut service = vec![acl::ENGINE_USER, acl::CONSOLE_USER];
        if args.sim_identity {
            service.push(acl::SIM_USER);
        }
        for user in &service {
            let password = acl::random_password().context("drawing a password")?;
            let salt = acl::random_salt().context("drawing a salt")?;
            let _ = writeln!(
                password_file,
                "{}",
                acl::password_line(user, password.as_bytes(), &salt)
            );
            files.push((
                out.join("credentials").join(format!("{user}.password")),
                format!("{password}\n"),
                true,
            ));
        }
        for d in &fleet.devices {
            let password = acl::random_password().context("drawing a password")?;
            let salt = acl::random_salt().context("drawing a salt")?;
            let _ = writeln!(
                password_file,
                "{}",
                acl::password_line(&d.id, password.as_bytes(), &salt)
            );
            let _ = writeln!(devices_csv, "{},{},{password}", d.id, d.id);
        }
        identities = service.len() + fleet.devices.len();
        files.push((out.join("password_file"), password_file, true));
        files.push((
            out.join("credentials").join("devices.csv"),
            devices_csv,
            true,
        ));
    }
    for (path, _, _) in &files {
        if path.exists() {
            bail!(
                "{} exists: write a new configuration into an empty directory (credentials are never overwritten)",
                path.display()
            );
        }
    }
    for (path, text, secret) in &files {
        write_file(path, text, *secret)?;
    }
    println!(
        "wrote {} for {} devices{}:",
        out.display(),
        fleet.devices.len(),
        if args.sim_identity {
            " (with the fleet simulator identity: test and demo only)"
        } else {
            ""
        }
    );
    for (path, _, secret) in &files {
        println!(
            "  {}{}",
            path.display(),
            if *secret { " (0600)" } else { "" }
        );
    }
    if args.auth == AuthMode::Passwords {
        println!(
            "{identities} identities; hand each device its line of credentials/devices.csv, and pass credentials/convoy-engine.password to `convoy rollout run --mqtt-username convoy-engine --mqtt-password-file`"
        );
    } else {
        println!(
            "issue each device a client certificate signed by {} whose Common Name is its device id (docs/PROTOCOL.md)",
            args.cafile
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    println!(
        "run it with: mosquitto -c {}",
        out.join("mosquitto.conf").display()
    );
    Ok(())
}

/// The listener's TLS files, as absolute paths.
#[derive(Debug)]
struct ListenerTls {
    ca: Option<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
}

/// The listener's TLS: `--auth certs` needs all three files; `--auth passwords` writes the
/// certificate and key when given, and refuses to put passwords in clear on a non-loopback
/// listener unless `--plaintext` says so (then warns).
fn listener_tls(args: &MosquittoConfigArgs) -> Result<Option<ListenerTls>> {
    match (args.auth, &args.cafile, &args.certfile, &args.keyfile) {
        (AuthMode::Certs, Some(ca), Some(cert), Some(key)) => Ok(Some(ListenerTls {
            ca: Some(absolute(ca)?),
            cert: absolute(cert)?,
            key: absolute(key)?,
        })),
        (AuthMode::Certs, ..) => bail!(
            "--auth certs needs --cafile, --certfile and --keyfile (the CA that signs the devices' certificates, and the broker's certificate and key)"
        ),
        (AuthMode::Passwords, ca, Some(cert), Some(key)) => Ok(Some(ListenerTls {
            ca: ca.as_deref().map(absolute).transpose()?,
            cert: absolute(cert)?,
            key: absolute(key)?,
        })),
        (AuthMode::Passwords, _, Some(_), None) | (AuthMode::Passwords, _, None, Some(_)) => {
            bail!("--certfile and --keyfile go together (the broker's certificate and its key)")
        }
        (AuthMode::Passwords, Some(_), None, None) => {
            bail!(
                "--cafile without --certfile and --keyfile: the listener needs the broker's certificate and key for TLS"
            )
        }
        (AuthMode::Passwords, None, None, None) => {
            if args.listen.ip().is_loopback() {
                Ok(None)
            } else if args.plaintext {
                eprintln!(
                    "warning: --plaintext: the listener on {} has no TLS; every device's and the engine's password crosses the network in clear",
                    args.listen
                );
                Ok(None)
            } else {
                bail!(
                    "--listen {}: passwords would cross the network in clear; pass --certfile and --keyfile (the broker's TLS certificate and key), listen on a loopback address, or --plaintext on a trusted network",
                    args.listen
                )
            }
        }
    }
}

/// Whether a `persistent_client_expiration` is a number and one of h, d, w, m, y.
fn valid_expiration(expiration: &str) -> bool {
    expiration
        .strip_suffix(['h', 'd', 'w', 'm', 'y'])
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every device id can be a broker username (with passwords: no `:`), or an error naming the
/// ones that cannot.
fn check_device_users<'a>(ids: impl Iterator<Item = &'a str>, auth: AuthMode) -> Result<()> {
    let mut bad = Vec::new();
    let mut colon = Vec::new();
    for id in ids {
        if let Err(e) = acl::usable_device_user(id) {
            bad.push(e);
        } else if auth == AuthMode::Passwords && acl::usable_password_user(id).is_err() {
            colon.push(format!("{id:?}"));
        }
    }
    if let Some(first) = bad.first() {
        bail!(
            "{first}: rename it before generating the broker ACL ({} device id(s) cannot be broker usernames)",
            bad.len()
        );
    }
    if !colon.is_empty() {
        let shown = colon
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = colon.len().saturating_sub(10);
        bail!(
            "{} device id(s) contain ':', which a broker username in a password file cannot ({shown}{}): rename them, or use --auth certs (the certificate's Common Name carries the id)",
            colon.len(),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Writes a new file; secrets are created 0600 (never readable by others, not even briefly).
fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mode = if secret {
        crate::files::FileMode::OwnerOnly
    } else {
        crate::files::FileMode::Public
    };
    crate::files::write_new_file(path, text.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MosquittoConfigArgs,
    }

    fn args(extra: &[&str]) -> MosquittoConfigArgs {
        let mut argv = vec!["x", "--fleet", "f.json", "--out", "o"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags").args
    }

    #[test]
    fn passwords_in_clear_off_loopback_need_plaintext() {
        // The default listener is 0.0.0.0: refused without TLS, naming the way out.
        let err = listener_tls(&args(&[])).expect_err("refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("0.0.0.0:1883") && msg.contains("--certfile"),
            "{msg}"
        );
        assert!(listener_tls(&args(&["--plaintext"])).expect("ok").is_none());
        let local = listener_tls(&args(&["--listen", "127.0.0.1:1883"])).expect("ok");
        assert!(local.is_none());
        // Given files are written, with or without a CA.
        let tls = listener_tls(&args(&["--certfile", "c.pem", "--keyfile", "k.pem"]))
            .expect("ok")
            .expect("tls");
        assert!(tls.cert.ends_with("c.pem") && tls.key.ends_with("k.pem") && tls.ca.is_none());
        let tls = listener_tls(&args(&[
            "--certfile",
            "c.pem",
            "--keyfile",
            "k.pem",
            "--cafile",
            "ca.pem",
        ]))
        .expect("ok")
        .expect("tls");
        assert!(tls.ca.is_some_and(|c| c.ends_with("ca.pem")));
        assert!(listener_tls(&args(&["--certfile", "c.pem"])).is_err());
        assert!(listener_tls(&args(&["--cafile", "ca.pem"])).is_err());
        assert!(listener_tls(&args(&["--auth", "certs", "--certfile", "c.pem"])).is_err());
        // --plaintext with TLS files makes no sense.
        let mut argv = vec!["x", "--fleet", "f", "--out", "o", "--plaintext"];
        argv.extend(["--certfile", "c", "--keyfile", "k"]);
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn expirations_are_checked_without_slicing() {
        for ok in ["7d", "12h", "1w", "30m", "2y", "0d"] {
            assert!(valid_expiration(ok), "{ok}");
        }
        for bad in ["7é", "é", "d", "", "7", "7dd", "x7d", "-1d", "7 d", "７d"] {
            assert!(!valid_expiration(bad), "{bad}");
        }
    }

    #[test]
    fn device_ids_with_a_colon_cannot_have_passwords() {
        let ids = ["dev-1", "urn:dev:1", "a:b"];
        let err = check_device_users(ids.into_iter(), AuthMode::Passwords).expect_err("refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("\"urn:dev:1\"")
                && msg.contains("\"a:b\"")
                && msg.contains("--auth certs"),
            "{msg}"
        );
        assert!(!msg.contains("dev-1\""), "{msg}");
        assert!(check_device_users(ids.into_iter(), AuthMode::Certs).is_ok());
        assert!(check_device_users(["convoy-engine"].into_iter(), AuthMode::Certs).is_err());
    }
}
