//! Checking a chain against the newest signed checkpoint that holds it: the checkpoint must be
//! genuine (its hash, its signature, the digest of its stored heads, no checkpoint missing after
//! it), and the chain must still hold the event the checkpoint recorded as its head, with that
//! hash, or have lost it to retention as recorded. That shows what a hash chain alone cannot: a
//! deletion of the chain's newest events (with its head rewound), a chain deleted with its head,
//! and a chain rewritten with recomputed hashes.

use datastorage_api::checkpoint::Checkpoint;
use datastorage_api::signing::Keyring;
use datastorage_api::CheckpointCheck;

/// What the newest checkpoint holding a chain says of it, and what the chain holds now.
#[derive(Debug)]
pub struct ChainAnchor {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The chain's head it records: sequence.
    pub sequence: i64,
    /// And hash.
    pub hash: String,
    /// Every head of that checkpoint, to check its digest; `None` when it was checked before.
    pub heads: Option<Vec<(String, i64, String)>>,
    /// Checkpoints written after it.
    pub following: u64,
    /// The newest checkpoint's id.
    pub newest: i64,
    /// The chain's stored event at `sequence`: its hash.
    pub stored: Option<String>,
    /// A purged run covering `sequence`: its last sequence and hash.
    pub purged: Option<(i64, String)>,
}

/// The verdict of a chain against `anchor`.
pub fn judge(mut anchor: ChainAnchor, keys: &Keyring) -> CheckpointCheck {
    let c = &anchor.checkpoint;
    let mut problems = Vec::new();
    if let Err(e) = c.verify(keys, anchor.heads.as_deref_mut()) {
        problems.push(e);
    }
    let expected_following = (anchor.newest - c.checkpoint_id).max(0) as u64;
    if anchor.following != expected_following {
        problems.push(format!(
            "checkpoints after {} are missing: {} of {} remain",
            c.checkpoint_id, anchor.following, expected_following
        ));
    }
    let (sequence, hash) = (anchor.sequence, anchor.hash.as_str());
    match (&anchor.stored, &anchor.purged) {
        (Some(stored), _) if stored == hash => {}
        (Some(stored), _) => problems.push(format!(
            "checkpoint {} recorded event {sequence} with hash {hash}; the chain now holds hash {stored} there: the chain was rewritten",
            c.checkpoint_id
        )),
        (None, Some((last, last_hash))) if *last != sequence || last_hash == hash => {}
        (None, Some(_)) => problems.push(format!(
            "checkpoint {} recorded event {sequence} with hash {hash}; retention recorded another hash for it",
            c.checkpoint_id
        )),
        (None, None) => problems.push(format!(
            "checkpoint {} recorded event {sequence} with hash {hash}; the chain no longer holds it: its newest events (or the whole chain) were deleted",
            c.checkpoint_id
        )),
    }
    let consistent = problems.is_empty();
    CheckpointCheck {
        checkpoint_id: c.checkpoint_id,
        created_at: c.created_at,
        sequence,
        hash: anchor.hash.clone(),
        consistent,
        message: if consistent {
            format!(
                "consistent with signed checkpoint {} ({}): event {sequence} is held with the hash it recorded",
                c.checkpoint_id, c.created_at
            )
        } else {
            problems.join("; ")
        },
    }
}
