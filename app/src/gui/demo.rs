//! The demo's rollout: on `cargo run --release` with no arguments the console opens on a
//! simulated fleet, and this rolls a signed release out to it with the real engine over the
//! embedded broker, so that a newcomer sees offers, downloads, installs, the gates at work and
//! the war room's health plots without setting anything up.
//!
//! The release (`t300-fw-2.5.0`, firmware 2.5.0 for the most common model) is signed with a
//! demo key derived from the demo's seed: a demonstration key, not a secret, trusted only by
//! the demo's simulated devices. The devices of the rare hardware revision C crash-loop on it
//! (a fault given to the simulated fleet), which is what the canary is there to catch: the
//! boot-failure gate stops the rollout in its first wave. Waves come from the planner with a
//! one-hour operating cycle, on the demo's clock (60 simulated seconds per second by default).
//! Everything the engine does lands in the demo cache, where the war room reads it.

use anyhow::{Context, Result};
use convoy_core::devsim::Faults;
use convoy_core::fleet::Fleet;
use convoy_core::gates::GatePolicy;
use convoy_core::manifest::{self, ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::rollout::ChangePath;
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

use crate::engine::control::control_channel;
use crate::engine::{self, EngineControl, EngineOptions, WhenPaused};
use crate::gui::steer::LocalEngines;
use crate::link::mqtt::LinkConfig;
use crate::link::protocol::Topics;

/// The demo release's id.
pub const RELEASE_ID: &str = "t300-fw-2.5.0";
/// The demo rollout's id.
pub const ROLLOUT_ID: &str = "demo-t300-fw-2.5.0";

/// A prepared demo rollout: what the simulated fleet must know (the trusted key and the fault)
/// before it starts, and the engine's options.
pub struct DemoRollout {
    pub trust: TrustedKeys,
    pub faults: Faults,
    pub devices: usize,
    options: EngineOptions,
}

/// The model most devices have (ties: the first by name).
fn most_common_model(fleet: &Fleet) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for d in &fleet.devices {
        *counts.entry(d.model.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(m, _)| m.to_owned())
}

/// Signs the demo release, plans it on `fleet` and prepares the engine's options; `None` when
/// no device of the fleet is eligible (then the demo runs without a rollout).
pub fn prepare(
    fleet: &Fleet,
    db: &Path,
    broker_url: &str,
    now: Timestamp,
    time_scale: f64,
    seed: u64,
) -> Result<Option<DemoRollout>> {
    let Some(model) = fleet
        .devices
        .iter()
        .any(|d| d.model == "T300")
        .then(|| "T300".to_owned())
        .or_else(|| most_common_model(fleet))
    else {
        return Ok(None);
    };
    let secret: [u8; 32] = Sha256::digest(format!("convoy demo key {seed}")).into();
    let key = SigningKey::from_bytes(&secret);
    let version = Version::new(2, 5, 0);
    let digest = ArtifactDigest::of_bytes("t300-fw-2.5.0.img", b"convoy demo firmware 2.5.0");
    let spec = ReleaseSpec {
        id: RELEASE_ID.to_owned(),
        version,
        counter: 50,
        hardware: vec![model],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "t300-fw-2.5.0.img".to_owned(),
            url: "t300-fw-2.5.0.img".to_owned(),
            length_bytes: 4_000_000,
            sha256: digest.sha256,
        }],
        expires: now.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, &key)
        .context("signing the demo release")?
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    let manifest = manifest::verify(&bytes, &trust, now)
        .map_err(|r| anyhow::anyhow!("the demo release does not verify: {r}"))?;
    // The release in the demo cache, and its key as the trust directory beside it (where the
    // Releases, Planner and Approvals views look first), so that a newcomer can plan, request,
    // approve and dispatch it again from the console.
    let store = crate::store::Store::open(db)?;
    crate::store::releases::record_release(&store, manifest.signed_manifest(), "demo", now)
        .context("storing the demo release in the demo cache")?;
    drop(store);
    crate::keys::write_public(
        &crate::ops::settings::default_trust_dir(db),
        &key.verifying_key(),
    )
    .context("writing the demo's trust directory")?;
    let mut planning = PlanningPolicy::default();
    planning.operating_cycle_secs.clear();
    planning.default_operating_cycle_secs = 3600;
    let plan = plan::plan(&PlanInput {
        fleet,
        release: manifest.spec(),
        catalog: &[],
        now,
        seed,
        policy: &planning,
    })
    .context("planning the demo rollout")?;
    let waves = plan.rollout_waves(fleet);
    let devices: usize = waves.iter().map(|w| w.device_ids.len()).sum();
    if devices == 0 {
        return Ok(None);
    }
    let faults = Faults::parse(
        r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        fleet,
    )
    .map_err(|e| anyhow::anyhow!("the demo's fault: {e}"))?;
    let gates = GatePolicy::default();
    let mut link = LinkConfig::new(
        broker_url,
        &format!("convoy-demo-engine-{}", std::process::id()),
    );
    link.time_scale = time_scale;
    let options = EngineOptions {
        db: db.to_owned(),
        link,
        topics: Topics::default_prefix(),
        manifest,
        rollout_id: ROLLOUT_ID.to_owned(),
        waves,
        sample_period_secs: gates.evaluate_every_secs,
        max_report_gap_secs: engine::health::DEFAULT_MAX_GAP_SECS,
        gates,
        path: ChangePath::SingleOperator,
        requested_by: "demo".into(),
        approvers: vec!["demo".into()],
        time_scale,
        start: now,
        max_wall: None,
        resend_after: Duration::from_secs(5),
    };
    Ok(Some(DemoRollout {
        trust,
        faults,
        devices,
        options,
    }))
}

