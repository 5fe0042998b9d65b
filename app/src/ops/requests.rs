//! Rollout requests and their approvals (issue 9), one set of rules for the server's API and
//! the console's Approvals view (`serve::requests` is this module): a dispatcher asks
//! for a rollout of a signed release with a plan frozen at request time, approvers approve or
//! reject it, and once the change path's rule holds (`convoy_core::rollout::approvals_satisfy`,
//! the same rule the rollout state machine applies) the server may dispatch it.
//!
//! Kept in the cache's `rollout_plans` (one row per request: the request and its frozen waves)
//! and `approvals` (one row per decision) tables, each change with its audit entry in the same
//! transaction. Nobody approves their own request, on any path; an emergency request names an
//! authoriser other than the requester, with evidence. A request pins the SHA-256 of the
//! manifest it was made for: if the cache's manifest of that release changes afterwards, the
//! request can no longer be approved or dispatched.
//!
//! Prerequisite chains (issue 20): a request carries the plan's prerequisite waves after its
//! other waves, each with the releases its devices install first ([`RequestRecord::chains`]),
//! and pins the SHA-256 of the cache's manifest of each of those releases as it pins the
//! target's; dispatch writes them beside the plan and runs the engine with them
//! (`--prerequisite-manifest`), so devices behind get their chain before the target.

use anyhow::{Context, Result};
use convoy_core::gates::GatePolicy;
use convoy_core::manifest::{self, VerifiedManifest};
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::risk::{Checklist, Shape, Tier, shape_waves};
use convoy_core::rollout::{
    ChangePath, Phase, Rollout, STANDARD_APPROVALS, WaveChain, WaveSpec, approvals_satisfy,
};
use convoy_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::hosting::HostedRun;
use super::plans::PrerequisiteWave;
use super::tokens::{TokenPerson, person_key, token_person};

use crate::ops::runs::RunArgs;
use crate::store::Store;
use crate::store::audit::AuditEntry;
use crate::store::requests::PlanRow;

/// The longest rollout id a request may name.
const MAX_ID_LEN: usize = 128;

/// Why a request or a decision was refused, for the API to answer with the right status.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, naming the body field.
    Field { field: String, message: String },
    /// 403.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
}

fn field(name: &str, message: impl Into<String>) -> Refusal {
    Refusal::Field {
        field: name.to_owned(),
        message: message.into(),
    }
}

/// The body of `POST /rollouts`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub release_id: String,
    /// Default: `RELEASE-YYYYMMDDTHHMMSSZ`.
    #[serde(default)]
    pub rollout_id: Option<String>,
    /// `standard` (default) or `emergency`.
    #[serde(default)]
    pub path: Option<String>,
    /// Emergency path: who authorises the break-glass (not the requester).
    #[serde(default)]
    pub authoriser: Option<String>,
    /// Emergency path: why it cannot wait (incident, CVE, measurements).
    #[serde(default)]
    pub evidence: Option<String>,
    /// The waves, if the requester planned them (e.g. in the console); default: planned here
    /// from the cache's fleet with the default policy.
    #[serde(default)]
    pub waves: Option<Vec<WaveSpec>>,
    /// With `waves`: the waves of devices that install prerequisite releases first, as `convoy
    /// plan --json` writes them (`prerequisite_waves`), run after `waves`. Each release they
    /// name must be stored in the cache (`convoy release store`) and verify.
    #[serde(default)]
    pub prerequisite_waves: Option<Vec<PrerequisiteWave>>,
    /// When planning here: releases stored in the cache that devices behind the target's
    /// requirements may install first (the planner's catalog); those devices are planned in
    /// `after-prerequisites-N` waves with their chains. Default: none (devices behind are left
    /// out, as `convoy plan` without a catalog leaves them).
    #[serde(default)]
    pub prerequisites: Option<Vec<String>>,
    /// Seed of the canary and wave order when planning here.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The finding this rollout remediates (issue 20): its tier proposes the rollout's shape.
    #[serde(default)]
    pub finding_id: Option<String>,
    /// The shape chosen (`emergency`, `accelerated`, `standard`, `deferred`); default: what
    /// the finding's tier proposes (or the path's: `emergency` on the emergency path).
    #[serde(default)]
    pub shape: Option<String>,
    /// The pre-deployment checklist; every item is required on the emergency path.
    #[serde(default)]
    pub checklist: Option<Checklist>,
}

/// A request as stored in `rollout_plans.body`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    pub kind: String,
    pub rollout_id: String,
    pub release_id: String,
    pub manifest_sha256: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub path: ChangePath,
    /// Every wave the rollout runs, the prerequisite waves last.
    pub waves: Vec<WaveSpec>,
    /// The prerequisite chain of each prerequisite wave (by its index in `waves`; issue 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<WaveChain>,
    /// The SHA-256 of the cache's manifest of each release the chains name, pinned as
    /// `manifest_sha256` pins the target's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prerequisite_manifests: BTreeMap<String, String>,
    #[serde(default)]
    pub gates: Option<GatePolicy>,
    /// The API token the request was made with: the requester is the person behind it
    /// (`None`: made in a console by name, or before requests recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token: Option<String>,
    /// The audit sequence number of the request: a token made after it cannot approve it
    /// (`None` before requests recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_seq: Option<i64>,
    /// What the request says about the finding it remediates, its shape and its checklist
    /// (issue 20; all absent on older requests).
    #[serde(default, flatten)]
    pub remediation: RemediationRecord,
}

/// The finding a request remediates, the shape its tier proposed and the one chosen (with who
/// changed it), and the pre-deployment checklist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<String>,
    /// The finding's tier when the request was made (its newest score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_tier: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_shape: Option<Shape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
    /// Who chose a shape other than the proposed one, and when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_changed_at: Option<i64>,
    /// The waves' soaks as planned, before the shape changed them (to apply another shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_soaks: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checklist: Option<Checklist>,
    /// `boot-critical: bootloader` when the release installs a bootloader or modem and the
    /// request carries the stricter defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_critical: Option<String>,
}

const KIND: &str = "rollout_request";

/// One recorded decision.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub operator: String,
    pub time: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: String,
}

/// What a request looks like to the API and the console.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    pub rollout_id: String,
    pub release_id: String,
    pub requested_by: String,
    pub requested_at: String,
    /// `standard` or `emergency`.
    pub path: &'static str,
    pub authoriser: Option<String>,
    pub evidence: Option<String>,
    pub devices: usize,
    pub waves: Vec<WaveSummary>,
    /// The releases the prerequisite waves install before the target, sorted (issue 20).
    pub prerequisite_releases: Vec<String>,
    pub decisions: Vec<Decision>,
    /// `awaiting_approval`, `approved`, `rejected`.
    pub status: &'static str,
    /// What is still needed, in words.
    pub needs: String,
    /// The finding the rollout remediates, its tier, the shape the tier proposed, the shape
    /// chosen and who changed it (issue 20).
    pub finding_id: Option<String>,
    pub finding_tier: Option<u8>,
    pub proposed_shape: Option<&'static str>,
    pub shape: Option<&'static str>,
    pub shape_changed_by: Option<String>,
    /// The pre-deployment checklist, and its items still empty.
    pub checklist: Option<Checklist>,
    pub checklist_missing: Vec<&'static str>,
    /// `boot-critical: bootloader`, when the stricter defaults apply.
    pub boot_critical: Option<String>,
    /// Why the approved rollout is not dispatched now (a deferred shape), if so.
    pub deferred: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WaveSummary {
    pub name: String,
    pub devices: usize,
    pub soak_secs: i64,
    /// The releases this wave's devices install, in order, before the target (a prerequisite
    /// wave; absent on the others).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<String>,
}

