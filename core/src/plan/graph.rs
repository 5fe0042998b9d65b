//! Prerequisite chains: which other releases a device must install first, in which order, so
//! that a release's component requirements come to be met.
//!
//! The search runs over a device's component state (the installed versions of every component
//! any release names). An edge is a catalog release the device may install in that state: built
//! for its model, its hardware and component requirements met, and it changes at least one
//! component without downgrading any. Breadth-first search gives the shortest chain; releases are
//! tried in `(counter, id)` order, so among equally short chains the one with the earliest
//! releases wins, deterministically. Visited states are never revisited, so a cycle in the
//! catalog cannot loop the search; catalog cycles are still reported ([`catalog_cycles`]).
//!
//! Condition requirements of prerequisite releases (battery, roaming, storage) are not part of
//! the search: they are transient and are checked when each prerequisite is itself rolled out.
//! Results are memoised per (model, hw_rev, component state), so a million devices cost a few
//! hundred searches.

use crate::fleet::Device;
use crate::release::ReleaseSpec;
use crate::requirement::{Requirement, RequirementKind};
use crate::version::Version;
use std::collections::{HashSet, VecDeque};

use super::FastMap as HashMap;

/// Installed versions of [`ChainResolver`]'s components, in their order.
type State = Vec<Option<Version>>;

/// Upper bound on states one search explores; a realistic catalog needs a handful.
const MAX_STATES: usize = 20_000;

/// The outcome of a search for one device state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainOutcome {
    /// Index into [`ChainResolver::chains`].
    Chain(u32),
    /// Index into [`ChainResolver::failures`]: why no chain exists.
    NoChain(u32),
}

/// Finds and memoises prerequisite chains for one target release and catalog.
pub struct ChainResolver<'a> {
    target: &'a ReleaseSpec,
    /// Usable catalog releases in `(counter, id)` order.
    catalog: Vec<&'a ReleaseSpec>,
    /// Every component name any release requires or provides, sorted.
    components: Vec<&'a str>,
    memo: HashMap<(&'a str, &'a str), HashMap<State, ChainOutcome>>,
    chains: Vec<Vec<u32>>,
    chain_ids: HashMap<Vec<u32>, u32>,
    failures: Vec<String>,
    failure_ids: HashMap<String, u32>,
    state_buf: Vec<Option<Version>>,
    cycles: Vec<Vec<String>>,
}

impl<'a> ChainResolver<'a> {
    /// `catalog` must already exclude the target and expired releases.
    pub fn new(target: &'a ReleaseSpec, mut catalog: Vec<&'a ReleaseSpec>) -> Self {
        catalog.sort_by(|a, b| (a.counter, &a.id).cmp(&(b.counter, &b.id)));
        let mut components: Vec<&str> = Vec::new();
        for r in std::iter::once(target).chain(catalog.iter().copied()) {
            for req in &r.requires {
                if let Requirement::Component { name, .. } = req {
                    components.push(name);
                }
            }
            for (c, _) in r.provides.iter() {
                components.push(c);
            }
        }
        components.sort_unstable();
        components.dedup();
        let cycles = catalog_cycles(&catalog);
        Self {
            target,
            catalog,
            components,
            memo: HashMap::default(),
            chains: Vec::new(),
            chain_ids: HashMap::default(),
            failures: Vec::new(),
            failure_ids: HashMap::default(),
            state_buf: Vec::new(),
            cycles,
        }
    }

    /// Chains found so far, as indices into [`Self::catalog`].
    pub fn chains(&self) -> &[Vec<u32>] {
        &self.chains
    }

    pub fn catalog(&self) -> &[&'a ReleaseSpec] {
        &self.catalog
    }

    /// Why no chain exists, one text per distinct failure.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Dependency cycles in the catalog, each as release ids (first repeated at the end).
    pub fn cycles(&self) -> &[Vec<String>] {
        &self.cycles
    }

