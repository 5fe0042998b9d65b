//! Paced offers (issue 20): a started wave's devices stay `Pending` until the caller offers
//! them, no silence clock runs for them meanwhile, the wave runs until they are offered and
//! finish, and the log replays to the same state.

use super::*;
use convoy_core::plan::pacing::OfferSchedule;
use convoy_core::plan::policy::PlanningPolicy;

fn schedule() -> OfferSchedule {
    OfferSchedule::from_policy(&PlanningPolicy::default(), 1_000)
}

fn report(r: &mut Rollout, at: Timestamp, id: &str, state: DeviceState) {
    r.handle_report(
        at,
        DeviceReport {
            device_id: id.to_owned(),
            state,
        },
    )
    .expect("a valid report");
}

#[test]
fn paced_offers_keep_devices_pending_until_offered_and_replay() {
    let fleet = fleet(600, 7);
    let mut r = approved(&fleet);
    r.pace_offers(START, schedule())
        .expect("before the first wave");
    assert!(r.pace_offers(START, schedule()).is_err(), "once only");
    assert_eq!(r.offer_schedule(), Some(&schedule()));
    r.handle_timeout(START);
    let Some(RolloutAction::Offer {
        wave: 0,
        device_ids,
    }) = r.poll_action()
    else {
        panic!("the canary starts");
    };
    assert_eq!(device_ids.len(), 50);
    assert_eq!(r.devices_in(DeviceState::Pending).len(), 600);
    assert_eq!(r.state().in_flight[0], 50);
    assert_eq!(r.state().owed[0], 50);
    assert_eq!(r.awaiting_offer().len(), 50);

    // Far past the silence limit with nothing offered: nobody is silent, the wave still runs.
    let late = START.plus_secs(3 * r.spec().gates.silent_after_secs);
    r.handle_timeout(late);
    assert!(r.silent_devices().is_empty());
    assert_eq!(r.phase(), &Phase::Running { wave: 0 });

    // A device of another wave, or one offered twice, is refused.
    let outsider = r.spec().waves[1].device_ids[0].clone();
    assert!(r.offer(late, &[outsider]).is_err());
    r.offer(late, &device_ids[..20]).expect("offer twenty");
    assert!(r.offer(late, &device_ids[..1]).is_err());
    assert_eq!(r.devices_in(DeviceState::Offered).len(), 20);
    assert_eq!(r.state().owed[0], 30);
    assert_eq!(r.state().in_flight[0], 50);

    // The twenty finish; the wave does not soak while thirty are owed.
    for id in &device_ids[..20] {
        report(&mut r, late.plus_secs(60), id, DeviceState::Healthy);
    }
    r.handle_timeout(late.plus_secs(120));
    assert!(matches!(r.phase(), Phase::Running { wave: 0 }));

    // Paused: no offers; resumed: the rest go.
    r.pause(late.plus_secs(180), "dana", "night shift")
        .expect("pause");
    assert_eq!(r.awaiting_offer().len(), 30);
    assert!(r.offer(late.plus_secs(200), &device_ids[20..21]).is_err());
    r.resume(late.plus_secs(240), "dana", "morning")
        .expect("resume");
    r.offer(late.plus_secs(300), &device_ids[20..])
        .expect("the rest");
    for id in &device_ids[20..] {
        report(&mut r, late.plus_secs(400), id, DeviceState::Healthy);
    }
    assert!(
        matches!(r.phase(), Phase::Soaking { wave: 0, .. }),
        "{:?}",
        r.phase()
    );
    assert_eq!(r.state().in_flight[0], 0);

    let replayed = Rollout::replay(r.events().to_vec()).expect("replays");
    assert_eq!(replayed.state(), r.state());
    // The log round-trips through JSON, as the engine stores it.
    let json = serde_json::to_string(r.events()).expect("encode");
    let back: Vec<convoy_core::rollout::RolloutEvent> =
        serde_json::from_str(&json).expect("decode");
    assert_eq!(Rollout::replay(back).expect("replays").state(), r.state());
}