/// A stored request with its decisions.
#[derive(Clone, Debug)]
pub struct Request {
    pub record: RequestRecord,
    pub decisions: Vec<Decision>,
    /// The person behind the request (its token's, or the requester's name folded).
    pub requester: TokenPerson,
    /// The approvals that count under the two-person rule, in the order they were made.
    pub counted: Vec<Counted>,
    /// The approvals that do not count, each with why (recorded before the rule, or by hand).
    pub not_counted: Vec<(String, String)>,
}

/// An approval that counts: the operator who made it and the person behind their token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub operator: String,
    pub person: TokenPerson,
}

impl Request {
    /// The operators whose approvals count, in order.
    pub fn approvers(&self) -> Vec<String> {
        self.counted.iter().map(|c| c.operator.clone()).collect()
    }

    pub fn rejected(&self) -> bool {
        self.decisions.iter().any(|d| d.decision == "reject")
    }

    /// Whether the change path's rule holds over people: the state machine's own
    /// `approvals_satisfy`, applied to the persons behind the requester and the approvals that
    /// count (docs/SERVE.md, "The two-person rule").
    pub fn approved(&self) -> bool {
        let persons: Vec<String> = self
            .counted
            .iter()
            .map(|c| c.person.person.clone())
            .collect();
        let path = match &self.record.path {
            ChangePath::Emergency {
                authoriser,
                evidence,
                rollback_window_secs,
            } => ChangePath::Emergency {
                authoriser: person_key(authoriser),
                evidence: evidence.clone(),
                rollback_window_secs: *rollback_window_secs,
            },
            other => other.clone(),
        };
        !self.rejected() && approvals_satisfy(&path, &self.requester.person, &persons)
    }

    /// The operator whose approval stands for the emergency path's authoriser, if it counts.
    fn authoriser_approval(&self) -> Option<&Counted> {
        let ChangePath::Emergency { authoriser, .. } = &self.record.path else {
            return None;
        };
        let key = person_key(authoriser);
        self.counted
            .iter()
            .filter(|c| c.person.person == key)
            .min_by_key(|c| person_key(&c.operator) != key)
    }

    /// What is still needed before the request is approved.
    pub fn needs(&self) -> String {
        let r = &self.record;
        if self.rejected() {
            return "nothing: rejected".to_owned();
        }
        if self.approved() {
            return "nothing: approved".to_owned();
        }
        match &r.path {
            ChangePath::Emergency { authoriser, .. } => {
                if self.authoriser_approval().is_some() {
                    format!(
                        "one approval by a person other than {} and the authoriser (the authoriser {authoriser} has approved)",
                        r.requested_by
                    )
                } else {
                    format!("the approval of the authoriser {authoriser}")
                }
            }
            _ => format!(
                "{STANDARD_APPROVALS} approvals by distinct people other than {} ({} so far)",
                r.requested_by,
                self.counted.len()
            ),
        }
    }

