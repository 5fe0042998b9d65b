//! The MQTT side of the link: one connection task per console (or simulated device), with
//! reconnect and backoff, resubscription after every reconnect, QoS 1 for commands and
//! acknowledgements, and a bounded channel towards the caller.
//!
//! Back-pressure, not memory: inbound messages are decoded on the connection task and sent into a
//! bounded channel; when the caller falls behind, the task stops polling the socket, TCP fills,
//! and the broker holds the rest. Every inbound payload goes through
//! [`protocol::decode_inbound`]; a bad one becomes a [`LinkEvent::Rejected`] and is never
//! passed on as data.

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::protocol::{self, Command, Inbound, InboundRejection, Topics};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS); `user:password@` may precede the host.
    pub url: String,
    pub client_id: String,
    pub keep_alive_secs: u64,
    /// TLS: the CA that signed the broker's certificate (PEM). Required for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// TLS client authentication: certificate and key (PEM), both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Size of the inbound channel; when full, the connection stops reading (back-pressure).
    pub inbound_capacity: usize,
    /// Simulated seconds per wall second of the devices on the other end (`convoy sim
    /// --time-scale`): incoming timestamps are checked against the link's clock running at this
    /// rate from the moment it was spawned, so simulated devices far ahead of wall time are not
    /// rejected as clock skew. 1.0 for real devices.
    pub time_scale: f64,
    /// Where the link's clock starts (default: the wall clock at spawn). A resumed engine run
    /// passes its own simulated time, which continues the first run's clock.
    pub clock_start: Option<convoy_core::time::Timestamp>,
    /// The identity the broker's ACL knows this client by (`--mqtt-username`,
    /// `--mqtt-password-file`); a `user:password@` in the URL is used when this is empty.
    pub auth: MqttAuth,
    /// Whether the broker keeps this client's session (subscriptions and queued QoS 1 messages)
    /// while it is away. The engine keeps one under a client id stable per rollout and discards
    /// it when the rollout is over ([`LinkHandle::close`]).
    pub persistent_session: bool,
}

/// A username and password for the broker. The password never comes from the command line:
/// it is read from a file ([`MqttAuth::from_flags`]) or `$CONVOY_MQTT_PASSWORD`.
#[derive(Clone, Default)]
pub struct MqttAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for MqttAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl MqttAuth {
    /// The identity from `--mqtt-username` and `--mqtt-password-file` (the file's first line;
    /// without a file, `$CONVOY_MQTT_PASSWORD`).
    pub fn from_flags(
        username: Option<&str>,
        password_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let password = match password_file {
            Some(path) => Some(read_password_file(path)?),
            None => None,
        };
        if password.is_some() && username.is_none() {
            bail!("--mqtt-password-file needs --mqtt-username: a password alone names nobody");
        }
        Ok(Self {
            username: username.map(str::to_owned),
            password,
        })
    }
}

/// Reads a password from the first line of a file (a trailing newline is not part of it).
pub fn read_password_file(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the MQTT password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("the MQTT password file {} is empty", path.display());
    }
    Ok(line.to_owned())
}

/// The largest packet the link accepts from the broker. It is far above the protocol's payload
/// limit on purpose: a packet over this limit makes rumqttc drop the connection, and a QoS 1
/// message the broker keeps for a persistent session would then be redelivered on every
/// reconnect. Anything between the protocol's limit and this one is read and rejected as
/// `oversize`, one rejection, and the link stays up. Brokers must bound payloads below it
/// (Mosquitto's `message_size_limit`, which `convoy broker mosquitto-config` writes).
pub const MAX_INCOMING_PACKET_BYTES: usize = 1024 * 1024;

impl LinkConfig {
    pub fn new(url: &str, client_id: &str) -> Self {
        Self {
            url: url.to_owned(),
            client_id: client_id.to_owned(),
            keep_alive_secs: 30,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            inbound_capacity: 10_000,
            time_scale: 1.0,
            clock_start: None,
            auth: MqttAuth::default(),
            persistent_session: true,
        }
    }
}

/// A parsed broker URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parses `mqtt://[user[:password]@]host[:port]` and `mqtts://…` (default ports 1883 and 8883).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        bail!("invalid broker URL {url:?}: it must start with mqtt:// or mqtts://");
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .with_context(|| format!("invalid broker URL {url:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .with_context(|| format!("invalid port {p:?} in broker URL {url:?}"))?,
            None => default_port,
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse()
                    .with_context(|| format!("invalid port {p:?} in broker URL {url:?}"))?,
            ),
            None => (hostport.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.contains('/') {
        bail!("invalid broker URL {url:?}: no host");
    }
    Ok(BrokerUrl {
        tls,
        host,
        port,
        username,
        password,
    })
}

/// The state of the connection, for the status bar and the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// Lost or refused; retrying after a backoff. The text says why.
    Reconnecting(String),
    /// Closed by [`LinkHandle::close`]; the task has ended.
    Closed,
}

