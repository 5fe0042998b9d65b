//! The schedule: when each wave's devices are offered the release, minute by minute, under the
//! rate limit, the local maintenance windows, blackouts (with logged exceptions) and the hourly
//! bandwidth cap.
//!
//! Devices are grouped by home depot, because a depot fixes both the region (whose windows and
//! blackouts apply) and the local clock (its tz database zone with daylight-saving time, or a
//! fixed offset for depots that name no zone), which turns local windows into instants. The
//! simulator steps one minute at a time: in each minute it offers up to the rate limit, never
//! more than the bytes left in the current UTC clock hour allow, spread across the depots whose
//! window is open. It counts devices, not which device goes when; the engine's pacing
//! (`super::pacing`) applies the same minute rule ([`minute_allowance`], [`water_fill`]) to the
//! devices themselves at run time.

use crate::fleet::{Fleet, LocalClock};
use crate::time::Timestamp;
use serde::Serialize;

use super::policy::{LocalRange, PlanningPolicy, RateLimit};

/// One group of devices that share windows and a UTC offset (a depot).
#[derive(Clone, Debug)]
struct Group {
    region: String,
    clock: LocalClock,
    /// Union of windows; empty means always open.
    windows: Vec<LocalRange>,
}

/// Windows, blackouts and exceptions resolved per depot.
#[derive(Clone, Debug)]
pub struct Calendar {
    groups: Vec<Group>,
    blackouts: Vec<(String, Timestamp, Timestamp)>,
    exceptions: Vec<(String, Timestamp, Timestamp)>,
}

/// Whether a group may be offered updates in a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Openness {
    Closed,
    Open,
    /// Open only because of exception `i` to a blackout.
    ByException(usize),
}

