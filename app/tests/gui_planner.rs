//! UI tests of the planner's saved-cohort and search waves (issue 19): a cohort saved in a real
//! cache is picked as a wave in the Planner's form and the plan's wave holds exactly the
//! devices it matches; a policy file whose wave names an unknown cohort says so, naming it, and
//! one naming a saved cohort plans as `convoy plan --db` does; a typed search is a wave too.
#![allow(clippy::unwrap_used)] // Tests: a failure is the answer.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{NOW, click, fill, fixture, settle, wait_for, wait_for_label};
use convoy::gui::{Backend, ConsoleApp};
use convoy_core::fleet::Fleet;
use convoy_core::plan::policy::Cohort;
use convoy_core::plan::{Plan, PlanInput, PlanningPolicy, Status};
use convoy_core::release::ReleaseSpec;
use convoy_core::search::Query;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};

const COHORT: &str = "rev B units";
const SEARCH: &str = "model:T300 hw_rev:B";

/// A fresh cache in `dir` with the fixture fleet, the saved cohort [`COHORT`] ([`SEARCH`]) and
/// the fixture release signed with a key made in `dir/trust` (where the planner looks).
fn cache_with_cohort(dir: &Path, fleet: &Fleet) -> (PathBuf, ReleaseSpec) {
    let cache = dir.join("console.db");
    let mut store = convoy::store::Store::open(&cache).unwrap();
    store.replace_fleet(fleet, None).unwrap();
    convoy::ops::cohorts::save(&store, COHORT, SEARCH, "dana", NOW).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases/t300-fw-2.5.0.json");
    let spec: ReleaseSpec = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let trust = dir.join("trust");
    convoy::keys::generate(&trust, "gui test passphrase").unwrap();
    let manifest =
        convoy::ops::releases::sign_release(spec.clone(), None, &trust, "gui test passphrase", NOW)
            .unwrap();
    convoy::store::releases::record_release(&store, &manifest, "test", NOW).unwrap();
    (cache, spec)
}

/// The console on `cache` in the Planner, with `release` chosen and first planned.
fn planner(
    cache: &Path,
    fleet: &Fleet,
    release: &ReleaseSpec,
    size: [f32; 2],
) -> Harness<'static, ConsoleApp> {
    let (backend, _feed) = Backend::fixture(fleet.clone(), cache.to_path_buf());
    let mut h = common::console(backend, size);
    settle(&mut h);
    click(&mut h, "Planner");
    wait_for_label(&mut h, &format!("Plan {}", release.id));
    click(&mut h, &format!("Plan {}", release.id));
    wait_for(&mut h, "Canary: ");
    h
}

