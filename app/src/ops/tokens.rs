//! Who may call the server: operators, their roles, their API tokens (kept only as SHA-256
//! hashes), and a per-token rate limit. A use case (`ops/`), used by the server's
//! authentication (`serve::auth` is this module), `convoy serve token` and the request rules.
//!
//! A token is `cvy_` followed by 43 characters of unpadded URL-safe base64 (32 random bytes from
//! the operating system). It is printed once by `convoy serve token add`; the cache keeps its
//! SHA-256 in `api_tokens`, so a stolen cache file gives no usable token. A request's token is
//! hashed and looked up by that hash, so comparing it leaks nothing about other tokens.
//!
//! The role belongs to the operator (`operators.role`), not to a token: giving an operator a new
//! role with `token add --role` changes what all their tokens may do.
//!
//! Not here: token expiry (tokens live until revoked), scopes finer than the four roles, and
//! keys or client certificates instead of bearer tokens.

use anyhow::{Result, bail};
use base64::Engine as _;
use convoy_core::time::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::store::Store;
use crate::store::tokens::{NewTokenRow, TokenMaker};

/// What an operator may do. Each role may do everything the roles before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything; changes nothing.
    Viewer,
    /// Also records findings and scores, and controls rollouts.
    Dispatcher,
    /// Also approves rollouts.
    Approver,
    /// Also manages operators and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Dispatcher => "dispatcher",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "dispatcher" => Some(Self::Dispatcher),
            "approver" => Some(Self::Approver),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// The operator a request was authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub operator: String,
    pub role: Role,
    pub token_id: String,
}

impl Caller {
    /// The actor this caller's actions carry in the audit trail.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.operator)
    }
}

/// A token as `token list` shows it (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub operator: String,
    pub role: String,
    pub created: i64,
    pub revoked: Option<i64>,
    /// Who made it: `cli` (on the host), an admin's operator name (over the API), or `None`
    /// for tokens made before this was recorded.
    pub created_by: Option<String>,
}

/// A freshly made token: the only time the secret exists outside the caller's hands.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    pub token: String,
}

/// The hex SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks an operator name: 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`, so
/// it reads unambiguously in `operator:NAME` audit actors and in listings.
pub fn check_operator_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        bail!(
            "operator name {name:?} is not allowed: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        );
    }
    Ok(())
}

/// Who made a token: the host's shell (`convoy serve token add`, the root of trust) or an
/// admin over the API, who saw the new token's secret when it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creator {
    /// `convoy serve token add` on the server's host.
    Cli,
    /// `POST /tokens` with this admin's token.
    Api { operator: String, token_id: String },
}

/// A new operator name that differs only by case (or Unicode case folding) from an existing
/// operator's: refused, since both would be one person (answered 409 by the API).
#[derive(Debug, PartialEq, Eq)]
pub struct NameClash {
    pub wanted: String,
    pub existing: String,
}

impl std::fmt::Display for NameClash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "operator name {:?} differs only by case from the existing operator {:?}: operator names are unique without regard to case (use {:?} to give that operator a token)",
            self.wanted, self.existing, self.existing
        )
    }
}

impl std::error::Error for NameClash {}

/// The key under which an operator name counts as one person: trimmed and case-folded, so
/// `Alice`, `alice` and ` ALICE ` are one.
pub fn person_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Makes a token for `operator` (created with `role`, or given `role` if it exists) on the
/// server's host (`convoy serve token add`), stores its hash and audits it as `actor`, in one
/// transaction.
pub fn add_token(
    store: &Store,
    operator: &str,
    role: Role,
    actor: &str,
    now: Timestamp,
) -> Result<NewToken> {
    add_token_by(store, operator, role, &Creator::Cli, actor, now)
}

