//! Random draws for per-request decisions (fault and mirror shares, rate-limit rollout).
//!
//! Services are cloned per request (`oneshot`), so a generator stored in the service would be
//! copied with its state and every clone would draw the same number. Production draws therefore
//! come from the thread-local generator; a seeded generator is for tests that call one service
//! instance repeatedly.

/// Where a service's random numbers come from.
#[derive(Clone, Debug)]
pub(crate) enum Draw {
    /// The thread-local generator.
    Thread,
    /// A seeded generator (reproducible, per instance).
    Seeded(fastrand::Rng),
}

impl Draw {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        match seed {
            Some(s) => Self::Seeded(fastrand::Rng::with_seed(s)),
            None => Self::Thread,
        }
    }

    pub(crate) fn u64(&mut self) -> u64 {
        match self {
            Self::Thread => fastrand::u64(..),
            Self::Seeded(rng) => rng.u64(..),
        }
    }
}
