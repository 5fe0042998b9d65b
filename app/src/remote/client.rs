//! The HTTP client of `convoy serve`'s API: one request at a time with the token, an answer
//! read into its `link::api_wire` shape with an error that names the endpoint and the field,
//! and every failure sorted into unreachable, refused or malformed ([`CallError`]), because
//! the console acts on each differently (queue, report, report).
//!
//! Deliberately not here: what to ask for and when (the mirror, the steer), and retries: a
//! caller that gets [`CallError::Unreachable`] decides whether to try again.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use std::time::Duration;

use crate::link::api_wire::{self as wire, PREFIX};

/// The longest wait for an ordinary answer, and for the whole fleet.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const FLEET_TIMEOUT: Duration = Duration::from_mins(5);

/// Percent-encodes one path segment (a rollout id).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Why a call to the server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer: refused, unresolvable, TLS failure, timeout. `maybe_sent`: the request may
    /// have reached the server (it timed out after sending), so its effect is unknown.
    Unreachable { why: String, maybe_sent: bool },
    /// The server answered with an error status; the message is its `error` (and `field`).
    Refused { status: u16, message: String },
    /// The server answered something this console cannot read; the text names the endpoint
    /// and the field.
    Malformed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { why, .. } => write!(f, "{why}"),
            Self::Refused { status, message } => write!(f, "{message} (HTTP {status})"),
            Self::Malformed(text) => write!(f, "{text}"),
        }
    }
}

/// Parses the answer of `endpoint`; an error names the endpoint and the field at fault
/// (its path, e.g. `events[2].time`).
pub fn parse_answer<T: DeserializeOwned>(endpoint: &str, bytes: &[u8]) -> Result<T, CallError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path.is_empty() || path == "." {
            "the answer".to_owned()
        } else {
            format!("field {path}")
        };
        CallError::Malformed(format!(
            "{endpoint}: the server's answer is not what this console reads, at {at}: {}",
            e.inner()
        ))
    })?;
    de.end().map_err(|e| {
        CallError::Malformed(format!("{endpoint}: the server's answer is not JSON: {e}"))
    })?;
    Ok(value)
}

/// An HTTP client of the API, with its own single-threaded runtime (each thread that calls the
/// server has one: a pooled connection belongs to the runtime that opened it).
pub(super) struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// The parts every client of one server shares: its address, the token, the trusted
/// certificate.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) server: String,
    pub(super) token: String,
    pub(super) ca_pem: Option<Vec<u8>>,
}

impl Endpoint {
    pub(super) fn client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The event stream sends a keep-alive every 15 s: longer silence is a lost link.
            .read_timeout(Duration::from_secs(45))
            .user_agent(concat!("convoy-console/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .context("reading the --ca-cert certificate (PEM)")?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build().context("building the HTTP client")
    }

    pub(super) fn api(&self) -> Result<Api> {
        Ok(Api {
            base: format!("{}{}", self.server, PREFIX),
            token: self.token.clone(),
            client: self.client()?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime of the server's client")?,
        })
    }
}

impl Api {
    pub(super) fn endpoint_name(method: &str, path: &str) -> String {
        format!("{method} {PREFIX}{path}")
    }

    /// `GET path` (under `/api/v1`): the answer's bytes.
    pub(super) fn get(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout);
        self.call(&Self::endpoint_name("GET", path), request)
    }

    /// `POST path` with a JSON body: the answer's bytes.
    pub(super) fn post<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Vec<u8>, CallError> {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(|e| {
                CallError::Malformed(format!("encoding the body of POST {PREFIX}{path}: {e}"))
            })?)
            .timeout(CALL_TIMEOUT);
        self.call(&Self::endpoint_name("POST", path), request)
    }

    fn call(&self, endpoint: &str, request: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(endpoint, &e))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unreachable(endpoint, &e))?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            // `convoy serve` answers none of these itself: they come from a proxy in front of
            // it whose server is down or not answering, which is the server being unreachable.
            if matches!(status.as_u16(), 502..=504) {
                return Err(CallError::Unreachable {
                    why: format!(
                        "{endpoint} answered {status} from a proxy: the server behind it is not answering"
                    ),
                    maybe_sent: true,
                });
            }
            let message = match serde_json::from_slice::<wire::ErrorBody>(&bytes) {
                Ok(wire::ErrorBody {
                    error,
                    field: Some(field),
                }) => format!("{error} (field {field})"),
                Ok(wire::ErrorBody { error, field: None }) => error,
                Err(_) => format!(
                    "{endpoint} answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            };
            Err(CallError::Refused {
                status: status.as_u16(),
                message,
            })
        })
    }
}

fn unreachable(endpoint: &str, e: &reqwest::Error) -> CallError {
    use std::error::Error as _;
    let mut why = format!("{endpoint}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(why, ": {s}");
        source = s.source();
    }
    CallError::Unreachable {
        why,
        maybe_sent: !e.is_connect(),
    }
}
