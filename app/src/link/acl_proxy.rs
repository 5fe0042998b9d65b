//! The embedded broker's ACL: an MQTT 3.1.1 proxy in front of rumqttd.
//!
//! rumqttd 0.20 authenticates a CONNECT (a static user list or an `external_auth` callback) but
//! has no hook for publish or subscribe authorisation. So `convoy broker --acl-from DIR` binds
//! rumqttd on a loopback port only this process knows and listens on the public address itself:
//! for each client it reads the CONNECT (protocol level 4 only, username and password checked
//! against Mosquitto's `password_file`, the will topic against the ACL), then every PUBLISH
//! topic and SUBSCRIBE filter the client sends, and every PUBLISH the broker delivers, and
//! forwards only what the [`Acl`] allows.
//!
//! What is refused is refused the way Mosquitto refuses it, so clients behave the same on both
//! brokers: a refused QoS 0 publish is dropped, a refused QoS 1 publish is acknowledged (PUBACK)
//! and dropped (a delivery the client may not read is settled with the broker in its place:
//! PUBACK at QoS 1, PUBREC and PUBCOMP at QoS 2), a refused subscription filter gets the failure return code 0x80 in the SUBACK
//! while the rest of the SUBSCRIBE goes through. A refused QoS 2 publish, a packet larger than
//! the limit, or anything that is not MQTT 3.1.1 closes that client's connection, and only that
//! one.

use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::http::accept::ClientTable;

use super::acl::{self, Access, Acl, PasswordFile};

/// What the proxy refused, counted since it started.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub refused_connects: AtomicU64,
    pub refused_publishes: AtomicU64,
    pub refused_subscriptions: AtomicU64,
    pub refused_deliveries: AtomicU64,
    pub closed_for_size_or_protocol: AtomicU64,
    /// Connections closed at once because their address had `max_per_client` open.
    pub refused_per_client: AtomicU64,
    /// Connections closed for sending no whole CONNECT within the deadline.
    pub connect_timeouts: AtomicU64,
}

/// The rules the proxy applies.
#[derive(Debug)]
pub struct ProxyRules {
    pub acl: Acl,
    pub passwords: PasswordFile,
    /// The largest packet a client may send (the broker's own limit applies on top).
    pub max_packet_bytes: usize,
    /// Connections open at once, in all (more wait in the listen backlog).
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64); more are closed at once.
    pub max_per_client: usize,
    /// How long a new connection has to send its whole CONNECT.
    pub connect_timeout: Duration,
}

/// The largest first packet (a CONNECT: client id, will, username and password).
pub const MAX_CONNECT_BYTES: usize = 64 * 1024;
/// The default time a client has to send its CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on connections in all.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default bound on connections from one address.
pub const DEFAULT_MAX_PER_CLIENT: usize = 256;

/// Accepts clients on `listener` for ever, each proxied to the broker at `upstream`, at most
/// `rules.max_connections` at once and `rules.max_per_client` from one address.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    login: UpstreamLogin,
    rules: Arc<ProxyRules>,
    stats: Arc<ProxyStats>,
) {
    let slots = Arc::new(Semaphore::new(rules.max_connections.max(1)));
    let clients = Arc::new(ClientTable::new(rules.max_per_client.max(1)));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((client, peer)) = listener.accept().await else {
            // Out of descriptors, or a connection reset before accept: transient; do not spin
            // on it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = clients.take(peer.ip()) else {
            // Closed before reading a byte: one address cannot hold every connection.
            stats.refused_per_client.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        };
        let rules = rules.clone();
        let stats = stats.clone();
        let login = login.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            if let Err(err) = proxy_one(client, upstream, &login, &rules, &stats).await {
                // One client's problem; the broker and every other client go on.
                eprintln!("broker ACL: connection from {peer} closed: {err:#}");
            }
        });
    }
}

/// One MQTT control packet, whole: the first byte and the bytes after the remaining length.
struct Packet {
    first: u8,
    body: Vec<u8>,
}

