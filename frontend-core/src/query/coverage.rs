//! How complete an answer is: its coverage and what became of each shard.
//! The vocabulary that merging, the recall estimate and the answer share.

/// How complete an answer is (`http::api` shows it to clients under these
/// names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    pub shards_total: u32,
    pub shards_answered: u32,
    pub shards_timed_out: u32,
    pub shards_failed: u32,
    pub shards_unavailable: u32,
    pub docs_total: u64,
    pub docs_searched: u64,
    pub percent: f64,
}

/// What became of one shard's part of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardState {
    /// Searched all its documents.
    Answered,
    /// Answered but cut short (early termination or a partial scan).
    Partial,
    TimedOut,
    Failed,
    /// No replica held a live lease.
    Unavailable,
}

impl ShardState {
    pub const ALL: &'static [ShardState] = &[
        ShardState::Answered,
        ShardState::Partial,
        ShardState::TimedOut,
        ShardState::Failed,
        ShardState::Unavailable,
    ];

    /// The name in responses and in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            ShardState::Answered => "answered",
            ShardState::Partial => "partial",
            ShardState::TimedOut => "timed_out",
            ShardState::Failed => "failed",
            ShardState::Unavailable => "unavailable",
        }
    }

    /// The state named `label`, if any.
    pub fn from_label(label: &str) -> Option<ShardState> {
        Self::ALL
            .iter()
            .copied()
            .find(|state| state.label() == label)
    }

    /// True when the shard answered, completely or not.
    pub fn answered(&self) -> bool {
        matches!(self, ShardState::Answered | ShardState::Partial)
    }
}

/// What became of one shard, for the response and for the status page.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardReport {
    pub shard: u32,
    pub state: ShardState,
    pub docs_searched: u64,
    pub docs_total: u64,
    pub took_ms: f64,
    pub hedges: u32,
    pub hedge_won: bool,
    /// Scan-order fingerprint of the replica that answered (0: none), which
    /// tells the accuracy estimate whether its champion lists' positions
    /// apply to this answer's `docs_searched`. Not shown to clients.
    pub layout: u64,
    /// Index generation of the replica that answered (0: none answered).
    /// During a rolling swap the replicas of a shard disagree, and this says
    /// which one the answer came from.
    pub generation: u64,
}