/// What the connection task reports.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkEvent {
    Inbound(Inbound),
    Rejected(InboundRejection),
    /// A message on a raw subscription ([`Role::Filters`]), not decoded.
    Raw {
        topic: String,
        payload: Vec<u8>,
    },
    /// (Re)connected and (re)subscribed; retained status follows.
    Connected,
    Disconnected(String),
}

/// The caller's end of a link: publish, and watch the state.
#[derive(Clone, Debug)]
pub struct LinkHandle {
    client: AsyncClient,
    topics: Topics,
    state: watch::Receiver<LinkState>,
    options: MqttOptions,
    closing: Arc<AtomicBool>,
}

impl LinkHandle {
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Waits until the link is connected, or fails after `timeout`.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.state.wait_for(|s| *s == LinkState::Connected))
            .await
            .context("timed out waiting for the broker connection")?
            .context("the link task has stopped")?;
        Ok(())
    }

    /// Publishes a command to its device with QoS 1 (at least once; devices dedupe by id).
    pub async fn send_command(&self, command: &Command) -> Result<()> {
        let payload = serde_json::to_vec(command).context("encoding a command")?;
        self.client
            .publish(
                self.topics.commands(&command.device_id),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .with_context(|| {
                format!(
                    "queueing command {} for device {}",
                    command.command_id, command.device_id
                )
            })
    }

    /// Publishes raw bytes (simulated devices, tests, manifests).
    pub async fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<()> {
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, retain, payload)
            .await
            .with_context(|| format!("queueing a publish on {topic}"))
    }

    /// Publishes telemetry with QoS 0, as devices should: a heartbeat is worth nothing late, and
    /// QoS 1 telemetry fills brokers' per-client queues (Mosquitto's `max_queued_messages`), where
    /// it would crowd out the status and acks that matter.
    pub async fn publish_telemetry(&self, topic: String, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic.clone(), QoS::AtMostOnce, false, payload)
            .await
            .with_context(|| format!("queueing a publish on {topic}"))
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Disconnects for good and ends the connection task (within a few seconds). With
    /// `discard_session`, the broker is then told to forget the client's persistent session
    /// (a clean-session connection under the same client id): nothing stays queued for a client
    /// that will not come back. Without it, a later link with the same client id takes the session
    /// back with whatever was queued meanwhile.
    pub async fn close(&self, discard_session: bool) -> Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        let mut state = self.state.clone();
        if *state.borrow() != LinkState::Closed {
            // The request queue may be full or the task gone; either way the wait below bounds it.
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                state.wait_for(|s| *s == LinkState::Closed),
            )
            .await;
        }
        if discard_session {
            discard_session_of(&self.options).await?;
        }
        Ok(())
    }
}

/// Connects once with a clean session under `options`' client id and disconnects: MQTT 3.1.1's
/// way of deleting a persistent session and the messages queued for it.
async fn discard_session_of(options: &MqttOptions) -> Result<()> {
    let mut options = options.clone();
    options.set_clean_session(true);
    let id = options.client_id();
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let work = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(err) => bail!("{err}"),
            }
        }
        client.try_disconnect().context("queueing the disconnect")?;
        // Until the broker closes the socket (it does after DISCONNECT) or the packet is out.
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .with_context(|| format!("timed out discarding the MQTT session of {id}"))?
        .with_context(|| format!("discarding the MQTT session of {id}"))
}

/// Whom the link subscribes as.
#[derive(Clone, Debug)]
pub enum Role {
    /// A console or engine: every device's status, telemetry and acks.
    Console,
    /// Raw subscriptions (simulated devices, benchmarks): messages arrive as [`LinkEvent::Raw`].
    Filters(Vec<String>),
}

/// Connects to the broker and spawns the connection task on the current tokio runtime. Inbound
/// events arrive on the returned receiver. The task runs until the handle and the receiver are
/// dropped.
pub fn spawn(
    config: &LinkConfig,
    topics: Topics,
    role: &Role,
) -> Result<(LinkHandle, mpsc::Receiver<LinkEvent>)> {
    let url = parse_broker_url(&config.url)?;
    let mut options = MqttOptions::new(config.client_id.clone(), url.host.clone(), url.port);
    options.set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)));
    // Incoming: see MAX_INCOMING_PACKET_BYTES. Outgoing: what we publish stays within the
    // protocol's limit with room for framing.
    options.set_max_packet_size(MAX_INCOMING_PACKET_BYTES, protocol::MAX_PAYLOAD_BYTES * 2);
    // A persistent session lets the broker keep QoS 1 messages for us across short outages.
    options.set_clean_session(!config.persistent_session);
    let (username, password) = match &config.auth.username {
        Some(user) => (Some(user.clone()), config.auth.password.clone()),
        None => (url.username.clone(), url.password.clone()),
    };
    let password = password.or_else(|| std::env::var("CONVOY_MQTT_PASSWORD").ok());
    if let Some(user) = username {
        options.set_credentials(user, password.unwrap_or_default());
    }
    if url.tls {
        let ca_path = config
            .ca_file
            .as_ref()
            .context("mqtts:// needs a CA certificate file (--ca-file)")?;
        let ca = std::fs::read(ca_path)
            .with_context(|| format!("reading CA certificate {}", ca_path.display()))?;
        let client_auth = match (&config.client_cert_file, &config.client_key_file) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c)
                    .with_context(|| format!("reading client certificate {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading client key {}", k.display()))?,
            )),
            (None, None) => None,
            _ => bail!("TLS client authentication needs both a certificate and a key file"),
        };
        options.set_transport(Transport::tls(ca, client_auth, None));
    }
    let saved_options = options.clone();
    let (client, eventloop) = AsyncClient::new(options, 1_000);
    let closing = Arc::new(AtomicBool::new(false));
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
    let (tx, rx) = mpsc::channel(config.inbound_capacity.max(1));
    let filters = match role {
        Role::Console => topics.console_subscriptions().to_vec(),
        Role::Filters(f) => f.clone(),
    };
    let decode = matches!(role, Role::Console);
    let clock = LinkClock {
        start: config.clock_start.unwrap_or_else(crate::now),
        began: std::time::Instant::now(),
        scale: if config.time_scale.is_finite() && config.time_scale > 0.0 {
            config.time_scale
        } else {
            1.0
        },
    };
    tokio::spawn(drive(
        eventloop,
        client.clone(),
        topics.clone(),
        filters,
        decode,
        tx,
        state_tx,
        clock,
        closing.clone(),
    ));
    Ok((
        LinkHandle {
            client,
            topics,
            state: state_rx,
            options: saved_options,
            closing,
        },
        rx,
    ))
}

