use convoy_core::fleet::Fleet;
use convoy_e2e::{convoy, convoy_ok};

#[test]
fn fleet_generate_is_deterministic() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for out in [&a, &b] {
        convoy_ok(&[
            "fleet",
            "generate",
            "--devices",
            "500",
            "--seed",
            "9",
            "--now",
            "2026-11-23T00:00:00Z",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
    }
    let bytes_a = std::fs::read(&a).expect("read a");
    assert_eq!(
        bytes_a,
        std::fs::read(&b).expect("read b"),
        "same seed must give the same bytes"
    );
    let fleet: Fleet = serde_json::from_slice(&bytes_a).expect("fleet JSON");
    assert_eq!(fleet.len(), 500);
    assert!(fleet.depots.len() > 10);
}

#[test]
fn fleet_generate_rejects_unknown_format() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fleet.xlsx");
    let run = convoy(&[
        "fleet",
        "generate",
        "--devices",
        "5",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("xlsx"), "{err}");
    assert!(!out.exists());
}

/// Saved cohorts from the command line (issue 19): saved, listed with the devices they match
/// now, used in another cohort, refused with the reason for a bad name, a search that does not
/// read, a cohort naming itself or an unknown one; deleting one that is not there fails.
#[test]
fn cohort_commands_save_list_and_refuse_bad_input() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = dir.path().join("f.json");
    let db = dir.path().join("c.db");
    let (fleet, db) = (
        fleet.to_str().expect("utf-8").to_owned(),
        db.to_str().expect("utf-8").to_owned(),
    );
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        "300",
        "--seed",
        "4",
        "--out",
        &fleet,
    ]);
    convoy_ok(&["fleet", "import", &fleet, "--db", &db]);
    let parsed: Fleet =
        serde_json::from_str(&std::fs::read_to_string(&fleet).expect("fleet")).expect("json");
    let t300 = parsed.devices.iter().filter(|d| d.model == "T300").count();
    let out = convoy_ok(&["cohort", "save", "t300s", "model:T300", "--db", &db]);
    assert!(
        out.contains(&format!("({t300} devices match now)")),
        "{out}"
    );
    convoy_ok(&[
        "cohort",
        "save",
        "eu t300s",
        "cohort:t300s region:eu-*",
        "--db",
        &db,
    ]);
    let list = convoy_ok(&["cohort", "list", "--json", "--db", &db]);
    let rows: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(rows[1]["name"], "t300s");
    assert_eq!(rows[1]["devices"], t300);
    for (name, query, why) in [
        ("a;b", "model:T300", "use letters, digits"),
        ("ok", "firmware:<", "does not read"),
        ("loop", "cohort:loop", "more than 8 deep"),
        ("ok", "cohort:nobody", "no saved cohort named"),
    ] {
        let out = convoy(&["cohort", "save", name, query, "--db", &db]);
        assert!(!out.status.success(), "{name} {query}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{name} {query}: {err}");
    }
    let out = convoy(&["cohort", "delete", "nobody", "--db", &db]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no saved cohort named"));
    convoy_ok(&["cohort", "delete", "t300s", "--db", &db]);
    // The cohort that named it now says why it does not read, rather than match something else.
    let list = convoy_ok(&["cohort", "list", "--db", &db]);
    assert!(list.contains("does not read"), "{list}");
}
