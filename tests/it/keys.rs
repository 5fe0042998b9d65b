//! Issue 16, item 8: keys. Through the real binary: `convoy key generate` refuses weak
//! passphrases with the reason and the rule, warns about a passphrase file or a private key
//! that others can read, and refuses a passphrase file that others can write.

use convoy_e2e::{convoy, write_secret};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn key_generate_refuses_weak_passphrases_with_the_rule() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("pass");
    let weak: &[(&str, &str)] = &[
        ("x", "1 character, fewer than 12"),
        ("hunter2", "fewer than 12"),
        ("123456789012345", "digits only"),
        ("zzzzzzzzzzzzzzzz", "distinct characters"),
        ("abcdefghijklmnopq", "run"),
        ("Password2026!", "common password"),
        ("fleet-signing key 2026", "key's name"),
    ];
    let mut refused = 0;
    for (i, (passphrase, why)) in weak.iter().enumerate() {
        write_secret(&pass, &format!("{passphrase}\n"));
        let key = dir.path().join(format!("fleet-signing-{i}"));
        // The key's name is its directory's name; the last case contains it.
        let key = if why.contains("name") {
            dir.path().join("fleet-signing")
        } else {
            key
        };
        let out = convoy(&[
            "key",
            "generate",
            "--out",
            s(&key),
            "--passphrase-file",
            s(&pass),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("too weak")
                && err.contains(why)
                && err.contains("at least 12 characters")
                && !err.contains("panicked"),
            "{passphrase:?}: {}\n{err}",
            out.status
        );
        assert!(!key.join("private.key.json").exists(), "{passphrase:?}");
        refused += 1;
    }
    eprintln!("weak passphrases: {} tried, {refused} refused", weak.len());
    assert_eq!(refused, weak.len());
    // A strong one is accepted.
    write_secret(&pass, "e2e test passphrase\n");
    let out = convoy(&[
        "key",
        "generate",
        "--out",
        s(&dir.path().join("good")),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "a 0600 passphrase file gives no warning"
    );
}

#[test]
fn passphrase_and_key_files_others_can_read_are_warned_about_and_writable_ones_refused() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("pass");
    write_secret(&pass, "e2e test passphrase\n");
    // Readable by all: it works, with one warning naming the file, its mode and the fix.
    chmod(&pass, 0o644);
    let key = dir.path().join("key");
    let out = convoy(&[
        "key",
        "generate",
        "--out",
        s(&key),
        "--passphrase-file",
        s(&pass),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains(s(&pass))
            && err.contains("0644")
            && err.contains(&format!("chmod 600 {}", s(&pass))),
        "{err}"
    );
    // Writable by all: refused, and no key is made.
    chmod(&pass, 0o666);
    let other = dir.path().join("other");
    let out = convoy(&[
        "key",
        "generate",
        "--out",
        s(&other),
        "--passphrase-file",
        s(&pass),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("refusing to read")
            && err.contains("0666")
            && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!other.join("private.key.json").exists());
    // A private key file others can read is warned about when it is used.
    chmod(&pass, 0o600);
    let private = key.join("private.key.json");
    chmod(&private, 0o644);
    let out = convoy(&[
        "key",
        "trust",
        "--key",
        s(&key),
        "--out",
        s(&dir.path().join("trust")),
        "--passphrase-file",
        s(&pass),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("private key file")
            && err.contains(s(&private))
            && err.contains("0644")
            && err.contains("chmod 600"),
        "{err}"
    );
    eprintln!(
        "secret file modes: a 0666 passphrase file refused (1 of 1), a 0644 passphrase file and a 0644 private key warned about"
    );
}
