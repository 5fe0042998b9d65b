//! `convoy key` and `convoy release` end to end: keys on disk, signing, verification with every
//! rejection naming its attack, rotation and revocation through a trust directory.

use convoy_e2e::{convoy, convoy_ok};
use std::path::{Path, PathBuf};

/// A scratch directory with a passphrase file and helpers to run convoy in it.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        let work = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        convoy_e2e::write_secret(&work.path("pw"), "correct horse battery\n");
        work
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_owned()
    }

    fn key(&self, name: &str) -> String {
        convoy_ok(&[
            "key",
            "generate",
            "--out",
            &self.p(name),
            "--passphrase-file",
            &self.p("pw"),
        ])
        .trim()
        .to_owned()
    }

    fn artifact(&self, name: &str, len: usize, seed: u8) -> String {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        std::fs::write(self.path(name), bytes).expect("artifact");
        self.p(name)
    }

    /// Signs a release of `artifact` with `key` into `out`, with extra flags.
    fn release(&self, key: &str, artifact: &str, counter: &str, out: &str, extra: &[&str]) {
        let (art, key_dir, out_path, pw) =
            (self.p(artifact), self.p(key), self.p(out), self.p("pw"));
        let mut args = vec![
            "release",
            "create",
            "--artifact",
            &art,
            "--version",
            "2.5.0",
            "--counter",
            counter,
            "--hardware",
            "T300",
            "T310",
            "--requires",
            "bootloader>=2.0",
            "--expires",
            "2099-01-01T00:00:00Z",
            "--key",
            &key_dir,
            "--passphrase-file",
            &pw,
            "--out",
            &out_path,
        ];
        args.extend_from_slice(extra);
        convoy_ok(&args);
    }

    fn verify(&self, manifest: &str, trust: &str, extra: &[&str]) -> Result<String, String> {
        let (m, t) = (self.p(manifest), self.p(trust));
        let mut args = vec!["release", "verify", &m, "--trust", &t];
        args.extend_from_slice(extra);
        let out = convoy(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(stderr)
        }
    }
}

/// Asserts the verification failed and names `attack`.
fn check_rejected(result: Result<String, String>, attack: &str) {
    let err = result.expect_err("must be rejected");
    assert!(
        err.contains(&format!("({attack})")),
        "expected ({attack}) in: {err}"
    );
}

#[test]
fn key_files_are_encrypted_private_and_need_the_right_passphrase() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    let id = w.key("k");
    assert_eq!(id.len(), 64, "key id is printed: {id}");
    let public = std::fs::read_to_string(w.path("k/public.json")).expect("public.json");
    assert!(public.contains(&id));
    let private = std::fs::read_to_string(w.path("k/private.key.json")).expect("private");
    assert!(private.contains("argon2id") && private.contains("xchacha20poly1305"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.path("k/private.key.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    w.artifact("fw.img", 1000, 1);
    std::fs::write(w.path("bad-pw"), "wrong\n").expect("write");
    let (art, key, bad, out) = (w.p("fw.img"), w.p("k"), w.p("bad-pw"), w.p("m.json"));
    let base = [
        "release",
        "create",
        "--artifact",
        &art,
        "--version",
        "1.0",
        "--counter",
        "1",
        "--hardware",
        "T300",
        "--expires",
        "30d",
        "--key",
        &key,
        "--out",
        &out,
    ];
    let mut wrong = base.to_vec();
    wrong.extend_from_slice(&["--passphrase-file", &bad]);
    let run = convoy(&wrong);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains("wrong passphrase") && !err.contains("panicked"),
        "{err}"
    );
    // With no passphrase file and no terminal, it refuses instead of reading argv or hanging.
    let run = convoy(&base);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("--passphrase-file"), "{err}");
    assert!(!w.path("m.json").exists());
}

#[test]
fn create_then_verify_round_trips_in_any_field_order() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    let id = w.key("k");
    w.artifact("fw.img", 200_000, 2);
    w.release(
        "k",
        "fw.img",
        "7",
        "m.json",
        &["--provides", "firmware=2.5.0", "--provides", "modem=1.3"],
    );
    let out = w
        .verify("m.json", "k", &["--artifact", &w.p("fw.img")])
        .expect("verifies");
    assert!(
        out.contains("release t300_t310-2.5.0 version 2.5.0 counter 7"),
        "{out}"
    );
    assert!(out.contains(&id), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("m.json")).expect("read")).expect("json");
    let release = &manifest["signed"]["release"];
    assert_eq!(release["artifacts"][0]["length_bytes"], 200_000);
    assert_eq!(release["requires"][0], "bootloader>=2.0");
    assert_eq!(release["provides"]["modem"], "1.3");
    // Compact, key-sorted JSON: different bytes, same canonical body, same verdict.
    let reordered = serde_json::to_vec(&manifest).expect("json");
    assert_ne!(reordered, std::fs::read(w.path("m.json")).expect("read"));
    std::fs::write(w.path("m2.json"), reordered).expect("write");
    w.verify("m2.json", "k", &[])
        .expect("field order does not matter");
}

