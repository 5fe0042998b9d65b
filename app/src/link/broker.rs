//! The embedded MQTT broker (rumqttd) for demos, tests and single-machine use.
//!
//! Real deployments point `--broker` at Mosquitto, EMQX, HiveMQ or a managed broker; this one
//! exists so that `cargo run` shows a live fleet with nothing else installed. rumqttd cannot
//! report the port it bound or shut down, so we choose a free port ourselves and the broker
//! lives until the process exits.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    /// Behind the ACL proxy: the loopback address of rumqttd itself (login required).
    inner: Option<SocketAddr>,
}

impl EmbeddedBroker {
    /// Starts a broker listening on `addr`; port 0 picks a free port. Returns once the broker
    /// accepts TCP connections (or fails after 10 s).
    pub fn start(addr: SocketAddr) -> Result<Self> {
        Self::start_inner(addr, None, LogBound::SERVER)
    }

    /// [`Self::start`] for a broker inside the console's demo, whose subscribers live in the
    /// same process and keep up: each filter's log is bounded to [`LogBound::DEMO`].
    pub fn start_for_demo(addr: SocketAddr) -> Result<Self> {
        Self::start_inner(addr, None, LogBound::DEMO)
    }

    /// [`Self::start`], taking only `login` when it is given.
    fn start_inner(
        addr: SocketAddr,
        login: Option<&super::acl_proxy::UpstreamLogin>,
        log: LogBound,
    ) -> Result<Self> {
        let addr = if addr.port() == 0 {
            SocketAddr::new(addr.ip(), pick_free_port(addr.ip())?)
        } else {
            addr
        };
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            bail!("{addr} is already in use: another broker may be running there");
        }
        let config = broker_config(addr, login, log);
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(err) = broker.start() {
                    // Nothing to return it to: the caller's readiness check below reports it.
                    eprintln!("embedded broker stopped: {err}");
                }
            })
            .context("starting the broker thread")?;
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("embedded broker did not start listening on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { addr, inner: None })
    }

    /// Starts the broker behind the ACL proxy ([`super::acl_proxy`]): rumqttd on a free loopback
    /// port, and the proxy on `addr` (port 0 picks a free port, reported by [`Self::addr`]),
    /// which lets through only what `rules` allow. The proxy runs on its own thread and runtime.
    /// rumqttd takes one login only, the proxy's (`convoy-proxy` and 32 random bytes drawn here),
    /// so a local process that finds its port cannot go around the ACL.
    pub fn start_with_acl(
        addr: SocketAddr,
        rules: super::acl_proxy::ProxyRules,
    ) -> Result<(Self, std::sync::Arc<super::acl_proxy::ProxyStats>)> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let login = super::acl_proxy::UpstreamLogin::random()?;
        let inner = Self::start_inner(loopback, Some(&login), LogBound::SERVER)?;
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("listening on {addr} for the broker's ACL proxy"))?;
        listener
            .set_nonblocking(true)
            .context("configuring the proxy's socket")?;
        let public = listener.local_addr().context("the proxy's address")?;
        let stats = std::sync::Arc::new(super::acl_proxy::ProxyStats::default());
        let rules = std::sync::Arc::new(rules);
        let upstream = inner.addr;
        let thread_stats = stats.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the proxy's runtime")?;
        std::thread::Builder::new()
            .name("mqtt-acl-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            super::acl_proxy::serve(listener, upstream, login, rules, thread_stats)
                                .await;
                        }
                        Err(err) => eprintln!("broker ACL proxy stopped: {err}"),
                    }
                });
            })
            .context("starting the proxy thread")?;
        Ok((
            Self {
                addr: public,
                inner: Some(upstream),
            },
            stats,
        ))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Behind the ACL proxy, rumqttd's own loopback address (it takes only the proxy's login).
    pub fn inner_addr(&self) -> Option<SocketAddr> {
        self.inner
    }

    /// The URL clients connect with, e.g. `mqtt://127.0.0.1:18830`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// A port that is free on `ip` now, chosen below the kernel's ephemeral range (32768 and up on
/// Linux). rumqttd must bind the port itself, a moment after we release it; a port from the
/// ephemeral range could be handed to someone else's `bind(0)` or outgoing connection in that
/// moment, one outside it is only taken by another process choosing the same way.
pub fn pick_free_port(ip: std::net::IpAddr) -> Result<u16> {
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..200 {
        // xorshift: a different candidate each try, and different across processes.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found on {ip} between 20000 and 32000")
}

/// rumqttd keeps every message published on a subscribed filter in that filter's in-memory
/// log, up to `segments` segments of `segment_bytes` (payload and topic bytes; the heap holds
/// about three times that), whether or not every subscriber has read it: the backlog a
/// subscriber may fall behind by before it skips ahead and loses messages. It was 10 segments
/// of 100 MiB, a gigabyte per filter, which the demo's fleet filled at about 20 MiB a minute
/// (issue 19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBound {
    pub segment_bytes: usize,
    pub segments: usize,
}

impl LogBound {
    /// The console's demo: 4 of 4 MiB, 16 MiB per filter, tens of thousands of messages for
    /// subscribers in the same process.
    pub const DEMO: Self = Self {
        segment_bytes: 4 * 1024 * 1024,
        segments: 4,
    };
    /// `convoy broker` and the tests' brokers: 4 of 64 MiB, 256 MiB per filter, so an engine
    /// busy with a flood of a device's malformed messages (70 KiB each) does not lose the
    /// fleet's good ones; bounded all the same.
    pub const SERVER: Self = Self {
        segment_bytes: 64 * 1024 * 1024,
        segments: 4,
    };
}

fn broker_config(
    addr: SocketAddr,
    login: Option<&super::acl_proxy::UpstreamLogin>,
    log: LogBound,
) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        // Matches the protocol's own limit with room for MQTT framing.
        max_payload_size: 128 * 1024,
        max_inflight_count: 500,
        auth: login.map(|l| HashMap::from([(l.username.clone(), l.password.clone())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "convoy-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 100_010,
        max_outgoing_packet_count: 1_000,
        max_segment_size: log.segment_bytes,
        max_segment_count: log.segments,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::default(),
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..rumqttd::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: each subscribed filter's log could hold a gigabyte, and the demo's grew about
    /// 20 MiB a minute into it. The demo's logs are bounded to a few MiB each, a standalone
    /// broker's to a few hundred.
    #[test]
    fn each_filter_log_of_the_embedded_broker_is_bounded_to_a_few_mib() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1883));
        for (log, most) in [
            (LogBound::DEMO, 16 * 1024 * 1024),
            (LogBound::SERVER, 256 * 1024 * 1024),
        ] {
            let config = broker_config(addr, None, log);
            let per_filter = config.router.max_segment_size * config.router.max_segment_count;
            assert!(per_filter <= most, "{per_filter} bytes per filter");
            assert!(
                config.router.max_segment_count >= 2,
                "a backlog survives a segment turning over"
            );
        }
    }
}
