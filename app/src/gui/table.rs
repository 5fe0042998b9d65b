//! The fleet table: every device that passes the shared filter, virtualised (only the rows in
//! view are laid out, so a million rows cost what forty do), sortable by any column. Clicking a
//! device opens its detail.

use egui::RichText;
use egui_extras::{Column as TableColumn, TableBuilder};

use crate::gui::app::{ConsoleApp, UiCommand, age};
use crate::gui::model::state_name;
use crate::gui::query::Column;
use crate::gui::tokens;

/// Draws the table view.
pub fn table_ui(app: &mut ConsoleApp, ui: &mut egui::Ui) {
    let Some(model) = app.model.as_ref() else {
        return;
    };
    let now = app.now();
    ui.horizontal(|ui| {
        ui.label(
            RichText::new(format!(
                "{} of {} devices",
                app.derived.order.len(),
                model.len()
            ))
            .strong(),
        );
        ui.label(
            RichText::new("Click a header to sort, again to reverse · click a device to open it")
                .small()
                .color(tokens::MUTED),
        );
    });
    let mut commands = Vec::new();
    let mut sort = (app.state.sort, app.state.sort_descending);
    let mode = app.state.color_mode;
    let order = &app.derived.order;
    let classes = &app.derived.classes;
    let selected = app.selected;
    TableBuilder::new(ui)
        .id_salt("fleet-table")
        .striped(true)
        .resizable(true)
        .column(TableColumn::initial(150.0).at_least(90.0))
        .columns(
            TableColumn::initial(90.0).at_least(50.0),
            Column::ALL.len() - 2,
        )
        .column(TableColumn::remainder().at_least(80.0))
        .header(tokens::ROW_HEIGHT + 4.0, |mut header| {
            for c in Column::ALL {
                header.col(|ui| {
                    let arrow = match sort {
                        (s, false) if s == c => " (up)",
                        (s, true) if s == c => " (down)",
                        _ => "",
                    };
                    let r = ui.add(
                        egui::Button::new(RichText::new(format!("{}{arrow}", c.title())).strong())
                            .frame(false),
                    );
                    if r.clicked() {
                        sort = if sort.0 == c {
                            (c, !sort.1)
                        } else {
                            (c, false)
                        };
                    }
                });
            }
        })
        .body(|body| {
            body.rows(tokens::ROW_HEIGHT, order.len(), |mut row| {
                let i = order[row.index()] as usize;
                let d = &model.fleet.devices[i];
                let live = &model.live[i];
                row.set_selected(selected == Some(i));
                row.col(|ui| {
                    if ui
                        .add(egui::Button::selectable(selected == Some(i), d.id.as_str()))
                        .clicked()
                    {
                        commands.push(UiCommand::OpenDevice(i));
                    }
                });
                row.col(|ui| {
                    ui.label(d.model.as_str());
                });
                row.col(|ui| {
                    ui.label(d.hw_rev.as_str());
                });
                row.col(|ui| {
                    ui.label(d.firmware().map_or("-".to_owned(), |v| v.to_string()));
                });
                row.col(|ui| {
                    ui.label(d.region.as_str());
                });
                row.col(|ui| {
                    ui.label(d.depot.as_str());
                });
                row.col(|ui| {
                    ui.label(d.connectivity.as_str());
                });
                row.col(|ui| {
                    ui.label(d.customer_tier.as_str());
                });
                row.col(|ui| {
                    let class = usize::from(classes.get(i).copied().unwrap_or(0));
                    let text = match (live.update_state, live.progress_pct) {
                        (Some(s), Some(p)) if p < 100 => format!("{} {p} %", state_name(s)),
                        (Some(s), _) => state_name(s).to_owned(),
                        (None, _) => "no report".to_owned(),
                    };
                    tokens::swatch(ui, tokens::class_color(mode, class));
                    ui.label(text);
                });
                row.col(|ui| {
                    ui.label(d.battery_pct.map_or("-".to_owned(), |b| format!("{b} %")));
                });
                row.col(|ui| {
                    ui.label(age(now.secs_since(d.last_seen)));
                });
            });
        });
    if sort != (app.state.sort, app.state.sort_descending) {
        (app.state.sort, app.state.sort_descending) = sort;
    }
    for c in commands {
        app.send(c);
    }
}
