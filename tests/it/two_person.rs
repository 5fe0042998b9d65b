//! Issue 16, item 4: the two-person rule holds against one person. Each test performs an
//! attack one person could make with the roles they hold against a real `convoy serve` on
//! 127.0.0.1 (tokens made on the host with `convoy serve token add`, the real binary, and over
//! the API), and shows every approval that would let them approve alone refused, while the
//! legitimate paths still approve.

use convoy::serve::auth::token_hash;
use convoy::serve::{ServeConfig, Server};
use convoy_e2e::{api, convoy, convoy_ok};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Runtime;

/// A cache with a generated fleet and a signed, stored release; a server on it; tokens by name.
struct Bench {
    ws: convoy_e2e::SignedWorkspace,
    release_id: String,
    rt: Runtime,
    server: Option<Server>,
    api: String,
    http: reqwest::Client,
    tokens: HashMap<String, String>,
    /// Approval attempts made in an attack, and how many were refused.
    attempts: usize,
    refused: usize,
}

impl Bench {
    /// The workspace, and tokens made on the host (`convoy serve token add`) for each of
    /// `host_tokens` (name, role).
    fn new(host_tokens: &[(&str, &str)]) -> Self {
        let ws = convoy_e2e::SignedWorkspace::new(&convoy_e2e::WorkspaceSpec {
            devices: 200,
            seed: 16,
            artifact_bytes: 4_000,
            version: "2.5.0",
            counter: 50,
            hardware: "T300",
            requires: &[],
        });
        ws.store_release();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(ws.path("release.json")).expect("manifest"))
                .expect("manifest JSON");
        let release_id = manifest["signed"]["release"]["id"]
            .as_str()
            .expect("release id")
            .to_owned();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut config = ServeConfig::new(
            PathBuf::from(ws.path("cache.db")),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.trust = Some(PathBuf::from(ws.path("trust")));
        config.rate_per_sec = 10_000.0;
        config.rate_burst = 10_000;
        let server = rt.block_on(Server::start(config)).expect("server");
        let api = format!("{}/api/v1", server.base_url());
        let mut bench = Self {
            ws,
            release_id,
            rt,
            server: Some(server),
            api,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            tokens: HashMap::new(),
            attempts: 0,
            refused: 0,
        };
        for (name, role) in host_tokens {
            bench.host_token(name, role);
        }
        bench
    }

    /// `convoy serve token add` on the host, as the real binary does it.
    fn host_token(&mut self, name: &str, role: &str) {
        let token = convoy_ok(&[
            "serve",
            "token",
            "add",
            "--cache",
            &self.ws.path("cache.db"),
            "--operator",
            name,
            "--role",
            role,
        ]);
        self.tokens.insert(name.to_owned(), token.trim().to_owned());
    }

    fn post(&self, as_: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let token = self.tokens[as_].clone();
        let url = format!("{}/{path}", self.api);
        self.rt
            .block_on(api::post(&self.http, &url, &token, body.to_string()))
    }

    /// `POST /tokens` by admin `admin`: a token for `name`, kept under `name`.
    fn api_token(&mut self, admin: &str, name: &str, role: &str) {
        let (status, body) = self.post(admin, "tokens", &json!({"operator": name, "role": role}));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = body["token"].as_str().expect("token").to_owned();
        self.tokens.insert(name.to_owned(), token);
    }

    /// `as_` requests rollout `id` on `path` (`standard`, or `emergency` with `authoriser`).
    fn request(&self, as_: &str, id: &str, authoriser: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({"release_id": self.release_id, "rollout_id": id});
        if let Some(a) = authoriser {
            body["path"] = "emergency".into();
            body["authoriser"] = a.into();
            body["evidence"] = "CVE-2026-1616 exploited in the wild".into();
            // Required on the emergency path (issue 20).
            body["checklist"] = json!({"owner": as_, "regression_test": "CI 1",
                                       "rollback_readiness": "A/B revert", "support_brief": "KB-1"});
        }
        self.post(as_, "rollouts", &body)
    }

    fn approve(&self, as_: &str, id: &str) -> (StatusCode, Value) {
        self.post(as_, &format!("rollouts/{id}/approve"), &json!({}))
    }

    /// An approval that the rule must refuse: 403 with an error containing each of `words`.
    fn attack(&mut self, as_: &str, id: &str, words: &[&str]) {
        self.attempts += 1;
        let (status, body) = self.approve(as_, id);
        let error = body["error"].as_str().unwrap_or("");
        if status == StatusCode::FORBIDDEN && words.iter().all(|w| error.contains(w)) {
            self.refused += 1;
        } else {
            panic!("{as_} approving {id}: expected 403 naming {words:?}, got {status}: {body}");
        }
    }

