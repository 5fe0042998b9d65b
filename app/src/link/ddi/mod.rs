//! A device-facing endpoint compatible with Eclipse hawkBit's Direct Device Integration (DDI)
//! API v1, so that devices that already run a DDI client (RAUC's rauc-hawkbit-updater,
//! SWUpdate's suricatta, the crates.io `hawkbit` client) take updates from Convoy without new
//! firmware.
//!
//! - [`wire`]: the DDI JSON shapes.
//! - [`hub`]: controllers, actions, feedback, and the events a consumer (the rollout engine, or
//!   `convoy ddi serve`) reads.
//! - [`release`]: the artifact server and the deployment for one signed release.
//! - this module: the HTTP routes, authentication (`TargetToken` / `GatewayToken`), body limits
//!   and error answers, and [`DdiServer`], which serves them with the same accept loop
//!   (`link::http::accept`: connections bounded in all and per client address, TLS handshake
//!   and request head timeouts, graceful shutdown) as `convoy serve`.
//!
//! Every request is authenticated before anything about it is answered: without a valid token a
//! request gets 401 whatever its path, tenant or method, so a stranger learns nothing about which
//! routes, tenants or controllers exist. The links in the answers (`deploymentBase`,
//! `cancelAction`, `configData`) start with the configured public URL ([`DdiConfig::public_url`],
//! by default the address the endpoint listens on), never with the request's `Host` header.
//!
//! Routes, under `/{tenant}/controller/v1/{controllerId}`: `GET` (poll), `GET
//! deploymentBase/{actionId}`, `POST deploymentBase/{actionId}/feedback`, `GET
//! cancelAction/{id}`, `POST cancelAction/{id}/feedback`, `PUT configData`, and Convoy's own
//! `POST telemetry` (health events for the gates, when the hub takes them). Artifacts are
//! downloaded from the URLs a deployment names (Convoy's artifact server serves them with byte
//! ranges, so an interrupted download resumes).
//!
//! Not here (see docs/DDI.md): the confirmation flow (`confirmationBase`), `installedBase`,
//! MD5 checksum downloads. Waves and gates are the rollout engine's (`engine/ddi.rs` consumes
//! the hub's events and assigns deployments as waves open).

pub mod hub;
pub mod release;
pub mod wire;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::link::http::accept::{
    self, Accept, AcceptCounters, DEFAULT_HEADER_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT, Limits,
};

pub use hub::{
    ActionState, ActionView, ControllerView, DdiArtifact, DdiDeployment, DdiError, DdiEvent,
    DdiHub, HubConfig, Outcome,
};

/// How the endpoint runs.
#[derive(Clone, Debug)]
pub struct DdiConfig {
    /// `127.0.0.1:0` picks a free port; [`DdiServer::addr`] tells which.
    pub listen: SocketAddr,
    /// The tenant in every path (hawkBit's default is `DEFAULT`); compared case-insensitively,
    /// as hawkBit does.
    pub tenant: String,
    /// PEM certificate chain and private key; both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bodies larger than this get 413.
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Connections at once from one client address (`None`: a quarter of `max_connections`).
    /// Devices behind one NAT share an address: raise it for such fleets.
    pub max_connections_per_client: Option<usize>,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// The endpoint's URL as devices reach it (`https://ddi.example.com`, maybe with a path
    /// prefix), which the links in answers start with. `None`: `http(s)://` and the address the
    /// endpoint listens on, which must then not be `0.0.0.0` or `::`.
    pub public_url: Option<String>,
}

impl DdiConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tenant: "DEFAULT".into(),
            tls: None,
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            max_connections_per_client: None,
            header_read_timeout: DEFAULT_HEADER_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            public_url: None,
        }
    }

    /// The connection limits this configuration asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_client: self
                .max_connections_per_client
                .unwrap_or_else(|| Limits::default_per_client(self.max_connections)),
            header_timeout: self.header_read_timeout,
            tls_handshake_timeout: self.tls_handshake_timeout,
        }
    }
}

