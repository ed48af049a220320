//! The hot-state contract, run against the in-memory adapter.

use maily_storage::MemoryHotState;

async fn new_hot() -> MemoryHotState {
    MemoryHotState::new()
}

maily_engine::hot_state_contract!(new_hot);