fn edit_manifest(w: &Work, from: &str, to: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path(from)).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(w.path(to), serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}

#[test]
fn every_attack_is_rejected_and_named() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    w.key("k");
    w.key("other");
    w.artifact("fw.img", 50_000, 3);
    w.release("k", "fw.img", "7", "m.json", &[]);
    w.verify("m.json", "k", &["--artifact", &w.p("fw.img")])
        .expect("the genuine one verifies");

    // Tampered: a signed field changed, or the artifact's bytes.
    edit_manifest(&w, "m.json", "counter.json", |v| {
        v["signed"]["release"]["counter"] = 99.into();
    });
    check_rejected(w.verify("counter.json", "k", &[]), "tampered");
    edit_manifest(&w, "m.json", "hw.json", |v| {
        v["signed"]["release"]["hardware"][0] = "T500".into();
    });
    check_rejected(w.verify("hw.json", "k", &[]), "tampered");
    let mut bytes = std::fs::read(w.path("fw.img")).expect("read");
    bytes[100] ^= 1;
    std::fs::write(w.path("evil.img"), &bytes).expect("write");
    check_rejected(
        w.verify("m.json", "k", &["--artifact", &w.p("evil.img")]),
        "tampered",
    );

    // Wrong key: trusted key is another one.
    check_rejected(w.verify("m.json", "other", &[]), "wrong key");

    // Expired: verify as of a moment after the expiry.
    check_rejected(
        w.verify("m.json", "k", &["--now", "2099-01-01T00:00:00Z"]),
        "expired",
    );

    // Downgrade: the device already runs counter 9.
    let device = ["--device-hardware", "T300", "--installed-counter", "9"];
    check_rejected(w.verify("m.json", "k", &device), "downgrade");
    w.verify(
        "m.json",
        "k",
        &["--device-hardware", "T310", "--installed-counter", "7"],
    )
    .expect("same counter is no downgrade");

    // Wrong hardware.
    check_rejected(
        w.verify("m.json", "k", &["--device-hardware", "T500"]),
        "wrong hardware",
    );

    // Mix-and-match: an artifact from another release offered with this manifest.
    w.artifact("a.img", 10, 4);
    w.artifact("b.img", 10, 5);
    let (a, b, out) = (w.p("a.img"), w.p("b.img"), w.p("two.json"));
    convoy_ok(&[
        "release",
        "create",
        "--artifact",
        &a,
        "--artifact",
        &b,
        "--version",
        "3.0",
        "--counter",
        "8",
        "--hardware",
        "T300",
        "--expires",
        "30d",
        "--key",
        &w.p("k"),
        "--passphrase-file",
        &w.p("pw"),
        "--out",
        &out,
    ]);
    w.verify("two.json", "k", &["--artifact", &a, "--artifact", &b])
        .expect("both artifacts");
    check_rejected(
        w.verify("two.json", "k", &["--artifact", &w.p("fw.img")]),
        "mix-and-match",
    );

    // Oversize: a manifest padded past the limit is refused before it is parsed.
    let mut big = std::fs::read(w.path("m.json")).expect("read");
    big.extend(std::iter::repeat_n(b' ', 70_000));
    std::fs::write(w.path("big.json"), big).expect("write");
    check_rejected(w.verify("big.json", "k", &[]), "oversize");
}

#[test]
fn a_signed_rollback_passes_the_downgrade_check() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    w.key("k");
    w.artifact("fw.img", 1000, 6);
    w.release(
        "k",
        "fw.img",
        "3",
        "rb.json",
        &[
            "--rollback",
            "crash loop in 2.6.0",
            "--rollback-from",
            "9",
            "--id",
            "t300-2.5.0-rollback",
        ],
    );
    let out = w
        .verify(
            "rb.json",
            "k",
            &["--device-hardware", "T300", "--installed-counter", "9"],
        )
        .expect("signed rollback");
    assert!(
        out.contains("signed rollback: crash loop in 2.6.0"),
        "{out}"
    );
    // A device already past the bad release (counter 9) refuses the old rollback.
    check_rejected(
        w.verify(
            "rb.json",
            "k",
            &["--device-hardware", "T300", "--installed-counter", "10"],
        ),
        "downgrade",
    );
    // Removing the rollback mark breaks the signature; it cannot be added or dropped.
    edit_manifest(&w, "rb.json", "stripped.json", |v| {
        v["signed"]
            .as_object_mut()
            .expect("object")
            .remove("rollback");
    });
    check_rejected(w.verify("stripped.json", "k", &[]), "tampered");
}

