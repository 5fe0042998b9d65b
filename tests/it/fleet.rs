use convoy_core::fleet::Fleet;
use convoy_e2e::{convoy, convoy_ok};

#[test]
fn fleet_generate_is_deterministic() {
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