    /// The request's status as the server reports it.
    fn status(&self, id: &str) -> String {
        let token = self.tokens.values().next().expect("a token").clone();
        let url = format!("{}/rollouts/{id}/request", self.api);
        let (_, body) = self.rt.block_on(api::get(&self.http, &url, Some(&token)));
        body["status"].as_str().unwrap_or("").to_owned()
    }

    fn report(&self, test: &str) {
        eprintln!(
            "{test}: {} approval attempts by one person, {} refused",
            self.attempts, self.refused
        );
        assert_eq!(self.attempts, self.refused);
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

#[test]
fn an_admin_alone_cannot_approve_with_tokens_minted_over_the_api() {
    let _turn = convoy_e2e::shared();
    let mut b = Bench::new(&[("ada", "admin"), ("sam", "approver")]);
    // The attack of issue 16: ada requests, mints two approvers for made-up names, approves.
    let (status, body) = b.request("ada", "r-minted", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.api_token("ada", "bob", "approver");
    b.api_token("ada", "carol", "approver");
    b.attack(
        "bob",
        "r-minted",
        &["bob", "ada", "over the API", "own request"],
    );
    b.attack("carol", "r-minted", &["carol", "ada"]);
    assert_eq!(b.status("r-minted"), "awaiting_approval");

    // Minted before the request, and the request made as one of them: both are ada's.
    b.api_token("ada", "xavier", "dispatcher");
    b.api_token("ada", "yuki", "approver");
    b.api_token("ada", "zoe", "approver");
    let (status, body) = b.request("xavier", "r-proxies", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.attack("yuki", "r-proxies", &["yuki", "xavier", "ada"]);
    b.attack("zoe", "r-proxies", &["zoe", "ada"]);
    b.attack("ada", "r-proxies", &["ada", "xavier"]);
    assert_eq!(b.status("r-proxies"), "awaiting_approval");

    // A token ada made over the API for sam, a real person with a host-made token: its
    // secret was shown to ada, so it approves as ada, while sam's own token is sam's.
    b.tokens.insert("sam-own".into(), b.tokens["sam"].clone());
    b.api_token("ada", "sam", "approver");
    let (status, body) = b.request("ada", "r-sam", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.attack("sam", "r-sam", &["sam", "ada"]);
    let (status, body) = b.approve("sam-own", "r-sam");
    assert_eq!(status, StatusCode::OK, "sam's own token counts: {body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");

    // `token list` says who made each token.
    let list = convoy_ok(&[
        "serve",
        "token",
        "list",
        "--cache",
        &b.ws.path("cache.db"),
        "--json",
    ]);
    let list: Value = serde_json::from_str(&list).expect("token list JSON");
    let made_by = |op: &str| -> Vec<String> {
        let mut by: Vec<String> = list
            .as_array()
            .expect("list")
            .iter()
            .filter(|t| t["operator"] == op)
            .map(|t| t["created_by"].as_str().unwrap_or("").to_owned())
            .collect();
        by.sort();
        by
    };
    assert_eq!(made_by("bob"), ["ada"]);
    assert_eq!(made_by("sam"), ["ada", "cli"]);
    b.report("an admin alone");
}

#[test]
fn names_that_differ_only_by_case_are_one_person() {
    let _turn = convoy_e2e::shared();
    let mut b = Bench::new(&[
        ("ada", "admin"),
        ("dana", "dispatcher"),
        ("alice", "approver"),
        ("sam", "approver"),
    ]);
    // A new name that differs only by case is refused, over the API (409) and on the host.
    b.attempts += 1;
    let (status, body) = b.post(
        "ada",
        "tokens",
        &json!({"operator": "Alice", "role": "approver"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("\"alice\""),
        "{body}"
    );
    b.refused += 1;
    b.attempts += 1;
    let out = convoy(&[
        "serve",
        "token",
        "add",
        "--cache",
        &b.ws.path("cache.db"),
        "--operator",
        "ALICE",
        "--role",
        "approver",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"alice\"") && err.contains("case"),
        "{err}"
    );
    b.refused += 1;

    // A cache from before this rule may hold both: they count as one person. Made here by
    // hand, as such a cache would have it.
    let legacy = "cvy_legacy-Alice-token-made-before-the-rule-000000";
    {
        let conn = rusqlite::Connection::open(b.ws.path("cache.db")).expect("cache");
        conn.execute(
            "INSERT INTO operators(name, role, created) VALUES ('Alice', 'approver', 0)",
            [],
        )
        .expect("legacy operator");
        conn.execute(
            "INSERT INTO api_tokens(id, operator, sha256, created) VALUES ('legacyalice', 'Alice', ?1, 0)",
            [token_hash(legacy)],
        )
        .expect("legacy token");
    }
    b.tokens.insert("Alice".into(), legacy.to_owned());
    let (status, body) = b.request("dana", "r-case", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b.approve("alice", "r-case");
    assert_eq!(status, StatusCode::OK, "{body}");
    b.attack(
        "Alice",
        "r-case",
        &["Alice", "alice", "without regard to case"],
    );
    assert_eq!(b.status("r-case"), "awaiting_approval");
    // The requester under another case.
    let (status, body) = b.request("alice", "r-case-own", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.attack("Alice", "r-case-own", &["Alice", "alice", "own request"]);
    // A token from before the rule whose maker is unknown (an admin may have minted it over
    // the API, the attack) does not count, even for a name nobody else holds: the
    // rule fails closed (review of issue 16, F4).
    let ghost = "cvy_legacy-ghost-token-made-before-the-rule-0000000";
    {
        let conn = rusqlite::Connection::open(b.ws.path("cache.db")).expect("cache");
        conn.execute(
            "INSERT INTO operators(name, role, created) VALUES ('ghost', 'approver', 0)",
            [],
        )
        .expect("legacy operator");
        conn.execute(
            "INSERT INTO api_tokens(id, operator, sha256, created) VALUES ('legacyghost', 'ghost', ?1, 0)",
            [token_hash(ghost)],
        )
        .expect("legacy token");
    }
    b.tokens.insert("ghost".into(), ghost.to_owned());
    b.attack(
        "ghost",
        "r-case",
        &[
            "ghost",
            "predates the two-person rule",
            "convoy serve token add",
        ],
    );
    assert_eq!(b.status("r-case"), "awaiting_approval");
    // And a real second person still completes the first.
    let (status, body) = b.approve("sam", "r-case");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    b.report("names by case");
}

#[test]
fn a_token_made_after_the_request_or_the_requesters_own_does_not_approve() {
    let _turn = convoy_e2e::shared();
    let mut b = Bench::new(&[
        ("dana", "dispatcher"),
        ("alex", "approver"),
        ("sam", "approver"),
    ]);
    let (status, body) = b.request("dana", "r-late", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Made on the host after the request, even within the same second.
    b.host_token("zed", "approver");
    b.attack("zed", "r-late", &["zed", "after", "r-late"]);
    // A new token for an operator who existed before the request is just as late.
    b.tokens.insert("alex-old".into(), b.tokens["alex"].clone());
    b.host_token("alex", "approver");
    b.attack("alex", "r-late", &["alex", "after"]);
    let (status, body) = b.approve("alex-old", "r-late");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    // The requester approving their own request.
    let (status, body) = b.request("sam", "r-own", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.attack("sam", "r-own", &["sam", "own request"]);
    assert_eq!(b.status("r-own"), "awaiting_approval");
    b.report("late tokens and own requests");
}

#[test]
fn the_emergency_path_is_not_one_persons_either() {
    let _turn = convoy_e2e::shared();
    let mut b = Bench::new(&[
        ("ada", "admin"),
        ("erin", "approver"),
        ("dana", "dispatcher"),
    ]);
    // The authoriser is ada under another case, or ada's own API-made identity.
    b.api_token("ada", "bob", "approver");
    b.attempts += 1;
    let (status, body) = b.request("ada", "em-self", Some("ADA"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("own"),
        "{body}"
    );
    b.refused += 1;
    b.attempts += 1;
    let (status, body) = b.request("bob", "em-self-2", Some("ada"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("ada"),
        "{body}"
    );
    b.refused += 1;
    // ada requests and names bob (ada's own minting) as the authoriser: bob cannot approve.
    let (status, body) = b.request("ada", "em-minted", Some("bob"));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.attack("bob", "em-minted", &["bob", "ada", "own request"]);
    assert_eq!(b.status("em-minted"), "awaiting_approval");
    b.report("the emergency path by one person");

    // The legitimate emergency path: another person, with a host-made token, authorises.
    let (status, body) = b.request("dana", "em-real", Some("Erin"));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["authoriser"], "erin",
        "spelt as the cache does: {body}"
    );
    let (status, body) = b.approve("erin", "em-real");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
}

#[test]
fn two_real_people_with_host_made_tokens_still_approve() {
    let _turn = convoy_e2e::shared();
    let b = Bench::new(&[
        ("dana", "dispatcher"),
        ("alex", "approver"),
        ("sam", "approver"),
        ("ada", "admin"),
    ]);
    let (status, body) = b.request("dana", "r-ok", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b.approve("alex", "r-ok");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    assert!(
        body["needs"].as_str().unwrap_or("").contains("1 so far"),
        "{body}"
    );
    let (status, body) = b.approve("sam", "r-ok");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    // An admin's approval counts too when the admin did not request it.
    let (status, body) = b.request("dana", "r-ok-2", None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for who in ["ada", "alex"] {
        let (status, body) = b.approve(who, "r-ok-2");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(b.status("r-ok-2"), "approved");
}