impl Calendar {
    pub fn new(fleet: &Fleet, policy: &PlanningPolicy) -> Self {
        let windows_for = |region: &str| -> Vec<LocalRange> {
            let own: Vec<LocalRange> = policy
                .windows
                .iter()
                .filter(|w| w.region == region)
                .map(|w| LocalRange {
                    start: w.start,
                    end: w.end,
                })
                .collect();
            if own.is_empty() {
                policy
                    .windows
                    .iter()
                    .filter(|w| w.region == "*")
                    .map(|w| LocalRange {
                        start: w.start,
                        end: w.end,
                    })
                    .collect()
            } else {
                own
            }
        };
        let mut groups: Vec<Group> = fleet
            .depots
            .iter()
            .map(|d| Group {
                region: d.region.clone(),
                // An unknown zone name is refused where fleets are read (`fleet_io`); a fleet
                // built in code that names one falls back to the depot's fixed offset.
                clock: d.local_clock().unwrap_or(LocalClock::Fixed {
                    offset_secs: i64::from(d.utc_offset_minutes) * 60,
                }),
                windows: windows_for(&d.region),
            })
            .collect();
        // Devices whose depot is unknown: UTC, and only the windows for every region.
        groups.push(Group {
            region: "*".to_owned(),
            clock: LocalClock::Fixed { offset_secs: 0 },
            windows: windows_for("*"),
        });
        Self {
            groups,
            blackouts: policy
                .blackouts
                .iter()
                .map(|b| (b.region.clone(), b.from, b.until))
                .collect(),
            exceptions: policy
                .exceptions
                .iter()
                .map(|e| (e.region.clone(), e.from, e.until))
                .collect(),
        }
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The group of devices whose depot is unknown; every other group is the depot's index in
    /// `fleet.depots`.
    pub fn unknown_depot_group(&self) -> usize {
        self.groups.len() - 1
    }

    /// Minutes after local midnight at `t` for a group.
    pub fn local_minute(&self, group: usize, t: Timestamp) -> u16 {
        (self.groups[group].clock.local_second_of_day(t) / 60) as u16
    }

    /// The region of a group (`"*"` for devices whose depot is unknown).
    pub fn region(&self, group: usize) -> &str {
        &self.groups[group].region
    }

    /// Whether a group has maintenance windows (none: open at any hour).
    pub fn has_windows(&self, group: usize) -> bool {
        !self.groups[group].windows.is_empty()
    }

    /// Whether the group's maintenance window is open at `t` (blackouts aside).
    pub fn window_open(&self, group: usize, t: Timestamp) -> bool {
        let g = &self.groups[group];
        g.windows.is_empty() || {
            let minute = self.local_minute(group, t);
            g.windows.iter().any(|w| w.contains(minute))
        }
    }

    pub fn openness(&self, group: usize, t: Timestamp) -> Openness {
        let g = &self.groups[group];
        if !self.window_open(group, t) {
            return Openness::Closed;
        }
        let applies = |region: &str| region == "*" || region == g.region;
        let blacked = self
            .blackouts
            .iter()
            .any(|(r, from, until)| applies(r) && *from <= t && t < *until);
        if !blacked {
            return Openness::Open;
        }
        match self
            .exceptions
            .iter()
            .position(|(r, from, until)| applies(r) && *from <= t && t < *until)
        {
            Some(i) => Openness::ByException(i),
            None => Openness::Closed,
        }
    }

    /// The first minute at or after `from` (stepping by minutes) in which the group is open,
    /// if any before `limit`.
    pub fn next_open(&self, group: usize, from: Timestamp, limit: Timestamp) -> Option<Timestamp> {
        let mut t = from;
        while t < limit {
            if self.openness(group, t) != Openness::Closed {
                return Some(t);
            }
            t = t.plus_secs(60);
        }
        None
    }
}

/// How many devices one minute may offer: the rate after `offered` devices, no more than the
/// bytes left in the UTC clock hour allow (`used_bytes` already offered in it), and no more
/// than `open_devices` waiting in open depots. `None` when the hour's budget is spent.
pub fn minute_allowance(
    rate: &RateLimit,
    offered: u64,
    cap_bytes_per_hour: Option<u64>,
    used_bytes: u64,
    bytes_per_device: u64,
    open_devices: u64,
) -> Option<u64> {
    let budget = match cap_bytes_per_hour {
        Some(cap) if bytes_per_device > 0 => cap.saturating_sub(used_bytes) / bytes_per_device,
        _ => u64::MAX,
    };
    if budget == 0 {
        return None;
    }
    Some(rate.per_minute(offered).min(budget).min(open_devices))
}

/// Spreads `n` offers over the open groups (`remaining[g]` devices waiting in each): an even
/// share per group, the remainder to the first ones, so that depots in different time zones
/// progress together. Returns `(group, devices)` in the order taken, and takes them off
/// `remaining`.
pub fn water_fill(mut n: u64, open: &[usize], remaining: &mut [u64]) -> Vec<(usize, u64)> {
    let mut taken = Vec::new();
    let mut left: Vec<usize> = open.to_vec();
    while n > 0 && !left.is_empty() {
        let share = (n / left.len() as u64).max(1);
        for &g in &left {
            if n == 0 {
                break;
            }
            let take = share.min(remaining[g]).min(n);
            remaining[g] -= take;
            n -= take;
            if take > 0 {
                taken.push((g, take));
            }
        }
        left.retain(|&g| remaining[g] > 0);
    }
    taken
}

/// Devices and bytes offered in one UTC clock hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HourLoad {
    pub start: Timestamp,
    pub devices: u64,
    pub bytes: u64,
}

/// Devices of one depot offered in one minute: the schedule at its finest grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OfferSlot {
    pub at: Timestamp,
    /// Index into `fleet.depots`; `None` for devices whose depot is unknown.
    pub depot: Option<u32>,
    pub devices: u64,
    /// Index of the calendar exception that allowed this slot inside a blackout.
    pub exception: Option<u32>,
}

/// When one wave's devices are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct WaveTiming {
    pub first_offer: Option<Timestamp>,
    pub last_offer: Option<Timestamp>,
    /// Devices the horizon left unscheduled (windows too narrow, cap too low).
    pub unscheduled: u64,
}

