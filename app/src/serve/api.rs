//! The JSON API v1: authentication, rate limit, routing, role checks, body limits, JSON errors
//! that name the field, and the handlers (docs/openapi.yaml is the contract).
//!
//! Every request is authenticated before anything else, so an unknown path without a token is
//! 401 too, never 404: an unauthenticated caller learns nothing, not even which paths exist.
//! Then the token's rate limit (429), then the route (404, 405), then the role (403), then the
//! body (413, 400). Errors are `{"error": "...", "field": "..."}`, the field present when one
//! field of the request was wrong.
//!
//! Every call that changes something appends to the hash-chained audit trail, in the same
//! transaction as the change, with the actor `operator:NAME` of the token's operator.
//!
//! Not here: the SQL (see [`super::query`]), and any decision: scores come from
//! `convoy_core::risk`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use convoy_core::risk::{self, Finding, RiskError, ScoringPolicy};

use hyper::body::{Bytes, Frame};
use serde::Serialize;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};

use super::auth::{self, Caller, Role};
use super::requests::{NewRequest, Refusal, Verdict};
use super::{AppState, Counters, stopped};
use crate::engine::control::{ControlError, OperatorCommand, RollBackScope};
use crate::link::api_wire as wire;
pub use crate::link::http::json::{
    ApiError, error_response, json_response, parse_json, parse_query, read_limited,
};
use crate::store::query::{self, DEVICE_STATES, DeviceFilter, IDLE};
use anyhow::Context as _;

/// The prefix of every API path.
pub use crate::link::api_wire::PREFIX;
/// Devices per page when `limit` is not given, and the most a page may hold.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// History rows of one device when `history` is not given, and the most.
pub const DEFAULT_HISTORY: usize = 50;
pub const MAX_HISTORY: usize = 10_000;
/// Rollout log events per page when `limit` is not given, and the most a page may hold.
pub const DEFAULT_LOG_PAGE: usize = 5_000;
pub const MAX_LOG_PAGE: usize = 50_000;

/// The bearer token of a request, if it carries one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The one entry point: authenticate, limit, route.
pub(crate) async fn handle(State(app): State<Arc<AppState>>, request: Request) -> Response {
    Counters::bump(&app.counters.requests);
    let began = Instant::now();
    let route_label = super::metrics::route_label(request.method(), request.uri().path());
    let response = handle_inner(&app, request).await;
    super::metrics::record(
        &app,
        &route_label,
        response.status(),
        began.elapsed().as_secs_f64(),
    );
    response
}

async fn handle_inner(app: &Arc<AppState>, request: Request) -> Response {
    let result = async {
        let token = bearer(request.headers()).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: send Authorization: Bearer TOKEN",
            )
        })?;
        let caller = app
            .pool
            .run(move |store| auth::lookup(store, &token))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "the token is unknown or revoked")
            })?;
        if let Err(wait_secs) = app.limiter.take(&caller.token_id, Instant::now()) {
            let mut e = error_response(&ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {} requests per second exceeded for operator {}",
                    app.config.rate_per_sec, caller.operator
                ),
            ));
            let retry = wait_secs.ceil().clamp(1.0, 3600.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
                e.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(e);
        }
        if request.uri().path() == "/metrics" {
            if request.method() != Method::GET {
                return Err(method_not_allowed("GET"));
            }
            return super::metrics::render(app).await;
        }
        route(app, &caller, request).await
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => {
            let c = &app.counters;
            match e.status {
                StatusCode::UNAUTHORIZED => Counters::bump(&c.unauthorized),
                StatusCode::FORBIDDEN => Counters::bump(&c.forbidden),
                StatusCode::PAYLOAD_TOO_LARGE => Counters::bump(&c.too_large),
                StatusCode::BAD_REQUEST => Counters::bump(&c.bad_request),
                _ => {}
            }
            error_response(&e)
        }
    }
    .tap_rate_limited(app)
}

trait TapRateLimited {
    fn tap_rate_limited(self, app: &AppState) -> Self;
}

impl TapRateLimited for Response {
    fn tap_rate_limited(self, app: &AppState) -> Self {
        if self.status() == StatusCode::TOO_MANY_REQUESTS {
            Counters::bump(&app.counters.rate_limited);
        }
        self
    }
}

