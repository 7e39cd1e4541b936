//! Policy decisions per second per core, in this process: the gateway's
//! `moat_policy::Enforcer::decide` with one requirement (a call that asks
//! for no privilege), under a policy of 10 roles (12 rules each, one
//! deny, one role inheriting another) and 1000 users each bound to 1–3 of
//! them by `g` lines. Cached: a working set of 4000 (user, requirement)
//! pairs already decided once, decided again and again. First-time: a
//! freshly compiled enforcer (an empty cache) deciding 5000 pairs it has
//! never seen, which is casbin evaluating every rule. Per core = decisions
//! over the thread's own CPU time, so other work on the machine does not
//! count; latency = each decision timed on its own.

use std::hint::black_box;
use std::time::{Duration, Instant};

use moat_api::Action;
use moat_policy::policy::DEFAULT_MODEL;
use moat_policy::{Enforcer, Identity, Policy, Requirement};
use nix::time::{ClockId, clock_gettime};

use crate::Options;
use crate::stats::{Figure, percentile};

const USERS: usize = 1000;
const ROLES: usize = 10;
const RULES_PER_ROLE: usize = 12;
const CACHED_PER_USER: usize = 4;
const FIRST_TIME_PER_USER: usize = 5;
/// CPU time spent on each throughput measurement.
const SPEND: Duration = Duration::from_secs(1);
const LATENCY_SAMPLES: usize = 200_000;

/// A small deterministic generator, so every run decides the same things.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .expect("thread CPU clock")
}

/// The policy text: each role allows 12 actions, role 9 also denies one
/// of them, role 1 inherits role 0, and every user has 1–3 roles.
fn policy_text(rng: &mut Lcg) -> String {
    let actions = Action::all();
    let mut text = String::from("# moat-bench: 10 roles, 1000 users\n");
    for role in 0..ROLES {
        let mut granted = std::collections::BTreeSet::new();
        while granted.len() < RULES_PER_ROLE {
            granted.insert(actions[rng.below(actions.len())].as_str());
        }
        for action in granted {
            text.push_str(&format!("p, role{role}, {action}, *, allow\n"));
        }
    }
    text.push_str("p, role9, container.create, *, deny\n");
    text.push_str("g, role1, role0\n");
    for user in 0..USERS {
        let mut roles = std::collections::BTreeSet::new();
        let count = 1 + rng.below(3);
        while roles.len() < count {
            roles.insert(rng.below(ROLES));
        }
        for role in roles {
            text.push_str(&format!("g, user:u{user:04}, role{role}\n"));
        }
    }
    text
}

/// `per_user` distinct requirements for each user: an action on an
/// object, as the gateway derives for a call naming one.
fn workload(rng: &mut Lcg, per_user: usize, salt: &str) -> Vec<(usize, Requirement)> {
    let actions = Action::all();
    let mut out = Vec::new();
    for user in 0..USERS {
        for i in 0..per_user {
            let action = actions[rng.below(actions.len())];
            out.push((user, Requirement::new(action, format!("{salt}{i}"))));
        }
    }
    out
}

struct Round {
    cached_per_core: f64,
    first_per_core: f64,
    allowed_share: f64,
}

pub fn run(options: &Options) -> Vec<Figure> {
    let mut rng = Lcg(0x6d6f6174);
    let text = policy_text(&mut rng);
    let policy = Policy::from_text(DEFAULT_MODEL, &text).expect("the bench policy is valid");
    let users: Vec<Identity> = (0..USERS)
        .map(|u| Identity::new(format!("u{u:04}"), Vec::<String>::new()))
        .collect();
    let cached_set = workload(&mut rng, CACHED_PER_USER, "c");
    let decide = |enforcer: &Enforcer, (user, requirement): &(usize, Requirement)| {
        enforcer.decide(&users[*user], std::slice::from_ref(requirement))
    };

    let rounds = options.runs.clamp(3, 5);
    eprint!("policy: {rounds} rounds ");
    let mut results = Vec::new();
    let (mut cached_latency, mut first_latency) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // First time: a new enforcer has an empty cache.
        let enforcer = Enforcer::new(policy.clone()).expect("compiles");
        let first_set = workload(&mut rng, FIRST_TIME_PER_USER, &format!("r{round}-"));
        let mut allowed = 0usize;
        let cpu = thread_cpu();
        for item in &first_set {
            let start = Instant::now();
            let verdict = black_box(decide(&enforcer, item));
            first_latency.push(start.elapsed());
            allowed += usize::from(verdict.allowed);
        }
        let first_cpu = thread_cpu() - cpu;

        // Cached: every pair decided once, then again and again.
        for item in &cached_set {
            decide(&enforcer, item);
        }
        let cpu = thread_cpu();
        let mut decided = 0usize;
        while thread_cpu() - cpu < SPEND {
            for item in &cached_set {
                black_box(decide(&enforcer, item));
            }
            decided += cached_set.len();
        }
        let cached_cpu = thread_cpu() - cpu;
        for item in cached_set.iter().cycle().take(LATENCY_SAMPLES / rounds) {
            let start = Instant::now();
            black_box(decide(&enforcer, item));
            cached_latency.push(start.elapsed());
        }
        results.push(Round {
            cached_per_core: decided as f64 / cached_cpu.as_secs_f64(),
            first_per_core: first_set.len() as f64 / first_cpu.as_secs_f64(),
            allowed_share: 100.0 * allowed as f64 / first_set.len() as f64,
        });
        eprint!(".");
    }
    eprintln!();

    let median = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let us = |samples: &[Duration], p| percentile(samples, p).as_secs_f64() * 1e6;
    vec![
        Figure::new(
            "policy",
            "cached decisions/s per core",
            median(|r| r.cached_per_core),
            "/s/core",
        )
        .at_least(1e6, "1,000,000")
        .runs(rounds),
        Figure::new(
            "policy",
            "cached decision p50",
            us(&cached_latency, 50.0),
            "µs",
        )
        .runs(cached_latency.len()),
        Figure::new(
            "policy",
            "cached decision p99",
            us(&cached_latency, 99.0),
            "µs",
        )
        .at_most(5.0, "5 µs")
        .runs(cached_latency.len()),
        Figure::new(
            "policy",
            "first-time decisions/s per core",
            median(|r| r.first_per_core),
            "/s/core",
        )
        .runs(rounds),
        Figure::new(
            "policy",
            "first-time decision p50",
            us(&first_latency, 50.0),
            "µs",
        )
        .runs(first_latency.len()),
        Figure::new(
            "policy",
            "first-time decision p99",
            us(&first_latency, 99.0),
            "µs",
        )
        .runs(first_latency.len()),
        Figure::new(
            "policy",
            "first-time decisions allowed",
            median(|r| r.allowed_share),
            "%",
        )
        .runs(rounds),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_policy_loads_with_every_user_bound() {
        let text = policy_text(&mut Lcg(1));
        let policy = Policy::from_text(DEFAULT_MODEL, &text).expect("valid");
        let enforcer = Enforcer::new(policy).expect("compiles");
        for user in [0, 499, 999] {
            let who = Identity::new(format!("u{user:04}"), Vec::<String>::new());
            let roles = enforcer.roles(&who);
            assert!((1..=4).contains(&roles.len()), "{who:?}: {roles:?}");
        }
    }
}
