//! The API's token management (admin) and metrics (viewer) endpoints:
//! - `GET /tokens`: every token's id, operator, role, creation and revocation, never a token;
//! - `POST /tokens` `{"operator": NAME, "role": ROLE}`: a new token, answered once (201),
//!   recorded as made by the calling admin (for the two-person rule, it is the admin's); a name
//!   that differs only by case from an existing operator's is a 409 naming it;
//! - `POST /tokens/{id}/revoke`: revokes one token;
//! - `GET /metrics`: the metrics of every rollout in the cache and their means;
//! - `GET /rollouts/{id}/metrics`: one rollout's metrics and its adoption by cohort.
//!
//! Tokens are made and revoked by `serve::auth`, the functions `convoy serve token` uses,
//! audited with the admin's name in the same transaction; metrics come from
//! `store::metrics` (each rollout's log replayed), the figures the console's reports show.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

use super::AppState;
use super::api::{ApiError, json_response, parse_json, read};
use super::auth::{self, Caller, Creator, Revoke, Role};

/// The body of `POST /tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    operator: String,
    role: String,
}

/// `GET /tokens`.
pub(super) async fn list_tokens(app: &Arc<AppState>) -> Result<Response, ApiError> {
    read(app, auth::list_tokens).await
}

/// `POST /tokens`: 201 with the token, the only time it is shown.
pub(super) async fn add_token(
    app: &Arc<AppState>,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let new: NewTokenBody = parse_json(body)?;
    let role = Role::parse(&new.role).ok_or_else(|| {
        ApiError::field(
            "role",
            format!(
                "unknown role {:?}: one of viewer, dispatcher, approver, admin",
                new.role
            ),
        )
    })?;
    auth::check_operator_name(&new.operator)
        .map_err(|e| ApiError::field("operator", format!("{e:#}")))?;
    let actor = caller.actor();
    let operator = new.operator.clone();
    // The admin saw this token's secret: for the two-person rule it is theirs (docs/SERVE.md).
    let creator = Creator::Api {
        operator: caller.operator.clone(),
        token_id: caller.token_id.clone(),
    };
    let made = app
        .pool
        .run(move |store| {
            auth::add_token_by(store, &operator, role, &creator, &actor, crate::now())
        })
        .await
        .map_err(|e| match e.downcast_ref::<auth::NameClash>() {
            Some(clash) => ApiError::new(StatusCode::CONFLICT, clash.to_string()),
            None => ApiError::internal(&e),
        })?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": made.id,
            "operator": new.operator,
            "role": role.as_str(),
            "token": made.token,
        }),
    ))
}

/// `POST /tokens/{id}/revoke`: 404 for no live token of that id.
pub(super) async fn revoke_token(
    app: &Arc<AppState>,
    caller: &Caller,
    id: &str,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let wanted = id.to_owned();
    let revoked = app
        .pool
        .run(move |store| {
            // Checked first so that "no such token" is a 404, not an internal error.
            let live = auth::list_tokens(store)?
                .iter()
                .any(|t| t.id == wanted && t.revoked.is_none());
            if !live {
                return Ok(None);
            }
            auth::revoke_tokens(store, &Revoke::Id(&wanted), &actor, crate::now()).map(Some)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let ids = revoked.ok_or_else(|| ApiError::not_found(format!("no live token with id {id}")))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "revoked": ids }),
    ))
}

/// `GET /metrics`.
pub(super) async fn metrics(app: &Arc<AppState>) -> Result<Response, ApiError> {
    read(app, crate::store::Store::cache_metrics).await
}

/// `GET /rollouts/{id}/metrics`: 404 if the rollout has no log.
pub(super) async fn rollout_metrics(app: &Arc<AppState>, id: &str) -> Result<Response, ApiError> {
    let wanted = id.to_owned();
    let found = app
        .pool
        .run(move |store| {
            let fleet = store.load_fleet()?;
            store.rollout_metrics(&wanted, &fleet)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let (metrics, adoption) = found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no log of rollout {id} in the cache: its metrics cannot be computed"
        ))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "rollout_id": id, "metrics": metrics, "adoption": adoption }),
    ))
}
