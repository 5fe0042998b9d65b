//! The planner's drawing: the release to plan, the inputs (catalog, policy file), the form,
//! the plan (eligibility, canary, waves, timeline, gates) and saving or exporting it.
//!
//! It draws from [`super::PlannerState`] and queues what the user asks for; the planning, the
//! files and the cache are the state's workers' ([`super`]). Deliberately not here: parsing or
//! checking the form ([`super::form`]).

use convoy_core::fleet::Fleet;
use convoy_core::plan::Coverage;
use convoy_core::plan::policy::Cohort;
use convoy_core::time::Timestamp;
use egui::RichText;

use super::{Planned, PlannerCommand, PlannerState, TimelineBar, WaveChoice, status_label};
use crate::gui::app::UiCommand;
use crate::gui::releases::SignatureState;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext, text_row, text_row_sized};
use crate::ops::plans as ops;

fn time_text(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339)
}

/// A small text field named `name` for assistive technology and tests.
fn cell_edit(ui: &mut egui::Ui, value: &mut String, name: &str, hint: &str) {
    ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .desired_width(90.0),
    )
    .accessible_name(name);
}

/// Draws the planner view.
pub fn planner_ui(
    state: &mut PlannerState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    let mut commands = Vec::new();
    let fleet = cx.model.map(|m| &**m.fleet.devices.base());
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Planner");
        ui.label(
            RichText::new(
                "Plan a verified release against the loaded fleet: who is eligible and why, the canary and what it covers, the waves and when they run. Nothing is sent from here.",
            )
            .color(tokens::MUTED),
        );
        ui.colored_label(
            tokens::WARN,
            "Nothing is dispatched from here: save the plan and request it in Approvals (Ctrl+9), or export it for `convoy rollout run --plan FILE`.",
        );
        ui.add_space(6.0);
        release_ui(state, ui, &mut commands);
        ui.separator();
        inputs_ui(state, ui, &mut commands);
        let Some((release, source)) = state.chosen.clone() else {
            ui.label(RichText::new("Choose a release with a valid signature to plan it.").color(tokens::MUTED));
            return;
        };
        ui.separator();
        ui.label(
            RichText::new(format!("Plan for {} (manifest from {source})", release.id))
                .strong()
                .size(16.0),
        )
        .on_hover_text(match &state.planned {
            Some((_, Ok(p))) => format!(
                "Last planned in {:.0} ms on the planner thread",
                p.compute.as_secs_f64() * 1000.0
            ),
            _ => "Not planned yet".to_owned(),
        });
        form_ui(state, ui, &mut commands);
        if let Some(why) = &state.worker_error {
            ui.colored_label(tokens::BAD, why);
        }
        if let Some(e) = &state.form_error {
            ui.colored_label(tokens::BAD, format!("Not planned: {e}"));
        }
        let current = state.plan_is_current();
        if state.planning() || (!current && state.form_error.is_none()) {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label(if state.planned.is_some() {
                    "Re-planning…; the plan below is for the previous inputs."
                } else {
                    "Planning…"
                });
            });
        }
        match &state.planned {
            None => {}
            Some((_, Err(why))) => {
                ui.colored_label(tokens::BAD, format!("Could not plan: {why}"));
            }
            Some((_, Ok(planned))) => {
                plan_ui(planned, fleet, ui, &mut commands);
                ui.separator();
                save_ui(state, ui, current, &mut commands);
            }
        }
    });
    out.extend(commands);
}