impl Packet {
    fn kind(&self) -> u8 {
        self.first >> 4
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        out.push(self.first);
        let mut len = self.body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one packet; `Ok(None)` at a clean end of stream.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Packet>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut len: usize = 0;
    let mut shift = 0;
    loop {
        let byte = r.read_u8().await.context("reading a packet length")?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        anyhow::ensure!(shift < 28, "malformed remaining length");
    }
    anyhow::ensure!(
        len <= max,
        "a packet of {len} bytes, over the limit of {max} bytes"
    );
    // Grown as bytes arrive, never to the declared length up front: a client that declares a
    // large packet and sends nothing holds no more memory than it sent.
    let mut body = Vec::new();
    let want = u64::try_from(len).context("a packet length")?;
    r.take(want)
        .read_to_end(&mut body)
        .await
        .context("reading a packet")?;
    anyhow::ensure!(
        body.len() == len,
        "the connection ended inside a packet ({} of {len} bytes)",
        body.len()
    );
    Ok(Some(Packet {
        first: first[0],
        body,
    }))
}

/// A reader over a packet body.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.at).context("packet too short")?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = usize::from(self.u16()?);
        let end = self.at + len;
        let b = self.buf.get(self.at..end).context("packet too short")?;
        self.at = end;
        Ok(b)
    }

    fn string(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).context("a string that is not UTF-8")
    }

    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }
}

/// What the client's CONNECT says.
struct Connect {
    client_id: String,
    username: Option<String>,
    password: Option<Vec<u8>>,
    /// The will's topic and message; its QoS and retain flag are in `flags`.
    will: Option<(String, Vec<u8>)>,
    level: u8,
    /// The connect flags byte (clean session, will QoS and retain; the login bits are rewritten).
    flags: u8,
    keep_alive: u16,
}

impl Connect {
    fn will_topic(&self) -> Option<&str> {
        self.will.as_ref().map(|(t, _)| t.as_str())
    }
}

fn parse_connect(p: &Packet) -> Result<Connect> {
    anyhow::ensure!(p.kind() == 1, "the first packet is not a CONNECT");
    let mut c = Cursor::new(&p.body);
    let name = c.string()?;
    let level = c.u8()?;
    anyhow::ensure!(name == "MQTT" || name == "MQIsdp", "not MQTT ({name:?})");
    let flags = c.u8()?;
    anyhow::ensure!(flags & 0x01 == 0, "the CONNECT's reserved flag is set");
    let keep_alive = c.u16()?;
    let client_id = c.string()?.to_owned();
    let will = if flags & 0x04 != 0 {
        let topic = c.string()?.to_owned();
        let message = c.bytes()?.to_vec();
        Some((topic, message))
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(c.string()?.to_owned())
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(c.bytes()?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        client_id,
        username,
        password,
        will,
        level,
        flags,
        keep_alive,
    })
}

/// The CONNECT the proxy sends the broker for an authenticated client: the client's id, clean
/// session flag, will and keep-alive, with the proxy's own login in place of the client's (the
/// client's password never leaves the proxy).
fn upstream_connect(c: &Connect, login: &UpstreamLogin) -> Result<Packet> {
    fn put(body: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
        let len = u16::try_from(bytes.len()).context("a CONNECT field over 64 KiB")?;
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(bytes);
        Ok(())
    }
    let mut body = Vec::with_capacity(64 + c.client_id.len());
    put(&mut body, b"MQTT")?;
    body.push(4);
    body.push((c.flags & 0x3e) | 0x80 | 0x40);
    body.extend_from_slice(&c.keep_alive.to_be_bytes());
    put(&mut body, c.client_id.as_bytes())?;
    if let Some((topic, message)) = &c.will {
        put(&mut body, topic.as_bytes())?;
        put(&mut body, message)?;
    }
    put(&mut body, login.username.as_bytes())?;
    put(&mut body, login.password.as_bytes())?;
    Ok(Packet { first: 0x10, body })
}

/// The login the proxy uses at the embedded broker, which takes no other.
#[derive(Clone)]
pub struct UpstreamLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl UpstreamLogin {
    /// `convoy-proxy` with 32 random bytes (64 hex digits) as password, drawn per process.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
        Ok(Self {
            username: "convoy-proxy".to_owned(),
            password: hex::encode(bytes),
        })
    }
}

fn connack(code: u8) -> Vec<u8> {
    vec![0x20, 0x02, 0x00, code]
}

fn puback(packet_id: u16) -> Vec<u8> {
    ack(0x40, packet_id)
}

/// A two-byte acknowledgement: PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70.
fn ack(first: u8, packet_id: u16) -> Vec<u8> {
    let [a, b] = packet_id.to_be_bytes();
    vec![first, 0x02, a, b]
}

/// The topic, QoS and packet id of a PUBLISH.
fn parse_publish(p: &Packet) -> Result<(String, u8, Option<u16>)> {
    let qos = (p.first >> 1) & 0x03;
    let mut c = Cursor::new(&p.body);
    let topic = c.string()?.to_owned();
    let id = if qos > 0 { Some(c.u16()?) } else { None };
    Ok((topic, qos, id))
}

