//! The routing table: 256 k-buckets indexed by the highest bit of a
//! contact's XOR distance from us, each kept in least-recently-seen order.
//!
//! A contact seen again moves to the tail. A new contact for a full bucket
//! does not evict anyone by itself: [`RoutingTable::observe`] answers
//! [`Observed::BucketFull`] with the bucket's oldest contact, the engine
//! pings it, and then either [`RoutingTable::keep_oldest`] (it answered) or
//! [`RoutingTable::replace_oldest`] (it did not) settles the bucket.

use std::collections::VecDeque;
use std::time::Instant;

use crate::PeerId;

use super::key::Key;
use super::message::Contact;

/// What observing a contact did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// Known already (moved to the tail) or inserted.
    Kept,
    /// It is us; ignored.
    Ourselves,
    /// The bucket is full; ping this, its oldest contact, before evicting.
    BucketFull { bucket: usize, oldest: Contact },
    /// The bucket is full and already waiting on a ping; dropped.
    Dropped,
}

#[derive(Debug)]
struct Entry {
    contact: Contact,
    failures: u32,
}

#[derive(Debug)]
struct Bucket {
    entries: VecDeque<Entry>,
    /// The contact waiting for the oldest entry's ping to time out.
    waiting: Option<Contact>,
    last_refreshed: Instant,
}

/// 256 buckets of at most k contacts.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    me: Key,
    k: usize,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    pub(crate) fn new(me: Key, k: usize, now: Instant) -> Self {
        let buckets = (0..256)
            .map(|_| Bucket {
                entries: VecDeque::new(),
                waiting: None,
                last_refreshed: now,
            })
            .collect();
        Self { me, k, buckets }
    }

    fn bucket_of(&self, key: &Key) -> Option<usize> {
        self.me.distance(key).bucket()
    }

    /// Notes that `contact` is alive (it sent us something or answered).
    pub(crate) fn observe(&mut self, contact: &Contact) -> Observed {
        let Some(index) = self.bucket_of(&contact.key()) else {
            return Observed::Ourselves;
        };
        let k = self.k;
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket
            .entries
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            if let Some(mut entry) = bucket.entries.remove(pos) {
                entry.failures = 0;
                if !contact.endpoints.is_empty() {
                    entry.contact.endpoints.clone_from(&contact.endpoints);
                }
                bucket.entries.push_back(entry);
            }
            return Observed::Kept;
        }
        if bucket.entries.len() < k {
            bucket.entries.push_back(Entry {
                contact: contact.clone(),
                failures: 0,
            });
            return Observed::Kept;
        }
        if bucket.waiting.is_some() {
            return Observed::Dropped;
        }
        bucket.waiting = Some(contact.clone());
        match bucket.entries.front() {
            Some(oldest) => Observed::BucketFull {
                bucket: index,
                oldest: oldest.contact.clone(),
            },
            None => Observed::Dropped,
        }
    }

    /// The oldest contact of `bucket` answered its ping: it stays (moved to
    /// the tail) and the waiting newcomer is dropped.
    pub(crate) fn keep_oldest(&mut self, bucket: usize, oldest: &PeerId) {
        let b = &mut self.buckets[bucket];
        b.waiting = None;
        if let Some(pos) = b.entries.iter().position(|e| e.contact.id == *oldest)
            && let Some(entry) = b.entries.remove(pos)
        {
            b.entries.push_back(entry);
        }
    }

    /// The oldest contact of `bucket` did not answer: it goes, the waiting
    /// newcomer takes its place.
    pub(crate) fn replace_oldest(&mut self, bucket: usize, oldest: &PeerId) {
        let b = &mut self.buckets[bucket];
        b.entries.retain(|e| e.contact.id != *oldest);
        if let Some(newcomer) = b.waiting.take()
            && b.entries.len() < self.k
        {
            b.entries.push_back(Entry {
                contact: newcomer,
                failures: 0,
            });
        }
    }

    /// A request to `id` timed out; after `max_failures` in a row it is
    /// removed (and a waiting newcomer, if any, takes its place).
    pub(crate) fn note_failure(&mut self, id: &PeerId, max_failures: u32) {
        let Some(index) = self.bucket_of(&Key::from(id)) else {
            return;
        };
        let k = self.k;
        let b = &mut self.buckets[index];
        let Some(pos) = b.entries.iter().position(|e| e.contact.id == *id) else {
            return;
        };
        b.entries[pos].failures += 1;
        if b.entries[pos].failures >= max_failures {
            b.entries.remove(pos);
            if let Some(newcomer) = b.waiting.take()
                && b.entries.len() < k
            {
                b.entries.push_back(Entry {
                    contact: newcomer,
                    failures: 0,
                });
            }
        }
    }

    /// Up to `n` known contacts closest to `target`, closest first, leaving
    /// out `exclude`.
    pub(crate) fn closest(&self, target: &Key, n: usize, exclude: Option<&PeerId>) -> Vec<Contact> {
        // Contacts in the target's own bucket are closer to it than any in a
        // lower bucket, which are closer than any in a higher one; higher
        // buckets are ordered among themselves by index. So gather the
        // target's bucket and everything below, then higher buckets one by
        // one until there are enough, and sort what was gathered.
        let mut found: Vec<(super::key::Distance, &Contact)> = Vec::new();
        let (below, above) = match self.bucket_of(target) {
            Some(t) => (t + 1, t + 1),
            None => (0, 0),
        };
        let order = (0..below).rev().chain(above..256);
        for (taken, index) in order.enumerate() {
            if taken >= below && found.len() >= n {
                break;
            }
            for e in &self.buckets[index].entries {
                if Some(&e.contact.id) != exclude {
                    found.push((target.distance(&e.contact.key()), &e.contact));
                }
            }
        }
        found.sort_unstable_by_key(|a| a.0);
        found.into_iter().take(n).map(|(_, c)| c.clone()).collect()
    }

    /// How many contacts the table holds.
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Buckets due a refresh at `now`: those from our nearest non-empty
    /// bucket outwards that saw no lookup for `interval`.
    pub(crate) fn stale_buckets(&self, now: Instant, interval: std::time::Duration) -> Vec<usize> {
        let Some(nearest) = self.buckets.iter().position(|b| !b.entries.is_empty()) else {
            return Vec::new();
        };
        (nearest..256)
            .filter(|&i| now.saturating_duration_since(self.buckets[i].last_refreshed) >= interval)
            .collect()
    }

    /// A lookup for `target` started at `now`: its bucket counts as fresh.
    pub(crate) fn touch(&mut self, target: &Key, now: Instant) {
        if let Some(i) = self.bucket_of(target) {
            self.buckets[i].last_refreshed = now;
        }
    }
}