fn release_ui(state: &mut PlannerState, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
    ui.label(RichText::new("Release").strong());
    egui::Grid::new("planner-sources")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row(
                ui,
                "Trust directory",
                &mut state.trust_dir,
                "keyset-N.json directory or a key directory",
            );
            text_row(
                ui,
                "Manifest directory",
                &mut state.manifest_dir,
                "also list the *.json manifests here (optional)",
            );
        });
    ui.horizontal(|ui| {
        if ui
            .add_enabled(state.listing.is_none(), egui::Button::new("Check releases"))
            .on_hover_text("Read the manifests again and check their signatures")
            .clicked()
        {
            commands.push(UiCommand::Planner(PlannerCommand::CheckReleases));
        }
        if state.listing.is_some() {
            ui.add(egui::Spinner::new());
        }
    });
    let mut chosen = None;
    match &state.releases {
        None => {
            ui.label("Reading the manifests…");
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, format!("Could not list the releases: {why}"));
        }
        Some(Ok(rows)) if rows.is_empty() => {
            ui.label(
                RichText::new("No manifests in the cache yet: sign one in Releases.")
                    .color(tokens::MUTED),
            );
        }
        Some(Ok(rows)) => {
            let mut untrusted = false;
            egui::Grid::new("planner-releases")
                .num_columns(6)
                .striped(true)
                .spacing([12.0, 3.0])
                .show(ui, |ui| {
                    for h in ["release", "version", "hardware", "signature", "source", ""] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for (i, c) in rows.iter().enumerate() {
                        let row = &c.row;
                        ui.label(&row.release_id);
                        ui.label(&row.version);
                        ui.label(&row.hardware);
                        let color = match row.state {
                            SignatureState::Valid => tokens::OK,
                            SignatureState::NotChecked(_) => tokens::WARN,
                            _ => tokens::BAD,
                        };
                        ui.label(RichText::new(row.state.label()).color(color).strong());
                        ui.label(&row.source);
                        if c.release.is_some() {
                            let selected = state
                                .chosen
                                .as_ref()
                                .is_some_and(|(r, s)| r.id == row.release_id && *s == row.source);
                            if ui
                                .add(egui::Button::selectable(
                                    selected,
                                    format!("Plan {}", row.release_id),
                                ))
                                .clicked()
                            {
                                chosen = Some(i);
                            }
                        } else {
                            ui.label(
                                RichText::new(format!("cannot be planned: {}", row.state.detail()))
                                    .color(tokens::BAD),
                            );
                            untrusted |= matches!(row.state, SignatureState::UntrustedKey(_));
                        }
                        ui.end_row();
                    }
                });
            // A first-run user's own key: trusted from the releases view, after its
            // fingerprint is confirmed (issue 19).
            if untrusted
                && ui
                    .button("Trust its key in Releases…")
                    .on_hover_text("Then Check releases here again")
                    .clicked()
            {
                commands.push(UiCommand::Show(crate::gui::app::View::Releases));
            }
        }
    }
    let pick = chosen.and_then(|i| match &state.releases {
        Some(Ok(rows)) => rows.get(i).cloned(),
        _ => None,
    });
    if let Some(c) = pick {
        state.choose(&c);
    }
}

fn inputs_ui(state: &mut PlannerState, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
    ui.label(RichText::new("Catalog and policy").strong());
    egui::Grid::new("planner-files")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row(
                ui,
                "Catalog files",
                &mut state.catalog,
                "prerequisite releases: JSON files, comma-separated (optional)",
            );
            text_row(
                ui,
                "Policy file",
                &mut state.policy_file,
                "\"planning\" and \"gates\" sections (optional: the built-in policy)",
            );
        });
    ui.horizontal(|ui| {
        if ui
            .add_enabled(
                state.loading.is_none(),
                egui::Button::new("Load catalog and policy"),
            )
            .on_hover_text(
                "Read the files; the wave and schedule fields below are reset from the policy",
            )
            .clicked()
        {
            commands.push(UiCommand::Planner(PlannerCommand::LoadInputs));
        }
        if state.loading.is_some() {
            ui.add(egui::Spinner::new());
        }
        ui.label(RichText::new(format!("Using {}", state.inputs.source)).color(tokens::MUTED));
    });
    if let Some(why) = &state.inputs_error {
        ui.colored_label(tokens::BAD, format!("Could not load: {why}"));
    }
}