/// [`add_token`] made by `creator`, recorded with the token (`created_by`, `created_by_token`)
/// for the two-person rule. A name that differs only by case from an existing operator's is
/// refused with a [`NameClash`].
pub fn add_token_by(
    store: &Store,
    operator: &str,
    role: Role,
    creator: &Creator,
    actor: &str,
    now: Timestamp,
) -> Result<NewToken> {
    check_operator_name(operator)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("reading random bytes for a token: {e}"))?;
    let token = format!(
        "cvy_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = token_hash(&token);
    // The id is a prefix of the hash: short enough to type, and says nothing about the token
    // that the hash does not.
    let id = hash[..12].to_owned();
    let (created_by, created_by_token) = match creator {
        Creator::Cli => ("cli", None),
        Creator::Api { operator, token_id } => (operator.as_str(), Some(token_id.as_str())),
    };
    let row = NewTokenRow {
        id: &id,
        operator,
        sha256: &hash,
        role: role.as_str(),
        created_by,
        created_by_token,
    };
    if let Err(existing) = store.add_token(&row, &person_key, actor, now)? {
        return Err(NameClash {
            wanted: operator.to_owned(),
            existing,
        }
        .into());
    }
    Ok(NewToken { id, token })
}

/// The person behind a token, for the two-person rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPerson {
    /// The [`person_key`] of the operator who holds the token's secret: the token's operator
    /// if it was made on the host (or before tokens recorded their maker), else the person
    /// behind the admin token that made it over the API.
    pub person: String,
    /// The operators from the token's own to the person's, when they differ (`["bob",
    /// "alice"]`: bob's token was made by alice over the API).
    pub chain: Vec<String>,
    /// The audit sequence number of the token's creation (`None` for tokens made before
    /// tokens recorded it).
    pub created_seq: Option<i64>,
    /// A token in the chain was made before tokens recorded their maker (schema v7): who saw
    /// its secret is unknown, so its approval does not count (the two-person rule fails
    /// closed; docs/SERVE.md).
    pub unknown_maker: Option<String>,
}

impl TokenPerson {
    /// Who the token's secret was shown to, in words: `bob's token was made by alice over the
    /// API`, or empty when it is the operator's own.
    pub fn describe(&self) -> String {
        match self.chain.as_slice() {
            [] | [_] => String::new(),
            [first, rest @ ..] => {
                let mut text = format!("{first}'s token was made over the API by {}", rest[0]);
                for next in &rest[1..] {
                    let _ = write!(text, ", whose token was made over the API by {next}");
                }
                text
            }
        }
    }
}

/// The person behind token `token_id` (whose operator is `operator`): follows `created_by_token`
/// to the first token made on the host. A missing token row counts as its operator's own.
pub fn token_person(store: &Store, token_id: &str, operator: &str) -> Result<TokenPerson> {
    let mut chain = vec![operator.to_owned()];
    let mut id = token_id.to_owned();
    let mut created_seq = None;
    let mut unknown_maker = None;
    // Each step goes to an older token, so the walk ends; the bound guards a hand-edited cache.
    for step in 0..64 {
        let Some(TokenMaker {
            operator: holder,
            created_by,
            created_by_token: by_token,
            created_seq: seq,
        }) = store.token_maker(&id)?
        else {
            break;
        };
        if step == 0 {
            created_seq = seq;
        }
        if created_by.is_none() {
            unknown_maker = Some(id.clone());
        }
        if let (Some(maker), Some(next)) = (created_by, by_token) {
            chain.push(maker);
            id = next;
        } else {
            if let Some(last) = chain.last_mut() {
                last.clone_from(&holder);
            }
            break;
        }
    }
    let person = person_key(chain.last().map_or(operator, String::as_str));
    if chain.len() == 1 || chain.iter().all(|c| person_key(c) == person) {
        chain.clear();
    }
    Ok(TokenPerson {
        person,
        chain,
        created_seq,
        unknown_maker,
    })
}

/// Every token, oldest first (then by id).
pub fn list_tokens(store: &Store) -> Result<Vec<TokenInfo>> {
    Ok(store
        .tokens()?
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            operator: t.operator,
            role: t.role,
            created: t.created,
            revoked: t.revoked,
            created_by: t.created_by,
        })
        .collect())
}

