//! The fleet table: every device that passes the shared filter, virtualised (only the rows in
//! view are laid out, so a million rows cost what forty do), sortable by any column. Clicking a
//! device opens its detail. The "Columns" menu hides and shows columns (the device column
//! always shows); the choice persists in [`crate::gui::UiState`].

use egui::RichText;
use egui_extras::{Column as TableColumn, TableBuilder};

use crate::gui::app::{UiCommand, age};
use crate::gui::model::state_name;
use crate::gui::query::Column;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};

/// Draws the table view.
pub fn table_ui(cx: &ViewContext<'_>, out: &mut Commands, ui: &mut egui::Ui) {
    let Some(model) = cx.model else {
        return;
    };
    // "Last seen" on the clock the devices' own times are on (a simulated fleet's runs ahead
    // of the screen's: on the screen's clock every device read "0 s ago"), said in the header.
    let (now, clock_words) = crate::gui::warroom::fleet_now(
        cx.now,
        cx.clock_runs,
        model.last_message,
        cx.rollouts.and_then(|b| b.as_ref().ok()),
        crate::alerts::deliver::wall_ms(),
    );
    ui.horizontal(|ui| {
        ui.label(
            RichText::new(format!(
                "{} of {} devices",
                cx.derived.order.len(),
                model.len()
            ))
            .strong(),
        );
        ui.label(
            RichText::new(format!(
                "Click a header to sort, again to reverse · click a device to open it · last \
                 seen: {clock_words}"
            ))
            .small()
            .color(tokens::MUTED),
        );
    });
    let mut commands = Vec::new();
    ui.horizontal(|ui| {
        ui.menu_button("Columns", |ui| {
            for c in Column::ALL {
                let mut shown = c == Column::Id || !cx.state.hidden_columns.contains(&c);
                let r = ui
                    .add_enabled(c != Column::Id, egui::Checkbox::new(&mut shown, c.title()))
                    .on_disabled_hover_text("The device column is always shown");
                if r.changed() {
                    commands.push(UiCommand::SetColumnVisible(c, shown));
                }
            }
        })
        .response
        .on_hover_text("Choose the columns to show");
    });
    let visible = visible_columns(&cx.state.hidden_columns);
    // One bit per shown column: resized widths are kept per column set, because egui_extras
    // keeps widths by position.
    let shown_mask: u32 = visible.iter().map(|&c| 1 << (c as u32)).sum();
    let mut sort = (cx.state.sort, cx.state.sort_descending);
    let mode = cx.state.color_mode;
    let order = &cx.derived.order;
    let classes = &cx.derived.classes;
    let selected = cx.selected;
    let mut builder = TableBuilder::new(ui)
        .id_salt(("fleet-table", shown_mask))
        .striped(true)
        .resizable(true);
    for k in 0..visible.len() {
        builder = builder.column(if k + 1 == visible.len() {
            TableColumn::remainder().at_least(80.0)
        } else if k == 0 {
            TableColumn::initial(150.0).at_least(90.0)
        } else {
            TableColumn::initial(90.0).at_least(50.0)
        });
    }
    builder
        .header(tokens::ROW_HEIGHT + 4.0, |mut header| {
            for &c in &visible {
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
                for &c in &visible {
                    row.col(|ui| match c {
                        Column::Id => {
                            if ui
                                .add(egui::Button::selectable(selected == Some(i), d.id.as_str()))
                                .clicked()
                            {
                                commands.push(UiCommand::OpenDevice(i));
                            }
                        }
                        Column::Model => {
                            ui.label(d.model.as_str());
                        }
                        Column::HwRev => {
                            ui.label(d.hw_rev.as_str());
                        }
                        Column::Firmware => {
                            ui.label(d.firmware().map_or("-".to_owned(), |v| v.to_string()));
                        }
                        Column::Region => {
                            ui.label(d.region.as_str());
                        }
                        Column::Depot => {
                            ui.label(d.depot.as_str());
                        }
                        Column::Connectivity => {
                            ui.label(d.connectivity.as_str());
                        }
                        Column::Tier => {
                            ui.label(d.customer_tier.as_str());
                        }
                        Column::UpdateState => {
                            let class = usize::from(classes.get(i).copied().unwrap_or(0));
                            let text = match (live.update_state, live.progress_pct) {
                                (Some(s), Some(p)) if p < 100 => {
                                    format!("{} {p} %", state_name(s))
                                }
                                (Some(s), _) => state_name(s).to_owned(),
                                (None, _) => "no report".to_owned(),
                            };
                            // The swatch and its words on one line: a wrapped cell doubles
                            // the row's height and misaligns the table (issue 19).
                            ui.horizontal(|ui| {
                                tokens::swatch(ui, tokens::class_color(mode, class));
                                ui.add(egui::Label::new(text).truncate());
                            });
                        }
                        Column::Battery => {
                            ui.label(d.battery_pct.map_or("-".to_owned(), |b| format!("{b} %")));
                        }
                        Column::LastSeen => {
                            ui.label(age(now.secs_since(d.last_seen)));
                        }
                    });
                }
            });
        });
    if sort != (cx.state.sort, cx.state.sort_descending) {
        commands.push(UiCommand::SetSort {
            column: sort.0,
            descending: sort.1,
        });
    }
    out.extend(commands);
}

/// The columns to draw, in [`Column::ALL`] order: all but the hidden ones, and always the
/// device column (an old or hand-edited save cannot hide it).
pub fn visible_columns(hidden: &[Column]) -> Vec<Column> {
    Column::ALL
        .into_iter()
        .filter(|c| *c == Column::Id || !hidden.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_columns_drop_out_but_the_device_column_stays() {
        assert_eq!(visible_columns(&[]), Column::ALL);
        let shown = visible_columns(&[Column::Battery, Column::Id, Column::Model]);
        assert_eq!(shown.len(), Column::ALL.len() - 2);
        assert_eq!(shown[0], Column::Id);
        assert!(!shown.contains(&Column::Battery));
        assert!(!shown.contains(&Column::Model));
        assert!(shown.contains(&Column::LastSeen));
    }
}
