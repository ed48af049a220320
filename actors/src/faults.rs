//! Test-only fault injection: with the `fault-injection` feature, tests arm a point
//! and the next worker to pass it panics there. Without the feature every check is a
//! constant `false` and the switch does not exist in the build.

use std::sync::Arc;

/// Where a worker can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// In the sender, after deliveries and before their events and offsets are written.
    SenderBeforeCommit,
    /// In analytics, after events are applied in memory and before the flush commits.
    AnalyticsBeforeFlush,
}

/// Armed faults, shared by all workers of an engine.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    armed: std::sync::Mutex<Vec<FaultPoint>>,
}

impl Faults {
    /// A shared switch with nothing armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    /// Makes the next pass through `point` panic.
    #[cfg(feature = "fault-injection")]
    pub fn arm(&self, point: FaultPoint) {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(point);
    }

    /// Armed faults that have not fired yet.
    #[cfg(feature = "fault-injection")]
    pub fn pending(&self) -> usize {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Panics if `point` is armed (consuming it).
    pub fn check(&self, point: FaultPoint) {
        #[cfg(feature = "fault-injection")]
        {
            let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = armed.iter().position(|p| *p == point) {
                armed.remove(i);
                drop(armed);
                panic!("injected fault at {point:?}");
            }
        }
        let _ = point;
    }
}
