//! Pacing at run time: which of the devices waiting for their offer may be offered now, when
//! the next offer can happen, and why the rest wait.
//!
//! The planner's [`super::schedule::Simulator`] counts offers minute by minute; a [`Pacer`]
//! applies the same minute rule ([`minute_allowance`] and [`water_fill`]) to real devices on
//! the run's clock: in each minute, devices in depots whose maintenance window is open (local
//! time, daylight-saving included) and outside blackouts (unless an exception allows it), at
//! most the rate after the devices offered so far (constant or ramp, counted across the whole
//! rollout), and no more than the bytes left in the UTC clock hour under the cap.
//!
//! The pacer keeps the schedule's own clock: a pause stops it ([`Pacer::pause`]) and nothing is
//! offered until [`Pacer::resume`]; minutes spent paused are not caught up afterwards, and the
//! ramp continues from the devices already offered rather than starting over.
//!
//! What it deliberately is not: a clock or a queue of devices. The caller passes `now` and the
//! calendar groups of the devices that wait, in the order it wants them offered, and gets back
//! which of them to offer; it never reads time and never touches a device.

use serde::{Deserialize, Serialize};

use super::policy::{Blackout, CalendarException, MaintenanceWindow, PlanningPolicy, RateLimit};
use super::schedule::{Calendar, Openness, minute_allowance, water_fill};
use crate::fleet::Fleet;
use crate::time::Timestamp;

/// How far ahead the pacer looks for an open window before it says "not within two weeks".
const LOOK_AHEAD_SECS: i64 = 14 * 86_400;

/// The schedule a rollout's offers follow: the planning policy's rate, windows, blackouts,
/// exceptions and cap, and the bytes each device downloads. Fixed when the rollout starts and
/// kept in its log ([`crate::rollout::EventKind::OffersPaced`]), so a resumed run paces by
/// the same rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferSchedule {
    pub rate: RateLimit,
    #[serde(default)]
    pub windows: Vec<MaintenanceWindow>,
    #[serde(default)]
    pub blackouts: Vec<Blackout>,
    #[serde(default)]
    pub exceptions: Vec<CalendarException>,
    #[serde(default)]
    pub bandwidth_cap_bytes_per_hour: Option<u64>,
    pub bytes_per_device: u64,
}

impl OfferSchedule {
    /// The schedule of `policy` for devices downloading `bytes_per_device` each.
    pub fn from_policy(policy: &PlanningPolicy, bytes_per_device: u64) -> Self {
        Self {
            rate: policy.rate.clone(),
            windows: policy.windows.clone(),
            blackouts: policy.blackouts.clone(),
            exceptions: policy.exceptions.clone(),
            bandwidth_cap_bytes_per_hour: policy.bandwidth_cap_bytes_per_hour,
            bytes_per_device,
        }
    }

    /// The planning policy with this schedule's parts (the rest default).
    pub fn policy(&self) -> PlanningPolicy {
        PlanningPolicy {
            rate: self.rate.clone(),
            windows: self.windows.clone(),
            blackouts: self.blackouts.clone(),
            exceptions: self.exceptions.clone(),
            bandwidth_cap_bytes_per_hour: self.bandwidth_cap_bytes_per_hour,
            ..PlanningPolicy::default()
        }
    }

    /// A pacer for this schedule over `fleet`'s depots, its clock stopped.
    pub fn pacer(&self, fleet: &Fleet) -> Pacer {
        let policy = self.policy();
        Pacer::new(
            Calendar::new(fleet, &policy),
            &policy,
            self.bytes_per_device,
        )
    }
}