async fn proxy_one(
    client: TcpStream,
    upstream: SocketAddr,
    login: &UpstreamLogin,
    rules: &ProxyRules,
    stats: &ProxyStats,
) -> Result<()> {
    client.set_nodelay(true).ok();
    let (mut client_r, mut client_w) = client.into_split();
    let max_first = rules.max_packet_bytes.min(MAX_CONNECT_BYTES);
    let first =
        tokio::time::timeout(rules.connect_timeout, read_packet(&mut client_r, max_first)).await;
    let Ok(first) = first else {
        stats.connect_timeouts.fetch_add(1, Ordering::Relaxed);
        anyhow::bail!(
            "no whole CONNECT within {} s",
            rules.connect_timeout.as_secs_f64()
        );
    };
    let Some(first) = first? else {
        return Ok(());
    };
    let connect = parse_connect(&first)?;
    if connect.level != 4 {
        stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        client_w.write_all(&connack(0x01)).await.ok();
        anyhow::bail!(
            "protocol level {}: only MQTT 3.1.1 is served",
            connect.level
        );
    }
    let user = connect.username.clone();
    let authenticated = match (&user, &connect.password) {
        (Some(u), Some(pw)) => rules.passwords.verify(u, pw),
        _ => false,
    };
    if !authenticated {
        stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        client_w.write_all(&connack(0x04)).await.ok();
        anyhow::bail!("bad username or password for {user:?}");
    }
    // Authenticated, so `user` is set. A broker drops the older of two clients with one id:
    // an id that is not this user's would let it knock that client off (and wipe its session).
    let name = user.as_deref().unwrap_or_default();
    if let Err(why) =
        acl::check_client_id(name, &connect.client_id, |u| rules.passwords.contains(u))
    {
        stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        client_w.write_all(&connack(0x02)).await.ok();
        anyhow::bail!("identifier rejected: {why}");
    }
    if let Some(topic) = connect.will_topic()
        && !rules
            .acl
            .allows(user.as_deref(), &connect.client_id, topic, Access::Write)
    {
        stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        client_w.write_all(&connack(0x05)).await.ok();
        anyhow::bail!("{user:?} may not leave a will on {topic:?}");
    }
    let broker = TcpStream::connect(upstream)
        .await
        .context("connecting to the embedded broker")?;
    broker.set_nodelay(true).ok();
    let (mut broker_r, mut broker_w) = broker.into_split();
    broker_w
        .write_all(&upstream_connect(&connect, login)?.encode())
        .await?;

    // Both writers are fed by channels, so either side can answer on the other's behalf
    // (a PUBACK for a refused publish, a SUBACK with refusals) between whole packets.
    let (to_client, mut client_out) = mpsc::channel::<Vec<u8>>(256);
    let (to_broker, mut broker_out) = mpsc::channel::<Vec<u8>>(256);
    // SUBSCRIBE packet id → which of its filters were refused (in order), for the SUBACK.
    let pending: Arc<Mutex<HashMap<u16, Vec<bool>>>> = Arc::default();

    let client_writer = tokio::spawn(async move {
        while let Some(bytes) = client_out.recv().await {
            if client_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let broker_writer = tokio::spawn(async move {
        while let Some(bytes) = broker_out.recv().await {
            if broker_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });

    let ident = (user.clone(), connect.client_id.clone());
    let from_client = {
        let to_client = to_client.clone();
        let to_broker = to_broker.clone();
        let pending = pending.clone();
        async move {
            loop {
                let Some(p) = read_packet(&mut client_r, rules.max_packet_bytes).await? else {
                    return Ok::<(), anyhow::Error>(());
                };
                let out = client_packet(&p, &ident, rules, stats, &pending, &to_client).await?;
                if let Some(bytes) = out
                    && to_broker.send(bytes).await.is_err()
                {
                    return Ok(());
                }
            }
        }
    };
    let ident = (user.clone(), connect.client_id.clone());
    let from_broker = {
        let pending = pending.clone();
        async move {
            // QoS 2 deliveries refused and PUBREC'd, whose PUBREL the proxy answers.
            let mut released = HashSet::new();
            loop {
                // The broker's packets are trusted for size: it enforces its own limit.
                let Some(p) = read_packet(&mut broker_r, usize::MAX >> 1).await? else {
                    return Ok::<(), anyhow::Error>(());
                };
                let out =
                    broker_packet(p, &ident, rules, stats, &pending, &to_broker, &mut released)
                        .await?;
                if let Some(bytes) = out
                    && to_client.send(bytes).await.is_err()
                {
                    return Ok(());
                }
            }
        }
    };
    let result = tokio::select! {
        r = from_client => r,
        r = from_broker => r,
    };
    if result.is_err() {
        stats
            .closed_for_size_or_protocol
            .fetch_add(1, Ordering::Relaxed);
    }
    client_writer.abort();
    broker_writer.abort();
    result
}

/// Decides on one packet from the client: `Some(bytes)` to forward to the broker.
async fn client_packet(
    p: &Packet,
    (user, client_id): &(Option<String>, String),
    rules: &ProxyRules,
    stats: &ProxyStats,
    pending: &Mutex<HashMap<u16, Vec<bool>>>,
    to_client: &mpsc::Sender<Vec<u8>>,
) -> Result<Option<Vec<u8>>> {
    match p.kind() {
        1 => anyhow::bail!("a second CONNECT"),
        3 => {
            let (topic, qos, id) = parse_publish(p)?;
            if rules
                .acl
                .allows(user.as_deref(), client_id, &topic, Access::Write)
            {
                return Ok(Some(p.encode()));
            }
            stats.refused_publishes.fetch_add(1, Ordering::Relaxed);
            match (qos, id) {
                (0, _) => Ok(None),
                (1, Some(id)) => {
                    // Acknowledged and dropped, as Mosquitto does for MQTT 3.1.1 clients.
                    to_client.send(puback(id)).await.ok();
                    Ok(None)
                }
                _ => anyhow::bail!("{user:?} published QoS {qos} on {topic:?}, which it may not"),
            }
        }
        8 => {
            let mut c = Cursor::new(&p.body);
            let id = c.u16()?;
            let mut kept = Vec::new();
            let mut refused = Vec::new();
            while !c.done() {
                let filter = c.string()?;
                let qos = c.u8()?;
                let ok = rules
                    .acl
                    .allows_subscribe(user.as_deref(), client_id, filter);
                refused.push(!ok);
                if ok {
                    kept.push((filter.to_owned(), qos));
                }
            }
            anyhow::ensure!(!refused.is_empty(), "a SUBSCRIBE with no filter");
            let n_refused = refused.iter().filter(|r| **r).count();
            stats
                .refused_subscriptions
                .fetch_add(n_refused as u64, Ordering::Relaxed);
            if n_refused == 0 {
                return Ok(Some(p.encode()));
            }
            if kept.is_empty() {
                let mut body = id.to_be_bytes().to_vec();
                body.extend(std::iter::repeat_n(0x80, refused.len()));
                let suback = Packet { first: 0x90, body };
                to_client.send(suback.encode()).await.ok();
                return Ok(None);
            }
            pending
                .lock()
                .map_err(|_| anyhow::anyhow!("subscription table poisoned"))?
                .insert(id, refused);
            let mut body = id.to_be_bytes().to_vec();
            for (filter, qos) in kept {
                let len = u16::try_from(filter.len()).context("filter too long")?;
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(filter.as_bytes());
                body.push(qos);
            }
            Ok(Some(Packet { first: 0x82, body }.encode()))
        }
        _ => Ok(Some(p.encode())),
    }
}

/// Decides on one packet from the broker: `Some(bytes)` to forward to the client.
async fn broker_packet(
    p: Packet,
    (user, client_id): &(Option<String>, String),
    rules: &ProxyRules,
    stats: &ProxyStats,
    pending: &Mutex<HashMap<u16, Vec<bool>>>,
    to_broker: &mpsc::Sender<Vec<u8>>,
    released: &mut HashSet<u16>,
) -> Result<Option<Vec<u8>>> {
    match p.kind() {
        3 => {
            let (topic, qos, id) = parse_publish(&p)?;
            if rules
                .acl
                .allows(user.as_deref(), client_id, &topic, Access::Read)
            {
                return Ok(Some(p.encode()));
            }
            // Subscriptions are checked, so this is a second line: never deliver what the
            // client may not read; settle it with the broker in the client's place.
            stats.refused_deliveries.fetch_add(1, Ordering::Relaxed);
            match (qos, id) {
                (1, Some(id)) => {
                    to_broker.send(puback(id)).await.ok();
                }
                (2, Some(id)) => {
                    // QoS 2: PUBREC now, and PUBCOMP for the broker's PUBREL (kept from the
                    // client, which never saw the message).
                    to_broker.send(ack(0x50, id)).await.ok();
                    released.insert(id);
                }
                _ => {}
            }
            Ok(None)
        }
        6 => {
            let id = Cursor::new(&p.body).u16()?;
            if released.remove(&id) {
                to_broker.send(ack(0x70, id)).await.ok();
                return Ok(None);
            }
            Ok(Some(p.encode()))
        }
        9 => {
            let mut c = Cursor::new(&p.body);
            let id = c.u16()?;
            let refused = pending
                .lock()
                .map_err(|_| anyhow::anyhow!("subscription table poisoned"))?
                .remove(&id);
            let Some(refused) = refused else {
                return Ok(Some(p.encode()));
            };
            let mut granted = p.body[2..].iter().copied();
            let mut body = id.to_be_bytes().to_vec();
            for r in refused {
                body.push(if r {
                    0x80
                } else {
                    granted.next().unwrap_or(0x80)
                });
            }
            Ok(Some(Packet { first: 0x90, body }.encode()))
        }
        _ => Ok(Some(p.encode())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_their_length() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 200_000] {
            let p = Packet {
                first: 0x30,
                body: vec![7; len],
            };
            let bytes = p.encode();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let back = rt
                .block_on(read_packet(&mut bytes.as_slice(), usize::MAX))
                .expect("read")
                .expect("a packet");
            assert_eq!((back.first, back.body.len()), (0x30, len));
            let too_big = rt.block_on(read_packet(&mut bytes.as_slice(), len.saturating_sub(1)));
            assert_eq!(too_big.is_err(), len > 0, "{len}");
        }
    }

    #[test]
    fn a_packet_cut_short_is_an_error_not_a_wait_for_memory() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // Declares 65,535 bytes, sends 3.
        let bytes = [0x10u8, 0xff, 0xff, 0x03, 1, 2, 3];
        let Err(err) = rt.block_on(read_packet(&mut &bytes[..], MAX_CONNECT_BYTES)) else {
            panic!("a packet cut short was read")
        };
        assert!(format!("{err:#}").contains("3 of 65535 bytes"), "{err:#}");
        // Over the CONNECT cap: refused before any byte of the body.
        let big = [0x10u8, 0xff, 0xff, 0x07];
        assert!(
            rt.block_on(read_packet(&mut &big[..], MAX_CONNECT_BYTES))
                .is_err()
        );
    }

    #[test]
    fn a_connect_is_read_with_its_will() {
        // MQTT 3.1.1 CONNECT: will (QoS 0), username and password.
        let mut body = Vec::new();
        let s = |b: &mut Vec<u8>, x: &[u8]| {
            b.extend_from_slice(&u16::try_from(x.len()).expect("short").to_be_bytes());
            b.extend_from_slice(x);
        };
        s(&mut body, b"MQTT");
        body.push(4);
        body.push(0x80 | 0x40 | 0x04 | 0x02);
        body.extend_from_slice(&30u16.to_be_bytes());
        s(&mut body, b"client-1");
        s(&mut body, b"convoy/v1/devices/dev-2/status");
        s(&mut body, b"{}");
        s(&mut body, b"dev-1");
        s(&mut body, b"pw");
        let c = parse_connect(&Packet { first: 0x10, body }).expect("parse");
        assert_eq!(c.level, 4);
        assert_eq!(c.client_id, "client-1");
        assert_eq!(c.username.as_deref(), Some("dev-1"));
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(c.will_topic(), Some("convoy/v1/devices/dev-2/status"));
        assert_eq!((c.flags, c.keep_alive), (0xc6, 30));
        // Upstream, the same CONNECT with the proxy's login in place of the client's.
        let login = UpstreamLogin::random().expect("random");
        let up = parse_connect(&upstream_connect(&c, &login).expect("encode")).expect("parse");
        assert_eq!(up.client_id, "client-1");
        assert_eq!((up.level, up.flags, up.keep_alive), (4, 0xc6, 30));
        assert_eq!(up.will, c.will);
        assert_eq!(up.username.as_deref(), Some("convoy-proxy"));
        assert_eq!(up.password.as_deref(), Some(login.password.as_bytes()));
        assert_eq!(login.password.len(), 64);
        assert!(!format!("{login:?}").contains(&login.password));
        // No will, no clean session: still none upstream.
        let mut plain = c;
        plain.will = None;
        plain.flags = 0xc0;
        let up = parse_connect(&upstream_connect(&plain, &login).expect("encode")).expect("parse");
        assert_eq!((up.flags, up.will), (0xc0, None));
        assert!(
            parse_connect(&Packet {
                first: 0x10,
                body: vec![0, 4, b'M']
            })
            .is_err()
        );
    }
}
