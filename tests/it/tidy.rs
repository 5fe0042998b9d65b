//! The tidy test: reads the source tree and fails when a layering rule of ARCHITECTURE.md is
//! broken (rust-analyzer's `xtask/src/tidy.rs` does the same; cheaper than a review).
//!
//! `app/` has floors, from top to bottom: front ends (`cli.rs`, `cmd/`, `gui/`, `serve/`) →
//! use cases (`ops/`) → engine → link and store → `convoy_core`. Imports only go down, only `store/` speaks SQL,
//! and only `cli.rs` and `cmd/` see the command line's modules.
//!
//! Some files still break a rule (issue 17 moves them); they are listed in [`KNOWN`] with the
//! number of offending references. The test fails when a file not listed breaks a rule, when
//! a listed file breaks it more often, and when a listed file no longer breaks it (so the
//! list only shrinks: remove the line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A layering rule: files under `scope` (a path prefix inside `app/src/`) must not refer to
/// any of `forbidden`, except files under one of `allowed`.
struct Rule {
    name: &'static str,
    /// Path prefixes (relative to `app/src/`) the rule applies to; empty means every file.
    scope: &'static [&'static str],
    /// Path prefixes exempt from the rule.
    allowed: &'static [&'static str],
    forbidden: &'static [Needle],
    /// Whether test modules (`#[cfg(test)]` at the end of a file, by convention) are exempt.
    tests_exempt: bool,
}

