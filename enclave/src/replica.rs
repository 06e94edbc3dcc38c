//! Multi-Region keys: one sealed record holds a whole set of related keys (the primary and its
//! replicas, one per region). They share the key id, the material and the rotation, as in AWS;
//! each region has its own state, description, key policy, tags, creation and deletion dates.
//!
//! The record's own fields are those of one region (`KeyRecord::region`); the other regions'
//! are in [`MultiRegion::replicas`]. [`KeyRecord::view_from`] swaps a region's fields in, so an
//! operation sees the key exactly as that region's replica, and the record is sealed back in
//! whichever view it was last changed in. One record for the set means a replica can never hold
//! other material than its primary, and the state view checks the whole set as one record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{KeyRecord, KeyState, Tag};

/// The multi-Region part of a key record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiRegion {
    /// The primary key's region.
    pub primary: String,
    /// Every region of the set but the record's own view, with that region's fields.
    pub replicas: BTreeMap<String, Replica>,
}

/// What is a region's own in a multi-Region key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Description.
    pub description: String,
    /// State.
    pub state: KeyState,
    /// Deletion time when pending deletion, Unix milliseconds.
    pub deletion_ms: Option<i64>,
    /// Key policy.
    pub policy: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
}

impl KeyRecord {
    /// Whether the key is multi-Region.
    #[must_use]
    pub fn is_multi_region(&self) -> bool {
        self.multi_region.is_some()
    }

    /// The regions of the set, its own view's first.
    #[must_use]
    pub fn regions(&self) -> Vec<&str> {
        let mut out = vec![self.region.as_str()];
        if let Some(m) = &self.multi_region {
            out.extend(m.replicas.keys().map(String::as_str));
        }
        out
    }

    /// This region's own fields.
    fn own(&self) -> Replica {
        Replica {
            created_ms: self.created_ms,
            description: self.description.clone(),
            state: self.state,
            deletion_ms: self.deletion_ms,
            policy: self.policy.clone(),
            tags: self.tags.clone(),
        }
    }

    fn take_own(&mut self, r: Replica) {
        self.created_ms = r.created_ms;
        self.description = r.description;
        self.state = r.state;
        self.deletion_ms = r.deletion_ms;
        self.policy = r.policy;
        self.tags = r.tags;
    }

    /// Makes the record show `region`'s key; false when the key has none there.
    pub fn view_from(&mut self, region: &str) -> bool {
        if self.region == region {
            return true;
        }
        let own = self.own();
        let Some(m) = self.multi_region.as_mut() else {
            return false;
        };
        let Some(theirs) = m.replicas.remove(region) else {
            return false;
        };
        m.replicas
            .insert(std::mem::replace(&mut self.region, region.to_owned()), own);
        self.take_own(theirs);
        true
    }

    /// Adds a replica in `region` with `fields` (the caller checked there is none).
    pub fn add_replica(&mut self, region: &str, fields: Replica) {
        if let Some(m) = self.multi_region.as_mut() {
            m.replicas.insert(region.to_owned(), fields);
        }
    }

    /// Removes the viewed region's replica, showing another region's instead; false (nothing
    /// changed) when it is the last one.
    pub fn remove_viewed_replica(&mut self) -> bool {
        let Some(m) = self.multi_region.as_mut() else {
            return false;
        };
        let Some((next, fields)) = m.replicas.pop_first() else {
            return false;
        };
        self.region = next;
        self.take_own(fields);
        true
    }

    /// The earliest deletion date of any region of the set (the host's sweep index).
    #[must_use]
    pub fn earliest_deletion_ms(&self) -> Option<i64> {
        let others = self
            .multi_region
            .iter()
            .flat_map(|m| m.replicas.values())
            .filter_map(|r| r.deletion_ms);
        self.deletion_ms.into_iter().chain(others).min()
    }

    /// The regions whose replica is pending deletion with a date at or before `now_ms`.
    #[must_use]
    pub fn regions_due_for_deletion(&self, now_ms: i64) -> Vec<String> {
        let due = |state: KeyState, d: Option<i64>| {
            state == KeyState::PendingDeletion && d.is_some_and(|d| d <= now_ms)
        };
        let mut out = Vec::new();
        if due(self.state, self.deletion_ms) {
            out.push(self.region.clone());
        }
        if let Some(m) = &self.multi_region {
            out.extend(
                m.replicas
                    .iter()
                    .filter(|(_, r)| due(r.state, r.deletion_ms))
                    .map(|(region, _)| region.clone()),
            );
        }
        out
    }
}

impl Replica {
    /// A new replica's fields: enabled, with the given description, policy and tags.
    #[must_use]
    pub fn new(now_ms: i64, description: String, policy: Option<String>, tags: Vec<Tag>) -> Self {
        Self {
            created_ms: now_ms,
            description,
            state: KeyState::Enabled,
            deletion_ms: None,
            policy,
            tags,
        }
    }
}