fn cohort_text(c: &Cohort) -> String {
    match c {
        Cohort::Canary => "the canary".into(),
        Cohort::Depot { id: Some(id) } => format!("depot {id}"),
        Cohort::Depot { id: None } => "the canary's main depot".into(),
        Cohort::Region { id: Some(id) } => format!("region {id}"),
        Cohort::Region { id: None } => "the canary's main region".into(),
        Cohort::Percent { .. } => "a share of the devices".into(),
        Cohort::Filter { attribute, values } => format!("{attribute} in {}", values.join(", ")),
        Cohort::Query { query, .. } => format!("devices matching {query}"),
        Cohort::Rest => "everyone left".into(),
    }
}

/// What a wave takes, in the form's words.
fn choice_text(w: &super::WaveForm) -> String {
    match &w.choice {
        WaveChoice::Policy => cohort_text(&w.cohort),
        WaveChoice::Saved(_) => "a saved cohort".into(),
        WaveChoice::Search => "a search".into(),
    }
}

/// The wave's cohort cell: what it takes (the policy's cohort, a saved cohort of the cache or a
/// search) and, for the last two, which cohort or the search typed. The canary stays the canary.
fn wave_cohort_ui(
    ui: &mut egui::Ui,
    i: usize,
    w: &mut super::WaveForm,
    saved: Option<&Result<Vec<super::SavedChoice>, String>>,
) {
    if w.cohort == Cohort::Canary {
        ui.label(cohort_text(&w.cohort));
        return;
    }
    let listed: &[super::SavedChoice] = match saved {
        Some(Ok(rows)) => rows,
        _ => &[],
    };
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt(("planner-wave-kind", i))
            .selected_text(choice_text(w))
            .show_ui(ui, |ui| {
                if !matches!(w.cohort, Cohort::Query { .. }) {
                    ui.selectable_value(&mut w.choice, WaveChoice::Policy, cohort_text(&w.cohort))
                        .on_hover_text("As the policy gives it");
                }
                let is_saved = matches!(w.choice, WaveChoice::Saved(_));
                let pick = ui
                    .add_enabled(
                        !listed.is_empty() || is_saved,
                        egui::Button::selectable(is_saved, "a saved cohort"),
                    )
                    .on_hover_text("A named search kept in the cache (Cohorts view)")
                    .on_disabled_hover_text(
                        "No saved cohorts in the cache yet: save a search in Cohorts (Ctrl+4)",
                    );
                if pick.clicked()
                    && !is_saved
                    && let Some(first) = listed.first()
                {
                    w.choice = WaveChoice::Saved(first.name.clone());
                }
                ui.selectable_value(&mut w.choice, WaveChoice::Search, "a search")
                    .on_hover_text("Devices matching a fleet search, e.g. model:T300 hw_rev:C");
            })
            .response
            .accessible_name(format!("{} takes", w.name));
        match &mut w.choice {
            WaveChoice::Policy => {}
            WaveChoice::Saved(name) => {
                let shown = listed.iter().find(|c| c.name == *name).map_or_else(
                    || format!("{name} (not in the cache)"),
                    super::SavedChoice::label,
                );
                egui::ComboBox::from_id_salt(("planner-wave-cohort", i))
                    .selected_text(shown)
                    .show_ui(ui, |ui| {
                        for c in listed {
                            ui.selectable_value(name, c.name.clone(), c.label())
                                .on_hover_text(c.query.as_str());
                        }
                    })
                    .response
                    .accessible_name(format!("{} saved cohort", w.name));
            }
            WaveChoice::Search => {
                ui.add(
                    egui::TextEdit::singleline(&mut w.query)
                        .hint_text("model:T300 hw_rev:C")
                        .desired_width(220.0)
                        // The grid's column is as wide as last frame's: grow it, not wrap.
                        .min_size(egui::vec2(220.0, 0.0)),
                )
                .accessible_name(format!("{} search", w.name));
            }
        }
    });
}

