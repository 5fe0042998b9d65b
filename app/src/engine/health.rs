//! Health windows: the device telemetry events of the protocol folded into the periodic
//! [`HealthSample`]s the gates judge.
//!
//! Devices report events (a crash, a reconnect, a battery level, a heartbeat); the gates judge
//! rates over exposure. Each device has one open window; events add to it, and the engine closes
//! it every sample period, or early when the device moves between the old and the new version,
//! so that no event is counted for the wrong cohort. A window in which the device was never heard
//! from yields no sample: silence is not health.
//!
//! Exposure is measured on the device's own clock, between consecutive messages: the time from
//! one message's timestamp to the next counts only when the two are at most `max_gap_secs`
//! apart. A longer gap is time the device may have been unable to report (a broker outage, a
//! dead zone, a small buffer that dropped events), so it counts as neither healthy nor sick.
//! Messages that arrive in a burst after a delay still cover the time they were stamped in.
//! A crash reported in a message after a lost gap is not counted either: its exposure was not,
//! and counting the one without the other inflates the rate (a device back from an outage with
//! buffered crashes, or a loaded machine at a high time scale, would stop a good release).
//!
//! This is bookkeeping only; it decides nothing, reads no clock and sends nothing.

use convoy_core::rollout::HealthSample;
use convoy_core::time::Timestamp;

use crate::link::protocol::TelemetryEvent;

/// The default longest gap between two of a device's messages that still counts as exposure.
pub const DEFAULT_MAX_GAP_SECS: i64 = 1800;

/// One device's open window.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthWindow {
    max_gap_secs: i64,
    heard: bool,
    /// The newest device timestamp heard, kept across windows.
    last_device_ts: Option<Timestamp>,
    /// Whether the message at `last_device_ts` came after a gap too long to count, kept
    /// across windows: its crashes are not counted.
    after_lost_gap: bool,
    exposure_secs: i64,
    /// Time between messages too far apart to count, in this window.
    lost_secs: i64,
    crashes: u32,
    reconnect_failures: u32,
    reconnects: u32,
    reconnect_total_secs: f64,
    /// The device's previous battery reading, kept across windows: levels change slowly, so
    /// drain is measured between consecutive readings, and credited to the window of the later.
    battery_last: Option<(Timestamp, u8)>,
    drain_pct: f64,
    drain_secs: i64,
    custom: Vec<(String, f64)>,
    /// Support tickets and customer reports about the device in this window (`signals`).
    support_contacts: u32,
}

impl Default for HealthWindow {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_GAP_SECS)
    }
}

impl HealthWindow {
    /// An empty window that counts gaps of up to `max_gap_secs` between messages as exposure.
    pub fn new(max_gap_secs: i64) -> Self {
        Self {
            max_gap_secs: max_gap_secs.max(1),
            heard: false,
            last_device_ts: None,
            after_lost_gap: false,
            exposure_secs: 0,
            lost_secs: 0,
            crashes: 0,
            reconnect_failures: 0,
            reconnects: 0,
            reconnect_total_secs: 0.0,
            battery_last: None,
            drain_pct: 0.0,
            drain_secs: 0,
            custom: Vec::new(),
            support_contacts: 0,
        }
    }

    /// Counts a support ticket or customer report about the device (not a message from it: it
    /// extends no exposure, and is judged with the window's telemetry when the window closes).
    pub fn support_contact(&mut self) {
        self.support_contacts = self.support_contacts.saturating_add(1);
    }

    /// Whether anything was heard since the window opened.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// Seconds between messages too far apart to count, since the window opened.
    pub fn lost_secs(&self) -> i64 {
        self.lost_secs
    }

    /// Extends the exposure to a message the device stamped `device_ts`; returns whether the
    /// message's events come with counted exposure (not after a lost gap).
    fn cover(&mut self, device_ts: Timestamp) -> bool {
        self.heard = true;
        match self.last_device_ts {
            Some(prev) if device_ts > prev => {
                let gap = device_ts.secs_since(prev);
                self.after_lost_gap = gap > self.max_gap_secs;
                if self.after_lost_gap {
                    self.lost_secs += gap;
                } else {
                    self.exposure_secs += gap;
                }
                self.last_device_ts = Some(device_ts);
                !self.after_lost_gap
            }
            // The same second: the same message as the last, or one beside it.
            Some(prev) if device_ts == prev => !self.after_lost_gap,
            // Older (a resent or reordered message): within time already accounted for.
            Some(_) => true,
            None => {
                self.last_device_ts = Some(device_ts);
                self.after_lost_gap = false;
                true
            }
        }
    }