fn key_list(trust: &Path) -> String {
    convoy_ok(&["key", "list", "--trust", trust.to_str().expect("utf-8")])
}

#[test]
fn rotation_and_revocation_through_a_trust_directory() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    let id1 = w.key("k1");
    let id2 = w.key("k2");
    let id3 = w.key("k3");
    w.artifact("fw.img", 1000, 7);
    for (key, out) in [("k1", "m1.json"), ("k2", "m2.json"), ("k3", "m3.json")] {
        w.release(key, "fw.img", "5", out, &[]);
    }
    let pw = w.p("pw");
    let trust = w.p("trust");
    convoy_ok(&[
        "key",
        "trust",
        "--key",
        &w.p("k1"),
        "--out",
        &trust,
        "--passphrase-file",
        &pw,
    ]);
    w.verify("m1.json", "trust", &[])
        .expect("k1 trusted in version 1");
    check_rejected(w.verify("m2.json", "trust", &[]), "wrong key");

    // Rotate k1 -> k2, keeping k1 for a transition: the new set is signed by k1.
    convoy_ok(&[
        "key",
        "rotate",
        "--old",
        &w.p("k1"),
        "--new",
        &w.p("k2"),
        "--out",
        &trust,
        "--keep-old",
        "--passphrase-file",
        &pw,
    ]);
    assert!(w.path("trust/keyset-2.json").exists());
    w.verify("m1.json", "trust", &[]).expect("k1 kept");
    w.verify("m2.json", "trust", &[])
        .expect("k2 trusted in version 2");

    // Revoke k1, signed by k2: k1's manifests now fail as revoked.
    convoy_ok(&[
        "key",
        "revoke",
        "--revoke",
        &w.p("k1"),
        "--key",
        &w.p("k2"),
        "--out",
        &trust,
        "--passphrase-file",
        &pw,
    ]);
    let err = w.verify("m1.json", "trust", &[]).expect_err("revoked");
    assert!(
        err.contains("(wrong key)") && err.contains("revoked"),
        "{err}"
    );
    let list = key_list(&w.path("trust"));
    assert_eq!(list, format!("version 3\ntrusted {id2}\nrevoked {id1}\n"));

    // A revoked key cannot sign the next set.
    let run = convoy(&[
        "key",
        "rotate",
        "--old",
        &w.p("k1"),
        "--new",
        &w.p("k3"),
        "--out",
        &trust,
        "--passphrase-file",
        &pw,
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not trusted"));
    assert!(!w.path("trust/keyset-4.json").exists());

    // Rotate k2 -> k3 (retiring k2).
    convoy_ok(&[
        "key",
        "rotate",
        "--old",
        &w.p("k2"),
        "--new",
        &w.p("k3"),
        "--out",
        &trust,
        "--passphrase-file",
        &pw,
    ]);
    check_rejected(w.verify("m2.json", "trust", &[]), "wrong key");
    w.verify("m3.json", "trust", &[])
        .expect("k3 trusted in version 4");
    assert_eq!(
        key_list(&w.path("trust")),
        format!("version 4\ntrusted {id3}\nrevoked {id1}\n")
    );

    // A forged key set (k1 added back, re-signed by the revoked k1) breaks the chain.
    std::fs::copy(w.path("trust/keyset-4.json"), w.path("keyset-4.bak")).expect("copy");
    edit_manifest(&w, "trust/keyset-4.json", "trust/keyset-4.json", |v| {
        v["signed"]["revoked"] = serde_json::json!([]);
    });
    let err = w
        .verify("m3.json", "trust", &[])
        .expect_err("forged key set");
    assert!(err.contains("key set"), "{err}");
}

#[test]
fn several_keys_can_be_trusted_at_once() {
    let _turn = convoy_e2e::shared();
    let w = Work::new();
    let id1 = w.key("k1");
    let id2 = w.key("k2");
    w.key("k3");
    w.artifact("fw.img", 1000, 8);
    for (key, out) in [("k1", "m1.json"), ("k2", "m2.json"), ("k3", "m3.json")] {
        w.release(key, "fw.img", "5", out, &[]);
    }
    let (k1, k2, trust, pw) = (w.p("k1"), w.p("k2"), w.p("trust"), w.p("pw"));
    convoy_ok(&[
        "key",
        "trust",
        "--key",
        &k1,
        &k2,
        "--out",
        &trust,
        "--passphrase-file",
        &pw,
    ]);
    w.verify("m1.json", "trust", &[]).expect("k1 trusted");
    w.verify("m2.json", "trust", &[]).expect("k2 trusted");
    check_rejected(w.verify("m3.json", "trust", &[]), "wrong key");
    let mut ids = [id1, id2];
    ids.sort();
    assert_eq!(
        key_list(&w.path("trust")),
        format!("version 1\ntrusted {}\ntrusted {}\n", ids[0], ids[1])
    );
}