/// Runs waves one after another on one clock, rate ramp and bandwidth budget.
pub struct Simulator<'c> {
    calendar: &'c Calendar,
    rate: RateLimit,
    cap_bytes_per_hour: Option<u64>,
    horizon_end: Timestamp,
    offered: u64,
    pub hours: Vec<HourLoad>,
    /// Every (minute, depot) slot with offers, in time order.
    pub slots: Vec<OfferSlot>,
    /// Devices offered under each calendar exception.
    pub exception_devices: Vec<u64>,
}

impl<'c> Simulator<'c> {
    pub fn new(calendar: &'c Calendar, policy: &PlanningPolicy, horizon_end: Timestamp) -> Self {
        Self {
            calendar,
            rate: policy.rate.clone(),
            cap_bytes_per_hour: policy.bandwidth_cap_bytes_per_hour,
            horizon_end,
            offered: 0,
            hours: Vec::new(),
            slots: Vec::new(),
            exception_devices: vec![0; policy.exceptions.len()],
        }
    }

    /// Schedules a wave of `per_group[g]` devices per group, each downloading
    /// `bytes_per_device`, starting no earlier than `start`.
    pub fn run_wave(
        &mut self,
        per_group: &[u64],
        bytes_per_device: u64,
        start: Timestamp,
    ) -> WaveTiming {
        let mut remaining = per_group.to_vec();
        let mut total: u64 = remaining.iter().sum();
        let mut timing = WaveTiming::default();
        // Align to whole minutes so that hour buckets and windows line up.
        let mut t = Timestamp::from_secs(start.secs() + (60 - start.secs().rem_euclid(60)) % 60);
        let mut open: Vec<(usize, Openness)> = Vec::with_capacity(remaining.len());
        while total > 0 {
            if t >= self.horizon_end {
                timing.unscheduled = total;
                break;
            }
            open.clear();
            open.extend(
                (0..remaining.len())
                    .filter(|&g| remaining[g] > 0)
                    .map(|g| (g, self.calendar.openness(g, t)))
                    .filter(|(_, o)| *o != Openness::Closed),
            );
            if open.is_empty() {
                t = t.plus_secs(60);
                continue;
            }
            let hour_start = Timestamp::from_secs(t.secs() - t.secs().rem_euclid(3600));
            if self.hours.last().is_none_or(|h| h.start != hour_start) {
                self.hours.push(HourLoad {
                    start: hour_start,
                    devices: 0,
                    bytes: 0,
                });
            }
            let used = self.hours.last().map_or(0, |h| h.bytes);
            let open_total: u64 = open.iter().map(|(g, _)| remaining[*g]).sum();
            let Some(n) = minute_allowance(
                &self.rate,
                self.offered,
                self.cap_bytes_per_hour,
                used,
                bytes_per_device,
                open_total,
            ) else {
                t = hour_start.plus_secs(3600);
                continue;
            };
            let offered_now = n;
            let groups: Vec<usize> = open.iter().map(|(g, _)| *g).collect();
            for (g, take) in water_fill(n, &groups, &mut remaining) {
                let exception = match open.iter().find(|(x, _)| *x == g) {
                    Some((_, Openness::ByException(e))) => {
                        self.exception_devices[*e] += take;
                        Some(*e as u32)
                    }
                    _ => None,
                };
                let depot = (g + 1 < self.calendar.groups.len()).then_some(g as u32);
                match self.slots.last_mut() {
                    Some(s) if s.at == t && s.depot == depot => s.devices += take,
                    _ => self.slots.push(OfferSlot {
                        at: t,
                        depot,
                        devices: take,
                        exception,
                    }),
                }
            }
            total -= offered_now;
            self.offered += offered_now;
            if let Some(h) = self.hours.last_mut() {
                h.devices += offered_now;
                h.bytes += offered_now * bytes_per_device;
            }
            timing.first_offer = timing.first_offer.or(Some(t));
            timing.last_offer = Some(t);
            t = t.plus_secs(60);
        }
        timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, SynthOptions};