fn form_ui(state: &mut PlannerState, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
    let f = &mut state.form;
    ui.label(RichText::new("Waves (edit to re-plan)").strong());
    let saved = state.saved_cohorts.as_ref();
    egui::Grid::new("planner-wave-form")
        .num_columns(5)
        .striped(true)
        .spacing([12.0, 4.0])
        .show(ui, |ui| {
            for h in ["wave", "takes", "max devices", "percent", "soak (hours)"] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (i, w) in f.waves.iter_mut().enumerate() {
                ui.label(&w.name);
                wave_cohort_ui(ui, i, w, saved);
                cell_edit(
                    ui,
                    &mut w.max_devices,
                    &format!("{} max devices", w.name),
                    "no limit",
                );
                if w.choice == WaveChoice::Policy && matches!(w.cohort, Cohort::Percent { .. }) {
                    cell_edit(ui, &mut w.pct, &format!("{} percent", w.name), "1-100");
                } else {
                    ui.label("");
                }
                cell_edit(
                    ui,
                    &mut w.soak_hours,
                    &format!("{} soak hours", w.name),
                    "1 cycle",
                );
                ui.end_row();
            }
        });
    ui.horizontal_wrapped(|ui| {
        let text = match saved {
            None => "Reading the saved cohorts…".to_owned(),
            Some(Err(why)) => format!("Saved cohorts could not be read: {why}"),
            Some(Ok(rows)) if rows.is_empty() => {
                "No saved cohorts in the cache yet: save a search in Cohorts (Ctrl+4) to make it a wave.".to_owned()
            }
            Some(Ok(rows)) => format!(
                "{} saved cohort(s) in the cache; a wave that is one takes the devices its search matches when it is planned.",
                rows.len()
            ),
        };
        let color = if matches!(saved, Some(Err(_))) {
            tokens::BAD
        } else {
            tokens::MUTED
        };
        ui.label(RichText::new(text).color(color));
        if ui
            .add_enabled(
                state.cohorts_listing.is_none(),
                egui::Button::new("Reload saved cohorts"),
            )
            .on_hover_text("Read the cache's saved cohorts again (convoy cohort save adds them too)")
            .clicked()
        {
            commands.push(UiCommand::Planner(PlannerCommand::ReloadCohorts));
        }
    });
    ui.add_space(4.0);
    egui::Grid::new("planner-schedule-form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row_sized(ui, "Canary size", &mut f.canary_size, "devices", 120.0);
            text_row_sized(ui, "Seed", &mut f.seed, "canary and wave order", 120.0);
            ui.label("Rate limit");
            ui.horizontal(|ui| {
                ui.radio_value(&mut f.rate.exponential, false, "Constant");
                ui.radio_value(&mut f.rate.exponential, true, "Exponential ramp");
            });
            ui.end_row();
            let per_minute = if f.rate.exponential {
                "Start per minute"
            } else {
                "Devices per minute"
            };
            text_row_sized(ui, per_minute, &mut f.rate.per_minute, "devices", 120.0);
            if f.rate.exponential {
                text_row_sized(ui, "Ramp factor", &mut f.rate.factor, "e.g. 2", 120.0);
                text_row_sized(
                    ui,
                    "Ramp every devices",
                    &mut f.rate.every_devices,
                    "devices offered",
                    120.0,
                );
                text_row_sized(
                    ui,
                    "Max per minute",
                    &mut f.rate.max_per_minute,
                    "devices",
                    120.0,
                );
            }
            text_row(
                ui,
                "Maintenance windows",
                &mut f.windows,
                "any time; or 22:00-06:00, or eu-central 01:00-05:00; * 22:00-06:00",
            );
            text_row_sized(
                ui,
                "Bandwidth cap (GB per hour)",
                &mut f.cap_gb_per_hour,
                "no cap",
                120.0,
            );
            text_row_sized(
                ui,
                "Data price per GB",
                &mut f.price_per_gb,
                "on metered links",
                120.0,
            );
        });
}