    /// The shortest chain that meets the target's component requirements for `device`.
    /// Only call it for a device whose hardware the target supports.
    pub fn resolve(&mut self, device: &'a Device) -> ChainOutcome {
        self.state_buf.clear();
        self.state_buf
            .extend(self.components.iter().map(|c| super::component(device, c)));
        let key = (device.model.as_str(), device.hw_rev.as_str());
        if let Some(hit) = self
            .memo
            .get(&key)
            .and_then(|m| m.get(self.state_buf.as_slice()))
        {
            return *hit;
        }
        let start = self.state_buf.clone();
        let outcome = self.search(device, start.clone());
        self.memo.entry(key).or_default().insert(start, outcome);
        outcome
    }

    fn component_index(&self, name: &str) -> Option<usize> {
        self.components.binary_search(&name).ok()
    }

    fn met_in(&self, req: &Requirement, device: &Device, state: &[Option<Version>]) -> bool {
        match req {
            Requirement::Component { name, constraint } => self
                .component_index(name)
                .and_then(|i| state[i])
                .is_some_and(|v| constraint.allows(v)),
            Requirement::HwRev(_) => req.is_met(device, 0),
            _ => true,
        }
    }

    fn goal(&self, device: &Device, state: &[Option<Version>]) -> bool {
        self.target
            .requires
            .iter()
            .filter(|r| r.kind() == RequirementKind::Component)
            .all(|r| self.met_in(r, device, state))
    }

    /// The state after installing `release`, or `None` if it may not be installed in `state`.
    fn apply(
        &self,
        release: &ReleaseSpec,
        device: &Device,
        state: &[Option<Version>],
    ) -> Option<Vec<Option<Version>>> {
        if !release.supports_hardware(device)
            || !release
                .requires
                .iter()
                .all(|r| r.kind() == RequirementKind::Condition || self.met_in(r, device, state))
        {
            return None;
        }
        let mut next = state.to_vec();
        let mut changed = false;
        for (c, v) in release.provides.iter() {
            let i = self.component_index(c)?;
            match next[i] {
                Some(old) if old > *v => return None,
                Some(old) if old == *v => {}
                _ => {
                    next[i] = Some(*v);
                    changed = true;
                }
            }
        }
        changed.then_some(next)
    }

    fn search(&mut self, device: &Device, start: Vec<Option<Version>>) -> ChainOutcome {
        // Each entry: state, parent entry, release taken to reach it.
        let mut nodes: Vec<(Vec<Option<Version>>, usize, u32)> =
            vec![(start.clone(), usize::MAX, u32::MAX)];
        let mut seen: HashSet<State> = HashSet::new();
        seen.insert(start);
        let mut queue = VecDeque::from([0usize]);
        while let Some(at) = queue.pop_front() {
            for (ri, release) in self.catalog.iter().enumerate() {
                let Some(next) = self.apply(release, device, &nodes[at].0) else {
                    continue;
                };
                if !seen.insert(next.clone()) {
                    continue;
                }
                let done = self.goal(device, &next);
                nodes.push((next, at, ri as u32));
                let id = nodes.len() - 1;
                if done {
                    let mut chain = Vec::new();
                    let mut cur = id;
                    while nodes[cur].1 != usize::MAX {
                        chain.push(nodes[cur].2);
                        cur = nodes[cur].1;
                    }
                    chain.reverse();
                    return ChainOutcome::Chain(self.intern_chain(chain));
                }
                if nodes.len() >= MAX_STATES {
                    return ChainOutcome::NoChain(self.intern_failure(format!(
                        "prerequisite search gave up after {MAX_STATES} states"
                    )));
                }
                queue.push_back(id);
            }
        }
        let why = self.explain_failure(device, &nodes[0].0);
        ChainOutcome::NoChain(self.intern_failure(why))
    }

    fn explain_failure(&self, device: &Device, state: &[Option<Version>]) -> String {
        let mut parts = Vec::new();
        for req in &self.target.requires {
            let Requirement::Component { name, constraint } = req else {
                continue;
            };
            if self.met_in(req, device, state) {
                continue;
            }
            let providers: Vec<&ReleaseSpec> = self
                .catalog
                .iter()
                .copied()
                .filter(|r| {
                    r.supports_hardware(device)
                        && r.provides.get(name).is_some_and(|v| constraint.allows(*v))
                })
                .collect();
            if providers.is_empty() {
                parts.push(format!(
                    "no release in the catalog provides {req} for {}",
                    device.model
                ));
                continue;
            }
            let ids: Vec<&str> = providers.iter().map(|r| r.id.as_str()).collect();
            let in_cycle = self
                .cycles
                .iter()
                .find(|c| c.iter().any(|id| ids.contains(&id.as_str())));
            match in_cycle {
                Some(cycle) => parts.push(format!(
                    "{req}: its providers depend on each other in a cycle ({})",
                    cycle.join(" -> ")
                )),
                None => parts.push(format!(
                    "{req}: no installable path to {} from this device's versions",
                    ids.join(" or ")
                )),
            }
        }
        if parts.is_empty() {
            "no prerequisite chain".to_owned()
        } else {
            parts.join("; ")
        }
    }