/// Decodes `%XX` escapes of one path segment; `None` if they do not make UTF-8.
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn require(caller: &Caller, needed: Role, what: &str) -> Result<(), ApiError> {
    if caller.role.allows(needed) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "operator {} ({}) may not {what}: it needs the {} role",
                caller.operator,
                caller.role.as_str(),
                needed.as_str()
            ),
        ))
    }
}

fn method_not_allowed(allowed: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; use {allowed}"),
    )
}

async fn route(
    app: &Arc<AppState>,
    caller: &Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(ApiError::not_found(format!(
            "no such path {path}: the API is under {PREFIX}/"
        )));
    };
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect::<Option<_>>()
        .ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad percent-encoding in the path")
        })?;
    let query = request.uri().query().unwrap_or("").to_owned();
    let method = request.method().clone();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = method == Method::GET;
    match segs.as_slice() {
        ["whoami"] if get => Ok(json_response(
            StatusCode::OK,
            &wire::WhoAmI {
                operator: caller.operator.clone(),
                role: caller.role.as_str().to_owned(),
                token_id: caller.token_id.clone(),
            },
        )),
        ["fleet"] if get => {
            parse_query::<NoParams>(&query)?;
            read(app, query::fleet_summary).await
        }
        ["devices"] if get => {
            let filter = device_filter(&query)?;
            read(app, move |s| query::devices(s, &filter)).await
        }
        ["devices", id] if get => {
            let q: HistoryParams = parse_query(&query)?;
            let limit = bounded(q.history, DEFAULT_HISTORY, MAX_HISTORY, "history")?;
            let id = (*id).to_owned();
            let found = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| query::device(s, &id, limit)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            found
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::not_found(format!("no device {id} in the cache")))
        }
        ["rollouts"] if get => {
            parse_query::<NoParams>(&query)?;
            read(app, |s| {
                Ok(query::rollouts(s)?
                    .into_iter()
                    .map(wire::RolloutRow::from)
                    .collect::<Vec<_>>())
            })
            .await
        }
        ["fleet", "export"] if get => {
            parse_query::<NoParams>(&query)?;
            fleet_export(app).await
        }
        ["rollouts", id, "timeline"] if get => {
            let q: AfterParams = parse_query(&query)?;
            let id = (*id).to_owned();
            let events = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| s.timeline(&id)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            if events.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no rollout {id}: it has no timeline in the cache"
                )));
            }
            // `after`: only the events after that seq (a mirror fetches what it lacks).
            let events = events
                .into_iter()
                .filter(|e| q.after.is_none_or(|after| e.seq > after))
                .map(wire::TimelineEvent::from)
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &wire::Timeline {
                    events,
                    rollout_id: id,
                },
            ))
        }
        ["rollouts", id, "log"] if get => {
            let q: LogParams = parse_query(&query)?;
            let limit = bounded(q.limit, DEFAULT_LOG_PAGE, MAX_LOG_PAGE, "limit")?;
            let id = (*id).to_owned();
            let after = q.after;
            let page = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| query::rollout_log_page(s, &id, after, limit)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            page.map(|p| json_response(StatusCode::OK, &wire::LogPage::from(p)))
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no rollout {id}: it has neither a timeline nor a log in the cache"
                    ))
                })
        }
        ["audit"] if get => {
            let q: AuditParams = parse_query(&query)?;
            let limit = bounded(q.limit, 100, 100_000, "limit")?;
            read(app, move |s| s.audit_entries(Some(limit))).await
        }
        ["audit", "verify"] if get => {
            parse_query::<NoParams>(&query)?;
            read(app, |s| {
                let report = s.verify_audit()?;
                Ok(serde_json::json!({
                    "ok": report.problem.is_none(),
                    "entries": report.entries,
                    "problem": report.problem.as_ref().map(ToString::to_string),
                    "problem_seq": report.problem.as_ref().map(crate::store::audit::ChainProblem::seq),
                    "head": s.audit_head()?,
                }))
            })
            .await
        }
        ["findings"] if get => {
            parse_query::<NoParams>(&query)?;
            read(app, query::findings).await
        }
        ["signals"] if method == Method::POST => {
            require(caller, Role::Dispatcher, "report support signals")?;
            let body = read_body(app, request).await?;
            post_signals(app, caller, &body).await
        }
        ["findings"] if method == Method::POST => {
            require(caller, Role::Dispatcher, "score findings")?;
            let body = read_body(app, request).await?;
            score_finding(app, caller, &body).await
        }
        ["findings", id] if get => {
            parse_query::<NoParams>(&query)?;
            let id = (*id).to_owned();
            let found = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| query::finding(s, &id)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            found
                .map(|f| json_response(StatusCode::OK, &f))
                .ok_or_else(|| ApiError::not_found(format!("no finding {id}")))
        }
        ["events"] if get => {
            parse_query::<NoParams>(&query)?;
            let last = match request.headers().get("last-event-id") {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .ok()
                        .and_then(super::stream::Cursor::parse)
                        .ok_or_else(|| {
                            ApiError::field(
                                "Last-Event-ID",
                                "not an id this stream sent (r<seq>.d<seq>)",
                            )
                        })?,
                ),
            };
            event_stream(app, caller, last).await
        }
        ["rollouts"] if method == Method::POST => {
            require(caller, Role::Dispatcher, "request rollouts")?;
            let body = read_body(app, request).await?;
            request_rollout(app, caller, &body).await
        }
        ["requests"] if get => {
            parse_query::<NoParams>(&query)?;
            read(app, |s| {
                Ok(super::requests::list(s)?
                    .iter()
                    .map(super::requests::Request::view)
                    .collect::<Vec<_>>())
            })
            .await
        }
        ["releases"] if get => {
            parse_query::<NoParams>(&query)?;
            super::releases::list(app).await
        }
        ["releases"] if method == Method::POST => {
            require(caller, Role::Dispatcher, "store releases")?;
            let body = read_body(app, request).await?;
            super::releases::store(app, caller, &body).await
        }
        ["metrics"] if get => {
            parse_query::<NoParams>(&query)?;
            super::admin::metrics(app).await
        }
        ["rollouts", id, "metrics"] if get => {
            parse_query::<NoParams>(&query)?;
            super::admin::rollout_metrics(app, id).await
        }
        ["tokens"] if get => {
            require(caller, Role::Admin, "list API tokens")?;
            parse_query::<NoParams>(&query)?;
            super::admin::list_tokens(app).await
        }
        ["tokens"] if method == Method::POST => {
            require(caller, Role::Admin, "make API tokens")?;
            let body = read_body(app, request).await?;
            super::admin::add_token(app, caller, &body).await
        }
        ["tokens", id, "revoke"] if method == Method::POST => {
            require(caller, Role::Admin, "revoke API tokens")?;
            super::admin::revoke_token(app, caller, id).await
        }
        ["rollouts", id, "health"] if get => {
            parse_query::<NoParams>(&query)?;
            let id = (*id).to_owned();
            let found = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| {
                        let log = s.rollout_log(&id)?;
                        Ok((!log.is_empty())
                            .then(|| convoy_core::rollout::series::health_series(&log)))
                    }
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            found
                .map(|series| {
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({"rollout_id": id, "health": series}),
                    )
                })
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no log of rollout {id} in the cache: its health cannot be computed"
                    ))
                })
        }
        ["rollouts", id, "request"] if get => {
            parse_query::<NoParams>(&query)?;
            let id = (*id).to_owned();
            let found = app
                .pool
                .run({
                    let id = id.clone();
                    move |s| super::requests::load(s, &id)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
            let hosted = app.hosts(&id);
            found
                .map(|r| request_response(StatusCode::OK, &r, hosted, None))
                .ok_or_else(|| ApiError::not_found(format!("no rollout request {id}")))
        }
        ["rollouts", id, "dispatch"] if method == Method::POST => {
            require(caller, Role::Dispatcher, "dispatch rollouts")?;
            let id = (*id).to_owned();
            let body = read_body(app, request).await?;
            parse_json::<NoParams>(&body)?;
            redispatch(app, &id).await
        }
        ["rollouts", id, "shape"] if method == Method::POST => {
            require(
                caller,
                Role::Dispatcher,
                "change the shape of rollout requests",
            )?;
            let id = (*id).to_owned();
            let body = read_body(app, request).await?;
            change_shape(app, caller, &id, &body).await
        }
        ["rollouts", id, verdict @ ("approve" | "reject")] if method == Method::POST => {
            require(caller, Role::Approver, "approve or reject rollouts")?;
            let (id, verdict) = ((*id).to_owned(), (*verdict).to_owned());
            let body = read_body(app, request).await?;
            decide_rollout(app, caller, &id, &verdict, &body).await
        }
        [
            "rollouts",
            id,
            command @ ("pause" | "resume" | "rollback" | "override" | "abort" | "exclude"
            | "continue"),
        ] if method == Method::POST => {
            require(caller, Role::Dispatcher, "control rollouts")?;
            let (id, command) = ((*id).to_owned(), (*command).to_owned());
            let body = read_body(app, request).await?;
            control_rollout(app, caller, &id, &command, &body).await
        }
        [
            "rollouts",
            _,
            "pause" | "resume" | "rollback" | "override" | "abort" | "exclude" | "continue"
            | "approve" | "reject" | "dispatch" | "shape",
        ]
        | ["tokens", _, "revoke"]
        | ["signals"] => Err(method_not_allowed("POST")),
        ["whoami" | "fleet" | "devices" | "audit" | "events" | "requests" | "metrics"]
        | ["devices" | "findings", _]
        | [
            "rollouts",
            _,
            "timeline" | "request" | "health" | "metrics" | "log",
        ]
        | ["audit", "verify"]
        | ["fleet", "export"] => Err(method_not_allowed("GET")),
        ["findings" | "rollouts" | "tokens" | "releases"] => Err(method_not_allowed("GET or POST")),
        _ => Err(ApiError::not_found(format!("no such path {path}"))),
    }
}