fn show_button(
    ui: &mut egui::Ui,
    fleet: Option<&Fleet>,
    name: String,
    devices: &[u32],
    accessible: &str,
    commands: &mut Vec<UiCommand>,
) {
    if ui
        .add_enabled(!devices.is_empty(), egui::Button::new("Show on map"))
        .accessible_name(accessible)
        .on_hover_text("Make these devices a cohort and show the map")
        .clicked()
        && let Some(fleet) = fleet
        && let Some((lat, lon)) = crate::gui::findings::centre(fleet, devices)
    {
        commands.push(UiCommand::CreateCohort {
            name,
            devices: devices.to_vec(),
        });
        commands.push(UiCommand::FocusMap {
            lat,
            lon,
            zoom: 4.0,
        });
    }
}

fn plan_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    eligibility_ui(planned, fleet, ui, commands);
    ui.separator();
    canary_ui(planned, fleet, ui, commands);
    ui.separator();
    waves_ui(planned, fleet, ui, commands);
    ui.separator();
    ui.label(RichText::new("Timeline").strong());
    ui.label(
        RichText::new(
            "Days from the plan's start. Solid: the wave's offers go out; light: its soak, after which the next wave may start if the gates agree.",
        )
        .color(tokens::MUTED),
    );
    timeline_ui(&planned.timeline, ui);
    ui.separator();
    gates_ui(planned, ui);
    if !plan.warnings.is_empty() {
        ui.separator();
        ui.label(RichText::new("Warnings").strong());
        for w in &plan.warnings {
            ui.colored_label(tokens::WARN, w);
        }
    }
}

fn eligibility_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    let e = &plan.eligibility;
    ui.label(RichText::new("Eligibility").strong());
    ui.label(format!(
        "{} devices, {} of a model {} is built for",
        e.devices, e.targeted, plan.release
    ));
    egui::Grid::new("planner-status")
        .num_columns(2)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for c in &e.by_status {
                ui.label(status_label(c.status));
                ui.label(c.devices.to_string());
                ui.end_row();
            }
        });
    if e.eligible_now_offline > 0 {
        ui.label(format!(
            "{} eligible now are offline; they are offered the release when they return.",
            e.eligible_now_offline
        ));
    }
    ui.add_space(4.0);
    ui.label(RichText::new("Reasons").strong());
    egui::Grid::new("planner-reasons")
        .num_columns(4)
        .striped(true)
        .spacing([12.0, 3.0])
        .show(ui, |ui| {
            for h in ["verdict", "devices", "reason", ""] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (r, devices) in e.by_reason.iter().zip(&planned.reason_devices) {
                ui.label(status_label(r.status));
                ui.label(r.devices.to_string());
                ui.label(&r.reason);
                show_button(
                    ui,
                    fleet,
                    format!("{}: {}", status_label(r.status), r.reason),
                    devices,
                    &format!("Show on map: {}", r.reason),
                    commands,
                );
                ui.end_row();
            }
        });
    ui.add_space(4.0);
    ui.label(RichText::new("Prerequisite chains").strong());
    if plan.chains.is_empty() {
        ui.label(
            RichText::new("none (a catalog of prerequisite releases gives chains)")
                .color(tokens::MUTED),
        );
    }
    for c in &plan.chains {
        ui.label(format!(
            "{} devices: {} -> {} ({} per device)",
            c.devices,
            c.releases.join(" -> "),
            plan.release,
            ops::bytes_text(c.bytes_per_device)
        ));
    }
}

