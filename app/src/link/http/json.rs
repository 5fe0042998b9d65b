//! JSON over HTTP, shared by Convoy's servers (`convoy serve`'s API and the DDI endpoint): the
//! error answer (`ApiError`: a status, a message and the field at fault, as `{"error", "field"}`
//! JSON), JSON answers, and request bodies and queries read with their limits and parsed with
//! errors that name the field.
//!
//! Deliberately not here: routing, authentication and anything of one server's API.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer: a status, a message, and the request field at fault if there is one.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(e: &anyhow::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }

    pub fn not_found(what: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => error_response(&ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )),
    }
}

pub fn error_response(e: &ApiError) -> Response {
    let body = ErrorBody {
        error: &e.message,
        field: e.field.as_deref(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = e.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if e.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"convoy\""),
        );
    }
    response
}

/// The field a `missing field `x`` message is about: serde_path_to_error's path ends at the
/// object that lacks it (for an unknown field the path already names the field).
fn quoted_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

fn join_path(path: &str, field: Option<&str>) -> String {
    match (path, field) {
        ("" | ".", Some(f)) => f.to_owned(),
        (p, Some(f)) => format!("{p}.{f}"),
        ("" | ".", None) => "(body)".to_owned(),
        (p, None) => p.to_owned(),
    }
}

/// Parses a URL query; an error names the parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        let field = join_path(&e.path().to_string(), quoted_field(&message));
        ApiError::field(
            field.clone(),
            format!("bad query parameter {field}: {message}"),
        )
    })
}

/// Parses a JSON body; an error names the field (its path, e.g. `affected.models[0]`) and,
/// for syntax errors, the line and column.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = e.inner().to_string();
        let field = join_path(&e.path().to_string(), quoted_field(&message));
        ApiError::field(field.clone(), format!("bad JSON at {field}: {message}"))
    })?;
    de.end()
        .map_err(|e| ApiError::field("(body)", format!("bad JSON: {e}")))?;
    Ok(value)
}

/// Reads a whole request body, refusing more than `max_bytes` with 413 (at once when the
/// `Content-Length` says so) and a broken body with 400. Shared with the DDI endpoint.
pub async fn read_limited(request: Request, max_bytes: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max_bytes} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), max_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
    }
}