    fn intern_chain(&mut self, chain: Vec<u32>) -> u32 {
        if let Some(id) = self.chain_ids.get(&chain) {
            return *id;
        }
        let id = self.chains.len() as u32;
        self.chain_ids.insert(chain.clone(), id);
        self.chains.push(chain);
        id
    }

    fn intern_failure(&mut self, why: String) -> u32 {
        if let Some(id) = self.failure_ids.get(&why) {
            return *id;
        }
        let id = self.failures.len() as u32;
        self.failure_ids.insert(why.clone(), id);
        self.failures.push(why);
        id
    }
}

/// Possible dependency cycles among releases: `a` depends on `b` (another release) when `b`
/// provides a version that meets one of `a`'s component requirements. A device that already
/// meets one link never needs the cycle, so cycles only explain searches that failed. Each
/// cycle is listed once, starting at its smallest index, with its first id repeated at the end.
pub fn catalog_cycles(catalog: &[&ReleaseSpec]) -> Vec<Vec<String>> {
    let n = catalog.len();
    let deps: Vec<Vec<usize>> = catalog
        .iter()
        .map(|a| {
            (0..n)
                .filter(|&j| {
                    !std::ptr::eq(*a, catalog[j])
                        && a.requires.iter().any(|req| match req {
                            Requirement::Component { name, constraint } => catalog[j]
                                .provides
                                .get(name)
                                .is_some_and(|v| constraint.allows(*v)),
                            _ => false,
                        })
                })
                .collect()
        })
        .collect();
    // Depth-first search with colours; a back edge closes a cycle.
    let mut colour = vec![0u8; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut found = Vec::new();
    for v in 0..n {
        if colour[v] == 0 {
            visit(v, &deps, &mut colour, &mut stack, &mut found);
        }
    }
    for mut cycle in found {
        if let Some(min_pos) = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| **v)
            .map(|(i, _)| i)
        {
            cycle.rotate_left(min_pos);
        }
        let mut ids: Vec<String> = cycle.iter().map(|&i| catalog[i].id.clone()).collect();
        ids.push(ids[0].clone());
        if !cycles.contains(&ids) {
            cycles.push(ids);
        }
    }
    cycles
}

