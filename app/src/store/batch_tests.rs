//! Tests of the batched writes the rollout engine uses (device events, sent and acked commands),
//! against a real SQLite file.

use super::Store;
use super::audit::AuditEntry;
use super::events::NewDeviceEvent;
use super::outbox::{CommandState, OutboxCommand};
use convoy_core::time::Timestamp;

const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("cache.db")).expect("open");
    (dir, store)
}

#[test]
fn device_events_in_one_batch_read_back_in_order() {
    let (_dir, mut store) = temp_store();
    let events: Vec<NewDeviceEvent> = ["offer", "downloading", "confirmed"]
        .iter()
        .enumerate()
        .map(|(i, kind)| NewDeviceEvent {
            device_id: "CV1".into(),
            rollout_id: Some("r1".into()),
            time: NOW.plus_secs(i as i64),
            kind: (*kind).into(),
            payload: serde_json::json!({ "i": i }),
        })
        .collect();
    assert_eq!(store.append_device_events(&events).expect("append"), 3);
    assert_eq!(store.append_device_events(&[]).expect("nothing"), 0);
    let history = store.device_events("CV1").expect("history");
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["offer", "downloading", "confirmed"]);
    assert_eq!(history[2].payload, r#"{"i":2}"#);
    assert_eq!(history[0].rollout_id.as_deref(), Some("r1"));
}

#[test]
fn sent_and_acked_in_batches_keep_the_outbox_rules() {
    let (_dir, mut store) = temp_store();
    let commands: Vec<OutboxCommand> = ["CV1", "CV2", "CV3"]
        .iter()
        .map(|d| OutboxCommand {
            device_id: (*d).into(),
            kind: "offer".into(),
            payload: serde_json::json!({ "release": "r" }),
        })
        .collect();
    let decision = store
        .commit_decision(
            &AuditEntry {
                time: NOW,
                actor: "engine".into(),
                action: "rollout.offer".into(),
                payload: serde_json::json!({}),
            },
            &commands,
        )
        .expect("decision");
    let ids = decision.command_ids;
    assert_eq!(
        store
            .mark_acked_many(&ids[..1], NOW.plus_secs(1))
            .expect("ack"),
        1
    );
    // Sending again after the ack leaves it acked; unknown ids are skipped.
    let mut sent = ids.clone();
    sent.push("no-such-command".into());
    assert_eq!(
        store.mark_sent_many(&sent, NOW.plus_secs(2)).expect("sent"),
        3
    );
    let state = |id: &str| store.command(id).expect("read").expect("exists");
    assert_eq!(state(&ids[0]).state, CommandState::Acked);
    assert_eq!(state(&ids[1]).state, CommandState::Sent);
    assert_eq!(state(&ids[1]).attempts, 1);
    // A duplicate ack counts for nothing.
    assert_eq!(
        store
            .mark_acked_many(&[ids[0].clone(), ids[1].clone()], NOW.plus_secs(3))
            .expect("ack"),
        1
    );
    let pending: Vec<String> = store
        .pending(10)
        .expect("pending")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(pending, vec![ids[2].clone()]);
}
