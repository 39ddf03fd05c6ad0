//! Shared health of the supervised actors, read by `/readyz` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where one actor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorState {
    Starting,
    Running,
    /// Failed and waiting for its backoff to pass.
    Restarting,
    /// Failed too often in the window: the supervisor stopped restarting it.
    GaveUp,
    /// Stopped by shutdown.
    Stopped,
}

impl ActorState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Restarting => "restarting",
            ActorState::GaveUp => "gave-up",
            ActorState::Stopped => "stopped",
        }
    }
}

/// One actor's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorStatus {
    pub state: ActorState,
    pub restarts_total: u64,
    pub last_error: Option<String>,
}

/// Cheap to clone; every clone sees the same statuses.
#[derive(Debug, Clone, Default)]
pub struct Health {
    actors: Arc<Mutex<BTreeMap<String, ActorStatus>>>,
    /// Inputs the actors could not process (detail for `/readyz`, `/metrics`, the API).
    dead_letters: crate::dead_letter::DeadLetters,
}

impl Health {
    /// The actors' open dead letters.
    pub fn dead_letters(&self) -> &crate::dead_letter::DeadLetters {
        &self.dead_letters
    }

    pub fn set(&self, name: &str, state: ActorState, error: Option<String>) {
        let mut map = self.actors.lock().unwrap();
        let s = map.entry(name.to_string()).or_insert(ActorStatus {
            state,
            restarts_total: 0,
            last_error: None,
        });
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
    }

    pub fn count_restart(&self, name: &str) {
        if let Some(s) = self.actors.lock().unwrap().get_mut(name) {
            s.restarts_total += 1;
        }
    }

    /// Ready when every actor has started and none has been given up on or stopped (one
    /// waiting out its restart backoff still counts: that is a blip, not an outage).
    pub fn ready(&self) -> bool {
        self.actors
            .lock()
            .unwrap()
            .values()
            .all(|s| matches!(s.state, ActorState::Running | ActorState::Restarting))
    }

    pub fn snapshot(&self) -> BTreeMap<String, ActorStatus> {
        self.actors.lock().unwrap().clone()
    }
}