/// Which tokens to revoke.
#[derive(Clone, Debug)]
pub enum Revoke<'a> {
    /// One token by its id.
    Id(&'a str),
    /// Every live token of an operator.
    Operator(&'a str),
}

/// Revokes tokens and audits it; returns the ids revoked. Revoking nothing is an error naming
/// what was asked for, so a typo does not look like success.
pub fn revoke_tokens(
    store: &Store,
    which: &Revoke<'_>,
    actor: &str,
    now: Timestamp,
) -> Result<Vec<String>> {
    let ids = match which {
        Revoke::Id(id) => store.revoke_tokens(id, false, actor, now)?,
        Revoke::Operator(name) => store.revoke_tokens(name, true, actor, now)?,
    };
    if ids.is_empty() {
        match which {
            Revoke::Id(id) => bail!("no live token with id {id}"),
            Revoke::Operator(name) => bail!("operator {name} has no live token"),
        }
    }
    Ok(ids)
}

/// The caller a bearer token belongs to, if it is a live token.
pub fn lookup(store: &Store, token: &str) -> Result<Option<Caller>> {
    let hash = token_hash(token);
    let row = store.live_token(&hash)?;
    Ok(row.and_then(|(token_id, operator, role)| {
        Role::parse(&role).map(|role| Caller {
            operator,
            role,
            token_id,
        })
    }))
}

/// A token bucket per token id: `burst` requests at once, refilled at `per_sec`.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_sec: f64, burst: u32) -> Self {
        Self {
            per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(secs)` says how long until one is free.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), f64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if self.per_sec > 0.0 {
            Err((1.0 - *tokens) / self.per_sec)
        } else {
            Err(f64::INFINITY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Dispatcher));
        assert!(Role::Dispatcher.allows(Role::Dispatcher));
        assert!(!Role::Viewer.allows(Role::Dispatcher));
        assert!(!Role::Approver.allows(Role::Admin));
        for r in [Role::Viewer, Role::Dispatcher, Role::Approver, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn bucket_allows_burst_then_refills() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).expect_err("empty bucket");
        assert!((wait - 0.5).abs() < 1e-9, "wait {wait}");
        // Another token has its own bucket.
        assert!(limiter.take("b", t0).is_ok());
        // Half a second refills one request at 2 per second.
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("c.db")).expect("open");
        let now = Timestamp::from_secs(1_000);
        let t = add_token(&store, "ana", Role::Viewer, "operator:root", now).expect("add");
        assert!(
            t.token.starts_with("cvy_") && t.token.len() == 47,
            "{}",
            t.token
        );
        let stored = store
            .live_token(&token_hash(&t.token))
            .expect("lookup")
            .map(|(id, _, _)| id)
            .expect("stored by its hash");
        assert_eq!(stored, t.id);
        // The token itself is not what is stored.
        assert_eq!(store.live_token(&t.token).expect("lookup"), None);
        let caller = lookup(&store, &t.token).expect("lookup").expect("live");
        assert_eq!(caller.operator, "ana");
        assert_eq!(caller.role, Role::Viewer);
        assert_eq!(lookup(&store, "cvy_wrong").expect("lookup"), None);
        // A second token with a new role changes the operator's role for both.
        let t2 = add_token(&store, "ana", Role::Admin, "operator:root", now).expect("add");
        assert_eq!(
            lookup(&store, &t.token).expect("lookup").map(|c| c.role),
            Some(Role::Admin)
        );
        let revoked =
            revoke_tokens(&store, &Revoke::Id(&t.id), "operator:root", now).expect("revoke");
        assert_eq!(revoked, vec![t.id.clone()]);
        assert_eq!(lookup(&store, &t.token).expect("lookup"), None);
        assert!(lookup(&store, &t2.token).expect("lookup").is_some());
        assert!(revoke_tokens(&store, &Revoke::Id(&t.id), "operator:root", now).is_err());
        let list = list_tokens(&store).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().filter(|t| t.revoked.is_some()).count(), 1);
        let actions: Vec<String> = store
            .audit_entries(None)
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            ["serve.token.add", "serve.token.add", "serve.token.revoke"]
        );
        assert!(check_operator_name("bad name").is_err());
        assert!(add_token(&store, "", Role::Viewer, "x", now).is_err());
    }
}
