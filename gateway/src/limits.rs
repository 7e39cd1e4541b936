//! Per-user limits: concurrent calls and a token-bucket rate. Over a
//! limit the call is answered 429 at once; nothing queues without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct LimitOptions {
    /// Calls one user may have in flight (hijacked streams included).
    pub concurrent_per_user: usize,
    /// Sustained calls per second per user; 0 turns the rate limit off.
    pub rate_per_user: f64,
    /// How many calls above the rate a user may make in a burst.
    pub burst_per_user: f64,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            concurrent_per_user: 64,
            rate_per_user: 200.0,
            burst_per_user: 400.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("moat: {user} has {limit} calls in flight, the most allowed; try again when one ends")]
    Concurrency { user: String, limit: usize },
    #[error("moat: {user} is over the rate limit of {rate} calls per second; slow down")]
    Rate { user: String, rate: f64 },
}

pub struct Limits {
    options: LimitOptions,
    users: Mutex<HashMap<String, UserState>>,
}

struct UserState {
    in_flight: Arc<()>,
    tokens: f64,
    refilled: Instant,
}

/// Held for the length of a call; dropping it frees the slot.
pub struct Admitted {
    _slot: Arc<()>,
}

impl Limits {
    pub fn new(options: LimitOptions) -> Limits {
        Limits {
            options,
            users: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, user: &str) -> Result<Admitted, LimitError> {
        let mut users = self.users.lock().expect("limits lock");
        let now = Instant::now();
        let burst = self.options.burst_per_user.max(1.0);
        let state = users.entry(user.to_owned()).or_insert_with(|| UserState {
            in_flight: Arc::new(()),
            tokens: burst,
            refilled: now,
        });
        // The Arc's strong count is 1 (the map's) plus one per call in flight.
        if Arc::strong_count(&state.in_flight) > self.options.concurrent_per_user {
            return Err(LimitError::Concurrency {
                user: user.to_owned(),
                limit: self.options.concurrent_per_user,
            });
        }
        if self.options.rate_per_user > 0.0 {
            let elapsed = now.duration_since(state.refilled).as_secs_f64();
            state.tokens = (state.tokens + elapsed * self.options.rate_per_user).min(burst);
            state.refilled = now;
            if state.tokens < 1.0 {
                return Err(LimitError::Rate {
                    user: user.to_owned(),
                    rate: self.options.rate_per_user,
                });
            }
            state.tokens -= 1.0;
        }
        let slot = state.in_flight.clone();
        // Forget users with nothing in flight and a full bucket, so the map
        // stays the size of the active set.
        if users.len() > 4096 {
            users.retain(|_, s| Arc::strong_count(&s.in_flight) > 1 || s.tokens < burst);
        }
        Ok(Admitted { _slot: slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_rate_are_per_user() {
        let limits = Limits::new(LimitOptions {
            concurrent_per_user: 2,
            rate_per_user: 0.0,
            burst_per_user: 1.0,
        });
        let a = limits.admit("alice").unwrap();
        let _b = limits.admit("alice").unwrap();
        assert!(matches!(
            limits.admit("alice"),
            Err(LimitError::Concurrency { .. })
        ));
        assert!(limits.admit("bob").is_ok());
        drop(a);
        assert!(limits.admit("alice").is_ok());

        let limits = Limits::new(LimitOptions {
            concurrent_per_user: 100,
            rate_per_user: 0.001,
            burst_per_user: 3.0,
        });
        for _ in 0..3 {
            limits.admit("carol").unwrap();
        }
        assert!(matches!(
            limits.admit("carol"),
            Err(LimitError::Rate { .. })
        ));
        assert!(limits.admit("dave").is_ok());
    }
}
