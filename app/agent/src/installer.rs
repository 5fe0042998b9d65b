//! The installers: how a verified, downloaded release gets onto the device, and how the new slot
//! is confirmed or reverted. Chosen by `[installer] kind` in the configuration.
//!
//! - `directory`: an A/B pair of directories `ROOT/a` and `ROOT/b` and a `ROOT/current` symlink
//!   to the running one. Install copies the artifacts into the other slot and switches the link
//!   atomically; confirm writes `ROOT/confirmed` (the slot's name); revert points the link back.
//!   For tests and demos.
//! - `command`: a program run as `PROGRAM install ARTIFACT...`, `PROGRAM confirm`,
//!   `PROGRAM revert`, with the environment of [`Context::env`]; exit status 0 is success.
//! - `swupdate`: `swupdate -i FILE [-k CERT] [-H BOARD:REV] [EXTRA...]`; confirm and revert
//!   set the bootloader's `ustate` variable (`fw_setenv ustate 0`, `fw_setenv ustate 3`), which
//!   SWUpdate's bootloader integration reads, unless other commands are configured.
//! - `rauc`: `rauc install BUNDLE`, `rauc status mark-good`, `rauc status mark-bad`.
//!
//! Each installer's command lines come from one pure function ([`Installer::plan`]) with unit
//! tests; RAUC's are tested only as command lines (RAUC is not installed on the machines this is
//! built on) and SWUpdate's confirm and revert are not tested against a real bootloader.
//! Deliberately not here: rebooting (`[update] reboot_command`, run by the agent) and health.

use anyhow::{Context as _, Result, bail};
use convoy_core::fleet::Slot;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::InstallerConfig;

/// What an installer is told about the update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub device_id: String,
    pub release_id: String,
    pub version: String,
    /// The downloaded artifacts, in the manifest's order.
    pub artifacts: Vec<PathBuf>,
    /// The slot being installed into (install), confirmed (confirm) or left (revert).
    pub slot: Slot,
    /// The other slot: the one running before the install, and the one a revert returns to.
    pub previous_slot: Slot,
}

impl Context {
    /// The environment a `command` installer runs with (documented in docs/AGENT.md).
    pub fn env(&self) -> Vec<(String, String)> {
        let artifacts: Vec<String> = self
            .artifacts
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        vec![
            ("CONVOY_DEVICE_ID".into(), self.device_id.clone()),
            ("CONVOY_RELEASE_ID".into(), self.release_id.clone()),
            ("CONVOY_VERSION".into(), self.version.clone()),
            ("CONVOY_ARTIFACTS".into(), artifacts.join("\n")),
            ("CONVOY_SLOT".into(), self.slot.as_str().to_owned()),
            (
                "CONVOY_PREVIOUS_SLOT".into(),
                self.previous_slot.as_str().to_owned(),
            ),
        ]
    }
}

/// The three things an installer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Install,
    Confirm,
    Revert,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Install => "install",
            Operation::Confirm => "confirm",
            Operation::Revert => "revert",
        }
    }
}

/// One step of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run a program with arguments (and, for `command`, the context's environment). With
    /// `ok_if_logged`, a non-zero exit status still counts as success when the program's output
    /// holds that line and no `[ERROR]` (see [`SWUPDATE_SUCCESS`]).
    Run {
        argv: Vec<String>,
        env: bool,
        ok_if_logged: Option<&'static str>,
    },
    /// Replace the contents of a directory with copies of files.
    CopyInto { dir: PathBuf, files: Vec<PathBuf> },
    /// Point a symlink at a target, atomically.
    Link { link: PathBuf, target: String },
    /// Write a small file atomically.
    Write { path: PathBuf, text: String },
}

/// What SWUpdate 2022.12 (Debian 12) logs after a successful install. In `-i` mode it exits
/// with status 1 after a successful install in about a third of the runs on the machines this is
/// built on (the install is complete and logged as successful, with no error line), so for the
/// install step this line with no `[ERROR]` line counts as success.
pub const SWUPDATE_SUCCESS: &str = "SWUPDATE successful";

/// An installer from the configuration.
#[derive(Clone, Debug)]
pub struct Installer {
    config: InstallerConfig,
}

impl Installer {
    pub fn new(config: InstallerConfig) -> Self {
        Self { config }
    }