fn canary_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let k = &planned.plan.canary;
    ui.horizontal(|ui| {
        ui.label(RichText::new("Canary").strong());
        show_button(
            ui,
            fleet,
            format!("Canary of {}", planned.release_id),
            &k.devices,
            "Show the canary on the map",
            commands,
        );
    });
    ui.label(format!(
        "Canary: {} of {} asked, from {} candidates ({} critical at peak excluded, {} outside the canary depot); {} offline, {} far from their depot",
        k.devices.len(),
        k.target_size,
        k.candidates,
        k.excluded_critical_at_peak,
        k.excluded_outside_depot,
        k.offline,
        k.far_from_depot
    ));
    let poor = k
        .strata
        .iter()
        .filter(|s| matches!(s.coverage, Coverage::Missing(_) | Coverage::BelowFloor(_)))
        .count();
    let meaningful = k
        .strata
        .iter()
        .filter(|s| s.coverage != Coverage::NotRequired)
        .count();
    if poor > 0 {
        ui.colored_label(
            tokens::BAD,
            format!(
                "Coverage is poor: {poor} of {meaningful} meaningful strata are missing or below their floor; the canary cannot test them."
            ),
        );
    } else {
        ui.colored_label(
            tokens::OK,
            format!("Every one of the {meaningful} meaningful strata is represented."),
        );
    }
    egui::Grid::new("planner-coverage")
        .num_columns(7)
        .striped(true)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for h in [
                "stratum",
                "value",
                "devices",
                "share",
                "eligible now",
                "canary",
                "coverage",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for s in k
                .strata
                .iter()
                .filter(|s| s.coverage != Coverage::NotRequired)
            {
                ui.label(&s.attribute);
                ui.label(&s.value);
                ui.label(s.devices.to_string());
                ui.label(format!("{:.1}%", s.share_pct));
                ui.label(s.eligible_now.to_string());
                ui.label(s.canary.to_string());
                match &s.coverage {
                    Coverage::Represented => ui.colored_label(tokens::OK, "represented"),
                    Coverage::BelowFloor(why) => {
                        ui.colored_label(tokens::WARN, format!("below floor: {why}"))
                    }
                    Coverage::Missing(why) => {
                        ui.colored_label(tokens::BAD, format!("missing: {why}"))
                    }
                    Coverage::NotRequired => ui.label(""),
                };
                ui.end_row();
            }
        });
    let minor = k.strata.len() - meaningful;
    if minor > 0 {
        ui.label(
            RichText::new(format!(
                "{minor} strata below the meaningful share are not required (in the exported JSON)."
            ))
            .color(tokens::MUTED),
        );
    }
}