    pub fn view(&self) -> RequestView {
        let r = &self.record;
        let (path, authoriser, evidence) = match &r.path {
            ChangePath::Emergency {
                authoriser,
                evidence,
                ..
            } => (
                "emergency",
                Some(authoriser.clone()),
                Some(evidence.clone()),
            ),
            ChangePath::SingleOperator => ("single_operator", None, None),
            ChangePath::Standard => ("standard", None, None),
        };
        RequestView {
            rollout_id: r.rollout_id.clone(),
            release_id: r.release_id.clone(),
            requested_by: r.requested_by.clone(),
            requested_at: Timestamp::from_secs(r.requested_at).to_rfc3339(),
            path,
            authoriser,
            evidence,
            devices: r.waves.iter().map(|w| w.device_ids.len()).sum(),
            waves: r
                .waves
                .iter()
                .enumerate()
                .map(|(i, w)| WaveSummary {
                    name: w.name.clone(),
                    devices: w.device_ids.len(),
                    soak_secs: w.soak_secs,
                    prerequisites: r
                        .chains
                        .iter()
                        .find(|c| c.wave == i)
                        .map(|c| c.releases.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            prerequisite_releases: r.prerequisite_manifests.keys().cloned().collect(),
            decisions: self.decisions.clone(),
            status: if self.rejected() {
                "rejected"
            } else if self.approved() {
                "approved"
            } else {
                "awaiting_approval"
            },
            needs: self.needs(),
            finding_id: r.remediation.finding_id.clone(),
            finding_tier: r.remediation.finding_tier,
            proposed_shape: r.remediation.proposed_shape.map(Shape::as_str),
            shape: r.remediation.shape.map(Shape::as_str),
            shape_changed_by: r.remediation.shape_changed_by.clone(),
            checklist: r.remediation.checklist.clone(),
            checklist_missing: r
                .remediation
                .checklist
                .as_ref()
                .map_or_else(|| Checklist::default().missing(), Checklist::missing),
            boot_critical: r.remediation.boot_critical.clone(),
            deferred: self.deferral(),
        }
    }

    /// Why this request's rollout is not dispatched now: its shape is deferred to the next
    /// scheduled release (issue 20); `None` if it may be.
    pub fn deferral(&self) -> Option<String> {
        let r = &self.record;
        if r.remediation.shape.is_none_or(Shape::dispatchable) {
            return None;
        }
        let finding = r
            .remediation
            .finding_id
            .as_deref()
            .map_or_else(String::new, |f| {
                format!(
                    " (finding {f}{})",
                    r.remediation
                        .finding_tier
                        .map_or_else(String::new, |t| format!(", tier {t}"))
                )
            });
        Some(format!(
            "rollout {} is deferred to the next scheduled release{finding}: not dispatched now; change its shape to dispatch it now (convoy request shape {} --shape standard, or POST /api/v1/rollouts/{}/shape)",
            r.rollout_id, r.rollout_id, r.rollout_id
        ))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache's manifest of `release_id` (the bytes as signed), if any.
fn stored_manifest(store: &Store, release_id: &str) -> Result<Option<Vec<u8>>> {
    crate::store::releases::stored_manifest(store, release_id)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

/// Records a new request by `requested_by` (audited as `actor`), after checking the release
/// verifies against `trust` now and planning it with `planning` if no waves were given.
pub fn create(
    store: &Store,
    trust: &manifest::TrustedKeys,
    planning: &PlanningPolicy,
    new: &NewRequest,
    requested_by: &Who,
    actor: &str,
    now: Timestamp,
) -> Result<Result<Request, Refusal>> {
    create_with_gates(store, trust, planning, new, None, requested_by, actor, now)
}

/// Who makes a request or a decision: an operator name, and the API token they used (`None`
/// in a console, where a typed name is all there is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub operator: String,
    pub token_id: Option<String>,
}

impl Who {
    /// An operator known only by name (a console's local approvals).
    pub fn named(operator: &str) -> Self {
        Self {
            operator: operator.to_owned(),
            token_id: None,
        }
    }

    /// The person behind this operator: their token's (docs/SERVE.md), or the name folded.
    fn person(&self, store: &Store) -> Result<TokenPerson> {
        match &self.token_id {
            Some(id) => token_person(store, id, &self.operator),
            None => Ok(TokenPerson {
                person: person_key(&self.operator),
                chain: Vec::new(),
                created_seq: None,
                unknown_maker: None,
            }),
        }
    }
}

/// A plan a console saved in the cache (`plan.save`), which a request can be made from.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedPlan {
    pub plan_id: String,
    pub release_id: String,
    pub created: Timestamp,
    pub waves: Vec<WaveSpec>,
    /// The plan's prerequisite waves (`prerequisite_waves`), run after `waves`.
    pub prerequisite_waves: Vec<PrerequisiteWave>,
    pub gates: Option<GatePolicy>,
}

impl SavedPlan {
    pub fn devices(&self) -> usize {
        self.waves.iter().map(|w| w.device_ids.len()).sum::<usize>()
            + self
                .prerequisite_waves
                .iter()
                .map(|w| w.device_ids.len())
                .sum::<usize>()
    }
}

/// Every plan saved in the cache that is not a request (the planner's, `convoy plan --save`),
/// newest first; a row whose body has no readable `rollout_waves` is listed in the second
/// vector, one line each naming it.
pub fn saved_plans(store: &Store) -> Result<(Vec<SavedPlan>, Vec<String>)> {
    let mut plans = Vec::new();
    let mut unreadable = Vec::new();
    for PlanRow {
        rollout_id: plan_id,
        release_id,
        created,
        body,
    } in store.plan_rows()?
    {
        if parse_record(&body).is_some() {
            continue;
        }
        match plan_of(&body) {
            Ok((waves, prerequisite_waves, gates)) => plans.push(SavedPlan {
                plan_id,
                release_id,
                created: Timestamp::from_secs(created),
                waves,
                prerequisite_waves,
                gates,
            }),
            Err(why) => unreadable.push(format!("plan {plan_id}: {why}")),
        }
    }
    Ok((plans, unreadable))
}

/// The waves (`rollout_waves`), prerequisite waves (`prerequisite_waves`, if any) and gates of
/// a saved plan's JSON.
#[allow(clippy::type_complexity)] // the three parts of a plan, read together.
fn plan_of(
    body: &str,
) -> Result<(Vec<WaveSpec>, Vec<PrerequisiteWave>, Option<GatePolicy>), String> {
    let value: serde_json::Value = convoy_core::strict_json::from_str(body)
        .map_err(|e| format!("its body is not one reading of JSON: {e}"))?;
    let waves = value
        .get("rollout_waves")
        .ok_or("it has no \"rollout_waves\"")?;
    let waves: Vec<WaveSpec> = serde_json::from_value(waves.clone())
        .map_err(|e| format!("its \"rollout_waves\" are not waves: {e}"))?;
    let prerequisite_waves: Vec<PrerequisiteWave> = match value.get("prerequisite_waves") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(w) => serde_json::from_value(w.clone())
            .map_err(|e| format!("its \"prerequisite_waves\" are not prerequisite waves: {e}"))?,
    };
    let gates = match value.get("gates") {
        None | Some(serde_json::Value::Null) => None,
        Some(g) => Some(
            serde_json::from_value(g.clone())
                .map_err(|e| format!("its \"gates\" are not a gate policy: {e}"))?,
        ),
    };
    Ok((waves, prerequisite_waves, gates))
}

/// Records a request for `plan_id`, a plan saved in the cache: its waves and gates are frozen
/// into the request, and the release is checked as [`create`] checks it. `new.waves` is
/// replaced by the plan's; `new.release_id` must be the plan's release (empty: the plan's).
pub fn create_from_plan(
    store: &Store,
    trust: &manifest::TrustedKeys,
    plan_id: &str,
    mut new: NewRequest,
    requested_by: &Who,
    actor: &str,
    now: Timestamp,
) -> Result<Result<Request, Refusal>> {
    let (plans, unreadable) = saved_plans(store)?;
    let Some(plan) = plans.into_iter().find(|p| p.plan_id == plan_id) else {
        let why = unreadable
            .into_iter()
            .find(|u| u.starts_with(&format!("plan {plan_id}:")))
            .unwrap_or_else(|| format!("no saved plan {plan_id} in the cache"));
        return Ok(Err(field("plan", why)));
    };
    if new.release_id.is_empty() {
        new.release_id.clone_from(&plan.release_id);
    } else if new.release_id != plan.release_id {
        return Ok(Err(field(
            "release_id",
            format!(
                "plan {plan_id} is for release {}, not {}",
                plan.release_id, new.release_id
            ),
        )));
    }
    new.waves = Some(plan.waves);
    new.prerequisite_waves = Some(plan.prerequisite_waves);
    create_with_gates(
        store,
        trust,
        &PlanningPolicy::default(),
        &new,
        plan.gates,
        requested_by,
        actor,
        now,
    )
}

#[allow(clippy::too_many_arguments)] // `create`'s inputs and the gates of a saved plan.
fn create_with_gates(
    store: &Store,
    trust: &manifest::TrustedKeys,
    planning: &PlanningPolicy,
    new: &NewRequest,
    gates: Option<GatePolicy>,
    who: &Who,
    actor: &str,
    now: Timestamp,
) -> Result<Result<Request, Refusal>> {
    let requested_by = who.operator.as_str();
    let requester = who.person(store)?;
    let Some(bytes) = stored_manifest(store, &new.release_id)? else {
        return Ok(Err(field(
            "release_id",
            format!(
                "no release {:?} in the server's cache (convoy release create stores one)",
                new.release_id
            ),
        )));
    };
    let verified: VerifiedManifest = match manifest::verify(&bytes, trust, now) {
        Ok(m) => m,
        Err(rejection) => {
            return Ok(Err(Refusal::Conflict(format!(
                "release {} does not verify against the server's trusted keys ({}): {rejection}; nothing signed, nothing dispatched",
                new.release_id,
                rejection.attack()
            ))));
        }
    };
    let rollout_id = new.rollout_id.clone().unwrap_or_else(|| {
        let t = now.to_rfc3339().replace(['-', ':'], "");
        format!("{}-{t}", new.release_id)
    });
    if !valid_id(&rollout_id) {
        return Ok(Err(field(
            "rollout_id",
            format!(
                "rollout_id {rollout_id:?} must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 - _ . (not starting with .)"
            ),
        )));
    }
    let shaping = match shaping(store, new, requested_by)? {
        Ok(s) => s,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // A tier-0 finding's emergency shape asks for the emergency path's authoriser and evidence.
    let hint = if shaping.path_from_finding {
        format!(
            " (finding {} is tier 0: its rollout takes the emergency path; or choose another \"shape\")",
            shaping.record.finding_id.as_deref().unwrap_or_default()
        )
    } else {
        String::new()
    };
    let path = match shaping.path {
        "standard" => {
            if new.authoriser.is_some() || new.evidence.is_some() {
                return Ok(Err(field(
                    "authoriser",
                    "authoriser and evidence belong to the emergency path (\"path\": \"emergency\")",
                )));
            }
            ChangePath::Standard
        }
        "emergency" => {
            let authoriser = new.authoriser.as_deref().map_or("", str::trim);
            if authoriser.is_empty() {
                return Ok(Err(field(
                    "authoriser",
                    format!("an emergency request names its authoriser{hint}"),
                )));
            }
            if person_key(authoriser) == requester.person {
                let how = if person_key(authoriser) == person_key(requested_by) {
                    String::new()
                } else {
                    format!(" ({})", requester.describe())
                };
                return Ok(Err(field(
                    "authoriser",
                    format!(
                        "{requested_by} cannot authorise their own emergency request{how}: name another person"
                    ),
                )));
            }
            // The authoriser as the cache spells the operator, so that the engine, which
            // matches names, finds their approval.
            let authoriser = operator_spelling(store, authoriser)?;
            let authoriser = authoriser.as_str();
            let evidence = new.evidence.as_deref().map_or("", str::trim);
            if evidence.is_empty() {
                return Ok(Err(field(
                    "evidence",
                    format!(
                        "an emergency request says why it cannot wait (incident, CVE, measurements){hint}"
                    ),
                )));
            }
            // The pre-deployment checklist is required on the emergency path (issue 20).
            let checklist = shaping.record.checklist.clone().unwrap_or_default();
            if let Err(e) = checklist.require_complete() {
                return Ok(Err(field(
                    &format!("checklist.{}", e.item),
                    format!(
                        "the pre-deployment checklist's {} is missing: every item (owner, regression_test, rollback_readiness, support_brief) is required on the emergency path",
                        e.item
                    ),
                )));
            }
            ChangePath::Emergency {
                authoriser: authoriser.to_owned(),
                evidence: evidence.to_owned(),
                rollback_window_secs: GatePolicy::default().rollback_window_secs,
            }
        }
        other => {
            return Ok(Err(field(
                "path",
                format!("unknown path {other:?}: use standard or emergency"),
            )));
        }
    };
    let taken = store.rollout_id_taken(&rollout_id)?;
    if taken {
        return Ok(Err(Refusal::Conflict(format!(
            "rollout {rollout_id} already exists in the cache: choose another rollout_id"
        ))));
    }
    let mut remediation = shaping.record;
    // A release that installs a bootloader or modem gets the stricter defaults (issue 20).
    let boot = plan::policy::boot_critical(
        verified.spec(),
        planning,
        gates.as_ref().unwrap_or(&GatePolicy::default()),
    );
    let planning = boot.as_ref().map_or(planning, |b| &b.planning);
    let gates = match &boot {
        Some(b) => Some(b.gates.clone()),
        None => gates,
    };
    remediation.boot_critical = boot.as_ref().map(|b| b.reason.clone());
    let fleet = store.load_fleet()?;
    let (waves, chains, prerequisite_manifests) =
        match frozen_waves(store, trust, &verified, planning, &fleet, new, now)? {
            Ok(w) => w,
            Err(refusal) => return Ok(Err(refusal)),
        };
    if waves.iter().all(|w| w.device_ids.is_empty()) {
        return Ok(Err(Refusal::Conflict(format!(
            "no device of the cache is eligible for release {} now: nothing to roll out (convoy plan gives the reasons)",
            new.release_id
        ))));
    }
    let mut waves = waves;
    let mut chains = chains;
    if let Some(shape) = remediation.shape {
        remediation.planned_soaks = Some(waves.iter().map(|w| w.soak_secs).collect());
        shape_chained(shape, &mut waves, &mut chains);
        if remediation.shape != remediation.proposed_shape && remediation.proposed_shape.is_some() {
            remediation.shape_changed_at = Some(now.secs());
        }
    }
    let record = RequestRecord {
        kind: KIND.to_owned(),
        rollout_id: rollout_id.clone(),
        release_id: new.release_id.clone(),
        manifest_sha256: sha256_hex(&bytes),
        requested_by: requested_by.to_owned(),
        requested_at: now.secs(),
        path,
        waves,
        chains,
        prerequisite_manifests,
        gates,
        requested_token: who.token_id.clone(),
        request_seq: None,
        remediation,
    };
    let mut request = Request {
        record,
        decisions: Vec::new(),
        requester,
        counted: Vec::new(),
        not_counted: Vec::new(),
    };
    let view = request.view();
    store.atomically(|tx| {
    let entry = tx.append_audit(
        &AuditEntry {
            time: now,
            actor: actor.to_owned(),
            action: "rollout.request".into(),
            payload: serde_json::json!({
                "rollout_id": rollout_id,
                "release": view.release_id,
                "manifest_sha256": request.record.manifest_sha256,
                "path": view.path,
                "authoriser": view.authoriser,
                "evidence": view.evidence,
                "devices": view.devices,
                "waves": view.waves.iter().map(|w| serde_json::json!({"name": w.name, "devices": w.devices, "soak_secs": w.soak_secs, "prerequisites": w.prerequisites})).collect::<Vec<_>>(),
                "prerequisite_manifests": request.record.prerequisite_manifests,
                "finding_id": view.finding_id,
                "finding_tier": view.finding_tier,
                "proposed_shape": view.proposed_shape,
                "shape": view.shape,
                "shape_changed_by": view.shape_changed_by,
                "checklist": view.checklist,
                "boot_critical": view.boot_critical,
            }),
        },
    )?;
    // Tokens made after this entry cannot approve the request.
    request.record.request_seq = Some(entry.seq);
    tx.insert_request_for(
        &rollout_id,
        &request.record.release_id,
        request.record.remediation.finding_id.as_deref(),
        now,
        &serde_json::to_string(&request.record)?,
    )
    })
    .context("committing the rollout request")?;
    Ok(Ok(request))
}

/// A request's waves as frozen, their prerequisite chains and the pinned SHA-256 of the cache's
/// manifest of each chain release.
type Frozen = (Vec<WaveSpec>, Vec<WaveChain>, BTreeMap<String, String>);

/// The waves a new request freezes: the ones given (and their prerequisite waves, appended
/// with their chains), or planned here from `fleet` with the prerequisite releases named as
/// the catalog. Refuses, naming the field, a wave without devices, a device not in the cache,
/// on hardware the release is not for or in two waves, and a prerequisite release that is not
/// stored in the cache, does not verify, or is the target itself.
fn frozen_waves(
    store: &Store,
    trust: &manifest::TrustedKeys,
    verified: &VerifiedManifest,
    planning: &PlanningPolicy,
    fleet: &convoy_core::fleet::Fleet,
    new: &NewRequest,
    now: Timestamp,
) -> Result<Result<Frozen, Refusal>> {
    let mut pinned: BTreeMap<String, (String, VerifiedManifest)> = BTreeMap::new();
    let Some(given) = &new.waves else {
        if new.prerequisite_waves.is_some() {
            return Ok(Err(field(
                "prerequisite_waves",
                "prerequisite waves come after the waves they follow: give \"waves\" too (or \"prerequisites\" to plan them here)",
            )));
        }
        let mut catalog = Vec::new();
        for (k, release) in new.prerequisites.iter().flatten().enumerate() {
            match prerequisite(
                store,
                trust,
                verified,
                release,
                &format!("prerequisites[{k}]"),
                now,
            )? {
                Ok(m) => {
                    catalog.push(m.1.spec().clone());
                    pinned.insert(release.clone(), m);
                }
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        // Waves that name saved cohorts take their queries from this cache.
        let mut filled = planning.clone();
        if let Err(e) = super::cohorts::fill_policy(store, &mut filled) {
            return Ok(Err(field("policy", format!("{e:#}"))));
        }
        let plan = plan::plan(&PlanInput {
            fleet,
            release: verified.spec(),
            catalog: &catalog,
            now,
            seed: new.seed.unwrap_or(1),
            policy: &filled,
        })
        .with_context(|| format!("planning release {}", new.release_id))?;
        // Devices behind get their chains (none without prerequisites).
        let (waves, chains) = convoy_core::rollout::chain::waves_with_chains(&plan, fleet);
        let used: HashSet<&str> = chains
            .iter()
            .flat_map(|c| c.releases.iter().map(String::as_str))
            .collect();
        let pins = pinned
            .into_iter()
            .filter(|(r, _)| used.contains(r.as_str()))
            .map(|(r, (sha, _))| (r, sha))
            .collect();
        return Ok(Ok((waves, chains, pins)));
    };
    if new.prerequisites.is_some() {
        return Ok(Err(field(
            "prerequisites",
            "\"prerequisites\" is the catalog when the server plans; with \"waves\", give the chains in \"prerequisite_waves\"",
        )));
    }
    if given.is_empty() {
        return Ok(Err(field("waves", "a plan has at least one wave")));
    }
    let known: std::collections::HashMap<&str, &convoy_core::fleet::Device> =
        fleet.devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut waves = given.clone();
    let mut chains = Vec::new();
    let extra = new.prerequisite_waves.as_deref().unwrap_or_default();
    let all = given
        .iter()
        .enumerate()
        .map(|(i, w)| {
            (
                format!("waves[{i}]"),
                w.name.as_str(),
                &w.device_ids,
                w.soak_secs,
                None,
            )
        })
        .chain(extra.iter().enumerate().map(|(i, w)| {
            (
                format!("prerequisite_waves[{i}]"),
                w.name.as_str(),
                &w.device_ids,
                w.soak_secs,
                Some(w),
            )
        }));
    for (at, name, device_ids, soak_secs, chained) in all {
        if device_ids.is_empty() {
            return Ok(Err(field(
                &format!("{at}.device_ids"),
                format!("wave {name} has no device"),
            )));
        }
        if soak_secs < 0 {
            return Ok(Err(field(
                &format!("{at}.soak_secs"),
                "soak_secs cannot be negative",
            )));
        }
        // Wave names are unique: a shape that moves the canary keeps the chains on their waves.
        if !names.insert(name) {
            return Ok(Err(field(
                &format!("{at}.name"),
                format!("two waves are named {name}"),
            )));
        }
        let mut chain_specs = Vec::new();
        if let Some(w) = chained {
            // The emergency shape moves the canary first; prerequisite waves run last.
            if w.name == "canary" {
                return Ok(Err(field(
                    &format!("{at}.name"),
                    "a prerequisite wave is not the canary: prerequisite waves run after the others; name it after-prerequisites-N",
                )));
            }
            if w.prerequisites.is_empty() {
                return Ok(Err(field(
                    &format!("{at}.prerequisites"),
                    format!(
                        "prerequisite wave {name} names no prerequisite release: put its devices in \"waves\""
                    ),
                )));
            }
            for (k, release) in w.prerequisites.iter().enumerate() {
                if w.prerequisites[..k].contains(release) {
                    return Ok(Err(field(
                        &format!("{at}.prerequisites[{k}]"),
                        format!("prerequisite release {release} is twice in wave {name}'s chain"),
                    )));
                }
                if !pinned.contains_key(release) {
                    match prerequisite(
                        store,
                        trust,
                        verified,
                        release,
                        &format!("{at}.prerequisites[{k}]"),
                        now,
                    )? {
                        Ok(m) => {
                            pinned.insert(release.clone(), m);
                        }
                        Err(refusal) => return Ok(Err(refusal)),
                    }
                }
                if let Some((_, m)) = pinned.get(release) {
                    chain_specs.push(m.spec().clone());
                }
            }
        }
        for (j, d) in device_ids.iter().enumerate() {
            let at = format!("{at}.device_ids[{j}]");
            let Some(device) = known.get(d.as_str()) else {
                return Ok(Err(field(
                    &at,
                    format!("no device {d} in the server's cache (wave {name})"),
                )));
            };
            if !verified.spec().supports_hardware(device) {
                return Ok(Err(field(
                    &at,
                    format!(
                        "device {d} is a {}: release {} is for {}",
                        device.model.as_str(),
                        new.release_id,
                        verified.spec().hardware.join(", ")
                    ),
                )));
            }
            if let Some(p) = chain_specs.iter().find(|p| !p.supports_hardware(device)) {
                return Ok(Err(field(
                    &at,
                    format!(
                        "device {d} is a {}: prerequisite release {} is for {}",
                        device.model.as_str(),
                        p.id,
                        p.hardware.join(", ")
                    ),
                )));
            }
            if !seen.insert(d.as_str()) {
                return Ok(Err(field(&at, format!("device {d} is in two waves"))));
            }
        }
        if let Some(w) = chained {
            chains.push(WaveChain {
                wave: waves.len(),
                releases: w.prerequisites.clone(),
            });
            waves.push(w.wave());
        }
    }
    let pins = pinned.into_iter().map(|(r, (sha, _))| (r, sha)).collect();
    Ok(Ok((waves, chains, pins)))
}

/// The cache's manifest of prerequisite release `release` (named by the request's field `at`),
/// verified against `trust` now: its SHA-256 and the verified manifest. Refuses the target
/// itself, a release not stored in the cache and one that does not verify.
fn prerequisite(
    store: &Store,
    trust: &manifest::TrustedKeys,
    target: &VerifiedManifest,
    release: &str,
    at: &str,
    now: Timestamp,
) -> Result<Result<(String, VerifiedManifest), Refusal>> {
    if release == target.release_id() {
        return Ok(Err(field(
            at,
            format!("release {release} is the target itself, not a prerequisite"),
        )));
    }
    let Some(bytes) = stored_manifest(store, release)? else {
        return Ok(Err(field(
            at,
            format!(
                "prerequisite release {release} has no manifest in the server's cache: store its signed manifest first (convoy release store FILE)"
            ),
        )));
    };
    match manifest::verify(&bytes, trust, now) {
        Ok(m) => Ok(Ok((sha256_hex(&bytes), m))),
        Err(rejection) => Ok(Err(Refusal::Conflict(format!(
            "prerequisite release {release} does not verify against the server's trusted keys ({}): {rejection}; nothing dispatched",
            rejection.attack()
        )))),
    }
}

/// Applies `shape` to a request's waves, prerequisite waves included (their soaks too), and
/// keeps each chain on its wave when the emergency shape moves the canary to the front.
fn shape_chained(shape: Shape, waves: &mut Vec<WaveSpec>, chains: &mut [WaveChain]) {
    let names: Vec<String> = chains
        .iter()
        .map(|c| {
            waves
                .get(c.wave)
                .map(|w| w.name.clone())
                .unwrap_or_default()
        })
        .collect();
    shape_waves(shape, waves);
    for (c, name) in chains.iter_mut().zip(names) {
        if let Some(i) = waves.iter().position(|w| w.name == name) {
            c.wave = i;
        }
    }
}

/// A request's waves as a plan file `convoy rollout run --plan` reads: the waves without a
/// chain (`waves`) and the prerequisite waves after them (`prerequisite_waves`), which must
/// come last, as requests freeze them.
fn plan_file_waves(r: &RequestRecord) -> Result<(Vec<WaveSpec>, Vec<PrerequisiteWave>)> {
    let mut plain = Vec::new();
    let mut chained = Vec::new();
    for (i, w) in r.waves.iter().enumerate() {
        match r.chains.iter().find(|c| c.wave == i) {
            Some(c) => chained.push(PrerequisiteWave {
                name: w.name.clone(),
                device_ids: w.device_ids.clone(),
                soak_secs: w.soak_secs,
                prerequisites: c.releases.clone(),
            }),
            None if chained.is_empty() => plain.push(w.clone()),
            None => anyhow::bail!(
                "rollout {}: wave {} comes after a prerequisite wave; the prerequisite waves run last",
                r.rollout_id,
                w.name
            ),
        }
    }
    if r.chains.iter().any(|c| c.wave >= r.waves.len()) {
        anyhow::bail!(
            "rollout {}: a prerequisite chain names no wave",
            r.rollout_id
        );
    }
    Ok((plain, chained))
}

/// Why `r`'s prerequisite manifests no longer hold: one changed or was removed from the cache
/// since the request was made (`None`: all as pinned).
fn prerequisites_changed(store: &Store, r: &RequestRecord) -> Result<Option<String>> {
    for (release, sha) in &r.prerequisite_manifests {
        let current = stored_manifest(store, release)?;
        if current.as_deref().map(sha256_hex).as_deref() != Some(sha.as_str()) {
            return Ok(Some(format!(
                "the manifest of prerequisite release {release} changed (or was removed) since rollout {} was requested: request it again",
                r.rollout_id
            )));
        }
    }
    Ok(None)
}

/// What a new request's finding, shape and checklist come to (issue 20).
struct Shaping {
    record: RemediationRecord,
    /// `standard` or `emergency` (or what the request named, refused later).
    path: &'static str,
    /// The emergency path comes from a tier-0 finding, not from the request.
    path_from_finding: bool,
}

/// The longest finding id a request may name.
const MAX_FINDING_ID_LEN: usize = 128;

/// Reads a new request's `finding_id` (in the cache, scored), `shape` and `checklist`: the
/// shape the finding's tier proposes, the one chosen (given, or the path's, or the proposed
/// one), and the path it goes through. Refuses, naming the field, an unknown finding, an
/// unknown shape, a shape the path contradicts and a checklist item too long or with control
/// characters.
fn shaping(
    store: &Store,
    new: &NewRequest,
    requested_by: &str,
) -> Result<Result<Shaping, Refusal>> {
    let mut record = RemediationRecord::default();
    if let Some(id) = &new.finding_id {
        let id = id.trim();
        if id.is_empty()
            || id.chars().count() > MAX_FINDING_ID_LEN
            || id.chars().any(char::is_control)
        {
            return Ok(Err(field(
                "finding_id",
                format!(
                    "finding_id {id:?} must be 1 to {MAX_FINDING_ID_LEN} characters without control characters"
                ),
            )));
        }
        let Some(found) = crate::store::query::finding(store, id)? else {
            return Ok(Err(field(
                "finding_id",
                format!(
                    "no finding {id:?} in the cache: score it first (POST /api/v1/findings, or the console's Findings view)"
                ),
            )));
        };
        let tier = found
            .scores
            .first()
            .and_then(|s| s.scorecard.get("tier"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|t| u8::try_from(t).ok());
        let Some(tier) = tier else {
            return Ok(Err(field(
                "finding_id",
                format!("finding {id} has no score with a tier in the cache: score it first"),
            )));
        };
        record.finding_id = Some(id.to_owned());
        record.finding_tier = Some(tier);
        record.proposed_shape = Some(Shape::for_tier(Tier::from_number(tier)));
    }
    let chosen = match new.shape.as_deref() {
        Some(text) => match Shape::parse(text) {
            Some(s) => Some(s),
            None => {
                return Ok(Err(field(
                    "shape",
                    format!(
                        "unknown shape {text:?}: use emergency, accelerated, standard or deferred"
                    ),
                )));
            }
        },
        None => match (new.path.as_deref(), record.proposed_shape) {
            (Some("emergency"), Some(_)) => Some(Shape::Emergency),
            (Some("standard"), Some(Shape::Emergency)) => Some(Shape::Standard),
            (_, proposed) => proposed,
        },
    };
    let (path, path_from_finding) = match (new.path.as_deref(), chosen) {
        (None, Some(Shape::Emergency)) => ("emergency", new.shape.is_none()),
        (Some("emergency"), Some(s)) if s != Shape::Emergency => {
            return Ok(Err(field(
                "shape",
                format!(
                    "the emergency path takes the emergency shape, not {s}: drop \"path\" or choose \"shape\": \"emergency\""
                ),
            )));
        }
        (Some("standard"), Some(Shape::Emergency)) => {
            return Ok(Err(field(
                "shape",
                "the emergency shape goes through the emergency path: give \"path\": \"emergency\" with authoriser, evidence and checklist, or choose another shape",
            )));
        }
        (Some("emergency"), _) => ("emergency", false),
        (None | Some("standard"), _) => ("standard", false),
        // Refused with the path's own words.
        (Some(other), _) => {
            return Ok(Err(field(
                "path",
                format!("unknown path {other:?}: use standard or emergency"),
            )));
        }
    };
    record.shape = chosen;
    if record.proposed_shape.is_some() && chosen != record.proposed_shape {
        record.shape_changed_by = Some(requested_by.to_owned());
    }
    if let Some(c) = &new.checklist {
        let c = c.trimmed();
        if let Err(e) = c.validate() {
            return Ok(Err(field(&format!("checklist.{}", e.item), e.reason)));
        }
        if !c.is_empty() {
            record.checklist = Some(c);
        }
    }
    Ok(Ok(Shaping {
        record,
        path,
        path_from_finding,
    }))
}

/// Changes the shape of `rollout_id`'s request to `shape` (issue 20), by its requester, before
/// any decision on it: a deferred rollout made dispatchable, or an accelerated one made
/// standard. The change, who made it and when are recorded in the request and audited. The emergency shape and the
/// emergency path go together: a request changes between them only by being made again.
pub fn change_shape(
    store: &Store,
    rollout_id: &str,
    who: &Who,
    shape: &str,
    actor: &str,
    now: Timestamp,
) -> Result<Result<Request, Refusal>> {
    let Some(shape) = Shape::parse(shape) else {
        return Ok(Err(field(
            "shape",
            format!("unknown shape {shape:?}: use emergency, accelerated, standard or deferred"),
        )));
    };
    let Some(request) = load(store, rollout_id)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "no rollout request {rollout_id} in the cache"
        ))));
    };
    // The request is the requester's: others approve or reject it.
    if who.person(store)?.person != request.requester.person {
        return Ok(Err(Refusal::Forbidden(format!(
            "only {}, who requested rollout {rollout_id}, may change its shape; others approve or reject it",
            request.record.requested_by
        ))));
    }
    if !request.decisions.is_empty() {
        return Ok(Err(Refusal::Conflict(format!(
            "rollout {rollout_id} already has decisions: its shape is what was approved; request it again with \"shape\" to change it"
        ))));
    }
    let emergency = matches!(request.record.path, ChangePath::Emergency { .. });
    if emergency != (shape == Shape::Emergency) {
        return Ok(Err(field(
            "shape",
            "the emergency shape and the emergency path go together: request the rollout again to change between them",
        )));
    }
    let mut record = request.record;
    let from = record.remediation.shape;
    if from == Some(shape) {
        return Ok(Err(Refusal::Conflict(format!(
            "rollout {rollout_id} already has the shape {shape}"
        ))));
    }
    // The shape applies to the soaks as planned, not to those of the shape before.
    let planned = record
        .remediation
        .planned_soaks
        .clone()
        .filter(|p| p.len() == record.waves.len())
        .unwrap_or_else(|| record.waves.iter().map(|w| w.soak_secs).collect());
    for (w, soak) in record.waves.iter_mut().zip(&planned) {
        w.soak_secs = *soak;
    }
    record.remediation.planned_soaks = Some(planned);
    shape_chained(shape, &mut record.waves, &mut record.chains);
    record.remediation.shape = Some(shape);
    record.remediation.shape_changed_by = Some(who.operator.clone());
    record.remediation.shape_changed_at = Some(now.secs());
    store
        .atomically(|tx| {
            tx.append_audit(&AuditEntry {
                time: now,
                actor: actor.to_owned(),
                action: "rollout.shape".into(),
                payload: serde_json::json!({
                    "rollout_id": rollout_id,
                    "finding_id": record.remediation.finding_id,
                    "proposed_shape": record.remediation.proposed_shape.map(Shape::as_str),
                    "from": from.map(Shape::as_str),
                    "to": shape.as_str(),
                    "by": who.operator,
                    "token_id": who.token_id,
                    "waves": record.waves.iter().map(|w| serde_json::json!({"name": w.name, "soak_secs": w.soak_secs})).collect::<Vec<_>>(),
                }),
            })?;
            tx.update_request(rollout_id, &serde_json::to_string(&record)?)
        })
        .context("committing the shape change")?;
    Ok(Ok(assemble(store, record)?))
}

/// The request of `rollout_id`, if the cache holds one.
pub fn load(store: &Store, rollout_id: &str) -> Result<Option<Request>> {
    let body = store.plan_body(rollout_id)?;
    let Some(body) = body else { return Ok(None) };
    let Some(record) = parse_record(&body) else {
        return Ok(None);
    };
    Ok(Some(assemble(store, record)?))
}

/// A request with its decisions, and which approvals count under the two-person rule.
fn assemble(store: &Store, record: RequestRecord) -> Result<Request> {
    let rows = decisions(store, &record.rollout_id)?;
    let requester = Who {
        operator: record.requested_by.clone(),
        token_id: record.requested_token.clone(),
    }
    .person(store)?;
    let mut counted: Vec<Counted> = Vec::new();
    let mut not_counted = Vec::new();
    for (d, token_id) in &rows {
        if d.decision != "approve" {
            continue;
        }
        let who = Who {
            operator: d.operator.clone(),
            token_id: token_id.clone(),
        };
        let person = who.person(store)?;
        match why_not_counted(&record, &requester, &counted, &d.operator, &person) {
            None => counted.push(Counted {
                operator: d.operator.clone(),
                person,
            }),
            Some(why) => not_counted.push((d.operator.clone(), why)),
        }
    }
    Ok(Request {
        record,
        decisions: rows.into_iter().map(|(d, _)| d).collect(),
        requester,
        counted,
        not_counted,
    })
}

/// Why an approval by `approver` (behind whose token is `person`) does not count towards
/// `record`, given the requester's person and the approvals counted before it; `None` if it
/// counts. The two-person rule (docs/SERVE.md): the approver's person is neither the
/// requester's nor that of an approval already counted, and their token existed when the
/// request was made.
pub fn why_not_counted(
    record: &RequestRecord,
    requester: &TokenPerson,
    counted: &[Counted],
    approver: &str,
    person: &TokenPerson,
) -> Option<String> {
    let id = &record.rollout_id;
    let how = |a: &TokenPerson, b: &TokenPerson| {
        let parts: Vec<String> = [a.describe(), b.describe()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            "operator names are compared without regard to case".to_owned()
        } else {
            parts.join("; ")
        }
    };
    if person.person == requester.person {
        if approver == record.requested_by {
            return Some(format!(
                "{approver} requested rollout {id} and cannot approve it: nobody approves their own request"
            ));
        }
        return Some(format!(
            "{approver} counts as the same person as {}, who requested rollout {id} ({}): nobody approves their own request",
            record.requested_by,
            how(person, requester)
        ));
    }
    if let Some(other) = counted.iter().find(|c| c.person.person == person.person) {
        if other.operator == approver {
            return Some(format!(
                "{approver} has already approved rollout {id}: approvals must come from distinct people"
            ));
        }
        return Some(format!(
            "{approver} counts as the same person as {}, who has already approved rollout {id} ({}): approvals must come from distinct people",
            other.operator,
            how(person, &other.person)
        ));
    }
    if let Some(token) = &person.unknown_maker {
        return Some(format!(
            "{approver}'s token (or the token that made it, {token}) predates the two-person rule: it was made before tokens recorded who made them, so whoever saw its secret is unknown; remake it with `convoy serve token add` on the server's host and revoke the old one"
        ));
    }
    if let (Some(request_seq), Some(token_seq)) = (record.request_seq, person.created_seq)
        && token_seq > request_seq
    {
        return Some(format!(
            "{approver}'s token was made after rollout {id} was requested: only tokens that existed when a rollout was requested may approve it"
        ));
    }
    None
}

/// The name the cache spells operator `name` with (its case may differ), or `name` if no
/// operator has it.
fn operator_spelling(store: &Store, name: &str) -> Result<String> {
    let key = person_key(name);
    for existing in store.operator_names()? {
        if existing == name {
            return Ok(existing);
        }
        if person_key(&existing) == key {
            return Ok(existing);
        }
    }
    Ok(name.to_owned())
}

/// A `rollout_plans` body that is a request; other plans (saved by a console) are not.
fn parse_record(body: &str) -> Option<RequestRecord> {
    convoy_core::strict_json::from_str::<RequestRecord>(body)
        .ok()
        .filter(|r| r.kind == KIND)
}

/// The decisions on a request, each with the API token it was made with (if any).
fn decisions(store: &Store, rollout_id: &str) -> Result<Vec<(Decision, Option<String>)>> {
    Ok(store
        .approvals(rollout_id)?
        .into_iter()
        .map(|row| {
            let body = serde_json::from_str::<serde_json::Value>(&row.body).ok();
            let text = |key: &str| {
                body.as_ref()
                    .and_then(|v| v.get(key).and_then(|c| c.as_str()).map(str::to_owned))
            };
            (
                Decision {
                    operator: row.operator,
                    time: Timestamp::from_secs(row.time).to_rfc3339(),
                    decision: row.decision,
                    comment: text("comment").unwrap_or_default(),
                },
                text("token_id"),
            )
        })
        .collect())
}

/// Every request in the cache, newest first.
pub fn list(store: &Store) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for row in store.plan_rows()? {
        if let Some(record) = parse_record(&row.body) {
            out.push(assemble(store, record)?);
        }
    }
    Ok(out)
}

/// An approver's decision.
#[derive(Clone, Debug)]
pub enum Verdict {
    Approve { comment: String },
    Reject { reason: String },
}

/// Records `who`'s decision on the request (audited as `actor`). An approval that would not
/// count under the two-person rule is refused (403) with the reason, and not recorded.
pub fn decide(
    store: &Store,
    rollout_id: &str,
    who: &Who,
    verdict: &Verdict,
    actor: &str,
    now: Timestamp,
) -> Result<Result<Request, Refusal>> {
    let operator = who.operator.as_str();
    let Some(request) = load(store, rollout_id)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "no rollout request {rollout_id} in the cache"
        ))));
    };
    let r = &request.record;
    if request.rejected() {
        return Ok(Err(Refusal::Conflict(format!(
            "rollout {rollout_id} was rejected: request it again"
        ))));
    }
    if request.approved() {
        return Ok(Err(Refusal::Conflict(format!(
            "rollout {rollout_id} is already approved"
        ))));
    }
    let (decision, comment) = match verdict {
        Verdict::Approve { comment } => {
            if request.counted.iter().any(|c| c.operator == operator) {
                return Ok(Err(Refusal::Conflict(format!(
                    "{operator} has already approved rollout {rollout_id}: approvals must come from distinct operators"
                ))));
            }
            let person = who.person(store)?;
            if let Some(why) =
                why_not_counted(r, &request.requester, &request.counted, operator, &person)
            {
                return Ok(Err(Refusal::Forbidden(why)));
            }
            ("approve", comment.trim().to_owned())
        }
        Verdict::Reject { reason } => ("reject", reason.trim().to_owned()),
    };
    if decision == "reject" && comment.is_empty() {
        return Ok(Err(field("reason", "a rejection says why")));
    }
    let current = stored_manifest(store, &r.release_id)?;
    if current.as_deref().map(sha256_hex).as_deref() != Some(r.manifest_sha256.as_str()) {
        return Ok(Err(Refusal::Conflict(format!(
            "the manifest of release {} changed (or was removed) since rollout {rollout_id} was requested: request it again",
            r.release_id
        ))));
    }
    if let Some(why) = prerequisites_changed(store, r)? {
        return Ok(Err(Refusal::Conflict(why)));
    }
    let mut body = serde_json::json!({ "comment": comment });
    if let Some(token_id) = &who.token_id {
        body["token_id"] = token_id.clone().into();
    }
    let release_id = r.release_id.clone();
    let request = store
        .atomically(|tx| {
            // The operator exists if their token does; one made by hand gets a row here.
            tx.ensure_operator(operator, "approver", now)?;
            tx.insert_approval(rollout_id, operator, now, decision, &body.to_string())?;
            let request = assemble(store, request.record)?;
            let view = request.view();
            tx.append_audit(&AuditEntry {
                time: now,
                actor: actor.to_owned(),
                action: format!("rollout.{decision}"),
                payload: serde_json::json!({
                    "rollout_id": rollout_id,
                    "release": release_id,
                    "comment": comment,
                    "status": view.status,
                    "token_id": who.token_id,
                }),
            })?;
            Ok(request)
        })
        .context("committing the decision")?;
    Ok(Ok(request))
}

