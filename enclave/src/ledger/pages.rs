//! Listings from the view: a page of a listing must be exactly the live records of its range,
//! so the pages of keys, aliases, principals and grants are read from the view itself (the host's
//! store then supplies the sealed records, each checked as current).

use std::ops::Bound;

use super::{Ledger, RecordId};

impl Ledger {
    /// The live keys after `after` (a key), at most `limit`, and whether more follow.
    #[must_use]
    pub fn key_page(&self, after: Option<&RecordId>, limit: usize) -> (Vec<u128>, bool) {
        let mut live = self.entries.live_keys_after(after);
        let page: Vec<u128> = live.by_ref().take(limit).collect();
        (page, live.next().is_some())
    }

    /// The live aliases whose names start with `prefix` (one region's: see
    /// `ekms_wire::region`) after `after` (a name), at most `limit`, and whether more follow.
    #[must_use]
    pub fn alias_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Box<str>>, bool) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(RecordId::Alias(a.into())),
            _ => Bound::Included(RecordId::Alias(prefix.into())),
        };
        let end = Bound::Excluded(RecordId::Principal("".into()));
        let mut live = self
            .entries
            .named_range((start, end))
            .take_while(|(id, _)| matches!(id, RecordId::Alias(n) if n.starts_with(prefix)))
            .filter(|(_, e)| e.live())
            .filter_map(|(id, _)| match id {
                RecordId::Alias(n) => Some(n.clone()),
                _ => None,
            });
        let page: Vec<Box<str>> = live.by_ref().take(limit).collect();
        (page, live.next().is_some())
    }

    /// The live principals (their record ids) after `after`, at most `limit`, and whether more
    /// follow.
    #[must_use]
    pub fn principal_page(&self, after: Option<&str>, limit: usize) -> (Vec<Box<str>>, bool) {
        let start = after.map_or(Bound::Included(RecordId::Principal("".into())), |a| {
            Bound::Excluded(RecordId::Principal(a.into()))
        });
        let end = Bound::Excluded(RecordId::Grant(0, "".into()));
        let mut live = self
            .entries
            .named_range((start, end))
            .filter(|(_, e)| e.live())
            .filter_map(|(id, _)| match id {
                RecordId::Principal(n) => Some(n.clone()),
                _ => None,
            });
        let page: Vec<Box<str>> = live.by_ref().take(limit).collect();
        (page, live.next().is_some())
    }

    /// The live grants of key `key` after grant id `after`, at most `limit`, and whether more
    /// follow.
    #[must_use]
    pub fn grant_page(
        &self,
        key: u128,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Box<str>>, bool) {
        let start = after.map_or(Bound::Included(RecordId::Grant(key, "".into())), |a| {
            Bound::Excluded(RecordId::Grant(key, a.into()))
        });
        let mut live = self
            .entries
            .named_range((start, Bound::Unbounded))
            .take_while(|(id, _)| matches!(id, RecordId::Grant(k, _) if *k == key))
            .filter(|(_, e)| e.live())
            .filter_map(|(id, _)| match id {
                RecordId::Grant(_, g) => Some(g.clone()),
                _ => None,
            });
        let page: Vec<Box<str>> = live.by_ref().take(limit).collect();
        (page, live.next().is_some())
    }

    /// How many live grants key `key` has.
    #[must_use]
    pub fn grant_count(&self, key: u128) -> usize {
        self.entries
            .named_range((
                Bound::Included(RecordId::Grant(key, "".into())),
                Bound::Unbounded,
            ))
            .take_while(|(id, _)| matches!(id, RecordId::Grant(k, _) if *k == key))
            .filter(|(_, e)| e.live())
            .count()
    }

    /// The live aliases of key `target` after `after`, at most `limit`, and whether more follow.
    #[must_use]
    pub fn aliases_of(
        &self,
        target: u128,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Box<str>>, bool) {
        let start = after.map_or(Bound::Included((target, "".into())), |a| {
            Bound::Excluded((target, a.into()))
        });
        let mut live = self
            .by_target
            .range((start, Bound::Unbounded))
            .take_while(|(t, _)| *t == target)
            .map(|(_, n)| n.clone());
        let page: Vec<Box<str>> = live.by_ref().take(limit).collect();
        (page, live.next().is_some())
    }
}