/// What a rule looks for in a line of code (comments are skipped).
#[derive(Clone, Copy)]
enum Needle {
    /// A module of this crate, as `crate::NAME` or inside `use crate::{...}`.
    Module(&'static str),
    /// A word, such as an external crate's name or a method call.
    Word(&'static str),
}

const RULES: &[Rule] = &[
    Rule {
        name: "only cli.rs and cmd/ use the command line's modules (crate::cmd)",
        scope: &[],
        allowed: &["cli.rs", "cmd/"],
        forbidden: &[Needle::Module("cmd")],
        tests_exempt: false,
    },
    Rule {
        name: "only store/ speaks SQL (rusqlite)",
        scope: &[],
        allowed: &["store/"],
        forbidden: &[Needle::Word("rusqlite")],
        tests_exempt: false,
    },
    Rule {
        name: "only store/ reaches the cache's connection (Store::conn)",
        scope: &[],
        allowed: &["store/"],
        forbidden: &[Needle::Word(".conn()")],
        tests_exempt: false,
    },
    Rule {
        name: "link/ sits below the front ends and the engine",
        scope: &["link/"],
        allowed: &[],
        forbidden: &[
            Needle::Module("serve"),
            Needle::Module("gui"),
            Needle::Module("cmd"),
            Needle::Module("engine"),
            Needle::Module("cli"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "store/ sits below everything but core",
        scope: &["store/"],
        allowed: &[],
        forbidden: &[
            Needle::Module("serve"),
            Needle::Module("gui"),
            Needle::Module("cmd"),
            Needle::Module("engine"),
            Needle::Module("link"),
            Needle::Module("cli"),
            Needle::Module("sim"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "engine/ sits below the front ends",
        scope: &["engine/"],
        allowed: &[],
        forbidden: &[
            Needle::Module("serve"),
            Needle::Module("gui"),
            Needle::Module("cmd"),
            Needle::Module("cli"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "ops/ sits below the front ends",
        scope: &["ops/"],
        allowed: &[],
        forbidden: &[
            Needle::Module("serve"),
            Needle::Module("gui"),
            Needle::Module("cmd"),
            Needle::Module("cli"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "remote/ sits below the console and beside the server (a client of its API)",
        scope: &["remote/"],
        allowed: &[],
        forbidden: &[
            Needle::Module("gui"),
            Needle::Module("serve"),
            Needle::Module("cmd"),
            Needle::Module("cli"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "alerts/ and prom.rs sit below the front ends and the engine (each of them uses them)",
        scope: &["alerts/", "prom.rs"],
        allowed: &[],
        forbidden: &[
            Needle::Module("serve"),
            Needle::Module("gui"),
            Needle::Module("cmd"),
            Needle::Module("engine"),
            Needle::Module("cli"),
            Needle::Module("remote"),
        ],
        tests_exempt: false,
    },
    Rule {
        name: "only gui/ and cmd/gui.rs use the console (crate::gui)",
        scope: &[],
        allowed: &["gui/", "cmd/gui.rs"],
        forbidden: &[Needle::Module("gui")],
        tests_exempt: false,
    },
    Rule {
        name: "files are written atomically through files.rs",
        scope: &[],
        // Resumable downloads keep their `.part` (and entity tag) files on purpose; the fuzz
        // seed writer is a tool run by hand.
        allowed: &["files.rs", "link/http/client.rs", "fuzz_targets.rs"],
        forbidden: &[
            Needle::Word("fs::write("),
            Needle::Word("fs::rename("),
            Needle::Word("File::create("),
        ],
        tests_exempt: true,
    },
];

/// Files allowed to break a rule for now, with the number of offending lines (rule, path,
/// lines), sorted by rule then path. Empty since issue 17: every rule holds; a new break needs
/// a reason written here.
const KNOWN: &[(&str, &str, usize)] = &[];

#[test]
fn layering_rules_of_architecture_md_hold_issue_17() {
    let _turn = convoy_e2e::shared();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut found: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("read source");
        for rule in RULES {
            let in_scope = rule.scope.is_empty() || rule.scope.iter().any(|s| rel.starts_with(s));
            if !in_scope || rule.allowed.iter().any(|a| rel.starts_with(a)) {
                continue;
            }
            let code = if rule.tests_exempt {
                text.split("#[cfg(test)]").next().unwrap_or("")
            } else {
                &text
            };
            let hits = offending_lines(code, rule.forbidden);
            if hits > 0 {
                found.insert((rule.name, rel.clone()), hits);
            }
        }
    }
    let mut problems = Vec::new();
    for ((rule, file), hits) in &found {
        match KNOWN.iter().find(|(r, f, _)| r == rule && f == file) {
            None => problems.push(format!("{file}: {hits} line(s) break \"{rule}\"")),
            Some((_, _, allowed)) if hits > allowed => problems.push(format!(
                "{file}: {hits} line(s) break \"{rule}\", {allowed} known: do not add more"
            )),
            Some(_) => {}
        }
    }
    for (rule, file, allowed) in KNOWN {
        match found.get(&(*rule, (*file).to_owned())) {
            None => problems.push(format!(
                "{file} no longer breaks \"{rule}\": remove it from KNOWN in tests/it/tidy.rs"
            )),
            Some(hits) if hits < allowed => problems.push(format!(
                "{file} breaks \"{rule}\" {hits} times now, {allowed} known: lower it in KNOWN"
            )),
            Some(_) => {}
        }
    }
    let total: usize = found.values().sum();
    eprintln!(
        "tidy: {total} line(s) against the floors in {} file(s)",
        found.len()
    );
    if !problems.is_empty() {
        // The list as it stands, to paste into KNOWN once the new lines are justified.
        let listing: Vec<String> = found
            .iter()
            .map(|((rule, file), hits)| format!("    ({rule:?}, {file:?}, {hits}),"))
            .collect();
        eprintln!("as found:\n{}", listing.join("\n"));
    }
    assert!(
        problems.is_empty(),
        "layering rules broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_core_reads_no_clock_no_entropy_and_depends_on_no_io_crate() {
    let _turn = convoy_e2e::shared();
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core");
    let manifest = std::fs::read_to_string(core.join("Cargo.toml")).expect("core manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .map_or("", |rest| rest.split("\n[").next().unwrap_or(""));
    for io in [
        "egui",
        "eframe",
        "tokio",
        "rusqlite",
        "rumqttc",
        "reqwest",
        "hyper",
        "getrandom",
        "rand",
    ] {
        let listed = deps.lines().any(|l| {
            let name = l.split(['=', '.', ' ']).next().unwrap_or("").trim();
            name == io
        });
        assert!(!listed, "convoy_core depends on {io}");
    }
    let mut files = Vec::new();
    rust_files(&core.join("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        // Test modules (at the end of a file, by convention) may time themselves.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for needle in [
            "SystemTime::now",
            "Instant::now",
            "thread_rng",
            "OsRng",
            "getrandom",
        ] {
            assert_eq!(
                offending_lines(code, &[Needle::Word(needle)]),
                0,
                "{} uses {needle}: the core takes `now` and a seed from its caller",
                file.display()
            );
        }
    }
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The number of code lines (comments and the insides of string literals skipped; a
/// `use crate::{...}` group read as one statement) that refer to one of `needles`.
fn offending_lines(text: &str, needles: &[Needle]) -> usize {
    let mut hits = 0;
    let mut group: Option<String> = None;
    for line in text.lines() {
        let code = without_strings(line.split("//").next().unwrap_or(""));
        let code = code.trim();
        if code.is_empty() {
            continue;
        }
        // `use crate::{a, b::{c}, d};` may span lines: gather it, then look at its top-level
        // module names.
        if let Some(g) = group.as_mut() {
            g.push_str(code);
            if code.contains(';') {
                let whole = group.take().unwrap_or_default();
                hits += usize::from(group_hits(&whole, needles));
            }
            continue;
        }
        if let Some(rest) = code
            .strip_prefix("use crate::{")
            .or_else(|| code.strip_prefix("pub use crate::{"))
        {
            if code.contains(';') {
                hits += usize::from(group_hits(rest, needles));
            } else {
                group = Some(rest.to_owned());
            }
            continue;
        }
        if needles.iter().any(|n| matches(code, *n)) {
            hits += 1;
        }
    }
    hits
}

/// `line` with the contents of its string literals removed: a test that names a crate in a
/// string (to check another file's source, say) does not use it.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push(c);
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// Whether a `use crate::{...}` group names one of `needles` at its top level.
fn group_hits(group: &str, needles: &[Needle]) -> bool {
    let mut depth = 0usize;
    let mut top = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => top.push(c),
            _ => {}
        }
    }
    top.split(',').any(|item| {
        let head = item.trim().split("::").next().unwrap_or("").trim();
        needles.iter().any(|n| match n {
            Needle::Module(m) => head == *m,
            Needle::Word(w) => item.contains(w),
        })
    })
}

fn matches(code: &str, needle: Needle) -> bool {
    match needle {
        Needle::Module(m) => {
            let pattern = format!("crate::{m}");
            code.match_indices(&pattern).any(|(at, _)| {
                let after = code[at + pattern.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        }
        Needle::Word(w) => code.contains(w),
    }
}

/// Issue 21: a device builds the agent, the device-facing link and the core, never the console,
/// the server or the cache. The agent's and the link's manifests name none of their crates (the
/// core's is checked above), so `cargo tree -p convoy_agent` holds no egui, rusqlite or axum.
#[test]
fn the_agent_builds_neither_the_console_nor_the_server() {
    let _turn = convoy_e2e::shared();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for package in ["app/agent", "app/devlink"] {
        let manifest = std::fs::read_to_string(root.join(package).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{package}/Cargo.toml: {e}"));
        let deps = manifest
            .split("\n[dependencies]")
            .nth(1)
            .map_or("", |rest| rest.split("\n[").next().unwrap_or(""));
        let names: Vec<&str> = deps
            .lines()
            .map(|l| l.split(['=', '.', ' ']).next().unwrap_or("").trim())
            .filter(|n| !n.is_empty() && !n.starts_with('#'))
            .collect();
        assert!(names.contains(&"convoy_core"), "{package}: {names:?}");
        for heavy in [
            "convoy",
            "egui",
            "eframe",
            "egui_extras",
            "egui_plot",
            "walkers",
            "rfd",
            "image",
            "rusqlite",
            "axum",
            "rumqttd",
            "reqwest",
        ] {
            assert!(
                !names.contains(&heavy),
                "{package} depends on {heavy}: a device must not build the console, the server or the cache"
            );
        }
    }
}

/// Views that still take the whole console (`fn *_ui` with a `ConsoleApp` parameter) rather
/// than a `ViewContext` and their own state: (file, how many such functions, why). Issue 17
/// began with 22 (17 `&mut`, 5 `&`; the issue counted the 16 `&mut` written on one line); none
/// is left, and a new one needs a reason written here.
const VIEWS_ON_CONSOLE_APP: &[(&str, usize, &str)] = &[];

/// Issue 17: a view reads a narrow `ViewContext` and sends commands; only `gui/app.rs` (the
/// shell that owns the state and drains the commands) hands a view the whole `ConsoleApp`.
#[test]
fn views_take_a_view_context_not_the_whole_console_issue_17() {
    let _turn = convoy_e2e::shared();
    let gui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src/gui");
    let mut files = Vec::new();
    rust_files(&gui, &mut files);
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let rel = format!(
            "gui/{}",
            file.strip_prefix(&gui)
                .expect("under gui")
                .to_string_lossy()
                .replace('\\', "/")
        );
        if rel == "gui/app.rs" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let n = view_functions_on_console_app(code);
        if n > 0 {
            found.insert(rel, n);
        }
    }
    let mut problems = Vec::new();
    for (file, n) in &found {
        match VIEWS_ON_CONSOLE_APP.iter().find(|(f, _, _)| f == file) {
            None => problems.push(format!(
                "{file}: {n} view function(s) take ConsoleApp: give them a ViewContext and Commands"
            )),
            Some((_, known, _)) if n > known => problems.push(format!(
                "{file}: {n} view function(s) take ConsoleApp, {known} known: do not add more"
            )),
            Some((_, known, _)) if n < known => problems.push(format!(
                "{file}: {n} view function(s) take ConsoleApp now, {known} known: lower it in VIEWS_ON_CONSOLE_APP"
            )),
            Some(_) => {}
        }
    }
    for (file, _, _) in VIEWS_ON_CONSOLE_APP {
        if !found.contains_key(*file) {
            problems.push(format!(
                "{file} no longer has a view on ConsoleApp: remove it from VIEWS_ON_CONSOLE_APP"
            ));
        }
    }
    eprintln!(
        "tidy: {} view function(s) on ConsoleApp in {} file(s)",
        found.values().sum::<usize>(),
        found.len()
    );
    assert!(problems.is_empty(), "views:\n{}", problems.join("\n"));
}

/// Issue 17: views draw and queue commands; the console starts the threads and does the I/O
/// they ask for (through the views' state, the backend or `ops/`). No `fn *_ui` in `gui/` names
/// a thread, a spawn, the cache's store or the file system, or keeps an owned egui context (what
/// a worker needs to wake the UI: at the start of issue 17 six views took one to start theirs).
#[test]
fn views_start_no_thread_and_touch_no_file_or_cache_issue_17() {
    let _turn = convoy_e2e::shared();
    let gui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src/gui");
    let mut files = Vec::new();
    rust_files(&gui, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (name, body) in view_function_bodies(code) {
            for line in body.lines() {
                let line = without_strings(line.split("//").next().unwrap_or(""));
                for needle in [
                    "spawn",
                    "thread::",
                    "Store::",
                    "fs::",
                    "File::",
                    "ctx().clone()",
                ] {
                    if line.contains(needle) {
                        problems.push(format!(
                            "{}: {name} uses {needle}: send a command instead",
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "views:\n{}", problems.join("\n"));
}

/// The name and body of every function named `*_ui` in `code` (braces matched; the code of this
/// project has no brace in a character literal).
fn view_function_bodies(code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("fn ") {
        let after = &rest[at + 3..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = after[..name_len].to_owned();
        rest = &after[name_len..];
        if !name.ends_with("_ui") {
            continue;
        }
        let Some(open) = rest.find('{') else {
            break;
        };
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((name, rest[open..end].to_owned()));
        rest = &rest[end..];
    }
    out
}

/// The functions named `*_ui` in `code` with a parameter of type `ConsoleApp` (by reference or
/// not), their signatures read across lines.
fn view_functions_on_console_app(code: &str) -> usize {
    let mut count = 0;
    let mut rest = code;
    while let Some(at) = rest.find("fn ") {
        let after = &rest[at + 3..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        rest = &after[name_len..];
        if !name.ends_with("_ui") {
            continue;
        }
        // The parameters: from the first `(` to the `)` that closes it.
        let Some(open) = rest.find('(') else {
            break;
        };
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params = &rest[open..end];
        if params.match_indices("ConsoleApp").any(|(i, _)| {
            !params[i + "ConsoleApp".len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        }) {
            count += 1;
        }
        rest = &rest[end..];
    }
    count
}

#[test]
fn view_functions_are_found_across_lines_and_only_with_console_app() {
    let _turn = convoy_e2e::shared();
    let code = "pub fn map_ui(map: &mut MapState, cx: &ViewContext<'_>, ui: &mut egui::Ui) {}\n\
                fn body_ui(\n    app: &mut ConsoleApp,\n    ui: &mut egui::Ui,\n) {}\n\
                pub fn warroom_ui(app: &ConsoleApp, ui: &mut egui::Ui) {}\n\
                pub fn sync(app: &mut ConsoleApp, ctx: &egui::Context) {}\n\
                fn other_ui(app: &ConsoleAppLike) {}";
    assert_eq!(view_functions_on_console_app(code), 2);
    let bodies = view_function_bodies(
        "fn a_ui(ui: &mut Ui) { if x { spawn(); } }\nfn helper() { fs::write(); }\nfn b_ui() {}",
    );
    let names: Vec<&str> = bodies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_ui", "b_ui"]);
    assert_eq!(bodies[0].1, "{ if x { spawn(); } }");
}

/// The first statement every end-to-end test must start with: its turn (tests/lib.rs, `alone`
/// and `shared`).
const TURNS: [&str; 2] = [
    "let _turn = convoy_e2e::alone();",
    "let _turn = convoy_e2e::shared();",
];

/// The tests of `text` (functions under `#[test]` or `#[tokio::test...]`): each one's name and
/// its first statement (up to its first `;`), trimmed.
fn tests_and_first_statements(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let attr = line.trim();
        if attr != "#[test]" && !attr.starts_with("#[tokio::test") {
            continue;
        }
        // The function after the attribute (other attributes and comments may come between).
        let Some(offset) = lines[i + 1..].iter().position(|l| {
            let l = l.trim_start();
            l.starts_with("fn ") || l.starts_with("async fn ")
        }) else {
            found.push((
                format!("(a test attribute on line {})", i + 1),
                String::new(),
            ));
            continue;
        };
        let rest = lines[i + 1 + offset..].join("\n");
        let name = rest
            .trim_start()
            .trim_start_matches("async ")
            .trim_start_matches("fn ")
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_owned();
        let first = rest
            .split_once('{')
            .map(|(_, body)| first_statement(body))
            .unwrap_or_default();
        found.push((name, first));
    }
    found
}

/// The first statement of `body` (a function's text after its `{`), trimmed, with its `;`:
/// items before it (`use`, `const`, `static`) are skipped, as they are not statements.
fn first_statement(body: &str) -> String {
    let mut rest = body;
    loop {
        // The end of this statement or item: its first `;` outside brackets.
        let mut depth = 0i32;
        let end = rest.char_indices().find_map(|(i, c)| {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ';' if depth == 0 => return Some(i),
                _ => {}
            }
            None
        });
        let Some(end) = end else {
            return String::new();
        };
        let statement = rest[..end].trim();
        if !["use ", "const ", "static "]
            .iter()
            .any(|item| statement.starts_with(item))
        {
            return format!("{statement};");
        }
        rest = &rest[end + 1..];
    }
}

/// Two tests at a time (`RUST_TEST_THREADS=2`, `.ci/run`) is safe only if every test takes its
/// turn: a test that took none could run beside a time-sensitive one and starve its processes.
/// So every test of `tests/it` starts with `convoy_e2e::alone()` (it runs simulated time against
/// wall time or checks a wall-clock timeout) or `convoy_e2e::shared()` (anything else); see
/// docs/TESTING.md.
#[test]
fn every_end_to_end_test_takes_its_turn() {
    let _turn = convoy_e2e::shared();
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("it"),
        &mut files,
    );
    let mut names = Vec::new();
    let mut missing = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a test file");
        for (name, first) in tests_and_first_statements(&text) {
            if !TURNS.contains(&first.as_str()) {
                missing.push(format!("{}: {name} starts with `{first}`", file.display()));
            }
            names.push(name);
        }
    }
    assert!(
        names
            .iter()
            .any(|n| n == "every_end_to_end_test_takes_its_turn"),
        "the scan found this very test: {names:?}"
    );
    assert!(
        missing.is_empty(),
        "these tests take no turn; start each with `let _turn = convoy_e2e::alone();` (it runs \
         simulated time against wall time or checks a wall-clock timeout) or \
         `let _turn = convoy_e2e::shared();` (anything else), see docs/TESTING.md:\n{}",
        missing.join("\n")
    );
    // The scanner itself: attributes and comments between `#[test]` and `fn`, async tests, items
    // before the first statement.
    let sample = [
        "#[test]",
        "#[allow(x)] // why",
        "fn a() {",
        "    let _turn = convoy_e2e::alone();",
        "}",
        "#[tokio::test(flavor = \"multi_thread\")]",
        "async fn b() -> Result<(), E> {",
        "    use std::io::{Read, Write};",
        "    const N: [u8; 2] = [1; 2];",
        "    let x = 1;",
        "}",
    ]
    .join("\n");
    assert_eq!(
        tests_and_first_statements(&sample),
        [
            ("a".to_owned(), TURNS[0].to_owned()),
            ("b".to_owned(), "let x = 1;".to_owned()),
        ]
    );
}
