//! The console harness the UI test files share: the real [`ConsoleApp`] on a fixture fleet,
//! offline, with a fixed clock.
#![allow(dead_code)] // Each test file uses its own part of it.

use convoy::gui::backend::FixtureFeed;
use convoy::gui::{Backend, Clock, ConsoleApp};
use convoy_core::fleet::Fleet;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use egui_kittest::Harness;

/// The fixed "now" of every test.
pub const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
pub const DEVICES: usize = 500;

pub fn fixture() -> Fleet {
    generate(&SynthOptions {
        devices: DEVICES,
        seed: 5,
        now: NOW,
    })
}

/// The shared harness: the real app on the fixture, offline, with a fixed clock.
pub fn harness() -> (Harness<'static, ConsoleApp>, FixtureFeed, Fleet) {
    let fleet = fixture();
    let (backend, feed) = Backend::fixture(fleet.clone(), "fixture.db".into());
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |cc| ConsoleApp::new(&cc.egui_ctx, None, backend, Clock::Fixed(NOW)));
    settle(&mut h);
    (h, feed, fleet)
}

/// A few frames: events drained, commands applied, derived data refreshed and drawn.
pub fn settle(h: &mut Harness<'static, ConsoleApp>) {
    h.run_steps(4);
}