// The store's rows become the API's shapes here: the store sits below the link and does not
// know the wire (see `link::api_wire`).
impl From<query::RolloutRow> for wire::RolloutRow {
    fn from(r: query::RolloutRow) -> Self {
        Self {
            rollout_id: r.rollout_id,
            events: r.events,
            first_time: r.first_time,
            last_time: r.last_time,
            last_kind: r.last_kind,
            release_id: r.release_id,
        }
    }
}

impl From<crate::store::Event> for wire::TimelineEvent {
    fn from(e: crate::store::Event) -> Self {
        Self {
            cause: e.cause,
            kind: e.kind,
            payload: e.payload,
            rollout_id: e.rollout_id,
            seq: e.seq,
            time: e.time,
        }
    }
}

impl From<query::LogPage> for wire::LogPage {
    fn from(p: query::LogPage) -> Self {
        Self {
            rollout_id: p.rollout_id,
            first_seq: p.first_seq,
            events: p.events,
            more: p.more,
        }
    }
}

/// Runs a read on the cache pool and answers 200 with its JSON.
pub(super) async fn read<T, F>(app: &Arc<AppState>, job: F) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&crate::store::Store) -> anyhow::Result<T> + Send + 'static,
{
    let value = app
        .pool
        .run(job)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(json_response(StatusCode::OK, &value))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    history: Option<usize>,
}

