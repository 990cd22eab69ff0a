//! The private messages the relay keeps for traders: direct messages and gift wraps that are
//! not requests to the node (the node's replies, and the chats between counterparties).
//!
//! Strangers can send as many of these as the per-address limits let through from as many
//! addresses as they have, so they are held in an index of the box's own, bounded in number
//! (the oldest go first) and in age (a retention), which forgets what it drops. The node's own
//! messages have a bound of their own, so a flood of chats can never push out the reply a
//! trader has not fetched yet. Requests to the node are not here at all: only the engine reads
//! them, from redb, and deletes each once it is handled.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use nostr::{Alphabet, Event, EventId, Filter, PublicKey, SingleLetterTag, Timestamp};
use nostr_database::Events;

/// The index, shared by the relay's connections.
#[derive(Debug)]
pub struct PrivateMessages {
    max: usize,
    max_own: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<EventId, Arc<Event>>,
    /// Others' messages, oldest first, for eviction and retention.
    by_age: BTreeSet<(Timestamp, EventId)>,
    /// The node's own, likewise.
    own_by_age: BTreeSet<(Timestamp, EventId)>,
    /// Per recipient (`p` tag), for the queries clients make.
    by_p: HashMap<PublicKey, BTreeSet<(Timestamp, EventId)>>,
}

