//! Eligibility: for every device, whether it may be offered the release now, later (a
//! transient condition), after prerequisite releases (a chain), or never, with the reason.
//!
//! Checks run in a fixed order and the first verdict that applies wins: hardware not supported
//! → never; a hardware requirement unmet → never; already installed → installed; a component
//! newer than the release provides → never (no downgrades); component requirements unmet →
//! after prerequisites (or never, when no chain exists); conditions unmet → after conditions;
//! otherwise eligible now. This is per-device data only; summaries live in [`super::Plan`].
//! It deliberately does not look at whether a device is online: an offline device that is
//! eligible is offered the release when it returns.

use crate::fleet::Fleet;
use crate::release::ReleaseSpec;
use crate::requirement::{Requirement, RequirementKind};
use serde::Serialize;

use super::graph::{ChainOutcome, ChainResolver};

/// A device's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every requirement is met: the device may be offered the release now.
    EligibleNow,
    /// Only transient conditions are unmet (battery, roaming, storage, metered size).
    AfterConditions,
    /// Component requirements are unmet and a chain of other releases meets them.
    AfterPrerequisites,
    /// Already runs everything the release provides.
    Installed,
    /// Can never install it (hardware, downgrade, no prerequisite chain).
    Never,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::EligibleNow,
        Status::AfterConditions,
        Status::AfterPrerequisites,
        Status::Installed,
        Status::Never,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::EligibleNow => "eligible_now",
            Status::AfterConditions => "after_conditions",
            Status::AfterPrerequisites => "after_prerequisites",
            Status::Installed => "installed",
            Status::Never => "never",
        }
    }
}

/// One device's verdict, small and `Copy` so a million of them stay cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEligibility {
    pub status: Status,
    /// For [`Status::AfterPrerequisites`], the chain index; for [`Status::Never`], the reason
    /// index (see [`Eligibility::reasons`]); otherwise 0.
    pub detail: u32,
    /// Bit `i` set: the target's requirement `i` (a condition) is unmet now.
    pub unmet_conditions: u64,
    /// The release is built for the device's model (the device is in the targeted fleet).
    pub supported: bool,
}

/// Verdicts for a whole fleet, indexed like `fleet.devices`.
pub struct Eligibility {
    pub devices: Vec<DeviceEligibility>,
    /// Texts of never-eligible reasons.
    pub reasons: Vec<String>,
    /// Chains, as catalog release ids in install order.
    pub chains: Vec<Vec<String>>,
    /// Download bytes of each chain's releases, summed.
    pub chain_bytes: Vec<u64>,
    /// Possible dependency cycles in the catalog.
    pub cycles: Vec<Vec<String>>,
}

/// Marks a never-verdict whose detail is a resolver failure index, until they are numbered.
const FAILURE_MARK: u32 = 1 << 31;

/// Evaluates every device. `catalog` must exclude the target and expired releases; at most
/// 64 requirements are tracked per release (checked by the caller).
pub fn evaluate(fleet: &Fleet, target: &ReleaseSpec, catalog: Vec<&ReleaseSpec>) -> Eligibility {
    let download = target.download_bytes();
    let mut reasons: Vec<String> = Vec::new();
    let mut model_reason: super::FastMap<&str, u32> = super::FastMap::default();
    let push = |reasons: &mut Vec<String>, text: String| {
        reasons.push(text);
        (reasons.len() - 1) as u32
    };
    // Fixed reasons first: one per hardware requirement and per provided component.
    let hw_reason: Vec<Option<u32>> = target
        .requires
        .iter()
        .map(|r| {
            (r.kind() == RequirementKind::Hardware)
                .then(|| push(&mut reasons, format!("hardware requirement {r} unmet")))
        })
        .collect();
    let downgrade_reason: Vec<(&str, crate::version::Version, u32)> = target
        .provides
        .iter()
        .map(|(c, v)| {
            let id = push(
                &mut reasons,
                format!("installed {c} is newer than {v} (no downgrade)"),
            );
            (c.as_str(), *v, id)
        })
        .collect();
    let mut resolver = ChainResolver::new(target, catalog);
    let conditions: Vec<(usize, &Requirement)> = target
        .requires
        .iter()
        .enumerate()
        .take(64)
        .filter(|(_, r)| r.kind() == RequirementKind::Condition)
        .collect();
    // Everything but the conditions reads only the model, the hardware revision and the
    // components: decided once per distinct (shared) triple, in device order, so reasons and
    // chains are still numbered by first appearance.
    let mut fixed_of: super::FastMap<[usize; 3], Fixed> = super::FastMap::default();
    let mut out = Vec::with_capacity(fleet.devices.len());
    for device in &fleet.devices {
        let key = [
            device.model.addr(),
            device.hw_rev.addr(),
            device.components.addr(),
        ];
        let fixed = if let Some(&f) = fixed_of.get(&key) {
            f
        } else {
            let f = fixed_part(
                device,
                target,
                download,
                &hw_reason,
                &downgrade_reason,
                &mut model_reason,
                &mut reasons,
                &mut resolver,
            );
            if fixed_of.len() < 1 << 16 {
                fixed_of.insert(key, f);
            }
            f
        };
        let verdict = match fixed {
            Fixed::Unsupported(id) => DeviceEligibility {
                status: Status::Never,
                detail: id,
                unmet_conditions: 0,
                supported: false,
            },
            Fixed::Decided(status, detail) | Fixed::Conditions(status, detail) => {
                let mut unmet_conditions = 0u64;
                for &(i, req) in &conditions {
                    if !super::is_met(req, device, download) {
                        unmet_conditions |= 1 << i;
                    }
                }
                let status = if matches!(fixed, Fixed::Conditions(..)) && unmet_conditions != 0 {
                    Status::AfterConditions
                } else {
                    status
                };
                DeviceEligibility {
                    status,
                    detail,
                    unmet_conditions,
                    supported: true,
                }
            }
        };
        out.push(verdict);
    }
    // Failure texts were interned by the resolver while model reasons were numbered on the fly;
    // append the failures now and point the marked verdicts at them.
    let failure_base = reasons.len() as u32;
    reasons.extend(resolver.failures().iter().cloned());
    for v in &mut out {
        if v.status == Status::Never && v.detail & FAILURE_MARK != 0 {
            v.detail = failure_base + (v.detail & !FAILURE_MARK);
        }
    }
    let catalog = resolver.catalog();
    let chains: Vec<Vec<String>> = resolver
        .chains()
        .iter()
        .map(|c| c.iter().map(|&i| catalog[i as usize].id.clone()).collect())
        .collect();
    let chain_bytes = resolver
        .chains()
        .iter()
        .map(|c| {
            c.iter()
                .map(|&i| catalog[i as usize].download_bytes())
                .sum()
        })
        .collect();
    Eligibility {
        devices: out,
        reasons,
        chains,
        chain_bytes,
        cycles: resolver.cycles().to_vec(),
    }
}

