//! Rollout records: a version rollout's plan and progress, persisted by the registry (like
//! migration records, with optimistic concurrency on `revision`) so a controller that crashes
//! resumes where it was.

use std::fmt;

use super::error::{Error, InvalidInput};
use super::StampId;
use crate::time::Timestamp;

/// A rollout's id, assigned by the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RolloutId(pub u64);

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rollout-{}", self.0)
    }
}

/// Where a rollout is.
///
/// ```
/// use stamps::RolloutState;
/// assert!(RolloutState::Deploying.can_become(RolloutState::Baking));
/// assert!(!RolloutState::Completed.can_become(RolloutState::Deploying));
/// assert!(RolloutState::RolledBack.is_terminal());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum RolloutState {
    /// The current wave is being deployed (the host's deploy hook runs; it must be idempotent:
    /// a controller that resumes here deploys the wave again).
    Deploying,
    /// The current wave is deployed and baking since `wave_started`.
    Baking,
    /// Every wave is deployed and passed its bake.
    Completed,
    /// Stopped by an operator (or a failing deploy); nothing rolled back.
    Halted,
    /// A wave failed its judgement and was rolled back; the rollout stopped there.
    RolledBack,
}

impl RolloutState {
    /// Every state.
    pub const ALL: [RolloutState; 5] = [
        RolloutState::Deploying,
        RolloutState::Baking,
        RolloutState::Completed,
        RolloutState::Halted,
        RolloutState::RolledBack,
    ];

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Deploying => "deploying",
            RolloutState::Baking => "baking",
            RolloutState::Completed => "completed",
            RolloutState::Halted => "halted",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    /// Parses a name written by [`RolloutState::as_str`].
    pub fn parse(s: &str) -> Option<RolloutState> {
        RolloutState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the rollout has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RolloutState::Completed | RolloutState::Halted | RolloutState::RolledBack
        )
    }

    /// Whether a record may go from `self` to `next` (keeping the state is always allowed):
    /// deploying ⇄ baking, and from either to any terminal state.
    pub fn can_become(self, next: RolloutState) -> bool {
        self == next
            || matches!(
                (self, next),
                (RolloutState::Deploying, RolloutState::Baking) | (RolloutState::Baking, RolloutState::Deploying)
            )
            || (!self.is_terminal() && next.is_terminal())
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rollout as the registry stores it: the target version, the planned waves, the current
/// wave and state, when the wave started baking, and a note (why it halted or rolled back).
///
/// ```
/// use stamps::*;
/// let r = RolloutRecord::planned("42.1.0", vec![vec![StampId(3)], vec![StampId(1), StampId(2)]])?;
/// assert_eq!((r.wave, r.state), (0, RolloutState::Deploying));
/// assert_eq!(r.current_wave(), Some(&[StampId(3)][..]));
/// assert!(RolloutRecord::planned("42", vec![vec![]]).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// With `serde`, deserialization runs [`RolloutRecord::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RolloutRecordRaw"))]
#[non_exhaustive]
pub struct RolloutRecord {
    /// Assigned by the registry.
    pub id: RolloutId,
    /// The version rolled out.
    pub target: String,
    /// The planned waves, each a list of stamps.
    pub waves: Vec<Vec<StampId>>,
    /// The current wave's index.
    pub wave: usize,
    /// Where the rollout is.
    pub state: RolloutState,
    /// When the current wave started baking.
    pub wave_started: Option<Timestamp>,
    /// Why it halted or rolled back, or what the last judgement said.
    pub note: Option<String>,
    /// Optimistic-concurrency revision, from 1.
    pub revision: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last saved.
    pub updated_at: Timestamp,
}

/// [`RolloutRecord`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RolloutRecordRaw {
    id: RolloutId,
    target: String,
    waves: Vec<Vec<StampId>>,
    wave: usize,
    state: RolloutState,
    wave_started: Option<Timestamp>,
    note: Option<String>,
    revision: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[cfg(feature = "serde")]
impl TryFrom<RolloutRecordRaw> for RolloutRecord {
    type Error = Error;

    fn try_from(r: RolloutRecordRaw) -> Result<RolloutRecord, Error> {
        let rec = RolloutRecord {
            id: r.id,
            target: r.target,
            waves: r.waves,
            wave: r.wave,
            state: r.state,
            wave_started: r.wave_started,
            note: r.note,
            revision: r.revision,
            created_at: r.created_at,
            updated_at: r.updated_at,
        };
        rec.validate()?;
        Ok(rec)
    }
}

impl RolloutRecord {
    /// A new record at the first wave, deploying (for `Registry::create_rollout`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid record ([`RolloutRecord::validate`]).
    pub fn planned(target: impl Into<String>, waves: Vec<Vec<StampId>>) -> Result<RolloutRecord, Error> {
        let r = RolloutRecord {
            id: RolloutId(0),
            target: target.into(),
            waves,
            wave: 0,
            state: RolloutState::Deploying,
            wave_started: None,
            note: None,
            revision: 0,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
        };
        r.validate()?;
        Ok(r)
    }

    /// The stamps of the current wave (`None` past the last).
    pub fn current_wave(&self) -> Option<&[StampId]> {
        self.waves.get(self.wave).map(Vec::as_slice)
    }

    /// Checks the record: a target of 1 to 128 bytes without control characters, at least one
    /// wave, no empty wave, no stamp in two waves, the wave index within the plan, a note
    /// without NUL characters.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.target.trim().is_empty() || self.target.len() > 128 || self.target.chars().any(char::is_control) {
            return Err(InvalidInput::new("target", "must be 1 to 128 bytes without control characters").into());
        }
        if self.waves.is_empty() || self.waves.iter().any(Vec::is_empty) {
            return Err(InvalidInput::new("waves", "must be at least one wave, none empty").into());
        }
        let mut seen = std::collections::BTreeSet::new();
        if !self.waves.iter().flatten().all(|s| seen.insert(*s)) {
            return Err(InvalidInput::new("waves", "a stamp appears in two waves").into());
        }
        if self.wave >= self.waves.len() {
            return Err(InvalidInput::new("wave", "is past the last wave").into());
        }
        if let Some(n) = &self.note {
            super::names::validate_text("note", n)?;
        }
        Ok(())
    }
}
