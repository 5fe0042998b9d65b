//! The one accept loop of Convoy's HTTP servers (`convoy serve`, the DDI endpoint and the
//! artifact server), so that every one of them keeps the same promises to its clients.
//!
//! - Connections are bounded twice: at most [`Limits::max_connections`] at once, and at most
//!   [`Limits::max_per_client`] from one client address, which is kept below the first so that
//!   one client can never hold every slot. Past the global bound the server stops accepting and
//!   further clients wait in the kernel's backlog; past the per-client bound a plain-HTTP client
//!   gets a 503 with a JSON error naming the limit, and a TLS client a closed socket (no HTTP can
//!   be spoken before the handshake), while the other clients are served as before.
//! - A client address is the IPv4 address, or the /64 prefix of an IPv6 address (one host holds
//!   a whole /64), with IPv4-mapped IPv6 addresses counted as IPv4.
//! - A TLS handshake must end within [`Limits::tls_handshake_timeout`], and then a request head
//!   must arrive within [`Limits::header_timeout`] (hyper's `header_read_timeout`, which also
//!   closes a keep-alive connection that stays idle that long), so that half-sent requests free
//!   their slots quickly.
//!
//! Not here: a bound on slow bodies or slow readers of responses (each holds one of its
//! client's slots, so the per-client bound caps what one address can hold), and anything about
//! many addresses acting together, which is a firewall's or a reverse proxy's business.

use anyhow::{Result, bail};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// The default time a client has to send a whole request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a client has to finish a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest timeout accepted: past an hour a half-sent request is a held slot, not a slow
/// client.
pub const MAX_TIMEOUT: Duration = Duration::from_hours(1);
/// How long shutdown waits for responses in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Refused connections answered at once; past this, a refused connection is closed unanswered
/// so that refusing never costs more than a few tasks.
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refused connection is kept open after its 503, reading what the client still
/// sends, so that closing it does not reset the connection before the client reads the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How many connections a server takes, from whom, and how long a client has to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (`--max-connections`).
    pub max_connections: usize,
    /// Connections served at once from one client address (`--max-connections-per-client`).
    pub max_per_client: usize,
    /// Time to send a whole request head, and the longest a keep-alive connection may stay idle
    /// (`--header-timeout-secs`).
    pub header_timeout: Duration,
    /// Time to finish a TLS handshake (`--tls-handshake-timeout-secs`).
    pub tls_handshake_timeout: Duration,
}

impl Limits {
    /// The per-client bound when none is given: a quarter of the total (at least 1), so that
    /// one address never holds every slot.
    pub fn default_per_client(max_connections: usize) -> usize {
        (max_connections / 4).max(1)
    }

    /// Checks the limits, naming the flag that is wrong.
    pub fn check(&self) -> Result<()> {
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        if self.max_per_client == 0 {
            bail!("--max-connections-per-client must be at least 1");
        }
        if self.max_per_client > self.max_connections {
            bail!(
                "--max-connections-per-client ({}) must not exceed --max-connections ({})",
                self.max_per_client,
                self.max_connections
            );
        }
        for (flag, t) in [
            ("--header-timeout-secs", self.header_timeout),
            ("--tls-handshake-timeout-secs", self.tls_handshake_timeout),
        ] {
            if t.is_zero() || t > MAX_TIMEOUT {
                bail!(
                    "{flag} must be between 1 and {} seconds, not {}",
                    MAX_TIMEOUT.as_secs(),
                    t.as_secs_f64()
                );
            }
        }
        Ok(())
    }
}

/// The address connections are counted by: IPv4 as it is (IPv4-mapped IPv6 too), IPv6 by its
/// /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Open connections per client address.
pub(crate) struct ClientTable {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of a client; dropping it gives the slot back.
pub(crate) struct ClientSlot {
    table: Arc<ClientTable>,
    key: IpAddr,
}

impl ClientTable {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it has `max` already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // The table holds only addresses with connections open, so it cannot grow with
                // the number of addresses ever seen.
                open.remove(&self.key);
            }
        }
    }
}

/// What the accept loop did, for a server's stats.
#[derive(Debug, Default)]
pub struct AcceptCounters {
    /// Connections taken and served.
    pub accepted: AtomicU64,
    /// Connections refused because their client had `max_per_client` open already.
    pub refused_per_client: AtomicU64,
    /// TLS handshakes that failed or did not end in time.
    pub tls_failed: AtomicU64,
    /// The second of the last refusal logged (refusals are logged at most once a second).
    logged_at: AtomicU64,
}

impl AcceptCounters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        Self::get(&self.accepted)
    }

    pub fn refused_per_client(&self) -> u64 {
        Self::get(&self.refused_per_client)
    }

    pub fn tls_failed(&self) -> u64 {
        Self::get(&self.tls_failed)
    }
}

/// The answer to a connection past its client's limit.
fn refusal_response(limit: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!(
            "too many connections from this client address: at most {limit} at once (--max-connections-per-client); close one and retry"
        ),
        "limit": "max-connections-per-client",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a refused connection (503 for plain HTTP, a closed socket for TLS) without holding
/// the accept loop or a connection slot.
fn refuse(
    stream: TcpStream,
    tls: bool,
    limit: usize,
    refusals: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) {
    if tls {
        return;
    }
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tasks.spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let answer = refusal_response(limit);
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            if stream.write_all(&answer).await.is_ok() {
                let _ = stream.shutdown().await;
                // Read (and drop) what the client still sends until it closes or the linger
                // ends, so that the answer is not lost to a reset.
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        })
        .await;
    });
}