    const T0: Timestamp = Timestamp::from_secs(1_795_392_000); // 2026-11-23T00:00:00Z

    fn fleet() -> Fleet {
        synth::generate(&SynthOptions {
            devices: 10,
            seed: 1,
            now: T0,
        })
    }

    /// Runs one wave of `n` devices in the first depot; returns the timing and the hours.
    fn run(policy: &PlanningPolicy, n: u64, bytes: u64) -> (WaveTiming, Vec<HourLoad>) {
        let fleet = fleet();
        let calendar = Calendar::new(&fleet, policy);
        let mut per_group = vec![0; calendar.group_count()];
        per_group[0] = n;
        let mut sim = Simulator::new(&calendar, policy, T0.plus_secs(30 * 86_400));
        let timing = sim.run_wave(&per_group, bytes, T0);
        (timing, sim.hours)
    }

    #[test]
    fn constant_and_exponential_rates() {
        let constant = PlanningPolicy {
            rate: RateLimit::Constant { per_minute: 10 },
            ..PlanningPolicy::default()
        };
        let (t, _) = run(&constant, 100, 1);
        assert_eq!(t.first_offer, Some(T0));
        assert_eq!(t.last_offer, Some(T0.plus_secs(9 * 60)));
        // Minute 0 offers 10 (10 offered: one doubling), minute 1 offers 20 (30 offered: three
        // doublings, 80 a minute), minute 2 offers the last 70.
        let ramp = PlanningPolicy {
            rate: RateLimit::Exponential {
                start_per_minute: 10,
                factor: 2.0,
                every_devices: 10,
                max_per_minute: 1000,
            },
            ..PlanningPolicy::default()
        };
        let (t, hours) = run(&ramp, 100, 1);
        assert_eq!(t.last_offer, Some(T0.plus_secs(2 * 60)));
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].devices, 100);
    }

    #[test]
    fn bandwidth_cap_spreads_over_hours() {
        let policy = PlanningPolicy {
            rate: RateLimit::Constant { per_minute: 1000 },
            bandwidth_cap_bytes_per_hour: Some(25 * 1_000_000),
            ..PlanningPolicy::default()
        };
        let (t, hours) = run(&policy, 60, 1_000_000);
        let per_hour: Vec<(i64, u64)> = hours
            .iter()
            .map(|h| (h.start.secs_since(T0), h.devices))
            .collect();
        assert_eq!(per_hour, [(0, 25), (3600, 25), (7200, 10)]);
        assert_eq!(t.last_offer, Some(T0.plus_secs(7200)));
    }

    #[test]
    fn closed_windows_wait_and_horizon_gives_up() {
        // The first depot opens at 02:00 its local time.
        let fleet = fleet();
        let policy = PlanningPolicy {
            windows: vec![super::super::policy::MaintenanceWindow {
                region: "*".to_owned(),
                start: super::super::policy::LocalTime(120),
                end: super::super::policy::LocalTime(180),
            }],
            ..PlanningPolicy::default()
        };
        let offset = i64::from(fleet.depots[0].utc_offset_minutes) * 60;
        let opens = (7200 - offset).rem_euclid(86_400);
        let (t, _) = run(&policy, 5, 1);
        assert_eq!(t.first_offer, Some(T0.plus_secs(opens)));
        // A horizon that ends before the window opens: nothing scheduled, and said so.
        let calendar = Calendar::new(&fleet, &policy);
        let mut per_group = vec![0; calendar.group_count()];
        per_group[0] = 5;
        let mut sim = Simulator::new(&calendar, &policy, T0.plus_secs(opens - 60));
        let timing = sim.run_wave(&per_group, 1, T0);
        assert_eq!(timing.unscheduled, 5);
        assert_eq!(timing.first_offer, None);
    }
}
