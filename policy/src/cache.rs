//! Decisions already made, keyed on (user, groups, permission, object).
//!
//! One cache belongs to one compiled policy and is dropped with it, so a
//! reload can never serve a decision of the old policy, not even one an
//! in-flight request inserts after the swap. Sharded read-write locks keep
//! readers on different cores apart; a hit allocates nothing. Each shard is
//! bounded (clients choose objects, e.g. bind paths), and a full shard is
//! simply emptied.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::RwLock;

use crate::identity::Identity;
use crate::permission::{Permission, Requirement};
use crate::verdict::Rule;

const SHARDS: usize = 16;
const ENTRIES_PER_SHARD: usize = 4096;

/// One shard: cache key → entry.
type Shard = RwLock<HashMap<u64, Entry, BuildHasherDefault<Prehashed>>>;

pub(crate) struct DecisionCache {
    shards: Box<[Shard]>,
    /// Keyed per process, so clients cannot aim for collisions.
    hasher: RandomState,
}

/// The full key is kept and compared: a hash collision is a miss, never
/// someone else's decision.
struct Entry {
    user: Box<str>,
    groups: Box<[Box<str>]>,
    permission: Permission,
    object: Box<str>,
    allowed: bool,
    rule: Rule,
}

impl Entry {
    fn is_for(&self, who: &Identity, requirement: &Requirement) -> bool {
        self.permission == requirement.permission
            && *self.object == *requirement.object
            && *self.user == *who.user
            && self.groups.len() == who.groups.len()
            && self.groups.iter().zip(&who.groups).all(|(a, b)| **a == **b)
    }
}

impl DecisionCache {
    pub(crate) fn new() -> DecisionCache {
        DecisionCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn key(&self, who: &Identity, requirement: &Requirement) -> u64 {
        let mut h = self.hasher.build_hasher();
        who.user.hash(&mut h);
        who.groups.hash(&mut h);
        requirement.permission.hash(&mut h);
        requirement.object.hash(&mut h);
        h.finish()
    }

    fn shard(&self, key: u64) -> &Shard {
        // Middle bits: the map itself uses the low ones (bucket) and the high
        // ones (control bytes).
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    pub(crate) fn get(
        &self,
        key: u64,
        who: &Identity,
        requirement: &Requirement,
    ) -> Option<(bool, Rule)> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard
            .get(&key)
            .filter(|entry| entry.is_for(who, requirement))
            .map(|entry| (entry.allowed, entry.rule.clone()))
    }

    pub(crate) fn insert(
        &self,
        key: u64,
        who: &Identity,
        requirement: &Requirement,
        allowed: bool,
        rule: Rule,
    ) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= ENTRIES_PER_SHARD && !shard.contains_key(&key) {
            shard.clear();
        }
        shard.insert(
            key,
            Entry {
                user: who.user.as_str().into(),
                groups: who.groups.iter().map(|g| g.as_str().into()).collect(),
                permission: requirement.permission,
                object: requirement.object.as_str().into(),
                allowed,
                rule,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The map's keys are already SipHash outputs: hashing them again would be
/// wasted work.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_needs_the_whole_key() {
        let cache = DecisionCache::new();
        let alice = Identity::new("alice", ["developer"]);
        let req = Requirement::new(Permission::HostBind, "/srv");
        let key = cache.key(&alice, &req);
        cache.insert(key, &alice, &req, true, Rule::DefaultDeny);
        assert_eq!(
            cache.get(key, &alice, &req),
            Some((true, Rule::DefaultDeny))
        );

        // Same hash slot, different identity: a miss.
        let mallory = Identity::new("alice", ["developer", "x"]);
        assert_eq!(cache.get(key, &mallory, &req), None);
        let other = Requirement::new(Permission::HostBind, "/");
        assert_eq!(cache.get(key, &alice, &other), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = DecisionCache::new();
        let who = Identity::new("alice", Vec::<String>::new());
        for i in 0..(SHARDS * ENTRIES_PER_SHARD * 2) {
            let req = Requirement::new(Permission::HostBind, format!("/p/{i}"));
            cache.insert(cache.key(&who, &req), &who, &req, false, Rule::DefaultDeny);
        }
        assert!(cache.len() <= SHARDS * ENTRIES_PER_SHARD);
    }
}
