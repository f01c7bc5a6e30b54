//! One iterative lookup: the closest-k candidate set for a target, which
//! of them to ask next (never more than α outstanding), and when it is
//! over. Pure bookkeeping; the engine sends and times out the requests.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::PeerId;

use super::key::{Distance, Key};
use super::message::Contact;
use super::record::{SignedRecord, VerifiedRecord};

/// What the lookup is for.
#[derive(Debug, Clone)]
pub(crate) enum Purpose {
    /// Find the k closest nodes and report them.
    FindNode,
    /// Find a record; stop at the first valid one.
    FindValue,
    /// Find the k closest nodes, then store this record on them.
    Publish(SignedRecord),
    /// Keep a bucket fresh; nobody is told.
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Responded,
    Failed,
}

#[derive(Debug)]
struct Candidate {
    contact: Contact,
    /// 1 for contacts from our own table, n + 1 for contacts learned from a
    /// node at depth n.
    depth: u32,
    state: State,
}

#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) target: Key,
    pub(crate) purpose: Purpose,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) messages: u32,
    pub(crate) found: Option<(VerifiedRecord, u32)>,
    candidates: BTreeMap<Distance, Candidate>,
    in_flight: usize,
    max_candidates: usize,
}

impl Lookup {
    pub(crate) fn new(
        target: Key,
        purpose: Purpose,
        seeds: Vec<Contact>,
        started: Instant,
        deadline: Instant,
        k: usize,
    ) -> Self {
        let mut lookup = Self {
            target,
            purpose,
            started,
            deadline,
            messages: 0,
            found: None,
            candidates: BTreeMap::new(),
            in_flight: 0,
            max_candidates: 4 * k,
        };
        for seed in seeds {
            lookup.add(seed, 1);
        }
        lookup
    }

    /// Adds a candidate learned at `depth` unless known, keeping only the
    /// closest `max_candidates` (a far candidate not yet asked is dropped
    /// first).
    pub(crate) fn add(&mut self, contact: Contact, depth: u32) {
        let d = self.target.distance(&contact.key());
        if self.candidates.contains_key(&d) {
            return;
        }
        self.candidates.insert(
            d,
            Candidate {
                contact,
                depth,
                state: State::Waiting,
            },
        );
        while self.candidates.len() > self.max_candidates {
            let victim = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state != State::InFlight)
                .map(|(d, _)| *d);
            match victim {
                Some(d) => {
                    self.candidates.remove(&d);
                }
                None => break,
            }
        }
    }

    /// The next contacts to ask: waiting ones among the k closest not
    /// failed, as long as fewer than `alpha` requests are out and they are
    /// within `max_hops`. Marks them in flight.
    pub(crate) fn next(&mut self, k: usize, alpha: usize, max_hops: u32) -> Vec<Contact> {
        let mut out = Vec::new();
        let mut live = 0;
        for c in self.candidates.values_mut() {
            if live >= k || self.in_flight >= alpha {
                break;
            }
            match c.state {
                State::Failed => continue,
                State::Waiting if c.depth <= max_hops => {
                    c.state = State::InFlight;
                    self.in_flight += 1;
                    self.messages += 1;
                    out.push(c.contact.clone());
                }
                _ => {}
            }
            live += 1;
        }
        out
    }

    /// Whether it is over: a record was found, or nothing is in flight and
    /// no candidate among the k closest is left to ask.
    pub(crate) fn is_done(&self, k: usize, max_hops: u32) -> bool {
        if self.found.is_some() {
            return true;
        }
        if self.in_flight > 0 {
            return false;
        }
        !self
            .candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(k)
            .any(|c| c.state == State::Waiting && c.depth <= max_hops)
    }

    fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let d = self.target.distance(&Key::from(peer));
        self.candidates.get_mut(&d)
    }

    /// `peer` answered; returns its depth if it was in flight.
    pub(crate) fn responded(&mut self, peer: &PeerId) -> Option<u32> {
        let c = self.get_mut(peer)?;
        if c.state != State::InFlight {
            return None;
        }
        c.state = State::Responded;
        let depth = c.depth;
        self.in_flight -= 1;
        Some(depth)
    }

    /// `peer` timed out or answered with junk.
    pub(crate) fn failed(&mut self, peer: &PeerId) {
        if let Some(c) = self.get_mut(peer)
            && c.state == State::InFlight
        {
            c.state = State::Failed;
            self.in_flight -= 1;
        }
    }

    /// How many nodes that did not answer in time would rank among the k
    /// closest that did or did not (slow, or gone): a publication missed
    /// them.
    pub(crate) fn failed_among_closest(&self, k: usize) -> usize {
        self.candidates
            .values()
            .filter(|c| matches!(c.state, State::Responded | State::Failed))
            .take(k)
            .filter(|c| c.state == State::Failed)
            .count()
    }

    /// The k closest nodes that answered, closest first, and the depth of
    /// the closest.
    pub(crate) fn closest_responded(&self, k: usize) -> (Vec<Contact>, u32) {
        let responded: Vec<&Candidate> = self
            .candidates
            .values()
            .filter(|c| c.state == State::Responded)
            .take(k)
            .collect();
        let hops = responded.first().map_or(0, |c| c.depth);
        (
            responded.into_iter().map(|c| c.contact.clone()).collect(),
            hops,
        )
    }
}