/// The time incoming messages are checked against (see [`LinkConfig::time_scale`]).
#[derive(Clone, Copy, Debug)]
struct LinkClock {
    start: convoy_core::time::Timestamp,
    began: std::time::Instant,
    scale: f64,
}

impl LinkClock {
    fn now(&self) -> convoy_core::time::Timestamp {
        let secs = self.began.elapsed().as_secs_f64() * self.scale;
        convoy_core::time::Timestamp(self.start.0.saturating_add(secs as i64))
    }
}

/// Polls the event loop forever: rumqttc reconnects on the next poll after an error, so we only
/// wait out a backoff, and resubscribe on every ConnAck without a stored session.
///
/// Subscriptions go through the client's request queue, which a busy publisher may have filled
/// while the broker was away: a subscription that does not fit is retried on every later turn,
/// and `Connected` is announced only once every subscription is queued.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    filters: Vec<String>,
    decode: bool,
    tx: mpsc::Sender<LinkEvent>,
    state: watch::Sender<LinkState>,
    clock: LinkClock,
    closing: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut unsubscribed: Vec<String> = Vec::new();
    let mut announce = false;
    loop {
        if !unsubscribed.is_empty() {
            unsubscribed.retain(|f| client.try_subscribe(f.clone(), QoS::AtLeastOnce).is_err());
            if unsubscribed.is_empty() && announce {
                announce = false;
                state.send_replace(LinkState::Connected);
                if tx.send(LinkEvent::Connected).await.is_err() {
                    return;
                }
            }
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                if !ack.session_present {
                    unsubscribed.clone_from(&filters);
                }
                // The request channel is drained by this very loop: never await here.
                unsubscribed.retain(|f| client.try_subscribe(f.clone(), QoS::AtLeastOnce).is_err());
                if unsubscribed.is_empty() {
                    state.send_replace(LinkState::Connected);
                    if tx.send(LinkEvent::Connected).await.is_err() {
                        return;
                    }
                } else {
                    announce = true;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let event = if decode {
                    match protocol::decode_inbound(
                        &topics,
                        &publish.topic,
                        &publish.payload,
                        clock.now(),
                    ) {
                        Ok(inbound) => LinkEvent::Inbound(inbound),
                        Err(rejection) => LinkEvent::Rejected(rejection),
                    }
                } else {
                    LinkEvent::Raw {
                        topic: publish.topic.clone(),
                        payload: publish.payload.to_vec(),
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))
                if closing.load(Ordering::SeqCst) =>
            {
                // Give the DISCONNECT a moment to leave: poll until the broker hangs up.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while eventloop.poll().await.is_ok() {}
                })
                .await;
                state.send_replace(LinkState::Closed);
                return;
            }
            Ok(_) => {}
            Err(_) if closing.load(Ordering::SeqCst) => {
                state.send_replace(LinkState::Closed);
                return;
            }
            Err(err) => {
                let reason = err.to_string();
                state.send_replace(LinkState::Reconnecting(reason.clone()));
                if tx.send(LinkEvent::Disconnected(reason)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = parse_broker_url("mqtt://127.0.0.1:1884").expect("plain");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1884));
        let u = parse_broker_url("mqtts://ops:s3cret@broker.example:8884/").expect("tls");
        assert_eq!(
            (u.tls, u.port, u.username.as_deref(), u.password.as_deref()),
            (true, 8884, Some("ops"), Some("s3cret"))
        );
        let u = parse_broker_url("mqtt://[::1]").expect("v6");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        for bad in [
            "tcp://x:1",
            "mqtt://",
            "mqtt://host:port",
            "mqtt://host:99999",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }
}
