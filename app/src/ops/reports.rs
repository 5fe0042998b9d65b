//! A rollout's report: the story its communication drafts are written from.
//!
//! The story's facts (who asked, who approved, each gate stop with its evidence) come from the
//! timeline; its device counts come from the engine's log, replayed into every device's state,
//! so a draft states the same numbers as the rollout's metrics whatever state it ended in (a
//! canary rolled back mid-wave has reverted devices and no wave summary). Only a rollout with
//! no replayable log (recorded before schema v6, or not by the engine) falls back to the wave
//! summaries, and its drafts say so.
//!
//! Not a renderer: `convoy_core::comms::draft` writes the text; the console and
//! `convoy rollout comms` show it.

use anyhow::{Context, Result};
use convoy_core::comms::{self, RolloutStory};

use crate::store::Store;

/// The story of `rollout_id` from `store`, with its device counts replayed from the engine's
/// log when the cache has one; also the number of timeline entries read.
pub fn read_story(store: &Store, rollout_id: &str) -> Result<(RolloutStory, usize)> {
    let entries = store.rollout_record(rollout_id)?;
    let mut story = comms::story(rollout_id, &entries).context("reading the rollout's record")?;
    // A log that does not replay leaves the summaries, and the draft says where its counts
    // came from; the metrics view reports the replay error itself.
    if let Ok(Some(rollout)) = store.replay_rollout(rollout_id) {
        story.count_from_states(rollout.state());
    }
    // The finding it remediates and the pre-deployment checklist, from its request (issue 20).
    if let Some(request) = super::requests::load(store, rollout_id)? {
        let r = request.record.remediation;
        story.remediation = Some(comms::RemediationFacts {
            finding_id: r.finding_id,
            proposed_shape: r.proposed_shape.map(|s| s.as_str().to_owned()),
            chosen_shape: r.shape.map(|s| s.as_str().to_owned()),
            shape_changed_by: r.shape_changed_by,
            checklist: r.checklist,
        });
    }
    Ok((story, entries.len()))
}
