//! API tokens and operators in the cache: the `api_tokens` and `operators` tables.
//!
//! Only a token's SHA-256 is kept. Who may call the server, with which role, and what counts
//! as one person for the two-person rule are `ops::tokens`'s rules; this module stores and
//! reads the rows, and writes each change with its audit entry in one transaction.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::Store;
use super::audit::{AuditEntry, append_in};

/// A token to store, its secret already hashed.
#[derive(Clone, Debug)]
pub struct NewTokenRow<'a> {
    pub id: &'a str,
    pub operator: &'a str,
    pub sha256: &'a str,
    pub role: &'a str,
    /// `cli` for a token made on the host, else the admin's operator name.
    pub created_by: &'a str,
    /// The admin token that made it over the API.
    pub created_by_token: Option<&'a str>,
}

/// A token's row as the two-person rule walks it: its operator, who made it (name and token)
/// and its creation's audit sequence number (`None` in rows from before schema v7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMaker {
    pub operator: String,
    pub created_by: Option<String>,
    pub created_by_token: Option<String>,
    pub created_seq: Option<i64>,
}

/// A token as `convoy serve token list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub operator: String,
    pub role: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds, when revoked.
    pub revoked: Option<i64>,
    pub created_by: Option<String>,
}

impl Store {
    /// Stores a token and its operator (creating the operator, or giving them `role`), with
    /// the `serve.token.add` audit entry, in one transaction. Refused with the existing name
    /// (`Ok(Err(name))`, nothing written) when an operator whose `fold`ed name equals
    /// `operator`'s already exists under another spelling. Returns the operator's previous
    /// role, if they had one.
    pub fn add_token(
        &self,
        row: &NewTokenRow<'_>,
        fold: &dyn Fn(&str) -> String,
        actor: &str,
        now: Timestamp,
    ) -> Result<Result<Option<String>, String>> {
        let tx = super::write_tx(&self.conn)?;
        let key = fold(row.operator);
        {
            let mut stmt = tx.prepare_cached("SELECT name FROM operators ORDER BY name")?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for existing in names {
                let existing = existing?;
                if existing != row.operator && fold(&existing) == key {
                    return Ok(Err(existing));
                }
            }
        }
        let previous: Option<String> = tx
            .query_row(
                "SELECT role FROM operators WHERE name = ?1",
                [row.operator],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO operators(name, role, created) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role",
            params![row.operator, row.role, now.secs()],
        )
        .with_context(|| format!("recording operator {}", row.operator))?;
        let entry = append_in(
            &tx,
            &AuditEntry {
                time: now,
                actor: actor.to_owned(),
                action: "serve.token.add".into(),
                payload: serde_json::json!({
                    "token_id": row.id,
                    "operator": row.operator,
                    "role": row.role,
                    "previous_role": previous,
                    "created_by": row.created_by,
                    "created_by_token": row.created_by_token,
                }),
            },
        )?;
        tx.execute(
            "INSERT INTO api_tokens(id, operator, sha256, created, created_by, created_by_token, created_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.id,
                row.operator,
                row.sha256,
                now.secs(),
                row.created_by,
                row.created_by_token,
                entry.seq
            ],
        )
        .with_context(|| format!("storing the token of operator {}", row.operator))?;
        tx.commit().context("committing the new token")?;
        Ok(Ok(previous))
    }

    /// Who made token `id`, if the cache has it.
    pub fn token_maker(&self, id: &str) -> Result<Option<TokenMaker>> {
        self.conn
            .prepare_cached(
                "SELECT operator, created_by, created_by_token, created_seq FROM api_tokens WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(TokenMaker {
                    operator: r.get(0)?,
                    created_by: r.get(1)?,
                    created_by_token: r.get(2)?,
                    created_seq: r.get(3)?,
                })
            })
            .optional()
            .with_context(|| format!("reading API token {id}"))
    }

    /// Every token, oldest first (then by id).
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT t.id, t.operator, o.role, t.created, t.revoked, t.created_by
             FROM api_tokens t JOIN operators o ON o.name = t.operator
             ORDER BY t.created, t.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                operator: r.get(1)?,
                role: r.get(2)?,
                created: r.get(3)?,
                revoked: r.get(4)?,
                created_by: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("listing the API tokens")
    }

    /// Revokes the live tokens with id `id` (`by_operator` false) or of operator `id`
    /// (`by_operator` true), with the `serve.token.revoke` audit entry, in one transaction;
    /// returns the ids revoked (none: nothing written).
    pub fn revoke_tokens(
        &self,
        key: &str,
        by_operator: bool,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let tx = super::write_tx(&self.conn)?;
        let ids: Vec<String> = {
            let sql = if by_operator {
                "SELECT id FROM api_tokens WHERE operator = ?1 AND revoked IS NULL ORDER BY id"
            } else {
                "SELECT id FROM api_tokens WHERE id = ?1 AND revoked IS NULL ORDER BY id"
            };
            let mut stmt = tx.prepare(sql)?;
            let rows = stmt.query_map([key], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if ids.is_empty() {
            return Ok(ids);
        }
        for id in &ids {
            tx.execute(
                "UPDATE api_tokens SET revoked = ?2 WHERE id = ?1",
                params![id, now.secs()],
            )?;
        }
        append_in(
            &tx,
            &AuditEntry {
                time: now,
                actor: actor.to_owned(),
                action: "serve.token.revoke".into(),
                payload: serde_json::json!({ "token_ids": ids }),
            },
        )?;
        tx.commit().context("committing the revocation")?;
        Ok(ids)
    }

    /// The live token whose hash is `sha256`: (token id, operator, role).
    pub fn live_token(&self, sha256: &str) -> Result<Option<(String, String, String)>> {
        self.conn
            .prepare_cached(
                "SELECT t.id, t.operator, o.role FROM api_tokens t
                 JOIN operators o ON o.name = t.operator
                 WHERE t.sha256 = ?1 AND t.revoked IS NULL",
            )?
            .query_row([sha256], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .context("looking up an API token")
    }

    /// Every operator's name, sorted.
    pub fn operator_names(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM operators ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        names
            .collect::<rusqlite::Result<_>>()
            .context("listing the operators")
    }
}