    /// Adds one event the device stamped `device_ts`.
    pub fn record(&mut self, device_ts: Timestamp, event: &TelemetryEvent) {
        let with_exposure = self.cover(device_ts);
        match event {
            TelemetryEvent::Crash { .. } if with_exposure => {
                self.crashes = self.crashes.saturating_add(1);
            }
            TelemetryEvent::Reconnect { offline_secs, ok } => {
                if *ok {
                    self.reconnects = self.reconnects.saturating_add(1);
                    self.reconnect_total_secs += *offline_secs as f64;
                } else {
                    self.reconnect_failures = self.reconnect_failures.saturating_add(1);
                }
            }
            TelemetryEvent::Battery { pct } => {
                if let Some((t0, p0)) = self.battery_last {
                    let secs = device_ts.secs_since(t0);
                    // A rising level is charging: that interval says nothing about drain.
                    if secs > 0 && *pct <= p0 {
                        self.drain_pct += f64::from(p0 - pct);
                        self.drain_secs += secs;
                    }
                }
                self.battery_last = Some((device_ts, *pct));
            }
            TelemetryEvent::Metric { name, value } if value.is_finite() && *value >= 0.0 => {
                match self.custom.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => *total += value,
                    None => self.custom.push((name.clone(), *value)),
                }
            }
            // A crash after a lost gap is not counted (see the module's doc).
            TelemetryEvent::Crash { .. }
            | TelemetryEvent::Heartbeat { .. }
            | TelemetryEvent::Boot { .. }
            | TelemetryEvent::UpdateProgress { .. }
            | TelemetryEvent::Metric { .. } => {}
        }
    }

    /// Marks the device heard (a status message stamped `device_ts`) without an event to count.
    pub fn touch(&mut self, device_ts: Timestamp) {
        let _ = self.cover(device_ts);
    }

    /// Closes the window and opens the next one. Returns the sample if the device was heard and
    /// the window covered at least a second of exposure; otherwise what it holds stays for the
    /// next close.
    pub fn close(&mut self) -> Option<HealthSample> {
        if !self.heard || self.exposure_secs < 1 {
            return None;
        }
        // No discharging interval ended in this window: no drain figure for it.
        let battery_drain_pct_per_hour =
            (self.drain_secs > 0).then(|| self.drain_pct / (self.drain_secs as f64 / 3600.0));
        let sample = HealthSample {
            period_secs: u32::try_from(self.exposure_secs).unwrap_or(u32::MAX),
            crashes: self.crashes,
            reconnect_failures: self.reconnect_failures,
            support_contacts: self.support_contacts,
            reconnect_secs: (self.reconnects > 0)
                .then(|| self.reconnect_total_secs / f64::from(self.reconnects)),
            battery_drain_pct_per_hour,
            custom: std::mem::take(&mut self.custom),
        };
        *self = Self {
            last_device_ts: self.last_device_ts,
            after_lost_gap: self.after_lost_gap,
            battery_last: self.battery_last,
            ..Self::new(self.max_gap_secs)
        };
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    /// The false stop seen in CI (issue 18): a device's crash reported after a gap too long to
    /// count was counted while its exposure was not, inflating the updated cohort's rate.
    #[test]
    fn a_crash_after_a_lost_gap_is_not_counted_without_its_exposure() {
        let mut w = HealthWindow::new(1800);
        w.record(T0, &TelemetryEvent::Heartbeat { uptime_secs: 1 });
        let crash = TelemetryEvent::Crash {
            process: "nav".into(),
        };
        // 2 h later: the gap is lost, and the crashes in that message with it.
        w.record(T0.plus_secs(7_200), &crash);
        w.record(T0.plus_secs(7_200), &crash);
        // The next message is 10 min later: its crash comes with its exposure.
        w.record(T0.plus_secs(7_800), &crash);
        let s = w.close().expect("heard");
        assert_eq!((s.period_secs, s.crashes), (600, 1));
        assert_eq!(w.lost_secs(), 0, "a new window");
    }

    #[test]
    fn a_window_counts_crashes_reconnects_and_battery_drain_over_its_period() {
        let mut w = HealthWindow::default();
        w.record(T0, &TelemetryEvent::Battery { pct: 80 });
        w.record(
            T0.plus_secs(60),
            &TelemetryEvent::Crash {
                process: "nav".into(),
            },
        );
        w.record(
            T0.plus_secs(120),
            &TelemetryEvent::Reconnect {
                offline_secs: 30,
                ok: true,
            },
        );
        w.record(
            T0.plus_secs(130),
            &TelemetryEvent::Reconnect {
                offline_secs: 10,
                ok: true,
            },
        );
        w.record(
            T0.plus_secs(140),
            &TelemetryEvent::Reconnect {
                offline_secs: 0,
                ok: false,
            },
        );
        w.record(T0.plus_secs(1800), &TelemetryEvent::Battery { pct: 78 });
        let s = w.close().expect("heard");
        assert_eq!(s.period_secs, 1800);
        assert_eq!(s.crashes, 1);
        assert_eq!(s.reconnect_failures, 1);
        assert_eq!(s.reconnect_secs, Some(20.0));
        assert_eq!(s.battery_drain_pct_per_hour, Some(4.0));
        // The next window starts where this one ended and is empty.
        w.record(
            T0.plus_secs(2000),
            &TelemetryEvent::Heartbeat { uptime_secs: 9 },
        );
        let s = w.close().expect("heard again");
        // Exposure runs to the last message (2000), not to the close: the rest counts later.
        assert_eq!((s.period_secs, s.crashes), (200, 0));
        assert_eq!(s.battery_drain_pct_per_hour, None);
        // A reading in a later window is measured against the last one before it.
        w.record(T0.plus_secs(3600), &TelemetryEvent::Battery { pct: 77 });
        let s = w.close().expect("heard");
        assert_eq!(s.battery_drain_pct_per_hour, Some(2.0));
    }

    #[test]
    fn a_silent_window_gives_no_sample_and_charging_gives_no_drain_figure() {
        let mut w = HealthWindow::default();
        assert_eq!(w.close(), None, "never heard");
        w.record(T0, &TelemetryEvent::Battery { pct: 40 });
        w.record(T0.plus_secs(600), &TelemetryEvent::Battery { pct: 50 });
        let s = w.close().expect("heard");
        assert_eq!(s.battery_drain_pct_per_hour, None);
        assert_eq!(w.close(), None, "nothing heard since");
    }

    #[test]
    fn custom_metrics_sum_per_name_and_ignore_invalid_values() {
        let mut w = HealthWindow::default();
        for (name, value) in [
            ("brake_faults", 1.0),
            ("brake_faults", 2.0),
            ("x", f64::NAN),
        ] {
            w.record(
                T0,
                &TelemetryEvent::Metric {
                    name: name.into(),
                    value,
                },
            );
        }
        w.record(
            T0.plus_secs(60),
            &TelemetryEvent::Heartbeat { uptime_secs: 60 },
        );
        let s = w.close().expect("heard");
        assert_eq!(s.period_secs, 60);
        assert_eq!(s.custom, vec![("brake_faults".to_owned(), 3.0)]);
    }

    #[test]
    fn a_gap_longer_than_the_bound_is_neither_healthy_nor_sick() {
        let mut w = HealthWindow::new(1800);
        let beat = TelemetryEvent::Heartbeat { uptime_secs: 1 };
        w.record(T0, &beat);
        w.record(T0.plus_secs(300), &beat);
        // The broker was away for two hours and the device's messages were lost.
        w.record(
            T0.plus_secs(300 + 7200),
            &TelemetryEvent::Crash {
                process: "x".into(),
            },
        );
        w.record(T0.plus_secs(300 + 7200 + 300), &beat);
        let s = w.close().expect("heard");
        assert_eq!(s.period_secs, 600, "two five-minute intervals");
        // The crash stamped at the end of the lost gap belongs to the gap: not counted, as its
        // exposure is not (counting one without the other inflated the rate, issue 18).
        assert_eq!(s.crashes, 0);
        assert_eq!(w.lost_secs(), 0, "a new window");
    }

    #[test]
    fn a_late_burst_covers_the_time_it_was_stamped_in_and_old_messages_add_no_time() {
        let mut w = HealthWindow::default();
        let beat = TelemetryEvent::Heartbeat { uptime_secs: 1 };
        w.record(T0, &beat);
        assert_eq!(w.close(), None, "no exposure yet: nothing to sample");
        // Arriving together much later, stamped five minutes apart.
        for k in 1..=6 {
            w.record(T0.plus_secs(300 * k), &beat);
        }
        // A resent old message and a same-second one add nothing.
        w.record(T0.plus_secs(600), &beat);
        w.touch(T0.plus_secs(1800));
        let s = w.close().expect("heard");
        assert_eq!(s.period_secs, 1800);
    }
}