    pub fn kind(&self) -> &'static str {
        match self.config {
            InstallerConfig::Directory { .. } => "directory",
            InstallerConfig::Command { .. } => "command",
            InstallerConfig::Swupdate { .. } => "swupdate",
            InstallerConfig::Rauc { .. } => "rauc",
        }
    }

    /// Whether the new software only runs after a reboot (then a revert needs one too).
    pub fn reboots(&self) -> bool {
        matches!(
            self.config,
            InstallerConfig::Swupdate { .. } | InstallerConfig::Rauc { .. }
        )
    }

    /// The running slot as the installer itself knows it (the `directory` installer's link),
    /// if it knows.
    pub fn current_slot(&self) -> Option<Slot> {
        match &self.config {
            InstallerConfig::Directory { root } => {
                let target = std::fs::read_link(root.join("current")).ok()?;
                target.to_str()?.parse().ok()
            }
            _ => None,
        }
    }

    /// Prepares what the installer needs before its first use (the `directory` installer's slot
    /// directories and link).
    pub fn prepare(&self, active: Slot) -> Result<()> {
        if let InstallerConfig::Directory { root } = &self.config {
            for slot in [Slot::A, Slot::B] {
                let dir = root.join(slot.as_str());
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            if std::fs::symlink_metadata(root.join("current")).is_err() {
                link_atomically(&root.join("current"), active.as_str())?;
            }
        }
        Ok(())
    }

    /// The steps of `operation` for `ctx`. Pure: nothing is run.
    pub fn plan(&self, operation: Operation, ctx: &Context) -> Vec<Step> {
        let run = |argv: Vec<String>| Step::Run {
            argv,
            env: false,
            ok_if_logged: None,
        };
        let first = || {
            ctx.artifacts
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        match (&self.config, operation) {
            (InstallerConfig::Directory { root }, Operation::Install) => vec![
                Step::CopyInto {
                    dir: root.join(ctx.slot.as_str()),
                    files: ctx.artifacts.clone(),
                },
                Step::Link {
                    link: root.join("current"),
                    target: ctx.slot.as_str().to_owned(),
                },
            ],
            (InstallerConfig::Directory { root }, Operation::Confirm) => vec![Step::Write {
                path: root.join("confirmed"),
                text: format!("{}\n", ctx.slot.as_str()),
            }],
            (InstallerConfig::Directory { root }, Operation::Revert) => vec![Step::Link {
                link: root.join("current"),
                target: ctx.previous_slot.as_str().to_owned(),
            }],
            (InstallerConfig::Command { program }, op) => {
                let mut argv = vec![program.display().to_string(), op.as_str().to_owned()];
                if op == Operation::Install {
                    argv.extend(ctx.artifacts.iter().map(|p| p.display().to_string()));
                }
                vec![Step::Run {
                    argv,
                    env: true,
                    ok_if_logged: None,
                }]
            }
            (
                InstallerConfig::Swupdate {
                    program,
                    public_key,
                    hardware,
                    extra_args,
                    ..
                },
                Operation::Install,
            ) => {
                let mut argv = vec![program.display().to_string(), "-i".into(), first()];
                if let Some(key) = public_key {
                    argv.extend(["-k".into(), key.display().to_string()]);
                }
                if let Some(hw) = hardware {
                    argv.extend(["-H".into(), hw.clone()]);
                }
                argv.extend(extra_args.iter().cloned());
                vec![Step::Run {
                    argv,
                    env: false,
                    ok_if_logged: Some(SWUPDATE_SUCCESS),
                }]
            }
            (
                InstallerConfig::Swupdate {
                    confirm_command, ..
                },
                Operation::Confirm,
            ) => vec![run(confirm_command
                .clone()
                .unwrap_or_else(|| strings(&["fw_setenv", "ustate", "0"])))],
            (InstallerConfig::Swupdate { revert_command, .. }, Operation::Revert) => {
                vec![run(revert_command
                    .clone()
                    .unwrap_or_else(|| strings(&["fw_setenv", "ustate", "3"])))]
            }
            (InstallerConfig::Rauc { program }, op) => {
                let p = program.display().to_string();
                let argv = match op {
                    Operation::Install => vec![p, "install".into(), first()],
                    Operation::Confirm => vec![p, "status".into(), "mark-good".into()],
                    // The booted slot (the new one) is marked bad; the next boot takes the other.
                    Operation::Revert => {
                        vec![p, "status".into(), "mark-bad".into(), "booted".into()]
                    }
                };
                vec![run(argv)]
            }
        }
    }

    /// Runs `operation`; an error says which step failed and what the program wrote.
    pub fn run(&self, operation: Operation, ctx: &Context) -> Result<()> {
        for step in self.plan(operation, ctx) {
            run_step(&step, ctx)
                .with_context(|| format!("{} {}", self.kind(), operation.as_str()))?;
        }
        Ok(())
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn run_step(step: &Step, ctx: &Context) -> Result<()> {
    match step {
        Step::Run {
            argv,
            env,
            ok_if_logged,
        } => {
            let Some((program, args)) = argv.split_first() else {
                bail!("an empty command");
            };
            let mut cmd = Command::new(program);
            cmd.args(args).stdin(std::process::Stdio::null());
            if *env {
                cmd.envs(ctx.env());
            }
            let out = cmd.output().with_context(|| format!("running {program}"))?;
            let logged_ok = ok_if_logged.is_some_and(|line| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                text.contains(line) && !text.contains("[ERROR]")
            });
            if !out.status.success() && logged_ok {
                eprintln!(
                    "convoy-agent: {} exited with {} but logged a successful install; taken as installed",
                    argv.join(" "),
                    out.status
                );
            }
            if !out.status.success() && !logged_ok {
                // Programs differ in where they say why (SWUpdate logs to standard output).
                let said = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
                    &out.stderr
                } else {
                    &out.stdout
                };
                let said = String::from_utf8_lossy(said);
                let tail: String = said.trim().chars().rev().take(400).collect::<String>();
                let tail: String = tail.chars().rev().collect();
                bail!("{} exited with {}: {tail}", argv.join(" "), out.status);
            }
            Ok(())
        }
        Step::CopyInto { dir, files } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // The slot is replaced whole: nothing of the release it held before stays behind.
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry
                    .with_context(|| format!("reading {}", dir.display()))?
                    .path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("clearing {}", path.display()))?;
            }
            for file in files {
                let name = file
                    .file_name()
                    .with_context(|| format!("{} has no file name", file.display()))?;
                let dest = dir.join(name);
                std::fs::copy(file, &dest)
                    .with_context(|| format!("copying {} to {}", file.display(), dest.display()))?;
                std::fs::File::open(&dest)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("syncing {}", dest.display()))?;
            }
            Ok(())
        }
        Step::Link { link, target } => link_atomically(link, target),
        Step::Write { path, text } => crate::state::write_atomic(path, text.as_bytes()),
    }
}