impl PrivateMessages {
    /// An empty index holding at most `max` messages of others and `max_own` of the node's.
    pub fn new(max: usize, max_own: usize) -> Self {
        Self {
            max: max.max(1),
            max_own: max_own.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("private messages lock")
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &EventId) -> bool {
        self.lock().by_id.contains_key(id)
    }

    /// The message `id`, if held.
    pub fn get(&self, id: &EventId) -> Option<Event> {
        self.lock().by_id.get(id).map(|e| Event::clone(e))
    }

    /// Adds a message (`own`: the node's); returns the ids it pushed out (the oldest of its
    /// kind, past its bound), which may be the new one itself if it is older than all of them.
    pub fn insert(&self, event: Event, own: bool) -> Vec<EventId> {
        let mut inner = self.lock();
        if inner.by_id.contains_key(&event.id) {
            return Vec::new();
        }
        let key = (event.created_at, event.id);
        for p in event.tags.public_keys() {
            inner.by_p.entry(*p).or_default().insert(key);
        }
        if own {
            inner.own_by_age.insert(key);
        } else {
            inner.by_age.insert(key);
        }
        inner.by_id.insert(event.id, Arc::new(event));
        let max = if own { self.max_own } else { self.max };
        let mut out = Vec::new();
        loop {
            let ages = if own {
                &inner.own_by_age
            } else {
                &inner.by_age
            };
            if ages.len() <= max {
                break;
            }
            let Some((_, oldest)) = ages.first().copied() else {
                break;
            };
            inner.remove(&oldest);
            out.push(oldest);
        }
        out
    }

    /// Forgets every message created before `before`, and every one whose NIP-40 expiration
    /// has passed; returns their ids.
    pub fn expire(&self, before: Timestamp) -> Vec<EventId> {
        let mut inner = self.lock();
        let mut old: Vec<EventId> = inner
            .by_age
            .iter()
            .take_while(|(t, _)| *t < before)
            .chain(inner.own_by_age.iter().take_while(|(t, _)| *t < before))
            .map(|(_, id)| *id)
            .collect();
        old.extend(
            inner
                .by_id
                .values()
                .filter(|e| e.created_at >= before && e.is_expired())
                .map(|e| e.id),
        );
        for id in &old {
            inner.remove(id);
        }
        old
    }

    /// Forgets the messages `filter` matches; returns their ids.
    pub fn delete(&self, filter: &Filter) -> Vec<EventId> {
        let ids: Vec<EventId> = self.matching(filter).iter().map(|e| e.id).collect();
        let mut inner = self.lock();
        for id in &ids {
            inner.remove(id);
        }
        ids
    }

    /// The messages `filter` matches, newest first, up to its limit.
    pub fn query(&self, filter: &Filter) -> Events {
        let mut events = Events::new(filter);
        events.extend(self.matching(filter));
        events
    }

    fn matching(&self, filter: &Filter) -> Vec<Event> {
        let inner = self.lock();
        let recipients: Option<Vec<PublicKey>> = filter
            .generic_tags
            .get(&SingleLetterTag::lowercase(Alphabet::P))
            .map(|set| {
                set.iter()
                    .filter_map(|p| PublicKey::from_hex(p).ok())
                    .collect()
            });
        let keep = |e: &Arc<Event>| filter.match_event(e, Default::default());
        let mut out: Vec<Event> = match (&filter.ids, recipients) {
            (Some(ids), _) => ids
                .iter()
                .filter_map(|id| inner.by_id.get(id))
                .filter(|e| keep(e))
                .map(|e| Event::clone(e))
                .collect(),
            (None, Some(ps)) => ps
                .iter()
                .filter_map(|p| inner.by_p.get(p))
                .flat_map(|set| set.iter().rev())
                .filter_map(|(_, id)| inner.by_id.get(id))
                .filter(|e| keep(e))
                .map(|e| Event::clone(e))
                .collect(),
            (None, None) => inner
                .by_id
                .values()
                .filter(|e| keep(e))
                .map(|e| Event::clone(e))
                .collect(),
        };
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.dedup_by_key(|e| e.id);
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        out
    }
}

impl Inner {
    fn remove(&mut self, id: &EventId) {
        let Some(ev) = self.by_id.remove(id) else {
            return;
        };
        let key = (ev.created_at, ev.id);
        self.by_age.remove(&key);
        self.own_by_age.remove(&key);
        for p in ev.tags.public_keys() {
            if let Some(set) = self.by_p.get_mut(p) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_p.remove(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Kind, Tag};

    fn message(to: PublicKey, at: u64) -> Event {
        EventBuilder::new(Kind::GiftWrap, "x")
            .tag(Tag::public_key(to))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    #[test]
    fn bounded_by_number_and_age_and_queried_by_recipient() {
        let (alice, bob) = (Keys::generate().public_key(), Keys::generate().public_key());
        let index = PrivateMessages::new(3, 1);
        // The node's own reply, older than everything: others' messages never push it out.
        let reply = message(alice, 5);
        assert!(index.insert(reply.clone(), true).is_empty());
        let a1 = message(alice, 10);
        let b1 = message(bob, 20);
        let a2 = message(alice, 30);
        assert!(index.insert(a1.clone(), false).is_empty());
        assert!(index.insert(b1.clone(), false).is_empty());
        assert!(index.insert(a2.clone(), false).is_empty());
        // A fourth pushes out the oldest of others'.
        let b2 = message(bob, 40);
        assert_eq!(index.insert(b2.clone(), false), vec![a1.id]);
        assert!(index.contains(&reply.id));
        assert_eq!(index.expire(Timestamp::from(6)), vec![reply.id]);
        assert_eq!(index.len(), 3);
        let to_alice = index.query(&Filter::new().kind(Kind::GiftWrap).pubkey(alice));
        assert_eq!(
            to_alice.to_vec().iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![a2.id]
        );
        let to_bob = index.query(&Filter::new().pubkey(bob).limit(1));
        assert_eq!(to_bob.to_vec()[0].id, b2.id, "newest first, limited");
        assert!(index.query(&Filter::new().kind(Kind::TextNote)).is_empty());
        // Retention.
        assert_eq!(index.expire(Timestamp::from(35)), vec![b1.id, a2.id]);
        assert_eq!(index.len(), 1);
        assert!(index.contains(&b2.id) && !index.contains(&a2.id));
        assert_eq!(index.delete(&Filter::new().id(b2.id)), vec![b2.id]);
        assert!(index.is_empty());
    }
}