#[test]
fn offers_are_refused_when_not_paced_and_pacing_after_a_start() {
    let fleet = fleet(600, 7);
    let mut r = approved(&fleet);
    r.handle_timeout(START);
    let Some(RolloutAction::Offer { device_ids, .. }) = r.poll_action() else {
        panic!("the canary starts");
    };
    assert!(matches!(
        r.offer(START, &device_ids[..1]),
        Err(RolloutError::NotAllowed { .. })
    ));
    assert!(r.pace_offers(START, schedule()).is_err());
}

#[test]
fn excluding_the_devices_a_paced_wave_still_owes_lets_it_finish() {
    let fleet = fleet(600, 7);
    let mut r = approved(&fleet);
    r.pace_offers(START, schedule()).expect("paced");
    r.handle_timeout(START);
    let Some(RolloutAction::Offer { device_ids, .. }) = r.poll_action() else {
        panic!("the canary starts");
    };
    r.offer(START, &device_ids[..40]).expect("forty offered");
    for id in &device_ids[..40] {
        report(&mut r, START.plus_secs(60), id, DeviceState::Healthy);
    }
    assert!(matches!(r.phase(), Phase::Running { wave: 0 }));
    // The ten still owed are excluded: the wave has nothing left to wait for and soaks.
    let rest: Vec<&str> = device_ids[40..].iter().map(String::as_str).collect();
    r.exclude(
        START.plus_secs(120),
        "dana",
        "depot closed",
        "the rest",
        &rest,
    )
    .expect("exclude");
    assert_eq!(r.state().owed[0], 0);
    assert_eq!(r.state().in_flight[0], 0);
    assert!(r.awaiting_offer().is_empty());
    assert!(
        matches!(r.phase(), Phase::Soaking { wave: 0, .. }),
        "{:?}",
        r.phase()
    );
    // An excluded device cannot be offered.
    assert!(r.offer(START.plus_secs(130), &device_ids[40..41]).is_err());
    let replayed = Rollout::replay(r.events().to_vec()).expect("replays");
    assert_eq!(replayed.state().owed, r.state().owed);
    assert_eq!(replayed.state().in_flight, r.state().in_flight);
    assert_eq!(replayed.phase(), r.phase());
}

/// Issue 19: an owner that has written the log elsewhere (the engine, to the cache) lets it go
/// from memory; what the rollout reads from its own log (the schedule) stays, `logged` finds
/// only what is kept, and the written log replays to the same state.
#[test]
fn a_forgotten_log_keeps_the_schedule_and_the_written_log_replays() {
    let fleet = fleet(600, 7);
    let mut r = approved(&fleet);
    r.pace_offers(START, schedule())
        .expect("before the first wave");
    let mut written = r.events().to_vec();
    r.forget_events_before(r.event_count());
    assert!(r.events().is_empty());
    assert_eq!(r.first_kept_event(), written.len());
    assert_eq!(r.event_count(), written.len());
    assert_eq!(r.offer_schedule(), Some(&schedule()), "kept beside the log");

    r.handle_timeout(START);
    let Some(RolloutAction::Offer { device_ids, .. }) = r.poll_action() else {
        panic!("the canary starts");
    };
    r.offer(START.plus_secs(60), &device_ids)
        .expect("offer the canary");
    for id in &device_ids {
        report(&mut r, START.plus_secs(120), id, DeviceState::Healthy);
    }
    let n = r.event_count();
    assert!(r.logged(0..n).is_none(), "the start is forgotten");
    assert!(r.logged(written.len()..n + 1).is_none(), "not recorded yet");
    written.extend_from_slice(r.logged(written.len()..n).expect("kept"));
    r.forget_events_before(n - 1);
    assert_eq!(r.events().len(), 1);
    r.forget_events_before(3);
    assert_eq!(r.events().len(), 1, "forgetting less is a no-op");

    r.pause(START.plus_secs(180), "dana", "night shift")
        .expect("pause");
    let n2 = r.event_count();
    written.extend_from_slice(r.logged(n..n2).expect("kept"));
    assert_eq!(written.len(), n2);
    let replayed = Rollout::replay(written).expect("the written log replays");
    assert_eq!(replayed.state(), r.state());
    assert_eq!(replayed.offer_schedule(), r.offer_schedule());
}