/// Logs a refusal at most once a second, so that a flood of refusals cannot flood the log.
fn log_refusal(counters: &AcceptCounters, server: &str, peer: SocketAddr, limit: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if counters.logged_at.swap(now, Ordering::Relaxed) != now {
        eprintln!(
            "{server}: refused connections from {}: it has {limit} open (--max-connections-per-client); {} refused so far",
            client_key(peer.ip()),
            counters.refused_per_client()
        );
    }
}

/// How a server accepts connections.
pub struct Accept {
    /// With an acceptor, every connection is a TLS one.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Limits,
    /// Where the loop counts what it did; the server reads them for its stats.
    pub counters: Arc<AcceptCounters>,
    /// The server's name in log lines (`convoy serve`, ...).
    pub server: &'static str,
}

/// Serves `router` on `listener` as `accept` says until `stop`, then lets responses in flight
/// finish (a few seconds at most) and returns once every connection is closed. `wrap` sees each
/// accepted TCP stream first (the artifact server counts and cuts connections there).
pub async fn serve<W, S>(
    listener: TcpListener,
    router: Router,
    accept: Accept,
    mut stop: watch::Receiver<bool>,
    wrap: W,
) where
    W: Fn(TcpStream) -> S + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accept {
        tls,
        limits,
        counters,
        server,
    } = accept;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(ClientTable::new(limits.max_per_client));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut connections = JoinSet::new();
    let mut refused = JoinSet::new();
    while let Some((permit, stream, peer)) = next_connection(&listener, &slots, &mut stop).await {
        while connections.try_join_next().is_some() {}
        while refused.try_join_next().is_some() {}
        let Some(client) = clients.take(peer.ip()) else {
            drop(permit);
            counters.refused_per_client.fetch_add(1, Ordering::Relaxed);
            log_refusal(&counters, server, peer, limits.max_per_client);
            refuse(
                stream,
                tls.is_some(),
                limits.max_per_client,
                &refusals,
                &mut refused,
            );
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        let tls = tls.clone();
        let counters = Arc::clone(&counters);
        let io = wrap(stream);
        connections.spawn(async move {
            let _slots = (permit, client);
            match tls {
                None => serve_connection(io, service, stop, limits.header_timeout).await,
                Some(acceptor) => {
                    // A handshake that fails (wrong protocol, bad client) ends only this
                    // connection; one that stalls is cut off like a slow request head.
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, service, stop, limits.header_timeout).await;
                        }
                        _ => {
                            counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    refused.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Waits for a free connection slot and the next accepted connection; `None` once shutdown is
/// asked for.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        () = stopped(stop) => return None,
        permit = Arc::clone(slots).acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            () = stopped(stop) => return None,
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    let _ = stream.set_nodelay(true);
                    return Some((permit, stream, peer));
                }
                // Out of descriptors or a connection reset before accept: transient; do not
                // spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
        }
    }
}

/// Serves one HTTP/1.1 connection until it ends, or until shutdown, when it gets
/// `SHUTDOWN_GRACE` to finish the responses in flight. Connection errors end only this
/// connection.
async fn serve_connection<S>(
    stream: S,
    service: TowerToHyperService<Router>,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        () = stopped(&mut stop) => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
    }
}

/// Resolves once shutdown is asked for (or the server handle is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, inside.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 8,
            max_per_client: 2,
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn limits_name_the_flag_that_is_wrong() {
        assert!(limits().check().is_ok());
        let e = Limits {
            max_per_client: 9,
            ..limits()
        }
        .check()
        .expect_err("per client above the total");
        assert!(
            e.to_string().contains("--max-connections-per-client (9)"),
            "{e}"
        );
        let e = Limits {
            max_connections: 0,
            ..limits()
        }
        .check()
        .expect_err("no connections");
        assert!(e.to_string().contains("--max-connections "), "{e}");
        let e = Limits {
            header_timeout: Duration::ZERO,
            ..limits()
        }
        .check()
        .expect_err("no time");
        assert!(e.to_string().contains("--header-timeout-secs"), "{e}");
        let e = Limits {
            tls_handshake_timeout: Duration::from_hours(2),
            ..limits()
        }
        .check()
        .expect_err("too long");
        assert!(
            e.to_string().contains("--tls-handshake-timeout-secs"),
            "{e}"
        );
    }

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_its_64_prefix() {
        let v4: IpAddr = "127.0.0.2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
    }

    #[test]
    fn a_client_past_its_limit_is_refused_and_others_are_not() {
        let table = Arc::new(ClientTable::new(2));
        let one: IpAddr = "127.0.0.2".parse().expect("ip");
        let other: IpAddr = "127.0.0.1".parse().expect("ip");
        let a = table.take(one).expect("first");
        let b = table.take(one).expect("second");
        assert!(table.take(one).is_none(), "a third from the same address");
        let c = table
            .take(other)
            .expect("another address has its own slots");
        assert_eq!(table.open(one), 2);
        drop(a);
        let d = table.take(one).expect("a slot given back is free again");
        drop((b, c, d));
        assert!(
            table
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "addresses with nothing open are forgotten"
        );
    }

    #[test]
    fn the_refusal_is_http_with_a_json_body_naming_the_limit() {
        let text = String::from_utf8(refusal_response(32)).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["limit"], "max-connections-per-client");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("at most 32")),
            "{v}"
        );
    }
}