/// Why devices wait, beyond the rate itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wait {
    /// The maintenance window is closed, or a blackout holds (`blacked_out` of them), for
    /// `depots` depots with devices waiting; the first of them opens at `until` (its local
    /// time `until_local`, `HH:MM`), or not within two weeks.
    WindowClosed {
        depots: usize,
        blacked_out: usize,
        until: Option<Timestamp>,
        until_local: Option<String>,
    },
    /// The bytes of this UTC clock hour are spent; the next hour starts at `until`.
    BandwidthCap { until: Timestamp },
    /// The schedule's clock is stopped (the rollout is paused).
    Paused,
}

impl Wait {
    /// The reason in plain words, as the timeline records it.
    pub fn words(&self) -> String {
        match self {
            Self::WindowClosed {
                depots,
                blacked_out,
                until_local,
                ..
            } => {
                let what = if *blacked_out == 0 {
                    "window closed"
                } else if blacked_out == depots {
                    "blackout"
                } else {
                    "window closed or blackout"
                };
                let plural = if *depots == 1 { "depot" } else { "depots" };
                match until_local {
                    Some(local) => format!("{what} for {depots} {plural} until {local} local"),
                    None => format!("{what} for {depots} {plural}, not open within two weeks"),
                }
            }
            Self::BandwidthCap { .. } => "hourly bandwidth cap reached".to_owned(),
            Self::Paused => "paused: the schedule's clock is stopped".to_owned(),
        }
    }
}

/// One answer of the pacer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    /// Positions in the caller's waiting list to offer now, ascending.
    pub offer: Vec<usize>,
    /// Devices offered now under each calendar exception (index, devices), to be logged.
    pub exceptions: Vec<(usize, u64)>,
    /// When the next offer can happen, if any device still waits and the pacer can tell.
    pub next_at: Option<Timestamp>,
    /// Why devices still wait, when it is more than the rate.
    pub wait: Option<Wait>,
}

/// The pacing of one rollout's offers. See the module docs.
#[derive(Clone, Debug)]
pub struct Pacer {
    calendar: Calendar,
    rate: RateLimit,
    cap_bytes_per_hour: Option<u64>,
    bytes_per_device: u64,
    /// Devices offered so far across the rollout: the ramp's count.
    offered: u64,
    /// The UTC clock hour being filled and the bytes offered in it.
    hour: Option<(Timestamp, u64)>,
    /// The minute offers were last made in: a minute offers at most its rate, however often
    /// the caller asks.
    last_minute: Option<Timestamp>,
    /// The ramp's count at the start of `last_minute`, and what that minute offered.
    minute_offered: u64,
    /// The schedule's clock: seconds it ran, and since when it runs (`None`: stopped).
    ran_secs: i64,
    running_since: Option<Timestamp>,
}

impl Pacer {
    /// A pacer for a rollout of devices downloading `bytes_per_device` each, by `policy`'s
    /// rate, windows, blackouts, exceptions and cap, with its clock stopped (call
    /// [`Pacer::resume`] when the rollout runs).
    pub fn new(calendar: Calendar, policy: &PlanningPolicy, bytes_per_device: u64) -> Self {
        Self {
            calendar,
            rate: policy.rate.clone(),
            cap_bytes_per_hour: policy.bandwidth_cap_bytes_per_hour,
            bytes_per_device,
            offered: 0,
            hour: None,
            last_minute: None,
            minute_offered: 0,
            ran_secs: 0,
            running_since: None,
        }
    }