/// A device's verdict as far as its model, hardware revision and components decide it.
#[derive(Clone, Copy)]
enum Fixed {
    /// The release is not built for the model: never, with this reason.
    Unsupported(u32),
    /// Supported, and this verdict stands whatever the conditions.
    Decided(Status, u32),
    /// Supported, and only the conditions remain: this verdict (eligible now) unless one is
    /// unmet.
    Conditions(Status, u32),
}

/// The checks of [`evaluate`] that do not read the device's conditions, in its order.
#[allow(clippy::too_many_arguments)]
fn fixed_part<'a>(
    device: &'a crate::fleet::Device,
    target: &ReleaseSpec,
    download: u64,
    hw_reason: &[Option<u32>],
    downgrade_reason: &[(&str, crate::version::Version, u32)],
    model_reason: &mut super::FastMap<&'a str, u32>,
    reasons: &mut Vec<String>,
    resolver: &mut ChainResolver<'a>,
) -> Fixed {
    if !target.supports_hardware(device) {
        let id = *model_reason
            .entry(device.model.as_str())
            .or_insert_with(|| {
                reasons.push(format!(
                    "model {} is not among the release's hardware ({})",
                    device.model,
                    target.hardware.join(", ")
                ));
                (reasons.len() - 1) as u32
            });
        return Fixed::Unsupported(id);
    }
    let mut components_met = true;
    let mut hardware_unmet = None;
    for (i, req) in target.requires.iter().enumerate().take(64) {
        match req.kind() {
            RequirementKind::Condition => {}
            _ if super::is_met(req, device, download) => {}
            RequirementKind::Hardware => hardware_unmet = hardware_unmet.or(hw_reason[i]),
            RequirementKind::Component => components_met = false,
        }
    }
    if let Some(id) = hardware_unmet {
        Fixed::Decided(Status::Never, id)
    } else if !target.provides.is_empty()
        && target
            .provides
            .iter()
            .all(|(c, v)| super::component(device, c) == Some(*v))
    {
        Fixed::Decided(Status::Installed, 0)
    } else if let Some((_, _, id)) = downgrade_reason
        .iter()
        .find(|(c, v, _)| super::component(device, c).is_some_and(|have| have > *v))
    {
        Fixed::Decided(Status::Never, *id)
    } else if !components_met {
        match resolver.resolve(device) {
            ChainOutcome::Chain(c) => Fixed::Decided(Status::AfterPrerequisites, c),
            ChainOutcome::NoChain(f) => Fixed::Decided(Status::Never, FAILURE_MARK | f),
        }
    } else {
        Fixed::Conditions(Status::EligibleNow, 0)
    }
}

/// What a device waits for when a condition requirement is unmet, for reason texts.
pub fn condition_hint(req: &Requirement) -> &'static str {
    match req {
        Requirement::FreeStorage { .. } => "waits for free storage",
        Requirement::Battery { .. } => "waits for battery charge",
        Requirement::Power(_) => "waits for the power state",
        Requirement::NoRoaming => "waits for a home network",
        Requirement::MeteredMax { .. } => "waits for an unmetered link",
        _ => "waits",
    }
}