/// Checks a public URL (`--public-url`) and returns it without a trailing `/`: `http` or
/// `https`, a host, no user name, query or fragment.
pub fn check_public_url(url: &str) -> Result<String> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("--public-url {url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--public-url {url:?} must start with http:// or https://");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("--public-url {url:?} has no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!("--public-url {url:?} must not hold a user name or password");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        bail!("--public-url {url:?} must not have a query or fragment");
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Counts of what the endpoint answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DdiStats {
    pub requests: u64,
    pub polls: u64,
    pub feedback: u64,
    pub unauthorized: u64,
    pub bad_request: u64,
    pub busy: u64,
    /// Telemetry uploads (`POST …/telemetry`), taken or not.
    pub telemetry: u64,
    /// Connections refused because their client address had its share open already.
    pub refused_connections: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    polls: AtomicU64,
    feedback: AtomicU64,
    unauthorized: AtomicU64,
    bad_request: AtomicU64,
    busy: AtomicU64,
    telemetry: AtomicU64,
    accept: Arc<AcceptCounters>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    hub: Arc<DdiHub>,
    tenant: String,
    /// What every link in an answer starts with, without a trailing `/`.
    public_url: String,
    max_body_bytes: usize,
    counters: Counters,
}

/// The DDI routes as a router, to serve alone ([`DdiServer`]) or beside other routes; links in
/// answers start with `public_url`.
pub fn router(
    hub: Arc<DdiHub>,
    tenant: &str,
    max_body_bytes: usize,
    public_url: &str,
) -> (Router, DdiStatsHandle) {
    let shared = Arc::new(Shared {
        hub,
        tenant: tenant.to_owned(),
        public_url: public_url.trim_end_matches('/').to_owned(),
        max_body_bytes,
        counters: Counters::default(),
    });
    let handle = DdiStatsHandle(Arc::clone(&shared));
    (
        Router::new().fallback(handle_request).with_state(shared),
        handle,
    )
}

/// Reads the counters of a router made by [`router`].
#[derive(Clone)]
pub struct DdiStatsHandle(Arc<Shared>);

impl DdiStatsHandle {
    pub fn stats(&self) -> DdiStats {
        let c = &self.0.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DdiStats {
            requests: get(&c.requests),
            polls: get(&c.polls),
            feedback: get(&c.feedback),
            unauthorized: get(&c.unauthorized),
            bad_request: get(&c.bad_request),
            busy: get(&c.busy),
            telemetry: get(&c.telemetry),
            refused_connections: c.accept.refused_per_client(),
        }
    }
}

/// A running endpoint. Dropping it stops accepting; [`Self::shutdown`] also waits.
pub struct DdiServer {
    addr: SocketAddr,
    tls: bool,
    public_url: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    stats: DdiStatsHandle,
}

impl DdiServer {
    /// Binds and serves on the current tokio runtime.
    pub async fn start(config: DdiConfig, hub: Arc<DdiHub>) -> Result<Self> {
        let limits = config.limits();
        limits.check()?;
        if config.tenant.is_empty() {
            bail!("the tenant must not be empty");
        }
        let public_url = config
            .public_url
            .as_deref()
            .map(check_public_url)
            .transpose()?;
        let acceptor = match &config.tls {
            Some((cert, key)) => Some(crate::link::http::tls::acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let tls = acceptor.is_some();
        let public_url = match public_url {
            Some(url) => url,
            None if addr.ip().is_unspecified() => bail!(
                "the DDI endpoint listens on {addr}, which devices cannot reach by that name: pass the URL devices reach it by (--public-url)"
            ),
            None => format!("{}://{addr}", if tls { "https" } else { "http" }),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (router, stats) = router(hub, &config.tenant, config.max_body_bytes, &public_url);
        let accept = Accept {
            tls: acceptor,
            limits,
            counters: Arc::clone(&stats.0.counters.accept),
            server: "DDI endpoint",
        };
        let task = tokio::spawn(accept::serve(
            listener,
            router,
            accept,
            stop_rx,
            std::convert::identity,
        ));
        Ok(Self {
            addr,
            tls,
            public_url,
            stop,
            task: Some(task),
            stats,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`: what a DDI client takes as its server URL.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The URL the links in answers start with (`--public-url`, or [`Self::base_url`]).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn stats(&self) -> DdiStats {
        self.stats.stats()
    }

    /// Stops accepting, lets responses in flight finish, and returns once every connection is
    /// closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DdiServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!(r#"{{"errorCode":"convoy.ddi.internal","message":"encoding the answer: {e}"}}"#)
            .into_bytes()
    });
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/hal+json;charset=UTF-8"),
    );
    response
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json(
        status,
        &wire::ErrorBody {
            error_code: code.to_owned(),
            message: message.into(),
        },
    )
}

fn ddi_error(shared: &Shared, e: &DdiError) -> Response {
    let message = e.to_string();
    match e {
        DdiError::Unauthorized => {
            bump(&shared.counters.unauthorized);
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "hawkbit.server.error.unauthorized",
                message,
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("TargetToken, GatewayToken"),
            );
            r
        }
        DdiError::NotFound(_) => error(
            StatusCode::NOT_FOUND,
            "hawkbit.server.error.repo.entitiyNotFound",
            message,
        ),
        DdiError::Gone(_) => error(
            StatusCode::GONE,
            "hawkbit.server.error.action.closed",
            message,
        ),
        DdiError::BadField { field, message } => {
            bump(&shared.counters.bad_request);
            error(
                StatusCode::BAD_REQUEST,
                "hawkbit.server.error.rest.body.notReadable",
                format!("{field}: {message}"),
            )
        }
        DdiError::Busy => {
            bump(&shared.counters.busy);
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "convoy.ddi.busy", message);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "hawkbit.server.error.rest.methodNotAllowed",
        format!("use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// What a path names, once the tenant and controller are taken off.
enum Route {
    Poll,
    Deployment(u64),
    DeploymentFeedback(u64),
    Cancel(u64),
    CancelFeedback(u64),
    ConfigData,
    Telemetry,
}

/// The poll reply's link to a deployment, in hawkBit's form `…/deploymentBase/{actionId}?c={hash}`.
/// hawkBit adds `c` (a hash of the action, so a changed action gets a new URL past any cache),
/// and clients match on it: RAUC's Python client (`rauc-hawkbit`) takes the action from
/// `/deploymentBase/(.+)\?c=(.+)$` and never fetches a link without it (issue 21). Here the
/// hash is FNV-1a over the controller and the action id, printed as hawkBit prints its signed
/// 32-bit hashes; the query is ignored when the link is followed (routes read the path only).
fn deployment_link(base: &str, controller: &str, action_id: u64) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in format!("{controller}/{action_id}").bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{base}/deploymentBase/{action_id}?c={}", hash as i32)
}

fn parse_id(text: &str) -> Option<u64> {
    text.parse().ok()
}

fn route(rest: &[String]) -> Option<Route> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    Some(match rest.as_slice() {
        [] => Route::Poll,
        ["deploymentBase", id] => Route::Deployment(parse_id(id)?),
        ["deploymentBase", id, "feedback"] => Route::DeploymentFeedback(parse_id(id)?),
        ["cancelAction", id] => Route::Cancel(parse_id(id)?),
        ["cancelAction", id, "feedback"] => Route::CancelFeedback(parse_id(id)?),
        ["configData"] => Route::ConfigData,
        ["telemetry"] => Route::Telemetry,
        _ => return None,
    })
}

async fn handle_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    bump(&shared.counters.requests);
    // Authentication comes first: a request without a valid token learns nothing, not even
    // whether its path is well formed, or the tenant, the route or the controller exists.
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let segments = crate::link::http::range::sanitize_path(request.uri().path());
    let (tenant, controller, rest) = match segments.as_deref() {
        Ok([tenant, c, v, controller, rest @ ..]) if c == "controller" && v == "v1" => {
            (tenant.clone(), controller.clone(), rest.to_vec())
        }
        other => {
            // No controller to check a target token against: only the gateway token, which
            // speaks for every controller, is told what is wrong with the path.
            if let Err(e) = shared.hub.authorize_gateway(authorization) {
                return ddi_error(&shared, &e);
            }
            return match other {
                Err(e) => error(StatusCode::BAD_REQUEST, "convoy.ddi.path", format!("{e}")),
                Ok(_) => error(
                    StatusCode::NOT_FOUND,
                    "convoy.ddi.notFound",
                    "not a DDI path: expected /{tenant}/controller/v1/{controllerId}/...",
                ),
            };
        }
    };
    if let Err(e) = shared.hub.authorize(&controller, authorization) {
        return ddi_error(&shared, &e);
    }
    if !tenant.eq_ignore_ascii_case(&shared.tenant) {
        return error(
            StatusCode::NOT_FOUND,
            "hawkbit.server.error.repo.entitiyNotFound",
            format!("no tenant {tenant:?}"),
        );
    }
    let Some(route) = route(&rest) else {
        return error(
            StatusCode::NOT_FOUND,
            "convoy.ddi.notFound",
            format!("no such DDI resource: {}", rest.join("/")),
        );
    };
    // Links start with the configured public URL and the configured tenant: nothing of the
    // request's Host header or spelling is echoed.
    let base = format!(
        "{}/{}/controller/v1/{}",
        shared.public_url,
        crate::link::http::range::encode_segment(&shared.tenant),
        crate::link::http::range::encode_segment(&controller)
    );
    let method = request.method().clone();
    let result = match route {
        Route::Poll if method == Method::GET => {
            bump(&shared.counters.polls);
            shared.hub.poll(&controller).map(|w| {
                let href = |path: String| Some(wire::Href { href: path });
                json(
                    StatusCode::OK,
                    &wire::PollReply {
                        config: wire::PollConfig {
                            polling: wire::Polling {
                                sleep: wire::format_sleep(shared.hub.config().sleep_secs),
                            },
                        },
                        links: wire::PollLinks {
                            deployment_base: w
                                .deployment
                                .and_then(|id| href(deployment_link(&base, &controller, id))),
                            cancel_action: w
                                .cancel
                                .and_then(|id| href(format!("{base}/cancelAction/{id}"))),
                            config_data: if w.config {
                                href(format!("{base}/configData"))
                            } else {
                                None
                            },
                        },
                    },
                )
            })
        }
        Route::Deployment(id) if method == Method::GET => shared
            .hub
            .deployment(&controller, id)
            .map(|(d, last)| json(StatusCode::OK, &hub::deployment_body(id, &d, last.as_ref()))),
        Route::Cancel(id) if method == Method::GET => {
            shared.hub.cancel_target(&controller, id).map(|stop| {
                json(
                    StatusCode::OK,
                    &wire::CancelReply {
                        id: id.to_string(),
                        cancel_action: wire::StopId {
                            stop_id: stop.to_string(),
                        },
                    },
                )
            })
        }
        Route::Poll | Route::Deployment(_) | Route::Cancel(_) => {
            return method_not_allowed("GET");
        }
        Route::DeploymentFeedback(id) if method == Method::POST => {
            bump(&shared.counters.feedback);
            match read_json::<wire::Feedback>(&shared, request).await {
                Ok(fb) => shared
                    .hub
                    .feedback(&controller, id, fb)
                    .map(|()| Response::new(Body::empty())),
                Err(r) => return r,
            }
        }
        Route::CancelFeedback(id) if method == Method::POST => {
            bump(&shared.counters.feedback);
            match read_json::<wire::Feedback>(&shared, request).await {
                Ok(fb) => shared
                    .hub
                    .cancel_feedback(&controller, id, fb)
                    .map(|()| Response::new(Body::empty())),
                Err(r) => return r,
            }
        }
        Route::DeploymentFeedback(_) | Route::CancelFeedback(_) => {
            return method_not_allowed("POST");
        }
        Route::ConfigData if method == Method::PUT => {
            match read_json::<wire::ConfigData>(&shared, request).await {
                Ok(cd) => shared
                    .hub
                    .config_data(&controller, cd)
                    .map(|()| Response::new(Body::empty())),
                Err(r) => return r,
            }
        }
        Route::ConfigData => return method_not_allowed("PUT"),
        Route::Telemetry if method == Method::POST => {
            bump(&shared.counters.telemetry);
            match read_strict_json::<wire::TelemetryUpload>(&shared, request).await {
                Ok(upload) => shared
                    .hub
                    .telemetry(&controller, upload)
                    .map(|n| json(StatusCode::OK, &serde_json::json!({ "accepted": n }))),
                Err(r) => return r,
            }
        }
        Route::Telemetry => return method_not_allowed("POST"),
    };
    result.unwrap_or_else(|e| ddi_error(&shared, &e))
}

/// Reads and parses a JSON body; a 413 past the limit, a 400 naming the field otherwise.
async fn read_json<T: DeserializeOwned>(shared: &Shared, request: Request) -> Result<T, Response> {
    let bytes = read_body(shared, request).await?;
    crate::link::http::json::parse_json(&bytes).map_err(|e| unreadable(shared, e))
}

/// As [`read_json`], and a key named twice in any object is refused (400 naming it), as the
/// MQTT link refuses it: for the telemetry the gates judge, where two readings of one body
/// must not be possible.
async fn read_strict_json<T: DeserializeOwned>(
    shared: &Shared,
    request: Request,
) -> Result<T, Response> {
    let bytes = read_body(shared, request).await?;
    if let Err(e) = convoy_core::strict_json::check(&bytes) {
        bump(&shared.counters.bad_request);
        return Err(error(
            StatusCode::BAD_REQUEST,
            "hawkbit.server.error.rest.body.notReadable",
            format!("bad JSON: {e}"),
        ));
    }
    crate::link::http::json::parse_json(&bytes).map_err(|e| unreadable(shared, e))
}

async fn read_body(shared: &Shared, request: Request) -> Result<hyper::body::Bytes, Response> {
    crate::link::http::json::read_limited(request, shared.max_body_bytes)
        .await
        .map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                // Refused before the body was read: the rest of it is still on the connection,
                // so it cannot carry another request. Saying so keeps a client from reusing it
                // (seen as a broken next request under load, 2026-12-04).
                let mut r = error(e.status, "convoy.ddi.tooLarge", e.message);
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                error(e.status, "convoy.ddi.body", e.message)
            }
        })
}

/// The 400 for a body that does not parse, naming the field.
fn unreadable(shared: &Shared, e: crate::link::http::json::ApiError) -> Response {
    bump(&shared.counters.bad_request);
    error(
        StatusCode::BAD_REQUEST,
        "hawkbit.server.error.rest.body.notReadable",
        e.message,
    )
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// Issue 21: RAUC's Python hawkBit client matches `/deploymentBase/(.+)\?c=(.+)$`.
    #[test]
    fn deployment_links_carry_hawkbits_cache_parameter_issue_21() {
        let base = "http://127.0.0.1:8080/DEFAULT/controller/v1/van-1";
        let link = deployment_link(base, "van-1", 7);
        let (path, c) = link.split_once("?c=").expect("a ?c= parameter");
        assert_eq!(path, format!("{base}/deploymentBase/7"));
        assert!(c.parse::<i32>().is_ok(), "{link}");
        assert_eq!(
            link,
            deployment_link(base, "van-1", 7),
            "stable for one action"
        );
        assert_ne!(link, deployment_link(base, "van-1", 8));
        // The link, followed, routes to the deployment: the query is not part of the path.
        let segments = crate::link::http::range::sanitize_path(
            "/DEFAULT/controller/v1/van-1/deploymentBase/7",
        )
        .expect("path");
        assert!(matches!(route(&segments[4..]), Some(Route::Deployment(7))));
    }
}
