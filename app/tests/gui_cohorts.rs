//! UI tests of saved cohorts (issue 19): a search saved under a name in the cache, listed with
//! its device count, searched for as `cohort:NAME` from the search box, and still there after
//! the console restarts on the same cache.
#![allow(clippy::unwrap_used)]

mod common;

use common::{DEVICES, fixture, settle, wait_for};
use convoy::gui::{Backend, ConsoleApp, UiCommand, View};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};

fn search_field<'h>(h: &'h Harness<'static, ConsoleApp>) -> egui_kittest::Node<'h> {
    h.query_all_by_role(egui::Role::TextInput)
        .next()
        .expect("the search field comes first")
}

fn open_cohorts(cache: std::path::PathBuf) -> Harness<'static, ConsoleApp> {
    let (backend, _feed) = Backend::fixture(fixture(), cache);
    let mut h = common::console(backend, [1400.0, 1000.0]);
    settle(&mut h);
    h.state_mut().send(UiCommand::Show(View::Cohorts));
    settle(&mut h);
    h
}

#[test]
fn a_search_saved_as_a_cohort_is_listed_searched_for_and_kept_across_a_restart() {
    let fleet = fixture();
    let (model, rev) = (
        fleet.devices[0].model.clone(),
        fleet.devices[0].hw_rev.clone(),
    );
    let want = fleet
        .devices
        .iter()
        .filter(|d| d.model == model && d.hw_rev == rev)
        .count();
    assert!(want > 0 && want < DEVICES);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cohorts.db");
    // The console's cache (the fixture backend reads no fleet from it; cohorts live in it).
    convoy::store::Store::open(&cache).unwrap();
    let mut h = open_cohorts(cache.clone());
    wait_for(&mut h, "None saved yet.");
    // No search, no save.
    assert!(h.get_by_label("Save cohort").accesskit_node().is_disabled());
    search_field(&h).focus();
    h.run_steps(1);
    search_field(&h).type_text(&format!("model:{model} hw_rev:{rev}"));
    settle(&mut h);
    // A bad name is refused before anything is sent.
    h.get_by_label("Save the current search as:").focus();
    h.run_steps(1);
    h.get_by_label("Save the current search as:")
        .type_text("rev;C");
    settle(&mut h);
    assert!(h.get_by_label("Save cohort").accesskit_node().is_disabled());
    h.get_by_label("Save the current search as:").focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("Save the current search as:")
        .type_text("depot vans");
    settle(&mut h);
    h.get_by_label("Save cohort").click();
    settle(&mut h);
    wait_for(&mut h, "Saved cohort \"depot vans\"");
    h.get_by_label("depot vans");
    h.get_by_label(&format!("{want} devices"));
    // Searching for it gives the same devices as the search it saves.
    h.get_by_label("Show depot vans").click();
    settle(&mut h);
    assert_eq!(h.state().state.filter.text, "cohort:\"depot vans\"");
    assert!(h.state().state.filter.error().is_none());
    h.state_mut().send(UiCommand::Show(View::Table));
    wait_for(&mut h, &format!("{want} of {DEVICES} devices"));
    drop(h);

    // A new console on the same cache knows it.
    let mut h = open_cohorts(cache);
    wait_for(&mut h, &format!("{want} devices"));
    h.get_by_label("Delete saved depot vans").click();
    settle(&mut h);
    wait_for(&mut h, "Deleted cohort \"depot vans\"");
    wait_for(&mut h, "None saved yet.");
}