/// Starts the engine run of an approved request in this process (a [`HostedRun`] that holds
/// when paused): writes the manifest as signed and the frozen plan under `dispatched/ID/`
/// beside the cache, and runs the engine with the spec `base` (the server's dispatch settings:
/// broker, time scale, ...) filled in with the request's; with `resume`, continues the rollout
/// from the cache's log instead of starting it.
pub fn host(
    store: &Store,
    request: &Request,
    cache: &Path,
    trust: &Path,
    base: &RunArgs,
    resume: bool,
) -> Result<HostedRun> {
    if let Some(why) = request.deferral() {
        anyhow::bail!("{why}");
    }
    let dir = cache.parent().unwrap_or(Path::new(".")).join("dispatched");
    let mut spec = run_spec(store, request, cache, trust, &dir, base)?;
    spec.resume = resume;
    super::hosting::host_rollout(&spec)
}

/// Writes what the engine needs to run an approved request into `dir` (the manifest as signed
/// and the frozen plan) and returns the run spec that names them: `base` with the request's
/// cache, release, plan, rollout id, requester, trust, approvers and change path.
fn run_spec(
    store: &Store,
    request: &Request,
    cache: &Path,
    trust: &Path,
    dir: &Path,
    base: &RunArgs,
) -> Result<RunArgs> {
    let r = &request.record;
    let bytes = stored_manifest(store, &r.release_id)?
        .with_context(|| format!("release {} is no longer in the cache", r.release_id))?;
    if sha256_hex(&bytes) != r.manifest_sha256 {
        anyhow::bail!(
            "the manifest of release {} changed since rollout {} was requested",
            r.release_id,
            r.rollout_id
        );
    }
    let dir: PathBuf = dir.join(&r.rollout_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest_path = dir.join("manifest.json");
    crate::files::write_file(&manifest_path, &bytes, crate::files::FileMode::Public)?;
    // The prerequisite releases' manifests as pinned, each beside the plan.
    if let Some(why) = prerequisites_changed(store, r)? {
        anyhow::bail!("{why}");
    }
    let mut prerequisite_files = Vec::new();
    for release in r.prerequisite_manifests.keys() {
        let bytes = stored_manifest(store, release)?
            .with_context(|| format!("prerequisite release {release} is no longer in the cache"))?;
        let path = dir.join(format!("prerequisite-{release}.json"));
        crate::files::write_file(&path, &bytes, crate::files::FileMode::Public)?;
        prerequisite_files.push(path);
    }
    let plan_path = dir.join("plan.json");
    let (waves, prerequisite_waves) = plan_file_waves(r)?;
    let mut plan = serde_json::json!({ "waves": waves });
    if !prerequisite_waves.is_empty() {
        plan["prerequisite_waves"] = serde_json::to_value(&prerequisite_waves)?;
    }
    if let Some(g) = &r.gates {
        plan["gates"] = serde_json::to_value(g)?;
    }
    crate::files::write_file(
        &plan_path,
        &serde_json::to_vec_pretty(&plan)?,
        crate::files::FileMode::Public,
    )?;
    let mut spec = base.clone();
    spec.db = Some(cache.to_owned());
    spec.release = manifest_path;
    spec.plan = Some(plan_path);
    for path in prerequisite_files {
        if !spec.prerequisite_manifests.contains(&path) {
            spec.prerequisite_manifests.push(path);
        }
    }
    spec.rollout_id = Some(r.rollout_id.clone());
    spec.operator = Some(r.requested_by.clone());
    spec.trust = Some(trust.to_owned());
    spec.approvers = request.approvers();
    spec.emergency_authoriser = None;
    spec.evidence = None;
    if let ChangePath::Emergency {
        authoriser,
        evidence,
        ..
    } = &r.path
    {
        // The engine matches names: the authoriser is the operator whose approval stood for
        // them under the two-person rule.
        let authoriser = request
            .authoriser_approval()
            .map_or_else(|| authoriser.clone(), |c| c.operator.clone());
        spec.emergency_authoriser = Some(authoriser);
        spec.evidence = Some(evidence.clone());
    }
    Ok(spec)
}

/// Approved requests whose rollout started and has not ended (completed, rolled back or
/// aborted), by the cache's replayable log: what a restarted server continues. A paused
/// rollout is unfinished: it is held for an operator.
pub fn unfinished(store: &Store) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for request in list(store)? {
        if !request.approved() {
            continue;
        }
        let log = store.rollout_log(&request.record.rollout_id)?;
        if log.is_empty() {
            continue;
        }
        let rollout = Rollout::replay(log).with_context(|| {
            format!("replaying the log of rollout {}", request.record.rollout_id)
        })?;
        if !matches!(
            rollout.phase(),
            Phase::Completed | Phase::RolledBack | Phase::Aborted { .. }
        ) {
            out.push(request);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_plans_list_a_consoles_plans_not_requests_and_name_an_unreadable_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("c.db")).expect("open");
        let wave =
            serde_json::json!([{"name": "canary", "device_ids": ["d1", "d2"], "soak_secs": 60}]);
        let plan = serde_json::json!({"rollout_waves": wave, "gates": GatePolicy::default()});
        crate::store::plans::record_plan(
            &store,
            "p-new",
            "r-1",
            &plan,
            "t",
            Timestamp::from_secs(20),
        )
        .expect("plan");
        crate::store::plans::record_plan(
            &store,
            "p-old",
            "r-1",
            &serde_json::json!({"rollout_waves": wave}),
            "t",
            Timestamp::from_secs(10),
        )
        .expect("plan");
        crate::store::plans::record_plan(
            &store,
            "p-bad",
            "r-1",
            &serde_json::json!({"waves": 3}),
            "t",
            Timestamp::from_secs(5),
        )
        .expect("plan");
        let request = RequestRecord {
            kind: KIND.to_owned(),
            rollout_id: "ro-1".into(),
            release_id: "r-1".into(),
            manifest_sha256: String::new(),
            requested_by: "ana".into(),
            requested_at: 30,
            path: ChangePath::Standard,
            waves: Vec::new(),
            chains: Vec::new(),
            prerequisite_manifests: BTreeMap::new(),
            gates: None,
            requested_token: None,
            request_seq: None,
            remediation: RemediationRecord::default(),
        };
        store
            .atomically(|tx| {
                tx.insert_request(
                    "ro-1",
                    "r-1",
                    Timestamp::from_secs(30),
                    &serde_json::to_string(&request)?,
                )
            })
            .expect("request");
        let (plans, unreadable) = saved_plans(&store).expect("listed");
        let ids: Vec<&str> = plans.iter().map(|p| p.plan_id.as_str()).collect();
        assert_eq!(
            ids,
            ["p-new", "p-old"],
            "newest first, the request left out"
        );
        assert_eq!(plans[0].devices(), 2);
        assert!(plans[0].gates.is_some());
        assert!(plans[1].gates.is_none());
        assert_eq!(unreadable, ["plan p-bad: it has no \"rollout_waves\""]);
        let trust = manifest::TrustedKeys::from_keys([]);
        let new = NewRequest {
            release_id: String::new(),
            rollout_id: None,
            path: None,
            authoriser: None,
            evidence: None,
            waves: None,
            prerequisite_waves: None,
            prerequisites: None,
            seed: None,
            finding_id: None,
            shape: None,
            checklist: None,
        };
        let missing = create_from_plan(
            &store,
            &trust,
            "p-none",
            new.clone(),
            &Who::named("ana"),
            "t",
            Timestamp::from_secs(40),
        )
        .expect("answered")
        .expect_err("no such plan");
        assert_eq!(missing, field("plan", "no saved plan p-none in the cache"));
        let bad = create_from_plan(
            &store,
            &trust,
            "p-bad",
            new.clone(),
            &Who::named("ana"),
            "t",
            Timestamp::from_secs(40),
        )
        .expect("answered")
        .expect_err("unreadable");
        assert_eq!(
            bad,
            field("plan", "plan p-bad: it has no \"rollout_waves\"")
        );
        let other = NewRequest {
            release_id: "r-2".into(),
            ..new
        };
        let wrong = create_from_plan(
            &store,
            &trust,
            "p-new",
            other,
            &Who::named("ana"),
            "t",
            Timestamp::from_secs(40),
        )
        .expect("answered")
        .expect_err("another release");
        assert_eq!(
            wrong,
            field("release_id", "plan p-new is for release r-1, not r-2")
        );
    }
}