/// Runs frames until the plan shown is for the form as it is.
fn wait_current(h: &mut Harness<'static, ConsoleApp>) {
    for _ in 0..3000 {
        if h.state().planner.plan_is_current() && !h.state().planner.planning() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    panic!("the plan never caught up with the form");
}

/// The plan on screen.
fn shown_plan(h: &Harness<'static, ConsoleApp>) -> Plan {
    match &h.state().planner.planned {
        Some((_, Ok(p))) => p.plan.clone(),
        Some((_, Err(why))) => panic!("not planned: {why}"),
        None => panic!("no plan"),
    }
}

/// What `convoy plan` computes for the same inputs.
fn core_plan(fleet: &Fleet, release: &ReleaseSpec, policy: &PlanningPolicy) -> Plan {
    convoy_core::plan::plan(&PlanInput {
        fleet,
        release,
        catalog: &[],
        now: NOW,
        seed: 1,
        policy,
    })
    .unwrap()
}

/// The devices wave `w` of `plan` must hold: those planned (eligible now, or after
/// conditions), not in the canary, that `search` matches.
fn matching(plan: &Plan, fleet: &Fleet, search: &str) -> BTreeSet<u32> {
    let q = Query::parse(search).unwrap();
    let canary: BTreeSet<u32> = plan.canary.devices.iter().copied().collect();
    (0..fleet.devices.len() as u32)
        .filter(|&i| {
            matches!(
                plan.devices[i as usize].status,
                Status::EligibleNow | Status::AfterConditions
            ) && !canary.contains(&i)
                && q.matches(&fleet.devices[i as usize], &|_| None)
        })
        .collect()
}

/// The default policy with wave 1 (`region`) a query wave reading `query`.
fn policy_with(query: &str, saved: &[(&str, &str)]) -> PlanningPolicy {
    let mut policy = PlanningPolicy::default();
    policy.waves[1].cohort = Cohort::Query {
        query: query.to_owned(),
        saved: saved
            .iter()
            .map(|(n, q)| ((*n).to_owned(), (*q).to_owned()))
            .collect(),
    };
    policy
}

#[test]
fn a_saved_cohort_picked_as_a_wave_plans_exactly_its_devices() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (cache, release) = cache_with_cohort(dir.path(), &fleet);
    let mut h = planner(&cache, &fleet, &release, [1400.0, 3000.0]);
    let q = Query::parse(SEARCH).unwrap();
    let in_fleet = fleet
        .devices
        .iter()
        .filter(|d| q.matches(d, &|_| None))
        .count();
    assert!(in_fleet > 0, "the fixture fleet has T300 rev B devices");
    wait_for(&mut h, "1 saved cohort(s) in the cache");

    // The region wave becomes the saved cohort, picked by name with its device count.
    click(&mut h, "region takes");
    click(&mut h, "a saved cohort");
    let label = format!("{COHORT} ({in_fleet} devices)");
    h.get_by_label("region saved cohort");
    assert_eq!(
        h.get_by_label("region saved cohort")
            .accesskit_node()
            .value()
            .unwrap_or_default(),
        label
    );
    wait_current(&mut h);
    let plan = shown_plan(&h);
    let wave = &plan.waves[1];
    let want = matching(&plan, &fleet, SEARCH);
    assert!(
        !want.is_empty(),
        "some rev B units are eligible outside the canary"
    );
    assert!(want.len() <= 500, "the wave's cap of 500 does not bind");
    assert_eq!(wave.devices.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!(wave.size, want.len());
    // The same plan as `convoy plan --db` on a policy file naming the cohort.
    let expected = core_plan(
        &fleet,
        &release,
        &policy_with(&format!("cohort:\"{COHORT}\""), &[(COHORT, SEARCH)]),
    );
    assert_eq!(plan.waves, expected.waves);
    // The plan's wave text names the cohort and its search.
    h.get_by_label_contains(&format!(
        "devices matching cohort:\"{COHORT}\"; cohort \"{COHORT}\" = {SEARCH}"
    ));

    // A typed search is a wave too; an unknown cohort in it is named, and the plan stays.
    click(&mut h, "fleet-10pct takes");
    click(&mut h, "a search");
    fill(&mut h, "fleet-10pct search", "cohort:nobody");
    let refused = common::label_text(&h, "Not planned: fleet-10pct search");
    assert_eq!(
        refused,
        "Not planned: fleet-10pct search: `cohort:nobody`: there is no saved cohort named \"nobody\""
    );
    fill(
        &mut h,
        "fleet-10pct search",
        &format!("region:eu-* -cohort:\"{COHORT}\""),
    );
    wait_current(&mut h);
    assert!(h.query_by_label_contains("Not planned").is_none());
    let plan = shown_plan(&h);
    let eu: BTreeSet<u32> = matching(&plan, &fleet, "region:eu-*")
        .difference(&want)
        .copied()
        .collect();
    assert!(!eu.is_empty(), "some eligible devices are in eu regions");
    assert_eq!(
        plan.waves[2]
            .devices
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        eu
    );

    // Saved in the cache, the plan's JSON keeps the search the wave was planned from.
    click(&mut h, "Save plan");
    wait_for(&mut h, "Saved plan ");
    let store = convoy::store::Store::open_existing(&cache).unwrap();
    let plan_id = convoy::gui::planner::plan_id(&release.id, NOW);
    let stored = convoy::store::plans::stored_plan(&store, &plan_id)
        .unwrap()
        .unwrap();
    let text = stored.to_string();
    assert!(text.contains(SEARCH), "{text}");
}

#[test]
fn a_policy_file_naming_a_cohort_plans_and_an_unknown_one_is_named() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (cache, release) = cache_with_cohort(dir.path(), &fleet);
    let mut h = planner(&cache, &fleet, &release, [1400.0, 3000.0]);
    let policy_file = dir.path().join("policy.json");
    let write = |name: &str| {
        let doc = serde_json::json!({"version": 1, "planning": {"waves": [
            {"name": "canary", "cohort": {"kind": "canary"}},
            {"name": "vans", "cohort": {"kind": "query", "query": format!("cohort:\"{name}\"")}},
            {"name": "rest", "cohort": {"kind": "rest"}},
        ]}});
        std::fs::write(&policy_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    };
    write("pilots");
    fill(&mut h, "Policy file", &policy_file.display().to_string());
    click(&mut h, "Load catalog and policy");
    wait_for(&mut h, "Could not load: ");
    let text = common::label_text(&h, "Could not load: ");
    assert!(
        text.contains("there is no saved cohort named \"pilots\""),
        "{text}"
    );
    assert!(text.contains("wave \"vans\""), "{text}");
    assert!(text.contains(&cache.display().to_string()), "{text}");
    assert!(!text.contains("Some(") && !text.contains("Err("), "{text}");
    // The plan of the inputs before stays.
    assert!(h.state().planner.planned.is_some());

    // Naming the saved cohort, the file plans as `convoy plan --db` plans it.
    write(COHORT);
    click(&mut h, "Load catalog and policy");
    wait_for(&mut h, "Using the policy file");
    assert!(h.query_by_label_contains("Could not load").is_none());
    wait_current(&mut h);
    let plan = shown_plan(&h);
    let mut policy = PlanningPolicy::default();
    policy.waves = vec![
        convoy_core::plan::policy::WaveSpec::new("canary", Cohort::Canary),
        convoy_core::plan::policy::WaveSpec::new(
            "vans",
            Cohort::Query {
                query: format!("cohort:\"{COHORT}\""),
                saved: [(COHORT.to_owned(), SEARCH.to_owned())].into(),
            },
        ),
        convoy_core::plan::policy::WaveSpec::new("rest", Cohort::Rest),
    ];
    let expected = core_plan(&fleet, &release, &policy);
    assert_eq!(plan.waves, expected.waves);
    assert_eq!(
        plan.waves[1]
            .devices
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        matching(&plan, &fleet, SEARCH)
    );
    // The form shows the wave as the saved cohort it is.
    assert!(
        h.get_by_label("vans saved cohort")
            .accesskit_node()
            .value()
            .unwrap_or_default()
            .starts_with(&format!("{COHORT} ("))
    );
}

/// The form with a saved-cohort wave and a search wave, as an image.
#[test]
fn snapshot_of_the_planner_form_with_a_cohort_wave() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (cache, release) = cache_with_cohort(dir.path(), &fleet);
    let mut h = planner(&cache, &fleet, &release, [1280.0, 1000.0]);
    wait_for(&mut h, "1 saved cohort(s) in the cache");
    click(&mut h, "region takes");
    click(&mut h, "a saved cohort");
    click(&mut h, "fleet-10pct takes");
    click(&mut h, "a search");
    fill(&mut h, "fleet-10pct search", "region:eu-* firmware:<2.5");
    wait_current(&mut h);
    // Temporary paths would change the image from run to run.
    h.state_mut().planner.trust_dir = "trust".into();
    // A click beside the fields leaves none focused (no text cursor in the image), and the
    // pointer rests on a plain label, so no button shows hovered.
    h.get_by_label("Eligibility").click();
    settle(&mut h);
    h.get_by_label("Eligibility").hover();
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("planner_cohort_wave");
}