/// `?after=SEQ` of the timeline.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AfterParams {
    after: Option<i64>,
}

/// `?after=SEQ&limit=N` of the rollout log.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    after: Option<i64>,
    limit: Option<usize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<usize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    model: Option<String>,
    region: Option<String>,
    version: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

fn bounded(
    value: Option<usize>,
    default: usize,
    max: usize,
    field: &str,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(v) => Err(ApiError::field(
            field,
            format!("{field} must be between 1 and {max}, not {v}"),
        )),
    }
}

fn device_filter(query: &str) -> Result<DeviceFilter, ApiError> {
    let q: DeviceParams = parse_query(query)?;
    if let Some(state) = &q.state
        && state != IDLE
        && !DEVICE_STATES.contains(&state.as_str())
    {
        return Err(ApiError::field(
            "state",
            format!(
                "unknown state {state:?}: use {IDLE} or one of {}",
                DEVICE_STATES.join(", ")
            ),
        ));
    }
    Ok(DeviceFilter {
        limit: bounded(q.limit, DEFAULT_PAGE, MAX_PAGE, "limit")?,
        model: q.model,
        region: q.region,
        version: q.version,
        state: q.state,
        after: q.after,
    })
}

/// Reads the whole body, refusing more than `max_body_bytes` with 413 (at once when the
/// `Content-Length` says so).
pub(super) async fn read_body(app: &AppState, request: Request) -> Result<Bytes, ApiError> {
    read_limited(request, app.config.max_body_bytes).await
}