impl DemoRollout {
    /// Runs the engine on a thread of its own (its future is not `Send`) until the rollout
    /// ends; `done` gets the outcome in words. The run is registered with `engines`, so the
    /// console can pause, resume, roll back or override it; paused (by a gate or an
    /// operator), it holds and waits for the operator rather than ending.
    pub fn start(
        self,
        engines: &LocalEngines,
        done: impl FnOnce(String) + Send + 'static,
    ) -> Result<()> {
        let options = self.options;
        let (handle, commands) = control_channel(ROLLOUT_ID, 16);
        engines.register(handle);
        let control = EngineControl {
            commands: Some(commands),
            when_paused: WhenPaused::Hold,
            ..EngineControl::default()
        };
        std::thread::Builder::new()
            .name("convoy-demo-engine".into())
            .spawn(move || {
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the demo engine's runtime")
                    .and_then(|rt| rt.block_on(engine::run_with(options, control, None)));
                done(match outcome {
                    Ok(report) => {
                        format!(
                            "demo rollout {ROLLOUT_ID} ended: {}",
                            report.final_state.words()
                        )
                    }
                    Err(e) => format!("the demo rollout stopped: {e:#}"),
                });
            })
            .context("starting the demo engine's thread")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};

    #[test]
    fn the_demo_release_verifies_is_planned_and_its_canary_holds_the_faulty_revision() {
        let now = Timestamp::from_secs(1_800_000_000);
        let fleet = generate(&SynthOptions {
            devices: 3000,
            seed: 7,
            now,
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let demo = prepare(
            &fleet,
            &dir.path().join("demo.db"),
            "mqtt://127.0.0.1:1",
            now,
            60.0,
            7,
        )
        .expect("prepared")
        .expect("the demo fleet has eligible devices");
        let o = &demo.options;
        assert_eq!(o.manifest.release_id(), RELEASE_ID);
        assert!(
            demo.devices > 0 && o.waves.len() >= 2,
            "{} waves",
            o.waves.len()
        );
        // The canary represents the rare revision the release breaks: the gate can catch it.
        let canary = &o.waves[0].device_ids;
        let rare_in_canary = fleet
            .devices
            .iter()
            .filter(|d| d.hw_rev == "C" && o.manifest.spec().hardware.iter().any(|h| *h == d.model))
            .filter(|d| canary.contains(&d.id))
            .count();
        assert!(rare_in_canary > 0, "canary of {} devices", canary.len());
        let version = Version::new(2, 5, 0);
        let faulty = fleet
            .devices
            .iter()
            .filter(|d| canary.contains(&d.id))
            .filter(|d| demo.faults.for_device(&version, d).next().is_some())
            .count();
        assert_eq!(faulty, rare_in_canary, "the fault is on revision C");
        // The same seed gives the same key: the demo's devices trust it across restarts.
        let again = prepare(
            &fleet,
            &dir.path().join("demo.db"),
            "mqtt://127.0.0.1:1",
            now,
            60.0,
            7,
        )
        .expect("prepared again")
        .expect("eligible again");
        assert_eq!(again.trust, demo.trust);
        // The release is in the demo cache, and verifies against the trust directory beside
        // it, as the console's Releases, Planner and Approvals views check it.
        let db = dir.path().join("demo.db");
        let store = crate::store::Store::open(&db).expect("cache");
        let stored = crate::store::releases::stored_manifests(&store).expect("manifests");
        assert_eq!(stored.len(), 1, "stored once, however often prepared");
        assert_eq!(stored[0].release_id, RELEASE_ID);
        let trust = crate::keys::load_trust(&crate::ops::settings::default_trust_dir(&db))
            .expect("trust directory");
        manifest::verify(&stored[0].bytes, &trust, now).expect("the stored release verifies");
    }
}