/// Points `link` at `target` atomically: a new symlink beside it, renamed over it.
fn link_atomically(link: &Path, target: &str) -> Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".current.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating the link {}", tmp.display()))?;
    #[cfg(not(unix))]
    bail!("the directory installer needs symlinks (Unix)");
    std::fs::rename(&tmp, link).with_context(|| format!("switching {}", link.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            device_id: "CV1".into(),
            release_id: "fw-2.5.0".into(),
            version: "2.5.0".into(),
            artifacts: vec![PathBuf::from(
                "/var/lib/convoy-agent/downloads/fw-2.5.0/fw.swu",
            )],
            slot: Slot::B,
            previous_slot: Slot::A,
        }
    }

    fn argv(installer: &Installer, op: Operation) -> Vec<String> {
        match installer.plan(op, &ctx()).as_slice() {
            [Step::Run { argv, .. }] => argv.clone(),
            other => panic!("one command expected, got {other:?}"),
        }
    }

    #[test]
    fn rauc_runs_install_mark_good_and_mark_bad() {
        let rauc = Installer::new(InstallerConfig::Rauc {
            program: "rauc".into(),
        });
        assert_eq!(
            argv(&rauc, Operation::Install),
            [
                "rauc",
                "install",
                "/var/lib/convoy-agent/downloads/fw-2.5.0/fw.swu"
            ]
        );
        assert_eq!(
            argv(&rauc, Operation::Confirm),
            ["rauc", "status", "mark-good"]
        );
        assert_eq!(
            argv(&rauc, Operation::Revert),
            ["rauc", "status", "mark-bad", "booted"]
        );
        assert!(rauc.reboots());
    }

    #[test]
    fn swupdate_runs_install_with_key_and_hardware_and_sets_ustate() {
        let sw = Installer::new(InstallerConfig::Swupdate {
            program: "/usr/bin/swupdate".into(),
            public_key: Some("/etc/swupdate/cert.pem".into()),
            hardware: Some("t300:revC".into()),
            extra_args: vec!["-v".into()],
            confirm_command: None,
            revert_command: None,
        });
        assert_eq!(
            argv(&sw, Operation::Install),
            [
                "/usr/bin/swupdate",
                "-i",
                "/var/lib/convoy-agent/downloads/fw-2.5.0/fw.swu",
                "-k",
                "/etc/swupdate/cert.pem",
                "-H",
                "t300:revC",
                "-v"
            ]
        );
        assert!(matches!(
            sw.plan(Operation::Install, &ctx()).as_slice(),
            [Step::Run {
                ok_if_logged: Some(SWUPDATE_SUCCESS),
                ..
            }]
        ));
        assert_eq!(argv(&sw, Operation::Confirm), ["fw_setenv", "ustate", "0"]);
        assert_eq!(argv(&sw, Operation::Revert), ["fw_setenv", "ustate", "3"]);
    }

    #[test]
    fn the_command_installer_gets_its_operation_artifacts_and_environment() {
        let c = Installer::new(InstallerConfig::Command {
            program: "/usr/lib/convoy-agent/install".into(),
        });
        let steps = c.plan(Operation::Install, &ctx());
        assert_eq!(
            steps,
            [Step::Run {
                argv: strings(&[
                    "/usr/lib/convoy-agent/install",
                    "install",
                    "/var/lib/convoy-agent/downloads/fw-2.5.0/fw.swu"
                ]),
                env: true,
                ok_if_logged: None,
            }]
        );
        assert_eq!(
            argv(&c, Operation::Revert),
            ["/usr/lib/convoy-agent/install", "revert"]
        );
        let env = ctx().env();
        assert!(env.contains(&("CONVOY_SLOT".into(), "b".into())));
        assert!(env.contains(&("CONVOY_PREVIOUS_SLOT".into(), "a".into())));
        assert!(env.contains(&("CONVOY_RELEASE_ID".into(), "fw-2.5.0".into())));
    }

    #[test]
    fn the_directory_installer_switches_slots_and_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("slots");
        let d = Installer::new(InstallerConfig::Directory { root: root.clone() });
        d.prepare(Slot::A).expect("prepare");
        assert_eq!(d.current_slot(), Some(Slot::A));
        std::fs::write(root.join("b/stale"), b"old").expect("stale");
        let artifact = dir.path().join("app.sh");
        std::fs::write(&artifact, b"echo new").expect("artifact");
        let mut c = ctx();
        c.artifacts = vec![artifact];
        d.run(Operation::Install, &c).expect("install");
        assert_eq!(d.current_slot(), Some(Slot::B));
        assert_eq!(
            std::fs::read(root.join("current/app.sh")).expect("new"),
            b"echo new"
        );
        assert!(!root.join("b/stale").exists(), "the slot is replaced whole");
        d.run(Operation::Revert, &c).expect("revert");
        assert_eq!(d.current_slot(), Some(Slot::A));
        d.run(Operation::Confirm, &c).expect("confirm");
        assert_eq!(
            std::fs::read_to_string(root.join("confirmed")).expect("confirmed"),
            "b\n"
        );
    }

    #[test]
    fn a_logged_success_counts_only_without_an_error_line() {
        let step = |script: &str| Step::Run {
            argv: strings(&["sh", "-c", script]),
            env: false,
            ok_if_logged: Some(SWUPDATE_SUCCESS),
        };
        assert!(
            run_step(
                &step("echo '[INFO ] : SWUPDATE successful !'; exit 1"),
                &ctx()
            )
            .is_ok()
        );
        let err = run_step(
            &step("echo '[ERROR] : bad image'; echo 'SWUPDATE successful'; exit 1"),
            &ctx(),
        )
        .expect_err("an error line");
        assert!(format!("{err:#}").contains("bad image"), "{err:#}");
        assert!(run_step(&step("echo 'Installation in progress'; exit 1"), &ctx()).is_err());
    }

    #[test]
    fn a_failing_command_says_what_it_wrote() {
        let c = Installer::new(InstallerConfig::Command {
            program: "/bin/sh".into(),
        });
        // `/bin/sh confirm` runs a script named `confirm`, which does not exist.
        let err = format!(
            "{:#}",
            c.run(Operation::Confirm, &ctx()).expect_err("fails")
        );
        assert!(
            err.contains("command confirm") && err.contains("exited with"),
            "{err}"
        );
    }
}