fn risk_error(e: RiskError) -> ApiError {
    match e {
        RiskError::InvalidFinding { field, reason } => {
            ApiError::field(field, format!("invalid finding field {field}: {reason}"))
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `POST /findings`: scores the finding against the cache's fleet with the default policy,
/// stores both and audits it.
async fn score_finding(
    app: &Arc<AppState>,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let finding: Finding = parse_json(body)?;
    finding.validate().map_err(risk_error)?;
    let actor = caller.actor();
    let answer = app
        .pool
        .run(move |store| {
            let now = crate::now();
            let fleet = store.load_fleet()?;
            let card = match risk::score(&finding, &fleet, &ScoringPolicy::default(), now) {
                Ok(c) => c,
                Err(e) => return Ok(Err(risk_error(e))),
            };
            let finding_json = serde_json::to_value(&finding)?;
            let card_json = serde_json::to_value(&card)?;
            let audit_seq =
                query::record_finding(store, &finding_json, &finding.id, &card_json, &actor, now)?;
            Ok(Ok(serde_json::json!({
                "finding": finding.id,
                "audit_seq": audit_seq,
                "scorecard": card_json,
            })))
        })
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `POST /signals`: support tickets and customer reports per device (`ops::signals`), which
/// engines count in the support-contacts gate. 201 with what was added and what was already
/// there (same source and reference); 400 naming the signal that is wrong, or the devices the
/// cache does not know (then nothing is stored). The source is the caller (`api:NAME`).
async fn post_signals(
    app: &Arc<AppState>,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let now = crate::now();
    let actor = caller.actor();
    let source = format!("api:{}", actor.strip_prefix("operator:").unwrap_or(&actor));
    let signals = crate::ops::signals::from_json(body, &source, now)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let answer = app
        .pool
        .run(move |store| {
            let ids: Vec<&str> = signals.iter().map(|s| s.device_id.as_str()).collect();
            let unknown = store.unknown_devices(&ids)?;
            if !unknown.is_empty() {
                return Ok(Err(ApiError::field(
                    "device_id",
                    format!(
                        "{} device(s) are not in the cache: {}; nothing was stored",
                        unknown.len(),
                        unknown
                            .iter()
                            .take(10)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )));
            }
            Ok(Ok(store.add_signals(&signals, &actor, now)?))
        })
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `GET /fleet/export`: the whole fleet (depots and devices with their components and tags)
/// in the JSON of `convoy fleet export --format json`, which `convoy fleet import` and the
/// remote console's copy read back.
async fn fleet_export(app: &Arc<AppState>) -> Result<Response, ApiError> {
    let bytes = app
        .pool
        .run(|store| {
            let fleet = store.load_fleet()?;
            let mut out = Vec::new();
            crate::fleet_io::write_json(&mut out, &fleet)?;
            Ok(out)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `POST /rollouts/{id}/{command}`: an operator command to an engine run hosted by this
/// process, applied by the engine (which audits it under `operator:NAME` and writes the
/// timeline) before the answer: 200 with the phase after it, 400 naming a missing or empty
/// field, 404 for a rollout this server does not run, 409 when the rollout's phase refuses it
/// or the run has ended.
async fn control_rollout(
    app: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    command: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let b: wire::ControlBody = parse_json(body)?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::field(
            "reason",
            format!(
                "{command} needs a non-empty reason: every rollout command is recorded with why"
            ),
        ));
    }
    if b.scope.is_some() && command != "rollback" {
        return Err(ApiError::field(
            "scope",
            format!("scope applies only to rollback, not to {command}"),
        ));
    }
    if b.selector.is_some() && command != "exclude" {
        return Err(ApiError::field(
            "selector",
            format!("selector applies only to exclude, not to {command}"),
        ));
    }
    let reason = b.reason;
    let command = match command {
        "pause" => OperatorCommand::Pause { reason },
        "resume" => OperatorCommand::Resume { reason },
        "override" => OperatorCommand::Override { reason },
        "abort" => OperatorCommand::Abort { reason },
        "continue" => OperatorCommand::Continue { reason },
        "exclude" => match b.selector {
            Some(selector) if !selector.trim().is_empty() => {
                OperatorCommand::Exclude { selector, reason }
            }
            _ => {
                return Err(ApiError::field(
                    "selector",
                    "exclude needs a non-empty selector: which devices to take out (a fleet \
                     search such as model:T300 hw_rev:C, or device ids)",
                ));
            }
        },
        _ => OperatorCommand::RollBack {
            scope: match b.scope {
                None | Some(wire::RollBackScope::CurrentWave) => RollBackScope::CurrentWave,
                Some(wire::RollBackScope::All) => RollBackScope::All,
            },
            reason,
        },
    };
    let Some(handle) = app.control(id) else {
        return Err(ApiError::not_found(format!(
            "rollout {id} is not run by this server: only rollouts it hosts can be controlled"
        )));
    };
    let name = command.name();
    match handle.send(&caller.actor(), command).await {
        Ok(phase) => Ok(json_response(
            StatusCode::OK,
            &wire::ControlAnswer {
                command: name.to_owned(),
                phase,
                rollout_id: id.to_owned(),
            },
        )),
        Err(ControlError::MissingField { field, .. }) => Err(ApiError::field(
            field,
            format!("{name} needs a non-empty {field}"),
        )),
        Err(e @ ControlError::BadSelector(_)) => Err(ApiError::field("selector", e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Field { field, message } => ApiError::field(field, message),
        Refusal::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        Refusal::NotFound(m) => ApiError::not_found(m),
        Refusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
    }
}

/// A request's view, whether this server runs it, and what dispatching it did.
fn request_response(
    status: StatusCode,
    request: &super::requests::Request,
    hosted: bool,
    dispatch: Option<&str>,
) -> Response {
    let mut value = serde_json::to_value(request.view()).unwrap_or_default();
    value["hosted"] = serde_json::Value::Bool(hosted);
    if let Some(d) = dispatch {
        value["dispatch"] = serde_json::Value::String(d.to_owned());
    }
    json_response(status, &value)
}

/// The trust directory requests verify against.
pub(super) fn trust_path(app: &AppState) -> std::path::PathBuf {
    crate::ops::settings::trust_dir(app.config.trust.as_deref(), &app.config.cache)
}

/// `POST /rollouts`: a dispatcher requests a rollout of a release in the cache; the release
/// must verify against the server's trusted keys now, and the plan is frozen (given, or planned
/// here from the cache's fleet). 201 with the request, which then awaits approval.
async fn request_rollout(
    app: &Arc<AppState>,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let new: NewRequest = parse_json(body)?;
    let trust_dir = trust_path(app);
    let policy = app.config.dispatch.as_ref().and_then(|d| d.policy.clone());
    let who = super::requests::Who {
        operator: caller.operator.clone(),
        token_id: Some(caller.token_id.clone()),
    };
    let actor = caller.actor();
    let created = app
        .pool
        .run(move |store| {
            let trust = crate::keys::load_trust(&trust_dir).with_context(|| {
                format!(
                    "loading the server's trusted keys from {} (convoy serve --trust DIR)",
                    trust_dir.display()
                )
            })?;
            let planning = match &policy {
                Some(p) => crate::ops::plans::read_section(p, "planning")?,
                None => convoy_core::plan::PlanningPolicy::default(),
            };
            super::requests::create(store, &trust, &planning, &new, &who, &actor, crate::now())
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(refusal)?;
    Ok(request_response(StatusCode::CREATED, &created, false, None))
}

/// `POST /rollouts/{id}/shape`: changes a request's shape before any decision on it (issue
/// 20): `{"shape": "standard"}` makes a rollout deferred by its finding's tier dispatchable.
/// The change and who made it are recorded in the request and the audit log.
async fn change_shape(
    app: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let b: crate::link::api_wire::ShapeBody = parse_json(body)?;
    let _one = app.decide.lock().await;
    let who = super::requests::Who {
        operator: caller.operator.clone(),
        token_id: Some(caller.token_id.clone()),
    };
    let (actor, rid) = (caller.actor(), id.to_owned());
    let changed = app
        .pool
        .run(move |store| {
            super::requests::change_shape(store, &rid, &who, &b.shape, &actor, crate::now())
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(refusal)?;
    Ok(request_response(
        StatusCode::OK,
        &changed,
        app.hosts(id),
        None,
    ))
}

/// The body of `POST /rollouts/{id}/approve` and `/reject`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /rollouts/{id}/approve|reject`: an approver's decision. Nobody approves their own
/// request (403). Once the change path's rule holds, a server with dispatch settings starts
/// the rollout at once (an engine run it hosts, which the control endpoints then steer).
async fn decide_rollout(
    app: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    verdict: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let b: DecisionBody = parse_json(body)?;
    let verdict = if verdict == "approve" {
        if b.reason.is_some() {
            return Err(ApiError::field(
                "reason",
                "an approval takes an optional comment, not a reason",
            ));
        }
        Verdict::Approve {
            comment: b.comment.unwrap_or_default(),
        }
    } else {
        if b.comment.is_some() {
            return Err(ApiError::field(
                "comment",
                "a rejection takes a reason, not a comment",
            ));
        }
        Verdict::Reject {
            reason: b.reason.unwrap_or_default(),
        }
    };
    let _one = app.decide.lock().await;
    let who = super::requests::Who {
        operator: caller.operator.clone(),
        token_id: Some(caller.token_id.clone()),
    };
    let (actor, rid) = (caller.actor(), id.to_owned());
    let decided = app
        .pool
        .run(move |store| {
            super::requests::decide(store, &rid, &who, &verdict, &actor, crate::now())
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(refusal)?;
    if !decided.approved() {
        return Ok(request_response(StatusCode::OK, &decided, false, None));
    }
    let note = match dispatch(app, &decided).await {
        Ok(note) => note,
        Err(e) => format!("approved, but dispatching failed: {e:#}"),
    };
    Ok(request_response(
        StatusCode::OK,
        &decided,
        app.hosts(id),
        Some(&note),
    ))
}

/// `POST /rollouts/{id}/dispatch`: dispatches an approved request that is not running: its
/// dispatch failed, or it was approved while the server had no dispatch settings. A request
/// whose rollout has already started (a timeline in the cache) is continued with `--resume`,
/// never started again.
async fn redispatch(app: &Arc<AppState>, id: &str) -> Result<Response, ApiError> {
    let _one = app.decide.lock().await;
    let rid = id.to_owned();
    let (request, started) = app
        .pool
        .run(move |store| {
            let request = super::requests::load(store, &rid)?;
            let started = store.rollout_started(&rid)?;
            Ok((request, started))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(request) = request else {
        return Err(ApiError::not_found(format!("no rollout request {id}")));
    };
    if !request.approved() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "rollout {id} is not approved ({}): it needs {}",
                request.view().status,
                request.needs()
            ),
        ));
    }
    if let Some(why) = request.deferral() {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    if app.hosts(id) || started {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "rollout {id} has already started: it is continued with convoy rollout run --resume (or a --host-rollout file holding --resume), never started twice"
            ),
        ));
    }
    if app.config.dispatch.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this server has no dispatch settings (convoy serve --dispatch-args FILE)",
        ));
    }
    let note = dispatch(app, &request)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("dispatching failed: {e:#}")))?;
    Ok(request_response(
        StatusCode::OK,
        &request,
        app.hosts(id),
        Some(&note),
    ))
}

/// Starts an approved request as an engine run this server hosts, if it has dispatch
/// settings; says what happened.
async fn dispatch(
    app: &Arc<AppState>,
    request: &super::requests::Request,
) -> anyhow::Result<String> {
    if let Some(why) = request.deferral() {
        return Ok(format!("approved; not dispatched: {why}"));
    }
    let Some(base) = app.config.dispatch.clone() else {
        return Ok(
            "approved; not dispatched: this server has no dispatch settings (convoy serve --dispatch-args FILE)"
                .to_owned(),
        );
    };
    let cache = app.config.cache.clone();
    let trust = trust_path(app);
    let request = request.clone();
    let run = app
        .pool
        .run(move |store| super::requests::host(store, &request, &cache, &trust, &base, false))
        .await?;
    let id = run.rollout_id().to_owned();
    app.runs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(run);
    Ok(format!("dispatched: this server runs rollout {id}"))
}

/// A response body fed from a channel of chunks; ends when the sender is dropped. It holds the
/// stream's slot, given back when hyper drops the body (the stream ended or the client left).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    _slot: super::stream::StreamSlot,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// `GET /events`: server-sent events from the shared poller, with keep-alive comments, until
/// the client goes away or the server stops.
async fn event_stream(
    app: &Arc<AppState>,
    caller: &Caller,
    last_event_id: Option<super::stream::Cursor>,
) -> Result<Response, ApiError> {
    // Bounded per token and in all, so that streams never hold every connection.
    let slot = app.streams.open(&caller.token_id).map_err(|refusal| {
        Counters::bump(&app.counters.streams_refused);
        let status = match refusal {
            super::stream::StreamRefusal::PerToken(_) => StatusCode::TOO_MANY_REQUESTS,
            super::stream::StreamRefusal::Total(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, refusal.to_string())
    })?;
    Counters::bump(&app.counters.streams);
    // Subscribed before the cache is read, so that nothing written in between is missed: what
    // the replay holds is skipped from the live feed, the rest comes live.
    let mut events = app.events.subscribe();
    let replayed = match last_event_id {
        Some(from) => Some(
            app.pool
                .run(move |store| {
                    let until = super::stream::cursor_now(store)?;
                    let (frames, more) = super::stream::replay(store, from, until)?;
                    Ok((until, frames, more))
                })
                .await
                .map_err(|e| ApiError::internal(&e))?,
        ),
        None => None,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut stop = app.stop.clone();
    let keepalive = app.config.keepalive_interval;
    tokio::spawn(async move {
        // The first bytes tell the client it is subscribed: events written from now on reach it.
        if tx
            .send(Bytes::from_static(b": connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let floor = replayed.as_ref().map(|(until, ..)| *until);
        if let Some((_, frames, more)) = replayed {
            for f in frames {
                if tx
                    .send(Bytes::copy_from_slice(f.text.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if more {
                let note = format!(
                    "event: lagged\ndata: {{\"replay_limit\":{}}}\n\n",
                    super::stream::MAX_REPLAY
                );
                if tx.send(Bytes::from(note)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let chunk = tokio::select! {
                () = stopped(&mut stop) => break,
                event = events.recv() => match event {
                    Ok(frame) => match floor {
                        // Replayed already, or seen before the reconnect.
                        Some(floor) if frame.row.seen_by(floor) => continue,
                        Some(floor) => Bytes::copy_from_slice(frame.text_above(floor).as_bytes()),
                        None => Bytes::copy_from_slice(frame.text.as_bytes()),
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(
                        "event: lagged\ndata: {{\"missed\":{n}}}\n\n"
                    )),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep(keepalive) => Bytes::from_static(b": keep-alive\n\n"),
                // The client is gone (its response body dropped): stop at once.
                () = tx.closed() => break,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Body::new(ChannelBody { rx, _slot: slot }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    fn field_of(json: &str) -> Option<String> {
        parse_json::<Outer>(json.as_bytes())
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(r#"{"items": []}"#).as_deref(), Some("name"));
        assert_eq!(
            field_of(r#"{"name": "a", "items": [{"n": 1}, {"n": "x"}]}"#).as_deref(),
            Some("items[1].n")
        );
        assert_eq!(
            field_of(r#"{"name": "a", "items": [{"n": 1, "m": 2}]}"#).as_deref(),
            Some("items[0].m")
        );
        assert_eq!(
            field_of(r#"{"name": "a", "items": []} x"#).as_deref(),
            Some("(body)")
        );
        assert!(field_of(r#"{"name": "a", "items": [{"n": 3}]}"#).is_none());
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let e = device_filter("limit=abc").expect_err("bad limit");
        assert_eq!(e.field.as_deref(), Some("limit"));
        let e = device_filter("colour=red").expect_err("unknown parameter");
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = device_filter("state=sleepy").expect_err("unknown state");
        assert_eq!(e.field.as_deref(), Some("state"));
        let e = device_filter("limit=0").expect_err("zero limit");
        assert_eq!(e.field.as_deref(), Some("limit"));
        let f = device_filter("model=T300&after=d-9&limit=5&version=2.0.1").expect("parses");
        assert_eq!(f.model.as_deref(), Some("T300"));
        assert_eq!(f.after.as_deref(), Some("d-9"));
        assert_eq!(f.limit, 5);
    }

    #[test]
    fn bearer_and_segments() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        assert_eq!(decode_segment("dev%2D1").as_deref(), Some("dev-1"));
        assert_eq!(decode_segment("bad%zz"), None);
    }
}
