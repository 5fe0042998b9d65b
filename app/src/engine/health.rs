//! Health windows: the device telemetry events of the protocol folded into the periodic
//! [`HealthSample`]s the gates judge.
//!
//! Devices report events (a crash, a reconnect, a battery level, a heartbeat); the gates judge
//! rates over exposure. Each device has one open window; events add to it, and the engine closes
//! it every sample period, or early when the device moves between the old and the new version,
//! so that no event is counted for the wrong cohort. A window in which the device was never heard
//! from yields no sample: silence is not health.
//!
//! This is bookkeeping only; it decides nothing, reads no clock and sends nothing.

use convoy_core::rollout::HealthSample;
use convoy_core::time::Timestamp;

use crate::link::protocol::TelemetryEvent;

/// One device's open window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthWindow {
    since: Option<Timestamp>,
    heard: bool,
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
}

impl HealthWindow {
    /// Whether anything was heard since the window opened.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// Adds one event heard at `now`, which the device stamped `device_ts` (battery drain is
    /// timed by the device's own clock: messages arrive in bursts, the device's readings do not).
    pub fn record(&mut self, now: Timestamp, device_ts: Timestamp, event: &TelemetryEvent) {
        self.since.get_or_insert(now);
        self.heard = true;
        match event {
            TelemetryEvent::Crash { .. } => self.crashes = self.crashes.saturating_add(1),
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
            TelemetryEvent::Heartbeat { .. }
            | TelemetryEvent::Boot { .. }
            | TelemetryEvent::UpdateProgress { .. }
            | TelemetryEvent::Metric { .. } => {}
        }
    }

    /// Marks the device heard (a status message) without an event to count.
    pub fn touch(&mut self, now: Timestamp) {
        self.since.get_or_insert(now);
        self.heard = true;
    }

    /// Closes the window at `now` and opens the next one. Returns the sample if the device was
    /// heard and the window covered at least a second.
    pub fn close(&mut self, now: Timestamp) -> Option<HealthSample> {
        let since = self.since?;
        let period_secs = now.secs_since(since);
        if !self.heard || period_secs < 1 {
            return None;
        }
        // No discharging interval ended in this window: no drain figure for it.
        let battery_drain_pct_per_hour =
            (self.drain_secs > 0).then(|| self.drain_pct / (self.drain_secs as f64 / 3600.0));
        let sample = HealthSample {
            period_secs: u32::try_from(period_secs).unwrap_or(u32::MAX),
            crashes: self.crashes,
            reconnect_failures: self.reconnect_failures,
            support_contacts: 0,
            reconnect_secs: (self.reconnects > 0)
                .then(|| self.reconnect_total_secs / f64::from(self.reconnects)),
            battery_drain_pct_per_hour,
            custom: std::mem::take(&mut self.custom),
        };
        *self = Self {
            since: Some(now),
            battery_last: self.battery_last,
            ..Self::default()
        };
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn a_window_counts_crashes_reconnects_and_battery_drain_over_its_period() {
        let mut w = HealthWindow::default();
        w.record(T0, T0, &TelemetryEvent::Battery { pct: 80 });
        w.record(
            T0.plus_secs(60),
            T0.plus_secs(60),
            &TelemetryEvent::Crash {
                process: "nav".into(),
            },
        );
        w.record(
            T0.plus_secs(120),
            T0.plus_secs(120),
            &TelemetryEvent::Reconnect {
                offline_secs: 30,
                ok: true,
            },
        );
        w.record(
            T0.plus_secs(130),
            T0.plus_secs(130),
            &TelemetryEvent::Reconnect {
                offline_secs: 10,
                ok: true,
            },
        );
        w.record(
            T0.plus_secs(140),
            T0.plus_secs(140),
            &TelemetryEvent::Reconnect {
                offline_secs: 0,
                ok: false,
            },
        );
        w.record(
            T0.plus_secs(1800),
            T0.plus_secs(1800),
            &TelemetryEvent::Battery { pct: 78 },
        );
        let s = w.close(T0.plus_secs(1800)).expect("heard");
        assert_eq!(s.period_secs, 1800);
        assert_eq!(s.crashes, 1);
        assert_eq!(s.reconnect_failures, 1);
        assert_eq!(s.reconnect_secs, Some(20.0));
        assert_eq!(s.battery_drain_pct_per_hour, Some(4.0));
        // The next window starts where this one ended and is empty.
        w.record(
            T0.plus_secs(2000),
            T0.plus_secs(2000),
            &TelemetryEvent::Heartbeat { uptime_secs: 9 },
        );
        let s = w.close(T0.plus_secs(2700)).expect("heard again");
        assert_eq!((s.period_secs, s.crashes), (900, 0));
        assert_eq!(s.battery_drain_pct_per_hour, None);
        // A reading in a later window is measured against the last one before it.
        w.record(
            T0.plus_secs(3000),
            T0.plus_secs(3600),
            &TelemetryEvent::Battery { pct: 77 },
        );
        let s = w.close(T0.plus_secs(3600)).expect("heard");
        assert_eq!(s.battery_drain_pct_per_hour, Some(2.0));
    }

    #[test]
    fn a_silent_window_gives_no_sample_and_charging_gives_no_drain_figure() {
        let mut w = HealthWindow::default();
        assert_eq!(w.close(T0), None, "never heard");
        w.record(T0, T0, &TelemetryEvent::Battery { pct: 40 });
        w.record(
            T0.plus_secs(600),
            T0.plus_secs(600),
            &TelemetryEvent::Battery { pct: 50 },
        );
        let s = w.close(T0.plus_secs(900)).expect("heard");
        assert_eq!(s.battery_drain_pct_per_hour, None);
        assert_eq!(w.close(T0.plus_secs(1800)), None, "nothing heard since");
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
                T0,
                &TelemetryEvent::Metric {
                    name: name.into(),
                    value,
                },
            );
        }
        let s = w.close(T0.plus_secs(60)).expect("heard");
        assert_eq!(s.custom, vec![("brake_faults".to_owned(), 3.0)]);
    }
}
