//! Releases over the API:
//! - `POST /releases` (dispatcher): the body is a signed release manifest, as
//!   `convoy release create` writes it; the server verifies it against its trusted keys
//!   (`--trust`) as a device would and stores it in the cache, audited with the operator's name
//!   in the same transaction (what `convoy release store` does on the server's machine). A
//!   manifest that does not verify is refused with 422 naming the attack it would be
//!   (tampered, untrusted key, expired, oversize, ...), and nothing is stored. The same manifest
//!   again is a 200 with `already_stored`; another manifest under a stored release's id is a
//!   409 (requests pin the manifest they were approved for).
//! - `GET /releases` (viewer): every stored release with its signature checked against the
//!   server's keys now: `valid`, or why not.
//!
//! Artifacts are not uploaded here: devices fetch them from the artifact server or the DDI
//! endpoint, which checks them against the manifest's hashes.

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;

use super::AppState;
use super::api::{ApiError, json_response, read, trust_path};
use super::auth::Caller;
use crate::store::releases::{record_release, stored_manifests};

/// What storing a manifest found.
enum Stored {
    /// Stored now, with the audit entry's seq.
    New(i64),
    /// The same manifest was stored already: nothing to do.
    Same,
    /// Another manifest is stored under the release's id.
    Other,
}

/// A stored release as `GET /releases` lists it.
#[derive(Debug, Serialize)]
struct ReleaseRow {
    release_id: String,
    /// Unix seconds it was stored.
    stored: i64,
    version: Option<String>,
    counter: Option<u64>,
    hardware: Vec<String>,
    /// Unix seconds.
    expires: Option<i64>,
    /// `valid`, or the reason it would be refused now.
    signature: String,
    /// The attack a refusal names (`tampered`, `untrusted_key`, `expired`, ...), if refused.
    attack: Option<String>,
}

/// The trusted keys of the server, or a 500 naming the directory.
fn load_trust(app: &AppState) -> anyhow::Result<convoy_core::manifest::TrustedKeys> {
    let dir = trust_path(app);
    crate::keys::load_trust(&dir).with_context(|| {
        format!(
            "loading the server's trusted keys from {} (convoy serve --trust DIR)",
            dir.display()
        )
    })
}

/// `GET /releases`.
pub(super) async fn list(app: &Arc<AppState>) -> Result<Response, ApiError> {
    let trust = load_trust(app).map_err(|e| ApiError::internal(&e))?;
    read(app, move |store| {
        let now = crate::now();
        Ok(stored_manifests(store)?
            .into_iter()
            .map(|m| {
                let checked = convoy_core::manifest::verify(&m.bytes, &trust, now);
                // The spec as stored, for the figures of a manifest that no longer verifies.
                let parsed: Option<convoy_core::manifest::SignedManifest> =
                    convoy_core::strict_json::from_slice(&m.bytes).ok();
                let spec = parsed.as_ref().map(|p| &p.signed.release);
                ReleaseRow {
                    release_id: m.release_id,
                    stored: m.created,
                    version: spec.map(|s| s.version.to_string()),
                    counter: spec.map(|s| s.counter),
                    hardware: spec.map(|s| s.hardware.clone()).unwrap_or_default(),
                    expires: spec.map(|s| s.expires.secs()),
                    signature: checked
                        .as_ref()
                        .map_or_else(ToString::to_string, |_| "valid".to_owned()),
                    attack: checked.err().map(|r| r.attack().as_str().to_owned()),
                }
            })
            .collect::<Vec<_>>())
    })
    .await
}

/// `POST /releases`: 201 with the release's id, version and counter and the audit entry.
pub(super) async fn store(
    app: &Arc<AppState>,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let trust = load_trust(app).map_err(|e| ApiError::internal(&e))?;
    let now = crate::now();
    let verified = convoy_core::manifest::verify(body, &trust, now).map_err(|r| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the manifest does not verify against the server's trusted keys: {r}"),
        )
    })?;
    let actor = caller.actor();
    let manifest = verified.signed_manifest().clone();
    let id = verified.release_id().to_owned();
    // A release id names one signed manifest: storing another under it would pull it from under
    // the requests that pinned the first (they would no longer dispatch).
    let stored = app
        .pool
        .run(move |store| {
            let existing = stored_manifests(store)?
                .into_iter()
                .find(|m| m.release_id == id)
                .map(|m| m.bytes);
            match existing {
                Some(bytes) if bytes == manifest.to_json_bytes() => Ok(Stored::Same),
                Some(_) => Ok(Stored::Other),
                None => record_release(store, &manifest, &actor, now).map(Stored::New),
            }
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let spec = verified.spec();
    let seq = match stored {
        Stored::New(seq) => seq,
        Stored::Same => {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "release_id": verified.release_id(),
                    "version": spec.version.to_string(),
                    "counter": spec.counter,
                    "hardware": spec.hardware,
                    "already_stored": true,
                }),
            ));
        }
        Stored::Other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "release {} is already stored with another manifest: a release id names one signed manifest (give the new one another id)",
                    verified.release_id()
                ),
            ));
        }
    };
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "release_id": verified.release_id(),
            "version": spec.version.to_string(),
            "counter": spec.counter,
            "hardware": spec.hardware,
            "audit_seq": seq,
        }),
    ))
}