/// Depth-first visit with colours (0 new, 1 on the stack, 2 done); a back edge closes a cycle.
fn visit(
    v: usize,
    deps: &[Vec<usize>],
    colour: &mut [u8],
    stack: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
) {
    colour[v] = 1;
    stack.push(v);
    for &w in &deps[v] {
        if colour[w] == 1 {
            if let Some(pos) = stack.iter().position(|&x| x == w) {
                found.push(stack[pos..].to_vec());
            }
        } else if colour[w] == 0 {
            visit(w, deps, colour, stack, found);
        }
    }
    stack.pop();
    colour[v] = 2;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Fleet, SmallMap};
    use crate::synth::{self, SynthOptions};
    use crate::time::Timestamp;

    fn release(
        id: &str,
        counter: u64,
        provides: &[(&str, &str)],
        requires: &[&str],
    ) -> ReleaseSpec {
        ReleaseSpec {
            id: id.to_owned(),
            version: Version::new(1, 0, 0),
            counter,
            hardware: vec!["T300".to_owned()],
            provides: provides
                .iter()
                .map(|(c, v)| (*c, v.parse::<Version>().expect("version")))
                .collect::<SmallMap<Version>>(),
            requires: requires
                .iter()
                .map(|r| r.parse().expect("requirement"))
                .collect(),
            artifacts: Vec::new(),
            expires: Timestamp::from_secs(i64::MAX),
        }
    }

    fn device(components: &[(&str, &str)]) -> Device {
        let fleet: Fleet = synth::generate(&SynthOptions {
            devices: 1,
            seed: 1,
            now: Timestamp::from_secs(0),
        });
        let mut d = fleet.devices[0].clone();
        d.model = "T300".into();
        d.components = components
            .iter()
            .map(|(c, v)| (*c, v.parse::<Version>().expect("version")))
            .collect();
        d
    }

    fn ids<'a>(
        resolver: &mut ChainResolver<'a>,
        device: &'a Device,
    ) -> Result<Vec<String>, String> {
        match resolver.resolve(device) {
            ChainOutcome::Chain(c) => Ok(resolver.chains()[c as usize]
                .iter()
                .map(|&i| resolver.catalog()[i as usize].id.clone())
                .collect()),
            ChainOutcome::NoChain(f) => Err(resolver.failures()[f as usize].clone()),
        }
    }

    #[test]
    fn shortest_chain_with_counter_tie_break() {
        let target = release("app-3", 30, &[("app", "3.0")], &["boot>=2.0", "radio>=2.0"]);
        // Two ways to get boot 2: boot-2a (counter 10) and boot-2b (counter 11); radio needs boot.
        let catalog = [
            release("radio-2", 12, &[("radio", "2.0")], &["boot>=2.0"]),
            release("boot-2b", 11, &[("boot", "2.1")], &[]),
            release("boot-2a", 10, &[("boot", "2.0")], &[]),
        ];
        let d = device(&[("app", "2.0"), ("boot", "1.0"), ("radio", "1.0")]);
        let mut r = ChainResolver::new(&target, catalog.iter().collect());
        let got = ids(&mut r, &d);
        assert_eq!(got, Ok(vec!["boot-2a".to_owned(), "radio-2".to_owned()]));
        // Memoised: the same state gives the same chain index without another search.
        assert_eq!(r.resolve(&d), r.resolve(&d));
        assert_eq!(r.chains().len(), 1);
    }

    #[test]
    fn no_downgrade_inside_a_chain() {
        // The target wants exactly boot 2.0; the only release providing it would take a device
        // on boot 2.5 backwards, so there is no chain. A device on boot 1.5 gets it.
        let target = release("app-3", 30, &[("app", "3.0")], &["boot in 2.0"]);
        let catalog = [release("boot-2", 10, &[("boot", "2.0")], &[])];
        let newer = device(&[("app", "2.0"), ("boot", "2.5")]);
        let older = device(&[("app", "2.0"), ("boot", "1.5")]);
        let mut r = ChainResolver::new(&target, catalog.iter().collect());
        let got = ids(&mut r, &newer);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.contains("boot in 2.0: no installable path to boot-2")),
            "{got:?}"
        );
        assert_eq!(ids(&mut r, &older), Ok(vec!["boot-2".to_owned()]));
    }

    #[test]
    fn cycles_are_detected_and_explain_failures() {
        // boot-2 needs radio 2, radio-2 needs boot 2: a device with neither is stuck.
        let target = release("app-3", 30, &[("app", "3.0")], &["boot>=2.0"]);
        let catalog = [
            release("boot-2", 10, &[("boot", "2.0")], &["radio>=2.0"]),
            release("radio-2", 11, &[("radio", "2.0")], &["boot>=2.0"]),
        ];
        let refs: Vec<&ReleaseSpec> = catalog.iter().collect();
        assert_eq!(
            catalog_cycles(&refs),
            vec![vec![
                "boot-2".to_owned(),
                "radio-2".to_owned(),
                "boot-2".to_owned()
            ]]
        );
        let stuck = device(&[("app", "2.0"), ("boot", "1.0"), ("radio", "1.0")]);
        let lucky = device(&[("app", "2.0"), ("boot", "1.0"), ("radio", "2.0")]);
        let mut r = ChainResolver::new(&target, refs);
        let got = ids(&mut r, &stuck);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.contains("cycle (boot-2 -> radio-2 -> boot-2)")),
            "{got:?}"
        );
        // A device that already has radio 2 breaks the cycle.
        assert_eq!(ids(&mut r, &lucky), Ok(vec!["boot-2".to_owned()]));
    }
}