fn waves_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    ui.label(RichText::new("Waves as planned").strong());
    egui::Grid::new("planner-waves")
        .num_columns(9)
        .striped(true)
        .spacing([12.0, 3.0])
        .show(ui, |ui| {
            for h in [
                "wave",
                "devices",
                "soak",
                "first offer",
                "last offer",
                "bytes",
                "data cost",
                "cohort",
                "",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for w in &plan.waves {
                ui.label(&w.name);
                ui.label(w.size.to_string());
                let soak = ui.label(ops::duration_text(w.soak_secs));
                if let Some(asked) = w.soak_raised_from_secs {
                    soak.on_hover_text(format!(
                        "raised from {} to one operating cycle",
                        ops::duration_text(asked)
                    ));
                }
                ui.label(time_text(w.timing.first_offer));
                ui.label(time_text(w.timing.last_offer));
                ui.label(ops::bytes_text(w.bytes));
                ui.label(format!("{:.2}", w.data_cost));
                // A prerequisite wave's cohort already names its chain.
                let mut cohort = w.cohort.clone();
                if w.waiting_on_conditions > 0 {
                    cohort = format!("{cohort} ({} wait on conditions)", w.waiting_on_conditions);
                }
                if w.timing.unscheduled > 0 {
                    cohort = format!(
                        "{cohort}; {} not scheduled within the horizon",
                        w.timing.unscheduled
                    );
                }
                ui.label(cohort);
                show_button(
                    ui,
                    fleet,
                    format!("Wave {} of {}", w.name, planned.release_id),
                    &w.devices,
                    &format!("Show wave {} on the map", w.name),
                    commands,
                );
                ui.end_row();
            }
        });
    let s = &plan.schedule;
    ui.add_space(4.0);
    ui.label(RichText::new("Schedule and bandwidth").strong());
    ui.label(format!("Rate: {}", ops::rate_text(&s.rate)));
    if s.windows.is_empty() {
        ui.label("Windows: any time");
    } else {
        ui.label(format!(
            "Windows: {} (local time)",
            s.windows
                .iter()
                .map(|w| format!("{} {}-{}", w.region, w.start, w.end))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    for b in &s.blackouts {
        ui.label(format!(
            "Blackout: {} {} to {} ({})",
            b.region, b.from, b.until, b.reason
        ));
    }
    for x in &s.exceptions {
        ui.label(format!(
            "Exception: {} {} to {} ({}): {} devices offered under it",
            x.region, x.from, x.until, x.reason, x.devices
        ));
    }
    ui.label(format!(
        "First offer {}, last offer {}",
        time_text(s.first_offer),
        time_text(s.last_offer)
    ));
    ui.label(format!(
        "Bandwidth: total {}, on metered links {} (data cost {:.2} at {:.2} per GB); peak {} per hour (cap {})",
        ops::bytes_text(s.total_bytes),
        ops::bytes_text(s.metered_bytes),
        s.data_cost,
        s.data_price_per_gb,
        ops::bytes_text(s.peak_bytes_per_hour),
        s.bandwidth_cap_bytes_per_hour
            .map_or_else(|| "none".to_owned(), ops::bytes_text)
    ));
}

/// The waves on a time axis: the offer period as a solid bar, the soak after it lighter.
fn timeline_ui(bars: &[TimelineBar], ui: &mut egui::Ui) {
    let end_hours = bars
        .iter()
        .filter_map(|b| b.soak_end_hours.or(b.offer_hours.map(|o| o.1)))
        .fold(1.0_f64, f64::max);
    let label_w = 170.0;
    let row_h = 22.0;
    let width = ui.available_width().clamp(400.0, 1200.0);
    let height = row_h * bars.len() as f32 + 26.0;
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, height), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let text_color = ui.visuals().text_color();
    let plot_left = rect.left() + label_w;
    // Room on the right for the last tick's label.
    let plot_w = (rect.width() - label_w - 28.0).max(50.0);
    let x_of = |h: f64| plot_left + (h / end_hours) as f32 * plot_w;
    // Day ticks (or fewer for long plans).
    let days = (end_hours / 24.0).ceil().max(1.0);
    let step = (days / 10.0).ceil().max(1.0);
    let mut d = 0.0;
    while d <= days {
        let x = x_of(d * 24.0);
        if x <= rect.right() {
            painter.line_segment(
                [
                    egui::pos2(x, rect.top()),
                    egui::pos2(x, rect.bottom() - 18.0),
                ],
                egui::Stroke::new(1.0, tokens::MUTED.gamma_multiply(0.4)),
            );
            painter.text(
                egui::pos2(x, rect.bottom() - 2.0),
                egui::Align2::CENTER_BOTTOM,
                format!("day {d:.0}"),
                egui::FontId::proportional(11.0),
                tokens::MUTED,
            );
        }
        d += step;
    }
    for (i, b) in bars.iter().enumerate() {
        let y = rect.top() + i as f32 * row_h;
        painter.text(
            egui::pos2(rect.left(), y + row_h / 2.0),
            egui::Align2::LEFT_CENTER,
            format!("{} ({})", b.name, b.devices),
            egui::FontId::proportional(13.0),
            text_color,
        );
        let Some((from, to)) = b.offer_hours else {
            continue;
        };
        let bar = |a: f64, z: f64| {
            egui::Rect::from_min_max(
                egui::pos2(x_of(a), y + 4.0),
                egui::pos2(x_of(z).max(x_of(a) + 2.0), y + row_h - 4.0),
            )
        };
        if let Some(soak) = b.soak_end_hours {
            painter.rect_filled(bar(to, soak), 2.0, tokens::OK.gamma_multiply(0.35));
        }
        painter.rect_filled(bar(from, to), 2.0, tokens::OK);
    }
    let summary = bars
        .iter()
        .map(|b| match (b.offer_hours, b.soak_end_hours) {
            (Some((a, z)), Some(s)) => format!(
                "{}: offered from hour {a:.1} to {z:.1}, soaks until hour {s:.1}",
                b.name
            ),
            _ => format!("{}: not scheduled", b.name),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let response = response.on_hover_text(summary);
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Plan timeline"));
}

fn gates_ui(planned: &Planned, ui: &mut egui::Ui) {
    ui.label(RichText::new("Gates (read-only)").strong());
    ui.label(
        RichText::new(
            "From the policy file's \"gates\" section, or the defaults; edit them there. Each is judged against the not-yet-updated baseline (docs/GATES.md).",
        )
        .color(tokens::MUTED),
    );
    // The plan's JSON carries the gates already serialised (made on the planner thread).
    let Some(obj) = planned
        .json
        .get("gates")
        .and_then(serde_json::Value::as_object)
    else {
        return;
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    ui.horizontal_wrapped(|ui| {
        for (k, v) in obj.iter().filter(|(_, v)| !v.is_object() && !v.is_array()) {
            ui.label(format!("{k}: {}", text(v)));
            ui.separator();
        }
        if let Some(strata) = obj.get("stratify_by").and_then(serde_json::Value::as_array) {
            ui.label(format!(
                "stratify_by: {}",
                strata.iter().map(text).collect::<Vec<_>>().join(", ")
            ));
        }
    });
    egui::Grid::new("planner-gates")
        .num_columns(6)
        .striped(true)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for h in [
                "metric",
                "enabled",
                "max ratio",
                "min abs diff",
                "baseline ratio",
                "on fail",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (k, g) in obj.iter().filter(|(_, v)| v.get("max_ratio").is_some()) {
                ui.label(k);
                for f in [
                    "enabled",
                    "max_ratio",
                    "min_abs_diff",
                    "baseline_ratio",
                    "on_fail",
                ] {
                    ui.label(text(&g[f]));
                }
                ui.end_row();
            }
        });
    for note in &planned.gate_notes {
        ui.colored_label(tokens::WARN, note);
    }
}

fn save_ui(
    state: &mut PlannerState,
    ui: &mut egui::Ui,
    current: bool,
    commands: &mut Vec<UiCommand>,
) {
    ui.label(RichText::new("Save or export").strong());
    let busy = state.saving.is_some();
    let mut browse = None;
    let mut export = false;
    let mut save = false;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(current && !busy, egui::Button::new("Save plan"))
            .on_hover_text("Store this plan in the cache with an audit entry; nothing is sent")
            .clicked()
        {
            save = true;
        }
        let l = ui.label("Plan file");
        ui.add(
            egui::TextEdit::singleline(&mut state.plan_file)
                .hint_text("where to write the plan JSON")
                .desired_width(360.0),
        )
        .labelled_by(l.id);
        if ui
            .add_enabled(state.browsing.is_none(), egui::Button::new("Browse…"))
            .on_hover_text("Pick the plan file with a save dialog")
            .clicked()
            && let Some((_, Ok(p))) = &state.planned
        {
            browse = Some(format!("{}.plan.json", p.release_id));
        }
        if ui
            .add_enabled(current && !busy, egui::Button::new("Export plan file"))
            .on_hover_text("Write the plan as `convoy plan --json` prints it, for `convoy rollout run --plan FILE`")
            .clicked()
        {
            export = true;
        }
        if busy {
            ui.add(egui::Spinner::new());
        }
    });
    if save {
        commands.push(UiCommand::Planner(PlannerCommand::Save));
    }
    if export {
        commands.push(UiCommand::Planner(PlannerCommand::Export));
    }
    if let Some(name) = browse {
        commands.push(UiCommand::Planner(PlannerCommand::Browse(name)));
    }
    match &state.saved {
        Some(Ok(text)) => {
            ui.colored_label(tokens::OK, text);
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, why);
        }
        None => {}
    }
}