    /// Takes up where an earlier run left off: `offered` devices offered so far in the rollout,
    /// `in_hour` of them in the UTC clock hour of `now` and `in_minute` in its minute (so a
    /// run resumed within the same minute or hour does not offer them again).
    pub fn restore(&mut self, now: Timestamp, offered: u64, in_hour: u64, in_minute: u64) {
        self.offered = offered;
        self.hour = Some((hour_of(now), in_hour.saturating_mul(self.bytes_per_device)));
        self.last_minute = Some(minute_of(now));
        self.minute_offered = in_minute;
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Devices offered so far (the ramp's count).
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// The rate in force now, devices a minute.
    pub fn per_minute(&self) -> u64 {
        self.rate.per_minute(self.offered)
    }

    /// Seconds the schedule's clock has run (pauses excluded) up to `now`.
    pub fn ran_secs(&self, now: Timestamp) -> i64 {
        self.ran_secs
            + self
                .running_since
                .map_or(0, |since| now.secs_since(since).max(0))
    }

    /// Whether the schedule's clock runs.
    pub fn is_running(&self) -> bool {
        self.running_since.is_some()
    }

    /// Stops the schedule's clock (the rollout paused).
    pub fn pause(&mut self, now: Timestamp) {
        if let Some(since) = self.running_since.take() {
            self.ran_secs += now.secs_since(since).max(0);
        }
    }

    /// Starts the schedule's clock again; the ramp goes on from the devices already offered.
    pub fn resume(&mut self, now: Timestamp) {
        if self.running_since.is_none() {
            self.running_since = Some(now);
        }
    }

    /// Which of the waiting devices (`groups[k]`: the calendar group of the `k`-th waiting
    /// device, in the order they should go) may be offered at `now`, and when to ask again.
    /// The offers it returns are counted as made.
    pub fn poll(&mut self, now: Timestamp, groups: &[usize]) -> Pace {
        let mut pace = Pace::default();
        if groups.is_empty() {
            return pace;
        }
        if self.running_since.is_none() {
            pace.wait = Some(Wait::Paused);
            return pace;
        }
        let minute = minute_of(now);
        let next_minute = minute.plus_secs(60);
        let hour_start = hour_of(minute);
        if self.hour.is_none_or(|(h, _)| h != hour_start) {
            self.hour = Some((hour_start, 0));
        }
        if self.last_minute != Some(minute) {
            self.last_minute = Some(minute);
            self.minute_offered = 0;
        }
        let n_groups = self.calendar.group_count();
        let mut waiting = vec![0u64; n_groups];
        for &g in groups {
            if let Some(w) = waiting.get_mut(g) {
                *w += 1;
            }
        }
        let openness: Vec<Openness> = (0..n_groups)
            .map(|g| {
                if waiting[g] == 0 {
                    Openness::Closed
                } else {
                    self.calendar.openness(g, minute)
                }
            })
            .collect();
        let open: Vec<usize> = (0..n_groups)
            .filter(|&g| openness[g] != Openness::Closed)
            .collect();
        let open_total: u64 = open.iter().map(|&g| waiting[g]).sum();
        let used = self.hour.map_or(0, |(_, b)| b);
        // The rate is the one in force at the start of the minute, less what the minute
        // already offered; the hour's budget already counts those.
        let at_minute_start = self.offered.saturating_sub(self.minute_offered);
        let allowance = minute_allowance(
            &self.rate,
            at_minute_start,
            self.cap_bytes_per_hour,
            used,
            self.bytes_per_device,
            open_total,
        );
        let mut cap_reached = allowance.is_none();
        let rate_left = self
            .rate
            .per_minute(at_minute_start)
            .saturating_sub(self.minute_offered);
        let n = allowance.map_or(0, |a| a.min(rate_left));
        if n > 0 {
            let mut remaining = waiting.clone();
            let taken = water_fill(n, &open, &mut remaining);
            let mut quota = vec![0u64; n_groups];
            for (g, take) in taken {
                quota[g] += take;
                if let Openness::ByException(e) = openness[g] {
                    match pace.exceptions.iter_mut().find(|(i, _)| *i == e) {
                        Some((_, d)) => *d += take,
                        None => pace.exceptions.push((e, take)),
                    }
                }
            }
            for (k, &g) in groups.iter().enumerate() {
                if let Some(q) = quota.get_mut(g)
                    && *q > 0
                {
                    *q -= 1;
                    pace.offer.push(k);
                }
            }
            let offered_now = pace.offer.len() as u64;
            self.offered += offered_now;
            self.minute_offered += offered_now;
            if let Some((_, b)) = self.hour.as_mut() {
                *b += offered_now * self.bytes_per_device;
            }
            cap_reached = self.cap_bytes_per_hour.is_some_and(|cap| {
                self.bytes_per_device > 0
                    && cap.saturating_sub(self.hour.map_or(0, |(_, b)| b)) < self.bytes_per_device
            });
        }
        let left = groups.len() - pace.offer.len();
        if left == 0 {
            return pace;
        }
        // Devices left in closed depots: when does the first of them open?
        let closed: Vec<usize> = (0..n_groups)
            .filter(|&g| waiting[g] > 0 && openness[g] == Openness::Closed)
            .collect();
        let still_open = left > closed_count(&closed, &waiting);
        let opens = closed
            .iter()
            .filter_map(|&g| {
                self.calendar
                    .next_open(g, next_minute, minute.plus_secs(LOOK_AHEAD_SECS))
                    .map(|t| (t, g))
            })
            .min();
        if cap_reached {
            let until = hour_start.plus_secs(3600);
            pace.wait = Some(Wait::BandwidthCap { until });
            pace.next_at = Some(until);
        } else if still_open {
            pace.next_at = Some(next_minute);
        } else {
            pace.next_at = opens.map(|(t, _)| t);
        }
        if !cap_reached && !closed.is_empty() {
            let blacked_out = closed
                .iter()
                .filter(|&&g| self.calendar.window_open(g, minute))
                .count();
            pace.wait = Some(Wait::WindowClosed {
                depots: closed.len(),
                blacked_out,
                until: opens.map(|(t, _)| t),
                until_local: opens.map(|(t, g)| {
                    let m = self.calendar.local_minute(g, t);
                    format!("{:02}:{:02}", m / 60, m % 60)
                }),
            });
        }
        pace
    }
}

/// Devices waiting in the closed groups.
fn closed_count(closed: &[usize], waiting: &[u64]) -> usize {
    closed.iter().map(|&g| waiting[g] as usize).sum()
}

/// The start of the minute of `t`.
fn minute_of(t: Timestamp) -> Timestamp {
    Timestamp::from_secs(t.secs() - t.secs().rem_euclid(60))
}

/// The start of the UTC clock hour of `t`.
fn hour_of(t: Timestamp) -> Timestamp {
    Timestamp::from_secs(t.secs() - t.secs().rem_euclid(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Depot, Fleet, GeoPoint};
    use crate::plan::policy::{LocalTime, MaintenanceWindow};

    fn depot(id: &str, zone: Option<&str>, offset_minutes: i32) -> Depot {
        Depot {
            id: id.to_owned(),
            name: id.to_owned(),
            region: format!("r-{id}"),
            position: GeoPoint { lat: 0.0, lon: 0.0 },
            utc_offset_minutes: offset_minutes,
            time_zone: zone.map(str::to_owned),
        }
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("time")
    }

    fn window(start_h: u16, end_h: u16) -> Vec<MaintenanceWindow> {
        vec![MaintenanceWindow {
            region: "*".to_owned(),
            start: LocalTime(start_h * 60),
            end: LocalTime(end_h * 60),
        }]
    }

    fn pacer(depots: Vec<Depot>, policy: &PlanningPolicy, bytes: u64) -> Pacer {
        let fleet = Fleet::new(depots, Vec::new());
        let mut p = Pacer::new(Calendar::new(&fleet, policy), policy, bytes);
        p.resume(Timestamp::from_secs(0));
        p
    }

    /// The first instant at or after `from` at which `n` devices of group 0 get an offer.
    fn first_offer(p: &mut Pacer, from: Timestamp) -> Timestamp {
        let mut t = from;
        loop {
            let pace = p.poll(t, &[0]);
            if !pace.offer.is_empty() {
                return t;
            }
            t = pace.next_at.expect("a next offer");
        }
    }

    #[test]
    fn a_window_follows_berlin_across_both_daylight_saving_changes() {
        // 02:00-03:00 local in Berlin: 01:00Z in winter (CET), 00:00Z in summer (CEST).
        let policy = PlanningPolicy {
            windows: window(2, 3),
            ..PlanningPolicy::default()
        };
        let mut p = pacer(vec![depot("ber", Some("Europe/Berlin"), 60)], &policy, 1);
        // The spring change (2026-03-29, 02:00 CET -> 03:00 CEST): the window's local hour does
        // not exist that night, so the first open minute is the next night's, at 00:00Z.
        assert_eq!(
            first_offer(&mut p, at("2026-03-28T12:00:00Z")),
            at("2026-03-30T00:00:00Z")
        );
        // The night before it, still winter: 01:00Z.
        let mut p = pacer(vec![depot("ber", Some("Europe/Berlin"), 60)], &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-03-27T12:00:00Z")),
            at("2026-03-28T01:00:00Z")
        );
        // The autumn change (2026-10-25, 03:00 CEST -> 02:00 CET): 02:00 local comes twice,
        // first at 00:00Z (CEST), which is when the window opens.
        let mut p = pacer(vec![depot("ber", Some("Europe/Berlin"), 60)], &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-10-24T12:00:00Z")),
            at("2026-10-25T00:00:00Z")
        );
        let mut p = pacer(vec![depot("ber", Some("Europe/Berlin"), 60)], &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-10-25T12:00:00Z")),
            at("2026-10-26T01:00:00Z")
        );
        // Without a zone the depot keeps its fixed standard offset all year (01:00Z).
        let mut p = pacer(vec![depot("ber", None, 60)], &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-07-01T12:00:00Z")),
            at("2026-07-02T01:00:00Z")
        );
    }

    #[test]
    fn a_window_follows_new_york_across_both_daylight_saving_changes() {
        // 22:00-06:00 local in New York: EST is UTC-5, EDT UTC-4.
        let policy = PlanningPolicy {
            windows: window(22, 6),
            ..PlanningPolicy::default()
        };
        let ny = || vec![depot("nyc", Some("America/New_York"), -300)];
        // 2026-03-08 is the spring change: on the 7th (EST) 22:00 is 03:00Z on the 8th; on the
        // 8th (EDT) 22:00 is 02:00Z on the 9th.
        let mut p = pacer(ny(), &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-03-07T12:00:00Z")),
            at("2026-03-08T03:00:00Z")
        );
        let mut p = pacer(ny(), &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-03-08T12:00:00Z")),
            at("2026-03-09T02:00:00Z")
        );
        // 2026-11-01 is the autumn change: on 31 October (EDT) 22:00 is 02:00Z, on 1 November
        // (EST) 03:00Z.
        let mut p = pacer(ny(), &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-10-31T12:00:00Z")),
            at("2026-11-01T02:00:00Z")
        );
        let mut p = pacer(ny(), &policy, 1);
        assert_eq!(
            first_offer(&mut p, at("2026-11-01T12:00:00Z")),
            at("2026-11-02T03:00:00Z")
        );
        // Closing: at 06:00 EDT (10:00Z) the window is shut, and the reason says until when.
        let mut p = pacer(ny(), &policy, 1);
        let pace = p.poll(at("2026-10-30T10:00:00Z"), &[0]);
        assert!(pace.offer.is_empty());
        assert_eq!(pace.next_at, Some(at("2026-10-31T02:00:00Z")));
        assert_eq!(
            pace.wait.expect("waits").words(),
            "window closed for 1 depot until 22:00 local"
        );
    }

    #[test]
    fn a_blackout_holds_offers_except_inside_its_logged_exception() {
        use crate::plan::policy::{Blackout, CalendarException};
        let policy = PlanningPolicy {
            rate: RateLimit::Constant { per_minute: 5 },
            blackouts: vec![Blackout {
                region: "r-a".to_owned(),
                from: at("2026-12-24T00:00:00Z"),
                until: at("2026-12-27T00:00:00Z"),
                reason: "holiday freeze".to_owned(),
            }],
            exceptions: vec![CalendarException {
                region: "r-a".to_owned(),
                from: at("2026-12-25T10:00:00Z"),
                until: at("2026-12-25T10:02:00Z"),
                reason: "CHG-1 approved".to_owned(),
            }],
            ..PlanningPolicy::default()
        };
        let mut p = pacer(vec![depot("a", None, 0), depot("b", None, 0)], &policy, 1);
        // Depot a is blacked out, b is not: b's devices go, a's wait, and the reason says so.
        let waiting = [0, 0, 0, 1];
        let pace = p.poll(at("2026-12-24T12:00:00Z"), &waiting);
        assert_eq!(pace.offer, [3]);
        assert_eq!(
            pace.wait.expect("a waits").words(),
            "blackout for 1 depot until 10:00 local"
        );
        assert_eq!(pace.next_at, Some(at("2026-12-25T10:00:00Z")));
        // Inside the exception: offered, and counted against it for the log.
        let pace = p.poll(at("2026-12-25T10:00:00Z"), &waiting[..3]);
        assert_eq!(pace.offer, [0, 1, 2]);
        assert_eq!(pace.exceptions, [(0, 3)]);
    }

    #[test]
    fn the_rate_the_cap_and_the_minute_hold_however_often_asked() {
        let policy = PlanningPolicy {
            rate: RateLimit::Constant { per_minute: 3 },
            bandwidth_cap_bytes_per_hour: Some(10 * 100),
            ..PlanningPolicy::default()
        };
        let mut p = pacer(vec![depot("a", None, 0)], &policy, 100);
        let t0 = at("2026-11-23T10:00:10Z");
        let waiting = vec![0usize; 20];
        let pace = p.poll(t0, &waiting);
        assert_eq!(pace.offer, [0, 1, 2]);
        assert_eq!(pace.next_at, Some(at("2026-11-23T10:01:00Z")));
        // Asked again in the same minute: nothing more.
        let pace = p.poll(t0.plus_secs(20), &waiting[3..]);
        assert!(pace.offer.is_empty());
        // Three more minutes: 3, 3, then the cap's last 1 of 10 this hour, and a wait.
        let mut total = 3;
        for m in 1..4 {
            let pace = p.poll(
                at("2026-11-23T10:00:00Z").plus_secs(60 * m),
                &waiting[total..],
            );
            total += pace.offer.len();
        }
        assert_eq!(total, 10);
        let pace = p.poll(at("2026-11-23T10:04:00Z"), &waiting[total..]);
        assert!(pace.offer.is_empty());
        assert_eq!(
            pace.wait,
            Some(Wait::BandwidthCap {
                until: at("2026-11-23T11:00:00Z")
            })
        );
        assert_eq!(pace.next_at, Some(at("2026-11-23T11:00:00Z")));
        let pace = p.poll(at("2026-11-23T11:00:00Z"), &waiting[total..]);
        assert_eq!(pace.offer.len(), 3);
    }

    #[test]
    fn a_pause_stops_the_clock_and_the_ramp_continues_after_it() {
        let policy = PlanningPolicy {
            rate: RateLimit::Exponential {
                start_per_minute: 2,
                factor: 2.0,
                every_devices: 4,
                max_per_minute: 100,
            },
            ..PlanningPolicy::default()
        };
        let t0 = at("2026-11-23T10:00:00Z");
        let fleet = Fleet::new(vec![depot("a", None, 0)], Vec::new());
        let mut p = Pacer::new(Calendar::new(&fleet, &policy), &policy, 1);
        p.resume(t0);
        let waiting = vec![0usize; 100];
        // 2, then 2 (4 offered: one doubling), then 4 (8: two doublings).
        let sizes: Vec<usize> = (0..3)
            .map(|m| p.poll(t0.plus_secs(60 * m), &waiting).offer.len())
            .collect();
        assert_eq!(sizes, [2, 2, 4]);
        p.pause(t0.plus_secs(150));
        let pace = p.poll(t0.plus_secs(180), &waiting);
        assert!(pace.offer.is_empty());
        assert_eq!(pace.wait, Some(Wait::Paused));
        // Resumed an hour later: the ramp goes on at 8 a minute (8 offered), not back to 2,
        // and the paused hour is not caught up.
        p.resume(t0.plus_secs(3600));
        assert_eq!(p.ran_secs(t0.plus_secs(3600)), 150);
        let pace = p.poll(t0.plus_secs(3600), &waiting);
        assert_eq!(pace.offer.len(), 8);
        // A restored pacer (a resumed run) continues the same way, and a minute that already
        // offered 3 of its 8 before the restart offers the other 5.
        let mut q = pacer(vec![depot("a", None, 0)], &policy, 1);
        q.restore(t0.plus_secs(3600), 8, 0, 0);
        assert_eq!(q.poll(t0.plus_secs(3600), &waiting).offer.len(), 8);
        let mut q = pacer(vec![depot("a", None, 0)], &policy, 1);
        q.restore(t0.plus_secs(3630), 11, 3, 3);
        assert_eq!(q.poll(t0.plus_secs(3640), &waiting).offer.len(), 5);
    }

    #[test]
    fn offers_spread_over_open_depots_and_match_the_planner_hour_by_hour() {
        // Two depots in different zones, a night window, a rate and a cap: driving the pacer
        // minute by minute gives the planner's simulation, hour by hour.
        let policy = PlanningPolicy {
            rate: RateLimit::Constant { per_minute: 7 },
            windows: window(1, 4),
            bandwidth_cap_bytes_per_hour: Some(150 * 1_000),
            ..PlanningPolicy::default()
        };
        let depots = vec![
            depot("ber", Some("Europe/Berlin"), 60),
            depot("nyc", Some("America/New_York"), -300),
        ];
        let fleet = Fleet::new(depots.clone(), Vec::new());
        let calendar = Calendar::new(&fleet, &policy);
        let t0 = at("2026-11-23T00:00:00Z");
        let mut sim =
            super::super::schedule::Simulator::new(&calendar, &policy, t0.plus_secs(10 * 86_400));
        let mut per_group = vec![0; calendar.group_count()];
        per_group[0] = 400;
        per_group[1] = 250;
        sim.run_wave(&per_group, 1_000, t0);
        let planned: Vec<(Timestamp, u64)> =
            sim.hours.iter().map(|h| (h.start, h.devices)).collect();

        let mut p = pacer(depots, &policy, 1_000);
        let mut waiting: Vec<usize> = [vec![0; 400], vec![1; 250]].concat();
        let mut hours: Vec<(Timestamp, u64)> = Vec::new();
        let mut t = t0;
        while !waiting.is_empty() {
            let pace = p.poll(t, &waiting);
            if !pace.offer.is_empty() {
                for &k in &pace.offer {
                    assert!(
                        calendar.window_open(waiting[k], t),
                        "offer outside the window at {t}"
                    );
                }
                let hour = hour_of(t);
                match hours.last_mut() {
                    Some((h, n)) if *h == hour => *n += pace.offer.len() as u64,
                    _ => hours.push((hour, pace.offer.len() as u64)),
                }
                let mut k = 0;
                waiting.retain(|_| {
                    let keep = !pace.offer.contains(&k);
                    k += 1;
                    keep
                });
            }
            t = pace.next_at.unwrap_or(t.plus_secs(60));
        }
        assert_eq!(hours, planned);
        assert!(hours.iter().all(|&(_, n)| n <= 150));
    }
}
